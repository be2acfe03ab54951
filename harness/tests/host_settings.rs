//! The machine settings the local agent may change go back however the agent ends. A lock
//! benchmark with `toggle_smt` switches SMT off for its second round; here its control file is a
//! plain file (`MMX_TEST_SMT_CONTROL`, honoured by debug builds only), and the run is killed in
//! that round: mmx itself (the agent dies with it by the death signal, so neither restores),
//! whose record the next `mmx run` restores from, or the agent alone, whose mmx restores at once.
//! Needs root (the local backend).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::backend::host_settings::{RECORD_FILE, TEST_SMT_CONTROL_ENV};
use harness::backend::local::SCRATCH_PREFIX;
use harness::results::RunRecord;
use protocol::Outcome;
use rustix::process::{Pid, Signal};

/// How long a run may take to reach its second SMT round (two 4 s points, then the toggle)
/// before it counts as stuck.
const REACH_BOUND: Duration = Duration::from_secs(300);

/// Root, and a debug build: a release `mmx` ignores the fake control file and would switch
/// this machine's real SMT.
fn ready() -> bool {
    common::require(
        rustix::process::geteuid().is_root(),
        "`mmx run --backend local` needs root (mount and user namespaces)",
    ) && common::require(
        cfg!(debug_assertions),
        "a release build ignores MMX_TEST_SMT_CONTROL and would toggle this machine's SMT",
    )
}

struct Setup {
    dir: tempfile::TempDir,
    /// The fake SMT control file.
    control: PathBuf,
    /// The matrix's `[local] scratch_dir`: where the runs' scratch dirs (and records) go.
    scratch: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let control = dir.path().join("smt-control");
        std::fs::write(&control, "on\n").expect("fake control");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).expect("scratch");
        Setup {
            dir,
            control,
            scratch,
        }
    }

    fn smt(&self) -> String {
        std::fs::read_to_string(&self.control)
            .expect("read the fake control")
            .trim()
            .to_string()
    }

    /// Start `mmx run --backend local` on a user-spin benchmark that toggles SMT, each point
    /// `duration_ms` long (two points per SMT round: the two layouts).
    fn start(&self, run_id: &str, duration_ms: u64) -> Child {
        let matrix = self.dir.path().join(format!("{run_id}.toml"));
        std::fs::write(
            &matrix,
            format!(
                "[[scenarios]]\nkind = \"lockbench\"\nbench = \"user-spin\"\nthreads = [1]\n\
                 locks = [\"tas\"]\nwarmup_ms = 0\nduration_ms = {duration_ms}\n\
                 toggle_smt = true\n[local]\nscratch_dir = \"{}\"\n",
                self.scratch.display()
            ),
        )
        .expect("matrix");
        let log = |ext: &str| {
            std::fs::File::create(self.dir.path().join(format!("{run_id}.{ext}"))).expect("log")
        };
        Command::new(env!("CARGO_BIN_EXE_mmx"))
            .args(["run", "--backend", "local", "--run-id", run_id, "--matrix"])
            .arg(&matrix)
            .arg("--out")
            .arg(self.dir.path().join("runs"))
            .env(TEST_SMT_CONTROL_ENV, &self.control)
            .env_remove("GITHUB_STEP_SUMMARY")
            .stdin(Stdio::null())
            .stdout(log("stdout"))
            .stderr(log("stderr"))
            .spawn()
            .expect("starting mmx")
    }

    fn stderr(&self, run_id: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{run_id}.stderr")))
            .unwrap_or_default()
    }

    /// Wait until the agent has switched SMT off: it is in its second round's points.
    fn wait_for_smt_off(&self, mmx: &mut Child, run_id: &str) {
        let t = Instant::now();
        while self.smt() != "off" {
            let exited = mmx.try_wait().expect("wait");
            assert!(
                exited.is_none() && t.elapsed() < REACH_BOUND,
                "the run never switched SMT off ({exited:?}): {}",
                self.stderr(run_id)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The scratch dirs runs made here.
    fn scratch_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.scratch)
            .expect("read scratch")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX))
            .map(|e| e.path())
            .collect()
    }
}

