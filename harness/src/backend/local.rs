//! The `local` backend: the agent on this machine's own kernel, in a private mount namespace
//! (the agent makes it). Real, non-emulated numbers, and the fastest way to test the agent.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::{ms_between, BootOutput, BootRequest, ResultStream};
use crate::results::{Accel, BootEnd, Deadline, InfraCause, RunDir};

/// Run `req.plan` with the agent binary at `agent` and collect its events.
///
/// The agent's stdout carries result lines; its stderr goes to the boot's agent log. The plan
/// deadline bounds the whole visit: past it the agent gets SIGTERM (it cleans up), then SIGKILL.
pub fn run_boot(agent: &Path, req: &BootRequest) -> BootOutput {
    let start = Instant::now();
    let limit = req.deadlines.under(Accel::Metal).plan;
    let plan_rel = RunDir::log_rel(&req.key, "plan").with_extension("json");
    let plan_path = req.run_dir.abs(&plan_rel);
    let stderr_rel = RunDir::log_rel(&req.key, "agent");
    let results_rel = RunDir::log_rel(&req.key, "results");
    let logs = vec![stderr_rel.clone(), results_rel.clone(), plan_rel.clone()];
    let infra = |cause, msg: String| BootOutput::infra(&req.plan, Accel::Metal, cause, msg, vec![]);

    let plan_json = match serde_json::to_string_pretty(&req.plan) {
        Ok(j) => j,
        Err(e) => return infra(InfraCause::Internal, format!("encoding the plan: {e}")),
    };
    if let Err(e) = crate::rundir::write_atomic(&plan_path, plan_json.as_bytes()) {
        return infra(InfraCause::BootSetup, format!("{e:#}"));
    }
    let stderr_file = match req.run_dir.create_log(&stderr_rel) {
        Ok(f) => f,
        Err(e) => return infra(InfraCause::BootSetup, format!("{e:#}")),
    };
    let mut results_log = req.run_dir.create_log(&results_rel).ok();

    let mut child = match Command::new(agent)
        .arg("run-plan")
        .arg(&plan_path)
        .arg("--exit-on-stdin-eof")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr_file))
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return BootOutput::infra(
                &req.plan,
                Accel::Metal,
                InfraCause::Spawn,
                format!("starting the agent {}: {e}", agent.display()),
                logs,
            )
        }
    };
    let mut timings = BTreeMap::new();
    timings.insert("agent-start".to_string(), ms_between(start, Instant::now()));

    // Keep stdin open (the agent exits when it closes) and read stdout on a thread so the
    // watchdog below can act while the agent is silent.
    let stdin = child.stdin.take();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = child.stdout.take().map(|out| {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    });

    let mut stream = ResultStream::new(&req.plan);
    let mut end: Option<BootEnd> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(f) = results_log.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                stream.feed_line(&line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if end.is_none() && stream.broke_contract() {
            end = Some(BootEnd::infra(
                InfraCause::ProtocolViolation,
                "the agent broke the results contract",
            ));
            terminate(&mut child);
        }
        if req.cancel.is_cancelled() && end.is_none() {
            end = Some(BootEnd::infra(
                InfraCause::Cancelled,
                "interrupted (Ctrl-C)",
            ));
            terminate(&mut child);
        }
        if start.elapsed() > limit && end.is_none() {
            end = Some(BootEnd::Timeout {
                deadline: Deadline::Plan,
                seconds: limit.as_secs_f64(),
                excerpt: String::new(),
            });
            terminate(&mut child);
        }
    }
    drop(stdin);
    let status = child.wait();
    if let Some(r) = reader {
        let _ = r.join();
    }
    let now = Instant::now();
    if let Some(t) = stream.hello_at {
        timings.insert("agent-ready".into(), ms_between(start, t));
    }
    if let Some(t) = stream.done_at {
        timings.insert("plan-done".into(), ms_between(start, t));
    }
    timings.insert("exit".into(), ms_between(start, now));

    let end = end.unwrap_or_else(|| {
        if stream.is_done() {
            BootEnd::Completed
        } else {
            let tail = tail_of(&req.run_dir.abs(&stderr_rel), 20);
            match status {
                // Killed by a signal or non-zero exit before Done: the agent crashed.
                Ok(s) => BootEnd::Panic {
                    line: format!("mmx-agent ended before finishing the plan ({s})"),
                    excerpt: tail,
                },
                Err(e) => {
                    BootEnd::infra(InfraCause::Internal, format!("waiting for the agent: {e}"))
                }
            }
        }
    });
    BootOutput {
        stream,
        end,
        accel: Accel::Metal,
        logs,
        timings_ms: timings,
        kernel_source: None,
        channels: Default::default(),
    }
}

/// SIGTERM, a grace period for the agent's cleanup, then SIGKILL.
fn terminate(child: &mut std::process::Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
}

/// Last `n` lines of a log, for evidence.
pub fn tail_of(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The scratch directory for local runs: the matrix's, or a fresh one under /var/tmp (a real
/// disk filesystem on most hosts, unlike /tmp which may be tmpfs).
pub fn scratch_dir(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    let base = configured.map_or_else(|| PathBuf::from("/var/tmp"), Path::to_path_buf);
    std::fs::create_dir_all(&base)
        .map_err(|e| anyhow::anyhow!("creating scratch dir {}: {e}", base.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("mmx-scratch-")
        .tempdir_in(&base)
        .map_err(|e| anyhow::anyhow!("scratch dir {} is not writable: {e}", base.display()))?;
    Ok(dir.keep())
}

/// The filesystem type a directory lives on, as `protocol::Filesystem` where mmx knows it.
pub fn filesystem_of(dir: &Path) -> anyhow::Result<Result<protocol::Filesystem, String>> {
    let st =
        rustix::fs::statfs(dir).map_err(|e| anyhow::anyhow!("statfs({}): {e}", dir.display()))?;
    // Magic numbers from linux/magic.h.
    let fs = match st.f_type as u64 {
        0xEF53 => Ok(protocol::Filesystem::Ext4),
        0x5846_5342 => Ok(protocol::Filesystem::Xfs),
        0x9123_683E => Ok(protocol::Filesystem::Btrfs),
        0x0102_1994 => Ok(protocol::Filesystem::Tmpfs),
        other => Err(format!("{other:#x}")),
    };
    Ok(fs)
}
