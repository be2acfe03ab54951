//! Run directories and the files mmx writes into them, safely: mmx runs as root, often in a
//! shared directory, and every name in a run directory comes from ids a user or a matrix chose.
//!
//! - A run directory is created exclusively: a second run never reuses one (an id that exists
//!   gets a `-2`, `-3` … suffix), so two runs started in the same second keep their results apart.
//! - A run id is a name, not a path: letters, digits, `.`, `_`, `-`, not starting with `.`.
//! - Logs are opened with `O_NOFOLLOW` (a symlink planted where a log goes is an error, never
//!   followed), and whole files (run.json, reports) are written to a fresh temporary file
//!   (`O_EXCL`) and renamed into place, which replaces a symlink instead of writing through it.
//!   The file and its directory are fsync'ed before the call returns, so a crash never leaves a
//!   renamed but empty file. Every file mmx writes whole goes through [`write_atomic`]: run.json,
//!   reports, lock files, cache manifests.
//! - As root, a directory mmx writes into or reads configuration from (`--out`, the cache, the
//!   private apt) must be root's and writable by no one else, nor may any directory above it be
//!   ([`check_trusted_dir`]): a file someone else can place there would otherwise be read, or
//!   run, as root.
//!
//! [`IoError`] is the one shape of a failed file operation: the call, the path, the error.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;

use crate::cell::{BootKey, TargetKey};

/// A run directory: `run.json`, reports, and `logs/` with one file per boot and channel.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
    /// The id the directory got (the asked-for id, or it with a suffix).
    pub id: String,
}

/// Most directories tried with suffixes before giving up.
const MAX_SUFFIX: u32 = 1000;

impl RunDir {
    /// Create `base/<run_id>` (or `base/<run_id>-N` when taken) and its `logs/`, exclusively.
    /// As root, `base` must be a trusted directory ([`check_trusted_dir`]).
    pub fn create(base: &Path, run_id: &str) -> anyhow::Result<RunDir> {
        check_run_id(run_id)?;
        create_runs_dir(base)?;
        for n in 1..=MAX_SUFFIX {
            let id = if n == 1 {
                run_id.to_string()
            } else {
                format!("{run_id}-{n}")
            };
            let root = base.join(&id);
            match std::fs::create_dir(&root) {
                Ok(()) => {
                    std::fs::create_dir(root.join("logs"))
                        .with_context(|| format!("creating {}/logs", root.display()))?;
                    return Ok(RunDir { root, id });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("creating run directory {}", root.display()))
                }
            }
        }
        anyhow::bail!(
            "{}: {MAX_SUFFIX} run directories named {run_id}… exist already",
            base.display()
        )
    }

    /// An existing run directory (for `mmx report`).
    pub fn open(root: &Path) -> RunDir {
        RunDir {
            root: root.to_path_buf(),
            id: root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    pub fn run_json(&self) -> PathBuf {
        self.root.join("run.json")
    }

    /// Path of a log file for a boot, relative to the run dir (ids contain `/`: flattened).
    pub fn log_rel(boot: &BootKey, channel: &str) -> PathBuf {
        LogStem::Boot(boot.clone()).rel(channel)
    }

    /// When `rel` (from a run.json) names a file mmx writes for `boot` — `logs/<stem>.<channel>.log`,
    /// or `.json` (the plan), the stem being the boot's or that of the guest that served it
    /// ([`LogStem`]) — that file's channel and path, the path made anew by [`LogStem::rel`]. A
    /// report links only these: never a path a run.json names.
    pub fn known_log(boot: &BootKey, rel: &Path) -> Option<(String, PathBuf)> {
        let name = rel.strip_prefix("logs").ok()?.to_str()?;
        let stems = [
            LogStem::Boot(boot.clone()),
            LogStem::Guest {
                target: boot.target.clone(),
                rerun: false,
            },
            LogStem::Guest {
                target: boot.target.clone(),
                rerun: true,
            },
        ];
        stems.into_iter().find_map(|stem| {
            let rest = name.strip_prefix(&stem.flat())?.strip_prefix('.')?;
            let (channel, ext) = rest.split_once('.')?;
            let known = !channel.is_empty()
                && channel.chars().all(|c| c.is_ascii_lowercase())
                && matches!(ext, "log" | "json");
            known.then(|| (channel.to_string(), stem.rel(channel).with_extension(ext)))
        })
    }

    pub fn abs(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// Open (create or truncate) a log for writing, never through a symlink.
    pub fn create_log(&self, rel: &Path) -> anyhow::Result<File> {
        create_nofollow(&self.abs(rel))
    }
}

/// What a boot's log files are named after: the boot, or the guest that served the boots of
/// several filesystems of one target (`debian-6.12_1s2c1t`; `+rerun` for the fresh guest that
/// ran the cells the first did not reach: `+` is never in a flattened id, so no boot's name
/// can be a guest's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogStem {
    Boot(BootKey),
    Guest { target: TargetKey, rerun: bool },
}

impl LogStem {
    /// Path of this stem's log file for `channel`, relative to the run dir.
    pub fn rel(&self, channel: &str) -> PathBuf {
        PathBuf::from("logs").join(format!("{}.{channel}.log", self.flat()))
    }

    /// The stem as one file name.
    fn flat(&self) -> String {
        match self {
            LogStem::Boot(b) => flat_id(&b.to_string()),
            LogStem::Guest { target, rerun } => {
                let base = flat_id(&target.to_string());
                if *rerun {
                    format!("{base}+rerun")
                } else {
                    base
                }
            }
        }
    }
}

impl std::fmt::Display for LogStem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.flat())
    }
}

