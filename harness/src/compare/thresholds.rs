//! `--threshold NAME=PCT`: how large a change in a metric's median must be before `mmx compare`
//! calls it a regression or an improvement.
//!
//! Matching a metric name against the rules, first match wins:
//! 1. a rule equal to the whole name (`tas@max:ops_per_s=3%`);
//! 2. the longest rule that is a prefix of the name (`latency=10%` covers `latency_p99_us`);
//! 3. the longest rule contained anywhere in the name (`ops_per_s=5%` covers
//!    `mutex@max:ops_per_s`; note `ops` would also cover `mount_ops`);
//! 4. the default: `default=PCT` or a bare `PCT`, else [`DEFAULT_THRESHOLD`].

use anyhow::{bail, Context};
use serde::Serialize;

/// Relative change of the median that counts, when no rule says otherwise: 10%.
pub const DEFAULT_THRESHOLD: f64 = 0.10;
/// Significance level of the Mann–Whitney test.
pub const DEFAULT_ALPHA: f64 = 0.05;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thresholds {
    /// Fraction (0.10 = 10%) for metrics no rule matches.
    pub default: f64,
    /// (name pattern, fraction), in the order given.
    pub rules: Vec<(String, f64)>,
    /// A change beyond its threshold counts only when the test's p-value is below this.
    pub alpha: f64,
    /// Gate on metrics measured with more than one thread on serialized vCPUs too
    /// (`--gate-serialized`); by default they are reported, never gated.
    pub gate_serialized: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            default: DEFAULT_THRESHOLD,
            rules: Vec::new(),
            alpha: DEFAULT_ALPHA,
            gate_serialized: false,
        }
    }
}

/// `10%`, `10` (both ten percent) or `2.5%`.
fn parse_pct(spec: &str, value: &str) -> anyhow::Result<f64> {
    let v = value.trim();
    let num = v.strip_suffix('%').unwrap_or(v).trim();
    let pct: f64 = num
        .parse()
        .with_context(|| format!("--threshold {spec}: `{value}` is not a percentage like 10%"))?;
    if !pct.is_finite() || pct < 0.0 {
        bail!("--threshold {spec}: {pct}% must be zero or more");
    }
    Ok(pct / 100.0)
}

impl Thresholds {
    /// Parse `--threshold` values: `NAME=PCT`, `default=PCT` or a bare `PCT`.
    pub fn parse(specs: &[String]) -> anyhow::Result<Thresholds> {
        let mut t = Thresholds::default();
        for spec in specs {
            match spec.split_once('=') {
                Some((name, value)) => {
                    let name = name.trim();
                    let pct = parse_pct(spec, value)?;
                    if name.is_empty() {
                        bail!("--threshold {spec}: the metric name before `=` is empty");
                    }
                    if name == "default" {
                        t.default = pct;
                    } else {
                        t.rules.push((name.to_string(), pct));
                    }
                }
                None => t.default = parse_pct(spec, spec)?,
            }
        }
        Ok(t)
    }

    pub fn with_alpha(mut self, alpha: f64) -> anyhow::Result<Thresholds> {
        if !(alpha > 0.0 && alpha < 1.0) {
            bail!("--alpha {alpha}: must be between 0 and 1");
        }
        self.alpha = alpha;
        Ok(self)
    }

    pub fn with_gate_serialized(mut self, gate: bool) -> Thresholds {
        self.gate_serialized = gate;
        self
    }

    /// The threshold (a fraction) for a metric name, by the rules in the module doc.
    pub fn for_metric(&self, name: &str) -> f64 {
        if let Some((_, v)) = self.rules.iter().find(|(r, _)| r == name) {
            return *v;
        }
        let longest = |pred: &dyn Fn(&str) -> bool| {
            self.rules
                .iter()
                .filter(|(r, _)| pred(r))
                .max_by_key(|(r, _)| r.len())
                .map(|(_, v)| *v)
        };
        longest(&|r| name.starts_with(r))
            .or_else(|| longest(&|r| name.contains(r)))
            .unwrap_or(self.default)
    }

    /// One line per rule, for the report header.
    pub fn describe(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .rules
            .iter()
            .map(|(r, f)| format!("{r}={}%", f * 100.0))
            .collect();
        v.push(format!("default={}%", self.default * 100.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_exact_then_prefix_then_substring() {
        let t = Thresholds::parse(&[
            "latency=10%".into(),
            "latency_p99=20".into(),
            "ops_per_s=5%".into(),
            "mount_ops=0%".into(),
            "15%".into(),
        ])
        .unwrap();
        assert_eq!(t.for_metric("latency_p50_us"), 0.10);
        assert_eq!(t.for_metric("latency_p99_us"), 0.20);
        assert_eq!(t.for_metric("tas@max:ops_per_s"), 0.05);
        assert_eq!(t.for_metric("mount_ops"), 0.0);
        assert_eq!(t.for_metric("wall_us"), 0.15);
        assert_eq!(Thresholds::default().for_metric("x"), DEFAULT_THRESHOLD);
    }

    #[test]
    fn bad_thresholds_are_refused_clearly() {
        let e = Thresholds::parse(&["latency=ten".into()]).unwrap_err();
        assert!(e.to_string().contains("latency=ten"), "{e}");
        assert!(Thresholds::parse(&["=5%".into()]).is_err());
        assert!(Thresholds::parse(&["x=-5%".into()]).is_err());
        assert!(Thresholds::default().with_alpha(1.5).is_err());
        let t = Thresholds::parse(&["default=2.5%".into()]).unwrap();
        assert_eq!(t.default, 0.025);
    }
}
