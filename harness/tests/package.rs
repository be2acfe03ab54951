//! mmx as a registry would ship it. `cargo package` packs the protocol crate and the harness
//! (the agent's sources and every repository file mmx is built from travel inside the harness
//! package, in `carried/`); the harness `.crate` is unpacked and `cargo install`ed into a
//! temporary root the way `cargo install mmx` from a registry would build it: from the package
//! alone, with the package's own Cargo.lock (`--locked`) and the protocol crate as the registry
//! would hand it out (the packed `.crate`, patched in for crates.io, where it is not published).
//! The installed `mmx init` must write byte for byte what the checkout's writes, and its agent
//! must run.
//!
//! Also: every entry of `harness/carried/` is a link to the repository file of the same path,
//! so nothing carried is a copy that could drift from the repository.
//!
//! Slow: the packaged harness and its agent are compiled from the package (a debug build; its
//! registry dependencies come from the workspace's target directory, as nextest compiled them).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    harness::agent::workspace_root()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

fn output_text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace())
        .env("CARGO_TARGET_DIR", target_dir());
    cmd
}

fn run(cmd: &mut Command, what: &str) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(o.status.success(), "{what} failed: {}", output_text(&o));
}

/// Unpack `<target>/package/<name>.crate` into `dir/<name>`, in step with the last unpacking:
/// a file whose bytes changed is written anew, one the package no longer has is removed, the
/// others are left alone. Cargo packs every file with one fixed mtime, and cargo judges a path
/// crate's freshness by mtimes: unpacked as is over an earlier version, a changed file would
/// look unchanged and the install would build the old code. Left alone, an unchanged package
/// builds nothing again.
fn unpack(name: &str, dir: &Path) -> PathBuf {
    let krate = target_dir().join("package").join(format!("{name}.crate"));
    let file = std::fs::File::open(&krate).unwrap_or_else(|e| panic!("{}: {e}", krate.display()));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut packed = BTreeMap::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.unwrap_or_else(|e| panic!("{}: {e}", krate.display()));
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().expect("entry path").into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read entry");
        packed.insert(dir.join(path), bytes);
    }
    let unpacked = dir.join(name);
    if unpacked.exists() {
        for stale in files(&unpacked).into_keys() {
            if !packed.contains_key(&unpacked.join(&stale)) {
                std::fs::remove_file(unpacked.join(&stale)).expect("remove a stale file");
            }
        }
    }
    for (path, bytes) in packed {
        if std::fs::read(&path).is_ok_and(|old| old == bytes) {
            continue;
        }
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    unpacked
}

/// Every file below `dir` (links followed), by relative path, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                out.insert(p.strip_prefix(dir).expect("below").to_path_buf(), bytes);
            }
        }
    }
    out
}

