//! Build idmapped overlay rootfses with one strategy: C containers × P passes on a pool of worker
//! threads, every merged view checked, every mount counted and cross-checked against the
//! kernel's mount table, per-container start latency measured.
//!
//! A run lives in its own mount namespace: [`run`] starts a thread that unshares one (and makes
//! `/` rprivate) and creates the workers, which inherit it. Nothing the run mounts is ever seen
//! outside it, and whatever a failure leaves behind dies with the thread. That also lets `run` be
//! called from any thread of a busy process (the lock benchmark's "storm" does) without touching
//! the caller's namespace.
//!
//! Time accounting: `syscall_us` sums the time inside mount-family calls (open_tree,
//! mount_setattr, move_mount, mount, umount2, fsopen/fsconfig/fsmount, and the close that
//! dissolves a detached tree) over all workers; `overhead_us` is the rest of the workers' time
//! spent on containers (userns helper, checks, cross-checks, bookkeeping). Latency per container
//! is the start path of all its passes, without checks, cross-checks and teardown.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{
    Better, CellDetail, CellResult, Evidence, Metric, MountOps, MountsResult, MountsScenario,
    Outcome, Strategy, Summary, Unit,
};

use crate::layers;
use crate::sys::{self, SysError};

mod container;
mod helpers;
mod strategy;
pub mod table;

use container::{Checks, RunCtx};
use helpers::Helpers;
use strategy::Tally;

/// Check a scenario before running it against the one set of limits (`protocol::limits`); the
/// message names the limit and why.
pub fn validate(s: &MountsScenario) -> Result<(), String> {
    s.validate().map_err(|e| e.to_string())
}

/// A stop request for one run: set by the caller (a plan item's timeout) or by a signal
/// (SIGINT, SIGTERM, SIGHUP) or stdin EOF. Checked per layer and per container while laying out,
/// by the helper maker, and by every worker before each container, so a run stops within one
/// container's start (milliseconds) and then removes what it made.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed) || sys::signal::stop_requested()
    }
}

/// Run a scenario on the filesystem of `scratch`. Never panics; every problem is an outcome.
pub fn run(scenario: &MountsScenario, scratch: &Path, cell_id: &str) -> CellResult {
    run_cancellable(scenario, scratch, cell_id, &Cancel::default())
}

