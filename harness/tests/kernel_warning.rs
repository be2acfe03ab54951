//! A real kernel warning in a guest, end to end: Debian's linux-source-6.12 (the tree
//! kernel_build.rs's tests unpack into the cache) as a git repository of three commits — the
//! base, a one-line patch that makes overlayfs's `ovl_fill_super` WARN once on an overlay of
//! more than three lower layers, an unrelated change — built with the minimal config through a
//! `[source] tree` recipe and booted under QEMU by the real binary.
//!
//! `mmx run` shows the warning on the first cell that mounts such an overlay (per-layer, four
//! layers) and on no other: not the user-spin lock benchmark and the one-layer overlay cell that
//! ran before it in the same guest, not the probes (which mount overlays of at most two
//! layers). Without `--fail-on-kernel-warning` the cell keeps its pass and the run succeeds;
//! with it the cell fails (`kernel-warning`) and the run exits 1. Then `mmx bisect
//! --fail-on-kernel-warning` from the base to the tip names the patch.
//!
//! Why `__warn()` and not `WARN_ON_ONCE()`: the minimal config has `CONFIG_BUG` off (it builds
//! only what a guest needs), and without it `WARN_ON()` prints nothing. The patch calls the
//! function `WARN_ON()`'s slow path calls (kernel/panic.c), once (`DO_ONCE_LITE_IF`), so the
//! console shows the kernel's own `WARNING: CPU: … at fs/overlayfs/super.c:…` splat with its
//! stack.
//!
//! The build directory is the one kernel_build.rs and bisect.rs share (`linux-6.12-<config>`):
//! each build here is incremental. Needs the kernel build tools, QEMU and Debian's archive
//! keyring; under CI=true a missing one fails the test, elsewhere it is skipped loudly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

mod common;

use common::build_tools;

use harness::bisect::{BisectRecord, BisectResult};
use harness::debian::LockDocument;
use harness::kernels::debian_source_tree;
use harness::kernels::recipe::load_recipe;
use harness::kernels::LockFile;
use harness::results::{CellFailure, RunRecord};
use protocol::kmsg::{Phase, SplatKind};

const KERNEL: &str = "warn-6.12";
const WARNING_COMMIT: &str = "ovl: warn once on an overlay of more than three layers (mmx test)";
const GIT: &str = "git -c user.name=mmx-tests -c user.email=mmx@localhost -c commit.gpgsign=false";

fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("LC_ALL", "C")
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Replace a file's text without writing through its hard link to the pristine tree.
fn rewrite(path: &Path, f: impl FnOnce(&str) -> String) {
    let text = std::fs::read_to_string(path).expect("read");
    let new = f(&text);
    assert_ne!(new, text, "{}: no change", path.display());
    std::fs::remove_file(path).expect("remove");
    std::fs::write(path, new).expect("write");
}

/// A checkout: the recipe at the repository's HEAD, and a matrix whose one guest runs the
/// user-spin benchmark, then per-layer with one layer, then with four.
fn checkout(dir: &Path, repo: &Path) -> PathBuf {
    let co = dir.join("checkout");
    std::fs::create_dir_all(co.join("kernels")).expect("mkdir");
    std::fs::write(
        co.join(format!("kernels/{KERNEL}.toml")),
        format!(
            "description = \"mmx kernel-warning test\"\n\n[source]\ntree = \"{}\"\nrev = \"HEAD\"\nconfig = \"minimal\"\n",
            repo.display()
        ),
    )
    .expect("recipe");
    std::fs::write(
        co.join("matrix.toml"),
        format!(
            "kernels = [\"{KERNEL}\"]\nfilesystems = [\"tmpfs\"]\n\n[run]\nmemory_mib = 768\n\n\
             [[topologies]]\nsockets = 1\ncores = 2\nthreads = 1\n\n\
             [[scenarios]]\nkind = \"lockbench\"\nbench = \"user-spin\"\nlocks = [\"tas\"]\n\
             warmup_ms = 10\nduration_ms = 50\n\n\
             [[scenarios]]\nkind = \"mounts\"\nstrategies = [\"per-layer\"]\n\
             layers = [1, 4]\ncontainers = [1]\nconcurrency = [1]\npasses = 1\n"
        ),
    )
    .expect("matrix");
    co
}

