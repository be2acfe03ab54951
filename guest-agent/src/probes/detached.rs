//! Probes of what 2025–26 kernels added around detached idmapped trees: `open_tree_attr` (6.15)
//! and whether the idmap it sets stays locked (the 6.18 fix), idmapping an overlay itself
//! ("Type 2": a detached one from `fsmount` and an attached one, the image-volume case),
//! `OPEN_TREE_NAMESPACE` and `STATMOUNT_BY_FD` (7.0). Like every probe, each tries the feature
//! for real and keeps the refusing call and its errno; ids are judged by what a stat sees.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use protocol::{Evidence, Feature, ProbeResult, ProbeWarning};

use super::{detach, expect_ids, expect_mapped_layers, ids_at, layer, mapped, Setup, PROBE_BASE};
use crate::sys::open_tree_attr::{open_tree_attr_idmap, open_tree_namespace, Target};
use crate::sys::userns::UserNs;
use crate::sys::{legacy, mount_api as api, table, SysError, SysResult};

/// Host id that the second user namespace (the one a locked idmap must refuse) maps 0 to.
const OTHER_BASE: u32 = 600_000_000;

/// The two probe layers stacked by path, top first (relative to the probe directory), as an
/// fsconfig value and as mount(2) options.
const LOWERS: &std::ffi::CStr = c"snapshots/2/fs:snapshots/1/fs";
const LOWERS_OPTION: &std::ffi::CStr = c"lowerdir=snapshots/2/fs:snapshots/1/fs";

fn attr_clone(s: &Setup, i: usize) -> SysResult<OwnedFd> {
    open_tree_attr_idmap(
        api::cwd(),
        layer(s, i).as_c_str(),
        Target::Clone,
        s.userns.fd(),
        true,
    )
}

/// `open-tree-attr`: one call gives a detached tree whose ids read mapped.
pub(super) fn open_tree_attr(s: &Setup) -> SysResult<Option<String>> {
    let fd = attr_clone(s, 0)?;
    let want = mapped(PROBE_BASE, 1);
    expect_ids(
        fd.as_fd(),
        "layer-1",
        want,
        "ids through the open_tree_attr tree:",
    )?;
    Ok(Some(format!(
        "layer-1 shows {}:{} through the detached tree",
        want.0, want.1
    )))
}

/// One attempt to change the idmap of an idmapped detached mount, and what the kernel said.
struct Attempt {
    call: String,
    result: Result<(), SysError>,
}

/// `open-tree-attr-idmap-locked`: on a tree `open_tree_attr` idmapped, `mount_setattr` with
/// another user namespace and `open_tree_attr` without a clone (in place) must both be refused
/// with EPERM (`can_idmap_mount`: `is_idmapped_mnt` without `MOUNT_KATTR_IDMAP_REPLACE`). A
/// call that goes through is the bug the 6.18 fix closed: flagged, not just unsupported.
pub(super) fn idmap_locked(s: &Setup) -> ProbeResult {
    let feature = Feature::OpenTreeAttrIdmapLocked;
    let r = (|| -> SysResult<ProbeResult> {
        let other = UserNs::create(OTHER_BASE, 65536, std::sync::Arc::new(vec![]))?;
        let tree = attr_clone(s, 0)?;
        let attempts = [
            Attempt {
                call: "mount_setattr(MOUNT_ATTR_IDMAP) on the idmapped tree".into(),
                result: api::mount_setattr_idmap(tree.as_fd(), other.fd(), true, false),
            },
            Attempt {
                call: "open_tree_attr(AT_EMPTY_PATH, no clone, MOUNT_ATTR_IDMAP) on it".into(),
                result: open_tree_attr_idmap(tree.as_fd(), c"", Target::InPlace, other.fd(), true)
                    .map(drop),
            },
        ];
        let seen = ids_at(tree.as_fd(), "layer-1");
        drop(other);
        Ok(judge_locked(&attempts, seen))
    })();
    r.unwrap_or_else(|e| {
        let mut ev = e.evidence();
        ev.step = e.call.clone();
        ProbeResult {
            feature,
            supported: false,
            evidence: Some(ev),
            warning: None,
        }
    })
}

