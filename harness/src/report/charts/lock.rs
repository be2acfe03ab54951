//! Lock-benchmark charts: scalability against threads, one chart per benchmark and topology
//! (and filesystem, for benchmarks that touch the layers), a colour per kernel.

use std::collections::BTreeMap;

use protocol::{CellDetail, Scenario};

use super::{accel_of, slug, ChartSection, MAX_LOCK_CHARTS};
use crate::report::svg::{layout, ChartSpec, DataPoint, Scale, SeriesData};
use crate::results::CellRecord;

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

pub(super) fn lock_charts(cells: &[&CellRecord], omitted: &mut Vec<String>) -> Vec<ChartSection> {
    let mut groups: BTreeMap<LockGroup, Vec<&CellRecord>> = BTreeMap::new();
    for c in cells {
        let (Some(CellDetail::Lockbench(lb)), Scenario::Lockbench(sc)) = (&c.detail, &c.scenario)
        else {
            continue;
        };
        // A storm's x is containers at once, not threads on a lock: it has its own charts.
        if lb.points.is_empty() || sc.bench == protocol::lockbench::Bench::Storm {
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
                crate::report::model::one_line(&lb.notes.join("; "), 200)
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
            crate::results::SERIALIZED
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
