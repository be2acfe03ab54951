//! The agent's result stream as the harness reads it: the results contract enforced on every
//! line, with bounded memory whatever the agent sends.
//!
//! The contract (`protocol`): one `hello` first, at most one `topology`, one `capabilities` per
//! filesystem the plan's items name (one when they name none; each about another filesystem),
//! exactly one result per plan item (matched by [`protocol::PlanItem::item`], with that item's
//! cell id), then `done`. Anything else — a line that does not parse, a result for an item the
//! plan does not have, a second result for an item, a second hello, anything after done — is a
//! [`Violation`]: counted, a few kept for the report, and the boot ends `infra-error`
//! ([`InfraCause::ProtocolViolation`](crate::results::InfraCause)), keeping every valid result
//! that came before. Lines that do not start with the result prefix are noise (a login banner on
//! an SSH channel) and ignored. A result line longer than the protocol allows reaches this cut
//! by the supervisor ([`ResultStream::feed_cut_line`]): it is a violation, and its beginning is
//! never parsed (a valid object padded past the limit would otherwise pass as a result).
//!
//! Memory is bounded by the plan: one result per item, [`KEPT_LOGS`] log lines,
//! [`KEPT_VIOLATIONS`] violations with [`EXCERPT_CHARS`] of their line; the line length itself is
//! bounded by the supervisor that feeds this.

use std::collections::BTreeSet;
use std::time::Instant;

use protocol::{
    AgentEvent, Capabilities, CellResult, Filesystem, LogLevel, ObservedTopology, Plan,
    SCHEMA_VERSION,
};

use crate::results::{Violation, ViolationKind};

/// Agent log lines kept per boot (the rest are counted).
pub const KEPT_LOGS: usize = 200;
/// Violations kept per boot (the rest are counted).
pub const KEPT_VIOLATIONS: usize = 20;
/// Characters of a violating line kept as its excerpt.
pub const EXCERPT_CHARS: usize = 200;

/// What the agent said in its hello.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub agent_version: String,
    pub kernel_release: String,
    /// Milliseconds since the kernel started, when the agent started.
    pub uptime_ms: u64,
}

/// What one line was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// Not a result line.
    Noise,
    /// A valid event, taken.
    Event,
    /// The line broke the contract.
    Violation(ViolationKind),
}

/// The stream of one boot, checked against its plan.
#[derive(Debug)]
pub struct ResultStream {
    /// Cell id of each plan item, by item index.
    items: Vec<String>,
    pub hello: Option<Hello>,
    pub hello_at: Option<Instant>,
    pub topology: Option<ObservedTopology>,
    /// The probes' answers, one per filesystem probed, in the order they came.
    pub capabilities: Vec<Capabilities>,
    /// When the last capabilities arrived: the probes' end, the first item's start.
    pub capabilities_at: Option<Instant>,
    /// How many `capabilities` the plan asks for: one per filesystem its items name, at least one.
    capabilities_max: usize,
    /// One slot per plan item.
    results: Vec<Option<CellResult>>,
    /// When each item's result arrived, by item index (the harness's own clock: the agent runs
    /// items one after another, so an item starts when the event before it arrived).
    result_at: Vec<Option<Instant>>,
    /// For a stream [`select`](Self::select)ed from a guest's: when the guest event before each
    /// item arrived (the previous item's result in the guest, of whatever filesystem, or the
    /// probes' end), which is when the item started. Empty for a stream of its own plan.
    pub prior_at: Vec<Option<Instant>>,
    pub logs: Vec<(LogLevel, String)>,
    pub logs_total: u64,
    pub violations: Vec<Violation>,
    pub violations_total: u64,
    pub done_at: Option<Instant>,
}

