//! `mmx compare` on constructed baselines: a regression beyond its threshold fails the gate,
//! noise within it does not, a change without significant samples is only reported, `pass` →
//! `fail` fails, `unsupported` ⇄ `pass` is reported, missing and new cells are listed.

#[path = "fixtures/builder.rs"]
mod builder;

use harness::compare::{compare, compare_cmd, CompareArgs, FlipKind, Thresholds, Verdict};
use harness::results::{Accel, RunRecord};
use protocol::{Evidence, Outcome, ScenarioKey};

const CELL: &str = "debian-6.12/1s2c1t/ext4/common-parent-L10-C5-P2-J2";
const LATENCY: &str = "start_latency_us";

fn base() -> RunRecord {
    builder::mixed_run()
}

fn cell_mut<'a>(run: &'a mut RunRecord, id: &str) -> &'a mut harness::results::CellRecord {
    run.cells
        .iter_mut()
        .find(|c| c.key.to_string() == id)
        .expect("cell")
}

fn change<'a>(
    cmp: &'a harness::compare::Comparison,
    cell: &str,
    metric: &str,
) -> &'a harness::compare::MetricChange {
    cmp.metric_changes
        .iter()
        .find(|m| m.cell == cell && m.metric == metric)
        .expect("metric compared")
}

#[test]
fn identical_runs_pass_with_nothing_to_say() {
    let b = base();
    let cmp = compare(&b, &b, &Thresholds::default());
    assert!(!cmp.gate_failed());
    assert!(cmp.outcome_changes.is_empty() && cmp.missing.is_empty() && cmp.new.is_empty());
    assert_eq!(cmp.counts.regressions, 0);
    assert_eq!(cmp.counts.cells_compared, b.cells.len());
    let md = cmp.render_markdown().unwrap();
    assert!(md.contains("gate passed"), "{md}");
}

#[test]
fn regression_beyond_threshold_fails_the_gate() {
    let b = base();
    let mut c = b.clone();
    builder::scale_metric(&mut c, CELL, LATENCY, 1.5);
    let cmp = compare(&b, &c, &Thresholds::default());
    let m = change(&cmp, CELL, LATENCY);
    assert_eq!(m.verdict, Verdict::Regression, "{m:?}");
    assert!(m.p_value.unwrap() < 0.001, "{m:?}");
    assert!((m.ratio.unwrap() - 1.5).abs() < 1e-9);
    assert!(cmp.gate_failed());
    assert_eq!(cmp.counts.regressions, 1);
    let md = cmp.render_markdown().unwrap();
    assert!(md.contains("gate failed") && md.contains("+50.0%"), "{md}");
    // A generous threshold for latency lets the same change through.
    let th = Thresholds::parse(&["latency=60%".into()]).unwrap();
    assert!(!compare(&b, &c, &th).gate_failed());
}

#[test]
fn noise_within_threshold_passes() {
    let b = base();
    let mut c = b.clone();
    builder::scale_metric(&mut c, CELL, LATENCY, 1.04);
    builder::scale_metric(&mut c, CELL, "wall_us", 0.97);
    let cmp = compare(&b, &c, &Thresholds::default());
    assert_eq!(change(&cmp, CELL, LATENCY).verdict, Verdict::Unchanged);
    assert_eq!(change(&cmp, CELL, "wall_us").verdict, Verdict::Unchanged);
    assert!(!cmp.gate_failed());
}

#[test]
fn improvement_is_reported_not_failed() {
    let b = base();
    let mut c = b.clone();
    builder::scale_metric(&mut c, CELL, LATENCY, 0.5);
    let cmp = compare(&b, &c, &Thresholds::default());
    assert_eq!(change(&cmp, CELL, LATENCY).verdict, Verdict::Improvement);
    assert!(!cmp.gate_failed());
    assert!(cmp.render_markdown().unwrap().contains("Improvements"));
}

