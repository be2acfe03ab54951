//! Scaffolding shared by the agent's end-to-end tests: the root check that skips loudly, a
//! scratch directory, the host mount table before and after, and a mounts run's result.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_mmx-agent");

/// Whether `test` can run: true when `cond` holds. Otherwise the test must not pass untested:
/// with `CI=true` it fails with the reason; elsewhere it says loudly that it is skipped and why,
/// and the caller returns.
pub fn require(cond: bool, test: &str, reason: &str) -> bool {
    if cond {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {reason} (CI=true: a test whose precondition is missing fails)"
    );
    eprintln!("\n*** {test}: SKIPPED ({reason}) ***\n");
    false
}

/// True as root; otherwise [`require`]'s verdict.
pub fn is_root(test: &str) -> bool {
    require(
        rustix::process::geteuid().is_root(),
        test,
        "needs root: mount and user namespaces, idmapped mounts, chown",
    )
}

/// How long a stopped agent's detached reaper may work before it counts as hung.
pub const TRASH_BOUND: Duration = Duration::from_secs(900);

/// A fresh, empty scratch directory under $TMPDIR; removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `mmx-<kind>-<name>-<pid>`: `kind` tells which test binary made it.
    pub fn new(kind: &str, name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("mmx-{kind}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("make scratch dir");
        Scratch(p)
    }

    pub fn entries(&self) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(&self.0)
            .expect("read scratch")
            .map(|e| e.expect("dir entry").file_name())
            .collect()
    }

    pub fn assert_empty(&self) {
        let left = self.entries();
        assert!(left.is_empty(), "scratch dir not cleaned: {left:?}");
    }

    /// After a stopped run: nothing but the agent's trash right away (a stopping agent renames
    /// its directories and leaves their removal to a detached reaper), then nothing at all once
    /// the reaper is done. Removal is disk-bound (a few hundred directories a second on a busy
    /// disk mounted with `discard`), so this waits for the reaper process rather than a clock:
    /// trash left after the reaper exited fails at once, a reaper alive after [`TRASH_BOUND`]
    /// counts as hung.
    pub fn assert_clears_after_stop(&self) {
        let names = || -> Vec<String> {
            self.entries()
                .into_iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect()
        };
        let left = names();
        assert!(
            left.iter().all(|n| n.starts_with(".mmx-trash-")),
            "the stopped run left more than trash: {left:?}"
        );
        let t = Instant::now();
        while !self.entries().is_empty() {
            // The agent resumes from spawning its reaper while the reaper's execve is still
            // setting up its arguments (vfork semantics), so right after the agent's exit its
            // command line can read empty: look twice before calling it gone.
            let reaping = reaper_running(&self.0) || {
                std::thread::sleep(Duration::from_millis(200));
                reaper_running(&self.0)
            };
            assert!(
                reaping || self.entries().is_empty(),
                "the reaper ended and left {:?}; agent processes: {:?}",
                names(),
                agent_processes()
            );
            assert!(
                t.elapsed() < TRASH_BOUND,
                "the reaper is still removing {:?} after {TRASH_BOUND:?}",
                names()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if !left.is_empty() {
            eprintln!("trash removed {:?} after the exit", t.elapsed());
        }
    }
}

/// Every process that runs the agent's binary or says `reap-trash`: pid, state, command line.
fn agent_processes() -> Vec<String> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| {
            let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
            let stat = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
            let exe = std::fs::read_link(p.path().join("exe")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let ours = cmd.contains("reap-trash") || exe.ends_with("mmx-agent");
            ours.then(|| format!("{} {cmd} | {stat}", exe.display()))
        })
        .collect()
}

/// Whether an `mmx-agent reap-trash` process works on trash below `dir`.
fn reaper_running(dir: &std::path::Path) -> bool {
    let needle = dir.as_os_str().as_encoded_bytes();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        std::fs::read(p.path().join("cmdline")).is_ok_and(|c| {
            let mut args = c.split(|b| *b == 0);
            args.nth(1) == Some(b"reap-trash".as_slice()) && args.any(|a| a.starts_with(needle))
        })
    })
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The host's mount table, one entry per line.
pub fn mount_table() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The table must be the same as before. Other processes on a shared machine may mount things
/// meanwhile, so only mounts that could be ours (below a test scratch dir, overlays, idmapped
/// mounts) count as leaks; everything else that changed is printed.
pub fn assert_no_leak(before: &BTreeSet<String>) {
    let after = mount_table();
    let added: Vec<_> = after.difference(before).collect();
    let ours: Vec<_> = added
        .iter()
        .filter(|l| l.contains("mmx-") || l.contains("overlay") || l.contains("idmapped"))
        .collect();
    assert!(
        ours.is_empty(),
        "mounts leaked into the host table: {ours:#?}"
    );
    if before != &after {
        eprintln!("note: host mount table changed by someone else: +{added:?}");
    }
}

/// Run `mmx-agent mounts … --json` (passes 2) with the test hook `hook` (if any); the cell and
/// the process's output.
pub fn mounts(
    hook: Option<&str>,
    strategy: protocol::Strategy,
    (layers, containers, j): (u32, u32, u32),
    scratch: &std::path::Path,
) -> (protocol::CellResult, std::process::Output) {
    let mut cmd = std::process::Command::new(AGENT);
    cmd.env_remove("MMX_AGENT_TEST_HOOK");
    if let Some(h) = hook {
        cmd.env("MMX_AGENT_TEST_HOOK", h);
    }
    let out = cmd
        .args(["mounts", "--strategy", strategy.as_str()])
        .args(["--layers", &layers.to_string()])
        .args(["--containers", &containers.to_string()])
        .args(["--concurrency", &j.to_string(), "--passes", "2", "--json"])
        .arg("--scratch")
        .arg(scratch)
        .output()
        .expect("run mmx-agent");
    let r: protocol::CellResult = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no CellResult on stdout ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (r, out)
}

/// A mounts cell's detail, which every mounts result carries.
pub fn detail(r: &protocol::CellResult) -> &protocol::MountsResult {
    match &r.detail {
        Some(protocol::CellDetail::Mounts(m)) => m,
        other => panic!("no mounts detail: {other:?}"),
    }
}
