//! Building the repository's example runtime (`runtimes/example`, the crate
//! `mmx-example-runtime`) statically, the same way as the agent: it is what a `binary = …`
//! recipe points at in tests and a starting point for anyone writing their own runtime.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::agent::{workspace_root, PROFILE, TARGET};
use crate::proc::Run;

/// Building the example runtime: a few crates, a minute cold on two cores; cargo may also wait
/// for another cargo's lock on the target directory (a test run building beside it). Past half
/// an hour it is stuck.
const BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);

pub const PACKAGE: &str = "mmx-example-runtime";

/// Build (or reuse) the static example runtime and return its path.
/// `MMX_EXAMPLE_RUNTIME=/path` skips the build.
pub fn build_static() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("MMX_EXAMPLE_RUNTIME") {
        let p = PathBuf::from(p);
        anyhow::ensure!(
            p.is_file(),
            "MMX_EXAMPLE_RUNTIME={} is not a file",
            p.display()
        );
        return Ok(p);
    }
    let root = workspace_root();
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--profile", PROFILE, "--quiet", "-p", PACKAGE])
        .args(["--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        .current_dir(&root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
    let out = Run::new(cmd, BUILD_LIMIT)
        .merge_stderr()
        .run()
        .context("running cargo to build the example runtime")?;
    anyhow::ensure!(
        out.success(),
        "building the static {PACKAGE} failed:\n{}",
        out.stdout
    );
    let bin = target_dir.join(TARGET).join(PROFILE).join(PACKAGE);
    anyhow::ensure!(
        bin.is_file(),
        "cargo succeeded but {} is missing",
        bin.display()
    );
    Ok(bin)
}
