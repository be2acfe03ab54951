//! The `ssh` backend against a real `sshd` on loopback: a throwaway host key and user key, the
//! "remote" host being this machine. Needs root (the agent mounts; sshd's privilege separation)
//! and /usr/sbin/sshd; without them each test fails under `CI=true` and says SKIPPED elsewhere.
//! The fixture is `common::sshd`.
//!
//! Most tests use a tiny stand-in agent (a shell script speaking the wire format) so they test
//! the SSH plumbing quickly and deterministically; `real_agent_*` run the real static agent.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::sshd::{free_port, Sshd};

use harness::backend::ssh::{self, HostSession};
use harness::backend::{BootOutput, BootRequest, Deadlines};
use harness::cell::{BootKey, SmtSetting, TargetKey};
use harness::proc::Cancel;
use harness::results::{Accel, BootEnd, InfraCause, RunDir};
use protocol::{MountsScenario, Outcome, Plan, PlanItem, Scenario, Strategy};

/// Return from the test when sshd or root is missing: a failure under `CI=true`, a loud
/// SKIPPED elsewhere (`common::require`).
macro_rules! skip_unless_ready {
    () => {
        if let Some(why) = common::sshd::skip_reason() {
            common::require(false, &why);
            return;
        }
    };
}

/// The stand-in agent: speaks the wire format. `quick` plans end with Done; a plan whose
/// boot id says `hang` reports one result and then ignores stdin, like a stuck agent, to show
/// that a lost connection stops it anyway. It leaves a file in its scratch dir to be cleaned.
const FAKE_AGENT: &str = r#"#!/bin/sh
plan=$2
scratch=$(grep -o '"scratch_dir":"[^"]*"' "$plan" | cut -d'"' -f4)
: > "$scratch/layer-file"
echo "fake agent stderr" >&2
echo 'MMX1 {"event":"hello","agent_version":"fake","schema_version":@SCHEMA@,"kernel_release":"fake","uptime_ms":1}'
item=0
for id in $(grep -o '"cell_id":"[^"]*"' "$plan" | cut -d'"' -f4); do
  echo "MMX1 {\"event\":\"cell-result\",\"item\":$item,\"cell_id\":\"$id\",\"outcome\":\"pass\",\"metrics\":{}}"
  item=$((item+1))
  if grep -q '"boot_id":"[^"]*hang' "$plan"; then exec sleep 300; fi
done
echo 'MMX1 {"event":"done","uptime_ms":2}'
"#;

fn fake_agent(dir: &Path) -> PathBuf {
    let p = dir.join("fake-agent");
    let mut f = std::fs::File::create(&p).expect("fake agent");
    let script = FAKE_AGENT.replace("@SCHEMA@", &protocol::SCHEMA_VERSION.to_string());
    f.write_all(script.as_bytes()).expect("write");
    drop(f);
    let _ = Command::new("chmod").arg("755").arg(&p).status();
    p
}

fn mounts_item(id: &str, layers: u32, containers: u32) -> PlanItem {
    PlanItem {
        item: 0,
        cell_id: id.into(),
        scenario: Scenario::Mounts(MountsScenario {
            strategy: Strategy::PerLayer.into(),
            layers,
            containers,
            concurrency: 1,
            passes: 2,
            watchers: Vec::new(),
        }),
        timeout_s: Some(120),
        filesystem: None,
    }
}

/// A request for a visit; `boot_id` says how the stand-in agent behaves (`quick`, `hang`).
fn request(run_dir: &Path, boot_id: &str, mut items: Vec<PlanItem>) -> BootRequest {
    let rd = RunDir::create(run_dir, "run").expect("run dir");
    for (i, item) in items.iter_mut().enumerate() {
        item.item = i as u32;
    }
    let key = BootKey {
        target: TargetKey::Ssh {
            host: format!("loopback-{boot_id}"),
            smt: SmtSetting::AsIs,
        },
        filesystem: protocol::Filesystem::Ext4.into(),
    };
    let plan = Plan {
        schema_version: protocol::SCHEMA_VERSION,
        boot_id: key.to_string(),
        scratch_dir: PathBuf::from("/replaced-by-the-backend"),
        scratch_disks: Vec::new(),
        modules: vec![],
        probe: true,
        items,
        runtimes: vec![],
    };
    BootRequest {
        key,
        deadlines: Deadlines::for_plan(&plan, Duration::from_secs(60)),
        plan,
        run_dir: rd,
        cancel: Cancel::new(),
        sink: common::sink(),
    }
}

