//! One host visit: copy the agent and the plan over, run it under the requested SMT setting,
//! stream its results back, and clean up on every path.
//!
//! Steps (each one ssh command over the host's shared connection): `connect-copy` (root/sudo
//! check, the SMT control's value, private temp dir, plan and agent copy, sha256) and `run` (the
//! agent, stdout streamed, the host cleaning up after itself). Only when the run could not
//! confirm its cleanup (a lost connection, Ctrl-C, a failed step) does a third, `cleanup`,
//! remove what is left and restore SMT from the harness side. Every ssh command costs a login
//! shell on the host (and its rc files), so a visit uses as few as it can.
//!
//! The run's stdout is the agent's too: the run script's status lines count only with the
//! visit's token (`remote::RunToken`), and what is restored or removed never comes from them
//! (the SMT value is the one `connect-copy` read, the dir the one mmx named).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use protocol::{CellResult, Evidence, Outcome};
use sha2::{Digest, Sha256};

use super::args::{classify_failure, command_args, describe};
use super::remote::{self, command_line, parse_status, status_value, RunLine, RunToken};
use super::smt::{self, SmtPlan, SmtWrite};
use super::step::{self, StepError, StepOutput};
use crate::backend::supervise::{
    self, Channel, ChannelInfo, Line, Observer, Role, Stdin, Stop, View,
};
use crate::backend::{ms_between, BootOutput, BootRequest, Deadlines, Placement, ResultStream};
use crate::cell::SmtSetting;
use crate::events::Note;
use crate::matrix::Host;
use crate::proc::Cancel;
use crate::results::{Accel, BootEnd, ChannelStats, Deadline, InfraCause, RunDir};

/// Connecting and copying the agent (a few MB) to the host.
const PREPARE_LIMIT: Duration = Duration::from_secs(120);
/// Cleanup waits up to 30 s for a run script that is still stopping the agent.
const CLEANUP_LIMIT: Duration = Duration::from_secs(60);
/// The host's own deadline is the harness's plus this, so the harness normally decides.
const REMOTE_GRACE_S: u64 = 30;

/// Why a visit could not go on: the cause and a message for people.
type Failure = (InfraCause, String);

struct Visit<'a> {
    host: &'a Host,
    control_dir: &'a Path,
    req: &'a BootRequest,
    start: Instant,
    ssh_log: Option<File>,
    timings: BTreeMap<String, f64>,
    /// Time spent in connect, copy, plan and cleanup steps (not the agent's own work).
    overhead_ms: f64,
    use_sudo: bool,
    /// The private temp dir on the host: the name mmx chose, once the step that makes it ran
    /// (never a name the host's output announces: a login banner could name another).
    dir: Option<String>,
    /// SMT control value to write back (the one `connect-copy` read), when the visit switches
    /// it.
    smt_restore: Option<SmtWrite>,
    /// What the run script said about its own cleanup: `Some(empty)`: all clean.
    self_cleaned: Option<Vec<String>>,
    /// The run's channels (results, agent), once it ran.
    channels: BTreeMap<String, ChannelStats>,
}

/// Run `req` on `host` over the connection whose socket lives in `control_dir`.
pub fn run(
    host: &Host,
    control_dir: &Path,
    agent: &Path,
    smt: SmtSetting,
    req: &BootRequest,
) -> BootOutput {
    let limit = req.deadlines.under(Accel::Metal).plan;
    let ssh_rel = RunDir::log_rel(&req.key, "ssh");
    let agent_rel = RunDir::log_rel(&req.key, "agent");
    let results_rel = RunDir::log_rel(&req.key, "results");
    let plan_rel = RunDir::log_rel(&req.key, "plan").with_extension("json");
    let mut v = Visit {
        host,
        control_dir,
        req,
        start: Instant::now(),
        ssh_log: req.run_dir.create_log(&ssh_rel).ok(),
        timings: BTreeMap::new(),
        overhead_ms: 0.0,
        use_sudo: false,
        dir: None,
        smt_restore: None,
        self_cleaned: None,
        channels: BTreeMap::new(),
    };
    let mut stream = ResultStream::new(&req.plan);
    let end = match v.prepare_and_run(
        agent,
        smt,
        limit,
        &agent_rel,
        &results_rel,
        &plan_rel,
        &mut stream,
    ) {
        Ok(end) => end,
        Err((cause, message)) => BootEnd::infra(cause, message),
    };
    let end = v.cleanup(end);
    v.log(&format!("visit ended: {end:?}"));
    v.timings.insert("ssh-overhead".into(), v.overhead_ms);
    if let Some(t) = stream.hello_at {
        v.timings
            .insert("agent-ready".into(), ms_between(v.start, t));
    }
    if let Some(t) = stream.done_at {
        v.timings.insert("plan-done".into(), ms_between(v.start, t));
    }
    v.timings
        .insert("exit".into(), ms_between(v.start, Instant::now()));
    let logs = [ssh_rel, agent_rel, results_rel, plan_rel]
        .into_iter()
        .filter(|rel| req.run_dir.abs(rel).exists())
        .collect();
    BootOutput {
        stream,
        end,
        accel: Accel::Metal,
        started: v.start,
        sizing: None,
        logs,
        timings_ms: v.timings,
        kernel_source: Some(format!("metal host `{}`: its own kernel", host.name)),
        kernel_substituted: None,
        channels: std::mem::take(&mut v.channels),
        // The host's kernel log is not read: see ARCHITECTURE.md, "Kernel warnings".
        kernel_warnings: Vec::new(),
        kernel_warnings_dropped: 0,
    }
}

