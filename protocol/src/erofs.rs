//! erofs layers: where the harness puts a boot's layer images, and how the agent mounted them.
//!
//! A cell on `erofs` has each image layer as an erofs image of its own (containerd's erofs
//! snapshotter's shape), made on the host with `mkfs.erofs` from the agent's own layer tree
//! (`mmx-agent layers`), and carried as files on the scratch disk's ext4
//! ([`crate::Filesystem::carrier`]). The agent mounts image `n` read-only at the layer's
//! directory, then runs the strategy over those mounts.

use serde::{Deserialize, Serialize};

use crate::Evidence;

/// The directory below the scratch dir that holds the images, `<n>.erofs` for n = 1..=256.
pub const IMAGES_DIR: &str = "erofs-layers";

/// Layer `n`'s image file name in [`IMAGES_DIR`] (layer 1 is the bottom, as in the agent's
/// layer tree).
pub fn image_name(n: u32) -> String {
    format!("{n}.erofs")
}

/// How the agent mounted the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErofsBacking {
    /// `fsopen("erofs")` with the image file as `source` (6.12+, CONFIG_EROFS_FS_BACKED_BY_FILE).
    File,
    /// A read-only loop device per image (`LOOP_CONFIGURE`), the device as `source`.
    Loop,
}

impl ErofsBacking {
    pub fn as_str(self) -> &'static str {
        match self {
            ErofsBacking::File => "file",
            ErofsBacking::Loop => "loop",
        }
    }
}

/// What a mounts result says about its erofs layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErofsLayers {
    pub backing: ErofsBacking,
    /// Why a file-backed mount was not used, when it was tried and refused (the kernel's
    /// answer: `ENOTBLK` from a kernel that takes block devices only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_refused: Option<Evidence>,
    /// The layer mounts made before the run's window (one per layer, not on the start path).
    pub mounts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backings_use_the_documented_spellings() {
        for b in [ErofsBacking::File, ErofsBacking::Loop] {
            let json = serde_json::to_string(&b).unwrap();
            assert_eq!(json, format!("\"{}\"", b.as_str()));
        }
        assert_eq!(image_name(12), "12.erofs");
    }
}
