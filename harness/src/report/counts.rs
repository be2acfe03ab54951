//! Mount counts as the reports show them: which kernel mechanism counted each kernel's mount-table
//! operations (`MountOps::count_source`), the mounts the kernel allocated against what the
//! strategy's sequence makes it allocate, and the agent's notes on its counts. The notes are a
//! guest's text: cut to one bounded line here, escaped by the templates (`|code` in report.md,
//! autoescape in report.html).

use std::collections::BTreeMap;

use protocol::{CountSource, MountOps, Outcome};
use serde::Serialize;

use super::model::{one_line, EVIDENCE_CHARS};
use crate::results::CellRecord;

/// Distinct count notes the reports list; the rest are counted.
pub const MAX_COUNT_NOTES: usize = 20;
/// Cells named under one note.
const NOTE_PLACES: usize = 3;

#[derive(Debug, Serialize)]
pub struct MountCounts {
    /// One per kernel (or host), in report order.
    pub kernels: Vec<CountKernel>,
    pub notes: Vec<CountNote>,
    /// Cells' notes left out once [`MAX_COUNT_NOTES`] distinct ones are listed.
    pub more_notes: usize,
}

#[derive(Debug, Serialize)]
pub struct CountKernel {
    pub kernel: String,
    /// `fanotify-mount-events`, or each source with its cell count when the cells differ.
    pub source: String,
    /// What the (first) source is, in words.
    pub meaning: &'static str,
    /// Mounts cells whose sequence ran (pass or fail) and reported counts.
    pub cells: usize,
    /// `30 of 30 cells as expected`, `1 of 30 cells differ`, `not measured`.
    pub allocated: String,
    /// Some cell allocated other than its sequence says (a note, not a failure).
    pub allocated_differs: bool,
}

#[derive(Debug, Serialize)]
pub struct CountNote {
    /// One line, at most [`EVIDENCE_CHARS`] characters, control characters dropped.
    pub text: String,
    /// Cell ids, at most [`NOTE_PLACES`]; `more` counts the rest.
    pub cells: Vec<String>,
    pub more: usize,
}

/// One mounts row's counts in the performance table.
#[derive(Debug, Serialize)]
pub struct RowCounts {
    /// `1010 = 1010`, `1012 ≠ 1010` (counted against the formula), or `60` for a runtime, which
    /// has no formula.
    pub ops: String,
    pub ops_differs: bool,
    /// `1020 = 1020`, `1023 ≠ 1020`, `1020` (no expectation), or `–` where the kernel has no
    /// unique mount ids.
    pub allocated: String,
    pub allocated_differs: bool,
    pub source: &'static str,
}

/// What a count source is, for the reader of a report.
pub fn source_meaning(s: CountSource) -> &'static str {
    match s {
        CountSource::FanotifyMountEvents => "fanotify FAN_MNT_ATTACH/DETACH events",
        CountSource::UniqueMountIds => "unique mount ids at each pass's peak and after it",
        CountSource::MountTableDiff => "the mount table read at each pass's peak and after it",
        CountSource::AgentTally => {
            "the agent's own tally (a run recorded before the kernel counted)"
        }
    }
}

/// `a = b`, `a ≠ b`, or `a` alone without an expectation.
fn against(have: u64, want: Option<u64>) -> (String, bool) {
    match want {
        Some(w) if w == have => (format!("{have} = {w}"), false),
        Some(w) => (format!("{have} ≠ {w}"), true),
        None => (have.to_string(), false),
    }
}

/// The counts of a cell whose sequence ran: a pass, or a fail (its check said why). A cell the
/// kernel stopped part-way (unsupported) or that never finished has counts of a sequence cut
/// short, which no formula describes.
fn counted(c: &CellRecord) -> Option<&MountOps> {
    match c.outcome {
        Outcome::Pass | Outcome::Fail => Some(&c.mounts()?.mount_ops),
        Outcome::Unsupported | Outcome::Timeout | Outcome::Panic | Outcome::InfraError => None,
    }
}

pub(super) fn row_counts(c: &CellRecord) -> Option<RowCounts> {
    let m = counted(c)?;
    let (ops, ops_differs) = against(m.ops, m.expected_ops);
    let (allocated, allocated_differs) = match m.mounts_allocated {
        Some(a) => against(a, m.expected_allocated),
        None => ("–".into(), false),
    };
    Some(RowCounts {
        ops,
        ops_differs,
        allocated,
        allocated_differs,
        source: m.count_source.as_str(),
    })
}