/// The agent of a local run among `parent`'s children, once it runs.
fn agent_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // `pid (comm) state ppid …`
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        // mmx's other child is the agent's warden (a `sh`, see proc/): the agent is the one
        // running the plan.
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let is_agent = cmdline.split(|b| *b == 0).any(|a| a == b"run-plan");
        (ppid == parent && is_agent).then_some(pid)
    })
}

/// Whether `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X")
    })
}

fn kill(pid: u32) {
    let pid = Pid::from_raw(pid as i32).expect("a pid");
    rustix::process::kill_process(pid, Signal::KILL).expect("kill");
}

#[test]
fn smt_left_off_by_a_killed_mmx_is_restored_by_the_next_run() {
    if !ready() {
        return;
    }
    let s = Setup::new();
    let mut mmx = s.start("killed", 4000);
    s.wait_for_smt_off(&mut mmx, "killed");
    let agent = agent_of(mmx.id()).expect("the local agent runs under mmx");
    kill(mmx.id());
    let _ = mmx.wait();
    // The death signal takes the agent with mmx, before its guard can write anything.
    let t = Instant::now();
    while !ended(agent) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "agent {agent} outlived mmx"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        s.smt(),
        "off",
        "SMT was restored before the kill (the point's 4 s ran out first?): {}",
        s.stderr("killed")
    );
    let dead = s.scratch_dirs();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].join(RECORD_FILE).is_file(), "the dead run's record");

    // The next run, on the same scratch place: it restores from the record while it removes
    // the dead run's dir, and says so; its own toggle ends where it began.
    let mut next = s.start("next", 50);
    let status = next.wait().expect("wait");
    let stderr = s.stderr("next");
    assert!(status.success(), "{stderr}");
    let line = format!(
        "mmx: restored host settings the agent of a killed run had changed: smt-control ({}) \
         was `off`: wrote back `on`",
        s.control.display()
    );
    assert!(
        stderr.lines().any(|l| l == line),
        "no line `{line}` in: {stderr}"
    );
    assert_eq!(s.smt(), "on");
    assert!(!dead[0].exists(), "the dead run's scratch dir is removed");
    assert!(
        !stderr.contains("the local agent left changed"),
        "the second run's own agent restored SMT itself: {stderr}"
    );
    let run = RunRecord::read(&s.dir.path().join("runs/next/run.json")).expect("run.json");
    assert_eq!(run.cells[0].outcome, Outcome::Pass, "{:?}", run.cells[0]);
}

#[test]
fn smt_left_off_by_a_killed_agent_is_restored_by_its_mmx_at_once() {
    if !ready() {
        return;
    }
    let s = Setup::new();
    let mut mmx = s.start("agent-killed", 4000);
    s.wait_for_smt_off(&mut mmx, "agent-killed");
    let agent = agent_of(mmx.id()).expect("the local agent runs under mmx");
    kill(agent);
    let _ = mmx.wait().expect("wait");
    let stderr = s.stderr("agent-killed");
    let line = format!(
        "mmx: restored a host setting the local agent left changed: smt-control ({}) was \
         `off`: wrote back `on`",
        s.control.display()
    );
    assert!(
        stderr.lines().any(|l| l == line),
        "no line `{line}` in: {stderr}"
    );
    assert_eq!(s.smt(), "on");
    // The boot's end is the agent's crash; the record went with the restore.
    let run = RunRecord::read(&s.dir.path().join("runs/agent-killed/run.json")).expect("run.json");
    assert_ne!(run.cells[0].outcome, Outcome::Pass, "{:?}", run.cells[0]);
    assert!(
        s.scratch_dirs().is_empty(),
        "the run removed its scratch dir, record and all: {:?}",
        s.scratch_dirs()
    );
}
