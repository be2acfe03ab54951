//! `mount-lock`: N writer threads change the mount table while M reader ("victim") threads time
//! `stat()` of a fixed deep path. Every RCU path walk samples the global `mount_lock` seqcount
//! in `path_init()` and spins while a writer holds it — Netflix's hottest kernel loop — so the
//! readers' p50/p99/max as writers grow is that spin made visible.
//!
//! Writer workloads (each iteration is two mount-table operations on the writer's own
//! directory): `bind-umount` = `mount(src, dst, MS_BIND)` + `umount2(dst)`; `open-tree` =
//! `open_tree(src, OPEN_TREE_CLONE)` + `close` (which dissolves the detached copy).
//! Everything happens on a tmpfs in a private mount namespace; the point with 0 writers
//! (`readers-only`) is the readers' undisturbed latency.

use std::ffi::CString;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use protocol::lockbench::Pinning;
use protocol::Evidence;
use rustix::fs::{AtFlags, CWD};
use rustix::mount::{OpenTreeFlags, UnmountFlags};

use super::hist::Hist;
use super::pinning::{self, pin_current_thread};
use super::{ns, point, sys, BenchError, Ctx, Family, Measured, Phase};

/// Directory levels of the readers' path: long enough that a walk is real work, as in a
/// container's rootfs.
const DEPTH: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    BindUmount,
    OpenTree,
}

impl Writer {
    fn name(self) -> &'static str {
        match self {
            Writer::BindUmount => "bind-umount",
            Writer::OpenTree => "open-tree",
        }
    }
}

pub(super) fn bench(ctx: &Ctx) -> Result<Family, BenchError> {
    sys::on_private_tmpfs(&ctx.work, "mount-lock", |base| in_namespace(ctx, base))
}

fn in_namespace(ctx: &Ctx, base: &Path) -> Result<Family, BenchError> {
    let mkdir = |p: &Path| {
        std::fs::create_dir_all(p)
            .map_err(|e| BenchError::from_io(format!("mkdir {}", p.display()), &e))
    };
    let mut deep = base.join("deep");
    for i in 0..DEPTH {
        deep.push(format!("d{i}"));
    }
    mkdir(&deep)?;
    let leaf = deep.join("leaf");
    std::fs::write(&leaf, b"x")
        .map_err(|e| BenchError::from_io(format!("create {}", leaf.display()), &e))?;
    let leaf = sys::cstring(&leaf)?;
    let max_writers = ctx.threads.iter().copied().max().unwrap_or(1) as usize;
    let mut dirs = Vec::new();
    for i in 0..max_writers {
        let (src, dst) = (
            base.join(format!("w{i}/src")),
            base.join(format!("w{i}/dst")),
        );
        mkdir(&src)?;
        mkdir(&dst)?;
        dirs.push((sys::cstring(&src)?, sys::cstring(&dst)?));
    }
    let baseline = sys::count_mounts().map_err(|e| BenchError::from_io("read mountinfo", &e))?;

    let mut fam = Family::default();
    let readers = ctx.scenario.readers as usize;
    for &pin in &ctx.scenario.pinning {
        // Readers alone first: the latency the writers are then compared with.
        ctx.check_stop()?;
        let p = run_point(ctx, pin, None, 0, readers, &dirs, &leaf)?;
        fam.points.push(p);
        for w in [Writer::BindUmount, Writer::OpenTree] {
            for &n in &ctx.threads {
                ctx.check_stop()?;
                match run_point(ctx, pin, Some(w), n as usize, readers, &dirs, &leaf) {
                    Ok(p) => fam.points.push(p),
                    // open_tree(2) is 5.2+; an older kernel still gets the bind-umount points.
                    Err(BenchError::Unsupported(ev)) => {
                        fam.notes
                            .push(format!("mount-lock {}: unsupported: {ev}", w.name()));
                        break;
                    }
                    Err(e) => return Err(e),
                }
                let now =
                    sys::count_mounts().map_err(|e| BenchError::from_io("read mountinfo", &e))?;
                if now != baseline {
                    return Err(BenchError::Fail(
                        Evidence::new(format!("mount-lock {} cleanup", w.name())).with_detail(
                            format!("{now} mounts after the point, {baseline} before"),
                        ),
                    ));
                }
            }
        }
    }
    if readers == 0 {
        fam.notes
            .push("mount-lock: 0 readers, so no victim latency was measured".into());
    }
    Ok(fam)
}

/// One writer's result.
#[derive(Default)]
struct Out {
    ops: u64,
    hist: Hist,
    error: Option<BenchError>,
}

