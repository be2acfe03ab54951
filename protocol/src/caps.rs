//! Kernel feature probes: what the kernel under test can do, each answer with its evidence.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Evidence;

/// Kernel feature probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    pub kernel_release: String,
    /// Filesystem the probes ran on (the layers' filesystem), as the agent measured it.
    pub probed_fs: String,
    /// The plan's scratch disk the probes ran on, when the plan has disks (a guest serving
    /// several filesystems probes each). It names the boot the answers belong to: erofs's disk
    /// measures as ext4 (its images' carrier), so `probed_fs` alone cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<crate::Filesystem>,
    pub probes: Vec<ProbeResult>,
}

impl Capabilities {
    pub fn get(&self, feature: Feature) -> Option<&ProbeResult> {
        self.probes.iter().find(|p| p.feature == feature)
    }

    pub fn supports(&self, feature: Feature) -> bool {
        self.get(feature).is_some_and(|p| p.supported)
    }
}

/// Kernel features mmx probes for. The versions below say when each arrived upstream; they are
/// hints only, never used to decide (distributions backport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// fsopen/fsconfig/fsmount/move_mount/open_tree (5.2).
    NewMountApi,
    /// mount_setattr(MOUNT_ATTR_IDMAP) on the layers' filesystem (5.12; btrfs 5.15; tmpfs 6.3).
    IdmapMount,
    /// overlayfs over idmapped lower layers, checked by ids seen through the merged view (5.19).
    OverlayOverIdmap,
    /// fsconfig(FSCONFIG_CMD_CREATE_EXCL) (6.6).
    CreateExcl,
    /// fsconfig(FSCONFIG_SET_STRING, "lowerdir+", path) (6.7).
    LowerdirPlusString,
    /// listmount(2) (6.8).
    Listmount,
    /// statmount(2) (6.8).
    Statmount,
    /// fsconfig(FSCONFIG_SET_FD, "lowerdir+", open_tree fd) (6.13; detached trees 6.15).
    FsconfigSetFdLayer,
    /// fsconfig(FSCONFIG_SET_FD, "upperdir"/"workdir", an `O_PATH` fd from `open_tree` without
    /// a clone) (6.13): overlay's upper and work dirs handed as fds, not paths.
    FsconfigSetFdUpperWork,
    /// fanotify FAN_MNT_ATTACH/DETACH mount events (6.15).
    FanotifyMountEvents,
    /// `open_tree_attr(OPEN_TREE_CLONE, &{MOUNT_ATTR_IDMAP, userns})` (6.15): a detached
    /// idmapped tree in one call, judged by the ids seen through it.
    OpenTreeAttr,
    /// The idmap of an already idmapped detached mount cannot be changed: `mount_setattr` on
    /// it, and `open_tree_attr` without a clone on it, are refused (EPERM). A kernel that
    /// allows either carries [`ProbeWarning::IdmapChangeAllowed`] (6.15–6.17 without the 6.18
    /// fix let `open_tree_attr` without `OPEN_TREE_CLONE` through).
    OpenTreeAttrIdmapLocked,
    /// Type 2, detached: `MOUNT_ATTR_IDMAP` on an overlay fresh from `fsmount`, never
    /// attached. overlayfs has no `FS_ALLOW_IDMAP` on the kernels mmx knows (EINVAL).
    IdmapOverlay,
    /// Type 2, attached (the image-volume case): `open_tree(OPEN_TREE_CLONE)` of a mounted
    /// overlay, then `mount_setattr(MOUNT_ATTR_IDMAP)` on the clone.
    IdmapOverlayAttached,
    /// `open_tree(OPEN_TREE_NAMESPACE)` (7.0): a new mount namespace holding a copy of the
    /// tree, as an nsfs fd.
    OpenTreeNamespace,
    /// `statmount(STATMOUNT_BY_FD)` (7.0) of a detached mount, by its fd.
    StatmountByFd,
}

impl Feature {
    pub const ALL: [Feature; 16] = [
        Feature::NewMountApi,
        Feature::IdmapMount,
        Feature::OverlayOverIdmap,
        Feature::CreateExcl,
        Feature::LowerdirPlusString,
        Feature::Listmount,
        Feature::Statmount,
        Feature::FsconfigSetFdLayer,
        Feature::FsconfigSetFdUpperWork,
        Feature::FanotifyMountEvents,
        Feature::OpenTreeAttr,
        Feature::OpenTreeAttrIdmapLocked,
        Feature::IdmapOverlay,
        Feature::IdmapOverlayAttached,
        Feature::OpenTreeNamespace,
        Feature::StatmountByFd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Feature::NewMountApi => "new-mount-api",
            Feature::IdmapMount => "idmap-mount",
            Feature::OverlayOverIdmap => "overlay-over-idmap",
            Feature::CreateExcl => "create-excl",
            Feature::LowerdirPlusString => "lowerdir-plus-string",
            Feature::Listmount => "listmount",
            Feature::Statmount => "statmount",
            Feature::FsconfigSetFdLayer => "fsconfig-set-fd-layer",
            Feature::FsconfigSetFdUpperWork => "fsconfig-set-fd-upper-work",
            Feature::FanotifyMountEvents => "fanotify-mount-events",
            Feature::OpenTreeAttr => "open-tree-attr",
            Feature::OpenTreeAttrIdmapLocked => "open-tree-attr-idmap-locked",
            Feature::IdmapOverlay => "idmap-overlay",
            Feature::IdmapOverlayAttached => "idmap-overlay-attached",
            Feature::OpenTreeNamespace => "open-tree-namespace",
            Feature::StatmountByFd => "statmount-by-fd",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One probe's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub feature: Feature,
    pub supported: bool,
    /// When not supported: the step that failed and its errno. When supported: may note how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// A kernel behaviour worth a warning wherever the probe is shown (not a failure of the
    /// probe: the kernel did something it should not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<ProbeWarning>,
}

/// What a probe saw that a kernel should not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeWarning {
    /// The idmap of an already idmapped detached mount was changed in place (the bug fixed for
    /// 6.18 and 6.15+ stable: `open_tree_attr` without `OPEN_TREE_CLONE` replaced it).
    IdmapChangeAllowed,
}

impl ProbeWarning {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeWarning::IdmapChangeAllowed => "idmap-change-allowed",
        }
    }

    /// One line for reports.
    pub fn message(self) -> &'static str {
        match self {
            ProbeWarning::IdmapChangeAllowed => {
                "the kernel changed the idmap of an already idmapped detached mount"
            }
        }
    }
}

impl fmt::Display for ProbeWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
