//! Lock benchmark plans and results (ARCHITECTURE.md, "The lock benchmark").
//!
//! Each benchmark produces points: one per (lock kind or workload, pinning, thread count), in the
//! style of will-it-scale: ops/s, per-thread ops, scalability = ops / (ops@1 × N), latency
//! percentiles, and for the mount-lock family the bystander ("victim") readers' latency.

use serde::{Deserialize, Serialize};

use crate::limits::{self, LimitError};
use crate::{ObservedTopology, SmtState, Strategy};

/// Which benchmark family a cell runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bench {
    /// N threads on one user-space lock (global-lock-bench style).
    UserSpin,
    /// Writers doing mount-table operations while readers time `stat()` of a deep path.
    MountLock,
    /// Time to read /proc/self/mountinfo (and listmount) as the table grows.
    Mountinfo,
    /// The three mount strategies at high concurrency while readers run.
    Storm,
}

impl Bench {
    pub fn as_str(self) -> &'static str {
        match self {
            Bench::UserSpin => "user-spin",
            Bench::MountLock => "mount-lock",
            Bench::Mountinfo => "mountinfo",
            Bench::Storm => "storm",
        }
    }
}

/// User-space lock kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockKind {
    /// Test-and-set spinlock with `pause` in the wait loop.
    Tas,
    /// Ticket lock.
    Ticket,
    /// `std::sync::Mutex` (futex).
    Mutex,
    /// No shared lock: each thread increments its own padded counter (the ideal line).
    PerThread,
}

/// Where threads are pinned, chosen from the observed topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pinning {
    /// Let the scheduler place threads.
    None,
    /// One thread per physical core before any SMT sibling.
    PerCore,
    /// Fill SMT siblings of a core before moving to the next.
    SmtSiblings,
    /// Only the CPUs of NUMA node 0.
    OneNode,
    /// Round-robin across NUMA nodes.
    SpreadNodes,
}

impl Pinning {
    /// The pinning as `matrix.toml` and the reports spell it (`smt-siblings`).
    pub fn as_str(self) -> &'static str {
        match self {
            Pinning::None => "none",
            Pinning::PerCore => "per-core",
            Pinning::SmtSiblings => "smt-siblings",
            Pinning::OneNode => "one-node",
            Pinning::SpreadNodes => "spread-nodes",
        }
    }
}

/// Parameters of a lockbench cell. Defaults are small enough for a TCG guest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockbenchScenario {
    pub bench: Bench,
    /// Tells two scenarios of the same bench apart in cell ids (`lockbench-storm-big`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Thread counts to sweep; empty means 1, 2, 4 … up to the CPUs online.
    pub threads: Vec<u32>,
    pub locks: Vec<LockKind>,
    pub pinning: Vec<Pinning>,
    /// Put the shared counter on the lock's cache line (false sharing) as well as apart.
    pub false_sharing: bool,
    pub warmup_ms: u64,
    pub duration_ms: u64,
    /// mount-lock / storm: reader ("victim") threads timing stat().
    pub readers: u32,
    /// mountinfo: table sizes to grow to.
    pub table_sizes: Vec<u32>,
    /// storm: mounts added to the storm's mount namespace before it starts, one storm per value:
    /// the table-size axis (how long reading the table takes as it grows, while containers
    /// start). 0 is the namespace as copied from the agent's.
    pub prepopulated_mounts: Vec<u32>,
    /// storm: strategies to run, layers per container, containers.
    pub strategies: Vec<Strategy>,
    pub layers: u32,
    pub containers: u32,
    /// Also run every point with SMT turned off through /sys/devices/system/cpu/smt/control
    /// (restored afterwards, always).
    pub toggle_smt: bool,
    /// storm: mount-table watchers run beside every storm (`crate::watch`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watchers: Vec<crate::Watcher>,
}

impl Default for LockbenchScenario {
    fn default() -> Self {
        LockbenchScenario {
            bench: Bench::UserSpin,
            name: None,
            threads: Vec::new(),
            locks: vec![
                LockKind::Tas,
                LockKind::Ticket,
                LockKind::Mutex,
                LockKind::PerThread,
            ],
            pinning: vec![Pinning::None],
            false_sharing: true,
            warmup_ms: 100,
            duration_ms: 500,
            readers: 1,
            table_sizes: vec![1_000, 10_000],
            prepopulated_mounts: vec![0],
            // The three designs. fsconfig-fd-attr touches the mount table exactly as
            // fsconfig-fd does (one attachment a pass), so a storm of it repeats that point;
            // name it in `strategies` to run it.
            strategies: vec![
                Strategy::PerLayer,
                Strategy::CommonParent,
                Strategy::FsconfigFd,
            ],
            layers: 20,
            containers: 20,
            toggle_smt: false,
            watchers: Vec::new(),
        }
    }
}

