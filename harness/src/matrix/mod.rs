//! `matrix.toml` in two stages: [`raw`] mirrors the file with serde (spans kept, so every error
//! names the file, line and key) and checks it against `protocol::limits`; this module holds the
//! checked, resolved [`Matrix`] and expands it into [`Cell`]s, each with its typed
//! [`CellKey`](crate::cell::CellKey).

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use protocol::{Filesystem, Scenario, ScenarioKey};

use crate::cell::{CellKey, LayerFs, SmtSetting, TargetKey};

mod expect;
mod hosts;
mod raw;
mod ssh_options;

pub use expect::{filter_matches, glob_matches, Expectations};
pub use ssh_options::SshOption;

/// An error in the matrix file, located.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct MatrixError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The resolved matrix.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub path: PathBuf,
    /// The matrix file's directory (absolute): its relative paths start here.
    pub dir: PathBuf,
    pub repeats: u32,
    /// `[run] tcg_benchmarks`: what single-threaded TCG guests' benchmarks run
    /// (`results::Sizing::decide`).
    pub tcg_benchmarks: crate::results::TcgBenchmarks,
    /// Kernel recipe names (files `kernels/<name>.toml`).
    pub kernels: Vec<String>,
    pub topologies: Vec<Topology>,
    pub filesystems: Vec<Filesystem>,
    pub scenarios: Vec<Scenario>,
    /// Scenarios whose entry names `filesystems`: the guests' layer filesystems they run on
    /// (a subset of `filesystems`). Hosts and the local backend run every scenario on the
    /// filesystem they have.
    pub only_on: BTreeMap<ScenarioKey, Vec<Filesystem>>,
    pub hosts: Vec<Host>,
    /// `[[runtimes]]`: the recipes `runtime:NAME` strategies name, paths resolved against the
    /// matrix's directory.
    pub runtimes: Vec<crate::runtimes::RuntimeRecipe>,
    /// Scratch directory for the local backend (default: a temp dir under /var/tmp).
    pub local_scratch: Option<PathBuf>,
    /// Known answers, first match wins.
    pub expectations: Expectations,
}

/// A requested guest CPU topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Readable id, `2s2c2t-numa2` unless the matrix names it.
    pub name: String,
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
    pub memory_mib: u64,
    /// Empty: no NUMA nodes declared (QEMU makes one implicitly).
    pub numa: Vec<NumaSpec>,
}

impl Topology {
    /// sockets × cores × threads; checked against `protocol::limits::VCPUS` when parsed, so it
    /// cannot overflow.
    pub fn vcpus(&self) -> u32 {
        self.sockets * self.cores * self.threads
    }
}

/// One requested NUMA node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaSpec {
    pub cpus: Vec<u32>,
    pub memory_mib: u64,
    /// Distances to every node in order; None: QEMU's defaults (10 local, 20 remote).
    pub distances: Option<Vec<u32>>,
}

/// A metal host reached over SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    /// `user@host` or an ssh_config alias.
    pub destination: String,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub sudo: bool,
    /// At least one setting; each is a visit.
    pub smt: Vec<SmtSetting>,
    pub provision: Option<String>,
    pub teardown: Option<String>,
    pub scratch_dir: Option<PathBuf>,
    /// The filesystem the host's scratch dir must be on: an assertion the visit checks against
    /// the agent's measurement (`infra-error` naming both when it fails). None: the cells are
    /// labelled with whatever the agent measures.
    pub filesystem: Option<Filesystem>,
    /// Extra `-o` options for ssh, read as ssh reads them and checked against the policy
    /// (`ssh_options`); file paths in them resolved against the matrix's directory.
    pub ssh_options: Vec<SshOption>,
    /// The SMT control file on the host: always [`SMT_CONTROL`](crate::cell::SMT_CONTROL) for a
    /// matrix's host (no key sets it); the ssh tests point it at a plain file.
    pub smt_control: PathBuf,
    /// The matrix's directory: provision and teardown hooks run there.
    pub base_dir: PathBuf,
}

/// Where a cell runs, with everything the backend needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A kernel recipe booted in QEMU with a topology.
    Qemu { kernel: String, topology: Topology },
    /// This machine's own kernel.
    Local,
    /// A metal host under an SMT setting.
    Ssh { host: Host, smt: SmtSetting },
}

impl Target {
    pub fn key(&self) -> TargetKey {
        match self {
            Target::Qemu { kernel, topology } => TargetKey::Qemu {
                kernel: kernel.clone(),
                topology: topology.name.clone(),
            },
            Target::Local => TargetKey::Local,
            Target::Ssh { host, smt } => TargetKey::Ssh {
                host: host.name.clone(),
                smt: *smt,
            },
        }
    }
}

/// One cell: its key, and where and what in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub key: CellKey,
    pub target: Target,
    pub scenario: Scenario,
}

