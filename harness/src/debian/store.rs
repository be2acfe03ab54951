//! Getting locked packages: [`download`] fetches them through the private apt into a
//! directory and checks each against the SHA-256 its lock pins; [`fetch`] keeps them in a
//! content-addressed store (`<cache>/debs/<sha256>.deb`), so a rebuild with other patches is
//! offline. Unpacking one is `super::extract`'s.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::apt::Apt;
use super::deb::Deb;
use super::{Cache, DebianError, LockedPackage};

/// Download `packages` into `into` through the private apt (under its lock) and open each,
/// checked against its lock entry. Lists older than the lock do not know its versions, so a
/// failed download refreshes them once and tries again; `relock` (`mmx kernels lock`) is what
/// the error then tells the user to run. Returns the packages in the order given.
pub fn download(
    packages: &[&LockedPackage],
    cache: &Cache,
    into: &Path,
    relock: &str,
) -> Result<Vec<Deb>, DebianError> {
    let wanted: Vec<(&str, &str)> = packages
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    let paths = {
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
    paths
        .iter()
        .zip(packages)
        .map(|(path, p)| Deb::open_verified(path, p))
        .collect()
}

/// Every package's `.deb` from the store, downloading what it lacks. A stored `.deb` is checked
/// against its lock entry at every use, not only when it was downloaded: one whose bytes
/// changed since is refused, naming both SHA-256s, and left for the user to look at (remove it
/// and the next use downloads it again). Returns the packages in the order given and the time
/// spent downloading (zero when everything was stored).
pub fn fetch(
    packages: &[LockedPackage],
    cache: &Cache,
    relock: &str,
) -> Result<(Vec<Deb>, Duration), DebianError> {
    let start = Instant::now();
    let store = cache.dir("debs")?;
    let stored = |p: &LockedPackage| store.join(format!("{}.deb", p.sha256.to_ascii_lowercase()));
    let mut debs = Vec::with_capacity(packages.len());
    let mut missing = Vec::new();
    for p in packages {
        let path = stored(p);
        if !path.is_file() {
            missing.push(p);
            debs.push(None);
            continue;
        }
        match Deb::open_verified(&path, p) {
            Ok(deb) => debs.push(Some(deb)),
            Err(DebianError::Checksum {
                package,
                expected,
                found,
            }) => {
                return Err(DebianError::StoredChanged {
                    deb: path,
                    package,
                    expected,
                    found,
                })
            }
            Err(e) => return Err(e),
        }
    }
    if missing.is_empty() {
        return Ok((debs.into_iter().flatten().collect(), Duration::ZERO));
    }
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(&store)
        .map_err(|e| DebianError::io("create temp dir in", &store, e))?;
    let mut fresh = download(&missing, cache, tmp.path(), relock)?.into_iter();
    for slot in debs.iter_mut().filter(|d| d.is_none()) {
        let Some(deb) = fresh.next() else { break };
        let p = missing.remove(0);
        let to = stored(p);
        fs::rename(deb.path(), &to).map_err(|e| DebianError::io("rename", &to, e))?;
        *slot = Some(deb.moved_to(to));
    }
    let debs: Vec<Deb> = debs.into_iter().flatten().collect();
    if debs.len() != packages.len() {
        return Err(DebianError::Apt {
            op: format!("download into {}", store.display()),
            detail: "apt returned fewer packages than asked for".into(),
        });
    }
    Ok((debs, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::deb::{deb_of_tar, sha256_file};
    use crate::debian::extract::extract_deb;

    /// A store holding one package (a .deb with `go/x.go`), as a download leaves it.
    fn stored(dir: &Path) -> (Cache, LockedPackage, std::path::PathBuf) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "./go/x.go", &b"go"[..]).unwrap();
        let deb = deb_of_tar(dir, tar.into_inner().unwrap());
        let sha256 = sha256_file(deb.path()).unwrap();
        let cache = Cache::at(dir.join("cache"));
        let path = cache.dir("debs").unwrap().join(format!("{sha256}.deb"));
        fs::copy(deb.path(), &path).unwrap();
        let package = LockedPackage {
            name: "golang-x-dev".into(),
            version: "1-1".into(),
            sha256,
            filename: "pool/main/g/golang-x-dev_1-1_all.deb".into(),
            size: 0,
        };
        (cache, package, path)
    }

    #[test]
    fn a_stored_deb_is_checked_at_every_use_and_refused_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, package, path) = stored(dir.path());
        // In the store: no download (apt is never asked), and it reads.
        let (debs, took) = fetch(std::slice::from_ref(&package), &cache, "mmx x lock").unwrap();
        assert_eq!(took, Duration::ZERO);
        assert_eq!(debs[0].path(), path);
        extract_deb(&debs[0], &dir.path().join("out"), |p| Some(p.into())).unwrap();
        assert_eq!(fs::read(dir.path().join("out/go/x.go")).unwrap(), b"go");

        // Someone changes its bytes after the download.
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(b"tampered");
        fs::write(&path, &bytes).unwrap();
        let actual = sha256_file(&path).unwrap();
        let err = fetch(std::slice::from_ref(&package), &cache, "mmx x lock").unwrap_err();
        assert!(
            matches!(&err, DebianError::StoredChanged { found, expected, .. }
                if *found == actual && *expected == package.sha256),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&path.display().to_string())
                && msg.contains(&actual)
                && msg.contains(&package.sha256)
                && msg.contains("golang-x-dev=1-1"),
            "{msg}"
        );
        // Left where it is, for the user to look at: not silently downloaded again.
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn what_is_read_is_what_was_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, package, path) = stored(dir.path());
        let (debs, _) = fetch(std::slice::from_ref(&package), &cache, "mmx x lock").unwrap();
        // Replaced after the check (a new file renamed over it): the reader keeps the checked one.
        let other = dir.path().join("other.deb");
        fs::write(&other, b"not a deb").unwrap();
        fs::rename(&other, &path).unwrap();
        extract_deb(&debs[0], &dir.path().join("out"), |p| Some(p.into())).unwrap();
        assert_eq!(fs::read(dir.path().join("out/go/x.go")).unwrap(), b"go");
    }
}
