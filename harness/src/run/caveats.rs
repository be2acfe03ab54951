//! Caveats: what a cell's numbers are not, decided when its boot folds. The agent knows what it
//! saw; only the harness knows what was asked for and how the vCPUs were run, so these are
//! judged here rather than in the guest:
//!
//! - **Topology.** A guest whose observed topology differs from the request carries the
//!   difference (`Provenance::topology_mismatch`, a ⚠ in every report). A guest asked for SMT
//!   that sees no siblings cannot run `smt-siblings` pinning: the agent would quietly place the
//!   threads on separate cores, so those points become `unsupported` ("guest sees no SMT
//!   siblings") and their metrics are dropped. The agent cannot do this itself: it never sees
//!   the request, only the machine.
//! - **Serialized vCPUs.** Under single-threaded TCG the vCPUs take turns on one host thread, so
//!   lock-benchmark numbers measured with more than one thread (scalability, throughput and
//!   latency above one thread, the storm's percentiles) are time slicing, not contention:
//!   marked, shown greyed, and not gated by `mmx compare` unless asked. Mount cells are not
//!   marked: their numbers are the cost of a start sequence (syscalls, checks), which an
//!   emulator times consistently whether or not their J workers overlap.

use protocol::lockbench::{LockPoint, Pinning, PointMetricName, SweepEnd};
use protocol::{Better, CellDetail, Evidence, Metric, ObservedTopology, Outcome, Scenario, Unit};

use crate::matrix::Topology;
use crate::results::{CellRecord, UnsupportedPoints};

/// Why SMT-dependent points are unsupported.
pub const NO_SMT_SIBLINGS: &str = "guest sees no SMT siblings";

/// Pinnings that only mean something with SMT siblings: `smt-siblings` fills a core's siblings
/// first; without siblings it is `per-core` under another name.
const SMT_PINNINGS: [Pinning; 1] = [Pinning::SmtSiblings];

/// Compare what the matrix asked for with what the guest saw; `None` when they agree.
pub fn topology_mismatch(req: &Topology, obs: &ObservedTopology) -> Option<String> {
    let mut diffs = Vec::new();
    let online = obs.cpus_online.len() as u32;
    if online != req.vcpus() {
        diffs.push(format!("{online} CPUs online, asked for {}", req.vcpus()));
    }
    if obs.sockets != req.sockets {
        diffs.push(format!(
            "{} sockets, asked for {}",
            obs.sockets, req.sockets
        ));
    }
    if obs.cores_per_socket != req.cores {
        diffs.push(format!(
            "{} cores/socket, asked for {}",
            obs.cores_per_socket, req.cores
        ));
    }
    if obs.threads_per_core != req.threads {
        diffs.push(format!(
            "{} threads/core, asked for {}",
            obs.threads_per_core, req.threads
        ));
    }
    let want_nodes = req.numa.len().max(1);
    if obs.numa_nodes.len() != want_nodes {
        diffs.push(format!(
            "{} NUMA nodes, asked for {want_nodes}",
            obs.numa_nodes.len()
        ));
    }
    (!diffs.is_empty()).then(|| diffs.join("; "))
}

/// A guest asked for SMT that sees none.
pub fn smt_missing(req: &Topology, obs: &ObservedTopology) -> bool {
    req.threads > 1 && obs.threads_per_core < 2
}

/// Add the caveats to one folded cell. `requested`: the guest's requested topology and what it
/// observed (None for hosts: they are what they are).
pub fn apply(cell: &mut CellRecord, requested: Option<(&Topology, &ObservedTopology)>) {
    if let Some((req, obs)) = requested {
        if smt_missing(req, obs) {
            unsupport_smt_points(cell);
        }
    }
    if cell.provenance.accel.vcpus_serialized() {
        mark_serialized(cell);
    }
}