/// The verdict from the attempts and the ids seen afterwards. Pure.
fn judge_locked(attempts: &[Attempt], seen: SysResult<(u32, u32)>) -> ProbeResult {
    let feature = Feature::OpenTreeAttrIdmapLocked;
    let first = mapped(PROBE_BASE, 1);
    let seen_text = match &seen {
        Ok((u, g)) => format!(
            "layer-1 reads {u}:{g} (first idmap {}:{})",
            first.0, first.1
        ),
        Err(e) => e.to_string(),
    };
    let allowed: Vec<&str> = attempts
        .iter()
        .filter(|a| a.result.is_ok())
        .map(|a| a.call.as_str())
        .collect();
    if !allowed.is_empty() {
        return ProbeResult {
            feature,
            supported: false,
            evidence: Some(
                Evidence::new(format!("allowed: {}", allowed.join("; "))).with_detail(seen_text),
            ),
            warning: Some(ProbeWarning::IdmapChangeAllowed),
        };
    }
    // Refused, but for another reason than the lock: the probe could not show the lock.
    if let Some((a, e)) = attempts
        .iter()
        .filter_map(|a| a.result.as_ref().err().map(|e| (a, e)))
        .find(|(_, e)| e.errno != libc::EPERM)
    {
        let mut ev = e.evidence();
        ev.step = format!("{} (not the lock's EPERM)", a.call);
        return ProbeResult {
            feature,
            supported: false,
            evidence: Some(ev),
            warning: None,
        };
    }
    if seen.as_ref().ok() != Some(&first) {
        return ProbeResult {
            feature,
            supported: false,
            evidence: Some(Evidence::new("ids after refused changes").with_detail(seen_text)),
            warning: None,
        };
    }
    ProbeResult {
        feature,
        supported: true,
        evidence: Some(
            Evidence::new("ok").with_detail(format!("both refused with EPERM; {seen_text}")),
        ),
        warning: None,
    }
}

/// `idmap-overlay`: `MOUNT_ATTR_IDMAP` on a detached overlay fresh from `fsmount`. Its layers
/// are plain, so through an idmapped overlay their ids must read shifted by the mapping, as
/// through idmapped layers. overlayfs's
/// `file_system_type` has no `FS_ALLOW_IDMAP` on the kernels mmx knows, so `can_idmap_mount`
/// answers EINVAL at `mount_setattr`; a kernel that takes it is judged by the ids seen.
pub(super) fn idmap_overlay_detached(s: &Setup) -> SysResult<Option<String>> {
    let fs = api::fsopen("overlay")?;
    api::fsconfig_set_string(fs.as_fd(), "lowerdir", LOWERS)?;
    api::fsconfig_create(fs.as_fd())?;
    let m = api::fsmount(fs.as_fd(), true)?;
    api::mount_setattr_idmap(m.as_fd(), s.userns.fd(), true, false)?;
    expect_mapped_layers(m.as_fd(), "ids through the idmapped detached overlay:")
}

/// `idmap-overlay-attached`: the image-volume case. An overlay mounted at `m`, then
/// `open_tree(OPEN_TREE_CLONE)` of it and `mount_setattr(MOUNT_ATTR_IDMAP)` on the clone.
pub(super) fn idmap_overlay_attached(s: &Setup) -> SysResult<Option<String>> {
    legacy::mount_overlay(c"m", LOWERS_OPTION, true)?;
    let r = (|| {
        let clone = api::open_tree_clone(api::cwd(), c"m", false)?;
        api::mount_setattr_idmap(clone.as_fd(), s.userns.fd(), true, false)?;
        expect_mapped_layers(clone.as_fd(), "ids through the idmapped overlay clone:")
    })();
    detach(&[c"m"]);
    r
}

/// `open-tree-namespace`: `OPEN_TREE_NAMESPACE` answers with an nsfs fd of a mount namespace
/// that is not the caller's.
pub(super) fn open_tree_namespace_probe(s: &Setup) -> SysResult<Option<String>> {
    let ns = open_tree_namespace(api::cwd(), layer(s, 0).as_c_str())?;
    let link = |p: String| {
        std::fs::read_link(&p)
            .map(|l| l.to_string_lossy().into_owned())
            .map_err(|e| SysError::from_io(|| "readlink(an nsfs fd)".into(), &e).context(p.clone()))
    };
    let theirs = link(format!("/proc/thread-self/fd/{}", ns.as_raw_fd()))?;
    let ours = link("/proc/thread-self/ns/mnt".into())?;
    if !theirs.starts_with("mnt:[") || theirs == ours {
        return Err(SysError::plain(
            "open_tree(OPEN_TREE_NAMESPACE): the fd is no new mount namespace",
            0,
        )
        .context(format!("fd links to {theirs}, the caller's is {ours}")));
    }
    Ok(Some("an nsfs fd of a new mount namespace".into()))
}

