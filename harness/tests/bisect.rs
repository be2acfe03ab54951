//! `mmx bisect` for real: a git repository made from Debian's linux-source-6.12 tree (the one
//! kernel_build.rs's tests unpack into the cache) with four commits — the base, an unrelated
//! change, a patch that makes overlay refuse the `lowerdir+` key, another unrelated change —
//! and a `[source] tree` recipe with the minimal config. The real binary bisects it on the
//! `lowerdir-plus-string` probe and names the breaking commit; its steps rebuild
//! incrementally in one build directory; Ctrl-C during make and SIGTERM during a boot stop
//! make and QEMU; the repository is exactly as it was after every run. Usage errors (unknown
//! kernel, not a tree recipe, bad revisions, a filter matching nothing) are exit 2, named.
//!
//! Why a probe and not a cell: on 6.12 no cell depends on the string `lowerdir+` key. The
//! fsconfig-fd cells fail before overlay parses anything (`fsconfig(FSCONFIG_SET_FD)` takes no
//! `O_PATH` fds before 6.13: EBADF from the VFS) and the other strategies use mount(2)'s
//! `lowerdir=`, so the patch flips no cell; `--probe lowerdir-plus-string` judges the probe
//! every boot runs. The selected cell (per-layer on tmpfs, one layer, one container) is run
//! and judged at every step too, and stays `pass`.
//!
//! The build directory is shared with kernel_build.rs (one per kernel version and config:
//! `linux-6.12-<hash>`): whichever test comes second switches the tree in place and rebuilds
//! only what differs. Needs the kernel build tools, QEMU and Debian's archive keyring; under
//! CI=true a missing one fails the test, elsewhere it is skipped loudly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{build_tools, runs};

use harness::bisect::{Answer, BisectRecord, BisectResult, Role, Subject, Verdict};
use harness::debian::LockDocument;
use harness::kernels::recipe::load_recipe;
use harness::kernels::{debian_source_tree, LockFile};
use protocol::{Feature, Outcome};

const KERNEL: &str = "bisect-6.12";
const BREAKING: &str = "ovl: refuse the lowerdir+ key (mmx bisect test)";
const EINVAL: i32 = 22;

// ---------------------------------------------------------------------------------------------
// Preconditions.
// ---------------------------------------------------------------------------------------------

/// The tools a kernel build needs, and QEMU.
fn preconditions() -> bool {
    build_tools() && !common::qemu_missing()
}

fn git_ok() -> bool {
    common::require(runs("git", "--version"), "git is not installed")
}

// ---------------------------------------------------------------------------------------------
// The user's repository and checkout.
// ---------------------------------------------------------------------------------------------

fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("LC_ALL", "C")
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const GIT: &str = "git -c user.name=mmx-tests -c user.email=mmx@localhost -c commit.gpgsign=false";

/// Everything a user would notice about their repository: HEAD and its branch, every file's
/// status (ignored ones too), the worktrees, every ref (no refs/bisect), what is in .git.
fn repo_state(repo: &Path) -> String {
    sh(
        repo,
        "git rev-parse HEAD; git symbolic-ref -q HEAD || echo detached; \
         git status --porcelain=v1 --untracked-files=all --ignored; \
         git worktree list --porcelain; git for-each-ref; ls -A .git",
    )
}

/// Replace a file's text without writing through its hard link to the pristine tree.
fn rewrite(path: &Path, f: impl FnOnce(&str) -> String) {
    let text = std::fs::read_to_string(path).expect("read");
    let new = f(&text);
    assert_ne!(new, text, "{}: no change", path.display());
    std::fs::remove_file(path).expect("remove");
    std::fs::write(path, new).expect("write");
}

/// A checkout: matrix.toml and kernels/bisect-6.12.toml pointing at `repo`.
fn checkout(dir: &Path, repo: &Path) -> PathBuf {
    let co = dir.join("checkout");
    std::fs::create_dir_all(co.join("kernels")).expect("mkdir");
    std::fs::write(
        co.join(format!("kernels/{KERNEL}.toml")),
        format!(
            "description = \"mmx bisect test\"\n\n[source]\ntree = \"{}\"\nrev = \"HEAD\"\nconfig = \"minimal\"\n",
            repo.display()
        ),
    )
    .expect("recipe");
    std::fs::write(
        co.join("matrix.toml"),
        format!(
            "kernels = [\"{KERNEL}\"]\nfilesystems = [\"tmpfs\"]\n\n[run]\nmemory_mib = 768\n\n\
             [[topologies]]\nsockets = 1\ncores = 2\nthreads = 1\n\n\
             [[scenarios]]\nkind = \"mounts\"\nstrategies = [\"per-layer\", \"fsconfig-fd\"]\n\
             layers = [1]\ncontainers = [1]\nconcurrency = [1]\npasses = 1\n"
        ),
    )
    .expect("matrix");
    co
}

