//! The measured window of a run, one for every strategy (the built-ins and a runtime's own
//! mount code), so the order in which a run starts its clock and tears its workers down lives
//! here and nowhere else:
//!
//! 1. before the clock: the userns helpers of the first containers, then the kernel's count
//!    (nothing but the workers mounts in the run's namespace from then on);
//! 2. the window opens; the workers claim containers until none is left, while the run thread
//!    makes helpers ahead of them and drains the count; the window closes;
//! 3. the workers' context and the helpers are dropped, and every dropped helper is reaped (at
//!    most [`REAP_LIMIT`]), so none outlives the run;
//! 4. the workers' outputs are merged into one, handed back with the count to end.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::cause::{AgentError, Cause};
use super::count::{Allocations, Counter};
use super::helpers::Helpers;
use super::{panic_message, Cancel, Prepared, WindowGuard};
use crate::sys;
use crate::sys::userns::{Batches, CpuSet};

/// How long the end of a run waits for the helpers it dropped to be killed and reaped.
const REAP_LIMIT: Duration = Duration::from_secs(5);

/// The kernel's count of a run, begun before the clock and ended by the strategy once every
/// helper is reaped. The run thread drains it while the workers run, at least every `period`.
pub(super) trait Count {
    fn period(&self) -> Duration;
    fn drain(&mut self);
}

/// A built-in's count: every mount event of the run's namespace.
impl Count for Counter {
    fn period(&self) -> Duration {
        self.drain_period()
    }

    fn drain(&mut self) {
        Counter::drain(self);
    }
}

/// A runtime's count: its workers count their jobs themselves; the run counts allocations.
impl Count for Allocations {
    fn period(&self) -> Duration {
        Duration::from_millis(20)
    }

    fn drain(&mut self) {}
}

/// What one worker hands back; the run's is all of them merged.
pub(super) trait Output: Default + Send {
    fn merge(&mut self, other: Self);
    /// The output of a worker that panicked.
    fn panicked(message: String) -> Self;
}

/// What one worker is given while the window is open: the containers to claim, the userns
/// helpers made ahead, and whether to stop.
#[derive(Clone, Copy)]
pub(super) struct Crew<'a> {
    /// This worker's index, `0..concurrency`.
    pub(super) worker: u32,
    pub(super) helpers: &'a Helpers,
    /// Where helpers may run when there are CPUs to spare beside the workers: each is kept off
    /// its worker's CPU while it checks (see `UserNs::keep_off_cpu`).
    pub(super) spare_cpus: Option<&'a CpuSet>,
    containers: u32,
    next: &'a AtomicU32,
    abort: &'a AtomicBool,
    cancel: &'a Cancel,
    maker: &'a Thread,
}

impl Crew<'_> {
    /// The next container for this worker; None once none is left, a stop was asked for, or
    /// another worker failed.
    pub(super) fn claim(&self) -> Option<u32> {
        if self.cancel.is_cancelled() || self.abort.load(Ordering::Relaxed) {
            return None;
        }
        let idx = self.next.fetch_add(1, Ordering::AcqRel);
        if idx >= self.containers {
            return None;
        }
        // The maker keeps helpers ready a few containers past the last one claimed.
        self.maker.unpark();
        Some(idx)
    }

    /// This worker failed: the others claim no more containers.
    pub(super) fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
    }
}

/// A run's window, measured.
pub(super) struct Measured<C, O> {
    /// Every worker's output, merged.
    pub(super) total: O,
    /// The count, for the strategy to end.
    pub(super) count: C,
    /// The window: the first claim to the last worker's end.
    pub(super) wall: Duration,
    /// From the start of the run's preparation to the window.
    pub(super) prep: Duration,
    /// The scenario's watchers through the window (`crate::watchers`).
    pub(super) watchers: Vec<protocol::WatcherFigures>,
}