impl ResultStream {
    /// A stream expecting the answers to `plan`. Item indices are checked to be the positions
    /// of the items in the plan (that is how `run` writes them).
    pub fn new(plan: &Plan) -> ResultStream {
        let filesystems: BTreeSet<Filesystem> =
            plan.items.iter().filter_map(|i| i.filesystem).collect();
        ResultStream {
            items: plan.items.iter().map(|i| i.cell_id.clone()).collect(),
            hello: None,
            hello_at: None,
            topology: None,
            capabilities: Vec::new(),
            capabilities_at: None,
            capabilities_max: filesystems.len().max(1),
            results: vec![None; plan.items.len()],
            result_at: vec![None; plan.items.len()],
            prior_at: Vec::new(),
            logs: Vec::new(),
            logs_total: 0,
            violations: Vec::new(),
            violations_total: 0,
            done_at: None,
        }
    }

    /// Feed one line of the results channel.
    pub fn feed_line(&mut self, line: &str) -> Fed {
        let Some(decoded) = protocol::decode_line(line) else {
            return Fed::Noise;
        };
        let event = match decoded {
            Ok(ev) => ev,
            Err(_) => return self.violation(ViolationKind::Unparseable, line),
        };
        if self.done_at.is_some() {
            return self.violation(ViolationKind::OutOfOrder, line);
        }
        match event {
            AgentEvent::Hello {
                agent_version,
                schema_version,
                kernel_release,
                uptime_ms,
            } => {
                if self.hello.is_some() {
                    return self.violation(ViolationKind::OutOfOrder, line);
                }
                if schema_version != SCHEMA_VERSION {
                    return self.violation(ViolationKind::SchemaVersion, line);
                }
                self.hello = Some(Hello {
                    agent_version,
                    kernel_release,
                    uptime_ms,
                });
                self.hello_at = Some(Instant::now());
            }
            // Everything else comes after a hello, once.
            _ if self.hello.is_none() => return self.violation(ViolationKind::OutOfOrder, line),
            AgentEvent::Topology(t) => {
                if self.topology.is_some() {
                    return self.violation(ViolationKind::OutOfOrder, line);
                }
                self.topology = Some(t);
            }
            AgentEvent::Capabilities(c) => {
                let again = self
                    .capabilities
                    .iter()
                    .any(|o| probed_for(o) == probed_for(&c));
                if again || self.capabilities.len() >= self.capabilities_max {
                    return self.violation(ViolationKind::OutOfOrder, line);
                }
                self.capabilities.push(c);
                self.capabilities_at = Some(Instant::now());
            }
            AgentEvent::CellResult(r) => {
                let slot = usize::try_from(r.item)
                    .ok()
                    .filter(|i| *i < self.items.len());
                let Some(i) = slot else {
                    return self.violation(ViolationKind::UnknownItem, line);
                };
                if self.items[i] != r.cell_id {
                    return self.violation(ViolationKind::WrongCell, line);
                }
                if self.results[i].is_some() {
                    return self.violation(ViolationKind::Duplicate, line);
                }
                self.results[i] = Some(r);
                self.result_at[i] = Some(Instant::now());
            }
            AgentEvent::Log { level, message } => {
                self.logs_total += 1;
                if self.logs.len() < KEPT_LOGS {
                    self.logs.push((level, message));
                }
            }
            AgentEvent::Done { .. } => self.done_at = Some(Instant::now()),
        }
        Fed::Event
    }

    /// Feed the beginning of a line that was longer than the channel's limit (the supervisor
    /// cut it). A result line (the prefix at its start) that long breaks the contract; a long
    /// line of noise stays noise. Either way nothing of it is parsed.
    pub fn feed_cut_line(&mut self, beginning: &str) -> Fed {
        if beginning.starts_with(protocol::LINE_PREFIX) {
            self.violation(ViolationKind::TooLong, beginning)
        } else {
            Fed::Noise
        }
    }

    fn violation(&mut self, kind: ViolationKind, line: &str) -> Fed {
        self.violations_total += 1;
        if self.violations.len() < KEPT_VIOLATIONS {
            self.violations.push(Violation {
                kind,
                excerpt: line.chars().take(EXCERPT_CHARS).collect(),
            });
        }
        Fed::Violation(kind)
    }

