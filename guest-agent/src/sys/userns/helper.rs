//! The userns helper process: cloned into the new user namespace on a stack of its own, sharing
//! the agent's memory and descriptor table (see the parent module), it runs batches of
//! [`ChildOp`]s on request. Also here: handing a finished helper to the reaper thread.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::time::Duration;

use super::{Batches, ChildOp, OpResult, MAX_BATCH, MAX_DIRS, RESULT_BYTES};
use crate::sys::{SysError, SysResult};

/// The helper: its pid, stack, arguments and the batches it reads. Dropping it hands all of it
/// to a reaper thread, which kills and reaps the helper and only then gives back the memory it
/// ran on (its stack to the pool, see [`alloc_stack`]): reaping synchronously cost ~0.5 ms per container on the worker's path (the exiting
/// helper must be scheduled first), which is agent overhead, not mount time.
pub(super) struct Helper {
    pub(super) pid: libc::pid_t,
    pub(super) stack: *mut libc::c_void,
    pub(super) args: *mut HelperArgs,
    /// Kept alive until the helper is reaped: it reads them.
    pub(super) batches: Option<Batches>,
    /// Our end of the command pipe. Closed by the reaper, not the worker: closing it wakes the
    /// helper, whose exit would otherwise preempt the worker that is starting containers.
    pub(super) cmd_w: Option<OwnedFd>,
    /// The helper's ends (command read, result write), which it uses by number in the
    /// descriptor table it shares with us: closed only once it is reaped. Closed earlier, the
    /// numbers would be reused by the next helper's pipes, and a helper still alive would
    /// read that one's commands.
    pub(super) helper_fds: Vec<OwnedFd>,
}

// SAFETY: the raw pointers are owned by this value and only freed after the helper is reaped;
// the batches are plain data (CStrings).
unsafe impl Send for Helper {}

pub(super) const HELPER_STACK: usize = 256 * 1024;

/// Stacks of reaped helpers, kept for the next ones (addresses: raw pointers are not `Send`).
/// Unmapping a stack shoots down the TLB of every CPU the agent's threads run on, the worker
/// starting containers included, in the middle of its measured calls; a stack reused costs
/// nothing. The pool holds as many stacks as helpers were ever alive at once.
static STACKS: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

/// A helper stack: one from the pool, or a new private anonymous mapping.
pub(super) fn alloc_stack() -> SysResult<*mut libc::c_void> {
    if let Some(addr) = STACKS.lock().ok().and_then(|mut s| s.pop()) {
        return Ok(addr as *mut libc::c_void);
    }
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
    Ok(stack)
}

/// Give a stack back once the helper that ran on it has been reaped.
pub(super) fn release_stack(stack: *mut libc::c_void) {
    match STACKS.lock() {
        Ok(mut s) => s.push(stack as usize),
        // SAFETY: our own mapping, unused since its helper was reaped.
        Err(_) => unsafe {
            libc::munmap(stack, HELPER_STACK);
        },
    }
}