// ---------------------------------------------------------------------------------------------
// Running mmx bisect, and watching what it starts.
// ---------------------------------------------------------------------------------------------

fn bisect_args<'a>(good: &'a str, bad: &'a str) -> Vec<&'a str> {
    vec![
        "bisect",
        "--kernel",
        KERNEL,
        "--good",
        good,
        "--bad",
        bad,
        "--filter",
        "*/per-layer-*",
        "--probe",
        "lowerdir-plus-string",
        "--accel",
        "tcg",
        "--out",
        "runs",
    ]
}

fn mmx(args: &[&str], dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mmx"));
    cmd.args(args).current_dir(dir);
    cmd
}

/// A process: (pid, start time in ticks), so a reused pid is not mistaken for it.
type Proc = (i32, u64);

/// Every process's (parent, start time, name), from /proc.
fn processes() -> BTreeMap<i32, (i32, u64, String)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid … starttime(22nd)": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ppid = fields.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        let start = fields.get(19).and_then(|s| s.parse().ok()).unwrap_or(0);
        out.insert(pid, (ppid, start, comm));
    }
    out
}

/// The descendants of `root` now: (process, name).
fn descendants(root: i32) -> Vec<(Proc, String)> {
    let all = processes();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, (ppid, start, comm)) in &all {
            if *ppid == p {
                out.push(((*pid, *start), comm.clone()));
                frontier.push(*pid);
            }
        }
    }
    out
}

fn alive(p: Proc) -> bool {
    processes()
        .get(&p.0)
        .is_some_and(|(_, start, comm)| *start == p.1 && !comm.is_empty())
}

