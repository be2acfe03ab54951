//! `mmx run` as a process, the way users and CI run it, around what happens *between* runs: a
//! run killed with SIGKILL mid-boot leaves no QEMU behind and the next run removes the boot dir
//! it left; a run killed during a host's hook leaves none of the hook's processes; two runs
//! started together get a directory each, both complete.
//!
//! The guests are real (debian-6.12 under TCG) with the stand-in agent
//! (`tests/fixtures/hostile_agent.c` in its well-behaved mode) as /init, which answers the plan
//! the moment the kernel starts it: a boot takes seconds. Needs QEMU, gcc and the kernel (fetched
//! once into the cache); without them each test says SKIPPED (fails under CI=true).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::backend::leftovers;
use harness::backend::qemu::{boots_dir, BOOT_DIR_PREFIX};
use harness::results::RunRecord;
use protocol::Outcome;

mod common;

/// How long a killed mmx's QEMU may outlive it (the bound).
const ORPHAN_LIMIT: Duration = Duration::from_secs(2);
/// How long a killed mmx's hook and what it forked may outlive it: the hook dies with mmx (the
/// death signal), its children when its warden, a shell, gets the CPU on a loaded machine.
const HOOK_ORPHAN_LIMIT: Duration = Duration::from_secs(10);

/// A directory with a one-cell QEMU matrix and the repository's kernel recipes beside it.
fn one_cell_matrix() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mmx-runs-")
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
    std::fs::write(
        dir.path().join("matrix.toml"),
        "kernels = [\"debian-6.12\"]\nfilesystems = [\"tmpfs\"]\n\
         [[topologies]]\nsockets = 1\ncores = 1\nthreads = 1\nmemory_mib = 256\n\
         [[scenarios]]\nkind = \"mounts\"\nstrategies = [\"per-layer\"]\nlayers = [1]\n\
         containers = [1]\nconcurrency = [1]\n",
    )
    .expect("matrix");
    dir
}

/// `mmx run` of that matrix with the stand-in agent, output into `dir/<name>.out`.
fn mmx_run(dir: &Path, agent: &Path, run_id: &str, name: &str) -> Child {
    let log = |ext: &str| std::fs::File::create(dir.join(format!("{name}.{ext}"))).expect("log");
    Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args([
            "run",
            "--backend",
            "qemu",
            "--accel",
            "tcg",
            "--run-id",
            run_id,
        ])
        .arg("--matrix")
        .arg(dir.join("matrix.toml"))
        .arg("--out")
        .arg(dir.join("runs"))
        .env("MMX_AGENT", agent)
        .env_remove("GITHUB_STEP_SUMMARY")
        .stdin(Stdio::null())
        .stdout(log("stdout"))
        .stderr(log("stderr"))
        .spawn()
        .expect("starting mmx")
}

fn stderr_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.stderr"))).unwrap_or_default()
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            out.push(pid);
        }
    }
    out
}

/// The boot dir in the cache owned by process `pid`, once it exists.
fn boot_dir_of(boots: &Path, pid: u32) -> Option<PathBuf> {
    std::fs::read_dir(boots).ok()?.flatten().find_map(|e| {
        let p = e.path();
        let named = e.file_name().to_string_lossy().starts_with(BOOT_DIR_PREFIX);
        (named && leftovers::owner_of(&p).is_some_and(|o| o.pid == pid)).then_some(p)
    })
}

/// A complete run directory: run.json with the one cell passed, and the three reports.
fn assert_complete(root: &Path) {
    let run = RunRecord::read(&root.join("run.json")).expect("run.json");
    assert_eq!(run.cells.len(), 1, "{}", root.display());
    assert_eq!(run.cells[0].outcome, Outcome::Pass, "{:?}", run.cells[0]);
    for f in ["report.md", "report.html", "junit.xml"] {
        assert!(root.join(f).is_file(), "{} lacks {f}", root.display());
    }
}

fn ready() -> Option<PathBuf> {
    let agent = common::hostile_agent()?;
    if common::qemu_missing() {
        return None;
    }
    // Fetched (once) here rather than inside the timed runs.
    common::kernel("debian-6.12");
    Some(agent)
}

