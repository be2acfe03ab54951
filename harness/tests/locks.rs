//! kernels.lock and runtimes.lock kept the way cargo keeps Cargo.lock, through the `mmx` a
//! user runs, against Debian's real archive with mmx's private apt (as tests/kernels.rs):
//!
//! - a recipe without an entry is resolved on first use, written and said in one line; with
//!   `--locked` or `CI=true` it is an error naming the recipe and `mmx kernels lock`;
//! - an entry whose packages the archive no longer carries runs the archive's current kernel,
//!   recorded as `kernel_substituted` in run.json and said in the terminal and both report
//!   headers; frozen, it fails naming the locked and the available versions; the lock moves
//!   only with `mmx kernels lock --update`;
//! - `mmx runtimes lock --recipes m.toml` works in a directory without runtimes/, and is the
//!   command a frozen run names when a `[[runtimes]]` entry has no lock; not frozen, a build
//!   writes the entries on first use; a dropped runtime package is substituted or refused as a
//!   kernel is (the containerd build comes from the shared cache when the archive still carries
//!   what the repository's runtimes.lock pins).
//!
//! Kernels come from the shared cache (~/.cache/mmx: the 6.1 cloud kernel is usually there);
//! one TCG boot of it for the run.json of a substituted kernel. Without QEMU that test says
//! SKIPPED (fails under CI=true).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use harness::debian::LockDocument;
use harness::kernels::LockFile;
use harness::results::RunRecord;

/// The repository's 6.1 cloud kernel recipe: the smallest kernel to fetch and boot.
const RECIPE: &str = "debian-6.1";

