//! `mmx run --backend local` on this machine's own kernel: the labels of its cells are what the
//! agent measured here, never configuration. This machine's accelerator is `vm:<vendor>` when a
//! hypervisor runs it (CI runners and this development VM alike), `metal` only on bare metal;
//! the filesystem is the one the scratch dir is on. Needs root (the agent mounts).

mod common;

use std::path::Path;
use std::process::Command;

use harness::results::{Accel, RunRecord};
use protocol::Outcome;

/// Whether the CPU says a hypervisor runs this machine (the kernel's own `hypervisor` flag, a
/// reading independent of the agent's).
fn hypervisor_here() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "hypervisor"))
}

fn write_matrix(dir: &Path, scratch: &Path) {
    std::fs::write(
        dir.join("matrix.toml"),
        format!(
            "[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"common-parent\"]\nlayers = [2]\n\
             containers = [2]\n[local]\nscratch_dir = \"{}\"\n",
            scratch.display()
        ),
    )
    .expect("matrix");
}

fn run_local(dir: &Path, scratch: &Path) -> RunRecord {
    write_matrix(dir, scratch);
    let out = Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(["run", "--backend", "local", "--run-id", "local"])
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
    RunRecord::read(&dir.join("runs/local/run.json")).expect("run.json")
}

#[test]
fn the_local_backend_records_the_measured_accelerator_and_filesystem() {
    if !common::require(
        rustix::process::geteuid().is_root(),
        "`mmx run --backend local` needs root (mount and user namespaces)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).expect("scratch");
    let fs = harness::backend::local::filesystem_of(&scratch).expect("statfs");
    let Ok(fs) = fs else {
        let why = format!(
            "{} is on a filesystem mmx does not label",
            scratch.display()
        );
        common::require(false, &why);
        return;
    };
    let run = run_local(dir.path(), &scratch);
    assert_eq!(run.cells.len(), 1);
    let c = &run.cells[0];
    assert_eq!(c.outcome, Outcome::Pass, "{c:?}");
    assert_eq!(c.key.filesystem, fs, "{}", c.key);
    let accel = c.provenance.accel;
    if hypervisor_here() {
        let Accel::Vm(h) = accel else {
            panic!("this machine runs under a hypervisor, yet its cells say `{accel}`");
        };
        let v = c
            .provenance
            .observed_topology
            .as_ref()
            .and_then(|t| t.virtualization.as_ref())
            .expect("the agent's evidence");
        eprintln!("this machine: {accel} ({h:?}); evidence {:?}", v.evidence);
        assert!(!v.evidence.is_empty());
    } else {
        assert_eq!(accel, Accel::Metal);
    }
    assert_eq!(run.boots[0].accel, accel, "the boot says the same");
    let md = std::fs::read_to_string(dir.path().join("runs/local/report.md")).expect("report");
    assert!(md.contains(accel.as_str()), "report.md names {accel}");
}

/// What a run shows, through the terminal and the other subscribers of its events: the start
/// line, one line for its boot, where the results are (stderr), the summary naming the reports
/// (stdout), and report.md appended to the step summary; with `--json`, run.json on stdout.
#[test]
fn a_run_shows_its_start_its_boot_and_its_end_once_each() {
    if !common::require(
        rustix::process::geteuid().is_root(),
        "`mmx run --backend local` needs root (mount and user namespaces)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).expect("scratch");
    write_matrix(dir.path(), &scratch);
    let step_summary = dir.path().join("step-summary.md");
    let run = |id: &str, json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mmx"));
        cmd.args(["run", "--backend", "local", "--run-id", id])
            .current_dir(dir.path())
            .env("GITHUB_STEP_SUMMARY", &step_summary);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("running mmx");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{stdout}\n{stderr}");
        (stdout, stderr)
    };
    let once = |text: &str, what: &dyn Fn(&str) -> bool, name: &str| {
        let n = text.lines().filter(|l| what(l)).count();
        assert_eq!(n, 1, "{name}: {n} lines in:\n{text}");
    };

    let (stdout, stderr) = run("shown", false);
    // As mmx names it: `--out` is `runs`, in the directory it ran in.
    let root = Path::new("runs/shown");
    once(
        &stderr,
        &|l| l == format!("mmx: 1 cells in 1 boots, 1 at a time → {}", root.display()),
        "the start line",
    );
    once(
        &stderr,
        &|l| l.starts_with("[  1/1] local/") && l.contains("1 pass"),
        "the boot's line",
    );
    once(
        &stderr,
        &|l| l == format!("mmx: results in {}", root.join("run.json").display()),
        "where the results are",
    );
    once(
        &stdout,
        &|l| {
            l == format!(
                "Reports: {}  {}  {}",
                root.join("report.md").display(),
                root.join("report.html").display(),
                root.join("junit.xml").display()
            )
        },
        "the summary's reports",
    );
    let md = std::fs::read_to_string(dir.path().join(root).join("report.md")).expect("report.md");
    let appended = std::fs::read_to_string(&step_summary).expect("the step summary");
    assert_eq!(appended, format!("{md}\n"), "report.md, appended once");

    let (stdout, stderr) = run("json", true);
    let printed: RunRecord = serde_json::from_str(&stdout).expect("run.json on stdout");
    let written = RunRecord::read(&dir.path().join("runs/json/run.json")).expect("run.json");
    assert_eq!(printed.run_id, written.run_id);
    assert_eq!(printed.cells.len(), 1);
    once(
        &stderr,
        &|l| l.starts_with("mmx: results in "),
        "results in",
    );
}

/// A GitHub Actions step learns the run directory from mmx (`run-dir=` in `$GITHUB_OUTPUT`),
/// because the asked-for `runs/<id>` may be an older run's: a second run with the same id goes
/// to `runs/<id>-2`, and that is the directory mmx names.
#[test]
fn the_run_directory_goes_to_github_output_even_when_the_id_was_taken() {
    if !common::require(
        rustix::process::geteuid().is_root(),
        "`mmx run --backend local` needs root (mount and user namespaces)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).expect("scratch");
    run_local(dir.path(), &scratch);
    let output = dir.path().join("github-output");
    std::fs::write(&output, "earlier=step\n").expect("GITHUB_OUTPUT");
    let out = Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(["run", "--backend", "local", "--run-id", "local"])
        .current_dir(dir.path())
        .env("GITHUB_OUTPUT", &output)
        .env_remove("GITHUB_STEP_SUMMARY")
        .output()
        .expect("running mmx");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = dir.path().join("runs/local-2");
    let want = format!(
        "earlier=step\nrun-dir={}\nreport={}\n",
        second.display(),
        second.join("report.md").display()
    );
    assert_eq!(
        std::fs::read_to_string(&output).expect("read"),
        want,
        "appended after the earlier step's outputs"
    );
    assert!(second.join("run.json").is_file() && second.join("report.md").is_file());
}
