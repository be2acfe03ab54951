//! `mmx-agent lockbench` end to end: real runs of the built binary on this host, asserting the
//! structure and sanity of what comes back (thread counts, scalability of the lock-free
//! baseline, SMT state restored, no leaked mounts or directories) — never absolute speeds.
//! Windows are tens of milliseconds: CI has 2 cores and a time budget.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use protocol::lockbench::{LockPoint, LockbenchResult};
use protocol::{CellDetail, CellResult, Outcome};

mod common;

/// Benchmarks share 2 CPUs: running two at once would measure each other. A mutex for the
/// threads of `cargo test`, and an flock(2) on a file for nextest's one process per test.
static SERIAL: Mutex<()> = Mutex::new(());

struct Serial {
    _thread: std::sync::MutexGuard<'static, ()>,
    _file: std::fs::File,
}

fn serial() -> Serial {
    let thread = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let path = std::env::temp_dir().join("mmx-lockbench-tests.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // Released when `file` is closed.
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .unwrap_or_else(|e| panic!("flock {}: {e}", path.display()));
    Serial {
        _thread: thread,
        _file: file,
    }
}

/// True (skip) when not root: with `CI=true` that fails instead (see `common::require`).
fn skip_unless_root(what: &str) -> bool {
    !common::require(
        rustix::process::geteuid().is_root(),
        what,
        &format!("needs root: {what}"),
    )
}

/// Removes the test's scratch dir even when an assertion failed first.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mmx-lockbench-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

fn scratch_guard(d: &Path) -> Scratch {
    Scratch(d.to_path_buf())
}

fn host_mountinfo() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read /proc/self/mountinfo")
        .lines()
        .count()
}

/// Run `mmx-agent lockbench --json …` and return its one cell result.
fn lockbench(scratch: &Path, args: &[&str]) -> (CellResult, LockbenchResult) {
    lockbench_with(None, scratch, args)
}

/// [`lockbench`] with the agent's test hook `MMX_AGENT_TEST_HOOK` set, when `hook` is.
fn lockbench_with(
    hook: Option<&str>,
    scratch: &Path,
    args: &[&str],
) -> (CellResult, LockbenchResult) {
    let (cell, detail) = lockbench_any(hook, scratch, args);
    assert_eq!(cell.outcome, Outcome::Pass, "{:?}", cell.evidence);
    (cell, detail)
}

/// [`lockbench_with`], whatever the outcome.
fn lockbench_any(
    hook: Option<&str>,
    scratch: &Path,
    args: &[&str],
) -> (CellResult, LockbenchResult) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mmx-agent"));
    cmd.env_remove("MMX_AGENT_TEST_HOOK");
    if let Some(h) = hook {
        cmd.env("MMX_AGENT_TEST_HOOK", h);
    }
    let out = cmd
        .arg("lockbench")
        .args(["--json", "--warmup-ms", "5", "--scratch"])
        .arg(scratch)
        .args(args)
        .args(if args.contains(&"--duration-ms") {
            &[][..]
        } else {
            &["--duration-ms", "30"][..]
        })
        .output()
        .expect("run mmx-agent");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || hook.is_some(),
        "mmx-agent lockbench {args:?} failed: {stderr}\n{stdout}"
    );
    let mut cells: Vec<CellResult> =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"));
    assert_eq!(cells.len(), 1, "one bench, one cell");
    let cell = cells.remove(0);
    let detail = match &cell.detail {
        Some(CellDetail::Lockbench(d)) => d.clone(),
        other => panic!("no lockbench detail: {other:?}"),
    };
    assert_eq!(detail.smt_before, detail.smt_after, "SMT state restored");
    assert!(!detail.topology.cpus_online.is_empty());
    assert!(!detail.topology.cpu_model.is_empty() || cfg!(not(target_arch = "x86_64")));
    (cell, detail)
}

/// Within each series (workload, layout, pinning, SMT), thread counts strictly increase.
/// Run `mmx-agent lockbench --json …` on a fresh scratch dir of its own (`name`), one test at a
/// time, and check what every run must leave behind: the host's mount table as it was and the
/// scratch dir empty. Any outcome; [`on_host_passing`] asserts a pass.
fn on_host(name: &str, hook: Option<&str>, args: &[&str]) -> (CellResult, LockbenchResult) {
    let _g = serial();
    let dir = scratch(name);
    let _cleanup = scratch_guard(&dir);
    let before = host_mountinfo();
    let r = lockbench_any(hook, &dir, args);
    assert_eq!(host_mountinfo(), before, "host mount table changed");
    std::fs::remove_dir(&dir).expect("scratch left empty by the agent");
    r
}

