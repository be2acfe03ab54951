//! The 2025–26 additions to `open_tree`: `open_tree_attr(2)` (6.15), which opens or clones a tree
//! and applies mount attributes in the same call, and the `OPEN_TREE_NAMESPACE` flag (7.0),
//! which makes a new mount namespace holding a copy of the tree. Neither libc nor rustix wraps
//! them yet, so they are raw syscalls here.
//!
//! ABI, from the kernel source (fs/namespace.c, include/uapi/linux/mount.h):
//! - `SYSCALL_DEFINE5(open_tree_attr, int dfd, const char *filename, unsigned flags,
//!   struct mount_attr *uattr, size_t usize)`, number 467 on every architecture
//!   (arch/x86/entry/syscalls/syscall_64.tbl: `467 common open_tree_attr`). With
//!   `OPEN_TREE_CLONE` the clone may take a new idmap even if its source had one
//!   (`MOUNT_KATTR_IDMAP_REPLACE`); without it the call works on the mount itself, whose idmap
//!   is locked once set (the 6.18 fix, "open_tree_attr: do not allow id-mapping changes without
//!   OPEN_TREE_CLONE", Cc stable 6.15+).
//! - `OPEN_TREE_NAMESPACE = 1 << 1`; not with `OPEN_TREE_CLONE` (EINVAL); returns an nsfs fd of
//!   the new mount namespace. Before 7.0 `vfs_open_tree` refuses the unknown flag (EINVAL).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{SysError, SysResult};

/// `__NR_open_tree_attr`: new syscalls share one number on every architecture since 5.x.
const SYS_OPEN_TREE_ATTR: libc::c_long = 467;
/// include/uapi/linux/mount.h: `OPEN_TREE_CLONE (1 << 0)`, `OPEN_TREE_NAMESPACE (1 << 1)`
/// (7.0), `OPEN_TREE_CLOEXEC O_CLOEXEC`.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_NAMESPACE: libc::c_uint = 1 << 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;

/// How `open_tree_attr` reaches the tree it applies the idmap to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `OPEN_TREE_CLONE`: a new detached copy of the mount at the path.
    Clone,
    /// No clone: the mount the fd refers to (`AT_EMPTY_PATH`), changed in place.
    InPlace,
}

/// `open_tree_attr(dirfd, path, OPEN_TREE_CLOEXEC [| OPEN_TREE_CLONE] [| AT_EMPTY_PATH],
/// &{ .attr_set = MOUNT_ATTR_IDMAP [| MOUNT_ATTR_RDONLY], .userns_fd = userns }, sizeof)`:
/// a tree whose ids are mapped through `userns`, in one call. With [`Target::InPlace`] `path`
/// must be empty and `dirfd` the mount.
pub fn open_tree_attr_idmap(
    dirfd: BorrowedFd<'_>,
    path: &std::ffi::CStr,
    target: Target,
    userns: BorrowedFd<'_>,
    rdonly: bool,
) -> SysResult<OwnedFd> {
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
    let mut flags = OPEN_TREE_CLOEXEC;
    match target {
        Target::Clone => flags |= OPEN_TREE_CLONE,
        Target::InPlace => flags |= libc::AT_EMPTY_PATH as libc::c_uint,
    }
    // SAFETY: `path` is NUL-terminated, `attr` is a live, correctly sized `struct mount_attr`;
    // the kernel only reads both for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            SYS_OPEN_TREE_ATTR,
            dirfd.as_raw_fd(),
            path.as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    let call = || {
        let how = match target {
            Target::Clone => "OPEN_TREE_CLONE",
            Target::InPlace => "AT_EMPTY_PATH, no clone",
        };
        let ro = if rdonly { " | MOUNT_ATTR_RDONLY" } else { "" };
        format!("open_tree_attr({how}, MOUNT_ATTR_IDMAP{ro})")
    };
    owned_fd(rc, call)
}

/// `open_tree(dirfd, path, OPEN_TREE_NAMESPACE | OPEN_TREE_CLOEXEC)` (7.0): an nsfs fd of a new
/// mount namespace whose root is a copy of the mount at `path`.
pub fn open_tree_namespace(dirfd: BorrowedFd<'_>, path: &std::ffi::CStr) -> SysResult<OwnedFd> {
    let flags = OPEN_TREE_NAMESPACE | OPEN_TREE_CLOEXEC;
    // SAFETY: `path` is NUL-terminated and only read during the call.
    let rc = unsafe { libc::syscall(libc::SYS_open_tree, dirfd.as_raw_fd(), path.as_ptr(), flags) };
    owned_fd(rc, || {
        "open_tree(OPEN_TREE_NAMESPACE | OPEN_TREE_CLOEXEC)".into()
    })
}

fn owned_fd(rc: libc::c_long, call: impl FnOnce() -> String) -> SysResult<OwnedFd> {
    if rc < 0 {
        return Err(SysError::from_io(call, &std::io::Error::last_os_error()));
    }
    let raw = i32::try_from(rc)
        .map_err(|_| SysError::plain(call(), 0).context(format!("returned {rc}, not an fd")))?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_failed_call_names_how_it_reached_the_tree() {
        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        // A character device as a user namespace: refused whatever the kernel (EBADF, EINVAL,
        // or ENOSYS before 6.15), and the call reads the same.
        let e = open_tree_attr_idmap(null.as_fd(), c"", Target::InPlace, null.as_fd(), false)
            .unwrap_err();
        assert_eq!(
            e.call,
            "open_tree_attr(AT_EMPTY_PATH, no clone, MOUNT_ATTR_IDMAP)"
        );
        assert_ne!(e.errno, 0);
    }
}
