//! Every cell of the default matrix as a test: `cargo nextest run` shows one line per cell,
//! `--partition hash:1/4` runs a quarter, nextest's JUnit lists them.
//!
//! The list is built cheaply (parsing matrix.toml); the work is done lazily. Cells of one boot
//! share that boot: the first test of a boot to run boots the guest (or runs the local agent)
//! and stores the results under `target/mmx-cells/<run>/`, the others wait on a file lock and
//! read them. Nextest runs each test in its own process, so the sharing goes through files,
//! keyed by `NEXTEST_RUN_ID` so a new `cargo nextest run` never reuses old results.
//!
//! Cells that need what this machine lacks (QEMU, root, reachable hosts) are ignored at list
//! time, with the reason printed: an ignored test shows as SKIP, never as a silent pass.
//!
//! `MMX_MATRIX=path` tests another matrix; `MMX_TEST_HOSTS=1` includes `[[hosts]]` cells.

use std::path::{Path, PathBuf};

use harness::backend::qemu::AccelChoice;
use harness::backend::Cancel;
use harness::matrix::{Cell, Matrix};
use harness::results::{BootRecord, CellRecord, RunDir};
use harness::run::{group_boots, BootPlan, Runner};
use libtest_mimic::{Arguments, Failed, Trial};
use serde::{Deserialize, Serialize};

fn main() {
    let args = Arguments::from_args();
    let matrix_path = matrix_path();
    let matrix = match Matrix::load(&matrix_path) {
        Ok(m) => m,
        Err(e) => {
            // A broken matrix is a failing test, not a crash of the test binary.
            let msg = e.to_string();
            let trial = Trial::test("matrix::load", move || Err(Failed::from(msg)));
            libtest_mimic::run(&args, vec![trial]).exit();
        }
    };

    let qemu_missing = which("qemu-system-x86_64").is_none();
    let not_root = !rustix::process::geteuid().is_root();
    let hosts_wanted = std::env::var_os("MMX_TEST_HOSTS").is_some_and(|v| v == "1");
    let mut reasons = Vec::new();
    if qemu_missing {
        reasons.push(
            "qemu::* cells: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)",
        );
    }
    if not_root {
        reasons.push("local::* cells: need root (mount and user namespaces, idmapped mounts)");
    }
    if !matrix.hosts.is_empty() && !hosts_wanted {
        reasons.push("ssh::* cells: set MMX_TEST_HOSTS=1 to visit the matrix's [[hosts]]");
    }
    for r in &reasons {
        eprintln!("mmx matrix tests: SKIPPED {r}");
    }

    let mut trials = Vec::new();
    let mut add = |prefix: &'static str, cells: Vec<Cell>, ignored: bool| {
        for boot in group_boots(cells) {
            for cell in &boot.cells {
                let name = format!("{prefix}::{}", cell.id);
                let boot = boot.clone();
                let id = cell.id.to_string();
                let repeats = matrix.repeats;
                trials.push(
                    Trial::test(name, move || run_cell(&boot, &id, repeats))
                        .with_ignored_flag(ignored),
                );
            }
        }
    };
    add("qemu", matrix.qemu_cells(), qemu_missing);
    // The local backend's filesystem is the scratch dir's; /var/tmp is where it goes by default.
    let local_fs = harness::backend::local::filesystem_of(
        matrix
            .local_scratch
            .as_deref()
            .unwrap_or(Path::new("/var/tmp")),
    )
    .ok()
    .and_then(Result::ok);
    if let Some(fs) = local_fs {
        add("local", matrix.local_cells(fs), not_root);
    }
    add("ssh", matrix.ssh_cells(), !hosts_wanted);
    libtest_mimic::run(&args, trials).exit();
}

fn matrix_path() -> PathBuf {
    std::env::var_os("MMX_MATRIX").map_or_else(
        || harness::agent::workspace_root().join("matrix.toml"),
        PathBuf::from,
    )
}

/// What one boot produced, as stored for the other tests of the same boot.
#[derive(Serialize, Deserialize)]
struct Stored {
    boot: BootRecord,
    cells: Vec<CellRecord>,
    run_dir: PathBuf,
}

fn run_cell(boot: &BootPlan, cell_id: &str, repeats: u32) -> Result<(), Failed> {
    let stored = boot_results(boot, repeats).map_err(|e| Failed::from(format!("{e:#}")))?;
    let cell = stored
        .cells
        .iter()
        .find(|c| c.id == cell_id)
        .ok_or_else(|| Failed::from(format!("boot {} did not record cell {cell_id}", boot.id)))?;
    if cell.is_ok() {
        return Ok(());
    }
    let logs: Vec<String> = stored
        .boot
        .logs
        .iter()
        .map(|l| stored.run_dir.join(l).display().to_string())
        .collect();
    let expected = cell.expected.as_ref().map_or_else(String::new, |x| {
        format!(
            " (expected {}{}{})",
            x.expectation.outcome,
            x.expectation
                .errno
                .as_deref()
                .map_or_else(String::new, |e| format!(" with {e}")),
            x.expectation
                .reason
                .as_deref()
                .map_or_else(String::new, |r| format!(": {r}"))
        )
    });
    Err(Failed::from(format!(
        "{}{expected}: {}\nlogs: {}",
        cell.outcome,
        cell.evidence
            .as_ref()
            .map_or_else(|| "no evidence".to_string(), |e| e.to_string()),
        logs.join(" ")
    )))
}

/// Run the boot once per test run (across processes), or read what another test stored.
fn boot_results(boot: &BootPlan, repeats: u32) -> anyhow::Result<Stored> {
    let run_key =
        std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| format!("pid-{}", std::process::id()));
    let base = harness::agent::workspace_root()
        .join("target")
        .join("mmx-cells")
        .join(&run_key);
    std::fs::create_dir_all(&base)?;
    let flat = RunDir::log_rel(&boot.id, "boot");
    let flat = flat
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "boot".into());
    let lock = std::fs::File::create(base.join(format!("{flat}.lock")))?;
    // Held until this function returns: one process boots, the rest wait and then read.
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    let stored_path = base.join(format!("{flat}.json"));
    if let Ok(text) = std::fs::read_to_string(&stored_path) {
        return Ok(serde_json::from_str(&text)?);
    }
    let run_dir = RunDir::create(&base, "run")?;
    let scratch = match &boot.target {
        harness::matrix::Target::Local => Some(harness::backend::local::scratch_dir(None)?),
        _ => None,
    };
    let matrix = Matrix::load(&matrix_path())?;
    let runner = Runner::new(
        &matrix,
        std::slice::from_ref(boot),
        AccelChoice::Auto,
        scratch.clone(),
        1,
    )?;
    let (b, cells) = runner.run_boot(boot, repeats, &run_dir, &Cancel::new(), None);
    if let Some(s) = scratch {
        let _ = std::fs::remove_dir_all(s);
    }
    let stored = Stored {
        boot: b,
        cells,
        run_dir: run_dir.root.clone(),
    };
    std::fs::write(&stored_path, serde_json::to_string(&stored)?)?;
    Ok(stored)
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}
