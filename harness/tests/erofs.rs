//! erofs as a layer filesystem, end to end: every layer an erofs image made on the host by
//! `mkfs.erofs` from the agent's own layer tree, mounted by the agent file-backed (6.12+) or
//! through a loop device, and each strategy run over those mounts.
//!
//! - On this machine's kernel (root): the images the QEMU backend puts on its disks, through
//!   `mmx-agent mounts --erofs-images`, against the same cells on ext4 directories: the mount
//!   counts from the kernel, and the latencies printed for the record (never asserted).
//! - In guests (QEMU, TCG here) on debian-6.1, 6.12 and 7.x, through `mmx run` with the known
//!   answers in the test's own matrix, ext4 and erofs cells side by side; then run.json says
//!   how each kernel mounted the images.
//!
//! Known answers (read against the kernel sources: see ARCHITECTURE.md, "erofs layers"):
//! erofs is idmappable on all three (FS_ALLOW_IDMAP in `erofs_fs_type` since 5.19), mounts an
//! image file itself from 6.12 (`erofs_fc_get_tree`'s file fallback, BACKED_BY_FILE) and
//! answers ENOTBLK for a file on 6.1, where the agent takes a loop device. common-parent's
//! recursive clone carries each layer's mount along: 2·(L + 2) + 2·(L + 1) mount-table
//! operations per container instead of 6.

mod common;

use std::path::Path;
use std::process::Command;

use harness::results::{CellRecord, RunRecord};
use protocol::erofs::ErofsBacking;
use protocol::{CellDetail, CellResult, MountsResult, Outcome, MOUNT_OPS_PER_CONTAINER};

fn root() -> bool {
    common::require(
        rustix::process::geteuid().is_root(),
        "erofs layers need root (the layer trees' owners, mounts, loop devices)",
    )
}

fn mkfs_erofs() -> bool {
    common::require(
        harness::backend::qemu::disk::find_tool("mkfs.erofs").is_some(),
        "mkfs.erofs is not installed (apt-get install erofs-utils)",
    )
}

/// One mounts run of the agent on this machine, as its JSON result.
fn agent_mounts(strategy: &str, layers: u32, containers: u32, images: Option<&Path>) -> CellResult {
    let mut cmd = Command::new(common::agent());
    cmd.args(["mounts", "--json", "--strategy", strategy])
        .args(["--layers", &layers.to_string()])
        .args(["--containers", &containers.to_string()])
        .args(["--concurrency", "2", "--scratch", "/var/tmp"]);
    if let Some(dir) = images {
        cmd.arg("--erofs-images").arg(dir);
    }
    let out = cmd.output().expect("running mmx-agent");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{strategy}: no result ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn mounts(r: &CellResult) -> &MountsResult {
    match &r.detail {
        Some(CellDetail::Mounts(m)) => m,
        other => panic!("{}: not a mounts result: {other:?}", r.cell_id),
    }
}

fn ops_per_container(m: &MountsResult) -> u64 {
    (m.mount_ops.attachments + m.mount_ops.detachments) / u64::from(m.scenario.containers)
}

/// The same cells on ext4 directories and on erofs images, on this machine's kernel.
#[test]
fn erofs_layers_on_this_host_against_ext4_directories() {
    if !root() || !mkfs_erofs() {
        return;
    }
    let work = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let made = harness::backend::qemu::disk::layer_images(&common::agent(), work.path())
        .expect("erofs images from the agent's layer trees");
    let images = made.path().join(protocol::erofs::IMAGES_DIR);
    let containers = 10;
    eprintln!("strategy       L   fs     backing  ops/container  p50 µs");
    for layers in [10, 50] {
        for strategy in ["per-layer", "common-parent", "fsconfig-fd"] {
            let ext4 = agent_mounts(strategy, layers, containers, None);
            let erofs = agent_mounts(strategy, layers, containers, Some(&images));
            for r in [&ext4, &erofs] {
                let m = mounts(r);
                let checks: Vec<_> = m.checks.iter().filter(|c| !c.ok).collect();
                assert_eq!(
                    r.outcome,
                    Outcome::Pass,
                    "{strategy} L{layers}: {r:#?} {checks:#?}"
                );
                eprintln!(
                    "{strategy:<14} {layers:<3} {:<6} {:<8} {:<14} {}",
                    m.layers_fs,
                    m.erofs.as_ref().map_or("-", |e| e.backing.as_str()),
                    ops_per_container(m),
                    m.latency.as_ref().map_or(0.0, |l| l.p50),
                );
            }
            let (d, e) = (mounts(&ext4), mounts(&erofs));
            assert_ne!(d.layers_fs, "erofs");
            assert_eq!(e.layers_fs, "erofs");
            let info = e.erofs.as_ref().expect("an erofs cell says how it mounted");
            assert_eq!(info.mounts, layers);
            // This machine's kernel (6.18) mounts image files itself.
            assert_eq!(info.backing, ErofsBacking::File, "{info:?}");
            assert!(info.file_refused.is_none());
            // The counts are the kernel's: common-parent's clone carries every layer's mount.
            let carried = if strategy == "common-parent" {
                2 * 2 * u64::from(layers)
            } else {
                0
            };
            assert_eq!(ops_per_container(e), ops_per_container(d) + carried);
        }
    }
}

/// A directory holding `matrix.toml` with the repository's `kernels/` beside it.
fn project(matrix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mmx-erofs-")
        .tempdir()
        .expect("tempdir");
    let repo = harness::agent::workspace_root();
    for sub in ["kernels", "runtimes"] {
        std::os::unix::fs::symlink(repo.join(sub), dir.path().join(sub)).expect("symlink");
    }
    std::fs::write(dir.path().join("matrix.toml"), matrix).expect("matrix.toml");
    dir
}

const GUEST_MATRIX: &str = r#"
kernels = ["debian-6.1", "debian-6.12", "debian-7.x"]
filesystems = ["ext4", "erofs"]

[run]
repeats = 1
memory_mib = 768

[[topologies]]
sockets = 1
cores = 2
threads = 1

[[scenarios]]
kind = "mounts"
strategies = ["per-layer", "common-parent", "fsconfig-fd"]
layers = [10]
containers = [4]
concurrency = [2]
passes = 2

[[expect]]
cells = "debian-6.1/*/*/fsconfig-fd-*"
outcome = "unsupported"
errno = "EOPNOTSUPP"
step = "detached idmapped layer"
reason = "overlay has no `lowerdir+` before 6.7"

[[expect]]
cells = "debian-6.12/*/*/fsconfig-fd-*"
outcome = "unsupported"
errno = "EBADF"
step = "detached idmapped layer"
reason = "fsconfig takes no O_PATH fd before 6.13"

[[expect]]
cells = "*/erofs/common-parent-*"
outcome = "pass"
mount_ops_per_container = 46
reason = "the recursive clone carries the 10 erofs mounts: 2·(10 + 2) attached, 2·(10 + 1) detached"

[[expect]]
cells = "*/ext4/common-parent-*"
outcome = "pass"
mount_ops_per_container = 6
reason = "one parent bind and the overlay per pass, the bind detached"

[[expect]]
cells = "*/per-layer-*"
outcome = "pass"
mount_ops_per_container = 42
reason = "per pass 10 idmapped binds and the overlay, the binds detached, on either filesystem"

[[expect]]
cells = "*"
outcome = "pass"
reason = "erofs is idmappable on every kernel here"
"#;

fn cell<'a>(run: &'a RunRecord, id: &str) -> &'a CellRecord {
    run.cells
        .iter()
        .find(|c| c.key.to_string() == id)
        .unwrap_or_else(|| {
            let ids: Vec<String> = run.cells.iter().map(|c| c.key.to_string()).collect();
            panic!("no cell {id} in {ids:#?}")
        })
}