/// `mmx ARGS` in `dir`. `ci`: with `CI=true`, else without `CI` (the tests themselves may run
/// under CI=true: what mmx does there is one of the things tested).
fn mmx(dir: &Path, args: &[&str], ci: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mmx"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("GITHUB_STEP_SUMMARY");
    if ci {
        cmd.env("CI", "true");
    } else {
        cmd.env_remove("CI");
    }
    cmd.output().expect("running mmx")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A checkout with the repository's 6.1 recipe under `name`, and a one-boot matrix of it:
/// tmpfs, one per-layer cell of one layer and one container.
fn checkout(name: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mmx-locks-")
        .tempdir()
        .expect("tempdir");
    std::fs::create_dir(dir.path().join("kernels")).expect("kernels/");
    let ours = harness::agent::workspace_root().join("kernels");
    std::fs::copy(
        ours.join(format!("{RECIPE}.toml")),
        dir.path().join(format!("kernels/{name}.toml")),
    )
    .expect("copy the recipe");
    std::fs::write(
        dir.path().join("matrix.toml"),
        format!(
            "kernels = [\"{name}\"]\nfilesystems = [\"tmpfs\"]\n\
             [[topologies]]\nsockets = 1\ncores = 1\nthreads = 1\nmemory_mib = 768\n\
             [[scenarios]]\nkind = \"mounts\"\nstrategies = [\"per-layer\"]\n\
             layers = [1]\ncontainers = [1]\nconcurrency = [1]\npasses = 1\n"
        ),
    )
    .expect("matrix");
    dir
}

fn lock_of(dir: &Path) -> LockFile {
    LockFile::load(&dir.join("kernels/kernels.lock")).expect("kernels.lock")
}

/// A recipe added to kernels/ has no entry: `--locked` and `CI=true` refuse to write one,
/// naming the recipe and the command; by default `mmx kernels fetch` resolves it, writes it and
/// says so in one line, and then it is there (a second fetch adds nothing).
#[test]
fn a_new_recipe_is_locked_on_first_use_and_refused_when_frozen() {
    let dir = checkout("fresh");
    let lock = dir.path().join("kernels/kernels.lock");
    for (args, ci, frozen) in [
        (
            &["kernels", "fetch", "--locked", "fresh"][..],
            false,
            "--locked",
        ),
        (&["kernels", "fetch", "fresh"][..], true, "CI=true"),
        (
            &["run", "--backend", "qemu", "--locked"][..],
            false,
            "--locked",
        ),
        (&["run", "--backend", "qemu"][..], true, "CI=true"),
    ] {
        let o = mmx(dir.path(), args, ci);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(
            e.contains("has no entry for kernel `fresh`")
                && e.contains(frozen)
                && e.contains("run `mmx kernels lock`"),
            "{args:?}: {e}"
        );
        assert!(!lock.exists(), "{args:?} wrote the lock");
        assert!(!dir.path().join("runs").exists(), "{args:?} started a run");
    }

    let o = mmx(dir.path(), &["kernels", "fetch", "fresh"], false);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    let said: Vec<&str> = e
        .lines()
        .filter(|l| l.contains("(resolved on first use)"))
        .collect();
    assert_eq!(said.len(), 1, "{e}");
    assert!(
        said[0].starts_with("mmx: kernels/kernels.lock: added fresh = linux-image-6.1."),
        "{e}"
    );
    let entry = lock_of(dir.path()).get("fresh").expect("written").clone();
    assert_eq!(
        (entry.suite.as_str(), entry.requested.as_str()),
        ("bookworm", "linux-image-cloud-amd64")
    );
    assert!(entry.release.starts_with("6.1."), "{entry:?}");
    assert!(entry.packages.iter().all(|p| p.sha256.len() == 64));

    let o = mmx(
        dir.path(),
        &["kernels", "fetch", "--locked", "fresh"],
        false,
    );
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(!e.contains("resolved on first use"), "{e}");
    assert_eq!(lock_of(dir.path()).get("fresh"), Some(&entry));
}

/// Debian dropped the locked kernel (here: a lock entry for a version that never was, with a
/// made-up SHA-256). Frozen, the run fails naming both versions and `mmx kernels lock
/// --update`; by default it runs the archive's current 6.1 and says so in the terminal, run.json
/// and both report headers, leaving the lock alone; `mmx kernels lock` leaves it alone too, and
/// `mmx kernels lock --update gone` moves it.
#[test]
fn a_dropped_kernel_is_substituted_and_recorded_or_refused_when_frozen() {
    if common::qemu_missing() {
        return;
    }
    let dir = checkout("gone");
    let ours = LockFile::load(&harness::agent::workspace_root().join("kernels/kernels.lock"))
        .expect("the repository's kernels.lock");
    let mut gone = ours.get(RECIPE).expect("debian-6.1 is locked").clone();
    gone.name = "gone".into();
    gone.packages[0].version = "6.1.0-0+gone1".into();
    gone.packages[0].sha256 = "0".repeat(64);
    let pinned = gone.packages[0].spec();
    let mut lock = LockFile::default();
    lock.upsert(gone.clone());
    let lock_path = dir.path().join("kernels/kernels.lock");
    lock.save(&lock_path).expect("write kernels.lock");
    let lock_text = std::fs::read_to_string(&lock_path).unwrap();

    let run = |id: &str, locked: bool, ci: bool| {
        let mut args = vec![
            "run",
            "--backend",
            "qemu",
            "--accel",
            "tcg",
            "--out",
            "runs",
            "--run-id",
            id,
        ];
        if locked {
            args.push("--locked");
        }
        let o = mmx(dir.path(), &args, ci);
        let record = RunRecord::read(&dir.path().join(format!("runs/{id}/run.json")))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", stderr(&o)));
        (o, record)
    };

    for (id, locked, ci, frozen) in [
        ("flag", true, false, "--locked"),
        ("ci", false, true, "CI=true"),
    ] {
        let (o, record) = run(id, locked, ci);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{id}: {e}");
        assert!(!record.cells.is_empty());
        for c in &record.cells {
            assert_eq!(c.outcome, protocol::Outcome::InfraError, "{id}");
            let why = c.evidence.as_ref().map_or("", |ev| ev.detail.as_str());
            assert!(
                why.contains(&format!(
                    "pins {pinned}, which the archive no longer carries"
                )) && why.contains("(it has linux-image-6.1.")
                    && why.contains(frozen)
                    && why.contains("run `mmx kernels lock --update gone`"),
                "{id}: {why}"
            );
            assert!(c.provenance.kernel_substituted.is_none(), "{id}");
        }
        assert!(
            e.contains("no longer carries"),
            "{id}: said in the terminal: {e}"
        );
    }

    let (o, record) = run("default", false, false);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    let said: Vec<&str> = e
        .lines()
        .filter(|l| l.contains("which the archive no longer carries"))
        .collect();
    assert_eq!(said.len(), 1, "one line in the terminal: {e}");
    assert!(
        said[0].contains(&pinned) && said[0].contains("running linux-image-6.1."),
        "{e}"
    );
    // And again in the summary at the end, where that line may have scrolled away.
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        summary.contains("Not what the lock files pin")
            && summary.contains(&format!(
                "kernel gone: locked {pinned}; ran linux-image-6.1."
            )),
        "{summary}"
    );
    assert!(!record.cells.is_empty());
    for c in &record.cells {
        let s = c
            .provenance
            .kernel_substituted
            .as_ref()
            .unwrap_or_else(|| panic!("no kernel_substituted: {:?}", c.provenance));
        assert_eq!(s.locked[0], pinned);
        assert!(
            s.used[0].starts_with("linux-image-6.1.") && !s.used[0].contains("gone1"),
            "{s:?}"
        );
    }
    let json = std::fs::read_to_string(dir.path().join("runs/default/run.json")).unwrap();
    assert!(json.contains("\"kernel_substituted\""), "the field's name");
    let md = std::fs::read_to_string(dir.path().join("runs/default/report.md")).unwrap();
    let header = md.split("### Compatibility").next().unwrap();
    assert!(
        header.contains("Not what the lock files pin")
            && header.contains(&format!("kernel gone: locked ` {pinned} `")),
        "{header}"
    );
    let html = std::fs::read_to_string(dir.path().join("runs/default/report.html")).unwrap();
    let header = html.split("</header>").next().unwrap();
    assert!(
        header.contains("not what the lock files pin")
            && header.contains(&format!("kernel gone: locked <code>{pinned}</code>")),
        "{header}"
    );
    assert_eq!(
        std::fs::read_to_string(&lock_path).unwrap(),
        lock_text,
        "a run never moves the lock"
    );

    // `mmx kernels lock` adds what is missing and moves nothing (nothing is missing here).
    let o = mmx(dir.path(), &["kernels", "lock"], false);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(lock_of(dir.path()).get("gone"), Some(&gone));
    // `--update` moves it to what the archive carries.
    let o = mmx(dir.path(), &["kernels", "lock", "--update", "gone"], false);
    assert!(o.status.success(), "{}", stderr(&o));
    let moved = lock_of(dir.path())
        .get("gone")
        .cloned()
        .expect("still locked");
    assert_eq!(
        moved.packages[0].spec(),
        record.cells[0]
            .provenance
            .kernel_substituted
            .as_ref()
            .unwrap()
            .used[0]
    );
}