#[allow(clippy::too_many_arguments)]
fn run_point(
    ctx: &Ctx,
    pin: Pinning,
    writer: Option<Writer>,
    n: usize,
    readers: usize,
    dirs: &[(CString, CString)],
    leaf: &CString,
) -> Result<protocol::lockbench::LockPoint, BenchError> {
    // Writers take the first CPUs of the pinning's order, readers the next (wrapping when the
    // machine has fewer CPUs than threads: on 2 CPUs, 2 writers + 1 reader must share).
    let cpus = pinning::plan_cycled(pin, &ctx.topo, n + readers);
    let phase = Phase::new();
    let barrier = Barrier::new(n + readers + 1);
    let (writers_out, readers_out, window) = std::thread::scope(|s| {
        let (phase, barrier) = (&phase, &barrier);
        let w: Vec<_> = (0..n)
            .map(|i| {
                let (src, dst) = &dirs[i];
                let kind = writer.unwrap_or(Writer::BindUmount);
                let cpu = cpus[i];
                s.spawn(move || match pin_and_wait(cpu, barrier) {
                    Some(error) => Out {
                        error: Some(error),
                        ..Out::default()
                    },
                    None => write_loop(kind, src, dst, phase),
                })
            })
            .collect();
        let r: Vec<_> = (0..readers)
            .map(|j| {
                let cpu = cpus[n + j];
                s.spawn(move || match pin_and_wait(cpu, barrier) {
                    Some(error) => Out {
                        error: Some(error),
                        ..Out::default()
                    },
                    None => read_loop(leaf, phase),
                })
            })
            .collect();
        barrier.wait();
        let window = phase.drive(ctx.warmup(), ctx.window());
        let join = |hs: Vec<std::thread::ScopedJoinHandle<'_, Out>>| -> Vec<Out> {
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| Out {
                        error: Some(BenchError::Infra(Evidence::new(
                            "mount-lock thread panicked",
                        ))),
                        ..Out::default()
                    })
                })
                .collect()
        };
        (join(w), join(r), window)
    });
    let mut whist = Hist::default();
    let mut rhist = Hist::default();
    let mut per_thread = Vec::new();
    for o in writers_out {
        if let Some(e) = o.error {
            return Err(e);
        }
        whist.merge(&o.hist);
        per_thread.push(o.ops);
    }
    for o in readers_out {
        if let Some(e) = o.error {
            return Err(e);
        }
        rhist.merge(&o.hist);
    }
    Ok(point(Measured {
        workload: writer.map_or("readers-only", Writer::name).into(),
        pinning: pin,
        smt: ctx.smt,
        false_sharing: false,
        threads: u32::try_from(n).unwrap_or(u32::MAX),
        window,
        per_thread_ops: per_thread,
        samples: (n > 0).then_some(&whist),
        // One sample per iteration = two mount-table operations.
        ops_per_sample: 2,
        readers: (readers > 0).then_some(&rhist),
    }))
}

/// Pin (if asked), then wait for the others; a failed pin still reaches the barrier so the
/// point cannot hang.
fn pin_and_wait(cpu: Option<u32>, barrier: &Barrier) -> Option<BenchError> {
    let err = cpu.and_then(|c| {
        pin_current_thread(c)
            .err()
            .map(|e| BenchError::from_io(format!("sched_setaffinity(CPU {c})"), &e))
    });
    barrier.wait();
    err
}

fn write_loop(kind: Writer, src: &CString, dst: &CString, phase: &Phase) -> Out {
    let mut out = Out::default();
    loop {
        let ph = phase.get();
        if ph == Phase::STOP {
            break;
        }
        let t = Instant::now();
        let r = match kind {
            Writer::BindUmount => rustix::mount::mount_bind(src.as_c_str(), dst.as_c_str())
                .map_err(|e| ("mount(MS_BIND)", e))
                .and_then(|()| unmount_retrying(dst).map_err(|e| ("umount2", e))),
            // Dropping the fd dissolves the detached copy: the second mount-table operation.
            Writer::OpenTree => rustix::mount::open_tree(
                CWD,
                src.as_c_str(),
                OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
            )
            .map(drop)
            .map_err(|e| ("open_tree(OPEN_TREE_CLONE)", e)),
        };
        if let Err((step, e)) = r {
            out.error = Some(BenchError::from_io(format!("{step} on {src:?}"), &e.into()));
            break;
        }
        if ph == Phase::MEASURE {
            out.ops += 2;
            out.hist.record(ns(t.elapsed()));
        }
    }
    out
}

/// umount2, retrying a few times on EBUSY (a reader's walk may hold the mount for a moment).
fn unmount_retrying(dst: &CString) -> rustix::io::Result<()> {
    let mut tries = 0;
    loop {
        match rustix::mount::unmount(dst.as_c_str(), UnmountFlags::empty()) {
            Err(rustix::io::Errno::BUSY) if tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_micros(50));
            }
            r => return r,
        }
    }
}

/// Time every stat() of the deep path; a clock read (~25 ns) is a few % of a ~1 µs walk.
fn read_loop(leaf: &CString, phase: &Phase) -> Out {
    let mut out = Out::default();
    loop {
        let ph = phase.get();
        if ph == Phase::STOP {
            break;
        }
        let t = Instant::now();
        if let Err(e) = rustix::fs::statat(CWD, leaf.as_c_str(), AtFlags::empty()) {
            out.error = Some(BenchError::Fail(
                Evidence::new(format!("stat({leaf:?})")).with_errno(e.raw_os_error()),
            ));
            break;
        }
        if ph == Phase::MEASURE {
            out.ops += 1;
            out.hist.record(ns(t.elapsed()));
        }
    }
    out
}
