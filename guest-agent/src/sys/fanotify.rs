//! fanotify mount events (Linux 6.15+): `fanotify_init(FAN_REPORT_MNT)` and
//! `fanotify_mark(FAN_MARK_MNTNS)` on a mount namespace fd report every attach and detach.
//! Constants from include/uapi/linux/fanotify.h (host headers may predate them).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{SysError, SysResult};

const FAN_REPORT_MNT: libc::c_uint = 0x0000_4000;
const FAN_MARK_MNTNS: libc::c_uint = 0x0000_0110;
pub const FAN_MNT_ATTACH: u64 = 0x0100_0000;
pub const FAN_MNT_DETACH: u64 = 0x0200_0000;

/// `fanotify_init(FAN_REPORT_MNT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY)`.
pub fn init_mount_events() -> SysResult<OwnedFd> {
    let flags = FAN_REPORT_MNT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
    // SAFETY: plain syscall, returns a new fd or -1.
    let fd = unsafe { libc::fanotify_init(flags, libc::O_RDONLY as libc::c_uint) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(SysError::from_io(
            || "fanotify_init(FAN_REPORT_MNT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY)".into(),
            &e,
        ));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_MNTNS, FAN_MNT_ATTACH | FAN_MNT_DETACH, mntns_fd,
/// NULL)`.
pub fn mark_mount_ns(fan: BorrowedFd<'_>, mntns: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: plain syscall on valid fds with a NULL path.
    let rc = unsafe {
        libc::fanotify_mark(
            fan.as_raw_fd(),
            libc::FAN_MARK_ADD | FAN_MARK_MNTNS,
            FAN_MNT_ATTACH | FAN_MNT_DETACH,
            mntns.as_raw_fd(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(SysError::from_io(
            || {
                "fanotify_mark(FAN_MARK_ADD | FAN_MARK_MNTNS, FAN_MNT_ATTACH | FAN_MNT_DETACH, mntns_fd, NULL)".into()
            },
            &e,
        ));
    }
    Ok(())
}

/// Read whatever events are queued (non-blocking) and return their masks.
pub fn read_event_masks(fan: BorrowedFd<'_>) -> SysResult<Vec<u64>> {
    let mut buf = vec![0u8; 8192];
    let n = match rustix::io::read(fan, &mut buf) {
        Ok(n) => n,
        Err(rustix::io::Errno::AGAIN) => return Ok(Vec::new()),
        Err(e) => return Err(SysError::new(|| "read(fanotify fd)".into(), e)),
    };
    Ok(parse_event_masks(&buf[..n]))
}

/// `struct fanotify_event_metadata { u32 event_len; u8 vers; u8 reserved; u16 metadata_len;
/// u64 mask; s32 fd; s32 pid; }`, records back to back.
fn parse_event_masks(mut b: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    while b.len() >= 24 {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let mut m = [0u8; 8];
        m.copy_from_slice(&b[8..16]);
        out.push(u64::from_ne_bytes(m));
        if len < 24 || len > b.len() {
            break;
        }
        b = &b[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_records_are_walked_by_length() {
        let mut rec = vec![0u8; 36];
        rec[0..4].copy_from_slice(&36u32.to_ne_bytes());
        rec[8..16].copy_from_slice(&FAN_MNT_ATTACH.to_ne_bytes());
        let mut two = rec.clone();
        two[8..16].copy_from_slice(&FAN_MNT_DETACH.to_ne_bytes());
        rec.extend_from_slice(&two);
        assert_eq!(
            parse_event_masks(&rec),
            vec![FAN_MNT_ATTACH, FAN_MNT_DETACH]
        );
        assert!(parse_event_masks(&rec[..10]).is_empty());
    }
}
