//! Kernel feature probes: what the kernel under test can do, each answer with its evidence.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Evidence;

/// Kernel feature probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    pub kernel_release: String,
    /// Filesystem the probes ran on (the layers' filesystem).
    pub probed_fs: String,
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
}

impl Feature {
    pub const ALL: [Feature; 10] = [
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
}
