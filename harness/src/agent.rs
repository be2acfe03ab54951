//! Building the static `mmx-agent` the guests, hosts and the local backend run.
//!
//! The agent must run as PID 1 in an initramfs with no libc beside it, so it is linked
//! statically. `+crt-static` needs an explicit `--target`: without one, RUSTFLAGS would also
//! reach proc-macros, which cannot be static.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;

pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Cargo profile of the shipped agent: release, stripped (see the workspace Cargo.toml).
pub const PROFILE: &str = "agent";

/// The workspace root (where `Cargo.toml` with `[workspace]` lives).
pub fn workspace_root() -> PathBuf {
    // harness/ is one level below the root; resolved at compile time, so a moved binary still
    // finds the sources it was built from (the only place an agent can be built from).
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Build (or reuse) the static release agent and return its path. Cargo decides whether
/// anything changed, so a warm call costs one no-op cargo invocation; the result is memoized
/// for the life of the process.
///
/// `MMX_AGENT=/path/to/mmx-agent` skips the build (for packaged installs and CI caches).
pub fn build_static() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_static_uncached().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn build_static_uncached() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("MMX_AGENT") {
        let p = PathBuf::from(p);
        anyhow::ensure!(p.is_file(), "MMX_AGENT={} is not a file", p.display());
        return Ok(p);
    }
    let root = workspace_root();
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = duct::cmd!(
        cargo,
        "build",
        "--profile",
        PROFILE,
        "--quiet",
        "-p",
        "guest-agent",
        "--target",
        TARGET,
        "--target-dir",
        &target_dir
    )
    .dir(&root)
    .env("RUSTFLAGS", "-C target-feature=+crt-static")
    .stderr_to_stdout()
    .stdout_capture()
    .unchecked()
    .run()
    .context("running cargo to build mmx-agent")?;
    if !out.status.success() {
        anyhow::bail!(
            "building the static mmx-agent failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let bin = target_dir.join(TARGET).join(PROFILE).join("mmx-agent");
    anyhow::ensure!(
        bin.is_file(),
        "cargo succeeded but {} is missing",
        bin.display()
    );
    Ok(bin)
}
