//! Hostile agents against the harness's reader, through all three backends: a guest whose /init
//! floods, never ends a line, sends bytes that are not UTF-8, breaks the results contract, lies
//! about an errno or falls silent (`tests/fixtures/hostile_agent.c`, one static program, the
//! mode in the plan), booted in real QEMU (debian-6.12, TCG), run as the local agent, and run
//! over ssh against the loopback sshd.
//!
//! Each case runs its boot in a child process (this binary again, with `MMX_HOSTILE_CHILD` set)
//! the way `mmx run` does — the boot, `fold_boot`, the known answers, run.json and the three
//! reports — and reports that process's peak RSS (`VmHWM`). The parent asserts the peak stays
//! under [`PEAK_RSS_LIMIT`], every log stays within its channel's budget, the boot ends as it
//! should with the valid result sent before the misbehaviour kept, and junit.xml parses.
//!
//! Needs gcc with a static libc; QEMU and the kernel (fetched once into the cache) for `qemu::*`;
//! root and /usr/sbin/sshd for `ssh::*`. Without them a case says SKIPPED (fails under CI=true).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::backend::qemu::{AccelChoice, Qemu};
use harness::backend::supervise::{CONSOLE_MAX, DIAGNOSTICS_MAX, RESULTS_MAX};
use harness::backend::{local, ssh, BootRequest, Deadlines};
use harness::matrix::{Matrix, Target};
use harness::proc::Cancel;
use harness::results::{
    BootEnd, BootRecord, Deadline, HostInfo, InfraCause, RunDir, RunRecord, ViolationKind,
    RUN_SCHEMA_VERSION,
};
use harness::run::{fold_boot, group_boots, plan_for, FoldWith};
use harness::runtimes::ready::RunRuntimes;
use libtest_mimic::{Arguments, Failed, Trial};
use protocol::Outcome;

mod common;

/// Set in the child process: `backend|mode|matrix|out dir|agent`.
const CHILD_ENV: &str = "MMX_HOSTILE_CHILD";

/// The harness's peak resident memory for one boot, whatever the agent sends.
const PEAK_RSS_LIMIT_KIB: u64 = 100 * 1024;

/// Deadlines of every case, before the backend scales them (×3 under TCG): a silence that ends
/// the `silence` case soon, a plan long enough for QEMU's serial port to carry a channel's
/// whole budget (about 0.5 MB/s under TCG).
const DEADLINES: Deadlines = Deadlines {
    boot: Duration::from_secs(40),
    silence: Duration::from_secs(3),
    plan: Duration::from_secs(150),
};

/// The cases whose one line is over a MiB: silence is "no complete line", and under TCG on a
/// loaded machine QEMU's serial port carried as little as 60 KB/s, so their line alone is
/// longer than [`DEADLINES`]' silence.
const ONE_LONG_LINE: [&str; 2] = ["endless", "padded"];

fn deadlines(mode: &str) -> Deadlines {
    if ONE_LONG_LINE.contains(&mode) {
        Deadlines {
            silence: Duration::from_secs(60),
            ..DEADLINES
        }
    } else {
        DEADLINES
    }
}

