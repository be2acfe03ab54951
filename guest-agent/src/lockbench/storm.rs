//! `storm`: start containers with each mount strategy at growing concurrency, on mount tables of
//! growing size, while bystander threads look paths up and read the mount table, so the report
//! shows what a strategy costs everything else on the machine, not only itself.
//!
//! Each storm is one mounts run (`crate::mounts::run_with`) in its own private namespace,
//! pre-populated with the scenario's `prepopulated_mounts` before its window opens. The window
//! is the run's own: open exactly while its workers start containers, so the bystanders measure
//! that phase and nothing of the run's preparation or cleanup. `mount_lock` is global across
//! namespaces: the stat() readers stay in the agent's namespace and still spin in `path_init()`
//! whenever a writer holds it. The mount-table reader reads the table the storm mounts in
//! (`/proc/self/task/<run thread>/mountinfo`): the "30 s to read the mount table" symptom grows
//! with that table, not with the agent's.
//!
//! Points: `storm:idle` (readers alone, the agent's own table), then per table size, strategy and
//! concurrency N: `storm:<strategy>` (ops = the run's mount-table operations as the kernel
//! counted them, latency = per-container start, reader_* = the bystanders' stat() latency) and
//! `mountinfo-during:<strategy>` (latency = one whole read of the storm's table; `threads` is the
//! storm's N, so the series reads like the others). Both carry `prepopulated_mounts` and
//! `table_entries` (the table's size as the reader saw it). A strategy the kernel cannot do is a
//! note; a strategy that fails in any other way fails the cell with its evidence.

use std::ffi::CString;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use protocol::lockbench::{LockPoint, Pinning, StormPoint};
use protocol::{CellDetail, Evidence, MountsResult, MountsScenario, Outcome, Strategy};
use rustix::fs::{AtFlags, CWD};

use super::hist::Hist;
use super::pinning::{self, pin_current_thread};
use super::{ns, point, sys, BenchError, Ctx, Family, Measured, Phase};
use crate::mounts::{self, Beside};

const DEPTH: usize = 16;
/// containerd mounts every container's layers twice (ARCHITECTURE.md).
const PASSES: u32 = 2;

