//! `user-spin`: N threads on one global lock, the critical section one increment of shared data
//! (Netflix's global-lock-bench, which reproduced the r5.metal cliff without containerd).
//!
//! Lock kinds: test-and-set with `pause` in the wait loop, ticket, `std::sync::Mutex` (futex),
//! and a per-thread baseline with no shared lock. Each comes in two layouts: lock and data on
//! separate 128-byte lines, and (false sharing) data on the lock's own line — for the
//! per-thread baseline that is every thread's counter packed next to the others'.
//!
//! A thread reads the clock once per batch of K operations, K chosen so that reading the clock
//! and recording the sample costs at most [`TIMER_BUDGET`] of a batch; the latencies reported
//! are per operation (batch time / K). Mutual exclusion is checked, not assumed: the counter
//! the locks protect must equal the operations the threads made.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use protocol::lockbench::LockKind;
use protocol::{Better, Evidence, Metric, Unit};

use super::hist::Hist;
use super::pinning::{self, pin_current_thread};
use super::{ns, point, BenchError, Ctx, Family, Measured, Phase};

/// Share of a sample that the clock read may cost (the issue allows 5%; aim lower).
const TIMER_BUDGET: f64 = 0.02;
/// Batches never grow past this, so a thread notices the end of a window within microseconds.
const MAX_BATCH: u64 = 1 << 16;

/// 128 bytes: Intel's adjacent-line prefetcher pulls 64-byte lines in pairs, so 64-byte padding
/// still false-shares.
#[repr(C, align(128))]
#[derive(Default)]
struct Line<T>(T);

/// One contended operation: take the lock, bump the data, release.
trait Contended: Sync {
    fn op(&self, tid: usize);
    /// The protected data's final value (must equal the operations made).
    fn value(&self) -> u64;
}

trait RawLock: Sync + Default {
    fn lock(&self);
    fn unlock(&self);
}

/// Test-and-test-and-set: exchange to take it, spin reading (with `pause`) while it is held so
/// the waiting CPUs share the line instead of bouncing it.
#[derive(Default)]
struct Tas(AtomicU32);

impl RawLock for Tas {
    #[inline(always)]
    fn lock(&self) {
        while self.0.swap(1, Acquire) != 0 {
            while self.0.load(Relaxed) != 0 {
                spin_loop();
            }
        }
    }
    #[inline(always)]
    fn unlock(&self) {
        self.0.store(0, Release);
    }
}

/// Ticket lock: FIFO, every waiter spins on `serving`.
#[derive(Default)]
struct Ticket {
    next: AtomicU32,
    serving: AtomicU32,
}

impl RawLock for Ticket {
    #[inline(always)]
    fn lock(&self) {
        let me = self.next.fetch_add(1, Relaxed);
        while self.serving.load(Acquire) != me {
            spin_loop();
        }
    }
    #[inline(always)]
    fn unlock(&self) {
        // Only the holder writes `serving`.
        self.serving
            .store(self.serving.load(Relaxed).wrapping_add(1), Release);
    }
}

/// Plain read-increment-write of data that only the lock protects: a broken lock loses counts.
/// A relaxed load and store (plain moves on x86 and arm64), not an atomic RMW: the lock is what
/// makes it safe, and an atomic increment would hide a broken one.
#[inline(always)]
fn bump(data: &AtomicU64) {
    data.store(data.load(Relaxed) + 1, Relaxed);
}

#[derive(Default)]
struct Apart<L> {
    lock: Line<L>,
    data: Line<AtomicU64>,
}

impl<L: RawLock> Contended for Apart<L> {
    #[inline(always)]
    fn op(&self, _tid: usize) {
        self.lock.0.lock();
        bump(&self.data.0);
        self.lock.0.unlock();
    }
    fn value(&self) -> u64 {
        self.data.0.load(Acquire)
    }
}

#[repr(C, align(128))]
#[derive(Default)]
struct Together<L> {
    lock: L,
    data: AtomicU64,
}

