//! The one contract between the `mmx` harness and `mmx-agent`.
//!
//! # Wire format
//!
//! The harness hands the agent a [`Plan`] as one JSON document (a file in the initramfs at
//! `/plan.json`, a file on a metal host, or `--plan PATH` for the `local` backend). The agent
//! refuses a plan whose [`Plan::schema_version`] it does not know ([`check_schema`]).
//!
//! The agent answers with a stream of [`AgentEvent`]s, one JSON object per line, each line
//! prefixed with [`LINE_PREFIX`] so that a reader can pick them out of a channel that may also
//! carry other text (a serial port, an SSH session's stdout). Lines are written whole and flushed
//! one at a time, so a guest that dies mid-plan leaves every result it finished readable.
//! The stream starts with [`AgentEvent::Hello`] and ends with [`AgentEvent::Done`]; a stream
//! without `Done` was cut short (the harness classifies why).
//!
//! Everything here is plain data with serde derives; no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub mod lockbench;
pub mod runtime;
mod stats;

pub use stats::{percentile, Summary};

/// Version of the plan and result schema. Bump on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Prefix of every result line the agent writes, so results can share a channel with noise.
pub const LINE_PREFIX: &str = "MMX1 ";

/// Errors in reading the wire format.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("plan has schema version {found}, this agent speaks version {expected}; rebuild the agent and the harness from the same tree")]
    SchemaVersion { found: u32, expected: u32 },
    #[error("malformed {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Refuse a plan of an unknown schema version with a clear message.
