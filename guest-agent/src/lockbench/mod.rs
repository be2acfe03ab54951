//! The lock benchmark (ARCHITECTURE.md, "The lock benchmark"; project issue 6): how a machine behaves
//! when many CPUs fight over one lock — in user space ([`user_spin`], what Netflix's
//! global-lock-bench isolates), in the kernel's mount lock ([`mount_lock`], what hurt containers),
//! in reading the mount table ([`mountinfo`]), and what a storm of container starts costs the
//! bystanders that look paths up ([`storm`]).
//!
//! Every family produces [`LockPoint`]s; this file resolves the scenario (thread sweep, SMT
//! states), runs the family once per SMT state with the state restored afterwards, fills in
//! scalability, and turns the points into a [`CellResult`] with comparable metrics.
//! `mmx-agent lockbench …` is the same code behind a command line ([`cli`]).

mod hist;
mod mount_lock;
mod mountinfo;
mod pinning;
mod smt;
mod storm;
mod sys;
mod user_spin;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use protocol::lockbench::{
    Bench, LockKind, LockPoint, LockbenchResult, LockbenchScenario, Pinning, PointMetricName,
    SweepEnd,
};
use protocol::{
    Better, CellDetail, CellResult, Evidence, Metric, ObservedTopology, Outcome, SmtState,
    Strategy, Unit,
};

use hist::Hist;

/// `mmx-agent lockbench`: run one or more benchmark families and print a table (or JSON).
#[derive(clap::Args)]
pub struct Args {
    /// Benchmark families, comma-separated: user-spin, mount-lock, mountinfo, storm.
    #[arg(long, value_delimiter = ',', default_value = "user-spin", value_parser = kebab::<Bench>)]
    pub bench: Vec<Bench>,
    /// Thread counts (writers for mount-lock, concurrency for storm); default 1, 2, 4 … CPUs.
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<u32>,
    /// user-spin lock kinds: tas, ticket, mutex, per-thread (default: all).
    #[arg(long, value_delimiter = ',', value_parser = kebab::<LockKind>)]
    pub locks: Vec<LockKind>,
    /// Pinnings: none, per-core, smt-siblings, one-node, spread-nodes (default: none).
    #[arg(long, value_delimiter = ',', value_parser = kebab::<Pinning>)]
    pub pinning: Vec<Pinning>,
    /// Skip the variant with the data on the lock's cache line.
    #[arg(long)]
    pub no_false_sharing: bool,
    #[arg(long)]
    pub warmup_ms: Option<u64>,
    /// Measured window per point.
    #[arg(long)]
    pub duration_ms: Option<u64>,
    /// Reader ("victim") threads timing stat() during mount-lock and storm.
    #[arg(long)]
    pub readers: Option<u32>,
    /// mountinfo: table sizes to grow to, e.g. 1000,10000,50000.
    #[arg(long, value_delimiter = ',')]
    pub table_sizes: Vec<u32>,
    /// storm: mounts added to the storm's namespace before it starts, one storm per value, e.g.
    /// 0,10000,50000 (default 0).
    #[arg(long, value_delimiter = ',')]
    pub prepopulated_mounts: Vec<u32>,
    /// storm: strategies (per-layer, common-parent, fsconfig-fd).
    #[arg(long, value_delimiter = ',', value_parser = kebab::<Strategy>)]
    pub strategies: Vec<Strategy>,
    #[arg(long)]
    pub layers: Option<u32>,
    #[arg(long)]
    pub containers: Option<u32>,
    /// Also run every point with SMT toggled through /sys/devices/system/cpu/smt/control.
    #[arg(long)]
    pub toggle_smt: bool,
    /// user-spin: also time a plain C test-and-set loop and report Rust/C throughput.
    #[arg(long)]
    pub compare_c: bool,
    /// Directory for mount points and layers (default: a fresh one under $TMPDIR, removed after).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Print the cell results as a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `given`, or the default when the command line gave nothing.
fn or<T: Clone>(given: &[T], default: &[T]) -> Vec<T> {
    if given.is_empty() { default } else { given }.to_vec()
}

/// Parse a kebab-case value through the protocol's own serde spelling.
fn kebab<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| e.to_string())
}

