//! Build idmapped overlay rootfses with one strategy: C containers × P passes on a pool of worker
//! threads, every merged view checked, every mount counted and cross-checked against the
//! kernel's mount table, per-container start latency measured. The strategy is one of the three
//! built-ins or a runtime's own mount code (`runtime`), which runs through the same layout,
//! checks and count.
//!
//! A run lives in its own mount namespace: [`run_with`] starts a thread that unshares one (and
//! makes `/` rprivate) and creates the workers, which inherit it. Nothing the run mounts is ever
//! seen outside it, and whatever a failure leaves behind dies with the thread. That also lets it be
//! called from any thread of a busy process (the lock benchmark's "storm" does) without touching
//! the caller's namespace.
//!
//! Counts come from the kernel (`count`), never from the agent's own call sequence; a run's
//! failure is typed (`cause`): only a call of the strategy's sequence can make it `unsupported`.
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
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{
    CellResult, CountSource, Evidence, MountStrategy, MountsScenario, Outcome, PlanRuntime,
    Strategy,
};

use crate::layers;
use crate::sys;
use crate::window::Phase;

mod cause;
mod container;
mod count;
mod helpers;
mod measure;
mod report;
mod runtime;
mod strategy;
pub mod table;
mod workers;

use cause::AgentError;
use container::RunCtx;
use measure::{measure, Measured};
use report::{agent_evidence, stop_evidence, Report};

/// Test hooks, set through the environment variable [`TestHooks::ENV`] (comma-separated): they
/// make a run misbehave on purpose, so tests can show that the agent's verdicts catch it. Never
/// set outside tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TestHooks {
    /// `agent-error`: container 0 fails with an internal error of the agent (carrying EINVAL,
    /// which once passed for the kernel's "unsupported"): the cell must `fail`.
    pub agent_error: bool,
    /// `extra-bind`: every pass makes one bind mount more than the strategy's sequence: the
    /// kernel's count must catch it.
    pub extra_bind: bool,
    /// `no-fanotify` / `no-unique-ids`: count as a kernel without fanotify mount events (unique
    /// mount ids) or without unique mount ids either (the mount table) would.
    pub best_source: Option<CountSource>,
}

impl TestHooks {
    pub const ENV: &'static str = "MMX_AGENT_TEST_HOOK";

    /// The hooks the environment asks for; an unknown one is an error naming the known ones.
    fn from_env() -> Result<TestHooks, String> {
        let mut hooks = TestHooks::default();
        let Ok(v) = std::env::var(Self::ENV) else {
            return Ok(hooks);
        };
        for h in v.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            match h {
                "agent-error" => hooks.agent_error = true,
                "extra-bind" => hooks.extra_bind = true,
                "no-fanotify" => hooks.best_source = Some(CountSource::UniqueMountIds),
                "no-unique-ids" => hooks.best_source = Some(CountSource::MountTableDiff),
                other => {
                    return Err(format!(
                        "{}={v}: unknown hook `{other}` (agent-error, extra-bind, no-fanotify, \
                         no-unique-ids)",
                        Self::ENV
                    ))
                }
            }
        }
        Ok(hooks)
    }

    /// The best count source the hooks leave the kernel.
    fn best_source(&self) -> CountSource {
        self.best_source.unwrap_or(CountSource::FanotifyMountEvents)
    }
}

/// How a run is embedded in something larger (the lock benchmark's storm).
#[derive(Clone, Default)]
pub struct Options {
    /// Mounts added to the run's namespace before its window opens: a tmpfs and bind mounts on
    /// it, removed after the run (the storm's table-size axis).
    pub prepopulate: u32,
    /// Shared with threads that measure beside the run.
    pub beside: Option<Arc<Beside>>,
    /// The runtimes a `runtime:NAME` strategy may start (the plan's).
    pub runtimes: Vec<PlanRuntime>,
    /// Where the layers' erofs images are (`<n>.erofs`): each layer is then an erofs mount of
    /// its image instead of a directory the run writes ([`crate::erofs`]).
    pub erofs_images: Option<PathBuf>,
}

/// What threads running beside a run (the storm's bystanders) see of it: where its mount table
/// is, and its window, open exactly while the workers start containers.
#[derive(Default)]
pub struct Beside {
    tid: AtomicI32,
    pub phase: Phase,
    /// Reads of the run's table in progress: the window's end waits for them, so a read that
    /// began in the window sees the table as the window left it, not half torn down (one read
    /// of a 10k table that straddled the end saw 5,046 entries).
    reads: AtomicU32,
}