#[test]
fn a_change_the_samples_do_not_support_is_not_significant() {
    // wall_us has two samples a side: no Mann-Whitney p-value can go below 0.05.
    let b = base();
    let mut c = b.clone();
    builder::scale_metric(&mut c, CELL, "wall_us", 2.0);
    let cmp = compare(&b, &c, &Thresholds::default());
    let m = change(&cmp, CELL, "wall_us");
    assert_eq!(m.verdict, Verdict::NotSignificant, "{m:?}");
    assert!(!cmp.gate_failed());
    // Widely spread, interleaved samples whose medians are 14% apart: not a shift.
    let (mut b, mut c) = (b.clone(), b.clone());
    cell_mut(&mut b, CELL)
        .metrics
        .get_mut(LATENCY)
        .unwrap()
        .samples = vec![50.0, 100.0, 150.0, 200.0, 250.0, 300.0];
    cell_mut(&mut c, CELL)
        .metrics
        .get_mut(LATENCY)
        .unwrap()
        .samples = vec![60.0, 120.0, 170.0, 230.0, 260.0, 310.0];
    let cmp = compare(&b, &c, &Thresholds::default());
    let m = change(&cmp, CELL, LATENCY);
    assert!(m.ratio.unwrap() > 1.1, "{m:?}");
    assert_eq!(m.verdict, Verdict::NotSignificant, "{m:?}");
    assert!(!cmp.gate_failed());
}

#[test]
fn informational_metrics_are_never_judged() {
    let b = base();
    let mut c = b.clone();
    builder::scale_metric(&mut c, CELL, "mount_ops", 3.0);
    let cmp = compare(&b, &c, &Thresholds::default());
    assert_eq!(
        change(&cmp, CELL, "mount_ops").verdict,
        Verdict::Informational
    );
    assert!(!cmp.gate_failed());
}

#[test]
fn pass_to_fail_fails_the_gate() {
    let b = base();
    let mut c = b.clone();
    let cell = cell_mut(&mut c, CELL);
    cell.outcome = Outcome::Fail;
    cell.evidence =
        Some(Evidence::new("ids through the merged view").with_detail("saw 0:0, want 1000:1000"));
    let cmp = compare(&b, &c, &Thresholds::default());
    assert!(cmp.gate_failed());
    let flip = &cmp.outcome_changes[0];
    assert_eq!((flip.kind, flip.gate), (FlipKind::Broke, true));
    assert!(flip.evidence.contains("saw 0:0"), "{flip:?}");
    let md = cmp.render_markdown().unwrap();
    assert!(md.contains("Broke") && md.contains(CELL), "{md}");
    // Any non-passing outcome counts, infra-error included (the gate cannot vouch for it).
    cell_mut(&mut c, CELL).outcome = Outcome::InfraError;
    assert!(compare(&b, &c, &Thresholds::default()).gate_failed());
}

#[test]
fn unsupported_and_pass_flips_are_reported_not_failed() {
    let b = base();
    let unsupported = "debian-6.12/1s2c1t/ext4/fsconfig-fd-L10-C5-P2-J2";
    let found = b.cells.iter().find(|c| c.key.to_string() == unsupported);
    assert_eq!(found.unwrap().outcome, Outcome::Unsupported);
    let mut c = b.clone();
    cell_mut(&mut c, unsupported).outcome = Outcome::Pass;
    cell_mut(&mut c, CELL).outcome = Outcome::Unsupported;
    let cmp = compare(&b, &c, &Thresholds::default());
    assert!(!cmp.gate_failed(), "{:?}", cmp.outcome_changes);
    let kinds: Vec<_> = cmp
        .outcome_changes
        .iter()
        .map(|o| (o.cell.as_str(), o.kind))
        .collect();
    assert!(
        kinds.contains(&(unsupported, FlipKind::GainedSupport)),
        "{kinds:?}"
    );
    assert!(kinds.contains(&(CELL, FlipKind::LostSupport)), "{kinds:?}");
    assert!(cmp
        .render_markdown()
        .unwrap()
        .contains("Other outcome changes"));
    // A failure fixed is reported too.
    let failing = "debian-6.12/1s2c1t/ext4/per-layer-L50-C5-P2-J2";
    let mut c = b.clone();
    cell_mut(&mut c, failing).outcome = Outcome::Pass;
    let cmp = compare(&b, &c, &Thresholds::default());
    assert_eq!(cmp.outcome_changes[0].kind, FlipKind::Fixed);
    assert!(!cmp.gate_failed());
}

