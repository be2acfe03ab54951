//! What `mmx run` prints on the terminal when it finishes: one screen that says what matters —
//! the compatibility matrix (with the ⚠ of a topology the guest did not see), the counts, the
//! evidence grouped as report.md groups it, the largest differences between strategies, and
//! where the reports are. `--verbose` adds the full tables (every mount cell, every lock point);
//! everything else lives in the reports.
//!
//! The matrix and the evidence come from the report's own view model, so the terminal, report.md
//! and report.html can never disagree.

use std::collections::BTreeMap;
use std::fmt::Write;

use protocol::{CellDetail, MountStrategy, Outcome, Scenario};

use crate::report::model::{self, CompatMatrix, Footnote, ReportModel};
use crate::report::Written;
use crate::results::{CellRecord, RunRecord};

/// Evidence notes printed before pointing at report.md.
const NOTES: usize = 12;
/// Strategy differences printed.
const DIFFERENCES: usize = 5;
/// Broken known answers printed.
const BROKEN: usize = 10;

/// The end-of-run screen. `written`: where the reports went (None when they could not be).
pub fn render(run: &RunRecord, written: Option<&Written>, verbose: bool) -> String {
    let m = model::build(run);
    let mut out = String::new();
    substituted(&m, &mut out);
    runtimes(&m, &mut out);
    compat(&m.matrix, &mut out);
    counts(run, &m, &mut out);
    evidence(&m.footnotes, &mut out);
    differences(run, &mut out);
    if verbose {
        perf(run, &mut out);
        lockbench(run, &mut out);
    }
    match written {
        Some(w) => {
            let _ = writeln!(
                out,
                "\nReports: {}  {}  {}",
                w.markdown.display(),
                w.html.display(),
                w.junit.display()
            );
        }
        None => {
            let _ = writeln!(out, "\nReports: not written (see the error above)");
        }
    }
    if !verbose {
        let _ = writeln!(
            out,
            "(--verbose prints every mount cell and lock point; report.html has them all)"
        );
    }
    out
}

/// Kernels and runtimes that are not what the lock files pin: said again at the end, where
/// the line printed when it happened may have scrolled away.
fn substituted(m: &ReportModel, out: &mut String) {
    if m.run.substituted.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n⚠ Not what the lock files pin (the archive no longer carries the pinned packages)"
    );
    for s in &m.run.substituted {
        let _ = writeln!(out, "  {}: locked {}; ran {}", s.what, s.locked, s.used);
    }
}

/// Which runtime each `runtime:NAME` column is: its build, what it said, or why it is missing.
fn runtimes(m: &ReportModel, out: &mut String) {
    if m.run.runtimes.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nRuntimes");
    for r in &m.run.runtimes {
        let mut line = format!("  {}  {}", r.column, r.source);
        if !r.said.is_empty() {
            line.push_str(&format!(" (says {})", r.said));
        }
        if !r.args.is_empty() {
            line.push_str(&format!(" args {}", r.args));
        }
        if r.error.is_empty() {
            line.push_str(&format!(" [{}]", r.build));
        } else {
            line.push_str(&format!(" — not ready: {}", r.error));
        }
        let _ = writeln!(out, "{line}");
    }
}

/// One matrix cell as a few characters: glyph, `2/3` when the slot's cells disagree, ⚠, ⚡ (a
/// kernel warning), notes.
fn slot_text(c: &model::MatrixCell) -> String {
    if c.outcome.is_none() {
        return "·".into();
    }
    let mut s = c.glyph.to_string();
    if let Some((_, share)) = c.word.rsplit_once(' ') {
        s.push_str(share);
    }
    if c.topology_warning {
        s.push_str(model::TOPOLOGY_MARK);
    }
    if c.kernel_warning {
        s.push_str(model::KERNEL_WARNING_MARK);
    }
    if !c.notes.is_empty() {
        let notes: Vec<String> = c.notes.iter().map(usize::to_string).collect();
        s.push_str(&format!("[{}]", notes.join(",")));
    }
    s
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn pad(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(width(s))))
}