/// `mmx init --action me/mmx@v1` into a fresh directory: the files it wrote.
fn init_files(mmx: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Command::new(mmx)
        .args(["init", "--action", "me/mmx@v1"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .expect("mmx init");
    assert!(o.status.success(), "{}: {}", mmx.display(), output_text(&o));
    files(dir.path())
}

#[test]
fn the_packaged_crate_installs_and_its_mmx_init_writes_the_checkouts_files() {
    // The protocol is packed too: the harness depends on it as a registry crate.
    run(
        cargo().args([
            "package",
            "--locked",
            "--no-verify",
            "--allow-dirty",
            "-p",
            "mmx-protocol",
            "-p",
            "harness",
        ]),
        "cargo package",
    );
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaged");
    std::fs::create_dir_all(&base).expect("mkdir");
    let version = env!("CARGO_PKG_VERSION");
    let harness = unpack(&format!("harness-{version}"), &base);
    let protocol = unpack(&format!("mmx-protocol-{version}"), &base);
    assert!(
        !harness.join("carried/Cargo.lock").is_symlink(),
        "cargo package flattens the carried links into files"
    );

    let root = base.join("root");
    let patch = format!(
        "patch.crates-io.mmx-protocol.path={:?}",
        protocol.to_str().expect("a UTF-8 path")
    );
    run(
        cargo()
            .args(["install", "--locked", "--debug", "--force", "--path"])
            .arg(&harness)
            .arg("--root")
            .arg(&root)
            .args(["--config", &patch]),
        "cargo install of the packaged harness",
    );
    let packaged = root.join("bin/mmx");

    let version = Command::new(&packaged)
        .arg("--version")
        .output()
        .expect("mmx");
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let hash = version
        .trim()
        .strip_suffix(')')
        .and_then(|v| v.rsplit_once("(agent "))
        .map(|(_, h)| h.to_string())
        .unwrap_or_else(|| panic!("`mmx --version` names no agent: {version}"));
    // The same sources, toolchain and lock build the same agent: the one the tests ran.
    assert_eq!(
        hash,
        harness::agent::embedded_hash(),
        "the packaged mmx carries another agent than the checkout's: {version}"
    );

    let from_package = init_files(&packaged);
    let from_checkout = init_files(Path::new(env!("CARGO_BIN_EXE_mmx")));
    assert_eq!(
        from_package.keys().collect::<Vec<_>>(),
        from_checkout.keys().collect::<Vec<_>>(),
        "the same files"
    );
    for (path, bytes) in &from_checkout {
        assert!(
            from_package[path] == *bytes,
            "{} differs between the packaged and the checkout's mmx init",
            path.display()
        );
    }

    // The agent built from the carried sources runs: one cell on this machine's kernel.
    if common::require(
        rustix::process::geteuid().is_root(),
        "not root: `mmx run --backend local` needs root",
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("matrix.toml"),
            "[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"fsconfig-fd\"]\nlayers = [2]\n\
             containers = [1]\n",
        )
        .expect("matrix");
        let o = Command::new(&packaged)
            .args(["run", "--backend", "local", "--run-id", "packaged"])
            .current_dir(dir.path())
            .env_remove("GITHUB_STEP_SUMMARY")
            .env_remove("GITHUB_OUTPUT")
            .output()
            .expect("mmx run");
        assert!(o.status.success(), "{}", output_text(&o));
        let run = harness::results::RunRecord::read(&dir.path().join("runs/packaged/run.json"))
            .expect("run.json");
        assert_eq!(run.cells.len(), 1);
        assert!(run.cells[0].is_ok(), "{:?}", run.cells[0]);
    }
}

/// Each entry of `harness/carried/` links to the repository path it names (`Cargo.toml.carried`
/// for a `Cargo.toml`); the directories between are real and hold nothing else.
#[test]
fn carried_files_are_links_to_the_repositorys_own() {
    let carried = workspace().join("harness/carried");
    let mut links = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = carried.join(&rel);
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let e = e.expect("dir entry");
            let rel = rel.join(e.file_name());
            let kind = e.file_type().expect("file type");
            if kind.is_dir() {
                stack.push(rel);
                continue;
            }
            assert!(
                kind.is_symlink(),
                "harness/carried/{} is a copy; make it a link to the repository's file",
                rel.display()
            );
            let mut named = rel.clone();
            if named.file_name().is_some_and(|n| n == "Cargo.toml.carried") {
                named.set_file_name("Cargo.toml");
            }
            let target = std::fs::canonicalize(carried.join(&rel))
                .unwrap_or_else(|e| panic!("harness/carried/{}: {e}", rel.display()));
            let want = std::fs::canonicalize(workspace().join(&named))
                .unwrap_or_else(|e| panic!("{}: {e}", named.display()));
            assert_eq!(
                target,
                want,
                "harness/carried/{} links elsewhere",
                rel.display()
            );
            links += 1;
        }
    }
    assert!(
        links >= 10,
        "only {links} links below {}",
        carried.display()
    );
}
