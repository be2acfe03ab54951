//! Charts of the mounts cells: per-container start latency and mount-table operations against
//! layer count, built-in strategies and runtimes alike.

use std::collections::{BTreeMap, BTreeSet};

use protocol::{MountStrategy, Outcome, Scenario, Strategy, Summary};

use super::{
    accel_of, by_row, latency_us, runtimes_of, slug, strategy_color, time_unit, ChartSection,
    MAX_LATENCY_CHARTS, MAX_OPS_CHARTS, MAX_SERIES,
};
use crate::cell::CellKey;
use crate::report::svg::{layout, Chart, ChartSpec, DataPoint, Scale, SeriesData};
use crate::results::CellRecord;

/// `swept`: cells a concurrency chart draws; a curve that is one of them alone (one layer
/// count) is left to that chart.
pub(super) fn latency_charts(
    cells: &[&CellRecord],
    swept: &BTreeSet<&CellKey>,
    omitted: &mut Vec<String>,
) -> Vec<ChartSection> {
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
            let mut lone: BTreeMap<Shape, bool> = BTreeMap::new();
            for c in &group {
                let Scenario::Mounts(m) = &c.scenario else {
                    continue;
                };
                let Some(s) = latency_us(c).and_then(|v| Summary::of(&v)) else {
                    continue;
                };
                let shape = (m.strategy.clone(), m.containers, m.concurrency, m.passes);
                *lone.entry(shape.clone()).or_insert(true) &= swept.contains(&c.key);
                series
                    .entry(shape)
                    .or_default()
                    .push((f64::from(m.layers), s));
            }
            // One point of a J sweep says nothing about layers: its J chart has it.
            let before = series.len();
            series.retain(|shape, pts| !(pts.len() == 1 && lone[shape]));
            let in_j = before - series.len();
            if series.is_empty() {
                continue;
            }
            let shapes: BTreeSet<_> = series.keys().map(|k| (k.1, k.2, k.3)).collect();
            let max_us = series
                .values()
                .flatten()
                .map(|(_, s)| s.p50 + s.mad)
                .fold(0.0, f64::max);
            let (div, unit) = time_unit(max_us);
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
            if in_j > 0 {
                note.push_str(&format!(
                    "; {in_j} single-L curves of a J sweep are in its concurrency chart"
                ));
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
        Strategy::FsconfigFd | Strategy::FsconfigFdAttr => format!("{passes}·1"),
    }
}

/// A mounts cell's operations per container as the kernel counted them: a runtime's metric
/// (every container's count; absent where the kernel has no mount events), a built-in's run
/// count shared out (its formula check vouches for it).
fn ops_per_container(c: &CellRecord) -> Option<f64> {
    let (d, Scenario::Mounts(m)) = (c.mounts()?, &c.scenario) else {
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

pub(super) fn ops_charts(cells: &[&CellRecord], omitted: &mut Vec<String>) -> Vec<Chart> {
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
                        watchers: Vec::new(),
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