const MODES: [&str; 9] = [
    "endless",
    "padded",
    "mid-line",
    "flood",
    "invalid-utf8",
    "unknown-item",
    "duplicate",
    "lying-errno",
    "silence",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Qemu,
    Local,
    Ssh,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Qemu => "qemu",
            Backend::Local => "local",
            Backend::Ssh => "ssh",
        }
    }

    fn parse(s: &str) -> Option<Backend> {
        [Backend::Qemu, Backend::Local, Backend::Ssh]
            .into_iter()
            .find(|b| b.name() == s)
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        std::process::exit(match child(&spec) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("hostile child: {e:#}");
                1
            }
        });
    }
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for backend in [Backend::Qemu, Backend::Local, Backend::Ssh] {
        for mode in MODES {
            trials.push(Trial::test(
                format!("{}::{mode}", backend.name()),
                move || trial(backend, mode),
            ));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}

// ---------------------------------------------------------------------------------------------
// The parent: set up, run the child, judge what it left.
// ---------------------------------------------------------------------------------------------

fn trial(backend: Backend, mode: &str) -> Result<(), Failed> {
    let Some(agent) = common::hostile_agent() else {
        return Ok(());
    };
    if backend == Backend::Qemu && common::qemu_missing() {
        return Ok(());
    }
    let sshd = if backend == Backend::Ssh {
        if let Some(why) = common::sshd::skip_reason() {
            common::require(false, &why);
            return Ok(());
        }
        Some(common::sshd::Sshd::start())
    } else {
        None
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("hostile")
        .join(format!("{}-{mode}", backend.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let matrix = dir.join("matrix.toml");
    std::fs::write(&matrix, matrix_text(backend, mode, sshd.as_ref()))?;
    let out = dir.join("runs");

    let t = Instant::now();
    let spec = [
        backend.name(),
        mode,
        &matrix.display().to_string(),
        &out.display().to_string(),
        &agent.display().to_string(),
    ]
    .join("|");
    let child = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, spec)
        // Reports go to the run dir only, never into a CI job summary.
        .env_remove("GITHUB_STEP_SUMMARY")
        .stderr(std::fs::File::create(dir.join("child.stderr"))?)
        .output()?;
    let took = t.elapsed();
    let stderr = std::fs::read_to_string(dir.join("child.stderr")).unwrap_or_default();
    if !child.status.success() {
        return Err(format!("the child failed ({}):\n{stderr}", child.status).into());
    }
    let stdout = String::from_utf8_lossy(&child.stdout);
    let peak: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PEAK_RSS_KIB "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no peak RSS from the child: {stdout}"))?;
    eprintln!(
        "MEASURE hostile {}/{mode}: {:.1} s, peak RSS of the harness {:.1} MiB",
        backend.name(),
        took.as_secs_f64(),
        peak as f64 / 1024.0
    );
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak} KiB over {PEAK_RSS_LIMIT_KIB} KiB"
    );
    let root = out.join("run");
    let run = RunRecord::read(&root.join("run.json"))?;
    check_logs(&root)?;
    check_reports(&root, &run)?;
    check_case(mode, &run, &root);
    if let Some(sshd) = &sshd {
        sshd.assert_no_leftovers();
    }
    Ok(())
}

fn matrix_text(backend: Backend, mode: &str, sshd: Option<&common::sshd::Sshd>) -> String {
    let mut m = String::new();
    match backend {
        Backend::Qemu => m.push_str(
            "kernels = [\"debian-6.12\"]\nfilesystems = [\"tmpfs\"]\n\
             [[topologies]]\nsockets = 1\ncores = 1\nthreads = 1\nmemory_mib = 256\n",
        ),
        Backend::Local => m.push_str("kernels = []\n"),
        Backend::Ssh => m.push_str("kernels = []\n"),
    }
    m.push_str(
        "[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"per-layer\"]\nlayers = [1, 2]\n\
         containers = [1]\nconcurrency = [1]\n",
    );
    if let Some(sshd) = sshd {
        let host = sshd.host();
        let opts: Vec<String> = host
            .ssh_options
            .iter()
            .map(|o| format!("{:?}", o.arg()))
            .collect();
        m.push_str(&format!(
            "[[hosts]]\nname = \"loopback\"\ndestination = \"root@127.0.0.1\"\nport = {}\n\
             identity_file = \"{}\"\nscratch_dir = \"{}\"\nssh_options = [{}]\n\
             allow_ssh_options = [\n  {{ option = \"UserKnownHostsFile\", reason = \"the test \
             sshd's throwaway host key\" }},\n  {{ option = \"GlobalKnownHostsFile\", reason = \
             \"keep this machine's keys out of the test\" }},\n]\n",
            sshd.port,
            sshd.path("user_key").display(),
            sshd.path("remote-tmp").display(),
            opts.join(", ")
        ));
    }
    if mode == "lying-errno" {
        // The guest calls errno 5 "EINVAL": the known answer must not be met by the label.
        m.push_str(
            "[[expect]]\ncells = \"*per-layer-L1-*\"\noutcome = \"unsupported\"\nerrno = \"EINVAL\"\n",
        );
    }
    m
}

/// Every log within its channel's budget (plus a marker line).
fn check_logs(root: &Path) -> Result<(), Failed> {
    let slack = 4096;
    for e in std::fs::read_dir(root.join("logs"))? {
        let p = e?.path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let limit = if name.ends_with(".results.log") {
            RESULTS_MAX
        } else if name.ends_with(".console.log") {
            CONSOLE_MAX
        } else {
            DIAGNOSTICS_MAX
        };
        let len = std::fs::metadata(&p)?.len();
        if len > limit + slack {
            return Err(format!("{name}: {len} bytes, over its budget of {limit}").into());
        }
    }
    Ok(())
}

