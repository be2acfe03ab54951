//! A boot: one guest boot or host visit — how it ended, its logs, timings, probes, the topology
//! it saw, and what the bounds and the results contract did to its channels.

use std::collections::BTreeMap;
use std::path::PathBuf;

use protocol::{Capabilities, Evidence, Filesystem, ObservedTopology, Outcome};
use serde::{Deserialize, Serialize};

use super::{Accel, BackendKind};
use crate::cell::{BootKey, CellKey};

/// How a boot (guest or host visit) ended. Cells it did not report get their outcome from here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "end", rename_all = "kebab-case")]
pub enum BootEnd {
    /// The agent reported `Done` and kept the protocol.
    Completed,
    /// A watchdog fired.
    Timeout {
        deadline: Deadline,
        seconds: f64,
        excerpt: String,
    },
    /// The kernel panicked, oopsed or stalled, or the agent crashed: the console line that said so.
    Panic { line: String, excerpt: String },
    /// Our side broke before, around or beside the guest. Control flow looks at `cause` only;
    /// `message` is for people.
    Infra { cause: InfraCause, message: String },
}

/// The longest [`BootEnd::summary`], in characters.
pub const SUMMARY_CHARS: usize = 300;

/// The boot's watchdogs (`backend::Deadlines`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Deadline {
    /// From the start until the agent said hello.
    Boot,
    /// The longest silence on every channel together.
    Silence,
    /// The whole boot, start to exit.
    Plan,
}

impl Deadline {
    pub fn as_str(self) -> &'static str {
        match self {
            Deadline::Boot => "boot",
            Deadline::Silence => "silence",
            Deadline::Plan => "plan",
        }
    }
}

/// Why our side broke: the closed set `run` retries on and reports group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InfraCause {
    /// KVM could not run this guest ("KVM internal error").
    KvmUnusable,
    /// QEMU, the agent or ssh could not be started.
    Spawn,
    /// The run was interrupted (Ctrl-C, SIGTERM).
    Cancelled,
    /// A channel carried more than its byte budget.
    OutputFlood,
    /// The agent's result stream broke the contract (see [`Violation`]).
    ProtocolViolation,
    /// The kernel could not be fetched or built.
    Kernel,
    /// A runtime could not be built, or its copy did not arrive intact.
    Runtime,
    /// Preparing the boot failed here: the work dir, the initramfs, the disk image, a log file.
    BootSetup,
    /// The agent could not set the guest up (modules, scratch disk) or start the plan.
    AgentSetup,
    /// QEMU ended before the guest printed anything.
    GuestSilent,
    /// The ssh connection failed or was lost.
    Connection,
    /// A host's hook, root or sudo, or its SMT control failed.
    HostSetup,
    /// The layers' filesystem the agent measured is not the one the cell is labelled with (a
    /// host's `filesystem` assertion failed), or one mmx does not label.
    Filesystem,
    /// Something mmx itself got wrong.
    Internal,
}

impl InfraCause {
    pub fn as_str(self) -> &'static str {
        match self {
            InfraCause::KvmUnusable => "kvm-unusable",
            InfraCause::Spawn => "spawn",
            InfraCause::Cancelled => "cancelled",
            InfraCause::OutputFlood => "output-flood",
            InfraCause::ProtocolViolation => "protocol-violation",
            InfraCause::Kernel => "kernel",
            InfraCause::Runtime => "runtime",
            InfraCause::BootSetup => "boot-setup",
            InfraCause::AgentSetup => "agent-setup",
            InfraCause::GuestSilent => "guest-silent",
            InfraCause::Connection => "connection",
            InfraCause::HostSetup => "host-setup",
            InfraCause::Filesystem => "filesystem",
            InfraCause::Internal => "internal",
        }
    }

    /// Whether `--retries` may try the boot again: not when the user stopped the run, not when
    /// the guest broke the contract or flooded (it would again).
    pub fn is_retryable(self) -> bool {
        match self {
            InfraCause::Cancelled
            | InfraCause::OutputFlood
            | InfraCause::ProtocolViolation
            | InfraCause::Filesystem
            | InfraCause::Internal => false,
            InfraCause::KvmUnusable
            | InfraCause::Spawn
            | InfraCause::Kernel
            | InfraCause::Runtime
            | InfraCause::BootSetup
            | InfraCause::AgentSetup
            | InfraCause::GuestSilent
            | InfraCause::Connection
            | InfraCause::HostSetup => true,
        }
    }
}

impl BootEnd {
    pub fn infra(cause: InfraCause, message: impl Into<String>) -> BootEnd {
        BootEnd::Infra {
            cause,
            message: message.into(),
        }
    }