impl<L: RawLock> Contended for Together<L> {
    #[inline(always)]
    fn op(&self, _tid: usize) {
        self.lock.lock();
        bump(&self.data);
        self.lock.unlock();
    }
    fn value(&self) -> u64 {
        self.data.load(Acquire)
    }
}

#[derive(Default)]
struct MutexApart {
    m: Line<Mutex<()>>,
    data: Line<AtomicU64>,
}

impl Contended for MutexApart {
    #[inline(always)]
    fn op(&self, _tid: usize) {
        // A poisoned mutex still excludes; the benchmark has no invariant for poison to guard.
        let _g = self.m.0.lock().unwrap_or_else(|e| e.into_inner());
        bump(&self.data.0);
    }
    fn value(&self) -> u64 {
        self.data.0.load(Acquire)
    }
}

/// The futex word and the data share a line (a `Mutex<u64>` is 16 bytes).
#[derive(Default)]
struct MutexTogether(Line<Mutex<u64>>);

impl Contended for MutexTogether {
    #[inline(always)]
    fn op(&self, _tid: usize) {
        let mut g = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        *g += 1;
    }
    fn value(&self) -> u64 {
        *self.0 .0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// No lock: each thread bumps its own counter. A relaxed load + store, not an atomic RMW, so it
/// is the cost of an increment with nothing shared; atomics keep the compiler from merging a
/// batch into one add.
struct PerThread<C> {
    counters: Vec<C>,
}

impl<C: Default> PerThread<C> {
    fn new(n: usize) -> Self {
        PerThread {
            counters: (0..n).map(|_| C::default()).collect(),
        }
    }
}

trait Counter: Sync + Default {
    fn get(&self) -> &AtomicU64;
}
impl Counter for Line<AtomicU64> {
    fn get(&self) -> &AtomicU64 {
        &self.0
    }
}
/// Sixteen counters packed on one 128-byte line: neighbours are other benchmark threads, never
/// unrelated heap data.
#[derive(Default)]
struct Packed(Line<[AtomicU64; 16]>);

impl<C: Counter> Contended for PerThread<C> {
    #[inline(always)]
    fn op(&self, tid: usize) {
        let c = self.counters[tid].get();
        c.store(c.load(Relaxed) + 1, Relaxed);
    }
    fn value(&self) -> u64 {
        self.counters.iter().map(|c| c.get().load(Relaxed)).sum()
    }
}

impl Contended for PerThread<Packed> {
    #[inline(always)]
    fn op(&self, tid: usize) {
        let c = &self.counters[tid / 16].0 .0[tid % 16];
        c.store(c.load(Relaxed) + 1, Relaxed);
    }
    fn value(&self) -> u64 {
        let all = self.counters.iter().flat_map(|l| l.0 .0.iter());
        all.map(|c| c.load(Relaxed)).sum()
    }
}

/// One thread's account of a point.
#[derive(Default)]
struct ThreadOut {
    measured: u64,
    total: u64,
    hist: Hist,
    pin_error: Option<String>,
}

#[inline(never)]
fn worker<B: Contended>(b: &B, tid: usize, k: u64, phase: &Phase) -> ThreadOut {
    let mut out = ThreadOut::default();
    let mut start = Instant::now();
    loop {
        let ph = phase.get();
        if ph == Phase::STOP {
            break;
        }
        // Look at the phase every 16 operations too: under heavy contention on overcommitted
        // vCPUs (a ticket lock in a TCG guest) one batch can take seconds, and the window must
        // still end on time. A cut-short batch counts toward the total (the mutual-exclusion
        // check needs every increment) but is not a sample.
        let mut done = 0;
        while done < k {
            b.op(tid);
            done += 1;
            if done % 16 == 0 && phase.get() == Phase::STOP {
                break;
            }
        }
        let end = Instant::now();
        out.total += done;
        if ph == Phase::MEASURE && done == k {
            out.measured += k;
            out.hist.record(ns(end - start));
        }
        start = end;
    }
    out
}

struct Run {
    threads: Vec<ThreadOut>,
    window: Duration,
}

fn run_threads<B: Contended>(
    b: &B,
    cpus: &[Option<u32>],
    k: u64,
    warmup: Duration,
    window: Duration,
) -> Run {
    let phase = Phase::new();
    let barrier = Barrier::new(cpus.len() + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = cpus
            .iter()
            .enumerate()
            .map(|(tid, &cpu)| {
                let (phase, barrier) = (&phase, &barrier);
                s.spawn(move || {
                    let pin_error = cpu.and_then(|c| {
                        pin_current_thread(c)
                            .err()
                            .map(|e| format!("pin to CPU {c}: {e}"))
                    });
                    barrier.wait();
                    ThreadOut {
                        pin_error,
                        ..worker(b, tid, k, phase)
                    }
                })
            })
            .collect();
        barrier.wait();
        let window = phase.drive(warmup, window);
        let threads = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| ThreadOut {
                    pin_error: Some("benchmark thread panicked".into()),
                    ..ThreadOut::default()
                })
            })
            .collect();
        Run { threads, window }
    })
}