/// The reports render from run.json and junit.xml parses as XML, a testcase per cell.
fn check_reports(root: &Path, run: &RunRecord) -> Result<(), Failed> {
    let junit = std::fs::read_to_string(root.join("junit.xml"))?;
    let doc = roxmltree::Document::parse(&junit).map_err(|e| format!("junit.xml: {e}"))?;
    let cases = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .count();
    assert_eq!(cases, run.cells.len());
    for f in ["report.md", "report.html"] {
        let text = std::fs::read_to_string(root.join(f))?;
        assert!(!text.is_empty(), "{f} is empty");
    }
    Ok(())
}

fn infra_cause(boot: &BootRecord) -> Option<InfraCause> {
    match &boot.end {
        BootEnd::Infra { cause, .. } => Some(*cause),
        _ => None,
    }
}

/// The boot's end and the two cells for each mode; cell 0 got a valid result before the agent
/// misbehaved, and it must be kept.
fn check_case(mode: &str, run: &RunRecord, root: &Path) {
    let boot = &run.boots[0];
    let results = boot.channels.get("results").cloned().unwrap_or_default();
    let outcomes: Vec<Outcome> = run.cells.iter().map(|c| c.outcome).collect();
    let ctx = format!("{:#?}", boot);
    let first_violation = boot.violations.first().map(|v| v.kind);
    match mode {
        "endless" => {
            assert_eq!(
                infra_cause(boot),
                Some(InfraCause::ProtocolViolation),
                "{ctx}"
            );
            assert_eq!(first_violation, Some(ViolationKind::TooLong), "{ctx}");
            assert!(results.lines_cut >= 1, "{ctx}");
            assert_eq!(outcomes, [Outcome::Pass, Outcome::InfraError]);
        }
        "padded" => {
            // The cut line's first MiB parses as a result: it is a violation all the same.
            assert_eq!(
                infra_cause(boot),
                Some(InfraCause::ProtocolViolation),
                "{ctx}"
            );
            assert_eq!(first_violation, Some(ViolationKind::TooLong), "{ctx}");
            assert_eq!(results.lines_cut, 1, "{ctx}");
            assert_eq!(outcomes, [Outcome::Pass, Outcome::InfraError]);
        }
        "mid-line" => {
            // The prefix after other text is text: item 1's `fail` there is not its result.
            assert_eq!(boot.end, BootEnd::Completed, "{ctx}");
            assert!(boot.violations.is_empty(), "{ctx}");
            assert_eq!(outcomes, [Outcome::Pass, Outcome::Pass]);
        }
        "flood" => {
            assert_eq!(infra_cause(boot), Some(InfraCause::OutputFlood), "{ctx}");
            assert!(results.flooded && results.bytes == RESULTS_MAX, "{ctx}");
            let log = results_log(root, boot);
            assert!(log.ends_with(b"on this channel]\n"), "no truncation marker");
            assert_eq!(outcomes, [Outcome::Pass, Outcome::InfraError]);
        }
        "invalid-utf8" => {
            assert_eq!(boot.end, BootEnd::Completed, "{ctx}");
            assert!(results.invalid_utf8 >= 6, "{ctx}");
            assert_eq!(outcomes, [Outcome::Pass, Outcome::Pass]);
            let step = &run.cells[0].evidence.as_ref().expect("evidence").step;
            assert!(step.contains('\u{fffd}'), "{step}");
        }
        "unknown-item" | "duplicate" => {
            let kind = if mode == "duplicate" {
                ViolationKind::Duplicate
            } else {
                ViolationKind::UnknownItem
            };
            assert_eq!(
                infra_cause(boot),
                Some(InfraCause::ProtocolViolation),
                "{ctx}"
            );
            assert_eq!(first_violation, Some(kind), "{ctx}");
            assert_eq!(outcomes, [Outcome::Pass, Outcome::InfraError]);
            assert_eq!(run.cells[0].repeats, 1, "the second result is not a repeat");
        }
        "lying-errno" => {
            assert_eq!(boot.end, BootEnd::Completed, "{ctx}");
            assert_eq!(outcomes, [Outcome::Unsupported, Outcome::Pass]);
            let cell = &run.cells[0];
            let ev = cell.evidence.as_ref().expect("evidence");
            assert_eq!(ev.errno, Some(5));
            assert_eq!(ev.errno_name(), Some("EIO"), "named from the number");
            let check = cell.expected.as_ref().expect("the known answer applies");
            assert!(!check.met, "errno 5 labelled EINVAL met `errno = EINVAL`");
            let md = std::fs::read_to_string(root.join("report.md")).unwrap_or_default();
            assert!(md.contains("EIO"), "report.md names errno 5 EIO");
        }
        "silence" => {
            assert!(
                matches!(
                    boot.end,
                    BootEnd::Timeout {
                        deadline: Deadline::Silence,
                        ..
                    }
                ),
                "{ctx}"
            );
            assert_eq!(outcomes, [Outcome::Pass, Outcome::Timeout]);
        }
        other => panic!("no expectations for mode {other}"),
    }
}

