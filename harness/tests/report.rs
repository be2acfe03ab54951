//! Reports rendered from recorded run.json fixtures: golden report.md, well-formed HTML with
//! every chart, JUnit parsed back, and the 5,000-cell size and speed figures.
//!
//! `MMX_BLESS=1 cargo test -p harness --test report` rewrites the constructed fixture and the
//! golden files, then fails (a blessed run is never green): review the diff, commit it, and run
//! the tests again without `MMX_BLESS`.

#[path = "fixtures/builder.rs"]
mod builder;

use std::path::{Path, PathBuf};
use std::time::Instant;

use harness::report;
use harness::results::RunRecord;
use protocol::Outcome;

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(sub)
}

fn bless() -> bool {
    std::env::var_os("MMX_BLESS").is_some_and(|v| v != "0")
}

/// After writing what `MMX_BLESS` asked for: fail, so the blessing run cannot pass as a test run.
fn blessed(what: &str) -> ! {
    panic!(
        "MMX_BLESS: wrote {what}; review `git diff`, then run the tests without MMX_BLESS \
         (a blessing run never passes)"
    )
}

/// Every fixture: `tests/fixtures/*.json`, constructed and recorded alike.
fn fixtures() -> Vec<(String, RunRecord)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir("fixtures"))
        .expect("tests/fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no fixtures in tests/fixtures");
    paths
        .into_iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let run = RunRecord::read(&p).unwrap_or_else(|e| panic!("{e:#}"));
            (stem, run)
        })
        .collect()
}

#[test]
fn constructed_fixture_is_current() {
    let path = dir("fixtures").join("constructed-mixed.json");
    let want = builder::mixed_run();
    if bless() {
        want.write(&path).unwrap();
        blessed(&path.display().to_string());
    }
    RunRecord::read(&path).unwrap_or_else(|e| panic!("{e:#}; run with MMX_BLESS=1"));
    // Compared as text: serde_json does not promise that floats read back bit for bit.
    let have = std::fs::read_to_string(&path).unwrap();
    assert!(
        have == serde_json::to_string_pretty(&want).unwrap(),
        "{} is stale: MMX_BLESS=1 cargo test -p harness --test report",
        path.display()
    );
}

#[test]
fn markdown_matches_golden_files() {
    let mut stale = Vec::new();
    let mut written = Vec::new();
    for (stem, run) in fixtures() {
        let md = report::render_markdown(&run).unwrap();
        let golden = dir("golden").join(format!("{stem}.md"));
        if bless() {
            std::fs::write(&golden, &md).unwrap();
            written.push(golden.display().to_string());
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if want != md {
            let out = std::env::temp_dir().join(format!("mmx-golden-{stem}.md"));
            std::fs::write(&out, &md).unwrap();
            stale.push(format!("{} (got {})", golden.display(), out.display()));
        }
    }
    if bless() {
        blessed(&written.join(", "));
    }
    assert!(
        stale.is_empty(),
        "report.md differs from golden; diff, then MMX_BLESS=1 to accept:\n{}",
        stale.join("\n")
    );
}

#[test]
fn markdown_fits_a_pr_comment_and_carries_evidence() {
    let run = builder::mixed_run();
    let md = report::render_markdown(&run).unwrap();
    assert!(md.len() < 65_536, "{} bytes", md.len());
    for word in [
        "pass",
        "fail",
        "unsupported",
        "timeout",
        "panic",
        "infra-error",
    ] {
        assert!(md.contains(word), "no `{word}` in report.md");
    }
    assert!(md.contains("EINVAL (22)"), "errno evidence");
    assert!(
        md.contains("Kernel panic - not syncing"),
        "first panic line"
    );
    assert!(md.contains("| **debian-6.1**"), "kernel rows");
    assert!(md.contains("tcg"), "provenance names the accelerator");
    let big = report::render_markdown(&builder::big_run(10, 3)).unwrap();
    assert!(
        big.contains("more rows in report.html"),
        "long tables are cut"
    );
}

fn parse_xml(text: &str) -> roxmltree::Document<'_> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(text, opts)
        .unwrap_or_else(|e| panic!("not well-formed: {e}"))
}

