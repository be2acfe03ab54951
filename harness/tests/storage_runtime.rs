//! containers/storage (CRI-O's and Podman's layer store) as a runtime column, end to end through
//! `mmx run`: mmx builds its overlay driver from Debian's golang-github-containers-storage-dev
//! (runtimes/runtimes.lock) and runs `runtimes/containers-storage/main.go`, whose mount job is the
//! driver's own `Driver.Get` with the container's uid/gid maps and whose unmount job is
//! `Driver.Put`. The kernel counts the mount operations per container (fanotify mount events);
//! the known answer, pinned in each test's matrix (`[[expect]]`), is what 1.64 really does: one
//! idmapped mount per layer, 2·(2L+1) operations per container over its two passes.
//!
//! And the release gate, as containerd has one: containers/storage with
//! `runtimes/containers-storage/testdata/group-layers.patch` (the store mapped once, O(1)) as the
//! baseline and 1.64 as Debian ships it (one idmapped mount per layer) as the candidate, both at
//! L = 1, 10, 50: `mmx compare` fails on the count, with p-values.
//!
//! Needs root (the local backend mounts), QEMU for the guest, and deb.debian.org or the cache for
//! the kernels and the Go packages.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::results::{CellRecord, RunRecord};
use protocol::{Outcome, MOUNT_OPS_PER_CONTAINER};

fn root() -> bool {
    common::require(
        rustix::process::geteuid().is_root(),
        "`mmx run --backend local` needs root (mount and user namespaces, idmapped mounts)",
    )
}

/// A directory holding `matrix.toml` with the repository's `kernels/` and `runtimes/` beside it,
/// as a user's checkout has them.
fn project(matrix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mmx-storage-runtime-")
        .tempdir()
        .expect("tempdir");
    let repo = harness::agent::workspace_root();
    for sub in ["kernels", "runtimes"] {
        std::os::unix::fs::symlink(repo.join(sub), dir.path().join(sub)).expect("symlink");
    }
    std::fs::write(dir.path().join("matrix.toml"), matrix).expect("matrix.toml");
    dir
}

fn mmx(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running mmx")
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(dir: &Path, id: &str, args: &[&str]) -> (Output, RunRecord) {
    let mut all = vec!["run", "--run-id", id];
    all.extend_from_slice(args);
    let out = mmx(dir, &all);
    let path = dir.join("runs").join(id).join("run.json");
    let record = RunRecord::read(&path).unwrap_or_else(|e| panic!("{e:#}\n{}", text(&out)));
    (out, record)
}

fn cell<'a>(run: &'a RunRecord, id_part: &str) -> &'a CellRecord {
    run.cells
        .iter()
        .find(|c| c.key.to_string().contains(id_part))
        .unwrap_or_else(|| {
            let ids: Vec<String> = run.cells.iter().map(|c| c.key.to_string()).collect();
            panic!("no cell `{id_part}` in {ids:#?}")
        })
}

fn ops_per_container(c: &CellRecord) -> Vec<f64> {
    c.metrics
        .get(MOUNT_OPS_PER_CONTAINER)
        .map(|m| m.samples.clone())
        .unwrap_or_default()
}

fn p50_latency_ms(c: &CellRecord) -> Option<f64> {
    c.metrics
        .get("start_latency_us")
        .and_then(|m| m.summary())
        .map(|s| s.p50 / 1000.0)
}

/// containers/storage's sources from Debian, as `mmx runtimes build` builds them, optionally
/// patched.
fn storage(name: &str, patches: &[PathBuf]) -> String {
    let patches: Vec<String> = patches
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    format!(
        "[[runtimes]]\nname = \"{name}\"\nstorage = {{ debian = \"golang-github-containers-storage-dev\" }}\npatches = [{}]\n\n",
        patches.join(", ")
    )
}

/// The known answers of containers/storage 1.64: `getMappedMountRoot` of a lower
/// `<layer>/diff` is the layer's own directory, so every layer is idmapped on its own — per
/// pass L idmapped mounts attached and detached plus the overlay: 2·(2L+1) per container over
/// two passes.
fn answers(column: &str, layers: &[u32]) -> String {
    layers
        .iter()
        .map(|l| {
            format!(
                "[[expect]]\ncells = \"*/runtime:{column}-L{l}-*\"\noutcome = \"pass\"\nmount_ops_per_container = {}\nreason = \"one idmapped mount per layer (getMappedMountRoot is the layer's own directory)\"\n\n",
                2 * (2 * l + 1)
            )
        })
        .collect()
}

/// One mounts scenario of `column`; `concurrency` workers, each with its own runtime process.
fn scenario(column: &str, layers: &[u32], containers: u32, concurrency: u32) -> String {
    let l: Vec<String> = layers.iter().map(u32::to_string).collect();
    format!(
        "[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"runtime:{column}\"]\nlayers = [{}]\ncontainers = [{containers}]\nconcurrency = [{concurrency}]\n",
        l.join(", ")
    )
}

fn assert_per_layer(run: &RunRecord, column: &str, layers: &[u32], containers: usize) {
    for &l in layers {
        let c = cell(run, &format!("/runtime:{column}-L{l}-"));
        assert_eq!(c.outcome, Outcome::Pass, "L={l}: {c:#?}");
        let per = f64::from(2 * (2 * l + 1));
        assert_eq!(
            ops_per_container(c),
            vec![per; containers],
            "L={l}: one idmapped mount per layer"
        );
        let said = c.provenance.runtime.as_ref().and_then(|r| r.said.clone());
        assert!(
            said.as_deref()
                .is_some_and(|s| s.starts_with("containers-storage 1.64")),
            "{said:?}"
        );
    }
}

