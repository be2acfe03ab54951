//! `mmx compare BASELINE CANDIDATE`: what got better, worse or broke, cell by cell and metric by
//! metric, and whether the gate holds.
//!
//! - Cells are matched by their typed key (`cell::CellKey`). A baseline `pass` that becomes `fail`, `timeout`, `panic` or
//!   `infra-error` fails the gate; `unsupported` ⇄ `pass` is reported (a kernel gained or lost a
//!   feature, with the probe evidence), never failed; other changes (a failure fixed,
//!   `fail` → `timeout`) are reported.
//! - Metrics are compared by the ratio of medians against a per-metric threshold
//!   ([`Thresholds`]), in the direction `Metric.better` gives. A change beyond its threshold
//!   counts only when a two-sided Mann–Whitney U test on all samples says the two sample sets
//!   differ (p < α, 0.05 by default); otherwise it is reported as not significant. With one sample
//!   a side no change is ever significant: record repeats to gate on speed.
//! - Timings under different accelerators (tcg vs kvm) are never compared: reported as
//!   incomparable.
//! - Timings and rates measured with more than one thread on serialized vCPUs (single-threaded
//!   TCG, `CellRecord::caveats`) are not contention measurements: a change in them is reported
//!   as `serialized`, never gated, unless `--gate-serialized`.
//! - Baseline cells missing from the candidate, and new cells, are listed.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use anyhow::Context;
use minijinja::Value;
use protocol::{Better, Metric, Outcome, Summary};
use serde::Serialize;

use crate::cell::{natural_cmp, CellKey};
use crate::report::model::{evidence_text, fmt_num};
use crate::results::{run_json_path, CellRecord, RunRecord};

mod stats;
mod thresholds;

pub use stats::MannWhitney;
pub use thresholds::{Thresholds, DEFAULT_ALPHA, DEFAULT_THRESHOLD};

/// `mmx compare` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Baseline run: a run.json file or a run directory holding one.
    pub baseline: PathBuf,
    /// Candidate run: a run.json file or a run directory holding one.
    pub candidate: PathBuf,
    /// Per-metric threshold on the change of the median, `METRIC=PCT` (repeatable). METRIC
    /// matches the whole metric name, else the longest prefix, else the longest substring;
    /// `default=PCT` or a bare `PCT` sets the rest (10% unless given).
    #[arg(long = "threshold", value_name = "METRIC=PCT")]
    pub thresholds: Vec<String>,
    /// Significance level of the Mann–Whitney U test a change must pass to count.
    #[arg(long, default_value_t = DEFAULT_ALPHA)]
    pub alpha: f64,
    /// Also write the markdown report to this file (e.g. for a PR comment).
    #[arg(long, value_name = "PATH")]
    pub markdown_out: Option<PathBuf>,
    /// Print the comparison as JSON instead of markdown.
    #[arg(long)]
    pub json: bool,
    /// Fail the gate when baseline cells are missing from the candidate.
    #[arg(long)]
    pub fail_on_missing: bool,
    /// Also gate on timings measured with more than one thread on serialized vCPUs
    /// (single-threaded TCG): by default they are reported, not gated.
    #[arg(long)]
    pub gate_serialized: bool,
}

/// Which run a comparison side came from.
#[derive(Debug, Clone, Serialize)]
pub struct RunRef {
    pub run_id: String,
    pub started_at: String,
    pub mmx_version: String,
    pub cells: usize,
    pub accels: Vec<&'static str>,
}

impl RunRef {
    fn of(run: &RunRecord) -> RunRef {
        let accels: BTreeSet<&'static str> = run
            .cells
            .iter()
            .map(|c| c.provenance.accel.as_str())
            .collect();
        RunRef {
            run_id: run.run_id.clone(),
            started_at: run.started_at.clone(),
            mmx_version: run.mmx_version.clone(),
            cells: run.cells.len(),
            accels: accels.into_iter().collect(),
        }
    }
}