/// [`on_host`], asserting the cell passed.
fn on_host_passing(name: &str, args: &[&str]) -> (CellResult, LockbenchResult) {
    let (cell, detail) = on_host(name, None, args);
    assert_eq!(cell.outcome, Outcome::Pass, "{:?}", cell.evidence);
    (cell, detail)
}

fn assert_monotonic(points: &[LockPoint]) {
    let mut last: Vec<((String, bool, String, String), u32)> = Vec::new();
    for p in points {
        let key = (
            p.workload.clone(),
            p.false_sharing,
            format!("{:?}", p.pinning),
            format!("{:?}", p.smt),
        );
        if let Some((_, prev)) = last.iter().find(|(k, _)| *k == key) {
            assert!(p.threads > *prev, "{key:?}: {} after {prev}", p.threads);
        }
        last.retain(|(k, _)| *k != key);
        last.push((key, p.threads));
    }
}

fn assert_point_sane(p: &LockPoint) {
    assert_eq!(p.per_thread_ops.len() as u32, p.threads, "{}", p.workload);
    assert_eq!(
        p.per_thread_ops.iter().sum::<u64>(),
        p.ops,
        "{}",
        p.workload
    );
    assert!(p.duration_ns > 0 && p.ops_per_sec >= 0.0);
    if let (Some(a), Some(b), Some(c)) = (p.latency_p50_ns, p.latency_p99_ns, p.latency_max_ns) {
        assert!(a <= b && b <= c, "{}: p50 {a} p99 {b} max {c}", p.workload);
    }
    if let (Some(a), Some(b)) = (p.reader_p50_ns, p.reader_p99_ns) {
        assert!(a <= b, "{}: reader p50 {a} p99 {b}", p.workload);
    }
}

#[test]
fn user_spin_sweep_is_well_formed() {
    let _g = serial();
    let dir = scratch("spin");
    let _cleanup = scratch_guard(&dir);
    let (cell, d) = lockbench(&dir, &["--bench", "user-spin", "--compare-c"]);
    let cpus = d.topology.cpus_online.len() as u32;
    let expect: Vec<u32> = {
        let mut v: Vec<u32> = std::iter::successors(Some(1u32), |n| Some(n * 2))
            .take_while(|&n| n < cpus)
            .collect();
        v.push(cpus);
        v
    };
    // 4 kinds × 2 layouts, each over the default sweep.
    for kind in ["tas", "ticket", "mutex", "per-thread"] {
        for fs in [false, true] {
            let threads: Vec<u32> = d
                .points
                .iter()
                .filter(|p| p.workload == kind && p.false_sharing == fs)
                .map(|p| p.threads)
                .collect();
            assert_eq!(threads, expect, "{kind} fs={fs}");
        }
    }
    assert_monotonic(&d.points);
    for p in &d.points {
        assert_point_sane(p);
        // A contended point may make no progress in 30 ms on a loaded 2-CPU machine (a ticket
        // lock whose next holder is preempted stalls everyone); one thread always does.
        if p.threads == 1 {
            assert!(p.ops > 0, "{} N=1 made no ops", p.workload);
        }
        assert!(p.ops_per_sample.unwrap_or(0) >= 1);
        if p.threads == 1 {
            assert_eq!(p.scalability, Some(1.0));
        }
    }
    assert!(cell.metrics.contains_key("c_loop_ratio"));
    assert!(cell.metrics.contains_key("timer_overhead_ns"));
    assert!(
        d.notes.iter().any(|n| n.contains("Rust/C")),
        "{:?}",
        d.notes
    );
    std::fs::remove_dir(&dir).expect("scratch left empty by the agent");
}

