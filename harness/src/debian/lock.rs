//! Lock files, like Cargo.lock: the exact Debian packages a recipe resolved to, pinned by
//! SHA-256. `kernels/kernels.lock` and `runtimes/runtimes.lock` say different things about
//! their packages, but are read, checked and written the same way ([`LockDocument`]); the
//! package itself is a [`LockedPackage`] in both.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::apt::PackageRecord;
use super::DebianError;
use crate::rundir::write_atomic;

/// One exact Debian package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    /// SHA-256 of the .deb, as the signed index states it.
    pub sha256: String,
    /// Path in the archive's pool, for humans and for fetching by hand.
    pub filename: String,
    pub size: u64,
}

impl From<PackageRecord> for LockedPackage {
    fn from(p: PackageRecord) -> LockedPackage {
        LockedPackage {
            name: p.package,
            version: p.version,
            sha256: p.sha256,
            filename: p.filename,
            size: p.size,
        }
    }
}

impl LockedPackage {
    /// `name=version`, as apt and the messages write it.
    pub fn spec(&self) -> String {
        format!("{}={}", self.name, self.version)
    }
}

/// What a command may do with a lock file beyond reading it: cargo's way with Cargo.lock.
///
/// Debian keeps only current versions in its archive: a point release or a security update
/// removes the version a lock pinned, and every fetch of it fails from then on. And a recipe
/// added to `kernels/` (or a `[[runtimes]]` entry added to a matrix) has no entry until someone
/// resolves it. What happens then is this policy's to say, in one place for every lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockPolicy {
    /// `--locked`, or `CI=true`: the lock file is the truth and is never written or moved. A
    /// recipe without an entry ([`DebianError::Unlocked`]), or an entry whose packages the
    /// archive no longer carries ([`DebianError::Dropped`]), is an error naming the command
    /// that fixes it.
    Locked(Frozen),
    /// The default outside CI. A missing entry is resolved on first use, written to the lock
    /// file atomically and said in one line. A locked package the archive dropped is replaced,
    /// for this run only, by what the archive carries now (still signature- and
    /// checksum-checked): said in the terminal, recorded in run.json and shown in the report;
    /// the lock stays as it is (`mmx kernels lock --update` moves it).
    UpdateMissing,
}

/// Who froze the lock files, as the messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frozen {
    /// `--locked` on the command line.
    Flag,
    /// `CI=true` in the environment (GitHub Actions and most CI systems set it): a CI run must
    /// test what the repository pins, or fail saying what to commit.
    Ci,
}

impl std::fmt::Display for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Frozen::Flag => "--locked",
            Frozen::Ci => "CI=true",
        })
    }
}

/// The archive no longer carries what a lock entry pins, and the lock is frozen: what the
/// entry pins and what the archive has, packages as `name=version`.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what}: {lock} pins {locked}, which the archive no longer carries (it has {available}); \
     {frozen} forbids running another version: run `{fix}` and commit {lock}",
    lock = lock.display()
)]
pub struct Dropped {
    /// `kernel `debian-6.1``.
    pub what: String,
    pub lock: std::path::PathBuf,
    pub locked: String,
    pub available: String,
    pub frozen: Frozen,
    pub fix: String,
}

/// Whether this is a CI run: `CI=true`, as GitHub Actions sets it (the tests read it the same
/// way).
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

impl LockPolicy {
    /// `--locked` (when `locked`) or `CI=true` freeze the lock files; otherwise missing
    /// entries are written and dropped packages substituted, loudly.
    pub fn new(locked: bool) -> LockPolicy {
        if locked {
            LockPolicy::Locked(Frozen::Flag)
        } else if in_ci() {
            LockPolicy::Locked(Frozen::Ci)
        } else {
            LockPolicy::UpdateMissing
        }
    }

    /// The policy of a call without `--locked`: frozen under `CI=true`.
    pub fn from_env() -> LockPolicy {
        LockPolicy::new(false)
    }
}

/// A lock file: TOML with a format `version`, a generated header, and a command that writes
/// it. Loading, checking and saving are the same for every kind.
pub trait LockDocument: Serialize + DeserializeOwned + Default {
    /// The file's name: `kernels.lock`.
    const NAME: &'static str;
    /// The format version this mmx writes and reads.
    const VERSION: u32;
    /// The comment the file starts with.
    const HEADER: &'static str;
    /// The command that rewrites the file, named in every error about it.
    const REGENERATE: &'static str;

