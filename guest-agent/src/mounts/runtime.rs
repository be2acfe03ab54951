//! A runtime's own mount code as a strategy (`runtime:NAME`): the runtime contract of
//! `protocol::runtime`, driven the way the built-in strategies run.
//!
//! The run is laid out as for a built-in (layers, each container's `u`, `w`, `m`), and each
//! worker: moves into a mount namespace of its own (a copy of the run's), starts the runtime
//! there once (working directory `<run>/rt/<worker>`, a clean environment, the recipe's
//! arguments, dead with its worker), and for each container and pass sends a mount job, timed
//! from request to answer; reads the kernel's mount events of its namespace — every one is its
//! runtime's, so the count of each job is exact; checks that only the target is mounted;
//! verifies the rootfs through the userns helper and from the host exactly as for a built-in
//! (`container::verify`); sends the unmount job; and checks that nothing is left below the
//! container or the runtime's directory (what is left is detached again so the next pass starts
//! clean, and the check fails with the paths). After the last container it closes the runtime's
//! stdin and expects it to exit 0.
//!
//! A view pass is what the contract says a view is — the layers alone, read-only, no upper dir
//! on top (the built-in strategies' view stacks the upper dir as its top layer) — so its checks
//! are the ones that need no upper: ids from inside and outside, whiteouts, opaque dirs, and a
//! write refused with EROFS. The rootfs pass gets every check, writes included.
//!
//! Where the kernel has no mount events (before 6.15) a job's transient mounts cannot be seen:
//! the count is what stayed attached after each job and went at its unmount, said to be
//! incomplete, and no per-container metric is made from it.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use protocol::runtime::driver::{DriveError, RuntimeProcess};
use protocol::runtime::{Answer, Hello, IdMap, Job, Pass, RuntimeLineError};
use protocol::{CellResult, CountSource, MountsScenario, PlanRuntime};

use super::cause::{Cause, RuntimeCause};
use super::container::{self, base_id, is_rootfs_pass, Checks, PassSpec, ID_COUNT};
use super::count::{Allocations, Counted, JobEvents};
use super::measure::{measure, Crew, Measured, Output};
use super::report::{Report, RuntimeSeen};
use super::table::{mounts_under, Seen};
use super::workers::WorkerOut;
use super::{infra, Prepared, WindowGuard};
use crate::sys;
use crate::sys::userns::MAX_DIRS;

/// The runtime's working directories, `<run>/rt/<worker>`.
const RT_DIR: &str = "rt";
/// How long a runtime gets to exit once its stdin is closed.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// What every worker of a runtime run shares.
struct Ctx<'a> {
    rt: &'a PlanRuntime,
    s: &'a MountsScenario,
    root: &'a Path,
    containers: &'a Path,
    /// Absolute layer directories, top layer first (as the contract and containerd order them).
    layers: Vec<PathBuf>,
    specs: &'a [PassSpec],
    best: CountSource,
    limit: Duration,
}

/// What one worker saw; merged, what the run saw.
#[derive(Default)]
struct RtOut {
    out: WorkerOut,
    hello: Option<Hello>,
    /// Start-path operations of each finished container, by index.
    per_container: Vec<(u32, u64)>,
    attachments: u64,
    detachments: u64,
    teardown: u64,
    /// Whether its count came from the mount table, for want of the kernel's mount events.
    no_events: bool,
    /// Why this worker's count is not the kernel's whole count.
    incomplete: Option<String>,
    notes: Vec<String>,
    leaked: u64,
}

impl Output for RtOut {
    fn merge(&mut self, o: RtOut) {
        self.out.merge(o.out);
        self.hello = self.hello.take().or(o.hello);
        self.per_container.extend(o.per_container);
        self.attachments += o.attachments;
        self.detachments += o.detachments;
        self.teardown += o.teardown;
        self.no_events |= o.no_events;
        if self.incomplete.is_none() {
            self.incomplete = o.incomplete;
        }
        for n in o.notes {
            if !self.notes.contains(&n) {
                self.notes.push(n);
            }
        }
        self.leaked += o.leaked;
    }

    fn panicked(message: String) -> RtOut {
        RtOut {
            out: WorkerOut::panicked(message),
            ..RtOut::default()
        }
    }
}