/// debian-6.1, 6.12 and 7.x guests, ext4 and erofs: `mmx run` holds the known answers (exit 0),
/// and each kernel mounted the images as its source allows.
#[test]
fn erofs_layers_in_guests_on_the_default_kernels() {
    if !common::require(
        !common::qemu_missing(),
        "qemu-system-x86_64 is not installed",
    ) || !root()
        || !mkfs_erofs()
    {
        return;
    }
    let dir = project(GUEST_MATRIX);
    let out = Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(["run", "--run-id", "erofs"])
        .current_dir(dir.path())
        .output()
        .expect("running mmx");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = RunRecord::read(&dir.path().join("runs/erofs/run.json"))
        .unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    eprintln!("kernel        fs     strategy       outcome      ops/container  p50 µs");
    for c in &run.cells {
        let ops = c
            .metrics
            .get(MOUNT_OPS_PER_CONTAINER)
            .map(|m| m.samples.clone());
        let p50 = c.metrics.get("latency_p50_us").map(|m| m.samples.clone());
        eprintln!("{}  {:?}  {ops:?}  {p50:?}", c.key, c.outcome);
    }
    assert!(out.status.success(), "a known answer changed:\n{text}");
    // Each kernel's filesystems share one guest, sized for its accelerator like a boot of its own.
    for b in &run.boots {
        assert!(b.guest.is_some(), "{}: not in a shared guest", b.key);
        assert!(
            b.sizing.is_some(),
            "{}: its benchmarks' sizing is not recorded",
            b.key
        );
    }
    for (kernel, backing) in [
        ("debian-6.1", ErofsBacking::Loop),
        ("debian-6.12", ErofsBacking::File),
        ("debian-7.x", ErofsBacking::File),
    ] {
        let id = format!("{kernel}/1s2c1t/erofs/per-layer-L10-C4-P2-J2");
        let c = cell(&run, &id);
        let Some(CellDetail::Mounts(m)) = &c.detail else {
            panic!("{id}: no mounts detail: {c:#?}");
        };
        assert_eq!(m.layers_fs, "erofs", "{id}");
        let info = m.erofs.as_ref().expect("an erofs cell says how it mounted");
        assert_eq!(info.backing, backing, "{id}: {info:?}");
        match backing {
            // lookup_bdev of a regular file: the kernel takes block devices only.
            ErofsBacking::Loop => {
                let refused = info.file_refused.as_ref().expect("why not file-backed");
                assert_eq!(refused.errno, Some(libc::ENOTBLK), "{refused:?}");
            }
            ErofsBacking::File => assert!(info.file_refused.is_none(), "{info:?}"),
        }
    }
}
