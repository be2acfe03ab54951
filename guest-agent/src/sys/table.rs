//! Reading the mount table: `listmount(2)` and `statmount(2)` (Linux 6.8+), raw syscalls because
//! neither libc nor rustix wraps them yet. Where they are missing (`ENOSYS`) callers fall back to
//! `/proc/thread-self/mountinfo`.
//!
//! ABI (include/uapi/linux/mount.h): `struct mnt_id_req { u32 size; u32 spare; u64 mnt_id;
//! u64 param; }` (version 0, 24 bytes); `struct statmount` has a 512-byte fixed part whose
//! `mnt_point` (u32 at byte 108) is an offset into the string area that follows it.

use super::{SysError, SysResult};

/// Syscall numbers: new syscalls share one number on every architecture since 5.x.
const SYS_STATMOUNT: libc::c_long = 457;
const SYS_LISTMOUNT: libc::c_long = 458;

/// `LSMT_ROOT`: list from the root of the caller's mount namespace.
const LSMT_ROOT: u64 = u64::MAX;
const STATMOUNT_MNT_POINT: u64 = 0x10;
/// Size of `struct statmount` without its string area.
const STATMOUNT_FIXED: usize = 512;
/// Byte offset of `statmount.mnt_point` and of `statmount.mask`.
const OFF_MNT_POINT: usize = 108;
const OFF_MASK: usize = 8;

#[repr(C)]
struct MntIdReq {
    size: u32,
    /// `spare` in 6.8, `mnt_ns_fd` later, `mnt_fd` with `STATMOUNT_BY_FD` (7.0).
    fd: u32,
    mnt_id: u64,
    param: u64,
}

fn req(mnt_id: u64, param: u64) -> MntIdReq {
    MntIdReq {
        size: std::mem::size_of::<MntIdReq>() as u32,
        fd: 0,
        mnt_id,
        param,
    }
}

/// `listmount(&{.mnt_id = LSMT_ROOT, .param = last}, ids, n, 0)`, repeated until every mount of
/// the calling thread's mount namespace is listed. Returns the 64-bit unique mount ids.
pub fn listmount_all() -> SysResult<Vec<u64>> {
    let mut out = Vec::new();
    listmount_into(&mut out)?;
    Ok(out)
}

/// [`listmount_all`] into `out` (cleared first), reusing its memory: the lock benchmark times
/// whole listings, and an allocation per listing would be part of what it times.
pub fn listmount_into(out: &mut Vec<u64>) -> SysResult<()> {
    /// Ids asked for per call.
    const PAGE: usize = 4096;
    out.clear();
    let mut last = 0u64;
    loop {
        let start = out.len();
        out.resize(start + PAGE, 0);
        let r = req(LSMT_ROOT, last);
        // SAFETY: `r` is a valid version-0 request, `out[start..]` has room for PAGE ids; the
        // kernel writes at most that many.
        let n = unsafe {
            libc::syscall(
                SYS_LISTMOUNT,
                &r as *const MntIdReq,
                out[start..].as_mut_ptr(),
                PAGE,
                0u32,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            out.truncate(start);
            return Err(SysError::from_io(|| "listmount(LSMT_ROOT)".into(), &e)
                .context(format!("after mount id {last}, {PAGE} ids per call")));
        }
        let n = usize::try_from(n).unwrap_or(0).min(PAGE);
        out.truncate(start + n);
        if n < PAGE {
            return Ok(());
        }
        last = out[start + n - 1];
    }
}

/// `statmount(&{.mnt_id = id, .param = STATMOUNT_MNT_POINT}, buf, size, 0)`: the mount point of
/// mount `id`, as a path from the caller's root.
pub fn statmount_mnt_point(id: u64) -> SysResult<Vec<u8>> {
    let mut size = 4096usize;
    loop {
        // u64 elements keep the buffer aligned for the kernel's struct.
        let mut buf = vec![0u64; size / 8];
        let r = req(id, STATMOUNT_MNT_POINT);
        // SAFETY: `buf` is `size` bytes, the kernel writes at most `size` bytes into it.
        let rc = unsafe {
            libc::syscall(
                SYS_STATMOUNT,
                &r as *const MntIdReq,
                buf.as_mut_ptr(),
                size,
                0u32,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EOVERFLOW) && size < (1 << 20) {
                size *= 4;
                continue;
            }
            return Err(
                SysError::from_io(|| "statmount(STATMOUNT_MNT_POINT)".into(), &e)
                    .context(format!("mnt_id {id}, {size}-byte buffer")),
            );
        }
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        return parse_mnt_point(&bytes).ok_or_else(|| {
            SysError::plain("statmount(STATMOUNT_MNT_POINT): no mnt_point in reply", 0)
                .context(format!("mnt_id {id}"))
        });
    }
}

/// `STATMOUNT_SB_BASIC` and `STATMOUNT_MNT_BASIC` (include/uapi/linux/mount.h).
const STATMOUNT_SB_BASIC: u64 = 0x1;
const STATMOUNT_MNT_BASIC: u64 = 0x2;
/// `STATMOUNT_BY_FD` (7.0): the request's second u32 (`mnt_fd`, a union with `mnt_ns_fd`) names
/// the mount by a descriptor on it; `mnt_id` must then be 0.
const STATMOUNT_BY_FD: u32 = 0x1;
/// Byte offsets in `struct statmount`: `sb_magic` (u64), `mnt_id` (u64), `mnt_attr` (u64).
const OFF_SB_MAGIC: usize = 24;
const OFF_MNT_ID: usize = 40;
const OFF_MNT_ATTR: usize = 64;

/// What `statmount(STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC)` says about one mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountBasics {
    /// The superblock's magic (what `statfs` calls `f_type`).
    pub sb_magic: u64,
    /// The 64-bit unique mount id.
    pub mnt_id: u64,
    /// `MOUNT_ATTR_*` flags of the mount (`MOUNT_ATTR_IDMAP` when idmapped).
    pub mnt_attr: u64,
}

