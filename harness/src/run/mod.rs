//! `mmx run`: cells → boots → results. Groups the matrix's cells into boots (one guest or host
//! visit each), runs the boots on a pool of jobs, and folds what each boot reported back into
//! one record per cell, writing `run.json` after every boot so nothing gathered is lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use protocol::kmsg::Phase;
use protocol::{ObservedTopology, Plan, PlanItem, Scenario, SCHEMA_VERSION};

pub mod caveats;
mod cores;
pub mod events;
pub mod guest;
pub mod labels;
mod runner;
pub mod sizing;
mod timeline;

pub use caveats::topology_mismatch;
pub use events::{Bus, Event, RunJson, Subscriber};
pub use runner::{Kernels, Runner};

use crate::backend::qemu::AccelChoice;
use crate::backend::BootOutput;
use crate::cell::{BootKey, CellKey, LayerFs};
use crate::matrix::{filter_matches, Cell, Expectations, Matrix, Target};
use crate::proc::Cancel;
use crate::results::{
    BackendKind, BootEnd, BootRecord, CellFailure, CellRecord, ExpectationCheck, HostInfo,
    InfraCause, KernelWarning, Provenance, RunDir, RunRecord, TimeKind, RUN_SCHEMA_VERSION,
};
use crate::runtimes::ready::RunRuntimes;

/// Which part of the matrix to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// QEMU guests for every kernel, plus every `[[hosts]]` entry.
    All,
    /// Only QEMU guests.
    Qemu,
    /// Only this machine's own kernel (needs root).
    Local,
    /// Only the `[[hosts]]` over SSH.
    Ssh,
}

/// A stable subset of the matrix: boot groups are dealt round-robin in id order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("--shard `{s}`: expected I/N, e.g. 1/4"))?;
        let index: usize = i
            .parse()
            .map_err(|_| format!("--shard `{s}`: `{i}` is not a number"))?;
        let count: usize = n
            .parse()
            .map_err(|_| format!("--shard `{s}`: `{n}` is not a number"))?;
        if count == 0 || index == 0 || index > count {
            return Err(format!("--shard `{s}`: need 1 <= I <= N"));
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Everything `mmx run` was asked for, checked.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub matrix: PathBuf,
    pub backend: BackendChoice,
    pub accel: AccelChoice,
    pub jobs: usize,
    /// Substrings (or `*` globs) of cell ids; a cell runs when any matches. Empty: all.
    pub filter: Vec<String>,
    pub shard: Option<Shard>,
    /// Retries of a boot that ended in an infra error (never for kernel verdicts).
    pub retries: u32,
    /// Parent of the run directory.
    pub out_dir: PathBuf,
    pub run_id: Option<String>,
    /// What a kernel or runtime without a lock entry, or whose locked packages the archive
    /// dropped, gets (`--locked`, `CI=true`: an error).
    pub lock_policy: crate::debian::LockPolicy,
    /// A cell during whose items the kernel printed a splat fails
    /// (`--fail-on-kernel-warning`).
    pub fail_on_kernel_warning: bool,
    /// `--full-bench`: single-threaded TCG guests run the full benchmark sweeps too.
    pub full_bench: bool,
}

/// One boot: the cells it runs and where.
#[derive(Debug, Clone)]
pub struct BootPlan {
    pub key: BootKey,
    pub target: Target,
    pub cells: Vec<Cell>,
}

/// Group cells into boots (cells with the same target and filesystem share one), in key order.
pub fn group_boots(cells: Vec<Cell>) -> Vec<BootPlan> {
    let mut boots: BTreeMap<BootKey, BootPlan> = BTreeMap::new();
    for cell in cells {
        let key = cell.key.boot();
        boots
            .entry(key.clone())
            .or_insert_with(|| BootPlan {
                key,
                target: cell.target.clone(),
                cells: Vec::new(),
            })
            .cells
            .push(cell);
    }
    boots.into_values().collect()
}