    /// The agent reported done and kept the contract so far.
    pub fn is_done(&self) -> bool {
        self.done_at.is_some()
    }

    pub fn broke_contract(&self) -> bool {
        self.violations_total > 0
    }

    /// The valid result of each item, by item index.
    pub fn results(&self) -> &[Option<CellResult>] {
        &self.results
    }

    /// When each item's result arrived, by item index (`None`: never, or made by the harness).
    pub fn result_times(&self) -> &[Option<Instant>] {
        &self.result_at
    }

    /// What this stream says about `plan`, a plan whose items are some of this stream's (the
    /// boot of one filesystem among those a guest served, or its cells a guest reached): each
    /// item's result is the one this stream has for the same cell and repeat (the n-th item
    /// of a cell here answers its n-th item there), and the capabilities are those probed on
    /// `fs` (all of them when None). Hello, topology, logs, violations and done are the
    /// guest's, shared.
    pub fn select(&self, plan: &Plan, fs: Option<Filesystem>) -> ResultStream {
        let mut taken = vec![false; self.items.len()];
        let mut results = Vec::with_capacity(plan.items.len());
        let mut result_at = Vec::with_capacity(plan.items.len());
        let mut prior_at = Vec::with_capacity(plan.items.len());
        for item in &plan.items {
            let here = (0..self.items.len()).find(|&i| !taken[i] && self.items[i] == item.cell_id);
            result_at.push(here.and_then(|i| self.result_at[i]));
            prior_at.push(here.and_then(|i| match i {
                0 => self.capabilities_at.or(self.hello_at),
                i => self.result_at[i - 1],
            }));
            results.push(here.and_then(|i| {
                taken[i] = true;
                self.results[i].clone().map(|r| CellResult {
                    item: item.item,
                    ..r
                })
            }));
        }
        let capabilities = self
            .capabilities
            .iter()
            .filter(|c| fs.is_none_or(|fs| probed_for(c) == fs.as_str()))
            .cloned()
            .collect();
        ResultStream {
            items: plan.items.iter().map(|i| i.cell_id.clone()).collect(),
            hello: self.hello.clone(),
            hello_at: self.hello_at,
            topology: self.topology.clone(),
            capabilities,
            capabilities_at: self.capabilities_at,
            capabilities_max: self.capabilities_max,
            results,
            result_at,
            prior_at,
            logs: self.logs.clone(),
            logs_total: self.logs_total,
            violations: self.violations.clone(),
            violations_total: self.violations_total,
            done_at: self.done_at,
        }
    }

    /// Fill every item without a result with one the harness makes (an SSH host that cannot
    /// switch SMT answers every cell `unsupported` before the agent starts).
    pub fn answer_unreported(&mut self, make: impl Fn(u32, &str) -> CellResult) {
        for (i, (slot, cell)) in self.results.iter_mut().zip(&self.items).enumerate() {
            if slot.is_none() {
                let item = u32::try_from(i).unwrap_or(u32::MAX);
                *slot = Some(make(item, cell));
            }
        }
    }
}

