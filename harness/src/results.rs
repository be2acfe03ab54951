//! `run.json`: everything one `mmx run` learned, in one document that reports, `mmx compare` and
//! `mmx merge` read back without the run directory's other files.
//!
//! A run has cells (one per matrix cell: outcome, evidence, metrics, provenance) and boots (one
//! per guest boot or host visit: how it ended, its logs, timings, probes and observed topology).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use protocol::{Capabilities, CellDetail, Evidence, Metric, ObservedTopology, Outcome, Scenario};
use serde::{Deserialize, Serialize};

use crate::cell::{BootKey, CellKey};

pub use crate::rundir::RunDir;

/// Version of the `run.json` schema.
/// 2: typed cell and boot keys, infra causes, deadlines, protocol violations, output stats.
pub const RUN_SCHEMA_VERSION: u32 = 2;

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema_version: u32,
    pub mmx_version: String,
    /// The agent that ran the cells: `embedded <blake3>` or `MMX_AGENT=<path> (blake3 …)`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent: String,
    pub run_id: String,
    /// RFC 3339.
    pub started_at: String,
    pub finished_at: String,
    /// The matrix file the run came from.
    pub matrix: String,
    /// `--shard I/N`, when the run was one shard of a larger matrix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// The machine mmx ran on (not the machines under test).
    pub host: HostInfo,
    pub cells: Vec<CellRecord>,
    pub boots: Vec<BootRecord>,
    /// The runtimes the run's cells started (`runtime:NAME`), each made ready once before the
    /// boots: where it came from, or why it could not be built.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtimes: Vec<RuntimeRecord>,
}

/// One runtime of a run, as run.json and the report header show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeRecord {
    pub name: protocol::RuntimeName,
    /// One line: `containerd 2.1.9+ds1-5 (debian sid, go1.27.3)`, or the recipe when it could
    /// not be made ready.
    pub describe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<crate::runtimes::RuntimeProvenance>,
    /// The arguments the agent started it with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// SHA-256 of the executable every copy was checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<RuntimeBuild>,
    /// Why it is not ready (its cells are `infra-error` with this reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a runtime was made ready for a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RuntimeBuild {
    /// Found in the cache: nothing was downloaded or built.
    pub cached: bool,
    pub seconds: f64,
}

/// The runtime a cell ran: its build and what it said it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellRuntime {
    pub name: protocol::RuntimeName,
    /// Where it came from: [`crate::runtimes::RuntimeProvenance::describe`].
    pub source: String,
    /// Its hello: `containerd 2.1.9+ds1-5 go1.27.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub said: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

impl RunRecord {
    pub fn read(path: &Path) -> anyhow::Result<RunRecord> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let run: RunRecord = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a run.json mmx can read", path.display()))?;
        anyhow::ensure!(
            run.schema_version == RUN_SCHEMA_VERSION,
            "{} has run schema version {}, this mmx reads version {RUN_SCHEMA_VERSION}",
            path.display(),
            run.schema_version
        );
        Ok(run)
    }

    /// Write atomically (a fresh temp file + rename) so a reader never sees half a file, and
    /// never through a symlink planted where run.json goes.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self).context("encoding run.json")?;
        crate::rundir::write_atomic(path, text.as_bytes())
    }

    pub fn cell(&self, key: &CellKey) -> Option<&CellRecord> {
        self.cells.iter().find(|c| &c.key == key)
    }

    pub fn boot(&self, key: &BootKey) -> Option<&BootRecord> {
        self.boots.iter().find(|b| &b.key == key)
    }

    /// Cells and boots in key order, whatever order they were gathered in.
    pub fn sort(&mut self) {
        self.cells.sort_by(|a, b| a.key.cmp(&b.key));
        self.boots.sort_by(|a, b| a.key.cmp(&b.key));
    }

    /// Count of cells per outcome, every outcome present (zeros included).
    pub fn outcome_counts(&self) -> BTreeMap<Outcome, usize> {
        let mut counts: BTreeMap<Outcome, usize> = Outcome::ALL.iter().map(|o| (*o, 0)).collect();
        for c in &self.cells {
            *counts.entry(c.outcome).or_default() += 1;
        }
        counts
    }
}

/// A run.json file, or the run.json of a run directory.
pub fn run_json_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("run.json")
    } else {
        p.to_path_buf()
    }
}

