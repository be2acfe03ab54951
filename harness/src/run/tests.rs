//! Unit tests of `run`: grouping, sharding, filters, and folding boots into records (labels
//! and caveats included).
use super::*;
use crate::results::Accel;
use protocol::{AgentEvent, CellResult, Filesystem, Outcome};

fn matrix() -> Matrix {
    Matrix::parse(
        Path::new("m.toml"),
        r#"
kernels = ["k1", "k2"]
filesystems = ["ext4", "tmpfs"]
[[scenarios]]
kind = "mounts"
layers = [1, 2]
containers = [2]
"#,
    )
    .unwrap()
}

#[test]
fn cells_group_into_one_boot_per_kernel_topology_fs() {
    let boots = group_boots(matrix().qemu_cells());
    assert_eq!(boots.len(), 4);
    // Every built-in strategy (the default) at two layer counts.
    let per_boot = protocol::Strategy::ALL.len() * 2;
    assert!(boots.iter().all(|b| b.cells.len() == per_boot));
    assert_eq!(boots[0].key.to_string(), "k1/1s2c1t/ext4");
}

#[test]
fn shards_partition_the_boots() {
    let all = group_boots(matrix().qemu_cells());
    let mut seen = Vec::new();
    for i in 1..=3 {
        let s = shard_boots(all.clone(), Some(Shard { index: i, count: 3 }));
        seen.extend(s.into_iter().map(|b| b.key));
    }
    seen.sort();
    let mut ids: Vec<_> = all.iter().map(|b| b.key.clone()).collect();
    ids.sort();
    assert_eq!(seen, ids);
    assert!("0/3".parse::<Shard>().is_err());
    assert!("4/3".parse::<Shard>().is_err());
    assert_eq!(
        "2/3".parse::<Shard>().unwrap(),
        Shard { index: 2, count: 3 }
    );
}

#[test]
fn filters_take_substrings_and_globs() {
    let id = "debian-6.12/1s2c1t/ext4/per-layer-L50-C10-P2-J2";
    assert!(matches_filter(id, &[]));
    assert!(matches_filter(id, &["per-layer".into()]));
    assert!(matches_filter(id, &["debian-6.12/*/ext4/*".into()]));
    assert!(!matches_filter(id, &["debian-6.1/*".into()]));
    assert!(!matches_filter(id, &["xfs".into()]));
}

fn line(ev: AgentEvent) -> String {
    protocol::encode_line(&ev)
}

fn hello() -> String {
    line(AgentEvent::Hello {
        agent_version: "0".into(),
        schema_version: protocol::SCHEMA_VERSION,
        kernel_release: "6.12".into(),
        uptime_ms: 0,
    })
}

fn result(plan: &Plan, item: usize, v: f64, o: Outcome) -> String {
    line(AgentEvent::CellResult(CellResult {
        item: item as u32,
        cell_id: plan.items[item].cell_id.clone(),
        outcome: o,
        evidence: None,
        metrics: BTreeMap::from([(
            "latency_p50_us".to_string(),
            protocol::Metric::one(protocol::Unit::Microseconds, protocol::Better::Lower, v),
        )]),
        detail: None,
    }))
}

/// Fold a boot's output as a run without runtimes or known answers would.
fn fold(boot: &BootPlan, out: &BootOutput) -> (BootRecord, Vec<CellRecord>) {
    let with = FoldWith {
        host_cpu: "cpu",
        runtimes: &RunRuntimes::default(),
        expectations: &Expectations::default(),
        fail_on_kernel_warning: false,
    };
    fold_boot(boot, out, 1, &with)
}

fn output(plan: &Plan, lines: &[String], end: BootEnd) -> BootOutput {
    let mut stream = crate::backend::ResultStream::new(plan);
    for l in lines {
        stream.feed_line(l);
    }
    BootOutput {
        stream,
        end,
        accel: Accel::Tcg,
        started: std::time::Instant::now(),
        sizing: None,
        logs: vec![],
        timings_ms: BTreeMap::new(),
        kernel_source: None,
        kernel_substituted: None,
        channels: BTreeMap::new(),
        kernel_warnings: Vec::new(),
        kernel_warnings_dropped: 0,
    }
}

