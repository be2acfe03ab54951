//! The QEMU backend end to end, with real Debian kernels under TCG: what the guests report, the
//! topology a 2-node NUMA guest sees, and how broken, hung and unstartable guests end.
//!
//! Needs `qemu-system-x86_64` (skipped loudly without it) and, on first use, network access to
//! Debian's archive for the kernels (cached in `MMX_CACHE_DIR` or `~/.cache/mmx`). Boots are
//! shared between tests through `OnceLock`s so a CI machine with two cores stays within budget.
//!
//! Boot times are measured by `cargo bench -p harness --bench boot -- agent-ready`, not here.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;

use common::{backend, kernel, qemu_missing};
use harness::backend::qemu;
use harness::backend::{BootOutput, BootRequest, Deadlines};
use harness::cell::{BootKey, TargetKey};
use harness::matrix::{NumaSpec, Topology};
use harness::proc::Cancel;
use harness::results::{Accel, BootEnd, Deadline, InfraCause, RunDir};
use harness::run;
use protocol::lockbench::{Bench, LockKind, LockbenchScenario, Pinning};
use protocol::{Feature, Filesystem, MountsScenario, Plan, PlanItem, Scenario, Strategy};

// ---------------------------------------------------------------------------------------------
// Shared set-up: QEMU present, the agent, kernels, a run directory.
// ---------------------------------------------------------------------------------------------

fn run_dir() -> RunDir {
    common::run_dir("mmx-qemu-tests")
}

fn topology(sockets: u32, cores: u32, threads: u32, memory_mib: u64) -> Topology {
    Topology {
        name: format!("{sockets}s{cores}c{threads}t"),
        sockets,
        cores,
        threads,
        memory_mib,
        numa: Vec::new(),
    }
}

/// A boot's key; `topology` may carry a suffix that keeps one test's logs apart.
fn key(kernel: &str, topology: &str, fs: Filesystem) -> BootKey {
    BootKey {
        target: TargetKey::Qemu {
            kernel: kernel.into(),
            topology: topology.into(),
        },
        filesystem: fs.into(),
    }
}

fn plan(id: &BootKey, probe: bool, mut items: Vec<PlanItem>) -> Plan {
    for (i, item) in items.iter_mut().enumerate() {
        item.item = i as u32;
    }
    Plan {
        schema_version: protocol::SCHEMA_VERSION,
        boot_id: id.to_string(),
        // The backend sets these three.
        scratch_dir: "/".into(),
        scratch_disks: Vec::new(),
        modules: Vec::new(),
        probe,
        items,
        runtimes: vec![],
    }
}

fn request(key: &BootKey, plan: Plan) -> BootRequest {
    BootRequest {
        key: key.clone(),
        deadlines: Deadlines::for_plan(&plan, qemu::BOOT_ALLOWANCE),
        plan,
        run_dir: run_dir(),
        cancel: Cancel::new(),
        sink: common::sink(),
    }
}

fn tiny_mounts(cell_id: &str) -> PlanItem {
    tiny(cell_id, Strategy::PerLayer)
}

fn tiny(cell_id: &str, strategy: Strategy) -> PlanItem {
    PlanItem {
        item: 0,
        cell_id: cell_id.into(),
        scenario: Scenario::Mounts(MountsScenario {
            strategy: strategy.into(),
            layers: 2,
            containers: 1,
            concurrency: 1,
            passes: 2,
            watchers: Vec::new(),
        }),
        timeout_s: Some(60),
        filesystem: None,
    }
}

fn hello_release(out: &BootOutput) -> Option<&str> {
    out.stream.hello.as_ref().map(|h| h.kernel_release.as_str())
}

fn console_log(out: &BootOutput) -> String {
    let rel = out
        .logs
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".console.log"))
        .expect("a console log is listed");
    std::fs::read_to_string(run_dir().abs(rel)).expect("console log kept")
}

fn describe(out: &BootOutput) -> String {
    format!(
        "end {:?}\naccel {:?}\ntimings {:?}\nstream {:#?}",
        out.end, out.accel, out.timings_ms, out.stream
    )
}

// ---------------------------------------------------------------------------------------------
// Boots shared between tests.
// ---------------------------------------------------------------------------------------------

/// (kernel recipe, filesystem) of the two reference boots: 6.1 ships plain `.ko` modules and
/// needs the virtio ones; 6.12 ships `.ko.xz` that the kernel decompresses.
const REFERENCE: [(&str, Filesystem); 2] = [
    ("debian-6.1", Filesystem::Ext4),
    ("debian-6.12", Filesystem::Xfs),
];

