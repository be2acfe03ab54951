//! Builds the static `mmx-agent` so that `mmx` can carry it (`include_bytes!` in
//! `src/agent.rs`): an installed `mmx` then needs neither the mmx sources nor cargo at run time.
//!
//! Why embed instead of installing the agent beside `mmx`: `cargo install` installs only the
//! package's own binaries, and `mmx-agent` belongs to another package, so "beside" would need a
//! second install step and a search rule that a moved or copied binary breaks. Embedding costs
//! about 3 MB of binary and one agent build per cargo target directory (≈50 s cold on 2 cores,
//! measured with `cargo build --profile agent -p guest-agent` in an empty target dir); in return
//! one file is the whole tool, and its `--version` names exactly the agent it runs.
//!
//! How: a nested `cargo build --profile agent -p guest-agent --target x86_64-unknown-linux-gnu`
//! with `+crt-static`. Three things make that safe:
//! - its own target directory: a nested cargo on the outer target directory waits for the
//!   outer build's lock, which never comes free (deadlock). It is `<target>/mmx-agent` when
//!   OUT_DIR sits in a recognisable cargo target dir, so dev, release and check builds share one
//!   agent build, and `OUT_DIR/agent-target` otherwise (e.g. a layout cargo changes later);
//! - a clean environment: the outer build's RUSTFLAGS, target, profile overrides, workspace
//!   wrapper (clippy) and the build-script variables cargo sets for *this* crate must not reach
//!   the agent, which gets exactly `-C target-feature=+crt-static` (the only flag it needs;
//!   `--target` keeps it off proc-macros, which cannot be static);
//! - cargo's jobserver is inherited (`CARGO_MAKEFLAGS`), so the nested build shares the outer
//!   build's CPU slots instead of doubling them.
//!
//! Where the agent's sources come from. `carried/` holds every file of the repository outside
//! this crate that goes into `mmx` — the agent's and the protocol's crates, the workspace's
//! `Cargo.toml` and `Cargo.lock`, and what `include_str!` reads (the report templates, `mmx
//! init`'s files, containerd's `main.go`) — at its repository path, as links in the repository
//! that `cargo package` flattens into the files themselves. It is the one list: what the package
//! holds, what this script watches, and what the GitHub action's cache key hashes. A `Cargo.toml`
//! is carried as `Cargo.toml.carried`, because cargo leaves any directory holding a `Cargo.toml`
//! (another package) out of a package.
//! - In the repository (`carried/` links into the workspace this crate sits in), the agent is
//!   built in that workspace, `--locked`, its target directory shared as above.
//! - In a package (`cargo package`, `cargo install` from a registry or of a `.crate`), there is
//!   no workspace: the carried crates are laid out under OUT_DIR as a workspace of their own, the
//!   repository's manifest with its members cut to them, and its Cargo.lock. Cargo drops the
//!   lock's entries for the crates left out, so that build cannot be `--locked`, but every
//!   version it uses is the lock's. Its target directory is `<target>/mmx-agent-packaged`: its
//!   crates live at another path, and one copy of the built agent per target directory keeps
//!   the two from replacing each other's file between build and copy.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The agent's target and profile; `src/agent.rs` names the same ones.
const TARGET: &str = "x86_64-unknown-linux-gnu";
const PROFILE: &str = "agent";
const RUSTFLAGS: &str = "-Ctarget-feature=+crt-static";

/// The repository's files this crate is built from (see the top of this file).
const CARRIED: &str = "carried";
/// How `carried/` names a `Cargo.toml`.
const CARRIED_MANIFEST: &str = "Cargo.toml.carried";
/// The workspace members the agent is built from, by directory.
const AGENT_CRATES: [&str; 2] = ["protocol", "guest-agent"];

/// Variables the outer cargo sets or honours that would change the nested build.
const DROP_VARS: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_BUILD_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_CRATE_NAME",
    "CARGO_RUSTC_CURRENT_DIR",
    "TARGET",
    "HOST",
    "NUM_JOBS",
    "OPT_LEVEL",
    "DEBUG",
    "PROFILE",
    "OUT_DIR",
    "RUSTC_LINKER",
];
/// Prefixes of the same: this crate's build-script variables and profile overrides (the agent
/// profile inherits `release`, so `CARGO_PROFILE_RELEASE_DEBUG=true` would bloat it).
const DROP_PREFIXES: &[&str] = &[
    "CARGO_CFG_",
    "CARGO_FEATURE_",
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_PROFILE_",
    "DEP_",
];

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let carried = manifest_dir.join(CARRIED);
    let out_dir = PathBuf::from(env("OUT_DIR"));

    let sources = match repository_workspace(&manifest_dir, &carried) {
        Some(root) => Sources::Repository(root),
        None => Sources::Package(lay_out_agent_workspace(
            &carried,
            &out_dir.join("agent-src"),
        )),
    };
    for path in watched(&carried, &sources) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let (workspace, target_dir) = match &sources {
        Sources::Repository(root) => (root, agent_target_dir(&out_dir, "mmx-agent")),
        Sources::Package(dir) => (dir, agent_target_dir(&out_dir, "mmx-agent-packaged")),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.arg("build");
    if let Sources::Repository(_) = sources {
        cmd.arg("--locked");
    }
    cmd.args(["--profile", PROFILE, "-p", "guest-agent"])
        .args(["--target", TARGET])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(workspace);
    for (key, _) in std::env::vars_os() {
        if dropped(&key) {
            cmd.env_remove(&key);
        }
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", RUSTFLAGS);
    let status = cmd.status().unwrap_or_else(|e| {
        panic!(
            "running {} to build mmx-agent: {e}",
            Path::new(&cargo).display()
        )
    });
    assert!(
        status.success(),
        "building the static mmx-agent in {} failed ({status}); see cargo's output above. Needs \
         the {TARGET} target and a C compiler (the agent's lock benchmark has a C yardstick).",
        workspace.display()
    );

    let built = target_dir.join(TARGET).join(PROFILE).join("mmx-agent");
    let embedded = out_dir.join("mmx-agent");
    // A copy under OUT_DIR: another profile's build may replace the shared file later.
    fs::copy(&built, &embedded)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), embedded.display()));
}

