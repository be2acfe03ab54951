//! End-to-end tests of the built `mmx-agent`: all three strategies for real on this host's
//! kernel, on the scratch filesystem the tests run on (ext4 here) and on tmpfs and ramfs mounted
//! in a private namespace; probes; bad input; run-plan; and cleanup after SIGINT and stdin EOF.
//! Every test checks that the host's mount table is the same afterwards and the scratch dir is
//! empty. They need root; without it they say so loudly and return.
//!
//! No test asserts a time.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use protocol::{AgentEvent, CellResult, Feature, Outcome, Strategy};

mod common;

use common::{assert_no_leak, detail, is_root, mount_table, mounts, Scratch, AGENT};

fn run(args: &[&str]) -> Output {
    Command::new(AGENT)
        .args(args)
        .output()
        .expect("run mmx-agent")
}

fn assert_pass(r: &CellResult, containers: u32, peak: u64) {
    assert_eq!(r.outcome, Outcome::Pass, "{:#?}", r);
    let m = detail(r);
    let names: BTreeSet<&str> = m.checks.iter().map(|c| c.name.as_str()).collect();
    for want in [
        "ids-inside-userns",
        "ids-from-host",
        "top-layer-wins",
        "whiteout-hides",
        "opaque-dir",
        "view-is-read-only",
        "write-as-container-root",
        "write-lands-in-upper",
        "copy-up-owner",
        "mount-table-peak",
        "mount-ops-formula",
        "no-leaked-mounts",
    ] {
        assert!(names.contains(want), "check {want} missing: {names:?}");
    }
    assert!(m.checks.iter().all(|c| c.ok), "{:#?}", m.checks);
    let ops = &m.mount_ops;
    assert_eq!(ops.ops, ops.attachments + ops.detachments);
    assert_eq!(Some(ops.ops), ops.expected_ops);
    assert_eq!(
        ops.expected_ops,
        m.scenario
            .expected_ops_per_container()
            .map(|e| e * u64::from(containers))
    );
    assert_eq!(ops.teardown_detachments, u64::from(containers) * 2);
    assert_eq!(ops.peak_extra_mounts, peak);
    assert_eq!(ops.leaked, 0);
    assert_eq!(m.latency_us.len(), containers as usize);
    assert!(r.metrics.contains_key("latency_p99_us") && r.metrics.contains_key("mount_ops"));
}

#[test]
fn all_strategies_pass_on_the_scratch_filesystem() {
    if !is_root("all_strategies_pass_on_the_scratch_filesystem") {
        return;
    }
    let scratch = Scratch::new("it", "strategies");
    let before = mount_table();
    for (strategy, peak) in [
        (Strategy::PerLayer, 5),
        (Strategy::CommonParent, 2),
        (Strategy::FsconfigFd, 1),
    ] {
        let (r, out) = mounts(None, strategy, (4, 3, 2), &scratch.0);
        assert_pass(&r, 3, peak);
        assert!(out.status.success(), "{strategy}: exit {:?}", out.status);
        let m = detail(&r);
        // per-layer: 2 passes × (1 + 2·4) per container.
        if strategy == Strategy::PerLayer {
            assert_eq!(m.mount_ops.ops, 3 * 2 * 9);
        }
        scratch.assert_empty();
    }
    // One layer: no whiteout or opaque layer, still a valid rootfs.
    let (r, _) = mounts(None, Strategy::PerLayer, (1, 1, 1), &scratch.0);
    assert_eq!(r.outcome, Outcome::Pass, "{r:#?}");
    scratch.assert_empty();
    assert_no_leak(&before);
}

/// Run the agent inside `unshare -m` after mounting `fstype` on the scratch dir, so the test
/// filesystem never appears in the host table.
fn mounts_on(fstype: &str, strategy: Strategy, scratch: &Path) -> Option<CellResult> {
    let unshare = Command::new("unshare").arg("--version").output().is_ok();
    if !common::require(unshare, "mounts_on", "no util-linux unshare") {
        return None;
    }
    let dir = scratch.to_str().expect("utf-8");
    let script = format!(
        "mount -t {fstype} mmx-test {dir} && exec {AGENT} mounts --strategy {strategy} --layers 3 --containers 2 --concurrency 1 --passes 2 --scratch {dir} --json"
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    Some(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{fstype}: no result ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    }))
}

