//! The run: what was run, where from, on which machine, and every cell and boot it gathered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use protocol::Outcome;
use serde::{Deserialize, Serialize};

use super::{BootRecord, CellRecord, LockSubstitution, RuntimeProvenance};
use crate::cell::{BootKey, CellKey};

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
    pub provenance: Option<RuntimeProvenance>,
    /// The arguments the agent started it with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// SHA-256 of the executable every copy was checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<RuntimeBuild>,
    /// The archive no longer carried what runtimes.lock pins, and the runtime was built from
    /// what it carries now (never under `--locked` or `CI=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substituted: Option<LockSubstitution>,
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
        Ok(crate::rundir::write_atomic(path, text.as_bytes())?)
    }

    pub fn cell(&self, key: &CellKey) -> Option<&CellRecord> {
        self.cells.iter().find(|c| &c.key == key)
    }

    /// How many guests, local runs and host visits ran: records that name a guest count once
    /// per guest (a guest serves the boots of several filesystems), the others once each.
    pub fn booted(&self) -> usize {
        let guests: std::collections::BTreeSet<&str> = self
            .boots
            .iter()
            .filter_map(|b| b.guest.as_ref().map(|g| g.id.as_str()))
            .collect();
        guests.len() + self.boots.iter().filter(|b| b.guest.is_none()).count()
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
