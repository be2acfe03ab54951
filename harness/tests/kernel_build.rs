//! Kernels mmx builds from source, for real: Debian's linux-source-6.12 with the minimal config
//! and a patch that makes overlay refuse the `lowerdir+` key, booted under QEMU, where the
//! `lowerdir-plus-string` probe flips from yes (Debian's own 6.12) to no; the failures a user
//! meets (a patch that does not apply, a fragment option the kernel drops, a syntax error, a
//! `[path]` kernel without overlayfs), each with the message promised; and `mmx kernels build`
//! killed with SIGKILL while make runs, which leaves no make, compiler or linker behind.
//!
//! The tests build the same package with the same config, so they share one build directory
//! (`linux-6.12-<config>`, which tests/bisect.rs's git tree of the same version shares too):
//! the first build is cold (about ten minutes with two cores), the others are incremental or
//! stop before make, and the cache lock serializes them. The unpacked source tree is shared with every other
//! build of the same package. Needs make, gcc, flex, bison, bc, libelf headers, patch, tar and
//! network access to Debian's archive (and QEMU for the boot). Under `CI=true` a missing tool
//! fails the test; elsewhere it is skipped loudly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{build_tools, qemu_missing};

use harness::backend::qemu::{AccelChoice, Qemu};
use harness::backend::{BootOutput, BootRequest, Deadlines};
use harness::cell::{BootKey, TargetKey};
use harness::debian::{Cache, LockDocument};
use harness::kernels::recipe::load_recipe;
use harness::kernels::{
    ensure, BuildError, KernelError, KernelProvenance, LockFile, Recipe, ResolvedKernel,
};
use harness::matrix::Topology;
use harness::proc::Cancel;
use harness::results::BootEnd;
use protocol::{Capabilities, Feature, Filesystem, Plan};

/// The recipe name every test here builds under (one build directory for all).
const NAME: &str = "mmx-test-6.12";

const SUBJECT: &str = "ovl: refuse the lowerdir+ key (mmx build test)";

/// Makes overlay answer `fsconfig(FSCONFIG_SET_STRING, "lowerdir+", …)` with EINVAL.
fn refuse_lowerdir_plus() -> String {
    format!(
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n\
         From: mmx tests <mmx@localhost>\n\
         Date: Mon, 1 Jan 2024 00:00:00 +0000\n\
         Subject: [PATCH] {SUBJECT}\n\
         \n\
         The probe's answer must flip from yes to no.\n\
         ---\n \
         fs/overlayfs/params.c | 3 +++\n\
         \n\
         diff --git a/fs/overlayfs/params.c b/fs/overlayfs/params.c\n\
         --- a/fs/overlayfs/params.c\n\
         +++ b/fs/overlayfs/params.c\n\
         @@ -571,6 +571,9 @@\n \
         \t\terr = ovl_parse_param_lowerdir(param->string, fc);\n \
         \t\tbreak;\n \
         \tcase Opt_lowerdir_add:\n\
         +\t\t/* mmx's build test: refuse the key, so the probe's answer flips. */\n\
         +\t\terr = invalfc(fc, \"lowerdir+ refused by the mmx test patch\");\n\
         +\t\tbreak;\n \
         \tcase Opt_datadir_add:\n \
         \tcase Opt_upperdir:\n \
         \tcase Opt_workdir:\n\
         -- \n\
         2.39.2\n\n"
    )
}

/// A comment in the file the refusing patch changes, with `note` in it: a patch of its own (a
/// cache key of its own, so make runs), in the same build directory, changing nothing.
fn comment_only(note: &str) -> String {
    format!(
        "Note a build that is killed\n\n\
         --- a/fs/overlayfs/params.c\n\
         +++ b/fs/overlayfs/params.c\n\
         @@ -571,6 +571,7 @@\n \
         \t\terr = ovl_parse_param_lowerdir(param->string, fc);\n \
         \t\tbreak;\n \
         \tcase Opt_lowerdir_add:\n\
         +\t\t/* {note} */\n \
         \tcase Opt_datadir_add:\n \
         \tcase Opt_upperdir:\n \
         \tcase Opt_workdir:\n"
    )
}

/// Written for another tree: its context names a case label 6.12 does not have.
const DOES_NOT_APPLY: &str = "Refuse lowerdir+ in a tree that calls it differently\n\n\
--- a/fs/overlayfs/params.c\n\
+++ b/fs/overlayfs/params.c\n\
@@ -571,6 +571,8 @@\n \
\t\terr = ovl_parse_param_lowerdir(param->string, fc);\n \
\t\tbreak;\n \
\tcase Opt_lowerdir_plus:\n\
+\t\terr = -EINVAL;\n\
+\t\tbreak;\n \
\tcase Opt_datadir_add:\n \
\tcase Opt_upperdir:\n \
\tcase Opt_workdir:\n";