    /// The version the file declares.
    fn version(&self) -> u32;

    /// Read the lock file; a missing file is an empty lock (nothing resolved yet).
    fn load(path: &Path) -> Result<Self, DebianError> {
        match fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(DebianError::io("read", path, e)),
        }
    }

    /// Parse `text` (read from `path`, which errors name with the line).
    fn parse(path: &Path, text: &str) -> Result<Self, DebianError> {
        let bad = |line: usize, message: String| DebianError::Lock {
            file: path.to_path_buf(),
            line,
            message,
            regenerate: Self::REGENERATE,
        };
        let lock: Self = toml::from_str(text).map_err(|e| {
            bad(
                line_of(text, e.span().map_or(0, |s| s.start)),
                e.message().trim().to_string(),
            )
        })?;
        if lock.version() != Self::VERSION {
            return Err(bad(
                1,
                format!(
                    "lock file version {} (this mmx writes {})",
                    lock.version(),
                    Self::VERSION
                ),
            ));
        }
        Ok(lock)
    }

    /// The file's text: the header, then the TOML.
    fn to_toml(&self) -> Result<String, DebianError> {
        let body = toml::to_string(self).map_err(|e| DebianError::Serialize {
            what: Self::NAME,
            detail: e.to_string(),
        })?;
        Ok(format!("{}{body}", Self::HEADER))
    }

    /// Write the file atomically, making its directory (0755) when there is none yet: the
    /// first lock of a repository may come before `runtimes/` does.
    fn save(&self, path: &Path) -> Result<(), DebianError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| DebianError::io("create directory", dir, e))?;
        }
        Ok(write_atomic(path, self.to_toml()?.as_bytes())?)
    }
}

/// A lock file's path as a message shows it: relative to the working directory when it is
/// under it (`kernels/kernels.lock`), else as it is.
pub fn shown(path: &Path) -> &Path {
    let here = std::env::current_dir().ok();
    here.as_deref()
        .and_then(|h| path.strip_prefix(h).ok())
        .or_else(|| path.strip_prefix(".").ok())
        .unwrap_or(path)
}

/// The 1-based line of byte `offset` in `text`: where a TOML error points (lock files, and the
/// recipes beside them).
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        version: u32,
        #[serde(default, rename = "package")]
        packages: Vec<LockedPackage>,
    }

    impl Default for Doc {
        fn default() -> Self {
            Doc {
                version: 1,
                packages: Vec::new(),
            }
        }
    }

    impl LockDocument for Doc {
        const NAME: &'static str = "test.lock";
        const VERSION: u32 = 1;
        const HEADER: &'static str = "# test lock\n\n";
        const REGENERATE: &'static str = "mmx test lock";
        fn version(&self) -> u32 {
            self.version
        }
    }

    fn pkg() -> LockedPackage {
        LockedPackage {
            name: "p".into(),
            version: "1-1".into(),
            sha256: "ab".into(),
            filename: "pool/main/p/p_1-1_amd64.deb".into(),
            size: 3,
        }
    }

    #[test]
    fn one_loader_for_every_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("test.lock");
        assert_eq!(Doc::load(&p).unwrap(), Doc::default());
        let doc = Doc {
            packages: vec![pkg()],
            ..Doc::default()
        };
        doc.save(&p).unwrap();
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("# test lock\n"), "{text}");
        assert_eq!(Doc::load(&p).unwrap(), doc);

        let err = Doc::parse(&p, "version = 9\n").unwrap_err().to_string();
        assert!(
            err.contains("version 9") && err.contains("mmx test lock"),
            "{err}"
        );
        let err = Doc::parse(&p, "version = 1\n[[package]]\nname = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("test.lock:3"), "{err}");
    }

    #[test]
    fn the_first_save_makes_the_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("runtimes/test.lock");
        Doc::default().save(&p).unwrap();
        assert_eq!(Doc::load(&p).unwrap(), Doc::default());
        let mode = fs::metadata(dir.path().join("runtimes"))
            .unwrap()
            .permissions()
            .mode();
        // 0755 asked for: whatever the umask, nobody else may write where the lock lives.
        assert_eq!(mode & 0o022, 0, "{mode:o}");
    }

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a", 99), 1);
    }
}