/// Whether a cell id matches any filter (substring, or a glob with `*`).
pub fn matches_filter(id: &str, filters: &[String]) -> bool {
    filters.is_empty() || filters.iter().any(|f| filter_matches(f, id))
}

/// Whether a planned cell matches the filters. A host without a declared filesystem is planned
/// as `unmeasured` (the visit measures it): its cells match when their id would match with any
/// filesystem mmx labels, or as `unmeasured`. They then run and are recorded with the measured
/// one, whether or not that one matches.
pub fn cell_matches_filter(key: &CellKey, filters: &[String]) -> bool {
    if key.filesystem != LayerFs::Unmeasured {
        return matches_filter(&key.to_string(), filters);
    }
    std::iter::once(LayerFs::Unmeasured)
        .chain(protocol::Filesystem::ALL.map(LayerFs::Known))
        .any(|fs| {
            let k = CellKey {
                filesystem: fs,
                ..key.clone()
            };
            matches_filter(&k.to_string(), filters)
        })
}

/// A cell's check against the matrix's known answers (None: the matrix has none for it).
fn expectation_check(c: &CellRecord, expectations: &Expectations) -> Option<ExpectationCheck> {
    expectations.find(&c.key).map(|e| ExpectationCheck {
        expectation: e.clone(),
        met: e.is_met_with(c.outcome, c.evidence.as_ref(), &c.metrics),
    })
}

/// Keep the boots of one shard: boots in id order dealt round-robin, so a boot's cells never
/// split across shards and every boot lands in exactly one.
pub fn shard_boots(boots: Vec<BootPlan>, shard: Option<Shard>) -> Vec<BootPlan> {
    match shard {
        None => boots,
        Some(s) => boots
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % s.count == s.index - 1)
            .map(|(_, b)| b)
            .collect(),
    }
}

/// What an item's limit leaves beyond its own work: 60 s.
pub const ITEM_SLACK_S: u64 = 60;

/// Per-item time limit the agent enforces; generous, since TCG is slow and a timeout must mean
/// a hang, not a slow machine. (A runtime's item also outlasts one job limit of the runtime's:
/// [`plan_for`] sees to that, knowing the runtime.)
pub fn item_timeout_s(scenario: &Scenario) -> u64 {
    match scenario {
        Scenario::Mounts(m) => {
            let ops = u64::from(m.containers) * m.ops_bound_per_container();
            ITEM_SLACK_S + ops / 20
        }
        Scenario::Lockbench(l) => {
            let points = (l.locks.len().max(1) * l.pinning.len().max(1) * 8) as u64;
            let smt = if l.toggle_smt { 2 } else { 1 };
            let windows = 60 + smt * points * (l.warmup_ms + l.duration_ms) / 1000 * 2;
            windows + storm_extra_s(l)
        }
    }
}

/// What a storm does besides its measured windows: for each strategy and table size, it grows
/// the table to N mounts, runs its containers, and tears the table down. Growing and tearing
/// down 10,000 mounts took most of a 7.x guest's 150–190 s under TCG, which a limit counting
/// only the windows (66 s, ×3 under TCG) left no margin for: 10 s a point, and 1 s per 200
/// mounts of each table per strategy, keeps a timeout meaning a hang.
fn storm_extra_s(l: &protocol::lockbench::LockbenchScenario) -> u64 {
    if l.bench != protocol::lockbench::Bench::Storm {
        return 0;
    }
    let strategies = l.strategies.len().max(1) as u64;
    let points =
        strategies * l.prepopulated_mounts.len().max(1) as u64 * l.threads.len().max(1) as u64;
    let tables: u64 = l
        .prepopulated_mounts
        .iter()
        .map(|&n| u64::from(n) / 200)
        .sum();
    points * 10 + strategies * tables
}