#[test]
fn repeats_fold_into_samples_and_missing_cells_take_the_boot_end() {
    let m = matrix();
    let boot = group_boots(m.qemu_cells()).remove(0);
    let plan = plan_for(&boot, 2, Path::new("/s"), &RunRuntimes::default());
    let n = boot.cells.len();
    // Cell 0, repeats 0 and 1: items 0 and n.
    let out = output(
        &plan,
        &[
            hello(),
            result(&plan, 0, 1.0, Outcome::Pass),
            result(&plan, n, 2.0, Outcome::Fail),
        ],
        BootEnd::Panic {
            line: "Kernel panic - not syncing".into(),
            excerpt: String::new(),
        },
    );
    let (rec, cells) = fold(&boot, &out);
    assert_eq!(rec.cells.len(), boot.cells.len());
    assert_eq!(cells[0].outcome, Outcome::Fail, "worst repeat wins");
    assert_eq!(cells[0].metrics["latency_p50_us"].samples, vec![1.0, 2.0]);
    assert_eq!(cells[0].repeats, 2);
    assert_eq!(
        cells[1].outcome,
        Outcome::Panic,
        "unreported cells take the boot's end"
    );
    assert_eq!(cells[1].provenance.accel, Accel::Tcg);
}

#[test]
fn a_broken_contract_ends_the_boot_and_keeps_what_came_before() {
    let m = matrix();
    let boot = group_boots(m.qemu_cells()).remove(0);
    let plan = plan_for(&boot, 1, Path::new("/s"), &RunRuntimes::default());
    let out = output(
        &plan,
        &[
            hello(),
            result(&plan, 0, 1.0, Outcome::Pass),
            // The same item again, with another outcome: it must not count.
            result(&plan, 0, 9.0, Outcome::Fail),
            line(AgentEvent::Done { uptime_ms: 1 }),
        ],
        BootEnd::Completed,
    );
    let (rec, cells) = fold(&boot, &out);
    assert!(matches!(
        rec.end,
        BootEnd::Infra {
            cause: InfraCause::ProtocolViolation,
            ..
        }
    ));
    assert_eq!(rec.violations_total, 1);
    assert_eq!(cells[0].outcome, Outcome::Pass, "the valid result stays");
    assert_eq!(cells[0].repeats, 1);
    assert_eq!(cells[1].outcome, Outcome::InfraError);
}

#[test]
fn a_cell_leaves_the_fold_complete_with_its_runtime_and_its_known_answer() {
    let m = Matrix::parse(
        Path::new("m.toml"),
        r#"
kernels = ["k1"]
filesystems = ["tmpfs"]
[[runtimes]]
name = "rt"
binary = "/nonexistent/rt"
job_timeout_s = 500
[[scenarios]]
kind = "mounts"
strategies = ["per-layer", "runtime:rt"]
layers = [1]
containers = [2]
[[expect]]
cells = "*/per-layer-*"
outcome = "pass"
"#,
    )
    .unwrap();
    let boot = group_boots(m.qemu_cells()).remove(0);
    // No recipe is handed over: the runtime cannot be made ready, and its cell says why.
    let runtimes = RunRuntimes::prepare(
        &[],
        &m.used_runtimes(),
        Path::new("/nonexistent/runtimes.lock"),
        crate::debian::LockPolicy::from_env(),
        &crate::events::Discard,
    );
    let plan = plan_for(&boot, 1, Path::new("/s"), &runtimes);
    assert!(plan.runtimes.is_empty(), "only ready runtimes are planned");
    let out = output(
        &plan,
        &[hello(), result(&plan, 0, 1.0, Outcome::Pass)],
        BootEnd::Completed,
    );
    let with = FoldWith {
        host_cpu: "cpu",
        runtimes: &runtimes,
        expectations: &m.expectations,
        fail_on_kernel_warning: false,
    };
    let (_, cells) = fold_boot(&boot, &out, 1, &with);
    let builtin = cells
        .iter()
        .find(|c| c.scenario.runtime().is_none())
        .unwrap();
    assert_eq!(builtin.provenance.runtime, None);
    let check = builtin.expected.as_ref().expect("judged where it was made");
    assert!(check.met);
    let rt = cells
        .iter()
        .find(|c| c.scenario.runtime().is_some())
        .unwrap();
    let named = rt
        .provenance
        .runtime
        .as_ref()
        .expect("named where it was made");
    assert_eq!(named.name.as_str(), "rt");
    assert!(named.source.starts_with("not ready: "), "{}", named.source);
    assert_eq!(rt.expected, None, "no known answer for it");
}

