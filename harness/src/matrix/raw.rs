//! Stage 1 of `matrix.toml`: serde types that mirror the file, and their resolution into a
//! checked [`Matrix`]. Every number goes through `protocol::limits` (the agent checks the same
//! ranges), arithmetic on user numbers is checked, and every error carries the file, the line of
//! the table it is in and the key. `[[hosts]]` are `super::hosts`; `[[runtimes]]` are
//! `crate::runtimes::RuntimeRecipe`s, and a `runtime:NAME` strategy must name one.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use protocol::limits::{self, LimitError};
use protocol::lockbench::{Bench, LockKind, LockbenchScenario, Pinning};
use protocol::{
    Filesystem, MountStrategy, MountsScenario, Outcome, Scenario, ScenarioKey, Strategy, Watcher,
};
use serde::Deserialize;
use toml::Spanned;

use super::hosts::{resolve_host, RawHost};
use super::{Expectations, Host, Matrix, MatrixError, NumaSpec, Topology};
use crate::results::Expectation;
use crate::results::TcgBenchmarks;
use crate::runtimes::RuntimeRecipe;

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
    #[serde(default)]
    runtimes: Vec<Spanned<RuntimeRecipe>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    cells: String,
    outcome: String,
    errno: Option<String>,
    step: Option<String>,
    reason: Option<String>,
    /// The kernel's count of every container's start path must be exactly this.
    mount_ops_per_container: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRun {
    /// Every cell this many times (default 1); metrics keep every sample.
    repeats: Option<Spanned<u32>>,
    /// Guest memory when a topology does not say (default 1024).
    memory_mib: Option<Spanned<u64>>,
    /// What a single-threaded TCG guest's benchmarks run: `sized` (default) or `full`.
    tcg_benchmarks: Option<Spanned<String>>,
}

fn one() -> u32 {
    1
}

fn default_memory() -> u64 {
    1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    name: Option<String>,
    #[serde(default = "one")]
    sockets: u32,
    #[serde(default = "one")]
    cores: u32,
    #[serde(default = "one")]
    threads: u32,
    memory_mib: Option<u64>,
    #[serde(default)]
    numa: Vec<RawNumaNode>,
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
        /// Only on these of the matrix's `filesystems` (guests; hosts run on what they have).
        filesystems: Option<Vec<String>>,
        /// Mount-table watchers beside every cell (`protocol::watch`).
        #[serde(default)]
        watchers: Vec<String>,
    },
    Lockbench {
        bench: Bench,
        name: Option<String>,
        #[serde(default)]
        threads: Vec<u32>,
        locks: Option<Vec<LockKind>>,
        pinning: Option<Vec<Pinning>>,
        warmup_ms: Option<u64>,
        duration_ms: Option<u64>,
        readers: Option<u32>,
        table_sizes: Option<Vec<u32>>,
        /// storm: mounts put in the table before the storm starts (one sweep point each).
        prepopulated_mounts: Option<Vec<u32>>,
        strategies: Option<Vec<String>>,
        layers: Option<u32>,
        containers: Option<u32>,
        #[serde(default)]
        toggle_smt: bool,
        /// Only on these of the matrix's `filesystems` (guests; hosts run on what they have).
        filesystems: Option<Vec<String>>,
        /// storm: mount-table watchers beside every storm (`protocol::watch`).
        #[serde(default)]
        watchers: Vec<String>,
    },
}

impl RawScenario {
    fn filesystems(&self) -> Option<&[String]> {
        match self {
            RawScenario::Mounts { filesystems, .. }
            | RawScenario::Lockbench { filesystems, .. } => filesystems.as_deref(),
        }
    }

    fn watchers(&self) -> &[String] {
        match self {
            RawScenario::Mounts { watchers, .. } | RawScenario::Lockbench { watchers, .. } => {
                watchers
            }
        }
    }

    /// The entry's kind as its error messages name it.
    fn kind(&self) -> &'static str {
        match self {
            RawScenario::Mounts { .. } => "mounts",
            RawScenario::Lockbench { .. } => "lockbench",
        }
    }
}