fn cell_results(out: &BootOutput) -> Vec<(String, Outcome)> {
    out.stream
        .results()
        .iter()
        .flatten()
        .map(|r| (r.cell_id.clone(), r.outcome))
        .collect()
}

fn overhead(out: &BootOutput) -> String {
    [
        "connect-copy",
        "agent-start",
        "cleanup",
        "ssh-overhead",
        "exit",
    ]
    .iter()
    .map(|k| {
        format!(
            "{k}={:.0}ms",
            out.timings_ms.get(*k).copied().unwrap_or(-1.0)
        )
    })
    .collect::<Vec<_>>()
    .join(" ")
}

#[test]
fn fake_agent_visit_streams_results_and_leaves_nothing() {
    skip_unless_ready!();
    let sshd = Sshd::start();
    let agent = fake_agent(sshd.dir.path());
    let req = request(
        sshd.dir.path(),
        "quick",
        vec![mounts_item("c1", 2, 2), mounts_item("c2", 2, 2)],
    );
    let out = ssh::run_host(&agent, &sshd.host(), SmtSetting::AsIs, &req);
    eprintln!("overhead (fake agent, one handshake): {}", overhead(&out));
    assert_eq!(out.end, BootEnd::Completed, "{:?}", out);
    assert_eq!(out.accel, Accel::Metal);
    assert_eq!(
        cell_results(&out),
        vec![("c1".into(), Outcome::Pass), ("c2".into(), Outcome::Pass)]
    );
    assert!(out.stream.is_done());
    let agent_log = req.run_dir.abs(&RunDir::log_rel(&req.key, "agent"));
    assert!(std::fs::read_to_string(agent_log)
        .unwrap()
        .contains("fake agent stderr"));
    sshd.assert_no_leftovers();
    assert!(sshd.mounts().is_empty());
}

#[test]
fn a_session_shares_one_connection_and_runs_the_hooks() {
    skip_unless_ready!();
    let sshd = Sshd::start();
    let agent = fake_agent(sshd.dir.path());
    let mut host = sshd.host();
    let marks = sshd.path("hooks");
    host.provision = Some(format!(
        "echo provision $MMX_HOST_NAME >> {}",
        marks.display()
    ));
    host.teardown = Some(format!(
        "echo teardown $MMX_HOST_PORT >> {}",
        marks.display()
    ));
    let mut session = HostSession::open(&host, &Cancel::new(), common::sink());
    for smt in [SmtSetting::AsIs, SmtSetting::Off] {
        let req = request(sshd.dir.path(), "quick", vec![mounts_item("c1", 2, 2)]);
        let out = session.run(&agent, smt, &req);
        eprintln!("overhead ({smt:?}): {}", overhead(&out));
        assert_eq!(out.end, BootEnd::Completed, "{out:?}");
    }
    assert_eq!(session.close(), Ok(()));
    assert_eq!(
        sshd.logins(),
        1,
        "two visits, one handshake:\n{}",
        sshd.log()
    );
    let hooks = std::fs::read_to_string(&marks).unwrap();
    assert_eq!(
        hooks,
        format!("provision loopback\nteardown {}\n", sshd.port)
    );
    assert!(sshd.remote_leftovers().is_empty());
}

#[test]
fn smt_that_cannot_be_switched_is_unsupported_with_evidence() {
    skip_unless_ready!();
    let control =
        std::fs::read_to_string("/sys/devices/system/cpu/smt/control").unwrap_or_default();
    let without_smt = control.trim() == "notsupported";
    let why = format!(
        "needs a machine without SMT; control reads `{}`",
        control.trim()
    );
    if !common::require(without_smt, &why) {
        return;
    }
    let sshd = Sshd::start();
    let agent = fake_agent(sshd.dir.path());
    let req = request(sshd.dir.path(), "quick", vec![mounts_item("c1", 2, 2)]);
    let out = ssh::run_host(&agent, &sshd.host(), SmtSetting::On, &req);
    assert_eq!(out.end, BootEnd::Completed);
    let Some(r) = &out.stream.results()[0] else {
        panic!("{out:?}")
    };
    assert_eq!(r.outcome, Outcome::Unsupported);
    assert!(r.evidence.as_ref().unwrap().detail.contains("notsupported"));
    assert!(sshd.remote_leftovers().is_empty());
}