#[test]
fn sigkill_mid_boot_leaves_no_qemu_and_the_next_run_removes_the_boot_dir() {
    let Some(agent) = ready() else { return };
    let dir = one_cell_matrix();
    let boots = boots_dir(common::cache().root());
    let mut mmx = mmx_run(dir.path(), &agent, "killed", "killed");
    let pid = mmx.id();

    // Mid-boot: mmx has made its boot dir and QEMU runs with the initrd from it.
    let t = Instant::now();
    let (boot_dir, marker) = loop {
        if let Some(d) = boot_dir_of(&boots, pid) {
            let marker = d.display().to_string();
            if !processes_with(&marker).is_empty() {
                break (d, marker);
            }
        }
        if let Ok(Some(status)) = mmx.try_wait() {
            panic!(
                "mmx ended ({status}) before its guest was seen:\n{}",
                stderr_of(dir.path(), "killed")
            );
        }
        assert!(t.elapsed() < Duration::from_secs(120), "no QEMU in 120 s");
        std::thread::sleep(Duration::from_millis(10));
    };

    let killed = Instant::now();
    mmx.kill().expect("SIGKILL");
    let _ = mmx.wait();
    let gone = loop {
        let left = processes_with(&marker);
        if left.is_empty() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < ORPHAN_LIMIT,
            "still running {ORPHAN_LIMIT:?} after mmx was killed: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    eprintln!(
        "MEASURE SIGKILL of mmx to no QEMU left: {:.1} ms",
        gone.as_secs_f64() * 1e3
    );
    assert!(
        boot_dir.exists(),
        "the killed run's boot dir is its leftover"
    );

    let mut next = mmx_run(dir.path(), &agent, "next", "next");
    let status = next.wait().expect("waiting for mmx");
    assert!(
        status.success(),
        "the next run failed ({status}):\n{}",
        stderr_of(dir.path(), "next")
    );
    assert!(
        !boot_dir.exists(),
        "the next run left {} in place:\n{}",
        boot_dir.display(),
        stderr_of(dir.path(), "next")
    );
    assert!(stderr_of(dir.path(), "next").contains(&marker));
    assert_complete(&dir.path().join("runs/next"));
}

#[test]
fn two_runs_started_together_with_one_run_id_get_two_complete_directories() {
    let Some(agent) = ready() else { return };
    let dir = one_cell_matrix();
    let mut a = mmx_run(dir.path(), &agent, "same", "a");
    let mut b = mmx_run(dir.path(), &agent, "same", "b");
    for (child, name) in [(&mut a, "a"), (&mut b, "b")] {
        let status = child.wait().expect("waiting for mmx");
        assert!(
            status.success(),
            "run {name} failed ({status}):\n{}",
            stderr_of(dir.path(), name)
        );
    }
    let mut ids: Vec<String> = std::fs::read_dir(dir.path().join("runs"))
        .expect("runs/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["same", "same-2"]);
    for id in &ids {
        let root = dir.path().join("runs").join(id);
        assert_complete(&root);
        let run = RunRecord::read(&root.join("run.json")).expect("run.json");
        assert_eq!(&run.run_id, id, "each run.json names its own directory");
    }
}

/// The hook case: a provision hook that forked a child (`sleep 1000 & sleep 1000`) is
/// running when mmx is killed with SIGKILL; neither the hook nor anything it started is left.
/// Needs only sh: the hook runs before any connection to the host.
#[test]
fn sigkill_during_a_hook_leaves_none_of_its_processes() {
    let dir = tempfile::Builder::new()
        .prefix("mmx-runs-hook-")
        .tempdir()
        .expect("tempdir");
    std::fs::write(
        dir.path().join("matrix.toml"),
        "[[hosts]]\nname = \"h\"\ndestination = \"mmx@127.0.0.1\"\n\
         provision = \"sleep 1000 & sleep 1000\"\n\
         [[scenarios]]\nkind = \"mounts\"\nstrategies = [\"per-layer\"]\nlayers = [1]\n\
         containers = [1]\nconcurrency = [1]\n",
    )
    .expect("matrix");
    let marker = common::unique_marker("hook");
    let log =
        |ext: &str| std::fs::File::create(dir.path().join(format!("mmx.{ext}"))).expect("log");
    let mut mmx = Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(["run", "--backend", "ssh", "--run-id", "hook"])
        .arg("--matrix")
        .arg(dir.path().join("matrix.toml"))
        .arg("--out")
        .arg(dir.path().join("runs"))
        .env(common::MARKER_VAR, &marker)
        .env_remove("GITHUB_STEP_SUMMARY")
        .stdin(Stdio::null())
        .stdout(log("stdout"))
        .stderr(log("stderr"))
        .spawn()
        .expect("starting mmx");

    // The hook runs its foreground sleep, and the one it forked is there too.
    let t = Instant::now();
    loop {
        let sleeps = common::marked(&marker)
            .into_iter()
            .filter(|(_, comm)| comm == "sleep")
            .count();
        if sleeps == 2 {
            break;
        }
        if let Ok(Some(status)) = mmx.try_wait() {
            panic!(
                "mmx ended ({status}) before its hook forked:\n{}",
                stderr_of(dir.path(), "mmx")
            );
        }
        assert!(t.elapsed() < Duration::from_secs(120), "no hook in 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    mmx.kill().expect("SIGKILL");
    let _ = mmx.wait();
    common::assert_none_left(&marker, HOOK_ORPHAN_LIMIT);
}