/// Applies, but does not compile: a statement without its semicolon.
const SYNTAX_ERROR: &str = "Break the build on purpose\n\n\
--- a/fs/overlayfs/params.c\n\
+++ b/fs/overlayfs/params.c\n\
@@ -571,6 +571,8 @@\n \
\t\terr = ovl_parse_param_lowerdir(param->string, fc);\n \
\t\tbreak;\n \
\tcase Opt_lowerdir_add:\n\
+\t\terr = -EINVAL\n\
+\t\tbreak;\n \
\tcase Opt_datadir_add:\n \
\tcase Opt_upperdir:\n \
\tcase Opt_workdir:\n";

// ---------------------------------------------------------------------------------------------
// Preconditions and set-up.
// ---------------------------------------------------------------------------------------------

/// A checkout-like directory with `kernels/NAME.toml` and the files it names.
struct Checkout {
    dir: tempfile::TempDir,
}

impl Checkout {
    fn new(source_table: &str, files: &[(&str, &str)]) -> Checkout {
        let dir = tempfile::tempdir().expect("tempdir");
        let kernels = dir.path().join("kernels");
        for (rel, text) in files {
            let p = kernels.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        std::fs::write(
            kernels.join(format!("{NAME}.toml")),
            format!("description = \"mmx build test\"\n\n[source]\ndebian = \"linux-source-6.12\"\n{source_table}"),
        )
        .expect("write recipe");
        // The lock pins the same package as the repository's minimal recipe.
        let repo_lock = harness::agent::workspace_root().join("kernels/kernels.lock");
        let mut entry = LockFile::load(&repo_lock)
            .expect("kernels.lock")
            .get("debian-6.12-minimal")
            .expect("kernels.lock has debian-6.12-minimal")
            .clone();
        entry.name = NAME.into();
        let mut lock = LockFile::default();
        lock.upsert(entry);
        lock.save(&kernels.join("kernels.lock"))
            .expect("write lock");
        Checkout { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn recipe(&self) -> Recipe {
        load_recipe(&self.root().join(format!("kernels/{NAME}.toml"))).expect("recipe loads")
    }

    fn lock(&self) -> LockFile {
        LockFile::load(&self.root().join("kernels/kernels.lock")).expect("lock loads")
    }

    fn ensure(&self) -> Result<ResolvedKernel, KernelError> {
        ensure(
            &self.recipe(),
            &self.lock(),
            &common::cache(),
            &common::ToStderr,
        )
    }
}

/// The build error inside a kernel error, or a panic saying what came instead.
fn build_error(r: Result<ResolvedKernel, KernelError>) -> (String, BuildError) {
    match r {
        Err(e @ KernelError::Build { .. }) => {
            let text = e.to_string();
            let KernelError::Build { error, .. } = e else {
                unreachable!()
            };
            (text, *error)
        }
        Err(e) => panic!("expected a build failure, got: {e:#}"),
        Ok(k) => panic!("expected a build failure, got a kernel: {k:?}"),
    }
}

/// Every build directory's log and its mtime: a build that runs make rewrites one.
fn build_logs() -> Vec<(PathBuf, Option<std::time::SystemTime>)> {
    let builds = common::cache().root().join("builds");
    let mut logs: Vec<_> = std::fs::read_dir(&builds)
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("build.log"))
        .map(|p| {
            let t = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
            (p, t)
        })
        .collect();
    logs.sort();
    logs
}

// ---------------------------------------------------------------------------------------------
// Boots.
// ---------------------------------------------------------------------------------------------

fn boot_probes(k: &ResolvedKernel) -> BootOutput {
    let run_dir = common::run_dir("mmx-kernel-build-tests");
    let key = BootKey {
        target: TargetKey::Qemu {
            kernel: k.name.clone(),
            topology: "1s2c1t".into(),
        },
        filesystem: Filesystem::Ext4.into(),
    };
    let plan = Plan {
        schema_version: protocol::SCHEMA_VERSION,
        boot_id: key.to_string(),
        scratch_dir: "/".into(),
        scratch_disks: Vec::new(),
        modules: Vec::new(),
        probe: true,
        items: Vec::new(),
        runtimes: vec![],
    };
    let req = BootRequest {
        key,
        deadlines: Deadlines::for_plan(&plan, harness::backend::qemu::BOOT_ALLOWANCE),
        plan,
        run_dir,
        cancel: Cancel::new(),
        sink: common::sink(),
    };
    let topo = Topology {
        name: "1s2c1t".into(),
        sockets: 1,
        cores: 2,
        threads: 1,
        memory_mib: 768,
        numa: Vec::new(),
    };
    let q = Qemu::new(
        AccelChoice::Tcg,
        common::agent(),
        common::cache().root().to_path_buf(),
        &common::ToStderr,
    )
    .expect("qemu backend");
    q.boot(&req, k, &topo, Filesystem::Ext4)
}

fn capabilities(out: &BootOutput) -> &Capabilities {
    out.stream.capabilities.first().unwrap_or_else(|| {
        panic!(
            "no Capabilities: end {:?}, stream {:#?}",
            out.end, out.stream
        )
    })
}

fn agent_ready_ms(out: &BootOutput) -> f64 {
    let t = &out.timings_ms;
    t.get("agent-ready").copied().unwrap_or(f64::NAN) - t.get("qemu-start").copied().unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

/// The main case: a patched source kernel changes a probe's answer, says which patch
/// in its provenance, and the second use takes the cached build.
#[test]
fn patched_minimal_6_12_refuses_lowerdir_plus_and_is_cached() {
    if !build_tools() || qemu_missing() {
        return;
    }
    let co = Checkout::new(
        "patches = [\"patches/*.patch\"]\nconfig = \"minimal\"\n",
        &[(
            "patches/0001-ovl-refuse-lowerdir-plus.patch",
            &refuse_lowerdir_plus(),
        )],
    );
    let t = Instant::now();
    let k = co.ensure().unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "MEASURE {NAME}: ensure {:.1}s ({}; build {:.1}s, download {:.1}s), vmlinuz {} bytes, release {}",
        t.elapsed().as_secs_f64(),
        if k.timings.cached { "cached" } else { "built" },
        k.timings.build.as_secs_f64(),
        k.timings.download.as_secs_f64(),
        std::fs::metadata(&k.vmlinuz).map_or(0, |m| m.len()),
        k.release
    );
    assert!(k.release.starts_with("6.12."), "{}", k.release);
    // Everything built in: no modules to ship, overlay and virtio_blk known as built in.
    assert!(k.modules.is_empty(), "{:?}", k.modules);
    for m in ["overlay", "virtio_blk", "ext4"] {
        assert!(k.builtin.iter().any(|b| b == m), "{m}: {:?}", k.builtin);
    }
    assert_eq!(k.missing_options().expect("config readable"), Some(vec![]));
    let KernelProvenance::Built(b) = &k.provenance else {
        panic!("{:?}", k.provenance)
    };
    assert_eq!(b.patches.len(), 1);
    assert_eq!(b.patches[0].subject, SUBJECT);
    assert!(b.patches[0]
        .file
        .ends_with("0001-ovl-refuse-lowerdir-plus.patch"));
    assert!(
        k.provenance.describe().contains(SUBJECT),
        "{}",
        k.provenance.describe()
    );
    assert!(b.compiler.contains("gcc"), "{}", b.compiler);
    assert_eq!(b.config_sha256.len(), 64);

    // The second use takes the cached build: make does not run, no build log is touched.
    let before = build_logs();
    let t = Instant::now();
    let again = co.ensure().unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "MEASURE {NAME}: cached ensure {:.3}s",
        t.elapsed().as_secs_f64()
    );
    assert!(again.timings.cached);
    assert!(again.timings.build.is_zero());
    assert_eq!(again.vmlinuz, k.vmlinuz);
    assert_eq!(build_logs(), before);

    // Boot both: Debian's own 6.12 takes `lowerdir+`, the patched one refuses it.
    let patched = boot_probes(&k);
    assert_eq!(patched.end, BootEnd::Completed, "{:#?}", patched.stream);
    let stock_kernel = common::kernel("debian-6.12");
    let stock = boot_probes(&stock_kernel);
    assert_eq!(stock.end, BootEnd::Completed, "{:#?}", stock.stream);
    let (new, old) = (capabilities(&patched), capabilities(&stock));
    assert!(
        old.supports(Feature::LowerdirPlusString),
        "{:?}",
        old.get(Feature::LowerdirPlusString)
    );
    let refused = new.get(Feature::LowerdirPlusString).expect("probed");
    assert!(!refused.supported, "{refused:?}");
    let ev = refused.evidence.as_ref().expect("evidence");
    assert_eq!(ev.errno_name(), Some("EINVAL"), "{ev:?}");
    assert!(ev.step.contains("lowerdir+"), "{ev:?}");
    // Nothing else changed: the minimal config answers every other probe as Debian's does.
    for f in Feature::ALL
        .into_iter()
        .filter(|f| *f != Feature::LowerdirPlusString)
    {
        assert_eq!(
            new.supports(f),
            old.supports(f),
            "{f}: {:?} vs {:?}",
            new.get(f),
            old.get(f)
        );
    }
    eprintln!(
        "MEASURE boot-to-agent-ready under TCG: {NAME} {:.0} ms, debian-6.12 {:.0} ms",
        agent_ready_ms(&patched),
        agent_ready_ms(&stock)
    );
}

#[test]
fn a_patch_that_does_not_apply_names_the_patch_and_its_hunk() {
    if !build_tools() {
        return;
    }
    let co = Checkout::new(
        "patches = [\"patches/*.patch\"]\n",
        &[
            (
                "patches/0001-ovl-refuse-lowerdir-plus.patch",
                &refuse_lowerdir_plus(),
            ),
            ("patches/0002-other-tree.patch", DOES_NOT_APPLY),
        ],
    );
    let (text, e) = build_error(co.ensure());
    eprintln!("the message: {text}");
    assert!(text.starts_with("kernel build failed: "), "{text}");
    let BuildError::Patch(r) = e else {
        panic!("{text}")
    };
    assert_eq!((r.n, r.total), (2, 2), "{text}");
    assert!(r.patch.ends_with("0002-other-tree.patch"), "{text}");
    assert_eq!(r.file, "fs/overlayfs/params.c", "{text}");
    assert!(
        text.contains("+\t\terr = -EINVAL;") && text.contains("Opt_lowerdir_plus"),
        "{text}"
    );
    assert!(text.contains("build.log"), "{text}");

    // The command line says the same and exits 1.
    let out = Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(["kernels", "--root"])
        .arg(co.root())
        .args(["build", NAME])
        .output()
        .expect("run mmx");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("kernel build failed") && stderr.contains("0002-other-tree.patch"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hunk #1 of fs/overlayfs/params.c rejected"),
        "{stderr}"
    );
}

#[test]
fn a_fragment_option_the_kernel_drops_is_named() {
    if !build_tools() {
        return;
    }
    // NFS needs networking, which the minimal config leaves out: olddefconfig drops it.
    let co = Checkout::new(
        "fragments = [\"extra.config\"]\n",
        &[(
            "extra.config",
            "# wanted for a test\nCONFIG_EXT4_FS=y\nCONFIG_NFS_FS=y\n",
        )],
    );
    let (text, e) = build_error(co.ensure());
    eprintln!("the message: {text}");
    assert!(text.starts_with("kernel build failed: "), "{text}");
    let BuildError::Dropped { dropped, .. } = &e else {
        panic!("{text}")
    };
    let names: Vec<&str> = dropped.iter().map(|d| d.option.as_str()).collect();
    assert_eq!(names, ["NFS_FS"], "{text}");
    assert!(
        text.contains("CONFIG_NFS_FS=y") && text.contains("extra.config:3"),
        "{text}"
    );
}

#[test]
fn a_syntax_error_names_the_file_and_keeps_the_log() {
    if !build_tools() {
        return;
    }
    let co = Checkout::new(
        "patches = [\"patches/*.patch\"]\n",
        &[("patches/0001-break-it.patch", SYNTAX_ERROR)],
    );
    let (text, e) = build_error(co.ensure());
    eprintln!("the message: {text}");
    assert!(text.starts_with("kernel build failed: "), "{text}");
    let BuildError::Compile { location, log, .. } = &e else {
        panic!("{text}")
    };
    assert!(location.starts_with("fs/overlayfs/params.c:5"), "{text}");
    assert!(text.contains("error:"), "{text}");
    let kept = std::fs::read_to_string(log).expect("the log is kept");
    assert!(
        kept.contains("params.c") && kept.contains("error:"),
        "{}",
        log.display()
    );
    assert!(text.contains(&log.display().to_string()), "{text}");
}

#[test]
fn a_path_kernel_without_overlay_is_refused_before_booting() {
    if !common::require(
        Path::new("/usr/share/keyrings/debian-archive-keyring.gpg").exists(),
        "debian-archive-keyring is not installed",
    ) {
        return;
    }
    // Debian's 6.12 with its modules, but a config without overlayfs (and no overlay module).
    let debian = common::kernel("debian-6.12");
    let dir = tempfile::tempdir().expect("tempdir");
    let modules = dir.path().join("modules");
    std::fs::create_dir(&modules).expect("mkdir");
    for m in &debian.modules {
        if m.name != "overlay" {
            let name: PathBuf = m.host_path.file_name().expect("file name").into();
            std::fs::copy(&m.host_path, modules.join(name)).expect("copy module");
        }
    }
    let config = dir.path().join("config");
    let text = std::fs::read_to_string(debian.config.as_ref().expect("config")).expect("config");
    assert!(text.contains("CONFIG_OVERLAY_FS=m"));
    std::fs::write(
        &config,
        text.replace("CONFIG_OVERLAY_FS=m", "# CONFIG_OVERLAY_FS is not set"),
    )
    .expect("write config");
    let recipe_file = dir.path().join("no-overlay.toml");
    std::fs::write(
        &recipe_file,
        format!(
            "[path]\nvmlinuz = \"{}\"\nmodules = \"{}\"\nconfig = \"{}\"\n",
            debian.vmlinuz.display(),
            modules.display(),
            config.display()
        ),
    )
    .expect("write recipe");
    let recipe = load_recipe(&recipe_file).expect("recipe");
    let cache = Cache::at(dir.path().join("cache"));
    match ensure(&recipe, &LockFile::default(), &cache, &common::ToStderr) {
        Err(e @ KernelError::MissingOptions { .. }) => {
            let text = e.to_string();
            eprintln!("the message: {text}");
            let KernelError::MissingOptions { missing, .. } = e else {
                unreachable!()
            };
            let names: Vec<&str> = missing.iter().map(|m| m.need.option).collect();
            assert_eq!(names, ["OVERLAY_FS"], "{text}");
            assert!(
                text.contains("CONFIG_OVERLAY_FS") && text.contains("config-fragment"),
                "{text}"
            );
        }
        other => panic!("expected the missing option, got {other:?}"),
    }
}

/// The orphan case: `mmx kernels build` killed with SIGKILL while make builds the kernel
/// leaves no make, compiler or linker running, and make held the build directory's lock (so a
/// next build could not have started beside it). Each run's patch is new, so make always runs
/// (and the build, killed, is never cached); the tree is the shared build directory's.
#[test]
fn sigkill_during_make_leaves_no_make_or_compiler_behind() {
    if !build_tools() {
        return;
    }
    let marker = common::unique_marker("make");
    let co = Checkout::new(
        "patches = [\"patches/*.patch\"]\nconfig = \"minimal\"\n",
        &[(
            "patches/0001-note.patch",
            &comment_only(&format!("mmx test {marker}")),
        )],
    );
    let log = |ext: &str| std::fs::File::create(co.root().join(format!("mmx.{ext}"))).expect("log");
    let mut mmx = Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(["kernels", "--root"])
        .arg(co.root())
        .args(["build", NAME])
        .env(common::MARKER_VAR, &marker)
        .stdin(Stdio::null())
        .stdout(log("stdout"))
        .stderr(log("stderr"))
        .spawn()
        .expect("starting mmx");
    let stderr = || std::fs::read_to_string(co.root().join("mmx.stderr")).unwrap_or_default();
    let cmdline = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default()
    };

