//! Mount-table watchers end to end on this machine's own kernel (`mmx run --backend local`,
//! root): every strategy's cells, and a storm over two table sizes, run with both watchers, and
//! their figures reach run.json, report.md and report.html. Sanity, never wall-clock: a watcher
//! woke when mounts happened, fanotify saw every overlay (its events are never merged), lag is
//! never negative, and the poll watcher's reads grow with the table. On a kernel before 6.15
//! fanotify must be unsupported with EINVAL instead.

mod common;

use std::path::Path;
use std::process::Command;

use harness::results::RunRecord;
use protocol::lockbench::StormPoint;
use protocol::{CellDetail, Outcome, Scenario, Watcher, WatcherOutcome, WatcherStats};

/// Whether this kernel has fanotify mount events (6.15+), from its release.
fn kernel_has_mount_events() -> bool {
    let r = rustix::system::uname();
    let rel = r.release().to_string_lossy().into_owned();
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let major: u32 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let minor: u32 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 15)
}

fn run_local(dir: &Path, scratch: &Path) -> RunRecord {
    std::fs::write(
        dir.join("matrix.toml"),
        format!(
            "[[scenarios]]\nkind = \"mounts\"\n\
             strategies = [\"per-layer\", \"common-parent\", \"fsconfig-fd\"]\n\
             layers = [2, 10]\ncontainers = [4]\nconcurrency = [2]\n\
             watchers = [\"poll-mountinfo\", \"fanotify\"]\n\
             [[scenarios]]\nkind = \"lockbench\"\nbench = \"storm\"\n\
             strategies = [\"per-layer\"]\nprepopulated_mounts = [0, 2000]\nthreads = [2]\n\
             layers = 4\ncontainers = 4\nwarmup_ms = 10\nduration_ms = 50\n\
             watchers = [\"poll-mountinfo\", \"fanotify\"]\n\
             [local]\nscratch_dir = \"{}\"\n",
            scratch.display()
        ),
    )
    .expect("matrix");
    let out = Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(["run", "--backend", "local", "--run-id", "watch"])
        .current_dir(dir)
        .env_remove("GITHUB_STEP_SUMMARY")
        .output()
        .expect("running mmx");
    assert!(
        out.status.success(),
        "mmx run --backend local: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    RunRecord::read(&dir.join("runs/watch/run.json")).expect("run.json")
}

/// A watched watcher's figures are sane for a window in which `overlays` merged overlays were
/// mounted (and unmounted).
fn check_watched(what: &str, w: Watcher, s: &WatcherStats, overlays: u64) {
    // The table changed, so the watcher woke at least once (the last change is handled after
    // the workers end) and read something.
    assert!(s.wakeups > 0 && s.bytes_read > 0, "{what} {w}: {s:?}");
    assert_eq!(
        s.lag_matched + s.lag_unmatched,
        overlays,
        "{what} {w}: {s:?}"
    );
    assert!(s.seen_before_return <= s.lag_matched, "{what} {w}: {s:?}");
    // A poll watcher starved of CPU may coalesce every change into reads that show none of the
    // overlays (a storm at 2,000 entries saw 1 of 8): lag exists exactly for what it matched.
    assert_eq!(s.lag_ns.is_some(), s.lag_matched > 0, "{what} {w}: {s:?}");
    if let Some(lag) = s.lag_ns {
        assert!(lag.min >= 0.0 && lag.p50 <= lag.max, "{what} {w}: {lag:?}");
        assert!(s.attached_seen > 0, "{what} {w}: {s:?}");
    }
    if w == Watcher::Fanotify {
        // One event per operation, never merged: every overlay attached and detached is seen.
        assert_eq!(s.lag_matched, overlays, "{what} {w}: {s:?}");
        assert!(s.attached_seen >= overlays, "{what} {w}: {s:?}");
        assert!(s.detached_seen >= overlays, "{what} {w}: {s:?}");
    } else {
        assert!(s.table_entries.is_some_and(|n| n > 0), "{what} {w}: {s:?}");
    }
}

#[test]
fn watchers_measure_every_strategy_and_storm_and_reach_the_reports() {
    if !common::require(
        rustix::process::geteuid().is_root(),
        "`mmx run --backend local` needs root (mount and user namespaces)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).expect("scratch");
    let run = run_local(dir.path(), &scratch);
    let fanotify_here = kernel_has_mount_events();

    let mut mounts_cells = 0;
    for c in &run.cells {
        assert_eq!(c.outcome, Outcome::Pass, "{}: {:?}", c.key, c.evidence);
        let Scenario::Mounts(m) = &c.scenario else {
            continue;
        };
        mounts_cells += 1;
        assert!(
            c.key.to_string().ends_with("+poll-mountinfo+fanotify"),
            "{}",
            c.key
        );
        let Some(CellDetail::Mounts(d)) = &c.detail else {
            panic!("{}: no mounts detail", c.key);
        };
        let ws: Vec<Watcher> = d.watchers.iter().map(|f| f.watcher).collect();
        assert_eq!(
            ws,
            vec![Watcher::PollMountinfo, Watcher::Fanotify],
            "{}",
            c.key
        );
        let overlays = u64::from(m.containers * m.passes);
        for f in &d.watchers {
            match (&f.outcome, f.watcher, fanotify_here) {
                (WatcherOutcome::Watched(s), Watcher::PollMountinfo, _)
                | (WatcherOutcome::Watched(s), Watcher::Fanotify, true) => {
                    check_watched(&c.key.to_string(), f.watcher, s, overlays)
                }
                (WatcherOutcome::Unsupported { errno, .. }, Watcher::Fanotify, false) => {
                    assert_eq!(*errno, libc::EINVAL, "{}", c.key)
                }
                (o, w, _) => panic!("{}: {w}: {o:?}", c.key),
            }
        }
        let cpu = format!("watcher_{}_cpu_us_per_container", Watcher::PollMountinfo);
        assert!(
            c.metrics.contains_key(&cpu),
            "{}: {:?}",
            c.key,
            c.metrics.keys()
        );
    }
    assert_eq!(mounts_cells, 6);

    // The storm: the poll watcher reads the whole table on every wakeup, so a bigger table
    // costs more bytes per wakeup.
    let storm = run
        .cells
        .iter()
        .find_map(|c| match &c.detail {
            Some(CellDetail::Lockbench(r)) => Some(r),
            _ => None,
        })
        .expect("a storm cell");
    let mut per_wakeup: Vec<(u64, f64)> = Vec::new();
    for p in &storm.points {
        if !matches!(StormPoint::parse(&p.workload), Some(StormPoint::Start(_))) {
            assert!(p.watchers.is_empty(), "{}", p.workload);
            continue;
        }
        assert_eq!(p.watchers.len(), 2, "{}", p.workload);
        for f in &p.watchers {
            if let WatcherOutcome::Watched(s) = &f.outcome {
                let what = format!("{} @{:?}", p.workload, p.prepopulated_mounts);
                check_watched(&what, f.watcher, s, 4 * 2);
                if f.watcher == Watcher::PollMountinfo {
                    let entries = s.table_entries.expect("entries");
                    per_wakeup.push((entries, s.bytes_read as f64 / s.wakeups as f64));
                }
            }
        }
    }
    per_wakeup.sort_by_key(|(n, _)| *n);
    assert_eq!(per_wakeup.len(), 2, "{per_wakeup:?}");
    assert!(per_wakeup[1].0 > per_wakeup[0].0 + 1000, "{per_wakeup:?}");
    assert!(per_wakeup[1].1 > per_wakeup[0].1, "{per_wakeup:?}");

    let md = std::fs::read_to_string(dir.path().join("runs/watch/report.md")).expect("md");
    assert!(md.contains("### Mount-table watchers"), "{md}");
    assert!(
        md.contains("| ` per-layer ` | L10 | 4 | ` poll-mountinfo ` |"),
        "{md}"
    );
    assert!(md.contains(" entries | 4 | ` fanotify `"), "{md}");
    let html = std::fs::read_to_string(dir.path().join("runs/watch/report.html")).expect("html");
    assert!(html.contains("id=\"watchers\""));
    assert!(html.contains("watcher CPU per container start"));
    assert!(html.contains("mount-table entries"));
}

/// A copy of the repository's kernel recipes beside a matrix in a fresh directory.
fn guest_matrix(matrix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mmx-watchers-")
        .tempdir()
        .expect("tempdir");
    let kernels = dir.path().join("kernels");
    std::fs::create_dir(&kernels).expect("kernels/");
    let ours = harness::agent::workspace_root().join("kernels");
    for e in std::fs::read_dir(&ours).expect("the repository's kernels/") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "toml" || x == "lock") {
            std::fs::copy(&p, kernels.join(p.file_name().expect("name"))).expect("copy");
        }
    }
    std::fs::write(dir.path().join("matrix.toml"), matrix).expect("matrix");
    dir
}

