//! Which charts report.html draws, from a run: start latency and mount-table operations against
//! layer count (built-in strategies and runtimes alike), and lockbench scalability. Every chart names its accelerator. Counts are capped
//! so that a 5,000-cell run still gives a file a browser opens quickly; what was left out is said.

use std::collections::{BTreeMap, BTreeSet};

use protocol::{CellDetail, MountStrategy, Outcome, Scenario, Strategy, Summary, Unit};
use serde::Serialize;

use super::model::mounts_detail;
use super::svg::{layout, Chart, ChartSpec, DataPoint, Scale, SeriesData};
use crate::results::{CellRecord, RunRecord};

#[derive(Debug, Serialize)]
pub struct ChartSection {
    pub title: String,
    pub charts: Vec<Chart>,
}

#[derive(Debug, Serialize)]
pub struct Charts {
    pub latency: Vec<ChartSection>,
    pub ops: Vec<Chart>,
    pub lockbench: Vec<ChartSection>,
    /// What the caps left out, one sentence each.
    pub omitted: Vec<String>,
}

const MAX_LATENCY_CHARTS: usize = 240;
const MAX_OPS_CHARTS: usize = 80;
const MAX_LOCK_CHARTS: usize = 40;
const MAX_SERIES: usize = 10;

/// Fixed colours so a strategy looks the same on every chart; runtimes take the next ones in
/// name order (the same order on every chart of a run).
fn strategy_color(s: &MountStrategy, runtimes: &BTreeSet<protocol::RuntimeName>) -> usize {
    match s {
        MountStrategy::Builtin(Strategy::PerLayer) => 1,
        MountStrategy::Builtin(Strategy::CommonParent) => 0,
        MountStrategy::Builtin(Strategy::FsconfigFd) => 2,
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

/// Per-container start latency samples in µs: the detail's per-container list when the agent
/// sent one (the real distribution), else the first of the named latency metrics it did send.
fn latency_us(c: &CellRecord) -> Option<Vec<f64>> {
    if let Some(d) = mounts_detail(c).filter(|d| !d.latency_us.is_empty()) {
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
    let latency = latency_charts(&cells, &mut omitted);
    let ops = ops_charts(&cells, &mut omitted);
    let lockbench = lock_charts(&cells, &mut omitted);
    Charts {
        latency,
        ops,
        lockbench,
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

fn latency_charts(cells: &[&CellRecord], omitted: &mut Vec<String>) -> Vec<ChartSection> {
    let mounts: Vec<&CellRecord> = cells
        .iter()
        .copied()
        .filter(|c| c.outcome == Outcome::Pass && matches!(c.scenario, Scenario::Mounts(_)))
        .collect();
    let runtimes = runtimes_of(&mounts);
    let mut sections = Vec::new();
    let mut drawn = 0;
    let mut skipped = 0;
    for ((kernel, topo), row) in by_row(&mounts) {
        let mut by_fs: BTreeMap<crate::cell::LayerFs, Vec<&CellRecord>> = BTreeMap::new();
        for c in row {
            by_fs.entry(c.key.filesystem).or_default().push(c);
        }
        let mut charts = Vec::new();
        for (fs, group) in by_fs {
            let fs = fs.as_str();
            if drawn >= MAX_LATENCY_CHARTS {
                skipped += 1;
                continue;
            }
            // Series: strategy × (containers, concurrency, passes); the shape only gets a
            // suffix when a chart has more than one.
            let mut series: BTreeMap<Shape, Vec<(f64, Summary)>> = BTreeMap::new();
            for c in &group {
                let Scenario::Mounts(m) = &c.scenario else {
                    continue;
                };
                let Some(s) = latency_us(c).and_then(|v| Summary::of(&v)) else {
                    continue;
                };
                series
                    .entry((m.strategy.clone(), m.containers, m.concurrency, m.passes))
                    .or_default()
                    .push((f64::from(m.layers), s));
            }
            if series.is_empty() {
                continue;
            }
            let shapes: BTreeSet<_> = series.keys().map(|k| (k.1, k.2, k.3)).collect();
            let max_us = series
                .values()
                .flatten()
                .map(|(_, s)| s.p50 + s.mad)
                .fold(0.0, f64::max);
            let (div, unit) = if max_us >= 1e6 {
                (1e6, "s")
            } else if max_us >= 1e4 {
                (1e3, "ms")
            } else {
                (1.0, "µs")
            };
            let total = series.len();
            let shape_list: Vec<_> = shapes.iter().collect();
            let data: Vec<SeriesData> = series
                .into_iter()
                .take(MAX_SERIES)
                .map(|((st, c, j, p), pts)| SeriesData {
                    label: if shapes.len() > 1 {
                        format!("{st} C{c} J{j} P{p}")
                    } else {
                        st.to_string()
                    },
                    color: strategy_color(&st, &runtimes),
                    dash: shape_list
                        .iter()
                        .position(|x| **x == (c, j, p))
                        .unwrap_or(0),
                    line: true,
                    markers: true,
                    muted: false,
                    points: pts
                        .into_iter()
                        .map(|(l, s)| DataPoint {
                            x: l,
                            y: s.p50 / div,
                            lo: Some((s.p50 - s.mad) / div),
                            hi: Some((s.p50 + s.mad) / div),
                            alert: false,
                            title: format!(
                                "{st} L{l}: median {:.1} {unit}, MAD {:.1}, min {:.1}, max {:.1}, n={}",
                                s.p50 / div,
                                s.mad / div,
                                s.min / div,
                                s.max / div,
                                s.n
                            ),
                        })
                        .collect(),
                })
                .collect();
            let mut note = String::from("median per container start (all passes), whisker ± MAD");
            if let [(c, j, p)] = shape_list.as_slice() {
                note.push_str(&format!("; C{c} containers, J{j} at once, P{p} passes"));
            }
            if total > MAX_SERIES {
                note.push_str(&format!("; {} series not drawn", total - MAX_SERIES));
            }
            charts.push(layout(&ChartSpec {
                id: slug(&["lat", &kernel, &topo, fs]),
                title: format!("{kernel} · {topo} · {fs}"),
                accel: accel_of(group.iter().copied()),
                x_label: "layers per container (L)".into(),
                y_label: format!("start latency ({unit})"),
                x_scale: Scale::Linear,
                y_scale: Scale::Linear,
                y_from_zero: true,
                series: data,
                note,
            }));
            drawn += 1;
        }
        if !charts.is_empty() {
            sections.push(ChartSection {
                title: format!("{kernel} · {topo}"),
                charts,
            });
        }
    }
    if skipped > 0 {
        omitted.push(format!(
            "{skipped} start-latency charts not drawn (limit {MAX_LATENCY_CHARTS})"
        ));
    }
    sections
}

/// A latency chart's series: strategy, containers, concurrency, passes.
type Shape = (MountStrategy, u32, u32, u32);

fn formula_label(st: Strategy, passes: u32) -> String {
    match st {
        Strategy::PerLayer => format!("{passes}·(1+2L)"),
        Strategy::CommonParent => format!("{passes}·3"),
        Strategy::FsconfigFd => format!("{passes}·1"),
    }
}

/// A mounts cell's operations per container as the kernel counted them: a runtime's metric
/// (every container's count; absent where the kernel has no mount events), a built-in's run
/// count shared out (its formula check vouches for it).
fn ops_per_container(c: &CellRecord) -> Option<f64> {
    let (d, Scenario::Mounts(m)) = (mounts_detail(c)?, &c.scenario) else {
        return None;
    };
    match m.strategy {
        MountStrategy::Runtime(_) => c
            .metrics
            .get(protocol::MOUNT_OPS_PER_CONTAINER)
            .and_then(|x| x.summary())
            .map(|s| s.p50),
        MountStrategy::Builtin(_) if m.containers > 0 => {
            Some(d.mount_ops.ops as f64 / f64::from(m.containers))
        }
        MountStrategy::Builtin(_) => None,
    }
}

fn ops_charts(cells: &[&CellRecord], omitted: &mut Vec<String>) -> Vec<Chart> {
    let with_ops: Vec<&CellRecord> = cells
        .iter()
        .copied()
        .filter(|c| ops_per_container(c).is_some())
        .collect();
    let runtimes = runtimes_of(&with_ops);
    let mut charts = Vec::new();
    let mut skipped = 0;
    for ((kernel, topo), row) in by_row(&with_ops) {
        if charts.len() >= MAX_OPS_CHARTS {
            skipped += 1;
            continue;
        }
        // Filesystems usually count the same: one marker per distinct value, naming them all.
        type Key = (MountStrategy, u32, u32, u64);
        let mut seen: BTreeMap<Key, (Vec<String>, Option<u64>, Outcome)> = BTreeMap::new();
        let mut layers: BTreeSet<u32> = BTreeSet::new();
        for c in &row {
            let (Some(per), Scenario::Mounts(m)) = (ops_per_container(c), &c.scenario) else {
                continue;
            };
            // In hundredths so equal counts merge as equal keys.
            let per = (per * 100.0).round() as u64;
            layers.insert(m.layers);
            let e = seen
                .entry((m.strategy.clone(), m.passes, m.layers, per))
                .or_insert_with(|| (Vec::new(), m.expected_ops_per_container(), c.outcome));
            e.0.push(c.key.filesystem.to_string());
            if c.outcome.severity() > e.2.severity() {
                e.2 = c.outcome;
            }
        }
        let mut measured: BTreeMap<(MountStrategy, u32), Vec<DataPoint>> = BTreeMap::new();
        for ((st, passes, l, per), (fss, want, worst)) in seen {
            let per = per as f64 / 100.0;
            let title = match want {
                Some(w) => format!(
                    "{st} L{l}: {per} ops/container, formula {w} ({}; worst outcome {worst})",
                    fss.join(", ")
                ),
                None => format!(
                    "{st} L{l}: {per} ops/container, the runtime's own ({}; worst outcome {worst})",
                    fss.join(", ")
                ),
            };
            measured
                .entry((st.clone(), passes))
                .or_default()
                .push(DataPoint {
                    x: f64::from(l),
                    y: per,
                    lo: None,
                    hi: None,
                    alert: want.is_some_and(|w| (per - w as f64).abs() > 1e-9),
                    title,
                });
        }
        let (Some(&lo), Some(&hi)) = (layers.first(), layers.last()) else {
            continue;
        };
        let mut series = Vec::new();
        for ((st, passes), pts) in &measured {
            let color = strategy_color(st, &runtimes);
            let Some(builtin) = st.builtin() else {
                // A runtime has no formula: its counts, joined, show whether they grow with L.
                series.push(SeriesData {
                    label: format!("{st} measured"),
                    color,
                    dash: 0,
                    line: true,
                    markers: true,
                    muted: false,
                    points: pts.clone(),
                });
                continue;
            };
            // The formula as a curve over the layer range: log-spaced samples plus every L run.
            let mut xs: BTreeSet<u32> = layers.clone();
            for i in 0..=16 {
                let t = f64::from(i) / 16.0;
                let l = (f64::from(lo).ln() + t * (f64::from(hi).ln() - f64::from(lo).ln())).exp();
                xs.insert(l.round().max(1.0) as u32);
            }
            let formula = xs
                .into_iter()
                .filter_map(|l| {
                    let m = protocol::MountsScenario {
                        strategy: st.clone(),
                        layers: l,
                        containers: 1,
                        concurrency: 1,
                        passes: *passes,
                    };
                    Some(DataPoint {
                        x: f64::from(l),
                        y: m.expected_ops_per_container()? as f64,
                        lo: None,
                        hi: None,
                        title: String::new(),
                        alert: false,
                    })
                })
                .collect();
            series.push(SeriesData {
                label: format!("{st} formula {}", formula_label(builtin, *passes)),
                color,
                dash: 1,
                line: true,
                markers: false,
                muted: false,
                points: formula,
            });
            series.push(SeriesData {
                label: format!("{st} measured"),
                color,
                dash: 0,
                line: false,
                markers: true,
                muted: false,
                points: pts.clone(),
            });
        }
        charts.push(layout(&ChartSpec {
            id: slug(&["ops", &kernel, &topo]),
            title: format!("{kernel} · {topo}"),
            accel: accel_of(row.iter().copied()),
            x_label: "layers per container (L, log)".into(),
            y_label: "mount-table ops / container (log)".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Log,
            y_from_zero: false,
            series,
            note: "dashed: a strategy's formula (ARCHITECTURE.md); dots: counted by the kernel, \
                   every filesystem; a runtime's dots are joined (it has no formula)"
                .into(),
        }));
    }
    if skipped > 0 {
        omitted.push(format!(
            "{skipped} mount-ops charts not drawn (limit {MAX_OPS_CHARTS})"
        ));
    }
    charts
}

/// Where a lock-benchmark chart's curves come from: one benchmark (scenario label) on one
/// topology (a guest's, or a host's own) and, for benchmarks that touch the layers, one
/// filesystem. Its series are the kernels (or hosts).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct LockGroup {
    label: String,
    topology: String,
    /// `None` for user-spin, which never touches the layers' filesystem.
    filesystem: Option<String>,
}

/// Curves drawn per lock chart (kernels × workloads).
const MAX_LOCK_SERIES: usize = 16;

fn lock_charts(cells: &[&CellRecord], omitted: &mut Vec<String>) -> Vec<ChartSection> {
    let mut groups: BTreeMap<LockGroup, Vec<&CellRecord>> = BTreeMap::new();
    for c in cells {
        let (Some(CellDetail::Lockbench(lb)), Scenario::Lockbench(sc)) = (&c.detail, &c.scenario)
        else {
            continue;
        };
        if lb.points.is_empty() {
            continue;
        }
        let topology = match &c.key.target {
            crate::cell::TargetKey::Qemu { topology, .. } => topology.clone(),
            other => other.to_string(),
        };
        let uses_fs = crate::matrix::uses_layer_fs(&c.scenario);
        groups
            .entry(LockGroup {
                label: sc.label(),
                topology,
                filesystem: uses_fs.then(|| c.key.filesystem.to_string()),
            })
            .or_default()
            .push(c);
    }
    let mut sections = Vec::new();
    let mut skipped = 0;
    for (g, members) in groups {
        if sections.len() >= MAX_LOCK_CHARTS {
            skipped += 1;
            continue;
        }
        sections.push(lock_chart(&g, &members));
    }
    if skipped > 0 {
        omitted.push(format!(
            "{skipped} lockbench charts not drawn (limit {MAX_LOCK_CHARTS})"
        ));
    }
    sections
}

/// One chart: scalability against threads, a colour per kernel and a dash per workload, on the
/// scenario's first pinning and the SMT state found (what its metrics are), without the
/// false-sharing twins (they are in the performance table with every throughput).
fn lock_chart(g: &LockGroup, members: &[&CellRecord]) -> ChartSection {
    let mut title = format!("{} · {}", g.label, g.topology);
    if let Some(fs) = &g.filesystem {
        title.push_str(&format!(" · {fs}"));
    }
    let mut workloads: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut series = Vec::new();
    let mut total = 0;
    let mut serialized = false;
    for (ki, c) in members.iter().enumerate() {
        let (Some(CellDetail::Lockbench(lb)), Scenario::Lockbench(sc)) = (&c.detail, &c.scenario)
        else {
            continue;
        };
        // A kernel's name, and its filesystem when an older run has it more than once here.
        let kernel = c.key.target.row().0;
        let twins = members
            .iter()
            .filter(|m| m.key.target.row().0 == kernel)
            .count();
        let who = if twins > 1 {
            format!("{kernel} {}", c.key.filesystem)
        } else {
            kernel.to_string()
        };
        let pin = sc
            .pinning
            .first()
            .copied()
            .unwrap_or(protocol::lockbench::Pinning::None);
        let chosen: Vec<&protocol::lockbench::LockPoint> = lb
            .points
            .iter()
            .filter(|p| p.pinning == pin && p.smt == lb.smt_before && !p.false_sharing)
            .filter(|p| !c.caveats.point_unsupported(p))
            .collect();
        for u in &c.caveats.unsupported_points {
            notes.push(format!(
                "{who}: {} points unsupported ({})",
                u.pinning.as_str(),
                u.reason
            ));
        }
        if !lb.notes.is_empty() {
            notes.push(format!(
                "{who}: {}",
                super::model::one_line(&lb.notes.join("; "), 200)
            ));
        }
        let muted = c.caveats.vcpus_serialized;
        serialized |= muted;
        let mut by_workload: BTreeMap<&str, Vec<&protocol::lockbench::LockPoint>> = BTreeMap::new();
        for p in chosen {
            by_workload.entry(p.workload.as_str()).or_default().push(p);
        }
        for (w, pts) in by_workload {
            total += 1;
            if series.len() >= MAX_LOCK_SERIES {
                continue;
            }
            let wi = match workloads.iter().position(|x| x == w) {
                Some(i) => i,
                None => {
                    workloads.push(w.to_string());
                    workloads.len() - 1
                }
            };
            series.push(SeriesData {
                label: format!("{who} {w}"),
                color: ki,
                dash: wi,
                line: true,
                markers: true,
                muted,
                points: pts
                    .iter()
                    .filter_map(|p| {
                        p.scalability.map(|y| DataPoint {
                            x: f64::from(p.threads),
                            y,
                            lo: None,
                            hi: None,
                            alert: false,
                            title: format!(
                                "{who} {w}, {} threads: {:.0} ops/s, scalability {y:.2}{}",
                                p.threads,
                                p.ops_per_sec,
                                if c.caveats.point_serialized(p) {
                                    " (vCPUs serialized)"
                                } else {
                                    ""
                                }
                            ),
                        })
                    })
                    .collect(),
            });
        }
    }
    let mut note = String::from("1.0 = perfect scaling; throughput per point in the table");
    if serialized {
        note = format!(
            "faded: {} (single-threaded TCG); {note}",
            crate::run::caveats::SERIALIZED
        );
    }
    if total > series.len() {
        note.push_str(&format!("; {} of {total} curves drawn", series.len()));
    }
    for n in notes {
        note.push_str("; ");
        note.push_str(&n);
    }
    let chart = layout(&ChartSpec {
        id: slug(&[
            "lock",
            &g.label,
            &g.topology,
            g.filesystem.as_deref().unwrap_or(""),
        ]),
        title: title.clone(),
        accel: accel_of(members.iter().copied()),
        x_label: "threads".into(),
        y_label: "ops / (ops@1 × N)".into(),
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        y_from_zero: true,
        series,
        note,
    });
    ChartSection {
        title,
        charts: vec![chart],
    }
}