    /// Outcome and evidence for a cell the boot never reported.
    pub fn outcome_for_unreported(&self) -> (Outcome, Evidence) {
        match self {
            BootEnd::Completed => (
                Outcome::InfraError,
                Evidence::new("agent finished without reporting this cell"),
            ),
            BootEnd::Timeout {
                deadline,
                seconds,
                excerpt,
            } => (
                Outcome::Timeout,
                Evidence::new(format!(
                    "{} deadline passed after {seconds:.0} s",
                    deadline.as_str()
                ))
                .with_detail(excerpt.clone()),
            ),
            BootEnd::Panic { line, excerpt } => (
                Outcome::Panic,
                Evidence::new(line.clone()).with_detail(excerpt.clone()),
            ),
            BootEnd::Infra { cause, message } => (
                Outcome::InfraError,
                Evidence::new(format!("infra: {}", cause.as_str())).with_detail(message.clone()),
            ),
        }
    }

    pub fn is_completed(&self) -> bool {
        matches!(self, BootEnd::Completed)
    }

    /// One bounded line for progress output and tables: a message from QEMU, ssh or apt may
    /// span lines, the summary never does.
    pub fn summary(&self) -> String {
        let text = match self {
            BootEnd::Completed => "completed".into(),
            BootEnd::Timeout {
                deadline, seconds, ..
            } => format!("{} deadline ({seconds:.0} s)", deadline.as_str()),
            BootEnd::Panic { line, .. } => line.clone(),
            BootEnd::Infra { cause, message } => format!("{}: {message}", cause.as_str()),
        };
        crate::oneline::fold(&text, SUMMARY_CHARS)
    }
}

/// How the agent broke the results contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationKind {
    /// A result line (`MMX1 …`) that does not parse.
    Unparseable,
    /// A result for an item the plan does not have.
    UnknownItem,
    /// A result whose cell id is not its item's.
    WrongCell,
    /// A second result for the same item (cell and repeat).
    Duplicate,
    /// A second hello, topology or capabilities, or anything after done.
    OutOfOrder,
    /// The agent speaks another schema version.
    SchemaVersion,
    /// A result line longer than the protocol allows (`protocol::limits::RESULT_LINE_MAX`):
    /// never cut and parsed.
    TooLong,
}

impl ViolationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::Unparseable => "unparseable",
            ViolationKind::UnknownItem => "unknown-item",
            ViolationKind::WrongCell => "wrong-cell",
            ViolationKind::Duplicate => "duplicate",
            ViolationKind::OutOfOrder => "out-of-order",
            ViolationKind::SchemaVersion => "schema-version",
            ViolationKind::TooLong => "too-long",
        }
    }
}

/// One protocol violation, with a bounded excerpt of the line that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub kind: ViolationKind,
    pub excerpt: String,
}

/// What one channel of a boot carried, and what the bounds did to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStats {
    pub bytes: u64,
    pub lines: u64,
    /// Lines longer than the limit, cut and marked.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lines_cut: u64,
    /// Bytes that were not UTF-8 (decoded as U+FFFD).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub invalid_utf8: u64,
    /// The channel passed its byte budget and the rest was not read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flooded: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One guest boot or host visit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootRecord {
    pub key: BootKey,
    pub backend: BackendKind,
    pub accel: Accel,
    pub end: BootEnd,
    /// Kernel under test, as the agent reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    /// Logs kept for this boot, relative to the run directory (console, agent stderr, QEMU).
    pub logs: Vec<PathBuf>,
    /// Phase timings in milliseconds since the boot started, by phase name (`kernel-fetch`,
    /// `initramfs`, `qemu-start`, `kernel-start`, `agent-ready`, `plan-done`, `exit`).
    pub timings_ms: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_topology: Option<ObservedTopology>,
    /// Cells this boot ran.
    pub cells: Vec<CellKey>,
    pub attempts: u32,
    /// Protocol violations the agent's stream made (at most `backend::stream::KEPT_VIOLATIONS`
    /// kept; `violations_total` counts them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub violations_total: u64,
    /// Per channel (`results`, `console`, `stderr`): bytes, lines and what the bounds did.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, ChannelStats>,
    /// Every splat the boot's console showed (at most `SPLATS_PER_BOOT`), each with the plan
    /// stretch it printed during; the cells carry those of their own items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_warnings: Vec<super::KernelWarning>,
    /// Splats past that bound, counted only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kernel_warnings_dropped: u64,
    /// Where the boot's time went: agent-ready, the probes, each plan item's start and end.
    /// Absent in a run.json written before mmx kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<BootTimeline>,
    /// How its benchmarks were sized for its accelerator, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizing: Option<super::Sizing>,
    /// The guest that ran this boot's cells, when one guest served the boots of several
    /// filesystems of its kernel and topology (its logs, timings and channels are that
    /// guest's). None: a guest, visit or local run of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestRun>,
}