fn reference_boot(i: usize) -> &'static BootOutput {
    static BOOTS: [OnceLock<BootOutput>; 2] = [OnceLock::new(), OnceLock::new()];
    BOOTS[i].get_or_init(|| {
        let (name, fs) = REFERENCE[i];
        let k = kernel(name);
        let id = key(name, "1s2c1t", fs);
        let cell = format!("{id}/per-layer-L2-C1-P2-J1");
        let fd = tiny(
            &format!("{id}/fsconfig-fd-L2-C1-P2-J1"),
            Strategy::FsconfigFd,
        );
        let req = request(&id, plan(&id, true, vec![tiny_mounts(&cell), fd]));
        backend().boot(&req, &k, &topology(1, 2, 1, 768), fs)
    })
}

fn check_reference(i: usize) {
    let (name, fs) = REFERENCE[i];
    let out = reference_boot(i);
    let k = kernel(name);
    assert_eq!(out.end, BootEnd::Completed, "{name}: {}", describe(out));
    assert_eq!(out.accel, Accel::Tcg);
    assert_eq!(
        hello_release(out),
        Some(k.release.as_str()),
        "{}",
        describe(out)
    );
    assert!(out.stream.is_done() && !out.stream.broke_contract());
    let caps = capabilities(out).expect("a Capabilities event");
    assert_eq!(
        caps.probed_fs,
        fs.as_str(),
        "probes ran on the scratch filesystem"
    );
    let cell = out.stream.results()[0].as_ref();
    let cell = cell.unwrap_or_else(|| panic!("no cell result: {}", describe(out)));
    assert!(
        !matches!(
            cell.outcome,
            protocol::Outcome::Panic | protocol::Outcome::Timeout | protocol::Outcome::InfraError
        ),
        "{cell:?}"
    );
    for phase in [
        "initramfs",
        "qemu-start",
        "kernel-start",
        "agent-ready",
        "plan-done",
        "exit",
    ] {
        assert!(
            out.timings_ms.contains_key(phase),
            "no {phase}: {:?}",
            out.timings_ms
        );
    }
    let t = &out.timings_ms;
    assert!(t["qemu-start"] <= t["agent-ready"] && t["agent-ready"] <= t["plan-done"]);
    assert!(console_log(out).contains("Linux version"));
    eprintln!("{name} on {fs}: timings {:?}", out.timings_ms);
}