/// What an outcome change means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlipKind {
    /// `pass` → anything but `pass` or `unsupported`: fails the gate.
    Broke,
    /// Anything not passing → `pass`.
    Fixed,
    /// `unsupported` → `pass`: the kernel gained the feature (`Fixed` covers the others).
    GainedSupport,
    /// `pass` → `unsupported`: the kernel (or filesystem) lost a feature. Reported, not gated:
    /// the probe evidence says why, and that is an answer, not a breakage.
    LostSupport,
    /// Between two non-passing outcomes.
    Changed,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutcomeChange {
    pub cell: String,
    pub from: Outcome,
    pub to: Outcome,
    pub kind: FlipKind,
    pub gate: bool,
    /// The candidate's evidence (why it is no longer passing).
    pub evidence: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Worse beyond the threshold and significant: fails the gate.
    Regression,
    /// Better beyond the threshold and significant.
    Improvement,
    /// Beyond the threshold, but the samples do not show a difference.
    NotSignificant,
    /// Within the threshold.
    Unchanged,
    /// `better = neither`: changes beyond the threshold are reported, never judged.
    Informational,
    /// Not comparable: different accelerator or unit, no samples, zero baseline.
    Incomparable,
    /// Beyond its threshold, but measured with more than one thread on serialized vCPUs: not a
    /// contention measurement, so not gated (`--gate-serialized` gates it).
    Serialized,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricChange {
    pub cell: String,
    pub metric: String,
    pub unit: &'static str,
    pub better: Better,
    pub base: Option<Summary>,
    pub cand: Option<Summary>,
    /// Candidate median / baseline median.
    pub ratio: Option<f64>,
    pub threshold: f64,
    pub p_value: Option<f64>,
    pub verdict: Verdict,
    pub gate: bool,
    /// Why it was incomparable, or other context.
    pub note: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub cells_compared: usize,
    pub metrics_compared: usize,
    pub regressions: usize,
    pub improvements: usize,
    pub not_significant: usize,
    pub unchanged: usize,
    pub informational: usize,
    pub incomparable: usize,
    pub serialized: usize,
    pub broke: usize,
    pub other_flips: usize,
}

/// The result of comparing two runs.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub baseline: RunRef,
    pub candidate: RunRef,
    pub thresholds: Vec<String>,
    pub alpha: f64,
    pub outcome_changes: Vec<OutcomeChange>,
    /// Every metric present on either side of a matched cell.
    pub metric_changes: Vec<MetricChange>,
    /// Baseline cells the candidate does not have.
    pub missing: Vec<String>,
    /// Candidate cells the baseline does not have.
    pub new: Vec<String>,
    pub counts: Counts,
    /// Run-level remarks (different accelerators, duplicate ids).
    pub notes: Vec<String>,
}

impl Comparison {
    /// Whether the gate fails: a `pass` broke (became fail, timeout, panic or infra-error), or a metric regressed beyond its threshold with
    /// significant samples.
    pub fn gate_failed(&self) -> bool {
        self.outcome_changes.iter().any(|c| c.gate) || self.metric_changes.iter().any(|m| m.gate)
    }

    /// The comparison as markdown (terminal, PR comment), from `reports/templates/compare.md.j2`.
    pub fn render_markdown(&self) -> anyhow::Result<String> {
        let env = crate::report::environment()?;
        crate::report::render_template(
            &env,
            "compare.md.j2",
            minijinja::context! {
                c => Value::from_serialize(self),
                v => Value::from_serialize(view(self)),
            },
        )
    }
}

fn kind_of(from: Outcome, to: Outcome) -> FlipKind {
    match (from, to) {
        (Outcome::Pass, Outcome::Unsupported) => FlipKind::LostSupport,
        (Outcome::Pass, _) => FlipKind::Broke,
        (Outcome::Unsupported, Outcome::Pass) => FlipKind::GainedSupport,
        (_, Outcome::Pass) => FlipKind::Fixed,
        _ => FlipKind::Changed,
    }
}