/// An id as one file name: letters, digits, `.` and `-` kept, anything else `_`.
fn flat_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Create the directory run directories go into (`--out`), when missing; as root, refuse it
/// (before making anything) unless it is trusted ([`check_trusted_dir`]).
pub fn create_runs_dir(base: &Path) -> anyhow::Result<()> {
    check_trusted_dir("--out", base)?;
    // 0755 whatever the umask: a group-writable directory would be refused right away.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(base)
        .with_context(|| format!("creating the runs directory {}", base.display()))?;
    Ok(check_trusted_dir("--out", base)?)
}

/// Refuse a run id that is not a plain name (it becomes a directory below `--out`).
pub fn check_run_id(id: &str) -> anyhow::Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    anyhow::ensure!(
        ok,
        "--run-id `{id}`: a run id is a name (letters, digits, `.`, `_`, `-`; not starting with \
         `.`; at most 128 characters), not a path"
    );
    Ok(())
}

/// Open `path` for writing (created, or truncated), refusing to follow a symlink there.
pub fn create_nofollow(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("creating {} (never through a symlink)", path.display()))
}

/// A file operation that failed: the call (`open`, `rename`, …), the path, and the error.
/// Its message carries the error itself, so it reads whole wherever it is printed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {error}", path = path.display())]
pub struct IoError {
    pub op: &'static str,
    pub path: PathBuf,
    pub error: std::io::Error,
}

impl IoError {
    pub fn new(op: &'static str, path: &Path, error: std::io::Error) -> IoError {
        IoError {
            op,
            path: path.to_path_buf(),
            error,
        }
    }

    /// For `map_err`: `fs::read(p).map_err(IoError::at("read", p))`.
    pub fn at<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> IoError + 'a {
        move |error| IoError::new(op, path, error)
    }
}

/// Replace `path` with `bytes` atomically: a fresh temp file beside it (`O_EXCL`, so never an
/// existing file or symlink), fsync'ed, then `rename`, which replaces a symlink rather than
/// following it, then an fsync of the directory so the rename itself survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_CLOEXEC)
        .mode(0o644)
        .open(&tmp)
        .map_err(IoError::at("create", &tmp))?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(IoError::new("write", path, e));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(IoError::at("fsync", dir))
}

/// A directory mmx refuses to use as root, and why (see [`check_trusted_dir`]).
#[derive(Debug)]
pub struct UntrustedDir {
    /// What the directory is for: `the cache directory`, `--out`.
    pub what: &'static str,
    /// The directory asked for.
    pub dir: PathBuf,
    /// The directory at fault: `dir` or one above it.
    pub culprit: PathBuf,
    /// The culprit's owner and mode (`None` when it could not be inspected).
    pub owner_mode: Option<(u32, u32)>,
    pub why: Untrusted,
}

