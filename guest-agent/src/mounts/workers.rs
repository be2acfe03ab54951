//! The workers of a run: each claims the next container, starts it through the strategy and
//! checks it, until none is left, a stop is asked for, or another worker hit an error.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::cause::{AgentError, Cause};
use super::container::{self, Checks, RunCtx};
use super::count::Observed;
use super::strategy::Tally;
use super::{panic_message, Cancel};
use crate::sys;

/// What one worker did.
#[derive(Default)]
pub(super) struct WorkerOut {
    pub(super) tally: Tally,
    pub(super) checks: Checks,
    pub(super) latencies: Vec<(u32, Duration)>,
    pub(super) peak: u64,
    /// What stopped a container, by container index (`u32::MAX`: the worker itself).
    pub(super) errors: Vec<(u32, Cause)>,
    pub(super) busy: Duration,
    pub(super) observed: Observed,
}

impl WorkerOut {
    pub(super) fn merge(&mut self, o: &WorkerOut) {
        self.tally.merge(&o.tally);
        self.checks.merge(&o.checks);
        self.latencies.extend_from_slice(&o.latencies);
        self.peak = self.peak.max(o.peak);
        self.errors.extend(o.errors.iter().cloned());
        self.busy += o.busy;
        self.observed.merge(&o.observed);
    }
}

/// Run the workers; meanwhile this thread makes userns helpers ahead of them.
/// `tick` runs on this thread at every wake-up of the helper maker, at least every `period`.
pub(super) fn run_workers(
    ctx: &RunCtx<'_>,
    made: u32,
    cancel: &Cancel,
    tick: (&mut dyn FnMut(), Duration),
) -> Vec<WorkerOut> {
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
            .make_ahead(made, &next, &running, &|| cancel.is_cancelled(), tick);
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|p| {
                    abort.store(true, Ordering::SeqCst);
                    let mut out = WorkerOut::default();
                    out.errors.push((
                        u32::MAX,
                        Cause::Agent(AgentError::Panic(panic_message(&*p))),
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
            out.errors.push((u32::MAX, Cause::agent(e)));
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
            let r = container::run(
                self.ctx,
                idx,
                &mut out.tally,
                &mut out.checks,
                &mut out.observed,
            );
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
