//! The classic mount calls: `mount(2)` for overlayfs and propagation changes, `umount2(2)`.
//! Relative paths resolve against the calling thread's working directory; the strategies give
//! each worker thread its own (see [`super::ns::unshare_fs`]) so option strings stay short.

use std::ffi::CStr;
use std::fmt::Debug;

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::path::Arg;

use super::{SysError, SysResult};

/// `mount("overlay", target, "overlay", rdonly ? MS_RDONLY : 0, data)`. One attachment.
pub fn mount_overlay<P: Arg + Debug + Copy>(target: P, data: &CStr, rdonly: bool) -> SysResult<()> {
    let flags = if rdonly {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    rustix::mount::mount(c"overlay", target, c"overlay", flags, data).map_err(|e| {
        SysError::new(
            || {
                let ro = if rdonly { "MS_RDONLY" } else { "0" };
                format!("mount(\"overlay\", {target:?}, \"overlay\", {ro}, {data:?})")
            },
            e,
        )
    })
}

/// `umount2(target, 0)`. One detachment.
pub fn umount<P: Arg + Debug + Copy>(target: P) -> SysResult<()> {
    rustix::mount::unmount(target, UnmountFlags::empty())
        .map_err(|e| SysError::new(|| format!("umount2({target:?}, 0)"), e))
}

/// `umount2(target, MNT_DETACH)`: lazy detach, for cleanup paths only.
pub fn umount_detach<P: Arg + Debug + Copy>(target: P) -> SysResult<()> {
    rustix::mount::unmount(target, UnmountFlags::DETACH)
        .map_err(|e| SysError::new(|| format!("umount2({target:?}, MNT_DETACH)"), e))
}

/// `mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)`: stop every mount in this namespace from
/// propagating to or from the namespace it was copied from.
pub fn make_rprivate_root() -> SysResult<()> {
    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| {
        SysError::new(
            || "mount(NULL, \"/\", NULL, MS_REC | MS_PRIVATE, NULL)".into(),
            e,
        )
    })
}