fn index<'a>(
    run: &'a RunRecord,
    notes: &mut Vec<String>,
    side: &str,
) -> HashMap<&'a CellKey, usize> {
    let mut map = HashMap::with_capacity(run.cells.len());
    let mut dups = 0;
    for (i, c) in run.cells.iter().enumerate() {
        if map.contains_key(&c.key) {
            dups += 1;
        } else {
            map.insert(&c.key, i);
        }
    }
    if dups > 0 {
        notes.push(format!(
            "{side} has {dups} duplicate cell ids; the first of each was compared"
        ));
    }
    map
}

/// Compare two runs cell by cell. Deterministic: same inputs, same result.
pub fn compare(base: &RunRecord, cand: &RunRecord, th: &Thresholds) -> Comparison {
    let mut notes = Vec::new();
    let base_ix = index(base, &mut notes, "the baseline");
    let cand_ix = index(cand, &mut notes, "the candidate");
    let mut mw = MannWhitney::default();
    let mut outcome_changes = Vec::new();
    let mut metric_changes = Vec::new();
    let mut missing = Vec::new();
    let mut counts = Counts::default();
    let mut seen = BTreeSet::new();
    for b in &base.cells {
        if !seen.insert(&b.key) {
            continue;
        }
        let Some(&ci) = cand_ix.get(&b.key) else {
            missing.push(b.key.to_string());
            continue;
        };
        let c = &cand.cells[ci];
        counts.cells_compared += 1;
        if b.outcome != c.outcome {
            let kind = kind_of(b.outcome, c.outcome);
            let gate = kind == FlipKind::Broke;
            if gate {
                counts.broke += 1;
            } else {
                counts.other_flips += 1;
            }
            outcome_changes.push(OutcomeChange {
                cell: b.key.to_string(),
                from: b.outcome,
                to: c.outcome,
                kind,
                gate,
                evidence: if c.outcome == Outcome::Pass {
                    String::new()
                } else {
                    evidence_text(c.evidence.as_ref())
                },
            });
        }
        compare_metrics(b, c, th, &mut mw, &mut metric_changes);
    }
    for m in &metric_changes {
        counts.metrics_compared += 1;
        match m.verdict {
            Verdict::Regression => counts.regressions += 1,
            Verdict::Improvement => counts.improvements += 1,
            Verdict::NotSignificant => counts.not_significant += 1,
            Verdict::Unchanged => counts.unchanged += 1,
            Verdict::Informational => counts.informational += 1,
            Verdict::Incomparable => counts.incomparable += 1,
            Verdict::Serialized => counts.serialized += 1,
        }
    }
    let mut new: Vec<String> = cand
        .cells
        .iter()
        .filter(|c| !base_ix.contains_key(&c.key))
        .map(|c| c.key.to_string())
        .collect();
    new.dedup();
    let (ba, ca) = (RunRef::of(base), RunRef::of(cand));
    if ba.accels != ca.accels {
        notes.push(format!(
            "accelerators differ: baseline {}, candidate {}; timings of cells whose accelerator changed are not compared",
            ba.accels.join("+"),
            ca.accels.join("+")
        ));
    }
    if base.host.cpu_model != cand.host.cpu_model {
        notes.push(format!(
            "host CPUs differ: baseline `{}`, candidate `{}`",
            base.host.cpu_model, cand.host.cpu_model
        ));
    }
    Comparison {
        baseline: ba,
        candidate: ca,
        thresholds: th.describe(),
        alpha: th.alpha,
        outcome_changes,
        metric_changes,
        missing,
        new,
        counts,
        notes,
    }
}

