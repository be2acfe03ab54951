//! A built-in strategy's worker: it claims the next container, starts it through the strategy
//! and checks it, until none is left, a stop is asked for, or another worker hit an error. The
//! window it runs in is `measure`'s.

use std::time::{Duration, Instant};

use super::cause::Cause;
use super::container::{self, Checks, RunCtx};
use super::count::Observed;
use super::measure::{panic_cause, Crew, Output};
use super::strategy::Tally;
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

impl Output for WorkerOut {
    fn merge(&mut self, o: WorkerOut) {
        self.tally.merge(&o.tally);
        self.checks.merge(&o.checks);
        self.latencies.extend(o.latencies);
        self.peak = self.peak.max(o.peak);
        self.errors.extend(o.errors);
        self.busy += o.busy;
        self.observed.merge(&o.observed);
    }

    fn panicked(message: String) -> WorkerOut {
        WorkerOut {
            errors: vec![panic_cause(message)],
            ..WorkerOut::default()
        }
    }
}

/// One worker of a built-in strategy's run.
pub(super) fn run(ctx: &RunCtx<'_>, crew: Crew<'_>) -> WorkerOut {
    let mut out = WorkerOut::default();
    // Own working directory: relative mount paths are per worker.
    if let Err(e) = sys::ns::unshare_fs() {
        crew.abort();
        out.errors.push((u32::MAX, Cause::agent(e)));
        return out;
    }
    while let Some(idx) = crew.claim() {
        let t = Instant::now();
        let r = container::run(
            ctx,
            &crew,
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
                crew.abort();
                out.errors.push((idx, e));
                break;
            }
        }
    }
    // Leave the container directory so nothing pins it.
    let _ = rustix::process::chdir("/");
    out
}
