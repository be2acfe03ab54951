//! The tables `mmx run` prints on the terminal when it finishes: compatibility (strategy ×
//! outcome, with evidence), performance (mount-table operations and start latency per strategy
//! and layer count) and lock-bench points. The full reports live in `report`.

use std::collections::BTreeMap;
use std::fmt::Write;

use protocol::{CellDetail, Outcome, Scenario};

use crate::results::RunRecord;

/// Render the terminal summary of a run.
pub fn render(run: &RunRecord) -> String {
    let mut out = String::new();
    compat(run, &mut out);
    perf(run, &mut out);
    lockbench(run, &mut out);
    let counts = run.outcome_counts();
    let line: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(o, n)| format!("{n} {o}"))
        .collect();
    let _ = writeln!(out, "\n{} cells: {}", run.cells.len(), line.join(", "));
    let broken: Vec<&crate::results::CellRecord> = run
        .cells
        .iter()
        .filter(|c| c.expected.as_ref().is_some_and(|x| !x.met))
        .collect();
    let checked = run.cells.iter().filter(|c| c.expected.is_some()).count();
    if checked > 0 {
        let _ = writeln!(
            out,
            "{} of {checked} known answers held",
            checked - broken.len()
        );
    }
    for c in broken.iter().take(20) {
        if let Some(x) = &c.expected {
            let _ = writeln!(
                out,
                "  ✗ {}: {} ({}), expected {}",
                c.key,
                c.outcome,
                c.evidence
                    .as_ref()
                    .map_or_else(String::new, |e| e.to_string()),
                x.expectation.describe()
            );
        }
    }
    out
}

fn compat(run: &RunRecord, out: &mut String) {
    // Rows: kernel/topology/filesystem; columns: strategies present.
    let mut rows: BTreeMap<String, BTreeMap<String, Outcome>> = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();
    let mut cols: Vec<String> = Vec::new();
    for c in &run.cells {
        let Scenario::Mounts(m) = &c.scenario else {
            continue;
        };
        let col = m.strategy.to_string();
        if !cols.contains(&col) {
            cols.push(col.clone());
        }
        let row = c.key.boot().to_string();
        let cell = rows.entry(row).or_default();
        // One word per strategy: the worst across layer counts and concurrency.
        let worst = cell.get(&col).copied().map_or(c.outcome, |o| {
            std::cmp::max_by_key(o, c.outcome, |x| x.severity())
        });
        cell.insert(col, worst);
        if c.outcome != Outcome::Pass {
            if let Some(e) = &c.evidence {
                let note = format!("{} {}: {e}", c.outcome, c.key);
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    let w0 = rows.keys().map(|k| k.len()).max().unwrap_or(0).max(6);
    let _ = writeln!(out, "\nCompatibility");
    let _ = write!(out, "{:w0$}", "");
    for c in &cols {
        let _ = write!(out, "  {c:>14}");
    }
    let _ = writeln!(out);
    for (row, cells) in &rows {
        let _ = write!(out, "{row:w0$}");
        for c in &cols {
            let word = cells.get(c).map_or("-", |o| o.as_str());
            let _ = write!(out, "  {word:>14}");
        }
        let _ = writeln!(out);
    }
    for n in notes.iter().take(20) {
        let _ = writeln!(out, "  · {n}");
    }
    if notes.len() > 20 {
        let _ = writeln!(out, "  · … {} more in report.md", notes.len() - 20);
    }
}

fn perf(run: &RunRecord, out: &mut String) {
    let mut lines = Vec::new();
    for c in &run.cells {
        let Some(CellDetail::Mounts(m)) = &c.detail else {
            continue;
        };
        if c.outcome != Outcome::Pass {
            continue;
        }
        let lat = m.latency;
        let overhead = if m.syscall_us + m.overhead_us > 0 {
            100.0 * m.overhead_us as f64 / (m.syscall_us + m.overhead_us) as f64
        } else {
            0.0
        };
        lines.push(format!(
            "{:<28} {:>14} {:>4} {:>4} {:>3} {:>7}/{:<7} {:>9.0} {:>9.0} {:>9.0} {:>9.1} {:>6.1}% {:>5}",
            c.key.boot().to_string(),
            m.scenario.strategy.as_str(),
            m.scenario.layers,
            m.scenario.containers,
            m.scenario.concurrency,
            m.mount_ops.ops,
            m.mount_ops.expected_ops,
            lat.map_or(f64::NAN, |s| s.p50),
            lat.map_or(f64::NAN, |s| s.p99),
            lat.map_or(f64::NAN, |s| s.max),
            m.wall_us as f64 / 1000.0,
            overhead,
            c.provenance.accel.as_str(),
        ));
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nPerformance (per-container start latency in µs, all passes)"
    );
    let _ = writeln!(
        out,
        "{:<28} {:>14} {:>4} {:>4} {:>3} {:>15} {:>9} {:>9} {:>9} {:>9} {:>7} {:>5}",
        "guest",
        "strategy",
        "L",
        "C",
        "J",
        "mount ops/exp",
        "p50",
        "p99",
        "max",
        "wall ms",
        "ovh",
        "accel"
    );
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
}

fn lockbench(run: &RunRecord, out: &mut String) {
    let mut header = false;
    for c in &run.cells {
        let Some(CellDetail::Lockbench(l)) = &c.detail else {
            continue;
        };
        if !header {
            let _ = writeln!(out, "\nLock benchmark");
            let _ = writeln!(
                out,
                "{:<36} {:<24} {:>12} {:>4} {:>14} {:>8} {:>10}",
                "cell", "workload", "pinning", "N", "ops/s", "scal", "reader p99"
            );
            header = true;
        }
        for p in &l.points {
            let _ = writeln!(
                out,
                "{:<36} {:<24} {:>12} {:>4} {:>14.0} {:>8} {:>10}",
                c.key.target.to_string(),
                if p.false_sharing {
                    format!("{}+false-sharing", p.workload)
                } else {
                    p.workload.clone()
                },
                format!("{:?}", p.pinning).to_lowercase(),
                p.threads,
                p.ops_per_sec,
                p.scalability.map_or("-".into(), |s| format!("{s:.2}")),
                p.reader_p99_ns
                    .map_or("-".into(), |r| format!("{:.0} ns", r)),
            );
        }
    }
}