#[test]
fn html_is_well_formed_self_contained_with_every_chart() {
    for (stem, run) in fixtures() {
        let html = report::render_html(&run).unwrap();
        let doc = parse_xml(&html);
        let svgs: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("svg"))
            .collect();
        // Expected charts, counted from the run itself.
        let mut lat = std::collections::BTreeSet::new();
        let mut ops = std::collections::BTreeSet::new();
        // One lock chart per benchmark and topology (and filesystem, for those that touch it).
        let mut lock = std::collections::BTreeSet::new();
        let mut storm = 0;
        let sweeps = j_sweeps(&run);
        for c in &run.cells {
            match (&c.scenario, &c.detail) {
                (protocol::Scenario::Mounts(m), Some(_)) => {
                    ops.insert(c.key.target.clone());
                    // A J sweep's cell alone at its layer count is drawn in its J chart only.
                    let swept = sweeps.contains(&sweep_chart(c, m));
                    let alone = !run.cells.iter().any(|o| match &o.scenario {
                        protocol::Scenario::Mounts(n) => {
                            o.outcome == Outcome::Pass
                                && o.key.boot() == c.key.boot()
                                && (&n.strategy, n.containers, n.concurrency, n.passes)
                                    == (&m.strategy, m.containers, m.concurrency, m.passes)
                                && n.layers != m.layers
                        }
                        _ => false,
                    });
                    if c.outcome == Outcome::Pass && !(swept && alone) {
                        lat.insert(c.key.boot());
                    }
                }
                (protocol::Scenario::Lockbench(sc), Some(protocol::CellDetail::Lockbench(l)))
                    if sc.bench == protocol::lockbench::Bench::Storm =>
                {
                    // A read-time chart where the reader saw a table size, a start chart where
                    // the storm swept N.
                    storm += usize::from(l.points.iter().any(|p| {
                        p.workload.starts_with("mountinfo-during:") && p.table_entries.is_some()
                    }));
                    let ns: std::collections::BTreeSet<u32> = l
                        .points
                        .iter()
                        .filter(|p| p.workload.starts_with("storm:") && p.workload != "storm:idle")
                        .map(|p| p.threads)
                        .collect();
                    storm += usize::from(ns.len() > 1);
                }
                (s, Some(protocol::CellDetail::Lockbench(l))) if !l.points.is_empty() => {
                    let topology = match &c.key.target {
                        harness::cell::TargetKey::Qemu { topology, .. } => topology.clone(),
                        t => t.to_string(),
                    };
                    let fs = harness::matrix::uses_layer_fs(s).then_some(c.key.filesystem);
                    lock.insert((s.label(), topology, fs));
                }
                _ => {}
            }
        }
        let lock = lock.len();
        let ids: Vec<&str> = svgs
            .iter()
            .filter_map(|s| s.parent().and_then(|p| p.attribute("id")))
            .collect();
        let count = |p: &str| ids.iter().filter(|i| i.starts_with(p)).count();
        assert_eq!(count("lat-"), lat.len(), "{stem}: latency charts");
        assert_eq!(count("ops-"), ops.len(), "{stem}: mount-ops charts");
        assert_eq!(count("lock-"), lock, "{stem}: lockbench charts");
        assert_eq!(count("conc-"), sweeps.len(), "{stem}: concurrency charts");
        assert_eq!(count("storm-"), storm, "{stem}: storm charts");
        assert_eq!(
            svgs.len(),
            lat.len() + ops.len() + lock + sweeps.len() + storm,
            "{stem}"
        );
        for svg in &svgs {
            let text: String = svg
                .descendants()
                .filter(|n| n.is_text())
                .filter_map(|n| n.text())
                .collect::<Vec<_>>()
                .join("|");
            assert!(
                text.contains("accel: "),
                "{stem}: chart without accelerator: {text}"
            );
            assert!(
                svg.descendants().any(|n| n.has_tag_name("title")),
                "{stem}: chart title"
            );
            assert!(
                svg.descendants()
                    .filter(|n| n.attribute("class") == Some("al"))
                    .count()
                    == 2,
                "{stem}: both axis labels"
            );
            assert!(
                svg.descendants().any(|n| n
                    .attribute("class")
                    .is_some_and(|c| c.split(' ').any(|t| t == "lg"))),
                "{stem}: legend"
            );
        }
        // Self-contained: no scripts, no fetched resources.
        assert!(!doc
            .descendants()
            .any(|n| n.has_tag_name("script") || n.has_tag_name("link")));
        for n in doc.descendants() {
            for a in n.attributes() {
                if matches!(a.name(), "src" | "href") {
                    assert!(!a.value().contains("://"), "{stem}: external {}", a.value());
                }
            }
        }
        assert!(
            !html.contains("@import") && !html.contains("url("),
            "{stem}: external CSS"
        );
        // Every probe column is a kernel.
        if run.boots.iter().any(|b| b.capabilities.is_some()) {
            assert!(
                html.contains("fsconfig-set-fd-layer"),
                "{stem}: probe table"
            );
        }
    }
}

