//! The JUnit view: one testsuite per boot key (kernel/topology/filesystem), one testcase per
//! cell. `fail`, `timeout` and `panic` are kernel verdicts and become `<failure>`; `infra-error`
//! is our side breaking and becomes `<error>`, so CI dashboards never blame the kernel for it;
//! `unsupported` is `<skipped>` with its evidence.

use protocol::{CellDetail, Outcome};
use serde::Serialize;

use super::model::evidence_text;
use crate::results::{CellRecord, RunRecord};

#[derive(Debug, Serialize)]
pub struct JunitModel {
    pub name: String,
    pub timestamp: String,
    pub tests: usize,
    pub failures: usize,
    pub errors: usize,
    pub skipped: usize,
    pub time: String,
    pub suites: Vec<Suite>,
}

#[derive(Debug, Serialize)]
pub struct Suite {
    pub name: String,
    pub tests: usize,
    pub failures: usize,
    pub errors: usize,
    pub skipped: usize,
    pub time: String,
    pub accel: String,
    pub kernel_release: String,
    pub cases: Vec<Case>,
}

#[derive(Debug, Serialize)]
pub struct Case {
    pub name: String,
    pub time: String,
    /// `pass`, `failure`, `error` or `skipped`.
    pub kind: &'static str,
    pub outcome: &'static str,
    pub message: String,
    pub text: String,
    /// `<property>`s of the testcase: what the numbers are not (a topology the guest did not
    /// see, serialized vCPUs), so a dashboard that shows only pass/fail still carries the ⚠.
    pub properties: Vec<(String, String)>,
}

fn kind(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail | Outcome::Timeout | Outcome::Panic => "failure",
        Outcome::InfraError => "error",
        Outcome::Unsupported => "skipped",
    }
}

/// The plan stretch a splat printed during, for a message.
fn during(w: &crate::results::KernelWarning) -> String {
    w.during
        .map_or_else(|| "outside the plan".to_string(), |p| p.to_string())
}

/// Seconds the cell took, where its detail says (mount runs record their wall time).
fn seconds(c: &CellRecord) -> f64 {
    match &c.detail {
        Some(CellDetail::Mounts(m)) => m.wall_us as f64 / 1e6,
        Some(CellDetail::Lockbench(l)) => {
            l.points.iter().map(|p| p.duration_ns as f64).sum::<f64>() / 1e9
        }
        None => 0.0,
    }
}

/// The suite a cell belongs to: its boot (target and filesystem).
fn suite_name(c: &CellRecord) -> String {
    c.key.boot().to_string()
}

pub fn build(run: &RunRecord) -> JunitModel {
    let mut cells: Vec<&CellRecord> = run.cells.iter().collect();
    cells.sort_by(|a, b| a.key.cmp(&b.key));
    let mut suites: Vec<Suite> = Vec::new();
    let mut total_time = 0.0;
    for c in cells {
        let name = suite_name(c);
        if suites.last().is_none_or(|s| s.name != name) {
            suites.push(Suite {
                name: name.clone(),
                tests: 0,
                failures: 0,
                errors: 0,
                skipped: 0,
                time: String::new(),
                accel: c.provenance.accel.as_str().into(),
                kernel_release: c.provenance.kernel_release.clone().unwrap_or_default(),
                cases: Vec::new(),
            });
        }
        let Some(suite) = suites.last_mut() else {
            continue;
        };
        // A cell failed on a kernel warning is a failure whatever its own outcome was.
        let k = if c.failed_by.is_some() {
            "failure"
        } else {
            kind(c.outcome)
        };
        suite.tests += 1;
        match k {
            "failure" => suite.failures += 1,
            "error" => suite.errors += 1,
            "skipped" => suite.skipped += 1,
            _ => {}
        }
        let secs = seconds(c);
        total_time += secs;
        let evidence = if c.outcome == Outcome::Pass {
            String::new()
        } else {
            evidence_text(c.evidence.as_ref())
        };
        // The full evidence (console excerpt included) goes in the body; the message is one line.
        let text = match &c.evidence {
            Some(e) if c.outcome != Outcome::Pass => format!(
                "outcome: {}\ncell: {}\nboot: {}\nstep: {}\nerrno: {}\n{}",
                c.outcome,
                c.key,
                c.boot,
                e.step,
                e.errno
                    .map(|n| format!("{} ({n})", protocol::errno::describe(n)))
                    .unwrap_or_else(|| "-".into()),
                e.detail
            ),
            _ => String::new(),
        };
        let mut properties = Vec::new();
        let mut message = format!("{}: {evidence}", c.outcome);
        if let Some(m) = &c.provenance.topology_mismatch {
            let asked = c.provenance.requested_topology.as_deref().unwrap_or("?");
            let warning = format!("⚠ topology: asked for {asked}, the guest sees {m}");
            message.push_str(&format!(" ({warning})"));
            properties.push(("topology_mismatch".to_string(), warning));
        }
        if let Some(rt) = &c.provenance.runtime {
            let mut v = rt.source.clone();
            if let Some(said) = &rt.said {
                v.push_str(&format!("; says {said}"));
            }
            properties.push(("runtime".to_string(), v));
        }
        if c.caveats.vcpus_serialized {
            properties.push((
                "vcpus_serialized".to_string(),
                crate::results::SERIALIZED.to_string(),
            ));
        }
        for u in &c.caveats.unsupported_points {
            properties.push((
                "unsupported_points".to_string(),
                format!("{} {} points: {}", u.points, u.pinning.as_str(), u.reason),
            ));
        }
        for w in &c.kernel_warnings {
            properties.push((
                "kernel_warning".to_string(),
                format!("{} during {}: {}", w.kind, during(w), w.headline()),
            ));
        }
        let (outcome, message, text) = match c.failed_by {
            Some(f) => {
                let first = c.kernel_warnings.first();
                let lines = c
                    .kernel_warnings
                    .iter()
                    .map(|w| format!("{} during {}:\n{}", w.kind, during(w), w.shown().join("\n")))
                    .collect::<Vec<_>>()
                    .join("\n\n");
                (
                    f.as_str(),
                    format!(
                        "{}: {} (the cell's own outcome: {})",
                        f.as_str(),
                        first.map_or("", |w| w.headline()),
                        c.outcome
                    ),
                    format!("{lines}\n{text}"),
                )
            }
            None => (c.outcome.as_str(), message, text),
        };
        suite.cases.push(Case {
            name: c.scenario.label(),
            time: format!("{secs:.3}"),
            kind: k,
            outcome,
            message,
            text,
            properties,
        });
    }
    for s in &mut suites {
        let t: f64 = s
            .cases
            .iter()
            .filter_map(|c| c.time.parse::<f64>().ok())
            .sum();
        s.time = format!("{t:.3}");
    }
    JunitModel {
        name: format!("mmx {}", run.run_id),
        timestamp: run.started_at.clone(),
        tests: suites.iter().map(|s| s.tests).sum(),
        failures: suites.iter().map(|s| s.failures).sum(),
        errors: suites.iter().map(|s| s.errors).sum(),
        skipped: suites.iter().map(|s| s.skipped).sum(),
        time: format!("{total_time:.3}"),
        suites,
    }
}
