//! Runtimes end to end, for real, on the host kernel: containerd 2.1.9's `core/mount` built by
//! mmx from Debian packages (and again with the per-layer patch), and the example runtime with
//! each of its faults, driven through the contract. Every runtime runs under
//! `unshare --mount --propagation private`, so its mounts live in its own namespace; the kernel's
//! own mount events for that namespace (fanotify `FAN_MARK_MNTNS`, Linux 6.15+) count what each
//! job attached and detached.
//!
//! Needs root and, for the containerd builds, deb.debian.org (the packages in
//! runtimes/runtimes.lock).

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{chown, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use harness::debian::{Cache, LockDocument};
use harness::events::Discard;
use harness::runtimes::driver::{DriveError, RuntimeProcess};
use harness::runtimes::{ensure, RuntimeRecipe, RuntimesLock};
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};
use protocol::runtime::{Answer, IdMap, Job, Pass, RuntimeLineError};

/// Ids each container maps, and the host id of its root.
const IDS: u32 = 65536;
const BASE: u32 = 1_000_000;
/// Per-job limit (the driver kills a runtime that stays silent longer).
const JOB_LIMIT: Duration = Duration::from_secs(30);

/// True when the precondition holds. Otherwise fails under CI=true, else says SKIPPED loudly.
fn require(ok: bool, reason: &str) -> bool {
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "precondition missing under CI: {reason}"
        );
        eprintln!("SKIPPED ({reason})");
    }
    ok
}

fn root_and_unshare() -> bool {
    require(
        rustix::process::geteuid().is_root(),
        "not root: runtimes mount",
    ) && require(
        Command::new("unshare")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "unshare(1) from util-linux is missing",
    )
}

/// The kernel's attach/detach events for one mount namespace.
struct MountEvents(Fanotify);

impl MountEvents {
    const FAN_REPORT_MNT: u32 = 0x0000_4000;
    const FAN_MARK_MNTNS: u32 = 0x0000_0110;
    const FAN_MNT_ATTACH: u64 = 0x0100_0000;
    const FAN_MNT_DETACH: u64 = 0x0200_0000;

    /// Watch the mount namespace of process `pid`; None when the kernel cannot (before 6.15).
    fn watch(pid: u32) -> Option<MountEvents> {
        let flags = InitFlags::from_bits_retain(Self::FAN_REPORT_MNT)
            | InitFlags::FAN_CLOEXEC
            | InitFlags::FAN_NONBLOCK;
        let fan = Fanotify::init(flags, EventFFlags::O_RDONLY).ok()?;
        let ns = fs::File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
        fan.mark(
            MarkFlags::FAN_MARK_ADD | MarkFlags::from_bits_retain(Self::FAN_MARK_MNTNS),
            MaskFlags::from_bits_retain(Self::FAN_MNT_ATTACH | Self::FAN_MNT_DETACH),
            ns.as_fd(),
            None::<&Path>,
        )
        .ok()?;
        Some(MountEvents(fan))
    }

    /// (attached, detached) since the last call.
    fn take(&self) -> (u32, u32) {
        let (mut attach, mut detach) = (0, 0);
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = rustix::io::read(self.0.as_fd(), &mut buf) {
            let mut at = 0;
            // struct fanotify_event_metadata: event_len u32, vers u8, reserved u8,
            // metadata_len u16, mask u64, fd i32, pid i32; info records follow.
            while at + 24 <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
                let mask = u64::from_ne_bytes(buf[at + 8..at + 16].try_into().unwrap());
                attach += u32::from(mask & Self::FAN_MNT_ATTACH != 0);
                detach += u32::from(mask & Self::FAN_MNT_DETACH != 0);
                if len == 0 {
                    break;
                }
                at += len;
            }
        }
        (attach, detach)
    }
}

/// L layers below `<root>/snapshots/<i>/fs` (containerd's layout: their common parent is
/// `snapshots`), each with `layer-<i>` owned by uid 10·i, gid 10·i+1; a container's upper
/// (owned by its root), work and target; and the runtime's working directory.
struct Fixture {
    dir: tempfile::TempDir,
    layers: Vec<PathBuf>,
}