/// Run the cell with `rt`.
pub(super) fn run(rt: &PlanRuntime, p: &Prepared<'_>, window: WindowGuard) -> CellResult {
    let s = p.s;
    // Absolute: each runtime starts in a working directory of its own.
    let exe = match rt.path.canonicalize() {
        Ok(p) => p,
        Err(e) => {
            return infra(
                p.cell_id,
                format!("runtime `{}`: its executable is missing", rt.name),
                e.raw_os_error(),
                format!("{}: {e}", rt.path.display()),
            )
        }
    };
    let rt = &PlanRuntime {
        path: exe,
        ..rt.clone()
    };
    let rt_root = p.root.join(RT_DIR);
    let made_dirs = std::fs::create_dir(&rt_root).and_then(|()| {
        (0..s.concurrency).try_for_each(|w| std::fs::create_dir(rt_root.join(w.to_string())))
    });
    if let Err(e) = made_dirs {
        return infra(
            p.cell_id,
            format!("make the runtime's directories on {}", p.layers_fs),
            e.raw_os_error(),
            format!("below {}: {e}", rt_root.display()),
        );
    }
    let (batches, specs) = container::pass_specs(s, p.layers.has_overrides(), p.layers.opaque);
    let best = p.hook.best_source();
    let start = || {
        let ctx = Ctx {
            rt,
            s,
            root: &p.root,
            containers: &p.containers,
            layers: p.layers.dirs.iter().rev().cloned().collect(),
            specs: &specs,
            best,
            limit: Duration::from_secs(rt.job_timeout_s.max(1)),
        };
        (Allocations::start(&p.root, best), ctx)
    };
    let Measured {
        total,
        count: alloc,
        wall,
        prep,
        watchers,
    } = measure(p, window, batches, start, worker);
    let RtOut {
        out,
        hello,
        per_container,
        attachments,
        detachments,
        teardown,
        no_events,
        incomplete,
        notes,
        leaked,
    } = total;
    let counted = Counted {
        source: if no_events {
            CountSource::MountTableDiff
        } else {
            CountSource::FanotifyMountEvents
        },
        attachments,
        detachments,
        teardown,
        mounts_allocated: alloc.finish(&p.root),
        incomplete,
        notes,
    };
    let mut r = Report {
        s,
        layers_fs: p.layers_fs.clone(),
        method: "mountinfo",
        wall,
        prep,
        leaked,
        counted,
        runtime: Some(RuntimeSeen {
            hello,
            per_container,
        }),
        erofs: p.erofs.clone(),
        // A runtime has no formula to adjust.
        carried_submounts: false,
    }
    .build(p.cell_id, out);
    crate::watchers::attach(&mut r, s.containers, watchers);
    r
}

/// One worker: its namespace, its runtime, containers until none is left.
fn worker(ctx: &Ctx<'_>, crew: Crew<'_>) -> RtOut {
    let mut o = RtOut::default();
    let fail = |o: &mut RtOut, idx: u32, c: Cause| {
        crew.abort();
        o.out.errors.push((idx, c));
    };
    if let Err(e) = sys::ns::unshare_fs().and_then(|()| sys::ns::unshare_mount_ns()) {
        fail(&mut o, u32::MAX, Cause::agent(e));
        return o;
    }
    let dir = ctx.root.join(RT_DIR).join(crew.worker.to_string());
    let mut events = JobEvents::start(ctx.best);
    o.no_events = events.is_none();
    if events.is_none() {
        o.incomplete = Some(
            "no fanotify mount events on the runtime's namespace (they need Linux 6.15+ and a \
             fanotify group per worker)"
                .into(),
        );
    }
    let mut proc = match start(ctx, &dir) {
        Ok(p) => p,
        Err(c) => {
            fail(&mut o, u32::MAX, c);
            return o;
        }
    };
    o.hello = Some(proc.hello().clone());
    // What the runtime mounted before its hello (a driver's feature probes) is its start, no
    // container's: the first job's count begins here. A failed read stays failed, and the
    // first job's count says so.
    if let Some(ev) = events.as_mut() {
        let _ = ev.take();
    }
    let mut job = Jobs {
        ctx,
        crew,
        proc: &mut proc,
        events: events.as_mut(),
        dir: &dir,
    };
    while let Some(idx) = crew.claim() {
        let t = Instant::now();
        let r = job.container(idx, &mut o);
        o.out.busy += t.elapsed();
        match r {
            Ok((latency, ops)) => {
                o.out.latencies.push((idx, latency));
                o.per_container.push((idx, ops));
            }
            Err(c) => {
                fail(&mut o, idx, c);
                break;
            }
        }
    }
    // The contract's end: stdin closed, the runtime exits 0, leaving nothing mounted.
    let failed = !o.out.errors.is_empty();
    match proc.finish(EXIT_LIMIT) {
        Ok(status) if status.success() || failed => {}
        Ok(status) => fail(
            &mut o,
            u32::MAX,
            Cause::Runtime(RuntimeCause::Broke {
                what: format!(
                    "the runtime exited with {} after its stdin closed",
                    status_text(status)
                ),
                detail: String::new(),
            }),
        ),
        Err(e) if failed => drop(e),
        Err(e) => fail(
            &mut o,
            u32::MAX,
            Cause::Runtime(RuntimeCause::Hung {
                what: format!(
                    "the runtime did not exit within {} s after its stdin closed",
                    EXIT_LIMIT.as_secs()
                ),
                detail: e.to_string(),
            }),
        ),
    }
    let left = mounts_under(&[&dir]).unwrap_or_default();
    o.out
        .checks
        .record("no-leaked-mounts", left.is_empty(), || {
            format!(
                "after the runtime exited, still mounted below its directory: {}",
                list(&left)
            )
        });
    o.leaked += left.len() as u64;
    o
}