/// `cells` in report order.
pub(super) fn mount_counts(cells: &[&CellRecord]) -> MountCounts {
    // kernel → (source → cells, allocated measured, allocated differs), first seen first.
    type Tally = (BTreeMap<&'static str, (CountSource, usize)>, usize, usize);
    let mut kernels: Vec<(String, Tally)> = Vec::new();
    let mut notes: Vec<(String, Vec<String>)> = Vec::new();
    let mut more_notes = 0;
    for c in cells {
        let Some(m) = counted(c) else {
            continue;
        };
        let kernel = c.key.target.row().0.to_string();
        let i = match kernels.iter().position(|(k, _)| *k == kernel) {
            Some(i) => i,
            None => {
                kernels.push((kernel, Default::default()));
                kernels.len() - 1
            }
        };
        let t = &mut kernels[i].1;
        t.0.entry(m.count_source.as_str())
            .or_insert((m.count_source, 0))
            .1 += 1;
        if let Some(a) = m.mounts_allocated {
            t.1 += 1;
            if m.expected_allocated.is_some_and(|e| e != a) {
                t.2 += 1;
            }
        }
        for n in &m.notes {
            let text = one_line(n, EVIDENCE_CHARS);
            if text.is_empty() {
                continue;
            }
            if let Some((_, at)) = notes.iter_mut().find(|(t, _)| *t == text) {
                at.push(c.key.to_string());
            } else if notes.len() < MAX_COUNT_NOTES {
                notes.push((text, vec![c.key.to_string()]));
            } else {
                more_notes += 1;
            }
        }
    }
    MountCounts {
        kernels: kernels
            .into_iter()
            .map(|(kernel, (sources, measured, differs))| {
                let cells = sources.values().map(|(_, n)| n).sum();
                let first = sources
                    .values()
                    .max_by_key(|(_, n)| *n)
                    .map_or(CountSource::AgentTally, |(s, _)| *s);
                let source = if sources.len() == 1 {
                    first.as_str().to_string()
                } else {
                    sources
                        .iter()
                        .map(|(s, (_, n))| format!("{s} ({n})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                CountKernel {
                    kernel,
                    source,
                    meaning: source_meaning(first),
                    cells,
                    allocated: match (measured, differs) {
                        (0, _) => "not measured".into(),
                        (m, 0) => format!("{m} of {m} cells as expected"),
                        (m, d) => format!("{d} of {m} cells differ"),
                    },
                    allocated_differs: differs > 0,
                }
            })
            .collect(),
        notes: notes
            .into_iter()
            .map(|(text, at)| CountNote {
                text,
                more: at.len().saturating_sub(NOTE_PLACES),
                cells: at.into_iter().take(NOTE_PLACES).collect(),
            })
            .collect(),
        more_notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_cut_short_has_no_counts() {
        use protocol::{CellDetail, MountsResult, MountsScenario, Scenario, Strategy};
        let sc = MountsScenario {
            strategy: Strategy::FsconfigFd.into(),
            layers: 10,
            containers: 10,
            concurrency: 2,
            passes: 2,
            watchers: Vec::new(),
        };
        // What a 6.12 agent reports when fsconfig-fd stops at its first layer: the open_tree
        // clones it made, no operations, against the whole run's expectations.
        let ops = MountOps {
            attachments: 0,
            detachments: 0,
            ops: 0,
            expected_ops: Some(20),
            teardown_detachments: 0,
            cross_check_method: "listmount".into(),
            peak_extra_mounts: 0,
            leaked: 0,
            count_source: CountSource::UniqueMountIds,
            mounts_allocated: Some(20),
            expected_allocated: Some(440),
            notes: Vec::new(),
        };
        let detail = CellDetail::Mounts(MountsResult {
            scenario: sc.clone(),
            layers_fs: "ext4".into(),
            table: None,
            mount_ops: ops,
            latency_us: Vec::new(),
            latency: None,
            wall_us: 0,
            syscall_us: 0,
            overhead_us: 0,
            checks: Vec::new(),
            runtime: None,
            erofs: None,
            watchers: Vec::new(),
        });
        let mut c = crate::report::testing::cell(
            Scenario::Mounts(sc),
            Some(detail),
            Default::default(),
            crate::results::Accel::Tcg,
        );
        c.outcome = Outcome::Unsupported;
        assert!(row_counts(&c).is_none());
        assert!(mount_counts(&[&c]).kernels.is_empty());
        c.outcome = Outcome::Fail;
        let r = row_counts(&c).expect("a failed run's counts");
        assert_eq!((r.ops.as_str(), r.ops_differs), ("0 ≠ 20", true));
        assert_eq!(
            mount_counts(&[&c]).kernels[0].allocated,
            "1 of 1 cells differ"
        );
    }

    #[test]
    fn counts_say_whether_they_match() {
        assert_eq!(against(1010, Some(1010)), ("1010 = 1010".into(), false));
        assert_eq!(against(1012, Some(1010)), ("1012 ≠ 1010".into(), true));
        assert_eq!(against(60, None), ("60".into(), false));
    }
}