pub fn cli(args: Args) -> anyhow::Result<()> {
    let Args {
        bench,
        threads,
        locks,
        pinning,
        no_false_sharing,
        warmup_ms,
        duration_ms,
        readers,
        table_sizes,
        prepopulated_mounts,
        strategies,
        layers,
        containers,
        toggle_smt,
        compare_c,
        scratch,
        json,
    } = args;
    let d = LockbenchScenario::default();
    let (scratch, remove_scratch) = match scratch {
        Some(s) => (s, false),
        None => (
            std::env::temp_dir().join(format!("mmx-lockbench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&scratch)
        .map_err(|e| anyhow::anyhow!("mkdir {}: {e}", scratch.display()))?;
    let mut results = Vec::new();
    for b in bench {
        // What the command line leaves out is the protocol's default, the one copy of them.
        let scenario = LockbenchScenario {
            bench: b,
            name: None,
            threads: threads.clone(),
            locks: or(&locks, &d.locks),
            pinning: or(&pinning, &d.pinning),
            false_sharing: !no_false_sharing,
            warmup_ms: warmup_ms.unwrap_or(d.warmup_ms),
            duration_ms: duration_ms.unwrap_or(d.duration_ms),
            readers: readers.unwrap_or(d.readers),
            table_sizes: or(&table_sizes, &d.table_sizes),
            prepopulated_mounts: or(&prepopulated_mounts, &d.prepopulated_mounts),
            strategies: or(&strategies, &d.strategies),
            layers: layers.unwrap_or(d.layers),
            containers: containers.unwrap_or(d.containers),
            toggle_smt,
            watchers: Vec::new(),
        };
        let opts = Options {
            compare_c,
            progress: !json,
        };
        let r = run_with(
            &scenario,
            &scratch,
            &format!("cli/{}", scenario.label()),
            &opts,
        );
        if !json {
            print_table(&r);
        }
        results.push(r);
    }
    if remove_scratch {
        // Empty by now unless something leaked; remove_dir refuses a non-empty directory.
        let _ = std::fs::remove_dir(&scratch);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.outcome.is_success())
        .map(|r| match &r.evidence {
            Some(e) => format!("{}: {} ({e})", r.cell_id, r.outcome),
            None => format!("{}: {}", r.cell_id, r.outcome),
        })
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("lockbench: {}", failed.join("; "));
    }
    Ok(())
}

/// Run one lockbench cell (the plan executor's entry point). Temporary directories are created
/// under `scratch` and removed; mounts happen only in private mount namespaces.
pub fn run(scenario: &LockbenchScenario, scratch: &Path, cell_id: &str) -> CellResult {
    run_with(scenario, scratch, cell_id, &Options::default())
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    /// user-spin: time the C reference loop too.
    pub compare_c: bool,
    /// Print a line per family and SMT state on stderr.
    pub progress: bool,
}

/// What a family gets to work with, for one SMT state.
pub(crate) struct Ctx<'a> {
    pub scenario: &'a LockbenchScenario,
    /// Topology as observed in this SMT state (CPUs go offline when SMT is turned off).
    pub topo: ObservedTopology,
    pub smt: SmtState,
    /// Thread counts to sweep, ascending.
    pub threads: Vec<u32>,
    /// A private directory under the scratch dir, removed after the cell.
    pub work: PathBuf,
    pub opts: &'a Options,
}

impl Ctx<'_> {
    pub fn warmup(&self) -> Duration {
        Duration::from_millis(self.scenario.warmup_ms)
    }
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.scenario.duration_ms.max(1))
    }

    /// After a stop (SIGINT/SIGTERM/SIGHUP, stdin EOF) the sweep ends before its next point,
    /// as an infra-error naming the stop; the family cleans up as after any error. A window in
    /// progress ends early too (every timed loop looks at the stop), so a stop is answered
    /// within about a second even when one point lasts minutes.
    pub fn check_stop(&self) -> Result<(), BenchError> {
        if !crate::sys::signal::stop_requested() {
            return Ok(());
        }
        let why = match crate::sys::signal::stop_signal() {
            Some(sig) => format!("interrupted by signal {sig}"),
            None => "stopped: stdin closed".to_owned(),
        };
        Err(BenchError::Infra(
            Evidence::new(why).with_detail("stopped during the lock benchmark"),
        ))
    }
}

