//! Namespaces: the agent's private mount namespace, per-thread working directories, and user
//! namespaces for containers.
//!
//! A user namespace cannot be made with `unshare(CLONE_NEWUSER)` from a multi-threaded process
//! (EINVAL), so [`UserNs::create`] clones a small helper process into a new user namespace
//! (`clone(CLONE_VM | CLONE_NEWUSER | CLONE_FILES | SIGCHLD)` on a stack of its own), writes its
//! `uid_map`/`gid_map`, and opens `/proc/<pid>/ns/user` for `mount_setattr`. The helper then becomes root of that namespace
//! (`setresuid(0, 0, 0)`) and stays alive so that checks can look at the merged view *from
//! inside* the container's user namespace: it runs batches of prepared [`ChildOp`]s on demand.
//!
//! `CLONE_FILES` makes the helper share the agent's descriptor table instead of copying it: a
//! copied table would hold extra references to other workers' detached mount trees and make
//! their `umount2` fail with EBUSY (containerd hits exactly this when it forks for a userns fd).
//! `CLONE_VM` shares our memory instead of copying the page tables (a fork of the agent costs
//! ~100 µs, which would show up as agent overhead on every container). The helper therefore
//! only makes raw system calls through rustix's linux_raw backend, which never touches `errno`
//! or any other thread-local state it would share with the thread that cloned it: no
//! allocation, no locks, no libc wrappers, no panics.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::thread::UnshareFlags;

use super::{SysError, SysResult};

/// `unshare(CLONE_NEWNS)` then `mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)`: the calling
/// thread (and threads it creates later) gets a private copy of the mount table whose changes
/// never propagate back. Called on the main thread before any other thread exists, it covers the
/// whole process.
pub fn enter_private_mount_ns() -> SysResult<()> {
    // SAFETY: CLONE_NEWNS (with the CLONE_FS it implies) unshares no file descriptor table.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }
        .map_err(|e| SysError::new(|| "unshare(CLONE_NEWNS)".into(), e))?;
    super::legacy::make_rprivate_root()
}

/// `unshare(CLONE_FS)`: give the calling thread its own working directory, so relative mount
/// paths of one worker cannot be resolved against another's.
pub fn unshare_fs() -> SysResult<()> {
    // SAFETY: CLONE_FS does not touch the file descriptor table.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS) }
        .map_err(|e| SysError::new(|| "unshare(CLONE_FS)".into(), e))
}

/// Something the helper does inside the user namespace, relative to a directory fd.
#[derive(Debug)]
pub enum ChildOp<'a> {
    /// `fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW)`.
    Stat { dir: BorrowedFd<'a>, path: CString },
    /// `openat(dirfd, path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644)`, `fstat`, `close`.
    Create { dir: BorrowedFd<'a>, path: CString },
}

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
    fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.errno.to_ne_bytes());
        out[4..8].copy_from_slice(&self.uid.to_ne_bytes());
        out[8..12].copy_from_slice(&self.gid.to_ne_bytes());
        out[12..16].copy_from_slice(&self.mode.to_ne_bytes());
        out[16..24].copy_from_slice(&self.rdev.to_ne_bytes());
    }

    fn decode(b: &[u8]) -> OpResult {
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
/// inside it. Dropping it ends the helper.
pub struct UserNs<'a> {
    ns: OwnedFd,
    res_r: OwnedFd,
    /// Ops per batch, to size the replies.
    batch_lens: Vec<usize>,
    /// Whether the helper's "became root" status is still to be read (it is read together with
    /// the first batch's results, saving a round trip on every container).
    status_pending: bool,
    // Dropped after the fds above: hands the helper to the reaper.
    helper: Helper,
    _borrows: std::marker::PhantomData<ChildOp<'a>>,
    // Kept open until the helper is gone: it shares our descriptor table.
    _cmd_r: OwnedFd,
    _res_w: OwnedFd,
}

/// The helper: its pid, stack, arguments and the batches it reads. Dropping it hands all of it
/// to a reaper thread, which kills and reaps the helper and only then frees the memory it ran
/// on: reaping synchronously cost ~0.5 ms per container on the worker's path (the exiting
/// helper must be scheduled first), which is agent overhead, not mount time.
struct Helper {
    pid: libc::pid_t,
    stack: *mut libc::c_void,
    args: *mut HelperArgs,
    /// Lifetime erased: the helper only reads these on command, and no command is sent once
    /// the owning [`UserNs`] is gone; the reaper only frees them.
    batches: Option<Box<Vec<Vec<ChildOp<'static>>>>>,
    /// Our end of the command pipe. Closed by the reaper, not the worker: closing it wakes the
    /// helper, whose exit would otherwise preempt the worker that is starting containers.
    cmd_w: Option<OwnedFd>,
}