impl Visit<'_> {
    fn log(&mut self, msg: &str) {
        let ms = ms_between(self.start, Instant::now());
        if let Some(f) = self.ssh_log.as_mut() {
            let _ = writeln!(f, "[{ms:9.1} ms] {}", msg.trim_end());
        }
    }

    /// Run one short step; turn ssh's failures into a message. `what` names the step.
    fn step(
        &mut self,
        what: &str,
        cmd: &str,
        stdin: &[u8],
        limit: Duration,
        cancel: &Cancel,
    ) -> Result<StepOutput, Failure> {
        let t = Instant::now();
        let args = command_args(self.host, self.control_dir, cmd);
        let res = step::run(&args, stdin, limit, cancel);
        let ms = ms_between(t, Instant::now());
        self.overhead_ms += ms;
        self.timings.insert(what.to_string(), ms);
        let who = describe(self.host);
        let (out, failure) = match res {
            Err(StepError::Spawn(m)) => return Err((InfraCause::Spawn, m)),
            Err(StepError::Stopped(BootEnd::Timeout { .. }, o)) => {
                let m = format!(
                    "{what} on {who} took over {} s; ssh said: {}",
                    limit.as_secs(),
                    o.stderr.trim()
                );
                (o, Some((InfraCause::Connection, m)))
            }
            Err(StepError::Stopped(BootEnd::Infra { cause, message }, o)) => {
                (o, Some((cause, message)))
            }
            Err(StepError::Stopped(end, o)) => {
                let m = format!("{what} on {who} was stopped: {}", end.summary());
                (o, Some((InfraCause::Internal, m)))
            }
            Ok(o) if o.code == Some(255) => {
                let m = classify_failure(self.host, &o.stderr);
                (o, Some((InfraCause::Connection, m)))
            }
            Ok(o) if o.code != Some(0) => {
                let m = format!(
                    "{what} on {who} failed (exit {:?}): {}",
                    o.code,
                    o.stderr.trim()
                );
                (o, Some((InfraCause::HostSetup, m)))
            }
            Ok(o) => (o, None),
        };
        self.log(&format!(
            "{what}: exit {:?} in {ms:.1} ms\n{}{}",
            out.code, out.stdout, out.stderr
        ));
        match failure {
            Some(m) => Err(m),
            None => Ok(out),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare_and_run(
        &mut self,
        agent: &Path,
        smt: SmtSetting,
        limit: Duration,
        agent_rel: &Path,
        results_rel: &Path,
        plan_rel: &Path,
        stream: &mut ResultStream,
    ) -> Result<BootEnd, Failure> {
        let who = describe(self.host);
        let cancel = self.req.cancel.clone();
        let bytes = std::fs::read(agent).map_err(|e| {
            (
                InfraCause::BootSetup,
                format!("reading the agent {}: {e}", agent.display()),
            )
        })?;
        let bytes = std::sync::Arc::new(bytes);
        // Hashed while the copy runs: it overlaps the network instead of adding to it.
        let hashing = {
            let bytes = std::sync::Arc::clone(&bytes);
            std::thread::spawn(move || hex::encode(Sha256::digest(bytes.as_slice())))
        };

        // A fresh name of our own; `mkdir` on the host refuses anything that exists.
        let base = self
            .host
            .scratch_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        let dir = base
            .join(format!("mmx.{}", random_suffix()))
            .display()
            .to_string();
        // The runtimes the cells start go over the same connection, into the temp dir.
        let mut runtime_bytes = Vec::new();
        let mut runtime_specs = Vec::new();
        for rt in &self.req.plan.runtimes {
            let b = std::fs::read(&rt.path).map_err(|e| {
                (
                    InfraCause::Runtime,
                    format!(
                        "reading runtime `{}` at {}: {e}",
                        rt.name,
                        rt.path.display()
                    ),
                )
            })?;
            runtime_specs.push(format!("{}:{}", rt.name, b.len()));
            runtime_bytes.push(b);
        }
        // The host: everything in the temp dir (the run script stores the runtimes there), at
        // metal speed.
        let plan = Placement {
            scratch_dir: PathBuf::from(format!("{dir}/scratch")),
            scratch_disks: Vec::new(),
            modules: Vec::new(),
            runtimes_dir: PathBuf::from(format!("{dir}/runtimes")),
            limit_scale: 1,
        }
        .plan(&self.req.plan);
        if let Ok(pretty) = serde_json::to_string_pretty(&plan) {
            let _ = crate::rundir::write_atomic(&self.req.run_dir.abs(plan_rel), pretty.as_bytes());
        }
        // One line (compact JSON escapes newlines), the runtimes' bytes, then the agent's.
        let mut input = serde_json::to_vec(&plan)
            .map_err(|e| (InfraCause::Internal, format!("encoding the plan: {e}")))?;
        input.push(b'\n');
        for b in &runtime_bytes {
            input.extend_from_slice(b);
        }
        input.extend_from_slice(bytes.as_slice());

        // Connect (the first step makes the shared connection), check root, copy plan and agent.
        // From here on the dir may exist on the host, whatever the step's output says.
        self.dir = Some(dir.clone());
        let mode = if self.host.sudo { "sudo" } else { "root" };
        let ctl = self.host.smt_control.display().to_string();
        let mut args: Vec<&str> = vec![mode, &dir, &ctl];
        args.extend(runtime_specs.iter().map(String::as_str));
        let out = self.step(
            "connect-copy",
            &command_line(false, remote::PREPARE, &args),
            &input,
            PREPARE_LIMIT,
            &cancel,
        )?;
        let host_setup = |m: String| (InfraCause::HostSetup, m);
        let uid = status_value(&out.stdout, "uid").ok_or_else(|| {
            host_setup(format!(
                "{who} did not answer the prepare step as expected: {}{}",
                out.stdout, out.stderr
            ))
        })?;
        if uid != "0" {
            if !self.host.sudo {
                return Err(host_setup(format!(
                    "root is needed for mounts and SMT control, but {who} logs in as uid {uid}: \
                     log in as root or set `sudo = true` (passwordless `sudo -n`)"
                )));
            }
            if let Some(msg) = status_value(&out.stdout, "sudo-failed") {
                return Err(host_setup(format!(
                    "`sudo = true`, but `sudo -n true` failed on {who}: {msg}; mmx never types a \
                     password: give the user passwordless sudo (NOPASSWD)"
                )));
            }
            self.use_sudo = true;
        }
        if status_value(&out.stdout, "dir") != Some(dir.as_str()) {
            return Err(host_setup(format!(
                "{who} did not make the temp dir {dir}: {}",
                out.stderr.trim()
            )));
        }
        let want_sum = hashing
            .join()
            .map_err(|_| (InfraCause::Internal, "hashing the agent failed".to_string()))?;
        match status_value(&out.stdout, "sha256") {
            Some(sum) if sum == want_sum => {}
            other => {
                return Err((
                    InfraCause::Connection,
                    format!(
                        "the agent copied to {who} has sha256 {other:?}, expected {want_sum}: \
                         the copy was damaged or cut short"
                    ),
                ))
            }
        }
        for rt in &plan.runtimes {
            let said = out
                .stdout
                .lines()
                .filter_map(parse_status)
                .filter(|(k, _)| *k == "runtime-sha256")
                .find_map(|(_, v)| v.strip_prefix(&format!("{} ", rt.name)));
            if said != Some(rt.sha256.as_str()) {
                return Err((
                    InfraCause::Runtime,
                    format!(
                        "runtime `{}` copied to {who} has sha256 {said:?}, expected {}: the copy \
                         was damaged or cut short",
                        rt.name, rt.sha256
                    ),
                ));
            }
        }

        // What SMT the host has now, before any agent ran there, decides the switch and the
        // value restored after it.
        let current = status_value(&out.stdout, "smt-control").ok_or_else(|| {
            host_setup(format!(
                "{who} did not say what {ctl} reads: {}",
                out.stdout.trim()
            ))
        })?;
        let (to, restore) = match smt::decide(smt, current) {
            SmtPlan::Leave => ("", ""),
            SmtPlan::Switch { set, restore } => {
                self.smt_restore = Some(restore);
                (set.word(), restore.word())
            }
            SmtPlan::Unsupported { current } => {
                let ctl = &self.host.smt_control;
                stream.answer_unreported(|item, cell| {
                    smt_unsupported(item, cell, smt.word(), &current, ctl)
                });
                return Ok(BootEnd::Completed);
            }
        };
        let token = RunToken::new().map_err(|e| {
            (
                InfraCause::BootSetup,
                format!("getrandom for the run's token: {e}"),
            )
        })?;

        // The run: result lines and the run script's status lines on stdout, the agent's
        // stderr (and ssh's) in the agent log.
        let open = |rel: &Path| self.req.run_dir.create_log(rel);
        let (stderr_log, results_log) = match (open(agent_rel), open(results_rel)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return Err((InfraCause::BootSetup, format!("{e:#}"))),
        };
        let remote_limit = (limit.as_secs() + REMOTE_GRACE_S).to_string();
        let cmd = command_line(
            self.use_sudo,
            remote::RUN,
            &[&dir, to, restore, &remote_limit, &ctl],
        );
        let args = command_args(self.host, self.control_dir, &cmd);
        // The visit's deadlines run from its start; the run gets what connect and copy left.
        let spent = self.start.elapsed();
        let d = self.req.deadlines.under(Accel::Metal);
        let spec = supervise::Spec {
            command: step::ssh(&args),
            channels: vec![
                Channel::stdout("results", Role::Results, Some(results_log)),
                Channel::stderr("agent", Role::Diagnostics, Some(stderr_log)),
            ],
            // The token first, then held open: the agent stops when it closes.
            stdin: Stdin::FeedAndHold(token.stdin_line()),
            stop: Stop::CloseStdin {
                grace: supervise::SSH_RUN_STOP_GRACE,
            },
            deadlines: Deadlines {
                boot: d.boot.saturating_sub(spent),
                silence: d.silence,
                plan: d.plan.saturating_sub(spent),
            },
            cancel: self.req.cancel.clone(),
        };
        self.timings
            .insert("agent-start".into(), ms_between(self.start, Instant::now()));
        let mut script = RunScript {
            start: self.start,
            log: &mut self.ssh_log,
            token,
            error: None,
            cleaned: None,
            forged: 0,
        };
        let sup = supervise::run(spec, Some(ResultStream::new(&self.req.plan)), &mut script)
            .map_err(|e| (InfraCause::Spawn, e.to_string()))?;
        let RunScript {
            error,
            cleaned,
            forged,
            ..
        } = script;
        self.self_cleaned = cleaned;
        if forged > 0 {
            self.log(&format!(
                "ignored {forged} line(s) shaped like status lines without this visit's token"
            ));
        }
        self.channels = sup.channels();
        let code = sup.status.and_then(|s| s.code());
        let tail = sup.view().excerpt(Role::Diagnostics);
        *stream = sup
            .stream
            .unwrap_or_else(|| ResultStream::new(&self.req.plan));
        if let Some(end) = sup.stopped {
            self.log(&format!(
                "stopped the run: {} (ssh exit {code:?})",
                end.summary()
            ));
            return Ok(end);
        }
        self.log(&format!("run: ssh exit {code:?}"));
        if let Some(msg) = error {
            return Err(host_setup(format!("on {who}: {msg}")));
        }
        if stream.is_done() {
            return Ok(BootEnd::Completed);
        }
        Ok(match code {
            Some(255) => BootEnd::infra(
                InfraCause::Connection,
                format!(
                    "the connection to {who} was lost during the run (ssh exited 255); the \
                     agent log ends: {}",
                    last_lines(&tail, 3)
                ),
            ),
            Some(124) => BootEnd::Timeout {
                deadline: Deadline::Plan,
                seconds: (limit.as_secs() + REMOTE_GRACE_S) as f64,
                excerpt: tail,
            },
            Some(c) => BootEnd::Panic {
                line: format!("mmx-agent on {who} ended before finishing the plan (exit {c})"),
                excerpt: tail,
            },
            None => BootEnd::infra(
                InfraCause::Connection,
                format!("ssh to {who} was killed by a signal during the run"),
            ),
        })
    }

    /// Remove the temp dir and restore SMT from the harness side, unless the run script said it
    /// cleaned up. Runs after every visit that got as far as a temp dir, Ctrl-C included (with
    /// its own, uncancelled limit).
    fn cleanup(&mut self, end: BootEnd) -> BootEnd {
        let Some(dir) = self.dir.clone() else {
            return end;
        };
        if self.self_cleaned.as_ref().is_some_and(Vec::is_empty) {
            return end;
        }
        let old = self.smt_restore.map_or("", SmtWrite::word);
        let ctl = self.host.smt_control.display().to_string();
        let cmd = command_line(self.use_sudo, remote::CLEANUP, &[&dir, old, &ctl]);
        let res = self.step("cleanup", &cmd, &[], CLEANUP_LIMIT, &Cancel::new());
        let left: Vec<String> = match &res {
            Ok(out) => out
                .stdout
                .lines()
                .filter_map(parse_status)
                .filter(|(k, _)| k.starts_with("left") || *k == "smt-not-restored")
                .map(|(k, v)| format!("{k} {v}"))
                .collect(),
            Err(e) => vec![format!(
                "cleanup failed ({}); {dir} may be left on the host",
                e.1
            )],
        };
        if left.is_empty() {
            return end;
        }
        let note = left.join("; ");
        self.log(&format!("cleanup incomplete: {note}"));
        match end {
            BootEnd::Infra { cause, message } => BootEnd::Infra {
                cause,
                message: format!("{message} (cleanup: {note})"),
            },
            // Results stand; the leftovers are in the ssh log and on stderr for the user.
            other => {
                self.req.sink.note(Note::warning(format!(
                    "host {}: cleanup incomplete: {note}",
                    self.host.name
                )));
                other
            }
        }
    }
}

/// The run script's status lines (`mmx-ssh TOKEN: KEY VALUE`) beside the result lines on stdout:
/// logged to the ssh log (without the token) and kept for the visit. Lines shaped like them
/// without the token are the agent's (or anyone's but the script's): counted, logged, ignored.
struct RunScript<'a> {
    start: Instant,
    log: &'a mut Option<File>,
    token: RunToken,
    error: Option<String>,
    /// `Some(empty)`: the script cleaned up; else what it left.
    cleaned: Option<Vec<String>>,
    forged: u64,
}