impl Cell {
    fn new(target: Target, filesystem: LayerFs, scenario: &Scenario) -> Cell {
        Cell {
            key: CellKey::new(target.key(), filesystem, scenario.key()),
            target,
            scenario: scenario.clone(),
        }
    }
}

impl Matrix {
    /// Read and check a matrix file.
    pub fn load(path: &Path) -> Result<Matrix, MatrixError> {
        let text = std::fs::read_to_string(path).map_err(|e| MatrixError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the matrix: {e}"),
        })?;
        Matrix::parse(path, &text)
    }

    /// Parse and check matrix text; `path` is only used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Matrix, MatrixError> {
        raw::resolve(path, text)
    }

    /// `kernels/` beside the matrix file: its recipes and `kernels.lock`.
    pub fn kernels_dir(&self) -> PathBuf {
        self.dir.join("kernels")
    }

    /// `runtimes/runtimes.lock` beside the matrix file: the Debian packages containerd recipes
    /// build from (`mmx runtimes lock`).
    pub fn runtimes_lock(&self) -> PathBuf {
        self.dir.join("runtimes").join("runtimes.lock")
    }

    /// The runtimes the matrix's cells start.
    pub fn used_runtimes(&self) -> std::collections::BTreeSet<protocol::RuntimeName> {
        self.scenarios
            .iter()
            .filter_map(|s| s.runtime().cloned())
            .collect()
    }

    /// QEMU cells: kernel × topology × filesystem × scenario, except that a scenario whose entry
    /// names `filesystems` runs only on those, and one which never touches the layers'
    /// filesystem ([`uses_layer_fs`]) runs once per kernel × topology, on
    /// [`Matrix::independent_fs`].
    pub fn qemu_cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for k in &self.kernels {
            for t in &self.topologies {
                for fs in &self.filesystems {
                    for s in &self.scenarios {
                        if !self.guest_filesystems(s).contains(fs) {
                            continue;
                        }
                        let target = Target::Qemu {
                            kernel: k.clone(),
                            topology: t.clone(),
                        };
                        cells.push(Cell::new(target, LayerFs::Known(*fs), s));
                    }
                }
            }
        }
        cells
    }

    /// The layer filesystems guests run `s` on.
    pub fn guest_filesystems(&self, s: &Scenario) -> Vec<Filesystem> {
        if let Some(only) = self.only_on.get(&s.key()) {
            return only.clone();
        }
        if uses_layer_fs(s) {
            return self.filesystems.clone();
        }
        self.independent_fs().into_iter().collect()
    }

    /// The filesystem guests run filesystem-independent scenarios on: tmpfs when the matrix
    /// lists it (no disk image, the fastest boot), else the first listed.
    pub fn independent_fs(&self) -> Option<Filesystem> {
        if self.filesystems.contains(&Filesystem::Tmpfs) {
            Some(Filesystem::Tmpfs)
        } else {
            self.filesystems.first().copied()
        }
    }

    /// Local cells: the host's own kernel, on the scratch directory's filesystem `fs` (measured
    /// by statfs before the run, checked against the agent's measurement after).
    pub fn local_cells(&self, fs: LayerFs) -> Vec<Cell> {
        self.scenarios
            .iter()
            .map(|s| Cell::new(Target::Local, fs, s))
            .collect()
    }

    /// Metal cells: host × SMT setting × scenario, on the host's declared filesystem, or
    /// [`LayerFs::Unmeasured`] until the visit measures it.
    pub fn ssh_cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for h in &self.hosts {
            let fs = h.filesystem.map_or(LayerFs::Unmeasured, LayerFs::Known);
            for smt in &h.smt {
                for s in &self.scenarios {
                    let target = Target::Ssh {
                        host: h.clone(),
                        smt: *smt,
                    };
                    cells.push(Cell::new(target, fs, s));
                }
            }
        }
        cells
    }
}

/// Whether a scenario's results depend on the layers' filesystem. Only user-spin does not: it
/// spins on a lock in memory and never opens a file. Every other benchmark mounts, reads the
/// mount table or builds rootfses on the layers.
pub fn uses_layer_fs(s: &Scenario) -> bool {
    match s {
        Scenario::Mounts(_) => true,
        Scenario::Lockbench(l) => l.bench != protocol::lockbench::Bench::UserSpin,
    }
}

/// Parse a CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<u32>, String> {
    let mut out = std::collections::BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let num = |x: &str| -> Result<u32, String> {
            x.parse()
                .map_err(|_| format!("`{part}` in cpu list `{s}` is not a number or range"))
        };
        let (a, b) = (num(a)?, num(b)?);
        if b < a {
            return Err(format!("range `{part}` in cpu list `{s}` runs backwards"));
        }
        let vcpus = protocol::limits::VCPUS.max as u32;
        if b >= vcpus {
            return Err(format!(
                "cpu {b} in cpu list `{s}` is past the most vCPUs mmx starts ({vcpus})"
            ));
        }
        out.extend(a..=b);
    }
    if out.is_empty() {
        return Err(format!("cpu list `{s}` is empty"));
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests;
