//! Debian's *generic* 6.12 (`kernels/debian-6.12-generic.toml`, `linux-image-amd64`), the
//! kernel most Debian machines run, on every layers filesystem. Unlike the cloud flavour it
//! builds crc32c as a module that ext4, jbd2, libcrc32c and btrfs name only by alias and ask the
//! kernel for (`request_module("crypto-crc32c")`); the agent answers as the guest's modprobe.
//! Before it did, ext4 boots ended `infra-error` ("Cannot load crc32c driver") and btrfs boots
//! in libcrc32c's init.
//!
//! Under TCG, one boot per filesystem, L1 and one container: the answers must be the cloud
//! 6.12's known answers (the repository's `matrix.toml`). Needs QEMU and, on first use, the
//! Debian archive for the 108 MB package (cached); without QEMU it says SKIPPED (fails under
//! CI=true).

use harness::backend::qemu::{console, AccelChoice};
use harness::backend::{BootRequest, Deadlines};
use harness::cell::{BootKey, CellKey, TargetKey};
use harness::debian::LockPolicy;
use harness::kernels::ModuleFeature;
use harness::matrix::{Matrix, Topology};
use harness::proc::Cancel;
use harness::results::{BootEnd, InfraCause, RunDir};
use harness::run::{group_boots, Runner};
use protocol::{Filesystem, Outcome};

mod common;

const KERNEL: &str = "debian-6.12-generic";
/// The cloud kernel of the same release, whose known answers the generic one must give.
const CLOUD: &str = "debian-6.12";

/// What the agent's modprobe writes to the kernel log when it answers ext4's request.
const ANSWERED: &str = "mmx-agent modprobe: crypto-crc32c: loaded crc32c_generic, crc32c_intel";

/// A directory with the repository's recipes and lock and a matrix of the generic kernel on all
/// four filesystems: the three strategies, L1, one container, one pass.
fn generic_matrix() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mmx-generic-")
        .tempdir()
        .expect("tempdir");
    let kernels = dir.path().join("kernels");
    std::fs::create_dir(&kernels).expect("kernels/");
    let ours = harness::agent::workspace_root().join("kernels");
    for f in [format!("{KERNEL}.toml"), "kernels.lock".to_string()] {
        std::fs::copy(ours.join(&f), kernels.join(&f)).expect("copy the recipe and the lock");
    }
    std::fs::write(
        dir.path().join("matrix.toml"),
        format!(
            "kernels = [\"{KERNEL}\"]\nfilesystems = [\"ext4\", \"xfs\", \"btrfs\", \"tmpfs\"]\n\
             [[topologies]]\nsockets = 1\ncores = 1\nthreads = 1\nmemory_mib = 768\n\
             [[scenarios]]\nkind = \"mounts\"\n\
             strategies = [\"per-layer\", \"common-parent\", \"fsconfig-fd\"]\n\
             layers = [1]\ncontainers = [1]\nconcurrency = [1]\npasses = 1\n"
        ),
    )
    .expect("matrix");
    dir
}

/// The cell of the cloud kernel that `key` (a generic kernel's cell) corresponds to.
fn cloud_twin(key: &CellKey) -> CellKey {
    let TargetKey::Qemu { topology, .. } = &key.target else {
        panic!("{key} is not a QEMU cell")
    };
    CellKey {
        target: TargetKey::Qemu {
            kernel: CLOUD.into(),
            topology: topology.clone(),
        },
        ..key.clone()
    }
}

