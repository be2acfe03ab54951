//! The performance tables: one per column family (mount strategies and runtimes share one), a
//! row per cell (and per lockbench workload), a column per metric, each value median ± MAD with
//! its samples; mounts rows also carry the mount counts beside their formulas ([`super::counts`]).

use std::collections::BTreeMap;

use protocol::{Metric, Scenario, Summary};
use serde::Serialize;

use super::counts::{row_counts, RowCounts};
use super::model::{family, fmt_num, glyph};
use crate::results::CellRecord;

#[derive(Debug, Serialize)]
pub struct PerfTable {
    pub family: String,
    pub columns: Vec<PerfColumn>,
    pub rows: Vec<PerfRow>,
    /// Some row has mount counts ([`PerfRow::counts`]): the table shows their columns.
    pub has_counts: bool,
    /// Some value is [`PerfValue::serialized`]: the table says what † means.
    pub any_serialized: bool,
}

/// What a serialized value is not, where a table marks one.
pub const SERIALIZED_NOTE: &str = crate::results::SERIALIZED;

#[derive(Debug, Serialize)]
pub struct PerfColumn {
    pub name: String,
    pub unit: &'static str,
    /// `↓` lower is better, `↑` higher is better, empty for informational metrics.
    pub better: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PerfRow {
    pub kernel: String,
    pub topology: String,
    pub filesystem: String,
    pub scenario: String,
    /// Part of the metric name before `:` (a lockbench workload), empty otherwise.
    pub sub: String,
    pub accel: &'static str,
    pub outcome: &'static str,
    pub symbol: &'static str,
    pub glyph: &'static str,
    pub values: Vec<Option<PerfValue>>,
    /// A mounts cell's counts against its formulas.
    pub counts: Option<RowCounts>,
}

#[derive(Debug, Serialize)]
pub struct PerfValue {
    /// Measured with more than one thread on vCPUs that took turns: greyed, marked †.
    pub serialized: bool,
    pub median: String,
    /// Median absolute deviation, as `±12.3`.
    pub spread: String,
    pub n: usize,
    pub range: String,
    /// `1.23k ±45 (10)`: median ± MAD (samples).
    pub text: String,
}

pub fn perf_value(s: &Summary) -> PerfValue {
    perf_value_marked(s, false)
}

/// A value, marked when it was measured on serialized vCPUs.
pub fn perf_value_marked(s: &Summary, serialized: bool) -> PerfValue {
    let median = fmt_num(s.p50);
    // One sample has no spread to show.
    let spread = if s.n > 1 {
        format!("±{}", fmt_num(s.mad))
    } else {
        String::new()
    };
    PerfValue {
        text: if spread.is_empty() {
            format!("{median} ({})", s.n)
        } else {
            format!("{median} {spread} ({})", s.n)
        },
        range: format!("{}–{}", fmt_num(s.min), fmt_num(s.max)),
        serialized,
        median,
        spread,
        n: s.n,
    }
}

/// Split `workload:metric` into a row key and a column name.
fn split_metric(name: &str) -> (&str, &str) {
    match name.rsplit_once(':') {
        Some((sub, col)) => (sub, col),
        None => ("", name),
    }
}

fn better_arrow(m: &Metric) -> &'static str {
    match m.better {
        protocol::Better::Lower => "↓",
        protocol::Better::Higher => "↑",
        protocol::Better::Neither => "",
    }
}

pub(super) fn perf_tables(cells: &[&CellRecord]) -> Vec<PerfTable> {
    // Family → (column name → (unit, arrow)) and rows, in cell order.
    let mut families: BTreeMap<(usize, String), Vec<&CellRecord>> = BTreeMap::new();
    for c in cells.iter().filter(|c| !c.metrics.is_empty()) {
        let (rank, name) = family(&c.scenario);
        // Mount strategies and runtimes share one table: same metrics, easier to read side by
        // side.
        let key = if matches!(c.scenario, Scenario::Mounts(_)) {
            (0, "mounts".to_string())
        } else {
            (rank, name)
        };
        families.entry(key).or_default().push(c);
    }
    let mut out = Vec::new();
    for ((_, fam), members) in families {
        let mut cols: BTreeMap<String, (&'static str, &'static str)> = BTreeMap::new();
        for c in &members {
            for (name, m) in &c.metrics {
                cols.entry(split_metric(name).1.to_string())
                    .or_insert((m.unit.symbol(), better_arrow(m)));
            }
        }
        let col_names: Vec<String> = cols.keys().cloned().collect();
        let mut rows = Vec::new();
        for c in members {
            let mut subs: BTreeMap<&str, Vec<Option<PerfValue>>> = BTreeMap::new();
            for (name, m) in &c.metrics {
                let (sub, col) = split_metric(name);
                let values = subs.entry(sub).or_insert_with(|| {
                    std::iter::repeat_with(|| None)
                        .take(col_names.len())
                        .collect()
                });
                if let (Ok(i), Some(s)) = (
                    col_names.binary_search_by(|x| x.as_str().cmp(col)),
                    m.summary(),
                ) {
                    let serialized = c.caveats.serialized_metrics.contains(name);
                    values[i] = Some(perf_value_marked(&s, serialized));
                }
            }
            for (sub, values) in subs {
                let (kernel, topology) = c.key.target.row();
                rows.push(PerfRow {
                    kernel: kernel.to_string(),
                    topology: topology.to_string(),
                    filesystem: c.key.filesystem.to_string(),
                    scenario: c.scenario.label(),
                    sub: sub.to_string(),
                    accel: c.provenance.accel.as_str(),
                    outcome: c.outcome.as_str(),
                    symbol: c.outcome.symbol(),
                    glyph: glyph(c.outcome),
                    values,
                    counts: if sub.is_empty() { row_counts(c) } else { None },
                });
            }
        }
        let any_serialized = rows
            .iter()
            .flat_map(|r| r.values.iter().flatten())
            .any(|v| v.serialized);
        out.push(PerfTable {
            has_counts: rows.iter().any(|r| r.counts.is_some()),
            any_serialized,
            family: fam,
            columns: cols
                .into_iter()
                .map(|(name, (unit, better))| PerfColumn { name, unit, better })
                .collect(),
            rows,
        });
    }
    out
}
