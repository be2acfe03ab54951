//! `mountinfo`: how long reading the mount table takes as it grows — Netflix's "30 s to read
//! the mount table" symptom, measured. In a private mount namespace the table is grown with bind
//! mounts on a tmpfs to each requested size (counting the entries already there), and at each
//! size the agent times whole reads of /proc/thread-self/mountinfo and, where the kernel has it
//! (6.8+), listmount(2) of every id.
//!
//! Points: `mountinfo@N` and `listmount@N` (one reader; latency per read), and `bind@N`: the
//! cost of each bind mount made while growing to N, which shows whether adding a mount gets
//! slower as the table grows.

use std::path::Path;
use std::time::{Duration, Instant};

use protocol::lockbench::Pinning;
use protocol::Evidence;
use std::io::Read;

use super::hist::Hist;
use super::{ns, point, sys, BenchError, Ctx, Family, Measured};

/// Reads per size: at least this many, then as many as fit the window.
const MIN_READS: u32 = 3;
const MAX_READS: u32 = 100_000;

pub(super) fn bench(ctx: &Ctx) -> Result<Family, BenchError> {
    sys::on_private_tmpfs(&ctx.work, "mountinfo", |base| grow_and_read(ctx, base))
}

fn mount_max() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/fs/mount-max")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn grow_and_read(ctx: &Ctx, base: &Path) -> Result<Family, BenchError> {
    let mut fam = Family::default();
    let src = base.join("src");
    std::fs::create_dir(&src)
        .map_err(|e| BenchError::from_io(format!("mkdir {}", src.display()), &e))?;
    // The bind source on a mount of its own: a bind checks every child mount of its source's
    // mount, so binding from the tmpfs that holds the targets would make each bind cost grow
    // with the table for a reason of the benchmark's making, not the table's.
    sys::mount_tmpfs(&src)?;
    let mut current = sys::count_mounts().map_err(|e| BenchError::from_io("read mountinfo", &e))?;
    let limit = mount_max().unwrap_or(100_000);
    let mut sizes: Vec<usize> = ctx
        .scenario
        .table_sizes
        .iter()
        .map(|&s| s as usize)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let pin = ctx
        .scenario
        .pinning
        .first()
        .copied()
        .unwrap_or(Pinning::None);
    let mut ids = Vec::new();
    let mut listmount_ok = true;
    let mut buf = Vec::new();

    for size in sizes {
        ctx.check_stop()?;
        if size > limit {
            fam.notes.push(format!(
                "mountinfo: {size} entries exceed fs.mount-max = {limit}; skipped"
            ));
            continue;
        }
        if size < current {
            fam.notes.push(format!(
                "mountinfo: the namespace already has {current} entries, more than {size}; skipped"
            ));
            continue;
        }
        // Grow: one directory and one bind mount per missing entry, each timed.
        let mut grow = Hist::default();
        let t_grow = Instant::now();
        let added = size - current;
        for i in current..size {
            // Tens of thousands of binds take seconds: stay stoppable.
            if i % 256 == 0 {
                ctx.check_stop()?;
            }
            let d = base.join(format!("m{i}"));
            std::fs::create_dir(&d)
                .map_err(|e| BenchError::from_io(format!("mkdir {}", d.display()), &e))?;
            let t = Instant::now();
            crate::sys::legacy::mount_bind(src.as_path(), d.as_path())
                .map_err(|e| BenchError::from_sys(&e))?;
            grow.record(ns(t.elapsed()));
        }
        let grow_time = t_grow.elapsed();
        current = size;
        if added > 0 {
            fam.points.push(point(Measured {
                workload: format!("bind@{size}"),
                pinning: Pinning::None,
                smt: ctx.smt,
                false_sharing: false,
                threads: 1,
                window: grow_time,
                per_thread_ops: vec![added as u64],
                samples: Some(&grow),
                ops_per_sample: 1,
                readers: None,
            }));
        }

        // Whole reads of the table; the entry count checks that the table is the size claimed.
        let mut seen = 0;
        let (hist, window, reads) = timed_reads(ctx.window(), || {
            buf.clear();
            let mut f = std::fs::File::open("/proc/thread-self/mountinfo")?;
            f.read_to_end(&mut buf)?;
            seen = buf.iter().filter(|&&b| b == b'\n').count();
            Ok(())
        })
        .map_err(|e| BenchError::from_io("read /proc/thread-self/mountinfo", &e))?;
        if seen != size {
            return Err(BenchError::Fail(
                Evidence::new("grow the mount table")
                    .with_detail(format!("mountinfo shows {seen} entries, expected {size}")),
            ));
        }
        fam.points.push(read_point(
            ctx,
            format!("mountinfo@{size}"),
            pin,
            &hist,
            window,
            reads,
        ));

        if listmount_ok {
            let mut listed = 0;
            match timed_reads(ctx.window(), || {
                crate::sys::table::listmount_into(&mut ids)
                    .map_err(|e| std::io::Error::from_raw_os_error(e.errno))?;
                listed = ids.len();
                Ok(())
            }) {
                Ok((hist, window, reads)) => {
                    if listed != size {
                        fam.notes
                            .push(format!("listmount@{size} listed {listed} ids"));
                    }
                    fam.points.push(read_point(
                        ctx,
                        format!("listmount@{size}"),
                        pin,
                        &hist,
                        window,
                        reads,
                    ));
                }
                Err(e) => {
                    let ev = Evidence::new("listmount(LSMT_ROOT)");
                    let ev = match e.raw_os_error() {
                        Some(n) => ev.with_errno(n),
                        None => ev.with_detail(e.to_string()),
                    };
                    fam.notes.push(format!("listmount not timed: {ev}"));
                    listmount_ok = false;
                }
            }
        }
    }
    Ok(fam)
}

fn read_point(
    ctx: &Ctx,
    workload: String,
    pin: Pinning,
    hist: &Hist,
    window: Duration,
    reads: u64,
) -> protocol::lockbench::LockPoint {
    point(Measured {
        workload,
        pinning: pin,
        smt: ctx.smt,
        false_sharing: false,
        threads: 1,
        window,
        per_thread_ops: vec![reads],
        samples: Some(hist),
        ops_per_sample: 1,
        readers: None,
    })
}

/// Call `read` repeatedly for `window` (at least [`MIN_READS`] times), timing each call, after
/// one untimed call that warms the caches. A stop ends it after the read in progress: a window
/// may be minutes long, and a stopped agent answers within a second (the point is then
/// dropped: the caller's next `check_stop` ends the family).
fn timed_reads(
    window: Duration,
    mut read: impl FnMut() -> std::io::Result<()>,
) -> std::io::Result<(Hist, Duration, u64)> {
    read()?;
    let mut h = Hist::default();
    let t0 = Instant::now();
    let mut n = 0u32;
    while !crate::sys::signal::stop_requested()
        && (n < MIN_READS || (t0.elapsed() < window && n < MAX_READS))
    {
        let t = Instant::now();
        read()?;
        h.record(ns(t.elapsed()));
        n += 1;
    }
    Ok((h, t0.elapsed(), u64::from(n)))
}