/// What a family produced.
#[derive(Default)]
pub(crate) struct Family {
    pub points: Vec<LockPoint>,
    pub notes: Vec<String>,
    pub metrics: BTreeMap<String, Metric>,
    /// Mounts left behind in the family's namespace (must be 0).
    pub leaked_mounts: u64,
    /// storm: what each pre-populated table cost to make and take down.
    pub tables: Vec<protocol::TableCost>,
}

/// Why a family stopped early, in the outcome vocabulary.
#[derive(Debug)]
pub(crate) enum BenchError {
    Unsupported(Evidence),
    Fail(Evidence),
    Infra(Evidence),
    /// A mounts run inside the family (the storm's) ended so: the cell takes its outcome.
    Run(Outcome, Evidence),
}

impl BenchError {
    /// Classify a failed call: a missing syscall or feature is `unsupported`, a missing privilege
    /// or anything else is ours (`infra-error`).
    pub fn from_io(step: impl Into<String>, e: &std::io::Error) -> BenchError {
        let ev = Evidence::new(step);
        let Some(errno) = e.raw_os_error() else {
            return BenchError::Infra(ev.with_detail(e.to_string()));
        };
        let ev = ev.with_errno(errno);
        match errno {
            libc::ENOSYS | libc::EOPNOTSUPP => BenchError::Unsupported(ev),
            libc::EPERM => BenchError::Infra(ev.with_detail("needs root (CAP_SYS_ADMIN)")),
            _ => BenchError::Infra(ev),
        }
    }

    /// Classify a failed call of the `sys` module like [`BenchError::from_io`]; the evidence
    /// keeps its stable call text as the step and its inputs as the detail.
    pub fn from_sys(e: &crate::sys::SysError) -> BenchError {
        let ev = e.evidence();
        match e.errno {
            libc::ENOSYS | libc::EOPNOTSUPP => BenchError::Unsupported(ev),
            libc::EPERM => BenchError::Infra(
                ev.with_detail(format!("{}; needs root (CAP_SYS_ADMIN)", e.context)),
            ),
            _ => BenchError::Infra(ev),
        }
    }

    fn outcome(&self) -> (Outcome, &Evidence) {
        match self {
            BenchError::Unsupported(e) => (Outcome::Unsupported, e),
            BenchError::Fail(e) => (Outcome::Fail, e),
            BenchError::Infra(e) => (Outcome::InfraError, e),
            BenchError::Run(o, e) => (*o, e),
        }
    }
}

pub(crate) use crate::window::Phase;
pub use smt::use_control_file as use_smt_control_file;

/// Nanoseconds of a duration, saturating.
#[inline]
pub(crate) fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Thread counts to sweep: the requested ones (sorted, deduplicated, zero dropped), or
/// 1, 2, 4 … up to `cpus`, with `cpus` itself last when it is not a power of two.
pub(crate) fn thread_counts(requested: &[u32], cpus: u32) -> Vec<u32> {
    let mut v: Vec<u32> = if requested.is_empty() {
        let cpus = cpus.max(1);
        let mut v: Vec<u32> = std::iter::successors(Some(1u32), |n| n.checked_mul(2))
            .take_while(|&n| n < cpus)
            .collect();
        v.push(cpus);
        v
    } else {
        requested.iter().copied().filter(|&n| n > 0).collect()
    };
    v.sort_unstable();
    v.dedup();
    v
}

/// A point's measured numbers before scalability is known.
pub(crate) struct Measured<'a> {
    pub workload: String,
    pub pinning: Pinning,
    pub smt: SmtState,
    pub false_sharing: bool,
    pub threads: u32,
    pub window: Duration,
    pub per_thread_ops: Vec<u64>,
    /// Per-sample durations; each sample covers `ops_per_sample` operations.
    pub samples: Option<&'a Hist>,
    pub ops_per_sample: u32,
    pub readers: Option<&'a Hist>,
}