impl Fixture {
    fn new(l: u32) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("mmx-runtime-")
            .tempdir()
            .unwrap();
        let mut layers = Vec::new();
        for i in 1..=l {
            let fs_dir = dir.path().join(format!("snapshots/{i}/fs"));
            fs::create_dir_all(&fs_dir).unwrap();
            let f = fs_dir.join(format!("layer-{i}"));
            fs::write(&f, i.to_string()).unwrap();
            chown(&f, Some(10 * i), Some(10 * i + 1)).unwrap();
            layers.push(fs_dir);
        }
        layers.reverse(); // top first
        for d in ["c/u", "c/w", "c/m", "rt"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        chown(dir.path().join("c/u"), Some(BASE), Some(BASE)).unwrap();
        Fixture { dir, layers }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn mount_job(&self, id: u64) -> Job {
        Job::Mount {
            id,
            layers: self.layers.clone(),
            pass: Pass::Rootfs {
                upper: self.path("c/u"),
                work: self.path("c/w"),
            },
            target: self.path("c/m"),
            uidmap: IdMap::single(BASE, IDS),
            gidmap: IdMap::single(BASE, IDS),
        }
    }

    /// Start `binary` in a private mount namespace with the fixture's `rt/` as its directory.
    fn start(&self, binary: &Path, fault: Option<&str>) -> RuntimeProcess {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--"])
            .arg(binary)
            .current_dir(self.path("rt"));
        if let Some(f) = fault {
            cmd.args(["--fault", f]);
        }
        RuntimeProcess::start(cmd, JOB_LIMIT).expect("the runtime starts and says hello")
    }

    /// Mount points below the fixture in the namespace of process `pid`.
    fn mounts_in(&self, pid: u32) -> Vec<String> {
        let text = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        mount_lines_below(&text, self.dir.path())
    }
}

fn mount_lines_below(mountinfo: &str, dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    mountinfo
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|p| p.starts_with(&prefix)))
        .map(str::to_string)
        .collect()
}

/// Mount a rootfs, check the ids through it from the host, unmount, check nothing is left.
/// Returns the (attach, detach) events of the mount job and the overlay's mountinfo line.
fn mount_check_unmount(fx: &Fixture, rt: &mut RuntimeProcess) -> ((u32, u32), String) {
    let events = MountEvents::watch(rt.pid()).expect("fanotify mount events");
    let id = rt.next_id();
    let answer = rt.run(&fx.mount_job(id), JOB_LIMIT).expect("an answer");
    assert_eq!(answer, Answer::Ok { id }, "stderr: {}", rt.stderr_text());
    let counted = events.take();
    let during = fx.mounts_in(rt.pid());
    let overlay = during
        .iter()
        .find(|l| l.contains(" overlay "))
        .cloned()
        .unwrap_or_else(|| panic!("an overlay at c/m: {during:#?}"));
    assert_eq!(during.len(), 1, "only the overlay remains: {during:#?}");
    // A file owned by 10·i in layer i is 1000000 + 10·i through the idmapped layers, seen
    // from the host's user namespace; /proc/PID/root walks the runtime's mount namespace.
    let merged = Path::new(&format!("/proc/{}/root", rt.pid())).join(
        fx.path("c/m")
            .strip_prefix("/")
            .expect("an absolute fixture"),
    );
    for i in 1..=fx.layers.len() as u32 {
        let m = fs::metadata(merged.join(format!("layer-{i}"))).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (BASE + 10 * i, BASE + 10 * i + 1),
            "layer-{i}"
        );
    }
    let id = rt.next_id();
    let target = fx.path("c/m");
    let answer = rt.run(&Job::Unmount { id, target }, JOB_LIMIT).unwrap();
    assert_eq!(answer, Answer::Ok { id });
    assert_eq!(fx.mounts_in(rt.pid()), Vec::<String>::new());
    assert_eq!(events.take(), (0, 1), "the unmount detaches the overlay");
    // The host's own table never saw any of it.
    let host = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(mount_lines_below(&host, fx.dir.path()).is_empty());
    (counted, overlay)
}

