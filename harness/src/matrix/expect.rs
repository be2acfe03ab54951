//! Known answers (`[[expect]]`): which outcome, errno and failing step a set of cells must show,
//! and for a runtime the kernel's count of its mount operations per container (a runtime has no
//! formula; `mount_ops_per_container = 6` on every layer count is how a matrix says "maps the
//! layers' common parent"). First match wins; a changed answer fails the run.

use std::collections::BTreeMap;

use protocol::{Evidence, Metric, Outcome, MOUNT_OPS_PER_CONTAINER};
use serde::{Deserialize, Serialize};

use crate::cell::CellKey;

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

    pub fn matches(&self, key: &CellKey) -> bool {
        glob_matches(&self.pattern, &key.to_string())
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

/// The matrix's known answers, first match wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations(pub Vec<Expectation>);

impl Expectations {
    /// The first expectation whose pattern matches the cell.
    pub fn find(&self, key: &CellKey) -> Option<&Expectation> {
        let id = key.to_string();
        self.0.iter().find(|e| glob_matches(&e.pattern, &id))
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

/// Anchored glob match: `*` matches any run of characters (including `/`).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.len() >= part.len() && rest.ends_with(part);
        } else if let Some(pos) = rest.find(part) {
            rest = &rest[pos + part.len()..];
        } else {
            return false;
        }
    }
    true
}

/// Whether a cell id matches a `--filter`: a `*` glob, or else a substring.
pub fn filter_matches(filter: &str, id: &str) -> bool {
    if filter.contains('*') {
        glob_matches(filter, id)
    } else {
        id.contains(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_anchored() {
        assert!(glob_matches("*", "a/b"));
        assert!(glob_matches("a/*/c", "a/b/x/c"));
        assert!(!glob_matches("a/*/c", "a/b/cd"));
        assert!(glob_matches("debian-6.1/*", "debian-6.1/t/ext4/x"));
        assert!(!glob_matches("debian-6.1/*", "debian-6.12/t/ext4/x"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
        assert!(glob_matches("a*a", "aa"));
        assert!(!glob_matches("a*a", "a"));
    }

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