/// Characters of an ignored line kept in the ssh log.
const FORGED_EXCERPT: usize = 200;

impl Observer for RunScript<'_> {
    fn line(&mut self, channel: &ChannelInfo, line: &Line, _: &View) -> Option<BootEnd> {
        if channel.role != Role::Results {
            return None;
        }
        let (key, value) = match self.token.read(&line.text) {
            RunLine::Status(k, v) => (k, v),
            RunLine::Other => return None,
            RunLine::Forged => {
                self.forged += 1;
                if self.forged <= 20 {
                    let excerpt: String = line.text.chars().take(FORGED_EXCERPT).collect();
                    self.write_log(&format!("ignored, not this visit's token: {excerpt}"));
                }
                return None;
            }
        };
        self.write_log(&format!("mmx-ssh: {key} {value}"));
        match key {
            "error" => self.error = Some(value.to_string()),
            "cleaned" => self.cleaned = Some(vec![]),
            "left" | "left-mounted" | "smt-not-restored" => {
                self.cleaned = Some(vec![format!("{key} {value}")])
            }
            _ => {}
        }
        None
    }
}

impl RunScript<'_> {
    fn write_log(&mut self, text: &str) {
        if let Some(f) = self.log.as_mut() {
            let ms = ms_between(self.start, Instant::now());
            let _ = writeln!(f, "[{ms:9.1} ms] {}", text.trim_end());
        }
    }
}

/// 16 hex digits for the temp dir's name, from the kernel's random pool.
fn random_suffix() -> String {
    use std::io::Read;
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => hex::encode(b),
        // Unpredictable enough as a fallback: `mkdir` on the host refuses a clash anyway.
        Err(_) => format!(
            "{:x}{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ),
    }
}

/// A plan item's answer when the host cannot switch SMT as asked: `unsupported`.
fn smt_unsupported(item: u32, cell: &str, want: &str, cur: &str, ctl: &Path) -> CellResult {
    let ctl = ctl.display();
    let detail = if cur == "missing" {
        format!("{ctl} does not exist (a kernel without SMT control)")
    } else {
        format!("{ctl} reads `{cur}`: this host cannot switch SMT {want}")
    };
    CellResult {
        item,
        cell_id: cell.to_owned(),
        outcome: Outcome::Unsupported,
        evidence: Some(Evidence::new(format!("write `{want}` to {ctl}")).with_detail(detail)),
        metrics: BTreeMap::new(),
        detail: None,
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "(nothing)".into();
    }
    lines[lines.len().saturating_sub(n)..].join(" / ")
}