#[test]
fn tmpfs_layers_work_and_ramfs_layers_are_unsupported() {
    if !is_root("tmpfs_layers_work_and_ramfs_layers_are_unsupported") {
        return;
    }
    let scratch = Scratch::new("it", "fs");
    let before = mount_table();
    if let Some(r) = mounts_on("tmpfs", Strategy::FsconfigFd, &scratch.0) {
        assert_eq!(detail(&r).layers_fs, "tmpfs");
        // tmpfs takes idmapped mounts since 6.3; older kernels answer unsupported.
        assert!(
            matches!(r.outcome, Outcome::Pass | Outcome::Unsupported),
            "{r:#?}"
        );
    }
    // ramfs has no idmapped-mount support: the strategy must say unsupported, with the step.
    if let Some(r) = mounts_on("ramfs", Strategy::PerLayer, &scratch.0) {
        assert_eq!(r.outcome, Outcome::Unsupported, "{r:#?}");
        let ev = r.evidence.expect("evidence");
        // The step is stable (no fd numbers, paths or container indexes): the same failure
        // reads the same in every cell and run. Which container and how far: the detail.
        assert_eq!(
            ev.step, "mount_setattr(AT_EMPTY_PATH, MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY) on ramfs",
            "{ev:?}"
        );
        assert_eq!(ev.errno_name(), Some("EINVAL"));
        assert!(
            ev.detail
                .starts_with("container 0; 0 of 2 containers finished"),
            "{ev:?}"
        );
    }
    scratch.assert_empty();
    assert_no_leak(&before);
}