impl BootPlan {
    /// The cell (index into `cells`) and repeat each plan item of [`plan_for`] runs: every cell
    /// `repeats` times, in cell order, repeat after repeat.
    pub fn item_cell(&self, item: usize) -> (usize, u32) {
        let n = self.cells.len().max(1);
        (item % n, u32::try_from(item / n).unwrap_or(u32::MAX))
    }
}

/// The plan for one boot: every cell `repeats` times, in cell order; item `i` is the `i`-th
/// (see [`BootPlan::item_cell`]). The run's runtimes are ready before any plan is made, so the
/// plan names the ready ones its cells start, and a runtime's item outlasts one of its jobs (a
/// hung job then ends before the item does, and the cell says which job hung). Where the plan
/// runs (the far side's directories, a guest's disk and modules) is the backend's to say
/// (`backend::Placement`).
pub fn plan_for(boot: &BootPlan, repeats: u32, scratch_dir: &Path, runtimes: &RunRuntimes) -> Plan {
    let runtimes = runtimes.plan_entries(boot.cells.iter().filter_map(|c| c.scenario.runtime()));
    let timeout_s = |scenario: &Scenario| {
        let own = item_timeout_s(scenario);
        let job = scenario
            .runtime()
            .and_then(|n| runtimes.iter().find(|r| &r.name == n))
            .map_or(0, |r| r.job_timeout_s + ITEM_SLACK_S);
        own.max(job)
    };
    let mut items = Vec::new();
    for _ in 0..repeats {
        for c in &boot.cells {
            items.push(PlanItem {
                item: u32::try_from(items.len()).unwrap_or(u32::MAX),
                cell_id: c.key.to_string(),
                scenario: c.scenario.clone(),
                timeout_s: Some(timeout_s(&c.scenario)),
                // A guest's layers are on the disk of the cell's filesystem; a host's and this
                // machine's are where the agent is told (`scratch_dir`), measured there.
                filesystem: match c.target {
                    Target::Qemu { .. } => c.key.filesystem.known(),
                    Target::Local | Target::Ssh { .. } => None,
                },
            });
        }
    }
    Plan {
        schema_version: SCHEMA_VERSION,
        boot_id: boot.key.to_string(),
        scratch_dir: scratch_dir.to_path_buf(),
        scratch_disks: Vec::new(),
        modules: Vec::new(),
        probe: true,
        items,
        runtimes,
    }
}

/// What folding a boot needs besides the boot and what came back: the same for every boot of a
/// run, and known before the first one starts.
#[derive(Clone, Copy)]
pub struct FoldWith<'a> {
    /// The CPU of this machine (guests and the local agent run on it).
    pub host_cpu: &'a str,
    /// The run's runtimes: a runtime cell's record names its build, or why it is not ready.
    pub runtimes: &'a RunRuntimes,
    /// The matrix's known answers: every cell is judged by its own.
    pub expectations: &'a Expectations,
    /// A kernel splat during a cell's items fails the cell (`--fail-on-kernel-warning`).
    pub fail_on_kernel_warning: bool,
}

/// Which backend runs a target.
pub fn backend_of(t: &Target) -> BackendKind {
    match t {
        Target::Local => BackendKind::Local,
        Target::Qemu { .. } => BackendKind::Qemu,
        Target::Ssh { .. } => BackendKind::Ssh,
    }
}