/// A J chart: boot and layer count.
type SweepChart = (harness::cell::BootKey, u32);

fn sweep_chart(c: &harness::results::CellRecord, m: &protocol::MountsScenario) -> SweepChart {
    (c.key.boot(), m.layers)
}

/// The J charts a run should have: passing mounts cells of one boot and layer count that differ
/// only in concurrency.
fn j_sweeps(run: &RunRecord) -> std::collections::BTreeSet<SweepChart> {
    let mut js: std::collections::BTreeMap<_, std::collections::BTreeSet<u32>> = Default::default();
    for c in &run.cells {
        if let (protocol::Scenario::Mounts(m), Some(_), Outcome::Pass) =
            (&c.scenario, &c.detail, c.outcome)
        {
            js.entry((
                sweep_chart(c, m),
                m.strategy.clone(),
                m.containers,
                m.passes,
            ))
            .or_default()
            .insert(m.concurrency);
        }
    }
    js.into_iter()
        .filter(|(_, j)| j.len() > 1)
        .map(|((chart, ..), _)| chart)
        .collect()
}

/// The constructed run's storms and J sweep reach report.html, and its counts both reports.
#[test]
fn storms_sweeps_and_counts_are_shown() {
    let run = builder::mixed_run();
    let html = report::render_html(&run).unwrap();
    let doc = parse_xml(&html);
    let chart = |id: &str| {
        doc.descendants()
            .find(|n| n.attribute("id") == Some(id))
            .unwrap_or_else(|| panic!("no chart {id}"))
    };
    let legend = |n: roxmltree::Node<'_, '_>| -> Vec<String> {
        n.descendants()
            .filter(|g| g.attribute("class").is_some_and(|c| c.starts_with("lg")))
            .filter_map(|g| g.descendants().find(|t| t.is_text()).and_then(|t| t.text()))
            .map(str::to_string)
            .collect()
    };
    // Read time vs table size on tcg-mt: a line per strategy, three table sizes each.
    let read = chart("storm-read-lockbench-storm-debian-7-x-1s2c1t-tmpfs");
    assert_eq!(legend(read), ["per-layer", "common-parent", "fsconfig-fd"]);
    let lines: Vec<_> = read
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .collect();
    assert_eq!(lines.len(), 3);
    for l in &lines {
        assert_eq!(l.attribute("points").unwrap().split(' ').count(), 3);
    }
    assert!(
        !html.contains("id=\"lock-lockbench-storm"),
        "a storm is no lock chart"
    );
    // On single-threaded TCG: greyed, and fsconfig-fd (EBADF on 6.12) is said to be missing.
    let serialized = chart("storm-read-lockbench-storm-debian-6-12-2s1c2t-numa2-ext4");
    assert_eq!(legend(serialized), ["per-layer", "common-parent"]);
    assert!(serialized
        .descendants()
        .any(|n| n.attribute("class") == Some("muted")));
    let caption: String = serialized
        .descendants()
        .filter(|n| n.has_tag_name("figcaption"))
        .filter_map(|n| n.text())
        .collect();
    assert!(
        caption.contains("vCPUs serialized") && caption.contains("no points: fsconfig-fd"),
        "{caption}"
    );
    chart("storm-start-lockbench-storm-debian-7-x-1s2c1t-tmpfs");
    // The J sweep: p50 and p99 per strategy.
    let conc = chart("conc-debian-7-x-1s2c1t-ext4-L10");
    assert_eq!(legend(conc).len(), 6);
    assert_eq!(
        doc.descendants()
            .filter(|n| n.attribute("id").is_some_and(|i| i.starts_with("conc-")))
            .count(),
        1,
        "only where J varies"
    );
    // Counts: the source per kernel, allocations against the sequence, the agent's notes.
    let md = report::render_markdown(&run).unwrap();
    for text in [&md, &html] {
        for want in [
            "mount-table-diff",
            "unique-mount-ids",
            "fanotify-mount-events",
            "1012 ≠ 1010",
            "1 of 18 cells differ",
            "another process mounted meanwhile",
        ] {
            assert!(text.contains(want), "no `{want}`");
        }
    }
}