/// Run `mmx bisect`, send `signal` once a descendant whose name starts with `when` runs, wait
/// for mmx to end; every descendant it ever had must be gone. Returns mmx's output.
fn interrupt(
    co: &Path,
    args: &[&str],
    when: &str,
    signal: rustix::process::Signal,
) -> (Output, Duration) {
    let start = Instant::now();
    let mut child: Child = mmx(args, co)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mmx");
    let pid = i32::try_from(child.id()).expect("pid");
    let mut seen: BTreeMap<Proc, String> = BTreeMap::new();
    let mut signalled: Option<Instant> = None;
    // Generous: a cold build of the minimal kernel comes before the first boot.
    let limit = Duration::from_secs(40 * 60);
    loop {
        if let Some(_status) = child.try_wait().expect("wait") {
            break;
        }
        for (p, name) in descendants(pid) {
            seen.insert(p, name);
        }
        if signalled.is_none() && seen.values().any(|n| n.starts_with(when)) {
            eprintln!("signalling mmx with {signal:?}: a `{when}` runs");
            let target = rustix::process::Pid::from_raw(pid).expect("pid");
            rustix::process::kill_process(target, signal).expect("kill");
            signalled = Some(Instant::now());
        }
        if start.elapsed() > limit
            || signalled.is_some_and(|t| t.elapsed() > Duration::from_secs(120))
        {
            let _ = child.kill();
            panic!(
                "mmx did not end (signalled: {}); it had {:?}",
                signalled.is_some(),
                seen.values().collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    let took = start.elapsed();
    assert!(
        signalled.is_some(),
        "mmx ended before a `{when}` ran: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // What it started is gone (a moment for orphaned grandchildren to take their signal).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<&String> = seen
            .iter()
            .filter(|(p, _)| alive(**p))
            .map(|(_, n)| n)
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running after mmx ended: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (out, took)
}

/// The bisect directory a run added under `runs/`.
fn new_run(co: &Path, before: &[PathBuf]) -> PathBuf {
    let mut now: Vec<PathBuf> = std::fs::read_dir(co.join("runs"))
        .expect("runs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(now.len(), 1, "one new bisect directory: {now:?}");
    now.remove(0)
}

fn run_dirs(co: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(co.join("runs"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn record(dir: &Path) -> BisectRecord {
    let text = std::fs::read_to_string(dir.join("bisect.json")).expect("bisect.json");
    serde_json::from_str(&text).expect("bisect.json parses")
}

fn text(o: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The private bisect clone is gone from a bisect directory.
fn no_private_clone(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("bisect dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".git-bisect-"))
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn probe_answer(entries: &[harness::bisect::Entry]) -> Answer {
    entries
        .iter()
        .find(|e| {
            matches!(
                &e.subject,
                Subject::Probe {
                    feature: Feature::LowerdirPlusString,
                    ..
                }
            )
        })
        .map(|e| e.answer.clone())
        .expect("the probe's answer")
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

#[test]
fn bisect_names_the_commit_that_refuses_lowerdir_plus() {
    if !preconditions() {
        return;
    }
    let total = Instant::now();
    let cache = common::cache();
    let kernels = harness::agent::workspace_root().join("kernels");
    let minimal = load_recipe(&kernels.join("debian-6.12-minimal.toml")).expect("recipe");
    let lock = LockFile::load(&kernels.join("kernels.lock")).expect("kernels.lock");
    let pristine = debian_source_tree(&minimal, &lock, &cache).unwrap_or_else(|e| panic!("{e:#}"));

    // The user's repository: a hard-link copy of the pristine tree (edits replace files), four
    // commits. A nonce keeps the commit ids new on every run, so every step really builds.
    let t = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("linux");
    let status = Command::new("cp")
        .arg("-al")
        .arg(&pristine)
        .arg(&repo)
        .status()
        .expect("cp");
    assert!(status.success());
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    sh(
        &repo,
        // No automatic gc: it would run in the background and change .git while the test
        // compares it before and after each bisect.
        &format!("git init -q && git config gc.auto 0 && git add --all --force . && {GIT} commit -qm 'base: Debian linux-source-6.12 ({nonce})'"),
    );
    let comment = |what: &str| format!("/* mmx bisect test: {what} */\n");
    rewrite(&repo.join("init/main.c"), |t| {
        format!("{}{t}", comment("an unrelated change"))
    });
    sh(
        &repo,
        &format!("{GIT} commit -qam 'init: an unrelated change'"),
    );
    rewrite(&repo.join("fs/overlayfs/params.c"), |t| {
        let anchor = "\tcase Opt_lowerdir_add:\n\tcase Opt_datadir_add:\n";
        assert_eq!(t.matches(anchor).count(), 1, "the patch's context");
        t.replace(
            anchor,
            "\tcase Opt_lowerdir_add:\n\t\t/* mmx bisect test: refuse the key */\n\
             \t\terr = invalfc(fc, \"lowerdir+ refused by the mmx bisect test\");\n\
             \t\tbreak;\n\tcase Opt_datadir_add:\n",
        )
    });
    sh(&repo, &format!("{GIT} commit -qam '{BREAKING}'"));
    rewrite(&repo.join("kernel/fork.c"), |t| {
        format!("{}{t}", comment("another unrelated change"))
    });
    sh(
        &repo,
        &format!("{GIT} commit -qam 'fork: another unrelated change'"),
    );
    let ids: Vec<String> = sh(&repo, "git rev-list --reverse HEAD")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 4);
    let breaking = ids[2].clone();
    eprintln!(
        "MEASURE bisect test: repository of {} made in {:.1}s",
        pristine.display(),
        t.elapsed().as_secs_f64()
    );
    let before = repo_state(&repo);
    let co = checkout(tmp.path(), &repo);
    let args = bisect_args(&ids[0], "HEAD");

    // Ctrl-C while make runs: make stops, nothing of ours is left, the repository is as it was.
    let runs_before = run_dirs(&co);
    let (out, took) = interrupt(&co, &args, "make", rustix::process::Signal::INT);
    eprintln!(
        "MEASURE bisect test: interrupted during make after {:.1}s",
        took.as_secs_f64()
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let dir = new_run(&co, &runs_before);
    let r = record(&dir);
    assert!(
        matches!(r.result, Some(BisectResult::Interrupted)),
        "{:?}",
        r.result
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("interrupted"),
        "{}",
        text(&out)
    );
    no_private_clone(&dir);
    assert_eq!(repo_state(&repo), before, "Ctrl-C during make");

    // SIGTERM while QEMU runs: the same. The first build finishes here (cold when this test
    // comes first on a fresh cache, else incremental on kernel_build.rs's tree).
    let runs_before = run_dirs(&co);
    let (out, took) = interrupt(&co, &args, "qemu-system", rustix::process::Signal::TERM);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let dir = new_run(&co, &runs_before);
    let r = record(&dir);
    assert!(
        matches!(r.result, Some(BisectResult::Interrupted)),
        "{:?}",
        r.result
    );
    let first = &r.steps[0];
    assert_eq!(
        (first.role, first.commit.as_str()),
        (Role::Good, ids[0].as_str())
    );
    assert!(
        first.build.error.is_none() && !first.build.cached,
        "{first:?}"
    );
    assert_eq!(first.verdict, None, "interrupted during its boot");
    eprintln!(
        "MEASURE bisect test: first build {:.1}s, {} kbuild steps (run ended by SIGTERM during the boot after {:.1}s)",
        first.build.seconds,
        first.build.kbuild_steps,
        took.as_secs_f64()
    );
    no_private_clone(&dir);
    assert_eq!(repo_state(&repo), before, "SIGTERM during a boot");

    // The whole bisect.
    let runs_before = run_dirs(&co);
    let t = Instant::now();
    let out = mmx(&args, &co).output().expect("mmx bisect");
    let took = t.elapsed();
    eprintln!("{}", text(&out));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dir = new_run(&co, &runs_before);
    let r = record(&dir);
    let Some(BisectResult::Found {
        commit,
        subject,
        before_commit,
        before: was,
        after,
    }) = &r.result
    else {
        panic!("{:?}", r.result)
    };
    assert_eq!(commit, &breaking);
    assert_eq!(subject, BREAKING);
    assert_eq!(before_commit, &ids[1], "the parent was tested good");
    assert_eq!(
        probe_answer(was),
        Answer::Probe {
            supported: true,
            errno: None
        }
    );
    assert_eq!(
        probe_answer(after),
        Answer::Probe {
            supported: false,
            errno: Some(EINVAL)
        }
    );
    // The cell ran at every step and passed throughout.
    for side in [was, after] {
        let cells: Vec<&Answer> = side
            .iter()
            .filter(|e| matches!(e.subject, Subject::Cell { .. }))
            .map(|e| &e.answer)
            .collect();
        assert_eq!(
            cells,
            [&Answer::Cell {
                outcome: Outcome::Pass,
                errno: None
            }]
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "first changed commit: {} {BREAKING}",
            &breaking[..12]
        )),
        "{stdout}"
    );
    // Every commit judged once, as it should be: --good, --bad, then git's choices.
    let verdicts: BTreeMap<&str, Option<Verdict>> = r
        .steps
        .iter()
        .map(|s| (s.commit.as_str(), s.verdict))
        .collect();
    assert_eq!(verdicts.len(), r.steps.len(), "no commit twice");
    assert_eq!(verdicts[ids[0].as_str()], Some(Verdict::Good));
    assert_eq!(verdicts[ids[3].as_str()], Some(Verdict::Bad));
    assert_eq!(verdicts[ids[2].as_str()], Some(Verdict::Bad));
    assert_eq!(verdicts[ids[1].as_str()], Some(Verdict::Good));
    // --good was built by the interrupted run: cached here. Every build in this run is
    // incremental: a small fraction of the kbuild steps a full build of this config takes.
    assert!(r.steps[0].build.cached, "{:?}", r.steps[0].build);
    let full = count_objects(&r.build_dir.join("out"));
    assert!(full > 1000, "a full build has {full} objects?");
    for s in &r.steps {
        eprintln!(
            "MEASURE bisect test: step {} ({:?}) {}: {}, {:.1}s, {} kbuild steps; boots {:.1}s",
            s.n,
            s.role,
            &s.commit[..12],
            if s.build.cached { "cached" } else { "built" },
            s.build.seconds,
            s.build.kbuild_steps,
            s.boots.iter().map(|b| b.seconds).sum::<f64>()
        );
        if !s.build.cached {
            assert!(
                s.build.kbuild_steps > 0 && s.build.kbuild_steps * 10 < full,
                "step {} rebuilt {} kbuild steps of a {full}-object build: not incremental",
                s.n,
                s.build.kbuild_steps
            );
            assert!(dir.join(&s.dir).join("build.log").is_file());
        }
        assert!(dir.join(&s.dir).join("logs").is_dir());
    }
    assert!(r.steps.iter().filter(|s| !s.build.cached).count() >= 3);
    let log = std::fs::read_to_string(dir.join("bisect.log")).expect("bisect.log");
    assert!(
        log.contains("git bisect start") && log.contains(&breaking),
        "{log}"
    );
    let report = std::fs::read_to_string(dir.join("report.md")).expect("report.md");
    assert!(
        report.contains(&breaking[..12]) && report.contains("lowerdir-plus-string"),
        "{report}"
    );
    no_private_clone(&dir);
    assert_eq!(repo_state(&repo), before, "after the bisect");
    eprintln!(
        "MEASURE bisect test: bisect {:.1}s ({} steps); whole test {:.1}s",
        took.as_secs_f64(),
        r.steps.len(),
        total.elapsed().as_secs_f64()
    );
}

/// Object files of a build: what a full build compiles.
fn count_objects(dir: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() && p.extension().is_some_and(|x| x == "o") => n += 1,
                _ => {}
            }
        }
    }
    n
}

/// A small repository and a checkout with a tree recipe, a Debian source recipe and a binary
/// Debian recipe: every usage error stops before anything is built.
#[test]
fn usage_errors_are_exit_2_and_named() {
    if !git_ok() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("tree");
    std::fs::create_dir(&repo).expect("mkdir");
    sh(
        &repo,
        &format!(
            "git init -q && echo 1 > f && git add f && {GIT} commit -qm one && echo 2 > f && {GIT} commit -qam two"
        ),
    );
    let before = repo_state(&repo);
    let co = checkout(tmp.path(), &repo);
    std::fs::write(
        co.join("kernels/deb-src.toml"),
        "[source]\ndebian = \"linux-source-6.12\"\n",
    )
    .expect("write");
    std::fs::write(
        co.join("kernels/deb-bin.toml"),
        "[debian]\nsuite = \"trixie\"\npackage = \"linux-image-cloud-amd64\"\n",
    )
    .expect("write");
    let run = |args: &[&str]| -> String {
        let out = mmx(args, &co).output().expect("mmx");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let with =
        |kernel: &'static str, good: &'static str, bad: &'static str, filter: &'static str| {
            vec![
                "bisect", "--kernel", kernel, "--good", good, "--bad", bad, "--filter", filter,
            ]
        };
    let e = run(&with("nope", "HEAD~1", "HEAD", "*"));
    assert!(e.contains("--kernel `nope`") && e.contains(KERNEL), "{e}");
    let e = run(&with("deb-src", "HEAD~1", "HEAD", "*"));
    assert!(
        e.contains("deb-src.toml") && e.contains("no history"),
        "{e}"
    );
    let e = run(&with("deb-bin", "HEAD~1", "HEAD", "*"));
    assert!(
        e.contains("deb-bin.toml") && e.contains("not a source recipe"),
        "{e}"
    );
    let e = run(&with(KERNEL, "v9.9", "HEAD", "*"));
    assert!(
        e.contains("--good") && e.contains("`v9.9` is not a commit"),
        "{e}"
    );
    let e = run(&with(KERNEL, "HEAD~1", "no-such-branch", "*"));
    assert!(e.contains("--bad") && e.contains("no-such-branch"), "{e}");
    let e = run(&with(KERNEL, "HEAD", "HEAD~1", "*"));
    assert!(e.contains("is not an ancestor"), "{e}");
    let e = run(&with(KERNEL, "HEAD", "HEAD", "*"));
    assert!(e.contains("the same commit"), "{e}");
    let e = run(&with(KERNEL, "HEAD~1", "HEAD", "*/xfs/*"));
    assert!(
        e.contains("no cell of kernel") && e.contains("tmpfs"),
        "{e}"
    );
    let mut probe = with(KERNEL, "HEAD~1", "HEAD", "*");
    probe.extend(["--probe", "nonsense"]);
    let e = run(&probe);
    assert!(
        e.contains("not a probe") && e.contains("lowerdir-plus-string"),
        "{e}"
    );
    let mut expect = with(KERNEL, "HEAD~1", "HEAD", "*");
    expect.extend(["--expect", "unsupported:ENOTANERRNO"]);
    let e = run(&expect);
    assert!(e.contains("ENOTANERRNO"), "{e}");
    // Nothing was started: no bisect directory, no change to the repository.
    assert!(!co.join("runs").exists());
    assert_eq!(repo_state(&repo), before);
}