/// Fold one boot's output into cell records and a boot record. A boot whose agent broke the
/// results contract ends `infra-error` (protocol violation) whatever it said; the results it sent
/// before stay. Labels come from the agent's measurements ([`labels`]): a filesystem that is
/// not the cell's ends the boot `infra-error` and drops its results; an undeclared host's cells
/// are keyed with the measured one. Then [`caveats`] says what the numbers are not, and each
/// cell is judged by its known answer: a record leaves here complete.
pub fn fold_boot(
    boot: &BootPlan,
    out: &BootOutput,
    attempts: u32,
    with: &FoldWith<'_>,
) -> (BootRecord, Vec<CellRecord>) {
    let backend = backend_of(&boot.target);
    let stream = &out.stream;
    let mut end = if stream.broke_contract() && !matches!(out.end, BootEnd::Infra { .. }) {
        BootEnd::infra(
            InfraCause::ProtocolViolation,
            format!(
                "the agent broke the results contract {} time(s) (first: {})",
                stream.violations_total,
                stream.violations.first().map_or("?", |v| v.kind.as_str())
            ),
        )
    } else {
        out.end.clone()
    };
    let (filesystem, results_stand) =
        match labels::layer_fs(&boot.key, &boot.target, &labels::measured_fs(out)) {
            Ok(fs) => (fs, true),
            Err(wrong) => {
                if !matches!(end, BootEnd::Infra { .. }) {
                    end = wrong;
                }
                (boot.key.filesystem, false)
            }
        };
    let boot_key = BootKey {
        target: boot.key.target.clone(),
        filesystem,
    };
    let accel = labels::accel(&boot.target, out);
    let kernel_release = stream.hello.as_ref().map(|h| h.kernel_release.clone());
    let observed: Option<ObservedTopology> = stream.topology.clone();

    // Every valid result, by the cell it answers (repeats together, in repeat order).
    let mut per_cell: Vec<Vec<&protocol::CellResult>> = vec![Vec::new(); boot.cells.len()];
    for (item, r) in stream.results().iter().enumerate() {
        if let (Some(r), true) = (r, results_stand) {
            let (cell, _repeat) = boot.item_cell(item);
            if let Some(slot) = per_cell.get_mut(cell) {
                slot.push(r);
            }
        }
    }

    let requested = match &boot.target {
        Target::Qemu { topology, .. } => Some(topology),
        Target::Local | Target::Ssh { .. } => None,
    };
    let mismatch = match (requested, &observed) {
        (Some(req), Some(obs)) => topology_mismatch(req, obs),
        _ => None,
    };

    let mut cells = Vec::new();
    for (cell_index, (cell, got)) in boot.cells.iter().zip(per_cell).enumerate() {
        let (outcome, evidence, metrics, detail, repeats) = if got.is_empty() {
            let (o, e) = end.outcome_for_unreported();
            (o, Some(e), BTreeMap::new(), None, 0)
        } else {
            let worst = got
                .iter()
                .max_by_key(|r| r.outcome.severity())
                .copied()
                .unwrap_or(got[0]);
            let mut metrics: BTreeMap<String, protocol::Metric> = BTreeMap::new();
            for r in &got {
                for (name, m) in &r.metrics {
                    metrics
                        .entry(name.clone())
                        .and_modify(|acc| acc.samples.extend_from_slice(&m.samples))
                        .or_insert_with(|| m.clone());
                }
            }
            (
                worst.outcome,
                worst.evidence.clone(),
                metrics,
                worst.detail.clone(),
                u32::try_from(got.len()).unwrap_or(u32::MAX),
            )
        };
        // What the runtime said it is, in its hello.
        let said = match &detail {
            Some(protocol::CellDetail::Mounts(m)) => m.runtime.as_ref(),
            _ => None,
        }
        .map(|h| format!("{} {}", h.runtime, h.version));
        let runtime = cell
            .scenario
            .runtime()
            .map(|name| with.runtimes.cell_runtime(name, said));
        let mut record = CellRecord {
            key: CellKey {
                filesystem,
                ..cell.key.clone()
            },
            scenario: cell.scenario.clone(),
            outcome,
            evidence,
            metrics,
            detail,
            provenance: Provenance {
                backend,
                accel,
                host_cpu: match (&boot.target, &observed) {
                    // A metal host's CPU is what the agent saw there, not ours.
                    (Target::Ssh { .. }, Some(t)) => t.cpu_model.clone(),
                    _ => with.host_cpu.to_string(),
                },
                kernel_release: kernel_release.clone(),
                kernel_source: out.kernel_source.clone(),
                kernel_substituted: out.kernel_substituted.clone(),
                requested_topology: requested.map(|t| t.name.clone()),
                observed_topology: observed.clone(),
                topology_mismatch: mismatch.clone(),
                runtime,
                sizing: out.sizing,
            },
            boot: boot_key.clone(),
            attempts,
            repeats,
            // Judged just below, on the numbers as the caveats leave them.
            expected: None,
            caveats: Default::default(),
            kernel_warnings: warnings_of(boot, cell_index, &out.kernel_warnings),
            failed_by: None,
        };
        if with.fail_on_kernel_warning && !record.kernel_warnings.is_empty() {
            record.failed_by = Some(CellFailure::KernelWarning);
        }
        // The answer is judged on the numbers as the caveats left them.
        caveats::apply(&mut record, requested.zip(observed.as_ref()));
        record.expected = expectation_check(&record, with.expectations);
        cells.push(record);
    }
    let timeline = timeline::observe(out, end.is_completed(), |item| {
        let (cell, _repeat) = boot.item_cell(item);
        let plan_cell = boot.cells.get(cell)?;
        let record = cells.get(cell)?;
        Some((record.key.clone(), TimeKind::of(&plan_cell.scenario)))
    });
    let record = BootRecord {
        key: boot_key,
        backend,
        accel,
        end,
        kernel_release,
        logs: out.logs.clone(),
        timings_ms: out.timings_ms.clone(),
        capabilities: stream.capabilities.first().cloned(),
        observed_topology: observed,
        cells: cells.iter().map(|c| c.key.clone()).collect(),
        attempts,
        violations: stream.violations.clone(),
        violations_total: stream.violations_total,
        channels: out.channels.clone(),
        kernel_warnings: out.kernel_warnings.clone(),
        kernel_warnings_dropped: out.kernel_warnings_dropped,
        timeline: Some(timeline),
        sizing: out.sizing,
        guest: None,
    };
    (record, cells)
}