/// `statmount(&{.mnt_fd = fd, .param = STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC}, buf, size,
/// STATMOUNT_BY_FD)` (7.0): the mount `fd` is on, attached or not. Before 7.0 the flag is
/// refused (EINVAL; ENOSYS before 6.8).
pub fn statmount_by_fd(fd: std::os::fd::BorrowedFd<'_>) -> SysResult<MountBasics> {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u64; STATMOUNT_FIXED / 8];
    let raw = u32::try_from(fd.as_raw_fd())
        .map_err(|_| SysError::plain("statmount(STATMOUNT_BY_FD): a negative fd", 0))?;
    let mut r = req(0, STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC);
    r.fd = raw;
    // SAFETY: `r` is a valid version-0 request; `buf` is STATMOUNT_FIXED bytes and the kernel
    // writes at most the size it is given.
    let rc = unsafe {
        libc::syscall(
            SYS_STATMOUNT,
            &r as *const MntIdReq,
            buf.as_mut_ptr(),
            STATMOUNT_FIXED,
            STATMOUNT_BY_FD,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(SysError::from_io(
            || "statmount(STATMOUNT_BY_FD, STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC)".into(),
            &e,
        ));
    }
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    parse_basics(&bytes).ok_or_else(|| {
        SysError::plain(
            "statmount(STATMOUNT_BY_FD): reply lacks SB_BASIC or MNT_BASIC",
            0,
        )
    })
}

/// The basics out of a statmount reply, when its mask says both were filled. Pure.
fn parse_basics(bytes: &[u8]) -> Option<MountBasics> {
    let u64_at = |off: usize| {
        bytes
            .get(off..off + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_ne_bytes)
    };
    let mask = u64_at(OFF_MASK)?;
    let want = STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC;
    if mask & want != want {
        return None;
    }
    Some(MountBasics {
        sb_magic: u64_at(OFF_SB_MAGIC)?,
        mnt_id: u64_at(OFF_MNT_ID)?,
        mnt_attr: u64_at(OFF_MNT_ATTR)?,
    })
}

/// Pull `mnt_point` out of a statmount reply. Pure, so it is tested without a kernel.
fn parse_mnt_point(bytes: &[u8]) -> Option<Vec<u8>> {
    let u32_at = |off: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(
            bytes.get(off..off + 4)?.try_into().ok()?,
        ))
    };
    let mask = u64::from_ne_bytes(bytes.get(OFF_MASK..OFF_MASK + 8)?.try_into().ok()?);
    if mask & STATMOUNT_MNT_POINT == 0 {
        return None;
    }
    let start = STATMOUNT_FIXED + usize::try_from(u32_at(OFF_MNT_POINT)?).ok()?;
    let tail = bytes.get(start..)?;
    let end = tail.iter().position(|&b| b == 0)?;
    Some(tail[..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basics_are_read_only_when_the_mask_has_them() {
        let mut b = vec![0u8; STATMOUNT_FIXED];
        b[OFF_SB_MAGIC..OFF_SB_MAGIC + 8].copy_from_slice(&0xEF53u64.to_ne_bytes());
        b[OFF_MNT_ID..OFF_MNT_ID + 8].copy_from_slice(&0x1_0000_0042u64.to_ne_bytes());
        b[OFF_MNT_ATTR..OFF_MNT_ATTR + 8].copy_from_slice(&0x0010_0001u64.to_ne_bytes());
        assert_eq!(parse_basics(&b), None, "an empty mask fills nothing");
        b[OFF_MASK..OFF_MASK + 8].copy_from_slice(&STATMOUNT_MNT_BASIC.to_ne_bytes());
        assert_eq!(parse_basics(&b), None, "SB_BASIC missing");
        let both = STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC;
        b[OFF_MASK..OFF_MASK + 8].copy_from_slice(&both.to_ne_bytes());
        assert_eq!(
            parse_basics(&b),
            Some(MountBasics {
                sb_magic: 0xEF53,
                mnt_id: 0x1_0000_0042,
                mnt_attr: 0x0010_0001,
            })
        );
        assert_eq!(parse_basics(&b[..40]), None, "a short reply");
    }

    #[test]
    fn mnt_point_is_read_from_the_string_area() {
        let mut b = vec![0u8; 600];
        b[OFF_MASK..OFF_MASK + 8].copy_from_slice(&STATMOUNT_MNT_POINT.to_ne_bytes());
        b[OFF_MNT_POINT..OFF_MNT_POINT + 4].copy_from_slice(&3u32.to_ne_bytes());
        b[STATMOUNT_FIXED..STATMOUNT_FIXED + 3].copy_from_slice(b"xx\0");
        b[STATMOUNT_FIXED + 3..STATMOUNT_FIXED + 8].copy_from_slice(b"/a/b\0");
        assert_eq!(parse_mnt_point(&b).as_deref(), Some(&b"/a/b"[..]));
        // Kernel did not fill the field: no answer rather than a wrong one.
        b[OFF_MASK] = 0;
        assert_eq!(parse_mnt_point(&b), None);
        assert_eq!(parse_mnt_point(&b[..20]), None);
    }
}