/// The machine running mmx.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HostInfo {
    pub hostname: String,
    pub cpu_model: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub kernel_release: String,
}

impl HostInfo {
    pub fn detect() -> HostInfo {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let memory_mib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb / 1024)
            .unwrap_or(0);
        HostInfo {
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_mib,
            kernel_release: read("/proc/sys/kernel/osrelease").trim().to_string(),
        }
    }
}

/// Which backend ran a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// The agent on the machine running mmx, in a private mount namespace.
    Local,
    /// A guest kernel in QEMU.
    Qemu,
    /// A metal host over SSH.
    Ssh,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Qemu => "qemu",
            BackendKind::Ssh => "ssh",
        }
    }
}

/// How the machine under test executed instructions: every number carries it. Guests get theirs
/// from the QEMU backend; local and SSH cells from what the agent measured there (`metal` only
/// when no hypervisor was seen, else `vm:<vendor>`).
///
/// In `run.json` it is one string (`kvm`, `tcg`, `tcg-mt`, `metal`, `vm:kvm`, …): the three
/// words older runs wrote still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Accel {
    /// Hardware virtualization of a guest mmx booted.
    Kvm,
    /// QEMU's software emulation on one host thread (`-accel tcg,thread=single`): functional
    /// answers are real, speeds are not the hardware's, and the vCPUs never run at the same time.
    Tcg,
    /// QEMU's software emulation with one host thread per vCPU (`-accel tcg,thread=multi`): the
    /// vCPUs run at once, so contention is real contention (on emulated instructions).
    TcgMt,
    /// No hypervisor under the kernel: the agent saw none on the local host or metal host.
    Metal,
    /// The local host or "metal" host is itself a virtual machine of this hypervisor.
    Vm(protocol::Hypervisor),
    /// A local or SSH visit that ended before its agent reported (no connection, interrupted):
    /// nothing was measured, so nothing is claimed.
    Unmeasured,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        use protocol::Hypervisor as H;
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
            Accel::TcgMt => "tcg-mt",
            Accel::Metal => "metal",
            Accel::Unmeasured => "unmeasured",
            Accel::Vm(h) => match h {
                H::Kvm => "vm:kvm",
                H::Firecracker => "vm:firecracker",
                H::QemuTcg => "vm:qemu-tcg",
                H::Xen => "vm:xen",
                H::HyperV => "vm:hyper-v",
                H::Vmware => "vm:vmware",
                H::VirtualBox => "vm:virtualbox",
                H::Bhyve => "vm:bhyve",
                H::Parallels => "vm:parallels",
                H::Acrn => "vm:acrn",
                H::Unknown => "vm:unknown",
            },
        }
    }

    /// Whether the vCPUs ran one at a time: then numbers from more than one thread measure
    /// QEMU's time slicing, not contention.
    pub fn vcpus_serialized(self) -> bool {
        matches!(self, Accel::Tcg)
    }

    /// QEMU emulates every instruction: slow, so watchdogs and item limits stretch.
    pub fn is_emulated(self) -> bool {
        matches!(self, Accel::Tcg | Accel::TcgMt)
    }

    /// The label of a machine the agent looked at: `metal` when it saw no hypervisor.
    pub fn measured(v: &protocol::Virtualization) -> Accel {
        v.hypervisor.map_or(Accel::Metal, Accel::Vm)
    }

    fn all() -> impl Iterator<Item = Accel> {
        [
            Accel::Kvm,
            Accel::Tcg,
            Accel::TcgMt,
            Accel::Metal,
            Accel::Unmeasured,
        ]
        .into_iter()
        .chain(protocol::Hypervisor::ALL.into_iter().map(Accel::Vm))
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Accel, String> {
        Accel::all()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown accelerator `{s}`"))
    }
}

impl Serialize for Accel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Accel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Accel, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a number came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub backend: BackendKind,
    pub accel: Accel,
    /// CPU model of the machine that executed the guest or agent.
    pub host_cpu: String,
    /// `uname -r` of the kernel under test, as the agent reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    /// Package and version (or path) the kernel came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_source: Option<String>,
    /// The topology the matrix asked for (None for hosts: they are what they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_topology: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_topology: Option<ObservedTopology>,
    /// Set when observed differs from requested: said on the cell, never hidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_mismatch: Option<String>,
    /// A runtime's cell: which runtime, built from what, and what it said it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<CellRuntime>,
}