#[test]
fn a_runtimes_item_outlasts_one_of_its_jobs() {
    let m = Matrix::parse(
        Path::new("m.toml"),
        r#"
kernels = ["k1"]
filesystems = ["tmpfs"]
[[runtimes]]
name = "rt"
binary = "/nonexistent/rt"
job_timeout_s = 3000
[[scenarios]]
kind = "mounts"
strategies = ["runtime:rt"]
layers = [1]
containers = [2]
"#,
    )
    .unwrap();
    let boot = group_boots(m.qemu_cells()).remove(0);
    let without = plan_for(&boot, 1, Path::new("/s"), &RunRuntimes::default());
    assert!(without.runtimes.is_empty());
    assert!(without.items[0].timeout_s < Some(3000));
    let runtimes = RunRuntimes::ready_for_test(&m.runtimes[0], "00".repeat(32));
    let plan = plan_for(&boot, 1, Path::new("/s"), &runtimes);
    assert_eq!(plan.runtimes.len(), 1);
    assert_eq!(plan.runtimes[0].job_timeout_s, 3000);
    assert_eq!(plan.items[0].timeout_s, Some(3000 + ITEM_SLACK_S));
}

fn host_matrix(fs: &str) -> Matrix {
    Matrix::parse(
        Path::new("m.toml"),
        &format!(
            "[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\n[[hosts]]\nname = \"lab1\"\n\
             destination = \"root@lab1\"\n{fs}"
        ),
    )
    .unwrap()
}

fn measured_lines(plan: &Plan, fs: &str) -> Vec<String> {
    vec![
        hello(),
        line(AgentEvent::Topology(ObservedTopology {
            virtualization: Some(protocol::Virtualization {
                hypervisor: Some(protocol::Hypervisor::Kvm),
                evidence: vec![],
            }),
            ..Default::default()
        })),
        line(AgentEvent::Capabilities(protocol::Capabilities {
            kernel_release: "6.12".into(),
            probed_fs: fs.into(),
            disk: None,
            probes: vec![],
        })),
        result(plan, 0, 1.0, Outcome::Pass),
        line(AgentEvent::Done { uptime_ms: 1 }),
    ]
}

#[test]
fn a_hosts_cells_carry_the_measured_filesystem_and_hypervisor() {
    let m = host_matrix("");
    let boot = group_boots(m.ssh_cells()).remove(0);
    assert_eq!(boot.key.filesystem, LayerFs::Unmeasured);
    let plan = plan_for(&boot, 1, Path::new("/s"), &RunRuntimes::default());
    let out = output(&plan, &measured_lines(&plan, "tmpfs"), BootEnd::Completed);
    let (rec, cells) = fold(&boot, &out);
    assert_eq!(rec.key.to_string(), "lab1/smt-as-is/tmpfs");
    assert_eq!(
        cells[0].key.to_string(),
        "lab1/smt-as-is/tmpfs/per-layer-L1-C20-P2-J1"
    );
    let keys: Vec<CellKey> = cells.iter().map(|c| c.key.clone()).collect();
    assert_eq!(rec.cells, keys);
    assert_eq!(cells[0].outcome, Outcome::Pass);
    assert_eq!(
        cells[0].provenance.accel,
        Accel::Vm(protocol::Hypervisor::Kvm),
        "a VM is not metal"
    );
    // A visit that never reached its agent claims nothing.
    let lost = output(
        &plan,
        &[],
        BootEnd::infra(InfraCause::Connection, "no route to host"),
    );
    let (rec, cells) = fold(&boot, &lost);
    assert_eq!(rec.key.filesystem, LayerFs::Unmeasured);
    assert_eq!(cells[0].provenance.accel, Accel::Unmeasured);
    assert_eq!(cells[0].outcome, Outcome::InfraError);
}

