//! The new mount API (Linux 5.2+; idmapped mounts 5.12+): `open_tree`, `mount_setattr`,
//! `move_mount`, `fsopen`, `fsconfig`, `fsmount`. rustix covers all but `mount_setattr`, which
//! goes through `libc::syscall(SYS_mount_setattr, …)` with `libc::mount_attr`.
//!
//! Man pages: open_tree(2), mount_setattr(2), move_mount(2), fsopen(2), fsconfig(2), fsmount(2).

use std::fmt::Debug;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags};
use rustix::path::Arg;

use super::{SysError, SysResult};

/// `open_tree(dirfd, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC [| AT_RECURSIVE])`: a detached
/// copy of the mount at `path`, not yet in any mount table.
pub fn open_tree_clone<P: Arg + Debug + Copy>(
    dirfd: BorrowedFd<'_>,
    path: P,
    recursive: bool,
) -> SysResult<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    rustix::mount::open_tree(dirfd, path, flags).map_err(|e| {
        SysError::new(
            || {
                let rec = if recursive { " | AT_RECURSIVE" } else { "" };
                format!("open_tree(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC{rec})")
            },
            e,
        )
        .context(format!("path {path:?}"))
    })
}

/// `open_tree(dirfd, path, OPEN_TREE_CLOEXEC)`: an `O_PATH` handle on `path` itself (no clone,
/// no new mount).
pub fn open_tree_path<P: Arg + Debug + Copy>(dirfd: BorrowedFd<'_>, path: P) -> SysResult<OwnedFd> {
    rustix::mount::open_tree(dirfd, path, OpenTreeFlags::OPEN_TREE_CLOEXEC).map_err(|e| {
        SysError::new(|| "open_tree(OPEN_TREE_CLOEXEC)".into(), e).context(format!("path {path:?}"))
    })
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], &{ .attr_set = MOUNT_ATTR_IDMAP
/// [| MOUNT_ATTR_RDONLY], .userns_fd = userns }, sizeof)`: make the detached tree `fd` an
/// idmapped mount that maps ids through the user namespace `userns`.
pub fn mount_setattr_idmap(
    fd: BorrowedFd<'_>,
    userns: BorrowedFd<'_>,
    rdonly: bool,
    recursive: bool,
) -> SysResult<()> {
    let mut attr_set = libc::MOUNT_ATTR_IDMAP;
    if rdonly {
        attr_set |= libc::MOUNT_ATTR_RDONLY;
    }
    let attr = libc::mount_attr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: the path is a valid NUL-terminated empty string, `attr` is a live, correctly sized
    // `struct mount_attr`, and the kernel only reads both for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let errno = std::io::Error::last_os_error();
    Err(SysError::from_io(
        || {
            let rec = if recursive { " | AT_RECURSIVE" } else { "" };
            let ro = if rdonly { " | MOUNT_ATTR_RDONLY" } else { "" };
            format!("mount_setattr(AT_EMPTY_PATH{rec}, MOUNT_ATTR_IDMAP{ro})")
        },
        &errno,
    ))
}

/// `move_mount(fd, "", to_dirfd, to_path, MOVE_MOUNT_F_EMPTY_PATH)`: attach the detached tree
/// `fd` at `to_path`. One mount-table attachment.
pub fn move_mount_attach<P: Arg + Debug + Copy>(
    fd: BorrowedFd<'_>,
    to_dirfd: BorrowedFd<'_>,
    to_path: P,
) -> SysResult<()> {
    rustix::mount::move_mount(
        fd,
        c"",
        to_dirfd,
        to_path,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| {
        SysError::new(|| "move_mount(MOVE_MOUNT_F_EMPTY_PATH)".into(), e)
            .context(format!("to {to_path:?}"))
    })
}

/// `fsopen(fstype, FSOPEN_CLOEXEC)`: a filesystem context to configure.
pub fn fsopen(fstype: &str) -> SysResult<OwnedFd> {
    rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| SysError::new(|| format!("fsopen({fstype:?}, FSOPEN_CLOEXEC)"), e))
}

/// `fsconfig(fs_fd, FSCONFIG_SET_STRING, key, value, 0)`.
pub fn fsconfig_set_string<V: Arg + Debug + Copy>(
    fs_fd: BorrowedFd<'_>,
    key: &str,
    value: V,
) -> SysResult<()> {
    rustix::mount::fsconfig_set_string(fs_fd, key, value).map_err(|e| {
        SysError::new(|| format!("fsconfig(FSCONFIG_SET_STRING, {key:?})"), e)
            .context(format!("value {value:?}"))
    })
}

/// `fsconfig(fs_fd, FSCONFIG_SET_FLAG, key, NULL, 0)`: a flag parameter (`"ro"`: a read-only
/// superblock, which a read-only block device needs before 6.12 opens it without write access).
pub fn fsconfig_set_flag(fs_fd: BorrowedFd<'_>, key: &str) -> SysResult<()> {
    rustix::mount::fsconfig_set_flag(fs_fd, key)
        .map_err(|e| SysError::new(|| format!("fsconfig(FSCONFIG_SET_FLAG, {key:?})"), e))
}

/// What kind of descriptor a `FSCONFIG_SET_FD` hands over: the step names it, because the
/// kernel's answer depends on it (a detached idmapped tree is one feature, an `O_PATH` handle on
/// a directory another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    /// A detached, idmapped `open_tree(OPEN_TREE_CLONE)` tree.
    DetachedIdmappedLayer,
    /// An `O_PATH` handle from `open_tree` without a clone (no new mount).
    OPath,
}