impl LockbenchScenario {
    pub fn label(&self) -> String {
        crate::Scenario::Lockbench(self.clone()).label()
    }

    /// Check every number against [`crate::limits`] (the storm's layers and containers like a
    /// mounts run's).
    pub fn validate(&self) -> Result<(), LimitError> {
        limits::BENCH_THREADS.check_all(&self.threads, limits::MAX_SWEEP)?;
        limits::WARMUP_MS.check(self.warmup_ms)?;
        limits::DURATION_MS.check(self.duration_ms)?;
        limits::READERS.check(self.readers)?;
        limits::TABLE_SIZE.check_all(&self.table_sizes, limits::MAX_SWEEP)?;
        limits::TABLE_SIZE.check_all(&self.prepopulated_mounts, limits::MAX_SWEEP)?;
        limits::LAYERS.check(self.layers)?;
        limits::CONTAINERS.check(self.containers)?;
        if self.locks.is_empty() {
            return Err(LimitError::Empty { key: "locks" });
        }
        if self.pinning.is_empty() {
            return Err(LimitError::Empty { key: "pinning" });
        }
        if self.bench == Bench::Storm && self.strategies.is_empty() {
            return Err(LimitError::Empty { key: "strategies" });
        }
        if self.bench == Bench::Storm && self.prepopulated_mounts.is_empty() {
            return Err(LimitError::Empty {
                key: "prepopulated_mounts",
            });
        }
        Ok(())
    }
}

/// A lockbench cell's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockbenchResult {
    pub bench: Bench,
    pub topology: ObservedTopology,
    /// SMT state before the benchmark and after it was restored (must be equal).
    pub smt_before: SmtState,
    pub smt_after: SmtState,
    pub points: Vec<LockPoint>,
    /// What a reader of the numbers should know: skipped points, the C-loop ratio, the timer
    /// overhead per sample, an SMT toggle that could not happen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// storm: what each pre-populated table cost to make and take down, per strategy and size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<crate::TableCost>,
}

/// One measured point of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockPoint {
    /// What was contended: a lock kind (`tas`, `ticket`, …), a writer workload (`bind-umount`,
    /// `open-tree`), a table size (`mountinfo@10000`) or a strategy (`storm:per-layer`).
    pub workload: String,
    pub pinning: Pinning,
    pub smt: SmtState,
    /// Lock on the same cache line as the data it protects.
    #[serde(default)]
    pub false_sharing: bool,
    pub threads: u32,
    pub duration_ns: u64,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub per_thread_ops: Vec<u64>,
    /// ops / (ops@1 × N) for the same workload, pinning and SMT state.
    pub scalability: Option<f64>,
    /// Operation latency, nanoseconds (batched where an operation is shorter than the timer).
    pub latency_p50_ns: Option<f64>,
    pub latency_p99_ns: Option<f64>,
    pub latency_max_ns: Option<f64>,
    /// Bystander readers' stat() latency, nanoseconds.
    pub reader_p50_ns: Option<f64>,
    pub reader_p99_ns: Option<f64>,
    pub reader_max_ns: Option<f64>,
    /// Operations covered by one latency sample (samples are batched so that reading the clock
    /// costs under 5% of a sample); the latencies above are per operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_per_sample: Option<u32>,
    /// storm: the mounts added to the storm's namespace before it started (the scenario's
    /// `prepopulated_mounts` value this point belongs to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepopulated_mounts: Option<u32>,
    /// storm: entries in the storm namespace's mount table when its window opened, as
    /// `/proc/<run thread>/mountinfo` showed them (the x axis of read time against table size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_entries: Option<u64>,
    /// `storm:<strategy>`: the storm's watchers through its window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watchers: Vec<crate::WatcherFigures>,
}

/// What a storm point measured: its `workload`, written by the agent and read by the reports with
/// this one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StormPoint {
    /// `storm:idle`: the bystanders alone, before any storm.
    Idle,
    /// `storm:<strategy>`: one storm; latency = per-container start, reader_* = the bystanders'
    /// stat() latency.
    Start(Strategy),
    /// `mountinfo-during:<strategy>`: latency = one whole read of the storm namespace's table.
    Read(Strategy),
}

impl StormPoint {
    const IDLE: &'static str = "storm:idle";
    const START: &'static str = "storm:";
    const READ: &'static str = "mountinfo-during:";

    /// `None` for a workload that is no storm point (or names a strategy mmx does not know).
    pub fn parse(workload: &str) -> Option<StormPoint> {
        if workload == Self::IDLE {
            return Some(StormPoint::Idle);
        }
        if let Some(s) = workload.strip_prefix(Self::READ) {
            return s.parse().ok().map(StormPoint::Read);
        }
        workload
            .strip_prefix(Self::START)?
            .parse()
            .ok()
            .map(StormPoint::Start)
    }
}