#[test]
fn a_wrong_filesystem_assertion_ends_the_visit_naming_both() {
    let m = host_matrix("filesystem = \"xfs\"\n");
    let boot = group_boots(m.ssh_cells()).remove(0);
    let plan = plan_for(&boot, 1, Path::new("/s"), &RunRuntimes::default());
    let out = output(&plan, &measured_lines(&plan, "tmpfs"), BootEnd::Completed);
    let (rec, cells) = fold(&boot, &out);
    let BootEnd::Infra { cause, message } = &rec.end else {
        panic!("{:?}", rec.end);
    };
    assert_eq!(*cause, InfraCause::Filesystem);
    assert!(
        message.contains("xfs") && message.contains("tmpfs"),
        "{message}"
    );
    assert_eq!(
        cells[0].outcome,
        Outcome::InfraError,
        "its numbers are not xfs's"
    );
    assert!(cells[0].metrics.is_empty());
    assert_eq!(cells[0].key.filesystem, protocol::Filesystem::Xfs);
}

#[test]
fn filters_see_an_unmeasured_filesystem_as_any() {
    let m = host_matrix("");
    let key = &m.ssh_cells()[0].key;
    assert!(cell_matches_filter(key, &["lab1/*/tmpfs/*".into()]));
    assert!(cell_matches_filter(key, &["unmeasured".into()]));
    assert!(!cell_matches_filter(key, &["lab2/*".into()]));
    let declared = host_matrix("filesystem = \"xfs\"\n");
    assert!(!cell_matches_filter(
        &declared.ssh_cells()[0].key,
        &["/tmpfs/".into()]
    ));
}

#[test]
fn topology_mismatch_is_spelled_out() {
    let m = matrix();
    let t = &m.topologies[0];
    let mut obs = ObservedTopology {
        cpus_online: vec![0, 1],
        sockets: 1,
        cores_per_socket: 2,
        threads_per_core: 1,
        numa_nodes: vec![protocol::NumaNode {
            id: 0,
            cpus: vec![0, 1],
            memory_mib: 700,
            distances: vec![10],
        }],
        ..Default::default()
    };
    assert_eq!(topology_mismatch(t, &obs), None);
    obs.cpus_online = vec![0];
    let m = topology_mismatch(t, &obs).unwrap();
    assert!(m.contains("1 CPUs online, asked for 2"), "{m}");
}

#[test]
fn a_storms_limit_grows_with_its_tables() {
    use protocol::lockbench::{Bench, LockbenchScenario};
    let storm = |tables: Vec<u32>| {
        Scenario::Lockbench(LockbenchScenario {
            bench: Bench::Storm,
            prepopulated_mounts: tables,
            ..LockbenchScenario::default()
        })
    };
    let empty = item_timeout_s(&storm(vec![0]));
    let grown = item_timeout_s(&storm(vec![0, 1_000, 10_000]));
    // Three points and 55 s of growing and tearing down tables, per strategy.
    assert!(grown >= empty + 2 * 10 + 55, "{empty} → {grown}");
    let other = Scenario::Lockbench(LockbenchScenario {
        bench: Bench::Mountinfo,
        prepopulated_mounts: vec![0, 1_000, 10_000],
        ..LockbenchScenario::default()
    });
    assert!(item_timeout_s(&other) < grown, "only a storm grows a table");
}