pub fn check_schema(plan: &Plan) -> Result<(), ProtocolError> {
    if plan.schema_version != SCHEMA_VERSION {
        return Err(ProtocolError::SchemaVersion {
            found: plan.schema_version,
            expected: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Parse a plan and check its version in one step.
pub fn parse_plan(text: &str) -> Result<Plan, ProtocolError> {
    // Read only the version first so that a plan from a newer harness gets the version error,
    // not a confusing "unknown field" error.
    #[derive(Deserialize)]
    struct VersionOnly {
        schema_version: u32,
    }
    let v: VersionOnly = serde_json::from_str(text).map_err(|source| ProtocolError::Json {
        what: "plan",
        source,
    })?;
    if v.schema_version != SCHEMA_VERSION {
        return Err(ProtocolError::SchemaVersion {
            found: v.schema_version,
            expected: SCHEMA_VERSION,
        });
    }
    serde_json::from_str(text).map_err(|source| ProtocolError::Json {
        what: "plan",
        source,
    })
}

/// Encode one event as a result line (prefix + JSON, no newline).
pub fn encode_line(event: &AgentEvent) -> String {
    // Serializing plain data with string keys cannot fail.
    let json = serde_json::to_string(event).unwrap_or_else(|e| {
        format!(r#"{{"event":"log","level":"error","message":"unencodable event: {e}"}}"#)
    });
    format!("{LINE_PREFIX}{json}")
}

/// Decode a line if it is a result line; `None` for any other text on the channel.
pub fn decode_line(line: &str) -> Option<Result<AgentEvent, ProtocolError>> {
    let start = line.find(LINE_PREFIX)?;
    let json = line[start + LINE_PREFIX.len()..].trim_end();
    Some(
        serde_json::from_str(json).map_err(|source| ProtocolError::Json {
            what: "result line",
            source,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Plan: what the harness asks for.
// ---------------------------------------------------------------------------------------------

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

/// One cell's worth of work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanItem {
    /// Stable, readable cell id, e.g. `debian-6.12/2s2c2t-numa2/ext4/per-layer-L50-C20`.
    pub cell_id: String,
    pub scenario: Scenario,
    /// Seconds after which the agent abandons this item and reports `timeout` for it.
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// What a cell measures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        match self {
            Scenario::Mounts(m) => m.label(),
            Scenario::Lockbench(l) => l.label(),
        }
    }
}

/// Parameters of a mount-strategy run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        format!(
            "{}-L{}-C{}-P{}-J{}",
            self.strategy, self.layers, self.containers, self.passes, self.concurrency
        )
    }

    /// Mount-table operations (attachments + detachments) on one container's start path, all
    /// passes, that the strategy must perform (DESIGN.md formulas). Tearing the finished rootfs
    /// down afterwards is not part of the start path and is counted apart.
    pub fn expected_ops_per_container(&self) -> u64 {
        let l = u64::from(self.layers);
        let p = u64::from(self.passes);
        match self.strategy {
            Strategy::PerLayer => p * (1 + 2 * l),
            Strategy::CommonParent => p * 3,
            Strategy::FsconfigFd => p,
        }
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

// ---------------------------------------------------------------------------------------------
// Results: what the agent reports.
// ---------------------------------------------------------------------------------------------

/// One line of the agent's result stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum AgentEvent {
    /// First line: who is speaking.
    Hello {
        agent_version: String,
        schema_version: u32,
        kernel_release: String,
        /// Milliseconds since boot when the agent started (from /proc/uptime), for boot timings.
        uptime_ms: u64,
    },
    /// The machine as the agent sees it.
    Topology(ObservedTopology),
    /// Kernel feature probes on the scratch filesystem.
    Capabilities(Capabilities),
    /// One cell finished (in any outcome).
    CellResult(CellResult),
    /// Free-form progress or diagnostics.
    Log { level: LogLevel, message: String },
    /// Last line: the plan ran to its end.
    Done { uptime_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

/// The closed vocabulary of cell outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Ran and every check held.
    Pass,
    /// Ran, but a check showed a wrong result (ids, contents, counts).
    Fail,
    /// The kernel or filesystem lacks a feature the cell needs; evidence says which step failed.
    Unsupported,
    /// Did not finish in its time limit.
    Timeout,
    /// The kernel panicked, oopsed, stalled, or the agent crashed.
    Panic,
    /// Our side broke: a download, QEMU, the disk image, SSH. Never a kernel verdict.
    InfraError,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Pass,
        Outcome::Fail,
        Outcome::Unsupported,
        Outcome::Timeout,
        Outcome::Panic,
        Outcome::InfraError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Unsupported => "unsupported",
            Outcome::Timeout => "timeout",
            Outcome::Panic => "panic",
            Outcome::InfraError => "infra-error",
        }
    }

    /// A one-character symbol for compact tables.
    pub fn symbol(self) -> &'static str {
        match self {
            Outcome::Pass => "✅",
            Outcome::Fail => "❌",
            Outcome::Unsupported => "➖",
            Outcome::Timeout => "⏱️",
            Outcome::Panic => "💥",
            Outcome::InfraError => "⚠️",
        }
    }

    /// Rank for showing one outcome for many (repeats of a cell, the cells of a matrix slot):
    /// the highest wins. A kernel verdict (fail, panic) outranks our own breakage, so an infra
    /// error in one repeat never hides a failure seen in another.
    pub fn severity(self) -> u8 {
        match self {
            Outcome::Pass => 0,
            Outcome::Unsupported => 1,
            Outcome::InfraError => 2,
            Outcome::Timeout => 3,
            Outcome::Fail => 4,
            Outcome::Panic => 5,
        }
    }

    /// Whether this outcome lets a run exit 0. `unsupported` is an answer, not a failure.
    pub fn is_success(self) -> bool {
        match self {
            Outcome::Pass | Outcome::Unsupported => true,
            Outcome::Fail | Outcome::Timeout | Outcome::Panic | Outcome::InfraError => false,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an outcome is what it is: the failing step and, for a syscall, its errno.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The step, written like the call: `mount_setattr(MOUNT_ATTR_IDMAP) on tmpfs`.
    pub step: String,
    /// Raw errno, where a syscall failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// Symbolic errno name (`EINVAL`), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_name: Option<String>,
    /// Anything else worth a reader's eye: expected vs seen, a console line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Evidence {
    pub fn new(step: impl Into<String>) -> Self {
        Evidence {
            step: step.into(),
            errno: None,
            errno_name: None,
            detail: String::new(),
        }
    }

    pub fn with_errno(mut self, errno: i32) -> Self {
        self.errno = Some(errno);
        self.errno_name = errno_name(errno).map(str::to_owned);
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.step)?;
        match (&self.errno_name, self.errno) {
            (Some(name), _) => write!(f, ": {name}")?,
            (None, Some(n)) => write!(f, ": errno {n}")?,
            (None, None) => {}
        }
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

/// Symbolic names of the errnos mount code meets. Kept here so both sides print the same.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        5 => "EIO",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        16 => "EBUSY",
        17 => "EEXIST",
        18 => "EXDEV",
        19 => "ENODEV",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        24 => "EMFILE",
        28 => "ENOSPC",
        30 => "EROFS",
        36 => "ENAMETOOLONG",
        38 => "ENOSYS",
        40 => "ELOOP",
        61 => "ENODATA",
        75 => "EOVERFLOW",
        95 => "EOPNOTSUPP",
        110 => "ETIMEDOUT",
        _ => return None,
    })
}

/// The result of one plan item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub cell_id: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// Numbers worth comparing across runs, by name (`latency_p50_us`, `mount_ops`, …).
    #[serde(default)]
    pub metrics: BTreeMap<String, Metric>,
    /// The scenario-specific detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<CellDetail>,
}

/// A named measurement with all its samples (one per repeat, or per container).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub unit: Unit,
    /// Which direction is better: `mmx compare` needs it to call a change a regression.
    pub better: Better,
    pub samples: Vec<f64>,
}

