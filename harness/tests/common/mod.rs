//! Set-up shared by the tests that boot real guests or visit hosts (qemu.rs, lockbench_guest.rs,
//! ssh.rs, hostile.rs, runs.rs): the CI=true rule for missing preconditions, whether QEMU is
//! here, the static agent, the hostile stand-in agent, kernels fetched once per process, a run
//! directory that outlives the test for inspection, the loopback sshd ([`sshd`]).

#![allow(dead_code)] // Each test binary uses its own subset.

pub mod sshd;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use harness::backend::qemu::{AccelChoice, Qemu};
use harness::debian::{Cache, LockDocument};
use harness::events::{KernelBuild, Note, SharedSink, Sink};
use harness::kernels::{self, LockFile, ResolvedKernel};
use harness::results::RunDir;

/// Whether this is a CI run (`CI=true`, as GitHub Actions and most CI systems set it).
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A test's precondition: true when it holds. When it does not, under `CI=true` the test fails
/// with the reason (CI must never pass what it did not test); elsewhere it says SKIPPED loudly
/// and the caller returns.
pub fn require(ok: bool, reason: &str) -> bool {
    if !ok {
        assert!(!in_ci(), "CI=true and a precondition is missing: {reason}");
        eprintln!("\n*** SKIPPED ({reason}) ***\n");
    }
    ok
}

/// Whether `program arg` runs and succeeds (`git --version`).
pub fn runs(program: &str, arg: &str) -> bool {
    std::process::Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The tools a kernel build needs (`.ci/run` installs them); [`require`]'s verdict.
pub fn build_tools() -> bool {
    let missing: Vec<&str> = [
        "make", "gcc", "flex", "bison", "bc", "patch", "tar", "xz", "git",
    ]
    .into_iter()
    .filter(|t| !runs(t, "--version"))
    .collect();
    let libelf = std::path::Path::new("/usr/include/libelf.h").exists();
    let keyring = std::path::Path::new("/usr/share/keyrings/debian-archive-keyring.gpg").exists();
    require(
        missing.is_empty() && libelf && keyring,
        &format!(
            "kernel build tools missing: {}{}{} (apt-get install make gcc flex bison bc libelf-dev patch xz-utils git debian-archive-keyring)",
            missing.join(" "),
            if libelf { "" } else { " libelf-dev" },
            if keyring { "" } else { " debian-archive-keyring" },
        ),
    )
}

/// True when qemu-system-x86_64 cannot run: the test fails under CI, else says SKIPPED with the
/// fix and the caller returns.
pub fn qemu_missing() -> bool {
    let found = duct::cmd!("qemu-system-x86_64", "--version")
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run()
        .is_ok_and(|o| o.status.success());
    !require(
        found,
        "qemu-system-x86_64 is not installed; apt-get install qemu-system-x86",
    )
}

/// The hostile stand-in agent (`tests/fixtures/hostile_agent.c`), built static with gcc once
/// per target dir; `None` (after [`require`]) when gcc or a static libc is missing.
pub fn hostile_agent() -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let src = harness::agent::workspace_root().join("harness/tests/fixtures/hostile_agent.c");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let out = dir.join("mmx-hostile-agent");
        // Built beside its final name and renamed: test processes build it concurrently.
        let tmp = dir.join(format!(".mmx-hostile-agent.{}", std::process::id()));
        let res = duct::cmd!(
            "gcc",
            "-static",
            "-O2",
            format!("-DSCHEMA_VERSION={}", protocol::SCHEMA_VERSION),
            "-o",
            &tmp,
            &src
        )
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run();
        match res {
            Ok(o) if o.status.success() => std::fs::rename(&tmp, &out)
                .map(|()| out)
                .map_err(|e| format!("renaming {}: {e}", tmp.display())),
            Ok(o) => Err(format!(
                "gcc -static could not build {}: {}",
                src.display(),
                String::from_utf8_lossy(&o.stdout)
            )),
            Err(e) => Err(format!("gcc is not installed ({e}); apt-get install gcc")),
        }
    });
    match built {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            require(false, why);
            None
        }
    }
}

pub fn cache() -> Cache {
    Cache::from_env().expect("a cache dir (set MMX_CACHE_DIR or HOME)")
}

pub fn agent() -> PathBuf {
    harness::agent::path().expect("the static agent")
}

/// What the library calls of a test say (notes, answers) on the test's stderr, shown when it
/// fails; build progress is left out.
pub struct ToStderr;

impl Sink for ToStderr {
    fn note(&self, note: Note) {
        eprintln!("mmx: {}", note.text());
    }
    fn build(&self, _: KernelBuild) {}
    fn answer(&self, text: &str) {
        eprintln!("{text}");
    }
}

/// [`ToStderr`], to keep in a request or a runner.
pub fn sink() -> SharedSink {
    SharedSink::new(Arc::new(ToStderr))
}

/// A kernel by recipe name, fetched once per process.
pub fn kernel(name: &str) -> ResolvedKernel {
    static KERNELS: OnceLock<Mutex<BTreeMap<String, ResolvedKernel>>> = OnceLock::new();
    let map = KERNELS.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(k) = map.get(name) {
        return k.clone();
    }
    let root = harness::agent::workspace_root().join("kernels");
    let recipe = kernels::load_recipe(&root.join(format!("{name}.toml"))).expect("recipe");
    let lock = LockFile::load(&root.join("kernels.lock")).expect("kernels.lock");
    let k = kernels::ensure(&recipe, &lock, &cache(), &ToStderr).expect("fetching the kernel");
    map.insert(name.to_string(), k.clone());
    k
}

/// One run directory per test process under `$TMPDIR/<name>`; logs stay after the tests.
pub fn run_dir(name: &str) -> RunDir {
    static DIR: OnceLock<RunDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::temp_dir().join(name);
        let id = format!("run-{}", std::process::id());
        RunDir::create(&base, &id).expect("run dir")
    })
    .clone()
}

/// The QEMU backend under TCG (tests assert functional answers, never speeds).
pub fn backend() -> Qemu {
    Qemu::new(
        AccelChoice::Tcg,
        agent(),
        cache().root().to_path_buf(),
        &ToStderr,
    )
    .expect("qemu backend")
}

/// The variable a test puts on the mmx it starts, so that everything mmx starts (which inherits
/// it) can be found again: see [`marked`].
pub const MARKER_VAR: &str = "MMX_TEST_MARKER";

/// A marker no other process on the machine carries.
pub fn unique_marker(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{test}-{}-{nanos}", std::process::id())
}

/// The live processes whose environment carries `MARKER_VAR=marker`, as (pid, command name).
/// A zombie's environment cannot be read: it is dead, and not listed.
pub fn marked(marker: &str) -> Vec<(u32, String)> {
    let needle = format!("{MARKER_VAR}={marker}\0");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if env.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            out.push((pid, comm.trim().to_string()));
        }
    }
    out
}

/// After `mmx` was killed: wait (at most `limit`) until no process carrying `marker` is left,
/// else fail naming them.
pub fn assert_none_left(marker: &str, limit: std::time::Duration) {
    let since = std::time::Instant::now();
    loop {
        let left = marked(marker);
        if left.is_empty() {
            return;
        }
        assert!(
            since.elapsed() < limit,
            "still running {limit:?} after mmx was killed: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
