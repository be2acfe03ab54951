//! Debian packages, for whoever needs them: kernels (`kernels/`) and runtime builds
//! (`runtimes/`) both come from Debian's archive, pinned by SHA-256 in a lock file.
//!
//! One file each: [`apt`] (a private, signature-checked apt: resolve and download), [`lock`]
//! (the pinned package, and loading and saving a lock file of either kind), [`deb`] (reading a
//! `.deb`: ar, xz, tar), [`extract`] (unpacking a tar beneath a directory and nowhere else),
//! [`store`] (downloads, and the content-addressed store of `.deb`s, each checked against its
//! lock entry at every use), and [`cache`] (the cache directory, its locks and keys).
//!
//! A ground-floor room: it knows nothing about kernels, runtimes or runs, and imports only
//! `protocol` and the other ground rooms (`rundir` for safe writes and the trusted-directory
//! check).

use std::path::PathBuf;

use crate::rundir::{IoError, UntrustedDir};

pub mod apt;
pub mod cache;
pub mod deb;
pub mod extract;
pub mod lock;
pub mod store;

pub use apt::Apt;
pub use cache::Cache;
pub use deb::Deb;
pub use lock::{in_ci, Dropped, Frozen, LockDocument, LockPolicy, LockedPackage};

/// Everything that can go wrong with Debian packages. Messages name the file, package or
/// command.
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error(transparent)]
    Io(#[from] IoError),
    /// As root: a directory someone else could write (the cache, apt's).
    #[error(transparent)]
    Untrusted(#[from] UntrustedDir),
    #[error("no cache directory: set MMX_CACHE_DIR, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    /// apt could not run, or failed: the one error a caller may answer by resolving the recipe
    /// again ([`LockPolicy`]).
    #[error("{op} failed: {detail}")]
    Apt { op: String, detail: String },
    #[error("{deb}: {detail}", deb = deb.display())]
    Deb { deb: PathBuf, detail: String },
    /// An archive entry refused or not written, named with its archive.
    #[error("{archive}: entry {entry}: {detail}")]
    Extract {
        archive: String,
        entry: String,
        detail: String,
    },
    #[error("{package}: SHA-256 is {found}, the lock file pins {expected}")]
    Checksum {
        package: String,
        expected: String,
        found: String,
    },
    #[error("serializing {what}: {detail}")]
    Serialize { what: &'static str, detail: String },
    /// A `.deb` in the store no longer has the bytes it was stored with.
    #[error(
        "{deb}: the stored {package} changed after it was downloaded: SHA-256 is {found}, the \
         lock file pins {expected}; refusing it (remove the file to download it again)",
        deb = deb.display()
    )]
    StoredChanged {
        deb: PathBuf,
        package: String,
        expected: String,
        found: String,
    },
    /// A recipe without a lock entry, and a policy that forbids writing one
    /// ([`LockPolicy::Locked`]). `what` names the recipes: `kernel `debian-6.12-generic``.
    #[error(
        "{lock} has no entry for {what}, and {frozen} forbids writing one; run `{fix}` and \
         commit {lock}",
        lock = lock.display()
    )]
    Unlocked {
        what: String,
        lock: PathBuf,
        frozen: Frozen,
        fix: String,
    },
    /// The archive no longer carries what a lock entry pins, and a policy that forbids running
    /// anything else ([`LockPolicy::Locked`]).
    #[error(transparent)]
    Dropped(Box<Dropped>),
    /// A lock file that does not parse, or was written by another version of mmx.
    #[error("{file}:{line}: {message}; regenerate it with `{regenerate}`", file = file.display())]
    Lock {
        file: PathBuf,
        line: usize,
        message: String,
        regenerate: &'static str,
    },
}

impl DebianError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        DebianError::Io(IoError::new(op, path, source))
    }
}
