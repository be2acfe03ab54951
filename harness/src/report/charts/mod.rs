//! Which charts report.html draws, from a run: start latency and mount-table operations against
//! layer count (built-in strategies and runtimes alike, [`mounts`]), start latency against
//! concurrency where a run swept it ([`concurrency`]), the storm's mount-table read time against
//! table size ([`storm`]), lockbench scalability ([`lock`]), and what the mount-table watchers
//! paid per container start ([`watchers`]). Every chart names its accelerator. Counts are capped so that a 5,000-cell run
//! still gives a file a browser opens quickly; what was left out is said.

use std::collections::BTreeSet;

use protocol::{MountStrategy, Strategy, Unit};
use serde::Serialize;

use super::svg::{Chart, Scale};
use crate::results::{CellRecord, RunRecord};

mod concurrency;
mod lock;
mod mounts;
pub mod storm;
pub mod watchers;

#[derive(Debug, Serialize)]
pub struct ChartSection {
    pub title: String,
    pub charts: Vec<Chart>,
}

#[derive(Debug, Serialize)]
pub struct Charts {
    pub latency: Vec<ChartSection>,
    /// Start latency against concurrency J, where a run swept J.
    pub concurrency: Vec<ChartSection>,
    pub ops: Vec<Chart>,
    /// Storm cells: mount-table read time against table size, start latency against N.
    pub storm: Vec<ChartSection>,
    /// Lock-benchmark scalability (every bench but the storm).
    pub lockbench: Vec<ChartSection>,
    /// Mount-table watchers: CPU per container start and lag against layers and table size.
    pub watchers: Vec<ChartSection>,
    /// The watchers' rows, for the table under their charts.
    pub watcher_rows: Vec<watchers::WatcherRow>,
    /// What the caps left out, one sentence each.
    pub omitted: Vec<String>,
}

const MAX_LATENCY_CHARTS: usize = 240;
const MAX_OPS_CHARTS: usize = 80;
const MAX_LOCK_CHARTS: usize = 40;
const MAX_CONCURRENCY_CHARTS: usize = 60;
const MAX_STORM_CHARTS: usize = 40;
const MAX_SERIES: usize = 10;

/// Fixed colours so a strategy looks the same on every chart; runtimes take the next ones in
/// name order (the same order on every chart of a run).
fn strategy_color(s: &MountStrategy, runtimes: &BTreeSet<protocol::RuntimeName>) -> usize {
    match s {
        MountStrategy::Builtin(Strategy::PerLayer) => 1,
        MountStrategy::Builtin(Strategy::CommonParent) => 0,
        MountStrategy::Builtin(Strategy::FsconfigFd) => 2,
        MountStrategy::Builtin(Strategy::FsconfigFdAttr) => 3,
        MountStrategy::Runtime(n) => {
            Strategy::ALL.len() + runtimes.iter().position(|r| r == n).unwrap_or(0)
        }
    }
}

/// The runtimes of a run's cells, in name order (their colours).
fn runtimes_of(cells: &[&CellRecord]) -> BTreeSet<protocol::RuntimeName> {
    cells
        .iter()
        .filter_map(|c| c.scenario.runtime().cloned())
        .collect()
}

fn accel_of<'a>(cells: impl Iterator<Item = &'a CellRecord>) -> String {
    let set: BTreeSet<&str> = cells.map(|c| c.provenance.accel.as_str()).collect();
    set.into_iter().collect::<Vec<_>>().join("+")
}

/// Microseconds per unit, for time units.
fn us_per(unit: Unit) -> Option<f64> {
    match unit {
        Unit::Nanoseconds => Some(1e-3),
        Unit::Microseconds => Some(1.0),
        Unit::Milliseconds => Some(1e3),
        Unit::Seconds => Some(1e6),
        Unit::Count | Unit::OpsPerSecond | Unit::Ratio | Unit::Bytes => None,
    }
}

/// The unit a time axis whose largest value is `max_us` µs reads best in: (µs per unit, symbol).
fn time_unit(max_us: f64) -> (f64, &'static str) {
    if max_us >= 1e6 {
        (1e6, "s")
    } else if max_us >= 1e4 {
        (1e3, "ms")
    } else {
        (1.0, "µs")
    }
}

/// The unit of a time axis from `min_us` to `max_us`: on a log axis the smallest value decides
/// (0.2 ms to 1,500 ms reads better than 0.0002 s to 1.5 s), on a linear one the largest.
fn time_unit_on(scale: Scale, min_us: f64, max_us: f64) -> (f64, &'static str) {
    match scale {
        Scale::Linear => time_unit(max_us),
        Scale::Log if min_us >= 1e5 => (1e6, "s"),
        Scale::Log if min_us >= 100.0 => (1e3, "ms"),
        Scale::Log => (1.0, "µs"),
    }
}

/// Log when the values span a decade or more (table sizes, concurrency sweeps), else linear.
fn scale_for(values: impl IntoIterator<Item = f64>) -> Scale {
    let (lo, hi) = values
        .into_iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > 0.0 && hi / lo >= 10.0 {
        Scale::Log
    } else {
        Scale::Linear
    }
}

/// Per-container start latency samples in µs: the detail's per-container list when the agent
/// sent one (the real distribution), else the first of the named latency metrics it did send.
fn latency_us(c: &CellRecord) -> Option<Vec<f64>> {
    if let Some(d) = c.mounts().filter(|d| !d.latency_us.is_empty()) {
        return Some(d.latency_us.iter().map(|v| *v as f64).collect());
    }
    let m = ["start_latency_us", "latency_us", "latency_p50_us"]
        .iter()
        .find_map(|n| c.metrics.get(*n))?;
    let f = us_per(m.unit)?;
    Some(m.samples.iter().map(|v| v * f).collect())
}

pub fn build(run: &RunRecord) -> Charts {
    let mut cells: Vec<&CellRecord> = run.cells.iter().collect();
    cells.sort_by(|a, b| a.key.cmp(&b.key));
    let mut omitted = Vec::new();
    let sweeps = concurrency::sweeps(&cells);
    let latency = mounts::latency_charts(&cells, &concurrency::swept_cells(&sweeps), &mut omitted);
    let concurrency = concurrency::concurrency_charts(&sweeps, &mut omitted);
    let ops = mounts::ops_charts(&cells, &mut omitted);
    let storm = storm::storm_charts(&cells, &mut omitted);
    let lockbench = lock::lock_charts(&cells, &mut omitted);
    let watcher_rows = watchers::rows(run);
    let watchers = watchers::charts(&cells, &watcher_rows, &mut omitted);
    Charts {
        latency,
        concurrency,
        ops,
        storm,
        lockbench,
        watchers,
        watcher_rows,
        omitted,
    }
}

type RowKey = (String, String);

fn by_row<'a>(cells: &[&'a CellRecord]) -> Vec<(RowKey, Vec<&'a CellRecord>)> {
    let mut out: Vec<(RowKey, Vec<&CellRecord>)> = Vec::new();
    for c in cells {
        let (kernel, topology) = c.key.target.row();
        let k = (kernel.to_string(), topology.to_string());
        match out.last_mut() {
            Some((lk, v)) if *lk == k => v.push(c),
            _ => out.push((k, vec![c])),
        }
    }
    out
}

fn slug(parts: &[&str]) -> String {
    parts
        .join("-")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}