/// How long the end of a window waits for reads of the table begun inside it (one read of a
/// 10k-entry table takes under half a second under TCG).
const READ_WAIT: Duration = Duration::from_secs(30);

impl Beside {
    /// The run thread's id once it is in the run's namespace: its mount table, the one the
    /// storm mounts in, is `/proc/self/task/<tid>/mountinfo`.
    pub fn tid(&self) -> Option<i32> {
        Some(self.tid.load(Ordering::Acquire)).filter(|&t| t > 0)
    }

    /// Register a read of the run's table; None once the window has ended (the run may be
    /// tearing its table down: do not read). Hold the guard for the whole read.
    pub fn begin_read(&self) -> Option<ReadGuard<'_>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `WindowGuard::drop`: either this read sees the window
        // ended, or the window's end sees this read.
        std::sync::atomic::fence(Ordering::SeqCst);
        let guard = ReadGuard(self);
        (self.phase.get() != Phase::STOP).then_some(guard)
    }
}

/// A read of a run's table in progress ([`Beside::begin_read`]).
pub struct ReadGuard<'a>(&'a Beside);

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        self.0.reads.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Closes a run's window however the run ends, so nothing beside it waits forever.
struct WindowGuard(Option<Arc<Beside>>);

impl WindowGuard {
    fn open(&self) {
        if let Some(b) = &self.0 {
            b.phase.set(Phase::MEASURE);
        }
    }
}