/// A fresh cache whose `shared` parts are the shared cache's: with the downloads (apt lists,
/// .debs, locks) shared and the toolchain, Go build cache and runtimes this test's own,
/// extraction and `go build` really run on every test run.
fn cold_cache(shared_parts: &[&str]) -> (tempfile::TempDir, Cache) {
    let shared = Cache::from_env().expect("a cache dir (MMX_CACHE_DIR or HOME)");
    let dir = tempfile::Builder::new()
        .prefix("mmx-runtime-cache-")
        .tempdir()
        .unwrap();
    for sub in shared_parts {
        let target = shared.dir(sub).unwrap();
        std::os::unix::fs::symlink(target, dir.path().join(sub)).unwrap();
    }
    let cache = Cache::at(dir.path());
    (dir, cache)
}

fn containerd_recipe(name: &str, patches: &[PathBuf]) -> RuntimeRecipe {
    let text = format!(
        "[[runtimes]]\nname = \"{name}\"\ncontainerd = {{ debian = \"golang-github-containerd-containerd-dev\" }}\npatches = {:?}\n",
        patches
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
    );
    harness::runtimes::recipe::parse_recipes(Path::new("/test/matrix.toml"), &text)
        .unwrap()
        .remove(0)
}

fn repo() -> PathBuf {
    harness::agent::workspace_root()
}

fn lock() -> (RuntimesLock, PathBuf) {
    let lock_path = repo().join("runtimes/runtimes.lock");
    (RuntimesLock::load(&lock_path).unwrap(), lock_path)
}

#[test]
fn containerd_from_debian_builds_mounts_idmapped_and_unmounts_cleanly() {
    if !root_and_unshare() {
        return;
    }
    let (lock, lock_path) = lock();
    let (_dir, cache) = cold_cache(&["apt", "debs", "locks"]);
    let recipe = containerd_recipe("containerd-2.1", &[]);
    let rt = ensure(&recipe, &lock, &lock_path, &cache, &Discard).expect("building containerd");
    println!(
        "containerd runtime cold: {:?} ({})",
        rt.timings,
        rt.provenance.describe()
    );
    assert!(!rt.timings.cached);
    let mtime = fs::metadata(&rt.binary).unwrap().modified().unwrap();
    let warm = ensure(&recipe, &lock, &lock_path, &cache, &Discard).unwrap();
    println!("containerd runtime cached: {:?}", warm.timings);
    // The second ensure found the binary by its key: no download, no go build.
    assert!(warm.timings.cached && warm.timings.build.is_zero());
    assert_eq!(warm.binary, rt.binary);
    assert_eq!(
        fs::metadata(&warm.binary).unwrap().modified().unwrap(),
        mtime
    );

    let harness::results::RuntimeProvenance::Debian { version, go, .. } = &rt.provenance else {
        panic!("{:?}", rt.provenance)
    };
    assert!(version.starts_with("2.1.9"), "{version}");
    assert!(go.starts_with("go1."), "{go}");
    let fx = Fixture::new(3);
    let mut p = fx.start(&rt.binary, None);
    assert_eq!(p.hello().runtime, "containerd");
    assert!(p.hello().version.starts_with("2.1.9"), "{:?}", p.hello());
    if !require(
        MountEvents::watch(p.pid()).is_some(),
        "the kernel has no fanotify mount events (Linux 6.15+)",
    ) {
        return;
    }
    let (counted, overlay) = mount_check_unmount(&fx, &mut p);
    // containerd 2.1.9 maps the layers' common parent once: one idmapped mount plus the
    // overlay attached, the idmapped one detached again.
    assert_eq!(counted, (2, 1), "{overlay}");
    assert_eq!(overlay.matches("ovl-idmapped").count(), 3, "{overlay}");
    assert!(
        overlay.contains("/snapshots/") || overlay.contains("/3/fs"),
        "{overlay}"
    );
    // Its temporary mount directory is gone again.
    let tmp = fx.path("rt/tmpmounts");
    assert_eq!(fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0), 0);
    assert!(p.finish(JOB_LIMIT).unwrap().success());
}