#[test]
fn junit_parses_back_with_one_testcase_per_cell() {
    for (stem, run) in fixtures() {
        let xml = report::render_junit(&run).unwrap();
        let doc = parse_xml(&xml);
        let n = |tag: &str| doc.descendants().filter(|d| d.has_tag_name(tag)).count();
        let counts = run.outcome_counts();
        assert_eq!(n("testcase"), run.cells.len(), "{stem}");
        assert_eq!(
            n("failure"),
            counts[&Outcome::Fail] + counts[&Outcome::Timeout] + counts[&Outcome::Panic],
            "{stem}"
        );
        assert_eq!(n("error"), counts[&Outcome::InfraError], "{stem}");
        assert_eq!(n("skipped"), counts[&Outcome::Unsupported], "{stem}");
        let root = doc.root_element();
        assert_eq!(
            root.attribute("tests"),
            Some(run.cells.len().to_string().as_str())
        );
        for f in doc
            .descendants()
            .filter(|d| d.has_tag_name("failure") || d.has_tag_name("skipped"))
        {
            assert!(
                f.attribute("message").is_some_and(|m| m.len() > 10),
                "{stem}: evidence"
            );
        }
    }
}

/// A run whose guest printed the worst it could: characters XML forbids in the release, code
/// fences and links in the evidence and in a metric name.
fn hostile_run() -> RunRecord {
    let mut run = builder::mixed_run();
    let evil = "```\n[docs](https://evil.example) ![x](https://evil.example/i.png) <b>hi</b> https://evil.example | ``";
    for c in run.cells.iter_mut().take(3) {
        c.provenance.kernel_release = Some("6.12\u{FFFF}\u{FFFE}\u{1b}[31m-rc1".into());
        c.outcome = Outcome::Fail;
        c.evidence = Some(protocol::Evidence::new(evil).with_detail(evil));
        if let Some(m) = c.metrics.values().next().cloned() {
            c.metrics.insert(format!("{evil}:x"), m);
        }
        // The agent's count notes are its own text too (one line: reports keep the first).
        if let Some(protocol::CellDetail::Mounts(d)) = &mut c.detail {
            d.mount_ops.notes.push(evil.replace('\n', " "));
        }
    }
    run
}