fn compare_metrics(
    b: &CellRecord,
    c: &CellRecord,
    th: &Thresholds,
    mw: &mut MannWhitney,
    out: &mut Vec<MetricChange>,
) {
    let names: BTreeSet<&String> = b.metrics.keys().chain(c.metrics.keys()).collect();
    for name in names {
        let (bm, cm) = (b.metrics.get(name), c.metrics.get(name));
        let any: Option<&Metric> = bm.or(cm);
        let Some(any) = any else { continue };
        let threshold = th.for_metric(name);
        let mut mc = MetricChange {
            cell: b.key.to_string(),
            metric: name.clone(),
            unit: any.unit.symbol(),
            better: any.better,
            base: bm.and_then(Metric::summary),
            cand: cm.and_then(Metric::summary),
            ratio: None,
            threshold,
            p_value: None,
            verdict: Verdict::Incomparable,
            gate: false,
            note: String::new(),
        };
        let (Some(bm), Some(cm)) = (bm, cm) else {
            mc.note = if bm.is_none() {
                "new in the candidate".into()
            } else {
                "missing from the candidate".into()
            };
            out.push(mc);
            continue;
        };
        let (Some(bs), Some(cs)) = (mc.base, mc.cand) else {
            mc.note = "no samples".into();
            out.push(mc);
            continue;
        };
        if b.provenance.accel != c.provenance.accel {
            mc.note = format!(
                "accelerator {} → {}",
                b.provenance.accel.as_str(),
                c.provenance.accel.as_str()
            );
            out.push(mc);
            continue;
        }
        if bm.unit != cm.unit {
            mc.note = format!("unit {} → {}", bm.unit.symbol(), cm.unit.symbol());
            out.push(mc);
            continue;
        }
        let ratio = if bs.p50 == cs.p50 {
            1.0
        } else if bs.p50 == 0.0 {
            mc.note = "baseline median is 0".into();
            out.push(mc);
            continue;
        } else {
            cs.p50 / bs.p50
        };
        mc.ratio = Some(ratio);
        let change = ratio - 1.0;
        let p = mw.p_value(&bm.samples, &cm.samples);
        mc.p_value = p;
        let significant = p.is_some_and(|p| p < th.alpha);
        let (worse, better) = match bm.better {
            Better::Lower => (change > threshold, change < -threshold),
            Better::Higher => (change < -threshold, change > threshold),
            Better::Neither => (false, false),
        };
        mc.verdict = if bm.better == Better::Neither {
            if change.abs() > threshold {
                Verdict::Informational
            } else {
                Verdict::Unchanged
            }
        } else if (worse || better) && !significant {
            Verdict::NotSignificant
        } else if worse {
            Verdict::Regression
        } else if better {
            Verdict::Improvement
        } else {
            Verdict::Unchanged
        };
        let serialized = [b, c]
            .iter()
            .any(|x| x.caveats.serialized_metrics.contains(name));
        let judged = matches!(
            mc.verdict,
            Verdict::Regression | Verdict::Improvement | Verdict::NotSignificant
        );
        if serialized && judged && !th.gate_serialized {
            mc.note = format!(
                "would be {}; {}",
                match mc.verdict {
                    Verdict::Regression => "a regression",
                    Verdict::Improvement => "an improvement",
                    _ => "beyond threshold, not significant",
                },
                crate::results::SERIALIZED
            );
            mc.verdict = Verdict::Serialized;
        }
        mc.gate = mc.verdict == Verdict::Regression;
        out.push(mc);
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering: pre-formatted rows for compare.md.j2.
// ---------------------------------------------------------------------------------------------

/// Rows per list in the markdown; the JSON output has everything.
pub const MD_LIST_ROWS: usize = 100;

#[derive(Debug, Serialize)]
struct View {
    gate_failed: bool,
    limit: usize,
    broke: Vec<FlipRow>,
    flips: Vec<FlipRow>,
    regressions: Vec<MetricRow>,
    improvements: Vec<MetricRow>,
    not_significant: Vec<MetricRow>,
    informational: Vec<MetricRow>,
    incomparable: Vec<MetricRow>,
    serialized: Vec<MetricRow>,
}

#[derive(Debug, Serialize)]
struct FlipRow {
    cell: String,
    from: String,
    to: String,
    kind: FlipKind,
    evidence: String,
}

#[derive(Debug, Serialize)]
struct MetricRow {
    cell: String,
    metric: String,
    unit: &'static str,
    base: String,
    cand: String,
    change: String,
    threshold: String,
    p: String,
    note: String,
}

fn summary_text(s: &Option<Summary>) -> String {
    match s {
        Some(s) => format!("{} ±{} ({})", fmt_num(s.p50), fmt_num(s.mad), s.n),
        None => "–".into(),
    }
}

fn metric_row(m: &MetricChange) -> MetricRow {
    MetricRow {
        cell: m.cell.clone(),
        metric: m.metric.clone(),
        unit: m.unit,
        base: summary_text(&m.base),
        cand: summary_text(&m.cand),
        change: m
            .ratio
            .map_or("–".into(), |r| format!("{:+.1}%", (r - 1.0) * 100.0)),
        threshold: format!("{}%", m.threshold * 100.0),
        p: m.p_value.map_or("–".into(), |p| {
            if p < 0.001 {
                "<0.001".into()
            } else {
                format!("{p:.3}")
            }
        }),
        note: m.note.clone(),
    }
}

fn view(c: &Comparison) -> View {
    let flip = |o: &OutcomeChange| FlipRow {
        cell: o.cell.clone(),
        from: format!("{} {}", o.from.symbol(), o.from),
        to: format!("{} {}", o.to.symbol(), o.to),
        kind: o.kind,
        evidence: o.evidence.clone(),
    };
    let by = |v: Verdict| {
        let mut rows: Vec<&MetricChange> =
            c.metric_changes.iter().filter(|m| m.verdict == v).collect();
        // Largest relative change first: what a reader should look at.
        rows.sort_by(|a, b| {
            let d = |m: &MetricChange| m.ratio.map_or(0.0, |r| (r.ln()).abs());
            d(b).total_cmp(&d(a))
                .then_with(|| natural_cmp(&a.cell, &b.cell))
        });
        rows.into_iter().map(metric_row).collect::<Vec<_>>()
    };
    View {
        gate_failed: c.gate_failed(),
        limit: MD_LIST_ROWS,
        broke: c
            .outcome_changes
            .iter()
            .filter(|o| o.gate)
            .map(flip)
            .collect(),
        flips: c
            .outcome_changes
            .iter()
            .filter(|o| !o.gate)
            .map(flip)
            .collect(),
        regressions: by(Verdict::Regression),
        improvements: by(Verdict::Improvement),
        not_significant: by(Verdict::NotSignificant),
        informational: by(Verdict::Informational),
        incomparable: by(Verdict::Incomparable),
        serialized: by(Verdict::Serialized),
    }
}

// ---------------------------------------------------------------------------------------------
// CLI.
// ---------------------------------------------------------------------------------------------

/// What `mmx compare` answers: the comparison for stdout, and whether the gate passed.
#[derive(Debug, Clone)]
pub struct Compared {
    /// Markdown, or JSON with `--json`; ends with a newline.
    pub output: String,
    pub passed: bool,
}

/// `mmx compare`: the markdown (or JSON) to print, `--markdown-out` written, and whether the
/// gate passed. Errors (unreadable runs, bad thresholds) are usage errors for the caller to map.
pub fn compare_cmd(args: CompareArgs) -> anyhow::Result<Compared> {
    let th = Thresholds::parse(&args.thresholds)?
        .with_alpha(args.alpha)?
        .with_gate_serialized(args.gate_serialized);
    let base = RunRecord::read(&run_json_path(&args.baseline)).context("baseline")?;
    let cand = RunRecord::read(&run_json_path(&args.candidate)).context("candidate")?;
    let cmp = compare(&base, &cand, &th);
    let md = cmp.render_markdown()?;
    if let Some(path) = &args.markdown_out {
        std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
    }
    let output = if args.json {
        let mut json = serde_json::to_string_pretty(&cmp).context("encoding the comparison")?;
        json.push('\n');
        json
    } else {
        md
    };
    let missing_fails = args.fail_on_missing && !cmp.missing.is_empty();
    Ok(Compared {
        output,
        passed: !cmp.gate_failed() && !missing_fails,
    })
}