/// What the helper reads; lives on our heap until the helper is reaped.
pub(super) struct HelperArgs {
    pub(super) parent: i32,
    pub(super) cmd: RawFd,
    pub(super) res: RawFd,
    pub(super) batches: *const Vec<Vec<ChildOp>>,
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
            self.helper_fds.clear();
            if !self.stack.is_null() {
                release_stack(self.stack);
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

enum ReaperMsg {
    Reap(Helper),
    /// Answer once everything sent before has been reaped.
    Flush(mpsc::SyncSender<()>),
}

/// The process-wide reaper: a thread that reaps helpers handed to it, off the workers' path.
/// (Any thread of a process may wait for a child of another.)
fn reaper() -> Option<&'static std::sync::Mutex<mpsc::Sender<ReaperMsg>>> {
    static REAPER: std::sync::OnceLock<Option<std::sync::Mutex<mpsc::Sender<ReaperMsg>>>> =
        std::sync::OnceLock::new();
    REAPER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<ReaperMsg>();
            std::thread::Builder::new()
                .name("mmx-reaper".into())
                .spawn(move || {
                    for msg in rx {
                        match msg {
                            ReaperMsg::Reap(mut h) => h.reap(),
                            ReaperMsg::Flush(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                })
                .ok()
                .map(|_| std::sync::Mutex::new(tx))
        })
        .as_ref()
}

/// Reap helpers on the dropping thread instead of the reaper thread.
static REAP_INLINE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Choose where dropped helpers are reaped: on the reaper thread (when a CPU is spare beside
/// the workers, it takes the ~0.5 ms per container off the workers' path) or inline on the
/// dropping thread. With no spare CPU the reaper only competes with the workers, and in a
/// 2-vCPU TCG guest it made per-layer starts 13× slower (p50 41 ms inline, 560 ms with the
/// reaper, debian-6.12, L50 C10 J2); why exactly is not understood yet. Process-wide: the last
/// run to start decides, which only matters when runs overlap (the lock benchmark's storm).
pub fn set_reap_inline(inline: bool) {
    REAP_INLINE.store(inline, std::sync::atomic::Ordering::Relaxed);
}

/// Wait (at most `limit`) until every helper dropped so far has been killed and reaped, so that
/// none outlives the run that made it. True when the reaper answered in time.
pub fn reap_pending(limit: Duration) -> bool {
    let Some(tx) = reaper().and_then(|r| r.lock().ok().map(|tx| tx.clone())) else {
        return true;
    };
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    if tx.send(ReaperMsg::Flush(done_tx)).is_err() {
        return true;
    }
    done_rx.recv_timeout(limit).is_ok()
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Already reaped (or never started): nothing to hand on. This also ends the drop of the
        // emptied value `reap` leaves behind.
        if self.pid <= 0 && self.stack.is_null() && self.args.is_null() {
            return;
        }
        let moved = Helper {
            pid: std::mem::replace(&mut self.pid, -1),
            stack: std::mem::replace(&mut self.stack, std::ptr::null_mut()),
            args: std::mem::replace(&mut self.args, std::ptr::null_mut()),
            batches: self.batches.take(),
            cmd_w: self.cmd_w.take(),
            helper_fds: std::mem::take(&mut self.helper_fds),
        };
        let reaper = if REAP_INLINE.load(std::sync::atomic::Ordering::Relaxed) {
            None
        } else {
            reaper()
        };
        let unsent = match reaper.and_then(|r| r.lock().ok()) {
            Some(tx) => match tx.send(ReaperMsg::Reap(moved)) {
                Ok(()) => None,
                Err(mpsc::SendError(ReaperMsg::Reap(h))) => Some(h),
                Err(_) => None,
            },
            None => Some(moved),
        };
        // No reaper: reap here.
        if let Some(mut h) = unsent {
            h.reap();
        }
    }
}

pub(super) fn pipe() -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(SysError::from_io(|| "pipe2(O_CLOEXEC)".into(), &e));
    }
    // SAFETY: both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
/// Bytes of one command: batch index, then [`MAX_DIRS`] directory fds (one atomic pipe write).
pub(super) const CMD_BYTES: usize = 4 + 4 * MAX_DIRS;

/// The helper process: become root of the new namespace, then run batches on request. Only
/// rustix calls (raw syscalls, no errno); returning exits the process.
pub(super) extern "C" fn helper_main(arg: *mut libc::c_void) -> libc::c_int {
    use rustix::fd::BorrowedFd as Fd;
    // SAFETY: `arg` is the HelperArgs the parent keeps alive until it has reaped us; the fds
    // are in the descriptor table we share and stay open as long as we run.
    let (args, batches, cmd, res) = unsafe {
        let a = &*(arg as *const HelperArgs);
        (a, &*a.batches, Fd::borrow_raw(a.cmd), Fd::borrow_raw(a.res))
    };
    // Die with the thread that made us, from the first instruction: we share the agent's
    // descriptor table, so we hold the write end of our own command pipe and would never see
    // EOF on it; an agent that dies before sending "g" would leave us blocked forever, holding
    // its stdout open (a test or an SSH session then never sees the end of the output).
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
    // Again: changing credentials (the setres*id above) clears the parent-death signal. Then
    // make sure our parent is still there.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(args.parent) {
        return 1;
    }
    let _ = rustix::io::write(res, &status.to_ne_bytes());
    if status != 0 {
        return 1;
    }
    let mut out = [0u8; MAX_BATCH * RESULT_BYTES];
    loop {
        let mut c = [0u8; CMD_BYTES];
        if !matches!(rustix::io::read(cmd, &mut c), Ok(CMD_BYTES)) {
            return 0;
        }
        let word = |k: usize| [c[4 * k], c[4 * k + 1], c[4 * k + 2], c[4 * k + 3]];
        let Some(batch) = batches.get(u32::from_ne_bytes(word(0)) as usize) else {
            return 2;
        };
        let mut dirs = [-1 as RawFd; MAX_DIRS];
        for (k, d) in dirs.iter_mut().enumerate() {
            *d = i32::from_ne_bytes(word(k + 1));
        }
        let mut len = 0;
        for (op, slot) in batch.iter().zip(out.chunks_exact_mut(RESULT_BYTES)) {
            run_op(op, &dirs).encode(slot);
            len += RESULT_BYTES;
        }
        let _ = rustix::io::write(res, &out[..len]);
    }
}

fn run_op(op: &ChildOp, dirs: &[RawFd; MAX_DIRS]) -> OpResult {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let (ChildOp::Stat { dir, .. } | ChildOp::Create { dir, .. }) = op;
    let Some(&raw) = dirs.get(usize::from(*dir)).filter(|&&fd| fd >= 0) else {
        return OpResult {
            errno: libc::EBADF,
            ..OpResult::default()
        };
    };
    // SAFETY: the parent keeps the command's directory fds open until it has our answer.
    let dir = unsafe { rustix::fd::BorrowedFd::borrow_raw(raw) };
    let seen = match op {
        ChildOp::Stat { path, .. } => {
            rustix::fs::statat(dir, path.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
        }
        ChildOp::Create { path, .. } => rustix::fs::openat(
            dir,
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
