//! What a mount pattern costs the daemons that watch the table (`protocol::watch`): one row per
//! cell (or storm point) and watcher for report.md and report.html, and charts of the watcher's
//! CPU per container start and its lag against layers (mounts cells) and table size (storm
//! points), one line per strategy. "CPU per container start" is the watcher thread's CPU time
//! through the window divided by the containers the window started: what one container start
//! of that pattern costs a watcher on the same node.

use std::collections::{BTreeMap, BTreeSet};

use protocol::lockbench::StormPoint;
use protocol::{
    CellDetail, MountStrategy, Outcome, Scenario, Summary, Watcher, WatcherFigures, WatcherOutcome,
    WatcherStats,
};
use serde::Serialize;

use super::{runtimes_of, slug, strategy_color, ChartSection, MAX_SERIES};
use crate::report::svg::{layout, ChartSpec, DataPoint, Scale, SeriesData};
use crate::results::{CellRecord, RunRecord};

/// Most watcher charts one report draws (two per group: CPU and lag).
const MAX_WATCHER_CHARTS: usize = 60;

/// Where one set of watcher figures comes from: a mounts cell (x = layers) or a storm point
/// (x = the table's entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Axis {
    Layers,
    TableEntries,
}

/// One watcher through one window, as a report row.
#[derive(Debug, Clone, Serialize)]
pub struct WatcherRow {
    pub cell: String,
    pub kernel: String,
    pub topology: String,
    pub filesystem: String,
    pub strategy: String,
    pub axis: Axis,
    /// Layers, or the table's entries when the window opened.
    pub x: u64,
    pub containers: u32,
    pub watcher: Watcher,
    /// `watched`, or what stopped it (`unsupported: fanotify_init(…): EINVAL`).
    pub status: String,
    pub cpu_us_per_container: Option<String>,
    pub cpu_ms: Option<String>,
    pub wakeups: Option<u64>,
    pub bytes_read: Option<u64>,
    pub lag_p50: Option<String>,
    pub lag_p99: Option<String>,
    /// `matched/all` overlays (lag samples against overlays returned).
    pub matched: Option<String>,
    #[serde(skip)]
    stats: Option<WatcherStats>,
    #[serde(skip)]
    strategy_key: Option<MountStrategy>,
    #[serde(skip)]
    accel: String,
}

/// Every watcher row of a run, in cell order.
pub fn rows(run: &RunRecord) -> Vec<WatcherRow> {
    let mut cells: Vec<&CellRecord> = run.cells.iter().collect();
    cells.sort_by(|a, b| a.key.cmp(&b.key));
    rows_of(&cells)
}

