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

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The agent's target and profile; `src/agent.rs` names the same ones.
const TARGET: &str = "x86_64-unknown-linux-gnu";
const PROFILE: &str = "agent";
const RUSTFLAGS: &str = "-Ctarget-feature=+crt-static";

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
    let root = manifest_dir
        .parent()
        .expect("harness/ lives inside the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(env("OUT_DIR"));

    for p in [
        "Cargo.toml",
        "Cargo.lock",
        "guest-agent/Cargo.toml",
        "guest-agent/build.rs",
        "guest-agent/src",
        "protocol/Cargo.toml",
        "protocol/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }

    let target_dir = agent_target_dir(&out_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "build",
        "--locked",
        "--profile",
        PROFILE,
        "-p",
        "guest-agent",
    ])
    .args(["--target", TARGET])
    .arg("--manifest-path")
    .arg(root.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir)
    .current_dir(&root);
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
        "building the static mmx-agent failed ({status}); see cargo's output above. Needs the \
         {TARGET} target and a C compiler (the agent's lock benchmark has a C yardstick)."
    );

    let built = target_dir.join(TARGET).join(PROFILE).join("mmx-agent");
    let embedded = out_dir.join("mmx-agent");
    // A copy under OUT_DIR: another profile's build may replace the shared file later.
    std::fs::copy(&built, &embedded)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), embedded.display()));
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

/// `<target>/mmx-agent` when OUT_DIR is `<target>/[<triple>/]<profile>/build/<pkg>-<hash>/out`
/// in a directory cargo marked as its own (CACHEDIR.TAG), else a directory under OUT_DIR.
fn agent_target_dir(out_dir: &Path) -> PathBuf {
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
            return target.join("mmx-agent");
        }
    }
    out_dir.join("agent-target")
}
