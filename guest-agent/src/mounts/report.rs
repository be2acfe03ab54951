//! A run's verdict and numbers: the outcome and evidence from the workers' errors and the
//! checks, the mount counts, and the metrics `mmx compare` matches by name.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::{
    Better, CellDetail, CellResult, Evidence, Metric, MountOps, MountsResult, MountsScenario,
    Outcome, Summary, Unit,
};

use super::cause::{AgentError, Cause, RuntimeCause};
use super::count::Counted;
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

/// The evidence of an agent error: the step says so, so no report or known answer can take it
/// for the kernel's.
pub(super) fn agent_evidence(a: &AgentError) -> Evidence {
    let (step, detail, errno) = a.step_and_detail();
    let ev = Evidence::new(format!("agent error: {step}")).with_detail(detail);
    match errno {
        Some(n) => ev.with_errno(n),
        None => ev,
    }
}

/// Errnos of a call in the strategy's sequence that mean "this kernel or filesystem cannot do
/// that step".
fn means_unsupported(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP | libc::EBADF
    )
}

/// Errnos of a call in the strategy's sequence that mean "our side broke" (resources,
/// privileges, the disk).
fn means_infra(errno: i32) -> bool {
    matches!(
        errno,
        libc::EPERM
            | libc::ENOSPC
            | libc::ENOMEM
            | libc::EMFILE
            | libc::ENFILE
            | libc::EIO
            | libc::EROFS
    )
}

/// The outcome and evidence of the first failure of a run.
fn failure(
    cause: &Cause,
    idx: u32,
    completed: u32,
    s: &MountsScenario,
    fs: &str,
) -> (Outcome, Evidence) {
    let which = if idx == u32::MAX {
        "a worker".to_owned()
    } else {
        format!("container {idx}")
    };
    let mut detail = format!(
        "{which}; {completed} of {} containers finished",
        s.containers
    );
    match cause {
        Cause::Kernel(e) => {
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
            ev.step = format!("{} on {fs}", e.call);
            if !e.context.is_empty() {
                detail = format!("{detail}; {}", e.context);
            }
            ev.detail = detail;
            (outcome, ev)
        }
        Cause::Agent(a) => {
            let mut ev = agent_evidence(a);
            if !ev.detail.is_empty() {
                detail = format!("{detail}; {}", ev.detail);
            }
            ev.detail = detail;
            (Outcome::Fail, ev)
        }
        Cause::Runtime(r) => runtime_failure(r, completed, fs, detail),
    }
}

/// A runtime's failure: its `error` answer is read like a failing call of a built-in strategy
/// (the same errno classes; the step is the runtime's); silence is `timeout`; a crash, garbage
/// or a wrong answer is `fail`; a runtime we could not start is ours (`infra-error`).
fn runtime_failure(
    r: &RuntimeCause,
    completed: u32,
    fs: &str,
    where_: String,
) -> (Outcome, Evidence) {
    let with = |ev: Evidence, more: &str| {
        if more.is_empty() {
            ev.with_detail(where_.clone())
        } else {
            ev.with_detail(format!("{where_}; {more}"))
        }
    };
    let errno = |ev: Evidence, n: Option<i32>| match n {
        Some(n) => ev.with_errno(n),
        None => ev,
    };
    match r {
        RuntimeCause::Error {
            step,
            errno: n,
            message,
        } => {
            let outcome = match n {
                Some(e) if completed == 0 && means_unsupported(*e) => Outcome::Unsupported,
                Some(e) if means_infra(*e) => Outcome::InfraError,
                _ => Outcome::Fail,
            };
            let ev = errno(Evidence::new(format!("{step} on {fs}")), *n);
            (outcome, with(ev, &format!("the runtime said: {message}")))
        }
        RuntimeCause::Hung { what, detail } => {
            (Outcome::Timeout, with(Evidence::new(what.clone()), detail))
        }
        RuntimeCause::Broke { what, detail } => {
            (Outcome::Fail, with(Evidence::new(what.clone()), detail))
        }
        RuntimeCause::Start {
            what,
            errno: n,
            detail,
        } => (
            Outcome::InfraError,
            with(errno(Evidence::new(what.clone()), *n), detail),
        ),
    }
}