#[test]
fn unknown_host_key_is_refused_quickly() {
    skip_unless_ready!();
    let sshd = Sshd::start();
    std::fs::write(sshd.path("known_hosts"), "").unwrap();
    let agent = fake_agent(sshd.dir.path());
    let req = request(sshd.dir.path(), "quick", vec![mounts_item("c1", 2, 2)]);
    let t = Instant::now();
    let out = ssh::run_host(&agent, &sshd.host(), SmtSetting::AsIs, &req);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let BootEnd::Infra {
        cause: InfraCause::Connection,
        message,
    } = &out.end
    else {
        panic!("{out:?}")
    };
    assert!(
        message.contains("host key") && message.contains("unknown"),
        "{message}"
    );
    assert!(message.contains("ssh-keyscan"), "{message}");
    // Never accepted: known_hosts is still empty.
    assert_eq!(
        std::fs::read_to_string(sshd.path("known_hosts")).unwrap(),
        ""
    );
    assert_eq!(sshd.logins(), 0);
}

#[test]
fn unreachable_host_is_an_infra_error_quickly() {
    skip_unless_ready!();
    let sshd = Sshd::start();
    let mut host = sshd.host();
    host.port = Some(free_port());
    let agent = fake_agent(sshd.dir.path());
    let req = request(sshd.dir.path(), "quick", vec![mounts_item("c1", 2, 2)]);
    let t = Instant::now();
    let out = ssh::run_host(&agent, &host, SmtSetting::AsIs, &req);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let BootEnd::Infra {
        cause: InfraCause::Connection,
        message,
    } = &out.end
    else {
        panic!("{out:?}")
    };
    assert!(
        message.contains("cannot reach") && message.contains("refused"),
        "{message}"
    );
}

/// Run `req` in a thread, drop every connection once the first result line is in the results
/// log, and return the visit's output.
fn drop_connection_mid_run(sshd: &Sshd, agent: &Path, req: &BootRequest) -> BootOutput {
    let results = req.run_dir.abs(&RunDir::log_rel(&req.key, "results"));
    let (host, agent2, req2) = (sshd.host(), agent.to_path_buf(), req.clone());
    let visit = std::thread::spawn(move || ssh::run_host(&agent2, &host, SmtSetting::AsIs, &req2));
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(&results).unwrap_or_default();
        if text.contains("\"cell-result\"") {
            break;
        }
        assert!(!visit.is_finished(), "visit ended before its first result");
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no result line in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sshd.kill_connections() > 0);
    visit.join().expect("visit thread")
}

#[test]
fn dropped_connection_keeps_earlier_results_and_cleans_up() {
    skip_unless_ready!();
    let sshd = Sshd::start();
    // The stand-in hangs after its first result and ignores stdin: only the run script's
    // watcher can stop it once the connection is gone.
    let agent = fake_agent(sshd.dir.path());
    let req = request(
        sshd.dir.path(),
        "hang",
        vec![mounts_item("c1", 2, 2), mounts_item("c2", 2, 2)],
    );
    let t = Instant::now();
    let out = drop_connection_mid_run(&sshd, &agent, &req);
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let BootEnd::Infra {
        cause: InfraCause::Connection,
        message,
    } = &out.end
    else {
        panic!("{out:?}")
    };
    assert!(
        message.contains("connection") && message.contains("lost"),
        "{message}"
    );
    assert_eq!(cell_results(&out), vec![("c1".into(), Outcome::Pass)]);
    // The harness reconnected and cleaned up after the run script.
    sshd.assert_no_leftovers();
    assert!(sshd.mounts().is_empty());
    let ps = Command::new("pgrep")
        .args(["-f", &format!("{}/mmx", sshd.path("remote-tmp").display())])
        .output();
    if let Ok(ps) = ps {
        assert!(
            ps.stdout.is_empty(),
            "still running: {}",
            String::from_utf8_lossy(&ps.stdout)
        );
    }
}

#[test]
fn ctrl_c_mid_run_stops_the_agent_and_cleans_up() {
    skip_unless_ready!();
    let sshd = Sshd::start();
    let agent = fake_agent(sshd.dir.path());
    let req = request(
        sshd.dir.path(),
        "hang",
        vec![mounts_item("c1", 2, 2), mounts_item("c2", 2, 2)],
    );
    let results = req.run_dir.abs(&RunDir::log_rel(&req.key, "results"));
    let (host, req2) = (sshd.host(), req.clone());
    let visit = std::thread::spawn(move || ssh::run_host(&agent, &host, SmtSetting::AsIs, &req2));
    let t = Instant::now();
    while !std::fs::read_to_string(&results)
        .unwrap_or_default()
        .contains("\"cell-result\"")
    {
        assert!(t.elapsed() < Duration::from_secs(60) && !visit.is_finished());
        std::thread::sleep(Duration::from_millis(20));
    }
    req.cancel.cancel();
    let out = visit.join().expect("visit thread");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(
        out.end,
        BootEnd::Infra {
            cause: InfraCause::Cancelled,
            message: "interrupted (Ctrl-C)".into()
        }
    );
    assert_eq!(cell_results(&out), vec![("c1".into(), Outcome::Pass)]);
    sshd.assert_no_leftovers();
}

