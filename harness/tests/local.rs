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

fn run_local(dir: &Path, scratch: &Path) -> RunRecord {
    std::fs::write(
        dir.join("matrix.toml"),
        format!(
            "[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"common-parent\"]\nlayers = [2]\n\
             containers = [2]\n[local]\nscratch_dir = \"{}\"\n",
            scratch.display()
        ),
    )
    .expect("matrix");
    let out = Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(["run", "--backend", "local", "--run-id", "local"])
        .current_dir(dir)
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