/// The filesystem whose boot a probe answer belongs to: the plan's disk it ran on, or (a plan
/// without disks, an older agent) the filesystem it measured.
fn probed_for(c: &Capabilities) -> &str {
    c.disk.map_or(c.probed_fs.as_str(), |d| d.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{hello_line, pass_line, tiny_plan};
    use protocol::encode_line;

    #[test]
    fn a_well_behaved_stream_fills_every_item() {
        let mut s = ResultStream::new(&tiny_plan(&["a", "b", "a"]));
        assert_eq!(s.feed_line("login banner"), Fed::Noise);
        assert_eq!(s.feed_line(&hello_line("6.12")), Fed::Event);
        for (i, c) in [(0, "a"), (1, "b"), (2, "a")] {
            assert_eq!(s.feed_line(&pass_line(i, c)), Fed::Event);
        }
        s.feed_line(&encode_line(&AgentEvent::Done { uptime_ms: 2 }));
        assert!(s.is_done() && !s.broke_contract());
        assert!(s.results().iter().all(Option::is_some));
    }

    #[test]
    fn every_breach_is_a_counted_violation_and_earlier_results_stay() {
        let mut s = ResultStream::new(&tiny_plan(&["a", "b"]));
        assert_eq!(
            s.feed_line(&pass_line(0, "a")),
            Fed::Violation(ViolationKind::OutOfOrder),
            "a result before hello"
        );
        s.feed_line(&hello_line("6.12"));
        assert_eq!(s.feed_line(&pass_line(0, "a")), Fed::Event);
        let cases = [
            (pass_line(0, "a"), ViolationKind::Duplicate),
            (pass_line(7, "a"), ViolationKind::UnknownItem),
            (pass_line(1, "a"), ViolationKind::WrongCell),
            ("MMX1 {not json".to_string(), ViolationKind::Unparseable),
            (hello_line("6.12"), ViolationKind::OutOfOrder),
        ];
        for (line, kind) in &cases {
            assert_eq!(s.feed_line(line), Fed::Violation(*kind), "{line}");
        }
        assert_eq!(s.violations_total, cases.len() as u64 + 1);
        assert!(s.results()[0].is_some() && s.results()[1].is_none());
    }

    #[test]
    fn the_prefix_counts_only_at_the_start_of_a_line() {
        let mut s = ResultStream::new(&tiny_plan(&["a"]));
        s.feed_line(&hello_line("6.12"));
        for noise in [
            format!("login banner {}", pass_line(0, "a")),
            format!(" {}", pass_line(0, "a")),
            format!("mmx-ssh: {}", pass_line(0, "a")),
        ] {
            assert_eq!(s.feed_line(&noise), Fed::Noise, "{noise}");
        }
        assert!(
            s.results()[0].is_none(),
            "a prefix inside a line is not a result"
        );
        assert_eq!(s.feed_line(&pass_line(0, "a")), Fed::Event);
    }

    #[test]
    fn a_result_line_over_the_limit_is_a_violation_never_parsed() {
        let mut s = ResultStream::new(&tiny_plan(&["a", "b"]));
        s.feed_line(&hello_line("6.12"));
        assert_eq!(s.feed_line(&pass_line(0, "a")), Fed::Event);
        // What the supervisor hands on for a valid result padded past the limit: its beginning
        // parses, and must not be taken.
        let padded = format!("{}{}", pass_line(1, "b"), " ".repeat(100));
        assert!(protocol::decode_line(&padded).is_some_and(|r| r.is_ok()));
        assert_eq!(
            s.feed_cut_line(&padded),
            Fed::Violation(ViolationKind::TooLong)
        );
        assert!(s.results()[0].is_some(), "the result before it stays");
        assert!(s.results()[1].is_none());
        assert_eq!(s.violations[0].kind, ViolationKind::TooLong);
        assert!(s.violations[0].excerpt.chars().count() <= EXCERPT_CHARS);
        // A long line of noise is noise, cut or not.
        assert_eq!(s.feed_cut_line(&"x".repeat(300)), Fed::Noise);
        assert_eq!(s.violations_total, 1);
    }

    #[test]
    fn memory_is_bounded_by_the_plan_not_the_agent() {
        let mut s = ResultStream::new(&tiny_plan(&["a"]));
        s.feed_line(&hello_line("6.12"));
        let log = encode_line(&AgentEvent::Log {
            level: LogLevel::Info,
            message: "x".into(),
        });
        let long_garbage = format!("MMX1 {}", "y".repeat(10_000));
        for _ in 0..10_000 {
            s.feed_line(&log);
            s.feed_line(&long_garbage);
        }
        assert_eq!(s.logs.len(), KEPT_LOGS);
        assert_eq!(s.logs_total, 10_000);
        assert_eq!(s.violations.len(), KEPT_VIOLATIONS);
        assert_eq!(s.violations_total, 10_000);
        assert!(s
            .violations
            .iter()
            .all(|v| v.excerpt.chars().count() <= EXCERPT_CHARS));
    }
}
