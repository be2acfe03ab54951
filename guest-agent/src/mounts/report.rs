//! A run's verdict and numbers: the outcome and evidence from the workers' errors and the
//! checks, the mount counts, and the metrics `mmx compare` matches by name.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::{
    Better, CellDetail, CellResult, Evidence, Metric, MountOps, MountsResult, MountsScenario,
    Outcome, Summary, Unit,
};

use super::workers::WorkerOut;
use crate::sys;

/// Why a run stopped early: the signal, or the caller's cancel (a plan item's timeout).
pub(super) fn stop_evidence(when: &str) -> Evidence {
    let why = match sys::signal::stop_signal() {
        Some(sig) => format!("interrupted by signal {sig}"),
        None if sys::signal::stop_requested() => "stopped: stdin closed".to_owned(),
        None => "cancelled".to_owned(),
    };
    Evidence::new(why).with_detail(format!("stopped {when}"))
}

/// Errnos that mean "this kernel or filesystem cannot do that step".
fn means_unsupported(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP | libc::EBADF
    )
}

/// Errnos that mean "our side broke" (resources, privileges, the disk).
fn means_infra(errno: i32) -> bool {
    matches!(
        errno,
        libc::EPERM
            | libc::ENOSPC
            | libc::ENOMEM
            | libc::EMFILE
            | libc::ENFILE
            | libc::EIO
            | libc::EPIPE
            | libc::ETIMEDOUT
            | libc::EROFS
            | 0
    )
}

pub(super) struct Report<'a> {
    pub(super) s: &'a MountsScenario,
    pub(super) layers_fs: String,
    pub(super) method: &'static str,
    pub(super) wall: Duration,
    pub(super) prep: Duration,
    pub(super) leaked: u64,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Report<'_> {
    pub(super) fn build(self, cell_id: &str, mut t: WorkerOut) -> CellResult {
        let s = self.s;
        t.latencies.sort_by_key(|(idx, _)| *idx);
        let latency_us: Vec<u64> = t.latencies.iter().map(|(_, d)| us(*d)).collect();
        let samples: Vec<f64> = latency_us.iter().map(|&v| v as f64).collect();
        let latency = Summary::of(&samples);
        let completed = latency_us.len() as u32;
        let expected_ops = s.expected_ops_per_container() * u64::from(s.containers);
        let ops = t.tally.attach + t.tally.detach;
        let all_done = completed == s.containers;
        if all_done {
            t.checks.record("mount-ops-formula", ops == expected_ops, || {
                format!("{ops} mount-table operations on the start path, formula says {expected_ops}")
            });
        }
        t.checks.record("no-leaked-mounts", self.leaked == 0, || {
            format!("{} mounts left below the run directory", self.leaked)
        });
        let syscall_us = t.tally.syscall_ns / 1000;
        let busy_us = us(t.busy);
        let overhead_us = busy_us.saturating_sub(syscall_us);

        t.errors.sort_by_key(|(idx, _)| *idx);
        let (outcome, evidence) = if let Some((idx, e)) = t.errors.first() {
            let outcome = if completed == 0 && means_unsupported(e.errno) {
                Outcome::Unsupported
            } else if means_infra(e.errno) {
                Outcome::InfraError
            } else {
                Outcome::Fail
            };
            // Stable step: the call and the layers' filesystem. Which container, how far the
            // run got and the call's variable inputs go to the detail.
            let mut ev = e.evidence();
            ev.step = format!("{} on {}", e.call, self.layers_fs);
            let which = if *idx == u32::MAX {
                "a worker".to_owned()
            } else {
                format!("container {idx}")
            };
            ev.detail = format!(
                "{which}; {completed} of {} containers finished",
                s.containers
            );
            if !e.context.is_empty() {
                ev.detail = format!("{}; {}", ev.detail, e.context);
            }
            (outcome, Some(ev))
        } else if !all_done {
            let after = format!("after {completed} of {} containers", s.containers);
            (Outcome::InfraError, Some(stop_evidence(&after)))
        } else if let Some((name, detail)) = t.checks.first_failure() {
            (
                Outcome::Fail,
                Some(Evidence::new(format!("check {name}")).with_detail(detail)),
            )
        } else {
            (Outcome::Pass, None)
        };

        let metrics = metrics(&MetricInputs {
            latency_us: &latency_us,
            latency,
            ops,
            wall: self.wall,
            prep: self.prep,
            busy_us,
            overhead_us,
            ebusy_retries: t.tally.ebusy_retries,
        });

        CellResult {
            item: 0,
            cell_id: cell_id.to_owned(),
            outcome,
            evidence,
            metrics,
            detail: Some(CellDetail::Mounts(MountsResult {
                scenario: s.clone(),
                layers_fs: self.layers_fs,
                mount_ops: MountOps {
                    attachments: t.tally.attach,
                    detachments: t.tally.detach,
                    ops,
                    expected_ops,
                    teardown_detachments: t.tally.teardown,
                    cross_check_method: self.method.to_owned(),
                    peak_extra_mounts: t.peak,
                    leaked: self.leaked,
                },
                latency_us,
                latency,
                wall_us: us(self.wall),
                syscall_us,
                overhead_us,
                checks: t.checks.to_protocol(),
            })),
        }
    }
}

/// What the metrics of one run are computed from.
struct MetricInputs<'a> {
    latency_us: &'a [u64],
    latency: Option<Summary>,
    ops: u64,
    wall: Duration,
    prep: Duration,
    busy_us: u64,
    overhead_us: u64,
    ebusy_retries: u64,
}