/// The scenario's watchers, typed: each known, none twice, and only where a mounts run's window
/// is (mounts, and the storm's).
fn resolve_watchers(s: &RawScenario) -> Result<Vec<Watcher>, (String, String)> {
    let names = s.watchers();
    if let RawScenario::Lockbench { bench, .. } = s {
        if *bench != Bench::Storm {
            if let Some(first) = names.first() {
                return Err((
                    first.clone(),
                    format!(
                        "only mounts scenarios and the storm bench run watchers (this is `{}`)",
                        bench.as_str()
                    ),
                ));
            }
        }
    }
    let mut out = Vec::new();
    for n in names {
        let w: Watcher = n.parse().map_err(|m| (n.clone(), m))?;
        if out.contains(&w) {
            return Err((n.clone(), format!("`{w}` listed twice")));
        }
        out.push(w);
    }
    Ok(out)
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

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLocal {
    scratch_dir: Option<PathBuf>,
}

/// Builds located errors for one file.
struct Locate<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locate<'_> {
    fn at(&self, span: Option<Range<usize>>, message: impl Into<String>) -> MatrixError {
        let (line, column) = span.map_or((0, 0), |s| line_col(self.text, s.start));
        MatrixError {
            file: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Parse and check `text` (the contents of `path`).
pub(super) fn resolve(path: &Path, text: &str) -> Result<Matrix, MatrixError> {
    let at = Locate { path, text };
    let raw: RawMatrix = toml::from_str(text).map_err(|e| at.at(e.span(), e.message()))?;

    let (repeats, default_memory_mib) = {
        let repeats = raw.run.repeats.as_ref();
        let memory = raw.run.memory_mib.as_ref();
        let r = limits::REPEATS
            .check(repeats.map_or(1, |r| *r.get_ref()))
            .map_err(|e| at.at(repeats.map(Spanned::span), format!("run: {e}")))?;
        let m = limits::MEMORY_MIB
            .check(memory.map_or_else(default_memory, |m| *m.get_ref()))
            .map_err(|e| at.at(memory.map(Spanned::span), format!("run: {e}")))?;
        (r, m)
    };
    let tcg_benchmarks = match raw.run.tcg_benchmarks.as_ref() {
        None => TcgBenchmarks::default(),
        Some(v) => match v.get_ref().as_str() {
            "sized" => TcgBenchmarks::Sized,
            "full" => TcgBenchmarks::Full,
            other => {
                return Err(at.at(
                    Some(v.span()),
                    format!(
                        "run: tcg_benchmarks = \"{other}\": expected \"sized\" (the default: \
                         what means something under single-threaded TCG, and a smoke of the \
                         rest) or \"full\" (the full sweeps)"
                    ),
                ))
            }
        },
    };

    let mut kernels: Vec<String> = Vec::new();
    for k in &raw.kernels {
        let name = k.get_ref();
        if !is_name(name) {
            return Err(at.at(
                Some(k.span()),
                format!("kernels: `{name}` is not a recipe name (a file kernels/<name>.toml)"),
            ));
        }
        if kernels.contains(name) {
            return Err(at.at(Some(k.span()), format!("kernels: `{name}` listed twice")));
        }
        kernels.push(name.clone());
    }

    let mut topologies: Vec<Topology> = Vec::new();
    for t in &raw.topologies {
        let topo = resolve_topology(t.get_ref(), default_memory_mib)
            .map_err(|m| at.at(Some(t.span()), format!("topologies: {m}")))?;
        if topologies.iter().any(|o| o.name == topo.name) {
            return Err(at.at(
                Some(t.span()),
                format!("topologies: two topologies are named `{}`", topo.name),
            ));
        }
        topologies.push(topo);
    }
    if !kernels.is_empty() && topologies.is_empty() {
        topologies.push(Topology {
            name: protocol::topology_name(1, 2, 1, 0),
            sockets: 1,
            cores: 2,
            threads: 1,
            memory_mib: default_memory_mib,
            numa: Vec::new(),
        });
    }

    let mut filesystems = Vec::new();
    for f in &raw.filesystems {
        let fs: Filesystem = f
            .get_ref()
            .parse()
            .map_err(|m| at.at(Some(f.span()), format!("filesystems: {m}")))?;
        if filesystems.contains(&fs) {
            return Err(at.at(Some(f.span()), format!("filesystems: `{fs}` listed twice")));
        }
        filesystems.push(fs);
    }
    if filesystems.is_empty() {
        filesystems.push(Filesystem::Ext4);
    }

    // Relative paths in the matrix are relative to the matrix file, wherever mmx runs from.
    let base = matrix_dir(path);
    let mut runtimes: Vec<RuntimeRecipe> = Vec::new();
    for r in &raw.runtimes {
        let mut recipe = r.get_ref().clone();
        if runtimes.iter().any(|o| o.name == recipe.name) {
            return Err(at.at(
                Some(r.span()),
                format!("runtimes: `{}` is defined twice", recipe.name),
            ));
        }
        recipe.resolve_paths(&base);
        runtimes.push(recipe);
    }

    // Every scenario key once: a cell id is target/filesystem/scenario, and targets and
    // filesystems are unique already.
    let mut scenarios: Vec<Scenario> = Vec::new();
    let mut origin: BTreeMap<ScenarioKey, Range<usize>> = BTreeMap::new();
    let mut scenario_filesystems_by_key: BTreeMap<ScenarioKey, Vec<Filesystem>> = BTreeMap::new();
    for s in &raw.scenarios {
        if let RawScenario::Mounts { strategies, .. } = s.get_ref() {
            for st in strategies {
                check_strategy(st, &runtimes).map_err(|m| {
                    // Serde gives no span inside a tagged table: point at the value as written,
                    // after the table's start.
                    let table = s.span();
                    let quoted = format!("\"{st}\"");
                    let at_value = text
                        .get(table.start..)
                        .and_then(|t| t.find(&quoted))
                        .map_or(table.clone(), |i| table.start + i..table.start + i + 1);
                    at.at(
                        Some(at_value),
                        format!("scenarios: mounts: strategies: {m}"),
                    )
                })?;
            }
        }
        let watchers = resolve_watchers(s.get_ref()).map_err(|(value, m)| {
            let table = s.span();
            let quoted = format!("\"{value}\"");
            let at_value = text
                .get(table.start..)
                .and_then(|t| t.find("watchers").map(|w| (w, t)))
                .and_then(|(w, t)| t[w..].find(&quoted).map(|i| w + i))
                .map_or(table.clone(), |i| table.start + i..table.start + i + 1);
            at.at(
                Some(at_value),
                format!("scenarios: {}: watchers: {m}", s.get_ref().kind()),
            )
        })?;
        let expanded = resolve_scenario(s.get_ref(), &watchers)
            .map_err(|m| at.at(Some(s.span()), format!("scenarios: {m}")))?;
        let only_on = match s.get_ref().filesystems() {
            None => None,
            Some(names) => Some(
                scenario_filesystems(names, &filesystems)
                    .map_err(|m| at.at(Some(s.span()), format!("scenarios: filesystems: {m}")))?,
            ),
        };
        for sc in expanded {
            if let Some(first) = origin.insert(sc.key(), s.span()) {
                let (line, _) = line_col(text, first.start);
                return Err(at.at(
                    Some(s.span()),
                    format!(
                        "scenarios: `{}` is also made by the entry on line {line}: every cell id \
                         must be unique (remove the overlap, or give a lockbench entry a `name`)",
                        sc.key()
                    ),
                ));
            }
            if let Some(fs) = &only_on {
                scenario_filesystems_by_key.insert(sc.key(), fs.clone());
            }
            scenarios.push(sc);
        }
    }
    if scenarios.is_empty() {
        return Err(at.at(None, "no [[scenarios]]: nothing to run"));
    }

    let mut hosts: Vec<Host> = Vec::new();
    for h in &raw.hosts {
        let host = resolve_host(h.get_ref(), &base)
            .map_err(|m| at.at(Some(h.span()), format!("hosts: {m}")))?;
        if hosts.iter().any(|o| o.name == host.name) || kernels.contains(&host.name) {
            return Err(at.at(
                Some(h.span()),
                format!(
                    "hosts: `{}` is already the name of a host or kernel (cell ids start with it)",
                    host.name
                ),
            ));
        }
        hosts.push(host);
    }

    let mut expectations = Vec::new();
    for e in &raw.expect {
        let ex = resolve_expect(e.get_ref())
            .map_err(|m| at.at(Some(e.span()), format!("expect: {m}")))?;
        expectations.push(ex);
    }

    // Cells = (kernels × topologies × filesystems + hosts × SMT settings) × scenarios.
    let guests = kernels
        .len()
        .checked_mul(topologies.len())
        .and_then(|n| n.checked_mul(filesystems.len()));
    let visits: usize = hosts.iter().map(|h| h.smt.len()).sum();
    let cells = guests
        .and_then(|g| g.checked_add(visits))
        .and_then(|t| t.checked_mul(scenarios.len()));
    match cells {
        Some(n) if n <= limits::MAX_CELLS => {}
        _ => {
            return Err(at.at(
                None,
                format!(
                    "the matrix expands to more than {} cells ({} kernels × {} topologies × {} \
                     filesystems + {visits} host visits, × {} scenarios)",
                    limits::MAX_CELLS,
                    kernels.len(),
                    topologies.len(),
                    filesystems.len(),
                    scenarios.len()
                ),
            ))
        }
    }

    Ok(Matrix {
        expectations: Expectations(expectations),
        path: path.to_path_buf(),
        repeats,
        tcg_benchmarks,
        kernels,
        topologies,
        filesystems,
        scenarios,
        only_on: scenario_filesystems_by_key,
        hosts,
        runtimes,
        local_scratch: raw.local.scratch_dir.map(|d| base.join(d)),
        dir: base,
    })
}

/// A scenario's own `filesystems`: each one of the matrix's (else no guest would run it), once,
/// and at least one.
fn scenario_filesystems(
    names: &[String],
    matrix: &[Filesystem],
) -> Result<Vec<Filesystem>, String> {
    if names.is_empty() {
        return Err(
            "needs at least one value (leave the key out to run on every filesystem)".into(),
        );
    }
    let mut out = Vec::new();
    for name in names {
        let fs: Filesystem = name.parse()?;
        if !matrix.contains(&fs) {
            let listed: Vec<String> = matrix.iter().map(ToString::to_string).collect();
            return Err(format!(
                "`{fs}` is not one of the matrix's filesystems ({}): no guest would run it",
                listed.join(", ")
            ));
        }
        if out.contains(&fs) {
            return Err(format!("`{fs}` listed twice"));
        }
        out.push(fs);
    }
    Ok(out)
}

/// A strategy as written: a built-in, or `runtime:NAME` naming a `[[runtimes]]` entry.
fn check_strategy(text: &str, runtimes: &[RuntimeRecipe]) -> Result<(), String> {
    let st: MountStrategy = text.parse()?;
    match st.runtime() {
        Some(name) if !runtimes.iter().any(|r| &r.name == name) => {
            let declared: Vec<&str> = runtimes.iter().map(|r| r.name.as_str()).collect();
            Err(format!(
                "`{text}` names no [[runtimes]] entry ({})",
                if declared.is_empty() {
                    "none is declared".to_string()
                } else {
                    format!("declared: {}", declared.join(", "))
                }
            ))
        }
        _ => Ok(()),
    }
}

/// A name that can start a cell id: no `/`, no spaces, not empty.
pub(super) fn is_name(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && !s.contains(char::is_whitespace)
}

fn resolve_expect(r: &RawExpect) -> Result<Expectation, String> {
    let outcome = Outcome::ALL
        .into_iter()
        .find(|o| o.as_str() == r.outcome)
        .ok_or_else(|| {
            format!(
                "outcome `{}` (expected pass, fail, unsupported, timeout, panic or infra-error)",
                r.outcome
            )
        })?;
    let errno = match &r.errno {
        None => None,
        Some(name) => Some(protocol::errno::number(name).ok_or_else(|| {
            format!("errno `{name}` is not a Linux errno name like EINVAL or EOPNOTSUPP")
        })?),
    };
    if r.cells.is_empty() {
        return Err("`cells` is empty".into());
    }
    if r.step.as_deref().is_some_and(str::is_empty) {
        return Err("`step` is empty (leave it out to match any step)".into());
    }
    Ok(Expectation {
        pattern: r.cells.clone(),
        outcome,
        errno,
        step: r.step.clone(),
        reason: r.reason.clone(),
        mount_ops_per_container: r.mount_ops_per_container,
    })
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
    let part = |key: &'static str, v: u32| {
        limits::Limit {
            key,
            ..limits::TOPOLOGY_PART
        }
        .check(v)
        .map_err(|e| e.to_string())
    };
    part("sockets", *sockets)?;
    part("cores", *cores)?;
    part("threads", *threads)?;
    let vcpus = sockets
        .checked_mul(*cores)
        .and_then(|n| n.checked_mul(*threads))
        .ok_or_else(|| format!("{sockets} × {cores} × {threads} vCPUs overflows"))?;
    limits::VCPUS.check(vcpus).map_err(|e| e.to_string())?;
    let memory_mib = limits::MEMORY_MIB
        .check(memory_mib.unwrap_or(default_memory))
        .map_err(|e| e.to_string())?;
    if !numa.is_empty() {
        limits::NUMA_NODES
            .check(numa.len() as u64)
            .map_err(|e| e.to_string())?;
    }
    let mut nodes = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut total: u64 = 0;
    for n in numa {
        let cpus = super::parse_cpu_list(&n.cpus)?;
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
        limits::NODE_MEMORY_MIB
            .check(n.memory_mib)
            .map_err(|e| e.to_string())?;
        total = total
            .checked_add(n.memory_mib)
            .ok_or("numa node memory overflows")?;
        if let Some(d) = &n.distances {
            if d.len() != numa.len() {
                return Err(format!(
                    "numa node distances has {} entries, need one per node ({})",
                    d.len(),
                    numa.len()
                ));
            }
            limits::NUMA_DISTANCE
                .check_all(d, limits::NUMA_NODES.max as usize)
                .map_err(|e| e.to_string())?;
        }
        nodes.push(NumaSpec {
            cpus,
            memory_mib: n.memory_mib,
            distances: n.distances.clone(),
        });
    }
    if !nodes.is_empty() {
        if seen.len() != vcpus as usize {
            return Err(format!(
                "numa nodes cover {} of {vcpus} vCPUs; every vCPU needs a node",
                seen.len()
            ));
        }
        if total != memory_mib {
            return Err(format!(
                "numa node memory adds up to {total} MiB but memory_mib is {memory_mib}"
            ));
        }
    }
    let name = match name {
        Some(n) if !is_name(n) => {
            return Err(format!(
                "name `{n}` must be non-empty, without `/` or spaces"
            ))
        }
        Some(n) => n.clone(),
        None => protocol::topology_name(*sockets, *cores, *threads, nodes.len()),
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

/// A sweep's values, each within its limit, the list not empty and not too long.
fn sweep(limit: limits::Limit, values: &[u32]) -> Result<(), String> {
    if values.is_empty() {
        return Err(LimitError::Empty { key: limit.key }.to_string());
    }
    limit
        .check_all(values, limits::MAX_SWEEP)
        .map_err(|e| e.to_string())
}

fn resolve_scenario(s: &RawScenario, watchers: &[Watcher]) -> Result<Vec<Scenario>, String> {
    match s {
        RawScenario::Mounts {
            strategies,
            layers,
            containers,
            concurrency,
            passes,
            filesystems: _,
            watchers: _,
        } => {
            let strategies: Vec<MountStrategy> =
                parse_list(strategies).map_err(|e| format!("mounts: {e}"))?;
            if strategies.is_empty() {
                return Err("mounts: strategies: needs at least one value".into());
            }
            for (limit, values) in [
                (limits::LAYERS, layers),
                (limits::CONTAINERS, containers),
                (limits::CONCURRENCY, concurrency),
            ] {
                sweep(limit, values).map_err(|e| format!("mounts: {e}"))?;
            }
            let mut out = Vec::new();
            for st in &strategies {
                for l in layers {
                    for c in containers {
                        for j in concurrency {
                            let m = MountsScenario {
                                strategy: st.clone(),
                                layers: *l,
                                containers: *c,
                                concurrency: *j,
                                passes: *passes,
                                watchers: watchers.to_vec(),
                            };
                            m.validate().map_err(|e| format!("mounts: {e}"))?;
                            out.push(Scenario::Mounts(m));
                        }
                    }
                }
            }
            Ok(out)
        }
        RawScenario::Lockbench {
            bench,
            name,
            threads,
            locks,
            pinning,
            warmup_ms,
            duration_ms,
            readers,
            table_sizes,
            prepopulated_mounts,
            strategies,
            layers,
            containers,
            toggle_smt,
            filesystems: _,
            watchers: _,
        } => {
            if let Some(n) = name {
                if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(format!(
                        "lockbench: name `{n}`: letters, digits and `-` only (it ends the cell id)"
                    ));
                }
            }
            let d = LockbenchScenario::default();
            let scenario = LockbenchScenario {
                bench: *bench,
                name: name.clone(),
                threads: threads.clone(),
                locks: locks.clone().unwrap_or_else(|| d.locks.clone()),
                pinning: pinning.clone().unwrap_or_else(|| d.pinning.clone()),
                warmup_ms: warmup_ms.unwrap_or(d.warmup_ms),
                duration_ms: duration_ms.unwrap_or(d.duration_ms),
                readers: readers.unwrap_or(d.readers),
                table_sizes: table_sizes.clone().unwrap_or_else(|| d.table_sizes.clone()),
                prepopulated_mounts: prepopulated_mounts
                    .clone()
                    .unwrap_or_else(|| d.prepopulated_mounts.clone()),
                strategies: match strategies {
                    Some(v) => parse_list(v).map_err(|e| format!("lockbench: {e}"))?,
                    None => d.strategies.clone(),
                },
                layers: layers.unwrap_or(d.layers),
                containers: containers.unwrap_or(d.containers),
                toggle_smt: *toggle_smt,
                watchers: watchers.to_vec(),
                ..d
            };
            scenario.validate().map_err(|e| format!("lockbench: {e}"))?;
            Ok(vec![Scenario::Lockbench(scenario)])
        }
    }
}

/// The directory a matrix's relative paths start from: the matrix file's, made absolute (not
/// canonical: a symlinked checkout keeps the paths a user typed).
fn matrix_dir(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}