impl FdKind {
    fn as_str(self) -> &'static str {
        match self {
            FdKind::DetachedIdmappedLayer => "detached idmapped layer",
            FdKind::OPath => "O_PATH fd",
        }
    }
}

/// `fsconfig(fs_fd, FSCONFIG_SET_FD, key, NULL, fd)`: hand the kernel a file descriptor as a
/// parameter (overlayfs `lowerdir+` takes an `open_tree` fd since 6.13). The call text names the
/// key and the kind of fd, never its number (it differs from run to run).
pub fn fsconfig_set_fd(
    fs_fd: BorrowedFd<'_>,
    key: &str,
    fd: BorrowedFd<'_>,
    kind: FdKind,
) -> SysResult<()> {
    rustix::mount::fsconfig_set_fd(fs_fd, key, fd).map_err(|e| {
        SysError::new(
            || format!("fsconfig(FSCONFIG_SET_FD, {key:?}, {})", kind.as_str()),
            e,
        )
    })
}

/// `fsconfig(fs_fd, FSCONFIG_CMD_CREATE, NULL, NULL, 0)`: create the superblock.
pub fn fsconfig_create(fs_fd: BorrowedFd<'_>) -> SysResult<()> {
    rustix::mount::fsconfig_create(fs_fd)
        .map_err(|e| SysError::new(|| "fsconfig(FSCONFIG_CMD_CREATE)".to_owned(), e))
}

/// `fsconfig(fs_fd, FSCONFIG_CMD_CREATE_EXCL, NULL, NULL, 0)` (6.6+): create a superblock that
/// must not be shared with an existing one.
pub fn fsconfig_create_excl(fs_fd: BorrowedFd<'_>) -> SysResult<()> {
    rustix::mount::fsconfig_create_exclusive(fs_fd)
        .map_err(|e| SysError::new(|| "fsconfig(FSCONFIG_CMD_CREATE_EXCL)".to_owned(), e))
}

/// `fsmount(fs_fd, FSMOUNT_CLOEXEC, attr)`: a detached mount of the created superblock.
pub fn fsmount(fs_fd: BorrowedFd<'_>, rdonly: bool) -> SysResult<OwnedFd> {
    let attr = if rdonly {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    rustix::mount::fsmount(fs_fd, FsMountFlags::FSMOUNT_CLOEXEC, attr).map_err(|e| {
        SysError::new(
            || {
                let ro = if rdonly { "MOUNT_ATTR_RDONLY" } else { "0" };
                format!("fsmount(FSMOUNT_CLOEXEC, {ro})")
            },
            e,
        )
    })
}

/// `close(fd)` of a detached mount tree. Closing the last reference to a detached tree
/// dissolves it, which takes the mount locks, so strategies time it like a mount call.
pub fn close_tree(fd: OwnedFd) {
    drop(fd);
}

/// `STATX_MNT_ID_UNIQUE` (6.8+, include/uapi/linux/stat.h): a mount's 64-bit id, allocated
/// from one counter and never reused.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// `statx(dirfd, path, AT_SYMLINK_NOFOLLOW [| AT_EMPTY_PATH], STATX_MNT_ID_UNIQUE)`: the unique
/// id of the mount `path` lies on (with an empty path: the mount `dirfd` refers to, e.g. a
/// detached tree). `None` when the kernel has no unique mount ids (before 6.8 it leaves the
/// mask bit clear).
pub fn mount_id_unique<P: Arg + Debug + Copy>(
    dirfd: BorrowedFd<'_>,
    path: P,
    empty_path: bool,
) -> SysResult<Option<u64>> {
    let mut flags = rustix::fs::AtFlags::SYMLINK_NOFOLLOW;
    if empty_path {
        flags |= rustix::fs::AtFlags::EMPTY_PATH;
    }
    let mask = rustix::fs::StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE);
    let st = rustix::fs::statx(dirfd, path, flags, mask).map_err(|e| {
        SysError::new(|| "statx(STATX_MNT_ID_UNIQUE)".into(), e).context(format!("path {path:?}"))
    })?;
    Ok((st.stx_mask & STATX_MNT_ID_UNIQUE != 0).then_some(st.stx_mnt_id))
}

/// Borrow helper for the current working directory as a `dirfd`.
pub fn cwd() -> BorrowedFd<'static> {
    rustix::fs::CWD
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_failed_call_reads_the_same_whatever_the_fd() {
        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        let mut calls = Vec::new();
        // Two contexts and two distinct fds: the failure must read the same both times.
        let dup = null.try_clone().expect("dup /dev/null");
        for fd in [null.as_fd(), dup.as_fd()] {
            let fs = fsopen("overlay");
            let reason = format!("fsopen(\"overlay\") needs root and overlay: {fs:?}");
            if !crate::testing::require(
                fs.is_ok(),
                "a_failed_call_reads_the_same_whatever_the_fd",
                &reason,
            ) {
                return;
            }
            let fs = fs.expect("checked");
            match fsconfig_set_fd(fs.as_fd(), "lowerdir+", fd, FdKind::OPath) {
                // A kernel that takes a character device as a layer fd: nothing to compare.
                Ok(()) => return,
                Err(e) => calls.push(e.call),
            }
        }
        assert_eq!(calls[0], calls[1]);
        assert_eq!(
            calls[0],
            "fsconfig(FSCONFIG_SET_FD, \"lowerdir+\", O_PATH fd)"
        );
        let e = mount_setattr_idmap(null.as_fd(), dup.as_fd(), true, false).unwrap_err();
        assert_eq!(
            e.call,
            "mount_setattr(AT_EMPTY_PATH, MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY)"
        );
    }
}
