//! Every cell of the default matrix as a test: `cargo nextest run` shows one line per cell,
//! `--partition hash:1/4` runs a quarter, nextest's JUnit lists them.
//!
//! The list is built cheaply (parsing matrix.toml); the work is done lazily. Cells of one guest
//! (every filesystem of a kernel × topology, as `mmx run` boots them) or of one local run or
//! host visit share it: the first test of a unit to run boots the guest (or runs the local
//! agent) and stores the results under `target/mmx-cells/<run>/`, the others wait on a file lock
//! and read them. Nextest runs each test in its own process, so the sharing goes through files,
//! keyed by `NEXTEST_RUN_ID` so a new `cargo nextest run` never reuses old results.
//!
//! Cells that need what this machine lacks (QEMU, root) are ignored at list time with the reason
//! printed (an ignored test shows as SKIP, never as a silent pass); under `CI=true` they fail
//! with the reason instead. `[[hosts]]` cells are opt-in (`MMX_TEST_HOSTS=1`), ignored otherwise.
//!
//! `MMX_MATRIX=path` tests another matrix; `MMX_TEST_HOSTS=1` includes `[[hosts]]` cells.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use harness::backend::qemu::AccelChoice;
use harness::cell::CellKey;
use harness::matrix::Matrix;
use harness::proc::Cancel;
use harness::results::{BootRecord, CellRecord, RunDir};
use harness::run::guest::{guests_of, Guest};
use harness::run::{group_boots, BootPlan, Runner};
use libtest_mimic::{Arguments, Failed, Trial};

mod common;
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
    const NO_QEMU: &str = "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)";
    const NO_ROOT: &str = "local cells need root (mount and user namespaces, idmapped mounts)";
    const NO_HOSTS: &str = "set MMX_TEST_HOSTS=1 to visit the matrix's [[hosts]]";
    let mut reasons = Vec::new();
    if qemu_missing {
        reasons.push(format!("qemu::* cells: {NO_QEMU}"));
    }
    if not_root {
        reasons.push(format!("local::* cells: {NO_ROOT}"));
    }
    if !matrix.hosts.is_empty() && !hosts_wanted {
        reasons.push(format!("ssh::* cells: {NO_HOSTS}"));
    }
    for r in &reasons {
        if common::in_ci() && !r.starts_with("ssh::") {
            eprintln!("mmx matrix tests: CI=true: these cells FAIL: {r}");
        } else {
            eprintln!("mmx matrix tests: SKIPPED {r}");
        }
    }

    // Boots whose cells this machine can run: the ones a test may boot for another.
    let local_fs = harness::backend::local::filesystem_of(
        matrix
            .local_scratch
            .as_deref()
            .unwrap_or(Path::new("/var/tmp")),
    )
    .ok()
    .and_then(Result::ok);
    // (prefix, units, why they cannot run here, whether that is a missing precondition).
    let groups: Vec<(&str, Vec<Unit>, Option<&str>, bool)> = vec![
        (
            "qemu",
            units(group_boots(matrix.qemu_cells())),
            qemu_missing.then_some(NO_QEMU),
            true,
        ),
        (
            "local",
            local_fs.map_or_else(Vec::new, |fs| {
                units(group_boots(matrix.local_cells(fs.into())))
            }),
            not_root.then_some(NO_ROOT),
            true,
        ),
        (
            "ssh",
            units(group_boots(matrix.ssh_cells())),
            (!hosts_wanted).then_some(NO_HOSTS),
            false,
        ),
    ];
    let runnable: Arc<Vec<Unit>> = Arc::new(
        groups
            .iter()
            .filter(|(_, _, why, _)| why.is_none())
            .flat_map(|(_, units, _, _)| units.iter().cloned())
            .collect(),
    );
    let mut trials = Vec::new();
    for (prefix, units, why, precondition) in groups {
        for boot in units {
            for cell in boot.iter().flat_map(|b| &b.cells) {
                let name = format!("{prefix}::{}", cell.key);
                let trial = match why {
                    // Under CI a missing precondition is a failure, never a skip.
                    Some(why) if precondition && common::in_ci() => {
                        let why = format!("CI=true and a precondition is missing: {why}");
                        Trial::test(name, move || Err(Failed::from(why)))
                    }
                    Some(_) => Trial::test(name, || Ok(())).with_ignored_flag(true),
                    None => {
                        let (boot, all) = (boot.clone(), Arc::clone(&runnable));
                        let key = cell.key.clone();
                        let repeats = matrix.repeats;
                        Trial::test(name, move || run_cell(&boot, &all, &key, repeats))
                    }
                };
                trials.push(trial);
            }
        }
    }
    libtest_mimic::run(&args, trials).exit();
}

fn matrix_path() -> PathBuf {
    std::env::var_os("MMX_MATRIX").map_or_else(
        || harness::agent::workspace_root().join("matrix.toml"),
        PathBuf::from,
    )
}

/// What one test run boots once: a guest's boots (one per filesystem), or one local run or
/// host visit.
type Unit = Vec<BootPlan>;

/// Guests as `mmx run` makes them; every other boot a unit of its own.
fn units(boots: Vec<BootPlan>) -> Vec<Unit> {
    let (guests, alone) = guests_of(boots);
    guests
        .into_iter()
        .map(|g| g.parts)
        .chain(alone.into_iter().map(|b| vec![b]))
        .collect()
}

/// What one unit produced, as stored for the other tests of the same unit: a record per boot.
#[derive(Serialize, Deserialize)]
struct Stored {
    boots: Vec<(BootRecord, Vec<CellRecord>)>,
    run_dir: PathBuf,
}

