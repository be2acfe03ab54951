//! Start latency against concurrency J: when a run's mounts cells differ only in how many
//! containers start at once (same row, filesystem, layers, containers, passes and strategy), one
//! chart per row, filesystem and layer count draws each strategy's median and p99 start against
//! J, so a cliff (start latency climbing once enough containers start together) shows as one.

use std::collections::{BTreeMap, BTreeSet};

use protocol::{MountStrategy, Outcome, Scenario, Summary};

use super::{
    accel_of, latency_us, runtimes_of, scale_for, slug, strategy_color, time_unit, ChartSection,
    MAX_CONCURRENCY_CHARTS, MAX_SERIES,
};
use crate::cell::{CellKey, LayerFs};
use crate::report::svg::{layout, ChartSpec, DataPoint, Scale, SeriesData};
use crate::results::CellRecord;

/// One J chart: a kernel/topology row, a filesystem and a layer count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct SweepChart {
    pub kernel: String,
    pub topology: String,
    pub filesystem: LayerFs,
    pub layers: u32,
}

/// One curve of it: what stays fixed while J moves (strategy, containers, passes).
pub(super) type SweepCurve = (MountStrategy, u32, u32);

/// The run's J sweeps: passing mounts cells with start latencies, grouped by chart and curve,
/// keeping the curves with at least two values of J (and the charts with such a curve).
pub(super) type Sweeps<'a> = BTreeMap<SweepChart, BTreeMap<SweepCurve, Vec<&'a CellRecord>>>;

pub(super) fn sweeps<'a>(cells: &[&'a CellRecord]) -> Sweeps<'a> {
    let mut all: Sweeps<'a> = BTreeMap::new();
    for c in cells {
        let Scenario::Mounts(m) = &c.scenario else {
            continue;
        };
        if c.outcome != Outcome::Pass || latency_us(c).is_none() {
            continue;
        }
        let (kernel, topology) = c.key.target.row();
        all.entry(SweepChart {
            kernel: kernel.to_string(),
            topology: topology.to_string(),
            filesystem: c.key.filesystem,
            layers: m.layers,
        })
        .or_default()
        .entry((m.strategy.clone(), m.containers, m.passes))
        .or_default()
        .push(c);
    }
    for curves in all.values_mut() {
        curves.retain(|_, cells| {
            let js: BTreeSet<u32> = cells.iter().filter_map(|c| concurrency(c)).collect();
            js.len() > 1
        });
    }
    all.retain(|_, curves| !curves.is_empty());
    all
}

/// The cells a J chart draws: a layer chart leaves their single-point curves to it.
pub(super) fn swept_cells<'a>(sweeps: &Sweeps<'a>) -> BTreeSet<&'a CellKey> {
    sweeps
        .values()
        .flat_map(|curves| curves.values().flatten())
        .map(|c| &c.key)
        .collect()
}

fn concurrency(c: &CellRecord) -> Option<u32> {
    match &c.scenario {
        Scenario::Mounts(m) => Some(m.concurrency),
        Scenario::Lockbench(_) => None,
    }
}