pub(super) fn bench(ctx: &Ctx) -> Result<Family, BenchError> {
    let mut deep = ctx.work.join("storm-deep");
    for i in 0..DEPTH {
        deep.push(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep)
        .map_err(|e| BenchError::from_io(format!("mkdir {}", deep.display()), &e))?;
    let leaf = deep.join("leaf");
    std::fs::write(&leaf, b"x")
        .map_err(|e| BenchError::from_io(format!("create {}", leaf.display()), &e))?;
    let leaf = sys::cstring(&leaf)?;
    let mounts_dir = ctx.work.join("storm-mounts");
    std::fs::create_dir_all(&mounts_dir)
        .map_err(|e| BenchError::from_io(format!("mkdir {}", mounts_dir.display()), &e))?;

    let sc = ctx.scenario;
    let pin = sc.pinning.first().copied().unwrap_or(Pinning::None);
    let readers = sc.readers as usize;
    let mut fam = Family::default();

    // Readers alone, for the window: the latency the storms are compared with.
    let phase = Arc::new(Phase::new());
    let (warmup, window) = (ctx.warmup(), ctx.window());
    let idle = with_readers(ctx, pin, readers, &leaf, &phase, None, || {
        Ok(phase.drive(warmup, window))
    })?;
    let (by, took) = idle;
    fam.points
        .push(by.point(StormPoint::Idle.to_string(), 0, pin, ctx, took));

    let mut unsupported: Vec<Strategy> = Vec::new();
    for &pre in &sc.prepopulated_mounts {
        for &strategy in &sc.strategies {
            if unsupported.contains(&strategy) {
                continue;
            }
            for &n in &ctx.threads {
                ctx.check_stop()?;
                let scenario = MountsScenario {
                    strategy: strategy.into(),
                    layers: sc.layers.max(1),
                    containers: sc.containers.max(n),
                    concurrency: n,
                    passes: PASSES,
                    watchers: sc.watchers.clone(),
                };
                let id = format!("storm/{}", scenario.label());
                let beside = Arc::new(Beside::default());
                let opts = mounts::Options {
                    prepopulate: pre,
                    beside: Some(beside.clone()),
                    runtimes: Vec::new(),
                    erofs_images: None,
                };
                let (bystanders, cell) = with_readers(
                    ctx,
                    pin,
                    readers,
                    &leaf,
                    &beside.phase,
                    Some(&beside),
                    || {
                        Ok(mounts::run_with(
                            &scenario,
                            &mounts_dir,
                            &id,
                            &mounts::Cancel::default(),
                            &opts,
                        ))
                    },
                )?;
                let detail = match (&cell.outcome, &cell.detail) {
                    (Outcome::Pass, Some(CellDetail::Mounts(m))) => m,
                    // The kernel's answer: the other strategies still storm.
                    (Outcome::Unsupported, _) => {
                        let ev = cell
                            .evidence
                            .as_ref()
                            .map_or(String::new(), |e| format!(": {e}"));
                        fam.notes
                            .push(format!("storm {strategy}: unsupported{ev}; no points"));
                        unsupported.push(strategy);
                        break;
                    }
                    (o, _) => {
                        let ev = cell
                            .evidence
                            .clone()
                            .unwrap_or_else(|| Evidence::new("no evidence"));
                        let detail = format!("N={n}, {pre} prepopulated mounts; {}", ev.detail);
                        let mut out = Evidence::new(format!("storm {strategy}: {}", ev.step))
                            .with_detail(detail);
                        out.errno = ev.errno;
                        let o = if *o == Outcome::Pass {
                            Outcome::Fail
                        } else {
                            *o
                        };
                        return Err(BenchError::Run(o, out));
                    }
                };
                fam.tables.extend(detail.table);
                fam.points.extend(storm_points(
                    &bystanders,
                    detail,
                    strategy,
                    (n, pre),
                    pin,
                    ctx,
                ));
            }
        }
    }
    let _ = std::fs::remove_dir(&mounts_dir);
    Ok(fam)
}

/// The two points of one storm: its own numbers, and what the table reader saw meanwhile.
fn storm_points(
    by: &Bystanders,
    m: &MountsResult,
    strategy: Strategy,
    (n, pre): (u32, u32),
    pin: Pinning,
    ctx: &Ctx,
) -> [LockPoint; 2] {
    let window = Duration::from_micros(m.wall_us);
    let mut p = by.point(StormPoint::Start(strategy).to_string(), n, pin, ctx, window);
    p.ops = m.mount_ops.ops;
    let secs = window.as_secs_f64();
    p.ops_per_sec = if secs > 0.0 { p.ops as f64 / secs } else { 0.0 };
    // Workers pull containers from one queue; the run does not count per worker.
    p.per_thread_ops = Vec::new();
    p.latency_p50_ns = m.latency.map(|s| s.p50 * 1e3);
    p.latency_p99_ns = m.latency.map(|s| s.p99 * 1e3);
    p.latency_max_ns = m.latency.map(|s| s.max * 1e3);
    p.ops_per_sample = None;
    let mut r = by.mountinfo_point(StormPoint::Read(strategy).to_string(), n, pin, ctx, window);
    for q in [&mut p, &mut r] {
        q.prepopulated_mounts = Some(pre);
        q.table_entries = (by.entries > 0).then_some(by.entries);
    }
    // The storm's watchers watched the same window: they belong to the storm's own point.
    p.watchers = m.watchers.clone();
    [p, r]
}

/// What the bystanders saw during the measured phase.
struct Bystanders {
    stat: Hist,
    mountinfo: Hist,
    reads: u64,
    /// Most entries one read of the table showed.
    entries: u64,
}

impl Bystanders {
    fn point(
        &self,
        workload: String,
        threads: u32,
        pin: Pinning,
        ctx: &Ctx,
        window: Duration,
    ) -> LockPoint {
        point(Measured {
            workload,
            pinning: pin,
            smt: ctx.smt,
            false_sharing: false,
            threads,
            window,
            per_thread_ops: Vec::new(),
            samples: None,
            ops_per_sample: 1,
            readers: (self.stat.count() > 0).then_some(&self.stat),
        })
    }

    /// `threads` is the concurrency of the storm it ran beside (one thread reads).
    fn mountinfo_point(
        &self,
        workload: String,
        threads: u32,
        pin: Pinning,
        ctx: &Ctx,
        window: Duration,
    ) -> LockPoint {
        point(Measured {
            workload,
            pinning: pin,
            smt: ctx.smt,
            false_sharing: false,
            threads,
            window,
            per_thread_ops: vec![self.reads],
            samples: Some(&self.mountinfo),
            ops_per_sample: 1,
            readers: None,
        })
    }
}

/// Run `work` on this thread while `readers` threads time stat() of `leaf` and one more reads
/// the mount table: a storm's (`beside`) or, without one, the agent's own. They measure while
/// `phase` says so; `work` drives it (a timer, or the mounts run's own window).
fn with_readers<T>(
    ctx: &Ctx,
    pin: Pinning,
    readers: usize,
    leaf: &CString,
    phase: &Phase,
    beside: Option<&Beside>,
    work: impl FnOnce() -> Result<T, BenchError>,
) -> Result<(Bystanders, T), BenchError> {
    let cpus = pinning::plan_cycled(pin, &ctx.topo, readers + 1);
    let barrier = Barrier::new(readers + 2);
    std::thread::scope(|s| {
        let barrier = &barrier;
        // Before a storm's window its run lays out directories and grows its table; readers
        // going flat out would only slow that down: then a read now and then keeps them warm.
        let idle_warmup = beside.is_some();
        let stat: Vec<_> = (0..readers)
            .map(|j| {
                let cpu = cpus[j];
                s.spawn(move || {
                    reader(cpu, barrier, phase, idle_warmup, || {
                        rustix::fs::statat(CWD, leaf.as_c_str(), AtFlags::empty())
                            .map(|_| 1)
                            .map_err(Into::into)
                    })
                })
            })
            .collect();
        let cpu = cpus[readers];
        let mi = s.spawn(move || {
            let mut buf = Vec::new();
            reader(cpu, barrier, phase, idle_warmup, || {
                use std::io::Read;
                let (path, _reading) = match beside.map(|b| (b.tid(), b)) {
                    None => ("/proc/thread-self/mountinfo".to_owned(), None),
                    Some((Some(tid), b)) => match b.begin_read() {
                        Some(g) => (format!("/proc/self/task/{tid}/mountinfo"), Some(g)),
                        // The window has ended: the table may be going away.
                        None => return Ok(0),
                    },
                    // The run has not entered its namespace yet: nothing to read.
                    Some((None, _)) => {
                        std::thread::sleep(Duration::from_millis(1));
                        return Ok(0);
                    }
                };
                buf.clear();
                std::fs::File::open(path)?.read_to_end(&mut buf)?;
                Ok(buf.iter().filter(|&&b| b == b'\n').count() as u64)
            })
        });
        barrier.wait();
        let r = work();
        // However `work` ended, the readers stop.
        phase.set(Phase::STOP);
        let mut by = Bystanders {
            stat: Hist::default(),
            mountinfo: Hist::default(),
            reads: 0,
            entries: 0,
        };
        for h in stat {
            let out = join(h)?;
            by.stat.merge(&out.hist);
        }
        let out = join(mi)?;
        by.mountinfo = out.hist;
        by.reads = out.ops;
        by.entries = out.most;
        Ok((by, r?))
    })
}

/// What one reader measured.
struct ReaderOut {
    hist: Hist,
    ops: u64,
    /// Largest value `op` returned during the measured phase (entries of a table read).
    most: u64,
}

fn join(
    h: std::thread::ScopedJoinHandle<'_, Result<ReaderOut, BenchError>>,
) -> Result<ReaderOut, BenchError> {
    h.join().unwrap_or_else(|_| {
        Err(BenchError::Infra(Evidence::new(
            "storm reader thread panicked",
        )))
    })
}

/// The shortest pause between two reads of a reader keeping warm before a storm's window.
const WARM_READ_PAUSE_MIN: Duration = Duration::from_millis(1);

fn reader(
    cpu: Option<u32>,
    barrier: &Barrier,
    phase: &Phase,
    idle_warmup: bool,
    mut op: impl FnMut() -> std::io::Result<u64>,
) -> Result<ReaderOut, BenchError> {
    let pinned = cpu.map(|c| pin_current_thread(c).map_err(|e| (c, e)));
    barrier.wait();
    if let Some(Err((c, e))) = pinned {
        return Err(BenchError::from_io(
            format!("sched_setaffinity(CPU {c})"),
            &e,
        ));
    }
    let mut out = ReaderOut {
        hist: Hist::default(),
        ops: 0,
        most: 0,
    };
    loop {
        let ph = phase.get();
        if ph == Phase::STOP {
            return Ok(out);
        }
        let t = Instant::now();
        let seen = match op() {
            Ok(v) => v,
            // The storm's thread ended between the window's end and this read.
            Err(_) if phase.get() == Phase::STOP => return Ok(out),
            Err(e) => return Err(BenchError::from_io("storm reader", &e)),
        };
        if ph == Phase::MEASURE && seen > 0 {
            out.hist.record(ns(t.elapsed()));
            out.ops += 1;
            out.most = out.most.max(seen);
        } else if idle_warmup && ph == Phase::WARMUP {
            // At most a tenth of the time reading: a whole read of a growing table holds the
            // namespace lock the run's own mounts wait for, so reading back to back (with only
            // a 1 ms pause) made growing a 10,000-mount table quadratic under TCG (~50 s, where
            // the window it prepares lasts well under a second).
            // The pause ends early when the phase moves on: the window must find the reader
            // reading, whatever the last warm read cost.
            let until = Instant::now() + WARM_READ_PAUSE_MIN.max(t.elapsed() * 9);
            while phase.get() == Phase::WARMUP && Instant::now() < until {
                std::thread::sleep(WARM_READ_PAUSE_MIN);
            }
        }
    }
}