/// The splats that printed while one of cell `cell`'s items ran (every repeat's).
fn warnings_of(boot: &BootPlan, cell: usize, all: &[KernelWarning]) -> Vec<KernelWarning> {
    all.iter()
        .filter(|w| match w.during {
            Some(Phase::Item(i)) => usize::try_from(i).is_ok_and(|i| boot.item_cell(i).0 == cell),
            Some(Phase::Probes) | None => false,
        })
        .cloned()
        .collect()
}

/// Default number of concurrent boots: bounded by cores (TCG vCPUs are host threads) and memory.
pub fn default_jobs(guest_memory_mib: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let host = HostInfo::detect();
    let by_mem = if guest_memory_mib == 0 {
        cores
    } else {
        // Leave a quarter of the host's memory alone.
        ((host.memory_mib * 3 / 4) / guest_memory_mib.max(1)) as usize
    };
    cores.min(by_mem).max(1)
}

/// A run-id from the clock: sortable, filesystem-safe.
pub fn new_run_id() -> String {
    let t = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    t.replace(':', "-")
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Select the cells `opts` asks for, checked against the machine (root for local).
pub struct Selection {
    pub boots: Vec<BootPlan>,
    /// The local backend's scratch directory (created here, removed after the run).
    pub local_scratch: Option<PathBuf>,
}

/// Pick the cells of a matrix for a backend choice, then filter and shard them.
pub fn select(matrix: &Matrix, opts: &RunOptions) -> anyhow::Result<Selection> {
    let mut cells = Vec::new();
    let mut local_scratch = None;
    match opts.backend {
        BackendChoice::All => {
            cells.extend(matrix.qemu_cells());
            cells.extend(matrix.ssh_cells());
        }
        BackendChoice::Qemu => cells.extend(matrix.qemu_cells()),
        BackendChoice::Ssh => cells.extend(matrix.ssh_cells()),
        BackendChoice::Local => {
            anyhow::ensure!(
                rustix::process::geteuid().is_root(),
                "`mmx run --backend local` needs root: the agent creates mount namespaces and \
                 user namespaces and makes idmapped mounts, which need CAP_SYS_ADMIN in the \
                 initial user namespace. Run it with sudo, or use the qemu backend, which does not."
            );
            let scratch = crate::backend::local::scratch_dir(matrix.local_scratch.as_deref())?;
            let fs = match crate::backend::local::filesystem_of(&scratch)? {
                Ok(fs) => fs,
                Err(magic) => {
                    let _ = std::fs::remove_dir(&scratch);
                    anyhow::bail!(
                        "{}: the local scratch dir {} is on a filesystem mmx does not know \
                         (statfs magic {magic}); set [local] scratch_dir to a directory on \
                         ext4, xfs, btrfs or tmpfs",
                        matrix.path.display(),
                        scratch.display()
                    )
                }
            };
            cells.extend(matrix.local_cells(fs.into()));
            local_scratch = Some(scratch);
        }
    }
    cells.retain(|c| cell_matches_filter(&c.key, &opts.filter));
    let boots = shard_boots(group_boots(cells), opts.shard);
    Ok(Selection {
        boots,
        local_scratch,
    })
}

/// The run so far, shared by the pool's jobs: each ended boot goes in, and out to the bus.
struct Gathered<'a> {
    record: RunRecord,
    bus: &'a Bus,
}