/// [`run`], stopping between containers once `cancel` is set.
pub fn run_cancellable(
    scenario: &MountsScenario,
    scratch: &Path,
    cell_id: &str,
    cancel: &Cancel,
) -> CellResult {
    if let Err(msg) = validate(scenario) {
        return result(
            cell_id,
            Outcome::InfraError,
            Some(Evidence::new("invalid mounts scenario").with_detail(msg)),
        );
    }
    let (s, dir, id, c) = (
        scenario.clone(),
        scratch.to_owned(),
        cell_id.to_owned(),
        cancel.clone(),
    );
    let spawned =
        std::thread::Builder::new()
            .name("mmx-mounts".into())
            .spawn(move || -> CellResult {
                if let Err(e) = sys::ns::enter_private_mount_ns() {
                    return result(&id, Outcome::InfraError, Some(e.evidence()));
                }
                execute(&s, &dir, &id, &c)
            });
    let joined = match spawned {
        Ok(h) => h.join(),
        Err(e) => {
            return result(
                cell_id,
                Outcome::InfraError,
                Some(Evidence::new("spawn the run thread").with_detail(e.to_string())),
            )
        }
    };
    joined.unwrap_or_else(|panic| {
        result(
            cell_id,
            Outcome::Panic,
            Some(Evidence::new("mounts run panicked").with_detail(panic_message(&*panic))),
        )
    })
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

fn result(cell_id: &str, outcome: Outcome, evidence: Option<Evidence>) -> CellResult {
    CellResult {
        item: 0,
        cell_id: cell_id.to_owned(),
        outcome,
        evidence,
        metrics: BTreeMap::new(),
        detail: None,
    }
}

/// A directory of ours below the scratch dir. Dropping it detaches anything still mounted below
/// it (only possible after a failure) and removes it. Must be dropped in the namespace that
/// mounted there.
pub(crate) struct ScratchGuard {
    pub(crate) path: PathBuf,
}

impl Drop for ScratchGuard {
    fn drop(&mut self) {
        let mut prefix = self.path.as_os_str().as_bytes().to_vec();
        prefix.push(b'/');
        if let Ok(text) = std::fs::read("/proc/thread-self/mountinfo") {
            let mut below: Vec<Vec<u8>> = table::mount_points(&text)
                .filter(|p| p.starts_with(&prefix))
                .collect();
            // Deepest (latest) first.
            below.reverse();
            for p in below {
                if let Ok(c) = CString::new(p) {
                    let _ = sys::legacy::umount_detach(c.as_c_str());
                }
            }
        }
        // A stopping agent leaves the bulk removal to its reaper (see `trash`).
        crate::trash::discard(&self.path);
    }
}

static RUN_SEQ: AtomicU32 = AtomicU32::new(0);

fn infra(cell_id: &str, step: String, errno: Option<i32>, detail: String) -> CellResult {
    let mut e = Evidence::new(step).with_detail(detail);
    if let Some(n) = errno {
        e = e.with_errno(n);
    }
    result(cell_id, Outcome::InfraError, Some(e))
}

/// Prepare, run the workers, check and report. Runs on the run thread, in its namespace.
fn execute(s: &MountsScenario, scratch: &Path, cell_id: &str, cancel: &Cancel) -> CellResult {
    let prep_start = Instant::now();
    let scratch = match scratch.canonicalize() {
        Ok(p) if p.is_dir() => p,
        Ok(p) => {
            return infra(
                cell_id,
                "scratch dir".into(),
                Some(libc::ENOTDIR),
                format!("{}: not a directory", p.display()),
            )
        }
        Err(e) => {
            return infra(
                cell_id,
                "scratch dir".into(),
                e.raw_os_error(),
                format!("{}: {e}", scratch.display()),
            )
        }
    };
    let layers_fs = layers::filesystem_name(&scratch);
    // What a stopped agent's reaper did not get to, before this run's clock starts.
    crate::trash::sweep(&scratch);
    let seq = RUN_SEQ.fetch_add(1, Ordering::Relaxed);
    let root = scratch.join(format!("mmx-mounts-{}-{seq}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&root) {
        return infra(
            cell_id,
            format!("mkdir(run directory) on {layers_fs}"),
            e.raw_os_error(),
            format!("scratch dir is not writable: {}: {e}", root.display()),
        );
    }
    let run_dir = ScratchGuard { path: root.clone() };
    let stop = || cancel.is_cancelled();
    let layers = match layers::create_stoppable(&run_dir.path, s.layers, &stop) {
        Ok(l) => l,
        Err(_) if cancel.is_cancelled() => {
            return result(
                cell_id,
                Outcome::InfraError,
                Some(stop_evidence("while writing layers")),
            )
        }
        Err(e) => {
            return infra(
                cell_id,
                format!("write layers on {layers_fs}"),
                e.errno(),
                e.to_string(),
            )
        }
    };
    let containers = root.join("c");
    let prepared = std::fs::create_dir(&containers).and_then(|()| {
        (0..s.containers).try_for_each(|idx| {
            // Thousands of containers take a while to lay out: stay stoppable.
            if cancel.is_cancelled() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "stop requested",
                ));
            }
            container::prepare_dirs(&containers, idx, s)
        })
    });
    if cancel.is_cancelled() {
        return result(
            cell_id,
            Outcome::InfraError,
            Some(stop_evidence("while laying out container directories")),
        );
    }
    if let Err(e) = prepared {
        return infra(
            cell_id,
            format!("make container directories on {layers_fs}"),
            e.raw_os_error(),
            format!("below {}: {e}", containers.display()),
        );
    }
    let layer_paths: Vec<CString> = layers
        .dirs
        .iter()
        .map(|d| CString::new(d.as_os_str().as_bytes()).unwrap_or_default())
        .collect();
    let common = match s.strategy {
        Strategy::CommonParent => match layers::common_directory(&layers.dirs) {
            Ok(dir) => {
                let rel = layers
                    .dirs
                    .iter()
                    .map(|d| {
                        d.strip_prefix(&dir)
                            .map(|r| r.display().to_string())
                            .unwrap_or_default()
                    })
                    .collect();
                Some((
                    CString::new(dir.as_os_str().as_bytes()).unwrap_or_default(),
                    rel,
                ))
            }
            Err(e) => {
                return result(
                    cell_id,
                    Outcome::Unsupported,
                    Some(
                        Evidence::new("common directory of the layer paths")
                            .with_detail(e.to_string()),
                    ),
                )
            }
        },
        _ => None,
    };
    let plan = strategy::Plan::new(s.strategy, layer_paths, common);
    let observer = table::Observer::new(s.concurrency == 1);
    let (batches, specs) = container::pass_specs(s, layers.has_overrides(), layers.opaque);
    // With more CPUs than workers, each helper runs beside its worker, kept off the worker's
    // CPU and with a raised priority; otherwise helpers share the workers' CPUs as is.
    let spare_cpus =
        sys::ns::CpuSet::of_this_thread().filter(|c| c.count() > s.concurrency as usize);
    sys::ns::set_reap_inline(spare_cpus.is_none());
    let helpers = Helpers::new(s.containers, s.concurrency, batches, spare_cpus.is_some());
    // The first containers' helpers are made before the clock starts, the rest while it runs.
    let made = helpers.make_first();
    let ctx = RunCtx {
        plan: &plan,
        scenario: s,
        containers,
        specs: &specs,
        helpers: &helpers,
        spare_cpus,
        observer: &observer,
    };
    let prep = prep_start.elapsed();

    let wall_start = Instant::now();
    let outs = run_workers(&ctx, made, cancel);
    let wall = wall_start.elapsed();
    // Helpers made ahead and never used, and those the workers dropped: none may outlive the run.
    drop(ctx);
    drop(helpers);
    sys::ns::reap_pending(Duration::from_secs(5));

    let mut total = WorkerOut::default();
    for o in &outs {
        total.merge(o);
    }
    let leaked = observer.count_below(&root).unwrap_or(u64::MAX);
    let report = Report {
        s,
        layers_fs,
        method: observer.method(),
        wall,
        prep,
        leaked,
    };
    drop(run_dir);
    report.build(cell_id, total)
}

