//! User namespaces for containers.
//!
//! A user namespace cannot be made with `unshare(CLONE_NEWUSER)` from a multi-threaded process
//! (EINVAL), so [`UserNs::create`] clones a small helper process into a new user namespace
//! (`clone(CLONE_VM | CLONE_NEWUSER | CLONE_FILES | SIGCHLD)` on a stack of its own), writes its
//! `uid_map`/`gid_map`, and opens `/proc/<pid>/ns/user` for `mount_setattr`. The helper then
//! becomes root of that namespace (`setresuid(0, 0, 0)`) and stays alive so that checks can look at the merged view *from
//! inside* the container's user namespace: it runs batches of prepared [`ChildOp`]s on demand.
//! Ops name their directory by index; each command carries the directory fds (the helper shares
//! our descriptor table), so one set of batches serves every container of a run and a helper
//! can be made before anyone knows where its container will be mounted.
//!
//! `CLONE_FILES` makes the helper share the agent's descriptor table instead of copying it: a
//! copied table would hold extra references to other workers' detached mount trees and make
//! their `umount2` fail with EBUSY (containerd hits exactly this when it forks for a userns fd).
//! `CLONE_VM` shares our memory instead of copying the page tables (a fork of the agent costs
//! ~100 µs, which would show up as agent overhead on every container). The helper therefore
//! only makes raw system calls through rustix's linux_raw backend, which never touches `errno`
//! or any other thread-local state it would share with the thread that cloned it: no
//! allocation, no locks, no libc wrappers, no panics.

use std::cell::Cell;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::{SysError, SysResult};

mod helper;

use helper::{alloc_stack, helper_main, pipe, Helper, HelperArgs, CMD_BYTES, HELPER_STACK};
pub use helper::{reap_pending, set_reap_inline};

/// Directory fds one batch command carries; [`ChildOp`]s name theirs by index.
pub const MAX_DIRS: usize = 2;

/// Something the helper does inside the user namespace, relative to directory `dir` of the
/// command (an index below [`MAX_DIRS`]; see [`UserNs::start_batch`]).
#[derive(Debug, Clone)]
pub enum ChildOp {
    /// `fstatat(dirs[dir], path, &st, AT_SYMLINK_NOFOLLOW)`.
    Stat { dir: u8, path: CString },
    /// `openat(dirs[dir], path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644)`, `fstat`, `close`.
    Create { dir: u8, path: CString },
}

/// The batches a helper can run, shared by every helper of a run.
pub type Batches = Arc<Vec<Vec<ChildOp>>>;

/// What one [`ChildOp`] saw. `errno == 0` means success; ids are as seen from inside the user
/// namespace (unmapped ids read as the overflow id, 65534).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpResult {
    pub errno: i32,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub rdev: u64,
}

const RESULT_BYTES: usize = 24;
/// Most ops in one batch: one result write stays under PIPE_BUF and on the helper's stack.
pub const MAX_BATCH: usize = 32;

impl OpResult {
    pub(super) fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.errno.to_ne_bytes());
        out[4..8].copy_from_slice(&self.uid.to_ne_bytes());
        out[8..12].copy_from_slice(&self.gid.to_ne_bytes());
        out[12..16].copy_from_slice(&self.mode.to_ne_bytes());
        out[16..24].copy_from_slice(&self.rdev.to_ne_bytes());
    }

    pub(super) fn decode(b: &[u8]) -> OpResult {
        let u = |r: std::ops::Range<usize>| {
            u32::from_ne_bytes([b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3]])
        };
        let mut rdev = [0u8; 8];
        rdev.copy_from_slice(&b[16..24]);
        OpResult {
            errno: u(0..4) as i32,
            uid: u(4..8),
            gid: u(8..12),
            mode: u(12..16),
            rdev: u64::from_ne_bytes(rdev),
        }
    }
}