// SAFETY: the raw pointers are owned by this value and only freed after the helper is reaped;
// the batches are plain data (CStrings and fd numbers).
unsafe impl Send for Helper {}

const HELPER_STACK: usize = 256 * 1024;

/// What the helper reads; lives on our heap until the helper is reaped.
struct HelperArgs {
    parent: i32,
    cmd: RawFd,
    res: RawFd,
    batches: *const Vec<Vec<ChildOp<'static>>>,
}

impl Helper {
    fn reap(&mut self) {
        self.cmd_w = None;
        // SAFETY: kill/waitpid on our own child's pid; the stack and args are ours and unused
        // once the child is reaped.
        unsafe {
            if self.pid > 0 {
                libc::kill(self.pid, libc::SIGKILL);
                let mut status = 0;
                while libc::waitpid(self.pid, &mut status, libc::__WALL) < 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
                {
                }
                self.pid = -1;
            }
            if !self.stack.is_null() {
                libc::munmap(self.stack, HELPER_STACK);
                self.stack = std::ptr::null_mut();
            }
            if !self.args.is_null() {
                drop(Box::from_raw(self.args));
                self.args = std::ptr::null_mut();
            }
        }
        self.batches = None;
    }
}

/// The process-wide reaper: a thread that reaps helpers handed to it, off the workers' path.
/// (Any thread of a process may wait for a child of another.)
fn reaper() -> Option<&'static std::sync::Mutex<std::sync::mpsc::Sender<Helper>>> {
    static REAPER: std::sync::OnceLock<Option<std::sync::Mutex<std::sync::mpsc::Sender<Helper>>>> =
        std::sync::OnceLock::new();
    REAPER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Helper>();
            std::thread::Builder::new()
                .name("mmx-reaper".into())
                .spawn(move || {
                    for mut h in rx {
                        h.reap();
                    }
                })
                .ok()
                .map(|_| std::sync::Mutex::new(tx))
        })
        .as_ref()
}

impl Drop for Helper {
    fn drop(&mut self) {
        let moved = Helper {
            pid: std::mem::replace(&mut self.pid, -1),
            stack: std::mem::replace(&mut self.stack, std::ptr::null_mut()),
            args: std::mem::replace(&mut self.args, std::ptr::null_mut()),
            batches: self.batches.take(),
            cmd_w: self.cmd_w.take(),
        };
        let unsent = match reaper().and_then(|r| r.lock().ok()) {
            Some(tx) => tx.send(moved).err().map(|e| e.0),
            None => Some(moved),
        };
        // No reaper: reap here.
        if let Some(mut h) = unsent {
            h.reap();
        }
    }
}

/// How long the agent waits for the helper to answer before calling it dead.
const HELPER_TIMEOUT_MS: i32 = 10_000;