impl Metric {
    pub fn new(unit: Unit, better: Better, samples: Vec<f64>) -> Self {
        Metric {
            unit,
            better,
            samples,
        }
    }

    pub fn one(unit: Unit, better: Better, value: f64) -> Self {
        Metric::new(unit, better, vec![value])
    }

    pub fn summary(&self) -> Option<Summary> {
        Summary::of(&self.samples)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Count,
    OpsPerSecond,
    Ratio,
    Bytes,
}

impl Unit {
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Nanoseconds => "ns",
            Unit::Microseconds => "µs",
            Unit::Milliseconds => "ms",
            Unit::Seconds => "s",
            Unit::Count => "",
            Unit::OpsPerSecond => "ops/s",
            Unit::Ratio => "×",
            Unit::Bytes => "B",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Better {
    Lower,
    Higher,
    /// Informational: a change is reported, never judged (e.g. counts that must match a formula).
    Neither,
}

/// Scenario-specific result detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CellDetail {
    Mounts(MountsResult),
    Lockbench(lockbench::LockbenchResult),
}

/// What a mount-strategy run did and measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountsResult {
    pub scenario: MountsScenario,
    /// The filesystem type the layers really lived on (from statfs), e.g. `ext4`.
    pub layers_fs: String,
    pub mount_ops: MountOps,
    /// Per-container start latency (all passes of one container), microseconds, one per container.
    pub latency_us: Vec<u64>,
    pub latency: Option<Summary>,
    /// Wall time of the whole run, microseconds.
    pub wall_us: u64,
    /// Time spent inside mount-family syscalls, summed over all threads, microseconds.
    pub syscall_us: u64,
    /// Time the workers spent on anything else (layer checks, bookkeeping), summed over threads.
    pub overhead_us: u64,
    /// The checks made through the merged views, each with its verdict.
    pub checks: Vec<Check>,
}

