//! The `local` backend: the agent on this machine's own kernel, in a private mount namespace
//! (the agent makes it). Real, non-emulated numbers, and the fastest way to test the agent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::backend::supervise::{self, Channel, Quiet, Role, Stdin, Stop};
use crate::backend::{
    host_settings, leftovers, ms_between, BootOutput, BootRequest, Placement, ResultStream,
};
use crate::events::{Note, Sink};
use crate::results::{Accel, BootEnd, InfraCause, RunDir};

/// The prefix of every local scratch dir (see [`scratch_dir`]).
pub const SCRATCH_PREFIX: &str = "mmx-scratch-";

/// Where local scratch dirs go when the matrix does not say: a real disk filesystem on most
/// hosts, unlike /tmp which may be tmpfs.
pub const DEFAULT_SCRATCH_BASE: &str = "/var/tmp";

/// Run `req.plan` with the agent binary at `agent` and collect its events.
///
/// The agent's stdout carries result lines, its stderr the agent log; both are read by the
/// supervisor. Its stdin stays open: the agent stops when it closes. Stopping it (a deadline,
/// Ctrl-C, a flood, a broken contract) closes stdin and sends SIGTERM (it cleans up), then
/// SIGKILL after [`supervise::AGENT_STOP_GRACE`].
///
/// The agent file is checked and executed through one descriptor ([`crate::agent::Verified`]),
/// and the machine settings it may change are recorded before it starts and written back after
/// it ends, however it ends ([`host_settings`]).
pub fn run_boot(agent: &Path, req: &BootRequest) -> BootOutput {
    let start = Instant::now();
    let plan_rel = RunDir::log_rel(&req.key, "plan").with_extension("json");
    let plan_path = req.run_dir.abs(&plan_rel);
    let stderr_rel = RunDir::log_rel(&req.key, "agent");
    let results_rel = RunDir::log_rel(&req.key, "results");
    let logs = vec![stderr_rel.clone(), results_rel.clone(), plan_rel.clone()];
    let infra = |cause, msg: String| BootOutput::infra(&req.plan, Accel::Metal, cause, msg, vec![]);

    // The runtimes the cells start, copied beside the plan and checked; removed with the boot
    // (the plan keeps their SHA-256s).
    let runtimes_dir = req
        .run_dir
        .abs(&RunDir::log_rel(&req.key, "runtimes").with_extension(""));
    let _copies = CopiesGuard(runtimes_dir.clone());
    let runtimes_dir = match crate::runtimes::ready::copy_into(&req.plan.runtimes, &runtimes_dir) {
        Ok(dir) => dir,
        Err(e) => return infra(InfraCause::Runtime, e),
    };
    // This machine: the scratch dir the run made for it, metal speed.
    let plan = Placement {
        scratch_dir: req.plan.scratch_dir.clone(),
        scratch_disks: Vec::new(),
        modules: Vec::new(),
        runtimes_dir,
        limit_scale: 1,
    }
    .plan(&req.plan);
    let plan_json = match serde_json::to_string_pretty(&plan) {
        Ok(j) => j,
        Err(e) => return infra(InfraCause::Internal, format!("encoding the plan: {e}")),
    };
    if let Err(e) = crate::rundir::write_atomic(&plan_path, plan_json.as_bytes()) {
        return infra(InfraCause::BootSetup, format!("{e:#}"));
    }
    let open = |rel: &Path| req.run_dir.create_log(rel);
    let (stderr_log, results_log) = match (open(&stderr_rel), open(&results_rel)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return infra(InfraCause::BootSetup, format!("{e:#}")),
    };
    // Kept until the agent has been spawned: the command names its descriptor.
    let agent = match crate::agent::Verified::open(agent, crate::agent::expected_hash(agent)) {
        Ok(a) => a,
        Err(e) => return infra(InfraCause::Spawn, format!("{e:#}")),
    };
    let mut command = agent.command();
    command
        .arg("run-plan")
        .arg(&plan_path)
        .arg("--exit-on-stdin-eof");
    if let Some(file) = host_settings::test_smt_control() {
        command.arg("--smt-control").arg(file);
    }
    // The last step before the spawn: from here on the record must be restored.
    let settings = match host_settings::record(&req.plan.scratch_dir) {
        Ok(s) => s,
        Err(e) => return infra(InfraCause::HostSetup, format!("{e:#}")),
    };
    let spec = supervise::Spec {
        command,
        channels: vec![
            Channel::stdout("results", Role::Results, Some(results_log)),
            Channel::stderr("agent", Role::Diagnostics, Some(stderr_log)),
        ],
        stdin: Stdin::Hold,
        stop: Stop::Term {
            grace: supervise::AGENT_STOP_GRACE,
        },
        deadlines: req.deadlines.under(Accel::Metal),
        cancel: req.cancel.clone(),
    };
    let supervised = supervise::run(spec, Some(ResultStream::new(&req.plan)), &mut Quiet);
    drop(agent);
    // The agent has been reaped (the supervisor never returns before): whatever it left
    // changed goes back now.
    say_restored(&settings.restore(), &*req.sink);
    let mut sup = match supervised {
        Ok(s) => s,
        Err(e) => {
            return BootOutput::infra(
                &req.plan,
                Accel::Metal,
                InfraCause::Spawn,
                e.to_string(),
                logs,
            )
        }
    };
    let stream = sup
        .stream
        .take()
        .unwrap_or_else(|| ResultStream::new(&req.plan));
    let mut timings = BTreeMap::new();
    timings.insert("agent-start".to_string(), ms_between(start, sup.started));
    if let Some(t) = stream.hello_at {
        timings.insert("agent-ready".into(), ms_between(start, t));
    }
    if let Some(t) = stream.done_at {
        timings.insert("plan-done".into(), ms_between(start, t));
    }
    timings.insert("exit".into(), ms_between(start, sup.exited_at));

    let end = match sup.stopped.clone() {
        Some(end) => end,
        None if stream.is_done() => BootEnd::Completed,
        // Killed by a signal or a non-zero exit before Done: the agent crashed.
        None => BootEnd::Panic {
            line: format!(
                "mmx-agent ended before finishing the plan ({})",
                sup.status
                    .map_or_else(|| "exit status unknown".to_string(), |s| s.to_string())
            ),
            excerpt: sup.view().excerpt(Role::Diagnostics),
        },
    };
    BootOutput {
        stream,
        end,
        accel: Accel::Metal,
        started: start,
        sizing: None,
        logs,
        timings_ms: timings,
        kernel_source: None,
        kernel_substituted: None,
        channels: sup.channels(),
        // The host's kernel log is not read: see ARCHITECTURE.md, "Kernel warnings".
        kernel_warnings: Vec::new(),
        kernel_warnings_dropped: 0,
    }
}