fn capabilities(out: &BootOutput) -> Option<&protocol::Capabilities> {
    out.stream.capabilities.first()
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

#[test]
fn debian_6_1_on_ext4_runs_the_plan() {
    if qemu_missing() {
        return;
    }
    check_reference(0);
}

#[test]
fn debian_6_12_on_xfs_runs_the_plan() {
    if qemu_missing() {
        return;
    }
    check_reference(1);
}

/// The probes' table in ARCHITECTURE.md: 6.1 lacks CREATE_EXCL (6.6) and string `lowerdir+` (6.7); 6.12 has
/// both. Answers come from the guests' probes, never from version numbers.
#[test]
fn probes_tell_6_1_from_6_12() {
    if qemu_missing() {
        return;
    }
    let old = capabilities(reference_boot(0)).expect("6.1 capabilities");
    let new = capabilities(reference_boot(1)).expect("6.12 capabilities");
    for f in [Feature::CreateExcl, Feature::LowerdirPlusString] {
        assert!(!old.supports(f), "6.1 claims {f}: {:?}", old.get(f));
        assert!(new.supports(f), "6.12 lacks {f}: {:?}", new.get(f));
    }
    assert!(old.supports(Feature::NewMountApi) && new.supports(Feature::NewMountApi));
}

/// Neither kernel takes a detached idmapped layer by fd: the fsconfig-fd cell's evidence names
/// that step (the first fd it hands overlay), not an `O_PATH` handle on the upper dir. 6.1's
/// overlay has only the legacy mount API (EOPNOTSUPP for any fd); 6.12's `fsconfig` takes no
/// `O_PATH` fd (EBADF), and `open_tree` fds are `O_PATH`.
#[test]
fn fsconfig_fd_evidence_names_the_detached_layer() {
    if qemu_missing() {
        return;
    }
    for (i, errno) in [(0, "EOPNOTSUPP"), (1, "EBADF")] {
        let out = reference_boot(i);
        let cell = out.stream.results()[1].as_ref();
        let cell = cell.unwrap_or_else(|| panic!("no fsconfig-fd result: {}", describe(out)));
        assert_eq!(cell.outcome, protocol::Outcome::Unsupported, "{cell:?}");
        let ev = cell.evidence.as_ref().expect("evidence");
        assert!(
            ev.step.starts_with(
                "fsconfig(FSCONFIG_SET_FD, \"lowerdir+\", detached idmapped layer) on "
            ),
            "{ev:?}"
        );
        assert_eq!(ev.errno_name(), Some(errno), "{ev:?}");
    }
    // Upper and work dirs as O_PATH fds are a probe of their own, and neither kernel has it.
    for i in 0..2 {
        let caps = capabilities(reference_boot(i)).expect("capabilities");
        assert!(!caps.supports(Feature::FsconfigSetFdUpperWork), "{caps:?}");
    }
}

/// The per-layer cell's counts come from the kernel: 6.1 has no unique mount ids (its table
/// is read as mountinfo), 6.12 has them (8+) but no fanotify mount events (6.15+).
#[test]
fn kernel_counts_name_their_source() {
    if qemu_missing() {
        return;
    }
    for (i, source) in [
        (0, protocol::CountSource::MountTableDiff),
        (1, protocol::CountSource::UniqueMountIds),
    ] {
        let out = reference_boot(i);
        let cell = out.stream.results()[0].as_ref().expect("per-layer result");
        let Some(protocol::CellDetail::Mounts(m)) = &cell.detail else {
            panic!("no mounts detail: {cell:?}")
        };
        assert_eq!(cell.outcome, protocol::Outcome::Pass, "{cell:?}");
        assert_eq!(m.mount_ops.count_source, source, "{:?}", m.mount_ops);
        assert_eq!(Some(m.mount_ops.ops), m.mount_ops.expected_ops);
        // Nothing else mounts in a guest: the allocations are the sequence's, exactly.
        assert_eq!(m.mount_ops.mounts_allocated, m.mount_ops.expected_allocated);
    }
}

/// The probes of detached idmapped trees against the kernel source of each version (the
/// issue note cites what was read):
/// - `open_tree_attr` is syscall 467, added in 6.15: ENOSYS on 6.1 and 6.12, so the idmap-lock
///   probe needs it; on 7.3 one call gives a mapped tree and the idmap stays locked (the 6.18
///   fix: no `MOUNT_KATTR_IDMAP_REPLACE` without `OPEN_TREE_CLONE`; `can_idmap_mount` answers
///   EPERM);
/// - an overlay, detached from `fsmount` or cloned from a mounted one, refuses
///   `MOUNT_ATTR_IDMAP` at `mount_setattr` (EINVAL: `ovl_fs_type` has no `FS_ALLOW_IDMAP`) on
///   6.1 and 6.12, and takes it on 7.3.4, ids mapped (observed; 7.x's `ovl_fs_type` was not
///   read);
/// - `OPEN_TREE_NAMESPACE` (7.0): EINVAL from `vfs_open_tree`'s flag check before;
/// - `STATMOUNT_BY_FD` (7.0): ENOSYS on 6.1 (statmount is 6.8's), EINVAL on 6.12 (`flags`
///   must be 0); on 7.3.4 it answers for an attached mount's fd and ENOENT for a detached one
///   (observed, not yet traced in the source).
#[test]
fn detached_tree_probes_per_kernel() {
    if qemu_missing() {
        return;
    }
    let refused = |caps: &protocol::Capabilities, f: Feature, call: &str, errno: &str| {
        let p = caps
            .get(f)
            .unwrap_or_else(|| panic!("{f} not probed: {caps:?}"));
        assert!(!p.supported && p.warning.is_none(), "{p:?}");
        let ev = p.evidence.as_ref().expect("evidence");
        assert!(ev.step.starts_with(call), "{f}: {ev:?}");
        assert_eq!(ev.errno_name(), Some(errno), "{f}: {ev:?}");
    };
    for (i, statmount_errno) in [(0, "ENOSYS"), (1, "EINVAL")] {
        let caps = capabilities(reference_boot(i)).expect("capabilities");
        let attr = "open_tree_attr(OPEN_TREE_CLONE, MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY) on ";
        refused(caps, Feature::OpenTreeAttr, attr, "ENOSYS");
        let locked = caps.get(Feature::OpenTreeAttrIdmapLocked).expect("probed");
        assert!(!locked.supported && locked.warning.is_none(), "{locked:?}");
        let ev = locked.evidence.as_ref().expect("evidence");
        assert!(
            ev.step == "needs open-tree-attr" && ev.detail.contains("ENOSYS"),
            "{ev:?}"
        );
        let setattr = "mount_setattr(AT_EMPTY_PATH, MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY) on ";
        refused(caps, Feature::IdmapOverlay, setattr, "EINVAL");
        refused(caps, Feature::IdmapOverlayAttached, setattr, "EINVAL");
        let ns = "open_tree(OPEN_TREE_NAMESPACE | OPEN_TREE_CLOEXEC) on ";
        refused(caps, Feature::OpenTreeNamespace, ns, "EINVAL");
        let sm = "statmount(STATMOUNT_BY_FD, STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC) on ";
        refused(caps, Feature::StatmountByFd, sm, statmount_errno);
    }

    // 7.x: a probe boot with one fsconfig-fd-attr cell.
    let name = "debian-7.x";
    let k = kernel(name);
    let id = key(name, "1s2c1t", Filesystem::Ext4);
    let cell = tiny(
        &format!("{id}/fsconfig-fd-attr-L2-C1-P2-J1"),
        Strategy::FsconfigFdAttr,
    );
    let req = request(&id, plan(&id, true, vec![cell]));
    let out = backend().boot(&req, &k, &topology(1, 2, 1, 768), Filesystem::Ext4);
    assert_eq!(out.end, BootEnd::Completed, "{}", describe(&out));
    let caps = capabilities(&out).expect("7.x capabilities");
    for f in [
        Feature::OpenTreeAttr,
        Feature::OpenTreeAttrIdmapLocked,
        Feature::IdmapOverlay,
        Feature::IdmapOverlayAttached,
        Feature::OpenTreeNamespace,
    ] {
        let p = caps.get(f).unwrap_or_else(|| panic!("{f} not probed"));
        assert!(p.supported && p.warning.is_none(), "7.x: {p:?}");
    }
    refused(
        caps,
        Feature::StatmountByFd,
        "statmount(STATMOUNT_BY_FD, STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC) of a detached tree",
        "ENOENT",
    );
    let cell = out.stream.results()[0].as_ref();
    let cell = cell.unwrap_or_else(|| panic!("no fsconfig-fd-attr result: {}", describe(&out)));
    assert_eq!(cell.outcome, protocol::Outcome::Pass, "{cell:?}");
    let Some(protocol::CellDetail::Mounts(m)) = &cell.detail else {
        panic!("no mounts detail: {cell:?}")
    };
    // Counted by the kernel (fanotify mount events on 7.x), equal to fsconfig-fd's formula.
    assert_eq!(
        Some(m.mount_ops.ops),
        m.mount_ops.expected_ops,
        "{:?}",
        m.mount_ops
    );
    assert_eq!(m.mount_ops.mounts_allocated, m.mount_ops.expected_allocated);
}

/// A 2-socket, 2-thread, 2-node guest sees its sockets, nodes and SMT siblings: on 6.12, and on
/// 6.1, whose pre-6.9 topology code reads siblings from CPUID leaf 0xB only on Intel (TCG's
/// `max` CPU is AMD family 15 without TOPOEXT unless mmx names it GenuineIntel).
fn numa_smt_guest_sees_its_topology(name: &str) {
    let k = kernel(name);
    // 2 sockets × 1 core × 2 threads; one socket per node.
    let mut topo = topology(2, 1, 2, 768);
    topo.name = "2s1c2t-numa2".into();
    topo.numa = vec![
        NumaSpec {
            cpus: vec![0, 1],
            memory_mib: 384,
            distances: Some(vec![10, 21]),
        },
        NumaSpec {
            cpus: vec![2, 3],
            memory_mib: 384,
            distances: Some(vec![21, 10]),
        },
    ];
    let id = key(name, "2s1c2t-numa2", Filesystem::Tmpfs);
    let out = backend().boot(
        &request(&id, plan(&id, false, vec![])),
        &k,
        &topo,
        Filesystem::Tmpfs,
    );
    let seen = out
        .stream
        .topology
        .as_ref()
        .unwrap_or_else(|| panic!("no topology: {}", describe(&out)));
    let nodes: Vec<_> = seen
        .numa_nodes
        .iter()
        .map(|n| (n.id, n.cpus.clone()))
        .collect();
    assert_eq!(nodes, [(0, vec![0, 1]), (1, vec![2, 3])], "{seen:#?}");
    assert_eq!(seen.numa_nodes[0].distances, [10, 21]);
    assert_eq!((seen.sockets, seen.threads_per_core), (2, 2), "{seen:#?}");
    assert_eq!(seen.core_siblings, [vec![0, 1], vec![2, 3]], "{seen:#?}");
    for n in &seen.numa_nodes {
        // The kernel keeps some memory for itself; each node still has most of its 384 MiB.
        assert!(n.memory_mib > 200, "{n:?}");
    }
    assert_eq!(seen.short(), "2s1c2t-numa2");
    assert_eq!(
        run::topology_mismatch(&topo, seen),
        None,
        "nothing for the report to mark"
    );
    // The guest's own hypervisor detection sees QEMU's emulator.
    let v = seen
        .virtualization
        .as_ref()
        .expect("virtualization reported");
    assert_eq!(v.hypervisor, Some(protocol::Hypervisor::QemuTcg), "{v:?}");
}

#[test]
fn numa_and_smt_are_observed_on_6_12() {
    if qemu_missing() {
        return;
    }
    numa_smt_guest_sees_its_topology("debian-6.12");
}

#[test]
fn numa_and_smt_are_observed_on_6_1() {
    if qemu_missing() {
        return;
    }
    numa_smt_guest_sees_its_topology("debian-6.1");
}

#[test]
fn broken_command_line_ends_in_panic_with_the_log_kept() {
    if qemu_missing() {
        return;
    }
    let k = kernel("debian-6.12");
    let id = key("debian-6.12", "1s1c1t-broken", Filesystem::Tmpfs);
    // No /nonexistent in the initramfs and no root= disk: the kernel cannot find an init.
    let q = backend().with_extra_cmdline("rdinit=/nonexistent");
    let start = Instant::now();
    let out = q.boot(
        &request(&id, plan(&id, false, vec![])),
        &k,
        &topology(1, 1, 1, 256),
        Filesystem::Tmpfs,
    );
    let BootEnd::Panic { line, excerpt } = &out.end else {
        panic!("expected a panic: {}", describe(&out));
    };
    assert!(line.contains("Kernel panic - not syncing"), "{line}");
    assert!(excerpt.contains("Kernel panic"), "{excerpt}");
    assert!(console_log(&out).contains("Kernel panic - not syncing"));
    // Detected on the console, not by a watchdog.
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn hung_plan_times_out_within_its_limit_keeping_earlier_results() {
    if qemu_missing() {
        return;
    }
    let k = kernel("debian-6.12");
    let id = key("debian-6.12", "1s1c1t-hang", Filesystem::Tmpfs);
    // A benchmark far longer than the silence the watchdog allows.
    let item = PlanItem {
        item: 0,
        cell_id: format!("{id}/lockbench-user-spin"),
        scenario: Scenario::Lockbench(LockbenchScenario {
            bench: Bench::UserSpin,
            threads: vec![1],
            locks: vec![LockKind::Tas],
            pinning: vec![Pinning::None],
            false_sharing: false,
            warmup_ms: 0,
            duration_ms: 600_000,
            ..LockbenchScenario::default()
        }),
        timeout_s: None,
        filesystem: None,
    };
    // Unscaled: the backend stretches them ×3 for TCG (boot 120 s, silence 15 s, plan 150 s).
    let deadlines = Deadlines {
        boot: Duration::from_secs(40),
        silence: Duration::from_secs(5),
        plan: Duration::from_secs(50),
    };
    let q = backend().with_deadlines(deadlines);
    let out = q.boot(
        &request(&id, plan(&id, false, vec![item])),
        &k,
        &topology(1, 1, 1, 256),
        Filesystem::Tmpfs,
    );
    let BootEnd::Timeout { deadline, .. } = &out.end else {
        panic!("expected a timeout: {}", describe(&out));
    };
    assert!(
        matches!(deadline, Deadline::Silence | Deadline::Plan),
        "{deadline:?}"
    );
    assert!(
        hello_release(&out).is_some(),
        "results before the hang were lost"
    );
    assert!(!console_log(&out).is_empty());
}

#[test]
fn qemu_that_cannot_start_is_an_infra_error() {
    if qemu_missing() {
        return;
    }
    let k = kernel("debian-6.12");
    let id = key("debian-6.12", "1s1c1t-noqemu", Filesystem::Tmpfs);
    let req = request(&id, plan(&id, false, vec![]));
    let topo = topology(1, 1, 1, 256);
    let missing = backend().with_qemu_binary("/nonexistent/qemu-system-x86_64".into());
    let out = missing.boot(&req, &k, &topo, Filesystem::Tmpfs);
    assert!(
        matches!(&out.end, BootEnd::Infra { cause: InfraCause::Spawn, message } if message.contains("/nonexistent/qemu")),
        "{:?}",
        out.end
    );
    // A QEMU that rejects its arguments: `false` exits 1 at once, printing nothing.
    let failing = backend().with_qemu_binary("false".into());
    let out = failing.boot(&req, &k, &topo, Filesystem::Tmpfs);
    assert!(
        matches!(&out.end, BootEnd::Infra { cause: InfraCause::GuestSilent, message } if message.contains("before the guest printed anything")),
        "{:?}",
        out.end
    );
}