impl Gathered<'_> {
    /// Keep a boot and its cells, then tell the bus (the run.json writer among its
    /// subscribers), under one lock so boots reach every subscriber in one order.
    fn add(&mut self, boot: BootRecord, cells: Vec<CellRecord>, took: Duration) {
        let first = self.record.cells.len();
        self.record.boots.push(boot);
        self.record.cells.extend(cells);
        self.record.finished_at = now_rfc3339();
        if let Some(boot) = self.record.boots.last() {
            self.bus.emit(&Event::BootEnded {
                boot,
                cells: &self.record.cells[first..],
                took,
                run: &self.record,
            });
        }
    }
}

/// Jobs for the pool: a metal host's visits stay in one job (they share the hardware), and so
/// do a kernel × topology's boots (one guest serves every filesystem: [`guest`]); every other
/// boot is a job of its own.
fn jobs_of(boots: Vec<BootPlan>) -> Vec<Vec<BootPlan>> {
    let mut per_host: BTreeMap<String, Vec<BootPlan>> = BTreeMap::new();
    let (guests, alone) = guest::guests_of(boots);
    let mut jobs: Vec<Vec<BootPlan>> = guests.into_iter().map(|g| g.parts).collect();
    for b in alone {
        match &b.target {
            Target::Ssh { host, .. } => per_host.entry(host.name.clone()).or_default().push(b),
            Target::Local | Target::Qemu { .. } => jobs.push(vec![b]),
        }
    }
    jobs.extend(per_host.into_values());
    jobs
}