/// One matrix cell's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// What the cell is; its `Display` is the id users read and filter by.
    pub key: CellKey,
    /// The scenario with every parameter (the key holds only what identifies it).
    pub scenario: Scenario,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// All samples of every repeat.
    #[serde(default)]
    pub metrics: BTreeMap<String, Metric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<CellDetail>,
    pub provenance: Provenance,
    /// The boot that ran the cell (see [`BootRecord`]).
    pub boot: BootKey,
    /// How many times the cell was tried (retries for infra errors only).
    pub attempts: u32,
    /// Repeats that produced a result.
    pub repeats: u32,
    /// The matrix's known answer for this cell, and whether it held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<ExpectationCheck>,
    /// What the harness knows about these numbers that the agent could not (`run::caveats`).
    #[serde(default, skip_serializing_if = "Caveats::is_empty")]
    pub caveats: Caveats,
}

/// What a cell's numbers are not, added when its boot folds: the agent knows what it measured,
/// the harness knows what was asked for and how the vCPUs ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Caveats {
    /// The vCPUs ran one at a time (single-threaded TCG) and the cell measured with more than
    /// one thread: its multi-thread lock points, and the metrics in `serialized_metrics`, are
    /// QEMU's time slicing, not contention.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vcpus_serialized: bool,
    /// Timing and rate metrics measured with more than one thread on serialized vCPUs:
    /// `mmx compare` does not gate on them unless asked (`--gate-serialized`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serialized_metrics: Vec<String>,
    /// Lock-benchmark points that cannot mean what they say on this machine, with why (e.g.
    /// `smt-siblings` pinning in a guest that sees no SMT siblings). Their metrics are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsupported_points: Vec<UnsupportedPoints>,
}

impl Caveats {
    pub fn is_empty(&self) -> bool {
        !self.vcpus_serialized
            && self.serialized_metrics.is_empty()
            && self.unsupported_points.is_empty()
    }

    /// Whether a lock point's number is time slicing rather than contention.
    pub fn point_serialized(&self, p: &protocol::lockbench::LockPoint) -> bool {
        self.vcpus_serialized && p.threads > 1
    }

    /// Whether a lock point was judged unsupported here.
    pub fn point_unsupported(&self, p: &protocol::lockbench::LockPoint) -> bool {
        self.unsupported_points
            .iter()
            .any(|u| u.pinning == p.pinning)
    }
}

/// The points of one pinning that are `unsupported`, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsupportedPoints {
    pub pinning: protocol::lockbench::Pinning,
    /// How many points of the detail it covers.
    pub points: usize,
    pub reason: String,
}

impl CellRecord {
    /// Whether this cell lets the run succeed: its expectation held, or, without one, it passed
    /// or was unsupported (an answer, not a failure).
    pub fn is_ok(&self) -> bool {
        match &self.expected {
            Some(check) => check.met,
            None => self.outcome.is_success(),
        }
    }
}

/// An expectation from the matrix, checked against a cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectationCheck {
    #[serde(flatten)]
    pub expectation: crate::matrix::Expectation,
    pub met: bool,
}

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
    fn accelerators_are_one_word_and_old_words_still_read() {
        for a in Accel::all() {
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<Accel>(&json).unwrap(), a, "{json}");
        }
        assert_eq!(
            serde_json::from_str::<Accel>("\"metal\"").unwrap(),
            Accel::Metal
        );
        assert_eq!(
            serde_json::to_string(&Accel::Vm(protocol::Hypervisor::HyperV)).unwrap(),
            "\"vm:hyper-v\""
        );
        assert!(serde_json::from_str::<Accel>("\"vm:nope\"").is_err());
        assert!(Accel::Tcg.vcpus_serialized() && !Accel::TcgMt.vcpus_serialized());
    }

    #[test]
    fn only_our_transient_breakage_is_retried() {
        assert!(InfraCause::Connection.is_retryable());
        assert!(!InfraCause::Cancelled.is_retryable());
        assert!(!InfraCause::ProtocolViolation.is_retryable());
        assert!(!InfraCause::OutputFlood.is_retryable());
    }
}