pub(crate) fn point(m: Measured<'_>) -> LockPoint {
    let ops: u64 = m.per_thread_ops.iter().sum();
    let secs = m.window.as_secs_f64();
    let per_op = |v: Option<u64>| v.map(|v| v as f64 / f64::from(m.ops_per_sample.max(1)));
    let s = m.samples;
    let r = m.readers;
    LockPoint {
        workload: m.workload,
        pinning: m.pinning,
        smt: m.smt,
        false_sharing: m.false_sharing,
        threads: m.threads,
        duration_ns: ns(m.window),
        ops,
        ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
        per_thread_ops: m.per_thread_ops,
        scalability: None,
        latency_p50_ns: per_op(s.and_then(|h| h.percentile(50.0))),
        latency_p99_ns: per_op(s.and_then(|h| h.percentile(99.0))),
        latency_max_ns: per_op(s.and_then(Hist::max)),
        reader_p50_ns: r.and_then(|h| h.percentile(50.0)).map(|v| v as f64),
        reader_p99_ns: r.and_then(|h| h.percentile(99.0)).map(|v| v as f64),
        reader_max_ns: r.and_then(Hist::max).map(|v| v as f64),
        ops_per_sample: s.map(|_| m.ops_per_sample),
        prepopulated_mounts: None,
        table_entries: None,
        watchers: Vec::new(),
    }
}

/// scalability = ops/s ÷ (ops/s at 1 thread × N), within the same workload, pinning, SMT state
/// and layout. Rates, not raw ops, because windows overshoot by a little.
pub(crate) fn fill_scalability(points: &mut [LockPoint]) {
    let base: Vec<_> = points
        .iter()
        .filter(|p| p.threads == 1)
        .map(|p| {
            (
                (
                    p.workload.clone(),
                    p.pinning,
                    p.smt,
                    p.false_sharing,
                    p.prepopulated_mounts,
                ),
                p.ops_per_sec,
            )
        })
        .collect();
    for p in points.iter_mut() {
        let key = (
            p.workload.clone(),
            p.pinning,
            p.smt,
            p.false_sharing,
            p.prepopulated_mounts,
        );
        p.scalability = base
            .iter()
            .find(|(k, _)| *k == key)
            .filter(|(_, one)| *one > 0.0 && p.threads > 0)
            .map(|(_, one)| p.ops_per_sec / (one * f64::from(p.threads)));
    }
}

static WORK_SEQ: AtomicU64 = AtomicU64::new(0);