fn run_cell(boot: &Unit, all: &[Unit], key: &CellKey, repeats: u32) -> Result<(), Failed> {
    let stored = boot_results(boot, all, repeats).map_err(|e| Failed::from(format!("{e:#}")))?;
    // A host without a declared filesystem is planned `unmeasured` and recorded with the
    // filesystem its agent measured: the same target and scenario.
    let (record, cell) = stored
        .boots
        .iter()
        .flat_map(|(b, cells)| cells.iter().map(move |c| (b, c)))
        .find(|(_, c)| {
            &c.key == key
                || (key.filesystem == harness::cell::LayerFs::Unmeasured
                    && c.key.target == key.target
                    && c.key.scenario == key.scenario)
        })
        .ok_or_else(|| Failed::from(format!("boot {} did not record cell {key}", flat(boot))))?;
    if cell.is_ok() {
        return Ok(());
    }
    let logs: Vec<String> = record
        .logs
        .iter()
        .map(|l| stored.run_dir.join(l).display().to_string())
        .collect();
    let expected = cell.expected.as_ref().map_or_else(String::new, |x| {
        format!(
            " (expected {}{})",
            x.expectation.describe(),
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

/// Where this test run keeps boots' results: per `cargo nextest run` (NEXTEST_RUN_ID), or per
/// process under `cargo test`.
fn store_dir() -> anyhow::Result<PathBuf> {
    let run_key =
        std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| format!("pid-{}", std::process::id()));
    let base = harness::agent::workspace_root()
        .join("target")
        .join("mmx-cells")
        .join(run_key);
    std::fs::create_dir_all(&base)?;
    Ok(base)
}

fn flat(unit: &Unit) -> String {
    let Some(boot) = unit.first() else {
        return "boot".into();
    };
    RunDir::log_rel(&boot.key, "boot")
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "boot".into())
}

fn read_stored(base: &Path, boot: &Unit) -> Option<Stored> {
    let text = std::fs::read_to_string(base.join(format!("{}.json", flat(boot)))).ok()?;
    serde_json::from_str(&text).ok()
}

/// Take a boot's lock: blocking, or `None` when another process holds it.
fn lock(base: &Path, boot: &Unit, block: bool) -> anyhow::Result<Option<std::fs::File>> {
    use rustix::fs::FlockOperation::{LockExclusive, NonBlockingLockExclusive};
    let f = std::fs::File::create(base.join(format!("{}.lock", flat(boot))))?;
    match rustix::fs::flock(
        &f,
        if block {
            LockExclusive
        } else {
            NonBlockingLockExclusive
        },
    ) {
        Ok(()) => Ok(Some(f)),
        Err(rustix::io::Errno::WOULDBLOCK) if !block => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The results of `boot`, booting it at most once per test run across all test processes.
///
/// Nextest runs two tests at a time, and neighbouring tests are usually cells of the same boot;
/// so a test whose boot is being booted by another process does not just wait: it boots some
/// other boot nobody has started yet, then comes back. Both CPUs stay busy with guests.
fn boot_results(boot: &Unit, all: &[Unit], repeats: u32) -> anyhow::Result<Stored> {
    let base = store_dir()?;
    loop {
        if let Some(s) = read_stored(&base, boot) {
            return Ok(s);
        }
        if let Some(_held) = lock(&base, boot, false)? {
            return match read_stored(&base, boot) {
                Some(s) => Ok(s),
                None => run_and_store(&base, boot, repeats),
            };
        }
        let mut stole = false;
        for other in all.iter().filter(|o| flat(o) != flat(boot)) {
            if read_stored(&base, other).is_some() {
                continue;
            }
            if let Some(_held) = lock(&base, other, false)? {
                if read_stored(&base, other).is_none() {
                    // Its own test reports any error; here it only costs the time.
                    let _ = run_and_store(&base, other, repeats);
                }
                stole = true;
                break;
            }
        }
        if !stole {
            // Nothing left to start: wait for whoever boots ours (or boot it if they died).
            let _held = lock(&base, boot, true)?;
            return match read_stored(&base, boot) {
                Some(s) => Ok(s),
                None => run_and_store(&base, boot, repeats),
            };
        }
    }
}

fn run_and_store(base: &Path, unit: &Unit, repeats: u32) -> anyhow::Result<Stored> {
    let run_dir = RunDir::create(base, "run")?;
    let Some(boot) = unit.first() else {
        anyhow::bail!("an empty unit");
    };
    let scratch = match &boot.target {
        harness::matrix::Target::Local => Some(harness::backend::local::scratch_dir(None)?),
        _ => None,
    };
    let matrix = Matrix::load(&matrix_path())?;
    let runner = Runner::new(
        &matrix,
        unit,
        AccelChoice::Auto,
        scratch.clone(),
        1,
        common::sink(),
        harness::debian::LockPolicy::from_env(),
    );
    let result = runner.map(|r| {
        if Guest::shares(boot) {
            let guest = Guest {
                parts: unit.clone(),
                rerun: false,
            };
            r.run_guest(&guest, repeats, &run_dir, &Cancel::new())
        } else {
            vec![r.run_boot(boot, repeats, &run_dir, &Cancel::new(), None)]
        }
    });
    if let Some(s) = scratch {
        let _ = std::fs::remove_dir_all(s);
    }
    let stored = Stored {
        boots: result?,
        run_dir: run_dir.root.clone(),
    };
    let path = base.join(format!("{}.json", flat(unit)));
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string(&stored)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(stored)
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}