fn pipe() -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(SysError::from_io(|| "pipe2(O_CLOEXEC)".into(), &e));
    }
    // SAFETY: both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl<'a> UserNs<'a> {
    /// Create the namespace and its helper. `batches[i]` is what [`UserNs::run_batch`]`(i)` runs;
    /// every op's directory fd must stay open as long as the returned value lives (`'a`).
    pub fn create(base: u32, count: u32, batches: Vec<Vec<ChildOp<'a>>>) -> SysResult<UserNs<'a>> {
        if let Some(b) = batches.iter().find(|b| b.len() > MAX_BATCH) {
            return Err(SysError::plain(
                format!("userns helper batch (at most {MAX_BATCH} ops)"),
                libc::E2BIG,
            )
            .context(format!("{} ops", b.len())));
        }
        let (cmd_r, cmd_w) = pipe()?;
        let (res_r, res_w) = pipe()?;
        let parent = rustix::process::getpid().as_raw_nonzero().get();
        let batch_lens: Vec<usize> = batches.iter().map(Vec::len).collect();
        // SAFETY: lifetime erasure only; see `Helper::batches`.
        let batches: Box<Vec<Vec<ChildOp<'static>>>> = unsafe {
            std::mem::transmute::<Box<Vec<Vec<ChildOp<'a>>>>, Box<Vec<Vec<ChildOp<'static>>>>>(
                Box::new(batches),
            )
        };
        // SAFETY: a private anonymous mapping for the helper's stack.
        let stack = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                HELPER_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if stack == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            return Err(SysError::from_io(|| "mmap(helper stack)".into(), &e));
        }
        let args = Box::into_raw(Box::new(HelperArgs {
            parent,
            cmd: cmd_r.as_raw_fd(),
            res: res_w.as_raw_fd(),
            batches: &*batches as *const Vec<Vec<ChildOp<'static>>>,
        }));
        let mut helper = Helper {
            pid: -1,
            stack,
            args,
            batches: Some(batches),
            cmd_w: Some(cmd_w),
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
            status_pending: true,
            helper: helper,
            _borrows: std::marker::PhantomData,
            _cmd_r: cmd_r,
            _res_w: res_w,
        };
        me.send(b"g")?;
        Ok(me)
    }

    /// The `/proc/<pid>/ns/user` fd, for `mount_setattr(MOUNT_ATTR_IDMAP)`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ns.as_fd()
    }

    /// Run batch `i` inside the namespace; one result per op, in order.
    pub fn run_batch(&mut self, i: usize) -> SysResult<Vec<OpResult>> {
        let n = self.batch_lens.get(i).copied().unwrap_or(0);
        let idx = u32::try_from(i).unwrap_or(u32::MAX);
        self.send(&idx.to_ne_bytes())?;
        if self.status_pending {
            let mut status = [0u8; 4];
            self.recv(&mut status)?;
            self.status_pending = false;
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
                libc::EPIPE,
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
                    format!("poll(userns helper result pipe, {HELPER_TIMEOUT_MS} ms)"),
                    libc::ETIMEDOUT,
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
                        libc::EPIPE,
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

/// The helper process: become root of the new namespace, then run batches on request. Only
/// rustix calls (raw syscalls, no errno); returning exits the process.
extern "C" fn helper_main(arg: *mut libc::c_void) -> libc::c_int {
    use rustix::fd::BorrowedFd as Fd;
    // SAFETY: `arg` is the HelperArgs the parent keeps alive until it has reaped us; the fds
    // are in the descriptor table we share and stay open as long as we run.
    let (args, batches, cmd, res) = unsafe {
        let a = &*(arg as *const HelperArgs);
        (a, &*a.batches, Fd::borrow_raw(a.cmd), Fd::borrow_raw(a.res))
    };
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(args.parent) {
        return 1;
    }
    let mut go = [0u8; 1];
    if !matches!(rustix::io::read(cmd, &mut go), Ok(1)) || go[0] != b'g' {
        return 0;
    }
    // Become root of the namespace: id 0 maps to the container's host base.
    let _ = rustix::thread::set_thread_groups(&[]);
    let became_root = rustix::thread::set_thread_res_gid(
        rustix::process::Gid::ROOT,
        rustix::process::Gid::ROOT,
        rustix::process::Gid::ROOT,
    )
    .and_then(|()| {
        rustix::thread::set_thread_res_uid(
            rustix::process::Uid::ROOT,
            rustix::process::Uid::ROOT,
            rustix::process::Uid::ROOT,
        )
    });
    let status: i32 = match became_root {
        Ok(()) => 0,
        Err(e) => e.raw_os_error(),
    };
    let _ = rustix::io::write(res, &status.to_ne_bytes());
    if status != 0 {
        return 1;
    }
    let mut out = [0u8; MAX_BATCH * RESULT_BYTES];
    loop {
        let mut idx = [0u8; 4];
        if !matches!(rustix::io::read(cmd, &mut idx), Ok(4)) {
            return 0;
        }
        let Some(batch) = batches.get(u32::from_ne_bytes(idx) as usize) else {
            return 2;
        };
        let mut len = 0;
        for (op, slot) in batch.iter().zip(out.chunks_exact_mut(RESULT_BYTES)) {
            run_op(op).encode(slot);
            len += RESULT_BYTES;
        }
        let _ = rustix::io::write(res, &out[..len]);
    }
}

fn run_op(op: &ChildOp<'_>) -> OpResult {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let seen = match op {
        ChildOp::Stat { dir, path } => {
            rustix::fs::statat(*dir, path.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
        }
        ChildOp::Create { dir, path } => rustix::fs::openat(
            *dir,
            path.as_c_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .and_then(|fd| rustix::fs::fstat(&fd)),
    };
    match seen {
        Ok(st) => OpResult {
            errno: 0,
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode,
            rdev: st.st_rdev,
        },
        Err(e) => OpResult {
            errno: e.raw_os_error(),
            ..OpResult::default()
        },
    }
}