fn unsupport_smt_points(cell: &mut CellRecord) {
    let (Some(CellDetail::Lockbench(d)), Scenario::Lockbench(sc)) = (&cell.detail, &cell.scenario)
    else {
        return;
    };
    let mut any = false;
    for pin in SMT_PINNINGS {
        let n = d.points.iter().filter(|p| p.pinning == pin).count();
        if n > 0 {
            any = true;
            cell.caveats.unsupported_points.push(UnsupportedPoints {
                pinning: pin,
                points: n,
                reason: NO_SMT_SIBLINGS.into(),
            });
        }
    }
    // The agent's metrics come from the first pinning's points.
    if any && sc.pinning.first().is_some_and(|p| SMT_PINNINGS.contains(p)) {
        let points = d.points.clone();
        cell.metrics
            .retain(|name, _| lock_metric_threads(name, &points, sc.pinning[0]).is_none());
    }
    let all = !d.points.is_empty() && d.points.iter().all(|p| SMT_PINNINGS.contains(&p.pinning));
    if all && cell.outcome == Outcome::Pass {
        cell.outcome = Outcome::Unsupported;
        cell.evidence = Some(
            Evidence::new(NO_SMT_SIBLINGS).with_detail(
                cell.provenance
                    .topology_mismatch
                    .clone()
                    .unwrap_or_default(),
            ),
        );
    }
}

/// Timings and rates move with contention; counts (mount operations, retries) do not, and
/// informational metrics are never gated anyway.
fn contention_sensitive(m: &Metric) -> bool {
    let timing = !matches!(m.unit, Unit::Count | Unit::Bytes);
    timing && m.better != Better::Neither
}

fn mark_serialized(cell: &mut CellRecord) {
    let serialized: Vec<String> = match (&cell.detail, &cell.scenario) {
        (Some(CellDetail::Lockbench(d)), Scenario::Lockbench(sc)) => {
            if !d.points.iter().any(|p| p.threads > 1) {
                return;
            }
            let pin = sc.pinning.first().copied().unwrap_or(Pinning::None);
            cell.metrics
                .iter()
                .filter(|(name, m)| {
                    contention_sensitive(m)
                        && lock_metric_threads(name, &d.points, pin).is_some_and(|t| t > 1)
                })
                .map(|(name, _)| name.clone())
                .collect()
        }
        _ => return,
    };
    cell.caveats.vcpus_serialized = true;
    cell.caveats.serialized_metrics = serialized;
}

