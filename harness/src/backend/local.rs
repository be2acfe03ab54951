//! The `local` backend: the agent on this machine's own kernel, in a private mount namespace
//! (the agent makes it). Real, non-emulated numbers, and the fastest way to test the agent.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::{ms_between, BootOutput, BootRequest, EventCollector};
use crate::results::{Accel, BootEnd, RunDir};

/// Run `req.plan` with the agent binary at `agent` and collect its events.
///
/// The agent's stdout carries result lines; its stderr goes to the boot's agent log. `limit`
/// bounds the whole visit: past it the agent gets SIGTERM (it cleans up), then SIGKILL.
pub fn run_boot(agent: &Path, req: &BootRequest, limit: Duration) -> BootOutput {
    let start = Instant::now();
    let plan_rel = RunDir::log_rel(&req.id, "plan").with_extension("json");
    let plan_path = req.run_dir.abs(&plan_rel);
    let stderr_rel = RunDir::log_rel(&req.id, "agent");
    let results_rel = RunDir::log_rel(&req.id, "results");
    let logs = vec![stderr_rel.clone(), results_rel.clone(), plan_rel.clone()];

    let plan_json = match serde_json::to_string_pretty(&req.plan) {
        Ok(j) => j,
        Err(e) => {
            return BootOutput::infra(Accel::Metal, format!("encoding the plan: {e}"), vec![])
        }
    };
    if let Err(e) = std::fs::write(&plan_path, plan_json) {
        return BootOutput::infra(
            Accel::Metal,
            format!("writing the plan to {}: {e}", plan_path.display()),
            vec![],
        );
    }
    let stderr_file = match std::fs::File::create(req.run_dir.abs(&stderr_rel)) {
        Ok(f) => f,
        Err(e) => {
            return BootOutput::infra(Accel::Metal, format!("creating the agent log: {e}"), vec![])
        }
    };
    let mut results_log = std::fs::File::create(req.run_dir.abs(&results_rel)).ok();

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
                Accel::Metal,
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

    let mut collector = EventCollector::new();
    let mut end: Option<BootEnd> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(f) = results_log.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                collector.feed_line(&line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if req.cancel.is_cancelled() && end.is_none() {
            end = Some(BootEnd::Infra {
                message: "interrupted (Ctrl-C)".into(),
            });
            terminate(&mut child);
        }
        if start.elapsed() > limit && end.is_none() {
            end = Some(BootEnd::Timeout {
                limit: "agent".into(),
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
    if let Some(t) = collector.hello_at {
        timings.insert("agent-ready".into(), ms_between(start, t));
    }
    if let Some(t) = collector.done_at {
        timings.insert("plan-done".into(), ms_between(start, t));
    }
    timings.insert("exit".into(), ms_between(start, now));

    let end = end.unwrap_or_else(|| {
        if collector.is_done() {
            BootEnd::Completed
        } else {
            let tail = tail_of(&req.run_dir.abs(&stderr_rel), 20);
            match status {
                // Killed by a signal or non-zero exit before Done: the agent crashed.
                Ok(s) => BootEnd::Panic {
                    line: format!("mmx-agent ended before finishing the plan ({s})"),
                    excerpt: tail,
                },
                Err(e) => BootEnd::Infra {
                    message: format!("waiting for the agent: {e}"),
                },
            }
        }
    });
    BootOutput {
        events: collector.events,
        end,
        accel: Accel::Metal,
        logs,
        timings_ms: timings,
        kernel_source: None,
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