/// Nanoseconds per operation, one thread, no contention: the best of a few short runs.
fn op_cost_ns<B: Contended>(b: &B) -> f64 {
    const N: u32 = 1 << 16;
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..N {
                b.op(0);
            }
            t.elapsed().as_secs_f64() * 1e9 / f64::from(N)
        })
        .fold(f64::INFINITY, f64::min)
}

/// What one sample costs the worker loop beyond its operations: a clock read and a histogram
/// record. Best of a few runs.
pub(crate) fn timer_cost_ns() -> f64 {
    const N: u32 = 100_000;
    let mut h = Hist::default();
    (0..5)
        .map(|_| {
            let t0 = Instant::now();
            let mut prev = t0;
            for _ in 0..N {
                let now = Instant::now();
                h.record(ns(now - prev));
                prev = now;
            }
            t0.elapsed().as_secs_f64() * 1e9 / f64::from(N)
        })
        .fold(f64::INFINITY, f64::min)
}

/// Smallest power of two K with timer / (K × op) ≤ budget.
fn batch_for(timer_ns: f64, op_ns: f64) -> u64 {
    let want = (timer_ns / (TIMER_BUDGET * op_ns.max(0.01)))
        .ceil()
        .max(1.0) as u64;
    want.next_power_of_two().min(MAX_BATCH)
}

/// The lock kinds × layouts, each as a type, behind one function so the sweep stays data.
fn with_kind<R>(
    kind: LockKind,
    together: bool,
    n: usize,
    f: &mut dyn FnMut(&dyn DynRun) -> R,
) -> R {
    match (kind, together) {
        (LockKind::Tas, false) => f(&Apart::<Tas>::default()),
        (LockKind::Tas, true) => f(&Together::<Tas>::default()),
        (LockKind::Ticket, false) => f(&Apart::<Ticket>::default()),
        (LockKind::Ticket, true) => f(&Together::<Ticket>::default()),
        (LockKind::Mutex, false) => f(&MutexApart::default()),
        (LockKind::Mutex, true) => f(&MutexTogether::default()),
        (LockKind::PerThread, false) => f(&PerThread::<Line<AtomicU64>>::new(n.max(1))),
        (LockKind::PerThread, true) => f(&PerThread::<Packed>::new(n.max(1).div_ceil(16))),
    }
}

/// Object-safe face of a monomorphised benchmark: the hot loop stays generic.
trait DynRun {
    fn run(&self, cpus: &[Option<u32>], k: u64, warmup: Duration, window: Duration) -> Run;
    fn op_cost_ns(&self) -> f64;
    fn value(&self) -> u64;
}

impl<B: Contended> DynRun for B {
    fn run(&self, cpus: &[Option<u32>], k: u64, warmup: Duration, window: Duration) -> Run {
        run_threads(self, cpus, k, warmup, window)
    }
    fn op_cost_ns(&self) -> f64 {
        op_cost_ns(self)
    }
    fn value(&self) -> u64 {
        Contended::value(self)
    }
}

