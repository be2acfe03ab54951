//! The measured window that benchmark threads share: warm-up, measure, stop. The lock benchmark
//! drives it with timers; a mounts run drives it itself (open while its workers start
//! containers), so threads running beside it measure exactly that phase.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Sleep for `d`, in slices, returning early once a stop is requested.
pub fn sleep_unless_stopped(d: Duration) {
    let end = Instant::now() + d;
    while !crate::sys::signal::stop_requested() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

/// Benchmark threads (and the storm's bystanders) read this at every batch: warm-up ops are not counted, measured ops are,
/// and stop ends the loop. Kept on its own cache line so reading it costs nothing next to the
/// contended line.
#[repr(C, align(128))]
pub struct Phase(AtomicU32);

impl Phase {
    pub const WARMUP: u32 = 0;
    pub const MEASURE: u32 = 1;
    pub const STOP: u32 = 2;

    pub fn new() -> Phase {
        Phase(AtomicU32::new(Phase::WARMUP))
    }

    #[inline]
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }

    pub fn set(&self, phase: u32) {
        self.0.store(phase, Ordering::Release);
    }

    /// Warm up, then open the measured window and close it; returns the window's real length
    /// (shorter after a stop request, which ends both at once).
    pub fn drive(&self, warmup: Duration, window: Duration) -> Duration {
        sleep_unless_stopped(warmup);
        let t0 = Instant::now();
        self.0.store(Phase::MEASURE, Ordering::Release);
        sleep_unless_stopped(window);
        self.0.store(Phase::STOP, Ordering::Release);
        t0.elapsed()
    }
}

impl Default for Phase {
    fn default() -> Self {
        Phase::new()
    }
}
