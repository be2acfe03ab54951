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
//!
//! [`IoError`] is the one shape of a failed file operation: the call, the path, the error.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;

use crate::cell::BootKey;

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
    pub fn create(base: &Path, run_id: &str) -> anyhow::Result<RunDir> {
        check_run_id(run_id)?;
        std::fs::create_dir_all(base)
            .with_context(|| format!("creating the runs directory {}", base.display()))?;
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
        let flat: String = boot
            .to_string()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        PathBuf::from("logs").join(format!("{flat}.{channel}.log"))
    }

    pub fn abs(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// Open (create or truncate) a log for writing, never through a symlink.
    pub fn create_log(&self, rel: &Path) -> anyhow::Result<File> {
        create_nofollow(&self.abs(rel))
    }
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
}
