//! `matrix.toml` in two stages: serde types that mirror the file (with spans, so every error
//! names the file, line and key), then checked, resolved [`Matrix`] and [`Cell`]s with enums
//! instead of optional fields checked at run time.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use protocol::lockbench::{Bench, LockKind, LockbenchScenario, Pinning};
use protocol::{Filesystem, MountsScenario, Outcome, Scenario, Strategy};
use serde::Deserialize;
use toml::Spanned;

/// An error in the matrix file, located.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct MatrixError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Limits that keep a typo from asking for a week of work.
pub const MAX_LAYERS: u32 = 500;
pub const MAX_CONTAINERS: u32 = 10_000;
pub const MAX_REPEATS: u32 = 100;

// ---------------------------------------------------------------------------------------------
// Stage 1: the file as written.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatrix {
    #[serde(default)]
    run: RawRun,
    #[serde(default)]
    kernels: Vec<Spanned<String>>,
    #[serde(default)]
    topologies: Vec<Spanned<RawTopology>>,
    #[serde(default)]
    filesystems: Vec<Spanned<String>>,
    #[serde(default)]
    scenarios: Vec<Spanned<RawScenario>>,
    #[serde(default)]
    hosts: Vec<Spanned<RawHost>>,
    #[serde(default)]
    local: RawLocal,
    #[serde(default)]
    expect: Vec<Spanned<RawExpect>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    cells: String,
    outcome: String,
    errno: Option<String>,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    #[serde(default = "one")]
    repeats: Spanned<u32>,
    /// Guest memory when a topology does not say.
    #[serde(default = "default_memory")]
    memory_mib: u64,
}

impl Default for RawRun {
    fn default() -> Self {
        RawRun {
            repeats: Spanned::new(0..0, 1),
            memory_mib: default_memory(),
        }
    }
}

fn one() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

fn default_memory() -> u64 {
    1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    name: Option<String>,
    #[serde(default = "one_u32")]
    sockets: u32,
    #[serde(default = "one_u32")]
    cores: u32,
    #[serde(default = "one_u32")]
    threads: u32,
    memory_mib: Option<u64>,
    #[serde(default)]
    numa: Vec<RawNumaNode>,
}

