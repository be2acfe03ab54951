//! The storm's charts (lockbench `bench = storm`, the agent's `lockbench/storm.rs`): how long one
//! whole read of the storm namespace's mount table takes against the table's size, one line per
//! strategy (the "30 s to read the mount table" symptom: the read grows with the table while
//! containers start), and each strategy's per-container start latency against the storm's
//! concurrency N. The lock charts' scalability axis means nothing for a storm (its x is
//! containers started at once, not threads on a lock), so storm cells are drawn here only.

use std::collections::{BTreeMap, BTreeSet};

use protocol::lockbench::{
    Bench, LockPoint, LockbenchResult, LockbenchScenario, Pinning, StormPoint,
};
use protocol::{CellDetail, MountStrategy, Scenario, Strategy};

use super::{
    accel_of, scale_for, slug, strategy_color, time_unit, time_unit_on, ChartSection, MAX_SERIES,
    MAX_STORM_CHARTS,
};
use crate::report::model::one_line;
use crate::report::svg::{fmt_tick, layout, Chart, ChartSpec, DataPoint, Scale, SeriesData};
use crate::results::CellRecord;

/// A storm cell's scenario and result; `None` for every other cell.
pub(super) fn storm_of(c: &CellRecord) -> Option<(&LockbenchScenario, &LockbenchResult)> {
    match (&c.scenario, &c.detail) {
        (Scenario::Lockbench(sc), Some(CellDetail::Lockbench(lb))) if sc.bench == Bench::Storm => {
            Some((sc, lb))
        }
        _ => None,
    }
}

/// Fixed strategy colours, as on the mounts charts (storms run built-in strategies only).
fn color(st: Strategy) -> usize {
    strategy_color(&MountStrategy::Builtin(st), &BTreeSet::new())
}

pub(super) fn storm_charts(cells: &[&CellRecord], omitted: &mut Vec<String>) -> Vec<ChartSection> {
    let mut sections = Vec::new();
    let mut drawn = 0;
    let mut skipped = 0;
    for c in cells {
        let Some((sc, lb)) = storm_of(c) else {
            continue;
        };
        let points = chosen(c, sc, lb);
        let charts: Vec<Chart> = [read_chart(c, sc, lb, &points), start_chart(c, sc, &points)]
            .into_iter()
            .flatten()
            .collect();
        if charts.is_empty() {
            continue;
        }
        if drawn + charts.len() > MAX_STORM_CHARTS {
            skipped += charts.len();
            continue;
        }
        drawn += charts.len();
        sections.push(ChartSection {
            title: title(c, sc),
            charts,
        });
    }
    if skipped > 0 {
        omitted.push(format!(
            "{skipped} storm charts not drawn (limit {MAX_STORM_CHARTS})"
        ));
    }
    sections
}

/// The points a storm's charts show: the scenario's first pinning and the SMT state found (what
/// its metrics are), without points the harness judged unsupported.
fn chosen<'a>(
    c: &CellRecord,
    sc: &LockbenchScenario,
    lb: &'a LockbenchResult,
) -> Vec<(StormPoint, &'a LockPoint)> {
    let pin = sc.pinning.first().copied().unwrap_or(Pinning::None);
    lb.points
        .iter()
        .filter(|p| p.pinning == pin && p.smt == lb.smt_before && !p.false_sharing)
        .filter(|p| !c.caveats.point_unsupported(p))
        .filter_map(|p| Some((StormPoint::parse(&p.workload)?, p)))
        .collect()
}

fn title(c: &CellRecord, sc: &LockbenchScenario) -> String {
    let (kernel, topology) = c.key.target.row();
    let mut t = format!("{kernel} · {topology} · {}", c.key.filesystem);
    // A named storm (`lockbench-storm-big`) says which one it is.
    if sc.name.is_some() {
        t = format!("{} · {t}", sc.label());
    }
    t
}

fn id(kind: &str, c: &CellRecord, sc: &LockbenchScenario) -> String {
    let (kernel, topology) = c.key.target.row();
    slug(&[
        kind,
        &sc.label(),
        kernel,
        topology,
        c.key.filesystem.as_str(),
    ])
}

/// What faded curves mean, when a chart has any.
fn serialized_note() -> String {
    format!(
        "faded: {} (single-threaded TCG)",
        crate::results::SERIALIZED
    )
}

