//! The download and build cache: `$MMX_CACHE_DIR`, else `$XDG_CACHE_HOME/mmx`, else
//! `$HOME/.cache/mmx`.
//!
//! Layout (everything below the root is ours to delete):
//! ```text
//! apt/                 private apt configuration, lists and package cache
//! kernels/<key>/       one extracted kernel: vmlinuz, config, modules/, kernel.json
//! initramfs/<key>.cpio base initramfs archives
//! locks/<name>.lock    flock(2) files
//! ```
//! Concurrent runs share it safely: whoever fills an entry holds an exclusive `flock` on the
//! entry's lock file and publishes the entry with one `rename`, so readers either see a
//! complete entry or none and never need a lock on the warm path.
//!
//! As root, the cache must be root's and writable by no one else, nor may anything above it
//! be ([`crate::rundir::check_trusted_dir`]): kernels, runtimes and apt's configuration come
//! out of it and run as root.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use super::DebianError;
use crate::rundir::check_trusted_dir;

/// Environment variable that overrides the cache location.
pub const CACHE_ENV: &str = "MMX_CACHE_DIR";

/// A cache root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache the environment asks for (see the module doc), made when missing; as root,
    /// refused (before anything is made) unless it is trusted.
    pub fn from_env() -> Result<Cache, DebianError> {
        // HOME from the environment, never from NSS (getpwuid): works in static and odd setups.
        let from = |var: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let root = from(CACHE_ENV)
            .or_else(|| from("XDG_CACHE_HOME").map(|x| x.join("mmx")))
            .or_else(|| from("HOME").map(|h| h.join(".cache").join("mmx")))
            .ok_or(DebianError::NoCacheDir)?;
        trusted_dir("the cache directory", &root)?;
        Ok(Cache { root })
    }

    /// A cache at an explicit root (tests, `--cache-dir`).
    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A subdirectory of the root, created on demand.
    pub fn dir(&self, name: &str) -> Result<PathBuf, DebianError> {
        let dir = self.root.join(name);
        make_dir(&dir)?;
        Ok(dir)
    }

    /// Take the exclusive lock `name`, waiting for whoever holds it. Released on drop.
    pub fn lock(&self, name: &str) -> Result<CacheLock, DebianError> {
        let path = self.dir("locks")?.join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| DebianError::io("open", &path, e))?;
        flock(&file, FlockOperation::LockExclusive)
            .map_err(|e| DebianError::io("flock(LOCK_EX)", &path, e.into()))?;
        Ok(CacheLock { _file: file })
    }
}

/// An exclusive `flock` on a cache lock file; the kernel drops it when the file closes, even if
/// the process dies.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

/// A short, stable cache key: blake3 over length-prefixed parts (so `["ab","c"]` and `["a","bc"]`
/// differ), first 16 bytes in hex.
pub fn key(parts: &[&[u8]]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize().as_bytes()[..16])
}

/// `mkdir -p` with mode 0755 whatever the umask: nothing in the cache is anyone else's to
/// write (and as root a group-writable directory would be refused).
pub(crate) fn make_dir(dir: &Path) -> Result<(), DebianError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| DebianError::io("create_dir_all", dir, e))
}

/// As root, refuse `dir` unless it is trusted; then make it (0755) and check what was made:
/// someone may have made it first.
pub(crate) fn trusted_dir(what: &'static str, dir: &Path) -> Result<(), DebianError> {
    check_trusted_dir(what, dir)?;
    make_dir(dir)?;
    Ok(check_trusted_dir(what, dir)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_unambiguous() {
        assert_eq!(key(&[b"a"]), key(&[b"a"]));
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
        assert_eq!(key(&[b"x"]).len(), 32);
    }

    #[test]
    fn lock_is_exclusive_between_holders() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let held = cache.lock("k").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let c2 = cache.clone();
        let t = std::thread::spawn(move || {
            // A second open file description: flock treats it as another holder.
            let _l = c2.lock("k").unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        t.join().unwrap();
    }
}
