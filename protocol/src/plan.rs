//! The plan: what the harness asks one agent invocation (a guest boot, a host visit) to do.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::limits::{self, LimitError};
use crate::lockbench;
use crate::runtime::RuntimeName;

/// Everything one agent invocation (one guest boot, one host visit) must do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub schema_version: u32,
    /// Free-form id of the boot or host visit, echoed in logs.
    pub boot_id: String,
    /// Where the agent creates layers and mounts. In a guest: the parent of the scratch disks'
    /// mount points. The agent never touches anything outside it.
    pub scratch_dir: PathBuf,
    /// In a guest: the scratch disks, each mounted at `scratch_dir/<filesystem>`
    /// ([`Plan::disk_dir`]); one guest serves the cells of every filesystem it has a disk for.
    /// Empty: `scratch_dir` is used as it is (a host, this machine).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scratch_disks: Vec<ScratchDisk>,
    /// Kernel modules to load before anything else, in order (paths inside the initramfs).
    #[serde(default)]
    pub modules: Vec<PathBuf>,
    /// Run the kernel feature probes and report them as [`AgentEvent::Capabilities`].
    #[serde(default = "yes")]
    pub probe: bool,
    /// The work, one item per matrix cell.
    pub items: Vec<PlanItem>,
    /// The runtimes the items' `runtime:NAME` strategies start, each where this agent finds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtimes: Vec<PlanRuntime>,
}

fn yes() -> bool {
    true
}

impl Plan {
    /// Where the disk of `fs` is mounted: `scratch_dir/<fs>`.
    pub fn disk_dir(&self, fs: Filesystem) -> PathBuf {
        self.scratch_dir.join(fs.as_str())
    }

    /// Where an item's layers go: its filesystem's disk, or `scratch_dir` for an item that
    /// names none.
    pub fn item_dir(&self, item: &PlanItem) -> PathBuf {
        item.filesystem
            .map_or_else(|| self.scratch_dir.clone(), |fs| self.disk_dir(fs))
    }

    /// Where the probes run, one directory per filesystem the plan has a disk for, or
    /// `scratch_dir` alone.
    pub fn probe_dirs(&self) -> Vec<PathBuf> {
        if self.scratch_disks.is_empty() {
            vec![self.scratch_dir.clone()]
        } else {
            self.scratch_disks
                .iter()
                .map(|d| self.disk_dir(d.filesystem))
                .collect()
        }
    }

    /// The plan's entry for a runtime.
    pub fn runtime(&self, name: &RuntimeName) -> Option<&PlanRuntime> {
        self.runtimes.iter().find(|r| &r.name == name)
    }
}

/// A runtime as one boot gets it (see [`crate::runtime`] for the contract it speaks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRuntime {
    pub name: RuntimeName,
    /// The static executable, where this agent finds it: `/runtimes/<name>` in a guest's
    /// initramfs, a copy beside the plan for the local backend, in the visit's temp dir on a host.
    pub path: PathBuf,
    /// Its arguments (the recipe's `args`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Longest a job may take from request to answer before the runtime is killed.
    pub job_timeout_s: u64,
    /// SHA-256 of the executable: every copy the backends make is checked against it.
    pub sha256: String,
}

