//! A cell's record: its outcome and evidence, all samples of every repeat, the known answer it
//! was judged by ([`Expectation`], which `matrix` parses from `[[expect]]`), and what its numbers
//! are not ([`Caveats`], which `run::caveats` decides when the boot folds).

use std::collections::BTreeMap;

use protocol::{CellDetail, Evidence, Metric, Outcome, Scenario, MOUNT_OPS_PER_CONTAINER};
use serde::{Deserialize, Serialize};

use super::{CellFailure, KernelWarning, Provenance};
use crate::cell::{BootKey, CellKey};

/// What a serialized number is not: the words every report, the summary and `mmx compare` put
/// beside it.
pub const SERIALIZED: &str = "vCPUs serialized: not a contention measurement";

/// One matrix cell's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// What the cell is; its `Display` is the id users read and filter by.
    pub key: CellKey,
    /// The scenario with every parameter (the key holds only what identifies it).
    pub scenario: Scenario,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// All samples of every repeat.
    #[serde(default)]
    pub metrics: BTreeMap<String, Metric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<CellDetail>,
    pub provenance: Provenance,
    /// The boot that ran the cell (see [`super::BootRecord`]).
    pub boot: BootKey,
    /// How many times the cell was tried (retries for infra errors only).
    pub attempts: u32,
    /// Repeats that produced a result.
    pub repeats: u32,
    /// The matrix's known answer for this cell, and whether it held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<ExpectationCheck>,
    /// What the harness knows about these numbers that the agent could not (`run::caveats`).
    #[serde(default, skip_serializing_if = "Caveats::is_empty")]
    pub caveats: Caveats,
    /// The kernel's splats that printed while one of the cell's items ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_warnings: Vec<KernelWarning>,
    /// Set when the harness failed the cell although its answer held (a kernel warning under
    /// `--fail-on-kernel-warning`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_by: Option<CellFailure>,
}

/// What a cell's numbers are not, added when its boot folds: the agent knows what it measured,
/// the harness knows what was asked for and how the vCPUs ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Caveats {
    /// The vCPUs ran one at a time (single-threaded TCG) and the cell measured with more than
    /// one thread: its multi-thread lock points, and the metrics in `serialized_metrics`, are
    /// QEMU's time slicing, not contention.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vcpus_serialized: bool,
    /// Timing and rate metrics measured with more than one thread on serialized vCPUs:
    /// `mmx compare` does not gate on them unless asked (`--gate-serialized`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serialized_metrics: Vec<String>,
    /// Lock-benchmark points that cannot mean what they say on this machine, with why (e.g.
    /// `smt-siblings` pinning in a guest that sees no SMT siblings). Their metrics are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsupported_points: Vec<UnsupportedPoints>,
}

impl Caveats {
    pub fn is_empty(&self) -> bool {
        !self.vcpus_serialized
            && self.serialized_metrics.is_empty()
            && self.unsupported_points.is_empty()
    }

    /// Whether a lock point's number is time slicing rather than contention.
    pub fn point_serialized(&self, p: &protocol::lockbench::LockPoint) -> bool {
        self.vcpus_serialized && p.threads > 1
    }

    /// Whether a lock point was judged unsupported here.
    pub fn point_unsupported(&self, p: &protocol::lockbench::LockPoint) -> bool {
        self.unsupported_points
            .iter()
            .any(|u| u.pinning == p.pinning)
    }
}

/// The points of one pinning that are `unsupported`, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsupportedPoints {
    pub pinning: protocol::lockbench::Pinning,
    /// How many points of the detail it covers.
    pub points: usize,
    pub reason: String,
}

impl CellRecord {
    /// Whether this cell lets the run succeed: its expectation held, or, without one, it passed
    /// or was unsupported (an answer, not a failure).
    pub fn is_ok(&self) -> bool {
        if self.failed_by.is_some() {
            return false;
        }
        match &self.expected {
            Some(check) => check.met,
            None => self.outcome.is_success(),
        }
    }

    /// A mounts cell's detail, when it has one.
    pub fn mounts(&self) -> Option<&protocol::MountsResult> {
        match &self.detail {
            Some(CellDetail::Mounts(m)) => Some(m),
            _ => None,
        }
    }
}

/// The known answer a cell was judged by, and whether it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectationCheck {
    #[serde(flatten)]
    pub expectation: Expectation,
    pub met: bool,
}

