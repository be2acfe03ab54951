//! Getting locked packages: [`download`] fetches them through the private apt into a
//! directory and checks each against the SHA-256 its lock pins; [`fetch`] keeps them in a
//! content-addressed store (`<cache>/debs/<sha256>.deb`), so a rebuild with other patches is
//! offline. [`extract`] unpacks one (never installs it) with its modes and symbolic links.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use super::apt::Apt;
use super::deb::{entry_path, with_data_tar};
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

/// Extract the entries of `deb` that `place` maps to a path below `dest` (None: skip). Regular
/// files keep their permission bits, directories are made, symbolic links are kept when they
/// stay inside `dest` (an absolute target is mapped through `place` too), hard links are
/// copied.
pub fn extract(
    deb: &Path,
    dest: &Path,
    place: impl Fn(&str) -> Option<PathBuf>,
) -> Result<(), DebianError> {
    let bad = |detail: String| DebianError::Deb {
        deb: deb.to_path_buf(),
        detail,
    };
    with_data_tar(deb, |tar| {
        let entries = tar.entries().map_err(|e| bad(e.to_string()))?;
        let mut result = Ok(());
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(e.to_string()))?;
            let path = entry_path(deb, &entry)?;
            let Some(rel) = place(path.trim_end_matches('/')) else {
                continue;
            };
            if !is_plain_relative(&rel) {
                result = Err(bad(format!("entry {path} leaves the extraction root")));
                break;
            }
            let out = dest.join(&rel);
            let kind = entry.header().entry_type();
            let step = (|| -> Result<(), DebianError> {
                if let Some(parent) = out.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| DebianError::io("create_dir_all", parent, e))?;
                }
                if kind.is_dir() {
                    fs::create_dir_all(&out).map_err(|e| DebianError::io("create_dir_all", &out, e))
                } else if kind.is_file() {
                    let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
                    let mut f =
                        fs::File::create(&out).map_err(|e| DebianError::io("create", &out, e))?;
                    io::copy(&mut entry, &mut f).map_err(|e| DebianError::io("write", &out, e))?;
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&out, fs::Permissions::from_mode(mode | 0o600))
                        .map_err(|e| DebianError::io("chmod", &out, e))
                } else if kind.is_symlink() || kind.is_hard_link() {
                    let target = entry
                        .link_name()
                        .ok()
                        .flatten()
                        .ok_or_else(|| bad(format!("link {path} without a target")))?
                        .into_owned();
                    link(&rel, &target, kind.is_hard_link(), dest, &place).map_err(|detail| {
                        bad(format!("link {path} -> {}: {detail}", target.display()))
                    })
                } else {
                    Ok(())
                }
            })();
            if let Err(e) = step {
                result = Err(e);
                break;
            }
        }
        Ok::<_, DebianError>(result)
    })?
}

/// Make the link at `rel` (below `dest`). A symlink's relative target must stay below `dest`;
/// an absolute one (`/usr/share/…`) is mapped through `place` and made relative.
fn link(
    rel: &Path,
    target: &Path,
    hard: bool,
    dest: &Path,
    place: &impl Fn(&str) -> Option<PathBuf>,
) -> Result<(), String> {
    let parent = rel.parent().unwrap_or(Path::new(""));
    let resolved = if target.is_absolute() {
        let t = target.to_string_lossy();
        place(t.trim_start_matches('/')).ok_or("the target is outside what is extracted")?
    } else if hard {
        // Tar hard links name the archive path of the file they share.
        let t = target.to_string_lossy();
        place(t.trim_start_matches("./").trim_start_matches('/'))
            .ok_or("the target is outside what is extracted")?
    } else {
        normalize(&parent.join(target)).ok_or("the target leaves the extraction root")?
    };
    let out = dest.join(rel);
    let _ = fs::remove_file(&out);
    if hard {
        return fs::copy(dest.join(&resolved), &out)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    let up = parent.components().count();
    let mut relative = PathBuf::new();
    for _ in 0..up {
        relative.push("..");
    }
    relative.push(&resolved);
    std::os::unix::fs::symlink(&relative, &out).map_err(|e| e.to_string())
}

/// `a/b/../c` → `a/c`; None when `..` climbs above the start.
fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn is_plain_relative(p: &Path) -> bool {
    p.components().all(|c| matches!(c, Component::Normal(_))) && p.components().next().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A .deb with a file, a directory, a relative link, an absolute link and a hard link.
    fn deb(dir: &Path) -> PathBuf {
        let mut tar = tar::Builder::new(Vec::new());
        let mut dir_h = tar::Header::new_gnu();
        dir_h.set_entry_type(tar::EntryType::Directory);
        dir_h.set_mode(0o755);
        dir_h.set_size(0);
        dir_h.set_cksum();
        tar.append_data(&mut dir_h, "./usr/share/gocode/src/b/", io::empty())
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o755);
        h.set_cksum();
        tar.append_data(&mut h, "./usr/share/gocode/src/b/x.go", &b"go"[..])
            .unwrap();
        for (name, target, kind) in [
            (
                "./usr/share/gocode/src/a/rel",
                "../b",
                tar::EntryType::Symlink,
            ),
            (
                "./usr/share/gocode/src/a/abs",
                "/usr/share/gocode/src/b/x.go",
                tar::EntryType::Symlink,
            ),
            (
                "./usr/share/gocode/src/a/hard.go",
                "./usr/share/gocode/src/b/x.go",
                tar::EntryType::Link,
            ),
            (
                "./usr/share/gocode/src/a/out",
                "../../../../../etc",
                tar::EntryType::Symlink,
            ),
        ] {
            let mut l = tar::Header::new_gnu();
            l.set_entry_type(kind);
            l.set_size(0);
            l.set_mode(0o777);
            tar.append_link(&mut l, name, target).unwrap();
        }
        crate::debian::deb::deb_of_tar(dir, tar.into_inner().unwrap())
    }

    fn gocode(p: &str) -> Option<PathBuf> {
        p.strip_prefix("usr/share/gocode/src/")
            .filter(|r| !r.is_empty())
            .map(PathBuf::from)
    }

    #[test]
    fn extracts_files_and_links_inside_the_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = deb(dir.path());
        let dest = dir.path().join("src");
        let err = extract(&d, &dest, gocode).unwrap_err().to_string();
        // The escaping link is refused, naming it; everything before it is in place.
        assert!(
            err.contains("a/out") && err.contains("leaves the extraction root"),
            "{err}"
        );
        assert_eq!(fs::read(dest.join("b/x.go")).unwrap(), b"go");
        assert_eq!(fs::read(dest.join("a/rel/x.go")).unwrap(), b"go");
        assert_eq!(
            fs::read_link(dest.join("a/abs")).unwrap(),
            PathBuf::from("../b/x.go")
        );
        assert_eq!(fs::read(dest.join("a/abs")).unwrap(), b"go");
        assert_eq!(fs::read(dest.join("a/hard.go")).unwrap(), b"go");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dest.join("b/x.go"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn normalize_stays_below_the_start() {
        assert_eq!(normalize(Path::new("a/b/../c")), Some(PathBuf::from("a/c")));
        assert_eq!(normalize(Path::new("a/../../c")), None);
        assert!(!is_plain_relative(Path::new("../x")));
        assert!(!is_plain_relative(Path::new("")));
        assert!(is_plain_relative(Path::new("a/b")));
    }
}