/// A directory with the repository's 6.1 recipe and lock, and `m.toml`: one containerd runtime
/// from Debian as a column. No runtimes/.
fn runtime_checkout() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mmx-locks-")
        .tempdir()
        .expect("tempdir");
    let kernels = dir.path().join("kernels");
    std::fs::create_dir(&kernels).expect("kernels/");
    let ours = harness::agent::workspace_root().join("kernels");
    for f in [format!("{RECIPE}.toml"), "kernels.lock".to_string()] {
        std::fs::copy(ours.join(&f), kernels.join(&f)).expect("copy the recipe and the lock");
    }
    std::fs::write(
        dir.path().join("m.toml"),
        format!(
            "kernels = [\"{RECIPE}\"]\nfilesystems = [\"tmpfs\"]\n\
             [[runtimes]]\nname = \"c\"\n\
             containerd = {{ debian = \"golang-github-containerd-containerd-dev\" }}\n\
             [[scenarios]]\nkind = \"mounts\"\nstrategies = [\"runtime:c\"]\n\
             layers = [1]\ncontainers = [1]\nconcurrency = [1]\npasses = 1\n"
        ),
    )
    .expect("matrix");
    dir
}

fn runtimes_lock(dir: &Path) -> harness::runtimes::RuntimesLock {
    let lock = harness::runtimes::RuntimesLock::load(&dir.join("runtimes/runtimes.lock"))
        .expect("runtimes.lock");
    assert!(lock.go.is_some(), "{lock:?}");
    assert!(
        lock.containerd("golang-github-containerd-containerd-dev", "sid")
            .is_some(),
        "{lock:?}"
    );
    lock
}