fn mmx(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("mmx")
}

fn text(o: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run_record(dir: &Path) -> RunRecord {
    let json = std::fs::read_to_string(dir.join("run.json")).expect("run.json");
    serde_json::from_str(&json).expect("run.json parses")
}

/// The cell ids in the order the guest ran them (the boot's plan, as logged).
fn item_order(dir: &Path, run: &RunRecord) -> Vec<String> {
    let boot = &run.boots[0];
    let plan = boot
        .logs
        .iter()
        .find(|l| l.to_string_lossy().ends_with("plan.json"))
        .expect("the plan is logged");
    let plan: protocol::Plan =
        serde_json::from_str(&std::fs::read_to_string(dir.join(plan)).expect("plan"))
            .expect("plan parses");
    plan.items.into_iter().map(|i| i.cell_id).collect()
}

#[test]
fn a_kernel_warning_is_its_cells_fails_it_under_the_flag_and_bisects_to_the_patch() {
    if !(build_tools() && !common::qemu_missing()) {
        return;
    }
    let total = Instant::now();
    let cache = common::cache();
    let kernels = harness::agent::workspace_root().join("kernels");
    let minimal = load_recipe(&kernels.join("debian-6.12-minimal.toml")).expect("recipe");
    let lock = LockFile::load(&kernels.join("kernels.lock")).expect("kernels.lock");
    let pristine = debian_source_tree(&minimal, &lock, &cache).unwrap_or_else(|e| panic!("{e:#}"));

    // The repository: base, the warning, an unrelated change. A nonce keeps the commit ids new.
    let t = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("linux");
    let status = Command::new("cp")
        .arg("-al")
        .arg(&pristine)
        .arg(&repo)
        .status()
        .expect("cp");
    assert!(status.success());
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    sh(
        &repo,
        &format!("git init -q && git config gc.auto 0 && git add --all --force . && {GIT} commit -qm 'base: Debian linux-source-6.12 ({nonce})'"),
    );
    rewrite(&repo.join("fs/overlayfs/super.c"), |t| {
        let anchor = "\tsb->s_d_op = &ovl_dentry_operations;\n";
        assert_eq!(t.matches(anchor).count(), 1, "the patch's context");
        t.replace(
            anchor,
            "\tsb->s_d_op = &ovl_dentry_operations;\n\
             \t(void)DO_ONCE_LITE_IF(ctx->nr > 3, __warn, __FILE__, __LINE__, __builtin_return_address(0), TAINT_WARN, NULL, NULL);\n",
        )
    });
    sh(&repo, &format!("{GIT} commit -qam '{WARNING_COMMIT}'"));
    rewrite(&repo.join("kernel/fork.c"), |t| {
        format!("/* mmx kernel-warning test: an unrelated change */\n{t}")
    });
    sh(
        &repo,
        &format!("{GIT} commit -qam 'fork: an unrelated change'"),
    );
    let ids: Vec<String> = sh(&repo, "git rev-list --reverse HEAD")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 3);
    eprintln!(
        "MEASURE kernel-warning test: repository made in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let co = checkout(tmp.path(), &repo);

    // Without the flag: the warning is the four-layer cell's, the cell passes, the run too.
    let t = Instant::now();
    let out = mmx(
        &[
            "run", "--accel", "tcg", "--out", "runs", "--run-id", "plain",
        ],
        &co,
    );
    eprintln!(
        "MEASURE kernel-warning test: mmx run (build at the tip and one boot) {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dir = co.join("runs/plain");
    let run = run_record(&dir);
    assert_eq!(run.boots.len(), 1);
    let order = item_order(&dir, &run);
    let warned = order
        .iter()
        .position(|id| id.ends_with("/per-layer-L4-C1-P1-J1"))
        .expect("the four-layer cell ran");
    assert!(
        order[..warned]
            .iter()
            .any(|id| id.contains("lockbench-user-spin"))
            && order[..warned]
                .iter()
                .any(|id| id.contains("/per-layer-L1-")),
        "the other cells ran before it: {order:?}"
    );
    for c in &run.cells {
        let id = c.key.to_string();
        if id == order[warned] {
            assert_eq!(c.kernel_warnings.len(), 1, "{id}: {:?}", c.kernel_warnings);
            let w = &c.kernel_warnings[0];
            assert_eq!(w.kind, SplatKind::Warning);
            assert_eq!(
                w.during,
                Some(Phase::Item(u32::try_from(warned).expect("index")))
            );
            // The minimal config has no kallsyms: the caller and the frames are addresses.
            assert!(
                w.headline().starts_with("WARNING: CPU: ")
                    && w.headline().contains(" at fs/overlayfs/super.c:"),
                "{w:?}"
            );
            assert!(
                w.lines.iter().any(|l| l == "Call Trace:")
                    && w.lines_total as usize > w.lines.len(),
                "{w:?}"
            );
            assert_eq!(c.failed_by, None, "no flag, no failure");
            assert!(c.is_ok(), "{id}: {:?}", c.outcome);
        } else {
            assert!(
                c.kernel_warnings.is_empty(),
                "{id}: {:?}",
                c.kernel_warnings
            );
        }
    }
    // The boot keeps it too, and nothing printed during the probes or outside the plan.
    assert_eq!(run.boots[0].kernel_warnings.len(), 1, "{:?}", run.boots[0]);
    let report = std::fs::read_to_string(dir.join("report.md")).expect("report.md");
    let line = report
        .lines()
        .find(|l| l.contains("per-layer-L4") && l.contains("WARNING: CPU: "))
        .unwrap_or_else(|| panic!("the warning in report.md:\n{report}"));
    eprintln!("MEASURE kernel-warning test: report.md line: {line}");
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
    assert!(html.contains("Kernel warnings") && html.contains("fs&#x2f;overlayfs&#x2f;super.c:"));

    // With the flag: the same cell fails, the run exits 1; the kernel is cached now.
    let t = Instant::now();
    let out = mmx(
        &[
            "run",
            "--accel",
            "tcg",
            "--out",
            "runs",
            "--run-id",
            "strict",
            "--fail-on-kernel-warning",
        ],
        &co,
    );
    eprintln!(
        "MEASURE kernel-warning test: mmx run --fail-on-kernel-warning (cached kernel) {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let dir = co.join("runs/strict");
    let run = run_record(&dir);
    for c in &run.cells {
        let id = c.key.to_string();
        if id.ends_with("/per-layer-L4-C1-P1-J1") {
            assert_eq!(c.failed_by, Some(CellFailure::KernelWarning), "{id}");
            assert!(!c.is_ok());
        } else {
            assert_eq!(c.failed_by, None, "{id}");
            assert!(c.is_ok(), "{id}: {:?}", c.outcome);
        }
    }
    let junit = std::fs::read_to_string(dir.join("junit.xml")).expect("junit.xml");
    assert!(
        junit.contains(r#"<failure type="kernel-warning""#),
        "{junit}"
    );

    // Bisect by the warning: base good, tip bad, the patch named.
    let t = Instant::now();
    let out = mmx(
        &[
            "bisect",
            "--kernel",
            KERNEL,
            "--good",
            &ids[0],
            "--bad",
            "HEAD",
            "--filter",
            "*/per-layer-L4-*",
            "--fail-on-kernel-warning",
            "--accel",
            "tcg",
            "--out",
            "runs",
        ],
        &co,
    );
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bisect_dir = std::fs::read_dir(co.join("runs"))
        .expect("runs/")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("bisect-"))
        })
        .expect("the bisect directory");
    let record: BisectRecord = serde_json::from_str(
        &std::fs::read_to_string(bisect_dir.join("bisect.json")).expect("bisect.json"),
    )
    .expect("bisect.json parses");
    let Some(BisectResult::Found {
        commit, subject, ..
    }) = &record.result
    else {
        panic!("{:?}\n{}", record.result, text(&out))
    };
    assert_eq!(commit, &ids[1]);
    assert_eq!(subject, WARNING_COMMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "first changed commit: {} {WARNING_COMMIT}",
            &ids[1][..12]
        )),
        "{stdout}"
    );
    eprintln!(
        "MEASURE kernel-warning test: bisect {:.1}s ({} steps); whole test {:.1}s",
        took.as_secs_f64(),
        record.steps.len(),
        total.elapsed().as_secs_f64()
    );
}