/// Mount-table operations counted by the agent and cross-checked against the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountOps {
    /// Attachments on the start path (move_mount, mount(2)), all containers and passes.
    pub attachments: u64,
    /// Detachments on the start path (umount2 of per-layer or parent binds).
    pub detachments: u64,
    /// `attachments + detachments`.
    pub ops: u64,
    /// What the DESIGN.md formula says `ops` must be for the whole run.
    pub expected_ops: u64,
    /// Unmounts of finished rootfses afterwards (one per container and pass): cleanup, not start.
    pub teardown_detachments: u64,
    /// How the cross-check read the mount table: `listmount` or `mountinfo`.
    pub cross_check_method: String,
    /// Largest number of extra mounts seen in the agent's namespace during one container start
    /// (per-layer: L+1, common-parent: 2, fsconfig-fd: 1), from the cross-check.
    pub peak_extra_mounts: u64,
    /// Mounts left in the namespace after the run (must be 0).
    pub leaked: u64,
}

/// One verification and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

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

/// Kernel features mmx probes for. DESIGN.md gives the version each arrived upstream; those are
/// hints only, never used to decide.
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
    /// fanotify FAN_MNT_ATTACH/DETACH mount events (6.15).
    FanotifyMountEvents,
}

impl Feature {
    pub const ALL: [Feature; 9] = [
        Feature::NewMountApi,
        Feature::IdmapMount,
        Feature::OverlayOverIdmap,
        Feature::CreateExcl,
        Feature::LowerdirPlusString,
        Feature::Listmount,
        Feature::Statmount,
        Feature::FsconfigSetFdLayer,
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

/// The CPU topology as the agent observes it (never as requested).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObservedTopology {
    pub cpu_model: String,
    /// Online logical CPUs, from /sys/devices/system/cpu/online.
    pub cpus_online: Vec<u32>,
    /// Distinct physical packages.
    pub sockets: u32,
    /// Distinct cores per socket.
    pub cores_per_socket: u32,
    /// Logical CPUs per core.
    pub threads_per_core: u32,
    /// Sibling groups (thread_siblings_list), one per core.
    pub core_siblings: Vec<Vec<u32>>,
    pub smt: SmtState,
    pub numa_nodes: Vec<NumaNode>,
}

impl ObservedTopology {
    /// Short id in the matrix's notation: `2s2c2t-numa2`.
    pub fn short(&self) -> String {
        let mut s = format!(
            "{}s{}c{}t",
            self.sockets, self.cores_per_socket, self.threads_per_core
        );
        if self.numa_nodes.len() > 1 {
            s.push_str(&format!("-numa{}", self.numa_nodes.len()));
        }
        s
    }
}

/// /sys/devices/system/cpu/smt/control, or what can be inferred without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SmtState {
    On,
    Off,
    ForceOff,
    NotSupported,
    NotImplemented,
    #[default]
    Unknown,
}

impl SmtState {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtState::On => "on",
            SmtState::Off => "off",
            SmtState::ForceOff => "forceoff",
            SmtState::NotSupported => "notsupported",
            SmtState::NotImplemented => "notimplemented",
            SmtState::Unknown => "unknown",
        }
    }

    /// Parse the contents of /sys/devices/system/cpu/smt/control.
    pub fn from_control(s: &str) -> SmtState {
        match s.trim() {
            "on" => SmtState::On,
            "off" => SmtState::Off,
            "forceoff" => SmtState::ForceOff,
            "notsupported" => SmtState::NotSupported,
            "notimplemented" => SmtState::NotImplemented,
            _ => SmtState::Unknown,
        }
    }
}

