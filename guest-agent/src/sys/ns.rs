//! Mount namespaces and per-thread state: the agent's private mount namespace, per-thread working
//! directories, and a handle on a thread's mount namespace (for fanotify marks and for readers
//! that look at another thread's mount table). User namespaces for containers are [`super::userns`].

use std::os::fd::OwnedFd;

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

/// `unshare(CLONE_NEWNS)` alone, from a namespace that is private already (the run's): the
/// calling thread gets a copy of its mount table, whose mounts stay private (copies keep their
/// propagation), and processes it starts later live in it. A runtime worker works in one, so the
/// kernel's mount events there are its runtime's alone.
pub fn unshare_mount_ns() -> SysResult<()> {
    // SAFETY: CLONE_NEWNS (with the CLONE_FS it implies) unshares no file descriptor table.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }
        .map_err(|e| SysError::new(|| "unshare(CLONE_NEWNS)".into(), e))
}

/// `unshare(CLONE_FS)`: give the calling thread its own working directory, so relative mount
/// paths of one worker cannot be resolved against another's.
pub fn unshare_fs() -> SysResult<()> {
    // SAFETY: CLONE_FS does not touch the file descriptor table.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS) }
        .map_err(|e| SysError::new(|| "unshare(CLONE_FS)".into(), e))
}

/// `open("/proc/thread-self/ns/mnt", O_RDONLY | O_CLOEXEC)`: the calling thread's mount
/// namespace, for `fanotify_mark(FAN_MARK_MNTNS)`.
pub fn open_mount_ns() -> SysResult<OwnedFd> {
    rustix::fs::open(
        "/proc/thread-self/ns/mnt",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| SysError::new(|| "open(\"/proc/thread-self/ns/mnt\", O_RDONLY)".into(), e))
}

/// The kernel's id of the calling thread (for `/proc/self/task/<tid>/…`: another thread may
/// read this one's mount table there).
pub fn thread_id() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}