fn compat(m: &CompatMatrix, out: &mut String) {
    if m.rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nCompatibility (✓ pass ✗ fail ⊘ unsupported ◷ timeout ☠ panic ⚠ infra-error; \
         ✓{}: not the topology asked for; [n]: evidence)",
        model::TOPOLOGY_MARK
    );
    let heads: Vec<String> = m
        .rows
        .iter()
        .map(|r| format!("{} {} [{}]", r.kernel, r.topology, r.accel))
        .collect();
    let w0 = heads.iter().map(|h| width(h)).max().unwrap_or(0) + 2;
    let texts: Vec<Vec<String>> = m
        .rows
        .iter()
        .map(|r| r.cells.iter().map(slot_text).collect())
        .collect();
    let mut widths: Vec<usize> = m
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            texts
                .iter()
                .map(|row| row.get(i).map_or(0, |t| width(t)))
                .max()
                .unwrap_or(0)
                .max(width(&c.filesystem))
                + 1
        })
        .collect();
    // A group's name spans its columns: widen its last column when the name is longer.
    let mut group_line = " ".repeat(w0);
    let mut first = 0;
    for g in &m.groups {
        let cols = first..first + g.span;
        let span: usize = widths[cols.clone()].iter().sum();
        if let Some(last) = widths.get_mut(cols.end.saturating_sub(1)) {
            *last += (width(&g.name) + 1).saturating_sub(span);
        }
        group_line.push_str(&pad(&g.name, span.max(width(&g.name) + 1)));
        first = cols.end;
    }
    let _ = writeln!(out, "{}", group_line.trim_end());
    let line = |head: &str, cells: Vec<&str>| {
        let mut l = pad(head, w0);
        for (text, w) in cells.into_iter().zip(&widths) {
            l.push_str(&pad(text, *w));
        }
        l.trim_end().to_string()
    };
    let fs: Vec<&str> = m.columns.iter().map(|c| c.filesystem.as_str()).collect();
    let _ = writeln!(out, "{}", line("", fs));
    for (head, row) in heads.iter().zip(&texts) {
        let _ = writeln!(
            out,
            "{}",
            line(head, row.iter().map(String::as_str).collect())
        );
    }
}

