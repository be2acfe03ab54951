//! Boot benchmarks: numbers about booting guests, printed, never asserted (speed is recorded and
//! judged by people and `mmx compare`, not by tests). Real kernels, real QEMU.
//!
//! ```text
//! cargo bench -p harness --bench boot -- agent-ready [--kernels K,K] [--rounds 5]
//! cargo bench -p harness --bench boot -- tcg-mt [--kernels K,K] [--boots 20] [--json FILE] [--control]
//! ```
//!
//! - `agent-ready`: boot-to-agent-ready against a guest whose /init only prints a line (same
//!   kernel and flags, both in this run), the ratio of the two, harness time before QEMU starts,
//!   and the KVM verdict from a fresh cache.
//! - `tcg-mt`: is multi-threaded TCG (`-accel tcg,thread=multi`) stable enough to measure
//!   contention? Boots every kernel N times under it with the default matrix's lock benchmark
//!   and a small mounts cell, and counts boots that did not complete cleanly (a panic, an oops,
//!   a missing result, a kernel WARNING on the console). `--control` boots the same under
//!   single-threaded TCG, for the scalability numbers to compare: `per-thread` (no shared lock)
//!   at 2 threads scales near 1.0 only when the vCPUs really run at once.
//!
//! Kernels default to the default matrix's (`debian-6.1`, `debian-6.12`, `debian-7.x`); they are
//! fetched into the cache on first use.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{agent, kernel};
use harness::backend::qemu::{self, AccelChoice, Qemu};
use harness::backend::{BootOutput, BootRequest, Deadlines};
use harness::cell::{BootKey, TargetKey};
use harness::kernels::ResolvedKernel;
use harness::matrix::Topology;
use harness::proc::Cancel;
use harness::results::{Accel, BootEnd, RunDir};
use protocol::lockbench::{Bench, LockKind, LockbenchScenario};
use protocol::{
    CellDetail, Filesystem, MountsScenario, Outcome, Plan, PlanItem, Scenario, Strategy,
};

const DEFAULT_KERNELS: &str = "debian-6.1,debian-6.12,debian-7.x";

fn main() {
    // `cargo bench` passes `--bench`; everything else is ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let kernels: Vec<String> = opt("--kernels")
        .unwrap_or_else(|| DEFAULT_KERNELS.into())
        .split(',')
        .map(str::to_string)
        .collect();
    let number = |name: &str, default: usize| {
        opt(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} {v}: not a number"))
        })
    };
    match args.first().map(String::as_str) {
        Some("agent-ready") => agent_ready(&kernels, number("--rounds", 5)),
        Some("tcg-mt") => tcg_mt(
            &kernels,
            number("--boots", 20),
            opt("--json"),
            args.iter().any(|a| a == "--control"),
        ),
        _ => eprintln!(
            "usage: cargo bench -p harness --bench boot -- agent-ready|tcg-mt [--kernels K,K] \
             [--rounds N] [--boots N] [--json FILE]"
        ),
    }
}