/// A `[[runtimes]]` entry without runtimes.lock: a frozen run (or build) names the command
/// that writes it, and that command works where it was named, in a directory without
/// runtimes/ (it used to fail creating its temporary file there), writing the lock where `mmx
/// run` reads it. Not frozen, `mmx runtimes build` resolves the entries on first use and says
/// so, one line each.
#[test]
fn a_runtime_lock_is_written_where_the_hint_says_or_on_first_use() {
    let dir = runtime_checkout();
    for (args, ci, frozen) in [
        (
            &["run", "--matrix", "m.toml", "--backend", "qemu", "--locked"][..],
            false,
            "--locked",
        ),
        (
            &["runtimes", "build", "--recipes", "m.toml"][..],
            true,
            "CI=true",
        ),
    ] {
        let o = mmx(dir.path(), args, ci);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(
            e.contains("has no entry for the Go toolchain")
                && e.contains("golang-github-containerd-containerd-dev in sid")
                && e.contains(frozen)
                && e.contains("run `mmx runtimes lock --recipes m.toml`"),
            "{args:?}: {e}"
        );
        assert!(!dir.path().join("runtimes").exists(), "{args:?}");
    }

    let o = mmx(
        dir.path(),
        &["runtimes", "lock", "--recipes", "m.toml"],
        false,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    runtimes_lock(dir.path());
    // What `mmx run` reads: the list beside the matrix shows it locked.
    let o = mmx(
        dir.path(),
        &["runtimes", "list", "--recipes", "m.toml"],
        false,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && !out.contains("(not locked)"), "{out}");

    // First use: resolved, written, said; then built (from the shared cache when the archive
    // still carries what the repository's runtimes.lock pins).
    let dir = runtime_checkout();
    let o = mmx(
        dir.path(),
        &["runtimes", "build", "--recipes", "m.toml"],
        false,
    );
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    let said: Vec<&str> = e
        .lines()
        .filter(|l| l.ends_with("(resolved on first use)"))
        .collect();
    assert_eq!(said.len(), 2, "{e}");
    assert!(
        said[0].starts_with("mmx: runtimes/runtimes.lock: added the Go toolchain (golang-go in sid) = golang-1.")
            && said[1].starts_with("mmx: runtimes/runtimes.lock: added containerd's sources (golang-github-containerd-containerd-dev in sid) = golang-github-containerd-containerd-dev="),
        "{e}"
    );
    let lock = runtimes_lock(dir.path());
    let o = mmx(
        dir.path(),
        &["runtimes", "build", "--recipes", "m.toml", "--locked"],
        false,
    );
    let e = stderr(&o);
    assert!(
        o.status.success() && !e.contains("resolved on first use"),
        "{e}"
    );
    assert_eq!(runtimes_lock(dir.path()), lock);
}

/// Debian dropped a package runtimes.lock pins (here: a Go toolchain version that never was).
/// Frozen, `mmx runtimes build` fails naming both versions and `mmx runtimes lock --update`;
/// by default it builds with the archive's current toolchain and says so, leaving the lock
/// alone.
#[test]
fn a_dropped_runtime_package_is_substituted_or_refused_when_frozen() {
    let dir = runtime_checkout();
    let mut lock = harness::runtimes::RuntimesLock::load(
        &harness::agent::workspace_root().join("runtimes/runtimes.lock"),
    )
    .expect("the repository's runtimes.lock");
    let go = lock.go.as_mut().expect("a Go toolchain is locked");
    go.packages[0].version = "1.27.0-0+gone1".into();
    go.packages[0].sha256 = "0".repeat(64);
    let pinned = go.packages[0].spec();
    let lock_path = dir.path().join("runtimes/runtimes.lock");
    lock.save(&lock_path).expect("write runtimes.lock");
    let lock_text = std::fs::read_to_string(&lock_path).unwrap();

    for (args, ci, frozen) in [
        (
            &["runtimes", "build", "--recipes", "m.toml", "--locked"][..],
            false,
            "--locked",
        ),
        (
            &["runtimes", "build", "--recipes", "m.toml"][..],
            true,
            "CI=true",
        ),
    ] {
        let o = mmx(dir.path(), args, ci);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(
            e.contains("runtime `c`: ")
                && e.contains(&format!("pins {pinned}"))
                && e.contains("which the archive no longer carries (it has golang-1.")
                && e.contains(frozen)
                && e.contains("run `mmx runtimes lock --update`"),
            "{args:?}: {e}"
        );
    }

    let o = mmx(
        dir.path(),
        &["runtimes", "build", "--recipes", "m.toml"],
        false,
    );
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    let said: Vec<&str> = e
        .lines()
        .filter(|l| l.contains("which the archive no longer carries"))
        .collect();
    assert_eq!(said.len(), 1, "{e}");
    assert!(
        said[0].starts_with("mmx: runtime c: ")
            && said[0].contains(&pinned)
            && said[0].contains("building with golang-1."),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(&lock_path).unwrap(),
        lock_text,
        "a build never moves the lock"
    );
}
