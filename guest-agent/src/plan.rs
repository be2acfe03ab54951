//! Running a plan: the result stream of ARCHITECTURE.md — `Hello`, `Topology`, `Capabilities` (when
//! asked), one `CellResult` per item, `Done` — one line each, flushed as written, so whatever
//! finished before a crash stays readable.
//!
//! Each item runs on its own thread, so a panic becomes that item's `panic` outcome and the
//! stream goes on. `PlanItem::timeout_s`: when it passes, the agent asks the item to stop
//! (mounts runs stop between containers, tear down and remove their files), waits a grace period
//! for that, and reports `timeout` either way, with whatever the item measured if it did stop.
//! An item that does not stop in the grace period (a kernel stuck in a syscall, or a lock
//! benchmark, which cannot be asked) is abandoned on its thread — a mounts run's mounts live in
//! that thread's private namespace and touch nothing else — and the plan goes on.
//!
//! A SIGINT/SIGTERM/SIGHUP (or stdin EOF with `--exit-on-stdin-eof`) stops the plan after the
//! running item cleaned up (a mounts run within one container's start, a lock benchmark within
//! about a second, inside a window too); the stream then ends without `Done`, which tells the
//! harness it was cut short.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use protocol::limits::RESULT_LINE_MAX;
use protocol::{
    encode_line, AgentEvent, CellResult, Evidence, LogLevel, Outcome, Plan, PlanItem, Scenario,
};

use crate::mounts::{self, Cancel};
use crate::sys;

/// Whether the agent marks the probes and each item in the kernel log
/// ([`protocol::kmsg::Mark`]), so the harness can tell which item a kernel splat on the
/// console printed during.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marks {
    /// In a guest: the console is the harness's, and the log is the guest's own.
    Kmsg,
    /// On a host (`run-plan`): its kernel log is not ours to write into, and no one reads it.
    Off,
}

impl Marks {
    fn mark(self, m: protocol::kmsg::Mark) {
        if self == Marks::Kmsg {
            crate::sys::kmsg::write_record(&m.kmsg_record());
        }
    }
}

/// Run `plan`, writing result lines to `out`, marking the kernel log. The PID 1 path
/// (init.rs) calls this.
pub fn execute(plan: &Plan, out: &mut dyn Write) -> anyhow::Result<()> {
    execute_with(plan, out, Marks::Kmsg).map(|_| ())
}

/// [`execute`] without marks, also saying whether every item's outcome was a success.
pub fn execute_reporting(plan: &Plan, out: &mut dyn Write) -> anyhow::Result<bool> {
    execute_with(plan, out, Marks::Off)
}

fn execute_with(plan: &Plan, out: &mut dyn Write, marks: Marks) -> anyhow::Result<bool> {
    use protocol::kmsg::{Mark, Phase};
    protocol::check_schema(plan)?;
    let mut emit = |ev: AgentEvent| -> anyhow::Result<()> {
        writeln!(out, "{}", line_within_limit(ev)).context("write a result line")?;
        out.flush().context("flush a result line")
    };
    emit(AgentEvent::Hello {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        schema_version: protocol::SCHEMA_VERSION,
        kernel_release: kernel_release(),
        uptime_ms: uptime_ms(),
    })?;
    match std::panic::catch_unwind(crate::topology::observe) {
        Ok(t) => emit(AgentEvent::Topology(t))?,
        Err(p) => emit(log(
            LogLevel::Error,
            format!("topology: panicked: {}", mounts::panic_message(&*p)),
        ))?,
    }
    // The probes' answers depend on the layers' filesystem (idmapped mounts came to each in
    // its own release): once per scratch disk.
    if plan.probe {
        let disks = plan.scratch_disks.iter().map(|d| Some(d.filesystem));
        let disks: Vec<Option<protocol::Filesystem>> = if plan.scratch_disks.is_empty() {
            vec![None]
        } else {
            disks.collect()
        };
        for (disk, scratch) in disks.into_iter().zip(plan.probe_dirs()) {
            marks.mark(Mark::Begin(Phase::Probes));
            let probed = std::panic::catch_unwind(move || crate::probes::probe_all(&scratch));
            marks.mark(Mark::End(Phase::Probes));
            match probed {
                Ok(c) => emit(AgentEvent::Capabilities(protocol::Capabilities {
                    disk,
                    ..c
                }))?,
                Err(p) => emit(log(
                    LogLevel::Error,
                    format!("probes: panicked: {}", mounts::panic_message(&*p)),
                ))?,
            }
        }
    }
    let mut all_ok = true;
    let mut abandoned = Vec::new();
    for item in &plan.items {
        if sys::signal::stop_requested() {
            emit(log(
                LogLevel::Error,
                format!("stopped before {}", item.cell_id),
            ))?;
            return Ok(false);
        }
        marks.mark(Mark::Begin(Phase::Item(item.item)));
        let mut r = match item.scenario.validate() {
            Ok(()) => run_item(item, plan, &mut abandoned),
            Err(e) => bare(
                item,
                Outcome::InfraError,
                Evidence::new("invalid plan item").with_detail(e.to_string()),
            ),
        };
        marks.mark(Mark::End(Phase::Item(item.item)));
        // Whatever ran, the answer is for this item of the plan.
        r.item = item.item;
        all_ok &= r.outcome.is_success();
        emit(AgentEvent::CellResult(r))?;
    }
    // Items abandoned after a timeout may still be cleaning up; exiting now would cut that short
    // and leave their scratch files behind.
    let still = wait_for(&mut abandoned, ABANDONED_WAIT);
    if still > 0 {
        emit(log(
            LogLevel::Warn,
            format!("{still} timed-out item(s) still running at the end of the plan"),
        ))?;
    }
    if sys::signal::stop_requested() {
        emit(log(
            LogLevel::Error,
            "stopped; the plan did not finish".into(),
        ))?;
        return Ok(false);
    }
    emit(AgentEvent::Done {
        uptime_ms: uptime_ms(),
    })?;
    Ok(all_ok)
}