/// `statmount-by-fd`: statmount by fd, first of the probe directory's own (attached) mount, then
/// of a detached clone, the case the feature is for; the superblock it names must be the one
/// `fstatfs` sees through the same fd. Where the flag works on an attached mount but not on a
/// detached one, the step says so (7.3.4 answers ENOENT there, observed: with the flag
/// `do_statmount` takes the fd's mount namespace, an anonymous one for a detached tree, and
/// looks up a root in it before answering).
pub(super) fn statmount_by_fd(s: &Setup) -> SysResult<Option<String>> {
    let here = rustix::fs::open(
        c".",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| SysError::new(|| "open(probe directory, O_PATH)".into(), e))?;
    let attached = same_superblock(here.as_fd())?;
    let tree = api::open_tree_clone(api::cwd(), layer(s, 0).as_c_str(), false)?;
    let detached = same_superblock(tree.as_fd()).map_err(|mut e| {
        e.call.push_str(" of a detached tree");
        e.context(format!(
            "an attached mount's fd answered (mount id {attached})"
        ))
    })?;
    Ok(Some(format!(
        "attached mount {attached} and detached clone {detached}: sb_magic as fstatfs"
    )))
}

/// statmount by `fd`, checked against `fstatfs(fd)`: the mount's unique id.
fn same_superblock(fd: std::os::fd::BorrowedFd<'_>) -> SysResult<u64> {
    let basics = table::statmount_by_fd(fd)?;
    let st =
        rustix::fs::fstatfs(fd).map_err(|e| SysError::new(|| "fstatfs(the same fd)".into(), e))?;
    // f_type's width differs between architectures; a magic is 32 bits.
    let magic = st.f_type as u64 & 0xffff_ffff;
    if basics.sb_magic != magic || basics.mnt_id == 0 {
        return Err(
            SysError::plain("statmount(STATMOUNT_BY_FD) against fstatfs", 0).context(format!(
                "sb_magic {:#x} (fstatfs {magic:#x}), mnt_id {}",
                basics.sb_magic, basics.mnt_id
            )),
        );
    }
    Ok(basics.mnt_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{layer_gid, layer_uid};

    fn refused(errno: i32) -> Result<(), SysError> {
        Err(SysError::plain("call", errno))
    }

    fn attempts(a: Result<(), SysError>, b: Result<(), SysError>) -> [Attempt; 2] {
        [
            Attempt {
                call: "mount_setattr".into(),
                result: a,
            },
            Attempt {
                call: "open_tree_attr in place".into(),
                result: b,
            },
        ]
    }

    #[test]
    fn the_lock_holds_only_when_both_are_refused_with_eperm_and_ids_stay() {
        let first = mapped(PROBE_BASE, 1);
        let ok = judge_locked(
            &attempts(refused(libc::EPERM), refused(libc::EPERM)),
            Ok(first),
        );
        assert!(ok.supported && ok.warning.is_none(), "{ok:?}");

        // The unfixed 6.15-6.17: open_tree_attr without a clone replaced the idmap.
        let other = (OTHER_BASE + layer_uid(1), OTHER_BASE + layer_gid(1));
        let bug = judge_locked(&attempts(refused(libc::EPERM), Ok(())), Ok(other));
        assert!(!bug.supported, "{bug:?}");
        assert_eq!(bug.warning, Some(ProbeWarning::IdmapChangeAllowed));
        let ev = bug.evidence.expect("evidence");
        assert!(ev.step.contains("open_tree_attr in place"), "{ev:?}");

        // Refused for another reason: not shown to be locked, and no warning.
        let other_errno = judge_locked(
            &attempts(refused(libc::EPERM), refused(libc::EINVAL)),
            Ok(first),
        );
        assert!(!other_errno.supported && other_errno.warning.is_none());
        assert_eq!(
            other_errno.evidence.and_then(|e| e.errno),
            Some(libc::EINVAL)
        );

        // Refused, yet the ids moved: not locked either.
        let moved = judge_locked(
            &attempts(refused(libc::EPERM), refused(libc::EPERM)),
            Ok(other),
        );
        assert!(!moved.supported && moved.warning.is_none());
    }
}