fn results_log(root: &Path, boot: &BootRecord) -> Vec<u8> {
    let rel = RunDir::log_rel(&boot.key, "results");
    std::fs::read(root.join(rel)).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The child: one boot, the way `mmx run` does it, then its peak memory.
// ---------------------------------------------------------------------------------------------

fn child(spec: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = spec.split('|').collect();
    let [backend, mode, matrix_path, out, agent] = parts[..] else {
        anyhow::bail!("{CHILD_ENV}: want backend|mode|matrix|out|agent, got {spec}");
    };
    let backend = Backend::parse(backend).ok_or_else(|| anyhow::anyhow!("backend {backend}"))?;
    let agent = PathBuf::from(agent);
    let matrix = Matrix::load(Path::new(matrix_path))?;
    let cells = match backend {
        Backend::Qemu => matrix.qemu_cells(),
        Backend::Local => matrix.local_cells(protocol::Filesystem::Tmpfs.into()),
        Backend::Ssh => matrix.ssh_cells(),
    };
    let boot = group_boots(cells)
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no cells"))?;
    let run_dir = RunDir::create(Path::new(out), "run")?;
    let scratch = run_dir.root.join("scratch");
    // `mmx run` makes the local scratch dir before any boot (the local backend keeps its record
    // of the machine's settings there).
    std::fs::create_dir_all(&scratch)?;
    let runtimes = RunRuntimes::default();
    let mut plan = plan_for(&boot, 1, &scratch, &runtimes);
    // The stand-in agent reads its mode from the plan.
    plan.boot_id = format!("{} mmx_hostile={mode}", plan.boot_id);
    let req = BootRequest {
        key: boot.key.clone(),
        plan,
        deadlines: deadlines(mode),
        run_dir: run_dir.clone(),
        cancel: Cancel::new(),
        sink: common::sink(),
    };
    let output = match &boot.target {
        Target::Qemu { kernel, topology } => {
            let k = common::kernel(kernel);
            let q = Qemu::new(
                AccelChoice::Tcg,
                agent.clone(),
                common::cache().root().to_path_buf(),
                &common::ToStderr,
            )?
            .with_deadlines(deadlines(mode));
            let fs = boot
                .key
                .filesystem
                .known()
                .ok_or_else(|| anyhow::anyhow!("a guest's filesystem is always known"))?;
            q.boot(&req, &k, topology, fs)
        }
        Target::Local => local::run_boot(&agent, &req),
        Target::Ssh { host, smt } => ssh::run_host(&agent, host, *smt, &req),
    };
    let with = FoldWith {
        host_cpu: "test",
        runtimes: &runtimes,
        expectations: &matrix.expectations,
        fail_on_kernel_warning: false,
    };
    let (record, cells) = fold_boot(&boot, &output, 1, &with);
    let run = RunRecord {
        schema_version: RUN_SCHEMA_VERSION,
        mmx_version: env!("CARGO_PKG_VERSION").into(),
        agent: String::new(),
        run_id: run_dir.id.clone(),
        started_at: String::new(),
        finished_at: String::new(),
        matrix: matrix_path.into(),
        shard: None,
        host: HostInfo::detect(),
        cells,
        boots: vec![record],
        runtimes: vec![],
    };
    run.write(&run_dir.run_json())?;
    harness::report::render_all(&run, &run_dir.root)?;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))?;
    println!("PEAK_RSS_KIB {peak}");
    Ok(())
}