#[test]
fn probes_answer_every_feature_with_evidence() {
    if !is_root("probes_answer_every_feature_with_evidence") {
        return;
    }
    let scratch = Scratch::new("it", "probe");
    let before = mount_table();
    let out = run(&[
        "probe",
        "--scratch",
        scratch.0.to_str().expect("utf-8"),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let caps: protocol::Capabilities = serde_json::from_slice(&out.stdout).expect("capabilities");
    for f in Feature::ALL {
        let p = caps.get(f).unwrap_or_else(|| panic!("{f} not probed"));
        assert!(
            p.supported || p.evidence.is_some(),
            "{f}: unsupported without evidence"
        );
    }
    // The basics every kernel mmx targets has, on the layers' filesystem of this host.
    assert!(caps.supports(Feature::NewMountApi), "{caps:#?}");
    assert!(caps.supports(Feature::IdmapMount), "{caps:#?}");
    scratch.assert_empty();
    assert_no_leak(&before);
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let bad = [
        (vec!["--layers", "0"], "1..=256"),
        (vec!["--layers", "100000"], "layers = 100000"),
        (
            vec!["--containers", "2", "--concurrency", "3"],
            "concurrency = 3",
        ),
        (vec!["--passes", "0"], "passes = 0"),
    ];
    for (args, want) in bad {
        let mut all = vec!["mounts", "--strategy", "per-layer"];
        all.extend(args);
        let out = run(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {err}");
        assert!(err.contains(want), "{all:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    if !is_root("bad_input_is_refused_with_a_clear_message (scratch part)") {
        return;
    }
    // A scratch "dir" that is a file, and one that does not exist: infra errors, no panic.
    let scratch = Scratch::new("it", "bad");
    let file = scratch.0.join("a-file");
    std::fs::write(&file, "x").expect("write");
    for dir in [file.clone(), scratch.0.join("missing")] {
        let (r, out) = mounts(None, Strategy::PerLayer, (2, 1, 1), &dir);
        assert_eq!(r.outcome, Outcome::InfraError, "{r:#?}");
        assert_eq!(out.status.code(), Some(1));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
}

/// Wait until the run has mounted and written through a rootfs: container 0's write in its
/// upper dir proves mounts were made, so a signal now lands mid-run.
fn wait_for_first_container(scratch: &Path, deadline: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < deadline {
        let started = std::fs::read_dir(scratch)
            .map(|d| d.flatten().any(|e| e.path().join("c/0/u/written").exists()))
            .unwrap_or(false);
        if started {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn sigint_mid_run_cleans_up_and_exits_non_zero() {
    if !is_root("sigint_mid_run_cleans_up_and_exits_non_zero") {
        return;
    }
    let scratch = Scratch::new("it", "sigint");
    let before = mount_table();
    let child = Command::new(AGENT)
        .args([
            "mounts",
            "--strategy",
            "per-layer",
            "--layers",
            "40",
            "--containers",
            "400",
        ])
        .args(["--concurrency", "2", "--passes", "2", "--json", "--scratch"])
        .arg(&scratch.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(
        wait_for_first_container(&scratch.0, Duration::from_secs(60)),
        "run never started"
    );
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("kill");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: CellResult = serde_json::from_slice(&out.stdout).expect("a result even when stopped");
    assert_eq!(r.outcome, Outcome::InfraError);
    assert!(r
        .evidence
        .as_ref()
        .expect("evidence")
        .step
        .contains("signal 2"));
    assert_eq!(detail(&r).mount_ops.leaked, 0);
    scratch.assert_clears_after_stop();
    assert_no_leak(&before);
}

fn plan_json(scratch: &Path, items: serde_json::Value, probe: bool) -> String {
    serde_json::json!({
        "schema_version": protocol::SCHEMA_VERSION,
        "boot_id": "it",
        "scratch_dir": scratch,
        "probe": probe,
        "items": items,
    })
    .to_string()
}

fn events(stdout: &[u8]) -> Vec<AgentEvent> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(protocol::decode_line)
        .map(|e| e.expect("valid result line"))
        .collect()
}

#[test]
fn run_plan_streams_results_and_honours_timeouts() {
    if !is_root("run_plan_streams_results_and_honours_timeouts") {
        return;
    }
    let scratch = Scratch::new("it", "plan");
    let before = mount_table();
    let items = serde_json::json!([
        {"item": 0, "cell_id": "a", "scenario": {"kind": "mounts", "strategy": "common-parent", "layers": 3, "containers": 2, "concurrency": 1, "passes": 2}},
        {"item": 1, "cell_id": "b", "scenario": {"kind": "mounts", "strategy": "per-layer", "layers": 0, "containers": 2, "concurrency": 1, "passes": 2}},
        {"item": 2, "cell_id": "c", "timeout_s": 1, "scenario": {"kind": "mounts", "strategy": "per-layer", "layers": 60, "containers": 1000, "concurrency": 2, "passes": 2}},
    ]);
    let plan = scratch.0.join("plan.json");
    std::fs::write(&plan, plan_json(&scratch.0, items, true)).expect("write plan");
    let out = run(&["run-plan", plan.to_str().expect("utf-8")]);
    let ev = events(&out.stdout);
    assert!(
        matches!(ev.first(), Some(AgentEvent::Hello { .. })),
        "{ev:#?}"
    );
    assert!(
        matches!(ev.last(), Some(AgentEvent::Done { .. })),
        "{ev:#?}"
    );
    assert!(ev.iter().any(|e| matches!(e, AgentEvent::Capabilities(_))));
    let results: Vec<&CellResult> = ev
        .iter()
        .filter_map(|e| match e {
            AgentEvent::CellResult(r) => Some(r),
            _ => None,
        })
        .collect();
    let outcomes: Vec<(&str, Outcome)> = results
        .iter()
        .map(|r| (r.cell_id.as_str(), r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("a", Outcome::Pass),
            ("b", Outcome::InfraError),
            ("c", Outcome::Timeout)
        ]
    );
    assert_eq!(out.status.code(), Some(1), "a timeout is not a success");
    std::fs::remove_file(&plan).expect("rm plan");
    scratch.assert_empty();
    assert_no_leak(&before);
}

#[test]
fn stdin_eof_stops_run_plan_cleanly() {
    if !is_root("stdin_eof_stops_run_plan_cleanly") {
        return;
    }
    let scratch = Scratch::new("it", "eof");
    let before = mount_table();
    let items = serde_json::json!([
        {"item": 0, "cell_id": "long", "scenario": {"kind": "mounts", "strategy": "per-layer", "layers": 40, "containers": 400, "concurrency": 2, "passes": 2}},
    ]);
    let plan = scratch.0.join("plan.json");
    std::fs::write(&plan, plan_json(&scratch.0, items, false)).expect("write plan");
    let mut child = Command::new(AGENT)
        .args(["run-plan", "--exit-on-stdin-eof"])
        .arg(&plan)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(
        wait_for_first_container(&scratch.0, Duration::from_secs(60)),
        "run never started"
    );
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.flush();
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&out.stdout);
    assert!(
        !ev.iter().any(|e| matches!(e, AgentEvent::Done { .. })),
        "a stopped plan has no Done"
    );
    std::fs::remove_file(&plan).expect("rm plan");
    scratch.assert_clears_after_stop();
    assert_no_leak(&before);
}