fn counts(run: &RunRecord, m: &ReportModel, out: &mut String) {
    let line: Vec<String> = m
        .counts
        .iter()
        .filter(|c| c.count > 0)
        .map(|c| format!("{} {} {}", c.glyph, c.count, c.outcome))
        .collect();
    // A guest serves the boots of several filesystems: say how many machines really started.
    let started = match run.booted() {
        n if n < run.boots.len() => format!(" ({n} started)"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "\n{} cells in {} boots{started}: {}  (accelerator {})",
        run.cells.len(),
        run.boots.len(),
        line.join(", "),
        m.run.accels
    );
    let checked = run.cells.iter().filter(|c| c.expected.is_some()).count();
    let broken: Vec<&CellRecord> = run
        .cells
        .iter()
        .filter(|c| c.expected.as_ref().is_some_and(|x| !x.met))
        .collect();
    if checked > 0 {
        let _ = writeln!(
            out,
            "{} of {checked} known answers held",
            checked - broken.len()
        );
    }
    for c in broken.iter().take(BROKEN) {
        if let Some(x) = &c.expected {
            let _ = writeln!(
                out,
                "  ✗ {}: {}{}, expected {}",
                c.key,
                c.outcome,
                c.evidence
                    .as_ref()
                    .map_or_else(String::new, |e| format!(" ({e})")),
                x.expectation.describe()
            );
        }
    }
    if broken.len() > BROKEN {
        let _ = writeln!(out, "  … {} more in report.md", broken.len() - BROKEN);
    }
}

fn evidence(notes: &[Footnote], out: &mut String) {
    if notes.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nEvidence");
    for f in notes.iter().take(NOTES) {
        let _ = writeln!(
            out,
            "{:>4} {} {}  {}",
            format!("[{}]", f.n),
            f.glyph,
            f.outcome,
            model::one_line(&f.evidence, 160)
        );
        let more = if f.more > 0 {
            format!("; and {} more boots", f.more)
        } else {
            String::new()
        };
        let _ = writeln!(out, "       {}{more}", f.cells.join("; "));
    }
    if notes.len() > NOTES {
        let _ = writeln!(out, "  … {} more notes in report.md", notes.len() - NOTES);
    }
}

/// Median per-container start latency of a passing mount cell, µs.
fn start_latency(c: &CellRecord) -> Option<f64> {
    if c.outcome != Outcome::Pass {
        return None;
    }
    let samples: Vec<f64> = match c.mounts() {
        Some(d) if !d.latency_us.is_empty() => d.latency_us.iter().map(|v| *v as f64).collect(),
        _ => c.metrics.get("start_latency_us")?.samples.clone(),
    };
    protocol::Summary::of(&samples).map(|s| s.p50)
}

fn fmt_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

/// The largest ratios between strategies on the same target, filesystem and shape (L, C, J, P):
/// where the choice of strategy matters most.
fn differences(run: &RunRecord, out: &mut String) {
    type Shape = (String, String, u32, u32, u32, u32);
    let mut groups: BTreeMap<Shape, Vec<(MountStrategy, f64, &'static str)>> = BTreeMap::new();
    for c in &run.cells {
        let (Scenario::Mounts(m), Some(lat)) = (&c.scenario, start_latency(c)) else {
            continue;
        };
        groups
            .entry((
                c.key.target.to_string(),
                c.key.filesystem.to_string(),
                m.layers,
                m.containers,
                m.concurrency,
                m.passes,
            ))
            .or_default()
            .push((m.strategy.clone(), lat, c.provenance.accel.as_str()));
    }
    let mut ranked: Vec<(f64, String)> = groups
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .filter_map(|((target, fs, l, c, j, p), mut v)| {
            // Built-ins in their order, then runtimes by name.
            v.sort_by(|a, b| a.0.cmp(&b.0));
            let max = v.iter().map(|x| x.1).fold(f64::MIN, f64::max);
            let min = v.iter().map(|x| x.1).fold(f64::MAX, f64::min);
            (min > 0.0).then(|| {
                let parts: Vec<String> = v
                    .iter()
                    .map(|(s, lat, _)| format!("{s} {}", fmt_us(*lat)))
                    .collect();
                let accel = v.first().map_or("", |x| x.2);
                (
                    max / min,
                    format!(
                        "{:>6.1}×  {target} {fs} L{l} C{c} J{j} P{p}: {} [{accel}]",
                        max / min,
                        parts.join(", ")
                    ),
                )
            })
        })
        .collect();
    if ranked.is_empty() {
        return;
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let _ = writeln!(
        out,
        "\nLargest differences between strategies (median start latency per container)"
    );
    for (_, line) in ranked.iter().take(DIFFERENCES) {
        let _ = writeln!(out, "{line}");
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
            "{:<28} {:>14} {:>4} {:>4} {:>3} {:>7}/{:<7} {:>9.0} {:>9.0} {:>9.0} {:>9.1} {:>6.1}% {:>7}",
            c.key.boot().to_string(),
            m.scenario.strategy.to_string(),
            m.scenario.layers,
            m.scenario.containers,
            m.scenario.concurrency,
            m.mount_ops.ops,
            m.mount_ops
                .expected_ops
                .map_or_else(|| "-".to_string(), |e| e.to_string()),
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
        "{:<28} {:>14} {:>4} {:>4} {:>3} {:>15} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}",
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
            let _ = writeln!(out, "\nLock benchmark (†: {})", crate::results::SERIALIZED);
            let _ = writeln!(
                out,
                "{:<36} {:<24} {:>12} {:>4} {:>14} {:>8} {:>10}",
                "cell", "workload", "pinning", "N", "ops/s", "scal", "reader p99"
            );
            header = true;
        }
        for p in &l.points {
            let mark = if c.caveats.point_unsupported(p) {
                " ⊘ unsupported"
            } else if c.caveats.point_serialized(p) {
                " †"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{:<36} {:<24} {:>12} {:>4} {:>14.0} {:>8} {:>10}{mark}",
                c.key.boot().to_string(),
                if p.false_sharing {
                    format!("{}+false-sharing", p.workload)
                } else {
                    p.workload.clone()
                },
                p.pinning.as_str(),
                p.threads,
                p.ops_per_sec,
                p.scalability.map_or("-".into(), |s| format!("{s:.2}")),
                p.reader_p99_ns
                    .map_or("-".into(), |r| format!("{:.0} ns", r)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_a_few_characters() {
        let c = model::MatrixCell {
            outcome: Some("fail"),
            symbol: "❌",
            glyph: "✗",
            word: "fail 1/3".into(),
            topology_warning: true,
            kernel_warning: true,
            notes: vec![3, 6],
            title: String::new(),
        };
        assert_eq!(slot_text(&c), "✗1/3⚠⚡[3,6]");
        let none = model::MatrixCell {
            outcome: None,
            symbol: "",
            glyph: "",
            word: "—".into(),
            topology_warning: false,
            kernel_warning: false,
            notes: vec![],
            title: String::new(),
        };
        assert_eq!(slot_text(&none), "·");
    }
}