#[test]
fn guest_text_cannot_break_the_reports() {
    let run = hostile_run();
    let xml = report::render_junit(&run).unwrap();
    let doc = parse_xml(&xml);
    assert_eq!(
        doc.descendants()
            .filter(|d| d.has_tag_name("testcase"))
            .count(),
        run.cells.len()
    );
    assert!(!xml.contains('\u{FFFF}') && !xml.contains('\u{FFFE}'));
    let html = report::render_html(&run).unwrap();
    parse_xml(&html);
    assert!(!html.contains("<b>hi</b>") && !html.contains("href=\"https://evil"));
    let md = report::render_markdown(&run).unwrap();
    assert!(
        md.lines()
            .any(|l| l.starts_with("- ") && l.contains("evil.example")),
        "the count note is listed"
    );
    // Every guest string is inside a code span whose fence is longer than its backtick runs.
    for line in md.lines().filter(|l| l.contains("evil.example")) {
        let start = line
            .find("````")
            .unwrap_or_else(|| panic!("not fenced: {line}"));
        let end = line.rfind("````").unwrap_or(start);
        assert!(end > start, "one span: {line}");
        let outside = format!("{}{}", &line[..start], &line[end + 4..]);
        assert!(
            !outside.contains("evil.example"),
            "guest text outside its span: {line}"
        );
    }
}

#[test]
fn render_all_writes_reports_and_only_the_cli_touches_the_step_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let summary = tmp.path().join("summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    let run = builder::mixed_run();
    let w = report::render_all(&run, tmp.path()).unwrap();
    for p in [&w.markdown, &w.html, &w.junit] {
        assert!(
            std::fs::metadata(p).unwrap().len() > 1000,
            "{}",
            p.display()
        );
    }
    // The library never writes $GITHUB_STEP_SUMMARY (a test that renders must not touch a CI
    // job's summary); `mmx report` does, appending.
    run.write(&tmp.path().join("run.json")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmx"))
        .arg("report")
        .arg(tmp.path())
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = std::fs::read_to_string(&summary).unwrap();
    assert!(
        s.starts_with("earlier step\n## mmx run"),
        "appended, not replaced"
    );
}

#[test]
fn a_broken_run_json_is_named_in_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("run.json");
    std::fs::write(&p, "{\"schema_version\": 1, \"cells\": 3}").unwrap();
    let e = RunRecord::read(&p).unwrap_err();
    assert!(format!("{e:#}").contains(&p.display().to_string()), "{e:#}");
}

/// The speed and size figures for 5,000 cells × 10 samples. Prints, never asserts, the time.
#[test]
fn five_thousand_cells_render_and_compare() {
    let base = builder::big_run(10, 10);
    assert_eq!(base.cells.len(), 5_000);
    let mut cand = base.clone();
    let victim = cand.cells[7].key.to_string();
    builder::scale_metric(&mut cand, &victim, "start_latency_us", 1.5);
    let t = Instant::now();
    let md = report::render_markdown(&base).unwrap();
    let t_md = t.elapsed();
    let html = report::render_html(&base).unwrap();
    let t_html = t.elapsed() - t_md;
    let junit = report::render_junit(&base).unwrap();
    let t_all = t.elapsed();
    let cmp = harness::compare::compare(&base, &cand, &harness::compare::Thresholds::default());
    let cmp_md = cmp.render_markdown().unwrap();
    let total = t.elapsed();
    eprintln!(
        "5,000 cells × 10 samples ({} build): report.md {} B in {:?}, report.html {} B ({:.2} MB) in {:?}, junit {} B, all reports {:?}, compare+render {:?} ({} B), total {:?}",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        md.len(),
        t_md,
        html.len(),
        html.len() as f64 / 1e6,
        t_html,
        junit.len(),
        t_all,
        total - t_all,
        cmp_md.len(),
        total
    );
    if let Some(out) = std::env::var_os("MMX_BIG_HTML") {
        std::fs::write(out, &html).unwrap();
    }
    assert!(
        html.len() < 5_000_000,
        "report.html is {} bytes",
        html.len()
    );
    assert!(cmp.gate_failed(), "the injected regression is found");
}