#[test]
fn patched_containerd_maps_every_layer_and_stock_maps_the_common_parent() {
    if !root_and_unshare() {
        return;
    }
    // The shared cache: both builds are reused from an earlier run when there is one.
    let (lock, lock_path) = lock();
    let cache = Cache::from_env().expect("a cache dir (MMX_CACHE_DIR or HOME)");
    let stock = ensure(
        &containerd_recipe("containerd-2.1", &[]),
        &lock,
        &lock_path,
        &cache,
        &Discard,
    )
    .expect("building containerd");
    let patch = repo().join("runtimes/containerd/testdata/per-layer-idmap.patch");
    let recipe = containerd_recipe("containerd-per-layer", &[patch]);
    let patched = ensure(&recipe, &lock, &lock_path, &cache, &Discard).expect("patched build");
    println!("stock runtime: {:?}", stock.timings);
    println!("patched runtime: {:?}", patched.timings);
    assert_ne!(patched.cache_key, stock.cache_key);
    assert!(patched
        .provenance
        .describe()
        .contains("per-layer-idmap.patch"));

    for l in [1u32, 10] {
        let fx = Fixture::new(l);
        let mut p = fx.start(&stock.binary, None);
        if !require(
            MountEvents::watch(p.pid()).is_some(),
            "the kernel has no fanotify mount events (Linux 6.15+)",
        ) {
            return;
        }
        let (stock_counted, _) = mount_check_unmount(&fx, &mut p);
        p.finish(JOB_LIMIT).unwrap();

        let mut p = fx.start(&patched.binary, None);
        assert!(p.hello().version.contains("per-layer-idmap.patch"));
        let (patched_counted, overlay) = mount_check_unmount(&fx, &mut p);
        p.finish(JOB_LIMIT).unwrap();
        println!("L={l}: stock attach/detach {stock_counted:?}, per-layer {patched_counted:?}");
        assert_eq!(
            stock_counted,
            (2, 1),
            "L={l}: the common parent, then the overlay"
        );
        assert_eq!(
            patched_counted,
            (l + 1, l),
            "L={l}: each layer, then the overlay"
        );
        // The patched overlay sits on one idmapped mount per layer: ovl-idmapped*/0, /1, …
        for i in 0..l {
            assert!(
                overlay.contains(&format!("/{i}:")) || overlay.contains(&format!("/{i},")),
                "{overlay}"
            );
        }
    }
}

fn example() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = harness::runtimes::example::build_static().expect("building the example runtime");
        harness::runtimes::build::check_static(&bin).expect("the example runtime is static");
        bin
    })
    .clone()
}

#[test]
fn example_runtime_passes_through_the_contract() {
    if !root_and_unshare() {
        return;
    }
    let fx = Fixture::new(4);
    let mut p = fx.start(&example(), None);
    assert_eq!(p.hello().runtime, "mmx-example");
    if !require(
        MountEvents::watch(p.pid()).is_some(),
        "the kernel has no fanotify mount events (Linux 6.15+)",
    ) {
        return;
    }
    let (counted, _) = mount_check_unmount(&fx, &mut p);
    assert_eq!(
        counted,
        (5, 4),
        "one idmapped mount per layer, then the overlay"
    );
    assert!(p.finish(JOB_LIMIT).unwrap().success());
}

#[test]
fn example_runtime_error_carries_step_and_errno_and_leaves_nothing() {
    if !root_and_unshare() {
        return;
    }
    let fx = Fixture::new(2);
    let mut p = fx.start(&example(), Some("error:overlay:95"));
    let id = p.next_id();
    match p.run(&fx.mount_job(id), JOB_LIMIT).unwrap() {
        Answer::Error {
            id: got,
            step,
            errno,
            ..
        } => {
            assert_eq!((got, errno), (id, Some(libc::EOPNOTSUPP)));
            assert!(step.contains("overlay"), "{step}");
        }
        a => panic!("expected an error, got {a:?}"),
    }
    // The per-layer mounts made before the failing step were undone.
    assert_eq!(fx.mounts_in(p.pid()), Vec::<String>::new());
    assert!(p.finish(JOB_LIMIT).unwrap().success());
}

