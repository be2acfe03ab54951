//! The time breakdown end to end: `mmx run --backend local` on this machine's kernel records
//! each boot's timeline in run.json (agent-ready, the probes, every item's start and end, the
//! wall-clock start), ends with the one line naming where the guest time went, and `mmx time`
//! reads the same line back from run.json. No time is asserted, only that it is accounted
//! for. Needs root (the agent mounts).

mod common;

use std::process::Command;

use harness::results::{RunRecord, TimeKind};
use harness::timing::Breakdown;

#[test]
fn a_run_records_its_timeline_and_ends_with_the_breakdown() {
    if !common::require(
        rustix::process::geteuid().is_root(),
        "`mmx run --backend local` needs root (mount and user namespaces)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).expect("scratch");
    std::fs::write(
        dir.path().join("matrix.toml"),
        format!(
            "[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"common-parent\", \"fsconfig-fd\"]\n\
             layers = [2]\ncontainers = [2]\n\
             [[scenarios]]\nkind = \"lockbench\"\nbench = \"user-spin\"\nlocks = [\"tas\"]\n\
             threads = [1]\nwarmup_ms = 5\nduration_ms = 10\n\
             [local]\nscratch_dir = \"{}\"\n",
            scratch.display()
        ),
    )
    .expect("matrix");
    let out = Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(["run", "--backend", "local", "--run-id", "t"])
        .current_dir(dir.path())
        .env_remove("GITHUB_STEP_SUMMARY")
        .output()
        .expect("running mmx");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mmx run: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = RunRecord::read(&dir.path().join("runs/t/run.json")).expect("run.json");
    assert_eq!(run.boots.len(), 1);
    let boot = &run.boots[0];
    let t = boot.timeline.as_ref().expect("the boot has a timeline");
    assert!(
        humantime::parse_rfc3339(&t.started_at).is_ok(),
        "{}",
        t.started_at
    );
    let ready = t.agent_ready_ms.expect("agent-ready");
    let probed = t.probes_done_ms.expect("probes answered");
    assert!(ready <= probed && probed <= t.end_ms, "{t:?}");
    // One span per item, in plan order, one after another, each naming its cell and kind.
    assert_eq!(t.items.len(), run.cells.len(), "{t:?}");
    let mut last = probed;
    for (i, span) in t.items.iter().enumerate() {
        assert_eq!(span.item as usize, i);
        assert!(span.answered);
        assert_eq!(
            span.start_ms, last,
            "item {i} starts when the one before ended"
        );
        assert!(
            span.start_ms <= span.end_ms && span.end_ms <= t.end_ms,
            "{span:?}"
        );
        last = span.end_ms;
        let cell = run.cell(&span.cell).expect("the span's cell is in the run");
        assert_eq!(span.kind, TimeKind::of(&cell.scenario), "{}", span.cell);
    }
    let kinds: Vec<TimeKind> = t.items.iter().map(|s| s.kind).collect();
    assert!(kinds.contains(&TimeKind::Mounts) && kinds.contains(&TimeKind::UserSpin));
    // The categories add up to the boot's own time.
    let breakdown = Breakdown::of_run(&run);
    assert!(
        (breakdown.total_ms() - t.end_ms).abs() < 1e-6,
        "{breakdown:?} {t:?}"
    );
    let line = breakdown.line().expect("a line");
    assert!(line.starts_with("guest time "), "{line}");
    assert!(
        line.contains("mounts") && line.contains("boot to agent-ready"),
        "{line}"
    );
    assert_eq!(
        stdout.lines().last(),
        Some(line.as_str()),
        "the run's last line: {stdout}"
    );

    let time = Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(["time", "runs/t"])
        .current_dir(dir.path())
        .output()
        .expect("running mmx time");
    let table = String::from_utf8_lossy(&time.stdout);
    assert!(time.status.success(), "{table}");
    assert!(table.starts_with("target "), "{table}");
    assert!(
        table.contains("local/host ") && table.contains("lockbench user-spin"),
        "{table}"
    );
    assert_eq!(table.lines().last(), Some(line.as_str()), "{table}");
}
