//! `storm`: start containers with each mount strategy at growing concurrency while bystander
//! threads look paths up, so the report shows what a strategy costs everything else on the
//! machine, not only itself. `mount_lock` is global across namespaces: the strategy runs in its
//! own private namespace (`crate::mounts::run` makes one), the readers stay in ours and still
//! spin in `path_init()` whenever a writer holds it.
//!
//! Points: `storm:idle` (readers alone), then per strategy and concurrency N `storm:<strategy>`
//! (ops = the run's mount-table operations, latency = per-container start, reader_* = the
//! bystanders' stat() latency) and `mountinfo-during:<strategy>` (one thread reading
//! /proc/self/mountinfo over and over meanwhile: the "30 s to read the mount table" symptom;
//! its `threads` is the storm's N, so the series reads like the others).

use std::ffi::CString;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use protocol::lockbench::{LockPoint, Pinning};
use protocol::{CellDetail, Evidence, MountsScenario, Outcome};
use rustix::fs::{AtFlags, CWD};

use super::hist::Hist;
use super::pinning::{self, pin_current_thread};
use super::{ns, point, sys, BenchError, Ctx, Family, Measured, Phase};

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
    let window = ctx.window();
    let (idle, _) = with_readers(ctx, pin, readers, &leaf, || {
        std::thread::sleep(window);
        Ok(())
    })?;
    fam.points
        .push(idle.point("storm:idle".into(), 0, pin, ctx));

    for &strategy in &sc.strategies {
        for &n in &ctx.threads {
            ctx.check_stop()?;
            let scenario = MountsScenario {
                strategy,
                layers: sc.layers.max(1),
                containers: sc.containers.max(n),
                concurrency: n,
                passes: PASSES,
            };
            let id = format!("storm/{}", scenario.label());
            let (bystanders, cell) = with_readers(ctx, pin, readers, &leaf, || {
                Ok(crate::mounts::run(&scenario, &mounts_dir, &id))
            })?;
            let detail = match (&cell.outcome, &cell.detail) {
                (Outcome::Pass, Some(CellDetail::Mounts(m))) => m,
                (o, _) => {
                    let ev = cell
                        .evidence
                        .as_ref()
                        .map_or(String::new(), |e| format!(": {e}"));
                    fam.notes.push(format!(
                        "storm {strategy} N={n}: strategy run {o}{ev}; no point"
                    ));
                    if *o == Outcome::Unsupported {
                        break;
                    }
                    continue;
                }
            };
            let mut p = bystanders.point(format!("storm:{strategy}"), n, pin, ctx);
            p.ops = detail.mount_ops.ops;
            p.duration_ns = detail.wall_us.saturating_mul(1000);
            let secs = detail.wall_us as f64 / 1e6;
            p.ops_per_sec = if secs > 0.0 { p.ops as f64 / secs } else { 0.0 };
            // Workers pull containers from one queue; the run does not count per worker.
            p.per_thread_ops = Vec::new();
            p.latency_p50_ns = detail.latency.map(|s| s.p50 * 1e3);
            p.latency_p99_ns = detail.latency.map(|s| s.p99 * 1e3);
            p.latency_max_ns = detail.latency.map(|s| s.max * 1e3);
            p.ops_per_sample = None;
            fam.points.push(p);
            fam.points.push(bystanders.mountinfo_point(
                format!("mountinfo-during:{strategy}"),
                n,
                pin,
                ctx,
            ));
        }
    }
    let _ = std::fs::remove_dir(&mounts_dir);
    Ok(fam)
}

/// What the bystanders saw while `work` ran.
struct Bystanders {
    stat: Hist,
    mountinfo: Hist,
    reads: u64,
    window: Duration,
}

impl Bystanders {
    fn point(&self, workload: String, threads: u32, pin: Pinning, ctx: &Ctx) -> LockPoint {
        point(Measured {
            workload,
            pinning: pin,
            smt: ctx.smt,
            false_sharing: false,
            threads,
            window: self.window,
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
    ) -> LockPoint {
        point(Measured {
            workload,
            pinning: pin,
            smt: ctx.smt,
            false_sharing: false,
            threads,
            window: self.window,
            per_thread_ops: vec![self.reads],
            samples: Some(&self.mountinfo),
            ops_per_sample: 1,
            readers: None,
        })
    }
}

/// Run `work` on this thread while `readers` threads time stat() of `leaf` and one more reads
/// /proc/self/mountinfo; readers warm up first and are measured for exactly `work`'s duration.
fn with_readers<T>(
    ctx: &Ctx,
    pin: Pinning,
    readers: usize,
    leaf: &CString,
    work: impl FnOnce() -> Result<T, BenchError>,
) -> Result<(Bystanders, T), BenchError> {
    let cpus = pinning::plan_cycled(pin, &ctx.topo, readers + 1);
    let phase = Phase::new();
    let barrier = Barrier::new(readers + 2);
    std::thread::scope(|s| {
        let (phase, barrier) = (&phase, &barrier);
        let stat: Vec<_> = (0..readers)
            .map(|j| {
                let cpu = cpus[j];
                s.spawn(move || {
                    reader(cpu, barrier, phase, || {
                        rustix::fs::statat(CWD, leaf.as_c_str(), AtFlags::empty())
                            .map(drop)
                            .map_err(Into::into)
                    })
                })
            })
            .collect();
        let cpu = cpus[readers];
        let mi = s.spawn(move || {
            let mut buf = Vec::new();
            reader(cpu, barrier, phase, || {
                use std::io::Read;
                buf.clear();
                std::fs::File::open("/proc/self/mountinfo")?
                    .read_to_end(&mut buf)
                    .map(drop)
            })
        });
        barrier.wait();
        std::thread::sleep(ctx.warmup());
        let t0 = Instant::now();
        phase.set(Phase::MEASURE);
        let r = work();
        phase.set(Phase::STOP);
        let window = t0.elapsed();
        let mut by = Bystanders {
            stat: Hist::default(),
            mountinfo: Hist::default(),
            reads: 0,
            window,
        };
        for h in stat {
            let (hist, _) = join(h)?;
            by.stat.merge(&hist);
        }
        let (hist, reads) = join(mi)?;
        by.mountinfo = hist;
        by.reads = reads;
        Ok((by, r?))
    })
}

type ReaderOut = Result<(Hist, u64), BenchError>;

fn join(h: std::thread::ScopedJoinHandle<'_, ReaderOut>) -> ReaderOut {
    h.join().unwrap_or_else(|_| {
        Err(BenchError::Infra(Evidence::new(
            "storm reader thread panicked",
        )))
    })
}

fn reader(
    cpu: Option<u32>,
    barrier: &Barrier,
    phase: &Phase,
    mut op: impl FnMut() -> std::io::Result<()>,
) -> ReaderOut {
    let pinned = cpu.map(|c| pin_current_thread(c).map_err(|e| (c, e)));
    barrier.wait();
    if let Some(Err((c, e))) = pinned {
        return Err(BenchError::from_io(
            format!("sched_setaffinity(CPU {c})"),
            &e,
        ));
    }
    let mut h = Hist::default();
    let mut n = 0;
    loop {
        let ph = phase.get();
        if ph == Phase::STOP {
            return Ok((h, n));
        }
        let t = Instant::now();
        op().map_err(|e| BenchError::from_io("storm reader", &e))?;
        if ph == Phase::MEASURE {
            h.record(ns(t.elapsed()));
            n += 1;
        }
    }
}
