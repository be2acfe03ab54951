//! The QEMU backend end to end, with real Debian kernels under TCG: what the guests report, the
//! topology a 2-node NUMA guest sees, and how broken, hung and unstartable guests end.
//!
//! Needs `qemu-system-x86_64` (skipped loudly without it) and, on first use, network access to
//! Debian's archive for the kernels (cached in `MMX_CACHE_DIR` or `~/.cache/mmx`). Boots are
//! shared between tests through `OnceLock`s so a CI machine with two cores stays within budget.
//!
//! `MMX_QEMU_MEASURE=1` also runs `measure_boot_to_agent_ready` (boot-to-agent-ready against a
//! guest whose /init only prints a line, and the KVM probe).

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;

use common::{agent, backend, kernel, qemu_missing};
use harness::backend::qemu::{self, AccelChoice, Qemu};
use harness::backend::{BootOutput, BootRequest, Cancel, Deadlines};
use harness::cell::{BootKey, TargetKey};
use harness::kernels::ResolvedKernel;
use harness::matrix::{NumaSpec, Topology};
use harness::results::{Accel, BootEnd, Deadline, InfraCause, RunDir};
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
        filesystem: fs,
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
        scratch_disk: None,
        modules: Vec::new(),
        probe,
        items,
    }
}

fn request(key: &BootKey, plan: Plan) -> BootRequest {
    BootRequest {
        key: key.clone(),
        deadlines: Deadlines::for_plan(&plan, qemu::BOOT_ALLOWANCE),
        plan,
        run_dir: run_dir(),
        cancel: Cancel::new(),
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
            strategy,
            layers: 2,
            containers: 1,
            concurrency: 1,
            passes: 2,
        }),
        timeout_s: Some(60),
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
    out.stream.capabilities.as_ref()
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

/// DESIGN.md's facts table: 6.1 lacks CREATE_EXCL (6.6) and string `lowerdir+` (6.7); 6.12 has
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
        assert_eq!(m.mount_ops.ops, m.mount_ops.expected_ops);
        // Nothing else mounts in a guest: the allocations are the sequence's, exactly.
        assert_eq!(m.mount_ops.mounts_allocated, m.mount_ops.expected_allocated);
    }
}