/// The result line of `ev`, at most [`RESULT_LINE_MAX`] bytes: the harness reads a longer line
/// as a protocol violation that ends the boot, so an event that does not fit is replaced by a
/// short one saying so — a result by this item's `fail` (an agent error: what it measured does
/// not fit), anything else by an error log line.
fn line_within_limit(ev: AgentEvent) -> String {
    let line = encode_line(&ev);
    if line.len() <= RESULT_LINE_MAX {
        return line;
    }
    let why = format!(
        "{} bytes; the protocol's limit is {RESULT_LINE_MAX}",
        line.len()
    );
    let small = match ev {
        AgentEvent::CellResult(r) => AgentEvent::CellResult(CellResult {
            item: r.item,
            cell_id: r.cell_id,
            outcome: Outcome::Fail,
            evidence: Some(
                Evidence::new("agent error: the result is too large for one line").with_detail(why),
            ),
            metrics: Default::default(),
            detail: None,
        }),
        _ => log(
            LogLevel::Error,
            format!("agent error: an event too large for one line was dropped ({why})"),
        ),
    };
    encode_line(&small)
}

fn log(level: LogLevel, message: String) -> AgentEvent {
    AgentEvent::Log { level, message }
}

/// How long a timed-out item gets to clean up: a tenth of its budget, 5–30 s.
fn grace(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_secs(5), Duration::from_secs(30))
}

/// How long the end of a plan waits for timed-out items to finish cleaning up.
const ABANDONED_WAIT: Duration = Duration::from_secs(60);

/// Wait up to `limit` for the threads to end; how many are still running.
fn wait_for(threads: &mut Vec<std::thread::JoinHandle<()>>, limit: Duration) -> usize {
    let start = std::time::Instant::now();
    while threads.iter().any(|t| !t.is_finished()) && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    threads.retain(|t| !t.is_finished());
    threads.len()
}

fn run_item(
    item: &PlanItem,
    plan: &Plan,
    abandoned: &mut Vec<std::thread::JoinHandle<()>>,
) -> CellResult {
    let cancel = Cancel::default();
    let (tx, rx) = mpsc::channel();
    let (scenario, dir, id, c) = (
        item.scenario.clone(),
        plan.item_dir(item),
        item.cell_id.clone(),
        cancel.clone(),
    );
    // A plan on erofs carries the layers as images on the scratch disk, made by the host.
    let erofs_images = (item.filesystem == Some(protocol::Filesystem::Erofs))
        .then(|| plan.item_dir(item).join(protocol::erofs::IMAGES_DIR));
    let opts = mounts::Options {
        runtimes: plan.runtimes.clone(),
        erofs_images,
        ..mounts::Options::default()
    };
    let spawned = std::thread::Builder::new()
        .name(format!("mmx-item-{}", item.cell_id))
        .spawn(move || {
            let r = match &scenario {
                Scenario::Mounts(m) => mounts::run_with(m, &dir, &id, &c, &opts),
                Scenario::Lockbench(l) => crate::lockbench::run(l, &dir, &id),
            };
            let _ = tx.send(r);
        });
    let handle = match spawned {
        Ok(h) => h,
        Err(e) => {
            return bare(
                item,
                Outcome::InfraError,
                Evidence::new("spawn the item thread").with_detail(e.to_string()),
            )
        }
    };
    let received = match item.timeout_s {
        Some(s) => rx.recv_timeout(Duration::from_secs(s)),
        None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
    };
    match received {
        Ok(r) => {
            let _ = handle.join();
            r
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let msg = match handle.join() {
                Err(p) => mounts::panic_message(&*p),
                Ok(()) => "item thread ended without a result".into(),
            };
            bare(
                item,
                Outcome::Panic,
                Evidence::new("the item panicked").with_detail(msg),
            )
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let limit = Duration::from_secs(item.timeout_s.unwrap_or(0));
            cancel.cancel();
            let step = format!("exceeded timeout_s = {}", limit.as_secs());
            match rx.recv_timeout(grace(limit)) {
                Ok(mut r) => {
                    let _ = handle.join();
                    let stopped = r
                        .evidence
                        .as_ref()
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    r.outcome = Outcome::Timeout;
                    r.evidence = Some(
                        Evidence::new(step)
                            .with_detail(format!("stopped and cleaned up: {stopped}")),
                    );
                    r
                }
                Err(_) => {
                    abandoned.push(handle);
                    bare(
                        item,
                        Outcome::Timeout,
                        Evidence::new(step).with_detail(format!(
                            "did not stop within {} s more; abandoned",
                            grace(limit).as_secs()
                        )),
                    )
                }
            }
        }
    }
}