/// The thread count behind a lock-benchmark metric ([`PointMetricName`]): the smallest or
/// largest of its sweep (workload, table size, layout) on the scenario's first pinning. None:
/// not a point metric.
pub fn lock_metric_threads(name: &str, points: &[LockPoint], pin: Pinning) -> Option<u32> {
    let name = PointMetricName::parse(name)?;
    let threads = points
        .iter()
        .filter(|p| name.series_of(p, pin))
        .map(|p| p.threads);
    match name.end {
        SweepEnd::Min => threads.min(),
        SweepEnd::Max => threads.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::{CellKey, TargetKey};
    use crate::results::{Accel, BackendKind, Provenance};
    use protocol::lockbench::{Bench, LockbenchResult, LockbenchScenario};
    use protocol::{Filesystem, SmtState};

    fn point(workload: &str, pinning: Pinning, threads: u32) -> LockPoint {
        LockPoint {
            workload: workload.into(),
            pinning,
            smt: SmtState::NotSupported,
            false_sharing: false,
            threads,
            duration_ns: 1,
            ops: 1,
            ops_per_sec: 1.0,
            per_thread_ops: vec![],
            scalability: None,
            latency_p50_ns: None,
            latency_p99_ns: None,
            latency_max_ns: None,
            reader_p50_ns: None,
            reader_p99_ns: None,
            reader_max_ns: None,
            ops_per_sample: None,
            prepopulated_mounts: None,
            table_entries: None,
            watchers: Vec::new(),
        }
    }

    fn lock_cell(pinning: Vec<Pinning>, accel: Accel) -> CellRecord {
        let points: Vec<LockPoint> = pinning
            .iter()
            .flat_map(|p| [point("tas", *p, 1), point("tas", *p, 4)])
            .collect();
        let sc = LockbenchScenario {
            bench: Bench::UserSpin,
            pinning,
            ..LockbenchScenario::default()
        };
        let key = CellKey::new(
            TargetKey::Qemu {
                kernel: "k".into(),
                topology: "2s1c2t".into(),
            },
            Filesystem::Tmpfs,
            protocol::Scenario::Lockbench(sc.clone()).key(),
        );
        let ops = |v| Metric::one(Unit::OpsPerSecond, Better::Higher, v);
        CellRecord {
            boot: key.boot(),
            key,
            scenario: Scenario::Lockbench(sc),
            outcome: Outcome::Pass,
            evidence: None,
            metrics: [
                ("tas@min:ops_per_s", ops(1.0)),
                ("tas@max:ops_per_s", ops(2.0)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            detail: Some(CellDetail::Lockbench(LockbenchResult {
                bench: Bench::UserSpin,
                tables: Vec::new(),
                topology: ObservedTopology::default(),
                smt_before: SmtState::NotSupported,
                smt_after: SmtState::NotSupported,
                points,
                notes: vec![],
            })),
            provenance: Provenance {
                backend: BackendKind::Qemu,
                accel,
                host_cpu: String::new(),
                kernel_release: None,
                kernel_source: None,
                kernel_substituted: None,
                requested_topology: None,
                observed_topology: None,
                topology_mismatch: Some("1 threads/core, asked for 2".into()),
                runtime: None,
                sizing: None,
            },
            attempts: 1,
            repeats: 1,
            expected: None,
            caveats: Default::default(),
            kernel_warnings: Vec::new(),
            failed_by: None,
        }
    }

    fn smt_guest() -> (Topology, ObservedTopology) {
        let req = Topology {
            name: "2s1c2t".into(),
            sockets: 2,
            cores: 1,
            threads: 2,
            memory_mib: 1024,
            numa: vec![],
        };
        let obs = ObservedTopology {
            cpus_online: vec![0, 1, 2, 3],
            sockets: 2,
            cores_per_socket: 2,
            threads_per_core: 1,
            ..Default::default()
        };
        (req, obs)
    }

    #[test]
    fn smt_points_of_a_guest_without_siblings_are_unsupported() {
        let (req, obs) = smt_guest();
        assert!(smt_missing(&req, &obs));
        let mut c = lock_cell(vec![Pinning::None, Pinning::SmtSiblings], Accel::Kvm);
        apply(&mut c, Some((&req, &obs)));
        assert_eq!(c.outcome, Outcome::Pass, "the other points stand");
        assert_eq!(c.caveats.unsupported_points.len(), 1);
        assert_eq!(c.caveats.unsupported_points[0].points, 2);
        assert_eq!(c.metrics.len(), 2, "metrics come from `none`, they stay");

        let mut only = lock_cell(vec![Pinning::SmtSiblings], Accel::Kvm);
        apply(&mut only, Some((&req, &obs)));
        assert_eq!(only.outcome, Outcome::Unsupported);
        assert_eq!(only.evidence.unwrap().step, NO_SMT_SIBLINGS);
        assert!(only.metrics.is_empty(), "nothing left to compare");
    }

    #[test]
    fn serialized_vcpus_mark_multi_thread_numbers_only() {
        let mut c = lock_cell(vec![Pinning::None], Accel::Tcg);
        apply(&mut c, None);
        assert!(c.caveats.vcpus_serialized);
        assert_eq!(c.caveats.serialized_metrics, ["tas@max:ops_per_s"]);
        let mut mt = lock_cell(vec![Pinning::None], Accel::TcgMt);
        apply(&mut mt, None);
        assert!(mt.caveats.is_empty(), "threads run at once under tcg-mt");
        assert!(c.caveats.point_serialized(&point("tas", Pinning::None, 4)));
        assert!(!c.caveats.point_serialized(&point("tas", Pinning::None, 1)));
    }

    #[test]
    fn lock_metric_names_map_to_thread_counts() {
        let grown = |threads| LockPoint {
            prepopulated_mounts: Some(10_000),
            ..point("storm:per-layer", Pinning::None, threads)
        };
        let pts = [
            point("storm:per-layer", Pinning::None, 2),
            point("storm:per-layer", Pinning::None, 8),
            grown(1),
            grown(4),
        ];
        let t = |n| lock_metric_threads(n, &pts, Pinning::None);
        assert_eq!(t("storm:per-layer@max:reader_p99_ns"), Some(8));
        assert_eq!(t("storm:per-layer@min:ops_per_s"), Some(2));
        // A storm on a grown table is its own sweep (it was read as no point metric at all,
        // so its contention metrics were never marked serialized).
        assert_eq!(t("storm:per-layer+10000mounts@max:reader_p99_ns"), Some(4));
        assert_eq!(t("storm:per-layer+10000mounts@min:ops_per_s"), Some(1));
        assert_eq!(t("latency_p50_us"), None);
    }
}