#[test]
fn two_numa_nodes_are_observed() {
    if qemu_missing() {
        return;
    }
    let k = kernel("debian-6.12");
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
    let id = key("debian-6.12", "2s1c2t-numa2", Filesystem::Tmpfs);
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
    for n in &seen.numa_nodes {
        // The kernel keeps some memory for itself; each node still has most of its 384 MiB.
        assert!(n.memory_mib > 200, "{n:?}");
    }
    assert_eq!(seen.short(), "2s1c2t-numa2");
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

/// Boot-to-agent-ready against a guest whose /init only prints a line, same kernel and flags,
/// both in this run; plus harness time before QEMU starts and the KVM verdict. Prints numbers,
/// asserts nothing about time.
#[test]
fn measure_boot_to_agent_ready() {
    if std::env::var_os("MMX_QEMU_MEASURE").is_none() {
        eprintln!("SKIPPED (set MMX_QEMU_MEASURE=1 to measure boot times)");
        return;
    }
    if qemu_missing() {
        return;
    }
    let names: Vec<String> = std::env::var("MMX_QEMU_MEASURE_KERNELS")
        .unwrap_or_else(|_| "debian-6.1,debian-6.12,debian-7.x".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let rounds = 5;
    let dir = tempfile::tempdir().expect("tempdir");
    let mini = dir.path().join("mini.cpio");
    std::fs::write(&mini, minimal_initrd()).expect("write minimal initrd");
    for name in &names {
        let k = kernel(name);
        let topo = topology(1, 2, 1, 768);
        let q = backend();
        let (mut agent_ms, mut mini_ms, mut pre_ms) = (vec![], vec![], vec![]);
        for r in 0..rounds {
            let id = key(name, &format!("measure-{r}"), Filesystem::Tmpfs);
            let out = q.boot(
                &request(&id, plan(&id, false, vec![])),
                &k,
                &topo,
                Filesystem::Tmpfs,
            );
            let t = &out.timings_ms;
            if let (Some(a), Some(s)) = (t.get("agent-ready"), t.get("qemu-start")) {
                agent_ms.push(a - s);
                pre_ms.push(*s);
            }
            let w = boot_minimal(&k, &topo, &mini, dir.path(), r);
            if let (Some(ready), Some(s)) = (w.ready_at, w.qemu_started) {
                mini_ms.push(ready.duration_since(s).as_secs_f64() * 1e3);
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let (a, m) = (med(&mut agent_ms), med(&mut mini_ms));
        // On a shared, loaded machine the fastest boot is the least disturbed one.
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let (amin, mmin) = (min(&agent_ms), min(&mini_ms));
        eprintln!(
            "MEASURE {name}: agent-ready median {a:.0} ms / min {amin:.0} ms, minimal /init \
             median {m:.0} ms / min {mmin:.0} ms, ratio median {:.3} / min {:.3}; harness \
             before qemu {:.0} ms (samples agent {agent_ms:.0?} minimal {mini_ms:.0?})",
            a / m,
            amin / mmin,
            med(&mut pre_ms)
        );
    }
    // The KVM verdict from a fresh cache: times the probe.
    let fresh = tempfile::tempdir().expect("tempdir");
    let q = Qemu::new(AccelChoice::Auto, agent(), fresh.path().to_path_buf()).expect("auto");
    let k = kernel("debian-6.12");
    let start = Instant::now();
    let id = key("debian-6.12", "probe", Filesystem::Tmpfs);
    let out = q.boot(
        &request(&id, plan(&id, false, vec![])),
        &k,
        &topology(1, 1, 1, 256),
        Filesystem::Tmpfs,
    );
    eprintln!(
        "MEASURE accel auto: {:?} (first boot incl. probe {:?}, boot end {:?})",
        out.accel,
        start.elapsed(),
        out.end
    );
    eprintln!("MEASURE harness RSS: {}", rss());
}

fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Boot the minimal initrd with the command line the backend gives its guests.
fn boot_minimal(
    k: &ResolvedKernel,
    topo: &Topology,
    initrd: &Path,
    dir: &Path,
    round: usize,
) -> qemu::process::Watched {
    let log = |n: &str| dir.join(format!("mini-{}-{round}.{n}.log", k.name));
    let mut args = vec!["-name".into(), "mmx-minimal".into()];
    args.extend(qemu::args::machine_args(Accel::Tcg));
    args.extend(qemu::args::cpu_args(topo));
    args.extend(qemu::args::kernel_args(&k.vmlinuz, initrd, ""));
    args.extend(qemu::args::serial_args(&log("console"), &log("results")));
    let launch = qemu::process::Launch {
        qemu: "qemu-system-x86_64".into(),
        args,
        console_log: log("console"),
        results_log: log("results"),
        qemu_log: log("qemu"),
        deadlines: Deadlines {
            boot: Duration::from_secs(120),
            silence: Duration::from_secs(120),
            plan: Duration::from_secs(120),
        },
    };
    qemu::process::run_guest(
        &launch,
        &plan(&key(&k.name, "minimal", Filesystem::Tmpfs), false, vec![]),
        &Cancel::new(),
    )
}

/// An initramfs whose /init is a 200-byte static x86-64 ELF: write(2, READY_MARK) and
/// reboot(POWER_OFF). No libc, no compiler needed, nothing to slow it down.
fn minimal_initrd() -> Vec<u8> {
    let mut cpio = harness::initramfs::CpioWriter::new(Vec::new(), 1);
    cpio.append_dir("dev", 0o755).expect("dir");
    cpio.append_char_dev("dev/console", 0o600, 5, 1)
        .expect("console");
    cpio.append_file("init", 0o755, &minimal_init_elf())
        .expect("init");
    cpio.append_trailer().expect("trailer")
}

fn minimal_init_elf() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const CODE_AT: u64 = 64 + 56; // ELF header + one program header
    let msg = format!("{}\n", qemu::process::READY_MARK).into_bytes();
    let mut code: Vec<u8> = Vec::new();
    code.extend([0xb8, 1, 0, 0, 0]); // mov eax, 1 (write)
    code.extend([0xbf, 2, 0, 0, 0]); // mov edi, 2 (stderr = /dev/console)
    let lea_at = code.len();
    code.extend([0x48, 0x8d, 0x35, 0, 0, 0, 0]); // lea rsi, [rip + msg]
    code.extend([0xba]); // mov edx, len
    code.extend(u32::try_from(msg.len()).expect("short").to_le_bytes());
    code.extend([0x0f, 0x05]); // syscall
    code.extend([0xb8, 169, 0, 0, 0]); // mov eax, 169 (reboot)
    code.extend([0xbf]); // mov edi, LINUX_REBOOT_MAGIC1
    code.extend(0xfee1_deadu32.to_le_bytes());
    code.extend([0xbe]); // mov esi, LINUX_REBOOT_MAGIC2
    code.extend(672_274_793u32.to_le_bytes());
    code.extend([0xba]); // mov edx, LINUX_REBOOT_CMD_POWER_OFF
    code.extend(0x4321_fedcu32.to_le_bytes());
    code.extend([0x0f, 0x05]); // syscall
    code.extend([0xeb, 0xfe]); // jmp . (never reached)
    let rel = i32::try_from(code.len() - (lea_at + 7)).expect("short");
    code[lea_at + 3..lea_at + 7].copy_from_slice(&rel.to_le_bytes());
    code.extend(&msg);
    let size = CODE_AT + code.len() as u64;

    let mut elf = Vec::new();
    elf.extend(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"); // 64-bit, little endian, SysV
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(62u16.to_le_bytes()); // EM_X86_64
    elf.extend(1u32.to_le_bytes()); // EV_CURRENT
    elf.extend((BASE + CODE_AT).to_le_bytes()); // e_entry
    elf.extend(64u64.to_le_bytes()); // e_phoff
    elf.extend(0u64.to_le_bytes()); // e_shoff
    elf.extend(0u32.to_le_bytes()); // e_flags
    elf.extend(64u16.to_le_bytes()); // e_ehsize
    elf.extend(56u16.to_le_bytes()); // e_phentsize
    elf.extend(1u16.to_le_bytes()); // e_phnum
    elf.extend([0u8; 6]); // e_shentsize, e_shnum, e_shstrndx
    elf.extend(1u32.to_le_bytes()); // PT_LOAD
    elf.extend(5u32.to_le_bytes()); // PF_R | PF_X
    elf.extend(0u64.to_le_bytes()); // p_offset
    elf.extend(BASE.to_le_bytes()); // p_vaddr
    elf.extend(BASE.to_le_bytes()); // p_paddr
    elf.extend(size.to_le_bytes()); // p_filesz
    elf.extend(size.to_le_bytes()); // p_memsz
    elf.extend(0x1000u64.to_le_bytes()); // p_align
    elf.extend(code);
    elf
}