/// A splat belongs to the cell whose item printed it (every repeat's item), the boot keeps
/// every splat, and only `--fail-on-kernel-warning` fails the cell.
#[test]
fn kernel_warnings_go_to_the_cell_whose_item_printed_them() {
    use crate::results::{CellFailure, KernelWarning};
    use protocol::kmsg::{Phase, SplatKind};
    let m = matrix();
    let boot = group_boots(m.qemu_cells()).remove(0);
    let n = boot.cells.len();
    assert!(n >= 2, "the fixture has two cells");
    let plan = plan_for(&boot, 2, Path::new("/s"), &RunRuntimes::default());
    let mut lines = vec![hello()];
    for i in 0..plan.items.len() {
        lines.push(result(&plan, i, 1.0, Outcome::Pass));
    }
    lines.push(line(AgentEvent::Done { uptime_ms: 1 }));
    let mut out = output(&plan, &lines, BootEnd::Completed);
    let warning = |during| KernelWarning {
        kind: SplatKind::Warning,
        during,
        lines: vec!["WARNING: CPU: 0 PID: 9 at fs/overlayfs/super.c:1326 ovl_fill_super".into()],
        lines_total: 12,
    };
    // Cell 1 in its second repeat (item n + 1), and once during the probes.
    out.kernel_warnings = vec![
        warning(Some(Phase::Probes)),
        warning(Some(Phase::Item(u32::try_from(n + 1).unwrap()))),
    ];
    let (rec, cells) = fold(&boot, &out);
    assert_eq!(rec.kernel_warnings.len(), 2, "the boot keeps every splat");
    assert!(cells[0].kernel_warnings.is_empty());
    assert_eq!(
        cells[1].kernel_warnings,
        [warning(Some(Phase::Item(u32::try_from(n + 1).unwrap())))]
    );
    assert!(
        cells.iter().all(|c| c.failed_by.is_none() && c.is_ok()),
        "reported, not failed"
    );

    let with = FoldWith {
        host_cpu: "cpu",
        runtimes: &RunRuntimes::default(),
        expectations: &Expectations::default(),
        fail_on_kernel_warning: true,
    };
    let (_, cells) = fold_boot(&boot, &out, 1, &with);
    assert_eq!(cells[0].failed_by, None);
    assert!(cells[0].is_ok());
    assert_eq!(cells[1].failed_by, Some(CellFailure::KernelWarning));
    assert_eq!(
        cells[1].outcome,
        Outcome::Pass,
        "the cell's own answer stays"
    );
    assert!(!cells[1].is_ok());
}

fn caps(fs: &str) -> String {
    line(AgentEvent::Capabilities(protocol::Capabilities {
        kernel_release: "6.12".into(),
        probed_fs: fs.into(),
        disk: fs.parse().ok(),
        probes: vec![],
    }))
}

/// Cells per filesystem in `matrix()`: every built-in strategy at two layer counts.
const PER_FS: usize = protocol::Strategy::ALL.len() * 2;

fn guests() -> Vec<guest::Guest> {
    let (guests, alone) = guest::guests_of(group_boots(matrix().qemu_cells()));
    assert!(
        alone.is_empty(),
        "every guest boot joins its target's guest"
    );
    guests
}