impl Drop for WindowGuard {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.phase.set(Phase::STOP);
            std::sync::atomic::fence(Ordering::SeqCst);
            let start = Instant::now();
            while b.reads.load(Ordering::SeqCst) > 0 && start.elapsed() < READ_WAIT {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

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

/// Run a scenario on the filesystem of `scratch`, stopping between containers once `cancel` is
/// set, embedded as `opts` says (the plan's runtimes, the storm's padding and bystanders).
/// Never panics; every problem is an outcome.
pub fn run_with(
    scenario: &MountsScenario,
    scratch: &Path,
    cell_id: &str,
    cancel: &Cancel,
    opts: &Options,
) -> CellResult {
    let window = WindowGuard(opts.beside.clone());
    if let Err(msg) = validate(scenario) {
        return result(
            cell_id,
            Outcome::InfraError,
            Some(Evidence::new("invalid mounts scenario").with_detail(msg)),
        );
    }
    let hook = match TestHooks::from_env() {
        Ok(h) => h,
        Err(msg) => {
            return result(
                cell_id,
                Outcome::InfraError,
                Some(Evidence::new("test hook").with_detail(msg)),
            )
        }
    };
    let (s, dir, id, c, o) = (
        scenario.clone(),
        scratch.to_owned(),
        cell_id.to_owned(),
        cancel.clone(),
        opts.clone(),
    );
    let spawned =
        std::thread::Builder::new()
            .name("mmx-mounts".into())
            .spawn(move || -> CellResult {
                if let Err(e) = sys::ns::enter_private_mount_ns() {
                    return result(&id, Outcome::InfraError, Some(e.evidence()));
                }
                execute(&s, &dir, &id, &c, &o, hook)
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
    drop(window);
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
fn execute(
    s: &MountsScenario,
    scratch: &Path,
    cell_id: &str,
    cancel: &Cancel,
    opts: &Options,
    hook: TestHooks,
) -> CellResult {
    let prep_start = Instant::now();
    let window = WindowGuard(opts.beside.clone());
    if let Some(b) = &opts.beside {
        b.tid.store(sys::ns::thread_id(), Ordering::Release);
    }
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
    let made = match &opts.erofs_images {
        None => layers::create_stoppable(&run_dir.path, s.layers, &stop).map(|l| (l, None)),
        Some(images) => match crate::erofs::mount_layers(images, &run_dir.path, s.layers, &stop) {
            Ok((l, info)) => Ok((l, Some(info))),
            Err(_) if cancel.is_cancelled() => {
                return result(
                    cell_id,
                    Outcome::InfraError,
                    Some(stop_evidence("while mounting erofs layers")),
                )
            }
            Err(e) => {
                return result(
                    cell_id,
                    Outcome::InfraError,
                    Some(crate::erofs::failure_evidence(&e)),
                )
            }
        },
    };
    // On erofs the layers live on their own mounts: that is their filesystem.
    let layers_fs = match &made {
        Ok((l, Some(_))) => l
            .dirs
            .first()
            .map_or(layers_fs, |d| layers::filesystem_name(d)),
        _ => layers_fs,
    };
    let (layers, erofs) = match made {
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
            container::prepare_dirs(&containers, idx, s, hook.extra_bind)
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
    let padding = match Padding::add(&root, opts.prepopulate, &stop) {
        Ok(p) => p,
        Err(_) if cancel.is_cancelled() => {
            return result(
                cell_id,
                Outcome::InfraError,
                Some(stop_evidence("while adding mounts to the table")),
            )
        }
        Err(e) => {
            let mut ev = e.evidence();
            ev.step = format!(
                "add {} mounts to the run's table: {}",
                opts.prepopulate, e.call
            );
            return result(cell_id, Outcome::InfraError, Some(ev));
        }
    };
    let prepared = Prepared {
        s,
        cell_id,
        cancel,
        hook,
        root,
        containers,
        layers,
        layers_fs,
        erofs,
        prep_start,
        returns: crate::watchers::Returns::default(),
    };
    let r = match &s.strategy {
        MountStrategy::Builtin(st) => run_builtin(*st, &prepared, window),
        MountStrategy::Runtime(name) => match opts.runtimes.iter().find(|r| &r.name == name) {
            Some(rt) => runtime::run(rt, &prepared, window),
            None => infra(
                cell_id,
                format!("runtime `{name}` is not in the plan"),
                None,
                "the harness names every runtime its cells start in the plan's `runtimes`".into(),
            ),
        },
    };
    // The table goes before the run directory it lives in; its cost goes with the result.
    let table = padding.take_down();
    let mut r = r;
    if let (Some(table), Some(protocol::CellDetail::Mounts(m))) = (table, r.detail.as_mut()) {
        m.table = Some(table);
    }
    drop(run_dir);
    r
}

/// What every run has made before its strategy starts: the run directory, the layers and the
/// containers' directories.
pub(crate) struct Prepared<'a> {
    pub(crate) s: &'a MountsScenario,
    pub(crate) cell_id: &'a str,
    pub(crate) cancel: &'a Cancel,
    pub(crate) hook: TestHooks,
    /// The run directory (canonical).
    pub(crate) root: PathBuf,
    /// `<root>/c`.
    pub(crate) containers: PathBuf,
    pub(crate) layers: layers::Layers,
    pub(crate) layers_fs: String,
    /// How the layers were mounted, when they are erofs images.
    pub(crate) erofs: Option<protocol::erofs::ErofsLayers>,
    pub(crate) prep_start: Instant,
    /// When each merged overlay's mount returned, for the watchers' lag (recorded only when
    /// the scenario has watchers).
    pub(crate) returns: crate::watchers::Returns,
}

/// A built-in strategy's run: its plan, the workers, the kernel's count against the formula.
fn run_builtin(st: Strategy, p: &Prepared<'_>, window: WindowGuard) -> CellResult {
    let (s, cell_id, hook, root) = (p.s, p.cell_id, p.hook, &p.root);
    let layers = &p.layers;
    let layer_paths: Vec<CString> = layers
        .dirs
        .iter()
        .map(|d| CString::new(d.as_os_str().as_bytes()).unwrap_or_default())
        .collect();
    let common = match st {
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
            // The agent wrote the layers below one directory itself: not the kernel's answer.
            Err(e) => {
                return result(
                    cell_id,
                    Outcome::Fail,
                    Some(agent_evidence(&AgentError::Bug(format!(
                        "common directory of the layer paths: {e}"
                    )))),
                )
            }
        },
        _ => None,
    };
    // Each erofs layer is a mount below the common directory (when that is above the layers:
    // one layer is its own common directory): the clone carries them all.
    let submounts = p.erofs.is_some()
        && common.as_ref().is_some_and(|(dir, _)| {
            layers
                .dirs
                .iter()
                .all(|d| d.as_os_str().as_bytes() != dir.as_bytes())
        });
    let mut plan = strategy::Plan::new(st, layer_paths, common);
    plan.common_has_submounts = submounts;
    plan.extra_bind = hook.extra_bind;
    let best = hook.best_source();
    let observer = table::Observer::new(s.concurrency == 1, best == CountSource::MountTableDiff);
    let (batches, specs) = container::pass_specs(s, layers.has_overrides(), layers.opaque);
    let start = || {
        // The kernel counts from here on: nothing but the workers mounts in this namespace now.
        let counter = count::Counter::start(root, best);
        let ctx = RunCtx {
            plan: &plan,
            scenario: s,
            containers: p.containers.clone(),
            specs: &specs,
            observer: &observer,
            source: counter.source(),
            hook,
            returns: (!s.watchers.is_empty()).then_some(&p.returns),
        };
        (counter, ctx)
    };
    let Measured {
        total,
        count: counter,
        wall,
        prep,
        watchers,
    } = measure(p, window, batches, start, workers::run);
    let counted = counter.finish(&total.observed, root, root);
    let leaked = observer.count_below(root).unwrap_or(u64::MAX);
    let report = Report {
        s,
        layers_fs: p.layers_fs.clone(),
        method: observer.method(),
        wall,
        prep,
        leaked,
        counted,
        runtime: None,
        erofs: p.erofs.clone(),
        carried_submounts: submounts,
    };
    let mut r = report.build(cell_id, total);
    crate::watchers::attach(&mut r, s.containers, watchers);
    r
}

/// Mounts added to a run's namespace before its window (the storm's table-size axis): two small
/// tmpfs at `<run>/pad` and `<run>/pad-src`, and `n - 2` bind mounts of the second on
/// directories of the first. The source lives on a mount of its own because a bind checks every
/// child mount of its source's mount (`has_locked_children`): binding from the tmpfs that holds
/// the targets made growing the table quadratic (10k mounts took seconds). Dropping it detaches
/// them all at once.
/// The mounts a storm puts in the run's table first: a tmpfs parent (`pad`) with one bind
/// mount of a tmpfs source (`pad-src`) per mount below it. Taken down by one lazy detach of the
/// parent (and one of the source): against one unmount per mount, on the development machine's
/// 6.18, 0.14 s against 2.3 s for 10,000 mounts, and neither leaves a mount behind
/// (`tests::a_table_is_taken_down_without_a_trace`).
struct Padding {
    dirs: Vec<PathBuf>,
    mounts: u32,
    populate: std::time::Duration,
}

impl Padding {
    fn add(root: &Path, n: u32, stop: &dyn Fn() -> bool) -> Result<Padding, sys::SysError> {
        let io = |what: &'static str| {
            move |e: std::io::Error| sys::SysError::from_io(|| what.into(), &e)
        };
        let started = std::time::Instant::now();
        let mut padding = Padding {
            dirs: Vec::new(),
            mounts: n,
            populate: std::time::Duration::ZERO,
        };
        let (pad, src) = (root.join("pad"), root.join("pad-src"));
        for dir in [&pad, &src].into_iter().take(n.min(2) as usize) {
            std::fs::create_dir(dir).map_err(io("mkdir(pad)"))?;
            sys::legacy::mount_tmpfs(dir.as_path())?;
            padding.dirs.push(dir.clone());
        }
        for i in 2..n {
            if i % 256 == 0 && stop() {
                return Err(sys::SysError::plain("stop requested", libc::EINTR));
            }
            let d = pad.join(i.to_string());
            std::fs::create_dir(&d).map_err(io("mkdir(pad/<i>)"))?;
            sys::legacy::mount_bind(src.as_path(), d.as_path())?;
        }
        padding.populate = started.elapsed();
        Ok(padding)
    }

    /// Take the table down (one lazy detach of each parent) and say what it cost; `None` for
    /// a run without one.
    fn take_down(mut self) -> Option<protocol::TableCost> {
        let started = std::time::Instant::now();
        let had = !self.dirs.is_empty();
        for dir in self.dirs.drain(..) {
            let _ = sys::legacy::umount_detach(dir.as_path());
        }
        let us = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        had.then(|| protocol::TableCost {
            mounts: self.mounts,
            populate_us: us(self.populate),
            teardown_us: us(started.elapsed()),
            teardown: protocol::TableTeardown::LazyDetach,
        })
    }
}

impl Drop for Padding {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = sys::legacy::umount_detach(dir.as_path());
        }
    }
}

/// A mounts scenario, for the tests of this module and its rooms.
#[cfg(test)]
pub(crate) fn sc(
    strategy: Strategy,
    layers: u32,
    containers: u32,
    concurrency: u32,
    passes: u32,
) -> MountsScenario {
    MountsScenario {
        strategy: strategy.into(),
        layers,
        containers,
        concurrency,
        passes,
        watchers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mounts in this thread's namespace.
    fn table_len() -> usize {
        std::fs::read_to_string("/proc/thread-self/mountinfo")
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    /// A storm's 10,000-mount table, made and taken down both ways in a private namespace:
    /// each way leaves the table as it was (no mount behind). The times are printed for
    /// ARCHITECTURE.md's choice (one lazy detach), never asserted.
    #[test]
    fn a_table_is_taken_down_without_a_trace() {
        if !crate::testing::require_root("a_table_is_taken_down_without_a_trace", "mounts") {
            return;
        }
        const N: u32 = 10_000;
        let root = std::env::temp_dir().join(format!("mmx-table-test-{}", std::process::id()));
        std::fs::create_dir(&root).expect("test dir");
        let dir = root.clone();
        std::thread::spawn(move || {
            // Its own mount namespace (this thread only), private from the start: the host's
            // table never sees the 10,000 mounts (tests beside this one check that table).
            sys::ns::enter_private_mount_ns().expect("private mount namespace");
            let before = table_len();
            let never = || false;
            // One lazy detach of the parent (and of the source).
            let p = Padding::add(&root, N, &never).expect("populate");
            assert_eq!(table_len(), before + N as usize);
            let lazy = p.take_down().expect("a table");
            assert_eq!(table_len(), before, "the lazy detach left mounts behind");
            // One unmount per mount, innermost first, then the parents.
            std::fs::remove_dir_all(root.join("pad")).expect("rm pad");
            std::fs::remove_dir_all(root.join("pad-src")).expect("rm pad-src");
            let mut p = Padding::add(&root, N, &never).expect("populate again");
            let started = std::time::Instant::now();
            for i in (2..N).rev() {
                sys::legacy::umount(root.join("pad").join(i.to_string()).as_path())
                    .expect("umount pad/<i>");
            }
            for d in p.dirs.drain(..) {
                sys::legacy::umount(d.as_path()).expect("umount parent");
            }
            let each = started.elapsed();
            assert_eq!(table_len(), before, "the unmounts left mounts behind");
            eprintln!(
                "table of {N} mounts: populate {:.0} ms / {:.0} ms; teardown: one lazy detach \
                 {:.1} ms, {N} unmounts {:.1} ms",
                lazy.populate_us as f64 / 1e3,
                p.populate.as_secs_f64() * 1e3,
                lazy.teardown_us as f64 / 1e3,
                each.as_secs_f64() * 1e3
            );
        })
        .join()
        .expect("the table thread");
        std::fs::remove_dir_all(&dir).expect("remove the test dir");
    }

    #[test]
    fn formulas_per_container() {
        // ARCHITECTURE.md: per-layer P·(1+2L), common-parent P·3, fsconfig-fd P·1.
        assert_eq!(
            sc(Strategy::PerLayer, 50, 20, 2, 2).expected_ops_per_container(),
            Some(202)
        );
        assert_eq!(
            sc(Strategy::PerLayer, 1, 1, 1, 1).expected_ops_per_container(),
            Some(3)
        );
        assert_eq!(
            sc(Strategy::CommonParent, 100, 1, 1, 2).expected_ops_per_container(),
            Some(6)
        );
        assert_eq!(
            sc(Strategy::FsconfigFd, 100, 1, 1, 3).expected_ops_per_container(),
            Some(3)
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

    #[test]
    fn the_window_ends_after_the_reads_begun_in_it_and_refuses_new_ones() {
        let beside = Arc::new(Beside::default());
        let window = WindowGuard(Some(beside.clone()));
        window.open();
        let read = beside.begin_read().expect("the window is open");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(move || {
                drop(window);
                tx.send(()).ok();
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(rx.try_recv().is_err(), "the window waited for the read");
            assert!(beside.begin_read().is_none(), "no new read once it ends");
            drop(read);
            rx.recv_timeout(Duration::from_secs(10))
                .expect("and ended once the read did");
        });
    }
}