/// The metrics of a mounts run. Names are stable: `mmx compare` matches baselines by name, and
/// the harness merges a cell's repeats by appending samples under the same name.
///
/// | name | unit | better | samples per run |
/// |---|---|---|---|
/// | `start_latency_us` | µs | lower | one per finished container: its start latency (all passes, no checks or teardown) |
/// | `latency_p50_us`, `latency_p99_us`, `latency_max_us` | µs | lower | one: that statistic over the run's containers |
/// | `mount_ops` | count | neither | one: mount-table operations on the start path |
/// | `wall_ms` | ms | lower | one: the workers' wall time (containers only, not preparation) |
/// | `prep_ms` | ms | neither | one: writing layers and container directories |
/// | `overhead_pct` | count (a percentage) | lower | one: the agent's own share of the workers' busy time (not in mount syscalls) |
/// | `ebusy_retries` | count | lower | one: umount2 calls repeated after EBUSY |
///
/// `start_latency_us` gives `mmx compare`'s rank test C samples per repeat, so it has power even
/// with one repeat; the percentile metrics stay for reports and for continuity with older runs.
fn metrics(m: &MetricInputs<'_>) -> BTreeMap<String, Metric> {
    let mut metrics = BTreeMap::new();
    if !m.latency_us.is_empty() {
        metrics.insert(
            "start_latency_us".to_owned(),
            Metric::new(
                Unit::Microseconds,
                Better::Lower,
                m.latency_us.iter().map(|&v| v as f64).collect(),
            ),
        );
    }
    if let Some(l) = m.latency {
        for (name, v) in [
            ("latency_p50_us", l.p50),
            ("latency_p99_us", l.p99),
            ("latency_max_us", l.max),
        ] {
            metrics.insert(
                name.to_owned(),
                Metric::one(Unit::Microseconds, Better::Lower, v),
            );
        }
    }
    metrics.insert(
        "mount_ops".into(),
        Metric::one(Unit::Count, Better::Neither, m.ops as f64),
    );
    metrics.insert(
        "wall_ms".into(),
        Metric::one(
            Unit::Milliseconds,
            Better::Lower,
            m.wall.as_secs_f64() * 1e3,
        ),
    );
    metrics.insert(
        "prep_ms".into(),
        Metric::one(
            Unit::Milliseconds,
            Better::Neither,
            m.prep.as_secs_f64() * 1e3,
        ),
    );
    if m.busy_us > 0 {
        // A percentage; protocol::Unit has no percent, Count prints it bare.
        let pct = 100.0 * m.overhead_us as f64 / m.busy_us as f64;
        metrics.insert(
            "overhead_pct".into(),
            Metric::one(Unit::Count, Better::Lower, pct),
        );
    }
    metrics.insert(
        "ebusy_retries".into(),
        Metric::one(Unit::Count, Better::Lower, m.ebusy_retries as f64),
    );
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::SysError;
    use protocol::Strategy;

    fn sc(
        strategy: Strategy,
        layers: u32,
        containers: u32,
        concurrency: u32,
        passes: u32,
    ) -> MountsScenario {
        MountsScenario {
            strategy,
            layers,
            containers,
            concurrency,
            passes,
        }
    }

    fn report(s: &MountsScenario) -> Report<'_> {
        Report {
            s,
            layers_fs: "ext4".into(),
            method: "listmount",
            wall: Duration::from_millis(10),
            prep: Duration::from_millis(1),
            leaked: 0,
        }
    }

    #[test]
    fn unsupported_evidence_has_a_stable_step_and_the_where_in_detail() {
        let s = sc(Strategy::FsconfigFd, 5, 10, 2, 2);
        let steps: Vec<String> = [(3u32, "layer 5 of 5"), (0, "the upper dir")]
            .into_iter()
            .map(|(idx, ctx)| {
                let mut out = WorkerOut::default();
                out.errors.push((
                    idx,
                    SysError::plain("fsconfig(FSCONFIG_SET_FD, \"lowerdir+\")", libc::EOPNOTSUPP)
                        .context(ctx),
                ));
                let r = report(&s).build("c", out);
                assert_eq!(r.outcome, Outcome::Unsupported);
                let ev = r.evidence.expect("evidence");
                assert_eq!(ev.errno_name(), Some("EOPNOTSUPP"));
                assert_eq!(
                    ev.detail,
                    format!("container {idx}; 0 of 10 containers finished; {ctx}")
                );
                ev.step
            })
            .collect();
        assert_eq!(steps[0], steps[1]);
        assert_eq!(steps[0], "fsconfig(FSCONFIG_SET_FD, \"lowerdir+\") on ext4");
    }

    #[test]
    fn every_container_latency_is_a_sample() {
        let s = sc(Strategy::PerLayer, 2, 3, 1, 2);
        let mut out = WorkerOut::default();
        for (i, us) in [(2u32, 300u64), (0, 100), (1, 200)] {
            out.latencies.push((i, Duration::from_micros(us)));
        }
        out.tally.attach = 3 * 2 * 3;
        out.tally.detach = 3 * 2 * 2;
        let r = report(&s).build("c", out);
        let m = &r.metrics["start_latency_us"];
        assert_eq!(m.samples, vec![100.0, 200.0, 300.0]);
        assert_eq!((m.unit, m.better), (Unit::Microseconds, Better::Lower));
        for kept in [
            "latency_p50_us",
            "latency_p99_us",
            "latency_max_us",
            "mount_ops",
        ] {
            assert_eq!(r.metrics[kept].samples.len(), 1, "{kept}");
        }
    }

    #[test]
    fn errno_classes_do_not_overlap() {
        for e in 0..200 {
            assert!(!(means_unsupported(e) && means_infra(e)), "errno {e}");
        }
    }
}