#[test]
fn one_guest_serves_every_filesystem_of_a_kernel_and_topology() {
    let guests = guests();
    assert_eq!(guests.len(), 2, "k1 and k2, one topology");
    let g = &guests[0];
    assert_eq!(g.filesystems(), [Filesystem::Ext4, Filesystem::Tmpfs]);
    assert_eq!(g.log_stem().unwrap().to_string(), "k1_1s2c1t");
    let plan = g.plan(2, Path::new("/scratch"), &RunRuntimes::default());
    // Each boot's plan in turn (its repeats together), numbered anew, each item on its own
    // filesystem's disk; ids are the cells' own.
    assert_eq!(plan.items.len(), 2 * PER_FS * 2);
    for (i, item) in plan.items.iter().enumerate() {
        assert_eq!(item.item as usize, i);
        let fs = if i < PER_FS * 2 { "ext4" } else { "tmpfs" };
        assert_eq!(item.filesystem.map(|f| f.as_str()), Some(fs));
        assert!(
            item.cell_id.starts_with(&format!("k1/1s2c1t/{fs}/")),
            "{}",
            item.cell_id
        );
    }
    // Hosts and this machine keep one boot each (their filesystem is what they measure).
    let (g, alone) = guest::guests_of(group_boots(host_matrix("").ssh_cells()));
    assert!(g.is_empty());
    assert_eq!(alone.len(), 1);
    let plan = plan_for(&alone[0], 1, Path::new("/s"), &RunRuntimes::default());
    assert!(plan.items.iter().all(|i| i.filesystem.is_none()));
}

#[test]
fn a_guests_output_folds_into_one_record_per_filesystem_as_its_own_boot_would() {
    let g = guests().remove(0);
    let runtimes = RunRuntimes::default();
    let plan = g.plan(1, Path::new("/scratch"), &runtimes);
    let mut lines = vec![hello(), caps("ext4"), caps("tmpfs")];
    lines.extend((0..plan.items.len()).map(|i| result(&plan, i, i as f64, Outcome::Pass)));
    lines.push(line(AgentEvent::Done { uptime_ms: 1 }));
    let out = output(&plan, &lines, BootEnd::Completed);
    assert!(!out.stream.broke_contract(), "{:?}", out.stream.violations);
    let (parts, rerun) = g.split(1, &out, &runtimes);
    assert!(rerun.is_none());
    assert_eq!(parts.len(), 2);
    for (part, fs) in parts.iter().zip(["ext4", "tmpfs"]) {
        let (rec, cells) = fold(&part.boot, &part.out);
        assert_eq!(rec.key.to_string(), format!("k1/1s2c1t/{fs}"));
        assert!(rec.end.is_completed());
        assert_eq!(
            rec.capabilities.as_ref().map(|c| c.probed_fs.as_str()),
            Some(fs)
        );
        assert_eq!(cells.len(), PER_FS);
        for c in &cells {
            assert_eq!(c.key.filesystem.as_str(), fs);
            assert_eq!(c.outcome, Outcome::Pass, "{}", c.key);
            // The sample is the one this cell's own item answered.
            let at = plan
                .items
                .iter()
                .position(|i| i.cell_id == c.key.to_string());
            assert_eq!(c.metrics["latency_p50_us"].samples, [at.unwrap() as f64]);
        }
    }
    // Two probes of one filesystem break the contract.
    let mut s = crate::backend::ResultStream::new(&plan);
    for l in [hello(), caps("ext4"), caps("ext4")] {
        s.feed_line(&l);
    }
    assert!(s.broke_contract());
    // erofs's disk measures as ext4 (its images' carrier): named by its disk, no repeat.
    let erofs = line(AgentEvent::Capabilities(protocol::Capabilities {
        kernel_release: "6.12".into(),
        probed_fs: "ext4".into(),
        disk: Some(Filesystem::Erofs),
        probes: vec![],
    }));
    let mut s = crate::backend::ResultStream::new(&plan);
    for l in [hello(), caps("ext4"), erofs] {
        s.feed_line(&l);
    }
    assert!(!s.broke_contract(), "{:?}", s.violations);
    let erofs_part = s.select(&plan, Some(Filesystem::Erofs));
    assert_eq!(erofs_part.capabilities.len(), 1);
    assert_eq!(erofs_part.capabilities[0].disk, Some(Filesystem::Erofs));
}