/// Run everything `opts` selects and return the finished record and its directory. What
/// happens goes to `bus` as events (and what the rooms below say, as notes), the run.json
/// writer joining its subscribers once the run directory exists; the run itself prints nothing.
pub fn execute(
    opts: &RunOptions,
    cancel: &Cancel,
    bus: &Arc<Bus>,
) -> anyhow::Result<(RunRecord, RunDir)> {
    let sink = bus.sink();
    let matrix = Matrix::load(&opts.matrix)?;
    // As root, directories others may write are refused before anything runs.
    crate::rundir::check_trusted_dir("--out", &opts.out_dir)?;
    let cache = match crate::debian::Cache::from_env() {
        Ok(cache) => Some(cache),
        Err(e @ crate::debian::DebianError::Untrusted(_)) => return Err(e.into()),
        // Without a cache, only the reaping below is skipped (kernels say so themselves).
        Err(_) => None,
    };
    // Before making anything of our own: what killed runs left (their processes died with them).
    crate::backend::leftovers::reap_earlier_runs(
        cache.as_ref().map(|c| c.root()),
        &crate::backend::local::scratch_base(matrix.local_scratch.as_deref()),
        &*sink,
    );
    let Selection {
        boots,
        local_scratch,
    } = select(&matrix, opts)?;
    // Removes the local scratch dir on every exit path from here on.
    let _scratch_guard = local_scratch.clone().map(ScratchGuard);
    if boots.is_empty() {
        anyhow::bail!(
            "{}: no cells to run for backend {:?}{}{}",
            opts.matrix.display(),
            opts.backend,
            if opts.filter.is_empty() {
                ""
            } else {
                " with this --filter"
            },
            opts.shard
                .map(|s| format!(" in shard {s}"))
                .unwrap_or_default()
        );
    }
    let run_id = opts.run_id.clone().unwrap_or_else(new_run_id);
    let mut runner = Runner::new(
        &matrix,
        &boots,
        opts.accel,
        local_scratch,
        opts.retries,
        sink,
        opts.lock_policy,
    )?;
    // `--jobs` above the core count oversubscribes on purpose; guests that measure contention
    // still take a core per vCPU of that budget.
    runner.cores = cores::Cores::new(runner.cores.total().max(opts.jobs));
    runner.fail_on_kernel_warning = opts.fail_on_kernel_warning;
    runner.full_bench = opts.full_bench;
    let run_dir = RunDir::create(&opts.out_dir, &run_id)?;
    let host = runner.host.clone();
    let total = boots.len();
    let started = now_rfc3339();
    let record = RunRecord {
        schema_version: RUN_SCHEMA_VERSION,
        mmx_version: env!("CARGO_PKG_VERSION").to_string(),
        agent: crate::agent::source()
            .map(|s| s.record())
            .unwrap_or_default(),
        run_id: run_dir.id.clone(),
        started_at: started.clone(),
        finished_at: started,
        matrix: opts.matrix.display().to_string(),
        shard: opts.shard.map(|s| s.to_string()),
        host: host.clone(),
        cells: Vec::new(),
        boots: Vec::new(),
        runtimes: runner.runtimes.records(),
    };
    record.write(&run_dir.run_json())?;
    bus.subscribe(Box::new(RunJson::new(&run_dir)));
    bus.emit(&Event::RunStarted {
        cells: boots.iter().map(|b| b.cells.len()).sum::<usize>(),
        boots: total,
        jobs: opts.jobs,
        dir: &run_dir.root,
    });

    let runner = Arc::new(runner);
    let gathered = Mutex::new(Gathered {
        record,
        bus: bus.as_ref(),
    });
    let queue = Arc::new(Mutex::new(jobs_of(boots)));
    let repeats = matrix.repeats;
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            let queue = Arc::clone(&queue);
            let runner = Arc::clone(&runner);
            let run_dir = run_dir.clone();
            let gathered = &gathered;
            s.spawn(move || loop {
                let job = match queue.lock() {
                    Ok(mut q) => q.pop(),
                    Err(_) => None,
                };
                let Some(job) = job else { break };
                runner.run_job(
                    &job,
                    repeats,
                    &run_dir,
                    cancel,
                    |key| bus.emit(&Event::BootStarted { key }),
                    |b, c, took| {
                        if let Ok(mut g) = gathered.lock() {
                            g.add(b, c, took);
                        }
                    },
                );
            });
        }
    });
    let mut record = gathered
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a job panicked"))?
        .record;
    // Stable order in run.json whatever order jobs finished in.
    record.sort();
    record.finished_at = now_rfc3339();
    record.write(&run_dir.run_json())?;
    bus.emit(&Event::RunEnded {
        run: &record,
        dir: &run_dir,
    });
    Ok((record, run_dir))
}

/// Removes the local scratch directory when the run ends, however it ends.
struct ScratchGuard(PathBuf);

impl Drop for ScratchGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests;