fn workload_name(kind: LockKind) -> &'static str {
    match kind {
        LockKind::Tas => "tas",
        LockKind::Ticket => "ticket",
        LockKind::Mutex => "mutex",
        LockKind::PerThread => "per-thread",
    }
}

pub(super) fn bench(ctx: &Ctx) -> Result<Family, BenchError> {
    let sc = ctx.scenario;
    let mut fam = Family::default();
    let timer_ns = timer_cost_ns();
    let layouts: &[bool] = if sc.false_sharing {
        &[false, true]
    } else {
        &[false]
    };
    // The shortest sample any point recorded, for the timer-overhead note.
    let mut shortest: Option<(u64, String)> = None;

    for &pin in &sc.pinning {
        for &kind in &sc.locks {
            for &together in layouts {
                // Batch size from the uncontended cost; contention only makes ops longer.
                let op_ns = with_kind(kind, together, 1, &mut |b| b.op_cost_ns());
                let k = batch_for(timer_ns, op_ns);
                for &n in &ctx.threads {
                    ctx.check_stop()?;
                    let nu = n as usize;
                    let Some(cpus) = pinning::plan(pin, &ctx.topo, nu) else {
                        // The pinning's own CPUs (2 for one node of 4), and which layout.
                        let room = pinning::cpus(pin, &ctx.topo)
                            .map_or(ctx.topo.cpus_online.len(), |c| c.len());
                        fam.notes.push(format!(
                            "user-spin {}{}: {n} threads do not fit pinning {} ({room} of {} \
                             CPUs online); skipped",
                            workload_name(kind),
                            if together { "+fs" } else { "" },
                            pin.as_str(),
                            ctx.topo.cpus_online.len()
                        ));
                        continue;
                    };
                    let (run, value) = with_kind(kind, together, nu, &mut |b| {
                        let r = b.run(&cpus, k, ctx.warmup(), ctx.window());
                        (r, b.value())
                    });
                    if let Some(e) = run.threads.iter().find_map(|t| t.pin_error.clone()) {
                        return Err(BenchError::Infra(
                            Evidence::new("sched_setaffinity").with_detail(e),
                        ));
                    }
                    let total: u64 = run.threads.iter().map(|t| t.total).sum();
                    if value != total {
                        return Err(BenchError::Fail(
                            Evidence::new(format!("{} mutual exclusion", workload_name(kind)))
                                .with_detail(format!("counter {value} after {total} increments")),
                        ));
                    }
                    let mut hist = Hist::default();
                    for t in &run.threads {
                        hist.merge(&t.hist);
                    }
                    if let Some(min) = hist.min() {
                        if shortest.as_ref().is_none_or(|(s, _)| min < *s) {
                            let w = format!(
                                "{}{} N={n} K={k}",
                                workload_name(kind),
                                if together { "+fs" } else { "" }
                            );
                            shortest = Some((min, w));
                        }
                    }
                    fam.points.push(point(Measured {
                        workload: workload_name(kind).into(),
                        pinning: pin,
                        smt: ctx.smt,
                        false_sharing: together,
                        threads: n,
                        window: run.window,
                        per_thread_ops: run.threads.iter().map(|t| t.measured).collect(),
                        samples: Some(&hist),
                        ops_per_sample: u32::try_from(k).unwrap_or(u32::MAX),
                        readers: None,
                    }));
                }
            }
        }
    }

    fam.metrics.insert(
        "timer_overhead_ns".into(),
        Metric::one(Unit::Nanoseconds, Better::Lower, timer_ns),
    );
    if let Some((min, what)) = shortest {
        let pct = 100.0 * timer_ns / min as f64;
        // With an SMT toggle this runs once per state: say which, or the notes read the same.
        let state = if sc.toggle_smt {
            format!(" (SMT {})", ctx.smt.as_str())
        } else {
            String::new()
        };
        fam.notes.push(format!(
            "timer overhead{state}: {timer_ns:.1} ns per sample (clock read + record); shortest \
             sample {min} ns ({what}) → {pct:.2}% (budget 5%)"
        ));
        fam.metrics.insert(
            "timer_overhead_pct".into(),
            Metric::one(Unit::Ratio, Better::Lower, pct / 100.0),
        );
    }
    if ctx.opts.compare_c {
        compare_c(ctx, &mut fam, timer_ns);
    }
    Ok(fam)
}