/// A boot's time on the harness's clock: offsets in milliseconds from the boot's start
/// (monotonic, the same start as `timings_ms`), and the wall-clock time it started. The agent
/// runs items one after another, so an item starts when the event before it arrived (the
/// capabilities, or the previous item's result) and ends when its own result arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootTimeline {
    /// When the boot started, RFC 3339 with milliseconds (UTC).
    pub started_at: String,
    /// The agent's hello arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_ready_ms: Option<f64>,
    /// The probes' answer (capabilities) arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes_done_ms: Option<f64>,
    /// Items in plan order: those answered, and the one running when the boot ended.
    pub items: Vec<ItemSpan>,
    /// The boot ended: the guest or the agent reaped, the visit over.
    pub end_ms: f64,
}

/// One plan item's span in its boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemSpan {
    /// The plan item (`protocol::PlanItem::item`).
    pub item: u32,
    pub cell: CellKey,
    pub kind: TimeKind,
    pub start_ms: f64,
    pub end_ms: f64,
    /// False for the item that was running when the boot ended (a panic, a timeout): its end
    /// is the boot's.
    #[serde(default = "yes", skip_serializing_if = "std::clone::Clone::clone")]
    pub answered: bool,
}

fn yes() -> bool {
    true
}

/// What a boot's time is spent on: the categories of the time breakdown (`mmx time`, the
/// last line of `mmx run`). One table: every category, its label, and which scenario is which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeKind {
    /// From the boot's start (initramfs, disk, QEMU, the kernel) until the agent's hello.
    BootToReady,
    /// The agent's feature probes.
    Probes,
    /// Mounts cells: the strategies and runtimes building rootfses.
    Mounts,
    /// The lock benchmarks, one category each.
    UserSpin,
    MountLock,
    Mountinfo,
    Storm,
    /// Whatever no event accounts for: powering off, the results after the last item.
    Rest,
}

impl TimeKind {
    pub const ALL: [TimeKind; 8] = [
        TimeKind::BootToReady,
        TimeKind::Probes,
        TimeKind::Mounts,
        TimeKind::UserSpin,
        TimeKind::MountLock,
        TimeKind::Mountinfo,
        TimeKind::Storm,
        TimeKind::Rest,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TimeKind::BootToReady => "boot to agent-ready",
            TimeKind::Probes => "probes",
            TimeKind::Mounts => "mounts",
            TimeKind::UserSpin => "lockbench user-spin",
            TimeKind::MountLock => "lockbench mount-lock",
            TimeKind::Mountinfo => "lockbench mountinfo",
            TimeKind::Storm => "storm",
            TimeKind::Rest => "shutdown and gaps",
        }
    }

    /// The category of a plan item's scenario.
    pub fn of(scenario: &protocol::Scenario) -> TimeKind {
        use protocol::lockbench::Bench;
        match scenario {
            protocol::Scenario::Mounts(_) => TimeKind::Mounts,
            protocol::Scenario::Lockbench(l) => match l.bench {
                Bench::UserSpin => TimeKind::UserSpin,
                Bench::MountLock => TimeKind::MountLock,
                Bench::Mountinfo => TimeKind::Mountinfo,
                Bench::Storm => TimeKind::Storm,
            },
        }
    }
}

/// One guest that served the boots of several filesystems: one scratch disk each, attached at
/// once. run.json counts guests by their `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRun {
    /// What its logs are named after (`debian-6.12_1s2c1t`; `debian-6.12_1s2c1t+rerun`).
    pub id: String,
    /// The filesystems it served, its disks in this order.
    pub filesystems: Vec<Filesystem>,
    /// It is the fresh guest that ran only the cells an earlier guest of the same kernel and
    /// topology did not reach (that one panicked or hung on an earlier cell).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rerun: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreported_cells_take_the_boot_end() {
        let (o, e) = BootEnd::Panic {
            line: "Kernel panic - not syncing: VFS".into(),
            excerpt: String::new(),
        }
        .outcome_for_unreported();
        assert_eq!(o, Outcome::Panic);
        assert!(e.step.contains("Kernel panic"));
        let (o, e) = BootEnd::infra(InfraCause::Spawn, "qemu exited").outcome_for_unreported();
        assert_eq!(o, Outcome::InfraError);
        assert_eq!(e.step, "infra: spawn");
    }

    #[test]
    fn every_time_kind_has_its_own_label() {
        let labels: std::collections::BTreeSet<_> =
            TimeKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), TimeKind::ALL.len());
        let storm = protocol::Scenario::Lockbench(protocol::lockbench::LockbenchScenario {
            bench: protocol::lockbench::Bench::Storm,
            ..Default::default()
        });
        assert_eq!(TimeKind::of(&storm), TimeKind::Storm);
    }

    #[test]
    fn only_our_transient_breakage_is_retried() {
        assert!(InfraCause::Connection.is_retryable());
        assert!(!InfraCause::Cancelled.is_retryable());
        assert!(!InfraCause::ProtocolViolation.is_retryable());
        assert!(!InfraCause::OutputFlood.is_retryable());
    }
}