#[test]
fn missing_and_new_cells_are_listed() {
    let b = base();
    let mut c = b.clone();
    c.cells.retain(|x| x.key.to_string() != CELL);
    let mut extra = c.cells[0].clone();
    if let ScenarioKey::Mounts(m) = &mut extra.key.scenario {
        m.layers = 100;
    }
    c.cells.push(extra);
    let cmp = compare(&b, &c, &Thresholds::default());
    assert_eq!(cmp.missing, vec![CELL.to_string()]);
    assert_eq!(cmp.new.len(), 1);
    assert!(
        !cmp.gate_failed(),
        "missing cells are reported, not failed, by default"
    );
    let md = cmp.render_markdown().unwrap();
    assert!(
        md.contains("Missing from the candidate (1)") && md.contains(CELL),
        "{md}"
    );
}

#[test]
fn timings_under_another_accelerator_are_not_compared() {
    let b = base();
    let mut c = b.clone();
    builder::scale_metric(&mut c, CELL, LATENCY, 0.1);
    cell_mut(&mut c, CELL).provenance.accel = Accel::Kvm;
    let cmp = compare(&b, &c, &Thresholds::default());
    let m = change(&cmp, CELL, LATENCY);
    assert_eq!(m.verdict, Verdict::Incomparable);
    assert!(m.note.contains("tcg → kvm"), "{m:?}");
    assert!(cmp.notes.iter().any(|n| n.contains("accelerators differ")));
}

/// Lock points measured on vCPUs that took turns are not contention: a change in them is
/// reported, and gates only when asked.
#[test]
fn serialized_lock_numbers_gate_only_when_asked() {
    let fixture = base();
    let cell = fixture
        .cells
        .iter()
        .find(|c| !c.caveats.serialized_metrics.is_empty())
        .expect("a serialized lock-benchmark cell in the fixture");
    let id = cell.key.to_string();
    let metric = "tas@max:ops_per_s";
    assert!(cell.caveats.serialized_metrics.iter().any(|m| m == metric));
    assert!(
        !cell
            .caveats
            .serialized_metrics
            .iter()
            .any(|m| m.contains("@min")),
        "one thread is not contention"
    );
    // Enough samples for the rank test to see a change.
    let mut b = fixture.clone();
    cell_mut(&mut b, &id)
        .metrics
        .get_mut(metric)
        .unwrap()
        .samples = (0..10).map(|i| 1000.0 + f64::from(i)).collect();
    let mut c = b.clone();
    builder::scale_metric(&mut c, &id, metric, 0.4);
    let cmp = compare(&b, &c, &Thresholds::default());
    let m = change(&cmp, &id, metric);
    assert_eq!(m.verdict, Verdict::Serialized, "{m:?}");
    assert!(m.note.contains("would be a regression"), "{m:?}");
    assert!(!cmp.gate_failed());
    assert!(cmp
        .render_markdown()
        .unwrap()
        .contains("Not gated: vCPUs serialized"));
    let asked = Thresholds::default().with_gate_serialized(true);
    let cmp = compare(&b, &c, &asked);
    assert_eq!(change(&cmp, &id, metric).verdict, Verdict::Regression);
    assert!(cmp.gate_failed());
}

#[test]
fn comparison_is_deterministic() {
    let b = base();
    let mut c = b.clone();
    builder::scale_metric(&mut c, CELL, LATENCY, 1.2);
    let one = serde_json::to_string(&compare(&b, &c, &Thresholds::default())).unwrap();
    let two = serde_json::to_string(&compare(&b, &c, &Thresholds::default())).unwrap();
    assert_eq!(one, two);
}