#[test]
fn example_runtime_crash_is_seen_with_its_stderr_and_leftovers() {
    if !root_and_unshare() {
        return;
    }
    let fx = Fixture::new(3);
    let mut p = fx.start(&example(), Some("crash:overlay"));
    let id = p.next_id();
    let err = p.run(&fx.mount_job(id), JOB_LIMIT).unwrap_err();
    let DriveError::Line {
        source: RuntimeLineError::Eof,
        stderr,
    } = &err
    else {
        panic!("expected the output to end, got {err}")
    };
    assert!(stderr.contains("crashing at overlay"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    let status = p
        .exit_status(JOB_LIMIT)
        .expect("the crashed runtime is reaped");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
}

#[test]
fn example_runtime_hang_is_killed_at_the_job_limit() {
    if !root_and_unshare() {
        return;
    }
    let fx = Fixture::new(1);
    let mut p = fx.start(&example(), Some("hang:idmap"));
    let id = p.next_id();
    let limit = Duration::from_secs(2);
    let t = Instant::now();
    let err = p.run(&fx.mount_job(id), limit).unwrap_err();
    assert!(matches!(err, DriveError::Timeout { .. }), "{err}");
    assert!(t.elapsed() >= limit);
    // Killed: it is gone, not waiting.
    assert!(p.exit_status(Duration::from_secs(5)).is_some());
}

#[test]
fn example_runtime_leak_leaves_the_target_mounted() {
    if !root_and_unshare() {
        return;
    }
    let fx = Fixture::new(2);
    let mut p = fx.start(&example(), Some("leak"));
    let id = p.next_id();
    assert_eq!(
        p.run(&fx.mount_job(id), JOB_LIMIT).unwrap(),
        Answer::Ok { id }
    );
    let id = p.next_id();
    let target = fx.path("c/m");
    let unmount = Job::Unmount {
        id,
        target: target.clone(),
    };
    assert_eq!(p.run(&unmount, JOB_LIMIT).unwrap(), Answer::Ok { id });
    let left = fx.mounts_in(p.pid());
    assert_eq!(left.len(), 1, "{left:#?}");
    assert!(
        left[0].contains(&format!(" {} ", target.display())),
        "the leaked mount is the target: {left:#?}"
    );
    assert!(p.finish(JOB_LIMIT).unwrap().success());
}

#[test]
fn example_runtime_garbage_is_refused() {
    if !root_and_unshare() {
        return;
    }
    let fx = Fixture::new(1);
    let mut p = fx.start(&example(), Some("garbage"));
    let id = p.next_id();
    let err = p.run(&fx.mount_job(id), JOB_LIMIT).unwrap_err();
    assert!(
        matches!(
            err,
            DriveError::Line {
                source: RuntimeLineError::Garbage { .. },
                ..
            }
        ),
        "{err}"
    );
}

/// A containerd git checkout as a developer has one, made offline from the locked Debian
/// sources: containerd's module root with its own go.mod, and a `vendor/` holding the modules
/// core/mount needs (listed in `vendor/modules.txt` against go.mod's requirements).
fn containerd_checkout(cache: &Cache, into: &Path) -> PathBuf {
    use harness::runtimes::lock::DEFAULT_CONTAINERD;
    let (lock, _) = lock();
    let locked = lock.containerd(DEFAULT_CONTAINERD, "sid").expect("locked");
    let (debs, _) =
        harness::debian::store::fetch(&locked.packages, cache, "mmx runtimes lock").unwrap();
    let gocode = into.join("gocode");
    for deb in &debs {
        harness::debian::extract::extract_deb(deb, &gocode, |p| {
            p.strip_prefix("usr/share/gocode/src/")
                .filter(|r| !r.is_empty())
                .map(PathBuf::from)
        })
        .unwrap();
    }
    let tree = into.join("containerd");
    fs::rename(gocode.join("github.com/containerd/containerd/v2"), &tree).unwrap();
    let go_mod = fs::read_to_string(tree.join("go.mod")).unwrap();
    // `path version` lines of the require blocks, longest path first (nested modules move
    // out before their parents).
    let mut requires: Vec<(String, String)> = go_mod
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (path, version) = (f.next()?, f.next()?);
            (version.starts_with('v') && path.contains('.')).then(|| (path.into(), version.into()))
        })
        .collect();
    requires.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let mut modules_txt = String::new();
    for (path, version) in &requires {
        modules_txt.push_str(&format!("# {path} {version}\n## explicit; go 1.22\n"));
        let from = gocode.join(path);
        if !from.is_dir() {
            continue;
        }
        let to = tree.join("vendor").join(path);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::rename(&from, &to).unwrap();
        let mut stack = vec![to.clone()];
        while let Some(dir) = stack.pop() {
            let mut has_go = false;
            for e in fs::read_dir(&dir).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let ft = e.file_type().unwrap();
                if ft.is_dir() && !name.starts_with(['.', '_']) && name != "testdata" {
                    stack.push(e.path());
                }
                has_go |= ft.is_file() && name.ends_with(".go");
            }
            if has_go {
                let rel = dir.strip_prefix(tree.join("vendor")).unwrap();
                modules_txt.push_str(&format!("{}\n", rel.display()));
            }
        }
    }
    fs::write(tree.join("vendor/modules.txt"), modules_txt).unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .arg("-C")
            .arg(&tree)
            .args(["-c", "user.name=mmx", "-c", "user.email=mmx@localhost"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "containerd 2.1.9 with vendor/"]);
    tree
}