pub(super) struct Report<'a> {
    pub(super) s: &'a MountsScenario,
    pub(super) layers_fs: String,
    pub(super) method: &'static str,
    pub(super) wall: Duration,
    pub(super) prep: Duration,
    pub(super) leaked: u64,
    pub(super) counted: Counted,
    /// A runtime's cell: what it said it is, and the kernel's count of each finished
    /// container's start path (exact, from its worker's mount events; empty when the kernel
    /// has none).
    pub(super) runtime: Option<RuntimeSeen>,
    /// Erofs layers: how they were mounted.
    pub(super) erofs: Option<protocol::erofs::ErofsLayers>,
    /// Whether common-parent's clone carried the layers' own mounts along (erofs, L ≥ 2).
    pub(super) carried_submounts: bool,
}

/// What a runtime's cell adds to its report.
pub(super) struct RuntimeSeen {
    pub(super) hello: Option<protocol::runtime::Hello>,
    pub(super) per_container: Vec<(u32, u64)>,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Report<'_> {
    pub(super) fn build(self, cell_id: &str, mut t: WorkerOut) -> CellResult {
        let s = self.s;
        let c = self.counted;
        t.latencies.sort_by_key(|(idx, _)| *idx);
        let latency_us: Vec<u64> = t.latencies.iter().map(|(_, d)| us(*d)).collect();
        let samples: Vec<f64> = latency_us.iter().map(|&v| v as f64).collect();
        let latency = Summary::of(&samples);
        let completed = latency_us.len() as u32;
        let containers = u64::from(s.containers);
        let carried = if self.carried_submounts {
            s.layer_submounts_per_container()
        } else {
            0
        };
        let formula = (
            s.expected_attachments_per_container().map(|a| a + carried),
            s.expected_detachments_per_container().map(|d| d + carried),
            s.teardown_per_container(),
        );
        let expected_ops = s
            .expected_ops_per_container()
            .map(|e| (e + 2 * carried) * containers);
        let ops = c.attachments + c.detachments;
        let all_done = completed == s.containers;
        // A built-in strategy's count must match its formula; a runtime has none (its count
        // is its answer, reported per container and judged by known answers and compare).
        if let (true, (Some(att), Some(det), Some(td))) = (all_done, formula) {
            let (want_ops, want_td) = ((att + det) * containers, td * containers);
            let holds = c.incomplete.is_none() && ops == want_ops && c.teardown == want_td;
            t.checks.record("mount-ops-formula", holds, || {
                let mut d = format!(
                    "{} counted {ops} mount-table operations on the start path ({} attach + {} \
                     detach) and {} teardown detachments; the formula says {want_ops} \
                     ({} + {}) and {want_td}",
                    c.source,
                    c.attachments,
                    c.detachments,
                    c.teardown,
                    att * containers,
                    det * containers,
                );
                if let Some(why) = &c.incomplete {
                    d = format!("{d}; the count is incomplete: {why}");
                }
                d
            });
        }
        t.checks.record("no-leaked-mounts", self.leaked == 0, || {
            format!("{} mounts left below the run directory", self.leaked)
        });
        let expected_allocated = c
            .mounts_allocated
            .and(s.expected_allocated_per_container())
            .map(|e| (e + carried) * containers);
        let mut notes = c.notes;
        if let (Some(why), None) = (&c.incomplete, formula.0) {
            notes.push(format!(
                "no kernel count per container: {why}; what stayed attached after each job and \
                 went at its unmount is all the mount table shows"
            ));
        }
        if let (Some(got), Some(want), true) = (c.mounts_allocated, expected_allocated, all_done) {
            if got != want {
                notes.push(format!(
                    "the kernel allocated {got} mounts during the run, the strategy's sequence \
                     makes {want}: the counter is system-wide, so mounts of other processes \
                     count too"
                ));
            }
        }
        let syscall_us = t.tally.syscall_ns / 1000;
        let busy_us = us(t.busy);
        let overhead_us = busy_us.saturating_sub(syscall_us);

        t.errors.sort_by_key(|(idx, _)| *idx);
        let (outcome, evidence) = if let Some((idx, cause)) = t.errors.first() {
            let (o, ev) = failure(cause, *idx, completed, s, &self.layers_fs);
            (o, Some(ev))
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

        // Operations per container: a runtime's exact count for each container (its worker's
        // own events), else the run's count shared out (built-ins count run-wide; their formula
        // already fixed it). Only a complete count makes the metric.
        let per_container: Vec<f64> = match (&self.runtime, &c.incomplete) {
            (_, Some(_)) => Vec::new(),
            (Some(rt), None) => {
                let mut v = rt.per_container.clone();
                v.sort_by_key(|(idx, _)| *idx);
                v.into_iter().map(|(_, n)| n as f64).collect()
            }
            (None, None) if all_done && completed > 0 => vec![ops as f64 / f64::from(completed)],
            (None, None) => Vec::new(),
        };
        let metrics = metrics(&MetricInputs {
            latency_us: &latency_us,
            latency,
            per_container: &per_container,
            ops,
            allocated: c.mounts_allocated,
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
                table: None,
                mount_ops: MountOps {
                    attachments: c.attachments,
                    detachments: c.detachments,
                    ops,
                    expected_ops,
                    teardown_detachments: c.teardown,
                    cross_check_method: self.method.to_owned(),
                    peak_extra_mounts: t.peak,
                    leaked: self.leaked,
                    count_source: c.source,
                    mounts_allocated: c.mounts_allocated,
                    expected_allocated,
                    notes,
                },
                latency_us,
                latency,
                wall_us: us(self.wall),
                syscall_us,
                overhead_us,
                checks: t.checks.to_protocol(),
                runtime: self.runtime.and_then(|r| r.hello),
                erofs: self.erofs,
                // `crate::watchers::attach` adds them to the built result.
                watchers: Vec::new(),
            })),
        }
    }
}

