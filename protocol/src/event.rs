//! The agent's result stream: one [`AgentEvent`] per line, and the results it carries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    lockbench, Capabilities, Evidence, MountsScenario, ObservedTopology, Outcome, Summary,
};

/// One line of the agent's result stream. Each line is one event, parsed and dropped or kept:
/// the size difference between variants (a topology beside a done) costs nothing worth a box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[allow(clippy::large_enum_variant)]
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

/// The result of one plan item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// The [`crate::PlanItem::item`] this answers (0 outside a plan: the agent's own CLI).
    #[serde(default)]
    pub item: u32,
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

/// The metric of a mounts cell that counts the kernel's mount-table operations on each
/// container's start path (`mmx compare` judges it lower-is-better; a known answer may pin it).
pub const MOUNT_OPS_PER_CONTAINER: &str = "mount_ops_per_container";

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

/// Scenario-specific result detail. One per cell, so the variants' size difference costs less
/// than a box would in code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[allow(clippy::large_enum_variant)]
pub enum CellDetail {
    Mounts(MountsResult),
    Lockbench(lockbench::LockbenchResult),
}

/// What a table of pre-populated mounts cost to make and to take down (a storm's
/// `prepopulated_mounts`): bind mounts under one tmpfs parent, taken down by one lazy detach of
/// the parent, which measured faster than one unmount per mount (ARCHITECTURE.md, "The lock
/// benchmark"), and verified to leave no mount behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCost {
    /// Mounts added to the table.
    pub mounts: u32,
    /// Making them: mkdir and bind mount each, microseconds.
    pub populate_us: u64,
    /// Taking them down, microseconds.
    pub teardown_us: u64,
    pub teardown: TableTeardown,
}

/// How a table of pre-populated mounts is taken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableTeardown {
    /// `umount2(parent, MNT_DETACH)`: the whole subtree in one call.
    LazyDetach,
    /// `umount2(mount, 0)` for each mount, innermost first, then the parent.
    EachUnmount,
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
    /// Time spent inside mount-family syscalls, summed over all threads, microseconds. For a
    /// runtime: the time from each job's request to its answer (mounts and unmounts), which is
    /// all the agent can see of it.
    pub syscall_us: u64,
    /// Time the workers spent on anything else (layer checks, bookkeeping), summed over threads.
    pub overhead_us: u64,
    /// The checks made through the merged views, each with its verdict.
    pub checks: Vec<Check>,
    /// For a runtime's cell: who it said it is (its hello), for the cell's provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<crate::runtime::Hello>,
    /// For a cell on erofs layers: how the images were mounted (file-backed or loop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erofs: Option<crate::erofs::ErofsLayers>,
    /// The pre-populated table's cost, when the run had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableCost>,
    /// The scenario's watchers through the measured window, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watchers: Vec<crate::WatcherFigures>,
}

/// Mount-table operations of a run as the kernel reports them ([`MountOps::count_source`] says
/// how), against the strategy's formula, and the mounts the kernel allocated meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountOps {
    /// Attachments on the start path (move_mount, mount(2)), all containers and passes.
    pub attachments: u64,
    /// Detachments on the start path (umount2 of per-layer or parent binds).
    pub detachments: u64,
    /// `attachments + detachments`.
    pub ops: u64,
    /// What the strategy's formula says `ops` must be for the whole run; None for a runtime,
    /// which has no formula (its count is its answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_ops: Option<u64>,
    /// Unmounts of finished rootfses afterwards (one per container and pass): cleanup, not start.
    pub teardown_detachments: u64,
    /// How the cross-check read the mount table: `listmount` or `mountinfo`.
    pub cross_check_method: String,
    /// Largest number of extra mounts seen in the agent's namespace during one container start
    /// (per-layer: L+1, common-parent: 2, fsconfig-fd: 1), from the cross-check.
    pub peak_extra_mounts: u64,
    /// Mounts left in the namespace after the run (must be 0).
    pub leaked: u64,
    /// Where `attachments`, `detachments` and `teardown_detachments` come from. Absent in runs
    /// recorded before the kernel counted (and so in their fixtures): the agent's own tally.
    #[serde(default, skip_serializing_if = "CountSource::is_agent_tally")]
    pub count_source: CountSource,
    /// Every mount the kernel created during the run, detached `open_tree` clones and overlay's
    /// private layer clones included (from the unique mount id counter, 6.8+; system-wide, so
    /// other processes' mounts count too). None where the kernel has no unique mount ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts_allocated: Option<u64>,
    /// What the strategy's sequence makes the kernel allocate for the whole run
    /// ([`crate::MountsScenario::expected_allocated_per_container`]), where `mounts_allocated`
    /// was measured. Informational: a difference is a note, not a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_allocated: Option<u64>,
    /// What a reader of the counts should know: events that were not the run's (another process
    /// mounting in its namespace), allocations beyond the formula on a busy host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Where a run's mount counts come from, best first: the agent uses the best its kernel has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CountSource {
    /// fanotify `FAN_MNT_ATTACH`/`FAN_MNT_DETACH` events on the run's mount namespace (6.15+):
    /// every attachment and detachment the kernel made, each with its mount id.
    FanotifyMountEvents,
    /// Unique mount ids (`listmount`, `STATX_MNT_ID_UNIQUE`; 6.8+): the mounts each pass holds at
    /// its peak and after it, told apart by ids that are never reused.
    UniqueMountIds,
    /// The mount table (`/proc/thread-self/mountinfo`) read at each pass's peak and after it.
    MountTableDiff,
    /// Counted by the agent along its own call sequence. Only runs recorded before the counts
    /// came from the kernel say this; no agent writes it any more.
    #[default]
    AgentTally,
}

impl CountSource {
    pub fn is_agent_tally(&self) -> bool {
        *self == CountSource::AgentTally
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CountSource::FanotifyMountEvents => "fanotify-mount-events",
            CountSource::UniqueMountIds => "unique-mount-ids",
            CountSource::MountTableDiff => "mount-table-diff",
            CountSource::AgentTally => "agent-tally",
        }
    }
}

impl std::fmt::Display for CountSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One verification and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}