pub(crate) fn run_with(
    scenario: &LockbenchScenario,
    scratch: &Path,
    cell_id: &str,
    opts: &Options,
) -> CellResult {
    let topology = crate::topology::observe();
    let smt_before = smt::read();
    let mut notes = Vec::new();
    let mut points = Vec::new();
    let mut metrics = BTreeMap::new();
    let mut error: Option<BenchError> = None;
    let mut leaked = 0;
    let mut tables = Vec::new();

    let seq = WORK_SEQ.fetch_add(1, Ordering::Relaxed);
    let work = scratch.join(format!("lockbench-{}-{seq}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&work) {
        error = Some(BenchError::from_io(format!("mkdir {}", work.display()), &e));
    }

    let (states, note) = smt::states_to_run(smt_before, scenario.toggle_smt);
    notes.extend(note);
    let guard = smt::SmtGuard::new();
    for (i, &state) in states.iter().enumerate() {
        if error.is_some() {
            break;
        }
        if i > 0 {
            if let Err(e) = guard.set(state) {
                notes.push(format!(
                    "SMT toggle to `{}` failed, skipped: {e}",
                    state.as_str()
                ));
                break;
            }
        }
        let topo = crate::topology::observe();
        let cpus = u32::try_from(topo.cpus_online.len()).unwrap_or(u32::MAX);
        let ctx = Ctx {
            scenario,
            threads: thread_counts(&scenario.threads, cpus),
            topo,
            smt: if i == 0 { smt_before } else { state },
            work: work.clone(),
            opts,
        };
        if opts.progress {
            eprintln!(
                "lockbench {}: SMT {}, {} CPUs, threads {:?}",
                scenario.bench.as_str(),
                ctx.smt.as_str(),
                cpus,
                ctx.threads
            );
        }
        // A panic in a family is a bug of ours: report it, and still restore SMT below.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match scenario.bench {
            Bench::UserSpin => user_spin::bench(&ctx),
            Bench::MountLock => mount_lock::bench(&ctx),
            Bench::Mountinfo => mountinfo::bench(&ctx),
            Bench::Storm => storm::bench(&ctx),
        }));
        match r {
            Ok(Ok(f)) => {
                points.extend(f.points);
                notes.extend(f.notes);
                metrics.extend(f.metrics);
                leaked += f.leaked_mounts;
                tables.extend(f.tables);
            }
            Ok(Err(e)) => error = Some(e),
            Err(_) => {
                error = Some(BenchError::Infra(Evidence::new(format!(
                    "lockbench {} panicked",
                    scenario.bench.as_str()
                ))))
            }
        }
        // A stop inside the family's last window ends it early without an error: the cell must
        // still say it was stopped, and SMT must not be toggled for another round.
        if error.is_none() {
            error = ctx.check_stop().err();
        }
    }
    let smt_after = match guard.restore() {
        Ok(s) if s != SmtState::Unknown => s,
        Ok(_) => smt::read(),
        Err(e) => {
            notes.push(format!("SMT restore failed: {e}"));
            smt::read()
        }
    };
    drop(guard);

    if work.exists() {
        if let Err(e) = std::fs::remove_dir_all(&work) {
            notes.push(format!("could not remove {}: {e}", work.display()));
            leaked += 1;
        }
    }

    fill_scalability(&mut points);
    metrics.extend(point_metrics(&points, scenario, smt_before));

    let (outcome, evidence) = match &error {
        Some(e) => {
            let (o, ev) = e.outcome();
            (o, Some(ev.clone()))
        }
        None if smt_after != smt_before => (
            Outcome::Fail,
            Some(
                Evidence::new(format!("restore {}", smt::control().display())).with_detail(
                    format!(
                        "was `{}`, now `{}`",
                        smt_before.as_str(),
                        smt_after.as_str()
                    ),
                ),
            ),
        ),
        None if leaked > 0 => (
            Outcome::Fail,
            Some(
                Evidence::new("clean up")
                    .with_detail(format!("{leaked} mounts or dirs left behind")),
            ),
        ),
        None => (Outcome::Pass, None),
    };
    CellResult {
        item: 0,
        cell_id: cell_id.to_string(),
        outcome,
        evidence,
        metrics,
        detail: Some(CellDetail::Lockbench(LockbenchResult {
            bench: scenario.bench,
            tables,
            topology,
            smt_before,
            smt_after,
            points,
            notes,
        })),
    }
}

/// Comparable numbers: for the first pinning and the starting SMT state, each workload's ops/s
/// and scalability at the smallest and largest thread count, and reader p99 where there are
/// readers.
fn point_metrics(
    points: &[LockPoint],
    scenario: &LockbenchScenario,
    smt: SmtState,
) -> BTreeMap<String, Metric> {
    let pin = scenario.pinning.first().copied().unwrap_or(Pinning::None);
    let mut m = BTreeMap::new();
    let chosen: Vec<&LockPoint> = points
        .iter()
        .filter(|p| p.pinning == pin && p.smt == smt)
        .collect();
    for p in &chosen {
        let same = |q: &&&LockPoint| {
            q.workload == p.workload
                && q.false_sharing == p.false_sharing
                && q.prepopulated_mounts == p.prepopulated_mounts
        };
        let min = chosen.iter().filter(same).map(|q| q.threads).min();
        let max = chosen.iter().filter(same).map(|q| q.threads).max();
        let end = match (Some(p.threads) == min, Some(p.threads) == max) {
            (true, _) => SweepEnd::Min,
            (_, true) => SweepEnd::Max,
            _ => continue,
        };
        // A storm over a grown table is a series of its own: `storm:per-layer+10000mounts@max`.
        let name = |column: &str| {
            PointMetricName {
                workload: p.workload.clone(),
                prepopulated_mounts: p.prepopulated_mounts,
                false_sharing: p.false_sharing,
                end,
                column: column.into(),
            }
            .to_string()
        };
        if p.ops > 0 {
            m.insert(
                name("ops_per_s"),
                Metric::one(Unit::OpsPerSecond, Better::Higher, p.ops_per_sec),
            );
        }
        if let Some(s) = p.scalability {
            m.insert(
                name("scalability"),
                Metric::one(Unit::Ratio, Better::Higher, s),
            );
        }
        if let Some(r) = p.reader_p99_ns {
            m.insert(
                name("reader_p99_ns"),
                Metric::one(Unit::Nanoseconds, Better::Lower, r),
            );
        }
        if let (Some(l), 0) = (p.latency_p50_ns, p.threads.saturating_sub(1)) {
            m.insert(
                name("latency_p50_ns"),
                Metric::one(Unit::Nanoseconds, Better::Lower, l),
            );
        }
    }
    m
}