#[test]
fn generic_612_gives_the_cloud_612s_answers_on_every_filesystem() {
    if common::qemu_missing() {
        return;
    }
    // The kernel's choice: crc32c ships for the filesystems that ask for it, and is left for
    // the kernel to ask for rather than loaded at boot.
    let k = common::kernel(KERNEL);
    for name in ["crc32c_generic", "crc32c_intel"] {
        let m = k
            .modules
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} is shipped: {:?}", k.modules));
        assert!(m.needed_for.is_empty(), "{m:?}");
        for f in [
            ModuleFeature::Ext4,
            ModuleFeature::Xfs,
            ModuleFeature::Btrfs,
        ] {
            assert!(
                m.on_request_for.contains(&f),
                "{name} ships for {f:?}: {m:?}"
            );
        }
        assert!(m.aliases.iter().any(|a| a == "crypto-crc32c"), "{m:?}");
    }

    let dir = generic_matrix();
    let matrix = Matrix::load(&dir.path().join("matrix.toml")).expect("the test matrix");
    let known = Matrix::load(&harness::agent::workspace_root().join("matrix.toml"))
        .expect("the repository's matrix")
        .expectations;
    let boots = group_boots(matrix.qemu_cells());
    assert_eq!(boots.len(), 4, "one boot per filesystem");
    let runner = Runner::new(
        &matrix,
        &boots,
        AccelChoice::Tcg,
        None,
        0,
        common::sink(),
        LockPolicy::from_env(),
    )
    .expect("runner");
    let run_dir = RunDir::create(dir.path(), "run").expect("run dir");
    let mut failures = Vec::new();
    for boot in &boots {
        let (record, cells) = runner.run_boot(boot, 1, &run_dir, &Cancel::new(), None);
        let console = record
            .logs
            .iter()
            .find(|l| l.to_string_lossy().ends_with(".console.log"))
            .and_then(|l| std::fs::read_to_string(run_dir.abs(l)).ok())
            .unwrap_or_default();
        if !matches!(record.end, BootEnd::Completed) {
            failures.push(format!("{}: {}", boot.key, record.end.summary()));
            continue;
        }
        // ext4 and btrfs (through libcrc32c) get crc32c only by asking for it.
        if matches!(boot.key.filesystem.to_string().as_str(), "ext4" | "btrfs")
            && !console.contains(ANSWERED)
        {
            failures.push(format!(
                "{}: the console shows no answered request (`{ANSWERED}`)",
                boot.key
            ));
        }
        for cell in &cells {
            let twin = cloud_twin(&cell.key);
            let want = known
                .find(&twin)
                .unwrap_or_else(|| panic!("matrix.toml has a known answer for {twin}"));
            if !want.is_met(cell.outcome, cell.evidence.as_ref()) {
                failures.push(format!(
                    "{}: {} ({:?}); {CLOUD} answers {}",
                    cell.key,
                    cell.outcome,
                    cell.evidence,
                    want.describe()
                ));
            }
        }
        let outcomes: Vec<(String, Outcome)> = cells
            .iter()
            .map(|c| (c.key.scenario.to_string(), c.outcome))
            .collect();
        eprintln!("{}: {outcomes:?}", boot.key);
    }
    assert!(
        failures.is_empty(),
        "logs in {}:\n{}",
        run_dir.root.display(),
        failures.join("\n")
    );
}

/// A boot whose agent cannot set the guest up says why in the kernel's words: the generic
/// kernel without its crc32c modules fails ext4's mount, and the `agent-setup` evidence carries
/// the console lines before it (the kernel's complaint, the unanswered request).
#[test]
fn agent_setup_evidence_carries_the_kernels_last_console_lines() {
    if common::qemu_missing() {
        return;
    }
    let mut k = common::kernel(KERNEL);
    k.modules.retain(|m| !m.name.starts_with("crc32c"));
    // Another module set, another cached base archive.
    k.cache_key = format!("{}-without-crc32c", k.cache_key);
    let key = BootKey {
        target: TargetKey::Qemu {
            kernel: KERNEL.into(),
            topology: "1s1c1t-no-crc32c".into(),
        },
        filesystem: Filesystem::Ext4.into(),
    };
    let plan = protocol::Plan {
        schema_version: protocol::SCHEMA_VERSION,
        boot_id: key.to_string(),
        // The backend sets these three.
        scratch_dir: "/".into(),
        scratch_disks: Vec::new(),
        modules: Vec::new(),
        probe: false,
        items: Vec::new(),
        runtimes: Vec::new(),
    };
    let req = BootRequest {
        key: key.clone(),
        deadlines: Deadlines::for_plan(&plan, harness::backend::qemu::BOOT_ALLOWANCE),
        plan,
        run_dir: common::run_dir("mmx-generic-kernel-tests"),
        cancel: Cancel::new(),
        sink: common::sink(),
    };
    let topology = Topology {
        name: "1s1c1t".into(),
        sockets: 1,
        cores: 1,
        threads: 1,
        memory_mib: 768,
        numa: Vec::new(),
    };
    let out = common::backend().boot(&req, &k, &topology, Filesystem::Ext4);
    let BootEnd::Infra { cause, message } = &out.end else {
        panic!("expected agent-setup, got {:?}", out.end)
    };
    assert_eq!(*cause, InfraCause::AgentSetup, "{message}");
    eprintln!("agent-setup evidence:\n{message}");
    for want in [
        "mount(/dev/vda, /scratch/ext4, ext4",
        "last console lines:",
        "EXT4-fs (vda): Cannot load crc32c driver.",
        "mmx-agent modprobe: crypto-crc32c: no module in the initramfs answers it",
    ] {
        assert!(message.contains(want), "`{want}` in:\n{message}");
    }
    let context = message
        .split_once("last console lines:\n")
        .map_or("", |(_, c)| c);
    assert!(
        context.lines().count() <= console::SETUP_CONTEXT_LINES
            && context.len() <= console::SETUP_CONTEXT_BYTES,
        "bounded: {context}"
    );
}