#[test]
fn containerd_from_a_checkout_builds_with_its_vendor_dir_and_takes_patches() {
    if !root_and_unshare()
        || !require(
            Command::new("git")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "git is missing",
        )
    {
        return;
    }
    let (lock, lock_path) = lock();
    // Toolchain and Go build cache shared, the runtime built afresh every time (the commit
    // differs per run anyway).
    let (_dir, cache) = cold_cache(&["apt", "debs", "locks", "go", "gocache"]);
    let work = tempfile::tempdir().unwrap();
    let tree = containerd_checkout(&cache, work.path());
    let patch = repo().join("runtimes/containerd/testdata/per-layer-idmap.patch");
    let text = format!(
        "[[runtimes]]\nname = \"pr\"\ncontainerd = {{ tree = \"{}\", rev = \"main\" }}\npatches = [\"{}\"]\n",
        tree.display(),
        patch.display()
    );
    let recipe = harness::runtimes::recipe::parse_recipes(Path::new("/t/matrix.toml"), &text)
        .unwrap()
        .remove(0);
    let rt = ensure(&recipe, &lock, &lock_path, &cache, &Discard).expect("building the checkout");
    println!(
        "checkout runtime: {:?} ({})",
        rt.timings,
        rt.provenance.describe()
    );
    let harness::results::RuntimeProvenance::Tree { commit, rev, .. } = &rt.provenance else {
        panic!("{:?}", rt.provenance)
    };
    assert_eq!((commit.len(), rev.as_str()), (40, "main"));

    let fx = Fixture::new(3);
    let mut p = fx.start(&rt.binary, None);
    assert!(
        p.hello().version.starts_with(&commit[..12]),
        "{:?}",
        p.hello()
    );
    if !require(
        MountEvents::watch(p.pid()).is_some(),
        "the kernel has no fanotify mount events (Linux 6.15+)",
    ) {
        return;
    }
    // The patch applied to the checkout: one idmapped mount per layer.
    let (counted, _) = mount_check_unmount(&fx, &mut p);
    assert_eq!(counted, (4, 3));
    assert!(p.finish(JOB_LIMIT).unwrap().success());
}
