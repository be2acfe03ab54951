//! Lock files, like Cargo.lock: the exact Debian packages a recipe resolved to, pinned by
//! SHA-256. `kernels/kernels.lock` and `runtimes/runtimes.lock` say different things about
//! their packages, but are read, checked and written the same way ([`LockDocument`]); the
//! package itself is a [`LockedPackage`] in both.

use std::fs;
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

/// What to do when the archive no longer carries a locked package.
///
/// Debian keeps only current versions in its archive: a point release or a security update
/// removes the version a lock pinned, and every fetch of it fails from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockPolicy {
    /// Fail, telling the user to lock again (release gating wants this).
    Strict,
    /// Resolve the recipe again, use the current packages (still signature- and
    /// checksum-checked), and say so loudly; the provenance records the versions used.
    FollowArchive,
}

impl LockPolicy {
    /// `VAR=strict` makes drift an error; anything else follows the archive.
    pub fn from_env(var: &str) -> LockPolicy {
        match std::env::var(var).as_deref() {
            Ok("strict") => LockPolicy::Strict,
            _ => LockPolicy::FollowArchive,
        }
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

    /// Write the file atomically.
    fn save(&self, path: &Path) -> Result<(), DebianError> {
        Ok(write_atomic(path, self.to_toml()?.as_bytes())?)
    }
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
    fn lines_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a", 99), 1);
    }
}