/// One NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaNode {
    pub id: u32,
    pub cpus: Vec<u32>,
    pub memory_mib: u64,
    /// Distances to every node, in node order (from /sys/devices/system/node/nodeN/distance).
    pub distances: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + fmt::Debug>(v: &T) {
        let s = serde_json::to_string(v).expect("serialize");
        let back: T = serde_json::from_str(&s).expect("deserialize");
        assert_eq!(&back, v, "round trip through {s}");
    }

    fn mounts(strategy: Strategy) -> MountsScenario {
        MountsScenario {
            strategy,
            layers: 50,
            containers: 20,
            concurrency: 2,
            passes: 2,
        }
    }

    pub(crate) fn sample_plan() -> Plan {
        Plan {
            schema_version: SCHEMA_VERSION,
            boot_id: "debian-6.12/1s2c1t/ext4".into(),
            scratch_dir: "/scratch".into(),
            scratch_disk: Some(ScratchDisk {
                device: "/dev/vda".into(),
                filesystem: Filesystem::Ext4,
            }),
            modules: vec!["/lib/modules/overlay.ko.xz".into()],
            probe: true,
            items: vec![
                PlanItem {
                    cell_id: "a/b/ext4/per-layer-L50-C20-P2-J2".into(),
                    scenario: Scenario::Mounts(mounts(Strategy::PerLayer)),
                    timeout_s: Some(60),
                },
                PlanItem {
                    cell_id: "a/b/ext4/lockbench".into(),
                    scenario: Scenario::Lockbench(lockbench::LockbenchScenario::default()),
                    timeout_s: None,
                },
            ],
        }
    }

    #[test]
    fn plan_round_trips() {
        roundtrip(&sample_plan());
    }

    #[test]
    fn plan_of_unknown_version_is_refused_clearly() {
        let mut plan = sample_plan();
        plan.schema_version = 99;
        let text = serde_json::to_string(&plan).unwrap();
        let err = parse_plan(&text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("schema version 99"), "{msg}");
        assert!(msg.contains(&format!("version {SCHEMA_VERSION}")), "{msg}");
        // Even a plan with fields this version does not know gets the version error first.
        let future = r#"{"schema_version": 2, "brand_new": true}"#;
        assert!(matches!(
            parse_plan(future),
            Err(ProtocolError::SchemaVersion { found: 2, .. })
        ));
    }

    #[test]
    fn plan_parses_and_rejects_unknown_fields() {
        let plan = sample_plan();
        let text = serde_json::to_string(&plan).unwrap();
        assert_eq!(parse_plan(&text).unwrap(), plan);
        let bad = text.replacen("\"boot_id\"", "\"bootid\"", 1);
        assert!(parse_plan(&bad).is_err());
    }

    #[test]
    fn every_event_round_trips_through_a_line() {
        let events = vec![
            AgentEvent::Hello {
                agent_version: "0.1.0".into(),
                schema_version: SCHEMA_VERSION,
                kernel_release: "6.12.0".into(),
                uptime_ms: 1234,
            },
            AgentEvent::Topology(ObservedTopology {
                cpu_model: "QEMU Virtual CPU".into(),
                cpus_online: vec![0, 1, 2, 3],
                sockets: 2,
                cores_per_socket: 1,
                threads_per_core: 2,
                core_siblings: vec![vec![0, 1], vec![2, 3]],
                smt: SmtState::On,
                numa_nodes: vec![NumaNode {
                    id: 0,
                    cpus: vec![0, 1],
                    memory_mib: 512,
                    distances: vec![10, 20],
                }],
            }),
            AgentEvent::Capabilities(Capabilities {
                kernel_release: "6.1.0".into(),
                probed_fs: "tmpfs".into(),
                probes: vec![ProbeResult {
                    feature: Feature::IdmapMount,
                    supported: false,
                    evidence: Some(
                        Evidence::new("mount_setattr(MOUNT_ATTR_IDMAP) on tmpfs").with_errno(22),
                    ),
                }],
            }),
            AgentEvent::CellResult(CellResult {
                cell_id: "x".into(),
                outcome: Outcome::Pass,
                evidence: None,
                metrics: BTreeMap::from([(
                    "latency_p50_us".to_string(),
                    Metric::one(Unit::Microseconds, Better::Lower, 12.5),
                )]),
                detail: Some(CellDetail::Mounts(MountsResult {
                    scenario: mounts(Strategy::FsconfigFd),
                    layers_fs: "ext4".into(),
                    mount_ops: MountOps {
                        attachments: 40,
                        detachments: 0,
                        ops: 40,
                        expected_ops: 40,
                        teardown_detachments: 40,
                        cross_check_method: "listmount".into(),
                        peak_extra_mounts: 1,
                        leaked: 0,
                    },
                    latency_us: vec![1, 2, 3],
                    latency: Summary::of(&[1.0, 2.0, 3.0]),
                    wall_us: 10,
                    syscall_us: 9,
                    overhead_us: 1,
                    checks: vec![Check {
                        name: "uid".into(),
                        ok: true,
                        detail: String::new(),
                    }],
                })),
            }),
            AgentEvent::Log {
                level: LogLevel::Warn,
                message: "hi".into(),
            },
            AgentEvent::Done { uptime_ms: 99 },
        ];
        for e in &events {
            roundtrip(e);
            let line = encode_line(e);
            assert!(line.starts_with(LINE_PREFIX));
            // Noise before the prefix (a console timestamp) does not matter.
            let noisy = format!("[    3.1] {line}\r");
            assert_eq!(&decode_line(&noisy).unwrap().unwrap(), e);
        }
        assert!(decode_line("[    0.000] Linux version 6.1").is_none());
        assert!(decode_line("MMX1 {not json").unwrap().is_err());
    }

    #[test]
    fn enums_use_the_documented_spellings() {
        for o in Outcome::ALL {
            assert_eq!(
                serde_json::to_string(&o).unwrap(),
                format!("\"{}\"", o.as_str())
            );
        }
        for s in Strategy::ALL {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
            assert_eq!(s.as_str().parse::<Strategy>().unwrap(), s);
        }
        for f in Filesystem::ALL {
            assert_eq!(f.as_str().parse::<Filesystem>().unwrap(), f);
        }
        for f in Feature::ALL {
            assert_eq!(
                serde_json::to_string(&f).unwrap(),
                format!("\"{}\"", f.as_str())
            );
        }
        assert!("zfs".parse::<Filesystem>().is_err());
    }

    #[test]
    fn formulas_match_design() {
        // per-layer 2·(1+2L), common-parent 2·3, fsconfig-fd 2·1 with 2 passes.
        assert_eq!(
            mounts(Strategy::PerLayer).expected_ops_per_container(),
            2 * 101
        );
        assert_eq!(
            mounts(Strategy::CommonParent).expected_ops_per_container(),
            6
        );
        assert_eq!(mounts(Strategy::FsconfigFd).expected_ops_per_container(), 2);
    }

    #[test]
    fn outcome_success_is_decided_for_every_variant() {
        let ok: Vec<_> = Outcome::ALL
            .into_iter()
            .filter(|o| o.is_success())
            .collect();
        assert_eq!(ok, vec![Outcome::Pass, Outcome::Unsupported]);
    }

    #[test]
    fn a_kernel_verdict_outranks_our_breakage() {
        let worst = |a: Outcome, b: Outcome| std::cmp::max_by_key(a, b, |o| o.severity());
        assert_eq!(worst(Outcome::Unsupported, Outcome::Fail), Outcome::Fail);
        assert_eq!(worst(Outcome::InfraError, Outcome::Fail), Outcome::Fail);
        assert_eq!(
            worst(Outcome::Pass, Outcome::InfraError),
            Outcome::InfraError
        );
        let mut ranks: Vec<u8> = Outcome::ALL.iter().map(|o| o.severity()).collect();
        ranks.sort_unstable();
        ranks.dedup();
        assert_eq!(ranks.len(), Outcome::ALL.len(), "a strict order");
    }

    #[test]
    fn evidence_reads_like_the_failed_call() {
        let e = Evidence::new("fsconfig(FSCONFIG_SET_FD, \"lowerdir+\")").with_errno(95);
        assert_eq!(
            e.to_string(),
            "fsconfig(FSCONFIG_SET_FD, \"lowerdir+\"): EOPNOTSUPP"
        );
    }
}