/// Time the C reference loop and this benchmark's own 1-thread test-and-set point, alternately,
/// best of three each, and note Rust/C.
fn compare_c(ctx: &Ctx, fam: &mut Family, timer_ns: f64) {
    let (warmup, window) = (ctx.warmup(), ctx.window());
    let op_ns = op_cost_ns(&Apart::<Tas>::default());
    let k = batch_for(timer_ns, op_ns);
    let (mut best_c, mut best_rust) = (0f64, 0f64);
    for _ in 0..3 {
        let c = time_c(warmup, window);
        best_c = best_c.max(c);
        let b = Apart::<Tas>::default();
        let r = run_threads(&b, &[None], k, warmup, window);
        let ops: u64 = r.threads.iter().map(|t| t.measured).sum();
        best_rust = best_rust.max(ops as f64 / r.window.as_secs_f64());
    }
    let ratio = if best_c > 0.0 {
        best_rust / best_c
    } else {
        0.0
    };
    fam.notes.push(format!(
        "C reference loop: Rust tas 1 thread {:.1}M ops/s vs C {:.1}M ops/s → Rust/C = {ratio:.3} \
         (best of 3, {} build of the agent, C at -O2)",
        best_rust / 1e6,
        best_c / 1e6,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    ));
    fam.metrics.insert(
        "c_loop_ratio".into(),
        Metric::one(Unit::Ratio, Better::Higher, ratio),
    );
    fam.metrics.insert(
        "c_loop_ops_per_s".into(),
        Metric::one(Unit::OpsPerSecond, Better::Higher, best_c),
    );
}

/// C loop ops/s over `window` after `warmup`, in chunks short enough to stop on time (at the
/// window's end, or at once after a stop).
fn time_c(warmup: Duration, window: Duration) -> f64 {
    const CHUNK: u64 = 1 << 16;
    let spin = |d: Duration| {
        let t0 = Instant::now();
        let mut ops = 0u64;
        while t0.elapsed() < d && !crate::sys::signal::stop_requested() {
            std::hint::black_box(crate::sys::cspin::spin(CHUNK));
            ops += CHUNK;
        }
        (ops, t0.elapsed())
    };
    spin(warmup);
    let (ops, d) = spin(window);
    ops as f64 / d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_excludes_and_counts() {
        for kind in [
            LockKind::Tas,
            LockKind::Ticket,
            LockKind::Mutex,
            LockKind::PerThread,
        ] {
            for together in [false, true] {
                let cpus = [None, None, None];
                let (run, value) = with_kind(kind, together, 3, &mut |b| {
                    let r = b.run(&cpus, 8, Duration::from_millis(1), Duration::from_millis(5));
                    (r, b.value())
                });
                let total: u64 = run.threads.iter().map(|t| t.total).sum();
                assert_eq!(value, total, "{kind:?} together={together}");
                assert!(run.threads.iter().all(|t| t.measured <= t.total));
            }
        }
    }

    #[test]
    fn batches_keep_the_timer_under_budget() {
        assert_eq!(batch_for(20.0, 1000.0), 1);
        assert_eq!(batch_for(20.0, 5.0), 256);
        assert_eq!(batch_for(20.0, 0.0), MAX_BATCH);
        let k = batch_for(25.0, 3.0) as f64;
        assert!(25.0 / (k * 3.0) <= TIMER_BUDGET);
    }

    #[test]
    fn c_loop_runs() {
        let a = crate::sys::cspin::spin(10);
        let b = crate::sys::cspin::spin(5);
        assert_eq!(b, a + 5);
    }
}
