//! fanotify mount events (Linux 6.15+): `fanotify_init(FAN_REPORT_MNT)` and
//! `fanotify_mark(FAN_MARK_MNTNS)` on a mount namespace fd report every attach and detach in that
//! namespace, each with the unique id of the mount (an info record of type
//! `FAN_EVENT_INFO_TYPE_MNT`). Mount events are never merged (fs/notify/fanotify/fanotify.c,
//! `fanotify_should_merge`), so one event is one operation. Constants from
//! include/uapi/linux/fanotify.h (host headers may predate them); fanotify(7), fanotify_mark(2).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{SysError, SysResult};

const FAN_REPORT_MNT: libc::c_uint = 0x0000_4000;
const FAN_MARK_MNTNS: libc::c_uint = 0x0000_0110;
const FAN_MNT_ATTACH: u64 = 0x0100_0000;
const FAN_MNT_DETACH: u64 = 0x0200_0000;
const FAN_EVENT_INFO_TYPE_MNT: u8 = 7;
/// `struct fanotify_event_metadata`: u32 event_len, u8 vers, u8 reserved, u16 metadata_len,
/// u64 mask, s32 fd, s32 pid.
const METADATA_LEN: usize = 24;
/// `struct fanotify_event_info_mnt`: a 4-byte header (u8 type, u8 pad, u16 len), padding, u64.
const INFO_MNT_LEN: usize = 16;

/// What one event says happened to a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountEvent {
    /// Mount `id` (its unique id) was attached to the marked namespace.
    Attach(u64),
    /// Mount `id` was detached from it.
    Detach(u64),
    /// The queue overflowed: events were lost (only a bounded queue can overflow).
    Overflow,
    /// An event this parser does not know (a mask or record layout of a later kernel).
    Unknown(u64),
}