fn one_u32() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNumaNode {
    cpus: String,
    memory_mib: u64,
    distances: Option<Vec<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum RawScenario {
    Mounts {
        #[serde(default = "all_strategies")]
        strategies: Vec<String>,
        layers: Vec<u32>,
        #[serde(default = "default_containers")]
        containers: Vec<u32>,
        #[serde(default = "default_concurrency")]
        concurrency: Vec<u32>,
        #[serde(default = "default_passes")]
        passes: u32,
    },
    Lockbench {
        bench: Bench,
        #[serde(default)]
        threads: Vec<u32>,
        locks: Option<Vec<LockKind>>,
        pinning: Option<Vec<Pinning>>,
        warmup_ms: Option<u64>,
        duration_ms: Option<u64>,
        readers: Option<u32>,
        table_sizes: Option<Vec<u32>>,
        strategies: Option<Vec<String>>,
        layers: Option<u32>,
        containers: Option<u32>,
        #[serde(default)]
        toggle_smt: bool,
    },
}

fn all_strategies() -> Vec<String> {
    Strategy::ALL.iter().map(|s| s.to_string()).collect()
}
fn default_containers() -> Vec<u32> {
    vec![20]
}
fn default_concurrency() -> Vec<u32> {
    vec![1]
}
fn default_passes() -> u32 {
    2
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: String,
    destination: String,
    port: Option<u16>,
    identity_file: Option<PathBuf>,
    #[serde(default)]
    sudo: bool,
    #[serde(default = "default_smt")]
    smt: Vec<String>,
    provision: Option<String>,
    teardown: Option<String>,
    scratch_dir: Option<PathBuf>,
    /// Filesystem of `scratch_dir` on that host (default ext4); the agent reports what it found.
    filesystem: Option<String>,
    /// Extra `-o Key=Value` options for ssh (e.g. `UserKnownHostsFile=…`).
    #[serde(default)]
    ssh_options: Vec<String>,
}

fn default_smt() -> Vec<String> {
    vec!["as-is".into()]
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLocal {
    scratch_dir: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// Stage 2: checked and resolved.
// ---------------------------------------------------------------------------------------------

/// The resolved matrix.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub path: PathBuf,
    pub repeats: u32,
    /// Kernel recipe names (files `kernels/<name>.toml`).
    pub kernels: Vec<String>,
    pub topologies: Vec<Topology>,
    pub filesystems: Vec<Filesystem>,
    pub scenarios: Vec<Scenario>,
    pub hosts: Vec<Host>,
    /// Scratch directory for the local backend (default: a temp dir under /var/tmp).
    pub local_scratch: Option<PathBuf>,
    /// Known answers, first match wins.
    pub expectations: Vec<Expectation>,
}

/// A known answer: cells whose id matches `pattern` must end as `outcome` (and, when `errno` is
/// given, with that errno in the evidence). A run exits 0 only when every cell passed or was
/// unsupported where no expectation says otherwise, and every expectation held.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expectation {
    /// A cell-id glob: `*` matches any run of characters, anchored at both ends.
    pub pattern: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Expectation {
    /// Whether an outcome and its evidence are what this expectation says.
    pub fn is_met(&self, outcome: Outcome, evidence: Option<&protocol::Evidence>) -> bool {
        outcome == self.outcome
            && self
                .errno
                .as_deref()
                .is_none_or(|want| evidence.and_then(|e| e.errno_name.as_deref()) == Some(want))
    }
}

/// Anchored glob match: `*` matches any run of characters (including `/`).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.len() >= part.len() && rest.ends_with(part);
        } else if let Some(pos) = rest.find(part) {
            rest = &rest[pos + part.len()..];
        } else {
            return false;
        }
    }
    true
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
    pub fn vcpus(&self) -> u32 {
        self.sockets * self.cores * self.threads
    }

    fn derived_name(sockets: u32, cores: u32, threads: u32, nodes: usize) -> String {
        let mut s = format!("{sockets}s{cores}c{threads}t");
        if nodes > 1 {
            s.push_str(&format!("-numa{nodes}"));
        }
        s
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
    pub smt: Vec<SmtSetting>,
    pub provision: Option<String>,
    pub teardown: Option<String>,
    pub scratch_dir: Option<PathBuf>,
    /// The filesystem the host's scratch dir is on: the cells' filesystem column.
    pub filesystem: Filesystem,
    pub ssh_options: Vec<String>,
}

/// SMT state a host's cells run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SmtSetting {
    /// Leave the host as it is.
    AsIs,
    On,
    Off,
}

impl SmtSetting {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtSetting::AsIs => "smt-as-is",
            SmtSetting::On => "smt-on",
            SmtSetting::Off => "smt-off",
        }
    }
}

/// Where a cell runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A kernel recipe booted in QEMU with a topology.
    Qemu { kernel: String, topology: Topology },
    /// This machine's own kernel.
    Local,
    /// A metal host under an SMT setting.
    Ssh { host: Host, smt: SmtSetting },
}

/// One cell: where, on which filesystem, doing what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub id: CellId,
    pub target: Target,
    pub filesystem: Filesystem,
    pub scenario: Scenario,
}

impl Cell {
    /// Cells that share this key share one boot (guest or host visit).
    pub fn boot_key(&self) -> String {
        let (k, t, f, _) = self.id.parts();
        format!("{k}/{t}/{f}")
    }

    pub fn kernel_label(&self) -> String {
        self.id.parts().0.to_string()
    }

    pub fn topology_label(&self) -> String {
        self.id.parts().1.to_string()
    }
}

/// `kernel/topology/filesystem/scenario`, stable across runs and readable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CellId(String);