#[test]
fn the_command_reads_files_and_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let b = base();
    let mut c = b.clone();
    builder::scale_metric(&mut c, CELL, LATENCY, 1.5);
    std::fs::create_dir(tmp.path().join("base")).unwrap();
    b.write(&tmp.path().join("base/run.json")).unwrap();
    c.write(&tmp.path().join("cand.json")).unwrap();
    let md_out = tmp.path().join("compare.md");
    let args = |th: Vec<String>| CompareArgs {
        baseline: tmp.path().join("base"),
        candidate: tmp.path().join("cand.json"),
        thresholds: th,
        alpha: 0.05,
        markdown_out: Some(md_out.clone()),
        json: false,
        fail_on_missing: false,
        gate_serialized: false,
    };
    assert!(!compare_cmd(args(Vec::new())).unwrap().passed, "gate fails");
    assert!(std::fs::read_to_string(&md_out)
        .unwrap()
        .contains("Regressions"));
    assert!(
        compare_cmd(args(vec!["start_latency=80%".into()]))
            .unwrap()
            .passed,
        "gate passes"
    );
    let e = compare_cmd(args(vec!["latency=lots".into()])).unwrap_err();
    assert!(e.to_string().contains("latency=lots"), "{e:#}");
    let mut bad = args(Vec::new());
    bad.candidate = tmp.path().join("nope.json");
    let e = compare_cmd(bad).unwrap_err();
    assert!(format!("{e:#}").contains("nope.json"), "{e:#}");
}

/// Two recorded `mmx run --backend local` runs (5 repeats each, back to back on one host):
/// the comparison of real data renders, is deterministic and its counts add up.
#[test]
fn recorded_runs_compare() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let a = RunRecord::read(&dir.join("real-local-host-6.18-repeats5-a.json")).unwrap();
    let b = RunRecord::read(&dir.join("real-local-host-6.18-repeats5-b.json")).unwrap();
    let cmp = compare(&a, &b, &Thresholds::default());
    let n = &cmp.counts;
    assert_eq!(n.cells_compared, a.cells.len());
    assert_eq!(
        n.metrics_compared,
        n.regressions
            + n.improvements
            + n.not_significant
            + n.unchanged
            + n.informational
            + n.incomparable
    );
    assert!(cmp
        .metric_changes
        .iter()
        .all(|m| m.base.is_some_and(|s| s.n == 5)));
    let again = compare(&a, &b, &Thresholds::default());
    assert_eq!(
        serde_json::to_string(&cmp).unwrap(),
        serde_json::to_string(&again).unwrap()
    );
    assert!(cmp.render_markdown().unwrap().contains("mmx compare"));
    assert!(!compare(&a, &a, &Thresholds::default()).gate_failed());
}

/// A runtime change that maps every layer again: the kernel's count per container grows. Every
/// container is a sample, so compare judges it even with one repeat; a built-in strategy's one
/// sample per repeat is reported, and its formula fails the cell first.
#[test]
fn a_runtime_that_mounts_more_per_container_fails_the_gate() {
    let rt = "debian-7.x/1s2c1t/ext4/runtime:containerd-2.1-L10-C5-P2-J2";
    let b = base();
    let mut c = b.clone();
    // 2·(1+2L) per container instead of 2·3: the per-layer patch at L=10.
    builder::scale_metric(&mut c, rt, protocol::MOUNT_OPS_PER_CONTAINER, 7.0);
    let cmp = compare(&b, &c, &Thresholds::default());
    let m = change(&cmp, rt, protocol::MOUNT_OPS_PER_CONTAINER);
    assert_eq!(m.verdict, Verdict::Regression, "{m:?}");
    assert!((m.ratio.unwrap() - 7.0).abs() < 1e-9);
    assert!(cmp.gate_failed());
    let md = cmp.render_markdown().unwrap();
    assert!(
        md.contains("mount_ops_per_container") && md.contains("+600.0%"),
        "{md}"
    );
    // An `ops=5%` rule (the README's) covers it too; nothing lets a 7× growth through but a
    // threshold above it.
    let th = Thresholds::parse(&["ops=5%".into()]).unwrap();
    assert!(compare(&b, &c, &th).gate_failed());
    let th = Thresholds::parse(&["mount_ops_per_container=700%".into()]).unwrap();
    assert!(!compare(&b, &c, &th).gate_failed());
}