impl std::fmt::Display for StormPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StormPoint::Idle => f.write_str(Self::IDLE),
            StormPoint::Start(st) => write!(f, "{}{st}", Self::START),
            StormPoint::Read(st) => write!(f, "{}{st}", Self::READ),
        }
    }
}

/// Which end of a thread sweep a point metric is: its smallest or its largest thread count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepEnd {
    Min,
    Max,
}

/// The name of a lock-benchmark point metric, one string in `metrics` so that `mmx compare`
/// treats it like any other: `<workload>[+<N>mounts][+fs]@<min|max>:<column>`, e.g.
/// `tas+fs@max:scalability` or `storm:per-layer+10000mounts@max:reader_p99_ns`. The agent
/// writes it and the harness reads it back with this one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointMetricName {
    pub workload: String,
    /// storm: the point's table size, when mounts were added (0 is not written).
    pub prepopulated_mounts: Option<u32>,
    pub false_sharing: bool,
    pub end: SweepEnd,
    /// `ops_per_s`, `scalability`, `reader_p99_ns`, `latency_p50_ns`.
    pub column: String,
}

impl PointMetricName {
    /// Read a metric name back; None for metrics that are not point metrics.
    pub fn parse(name: &str) -> Option<PointMetricName> {
        let (point, column) = name.rsplit_once(':')?;
        let (rest, end) = point.rsplit_once('@')?;
        let end = match end {
            "min" => SweepEnd::Min,
            "max" => SweepEnd::Max,
            _ => return None,
        };
        let (rest, false_sharing) = match rest.strip_suffix("+fs") {
            Some(w) => (w, true),
            None => (rest, false),
        };
        let (workload, prepopulated_mounts) = match rest
            .strip_suffix("mounts")
            .and_then(|r| r.rsplit_once('+'))
            .and_then(|(w, n)| Some((w, n.parse::<u32>().ok()?)))
        {
            Some((w, n)) => (w, Some(n)),
            None => (rest, None),
        };
        Some(PointMetricName {
            workload: workload.to_string(),
            prepopulated_mounts,
            false_sharing,
            end,
            column: column.to_string(),
        })
    }

    /// Whether `p` is one of the points this metric's sweep is over (any thread count).
    pub fn series_of(&self, p: &LockPoint, pin: Pinning) -> bool {
        p.pinning == pin
            && p.workload == self.workload
            && p.false_sharing == self.false_sharing
            && p.prepopulated_mounts.filter(|n| *n > 0) == self.prepopulated_mounts
    }
}

impl std::fmt::Display for PointMetricName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.workload)?;
        if let Some(n) = self.prepopulated_mounts.filter(|n| *n > 0) {
            write!(f, "+{n}mounts")?;
        }
        if self.false_sharing {
            f.write_str("+fs")?;
        }
        let end = match self.end {
            SweepEnd::Min => "min",
            SweepEnd::Max => "max",
        };
        write!(f, "@{end}:{}", self.column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_metric_names_round_trip() {
        for name in [
            "tas@min:ops_per_s",
            "tas+fs@max:scalability",
            "storm:per-layer@max:reader_p99_ns",
            "storm:per-layer+10000mounts@max:reader_p99_ns",
            "mountinfo-during:fsconfig-fd+1000mounts@min:latency_p50_ns",
            "bind-umount+fs@max:ops_per_s",
        ] {
            let parsed = PointMetricName::parse(name).expect(name);
            assert_eq!(parsed.to_string(), name);
        }
        let p = PointMetricName::parse("storm:per-layer+10000mounts@max:ops_per_s").unwrap();
        assert_eq!(p.workload, "storm:per-layer");
        assert_eq!(p.prepopulated_mounts, Some(10_000));
        assert_eq!(p.end, SweepEnd::Max);
        for not in ["boot_ms", "tas@mid:ops_per_s", "x:y"] {
            assert_eq!(PointMetricName::parse(not), None, "{not}");
        }
    }
    #[test]
    fn workloads_are_told_apart() {
        use StormPoint::*;
        assert_eq!(StormPoint::parse("storm:idle"), Some(Idle));
        for p in [Idle, Start(Strategy::PerLayer), Read(Strategy::FsconfigFd)] {
            assert_eq!(StormPoint::parse(&p.to_string()), Some(p));
        }
        assert_eq!(
            StormPoint::parse("storm:per-layer"),
            Some(Start(Strategy::PerLayer))
        );
        assert_eq!(
            StormPoint::parse("mountinfo-during:fsconfig-fd"),
            Some(Read(Strategy::FsconfigFd))
        );
        assert_eq!(StormPoint::parse("storm:runtime:x"), None);
        assert_eq!(StormPoint::parse("tas"), None);
    }
}