/// The static agent mmx carries (written into the cache); `None` (test skipped) when it cannot be.
fn real_agent() -> Option<PathBuf> {
    match harness::agent::path() {
        Ok(p) => Some(p),
        Err(e) => {
            common::require(
                false,
                &format!("the static agent could not be written to the cache: {e:#}"),
            );
            None
        }
    }
}

#[test]
fn real_agent_probes_and_mounts_on_the_host() {
    skip_unless_ready!();
    let Some(agent) = real_agent() else { return };
    let sshd = Sshd::start();
    let mounts_before = sshd.mounts();
    let req = request(
        sshd.dir.path(),
        "real",
        vec![mounts_item("loopback/smt-as-is/ext4/per-layer-L2-C2", 2, 2)],
    );
    let out = ssh::run_host(&agent, &sshd.host(), SmtSetting::AsIs, &req);
    eprintln!("overhead (real agent): {}", overhead(&out));
    assert_eq!(out.end, BootEnd::Completed, "{out:?}");
    assert_eq!(out.accel, Accel::Metal);
    assert!(out.stream.hello.is_some());
    assert!(!out.stream.capabilities.is_empty());
    assert!(out.stream.is_done() && !out.stream.broke_contract());
    assert_eq!(
        cell_results(&out),
        vec![(
            "loopback/smt-as-is/ext4/per-layer-L2-C2".into(),
            Outcome::Pass
        )],
        "{out:?}"
    );
    sshd.assert_no_leftovers();
    assert_eq!(sshd.mounts(), mounts_before);
}

#[test]
fn real_agent_dropped_connection_keeps_earlier_results_and_cleans_up() {
    skip_unless_ready!();
    let Some(agent) = real_agent() else { return };
    let sshd = Sshd::start();
    // Long enough to be cut (seconds), and quick to stop: the agent checks its stop flag per
    // container, not while preparing many layers (a plan of 1000+ containers takes tens of
    // seconds to stop, so the run script's KILL after 12 s would be what ends it).
    let mut long_item = mounts_item("long", 1, 200);
    if let Scenario::Mounts(m) = &mut long_item.scenario {
        m.passes = 8;
    }
    let req = request(
        sshd.dir.path(),
        "real-long",
        vec![mounts_item("quick", 2, 2), long_item],
    );
    let t = Instant::now();
    let out = drop_connection_mid_run(&sshd, &agent, &req);
    eprintln!(
        "dropped-connection visit: {:?}, {}",
        t.elapsed(),
        overhead(&out)
    );
    let ssh_log = req.run_dir.abs(&RunDir::log_rel(&req.key, "ssh"));
    eprintln!("{}", std::fs::read_to_string(ssh_log).unwrap_or_default());
    let BootEnd::Infra { message, .. } = &out.end else {
        panic!("{out:?}")
    };
    assert!(message.contains("lost"), "{message}");
    assert_eq!(
        cell_results(&out),
        vec![("quick".into(), Outcome::Pass)],
        "{out:?}"
    );
    sshd.assert_no_leftovers();
    assert!(sshd.mounts().is_empty());
}

/// `mmx run --backend ssh` over a matrix whose one host is this fixture's sshd, with its scratch
/// dir at `scratch` and `extra` lines in its `[[hosts]]` entry. The exit status and run.json.
fn run_matrix_host(
    sshd: &Sshd,
    scratch: &Path,
    extra: &str,
    run_id: &str,
) -> (std::process::ExitStatus, harness::results::RunRecord) {
    run_matrix_host_with(sshd, scratch, extra, run_id, "", "")
}

