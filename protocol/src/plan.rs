//! The plan: what the harness asks one agent invocation (a guest boot, a host visit) to do.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::limits::{self, LimitError};
use crate::lockbench;

/// Everything one agent invocation (one guest boot, one host visit) must do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub schema_version: u32,
    /// Free-form id of the boot or host visit, echoed in logs.
    pub boot_id: String,
    /// Where the agent creates layers and mounts. In a guest: the scratch disk's mount point.
    /// The agent never touches anything outside it.
    pub scratch_dir: PathBuf,
    /// In a guest: the scratch disk to mount at `scratch_dir` (None: use `scratch_dir` as is).
    #[serde(default)]
    pub scratch_disk: Option<ScratchDisk>,
    /// Kernel modules to load before anything else, in order (paths inside the initramfs).
    #[serde(default)]
    pub modules: Vec<PathBuf>,
    /// Run the kernel feature probes and report them as [`AgentEvent::Capabilities`].
    #[serde(default = "yes")]
    pub probe: bool,
    /// The work, one item per matrix cell.
    pub items: Vec<PlanItem>,
}

fn yes() -> bool {
    true
}

/// A block device holding the layers' filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScratchDisk {
    /// Device node, e.g. `/dev/vda`.
    pub device: PathBuf,
    pub filesystem: Filesystem,
}

/// One cell's worth of work (one repeat of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanItem {
    /// Index of the item in the plan, unique: the agent echoes it in [`crate::CellResult::item`],
    /// so the harness knows which cell *and repeat* a result answers, and refuses a second one.
    pub item: u32,
    /// Stable, readable cell id, e.g. `debian-6.12/2s2c2t-numa2/ext4/per-layer-L50-C20`.
    pub cell_id: String,
    pub scenario: Scenario,
    /// Seconds after which the agent abandons this item and reports `timeout` for it.
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// What a cell measures.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Scenario {
    /// Build idmapped overlay rootfses with one strategy.
    Mounts(MountsScenario),
    /// The lock benchmark (see [`lockbench`]).
    Lockbench(lockbench::LockbenchScenario),
}

impl Scenario {
    /// Short readable label used as the last part of a cell id.
    pub fn label(&self) -> String {
        self.key().to_string()
    }

    /// What identifies the scenario among a matrix's cells (and across runs, for `mmx compare`):
    /// every parameter of a mounts run, the bench and optional name of a lock benchmark (its
    /// windows and sweeps may change between runs and still compare).
    pub fn key(&self) -> ScenarioKey {
        match self {
            Scenario::Mounts(m) => ScenarioKey::Mounts(m.clone()),
            Scenario::Lockbench(l) => ScenarioKey::Lockbench {
                bench: l.bench,
                name: l.name.clone(),
            },
        }
    }

    /// Check every number against [`crate::limits`].
    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            Scenario::Mounts(m) => m.validate(),
            Scenario::Lockbench(l) => l.validate(),
        }
    }
}

/// The identity of a scenario; its `Display` is the last part of a cell id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ScenarioKey {
    Mounts(MountsScenario),
    Lockbench {
        bench: lockbench::Bench,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}

impl fmt::Display for ScenarioKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScenarioKey::Mounts(m) => write!(
                f,
                "{}-L{}-C{}-P{}-J{}",
                m.strategy, m.layers, m.containers, m.passes, m.concurrency
            ),
            ScenarioKey::Lockbench { bench, name: None } => {
                write!(f, "lockbench-{}", bench.as_str())
            }
            ScenarioKey::Lockbench {
                bench,
                name: Some(n),
            } => write!(f, "lockbench-{}-{n}", bench.as_str()),
        }
    }
}

/// Parameters of a mount-strategy run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountsScenario {
    pub strategy: Strategy,
    /// Image layers per container (L).
    pub layers: u32,
    /// Containers started (C).
    pub containers: u32,
    /// Worker threads starting containers at once.
    pub concurrency: u32,
    /// Passes per container (containerd does 2: a read-only look, then the rootfs).
    pub passes: u32,
}

impl MountsScenario {
    pub fn label(&self) -> String {
        ScenarioKey::Mounts(self.clone()).to_string()
    }

    /// Check every number against [`crate::limits`], and that there are no more workers than
    /// containers.
    pub fn validate(&self) -> Result<(), LimitError> {
        limits::LAYERS.check(self.layers)?;
        limits::CONTAINERS.check(self.containers)?;
        limits::CONCURRENCY.check(self.concurrency)?;
        limits::PASSES.check(self.passes)?;
        limits::at_most(
            ("concurrency", self.concurrency.into()),
            ("containers", self.containers.into()),
            "more workers than containers would idle",
        )
    }