fn run_dir() -> RunDir {
    common::run_dir("mmx-boot-bench")
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

fn key(kernel: &str, topology: &str) -> BootKey {
    BootKey {
        target: TargetKey::Qemu {
            kernel: kernel.into(),
            topology: topology.into(),
        },
        filesystem: Filesystem::Tmpfs.into(),
    }
}

fn plan(id: &BootKey, probe: bool, scenarios: Vec<(String, Scenario)>) -> Plan {
    Plan {
        schema_version: protocol::SCHEMA_VERSION,
        boot_id: id.to_string(),
        scratch_dir: "/".into(),
        scratch_disks: Vec::new(),
        modules: Vec::new(),
        probe,
        items: scenarios
            .into_iter()
            .enumerate()
            .map(|(i, (cell_id, scenario))| PlanItem {
                item: i as u32,
                cell_id,
                scenario,
                timeout_s: Some(120),
                filesystem: None,
            })
            .collect(),
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

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------------
// tcg-mt
// ---------------------------------------------------------------------------------------------

/// One boot under multi-threaded TCG, judged.
#[derive(Debug, serde::Serialize)]
struct MtBoot {
    kernel: String,
    boot: usize,
    ok: bool,
    /// Why not, when not.
    problem: String,
    agent_ready_ms: Option<f64>,
    plan_done_ms: Option<f64>,
    /// user-spin `tas` at 2 threads: ops/(ops@1 × 2). What real contention gives depends on
    /// the host; taking turns hides the cache-line bouncing.
    tas_scalability_2: Option<f64>,
    /// user-spin `per-thread` (no shared lock) at 2 threads: near 1.0 when the vCPUs run at
    /// once, near 0.5 when they take turns.
    per_thread_scalability_2: Option<f64>,
}

fn tcg_mt(kernels: &[String], boots: usize, json: Option<String>, control: bool) {
    let topo = topology(1, 2, 1, 768);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if (cores as u32) < topo.vcpus() {
        eprintln!(
            "note: {cores} host cores < {} vCPUs: tcg-mt would time-slice too",
            topo.vcpus()
        );
    }
    let (choice, want) = if control {
        (AccelChoice::Tcg, Accel::Tcg)
    } else {
        (AccelChoice::TcgMt, Accel::TcgMt)
    };
    let q = Qemu::new(
        choice,
        agent(),
        common::cache().root().to_path_buf(),
        &common::ToStderr,
    )
    .expect("qemu backend");
    let spin = Scenario::Lockbench(LockbenchScenario {
        bench: Bench::UserSpin,
        locks: vec![
            LockKind::Tas,
            LockKind::Ticket,
            LockKind::Mutex,
            LockKind::PerThread,
        ],
        warmup_ms: 20,
        duration_ms: 100,
        ..LockbenchScenario::default()
    });
    let mounts = Scenario::Mounts(MountsScenario {
        strategy: Strategy::PerLayer.into(),
        layers: 10,
        containers: 10,
        concurrency: 2,
        passes: 2,
        watchers: Vec::new(),
    });
    let mut all = Vec::new();
    for name in kernels {
        let k = kernel(name);
        for b in 0..boots {
            let id = key(name, &format!("tcg-mt-{b}"));
            let p = plan(
                &id,
                true,
                vec![
                    (format!("{id}/lockbench-user-spin"), spin.clone()),
                    (format!("{id}/per-layer-L10-C10-P2-J2"), mounts.clone()),
                ],
            );
            let out = q.boot(&request(&id, p), &k, &topo, Filesystem::Tmpfs);
            let judged = judge_mt(name, b, &out, want);
            eprintln!(
                "{want} {name} #{b:>2}: {} {}",
                if judged.ok { "ok  " } else { "FAIL" },
                if judged.ok {
                    format!(
                        "ready {:.0} ms, done {:.0} ms, scalability@2 tas {} per-thread {}",
                        judged.agent_ready_ms.unwrap_or(f64::NAN),
                        judged.plan_done_ms.unwrap_or(f64::NAN),
                        two(judged.tas_scalability_2),
                        two(judged.per_thread_scalability_2),
                    )
                } else {
                    judged.problem.clone()
                }
            );
            all.push(judged);
        }
    }
    let mut per: BTreeMap<&str, Vec<&MtBoot>> = BTreeMap::new();
    for b in &all {
        per.entry(&b.kernel).or_default().push(b);
    }
    for (name, v) in &per {
        let ok = v.iter().filter(|b| b.ok).count();
        let mut ready: Vec<f64> = v.iter().filter_map(|b| b.agent_ready_ms).collect();
        let mut tas: Vec<f64> = v.iter().filter_map(|b| b.tas_scalability_2).collect();
        let mut own: Vec<f64> = v
            .iter()
            .filter_map(|b| b.per_thread_scalability_2)
            .collect();
        eprintln!(
            "{} {name}: {ok}/{} boots clean; agent-ready median {:.0} ms; scalability@2 median: \
             tas {:.2}, per-thread {:.2}",
            want.as_str().to_uppercase(),
            v.len(),
            median(&mut ready),
            median(&mut tas),
            median(&mut own)
        );
        for b in v.iter().filter(|b| !b.ok) {
            eprintln!("  #{}: {}", b.boot, b.problem);
        }
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&all).expect("encode");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        eprintln!("written {path}");
    }
}

/// Console lines that say the kernel is unwell even when it finished: an alarm the backend would
/// end the boot for, or a WARNING with its trace.
fn console_trouble(out: &BootOutput) -> Option<String> {
    let rel = out
        .logs
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".console.log"))?;
    let text = std::fs::read_to_string(run_dir().abs(rel)).ok()?;
    text.lines()
        .find(|l| {
            qemu::console::classify(l).is_some() || l.contains("WARNING:") || l.contains("int3")
        })
        .map(|l| qemu::console::clean(l).to_string())
}