/// What one worker did.
#[derive(Default)]
struct WorkerOut {
    tally: Tally,
    checks: Checks,
    latencies: Vec<(u32, Duration)>,
    peak: u64,
    errors: Vec<(u32, SysError)>,
    busy: Duration,
}

impl WorkerOut {
    fn merge(&mut self, o: &WorkerOut) {
        self.tally.merge(&o.tally);
        self.checks.merge(&o.checks);
        self.latencies.extend_from_slice(&o.latencies);
        self.peak = self.peak.max(o.peak);
        self.errors.extend(o.errors.iter().cloned());
        self.busy += o.busy;
    }
}

/// Run the workers; meanwhile this thread makes userns helpers ahead of them.
fn run_workers(ctx: &RunCtx<'_>, made: u32, cancel: &Cancel) -> Vec<WorkerOut> {
    let next = AtomicU32::new(0);
    let abort = AtomicBool::new(false);
    let running = AtomicU32::new(ctx.scenario.concurrency);
    let maker = std::thread::current();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..ctx.scenario.concurrency)
            .map(|_| {
                let w = Worker {
                    ctx,
                    next: &next,
                    abort: &abort,
                    cancel,
                    maker: &maker,
                };
                let (running, maker) = (&running, &maker);
                scope.spawn(move || {
                    let out = w.run();
                    running.fetch_sub(1, Ordering::AcqRel);
                    maker.unpark();
                    out
                })
            })
            .collect();
        ctx.helpers
            .make_ahead(made, &next, &running, &|| cancel.is_cancelled());
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|p| {
                    abort.store(true, Ordering::SeqCst);
                    let mut out = WorkerOut::default();
                    out.errors.push((
                        u32::MAX,
                        SysError::plain("worker thread panicked", 0).context(panic_message(&*p)),
                    ));
                    out
                })
            })
            .collect()
    })
}

/// What a worker shares with the others.
#[derive(Clone, Copy)]
struct Worker<'a> {
    ctx: &'a RunCtx<'a>,
    next: &'a AtomicU32,
    abort: &'a AtomicBool,
    cancel: &'a Cancel,
    maker: &'a std::thread::Thread,
}