#[test]
fn a_panic_costs_the_running_cell_and_the_rest_run_once_more_in_a_fresh_guest() {
    let g = guests().remove(0);
    let runtimes = RunRuntimes::default();
    let plan = g.plan(1, Path::new("/scratch"), &runtimes);
    // ext4's cells answered, tmpfs's first answered, its second was running.
    let mut lines = vec![hello(), caps("ext4"), caps("tmpfs")];
    lines.extend((0..PER_FS + 1).map(|i| result(&plan, i, 1.0, Outcome::Pass)));
    let panic = BootEnd::Panic {
        line: "Kernel panic - not syncing".into(),
        excerpt: String::new(),
    };
    let out = output(&plan, &lines, panic.clone());
    let (parts, rerun) = g.split(1, &out, &runtimes);
    let (ext4, ext4_cells) = fold(&parts[0].boot, &parts[0].out);
    assert!(ext4.end.is_completed(), "every ext4 cell answered");
    assert!(ext4_cells.iter().all(|c| c.outcome == Outcome::Pass));
    let (tmpfs, tmpfs_cells) = fold(&parts[1].boot, &parts[1].out);
    assert_eq!(tmpfs.end, panic);
    let outcomes: Vec<Outcome> = tmpfs_cells.iter().map(|c| c.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Pass, Outcome::Panic],
        "the running cell is classified"
    );
    assert_eq!(
        tmpfs_cells[1].key.to_string(),
        plan.items[PER_FS + 1].cell_id
    );

    let rerun = rerun.expect("tmpfs's later cells were not reached");
    assert!(rerun.rerun);
    assert_eq!(rerun.log_stem().unwrap().to_string(), "k1_1s2c1t+rerun");
    assert_eq!(rerun.filesystems(), [Filesystem::Tmpfs]);
    let again = rerun.plan(1, Path::new("/scratch"), &runtimes);
    let ids: Vec<&str> = again.items.iter().map(|i| i.cell_id.as_str()).collect();
    let rest: Vec<&str> = plan.items[PER_FS + 2..]
        .iter()
        .map(|i| i.cell_id.as_str())
        .collect();
    assert_eq!(ids, rest);
    // The rerun is the last: what it did not reach takes its end.
    let out = output(&again, &[hello(), caps("tmpfs")], panic.clone());
    let (parts, more) = rerun.split(1, &out, &runtimes);
    assert!(more.is_none(), "one rerun at most");
    let (rec, cells) = fold(&parts[0].boot, &parts[0].out);
    assert_eq!(rec.key.to_string(), "k1/1s2c1t/tmpfs");
    assert_eq!(cells.len(), PER_FS - 2);
    assert!(cells.iter().all(|c| c.outcome == Outcome::Panic));
}

#[test]
fn a_guest_that_panicked_in_boot_reran_every_cell_once() {
    let g = guests().remove(0);
    let runtimes = RunRuntimes::default();
    let plan = g.plan(1, Path::new("/scratch"), &runtimes);
    let panic = BootEnd::Panic {
        line: "Kernel panic - not syncing: IO-APIC + timer doesn't work!".into(),
        excerpt: String::new(),
    };
    let (parts, rerun) = g.split(1, &output(&plan, &[], panic.clone()), &runtimes);
    assert!(parts.is_empty(), "no cell was reached");
    let rerun = rerun.expect("every cell runs again");
    assert_eq!(rerun.filesystems(), g.filesystems());
    let again = rerun.plan(1, Path::new("/scratch"), &runtimes);
    assert_eq!(again.items, plan.items, "the same plan");
    // The rerun panics too: every cell takes its end.
    let (parts, more) = rerun.split(1, &output(&again, &[], panic.clone()), &runtimes);
    assert!(more.is_none());
    assert_eq!(parts.len(), 2);
    for p in &parts {
        let (rec, cells) = fold(&p.boot, &p.out);
        assert_eq!(rec.end, panic);
        assert!(cells.iter().all(|c| c.outcome == Outcome::Panic));
    }
    // An infra error is `--retries`' to handle, never a rerun.
    let infra = BootEnd::infra(crate::results::InfraCause::Spawn, "qemu exited");
    let (parts, rerun) = g.split(1, &output(&plan, &[], infra), &runtimes);
    assert!(rerun.is_none());
    assert_eq!(parts.len(), 2);
}