/// A known answer: cells whose id matches `pattern` must end as `outcome`, and, when given, with
/// that errno (compared as a number: names come from `protocol::errno`, never from a guest) and
/// a failing step containing `step`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectation {
    /// A cell-id glob: `*` matches any run of characters, anchored at both ends.
    pub pattern: String,
    pub outcome: Outcome,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "errno_by_name"
    )]
    pub errno: Option<i32>,
    /// A substring of the failing step (`lowerdir+`, `mount_setattr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every container's start path, as the kernel counted it, must be exactly this many mount
    /// operations (the metric [`MOUNT_OPS_PER_CONTAINER`]; a cell without it does not meet it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_ops_per_container: Option<u64>,
}

impl Expectation {
    /// Whether an outcome and its evidence are what this expectation says.
    pub fn is_met(&self, outcome: Outcome, evidence: Option<&Evidence>) -> bool {
        self.is_met_with(outcome, evidence, &BTreeMap::new())
    }

    /// [`Expectation::is_met`], and the cell's metrics hold the count it pins.
    pub fn is_met_with(
        &self,
        outcome: Outcome,
        evidence: Option<&Evidence>,
        metrics: &BTreeMap<String, Metric>,
    ) -> bool {
        let counted = self.mount_ops_per_container.is_none_or(|want| {
            metrics.get(MOUNT_OPS_PER_CONTAINER).is_some_and(|m| {
                !m.samples.is_empty() && m.samples.iter().all(|&n| n == want as f64)
            })
        });
        counted
            && outcome == self.outcome
            && self
                .errno
                .is_none_or(|want| evidence.and_then(|e| e.errno) == Some(want))
            && self
                .step
                .as_deref()
                .is_none_or(|want| evidence.is_some_and(|e| e.step.contains(want)))
    }

    /// `unsupported`, `unsupported with EINVAL at a step containing "x"`, for messages.
    pub fn describe(&self) -> String {
        let mut s = self.outcome.to_string();
        if let Some(n) = self.errno {
            s.push_str(&format!(" with {}", protocol::errno::describe(n)));
        }
        if let Some(step) = &self.step {
            s.push_str(&format!(" at a step containing `{step}`"));
        }
        if let Some(n) = self.mount_ops_per_container {
            s.push_str(&format!(", {n} mount operations per container"));
        }
        s
    }
}

/// run.json keeps an expected errno by name, for people reading it; the number is what counts.
mod errno_by_name {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<i32>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_str(&protocol::errno::describe(*n)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
        let Some(name) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        protocol::errno::number(&name)
            .or_else(|| name.strip_prefix("errno ").and_then(|n| n.parse().ok()))
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown errno `{name}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_is_compared_as_a_number_never_a_label() {
        let e = Expectation {
            pattern: "*".into(),
            outcome: Outcome::Unsupported,
            errno: Some(22),
            step: Some("mount_setattr".into()),
            reason: None,
            mount_ops_per_container: None,
        };
        let einval = Evidence::new("mount_setattr(MOUNT_ATTR_IDMAP) on tmpfs").with_errno(22);
        assert!(e.is_met(Outcome::Unsupported, Some(&einval)));
        // errno 5 is EIO whatever a guest called it.
        let eio = Evidence::new("mount_setattr(MOUNT_ATTR_IDMAP) on tmpfs").with_errno(5);
        assert!(!e.is_met(Outcome::Unsupported, Some(&eio)));
        let elsewhere = Evidence::new("fsconfig(FSCONFIG_SET_FD)").with_errno(22);
        assert!(!e.is_met(Outcome::Unsupported, Some(&elsewhere)), "step");
        assert!(!e.is_met(Outcome::Unsupported, None));
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""errno":"EINVAL""#), "{json}");
        // A pinned count: every container's, as the kernel counted it.
        let pinned = Expectation {
            mount_ops_per_container: Some(6),
            errno: None,
            step: None,
            outcome: Outcome::Pass,
            ..e.clone()
        };
        let ops = |samples: Vec<f64>| {
            BTreeMap::from([(
                MOUNT_OPS_PER_CONTAINER.to_string(),
                Metric::new(protocol::Unit::Count, protocol::Better::Lower, samples),
            )])
        };
        assert!(pinned.is_met_with(Outcome::Pass, None, &ops(vec![6.0, 6.0])));
        assert!(!pinned.is_met_with(Outcome::Pass, None, &ops(vec![6.0, 42.0])));
        assert!(!pinned.is_met_with(Outcome::Pass, None, &ops(vec![])));
        assert!(!pinned.is_met(Outcome::Pass, None), "no count, not met");
        assert!(pinned
            .describe()
            .contains("6 mount operations per container"));
        assert_eq!(serde_json::from_str::<Expectation>(&json).unwrap(), e);
    }
}