#[test]
fn per_thread_baseline_scales_near_one() {
    let _g = serial();
    let dir = scratch("perthread");
    let _cleanup = scratch_guard(&dir);
    // A neighbour's burst of CPU (CI shares 2 cores) can halve one short window: try thrice.
    let mut last = Vec::new();
    for _ in 0..3 {
        let (_, d) = lockbench(
            &dir,
            &[
                "--bench",
                "user-spin",
                "--locks",
                "per-thread",
                "--no-false-sharing",
                "--duration-ms",
                "60",
            ],
        );
        last = d
            .points
            .iter()
            .map(|p| (p.threads, p.scalability.unwrap_or(0.0)))
            .collect();
        if last.iter().all(|&(_, s)| (0.5..=1.5).contains(&s)) {
            std::fs::remove_dir(&dir).expect("scratch left empty");
            return;
        }
    }
    panic!("per-thread scalability not near 1: {last:?}");
}

#[test]
fn mount_lock_leaves_no_mounts() {
    if skip_unless_root("mount-lock unshares a mount namespace") {
        return;
    }
    let (_, d) = on_host_passing("mountlock", &["--bench", "mount-lock", "--readers", "1"]);
    assert_monotonic(&d.points);
    let baseline: Vec<_> = d
        .points
        .iter()
        .filter(|p| p.workload == "readers-only")
        .collect();
    assert_eq!(baseline.len(), 1);
    assert_eq!(baseline[0].threads, 0);
    for p in &d.points {
        assert_point_sane(p);
        assert!(
            p.reader_p99_ns.is_some(),
            "{} has reader latency",
            p.workload
        );
        if p.threads > 0 {
            assert!(p.ops > 0 && p.ops % 2 == 0, "{}: {} ops", p.workload, p.ops);
        }
    }
    assert!(d.points.iter().any(|p| p.workload == "bind-umount"));
}

#[test]
fn mountinfo_grows_to_the_sizes_asked() {
    if skip_unless_root("mountinfo grows a mount table in a private namespace") {
        return;
    }
    let (_, d) = on_host_passing(
        "mountinfo",
        &[
            "--bench",
            "mountinfo",
            "--table-sizes",
            "200,400",
            "--duration-ms",
            "10",
        ],
    );
    let reads: Vec<&str> = d
        .points
        .iter()
        .filter(|p| p.workload.starts_with("mountinfo@"))
        .map(|p| p.workload.as_str())
        .collect();
    assert_eq!(reads, ["mountinfo@200", "mountinfo@400"]);
    for p in &d.points {
        assert_point_sane(p);
        assert!(p.ops >= 1);
    }
}