fn rows_of(cells: &[&CellRecord]) -> Vec<WatcherRow> {
    let mut out = Vec::new();
    for &c in cells {
        let (kernel, topology) = c.key.target.row();
        let base = |strategy: MountStrategy, axis, x, containers, f: &WatcherFigures| {
            row(
                c,
                (kernel.to_string(), topology.to_string()),
                strategy,
                (axis, x, containers),
                f,
            )
        };
        match (&c.scenario, &c.detail) {
            (Scenario::Mounts(m), Some(CellDetail::Mounts(d))) => {
                for f in &d.watchers {
                    out.push(base(
                        m.strategy.clone(),
                        Axis::Layers,
                        u64::from(m.layers),
                        m.containers,
                        f,
                    ));
                }
            }
            (Scenario::Lockbench(l), Some(CellDetail::Lockbench(r))) => {
                for p in &r.points {
                    let Some(StormPoint::Start(st)) = StormPoint::parse(&p.workload) else {
                        continue;
                    };
                    let x = p
                        .table_entries
                        .or(p.prepopulated_mounts.map(u64::from))
                        .unwrap_or(0);
                    for f in &p.watchers {
                        out.push(base(
                            st.into(),
                            Axis::TableEntries,
                            x,
                            l.containers.max(p.threads),
                            f,
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn row(
    c: &CellRecord,
    (kernel, topology): (String, String),
    strategy: MountStrategy,
    (axis, x, containers): (Axis, u64, u32),
    f: &WatcherFigures,
) -> WatcherRow {
    let ms = |ns: f64| format!("{:.2}", ns / 1e6);
    let us = |ns: f64| format!("{:.1}", ns / 1e3);
    let mut r = WatcherRow {
        cell: c.key.to_string(),
        kernel,
        topology,
        filesystem: c.key.filesystem.as_str().to_string(),
        strategy: strategy.to_string(),
        axis,
        x,
        containers,
        watcher: f.watcher,
        status: "watched".into(),
        cpu_us_per_container: None,
        cpu_ms: None,
        wakeups: None,
        bytes_read: None,
        lag_p50: None,
        lag_p99: None,
        matched: None,
        stats: None,
        strategy_key: Some(strategy),
        accel: c.provenance.accel.as_str().to_string(),
    };
    match &f.outcome {
        WatcherOutcome::Watched(s) => {
            r.cpu_us_per_container = s.cpu_ns_per_container(containers).map(us);
            r.cpu_ms = Some(ms(s.cpu_ns as f64));
            r.wakeups = Some(s.wakeups);
            r.bytes_read = Some(s.bytes_read);
            r.lag_p50 = s.lag_ns.map(|l| us(l.p50));
            r.lag_p99 = s.lag_ns.map(|l| us(l.p99));
            let all = s.lag_matched + s.lag_unmatched;
            r.matched = (all > 0).then(|| format!("{}/{all}", s.lag_matched));
            r.stats = Some(s.clone());
        }
        WatcherOutcome::Unsupported { step, errno } => {
            r.status = format!("unsupported: {step}: {}", protocol::errno::describe(*errno));
        }
        WatcherOutcome::Failed { step, detail } => {
            r.status = format!("not measured: {step}: {detail}");
        }
    }
    r
}

/// The charts: per row (kernel · topology · filesystem) and watcher, CPU per container start
/// and median lag against layers; per storm cell and watcher, the same against table entries.
pub(super) fn charts(
    cells: &[&CellRecord],
    rows: &[WatcherRow],
    omitted: &mut Vec<String>,
) -> Vec<ChartSection> {
    let passed: BTreeSet<String> = cells
        .iter()
        .filter(|c| c.outcome == Outcome::Pass)
        .map(|c| c.key.to_string())
        .collect();
    let runtimes = runtimes_of(cells);
    // (axis, kernel, topology, filesystem, watcher) -> strategy -> (x, stats)
    type Group = (Axis, String, String, String, Watcher);
    type Points = Vec<(f64, WatcherStats, u32)>;
    let mut groups: BTreeMap<Group, BTreeMap<MountStrategy, Points>> = BTreeMap::new();
    let mut accel: BTreeMap<Group, BTreeSet<String>> = BTreeMap::new();
    for r in rows.iter().filter(|r| passed.contains(&r.cell)) {
        let (Some(s), Some(st)) = (&r.stats, &r.strategy_key) else {
            continue;
        };
        let g = (
            r.axis,
            r.kernel.clone(),
            r.topology.clone(),
            r.filesystem.clone(),
            r.watcher,
        );
        accel.entry(g.clone()).or_default().insert(r.accel.clone());
        groups
            .entry(g)
            .or_default()
            .entry(st.clone())
            .or_default()
            .push((r.x as f64, s.clone(), r.containers));
    }
    let mut sections = Vec::new();
    let mut drawn = 0;
    let mut skipped = 0;
    for ((axis, kernel, topo, fs, watcher), by_strategy) in groups {
        if drawn >= MAX_WATCHER_CHARTS {
            skipped += 2;
            continue;
        }
        let x_label = match axis {
            Axis::Layers => "layers per container (L)",
            Axis::TableEntries => "mount-table entries",
        };
        let x_scale = match axis {
            Axis::Layers => Scale::Linear,
            Axis::TableEntries => Scale::Log,
        };
        let accel = accel_of_set(
            &accel,
            &(axis, kernel.clone(), topo.clone(), fs.clone(), watcher),
        );
        let series = |value: &dyn Fn(&WatcherStats, u32) -> Option<f64>, what: &str| {
            by_strategy
                .iter()
                .take(MAX_SERIES)
                .map(|(st, pts)| {
                    let mut pts = pts.clone();
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    SeriesData {
                        label: st.to_string(),
                        color: strategy_color(st, &runtimes),
                        dash: 0,
                        line: true,
                        markers: true,
                        muted: false,
                        points: pts
                            .iter()
                            .filter_map(|(x, s, c)| {
                                let y = value(s, *c)?;
                                Some(DataPoint {
                                    x: *x,
                                    y,
                                    lo: None,
                                    hi: None,
                                    alert: false,
                                    title: format!(
                                        "{st} at {x}: {what} {y:.1} µs ({} wakeups, {} bytes read)",
                                        s.wakeups, s.bytes_read
                                    ),
                                })
                            })
                            .collect(),
                    }
                })
                .collect::<Vec<_>>()
        };
        let title = format!("{kernel} · {topo} · {fs} · {watcher}");
        let cpu = layout(&ChartSpec {
            id: slug(&[
                "watch-cpu",
                &kernel,
                &topo,
                &fs,
                watcher.as_str(),
                axis_slug(axis),
            ]),
            title: title.clone(),
            accel: accel.clone(),
            x_label: x_label.into(),
            y_label: "watcher CPU per container start (µs)".into(),
            x_scale,
            y_scale: Scale::Linear,
            y_from_zero: true,
            series: series(
                &|s, c| s.cpu_ns_per_container(c).map(|v| v / 1e3),
                "CPU per container",
            ),
            note: "the watcher thread's CPU time through the window ÷ containers started".into(),
        });
        let lag = layout(&ChartSpec {
            id: slug(&[
                "watch-lag",
                &kernel,
                &topo,
                &fs,
                watcher.as_str(),
                axis_slug(axis),
            ]),
            title,
            accel,
            x_label: x_label.into(),
            y_label: "lag, mount returned → watcher saw it (µs)".into(),
            x_scale,
            y_scale: Scale::Linear,
            y_from_zero: true,
            series: series(&|s, _| s.lag_ns.map(|l: Summary| l.p50 / 1e3), "median lag"),
            note: "median over the merged overlays the watcher saw; an overlay attached and \
                   detached between two reads of the table is never seen (counted apart)"
                .into(),
        });
        drawn += 2;
        sections.push(ChartSection {
            title: format!("{kernel} · {topo} · {fs} · {watcher}"),
            charts: vec![cpu, lag],
        });
    }
    if skipped > 0 {
        omitted.push(format!(
            "{skipped} watcher charts not drawn (at most {MAX_WATCHER_CHARTS})"
        ));
    }
    sections
}

fn axis_slug(a: Axis) -> &'static str {
    match a {
        Axis::Layers => "layers",
        Axis::TableEntries => "table",
    }
}

fn accel_of_set<K: Ord>(m: &BTreeMap<K, BTreeSet<String>>, k: &K) -> String {
    m.get(k)
        .map(|s| s.iter().cloned().collect::<Vec<_>>().join("+"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use protocol::{MountOps, MountsResult, MountsScenario, Strategy};

    use super::*;
    use crate::report::testing::cell;
    use crate::results::Accel;

    fn watched(cpu_ns: u64, lag_ns: f64) -> WatcherOutcome {
        WatcherOutcome::Watched(WatcherStats {
            cpu_ns,
            wakeups: 10,
            bytes_read: 1000,
            attached_seen: 20,
            detached_seen: 20,
            table_entries: Some(30),
            lag_ns: Summary::of(&[lag_ns]),
            lag_matched: 20,
            seen_before_return: 0,
            lag_unmatched: 0,
        })
    }

    fn mounts(st: Strategy, layers: u32, cpu_ns: u64) -> CellRecord {
        let sc = MountsScenario {
            strategy: st.into(),
            layers,
            containers: 10,
            concurrency: 2,
            passes: 2,
            watchers: vec![Watcher::PollMountinfo, Watcher::Fanotify],
        };
        let detail = CellDetail::Mounts(MountsResult {
            scenario: sc.clone(),
            layers_fs: "ext4".into(),
            mount_ops: MountOps {
                attachments: 0,
                detachments: 0,
                ops: 0,
                expected_ops: None,
                teardown_detachments: 0,
                cross_check_method: "listmount".into(),
                peak_extra_mounts: 0,
                leaked: 0,
                count_source: Default::default(),
                mounts_allocated: None,
                expected_allocated: None,
                notes: Vec::new(),
            },
            latency_us: Vec::new(),
            latency: None,
            wall_us: 0,
            syscall_us: 0,
            overhead_us: 0,
            checks: Vec::new(),
            runtime: None,
            erofs: None,
            table: None,
            watchers: vec![
                WatcherFigures {
                    watcher: Watcher::PollMountinfo,
                    outcome: watched(cpu_ns, 2_000.0),
                },
                WatcherFigures {
                    watcher: Watcher::Fanotify,
                    outcome: WatcherOutcome::Unsupported {
                        step: "fanotify_init(FAN_REPORT_MNT)".into(),
                        errno: libc::EINVAL,
                    },
                },
            ],
        });
        cell(
            Scenario::Mounts(sc),
            Some(detail),
            Default::default(),
            Accel::Tcg,
        )
    }

    #[test]
    fn rows_give_cpu_per_container_and_charts_draw_it_against_layers() {
        let cells = [
            mounts(Strategy::PerLayer, 10, 5_000_000),
            mounts(Strategy::PerLayer, 50, 20_000_000),
            mounts(Strategy::FsconfigFd, 10, 1_000_000),
        ];
        let refs: Vec<&CellRecord> = cells.iter().collect();
        let rows = rows_of(&refs);
        assert_eq!(rows.len(), 6);
        let r = &rows[0];
        assert_eq!(
            (r.strategy.as_str(), r.x, r.axis),
            ("per-layer", 10, Axis::Layers)
        );
        // 5 ms over 10 containers.
        assert_eq!(r.cpu_us_per_container.as_deref(), Some("500.0"));
        assert_eq!(r.lag_p50.as_deref(), Some("2.0"));
        assert_eq!(r.matched.as_deref(), Some("20/20"));
        let f = &rows[1];
        assert_eq!(f.watcher, Watcher::Fanotify);
        assert!(f.status.starts_with("unsupported: fanotify_init") && f.status.contains("EINVAL"));
        assert_eq!(f.cpu_us_per_container, None);
        let mut omitted = Vec::new();
        let sections = charts(&refs, &rows, &mut omitted);
        // Only the watched watcher is drawn: CPU and lag, one line per strategy.
        assert_eq!(sections.len(), 1, "{sections:?}");
        assert_eq!(sections[0].charts.len(), 2);
        assert!(omitted.is_empty());
    }
}