impl Worker<'_> {
    fn run(self) -> WorkerOut {
        let mut out = WorkerOut::default();
        // Own working directory: relative mount paths are per worker.
        if let Err(e) = sys::ns::unshare_fs() {
            self.abort.store(true, Ordering::SeqCst);
            out.errors.push((u32::MAX, e));
            return out;
        }
        loop {
            if self.cancel.is_cancelled() || self.abort.load(Ordering::Relaxed) {
                break;
            }
            let idx = self.next.fetch_add(1, Ordering::AcqRel);
            if idx >= self.ctx.scenario.containers {
                break;
            }
            // The maker keeps helpers ready a few containers past the last one claimed.
            self.maker.unpark();
            let t = Instant::now();
            let r = container::run(self.ctx, idx, &mut out.tally, &mut out.checks);
            out.busy += t.elapsed();
            match r {
                Ok(started) => {
                    out.latencies.push((idx, started.latency));
                    out.peak = out.peak.max(started.peak_seen);
                }
                Err(e) => {
                    self.abort.store(true, Ordering::SeqCst);
                    out.errors.push((idx, e));
                }
            }
        }
        // Leave the container directory so nothing pins it.
        let _ = rustix::process::chdir("/");
        out
    }
}

/// Why a run stopped early: the signal, or the caller's cancel (a plan item's timeout).
fn stop_evidence(when: &str) -> Evidence {
    let why = match sys::signal::stop_signal() {
        Some(sig) => format!("interrupted by signal {sig}"),
        None if sys::signal::stop_requested() => "stopped: stdin closed".to_owned(),
        None => "cancelled".to_owned(),
    };
    Evidence::new(why).with_detail(format!("stopped {when}"))
}

/// Errnos that mean "this kernel or filesystem cannot do that step".
fn means_unsupported(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP | libc::EBADF
    )
}

/// Errnos that mean "our side broke" (resources, privileges, the disk).
fn means_infra(errno: i32) -> bool {
    matches!(
        errno,
        libc::EPERM
            | libc::ENOSPC
            | libc::ENOMEM
            | libc::EMFILE
            | libc::ENFILE
            | libc::EIO
            | libc::EPIPE
            | libc::ETIMEDOUT
            | libc::EROFS
            | 0
    )
}

struct Report<'a> {
    s: &'a MountsScenario,
    layers_fs: String,
    method: &'static str,
    wall: Duration,
    prep: Duration,
    leaked: u64,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Report<'_> {
    fn build(self, cell_id: &str, mut t: WorkerOut) -> CellResult {
        let s = self.s;
        t.latencies.sort_by_key(|(idx, _)| *idx);
        let latency_us: Vec<u64> = t.latencies.iter().map(|(_, d)| us(*d)).collect();
        let samples: Vec<f64> = latency_us.iter().map(|&v| v as f64).collect();
        let latency = Summary::of(&samples);
        let completed = latency_us.len() as u32;
        let expected_ops = s.expected_ops_per_container() * u64::from(s.containers);
        let ops = t.tally.attach + t.tally.detach;
        let all_done = completed == s.containers;
        if all_done {
            t.checks.record("mount-ops-formula", ops == expected_ops, || {
                format!("{ops} mount-table operations on the start path, formula says {expected_ops}")
            });
        }
        t.checks.record("no-leaked-mounts", self.leaked == 0, || {
            format!("{} mounts left below the run directory", self.leaked)
        });
        let syscall_us = t.tally.syscall_ns / 1000;
        let busy_us = us(t.busy);
        let overhead_us = busy_us.saturating_sub(syscall_us);

        t.errors.sort_by_key(|(idx, _)| *idx);
        let (outcome, evidence) = if let Some((idx, e)) = t.errors.first() {
            let outcome = if completed == 0 && means_unsupported(e.errno) {
                Outcome::Unsupported
            } else if means_infra(e.errno) {
                Outcome::InfraError
            } else {
                Outcome::Fail
            };
            // Stable step: the call and the layers' filesystem. Which container, how far the
            // run got and the call's variable inputs go to the detail.
            let mut ev = e.evidence();
            ev.step = format!("{} on {}", e.call, self.layers_fs);
            let which = if *idx == u32::MAX {
                "a worker".to_owned()
            } else {
                format!("container {idx}")
            };
            ev.detail = format!(
                "{which}; {completed} of {} containers finished",
                s.containers
            );
            if !e.context.is_empty() {
                ev.detail = format!("{}; {}", ev.detail, e.context);
            }
            (outcome, Some(ev))
        } else if !all_done {
            let after = format!("after {completed} of {} containers", s.containers);
            (Outcome::InfraError, Some(stop_evidence(&after)))
        } else if let Some((name, detail)) = t.checks.first_failure() {
            (
                Outcome::Fail,
                Some(Evidence::new(format!("check {name}")).with_detail(detail)),
            )
        } else {
            (Outcome::Pass, None)
        };

        let metrics = metrics(&MetricInputs {
            latency_us: &latency_us,
            latency,
            ops,
            wall: self.wall,
            prep: self.prep,
            busy_us,
            overhead_us,
            ebusy_retries: t.tally.ebusy_retries,
        });

        CellResult {
            item: 0,
            cell_id: cell_id.to_owned(),
            outcome,
            evidence,
            metrics,
            detail: Some(CellDetail::Mounts(MountsResult {
                scenario: s.clone(),
                layers_fs: self.layers_fs,
                mount_ops: MountOps {
                    attachments: t.tally.attach,
                    detachments: t.tally.detach,
                    ops,
                    expected_ops,
                    teardown_detachments: t.tally.teardown,
                    cross_check_method: self.method.to_owned(),
                    peak_extra_mounts: t.peak,
                    leaked: self.leaked,
                },
                latency_us,
                latency,
                wall_us: us(self.wall),
                syscall_us,
                overhead_us,
                checks: t.checks.to_protocol(),
            })),
        }
    }
}