impl CellId {
    pub fn new(kernel: &str, topology: &str, fs: &str, scenario: &str) -> CellId {
        CellId(format!("{kernel}/{topology}/{fs}/{scenario}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// (kernel, topology, filesystem, scenario); ids are built by [`CellId::new`] so four parts
    /// always exist, and no part contains `/`.
    pub fn parts(&self) -> (&str, &str, &str, &str) {
        let mut it = self.0.splitn(4, '/');
        let mut next = || it.next().unwrap_or("");
        (next(), next(), next(), next())
    }
}

impl fmt::Display for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
        let err = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = span.map_or((0, 0), |s| line_col(text, s.start));
            MatrixError {
                file: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let raw: RawMatrix = toml::from_str(text).map_err(|e| {
            // toml's message already quotes the offending line; keep its first line only.
            let msg = e.message().to_string();
            err(e.span(), msg)
        })?;

        let repeats = *raw.run.repeats.get_ref();
        if repeats == 0 || repeats > MAX_REPEATS {
            return Err(err(
                Some(raw.run.repeats.span()),
                format!("run.repeats = {repeats}: must be 1..={MAX_REPEATS}"),
            ));
        }

        let mut kernels = Vec::new();
        for k in &raw.kernels {
            let name = k.get_ref();
            if name.is_empty() || name.contains('/') || name.contains(char::is_whitespace) {
                return Err(err(
                    Some(k.span()),
                    format!("kernels: `{name}` is not a recipe name (a file kernels/<name>.toml)"),
                ));
            }
            if kernels.contains(name) {
                return Err(err(
                    Some(k.span()),
                    format!("kernels: `{name}` listed twice"),
                ));
            }
            kernels.push(name.clone());
        }

        let mut topologies = Vec::new();
        for t in &raw.topologies {
            let topo = resolve_topology(t.get_ref(), raw.run.memory_mib)
                .map_err(|m| err(Some(t.span()), format!("topologies: {m}")))?;
            if topologies.iter().any(|o: &Topology| o.name == topo.name) {
                return Err(err(
                    Some(t.span()),
                    format!("topologies: two topologies are named `{}`", topo.name),
                ));
            }
            topologies.push(topo);
        }
        if !kernels.is_empty() && topologies.is_empty() {
            topologies.push(Topology {
                name: "1s2c1t".into(),
                sockets: 1,
                cores: 2,
                threads: 1,
                memory_mib: raw.run.memory_mib,
                numa: Vec::new(),
            });
        }

        let mut filesystems = Vec::new();
        for f in &raw.filesystems {
            let fs: Filesystem = f
                .get_ref()
                .parse()
                .map_err(|m| err(Some(f.span()), format!("filesystems: {m}")))?;
            if !filesystems.contains(&fs) {
                filesystems.push(fs);
            }
        }
        if filesystems.is_empty() {
            filesystems.push(Filesystem::Ext4);
        }

        let mut scenarios = Vec::new();
        for s in &raw.scenarios {
            let expanded = resolve_scenario(s.get_ref())
                .map_err(|m| err(Some(s.span()), format!("scenarios: {m}")))?;
            for sc in expanded {
                if !scenarios.contains(&sc) {
                    scenarios.push(sc);
                }
            }
        }
        if scenarios.is_empty() {
            return Err(err(None, "no [[scenarios]]: nothing to run".into()));
        }

        let mut hosts = Vec::new();
        for h in &raw.hosts {
            let host = resolve_host(h.get_ref())
                .map_err(|m| err(Some(h.span()), format!("hosts: {m}")))?;
            if hosts.iter().any(|o: &Host| o.name == host.name) {
                return Err(err(
                    Some(h.span()),
                    format!("hosts: two hosts are named `{}`", host.name),
                ));
            }
            hosts.push(host);
        }

        let mut expectations = Vec::new();
        for e in &raw.expect {
            let r = e.get_ref();
            let outcome = Outcome::ALL
                .into_iter()
                .find(|o| o.as_str() == r.outcome)
                .ok_or_else(|| {
                    err(
                        Some(e.span()),
                        format!(
                            "expect: outcome `{}` (expected pass, fail, unsupported, timeout, panic or infra-error)",
                            r.outcome
                        ),
                    )
                })?;
            if let Some(errno) = &r.errno {
                if !errno.starts_with('E') || !errno.chars().all(|c| c.is_ascii_uppercase()) {
                    return Err(err(
                        Some(e.span()),
                        format!("expect: errno `{errno}` is not a symbolic errno like EINVAL"),
                    ));
                }
            }
            if r.cells.is_empty() {
                return Err(err(Some(e.span()), "expect: `cells` is empty".into()));
            }
            expectations.push(Expectation {
                pattern: r.cells.clone(),
                outcome,
                errno: r.errno.clone(),
                reason: r.reason.clone(),
            });
        }

        Ok(Matrix {
            expectations,
            path: path.to_path_buf(),
            repeats,
            kernels,
            topologies,
            filesystems,
            scenarios,
            hosts,
            local_scratch: raw.local.scratch_dir,
        })
    }

    /// The first expectation whose pattern matches a cell id.
    pub fn expectation_for(&self, cell_id: &str) -> Option<&Expectation> {
        self.expectations
            .iter()
            .find(|e| glob_matches(&e.pattern, cell_id))
    }

    /// QEMU cells: kernel × topology × filesystem × scenario.
    pub fn qemu_cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for k in &self.kernels {
            for t in &self.topologies {
                for fs in &self.filesystems {
                    for s in &self.scenarios {
                        cells.push(Cell {
                            id: CellId::new(k, &t.name, fs.as_str(), &s.label()),
                            target: Target::Qemu {
                                kernel: k.clone(),
                                topology: t.clone(),
                            },
                            filesystem: *fs,
                            scenario: s.clone(),
                        });
                    }
                }
            }
        }
        cells
    }

    /// Local cells: the host's own kernel, on the scratch directory's filesystem `fs`.
    pub fn local_cells(&self, fs: Filesystem) -> Vec<Cell> {
        self.scenarios
            .iter()
            .map(|s| Cell {
                id: CellId::new("local", "host", fs.as_str(), &s.label()),
                target: Target::Local,
                filesystem: fs,
                scenario: s.clone(),
            })
            .collect()
    }

    /// Metal cells: host × SMT setting × scenario, on the host scratch dir's filesystem (ext4
    /// unless the matrix lists exactly one other).
    pub fn ssh_cells(&self) -> Vec<Cell> {
        let fs = self
            .filesystems
            .first()
            .copied()
            .unwrap_or(Filesystem::Ext4);
        let mut cells = Vec::new();
        for h in &self.hosts {
            for smt in &h.smt {
                for s in &self.scenarios {
                    cells.push(Cell {
                        id: CellId::new(&h.name, smt.as_str(), fs.as_str(), &s.label()),
                        target: Target::Ssh {
                            host: h.clone(),
                            smt: *smt,
                        },
                        filesystem: fs,
                        scenario: s.clone(),
                    });
                }
            }
        }
        cells
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Parse a CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<u32>, String> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u32 = a
            .parse()
            .map_err(|_| format!("`{part}` in cpu list `{s}` is not a number or range"))?;
        let b: u32 = b
            .parse()
            .map_err(|_| format!("`{part}` in cpu list `{s}` is not a number or range"))?;
        if b < a {
            return Err(format!("range `{part}` in cpu list `{s}` runs backwards"));
        }
        out.extend(a..=b);
    }
    if out.is_empty() {
        return Err(format!("cpu list `{s}` is empty"));
    }
    Ok(out.into_iter().collect())
}

fn resolve_topology(t: &RawTopology, default_memory: u64) -> Result<Topology, String> {
    let RawTopology {
        name,
        sockets,
        cores,
        threads,
        memory_mib,
        numa,
    } = t;
    if *sockets == 0 || *cores == 0 || *threads == 0 {
        return Err("sockets, cores and threads must each be at least 1".into());
    }
    let vcpus = sockets * cores * threads;
    if vcpus > 256 {
        return Err(format!("{vcpus} vCPUs is more than mmx will start (256)"));
    }
    let memory_mib = memory_mib.unwrap_or(default_memory);
    if memory_mib < 128 {
        return Err(format!(
            "memory_mib = {memory_mib}: a guest needs at least 128 MiB"
        ));
    }
    let mut nodes = Vec::new();
    let mut seen = BTreeSet::new();
    for n in numa {
        let cpus = parse_cpu_list(&n.cpus)?;
        for c in &cpus {
            if *c >= vcpus {
                return Err(format!(
                    "numa node cpus `{}`: cpu {c} does not exist ({vcpus} vCPUs)",
                    n.cpus
                ));
            }
            if !seen.insert(*c) {
                return Err(format!("numa: cpu {c} is in two nodes"));
            }
        }
        if let Some(d) = &n.distances {
            if d.len() != numa.len() {
                return Err(format!(
                    "numa node distances has {} entries, need one per node ({})",
                    d.len(),
                    numa.len()
                ));
            }
        }
        nodes.push(NumaSpec {
            cpus,
            memory_mib: n.memory_mib,
            distances: n.distances.clone(),
        });
    }
    if !nodes.is_empty() {
        if seen.len() as u32 != vcpus {
            return Err(format!(
                "numa nodes cover {} of {vcpus} vCPUs; every vCPU needs a node",
                seen.len()
            ));
        }
        let total: u64 = nodes.iter().map(|n| n.memory_mib).sum();
        if total != memory_mib {
            return Err(format!(
                "numa node memory adds up to {total} MiB but memory_mib is {memory_mib}"
            ));
        }
    }
    let name = match name {
        Some(n) if n.is_empty() || n.contains('/') => {
            return Err(format!("name `{n}` must be non-empty and contain no `/`"))
        }
        Some(n) => n.clone(),
        None => Topology::derived_name(*sockets, *cores, *threads, nodes.len()),
    };
    Ok(Topology {
        name,
        sockets: *sockets,
        cores: *cores,
        threads: *threads,
        memory_mib,
        numa: nodes,
    })
}

fn parse_list<T: std::str::FromStr<Err = String>>(v: &[String]) -> Result<Vec<T>, String> {
    v.iter().map(|s| s.parse()).collect()
}

fn resolve_scenario(s: &RawScenario) -> Result<Vec<Scenario>, String> {
    match s {
        RawScenario::Mounts {
            strategies,
            layers,
            containers,
            concurrency,
            passes,
        } => {
            let strategies: Vec<Strategy> = parse_list(strategies)?;
            if strategies.is_empty()
                || layers.is_empty()
                || containers.is_empty()
                || concurrency.is_empty()
            {
                return Err("mounts: strategies, layers, containers and concurrency need at least one value each".into());
            }
            if *passes == 0 || *passes > 10 {
                return Err(format!("mounts: passes = {passes}: must be 1..=10"));
            }
            let mut out = Vec::new();
            for st in &strategies {
                for l in layers {
                    if *l == 0 || *l > MAX_LAYERS {
                        return Err(format!("mounts: layers = {l}: must be 1..={MAX_LAYERS}"));
                    }
                    for c in containers {
                        if *c == 0 || *c > MAX_CONTAINERS {
                            return Err(format!(
                                "mounts: containers = {c}: must be 1..={MAX_CONTAINERS}"
                            ));
                        }
                        for j in concurrency {
                            if *j == 0 || j > c {
                                return Err(format!(
                                    "mounts: concurrency = {j} with containers = {c}: must be 1..=containers"
                                ));
                            }
                            out.push(Scenario::Mounts(MountsScenario {
                                strategy: *st,
                                layers: *l,
                                containers: *c,
                                concurrency: *j,
                                passes: *passes,
                            }));
                        }
                    }
                }
            }
            Ok(out)
        }
        RawScenario::Lockbench {
            bench,
            threads,
            locks,
            pinning,
            warmup_ms,
            duration_ms,
            readers,
            table_sizes,
            strategies,
            layers,
            containers,
            toggle_smt,
        } => {
            let d = LockbenchScenario::default();
            let locks = locks.clone().unwrap_or_else(|| d.locks.clone());
            let pinning = pinning.clone().unwrap_or_else(|| d.pinning.clone());
            if locks.is_empty() || pinning.is_empty() {
                return Err("lockbench: locks and pinning need at least one value each".into());
            }
            if threads.contains(&0) {
                return Err("lockbench: a thread count of 0".into());
            }
            let duration_ms = duration_ms.unwrap_or(d.duration_ms);
            if duration_ms == 0 || duration_ms > 600_000 {
                return Err(format!(
                    "lockbench: duration_ms = {duration_ms}: must be 1..=600000"
                ));
            }
            Ok(vec![Scenario::Lockbench(LockbenchScenario {
                bench: *bench,
                threads: threads.clone(),
                locks,
                pinning,
                warmup_ms: warmup_ms.unwrap_or(d.warmup_ms),
                duration_ms,
                readers: readers.unwrap_or(d.readers),
                table_sizes: table_sizes.clone().unwrap_or(d.table_sizes),
                strategies: match strategies {
                    Some(v) => parse_list(v)?,
                    None => d.strategies,
                },
                layers: layers.unwrap_or(d.layers),
                containers: containers.unwrap_or(d.containers),
                toggle_smt: *toggle_smt,
                ..d
            })])
        }
    }
}

fn resolve_host(h: &RawHost) -> Result<Host, String> {
    if h.name.is_empty() || h.name.contains('/') || h.name.contains(char::is_whitespace) {
        return Err(format!(
            "name `{}` must be non-empty, without `/` or spaces",
            h.name
        ));
    }
    if h.destination.is_empty() || h.destination.starts_with('-') {
        return Err(format!(
            "host `{}`: destination `{}` is not an ssh destination",
            h.name, h.destination
        ));
    }
    let mut smt = Vec::new();
    for s in &h.smt {
        let v = match s.as_str() {
            "on" => SmtSetting::On,
            "off" => SmtSetting::Off,
            "as-is" => SmtSetting::AsIs,
            o => {
                return Err(format!(
                    "host `{}`: smt `{o}` (expected on, off or as-is)",
                    h.name
                ))
            }
        };
        if !smt.contains(&v) {
            smt.push(v);
        }
    }
    let filesystem = match &h.filesystem {
        None => Filesystem::Ext4,
        Some(f) => f.parse().map_err(|e| format!("host `{}`: {e}", h.name))?,
    };
    Ok(Host {
        filesystem,
        name: h.name.clone(),
        destination: h.destination.clone(),
        port: h.port,
        identity_file: h.identity_file.clone(),
        sudo: h.sudo,
        smt,
        provision: h.provision.clone(),
        teardown: h.teardown.clone(),
        scratch_dir: h.scratch_dir.clone(),
        ssh_options: h.ssh_options.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Matrix, MatrixError> {
        Matrix::parse(Path::new("matrix.toml"), text)
    }

    const GOOD: &str = r#"
kernels = ["debian-6.1", "debian-6.12"]
filesystems = ["ext4", "tmpfs"]

[run]
repeats = 2

[[topologies]]
sockets = 2
cores = 1
threads = 2
memory_mib = 1024
numa = [{ cpus = "0-1", memory_mib = 512 }, { cpus = "2-3", memory_mib = 512 }]

[[scenarios]]
kind = "mounts"
strategies = ["per-layer", "fsconfig-fd"]
layers = [1, 10]
containers = [4]
concurrency = [1, 2]
"#;

    #[test]
    fn good_matrix_expands_to_stable_cells() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.repeats, 2);
        assert_eq!(m.topologies[0].name, "2s1c2t-numa2");
        assert_eq!(m.topologies[0].vcpus(), 4);
        assert_eq!(m.scenarios.len(), 2 * 2 * 2);
        let cells = m.qemu_cells();
        assert_eq!(cells.len(), 2 * 2 * 8);
        assert_eq!(
            cells[0].id.as_str(),
            "debian-6.1/2s1c2t-numa2/ext4/per-layer-L1-C4-P2-J1"
        );
        assert_eq!(cells[0].boot_key(), "debian-6.1/2s1c2t-numa2/ext4");
        let ids: BTreeSet<_> = cells.iter().map(|c| c.id.clone()).collect();
        assert_eq!(ids.len(), cells.len(), "cell ids are unique");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = parse("kernels = [\"a\"]\n[[scenarios]]\nkind = \"mounts\"\nlayers = [0]\n")
            .unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("matrix.toml:2:"), "{s}");
        assert!(s.contains("layers = 0"), "{s}");

        let e = parse("[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\nconcurrency = [30]\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("concurrency = 30 with containers = 20"),
            "{e}"
        );

        let e = parse("filesystems = [\"zfs\"]\n").unwrap_err();
        assert_eq!((e.line, e.file.as_path()), (1, Path::new("matrix.toml")));
        assert!(e.to_string().contains("unknown filesystem `zfs`"), "{e}");

        let e = parse("kernels = [\"a\"]\nbogus = 1\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.to_string().contains("bogus"), "{e}");

        let e = parse("[[scenarios]]\nkind = \"mounts\"\nlayers = [100000]\n").unwrap_err();
        assert!(e.to_string().contains("must be 1..=500"), "{e}");

        let e = parse("[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\n[run]\nrepeats = 0\n")
            .unwrap_err();
        assert_eq!(e.line, 5, "{e}");
    }

    #[test]
    fn numa_must_cover_every_cpu_and_all_memory() {
        let base = "[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\n[[topologies]]\nsockets = 2\nmemory_mib = 1024\n";
        let e = parse(&format!(
            "{base}numa = [{{ cpus = \"0\", memory_mib = 1024 }}]\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("cover 1 of 2"), "{e}");
        let e = parse(&format!(
            "{base}numa = [{{ cpus = \"0\", memory_mib = 100 }}, {{ cpus = \"1\", memory_mib = 100 }}]\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("adds up to 200"), "{e}");
        let e = parse(&format!(
            "{base}numa = [{{ cpus = \"0-5\", memory_mib = 1024 }}]\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("cpu 2 does not exist"), "{e}");
    }

    #[test]
    fn expectations_match_first_and_check_errno() {
        let m = parse(
            r#"
[[scenarios]]
kind = "mounts"
layers = [1]

[[expect]]
cells = "k1/*/tmpfs/*"
outcome = "unsupported"
errno = "EINVAL"

[[expect]]
cells = "*"
outcome = "pass"
"#,
        )
        .unwrap();
        let e = m.expectation_for("k1/t/tmpfs/per-layer-L1").unwrap();
        assert_eq!(e.outcome, Outcome::Unsupported);
        let einval = protocol::Evidence::new("mount_setattr").with_errno(22);
        let ebadf = protocol::Evidence::new("fsconfig").with_errno(9);
        assert!(e.is_met(Outcome::Unsupported, Some(&einval)));
        assert!(!e.is_met(Outcome::Unsupported, Some(&ebadf)));
        assert!(!e.is_met(Outcome::Pass, None));
        let e = m.expectation_for("k1/t/ext4/per-layer-L1").unwrap();
        assert!(e.is_met(Outcome::Pass, None));

        let bad = parse("[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\n[[expect]]\ncells = \"*\"\noutcome = \"fine\"\n")
            .unwrap_err();
        assert_eq!(bad.line, 4, "{bad}");
        assert!(bad.to_string().contains("outcome `fine`"), "{bad}");
    }

    #[test]
    fn globs_are_anchored() {
        assert!(glob_matches("*", "a/b"));
        assert!(glob_matches("a/*/c", "a/b/x/c"));
        assert!(!glob_matches("a/*/c", "a/b/cd"));
        assert!(glob_matches("debian-6.1/*", "debian-6.1/t/ext4/x"));
        assert!(!glob_matches("debian-6.1/*", "debian-6.12/t/ext4/x"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
        assert!(glob_matches("a*a", "aa"));
        assert!(!glob_matches("a*a", "a"));
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn hosts_and_lockbench_resolve() {
        let m = parse(
            r#"
[[scenarios]]
kind = "lockbench"
bench = "user-spin"
threads = [1, 2]
locks = ["tas", "mutex"]

[[hosts]]
name = "lab1"
destination = "root@lab1"
smt = ["on", "off"]
"#,
        )
        .unwrap();
        let cells = m.ssh_cells();
        assert_eq!(cells.len(), 2);
        assert_eq!(
            cells[1].id.as_str(),
            "lab1/smt-off/ext4/lockbench-user-spin"
        );
        let e = parse("[[scenarios]]\nkind = \"lockbench\"\nbench = \"nope\"\n").unwrap_err();
        assert!(e.to_string().contains("`nope`"), "{e}");
        assert!(
            e.to_string().contains("user-spin"),
            "names the choices: {e}"
        );
        let e = parse(
            "[[scenarios]]\nkind = \"lockbench\"\nbench = \"user-spin\"\npinning = [\"all\"]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("`all`"), "{e}");
    }

    #[test]
    fn default_matrix_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../matrix.toml");
        let m = Matrix::load(&path).unwrap();
        assert!(
            m.kernels.len() >= 3,
            "the default matrix covers at least three kernels"
        );
        assert!(!m.qemu_cells().is_empty());
    }
}