/// Mount-table read time against table entries, a line per strategy, at the sweep's largest N.
fn read_chart(
    c: &CellRecord,
    sc: &LockbenchScenario,
    lb: &LockbenchResult,
    points: &[(StormPoint, &LockPoint)],
) -> Option<Chart> {
    let reads: Vec<(Strategy, &LockPoint)> = points
        .iter()
        .filter_map(|(k, p)| match k {
            StormPoint::Read(st) => Some((*st, *p)),
            _ => None,
        })
        .collect();
    let drawable = |p: &LockPoint| p.table_entries.is_some() && p.latency_p50_ns.is_some();
    let n = reads
        .iter()
        .filter(|(_, p)| drawable(p))
        .map(|(_, p)| p.threads)
        .max()?;
    let sweep: BTreeSet<u32> = reads.iter().map(|(_, p)| p.threads).collect();
    let no_size = reads.iter().filter(|(_, p)| !drawable(p)).count();
    let mut by_st: BTreeMap<Strategy, Vec<&LockPoint>> = BTreeMap::new();
    for (st, p) in &reads {
        if p.threads == n && drawable(p) {
            by_st.entry(*st).or_default().push(p);
        }
    }
    for pts in by_st.values_mut() {
        pts.sort_by_key(|p| p.table_entries);
    }
    let all = || by_st.values().flatten();
    let max_ns = all()
        .map(|p| p.latency_p99_ns.or(p.latency_p50_ns).unwrap_or(0.0))
        .fold(0.0, f64::max);
    let min_ns = all()
        .filter_map(|p| p.latency_p50_ns)
        .fold(f64::INFINITY, f64::min);
    let x_scale = scale_for(all().filter_map(|p| p.table_entries).map(|e| e as f64));
    let y_scale = scale_for(all().filter_map(|p| p.latency_p50_ns));
    let (div_us, unit) = time_unit_on(y_scale, min_ns / 1e3, max_ns / 1e3);
    let div = div_us * 1e3;
    let mut muted_any = false;
    let series: Vec<SeriesData> = by_st
        .iter()
        .map(|(st, pts)| {
            let muted = pts.iter().any(|p| c.caveats.point_serialized(p));
            muted_any |= muted;
            SeriesData {
                label: st.to_string(),
                color: color(*st),
                dash: 0,
                line: true,
                markers: true,
                muted,
                points: pts
                    .iter()
                    .filter_map(|p| {
                        let (entries, p50) = (p.table_entries?, p.latency_p50_ns?);
                        Some(DataPoint {
                            x: entries as f64,
                            y: p50 / div,
                            lo: Some(p50 / div),
                            hi: p.latency_p99_ns.map(|v| v / div),
                            alert: false,
                            title: read_title(*st, p, (div, unit), c.caveats.point_serialized(p)),
                        })
                    })
                    .collect(),
            }
        })
        .collect();
    let mut note = format!(
        "one whole read of the storm namespace's mount table (/proc/<pid>/mountinfo) while N={n} \
         containers started{}: median, whisker to p99; x: entries the reader saw",
        if sweep.len() > 1 {
            " (the sweep's largest N)"
        } else {
            ""
        }
    );
    let missing: Vec<&str> = sc
        .strategies
        .iter()
        .filter(|st| !by_st.contains_key(st))
        .map(|st| st.as_str())
        .collect();
    if !missing.is_empty() {
        note.push_str(&format!("; no points: {}", missing.join(", ")));
    }
    if no_size > 0 {
        note.push_str(&format!(
            "; {no_size} points without a table size not drawn"
        ));
    }
    if muted_any {
        note = format!("{}; {note}", serialized_note());
    }
    if !lb.notes.is_empty() {
        note.push_str("; ");
        note.push_str(&one_line(&lb.notes.join("; "), 200));
    }
    Some(layout(&ChartSpec {
        id: id("storm-read", c, sc),
        title: title(c, sc),
        accel: accel_of(std::iter::once(c)),
        x_label: format!(
            "mount-table entries{}",
            if x_scale == Scale::Log { ", log" } else { "" }
        ),
        y_label: format!(
            "read time ({unit}{})",
            if y_scale == Scale::Log { ", log" } else { "" }
        ),
        x_scale,
        y_scale,
        y_from_zero: true,
        series,
        note,
    }))
}

fn read_title(st: Strategy, p: &LockPoint, (div, unit): (f64, &str), serialized: bool) -> String {
    let v = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{:.2}", x / div));
    format!(
        "{st}: {} entries ({} pre-populated), N={}: read median {} {unit}, p99 {}, max {}; {} reads{}",
        p.table_entries.unwrap_or(0),
        p.prepopulated_mounts.unwrap_or(0),
        p.threads,
        v(p.latency_p50_ns),
        v(p.latency_p99_ns),
        v(p.latency_max_ns),
        p.ops,
        if serialized {
            " (vCPUs serialized)"
        } else {
            ""
        }
    )
}