    // The long make (not a config step) runs, and has started a compiler or the linker. A
    // cold tree is downloaded and unpacked first: minutes.
    let t = Instant::now();
    let make = loop {
        let ours = common::marked(&marker);
        let make = ours
            .iter()
            .find(|(pid, comm)| comm == "make" && cmdline(*pid).contains("bzImage"))
            .map(|(pid, _)| *pid);
        let compiling = ours
            .iter()
            .any(|(_, comm)| ["cc1", "gcc", "as", "ld"].contains(&comm.as_str()));
        if let (Some(make), true) = (make, compiling) {
            break make;
        }
        if let Ok(Some(status)) = mmx.try_wait() {
            panic!(
                "mmx ended ({status}) before make compiled anything:\n{}",
                stderr()
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(30 * 60),
            "make did not compile in 30 min:\n{}",
            stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // make holds the build directory's lock itself (inherited), not only through mmx.
    let holds_lock = std::fs::read_dir(format!("/proc/{make}/fd"))
        .expect("make's descriptors")
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| target.ends_with("make.lock"));
    assert!(
        holds_lock,
        "make {make} does not hold the build directory's make.lock"
    );

    mmx.kill().expect("SIGKILL");
    let _ = mmx.wait();
    // make and its compilers die with mmx (the death signal, the warden); a compiler may take
    // a moment on a loaded machine to be scheduled and die.
    common::assert_none_left(&marker, Duration::from_secs(30));
}