    /// Mount-table operations (attachments + detachments) on one container's start path, all
    /// passes, that the strategy must perform (ARCHITECTURE.md, "The three strategies"): per
    /// layer P·(1+2L), common-parent P·3, fsconfig-fd P. Tearing the finished rootfs down
    /// afterwards is not part of the start path and is counted apart
    /// ([`MountsScenario::teardown_per_container`]).
    pub fn expected_ops_per_container(&self) -> u64 {
        self.expected_attachments_per_container() + self.expected_detachments_per_container()
    }

    /// Attachments on one container's start path, all passes: per pass, per layer L layer
    /// binds and the overlay, common-parent the parent bind and the overlay, fsconfig-fd the
    /// overlay alone.
    pub fn expected_attachments_per_container(&self) -> u64 {
        let l = u64::from(self.layers);
        let per_pass = match self.strategy {
            Strategy::PerLayer => l + 1,
            Strategy::CommonParent => 2,
            Strategy::FsconfigFd => 1,
        };
        u64::from(self.passes) * per_pass
    }

    /// Detachments on one container's start path, all passes: the binds the overlay no longer
    /// needs once it is mounted (per layer L, common-parent 1, fsconfig-fd none).
    pub fn expected_detachments_per_container(&self) -> u64 {
        let l = u64::from(self.layers);
        let per_pass = match self.strategy {
            Strategy::PerLayer => l,
            Strategy::CommonParent => 1,
            Strategy::FsconfigFd => 0,
        };
        u64::from(self.passes) * per_pass
    }

    /// Unmounts of finished overlays after the start path: one per pass.
    pub fn teardown_per_container(&self) -> u64 {
        u64::from(self.passes)
    }

    /// Mounts the kernel allocates for one container, all passes, attached or not: the
    /// strategy's `open_tree` clones (per layer and fsconfig-fd L, common-parent 1), the overlay
    /// mount itself, and the private clone overlayfs makes of every layer it stacks
    /// (`clone_private_mount`: the L lower layers plus the upper dir, which the read-only view
    /// stacks as its top lower layer). Per pass: per layer and fsconfig-fd 2L+2, common-parent
    /// L+3.
    pub fn expected_allocated_per_container(&self) -> u64 {
        let l = u64::from(self.layers);
        let clones = match self.strategy {
            Strategy::PerLayer | Strategy::FsconfigFd => l,
            Strategy::CommonParent => 1,
        };
        u64::from(self.passes) * (clones + 1 + l + 1)
    }
}

/// The three ways of building an idmapped overlay rootfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// containerd before PR #12092: one idmapped bind mount per layer.
    PerLayer,
    /// containerd PR #12092: one idmapped bind mount of the layers' common parent.
    CommonParent,
    /// New mount API: detached idmapped trees handed to overlay with `lowerdir+` fds.
    FsconfigFd,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [
        Strategy::PerLayer,
        Strategy::CommonParent,
        Strategy::FsconfigFd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::PerLayer => "per-layer",
            Strategy::CommonParent => "common-parent",
            Strategy::FsconfigFd => "fsconfig-fd",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Strategy::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!("unknown strategy `{s}` (expected per-layer, common-parent or fsconfig-fd)")
            })
    }
}

/// Filesystem holding the image layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filesystem {
    Ext4,
    Xfs,
    Btrfs,
    Tmpfs,
}

impl Filesystem {
    pub const ALL: [Filesystem; 4] = [
        Filesystem::Ext4,
        Filesystem::Xfs,
        Filesystem::Btrfs,
        Filesystem::Tmpfs,
    ];

    /// The name `mount -t` and `/proc/filesystems` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Xfs => "xfs",
            Filesystem::Btrfs => "btrfs",
            Filesystem::Tmpfs => "tmpfs",
        }
    }

    /// Whether the filesystem lives on a block device (tmpfs does not).
    pub fn needs_disk(self) -> bool {
        !matches!(self, Filesystem::Tmpfs)
    }
}

impl fmt::Display for Filesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Filesystem {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Filesystem::ALL
            .into_iter()
            .find(|fs| fs.as_str() == s)
            .ok_or_else(|| format!("unknown filesystem `{s}` (expected ext4, xfs, btrfs or tmpfs)"))
    }
}
