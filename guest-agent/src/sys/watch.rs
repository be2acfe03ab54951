//! What a mount-table watcher calls (see `crate::watchers`): `poll(2)` for `POLLPRI` on the
//! mountinfo file (proc_pid_mounts(5); fs/proc_namespace.c `mounts_poll`: a change of the
//! namespace's table bumps its event count, and the next poll of an open file that has not seen
//! that count reports `POLLERR | POLLPRI` once and remembers it), the whole table
//! read again from offset 0, an eventfd that tells a watcher to stop, the calling thread's CPU
//! clock, and the old (table) mount id of a path as mountinfo's first field shows it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use super::{SysError, SysResult};

/// `STATX_MNT_ID` (Linux 5.8): the mount id mountinfo's first field shows.
const STATX_MNT_ID: u32 = 0x0000_1000;

/// Which of the fds given to [`poll_table`] is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready {
    /// The table changed since it was last read through this open file (`POLLPRI`).
    pub table: bool,
    /// The stop eventfd was written.
    pub stop: bool,
}

/// `poll({table, POLLPRI}, {stop, POLLIN}, timeout)`; `None` waits for ever. EINTR is retried.
pub fn poll_table(
    table: BorrowedFd<'_>,
    stop: Option<BorrowedFd<'_>>,
    timeout: Option<Duration>,
) -> SysResult<Ready> {
    let mut fds = [
        libc::pollfd {
            fd: table.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.map_or(-1, |s| s.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
    loop {
        // SAFETY: `fds` is a valid array of two pollfds for the call's duration; a negative fd
        // is ignored by poll.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if rc >= 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(SysError::from_io(|| "poll(mountinfo, POLLPRI)".into(), &e));
        }
    }
    Ok(Ready {
        table: fds[0].revents & (libc::POLLPRI | libc::POLLERR) != 0,
        stop: fds[1].revents & libc::POLLIN != 0,
    })
}

/// `poll({fd, POLLIN}, {stop, POLLIN}, -1)`: a fanotify fd with events, or a stop.
pub fn poll_readable(fd: BorrowedFd<'_>, stop: BorrowedFd<'_>) -> SysResult<Ready> {
    let mut fds = [
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: as in `poll_table`.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc >= 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(SysError::from_io(|| "poll(fanotify fd, POLLIN)".into(), &e));
        }
    }
    Ok(Ready {
        table: fds[0].revents & libc::POLLIN != 0,
        stop: fds[1].revents & libc::POLLIN != 0,
    })
}

/// Open a mountinfo file for watching (`open(path, O_RDONLY | O_CLOEXEC)`).
pub fn open_table(path: &Path) -> SysResult<File> {
    File::open(path).map_err(|e| {
        SysError::from_io(|| "open(mountinfo)".into(), &e).context(path.display().to_string())
    })
}

/// Read the whole table again through the watched open file (`lseek(fd, 0)` then `read` to
/// EOF, as seq_file allows), into `buf` (cleared first); the bytes read.
pub fn reread_table(f: &mut File, buf: &mut Vec<u8>) -> SysResult<u64> {
    buf.clear();
    f.seek(SeekFrom::Start(0))
        .map_err(|e| SysError::from_io(|| "lseek(mountinfo, 0)".into(), &e))?;
    let n = f
        .read_to_end(buf)
        .map_err(|e| SysError::from_io(|| "read(mountinfo)".into(), &e))?;
    Ok(n as u64)
}

/// `eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)`: a watcher's stop signal.
pub fn stop_fd() -> SysResult<OwnedFd> {
    // SAFETY: plain syscall, returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(SysError::from_io(|| "eventfd(0, EFD_CLOEXEC)".into(), &e));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Signal a stop fd (`write(fd, 1u64)`).
pub fn signal_stop(fd: BorrowedFd<'_>) -> SysResult<()> {
    rustix::io::write(fd, &1u64.to_ne_bytes())
        .map(|_| ())
        .map_err(|e| SysError::new(|| "write(eventfd)".into(), e))
}

/// The calling thread's CPU time (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`).
pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// The mount id of `path` as mountinfo shows it (`statx(dirfd, path, AT_SYMLINK_NOFOLLOW,
/// STATX_MNT_ID)`); None where the kernel does not say.
pub fn table_mount_id<P: rustix::path::Arg + std::fmt::Debug + Copy>(
    dirfd: impl AsFd,
    path: P,
) -> SysResult<Option<u64>> {
    let mask = rustix::fs::StatxFlags::from_bits_retain(STATX_MNT_ID);
    let st = rustix::fs::statx(dirfd, path, rustix::fs::AtFlags::SYMLINK_NOFOLLOW, mask).map_err(
        |e| SysError::new(|| "statx(STATX_MNT_ID)".into(), e).context(format!("path {path:?}")),
    )?;
    Ok((st.stx_mask & STATX_MNT_ID != 0).then_some(st.stx_mnt_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_stop_fd_polls_ready_and_the_cpu_clock_moves() {
        let stop = stop_fd().expect("eventfd");
        let table = open_table(Path::new("/proc/thread-self/mountinfo")).expect("mountinfo");
        let r = poll_table(table.as_fd(), Some(stop.as_fd()), Some(Duration::ZERO)).unwrap();
        assert!(!r.stop);
        signal_stop(stop.as_fd()).unwrap();
        let r = poll_table(table.as_fd(), Some(stop.as_fd()), None).unwrap();
        assert!(r.stop);
        let t0 = thread_cpu();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(thread_cpu() > t0);
    }

    #[test]
    fn the_table_is_read_whole_each_time() {
        let mut f = open_table(Path::new("/proc/thread-self/mountinfo")).unwrap();
        let mut buf = Vec::new();
        let a = reread_table(&mut f, &mut buf).unwrap();
        let b = reread_table(&mut f, &mut buf).unwrap();
        // The host's table may change between the reads: each is whole, not equal.
        assert!(a > 0 && b > 0 && buf.len() as u64 == b, "{a} {b}");
        assert!(buf.ends_with(b"\n"));
        let id = table_mount_id(rustix::fs::CWD, "/").unwrap();
        assert!(id.is_some());
    }
}