/// [`run_matrix_host`] with `[[runtimes]]` tables (`runtimes`) and more strategies (`more`, a
/// list's tail such as `, "runtime:x"`).
fn run_matrix_host_with(
    sshd: &Sshd,
    scratch: &Path,
    extra: &str,
    run_id: &str,
    runtimes: &str,
    more: &str,
) -> (std::process::ExitStatus, harness::results::RunRecord) {
    let host = sshd.host();
    let opts: Vec<String> = host
        .ssh_options
        .iter()
        .map(|o| format!("{:?}", o.arg()))
        .collect();
    let matrix = sshd.path(&format!("{run_id}.toml"));
    std::fs::write(
        &matrix,
        format!(
            r#"
{runtimes}
[[scenarios]]
kind = "mounts"
strategies = ["per-layer", "fsconfig-fd"{more}]
layers = [2]
containers = [2]

[[hosts]]
name = "loopback"
destination = "root@127.0.0.1"
port = {port}
identity_file = "{key}"
scratch_dir = "{scratch}"
ssh_options = [{opts}]
allow_ssh_options = [
  {{ option = "UserKnownHostsFile", reason = "the test sshd's throwaway host key" }},
  {{ option = "GlobalKnownHostsFile", reason = "keep this machine's keys out of the test" }},
]
{extra}

[[expect]]
cells = "loopback/*"
outcome = "pass"
"#,
            port = sshd.port,
            key = sshd.path("user_key").display(),
            scratch = scratch.display(),
            opts = opts.join(", "),
        ),
    )
    .expect("matrix");
    let out_dir = sshd.path("runs");
    let status = Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(["run", "--backend", "ssh", "--run-id", run_id, "--matrix"])
        .arg(&matrix)
        .arg("--out")
        .arg(&out_dir)
        .status()
        .expect("running mmx");
    let run = harness::results::RunRecord::read(&out_dir.join(run_id).join("run.json"))
        .unwrap_or_else(|e| panic!("{e:#}; sshd log:\n{}", sshd.log()));
    (status, run)
}

/// A runtime travels with the agent over the visit's one connection (checked by SHA-256 on the
/// host) and runs there as on any kernel: its column passes beside the strategies, and the
/// host keeps nothing of it.
#[test]
fn a_runtime_is_copied_to_the_host_and_runs_there() {
    skip_unless_ready!();
    let example = harness::runtimes::example::build_static().expect("the example runtime");
    let sshd = Sshd::start();
    let scratch = sshd.path("remote-tmp");
    let runtimes = format!(
        "[[runtimes]]\nname = \"example\"\nbinary = \"{}\"\n",
        example.display()
    );
    let (status, run) = run_matrix_host_with(
        &sshd,
        &scratch,
        "",
        "rt",
        &runtimes,
        r#", "runtime:example""#,
    );
    assert!(status.success(), "sshd log:\n{}", sshd.log());
    let rt = run
        .cells
        .iter()
        .find(|c| c.scenario.runtime().is_some())
        .expect("the runtime's cell");
    assert_eq!(rt.outcome, Outcome::Pass, "{rt:#?}");
    assert!(rt.key.to_string().ends_with("/runtime:example-L2-C2-P2-J1"));
    let said = rt.provenance.runtime.as_ref().and_then(|r| r.said.clone());
    assert_eq!(said.as_deref(), Some("mmx-example 0.1.0"));
    // The plan the host got names its own copy.
    let plan_rel = run.boots[0]
        .logs
        .iter()
        .find(|l| l.to_string_lossy().ends_with(".plan.json"))
        .expect("the visit's plan among its logs");
    let plan = std::fs::read_to_string(sshd.path("runs/rt").join(plan_rel)).expect("the plan");
    assert!(plan.contains("/runtimes/example\""), "{plan}");
    sshd.assert_no_leftovers();
}

/// The filesystem a directory is on, as this test measures it (not through the agent).
fn filesystem_here(dir: &Path) -> protocol::Filesystem {
    harness::backend::local::filesystem_of(dir)
        .expect("statfs")
        .unwrap_or_else(|magic| panic!("{} is on an unknown filesystem ({magic})", dir.display()))
}

/// The accelerator label this machine must get: `vm:…` when the CPU says a hypervisor is there.
fn hypervisor_here() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "hypervisor"))
}