/// debian-6.12 in a TCG guest has no fanotify mount events (they came in 6.15): the fanotify
/// watcher is `unsupported` with `fanotify_init`'s EINVAL, while the poll watcher still
/// measures the same window and the cell passes.
#[test]
fn an_older_guest_kernel_reports_fanotify_unsupported_with_its_errno() {
    if common::qemu_missing() {
        return;
    }
    common::kernel("debian-6.12");
    let dir = guest_matrix(
        "kernels = [\"debian-6.12\"]\nfilesystems = [\"tmpfs\"]\n\
         [[scenarios]]\nkind = \"mounts\"\nstrategies = [\"per-layer\"]\nlayers = [2]\n\
         containers = [2]\nconcurrency = [1]\nwatchers = [\"poll-mountinfo\", \"fanotify\"]\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args([
            "run",
            "--backend",
            "qemu",
            "--accel",
            "tcg",
            "--run-id",
            "old",
        ])
        .arg("--matrix")
        .arg(dir.path().join("matrix.toml"))
        .arg("--out")
        .arg(dir.path().join("runs"))
        .env_remove("GITHUB_STEP_SUMMARY")
        .output()
        .expect("running mmx");
    assert!(
        out.status.success(),
        "mmx run: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = RunRecord::read(&dir.path().join("runs/old/run.json")).expect("run.json");
    assert_eq!(run.cells.len(), 1);
    let c = &run.cells[0];
    assert_eq!(c.outcome, Outcome::Pass, "{}: {:?}", c.key, c.evidence);
    let Some(CellDetail::Mounts(d)) = &c.detail else {
        panic!("{}: no mounts detail", c.key);
    };
    let [poll, fan] = d.watchers.as_slice() else {
        panic!("{}: {:?}", c.key, d.watchers);
    };
    match &poll.outcome {
        WatcherOutcome::Watched(s) => check_watched("debian-6.12", poll.watcher, s, 2 * 2),
        o => panic!("poll-mountinfo on 6.12: {o:?}"),
    }
    match &fan.outcome {
        WatcherOutcome::Unsupported { step, errno } => {
            assert_eq!(*errno, libc::EINVAL, "{step}");
            assert!(step.starts_with("fanotify_init(FAN_REPORT_MNT"), "{step}");
        }
        o => panic!("fanotify on 6.12: {o:?}"),
    }
    let md = std::fs::read_to_string(dir.path().join("runs/old/report.md")).expect("md");
    assert!(
        md.contains("` fanotify ` — ` unsupported: fanotify_init(FAN_REPORT_MNT"),
        "{md}"
    );
    assert!(md.contains("EINVAL"), "{md}");
}