/// Per-container start latency against the storm's concurrency N: a colour per strategy, a
/// dash per pre-populated table size. Only when the storm swept N.
fn start_chart(
    c: &CellRecord,
    sc: &LockbenchScenario,
    points: &[(StormPoint, &LockPoint)],
) -> Option<Chart> {
    let starts: Vec<(Strategy, &LockPoint)> = points
        .iter()
        .filter_map(|(k, p)| match k {
            StormPoint::Start(st) if p.latency_p50_ns.is_some() => Some((*st, *p)),
            _ => None,
        })
        .collect();
    let ns: BTreeSet<u32> = starts.iter().map(|(_, p)| p.threads).collect();
    if ns.len() < 2 {
        return None;
    }
    let sizes: Vec<u32> = starts
        .iter()
        .map(|(_, p)| p.prepopulated_mounts.unwrap_or(0))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut by_series: BTreeMap<(Strategy, u32), Vec<&LockPoint>> = BTreeMap::new();
    for (st, p) in &starts {
        by_series
            .entry((*st, p.prepopulated_mounts.unwrap_or(0)))
            .or_default()
            .push(p);
    }
    let max_ns = starts
        .iter()
        .filter_map(|(_, p)| p.latency_p50_ns)
        .fold(0.0, f64::max);
    let (div_us, unit) = time_unit(max_ns / 1e3);
    let div = div_us * 1e3;
    let x_scale = scale_for(ns.iter().map(|n| f64::from(*n)));
    let total = by_series.len();
    let mut muted_any = false;
    let series: Vec<SeriesData> = by_series
        .into_iter()
        .take(MAX_SERIES)
        .map(|((st, pre), mut pts)| {
            pts.sort_by_key(|p| p.threads);
            let muted = pts.iter().any(|p| c.caveats.point_serialized(p));
            muted_any |= muted;
            let label = if sizes.len() > 1 {
                format!("{st} +{}", fmt_tick(f64::from(pre)))
            } else {
                st.to_string()
            };
            SeriesData {
                color: color(st),
                dash: sizes.iter().position(|s| *s == pre).unwrap_or(0),
                line: true,
                markers: true,
                muted,
                points: pts
                    .iter()
                    .filter_map(|p| {
                        let p50 = p.latency_p50_ns?;
                        let v = |x: Option<f64>| {
                            x.map_or("–".to_string(), |x| format!("{:.2}", x / div))
                        };
                        Some(DataPoint {
                            x: f64::from(p.threads),
                            y: p50 / div,
                            lo: None,
                            hi: None,
                            alert: false,
                            title: format!(
                                "{label}, N={}: start median {} {unit}, p99 {}, max {}; \
                                 bystanders' stat() p99 {} µs{}",
                                p.threads,
                                v(Some(p50)),
                                v(p.latency_p99_ns),
                                v(p.latency_max_ns),
                                p.reader_p99_ns
                                    .map_or("–".to_string(), |r| format!("{:.1}", r / 1e3)),
                                if c.caveats.point_serialized(p) {
                                    " (vCPUs serialized)"
                                } else {
                                    ""
                                }
                            ),
                        })
                    })
                    .collect(),
                label,
            }
        })
        .collect();
    let mut note = format!(
        "median per-container start in each storm, L{} layers",
        sc.layers
    );
    if sizes.len() > 1 {
        note.push_str("; dash and +K: mounts pre-populated in the storm's namespace");
    }
    if total > MAX_SERIES {
        note.push_str(&format!("; {} series not drawn", total - MAX_SERIES));
    }
    if muted_any {
        note = format!("{}; {note}", serialized_note());
    }
    Some(layout(&ChartSpec {
        id: id("storm-start", c, sc),
        title: title(c, sc),
        accel: accel_of(std::iter::once(c)),
        x_label: format!(
            "containers started at once (N{})",
            if x_scale == Scale::Log { ", log" } else { "" }
        ),
        y_label: format!("start latency ({unit})"),
        x_scale,
        y_scale: Scale::Linear,
        y_from_zero: true,
        series,
        note,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Accel;
    use protocol::ObservedTopology;
    use protocol::SmtState;

    fn point(workload: &str, threads: u32, pre: u32, entries: u64, p50_ns: f64) -> LockPoint {
        LockPoint {
            workload: workload.into(),
            pinning: Pinning::None,
            smt: SmtState::NotSupported,
            false_sharing: false,
            threads,
            duration_ns: 1_000_000,
            ops: 10,
            ops_per_sec: 10.0,
            per_thread_ops: vec![10],
            scalability: None,
            latency_p50_ns: Some(p50_ns),
            latency_p99_ns: Some(p50_ns * 2.0),
            latency_max_ns: Some(p50_ns * 3.0),
            reader_p50_ns: None,
            reader_p99_ns: None,
            reader_max_ns: None,
            ops_per_sample: None,
            prepopulated_mounts: Some(pre),
            table_entries: Some(entries),
            watchers: Vec::new(),
        }
    }

    /// A storm over tables of 0, 2,000 and 10,000 mounts at N = 1 and 4, points in the order
    /// given (largest table first, as nothing promises the agent's order).
    fn storm(strategies: &[Strategy], accel: Accel) -> CellRecord {
        let mut points = vec![point("storm:idle", 0, 0, 0, 1.0)];
        for pre in [10_000u32, 2_000, 0] {
            for st in strategies {
                for n in [1u32, 4] {
                    let entries = 30 + u64::from(pre) + u64::from(n);
                    points.push(point(&format!("storm:{st}"), n, pre, entries, 5e5));
                    points.push(point(
                        &format!("mountinfo-during:{st}"),
                        n,
                        pre,
                        entries,
                        entries as f64 * 700.0 * f64::from(n),
                    ));
                }
            }
        }
        let sc = LockbenchScenario {
            bench: Bench::Storm,
            threads: vec![1, 4],
            pinning: vec![Pinning::None],
            prepopulated_mounts: vec![0, 2_000, 10_000],
            strategies: Strategy::ALL.to_vec(),
            ..LockbenchScenario::default()
        };
        let mut c = crate::report::testing::cell(
            Scenario::Lockbench(sc),
            Some(CellDetail::Lockbench(LockbenchResult {
                bench: Bench::Storm,
                tables: Vec::new(),
                topology: ObservedTopology::default(),
                smt_before: SmtState::NotSupported,
                smt_after: SmtState::NotSupported,
                points,
                notes: vec!["storm fsconfig-fd: unsupported: EBADF; no points".into()],
            })),
            BTreeMap::new(),
            accel,
        );
        crate::run::caveats::apply(&mut c, None);
        c
    }

    fn charts(c: &CellRecord) -> Vec<Chart> {
        let mut omitted = Vec::new();
        let s = storm_charts(&[c], &mut omitted);
        assert!(omitted.is_empty());
        s.into_iter().flat_map(|s| s.charts).collect()
    }

    #[test]
    fn read_time_is_a_line_per_strategy_sorted_by_table_entries() {
        let c = storm(&[Strategy::PerLayer, Strategy::CommonParent], Accel::TcgMt);
        let charts = charts(&c);
        let read = charts
            .iter()
            .find(|c| c.id.starts_with("storm-read-"))
            .expect("a read-time chart");
        let labels: Vec<&str> = read.legend.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(labels, ["per-layer", "common-parent"]);
        for s in &read.series {
            // The three table sizes at the largest N only, left to right and rising.
            assert_eq!(s.markers.len(), 3);
            assert!(s.markers.windows(2).all(|w| w[0].x < w[1].x), "{s:?}");
            assert!(s.markers.windows(2).all(|w| w[0].y > w[1].y), "{s:?}");
            assert!(s.markers.iter().all(|m| m.title.contains("N=4")));
            assert!(!s.muted);
        }
        assert!(
            read.note.contains("N=4") && read.note.contains("no points: fsconfig-fd"),
            "{}",
            read.note
        );
        // 30..10,034 entries span decades: a log axis.
        assert!(read.x_label.contains("log"), "{}", read.x_label);
        assert!(charts.iter().any(|c| c.id.starts_with("storm-start-")));
    }

    #[test]
    fn serialized_storms_are_faded_and_a_single_n_has_no_start_chart() {
        let c = storm(&[Strategy::PerLayer], Accel::Tcg);
        let charts = charts(&c);
        assert!(charts.iter().all(|c| c.series.iter().all(|s| s.muted)));
        assert!(charts[0].note.starts_with("faded: "), "{}", charts[0].note);

        let mut one_n = storm(&[Strategy::PerLayer], Accel::TcgMt);
        if let Some(CellDetail::Lockbench(lb)) = &mut one_n.detail {
            lb.points.retain(|p| p.threads != 1);
        }
        let ids: Vec<String> = self::charts(&one_n).into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["storm-read-lockbench-storm-debian-7-x-1s2c1t-ext4"]);
    }
}