/// A user namespace mapping ids `0..count` to host ids `base..base+count`, with a helper process
/// inside it. Dropping it ends the helper (after a batch in flight has been answered).
pub struct UserNs {
    ns: OwnedFd,
    res_r: OwnedFd,
    /// Ops per batch, to size the replies.
    batch_lens: Vec<usize>,
    /// Whether the helper's "became root" status is still to be read (it is read together with
    /// the first batch's results, saving a round trip on every container).
    status_pending: Cell<bool>,
    /// The CPU the helper was last kept off (see [`UserNs::keep_off_cpu`]).
    kept_off: Cell<Option<usize>>,
    /// Length of the batch sent and not yet answered.
    in_flight: Cell<Option<usize>>,
    // Dropped after the fds above: hands the helper to the reaper.
    helper: Helper,
}

/// The helper's nice value (see [`UserNs::raise_priority`]).
const HELPER_NICE: libc::c_int = -10;

/// How long the agent waits for the helper to answer before calling it dead.
const HELPER_TIMEOUT_MS: i32 = 10_000;

impl UserNs {
    /// Create the namespace and its helper. `batches[i]` is what [`UserNs::start_batch`]`(i, …)`
    /// runs. The helper's parent-death signal follows the calling thread: call it on a thread
    /// that outlives the helper's use.
    pub fn create(base: u32, count: u32, batches: Batches) -> SysResult<UserNs> {
        if let Some(b) = batches.iter().find(|b| b.len() > MAX_BATCH) {
            return Err(SysError::plain(
                format!("userns helper batch (at most {MAX_BATCH} ops)"),
                0,
            )
            .context(format!("{} ops", b.len())));
        }
        let (cmd_r, cmd_w) = pipe()?;
        let (res_r, res_w) = pipe()?;
        let parent = rustix::process::getpid().as_raw_nonzero().get();
        let batch_lens: Vec<usize> = batches.iter().map(Vec::len).collect();
        let stack = alloc_stack()?;
        let args = Box::into_raw(Box::new(HelperArgs {
            parent,
            cmd: cmd_r.as_raw_fd(),
            res: res_w.as_raw_fd(),
            batches: Arc::as_ptr(&batches),
        }));
        let mut helper = Helper {
            pid: -1,
            stack,
            args,
            batches: Some(batches),
            cmd_w: Some(cmd_w),
            helper_fds: vec![cmd_r, res_w],
        };
        let flags = libc::CLONE_VM | libc::CLONE_NEWUSER | libc::CLONE_FILES | libc::SIGCHLD;
        // SAFETY: the helper runs `helper_main` on its own stack (top of the mapping), sharing
        // our memory; it reads only `args` and the batches, which outlive it (see Helper).
        let pid = unsafe {
            libc::clone(
                helper_main,
                stack.cast::<u8>().add(HELPER_STACK).cast(),
                flags,
                args.cast(),
            )
        };
        if pid < 0 {
            let e = std::io::Error::last_os_error();
            return Err(SysError::from_io(
                || "clone(CLONE_VM | CLONE_NEWUSER | CLONE_FILES | SIGCHLD)".into(),
                &e,
            ));
        }
        helper.pid = pid;
        let map = format!("0 {base} {count}\n");
        for file in ["uid_map", "gid_map"] {
            let path = format!("/proc/{pid}/{file}");
            std::fs::write(&path, &map).map_err(|e| {
                SysError::from_io(|| format!("write(/proc/<helper>/{file})"), &e)
                    .context(format!("{path}: {:?}", map.trim_end()))
            })?;
        }
        let ns_path = format!("/proc/{pid}/ns/user");
        let ns = rustix::fs::open(
            &ns_path,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| {
            SysError::new(|| "open(/proc/<helper>/ns/user, O_RDONLY)".into(), e)
                .context(ns_path.clone())
        })?;
        let me = UserNs {
            ns,
            res_r,
            batch_lens,
            status_pending: Cell::new(true),
            kept_off: Cell::new(None),
            in_flight: Cell::new(None),
            helper,
        };
        me.send(b"g")?;
        Ok(me)
    }