/// Measure a run of `p`: `start` begins the kernel's count and builds what the workers share
/// (`W`, dropped before the helpers); `worker` is one worker, claiming containers through its
/// [`Crew`] until none is left. `window` (the storm's bystanders' view) is open exactly while
/// the workers run.
pub(super) fn measure<C: Count, W: Sync, O: Output>(
    p: &Prepared<'_>,
    window: WindowGuard,
    batches: Batches,
    start: impl FnOnce() -> (C, W),
    worker: impl Fn(&W, Crew<'_>) -> O + Sync,
) -> Measured<C, O> {
    let s = p.s;
    // With more CPUs than workers, each helper runs beside its worker, kept off the worker's
    // CPU and with a raised priority; otherwise helpers share the workers' CPUs as is.
    let spare_cpus = CpuSet::of_this_thread().filter(|c| c.count() > s.concurrency as usize);
    sys::userns::set_reap_inline(spare_cpus.is_none());
    let helpers = Helpers::new(s.containers, s.concurrency, batches, spare_cpus.is_some());
    // The first containers' helpers are made before the clock starts, the rest while it runs.
    let made = helpers.make_first();
    let (mut count, shared) = start();
    // The watchers set up and read the table once before the clock, as a daemon that was there
    // before the containers.
    let watching = match s.builtin() {
        Some(_) => crate::watchers::start(&s.watchers),
        None => crate::watchers::Running::not_here(
            &s.watchers,
            "a runtime's workers mount in mount namespaces of their own (one per worker), not \
             the run's: a watcher of the run's table would see none of their mounts",
        ),
    };
    let prep = p.prep_start.elapsed();

    let wall_start = Instant::now();
    window.open();
    let outs = {
        let next = AtomicU32::new(0);
        let abort = AtomicBool::new(false);
        let maker = std::thread::current();
        let crew = Crew {
            worker: 0,
            helpers: &helpers,
            spare_cpus: spare_cpus.as_ref(),
            containers: s.containers,
            next: &next,
            abort: &abort,
            cancel: p.cancel,
            maker: &maker,
        };
        run_workers(s.concurrency, crew, made, &mut count, &|c| {
            worker(&shared, c)
        })
    };
    let wall = wall_start.elapsed();
    // Before anything but the workers touches the table again; a runtime's mounts are not the
    // agent's to time (no lag).
    let watchers = watching.finish(s.builtin().map(|_| &p.returns));
    drop(window);
    // Helpers made ahead and never used, and those the workers dropped: none may outlive the run.
    drop(shared);
    drop(helpers);
    sys::userns::reap_pending(REAP_LIMIT);

    let mut total = O::default();
    for o in outs {
        total.merge(o);
    }
    Measured {
        total,
        count,
        wall,
        prep,
        watchers,
    }
}

/// `n` workers, each with its own copy of `crew`, while this thread makes userns helpers ahead
/// of them (from container `made` on) and drains `count`. A worker that panics stops the others.
fn run_workers<O: Output>(
    n: u32,
    crew: Crew<'_>,
    made: u32,
    count: &mut dyn Count,
    worker: &(dyn Fn(Crew<'_>) -> O + Sync),
) -> Vec<O> {
    let running = AtomicU32::new(n);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|w| {
                let running = &running;
                scope.spawn(move || {
                    let out = worker(Crew { worker: w, ..crew });
                    running.fetch_sub(1, Ordering::AcqRel);
                    crew.maker.unpark();
                    out
                })
            })
            .collect();
        let period = count.period();
        crew.helpers.make_ahead(
            made,
            crew.next,
            &running,
            &|| crew.cancel.is_cancelled(),
            (&mut || count.drain(), period),
        );
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|p| {
                    crew.abort();
                    O::panicked(panic_message(&*p))
                })
            })
            .collect()
    })
}

/// The error a panicked worker leaves (`u32::MAX`: the worker itself, no container).
pub(super) fn panic_cause(message: String) -> (u32, Cause) {
    (u32::MAX, Cause::Agent(AgentError::Panic(message)))
}