/// `fanotify_init(FAN_REPORT_MNT | FAN_CLOEXEC | FAN_NONBLOCK [| FAN_UNLIMITED_QUEUE], O_RDONLY)`.
/// An unlimited queue (CAP_SYS_ADMIN) never drops an event however far the reader lags.
pub fn init_mount_events(unlimited: bool) -> SysResult<OwnedFd> {
    let mut flags = FAN_REPORT_MNT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
    if unlimited {
        flags |= libc::FAN_UNLIMITED_QUEUE;
    }
    // SAFETY: plain syscall, returns a new fd or -1.
    let fd = unsafe { libc::fanotify_init(flags, libc::O_RDONLY as libc::c_uint) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(SysError::from_io(
            || {
                let q = if unlimited {
                    " | FAN_UNLIMITED_QUEUE"
                } else {
                    ""
                };
                format!("fanotify_init(FAN_REPORT_MNT | FAN_CLOEXEC | FAN_NONBLOCK{q}, O_RDONLY)")
            },
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

/// Read what is queued (non-blocking) into `out`, using `buf` as the read buffer; how many
/// events were read (0: none queued).
pub fn read_mount_events(
    fan: BorrowedFd<'_>,
    buf: &mut [u8],
    out: &mut Vec<MountEvent>,
) -> SysResult<usize> {
    read_mount_events_sized(fan, buf, out).map(|(events, _)| events)
}

/// [`read_mount_events`], with the bytes the read returned: (events, bytes).
pub fn read_mount_events_sized(
    fan: BorrowedFd<'_>,
    buf: &mut [u8],
    out: &mut Vec<MountEvent>,
) -> SysResult<(usize, usize)> {
    let n = loop {
        match rustix::io::read(fan, &mut *buf) {
            Ok(n) => break n,
            Err(rustix::io::Errno::AGAIN) => return Ok((0, 0)),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(SysError::new(|| "read(fanotify fd)".into(), e)),
        }
    };
    let before = out.len();
    parse_events(&buf[..n], out);
    Ok((out.len() - before, n))
}

/// Walk the event records of one read. Each record starts with the metadata; its info records
/// follow up to `event_len`.
fn parse_events(mut b: &[u8], out: &mut Vec<MountEvent>) {
    while b.len() >= METADATA_LEN {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let meta = usize::from(u16::from_ne_bytes([b[6], b[7]]));
        let mut m = [0u8; 8];
        m.copy_from_slice(&b[8..16]);
        let mask = u64::from_ne_bytes(m);
        if len < METADATA_LEN || len > b.len() || meta < METADATA_LEN || meta > len {
            out.push(MountEvent::Unknown(mask));
            return;
        }
        let id = mount_id(&b[meta..len]);
        out.push(match (mask, id) {
            (m, _) if m & libc::FAN_Q_OVERFLOW != 0 => MountEvent::Overflow,
            (m, Some(id)) if m & FAN_MNT_ATTACH != 0 => MountEvent::Attach(id),
            (m, Some(id)) if m & FAN_MNT_DETACH != 0 => MountEvent::Detach(id),
            (m, _) => MountEvent::Unknown(m),
        });
        b = &b[len..];
    }
}

/// The mount id of the first `FAN_EVENT_INFO_TYPE_MNT` record among `info`.
fn mount_id(mut info: &[u8]) -> Option<u64> {
    while info.len() >= 4 {
        let (kind, len) = (info[0], usize::from(u16::from_ne_bytes([info[2], info[3]])));
        if len < 4 || len > info.len() {
            return None;
        }
        if kind == FAN_EVENT_INFO_TYPE_MNT && len >= INFO_MNT_LEN {
            let mut id = [0u8; 8];
            id.copy_from_slice(&info[8..16]);
            return Some(u64::from_ne_bytes(id));
        }
        info = &info[len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(mask: u64, id: u64) -> Vec<u8> {
        let mut rec = vec![0u8; METADATA_LEN + INFO_MNT_LEN];
        rec[0..4].copy_from_slice(&((METADATA_LEN + INFO_MNT_LEN) as u32).to_ne_bytes());
        rec[4] = 3;
        rec[6..8].copy_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        rec[8..16].copy_from_slice(&mask.to_ne_bytes());
        let info = &mut rec[METADATA_LEN..];
        info[0] = FAN_EVENT_INFO_TYPE_MNT;
        info[2..4].copy_from_slice(&(INFO_MNT_LEN as u16).to_ne_bytes());
        info[8..16].copy_from_slice(&id.to_ne_bytes());
        rec
    }

    #[test]
    fn event_records_are_walked_by_length_with_their_mount_ids() {
        let mut b = event(FAN_MNT_ATTACH, 0x1_0000_0007);
        b.extend(event(FAN_MNT_DETACH, 42));
        let mut out = Vec::new();
        parse_events(&b, &mut out);
        assert_eq!(
            out,
            vec![MountEvent::Attach(0x1_0000_0007), MountEvent::Detach(42)]
        );
        out.clear();
        parse_events(&b[..10], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn overflow_and_odd_records_are_never_counted_as_mounts() {
        let mut out = Vec::new();
        let mut over = event(libc::FAN_Q_OVERFLOW, 0);
        over[METADATA_LEN] = 0;
        parse_events(&over, &mut out);
        assert_eq!(out, vec![MountEvent::Overflow]);
        // An attach without a mount record, and a record that claims more than there is.
        out.clear();
        let mut bare = event(FAN_MNT_ATTACH, 1);
        bare[METADATA_LEN] = 1;
        parse_events(&bare, &mut out);
        assert_eq!(out, vec![MountEvent::Unknown(FAN_MNT_ATTACH)]);
        out.clear();
        let mut long = event(FAN_MNT_DETACH, 1);
        long[0..4].copy_from_slice(&999u32.to_ne_bytes());
        parse_events(&long, &mut out);
        assert_eq!(out, vec![MountEvent::Unknown(FAN_MNT_DETACH)]);
    }
}