/// What the metrics of one run are computed from.
struct MetricInputs<'a> {
    latency_us: &'a [u64],
    latency: Option<Summary>,
    per_container: &'a [f64],
    ops: u64,
    allocated: Option<u64>,
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
/// | `mount_ops` | count | neither | one: mount-table operations on the start path, as the kernel counted them |
/// | `mount_ops_per_container` | count | lower | a runtime: one per finished container, its start path as the kernel counted it; a built-in strategy: one, the run's count per container (its formula fixes it: the cell fails first) |
/// | `mounts_allocated` | count | neither | one: mounts the kernel created during the run, clones included (6.8+) |
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
    if !m.per_container.is_empty() {
        // Lower is better: a runtime change that makes the kernel mount more per container
        // (mapping every layer again) is what the release gate exists to catch.
        metrics.insert(
            protocol::MOUNT_OPS_PER_CONTAINER.into(),
            Metric::new(Unit::Count, Better::Lower, m.per_container.to_vec()),
        );
    }
    if let Some(n) = m.allocated {
        metrics.insert(
            "mounts_allocated".into(),
            Metric::one(Unit::Count, Better::Neither, n as f64),
        );
    }
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
    use crate::mounts::sc;
    use crate::sys::SysError;
    use protocol::Strategy;

    fn counted(s: &MountsScenario) -> Counted {
        let c = u64::from(s.containers);
        Counted {
            source: protocol::CountSource::FanotifyMountEvents,
            attachments: s.expected_attachments_per_container().unwrap_or(0) * c,
            detachments: s.expected_detachments_per_container().unwrap_or(0) * c,
            teardown: s.teardown_per_container().unwrap_or(0) * c,
            mounts_allocated: s.expected_allocated_per_container().map(|a| a * c),
            incomplete: None,
            notes: Vec::new(),
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
            counted: counted(s),
            runtime: None,
            erofs: None,
            carried_submounts: false,
        }
    }

    fn done(s: &MountsScenario) -> WorkerOut {
        let mut out = WorkerOut::default();
        for i in 0..s.containers {
            out.latencies.push((i, Duration::from_micros(100)));
        }
        out
    }

    #[test]
    fn unsupported_evidence_has_a_stable_step_and_the_where_in_detail() {
        let s = sc(Strategy::FsconfigFd, 5, 10, 2, 2);
        let call = "fsconfig(FSCONFIG_SET_FD, \"lowerdir+\", detached idmapped layer)";
        let steps: Vec<String> = [(3u32, "layer 5 of 5"), (0, "layer 3 of 5")]
            .into_iter()
            .map(|(idx, ctx)| {
                let mut out = WorkerOut::default();
                out.errors.push((
                    idx,
                    Cause::Kernel(SysError::plain(call, libc::EOPNOTSUPP).context(ctx)),
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
        assert_eq!(steps[0], format!("{call} on ext4"));
    }

    #[test]
    fn an_agent_error_fails_whatever_errno_it_carries() {
        let s = sc(Strategy::PerLayer, 2, 3, 1, 2);
        let agent = [
            Cause::Agent(AgentError::Injected),
            Cause::Agent(AgentError::Bug("helper taken twice".into())),
            Cause::agent(SysError::plain(
                "write(userns helper command pipe)",
                libc::EBADF,
            )),
            Cause::Agent(AgentError::Panic("boom".into())),
        ];
        for cause in agent {
            let mut out = WorkerOut::default();
            out.errors.push((0, cause.clone()));
            let r = report(&s).build("c", out);
            assert_eq!(r.outcome, Outcome::Fail, "{cause:?}");
            let ev = r.evidence.expect("evidence");
            assert!(ev.step.starts_with("agent error: "), "{ev:?}");
        }
        // The same errno from a call of the strategy's sequence is the kernel's answer.
        let mut out = WorkerOut::default();
        out.errors.push((
            0,
            Cause::Kernel(SysError::plain("mount_setattr(…)", libc::EINVAL)),
        ));
        assert_eq!(report(&s).build("c", out).outcome, Outcome::Unsupported);
    }

    #[test]
    fn common_parents_clone_of_erofs_layers_carries_their_mounts_in_the_formula() {
        let s = sc(Strategy::CommonParent, 10, 3, 1, 2);
        let mut c = counted(&s);
        // 2 passes × 10 layer mounts more attached, and detached, per container.
        c.attachments += 3 * 2 * 10;
        c.detachments += 3 * 2 * 10;
        c.mounts_allocated = c.mounts_allocated.map(|a| a + 3 * 2 * 10);
        let mut r = report(&s);
        r.counted = c.clone();
        let plain = r.build("c", done(&s));
        assert_eq!(
            plain.outcome,
            Outcome::Fail,
            "a directory run has no such mounts"
        );
        let mut r = report(&s);
        r.counted = c;
        r.carried_submounts = true;
        let carried = r.build("c", done(&s));
        assert_eq!(carried.outcome, Outcome::Pass, "{:?}", carried.evidence);
        // One layer is its own common directory: nothing is carried.
        assert_eq!(
            sc(Strategy::CommonParent, 1, 3, 1, 2).layer_submounts_per_container(),
            0
        );
        assert_eq!(s.layer_submounts_per_container(), 20);
        assert_eq!(
            sc(Strategy::PerLayer, 10, 3, 1, 2).layer_submounts_per_container(),
            0
        );
    }

    #[test]
    fn a_count_off_the_formula_fails_with_the_numbers() {
        let s = sc(Strategy::PerLayer, 2, 3, 1, 2);
        let r = report(&s).build("c", done(&s));
        assert_eq!(r.outcome, Outcome::Pass, "{:?}", r.evidence);
        // One bind mount (and its umount) too many in one pass.
        let mut extra = report(&s);
        extra.counted.attachments += 1;
        extra.counted.detachments += 1;
        let r = extra.build("c", done(&s));
        assert_eq!(r.outcome, Outcome::Fail);
        let ev = r.evidence.expect("evidence");
        assert_eq!(ev.step, "check mount-ops-formula");
        assert!(
            ev.detail
                .contains("fanotify-mount-events counted 32 mount-table operations")
                && ev.detail.contains("(19 attach + 13 detach)")
                && ev.detail.contains("the formula says 30 (18 + 12)"),
            "{}",
            ev.detail
        );
        // Lost events: never a pass, whatever the numbers.
        let mut lost = report(&s);
        lost.counted.incomplete = Some("the fanotify queue overflowed".into());
        let r = lost.build("c", done(&s));
        assert_eq!(r.outcome, Outcome::Fail);
        assert!(r.evidence.expect("ev").detail.contains("incomplete"));
    }

    #[test]
    fn allocations_off_the_formula_are_a_note() {
        let s = sc(Strategy::FsconfigFd, 2, 3, 1, 2);
        let mut busy = report(&s);
        busy.counted.mounts_allocated = busy.counted.mounts_allocated.map(|n| n + 5);
        let r = busy.build("c", done(&s));
        assert_eq!(r.outcome, Outcome::Pass);
        let Some(CellDetail::Mounts(m)) = r.detail else {
            panic!("no detail")
        };
        assert_eq!(m.mount_ops.mounts_allocated, Some(3 * 2 * 6 + 5));
        assert_eq!(m.mount_ops.expected_allocated, Some(3 * 2 * 6));
        assert!(
            m.mount_ops.notes[0].contains("system-wide"),
            "{:?}",
            m.mount_ops.notes
        );
        assert_eq!(r.metrics["mounts_allocated"].samples, vec![41.0]);
    }

    #[test]
    fn every_container_latency_is_a_sample() {
        let s = sc(Strategy::PerLayer, 2, 3, 1, 2);
        let mut out = WorkerOut::default();
        for (i, us) in [(2u32, 300u64), (0, 100), (1, 200)] {
            out.latencies.push((i, Duration::from_micros(us)));
        }
        let r = report(&s).build("c", out);
        assert_eq!(r.outcome, Outcome::Pass);
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

    fn runtime_scenario() -> MountsScenario {
        MountsScenario {
            strategy: "runtime:containerd-2.1".parse().unwrap(),
            ..sc(Strategy::PerLayer, 10, 3, 1, 2)
        }
    }

    #[test]
    fn a_runtime_is_judged_by_its_answers_not_a_formula() {
        let s = runtime_scenario();
        let seen = |per: Vec<(u32, u64)>| RuntimeSeen {
            hello: None,
            per_container: per,
        };
        // No formula: any count passes, and every container's count is a sample, in order.
        let mut r = report(&s);
        r.counted = Counted {
            attachments: 12,
            detachments: 6,
            teardown: 6,
            mounts_allocated: None,
            ..counted(&sc(Strategy::PerLayer, 10, 3, 1, 2))
        };
        r.runtime = Some(seen(vec![(2, 6), (0, 6), (1, 6)]));
        let out = r.build("c", done(&s));
        assert_eq!(out.outcome, Outcome::Pass, "{:?}", out.evidence);
        let m = &out.metrics[protocol::MOUNT_OPS_PER_CONTAINER];
        assert_eq!((m.better, m.samples.clone()), (Better::Lower, vec![6.0; 3]));
        let Some(CellDetail::Mounts(d)) = out.detail else {
            panic!("detail")
        };
        assert_eq!(d.mount_ops.expected_ops, None);
        assert!(d.checks.iter().all(|c| c.name != "mount-ops-formula"));
        // Without mount events the count is incomplete: said, and no metric made from it.
        let mut r = report(&s);
        r.counted.incomplete = Some("no fanotify mount events".into());
        r.runtime = Some(seen(vec![(0, 1), (1, 1), (2, 1)]));
        let out = r.build("c", done(&s));
        assert_eq!(out.outcome, Outcome::Pass);
        assert!(!out.metrics.contains_key(protocol::MOUNT_OPS_PER_CONTAINER));
        let Some(CellDetail::Mounts(d)) = out.detail else {
            panic!("detail")
        };
        assert!(d.mount_ops.notes[0].contains("no kernel count per container"));
    }

    #[test]
    fn a_runtime_failure_reads_like_its_kind() {
        let s = runtime_scenario();
        let with = |cause: RuntimeCause| {
            let mut out = WorkerOut::default();
            out.errors.push((0, Cause::Runtime(cause)));
            report(&s).build("c", out)
        };
        let error = |errno| RuntimeCause::Error {
            step: "mount.All: failed to prepare idmapped overlay".into(),
            errno,
            message: "invalid argument".into(),
        };
        let r = with(error(Some(libc::EINVAL)));
        assert_eq!(r.outcome, Outcome::Unsupported);
        let ev = r.evidence.expect("evidence");
        assert_eq!(
            ev.step,
            "mount.All: failed to prepare idmapped overlay on ext4"
        );
        assert!(
            ev.detail.contains("the runtime said: invalid argument"),
            "{ev:?}"
        );
        assert_eq!(with(error(Some(libc::ENOENT))).outcome, Outcome::Fail);
        assert_eq!(with(error(None)).outcome, Outcome::Fail);
        assert_eq!(with(error(Some(libc::EPERM))).outcome, Outcome::InfraError);
        let hung = with(RuntimeCause::Hung {
            what: "the runtime did not answer within 5 s (job_timeout_s)".into(),
            detail: "waiting for a mount job (container 0 pass 0)".into(),
        });
        assert_eq!(hung.outcome, Outcome::Timeout);
        let broke = with(RuntimeCause::Broke {
            what: "the runtime died during a mount job: killed by signal 6 (SIGABRT)".into(),
            detail: "its stderr ends: crashing".into(),
        });
        assert_eq!(broke.outcome, Outcome::Fail);
        assert!(broke.evidence.expect("ev").detail.contains("crashing"));
        let start = with(RuntimeCause::Start {
            what: "start the runtime `x`".into(),
            errno: Some(libc::ENOENT),
            detail: "/runtimes/x: No such file".into(),
        });
        assert_eq!(start.outcome, Outcome::InfraError);
    }

    #[test]
    fn errno_classes_do_not_overlap() {
        for e in 0..200 {
            assert!(!(means_unsupported(e) && means_infra(e)), "errno {e}");
        }
    }
}
