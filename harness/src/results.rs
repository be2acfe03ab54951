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

/// Version of the `run.json` schema.
pub const RUN_SCHEMA_VERSION: u32 = 1;

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema_version: u32,
    pub mmx_version: String,
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

    /// Write atomically (temp file + rename) so a reader never sees half a file.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self).context("encoding run.json")?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    }

    pub fn cell(&self, id: &str) -> Option<&CellRecord> {
        self.cells.iter().find(|c| c.id == id)
    }

    pub fn boot(&self, id: &str) -> Option<&BootRecord> {
        self.boots.iter().find(|b| b.id == id)
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

/// How the machine under test executed instructions: every number carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's software emulation: functional answers are real, speeds are not the hardware's.
    Tcg,
    /// No virtualization layer added by mmx: the local host or a metal host.
    Metal,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
            Accel::Metal => "metal",
        }
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
}

/// One matrix cell's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// Stable, readable id: `debian-6.12/2s2c2t-numa2/ext4/per-layer-L50-C20-P2-J2`.
    pub id: String,
    /// Kernel recipe name (`debian-6.12`), `host` for local, the host's name for ssh.
    pub kernel: String,
    /// Topology name (`2s2c2t-numa2`), or the host's SMT setting (`smt-on`).
    pub topology: String,
    pub filesystem: String,
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
    pub boot_id: String,
    /// How many times the cell was tried (retries for infra errors only).
    pub attempts: u32,
    /// Repeats that produced a result.
    pub repeats: u32,
    /// The matrix's known answer for this cell, and whether it held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<ExpectationCheck>,
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
    /// The agent reported `Done`.
    Completed,
    /// A watchdog fired: `limit` says which (`boot`, `no-output`, `guest`, `item`).
    Timeout {
        limit: String,
        seconds: f64,
        excerpt: String,
    },
    /// The kernel panicked, oopsed or stalled, or the agent crashed: the console line that said so.
    Panic { line: String, excerpt: String },
    /// Our side broke before or around the guest: QEMU, a download, the disk image, SSH.
    Infra { message: String },
}

impl BootEnd {
    /// Outcome and evidence for a cell the boot never reported.
    pub fn outcome_for_unreported(&self) -> (Outcome, Evidence) {
        match self {
            BootEnd::Completed => (
                Outcome::InfraError,
                Evidence::new("agent finished without reporting this cell"),
            ),
            BootEnd::Timeout {
                limit,
                seconds,
                excerpt,
            } => (
                Outcome::Timeout,
                Evidence::new(format!("{limit} timeout after {seconds:.0} s"))
                    .with_detail(excerpt.clone()),
            ),
            BootEnd::Panic { line, excerpt } => (
                Outcome::Panic,
                Evidence::new(line.clone()).with_detail(excerpt.clone()),
            ),
            BootEnd::Infra { message } => (Outcome::InfraError, Evidence::new(message.clone())),
        }
    }

    pub fn is_completed(&self) -> bool {
        matches!(self, BootEnd::Completed)
    }
}

/// One guest boot or host visit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootRecord {
    pub id: String,
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
    pub cells: Vec<String>,
    pub attempts: u32,
}

/// A run directory: `run.json`, reports, and `logs/` with one file per boot and channel.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// Create `base/<run_id>/logs`.
    pub fn create(base: &Path, run_id: &str) -> anyhow::Result<RunDir> {
        let root = base.join(run_id);
        std::fs::create_dir_all(root.join("logs"))
            .with_context(|| format!("creating run directory {}", root.display()))?;
        Ok(RunDir { root })
    }

    pub fn run_json(&self) -> PathBuf {
        self.root.join("run.json")
    }

    /// Path of a log file for a boot, relative to the run dir (ids contain `/`: flattened).
    pub fn log_rel(boot_id: &str, channel: &str) -> PathBuf {
        let flat: String = boot_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        PathBuf::from("logs").join(format!("{flat}.{channel}.log"))
    }

    pub fn abs(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_are_flat_and_stable() {
        assert_eq!(
            RunDir::log_rel("debian-6.12/2s2c2t-numa2/ext4", "console"),
            PathBuf::from("logs/debian-6.12_2s2c2t-numa2_ext4.console.log")
        );
    }

    #[test]
    fn unreported_cells_take_the_boot_end() {
        let (o, e) = BootEnd::Panic {
            line: "Kernel panic - not syncing: VFS".into(),
            excerpt: String::new(),
        }
        .outcome_for_unreported();
        assert_eq!(o, Outcome::Panic);
        assert!(e.step.contains("Kernel panic"));
        let (o, _) = BootEnd::Infra {
            message: "qemu exited".into(),
        }
        .outcome_for_unreported();
        assert_eq!(o, Outcome::InfraError);
    }
}
