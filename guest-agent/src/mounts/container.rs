//! One container's start: its directories and user namespace, the passes through a strategy,
//! and the checks made through each merged view, from inside the container's user namespace
//! (the userns helper) and from the host (the worker).
//!
//! Layout below the run's `c/` directory, made before the clock starts: `<idx>/u` (upper, owned
//! by the container's root), `<idx>/w` (work), `<idx>/m` (merged), `<idx>/p` (common-parent
//! target), `<idx>/l/<i>` (per-layer targets). Passes run in turn and share them. Every
//! container mounts on fresh directories, as containerd does on its fresh temporary ones: on
//! this project's test host, one reused set of targets per worker, targets on a tmpfs, or
//! targets made beside the workers while they start containers all made the measured mount
//! calls 12–85 % slower, so none of that is done. The price: C·(L+4) directories to lay out
//! (stoppable between containers) and to remove, ~80 µs each on a slow disk.
//!
//! The checks inside the user namespace run once a pass's start path is over (the overlay stays
//! mounted until its teardown): run beside the measured calls, as they once did to save wall
//! time, the helper's path walks shared the CPUs and the mount locks with them and made the
//! agent's start latency part ours.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{chown, DirBuilderExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{Check, CountSource, MountsScenario, Strategy};
use rustix::fs::{AtFlags, Mode, OFlags};

use super::cause::{AgentError, Cause};
use super::count::Observed;
use super::measure::Crew;
use super::strategy::{self, Plan, Tally};
use super::table::Observer;
use super::TestHooks;
use crate::layers::{layer_gid, layer_uid};
use crate::sys::userns::{Batches, ChildOp, OpResult, MAX_DIRS};
use crate::sys::{mount_api as api, SysError};

/// Ids each container's user namespace maps, from a base distinct per container.
pub const ID_COUNT: u32 = 65536;
const ID_BASE0: u32 = 1_000_000;

/// Host id that container `idx`'s root maps to.
pub fn base_id(idx: u32) -> u32 {
    ID_BASE0 + idx * ID_COUNT
}

/// Whether pass `k` of `passes` builds the rootfs (the last one) or a read-only view.
pub fn is_rootfs_pass(k: u32, passes: u32) -> bool {
    k + 1 == passes
}

fn mkdir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o755).create(path)
}

/// Make container `idx`'s directories.
pub fn prepare_dirs(
    containers: &Path,
    idx: u32,
    s: &MountsScenario,
    extra_bind: bool,
) -> io::Result<()> {
    let dir = containers.join(idx.to_string());
    mkdir(&dir)?;
    if extra_bind {
        // The test hook's extra bind mount lands here.
        mkdir(&dir.join(strategy::EXTRA_TARGET))?;
    }
    let upper = dir.join("u");
    mkdir(&upper)?;
    // containerd's remapping snapshotter hands the upper dir to the container's root, so the
    // container can write its rootfs.
    chown(&upper, Some(base_id(idx)), Some(base_id(idx)))?;
    mkdir(&dir.join("w"))?;
    mkdir(&dir.join("m"))?;
    match s.builtin() {
        Some(Strategy::PerLayer) => {
            let l = dir.join("l");
            mkdir(&l)?;
            for i in 0..s.layers {
                mkdir(&l.join(i.to_string()))?;
            }
        }
        Some(Strategy::CommonParent) => mkdir(&dir.join("p"))?,
        // A runtime mounts on `m` and keeps its own helpers below its working directory.
        Some(Strategy::FsconfigFd | Strategy::FsconfigFdAttr) | None => {}
    }
    Ok(())
}

/// Verdicts of one kind of check, summed over containers and passes.
#[derive(Debug, Default, Clone)]
struct Tallied {
    ok: u64,
    total: u64,
    first_failure: Option<String>,
}