fn bare(item: &PlanItem, outcome: Outcome, evidence: Evidence) -> CellResult {
    CellResult {
        item: item.item,
        cell_id: item.cell_id.clone(),
        outcome,
        evidence: Some(evidence),
        metrics: Default::default(),
        detail: None,
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |secs| (secs * 1000.0) as u64)
}

/// With `--exit-on-stdin-eof`: when the harness's end of stdin goes away, stop as SIGINT does.
pub fn watch_stdin_eof() {
    let _ = std::thread::Builder::new()
        .name("mmx-stdin-eof".into())
        .spawn(|| {
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            sys::signal::request_stop();
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_is_bounded() {
        assert_eq!(grace(Duration::from_secs(1)), Duration::from_secs(5));
        assert_eq!(grace(Duration::from_secs(100)), Duration::from_secs(10));
        assert_eq!(grace(Duration::from_secs(3600)), Duration::from_secs(30));
    }

    #[test]
    fn no_line_is_over_the_protocols_limit() {
        let small = log(LogLevel::Info, "hi".into());
        assert_eq!(line_within_limit(small.clone()), encode_line(&small));
        let huge = CellResult {
            item: 3,
            cell_id: "c".into(),
            outcome: Outcome::Pass,
            evidence: Some(Evidence::new("x".repeat(RESULT_LINE_MAX))),
            metrics: Default::default(),
            detail: None,
        };
        let line = line_within_limit(AgentEvent::CellResult(huge));
        assert!(line.len() <= RESULT_LINE_MAX, "{}", line.len());
        let Some(Ok(AgentEvent::CellResult(r))) = protocol::decode_line(&line) else {
            panic!("{line}")
        };
        assert_eq!(
            (r.item, r.cell_id.as_str(), r.outcome),
            (3, "c", Outcome::Fail)
        );
        assert!(r.evidence.unwrap().step.starts_with("agent error: "));
        let line = line_within_limit(log(LogLevel::Info, "y".repeat(RESULT_LINE_MAX)));
        assert!(line.len() <= RESULT_LINE_MAX);
        assert!(line.contains("dropped"), "{line}");
    }

    #[test]
    fn plan_without_items_streams_hello_to_done() {
        let plan = Plan {
            schema_version: protocol::SCHEMA_VERSION,
            boot_id: "t".into(),
            scratch_dir: std::env::temp_dir(),
            scratch_disks: Vec::new(),
            modules: vec![],
            probe: false,
            items: vec![],
            runtimes: vec![],
        };
        let mut out = Vec::new();
        assert!(execute_reporting(&plan, &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        let events: Vec<AgentEvent> = text
            .lines()
            .map(|l| protocol::decode_line(l).unwrap().unwrap())
            .collect();
        assert!(matches!(events.first(), Some(AgentEvent::Hello { .. })));
        assert!(matches!(events.get(1), Some(AgentEvent::Topology(_))));
        assert!(matches!(events.last(), Some(AgentEvent::Done { .. })));
    }

    #[test]
    fn invalid_item_is_a_result_for_its_item_not_a_crash() {
        let plan = Plan {
            schema_version: protocol::SCHEMA_VERSION,
            boot_id: "b".into(),
            scratch_dir: std::env::temp_dir(),
            scratch_disks: Vec::new(),
            modules: vec![],
            probe: false,
            items: vec![PlanItem {
                item: 7,
                cell_id: "bad".into(),
                scenario: Scenario::Mounts(protocol::MountsScenario {
                    strategy: protocol::Strategy::PerLayer.into(),
                    layers: 0,
                    containers: 1,
                    concurrency: 1,
                    passes: 2,
                    watchers: Vec::new(),
                }),
                timeout_s: Some(5),
                filesystem: None,
            }],
            runtimes: vec![],
        };
        let mut out = Vec::new();
        assert!(!execute_reporting(&plan, &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        let r = text
            .lines()
            .find_map(|l| match protocol::decode_line(l)?.ok()? {
                AgentEvent::CellResult(r) => Some(r),
                _ => None,
            })
            .expect("a result");
        assert_eq!((r.item, r.outcome), (7, Outcome::InfraError));
        let detail = r.evidence.unwrap().detail;
        assert!(detail.contains("layers = 0: must be 1..=256"), "{detail}");
    }
}