/// Where the agent is built from (see the top of this file).
enum Sources {
    /// The workspace this crate sits in: the repository.
    Repository(PathBuf),
    /// The carried crates, laid out as a workspace of their own: a package.
    Package(PathBuf),
}

/// The workspace this crate sits in when `carried/` links into it (the repository); None in a
/// package, where `carried/` holds the files themselves.
fn repository_workspace(manifest_dir: &Path, carried: &Path) -> Option<PathBuf> {
    let root = manifest_dir.parent()?;
    let lock = fs::canonicalize(carried.join("Cargo.lock")).ok()?;
    (fs::canonicalize(root.join("Cargo.lock")).ok()? == lock).then(|| root.to_path_buf())
}

/// What cargo reruns this script for. In the repository: `carried/` (a link added) and what each
/// of its links points at, a directory whole (a file added to it). In a package: the carried
/// files; they never change, and a directory freshly unpacked would look changed.
fn watched(carried: &Path, sources: &Sources) -> Vec<PathBuf> {
    match sources {
        Sources::Repository(_) => std::iter::once(carried.to_path_buf())
            .chain(links_below(carried).iter().map(|link| {
                fs::canonicalize(link).unwrap_or_else(|e| panic!("{}: {e}", link.display()))
            }))
            .collect(),
        Sources::Package(_) => files_below(carried),
    }
}

/// The links below `dir` (not followed), in a stable order.
fn links_below(dir: &Path) -> Vec<PathBuf> {
    let mut links = Vec::new();
    for path in sorted_entries(dir) {
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if meta.is_symlink() {
            links.push(path);
        } else if meta.is_dir() {
            links.extend(links_below(&path));
        }
    }
    links
}

/// Lay the carried agent crates out in `dir` as a workspace: the repository's manifest with
/// its members cut to them, its Cargo.lock, and each crate's files.
fn lay_out_agent_workspace(carried: &Path, dir: &Path) -> PathBuf {
    if dir.exists() {
        fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
    }
    let manifest_path = carried.join(CARRIED_MANIFEST);
    let text = fs::read_to_string(&manifest_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", manifest_path.display()));
    let mut manifest: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", manifest_path.display()));
    let Some(toml::Value::Table(workspace)) = manifest.get_mut("workspace") else {
        panic!("{}: no [workspace]", manifest_path.display());
    };
    workspace.insert(
        "members".into(),
        toml::Value::Array(AGENT_CRATES.iter().map(|c| toml::Value::from(*c)).collect()),
    );
    copy_tree(carried, dir, &|rel| {
        rel == Path::new("Cargo.lock") || AGENT_CRATES.iter().any(|c| rel.starts_with(c))
    });
    let text = toml::to_string(&manifest).unwrap_or_else(|e| panic!("the agent's manifest: {e}"));
    fs::write(dir.join("Cargo.toml"), text)
        .unwrap_or_else(|e| panic!("writing {}: {e}", dir.join("Cargo.toml").display()));
    dir.to_path_buf()
}

/// Copy the files below `from` whose relative path `keep` accepts into `to`, links followed,
/// `Cargo.toml.carried` back to `Cargo.toml`.
fn copy_tree(from: &Path, to: &Path, keep: &dyn Fn(&Path) -> bool) {
    for file in files_below(from) {
        let rel = file.strip_prefix(from).expect("below `from`");
        if !keep(rel) {
            continue;
        }
        let mut dest = to.join(rel);
        if rel.file_name().is_some_and(|n| n == CARRIED_MANIFEST) {
            dest.set_file_name("Cargo.toml");
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        fs::copy(&file, &dest)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", file.display(), dest.display()));
    }
}

/// Every file below `dir`, links followed, in a stable order.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in sorted_entries(dir) {
        let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if meta.is_dir() {
            files.extend(files_below(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                .path()
        })
        .collect();
    entries.sort();
    entries
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("cargo did not set {key}"))
}

fn dropped(key: &OsString) -> bool {
    let Some(key) = key.to_str() else {
        return false;
    };
    DROP_VARS.contains(&key) || DROP_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// `<target>/<name>` when OUT_DIR is `<target>/[<triple>/]<profile>/build/<pkg>-<hash>/out`
/// in a directory cargo marked as its own (CACHEDIR.TAG), else a directory under OUT_DIR.
fn agent_target_dir(out_dir: &Path, name: &str) -> PathBuf {
    let build = out_dir.ancestors().nth(2);
    if build
        .and_then(Path::file_name)
        .is_some_and(|n| n == "build")
    {
        if let Some(target) = out_dir
            .ancestors()
            .skip(4)
            .take(2)
            .find(|d| d.join("CACHEDIR.TAG").is_file())
        {
            return target.join(name);
        }
    }
    out_dir.join("agent-target")
}