    /// Let the helper run anywhere in `allowed` but on the calling thread's current CPU, so that
    /// waking it for a batch does not put it on the CPU of the thread it works beside (where it
    /// would preempt that thread or wait for it). One `sched_setaffinity` when that CPU changed;
    /// nothing when `allowed` has no other CPU. Best effort: a failure only costs time.
    pub fn keep_off_cpu(&self, allowed: &CpuSet) {
        // SAFETY: sched_getcpu reads the CPU number (vDSO); no memory is passed.
        let cpu = unsafe { libc::sched_getcpu() };
        let Ok(cpu) = usize::try_from(cpu) else {
            return;
        };
        if self.kept_off.get() == Some(cpu) || self.helper.pid <= 0 {
            return;
        }
        let mut set = allowed.0;
        // SAFETY: CPU_ISSET/CPU_CLR/CPU_COUNT on a local cpu_set_t, `cpu` checked to be in range.
        unsafe {
            if cpu >= libc::CPU_SETSIZE as usize || !libc::CPU_ISSET(cpu, &set) {
                return;
            }
            libc::CPU_CLR(cpu, &mut set);
            if libc::CPU_COUNT(&set) == 0 {
                return;
            }
            libc::sched_setaffinity(
                self.helper.pid,
                std::mem::size_of::<libc::cpu_set_t>(),
                &set,
            );
        }
        self.kept_off.set(Some(cpu));
    }

    /// Raise the helper's priority (nice −10). For helpers that run beside their workers on
    /// spare CPUs: they work in short bursts (a batch of checks per pass) while the worker
    /// goes on, and on a busy machine a raised priority lets a burst start and end promptly
    /// instead of queueing behind other tasks while the worker waits for it. Where there is no
    /// spare CPU it would only make helpers preempt the other workers: don't. Best effort.
    pub fn raise_priority(&self) {
        if self.helper.pid > 0 {
            // SAFETY: plain syscall on our child's pid.
            unsafe {
                libc::setpriority(
                    libc::PRIO_PROCESS,
                    self.helper.pid as libc::id_t,
                    HELPER_NICE,
                );
            }
        }
    }