/// Human-readable numbers: 12.3M, 4.56µs.
fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

fn dur(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 1e6 => format!("{:.2}ms", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.2}µs", v / 1e3),
        Some(v) => format!("{v:.1}ns"),
    }
}

fn print_table(r: &CellResult) {
    let Some(CellDetail::Lockbench(d)) = &r.detail else {
        println!("{}: {}", r.cell_id, r.outcome);
        return;
    };
    let t = &d.topology;
    println!(
        "== {} on {} ({}, {} CPUs online, SMT {}→{}) — {}",
        d.bench.as_str(),
        t.cpu_model,
        t.short(),
        t.cpus_online.len(),
        d.smt_before.as_str(),
        d.smt_after.as_str(),
        r.outcome
    );
    println!(
        "{:<44} {:<12} {:<12} {:>3} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "workload",
        "pinning",
        "smt",
        "N",
        "ops/s",
        "scal",
        "p50/op",
        "p99/op",
        "max/op",
        "rdr p50",
        "rdr p99"
    );
    for p in &d.points {
        let fs = if p.false_sharing { "+fs" } else { "" };
        let table = match (p.prepopulated_mounts, p.table_entries) {
            (Some(n), Some(e)) => format!(" +{n} ({e})"),
            (Some(n), None) if n > 0 => format!(" +{n}"),
            _ => String::new(),
        };
        println!(
            "{:<44} {:<12} {:<12} {:>3} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
            format!("{}{fs}{table}", p.workload),
            p.pinning.as_str(),
            p.smt.as_str(),
            p.threads,
            si(p.ops_per_sec),
            p.scalability.map_or("-".into(), |s| format!("{s:.2}")),
            dur(p.latency_p50_ns),
            dur(p.latency_p99_ns),
            dur(p.latency_max_ns),
            dur(p.reader_p50_ns),
            dur(p.reader_p99_ns),
        );
    }
    for n in &d.notes {
        println!("note: {n}");
    }
    if let Some(e) = &r.evidence {
        println!("evidence: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_sweeps() {
        assert_eq!(thread_counts(&[], 2), vec![1, 2]);
        assert_eq!(thread_counts(&[], 1), vec![1]);
        assert_eq!(thread_counts(&[], 6), vec![1, 2, 4, 6]);
        assert_eq!(thread_counts(&[], 8), vec![1, 2, 4, 8]);
        assert_eq!(thread_counts(&[4, 0, 1, 4], 2), vec![1, 4]);
    }

    #[test]
    fn scalability_is_per_series() {
        let p = |w: &str, n: u32, rate: f64| {
            let mut p = point(Measured {
                workload: w.into(),
                pinning: Pinning::None,
                smt: SmtState::On,
                false_sharing: false,
                threads: n,
                window: Duration::from_secs(1),
                per_thread_ops: vec![0; n as usize],
                samples: None,
                ops_per_sample: 1,
                readers: None,
            });
            p.ops_per_sec = rate;
            p
        };
        let mut v = vec![p("tas", 1, 100.0), p("tas", 2, 100.0), p("mutex", 2, 50.0)];
        fill_scalability(&mut v);
        assert_eq!(v[0].scalability, Some(1.0));
        assert_eq!(v[1].scalability, Some(0.5));
        assert_eq!(v[2].scalability, None);
    }

    #[test]
    fn kebab_values_parse() {
        assert_eq!(kebab::<Bench>("mount-lock"), Ok(Bench::MountLock));
        assert_eq!(kebab::<LockKind>("per-thread"), Ok(LockKind::PerThread));
        assert!(kebab::<Pinning>("everywhere").is_err());
    }
}