/// A block device holding the layers' filesystem (or, for tmpfs, a fresh tmpfs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScratchDisk {
    /// Device node, e.g. `/dev/vda`; `tmpfs` for a tmpfs.
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
    /// The filesystem whose scratch disk holds this item's layers ([`Plan::item_dir`]); None:
    /// the plan's `scratch_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<Filesystem>,
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

    /// The runtime a cell of this scenario starts, if any.
    pub fn runtime(&self) -> Option<&RuntimeName> {
        match self {
            Scenario::Mounts(m) => m.strategy.runtime(),
            Scenario::Lockbench(_) => None,
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
            ScenarioKey::Mounts(m) => {
                write!(
                    f,
                    "{}-L{}-C{}-P{}-J{}",
                    m.strategy, m.layers, m.containers, m.passes, m.concurrency
                )?;
                m.watchers.iter().try_for_each(|w| write!(f, "+{w}"))
            }
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
    pub strategy: MountStrategy,
    /// Image layers per container (L).
    pub layers: u32,
    /// Containers started (C).
    pub containers: u32,
    /// Worker threads starting containers at once.
    pub concurrency: u32,
    /// Passes per container (containerd does 2: a read-only look, then the rootfs).
    pub passes: u32,
    /// Mount-table watchers run beside the workers through the measured window (`watch`).
    /// They share the CPUs and the mount locks with the workers, so they are part of the
    /// cell's identity: the cell id ends in `+<watcher>` for each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watchers: Vec<crate::Watcher>,
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

    /// The built-in strategy, when the scenario is not a runtime's.
    pub fn builtin(&self) -> Option<Strategy> {
        self.strategy.builtin()
    }

    /// Mount-table operations (attachments + detachments) on one container's start path, all
    /// passes, that a built-in strategy must perform (ARCHITECTURE.md, "The three strategies"):
    /// per layer P·(1+2L), common-parent P·3, fsconfig-fd and fsconfig-fd-attr P. Tearing the
    /// finished rootfs down afterwards is not part of the start path and is counted apart
    /// ([`MountsScenario::teardown_per_container`]). None for a runtime: its own code decides,
    /// and what the kernel counted is its answer (a known answer in the matrix may pin it).
    pub fn expected_ops_per_container(&self) -> Option<u64> {
        Some(
            self.expected_attachments_per_container()?
                + self.expected_detachments_per_container()?,
        )
    }

    /// Attachments on one container's start path, all passes: per pass, per layer L layer
    /// binds and the overlay, common-parent the parent bind and the overlay, fsconfig-fd(-attr)
    /// the overlay alone.
    pub fn expected_attachments_per_container(&self) -> Option<u64> {
        let l = u64::from(self.layers);
        let per_pass = match self.builtin()? {
            Strategy::PerLayer => l + 1,
            Strategy::CommonParent => 2,
            Strategy::FsconfigFd | Strategy::FsconfigFdAttr => 1,
        };
        Some(u64::from(self.passes) * per_pass)
    }

    /// Detachments on one container's start path, all passes: the binds the overlay no longer
    /// needs once it is mounted (per layer L, common-parent 1, fsconfig-fd(-attr) none).
    pub fn expected_detachments_per_container(&self) -> Option<u64> {
        let l = u64::from(self.layers);
        let per_pass = match self.builtin()? {
            Strategy::PerLayer => l,
            Strategy::CommonParent => 1,
            Strategy::FsconfigFd | Strategy::FsconfigFdAttr => 0,
        };
        Some(u64::from(self.passes) * per_pass)
    }

    /// Mounts a common-parent clone carries along when every layer is a mount of its own
    /// below the common directory (erofs images): per pass L more attached with the parent
    /// tree, L more detached with it, and L more allocated by its recursive clone. Zero for
    /// the other strategies, whose clones are of one layer each, and for one layer, whose
    /// common directory is the layer itself (its mount is the clone's root, nothing below).
    pub fn layer_submounts_per_container(&self) -> u64 {
        match self.builtin() {
            Some(Strategy::CommonParent) if self.layers >= 2 => {
                u64::from(self.passes) * u64::from(self.layers)
            }
            _ => 0,
        }
    }

    /// Unmounts of finished overlays after the start path: one per pass (a runtime may stack
    /// more than one mount on its target: None).
    pub fn teardown_per_container(&self) -> Option<u64> {
        self.builtin().map(|_| u64::from(self.passes))
    }

    /// Mounts the kernel allocates for one container, all passes, attached or not: the
    /// strategy's `open_tree` clones (per layer and fsconfig-fd(-attr) L, common-parent 1), the
    /// overlay mount itself, and the private clone overlayfs makes of every layer it stacks
    /// (`clone_private_mount`: the L lower layers plus the upper dir, which the read-only view
    /// stacks as its top lower layer). Per pass: per layer and fsconfig-fd(-attr) 2L+2
    /// (`open_tree_attr` clones once, as `open_tree` does), common-parent L+3.
    pub fn expected_allocated_per_container(&self) -> Option<u64> {
        let l = u64::from(self.layers);
        let clones = match self.builtin()? {
            Strategy::PerLayer | Strategy::FsconfigFd | Strategy::FsconfigFdAttr => l,
            Strategy::CommonParent => 1,
        };
        Some(u64::from(self.passes) * (clones + 1 + l + 1))
    }

    /// An upper bound on the start path's mount operations per container, runtime or not (a
    /// runtime is assumed to do no worse than mapping every layer): for time limits.
    pub fn ops_bound_per_container(&self) -> u64 {
        let l = u64::from(self.layers);
        self.expected_ops_per_container()
            .unwrap_or(u64::from(self.passes) * (1 + 2 * l))
    }
}

/// What builds a mounts cell's rootfses: one of mmx's built-in strategies, or a runtime's own
/// mount code. Spelled as in matrix.toml and cell ids: `per-layer`, `common-parent`,
/// `fsconfig-fd`, `runtime:<name>`. Built-ins order before runtimes (report columns).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum MountStrategy {
    Builtin(Strategy),
    Runtime(RuntimeName),
}

impl MountStrategy {
    /// How a runtime column is spelled: `runtime:<name>`.
    pub const RUNTIME_PREFIX: &'static str = "runtime:";

    pub fn builtin(&self) -> Option<Strategy> {
        match self {
            MountStrategy::Builtin(s) => Some(*s),
            MountStrategy::Runtime(_) => None,
        }
    }

    pub fn runtime(&self) -> Option<&RuntimeName> {
        match self {
            MountStrategy::Builtin(_) => None,
            MountStrategy::Runtime(n) => Some(n),
        }
    }
}