    /// The `/proc/<pid>/ns/user` fd, for `mount_setattr(MOUNT_ATTR_IDMAP)`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ns.as_fd()
    }

    /// Ask the helper to run batch `i` with these directories, without waiting: the helper works
    /// on its own CPU while the caller goes on. The fds must stay open until
    /// [`UserNs::finish_batch`] (dropping the namespace first waits for the answer).
    pub fn start_batch(&self, i: usize, dirs: [BorrowedFd<'_>; MAX_DIRS]) -> SysResult<()> {
        if self.in_flight.get().is_some() {
            self.finish_batch()?;
        }
        let idx = u32::try_from(i).unwrap_or(u32::MAX);
        let mut cmd = [0u8; CMD_BYTES];
        cmd[0..4].copy_from_slice(&idx.to_ne_bytes());
        for (k, d) in dirs.iter().enumerate() {
            cmd[4 + 4 * k..8 + 4 * k].copy_from_slice(&d.as_raw_fd().to_ne_bytes());
        }
        self.send(&cmd)?;
        self.in_flight
            .set(Some(self.batch_lens.get(i).copied().unwrap_or(0)));
        Ok(())
    }

    /// The results of the batch sent last, one per op, in order.
    pub fn finish_batch(&self) -> SysResult<Vec<OpResult>> {
        let Some(n) = self.in_flight.take() else {
            return Err(SysError::plain("userns helper: no batch in flight", 0));
        };
        if self.status_pending.get() {
            let mut status = [0u8; 4];
            self.recv(&mut status)?;
            self.status_pending.set(false);
            let errno = i32::from_ne_bytes(status);
            if errno != 0 {
                return Err(SysError::plain(
                    "setresgid(0, 0, 0) / setresuid(0, 0, 0) in the new user namespace",
                    errno,
                ));
            }
        }
        let mut buf = vec![0u8; n * RESULT_BYTES];
        self.recv(&mut buf)?;
        Ok(buf
            .chunks_exact(RESULT_BYTES)
            .map(OpResult::decode)
            .collect())
    }

    fn send(&self, bytes: &[u8]) -> SysResult<()> {
        let Some(cmd_w) = &self.helper.cmd_w else {
            return Err(SysError::plain(
                "write(userns helper command pipe): closed",
                0,
            ));
        };
        rustix::io::write(cmd_w, bytes)
            .map_err(|e| SysError::new(|| "write(userns helper command pipe)".into(), e))
            .map(|_| ())
    }

    fn recv(&self, buf: &mut [u8]) -> SysResult<()> {
        let mut got = 0;
        while got < buf.len() {
            // The helper shares our descriptor table, so its death never shows as EOF here:
            // wait with a deadline instead of blocking forever.
            let mut pfd = libc::pollfd {
                fd: self.res_r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, HELPER_TIMEOUT_MS) };
            if rc == 0 {
                return Err(SysError::plain(
                    format!("poll(userns helper result pipe): no answer in {HELPER_TIMEOUT_MS} ms"),
                    0,
                ));
            }
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(SysError::from_io(
                    || "poll(userns helper result pipe)".into(),
                    &e,
                ));
            }
            match rustix::io::read(&self.res_r, &mut buf[got..]) {
                Ok(0) => {
                    return Err(SysError::plain(
                        "read(userns helper result pipe): helper exited",
                        0,
                    ))
                }
                Ok(n) => got += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(SysError::new(
                        || "read(userns helper result pipe)".into(),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }
}

impl Drop for UserNs {
    fn drop(&mut self) {
        // The helper may be working in directories whose fds the caller is about to close:
        // let it answer first (bounded by the helper timeout).
        if self.in_flight.get().is_some() {
            let _ = self.finish_batch();
        }
    }
}

/// The CPUs this process may run on, read once per run.
#[derive(Clone, Copy)]
pub struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// `sched_getaffinity(0)`; None if it fails.
    pub fn of_this_thread() -> Option<CpuSet> {
        // SAFETY: a zeroed cpu_set_t is a valid empty set, filled by the kernel.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return None;
            }
            Some(CpuSet(set))
        }
    }

    pub fn count(&self) -> usize {
        // SAFETY: reads a valid cpu_set_t.
        usize::try_from(unsafe { libc::CPU_COUNT(&self.0) }).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_runs_batches_in_the_directories_each_command_names() {
        if !crate::testing::require_root(
            "helper_runs_batches_in_the_directories_each_command_names",
            "a user namespace with an id map",
        ) {
            return;
        }
        let tmp = std::env::temp_dir().join(format!("mmx-ns-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        for d in ["a", "b"] {
            std::fs::create_dir_all(tmp.join(d)).unwrap();
        }
        let base = 3_000_000;
        std::os::unix::fs::chown(tmp.join("b"), Some(base + 7), Some(base + 8)).unwrap();
        let c = |s: &str| CString::new(s).unwrap();
        let batches = Arc::new(vec![
            vec![
                ChildOp::Stat {
                    dir: 0,
                    path: c("a"),
                },
                ChildOp::Stat {
                    dir: 1,
                    path: c("b"),
                },
                ChildOp::Stat {
                    dir: 9,
                    path: c("a"),
                },
            ],
            vec![
                ChildOp::Create {
                    dir: 1,
                    path: c("b/new"),
                },
                ChildOp::Create {
                    dir: 0,
                    path: c("a/new"),
                },
            ],
        ]);
        let ns = UserNs::create(base, 65536, batches).unwrap();
        let dir = |p: &std::path::Path| {
            rustix::fs::open(
                p,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .unwrap()
        };
        let (root, same) = (dir(&tmp), dir(&tmp));
        ns.start_batch(0, [root.as_fd(), same.as_fd()]).unwrap();
        let r = ns.finish_batch().unwrap();
        // Host root is unmapped inside: the overflow id. b's owner maps to 7:8.
        assert_eq!((r[0].errno, r[0].uid), (0, 65534));
        assert_eq!((r[1].errno, r[1].uid, r[1].gid), (0, 7, 8));
        assert_eq!(r[2].errno, libc::EBADF);
        // Ops run as the namespace's root: it may write where the owner is mapped (b), and
        // the new file is its own; not where the owner is not (a, host root's).
        ns.start_batch(1, [root.as_fd(), same.as_fd()]).unwrap();
        let w = ns.finish_batch().unwrap();
        assert_eq!((w[0].errno, w[0].uid, w[0].gid), (0, 0, 0));
        assert_eq!(w[1].errno, libc::EACCES);
        assert!(ns.finish_batch().is_err(), "nothing in flight");
        drop(ns);
        assert!(reap_pending(std::time::Duration::from_secs(5)));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