/// The whole path a user takes: a `[[hosts]]` entry in a matrix, `mmx run --backend ssh`, and
/// the host's cells in run.json and the reports, with the host's own CPU and topology, the
/// matrix's known answer checked, and labels measured there: the scratch dir's real filesystem
/// (the entry declares none) and the hypervisor under the host (`vm:…`, not `metal`, when there
/// is one, as on this machine).
#[test]
fn mmx_run_visits_a_matrix_host_end_to_end() {
    skip_unless_ready!();
    let sshd = Sshd::start();
    let mounts_before = sshd.mounts();
    let scratch = sshd.path("remote-tmp");
    let fs = filesystem_here(&scratch);
    let (status, run) = run_matrix_host(&sshd, &scratch, "", "e2e");
    assert!(
        status.success(),
        "mmx run exited {status}; sshd log:\n{}",
        sshd.log()
    );
    let ids: Vec<String> = run.cells.iter().map(|c| c.key.to_string()).collect();
    assert_eq!(
        ids,
        [
            format!("loopback/smt-as-is/{fs}/per-layer-L2-C2-P2-J1"),
            format!("loopback/smt-as-is/{fs}/fsconfig-fd-L2-C2-P2-J1"),
        ],
        "labelled with the filesystem the scratch dir is on"
    );
    for c in &run.cells {
        assert_eq!(c.outcome, Outcome::Pass, "{c:?}");
        let accel = c.provenance.accel;
        if hypervisor_here() {
            assert!(
                matches!(accel, Accel::Vm(_)),
                "this machine is a VM, not metal: {accel}"
            );
        } else {
            assert_eq!(accel, Accel::Metal);
        }
        assert_eq!(c.provenance.backend, harness::results::BackendKind::Ssh);
        let topo = c.provenance.observed_topology.as_ref().expect("topology");
        assert_eq!(c.provenance.host_cpu, topo.cpu_model, "the host's own CPU");
        assert!(!topo.cpus_online.is_empty());
        assert!(c.expected.as_ref().is_some_and(|x| x.met));
    }
    assert_eq!(run.boots.len(), 1);
    assert!(run.boots[0].capabilities.is_some());
    assert_eq!(run.boots[0].key.filesystem, fs);
    for f in ["report.md", "report.html", "junit.xml"] {
        assert!(sshd.path("runs/e2e").join(f).is_file(), "{f} written");
    }
    sshd.assert_no_leftovers();
    assert_eq!(sshd.mounts(), mounts_before);
}

/// A host whose scratch dir is on tmpfs is labelled tmpfs, whatever the matrix's filesystems.
#[test]
fn a_hosts_tmpfs_scratch_dir_labels_its_cells_tmpfs() {
    skip_unless_ready!();
    let shm = Path::new("/dev/shm");
    let on_tmpfs = harness::backend::local::filesystem_of(shm)
        .ok()
        .and_then(Result::ok)
        == Some(protocol::Filesystem::Tmpfs);
    if !common::require(on_tmpfs, "/dev/shm is not a tmpfs here") {
        return;
    }
    let sshd = Sshd::start();
    let scratch = tempfile::Builder::new()
        .prefix("mmx-ssh-tmpfs-")
        .tempdir_in(shm)
        .expect("a dir on /dev/shm");
    let (status, run) = run_matrix_host(&sshd, scratch.path(), "", "tmpfs");
    assert!(status.success(), "sshd log:\n{}", sshd.log());
    for c in &run.cells {
        assert_eq!(c.key.filesystem, protocol::Filesystem::Tmpfs, "{}", c.key);
    }
    let left: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A declared filesystem is an assertion: when the scratch dir is on another, the visit ends
/// `infra-error` naming both, and no cell carries numbers under the wrong label.
#[test]
fn a_wrong_filesystem_assertion_ends_the_visit_infra_error() {
    skip_unless_ready!();
    let sshd = Sshd::start();
    let scratch = sshd.path("remote-tmp");
    let fs = filesystem_here(&scratch);
    let wrong = if fs == protocol::Filesystem::Xfs {
        protocol::Filesystem::Btrfs
    } else {
        protocol::Filesystem::Xfs
    };
    let (status, run) = run_matrix_host(
        &sshd,
        &scratch,
        &format!("filesystem = \"{wrong}\""),
        "wrong-fs",
    );
    assert_eq!(status.code(), Some(1), "the run fails");
    let BootEnd::Infra { cause, message } = &run.boots[0].end else {
        panic!("{:?}", run.boots[0].end);
    };
    assert_eq!(*cause, InfraCause::Filesystem);
    assert!(
        message.contains(wrong.as_str()) && message.contains(fs.as_str()),
        "names both: {message}"
    );
    for c in &run.cells {
        assert_eq!(c.outcome, Outcome::InfraError, "{c:?}");
        assert!(c.metrics.is_empty(), "no numbers under the wrong label");
        assert_eq!(c.key.filesystem, wrong, "keyed as declared: {}", c.key);
    }
    sshd.assert_no_leftovers();
}