impl From<Strategy> for MountStrategy {
    fn from(s: Strategy) -> MountStrategy {
        MountStrategy::Builtin(s)
    }
}

impl fmt::Display for MountStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountStrategy::Builtin(s) => f.write_str(s.as_str()),
            MountStrategy::Runtime(n) => write!(f, "{}{n}", MountStrategy::RUNTIME_PREFIX),
        }
    }
}

impl std::str::FromStr for MountStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<MountStrategy, String> {
        if let Some(name) = s.strip_prefix(MountStrategy::RUNTIME_PREFIX) {
            return name.parse().map(MountStrategy::Runtime);
        }
        s.parse::<Strategy>()
            .map(MountStrategy::Builtin)
            .map_err(|_| {
                format!(
                    "unknown strategy `{s}` (expected per-layer, common-parent, fsconfig-fd, \
                 fsconfig-fd-attr or runtime:NAME naming a [[runtimes]] entry)"
                )
            })
    }
}

impl TryFrom<String> for MountStrategy {
    type Error = String;
    fn try_from(s: String) -> Result<MountStrategy, String> {
        s.parse()
    }
}

impl From<MountStrategy> for String {
    fn from(s: MountStrategy) -> String {
        s.to_string()
    }
}

/// The ways of building an idmapped overlay rootfs that mmx implements itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// containerd before PR #12092: one idmapped bind mount per layer.
    PerLayer,
    /// containerd PR #12092: one idmapped bind mount of the layers' common parent.
    CommonParent,
    /// New mount API: detached idmapped trees handed to overlay with `lowerdir+` fds.
    FsconfigFd,
    /// fsconfig-fd with each layer made in one call, `open_tree_attr(OPEN_TREE_CLONE,
    /// MOUNT_ATTR_IDMAP)` (6.15), instead of `open_tree` + `mount_setattr`.
    FsconfigFdAttr,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::PerLayer,
        Strategy::CommonParent,
        Strategy::FsconfigFd,
        Strategy::FsconfigFdAttr,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::PerLayer => "per-layer",
            Strategy::CommonParent => "common-parent",
            Strategy::FsconfigFd => "fsconfig-fd",
            Strategy::FsconfigFdAttr => "fsconfig-fd-attr",
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
                format!(
                    "unknown strategy `{s}` (expected per-layer, common-parent, fsconfig-fd or \
                     fsconfig-fd-attr)"
                )
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
    /// Each layer an erofs image of its own (like containerd's erofs snapshotter), mounted
    /// read-only; the images are files on an ext4 carrier ([`Filesystem::carrier`]).
    Erofs,
}

/// statfs `f_type` magic numbers (linux/magic.h): the filesystems mmx labels first, then others
/// it names when it meets them. The one table both sides read.
const STATFS_MAGIC: &[(u64, &str)] = &[
    (0xEF53, "ext4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
    (0x8584_58f6, "ramfs"),
    (0x794c_7630, "overlay"),
    (0xF2F5_2010, "f2fs"),
    (0xE0F5_E1E2, "erofs"),
    (0x2fc1_2fc1, "zfs"),
    (0xca45_1a4e, "bcachefs"),
    (0x6969, "nfs"),
];

/// A filesystem's name from its statfs magic: `ext4`, `zfs`, or `unknown (magic 0x…)`.
pub fn filesystem_name(magic: u64) -> String {
    STATFS_MAGIC.iter().find(|(m, _)| *m == magic).map_or_else(
        || format!("unknown (magic {magic:#x})"),
        |(_, n)| (*n).to_string(),
    )
}

impl Filesystem {
    /// The filesystem mmx labels with this statfs magic, if it is one.
    pub fn from_statfs_magic(magic: u64) -> Option<Filesystem> {
        filesystem_name(magic).parse().ok()
    }

    pub const ALL: [Filesystem; 5] = [
        Filesystem::Ext4,
        Filesystem::Xfs,
        Filesystem::Btrfs,
        Filesystem::Tmpfs,
        Filesystem::Erofs,
    ];

    /// The name `mount -t` and `/proc/filesystems` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Xfs => "xfs",
            Filesystem::Btrfs => "btrfs",
            Filesystem::Tmpfs => "tmpfs",
            Filesystem::Erofs => "erofs",
        }
    }

    /// Whether the filesystem lives on a block device (tmpfs does not).
    pub fn needs_disk(self) -> bool {
        !matches!(self, Filesystem::Tmpfs)
    }

    /// The writable filesystem the scratch dir is on: the filesystem itself, except for erofs,
    /// whose layer images (read-only, one per layer) are files on ext4 beside the run's other
    /// directories (containers' upper and work dirs), as on a containerd node.
    pub fn carrier(self) -> Filesystem {
        match self {
            Filesystem::Erofs => Filesystem::Ext4,
            fs => fs,
        }
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
            .ok_or_else(|| {
                format!("unknown filesystem `{s}` (expected ext4, xfs, btrfs, tmpfs or erofs)")
            })
    }
}