fn two(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{s:.2}"))
}

fn judge_mt(kernel: &str, boot: usize, out: &BootOutput, want: Accel) -> MtBoot {
    let t = &out.timings_ms;
    let results = out.stream.results();
    let mut problem = match &out.end {
        BootEnd::Completed => String::new(),
        other => other.summary(),
    };
    if problem.is_empty() && out.accel != want {
        problem = format!("ran under {}, not {want}", out.accel);
    }
    if problem.is_empty() {
        if let Some(i) = results.iter().position(Option::is_none) {
            problem = format!("no result for item {i}");
        }
    }
    if problem.is_empty() {
        if let Some(r) = results
            .iter()
            .flatten()
            // Unsupported is the kernel's answer (6.1 cannot idmap tmpfs), not instability.
            .find(|r| !matches!(r.outcome, Outcome::Pass | Outcome::Unsupported))
        {
            problem = format!(
                "{} ended {}: {}",
                r.cell_id,
                r.outcome,
                r.evidence.as_ref().map_or(String::new(), |e| e.to_string())
            );
        }
    }
    if let Some(line) = console_trouble(out) {
        if problem.is_empty() {
            problem = format!("console: {line}");
        }
    }
    let scalability_2 = |workload: &str| {
        results.iter().flatten().find_map(|r| match &r.detail {
            Some(CellDetail::Lockbench(l)) => l
                .points
                .iter()
                .find(|p| p.workload == workload && !p.false_sharing && p.threads == 2)
                .and_then(|p| p.scalability),
            _ => None,
        })
    };
    MtBoot {
        kernel: kernel.to_string(),
        boot,
        ok: problem.is_empty(),
        problem,
        agent_ready_ms: t
            .get("agent-ready")
            .zip(t.get("qemu-start"))
            .map(|(a, s)| a - s),
        plan_done_ms: t
            .get("plan-done")
            .zip(t.get("agent-ready"))
            .map(|(d, a)| d - a),
        tas_scalability_2: scalability_2("tas"),
        per_thread_scalability_2: scalability_2("per-thread"),
    }
}

// ---------------------------------------------------------------------------------------------
// agent-ready
// ---------------------------------------------------------------------------------------------

fn agent_ready(kernels: &[String], rounds: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mini = dir.path().join("mini.cpio");
    std::fs::write(&mini, minimal_initrd()).expect("write minimal initrd");
    for name in kernels {
        let k = kernel(name);
        let topo = topology(1, 2, 1, 768);
        let q = common::backend();
        let (mut agent_ms, mut mini_ms, mut pre_ms) = (vec![], vec![], vec![]);
        for r in 0..rounds {
            let id = key(name, &format!("measure-{r}"));
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
        let (a, m) = (median(&mut agent_ms), median(&mut mini_ms));
        // On a shared, loaded machine the fastest boot is the least disturbed one.
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let (amin, mmin) = (min(&agent_ms), min(&mini_ms));
        eprintln!(
            "MEASURE {name}: agent-ready median {a:.0} ms / min {amin:.0} ms, minimal /init \
             median {m:.0} ms / min {mmin:.0} ms, ratio median {:.3} / min {:.3}; harness \
             before qemu {:.0} ms (samples agent {agent_ms:.0?} minimal {mini_ms:.0?})",
            a / m,
            amin / mmin,
            median(&mut pre_ms)
        );
    }
    // The KVM verdict from a fresh cache: times the probe.
    let fresh = tempfile::tempdir().expect("tempdir");
    let q = Qemu::new(
        AccelChoice::Auto,
        agent(),
        fresh.path().to_path_buf(),
        &common::ToStderr,
    )
    .expect("auto");
    let name = kernels.first().map_or("debian-6.12", String::as_str);
    let k = kernel(name);
    let start = Instant::now();
    let id = key(name, "probe");
    let out = q.boot(
        &request(&id, plan(&id, false, vec![])),
        &k,
        &topology(1, 1, 1, 256),
        Filesystem::Tmpfs,
    );
    eprintln!(
        "MEASURE accel auto: {} (first boot incl. probe {:?}, boot end {})",
        out.accel,
        start.elapsed(),
        out.end.summary()
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
    // The serial ports are sockets `run_guest` opens and adds.
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
        &plan(&key(&k.name, "minimal"), false, vec![]),
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
