//! The `mmx` command line as a user meets it: bad input gets exit code 2 and an error naming
//! the file, line and key; listing and re-rendering work from files alone. Nothing here boots
//! a guest (the kernels and QEMU paths are tested in kernels.rs and qemu.rs).

use std::path::Path;
use std::process::{Command, Output};

fn mmx(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running mmx")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const SCENARIO: &str = "[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\ncontainers = [2]\n";

#[test]
fn a_bad_matrix_is_exit_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("matrix.toml"),
        "kernels = [\"k\"]\n[[scenarios]]\nkind = \"mounts\"\nlayers = [0]\n",
    )
    .unwrap();
    let o = mmx(&["run"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("matrix.toml:2:"), "{e}");
    assert!(e.contains("layers = 0"), "{e}");
    // Nothing was started, so no run directory appeared.
    assert!(!dir.path().join("runs").exists());
}

#[test]
fn an_unknown_kernel_names_the_recipes_there_are() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("kernels")).unwrap();
    std::fs::write(
        dir.path().join("kernels/debian-6.1.toml"),
        "[debian]\nsuite = \"bookworm\"\npackage = \"linux-image-cloud-amd64\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("matrix.toml"),
        format!("kernels = [\"debian-9.9\"]\n{SCENARIO}"),
    )
    .unwrap();
    let o = mmx(&["run", "--backend", "qemu"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("`debian-9.9` has no recipe"), "{e}");
    assert!(
        e.contains("debian-6.1"),
        "lists the recipes that exist: {e}"
    );
}

#[test]
fn a_bad_kernel_recipe_names_its_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("kernels")).unwrap();
    std::fs::write(
        dir.path().join("kernels/broken.toml"),
        "[debian]\nsuite = \"buster\"\npackage = \"linux-image-cloud-amd64\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("matrix.toml"),
        format!("kernels = [\"broken\"]\n{SCENARIO}"),
    )
    .unwrap();
    let o = mmx(&["run", "--backend", "qemu"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("broken.toml"), "{e}");
    assert!(e.contains("debian.suite"), "{e}");
    assert!(e.contains("buster"), "{e}");
}

#[test]
fn cells_lists_stable_ids() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("matrix.toml"),
        format!("kernels = [\"k1\", \"k2\"]\nfilesystems = [\"xfs\"]\n{SCENARIO}"),
    )
    .unwrap();
    let o = mmx(&["cells"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let ids: Vec<&str> = out.lines().collect();
    // Two kernels × every built-in strategy (the default).
    assert_eq!(ids.len(), 2 * protocol::Strategy::ALL.len());
    assert!(
        ids.contains(&"k1/1s2c1t/xfs/per-layer-L1-C2-P2-J1"),
        "{ids:?}"
    );
    assert!(
        ids.contains(&"k2/1s2c1t/xfs/fsconfig-fd-L1-C2-P2-J1"),
        "{ids:?}"
    );
}

#[test]
fn the_default_matrix_lists_every_kernel_topology_and_filesystem() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let o = mmx(&["cells"], &root);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for k in ["debian-6.1/", "debian-6.12/", "debian-7.x/"] {
        for fs in ["/ext4/", "/xfs/", "/btrfs/", "/tmpfs/"] {
            assert!(
                out.lines().any(|l| l.starts_with(k) && l.contains(fs)),
                "{k} × {fs} missing"
            );
        }
    }
    assert!(out.contains("/2s1c2t-numa2/"));
}

#[test]
fn report_rerenders_from_run_json_alone() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real-local-host-6.18.json");
    std::fs::copy(&fixture, dir.path().join("run.json")).unwrap();
    let o = mmx(&["report", "."], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["report.md", "report.html", "junit.xml"] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    let o = mmx(&["report", "missing/run.json"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing/run.json"), "{}", stderr(&o));
}

#[test]
fn merge_joins_shards_and_renders_one_report() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real-local-host-6.18.json");
    let run = harness::results::RunRecord::read(&fixture).unwrap();
    let (a, b) = run.cells.split_at(run.cells.len() / 2);
    for (name, cells) in [("a", a), ("b", b)] {
        let mut part = run.clone();
        part.cells = cells.to_vec();
        std::fs::create_dir(dir.path().join(name)).unwrap();
        part.write(&dir.path().join(name).join("run.json")).unwrap();
    }
    let o = mmx(&["merge", "a", "b/run.json", "--out", "m"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let merged = harness::results::RunRecord::read(&dir.path().join("m/run.json")).unwrap();
    assert_eq!(merged.cells.len(), run.cells.len());
    assert!(dir.path().join("m/report.html").is_file());
    let o = mmx(&["merge", "a", "a", "--out", "m2"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is in both"), "{}", stderr(&o));
}