impl std::error::Error for UntrustedDir {}

impl std::fmt::Display for UntrustedDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let UntrustedDir {
            what,
            dir,
            culprit,
            owner_mode,
            why,
        } = self;
        write!(f, "{what} {}", dir.display())?;
        if culprit != dir {
            write!(f, ": {}, above it,", culprit.display())?;
        }
        match owner_mode {
            Some((uid, mode)) => write!(f, " (owner uid {uid}, mode {mode:04o}) is {why}")?,
            None => write!(f, " {why}")?,
        }
        f.write_str(
            "; as root, mmx uses only directories that root owns and no one else can write, \
             below directories that are the same (chown root, chmod go-w, or choose another \
             directory)",
        )
    }
}

/// Why a directory is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untrusted {
    /// Someone other than root owns it: they can replace what is in it.
    NotRoots,
    /// Its group or everyone may create, rename and remove entries in it.
    Writable,
    /// A directory above it that everyone may write, without the sticky bit that keeps them
    /// from renaming root's entries.
    WritableNotSticky,
    /// It could not be inspected at all.
    Unreadable,
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Untrusted::NotRoots => "not root's",
            Untrusted::Writable => "group- or other-writable",
            Untrusted::WritableNotSticky => "writable by others, without the sticky bit",
            Untrusted::Unreadable => "cannot be inspected (does it exist?)",
        })
    }
}

/// As root, refuse `dir` unless it and every directory above it belong to root and no one else
/// can write them; a directory above it may be world-writable when it is sticky (`/tmp`),
/// because then only root can rename or remove root's directory inside it. Symbolic links on
/// the way are followed, and the directories holding them are checked too: whoever can write
/// those could point the link elsewhere. A `dir` that does not exist yet is judged by the
/// directories above it; whoever makes it must check it again once it exists (someone may
/// have made it first in a sticky directory). Not root: nothing to check (mmx then writes only
/// what its user could write anyway).
pub fn check_trusted_dir(what: &'static str, dir: &Path) -> Result<(), UntrustedDir> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    check_owned_by(what, dir, 0)
}