#[test]
fn containers_storage_from_debian_on_the_host_maps_every_layer() {
    if !root() {
        return;
    }
    let layers = [1, 2, 10, 50];
    let matrix = format!(
        "{}{}{}",
        storage("cs", &[]),
        answers("cs", &layers),
        scenario("cs", &layers, 4, 2)
    );
    let dir = project(&matrix);
    let (out, run) = run(dir.path(), "host", &["--backend", "local"]);
    assert!(out.status.success(), "{}", text(&out));
    let rt = &run.runtimes[0];
    assert!(
        rt.describe
            .starts_with("containers/storage 1.64.0-1 (debian sid"),
        "{}",
        rt.describe
    );
    assert_per_layer(&run, "cs", &layers, 4);
    let m = cell(&run, "/runtime:cs-L10-").mounts().expect("detail");
    assert_eq!(
        m.mount_ops.count_source,
        protocol::CountSource::FanotifyMountEvents
    );
}

#[test]
fn containers_storage_from_debian_in_a_7x_guest() {
    if common::qemu_missing() {
        return;
    }
    let layers = [1, 10];
    let matrix = format!(
        "kernels = [\"debian-7.x\"]\nfilesystems = [\"tmpfs\"]\n\n{}{}{}",
        storage("cs", &[]),
        answers("cs", &layers),
        scenario("cs", &layers, 2, 1)
    );
    let dir = project(&matrix);
    let (out, run) = run(dir.path(), "guest", &["--backend", "qemu"]);
    assert!(
        out.status.success(),
        "every known answer holds in the guest:\n{}",
        text(&out)
    );
    assert!(
        run.cells
            .iter()
            .all(|c| c.key.to_string().starts_with("debian-7.x/")),
        "{:#?}",
        run.cells
            .iter()
            .map(|c| c.key.to_string())
            .collect::<Vec<_>>()
    );
    assert_per_layer(&run, "cs", &layers, 2);
    let m = cell(&run, "/runtime:cs-L10-").mounts().expect("detail");
    assert_eq!(
        m.mount_ops.count_source,
        protocol::CountSource::FanotifyMountEvents
    );
}

/// The release gate on containers/storage: the store mapped once (group-layers.patch, the
/// baseline) against 1.64 as Debian ships it (one idmapped mount per layer, the candidate),
/// both as the column `runtime:storage`, at L = 1, 10, 50.
#[test]
fn compare_fails_a_containers_storage_that_maps_every_layer() {
    if !root() {
        return;
    }
    let patch = harness::agent::workspace_root()
        .join("runtimes/containers-storage/testdata/group-layers.patch");
    let layers = [1, 10, 50];
    let base = project(&format!(
        "{}{}",
        storage("storage", std::slice::from_ref(&patch)),
        scenario("storage", &layers, 10, 1)
    ));
    let cand = project(&format!(
        "{}{}{}",
        storage("storage", &[]),
        answers("storage", &layers),
        scenario("storage", &layers, 10, 1)
    ));
    let (out, b) = run(base.path(), "baseline", &["--backend", "local"]);
    assert!(out.status.success(), "{}", text(&out));
    let (out, c) = run(cand.path(), "candidate", &["--backend", "local"]);
    assert!(out.status.success(), "{}", text(&out));
    for (run, name) in [(&b, "baseline"), (&c, "candidate")] {
        for l in layers {
            let x = cell(run, &format!("/runtime:storage-L{l}-"));
            println!(
                "{name} L={l}: {} ops/container {:?}, start latency p50 {:?} ms",
                x.outcome,
                ops_per_container(x).first(),
                p50_latency_ms(x)
            );
        }
    }
    // The patched build maps the store once per pass whatever the layer count.
    for l in layers {
        let x = cell(&b, &format!("/runtime:storage-L{l}-"));
        assert_eq!(ops_per_container(x), vec![6.0; 10], "L={l}: {x:#?}");
    }
    assert!(b.runtimes[0].describe.contains("group-layers.patch"));
    assert_per_layer(&c, "storage", &layers, 10);
    let out = mmx(
        base.path(),
        &[
            "compare",
            "runs/baseline",
            &cand.path().join("runs/candidate").display().to_string(),
        ],
    );
    let md = text(&out);
    println!("{md}");
    assert_eq!(out.status.code(), Some(1), "the gate fails:\n{md}");
    let regressions = md
        .split("### ")
        .find(|s| s.contains("Regressions"))
        .unwrap_or_default();
    let line_of = |l: u32, metric: &str| {
        let id = format!("runtime:storage-L{l}-C10-P2-J1");
        md.lines()
            .any(|line| line.contains(&id) && line.contains(metric))
    };
    for l in [10, 50] {
        assert!(
            line_of(l, MOUNT_OPS_PER_CONTAINER),
            "no mount-count line for L={l}:\n{md}"
        );
    }
    assert!(
        regressions.contains(MOUNT_OPS_PER_CONTAINER) && regressions.contains("<0.001"),
        "the count is a regression, with its p-value:\n{md}"
    );
    // The latency of the same cells, with whatever verdict its samples allow (listed when it
    // moved beyond its threshold; which way is the runtime's business).
    assert!(
        [10, 50].iter().any(|&l| line_of(l, "start_latency_us")),
        "no latency change named:\n{md}"
    );
}