pub(super) fn concurrency_charts(
    sweeps: &Sweeps<'_>,
    omitted: &mut Vec<String>,
) -> Vec<ChartSection> {
    let cells: Vec<&CellRecord> = sweeps
        .values()
        .flat_map(|curves| curves.values().flatten().copied())
        .collect();
    let runtimes = runtimes_of(&cells);
    let mut sections: Vec<ChartSection> = Vec::new();
    let mut drawn = 0;
    let mut skipped = 0;
    for (chart, curves) in sweeps {
        if drawn >= MAX_CONCURRENCY_CHARTS {
            skipped += 1;
            continue;
        }
        let shapes: BTreeSet<(u32, u32)> = curves.keys().map(|(_, c, p)| (*c, *p)).collect();
        let mut points: Vec<(&SweepCurve, Vec<(u32, Summary)>)> = Vec::new();
        for (curve, cells) in curves {
            let mut pts: Vec<(u32, Summary)> = cells
                .iter()
                .filter_map(|c| {
                    let s = latency_us(c).and_then(|v| Summary::of(&v))?;
                    Some((concurrency(c)?, s))
                })
                .collect();
            pts.sort_by_key(|(j, _)| *j);
            points.push((curve, pts));
        }
        let max_us = points
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, s)| s.p99))
            .fold(0.0, f64::max);
        let (div, unit) = time_unit(max_us);
        let x_scale = scale_for(
            points
                .iter()
                .flat_map(|(_, p)| p.iter().map(|(j, _)| f64::from(*j))),
        );
        let total = points.len();
        let mut series = Vec::new();
        for ((st, containers, passes), pts) in points.into_iter().take(MAX_SERIES / 2) {
            let name = if shapes.len() > 1 {
                format!("{st} C{containers} P{passes}")
            } else {
                st.to_string()
            };
            let color = strategy_color(st, &runtimes);
            let curve = |label: String, dash: usize, markers: bool, pick: fn(&Summary) -> f64| {
                SeriesData {
                    label,
                    color,
                    dash,
                    line: true,
                    markers,
                    muted: false,
                    points: pts
                        .iter()
                        .map(|(j, s)| DataPoint {
                            x: f64::from(*j),
                            y: pick(s) / div,
                            lo: None,
                            hi: None,
                            alert: false,
                            title: format!(
                                "{name} J{j}: median {:.1} {unit}, p99 {:.1}, MAD {:.1}, max {:.1}, n={}",
                                s.p50 / div,
                                s.p99 / div,
                                s.mad / div,
                                s.max / div,
                                s.n
                            ),
                        })
                        .collect(),
                }
            };
            series.push(curve(format!("{name} p50"), 0, true, |s| s.p50));
            series.push(curve(format!("{name} p99"), 1, false, |s| s.p99));
        }
        let mut note =
            String::from("per-container start (all passes): median solid with dots, p99 dashed");
        if let [(c, p)] = shapes.iter().collect::<Vec<_>>().as_slice() {
            note.push_str(&format!("; C{c} containers, P{p} passes"));
        }
        if total > MAX_SERIES / 2 {
            note.push_str(&format!(
                "; {} strategies not drawn",
                total - MAX_SERIES / 2
            ));
        }
        let fs = chart.filesystem.as_str();
        let drawn_chart = layout(&ChartSpec {
            id: slug(&[
                "conc",
                &chart.kernel,
                &chart.topology,
                fs,
                &format!("L{}", chart.layers),
            ]),
            title: format!(
                "{} · {} · {fs} · L{}",
                chart.kernel, chart.topology, chart.layers
            ),
            accel: accel_of(curves.values().flatten().copied()),
            x_label: format!(
                "containers started at once (J{})",
                if x_scale == Scale::Log { ", log" } else { "" }
            ),
            y_label: format!("start latency ({unit})"),
            x_scale,
            y_scale: Scale::Linear,
            y_from_zero: true,
            series,
            note,
        });
        drawn += 1;
        let row = format!("{} · {}", chart.kernel, chart.topology);
        match sections.last_mut() {
            Some(s) if s.title == row => s.charts.push(drawn_chart),
            _ => sections.push(ChartSection {
                title: row,
                charts: vec![drawn_chart],
            }),
        }
    }
    if skipped > 0 {
        omitted.push(format!(
            "{skipped} start-latency-vs-concurrency charts not drawn (limit {MAX_CONCURRENCY_CHARTS})"
        ));
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Accel;
    use protocol::{Better, Metric, MountsScenario, Strategy, Unit};

    fn mounts(st: Strategy, j: u32, latency_us: f64) -> CellRecord {
        let sc = MountsScenario {
            strategy: st.into(),
            layers: 10,
            containers: 16,
            concurrency: j,
            passes: 2,
            watchers: Vec::new(),
        };
        let metrics = [(
            "start_latency_us".to_string(),
            Metric::new(
                Unit::Microseconds,
                Better::Lower,
                vec![latency_us, latency_us * 1.1, latency_us * 3.0],
            ),
        )]
        .into_iter()
        .collect();
        crate::report::testing::cell(Scenario::Mounts(sc), None, metrics, Accel::Kvm)
    }

    #[test]
    fn a_j_chart_only_where_j_varies() {
        let swept = [
            mounts(Strategy::PerLayer, 16, 900.0),
            mounts(Strategy::PerLayer, 1, 100.0),
            mounts(Strategy::PerLayer, 4, 200.0),
            // One J only: no curve of its own.
            mounts(Strategy::CommonParent, 2, 150.0),
        ];
        let cells: Vec<&CellRecord> = swept.iter().collect();
        let sw = sweeps(&cells);
        assert_eq!(sw.len(), 1);
        assert_eq!(swept_cells(&sw).len(), 3);
        let mut omitted = Vec::new();
        let sections = concurrency_charts(&sw, &mut omitted);
        let chart = &sections[0].charts[0];
        assert_eq!(chart.id, "conc-debian-7-x-1s2c1t-ext4-L10");
        let labels: Vec<&str> = chart.legend.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(labels, ["per-layer p50", "per-layer p99"]);
        // Sorted by J, whatever the cells' order: the median line climbs left to right.
        let p50 = &chart.series[0].markers;
        assert_eq!(p50.len(), 3);
        assert!(p50.windows(2).all(|w| w[0].x < w[1].x && w[0].y > w[1].y));
        // 1..16 spans a decade: log J.
        assert!(chart.x_label.contains("log"), "{}", chart.x_label);

        let flat = [
            mounts(Strategy::PerLayer, 2, 100.0),
            mounts(Strategy::CommonParent, 2, 150.0),
        ];
        let cells: Vec<&CellRecord> = flat.iter().collect();
        assert!(sweeps(&cells).is_empty(), "J never varied");
    }
}