/// Start the runtime in the calling thread's namespace, in `dir`, and read its hello.
fn start(ctx: &Ctx<'_>, dir: &Path) -> Result<RuntimeProcess, Cause> {
    let mut cmd = Command::new(&ctx.rt.path);
    cmd.args(&ctx.rt.args)
        .current_dir(dir)
        // Nothing of the agent's environment (test hooks, a harness's variables): what a
        // runtime does is chosen by its recipe's arguments alone.
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    sys::process::die_with_spawning_thread(&mut cmd);
    RuntimeProcess::start(cmd, ctx.limit).map_err(|e| match e {
        DriveError::Spawn { program, source } => Cause::Runtime(RuntimeCause::Start {
            what: format!("start the runtime `{}`", ctx.rt.name),
            errno: source.raw_os_error(),
            detail: format!("{}: {source}", program.display()),
        }),
        other => Cause::Runtime(broken(ctx, &other, "its hello", None)),
    })
}

/// Sends one container's jobs.
struct Jobs<'a, 'c> {
    ctx: &'a Ctx<'c>,
    crew: Crew<'a>,
    proc: &'a mut RuntimeProcess,
    events: Option<&'a mut JobEvents>,
    dir: &'a Path,
}

impl Jobs<'_, '_> {
    /// Every pass of container `idx`: its start-path latency (the mount jobs, request to
    /// answer) and the kernel's count of its start path.
    fn container(&mut self, idx: u32, o: &mut RtOut) -> Result<(Duration, u64), Cause> {
        let ctx = self.ctx;
        let cdir_path = ctx.containers.join(idx.to_string());
        let cdir = container::open_dir(&cdir_path)?;
        let userns = self.crew.helpers.take(idx)?;
        let dirs: [BorrowedFd<'_>; MAX_DIRS] = [cdir.as_fd(), cdir.as_fd()];
        let target = cdir_path.join("m");
        let map = IdMap::single(base_id(idx), ID_COUNT);
        let (mut latency, mut ops) = (Duration::ZERO, 0u64);
        for k in 0..ctx.s.passes {
            let rootfs = is_rootfs_pass(k, ctx.s.passes);
            let what = format!("container {idx} pass {k}");
            // Anything queued now was ours (a leak detached after the last pass), not the job's.
            self.count();
            let pass = if rootfs {
                Pass::Rootfs {
                    upper: cdir_path.join("u"),
                    work: cdir_path.join("w"),
                }
            } else {
                Pass::View
            };
            let id = self.proc.next_id();
            let mount = Job::Mount {
                id,
                layers: ctx.layers.clone(),
                pass,
                target: target.clone(),
                uidmap: map.clone(),
                gidmap: map.clone(),
            };
            let took = match self.send(&mount, &format!("a mount job ({what})")) {
                Ok(t) => t,
                Err(c) => {
                    // The contract: after an `error` the runtime has undone what the job made.
                    if let Cause::Runtime(RuntimeCause::Error { .. }) = c {
                        let left = mounts_under(&[&cdir_path, self.dir]).unwrap_or_default();
                        let when = format!("{what}, after the runtime's error answer");
                        leak_check(&mut o.out.checks, &when, &left);
                        o.leaked += left.len() as u64;
                    }
                    return Err(c);
                }
            };
            latency += took;
            o.out.tally.syscall_ns += nanos(took);
            let (att, det) = self.count();
            let attached = mounts_under(&[&cdir_path, self.dir]).map_err(Cause::agent)?;
            o.out.peak = o.out.peak.max(attached.len() as u64);
            match att {
                Some((a, d)) => {
                    o.attachments += a;
                    o.detachments += d;
                    ops += a + d;
                }
                // No events: what stays attached is all the table shows.
                None => o.attachments += attached.len() as u64,
            }
            if let Some(why) = det {
                o.incomplete.get_or_insert(why);
            }
            let stray: Vec<&Seen> = attached.iter().filter(|m| m.point != target).collect();
            o.out.checks.record(
                "runtime-mounts-only-its-target",
                !attached.is_empty() && stray.is_empty(),
                || {
                    if attached.is_empty() {
                        format!(
                            "{what}: the runtime answered ok but nothing is mounted at {}",
                            target.display()
                        )
                    } else {
                        format!(
                            "{what}: besides the target, the runtime left {} attached",
                            list(&stray)
                        )
                    }
                },
            );
            // The checks, as for a built-in: inside the userns through the helper, from here.
            if let Some(cpus) = self.crew.spare_cpus {
                userns.keep_off_cpu(cpus);
            }
            let verified = userns.start_batch(k as usize, dirs).and_then(|()| {
                let results = userns.finish_batch()?;
                container::verify(
                    &results,
                    &ctx.specs[k as usize],
                    dirs,
                    base_id(idx),
                    idx,
                    k as usize,
                    &mut o.out.checks,
                );
                Ok(())
            });
            // Unmounted even when a check could not run, so nothing stays mounted.
            let id = self.proc.next_id();
            let unmount = Job::Unmount {
                id,
                target: target.clone(),
            };
            let took = self.send(&unmount, &format!("an unmount job ({what})"))?;
            o.out.tally.syscall_ns += nanos(took);
            let (torn, _) = self.count();
            let left = mounts_under(&[&cdir_path, self.dir]).map_err(Cause::agent)?;
            match torn {
                Some((a, d)) => {
                    o.teardown += d;
                    if a > 0 {
                        let n =
                            format!("the runtime attached mounts while unmounting ({what}: {a})");
                        if !o.notes.contains(&n) {
                            o.notes.push(n);
                        }
                    }
                }
                None => o.teardown += (attached.len() as u64).saturating_sub(left.len() as u64),
            }
            let when = format!("{what}, after the runtime's unmount answer");
            leak_check(&mut o.out.checks, &when, &left);
            o.leaked += left.len() as u64;
            // Gone before the next pass, so one leak is reported once.
            for m in left.iter().rev() {
                let _ = sys::legacy::umount_detach(m.point.as_path());
            }
            verified.map_err(Cause::agent)?;
        }
        Ok((latency, ops))
    }

    /// Send a job; its time, request to answer. An `error` answer, silence or a broken answer
    /// ends the container (and the run).
    fn send(&mut self, job: &Job, what: &str) -> Result<Duration, Cause> {
        match self.proc.run_timed(job, self.ctx.limit) {
            Ok((Answer::Ok { .. }, took)) => Ok(took),
            Ok((
                Answer::Error {
                    step,
                    errno,
                    message,
                    ..
                },
                _,
            )) => Err(Cause::Runtime(RuntimeCause::Error {
                step: scrub(&step, self.ctx.root),
                errno,
                message,
            })),
            Err(e) => Err(Cause::Runtime(broken(
                self.ctx,
                &e,
                what,
                Some(&mut *self.proc),
            ))),
        }
    }

    /// The events since the last look: `(Some((attached, detached)), None)`, or `None` when the
    /// kernel has none (the table must do), with why the count is incomplete.
    fn count(&mut self) -> (Option<(u64, u64)>, Option<String>) {
        match self.events.as_deref_mut().map(JobEvents::take) {
            Some(Ok(n)) => (Some(n), None),
            Some(Err(why)) => (Some((0, 0)), Some(why)),
            None => (None, None),
        }
    }
}

fn leak_check(checks: &mut Checks, what: &str, left: &[Seen]) {
    checks.record("no-leaked-mounts", left.is_empty(), || {
        format!("{what}: still mounted: {}", list(left))
    });
}

fn list<T: std::fmt::Display>(mounts: &[T]) -> String {
    mounts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The run directory's path replaced by `<run>` in a runtime's words: one answer then reads the
/// same in every cell, and reports group it.
fn scrub(text: &str, root: &Path) -> String {
    text.replace(&root.display().to_string(), "<run>")
}

/// A runtime that broke the contract on `what` (its hello, a job): how, with its stderr.
fn broken(
    ctx: &Ctx<'_>,
    e: &DriveError,
    what: &str,
    proc: Option<&mut RuntimeProcess>,
) -> RuntimeCause {
    let stderr = |s: &str| scrub(s, ctx.root);
    match e {
        DriveError::Timeout {
            limit, stderr: err, ..
        } => RuntimeCause::Hung {
            what: format!(
                "the runtime did not answer within {} s (job_timeout_s)",
                limit.as_secs()
            ),
            detail: format!("waiting for {what}; {}", stderr_note(&stderr(err))),
        },
        DriveError::Line {
            source: RuntimeLineError::Eof,
            stderr: err,
        }
        | DriveError::Write { stderr: err, .. } => {
            let how = proc
                .and_then(|p| p.exit_status(Duration::from_secs(1)))
                .map_or_else(|| "its output closed".to_owned(), status_text);
            RuntimeCause::Broke {
                what: format!("the runtime died during {}: {how}", kind_of(what)),
                detail: format!("{what}; {}", stderr_note(&stderr(err))),
            }
        }
        DriveError::Line {
            source,
            stderr: err,
        } => {
            if let Some(p) = proc {
                // Out of step with us: nothing it says can be trusted any more.
                p.kill();
            }
            RuntimeCause::Broke {
                what: format!("the runtime broke the contract: {}", line_kind(source)),
                detail: format!("{what}: {source}; {}", stderr_note(&stderr(err))),
            }
        }
        DriveError::Spawn { program, source } => RuntimeCause::Broke {
            what: "the runtime could not be started".into(),
            detail: format!("{}: {source}", program.display()),
        },
    }
}

/// `a mount job (container 3 pass 0)` → `a mount job`: the stable part of what was waited for.
fn kind_of(what: &str) -> &str {
    what.split(" (").next().unwrap_or(what)
}

/// A stable name for how a line broke the contract (the line itself goes to the detail).
fn line_kind(e: &RuntimeLineError) -> &'static str {
    match e {
        RuntimeLineError::Io(_) => "reading its output failed",
        RuntimeLineError::Eof => "its output closed",
        RuntimeLineError::TooLong { .. } => "a line longer than the contract's bound",
        RuntimeLineError::NotUtf8 { .. } => "a line that is not UTF-8",
        RuntimeLineError::ContractVersion { .. } => "another contract version",
        RuntimeLineError::Garbage { .. } => "a line that is not a contract message",
        RuntimeLineError::WrongId { .. } => "an answer to another job",
        RuntimeLineError::TextTooLong { .. } => "an answer with an overlong text",
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn status_text(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig} ({})", signal_name(sig)),
        (None, None) => "an unknown status".to_owned(),
    }
}

/// The usual name of a signal that ends a crashing program.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSYS => "SIGSYS",
        _ => "?",
    }
}

/// The last lines of a runtime's stderr, on one line.
fn stderr_note(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "its stderr is empty".into();
    }
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    let n = tail.chars().count();
    let cut: String = tail.chars().skip(n.saturating_sub(400)).collect();
    format!("its stderr ends: {cut}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_words_lose_the_run_directory() {
        let root = Path::new("/scratch/mmx-mounts-812-3");
        assert_eq!(
            scrub(
                "mount.All: failed to mount /scratch/mmx-mounts-812-3/c/1/m: invalid argument",
                root
            ),
            "mount.All: failed to mount <run>/c/1/m: invalid argument"
        );
        assert_eq!(kind_of("a mount job (container 3 pass 0)"), "a mount job");
        assert_eq!(stderr_note("\n\n"), "its stderr is empty");
        assert_eq!(
            stderr_note("one\ntwo\nthree\nfour\n"),
            "its stderr ends: two / three / four"
        );
    }
}