#[test]
fn smt_toggle_request_is_safe() {
    if skip_unless_root("toggling SMT writes /sys/devices/system/cpu/smt/control") {
        return;
    }
    let _g = serial();
    let control = "/sys/devices/system/cpu/smt/control";
    let before = std::fs::read_to_string(control).ok();
    let dir = scratch("smt");
    let _cleanup = scratch_guard(&dir);
    let (_, d) = lockbench(
        &dir,
        &[
            "--bench",
            "user-spin",
            "--locks",
            "tas",
            "--no-false-sharing",
            "--toggle-smt",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(control).ok(),
        before,
        "SMT control restored"
    );
    // Where the kernel can toggle, both states were measured; elsewhere a note says why not.
    let states: std::collections::BTreeSet<_> =
        d.points.iter().map(|p| format!("{:?}", p.smt)).collect();
    assert!(
        states.len() == 2 || d.notes.iter().any(|n| n.contains("SMT toggle")),
        "{states:?} {:?}",
        d.notes
    );
    std::fs::remove_dir(&dir).expect("scratch left empty by the agent");
}

#[test]
fn storm_measures_bystanders_and_leaves_no_mounts() {
    if skip_unless_root("storm starts containers in a private mount namespace") {
        return;
    }
    let (_, d) = on_host_passing(
        "storm",
        &[
            "--bench",
            "storm",
            "--strategies",
            "common-parent",
            "--threads",
            "1,2",
            "--layers",
            "2",
            "--containers",
            "2",
        ],
    );
    let idle: Vec<_> = d
        .points
        .iter()
        .filter(|p| p.workload == "storm:idle")
        .collect();
    assert_eq!(idle.len(), 1);
    assert!(idle[0].reader_p99_ns.is_some());
    let storm: Vec<_> = d
        .points
        .iter()
        .filter(|p| p.workload == "storm:common-parent")
        .collect();
    // One point per N; a strategy that failed would have failed the cell.
    assert_eq!(storm.len(), 2, "{:?}", d.notes);
    for p in &storm {
        assert!(p.ops > 0 && p.reader_p99_ns.is_some(), "{p:?}");
        // The run's window, exactly: the point lasts as long as its workers ran.
        assert!(p.duration_ns > 0);
        assert_eq!(p.prepopulated_mounts, Some(0));
    }
    let reads: Vec<_> = d
        .points
        .iter()
        .filter(|p| p.workload == "mountinfo-during:common-parent")
        .collect();
    assert_eq!(reads.len(), 2);
    for p in &reads {
        assert!(p.ops > 0 && p.table_entries.is_some(), "{p:?}");
    }
    assert_monotonic(&d.points);
}

/// The median read of the storm's own mount table (`mountinfo-during:<strategy>`) at N=1.
fn read_p50(d: &LockbenchResult, strategy: &str, pre: u32) -> (f64, u64, u64) {
    let p = d
        .points
        .iter()
        .find(|p| {
            p.workload == format!("mountinfo-during:{strategy}")
                && p.prepopulated_mounts == Some(pre)
        })
        .unwrap_or_else(|| panic!("no read point at {pre}: {:#?}", d.points));
    (
        p.latency_p50_ns.expect("a read latency"),
        p.ops,
        p.table_entries.expect("table entries"),
    )
}

#[test]
fn storm_reads_the_grown_table_of_its_own_namespace() {
    if skip_unless_root("storm grows a mount table in a private namespace") {
        return;
    }
    // Enough containers that even reads of a 10k table (20-100 ms each here, while the storm
    // holds the namespace) give a median of tens of samples on a loaded 2-core machine.
    let (_, d) = on_host_passing(
        "storm-table",
        &[
            "--bench",
            "storm",
            "--strategies",
            "common-parent",
            "--threads",
            "1",
            "--layers",
            "2",
            "--containers",
            "60",
            "--prepopulated-mounts",
            "0,10000",
        ],
    );
    let (small, n_small, e_small) = read_p50(&d, "common-parent", 0);
    let (big, n_big, e_big) = read_p50(&d, "common-parent", 10_000);
    eprintln!(
        "mountinfo of the storm's table: {e_small} entries {small:.0} ns (n={n_small}), \
         {e_big} entries {big:.0} ns (n={n_big}): ×{:.1}",
        big / small
    );
    // The reader read the storm's table, grown by 10k, not the agent's.
    assert!(e_big >= 10_000 && e_small < 10_000, "{e_small} {e_big}");
    assert!(
        n_small >= 10 && n_big >= 10,
        "too few reads: {n_small}, {n_big}"
    );
    // A functional signal, not a time bound: a table 10k entries longer takes longer to read.
    assert!(big / small > 1.0, "{big} ns at 10k, {small} ns at 0");
}

#[test]
fn a_strategy_that_fails_inside_the_storm_fails_the_cell() {
    if skip_unless_root("storm starts containers in a private mount namespace") {
        return;
    }
    let (cell, _) = on_host(
        "storm-fail",
        Some("agent-error"),
        &[
            "--bench",
            "storm",
            "--strategies",
            "per-layer",
            "--threads",
            "1",
            "--layers",
            "2",
            "--containers",
            "2",
        ],
    );
    assert_eq!(cell.outcome, Outcome::Fail, "{cell:#?}");
    let ev = cell.evidence.expect("evidence");
    assert!(
        ev.step.starts_with("storm per-layer: agent error: "),
        "{ev:?}"
    );
    assert!(ev.detail.contains("N=1"), "{ev:?}");
}

/// On a kernel without unique mount ids (6.1) the run reads its table as mountinfo: the mounts
/// put there before the window are the table's, not leaks of the run.
#[test]
fn a_prepopulated_table_is_not_a_leak_when_counted_from_mountinfo() {
    if skip_unless_root("storm grows a mount table in a private namespace") {
        return;
    }
    let (cell, _) = on_host(
        "storm-mountinfo",
        Some("no-unique-ids"),
        &[
            "--bench",
            "storm",
            "--strategies",
            "per-layer,common-parent",
            "--threads",
            "2",
            "--layers",
            "2",
            "--containers",
            "2",
            "--prepopulated-mounts",
            "1000",
        ],
    );
    assert_eq!(cell.outcome, Outcome::Pass, "{cell:#?}");
}
