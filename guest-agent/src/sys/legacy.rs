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
        // The step names the option keys, not their values: the lowerdir list grows with the
        // layer count and holds run-specific paths.
        SysError::new(
            || {
                let ro = if rdonly { "MS_RDONLY" } else { "0" };
                format!(
                    "mount(\"overlay\", \"overlay\", {ro}, \"{}\")",
                    option_keys(data)
                )
            },
            e,
        )
        .context(format!("target {target:?}, options {}", shorten(data, 160)))
    })
}

/// `umount2(target, 0)`. One detachment.
pub fn umount<P: Arg + Debug + Copy>(target: P) -> SysResult<()> {
    rustix::mount::unmount(target, UnmountFlags::empty())
        .map_err(|e| SysError::new(|| "umount2(0)".into(), e).context(format!("target {target:?}")))
}

/// `umount2(target, MNT_DETACH)`: lazy detach, for cleanup paths only.
pub fn umount_detach<P: Arg + Debug + Copy>(target: P) -> SysResult<()> {
    rustix::mount::unmount(target, UnmountFlags::DETACH).map_err(|e| {
        SysError::new(|| "umount2(MNT_DETACH)".into(), e).context(format!("target {target:?}"))
    })
}

/// `mount("tmpfs", target, "tmpfs", 0, "mode=0755")`: a scratch filesystem of the agent's own
/// (the lock benchmark's private trees, the storm's padding). One attachment.
pub fn mount_tmpfs<P: Arg + Debug + Copy>(target: P) -> SysResult<()> {
    rustix::mount::mount("tmpfs", target, "tmpfs", MountFlags::empty(), c"mode=0755").map_err(|e| {
        SysError::new(|| "mount(\"tmpfs\", \"tmpfs\", 0, \"mode=0755\")".into(), e)
            .context(format!("target {target:?}"))
    })
}

/// `mount(source, target, NULL, MS_BIND, NULL)`. One attachment.
pub fn mount_bind<S: Arg + Debug + Copy, P: Arg + Debug + Copy>(
    source: S,
    target: P,
) -> SysResult<()> {
    rustix::mount::mount_bind(source, target).map_err(|e| {
        SysError::new(|| "mount(MS_BIND)".into(), e)
            .context(format!("source {source:?}, target {target:?}"))
    })
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

/// The keys of a mount option string, values dropped: `lowerdir=a:b,upperdir=u` gives
/// `lowerdir=…,upperdir=…`.
fn option_keys(data: &CStr) -> String {
    data.to_string_lossy()
        .split(',')
        .map(|opt| match opt.split_once('=') {
            Some((k, _)) => format!("{k}=…"),
            None => opt.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `data` as text, cut to about `max` characters.
fn shorten(data: &CStr, max: usize) -> String {
    let s = data.to_string_lossy();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{:?}… ({} bytes)", &s[..i], s.len()),
        None => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_step_names_keys_not_values() {
        assert_eq!(
            option_keys(c"lowerdir=l/2:l/1,upperdir=u,workdir=w"),
            "lowerdir=…,upperdir=…,workdir=…"
        );
        assert_eq!(option_keys(c"lowerdir=u:l/0,ro"), "lowerdir=…,ro");
        assert_eq!(shorten(c"abcdef", 3), "\"abc\"… (6 bytes)");
        assert_eq!(shorten(c"abc", 3), "\"abc\"");
    }
}