/// What the metrics of one run are computed from.
struct MetricInputs<'a> {
    latency_us: &'a [u64],
    latency: Option<Summary>,
    ops: u64,
    wall: Duration,
    prep: Duration,
    busy_us: u64,
    overhead_us: u64,
    ebusy_retries: u64,
}

/// The metrics of a mounts run. Names are stable: `mmx compare` matches baselines by name, and
/// the harness merges a cell's repeats by appending samples under the same name.
///
/// | name | unit | better | samples per run |
/// |---|---|---|---|
/// | `start_latency_us` | µs | lower | one per finished container: its start latency (all passes, no checks or teardown) |
/// | `latency_p50_us`, `latency_p99_us`, `latency_max_us` | µs | lower | one: that statistic over the run's containers |
/// | `mount_ops` | count | neither | one: mount-table operations on the start path |
/// | `wall_ms` | ms | lower | one: the workers' wall time (containers only, not preparation) |
/// | `prep_ms` | ms | neither | one: writing layers and container directories |
/// | `overhead_pct` | count (a percentage) | lower | one: the agent's own share of the workers' busy time (not in mount syscalls) |
/// | `ebusy_retries` | count | lower | one: umount2 calls repeated after EBUSY |
///
/// `start_latency_us` gives `mmx compare`'s rank test C samples per repeat, so it has power even
/// with one repeat; the percentile metrics stay for reports and for continuity with older runs.
fn metrics(m: &MetricInputs<'_>) -> BTreeMap<String, Metric> {
    let mut metrics = BTreeMap::new();
    if !m.latency_us.is_empty() {
        metrics.insert(
            "start_latency_us".to_owned(),
            Metric::new(
                Unit::Microseconds,
                Better::Lower,
                m.latency_us.iter().map(|&v| v as f64).collect(),
            ),
        );
    }
    if let Some(l) = m.latency {
        for (name, v) in [
            ("latency_p50_us", l.p50),
            ("latency_p99_us", l.p99),
            ("latency_max_us", l.max),
        ] {
            metrics.insert(
                name.to_owned(),
                Metric::one(Unit::Microseconds, Better::Lower, v),
            );
        }
    }
    metrics.insert(
        "mount_ops".into(),
        Metric::one(Unit::Count, Better::Neither, m.ops as f64),
    );
    metrics.insert(
        "wall_ms".into(),
        Metric::one(
            Unit::Milliseconds,
            Better::Lower,
            m.wall.as_secs_f64() * 1e3,
        ),
    );
    metrics.insert(
        "prep_ms".into(),
        Metric::one(
            Unit::Milliseconds,
            Better::Neither,
            m.prep.as_secs_f64() * 1e3,
        ),
    );
    if m.busy_us > 0 {
        // A percentage; protocol::Unit has no percent, Count prints it bare.
        let pct = 100.0 * m.overhead_us as f64 / m.busy_us as f64;
        metrics.insert(
            "overhead_pct".into(),
            Metric::one(Unit::Count, Better::Lower, pct),
        );
    }
    metrics.insert(
        "ebusy_retries".into(),
        Metric::one(Unit::Count, Better::Lower, m.ebusy_retries as f64),
    );
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(
        strategy: Strategy,
        layers: u32,
        containers: u32,
        concurrency: u32,
        passes: u32,
    ) -> MountsScenario {
        MountsScenario {
            strategy,
            layers,
            containers,
            concurrency,
            passes,
        }
    }

    #[test]
    fn formulas_per_container() {
        // DESIGN.md: per-layer P·(1+2L), common-parent P·3, fsconfig-fd P·1.
        assert_eq!(
            sc(Strategy::PerLayer, 50, 20, 2, 2).expected_ops_per_container(),
            202
        );
        assert_eq!(
            sc(Strategy::PerLayer, 1, 1, 1, 1).expected_ops_per_container(),
            3
        );
        assert_eq!(
            sc(Strategy::CommonParent, 100, 1, 1, 2).expected_ops_per_container(),
            6
        );
        assert_eq!(
            sc(Strategy::FsconfigFd, 100, 1, 1, 3).expected_ops_per_container(),
            3
        );
    }

    #[test]
    fn bad_scenarios_are_refused_with_the_limit() {
        let e = validate(&sc(Strategy::PerLayer, 0, 1, 1, 2)).unwrap_err();
        assert!(e.contains("1..=256"), "{e}");
        let e = validate(&sc(Strategy::PerLayer, 100_000, 1, 1, 2)).unwrap_err();
        assert!(e.contains("layers = 100000"), "{e}");
        let e = validate(&sc(Strategy::PerLayer, 5, 2, 3, 2)).unwrap_err();
        assert!(e.contains("concurrency = 3"), "{e}");
        assert!(validate(&sc(Strategy::PerLayer, 5, 2, 2, 0)).is_err());
        assert!(validate(&sc(Strategy::PerLayer, 5, 0, 0, 2)).is_err());
        assert!(validate(&sc(Strategy::FsconfigFd, 256, 4096, 4096, 8)).is_ok());
    }

    fn report(s: &MountsScenario) -> Report<'_> {
        Report {
            s,
            layers_fs: "ext4".into(),
            method: "listmount",
            wall: Duration::from_millis(10),
            prep: Duration::from_millis(1),
            leaked: 0,
        }
    }

    #[test]
    fn unsupported_evidence_has_a_stable_step_and_the_where_in_detail() {
        let s = sc(Strategy::FsconfigFd, 5, 10, 2, 2);
        let steps: Vec<String> = [(3u32, "layer 5 of 5"), (0, "the upper dir")]
            .into_iter()
            .map(|(idx, ctx)| {
                let mut out = WorkerOut::default();
                out.errors.push((
                    idx,
                    SysError::plain("fsconfig(FSCONFIG_SET_FD, \"lowerdir+\")", libc::EOPNOTSUPP)
                        .context(ctx),
                ));
                let r = report(&s).build("c", out);
                assert_eq!(r.outcome, Outcome::Unsupported);
                let ev = r.evidence.expect("evidence");
                assert_eq!(ev.errno_name(), Some("EOPNOTSUPP"));
                assert_eq!(
                    ev.detail,
                    format!("container {idx}; 0 of 10 containers finished; {ctx}")
                );
                ev.step
            })
            .collect();
        assert_eq!(steps[0], steps[1]);
        assert_eq!(steps[0], "fsconfig(FSCONFIG_SET_FD, \"lowerdir+\") on ext4");
    }

    #[test]
    fn every_container_latency_is_a_sample() {
        let s = sc(Strategy::PerLayer, 2, 3, 1, 2);
        let mut out = WorkerOut::default();
        for (i, us) in [(2u32, 300u64), (0, 100), (1, 200)] {
            out.latencies.push((i, Duration::from_micros(us)));
        }
        out.tally.attach = 3 * 2 * 3;
        out.tally.detach = 3 * 2 * 2;
        let r = report(&s).build("c", out);
        let m = &r.metrics["start_latency_us"];
        assert_eq!(m.samples, vec![100.0, 200.0, 300.0]);
        assert_eq!((m.unit, m.better), (Unit::Microseconds, Better::Lower));
        for kept in [
            "latency_p50_us",
            "latency_p99_us",
            "latency_max_us",
            "mount_ops",
        ] {
            assert_eq!(r.metrics[kept].samples.len(), 1, "{kept}");
        }
    }

    #[test]
    fn errno_classes_do_not_overlap() {
        for e in 0..200 {
            assert!(!(means_unsupported(e) && means_infra(e)), "errno {e}");
        }
    }
}