/// A note for each setting the agent left changed, written back or not.
fn say_restored(restored: &[host_settings::Restore], sink: &dyn Sink) {
    for r in restored {
        match r.did {
            host_settings::Did::Unchanged => {}
            host_settings::Did::WroteBack { .. } => sink.note(Note::warning(format!(
                "restored a host setting the local agent left changed: {r}"
            ))),
            host_settings::Did::LeftAlone(_) | host_settings::Did::Failed(_) => sink.note(
                Note::warning(format!("a host setting the local agent changed: {r}")),
            ),
        }
    }
}

/// Removes a boot's runtime copies when the boot ends.
struct CopiesGuard(PathBuf);

impl Drop for CopiesGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The scratch directory for local runs: a fresh one under the matrix's `[local] scratch_dir`
/// or [`DEFAULT_SCRATCH_BASE`], claimed for this process so that the next run removes it if
/// mmx is killed ([`leftovers`]).
pub fn scratch_dir(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    let base = scratch_base(configured);
    std::fs::create_dir_all(&base)
        .map_err(|e| anyhow::anyhow!("creating scratch dir {}: {e}", base.display()))?;
    let dir = tempfile::Builder::new()
        .prefix(SCRATCH_PREFIX)
        .tempdir_in(&base)
        .map_err(|e| anyhow::anyhow!("scratch dir {} is not writable: {e}", base.display()))?;
    leftovers::claim(dir.path())?;
    Ok(dir.keep())
}

/// Where [`scratch_dir`] makes its directories.
pub fn scratch_base(configured: Option<&Path>) -> PathBuf {
    configured.map_or_else(|| PathBuf::from(DEFAULT_SCRATCH_BASE), Path::to_path_buf)
}

/// The filesystem type a directory lives on, as `protocol::Filesystem` where mmx knows it.
pub fn filesystem_of(dir: &Path) -> anyhow::Result<Result<protocol::Filesystem, String>> {
    let st =
        rustix::fs::statfs(dir).map_err(|e| anyhow::anyhow!("statfs({}): {e}", dir.display()))?;
    let magic = st.f_type as u64;
    let fs = protocol::Filesystem::from_statfs_magic(magic).ok_or_else(|| format!("{magic:#x}"));
    Ok(fs)
}
