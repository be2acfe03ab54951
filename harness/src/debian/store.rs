//! Getting locked packages: [`download`] fetches them through the private apt into a
//! directory and checks each against the SHA-256 its lock pins; [`fetch`] keeps them in a
//! content-addressed store (`<cache>/debs/<sha256>.deb`), so a rebuild with other patches is
//! offline. Unpacking one is `super::extract`'s.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::apt::Apt;
use super::{Cache, DebianError, LockedPackage};

/// Download `packages` into `into` through the private apt (under its lock) and check each
/// against its lock entry. Lists older than the lock do not know its versions, so a failed
/// download refreshes them once and tries again; `relock` (`mmx kernels lock`) is what the
/// error then tells the user to run. Returns the paths in the order given.
pub fn download(
    packages: &[&LockedPackage],
    cache: &Cache,
    into: &Path,
    relock: &str,
) -> Result<Vec<PathBuf>, DebianError> {
    let wanted: Vec<(&str, &str)> = packages
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    let debs = {
        let _apt_lock = cache.lock("apt")?;
        let apt = Apt::new(cache)?;
        if !apt.has_lists() {
            apt.update()?;
        }
        match apt.download(&wanted, into) {
            Ok(d) => d,
            Err(_) => {
                apt.update()?;
                apt.download(&wanted, into).map_err(|e| {
                    let specs: Vec<String> = packages.iter().map(|p| p.spec()).collect();
                    DebianError::Apt {
                        op: format!("download {}", specs.join(", ")),
                        detail: format!(
                            "{e}. If the archive dropped these versions, move to the current ones with `{relock}`"
                        ),
                    }
                })?
            }
        }
    };
    for (deb, p) in debs.iter().zip(packages) {
        p.verify(deb)?;
    }
    Ok(debs)
}

/// The verified `.deb` of every package, downloading what the store lacks. Returns the paths in
/// the order given and the time spent downloading (zero when everything was stored).
pub fn fetch(
    packages: &[LockedPackage],
    cache: &Cache,
    relock: &str,
) -> Result<(Vec<PathBuf>, Duration), DebianError> {
    let start = Instant::now();
    let store = cache.dir("debs")?;
    let stored = |p: &LockedPackage| store.join(format!("{}.deb", p.sha256.to_ascii_lowercase()));
    let missing: Vec<&LockedPackage> = packages.iter().filter(|p| !stored(p).is_file()).collect();
    if !missing.is_empty() {
        let tmp = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(&store)
            .map_err(|e| DebianError::io("create temp dir in", &store, e))?;
        let debs = download(&missing, cache, tmp.path(), relock)?;
        for (deb, p) in debs.iter().zip(&missing) {
            let to = stored(p);
            fs::rename(deb, &to).map_err(|e| DebianError::io("rename", &to, e))?;
        }
    }
    let download = if missing.is_empty() {
        Duration::ZERO
    } else {
        start.elapsed()
    };
    Ok((packages.iter().map(stored).collect(), download))
}