/// Every fixture renders through `render_all` (all three files). With `MMX_RENDER_TO=DIR` the
/// reports are kept in DIR, for looking at them in a browser; otherwise in a temp dir.
#[test]
fn render_fixtures_to() {
    let tmp = tempfile::tempdir().unwrap();
    let out =
        std::env::var_os("MMX_RENDER_TO").map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    for (stem, run) in fixtures() {
        let d = out.join(&stem);
        std::fs::create_dir_all(&d).unwrap();
        let w = report::render_all(&run, &d).unwrap();
        for f in [&w.markdown, &w.html, &w.junit] {
            assert!(
                std::fs::metadata(f).unwrap().len() > 0,
                "{} is empty",
                f.display()
            );
        }
    }
}

/// The end-of-run screen: the matrix with its ⚠, the counts, the evidence, the strategy
/// differences and the report paths, in a screenful; the full tables only with --verbose.
#[test]
fn the_terminal_summary_is_one_screen() {
    let run = builder::mixed_run();
    let w = report::Written {
        markdown: "runs/x/report.md".into(),
        html: "runs/x/report.html".into(),
        junit: "runs/x/junit.xml".into(),
    };
    let s = harness::summary::render(&run, Some(&w), false);
    eprintln!("{s}");
    let lines = s.lines().count();
    assert!(lines <= 60, "{lines} lines");
    for want in [
        "Compatibility",
        "⚠",
        "115 cells in 10 boots",
        "runtime:containerd-2.1  containerd 2.1.9+ds1-5 (debian sid, go1.27.3)",
        "Evidence",
        "smt-siblings points: guest sees no SMT siblings",
        "Largest differences between strategies",
        "per-layer",
        "runs/x/report.html",
    ] {
        assert!(s.contains(want), "no `{want}` in:\n{s}");
    }
    assert!(!s.contains("Lock benchmark"), "tables only with --verbose");
    let v = harness::summary::render(&run, Some(&w), true);
    assert!(v.contains("Lock benchmark") && v.contains(" †"), "{v}");
    assert!(v.lines().count() > lines);
}

/// A kernel that let the idmap of an idmapped detached mount change (6.15–6.17 without the 6.18
/// fix) is flagged in the probes table of both reports, apart from a plain "no".
#[test]
fn a_probe_warning_is_shown_as_a_warning() {
    let mut run = builder::mixed_run();
    let caps = run
        .boots
        .iter_mut()
        .find_map(|b| b.capabilities.as_mut())
        .expect("a boot with probes");
    let p = caps
        .probes
        .iter_mut()
        .find(|p| p.feature == protocol::Feature::OpenTreeAttrIdmapLocked)
        .expect("the idmap-locked probe");
    p.supported = false;
    p.warning = Some(protocol::ProbeWarning::IdmapChangeAllowed);
    p.evidence = Some(protocol::Evidence::new(
        "allowed: open_tree_attr(AT_EMPTY_PATH, no clone, MOUNT_ATTR_IDMAP) on it",
    ));
    let md = report::render_markdown(&run).unwrap();
    let row = md
        .lines()
        .find(|l| l.starts_with("| ` open-tree-attr-idmap-locked ` |"))
        .unwrap_or_else(|| panic!("no idmap-locked row:\n{md}"));
    assert!(row.contains("⚠️ idmap-change-allowed"), "{row}");
    let html = report::render_html(&run).unwrap();
    assert!(
        html.contains("class=\"probe-warn\" title=\"the kernel changed the idmap of an already idmapped detached mount: allowed: open_tree_attr"),
        "no warning cell in the HTML"
    );
}