/// [`check_trusted_dir`] with the trusted owner given (tests run it as any user).
fn check_owned_by(what: &'static str, dir: &Path, owner: u32) -> Result<(), UntrustedDir> {
    let refuse = |culprit: &Path, owner_mode: Option<(u32, u32)>, why: Untrusted| UntrustedDir {
        what,
        dir: dir.to_path_buf(),
        culprit: culprit.to_path_buf(),
        owner_mode,
        why,
    };
    let unreadable = |culprit: &Path| refuse(culprit, None, Untrusted::Unreadable);
    let abs = std::path::absolute(dir).map_err(|_| unreadable(dir))?;
    let existing = abs
        .ancestors()
        .find(|a| std::fs::symlink_metadata(a).is_ok())
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    // The directories holding a symlink on the way, lexically.
    let mut chains: Vec<PathBuf> = Vec::new();
    for a in existing.ancestors() {
        if std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink()) {
            if let Some(parent) = a.parent() {
                chains.push(parent.to_path_buf());
            }
        }
    }
    // A missing `dir`: the nearest directory that exists is one above it.
    let first_is_above = existing != abs;
    chains.insert(0, existing);
    for (n, start) in chains.into_iter().enumerate() {
        // Canonical: no symlinks left, so each ancestor is the directory really traversed.
        let real = std::fs::canonicalize(&start).map_err(|_| unreadable(&start))?;
        let skip = usize::from(n == 0 && first_is_above);
        for (i, p) in (skip..).zip(real.ancestors()) {
            let m = std::fs::metadata(p).map_err(|_| unreadable(p))?;
            let mode = m.mode() & 0o7777;
            let why = if m.uid() != owner {
                Some(Untrusted::NotRoots)
            } else if mode & 0o022 == 0 {
                None
            } else if i == 0 {
                Some(Untrusted::Writable)
            } else if mode & 0o1000 == 0 {
                Some(Untrusted::WritableNotSticky)
            } else {
                None
            };
            if let Some(why) = why {
                return Err(refuse(p, Some((m.uid(), mode)), why));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::TargetKey;

    #[test]
    fn run_ids_are_names_not_paths() {
        for bad in ["../escaped", "a/b", "", ".hidden", "a b", "x\u{0}"] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
        for good in ["2026-12-01T10-00-00Z", "ci.42_a-b"] {
            assert!(check_run_id(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_boot_links_its_own_logs_and_its_guests_never_anothers() {
        let target = |k: &str| TargetKey::Qemu {
            kernel: k.into(),
            topology: "1s2c1t".into(),
        };
        let boot = BootKey {
            target: target("debian-6.12"),
            filesystem: protocol::Filesystem::Xfs.into(),
        };
        let guest = |rerun| LogStem::Guest {
            target: target("debian-6.12"),
            rerun,
        };
        assert_eq!(
            guest(false).rel("console"),
            Path::new("logs/debian-6.12_1s2c1t.console.log")
        );
        for stem in [LogStem::Boot(boot.clone()), guest(false), guest(true)] {
            let rel = stem.rel("console");
            assert_eq!(
                RunDir::known_log(&boot, &rel),
                Some(("console".to_string(), rel.clone())),
                "{rel:?}"
            );
        }
        let other = LogStem::Guest {
            target: target("debian-6.1"),
            rerun: false,
        };
        assert_eq!(RunDir::known_log(&boot, &other.rel("console")), None);
        assert_eq!(
            RunDir::known_log(&boot, Path::new("logs/debian-6.12_1s2c1t+x.console.log")),
            None
        );
    }

    #[test]
    fn a_second_run_with_the_same_id_gets_its_own_directory() {
        let base = tempfile::tempdir().unwrap();
        let a = RunDir::create(base.path(), "same").unwrap();
        let b = RunDir::create(base.path(), "same").unwrap();
        assert_ne!(a.root, b.root);
        assert_eq!(b.id, "same-2");
        assert!(b.root.join("logs").is_dir());
    }

    #[test]
    fn files_are_never_written_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("report.md");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_nofollow(&link).is_err());
        write_atomic(&link, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "new");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
    }

    #[test]
    fn log_paths_are_flat_and_stable() {
        let boot = BootKey {
            target: TargetKey::Qemu {
                kernel: "debian-6.12".into(),
                topology: "2s2c2t-numa2".into(),
            },
            filesystem: protocol::Filesystem::Ext4.into(),
        };
        assert_eq!(
            RunDir::log_rel(&boot, "console"),
            PathBuf::from("logs/debian-6.12_2s2c2t-numa2_ext4.console.log")
        );
    }

    #[test]
    fn only_the_logs_mmx_names_are_known() {
        let boot = BootKey {
            target: TargetKey::Qemu {
                kernel: "debian-6.12".into(),
                topology: "1s2c1t".into(),
            },
            filesystem: protocol::Filesystem::Ext4.into(),
        };
        let console = RunDir::log_rel(&boot, "console");
        assert_eq!(
            RunDir::known_log(&boot, &console),
            Some(("console".into(), console.clone()))
        );
        let plan = RunDir::log_rel(&boot, "plan").with_extension("json");
        assert_eq!(
            RunDir::known_log(&boot, &plan),
            Some(("plan".into(), plan.clone()))
        );
        for bad in [
            "javascript:alert(1)",
            "/etc/passwd",
            "logs/../run.json",
            "logs/debian-6.1_1s2c1t_ext4.console.log",
            "logs/debian-6.12_1s2c1t_ext4.console.log/x",
            "logs/debian-6.12_1s2c1t_ext4.Console.log",
            "logs/debian-6.12_1s2c1t_ext4.console.log.sh",
            "logs/debian-6.12_1s2c1t_ext4.console.html",
            "logs/debian-6.12_1s2c1t_ext4..log",
        ] {
            assert_eq!(RunDir::known_log(&boot, Path::new(bad)), None, "{bad}");
        }
    }

    /// The ownership checks only apply as root (and chown needs it): elsewhere the test fails
    /// under CI=true and says SKIPPED.
    fn as_root() -> bool {
        if rustix::process::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and not root: the ownership checks need root"
        );
        eprintln!("\n*** SKIPPED (not root: the ownership checks need root) ***\n");
        false
    }

    fn mkdir(p: &Path, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(p).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        p.to_path_buf()
    }

    #[test]
    fn as_root_only_roots_unwritable_directories_are_trusted() {
        if !as_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let good = mkdir(&tmp.path().join("good"), 0o755);
        check_trusted_dir("--out", &good).unwrap();
        // Not there yet: judged by what is above it.
        check_trusted_dir("--out", &good.join("new/runs")).unwrap();

        let other = mkdir(&tmp.path().join("other"), 0o755);
        std::os::unix::fs::chown(&other, Some(12345), None).unwrap();
        let e = check_trusted_dir("the cache directory", &other).unwrap_err();
        assert_eq!(
            (e.why, e.owner_mode),
            (Untrusted::NotRoots, Some((12345, 0o755)))
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("the cache directory {}", other.display()))
                && msg.contains("owner uid 12345, mode 0755")
                && msg.contains("not root's"),
            "{msg}"
        );
        // Below it, even a root-owned directory is not safe: the owner can swap it.
        let below = mkdir(&other.join("cache"), 0o755);
        let e = check_trusted_dir("the cache directory", &below).unwrap_err();
        assert_eq!(e.culprit, other);
        assert!(e
            .to_string()
            .contains(&format!("{}, above it,", other.display())));

        let group = mkdir(&tmp.path().join("group"), 0o775);
        let e = check_trusted_dir("--out", &group).unwrap_err();
        assert_eq!(
            (e.why, e.owner_mode),
            (Untrusted::Writable, Some((0, 0o775)))
        );
        assert!(e.to_string().contains("group- or other-writable"), "{e}");
    }

    #[test]
    fn as_root_world_writable_directories_above_must_be_sticky() {
        if !as_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let sticky = mkdir(&tmp.path().join("sticky"), 0o1777);
        let inside = mkdir(&sticky.join("runs"), 0o755);
        check_trusted_dir("--out", &inside).unwrap();
        // Missing: root will make it; whoever makes it checks it again.
        check_trusted_dir("--out", &sticky.join("later")).unwrap();
        // The sticky directory itself is everyone's.
        let e = check_trusted_dir("--out", &sticky).unwrap_err();
        assert_eq!(e.why, Untrusted::Writable);

        let open = mkdir(&tmp.path().join("open"), 0o777);
        let inside = mkdir(&open.join("runs"), 0o755);
        let e = check_trusted_dir("--out", &inside).unwrap_err();
        assert_eq!(
            (e.culprit.as_path(), e.why),
            (open.as_path(), Untrusted::WritableNotSticky)
        );
        let e = check_trusted_dir("--out", &open.join("later")).unwrap_err();
        assert_eq!(e.why, Untrusted::WritableNotSticky);
    }

    #[test]
    fn as_root_a_link_is_trusted_only_in_a_trusted_directory() {
        if !as_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let target = mkdir(&tmp.path().join("target"), 0o755);
        let holder = mkdir(&tmp.path().join("holder"), 0o777);
        let link = holder.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        // The link leads somewhere trusted, but anyone could point it elsewhere.
        let e = check_trusted_dir("--out", &link).unwrap_err();
        assert_eq!(e.culprit, holder);
        let safe = mkdir(&tmp.path().join("safe"), 0o755);
        std::os::unix::fs::symlink(&target, safe.join("link")).unwrap();
        check_trusted_dir("--out", &safe.join("link")).unwrap();
    }

    #[test]
    fn a_run_directory_is_not_made_in_an_untrusted_out() {
        if !as_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let out = mkdir(&tmp.path().join("runs"), 0o755);
        std::os::unix::fs::chown(&out, Some(12345), None).unwrap();
        let e = format!("{:#}", RunDir::create(&out, "r").unwrap_err());
        assert!(e.contains("--out") && e.contains("uid 12345"), "{e}");
        assert!(!out.join("r").exists());
    }
}