/// All checks of a run, by name.
#[derive(Debug, Default, Clone)]
pub struct Checks(BTreeMap<&'static str, Tallied>);

impl Checks {
    pub fn record(&mut self, name: &'static str, ok: bool, detail: impl FnOnce() -> String) {
        let t = self.0.entry(name).or_default();
        t.total += 1;
        if ok {
            t.ok += 1;
        } else if t.first_failure.is_none() {
            t.first_failure = Some(detail());
        }
    }

    pub fn merge(&mut self, other: &Checks) {
        for (name, o) in &other.0 {
            let t = self.0.entry(name).or_default();
            t.ok += o.ok;
            t.total += o.total;
            if t.first_failure.is_none() {
                t.first_failure.clone_from(&o.first_failure);
            }
        }
    }

    /// The first failed check, as (name, detail).
    pub fn first_failure(&self) -> Option<(&'static str, String)> {
        self.0
            .iter()
            .find_map(|(n, t)| t.first_failure.clone().map(|d| (*n, d)))
    }

    pub fn to_protocol(&self) -> Vec<Check> {
        self.0
            .iter()
            .map(|(name, t)| Check {
                name: (*name).to_owned(),
                ok: t.ok == t.total,
                detail: match &t.first_failure {
                    None => format!("{}/{}", t.ok, t.total),
                    Some(f) => format!("{}/{} ok; first failure: {f}", t.ok, t.total),
                },
            })
            .collect()
    }
}

/// What one helper op must see.
enum Expect {
    /// Exists with these ids, as seen from inside the user namespace.
    Owner(&'static str, u32, u32),
    /// Hidden by a whiteout or opaque dir.
    Absent(&'static str),
    Present(&'static str),
    /// Fails with this errno (a write to the read-only view: EROFS).
    Errno(&'static str, i32),
}

/// The merged view's mount point, relative to the container's directory.
const MERGED_DIR: &std::ffi::CStr = c"m";

/// Directory index of the helper's ops: the container's directory (each command carries it).
const CONTAINER_DIR: u8 = 0;

/// A check made from the host: `statat(dir, path)` must show the container's base id plus
/// these offsets.
struct HostExpect {
    check: &'static str,
    dir: u8,
    path: CString,
    uid_off: u32,
    gid_off: u32,
}

/// What one pass must see; the same for every container of a run.
pub struct PassSpec {
    expect: Vec<(String, Expect)>,
    host: Vec<HostExpect>,
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Layers whose files are sampled: bottom, middle, top.
fn sampled_layers(l: u32) -> Vec<u32> {
    let mut v = vec![1, l.div_ceil(2), l];
    v.dedup();
    v
}

fn pass_spec(l: u32, overrides: bool, opaque: bool, rootfs: bool) -> (Vec<ChildOp>, PassSpec) {
    let mut ops = Vec::new();
    let mut expect = Vec::new();
    let mut host = Vec::new();
    let mut stat = |path: String, e: Expect, ops: &mut Vec<ChildOp>| {
        ops.push(ChildOp::Stat {
            dir: CONTAINER_DIR,
            path: cstr(&path),
        });
        expect.push((path, e));
    };
    for n in sampled_layers(l) {
        let path = format!("m/layer-{n}");
        host.push(HostExpect {
            check: "ids-from-host",
            dir: CONTAINER_DIR,
            path: cstr(&path),
            uid_off: layer_uid(n),
            gid_off: layer_gid(n),
        });
        stat(
            path,
            Expect::Owner("ids-inside-userns", layer_uid(n), layer_gid(n)),
            &mut ops,
        );
    }
    stat(
        "m/shared".into(),
        Expect::Owner("top-layer-wins", layer_uid(l), layer_gid(l)),
        &mut ops,
    );
    stat(
        "m/etc".into(),
        Expect::Owner("ids-inside-userns", 0, 0),
        &mut ops,
    );
    if overrides {
        stat(
            "m/doomed".into(),
            Expect::Absent("whiteout-hides"),
            &mut ops,
        );
        if opaque {
            stat(
                "m/opaque/from-1".into(),
                Expect::Absent("opaque-dir"),
                &mut ops,
            );
            stat(
                "m/opaque/from-2".into(),
                Expect::Present("opaque-dir"),
                &mut ops,
            );
        }
    }
    let mut expect_created = |path: &str, e: Expect| {
        ops.push(ChildOp::Create {
            dir: CONTAINER_DIR,
            path: cstr(path),
        });
        expect.push((path.to_owned(), e));
    };
    if rootfs {
        expect_created("m/written", Expect::Owner("write-as-container-root", 0, 0));
        expect_created(
            "m/etc/written",
            Expect::Owner("write-as-container-root", 0, 0),
        );
        for (check, path) in [
            ("write-lands-in-upper", "u/written"),
            ("write-lands-in-upper", "u/etc/written"),
            // Copy-up of etc/ (owned by image root) must keep the mapped owner.
            ("copy-up-owner", "u/etc"),
        ] {
            host.push(HostExpect {
                check,
                dir: CONTAINER_DIR,
                path: cstr(path),
                uid_off: 0,
                gid_off: 0,
            });
        }
    } else {
        expect_created("m/written", Expect::Errno("view-is-read-only", libc::EROFS));
    }
    (ops, PassSpec { expect, host })
}

/// The helper's batches (one per pass) and what each pass must see: the same for every
/// container of a run, built once.
pub fn pass_specs(s: &MountsScenario, overrides: bool, opaque: bool) -> (Batches, Vec<PassSpec>) {
    let mut batches = Vec::new();
    let mut specs = Vec::new();
    for k in 0..s.passes {
        let (ops, spec) = pass_spec(s.layers, overrides, opaque, is_rootfs_pass(k, s.passes));
        batches.push(ops);
        specs.push(spec);
    }
    (Arc::new(batches), specs)
}

/// Run-wide, read-only inputs of every container.
pub struct RunCtx<'a> {
    pub plan: &'a Plan,
    pub scenario: &'a MountsScenario,
    /// Absolute, canonical `<run>/c`.
    pub containers: PathBuf,
    /// What each pass must see.
    pub specs: &'a [PassSpec],
    pub observer: &'a Observer,
    /// Where the run's mount counts come from (what the workers must look at themselves).
    pub source: CountSource,
    /// The test hooks (none outside tests).
    pub hook: TestHooks,
    /// Where each merged overlay's return is recorded for the watchers' lag, when the
    /// scenario has watchers.
    pub returns: Option<&'a crate::watchers::Returns>,
}

/// What one container start produced.
pub struct Started {
    /// Start-path time, all passes.
    pub latency: Duration,
    /// Most mounts seen below the container during a start.
    pub peak_seen: u64,
}

pub(super) fn open_dir(path: &Path) -> Result<OwnedFd, Cause> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        Cause::agent(
            SysError::new(|| "open(O_DIRECTORY)".into(), e).context(format!("{}", path.display())),
        )
    })
}

/// Record that the overlay on `<cdir>/m` returned now, named as each watcher sees it: its
/// unique id (fanotify) and its table id with its mount point (mountinfo).
fn returned(r: &crate::watchers::Returns, cdir: &Path) {
    let at = Instant::now();
    let unique = api::mount_id_unique(api::cwd(), MERGED_DIR, false)
        .ok()
        .flatten()
        .map(crate::watchers::Key::Unique);
    let point = cdir.join(MERGED_DIR.to_string_lossy().as_ref());
    let table = crate::sys::watch::table_mount_id(api::cwd(), MERGED_DIR)
        .ok()
        .flatten()
        .map(|id| crate::watchers::Key::Table(id, point.as_os_str().as_bytes().to_vec()));
    r.record(at, unique.into_iter().chain(table));
}

/// Start container `idx`: every pass through the strategy, checked and torn down. The calling
/// thread must have a working directory of its own (`sys::ns::unshare_fs`): it moves to the
/// container's directory. Where the kernel does not count mount events, the mounts below the
/// container are looked at after the start path and after the teardown too (`observed`).
pub fn run(
    ctx: &RunCtx<'_>,
    crew: &Crew<'_>,
    idx: u32,
    tally: &mut Tally,
    checks: &mut Checks,
    observed: &mut Observed,
) -> Result<Started, Cause> {
    if ctx.hook.agent_error && idx == 0 {
        return Err(Cause::Agent(AgentError::Injected));
    }
    let s = ctx.scenario;
    let base = base_id(idx);
    // Declared before the helper: the helper may use it until it is dropped.
    let cdir_path = ctx.containers.join(idx.to_string());
    let cdir = open_dir(&cdir_path)?;
    rustix::process::fchdir(&cdir).map_err(|e| {
        Cause::agent(
            SysError::new(|| "fchdir(container dir)".into(), e)
                .context(format!("{}", cdir_path.display())),
        )
    })?;
    let paths = ctx.plan.paths();
    let userns = crew.helpers.take(idx)?;
    let dirs = [cdir.as_fd(), cdir.as_fd()];
    let events = ctx.source == CountSource::FanotifyMountEvents;
    let below = || ctx.observer.count_below(&cdir_path).map_err(Cause::agent);
    let mut latency = Duration::ZERO;
    let mut peak_seen = 0u64;
    for k in 0..s.passes as usize {
        let rootfs = is_rootfs_pass(k as u32, s.passes);
        let mut at_peak_n = None;
        let mut merged = Ok(None);
        latency += {
            let mut at_peak = || {
                // The overlay's mount call has just returned (`at_peak`'s time is not the
                // start path's).
                if let Some(r) = ctx.returns {
                    returned(r, &cdir_path);
                }
                let want = ctx.plan.peak_mounts();
                match ctx.observer.count_below(&cdir_path) {
                    Ok(n) => {
                        peak_seen = peak_seen.max(n);
                        at_peak_n = Some(n);
                        checks.record("mount-table-peak", n == want, || {
                            format!(
                                "container {idx} pass {k}: {} shows {n} mounts below {}, expected {want}",
                                ctx.observer.method(),
                                cdir_path.display()
                            )
                        });
                    }
                    Err(e) => checks.record("mount-table-peak", false, || {
                        format!("container {idx} pass {k}: {e}")
                    }),
                }
                // The merged overlay's id tells its teardown apart in the kernel's events.
                if events {
                    merged = api::mount_id_unique(api::cwd(), MERGED_DIR, false);
                }
            };
            strategy::start(ctx.plan, paths, userns.fd(), rootfs, tally, &mut at_peak)?
        };
        // The checks inside the userns run once the start path is over (the overlay stays
        // mounted until the teardown): run beside it, their path walks would share the CPUs and
        // the mount locks with the calls being measured.
        if let Some(cpus) = crew.spare_cpus {
            userns.keep_off_cpu(cpus);
        }
        let sent = userns.start_batch(k, dirs);
        let after_start = if events { None } else { Some(below()?) };
        let verified = sent.and_then(|()| {
            let results = userns.finish_batch()?;
            verify(&results, &ctx.specs[k], dirs, base, idx, k, checks);
            Ok(())
        });
        // Tear down even when a check could not run, so nothing stays mounted.
        strategy::teardown(tally)?;
        verified.map_err(Cause::agent)?;
        if events {
            match merged.map_err(Cause::agent)? {
                Some(id) => observed.merged_ids.push(id),
                None => return Err(Cause::bug("statx gave no unique mount id for the overlay")),
            }
        } else if let (Some(peak), Some(after)) = (at_peak_n, after_start) {
            let after_teardown = below()?;
            observed.at_peak += peak;
            observed.gone_after_start += peak.saturating_sub(after);
            observed.gone_after_teardown += after.saturating_sub(after_teardown);
        }
    }
    Ok(Started { latency, peak_seen })
}

pub(super) fn verify(
    results: &[OpResult],
    spec: &PassSpec,
    dirs: [BorrowedFd<'_>; MAX_DIRS],
    base: u32,
    idx: u32,
    k: usize,
    checks: &mut Checks,
) {
    for ((path, e), r) in spec.expect.iter().zip(results) {
        let where_ = || format!("container {idx} pass {k}: {path} inside the userns");
        let OpResult {
            errno, uid, gid, ..
        } = *r;
        match e {
            Expect::Owner(name, want_u, want_g) => {
                checks.record(name, errno == 0 && (uid, gid) == (*want_u, *want_g), || {
                    if errno != 0 {
                        format!(
                            "{}: errno {} ({})",
                            where_(),
                            errno,
                            protocol::errno::describe(errno)
                        )
                    } else {
                        format!(
                            "{}: uid:gid {uid}:{gid}, expected {want_u}:{want_g}",
                            where_()
                        )
                    }
                })
            }
            Expect::Absent(name) => checks.record(name, errno == libc::ENOENT, || {
                format!("{}: visible (errno {errno}), expected hidden", where_())
            }),
            Expect::Present(name) => checks.record(name, errno == 0, || {
                format!("{}: errno {errno}, expected visible", where_())
            }),
            Expect::Errno(name, want) => checks.record(name, errno == *want, || {
                format!("{}: errno {errno}, expected {want}", where_())
            }),
        }
    }
    if results.len() != spec.expect.len() {
        checks.record("ids-inside-userns", false, || {
            format!(
                "container {idx} pass {k}: {} answers from the userns helper, expected {}",
                results.len(),
                spec.expect.len()
            )
        });
    }
    for h in &spec.host {
        let dir = dirs[usize::from(h.dir)];
        let (uid, gid) = (base + h.uid_off, base + h.gid_off);
        let seen = rustix::fs::statat(dir, h.path.as_c_str(), AtFlags::SYMLINK_NOFOLLOW);
        checks.record(
            h.check,
            matches!(&seen, Ok(st) if (st.st_uid, st.st_gid) == (uid, gid)),
            || {
                let what = match &seen {
                    Ok(st) => format!("uid:gid {}:{}", st.st_uid, st.st_gid),
                    Err(e) => format!("{e}"),
                };
                format!(
                    "container {idx} pass {k}: {:?} from the host: {what}, expected {uid}:{gid}",
                    h.path
                )
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_ranges_are_distinct_and_fit() {
        assert_eq!(base_id(1) - base_id(0), ID_COUNT);
        let last = base_id(protocol::limits::CONTAINERS.max as u32 - 1);
        assert!(u64::from(last) + u64::from(ID_COUNT) < u64::from(u32::MAX));
    }

    #[test]
    fn last_pass_is_the_rootfs() {
        assert!(!is_rootfs_pass(0, 2));
        assert!(is_rootfs_pass(1, 2));
        assert!(is_rootfs_pass(0, 1));
    }

    #[test]
    fn samples_cover_bottom_middle_top() {
        assert_eq!(sampled_layers(1), vec![1]);
        assert_eq!(sampled_layers(2), vec![1, 2]);
        assert_eq!(sampled_layers(50), vec![1, 25, 50]);
    }

    #[test]
    fn checks_summarise_counts_and_first_failure() {
        let mut c = Checks::default();
        c.record("a", true, String::new);
        c.record("a", false, || "one".into());
        c.record("a", false, || "two".into());
        let p = c.to_protocol();
        assert!(!p[0].ok);
        assert_eq!(p[0].detail, "1/3 ok; first failure: one");
        assert_eq!(c.first_failure(), Some(("a", "one".into())));
    }
}
