//! Unpacking a tar archive (a `.deb`'s data, `git archive`'s output) into a directory, and
//! nowhere else. The one way mmx writes an archive's entries to disk.
//!
//! Checking names is not enough: an archive can make a symbolic link and then put a file
//! *through* it (`a -> ..`, then `a/evil`), or chain links that each look harmless
//! (`d/b -> ..`, then `d/b/c -> ..`, then `d/b/c/evil`, one level above the destination). So
//! every file, directory and link is created relative to a directory descriptor that was opened
//! with `openat2(RESOLVE_BENEATH)` from the destination: the kernel refuses any resolution that
//! would leave it, whatever links earlier entries (or anyone else) left there. Where openat2 is
//! missing (Linux before 5.6) each component is opened on its own with `O_NOFOLLOW`, which
//! refuses every symbolic link on the way, inside or not.
//!
//! On top of that, the names themselves: an absolute path or a `..` component is refused, a
//! symbolic link whose target leaves the destination (read from where the link really is: its
//! directory is opened with `RESOLVE_NO_SYMLINKS` too) is refused, and a hard link is a copy of
//! a file opened beneath the destination. A refusal names the archive and the entry, and stops
//! the extraction.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{fchmod, fstat, mkdirat, openat, openat2, symlinkat, unlinkat};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::deb::{with_data_tar, Deb};
use super::DebianError;

/// Extract the entries of `deb`'s data archive that `place` maps to a path below `dest` (None:
/// skip). See [`extract_tar`].
pub fn extract_deb(
    deb: &Deb,
    dest: &Path,
    place: impl Fn(&str) -> Option<PathBuf>,
) -> Result<(), DebianError> {
    let name = deb.path().display().to_string();
    with_data_tar(deb, |tar| extract_tar(&name, tar, dest, place))
}

/// Extract the entries of `tar` that `place` maps to a path below `dest` (None: skip); `place`
/// gets the entry's path without a leading `./` or trailing `/`. Regular files keep their
/// permission bits (at most 0755, at least 0600), directories are made, symbolic links are
/// kept when they stay inside `dest` (an absolute target is mapped through `place` too), hard
/// links are copied. `archive` names the archive in errors.
pub fn extract_tar<R: Read>(
    archive: &str,
    tar: &mut tar::Archive<R>,
    dest: &Path,
    place: impl Fn(&str) -> Option<PathBuf>,
) -> Result<(), DebianError> {
    extract_with(archive, tar, dest, place, Resolution::detect())
}

/// How paths below the destination are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolution {
    /// `openat2(RESOLVE_BENEATH)`: links that stay inside are followed.
    Beneath,
    /// One component at a time with `O_NOFOLLOW`: no link is followed at all.
    Walk,
}

impl Resolution {
    /// openat2 when the kernel has it.
    fn detect() -> Resolution {
        match openat2(
            rustix::fs::CWD,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH,
        ) {
            Err(Errno::NOSYS) => Resolution::Walk,
            _ => Resolution::Beneath,
        }
    }
}

fn extract_with<R: Read>(
    archive: &str,
    tar: &mut tar::Archive<R>,
    dest: &Path,
    place: impl Fn(&str) -> Option<PathBuf>,
    how: Resolution,
) -> Result<(), DebianError> {
    let refuse = |entry: &str, detail: String| DebianError::Extract {
        archive: archive.to_string(),
        entry: entry.to_string(),
        detail,
    };
    let unreadable = |e: io::Error| refuse("(archive)", format!("reading the archive: {e}"));
    super::cache::make_dir(dest)?;
    let root = Root::open(dest, how).map_err(|e| DebianError::io("open", dest, e))?;
    for entry in tar.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let raw = entry
            .path()
            .map_err(|e| refuse("(unnamed)", format!("entry path: {e}")))?
            .to_string_lossy()
            .into_owned();
        let path = checked_name(&raw).map_err(|detail| refuse(&raw, detail))?;
        let Some(rel) = (!path.is_empty()).then(|| place(path)).flatten() else {
            continue;
        };
        if !is_plain_relative(&rel) {
            return Err(refuse(&raw, "it leaves the extraction root".to_string()));
        }
        let kind = entry.header().entry_type();
        let done = if kind.is_dir() {
            root.dir(&rel, false).map(drop).map_err(|e| why(e, dest))
        } else if kind.is_file() {
            let mode = entry.header().mode().unwrap_or(0o644);
            root.file(&rel, mode, &mut entry).map_err(|e| why(e, dest))
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .ok_or_else(|| refuse(&raw, "a link without a target".into()))?
                .into_owned();
            let made = if kind.is_hard_link() {
                hard_link_source(&target, &place)
                    .and_then(|from| root.copy(&from, &rel).map_err(|e| why(e, dest)))
            } else {
                symlink_target(&rel, &target, &place)
                    .and_then(|to| root.symlink(&to, &rel).map_err(|e| why(e, dest)))
            };
            made.map_err(|detail| format!("link to {}: {detail}", target.display()))
        } else {
            // Devices, fifos, pax headers: nothing a build needs.
            Ok(())
        };
        done.map_err(|detail| refuse(&raw, detail))?;
    }
    Ok(())
}

/// An entry's name without a leading `./` or a trailing `/`; an absolute name or one with a
/// `..` component is refused. Empty for the archive's root (`./`).
fn checked_name(raw: &str) -> Result<&str, String> {
    if raw.starts_with('/') {
        return Err("an absolute path".into());
    }
    if Path::new(raw)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err("a `..` component".into());
    }
    let mut name = raw;
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    Ok(name.trim_end_matches('/'))
}

/// Where a hard link's copy comes from: the archive path it names, placed like any entry.
fn hard_link_source(
    target: &Path,
    place: &impl Fn(&str) -> Option<PathBuf>,
) -> Result<PathBuf, String> {
    let t = target.to_string_lossy();
    let name = checked_name(&t)?;
    match place(name) {
        Some(p) if is_plain_relative(&p) => Ok(p),
        Some(_) => Err("the target leaves the extraction root".into()),
        None => Err("the target is outside what is extracted".into()),
    }
}

/// What a symbolic link at `rel` should hold: a relative target must stay below the root from
/// where the link is; an absolute one (`/usr/share/…`) is mapped through `place` and made
/// relative.
fn symlink_target(
    rel: &Path,
    target: &Path,
    place: &impl Fn(&str) -> Option<PathBuf>,
) -> Result<PathBuf, String> {
    let parent = rel.parent().unwrap_or(Path::new(""));
    let resolved = if target.is_absolute() {
        let t = target.to_string_lossy();
        place(t.trim_start_matches('/'))
            .filter(|p| is_plain_relative(p))
            .ok_or("the target is outside what is extracted")?
    } else {
        normalize(&parent.join(target)).ok_or("the target leaves the extraction root")?
    };
    let mut relative = PathBuf::new();
    for _ in parent.components() {
        relative.push("..");
    }
    relative.push(&resolved);
    Ok(relative)
}

/// What went wrong below `dest`, in words: a link leading out, a link on the way, or the
/// system's own error.
fn why(e: io::Error, dest: &Path) -> String {
    match e.raw_os_error().map(Errno::from_raw_os_error) {
        Some(Errno::XDEV) => format!(
            "it resolves outside {} (through a symbolic link)",
            dest.display()
        ),
        Some(Errno::LOOP) | Some(Errno::NOTDIR) => {
            format!("a symbolic link or a file is in its way ({e})")
        }
        _ => e.to_string(),
    }
}

/// The destination, open, and how paths below it are resolved.
struct Root {
    fd: OwnedFd,
    how: Resolution,
}

impl Root {
    fn open(dest: &Path, how: Resolution) -> io::Result<Root> {
        let fd = openat(
            rustix::fs::CWD,
            dest,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd, how })
    }

    /// Open `rel` (plain and relative, or empty for the root itself) beneath the root.
    /// `no_links`: refuse any symbolic link on the way, even one that stays inside.
    fn resolve(
        &self,
        rel: &Path,
        flags: OFlags,
        mode: Mode,
        no_links: bool,
    ) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::CLOEXEC;
        if rel.as_os_str().is_empty() {
            return Ok(openat(&self.fd, ".", flags, mode)?);
        }
        if self.how == Resolution::Beneath {
            let mut resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
            if no_links {
                resolve |= ResolveFlags::NO_SYMLINKS;
            }
            return Ok(openat2(&self.fd, rel, flags, mode, resolve)?);
        }
        let mut dir: Option<OwnedFd> = None;
        let mut parts = rel.components().peekable();
        while let Some(part) = parts.next() {
            let Component::Normal(name) = part else {
                return Err(Errno::INVAL.into());
            };
            let at = dir.as_ref().unwrap_or(&self.fd);
            if parts.peek().is_none() {
                return Ok(openat(at, name, flags | OFlags::NOFOLLOW, mode)?);
            }
            let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            dir = Some(openat(at, name, dir_flags, Mode::empty())?);
        }
        Err(Errno::INVAL.into())
    }

    /// The directory `rel`, made (with its parents, 0755) when missing.
    fn dir(&self, rel: &Path, no_links: bool) -> io::Result<OwnedFd> {
        let flags = OFlags::PATH | OFlags::DIRECTORY;
        match self.resolve(rel, flags, Mode::empty(), no_links) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let (parent, name) = split(rel)?;
        let at = self.dir(parent, no_links)?;
        match mkdirat(&at, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        self.resolve(rel, flags, Mode::empty(), no_links)
    }

    /// Create the regular file `rel` afresh (whatever was there is removed, never written
    /// through) with `reader`'s bytes and `mode`'s permission bits.
    fn file(&self, rel: &Path, mode: u32, reader: &mut dyn Read) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let at = self.dir(parent, false)?;
        remove(&at, name)?;
        let fd = openat(
            &at,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut f = File::from(fd);
        io::copy(reader, &mut f)?;
        fchmod(&f, Mode::from_raw_mode((mode & 0o755) | 0o600))?;
        Ok(())
    }

    /// A copy of the regular file `from` (opened beneath the root, not through a link at its
    /// end) at `rel`: tar's hard links.
    fn copy(&self, from: &Path, rel: &Path) -> io::Result<()> {
        let src = self.resolve(
            from,
            OFlags::RDONLY | OFlags::NOFOLLOW,
            Mode::empty(),
            false,
        )?;
        let st = fstat(&src)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                from.display()
            )));
        }
        self.file(rel, st.st_mode, &mut File::from(src))
    }

    /// The symbolic link `rel` pointing at `target`. Its directory is reached through no link
    /// at all, so the directory the target was checked against is where the link really is.
    fn symlink(&self, target: &Path, rel: &Path) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let at = self.dir(parent, true)?;
        remove(&at, name)?;
        Ok(symlinkat(target, &at, name)?)
    }
}

/// A path's directory and last component.
fn split(rel: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    match (rel.parent(), rel.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(Errno::INVAL.into()),
    }
}

/// Remove the entry `name` in `at` if there is one (not a directory: a file may not replace
/// one).
fn remove(at: &OwnedFd, name: &std::ffi::OsStr) -> io::Result<()> {
    match unlinkat(at, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => Err(io::Error::other("a directory is in its place")),
        Err(e) => Err(e.into()),
    }
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
    use std::fs;

    /// What a file outside the destination holds: no extraction may copy it in.
    const SECRET: &str = "the secret outside";

    /// Both ways of resolving: every test runs under each.
    const BOTH: [Resolution; 2] = [Resolution::Beneath, Resolution::Walk];

    /// A tar entry written byte for byte: names and link targets go into the header as given,
    /// past the checks `tar::Builder` makes, the way a hostile archive would have them.
    fn raw(tar: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str) {
        raw_data(tar, name, kind, link, b"");
    }

    fn raw_data(
        tar: &mut tar::Builder<Vec<u8>>,
        name: &str,
        kind: tar::EntryType,
        link: &str,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_cksum();
        tar.append(&h, data).unwrap();
    }

    fn file(tar: &mut tar::Builder<Vec<u8>>, name: &str) {
        raw_data(tar, name, tar::EntryType::Regular, "", b"evil");
    }

    fn identity(p: &str) -> Option<PathBuf> {
        Some(PathBuf::from(p))
    }

    /// Everything below `dir`, as relative paths, sorted.
    fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
                if e.file_type().unwrap().is_dir() {
                    stack.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// Extract `bytes` into `<tmp>/top/dest` (so one level up is still inside the test's
    /// directory), after `prepare(dest, outside)`, and return the refusal; assert that nothing
    /// appeared outside `dest`.
    fn refused(
        bytes: &[u8],
        how: Resolution,
        prepare: impl Fn(&Path, &Path),
        place: impl Fn(&str) -> Option<PathBuf>,
    ) -> String {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("top");
        let dest = top.join("dest");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&dest).unwrap();
        fs::create_dir_all(&outside).unwrap();
        prepare(&dest, &outside);
        let before = (listing(tmp.path()), listing(&outside));
        let err = extract_with("evil.tar", &mut tar::Archive::new(bytes), &dest, place, how)
            .expect_err("the archive must be refused")
            .to_string();
        let after = listing(tmp.path());
        let new_outside: Vec<&String> = after
            .iter()
            .filter(|p| !before.0.contains(p) && !p.starts_with("top/dest/"))
            .collect();
        assert!(
            new_outside.is_empty(),
            "{how:?}: written outside: {new_outside:?} ({err})"
        );
        assert_eq!(listing(&outside), before.1, "{how:?}: {err}");
        for p in listing(&dest) {
            let read = fs::read(dest.join(&p)).unwrap_or_default();
            assert_ne!(
                read,
                SECRET.as_bytes(),
                "{how:?}: {p} holds the secret ({err})"
            );
        }
        assert!(err.starts_with("evil.tar: entry "), "{how:?}: {err}");
        err
    }

    #[test]
    fn a_file_through_a_link_to_an_absolute_path_is_refused() {
        for how in BOTH {
            // The archive maps nothing outside gocode/: the link itself is refused.
            let mut t = tar::Builder::new(Vec::new());
            raw(&mut t, "gocode/a", tar::EntryType::Symlink, "/tmp");
            file(&mut t, "gocode/a/evil");
            let only_gocode = |p: &str| p.strip_prefix("gocode/").map(PathBuf::from);
            let err = refused(&t.into_inner().unwrap(), how, |_, _| {}, only_gocode);
            assert!(
                err.contains("entry gocode/a:") && err.contains("outside"),
                "{err}"
            );

            // A link someone left in the destination (`a -> <outside>`) is never followed.
            let mut t = tar::Builder::new(Vec::new());
            file(&mut t, "a/evil");
            let plant = |dest: &Path, outside: &Path| {
                std::os::unix::fs::symlink(outside, dest.join("a")).unwrap();
            };
            let err = refused(&t.into_inner().unwrap(), how, plant, identity);
            assert!(err.contains("entry a/evil:"), "{err}");
        }
    }

    #[test]
    fn a_file_through_a_link_to_the_parent_is_refused() {
        for how in BOTH {
            let mut t = tar::Builder::new(Vec::new());
            raw(&mut t, "a", tar::EntryType::Symlink, "..");
            file(&mut t, "a/evil");
            let err = refused(&t.into_inner().unwrap(), how, |_, _| {}, identity);
            assert!(err.contains("entry a:") && err.contains("leaves"), "{err}");

            // Planted rather than extracted: resolution itself stops it.
            let mut t = tar::Builder::new(Vec::new());
            file(&mut t, "a/evil");
            let plant = |dest: &Path, _: &Path| {
                std::os::unix::fs::symlink("..", dest.join("a")).unwrap();
            };
            let err = refused(&t.into_inner().unwrap(), how, plant, identity);
            assert!(err.contains("entry a/evil:"), "{err}");
        }
    }

    #[test]
    fn chains_of_links_cannot_climb_out() {
        for how in BOTH {
            // `a -> b`, `b -> ../..`: the second link already leaves.
            let mut t = tar::Builder::new(Vec::new());
            raw(&mut t, "a", tar::EntryType::Symlink, "b");
            raw(&mut t, "b", tar::EntryType::Symlink, "../..");
            file(&mut t, "a/evil");
            let err = refused(&t.into_inner().unwrap(), how, |_, _| {}, identity);
            assert!(err.contains("entry b:"), "{err}");

            // Each link looks harmless from its own name: `d/b -> ..` is the root,
            // `d/b/c -> ..` is `d` by name — but `d/b` *is* the root, so `c` would land there
            // pointing one level above it, and `d/b/c/evil` outside. A link is never made
            // through a link.
            let mut t = tar::Builder::new(Vec::new());
            raw(&mut t, "d/", tar::EntryType::Directory, "");
            raw(&mut t, "d/b", tar::EntryType::Symlink, "..");
            raw(&mut t, "d/b/c", tar::EntryType::Symlink, "..");
            file(&mut t, "d/b/c/evil");
            let err = refused(&t.into_inner().unwrap(), how, |_, _| {}, identity);
            assert!(err.contains("entry d/b"), "{err}");

            // The same chain planted beforehand: the file's own resolution refuses it.
            let mut t = tar::Builder::new(Vec::new());
            file(&mut t, "d/b/c/evil");
            let plant = |dest: &Path, _: &Path| {
                fs::create_dir(dest.join("d")).unwrap();
                std::os::unix::fs::symlink("..", dest.join("d/b")).unwrap();
                std::os::unix::fs::symlink("..", dest.join("c")).unwrap();
            };
            let err = refused(&t.into_inner().unwrap(), how, plant, identity);
            assert!(err.contains("entry d/b/c/evil:"), "{err}");
        }
    }

    #[test]
    fn a_hard_link_to_outside_is_refused() {
        for how in BOTH {
            let secret = |_: &Path, outside: &Path| {
                fs::write(outside.join("secret"), SECRET).unwrap();
            };
            let mut t = tar::Builder::new(Vec::new());
            raw(&mut t, "h", tar::EntryType::Link, "../../outside/secret");
            let tmp_listing = refused(&t.into_inner().unwrap(), how, secret, identity);
            assert!(tmp_listing.contains("entry h:"), "{tmp_listing}");

            // Through a link planted in the destination: opened beneath it, so refused, and
            // the secret is not copied in.
            let mut t = tar::Builder::new(Vec::new());
            raw(&mut t, "h", tar::EntryType::Link, "a/secret");
            let plant = |dest: &Path, outside: &Path| {
                fs::write(outside.join("secret"), SECRET).unwrap();
                std::os::unix::fs::symlink(outside, dest.join("a")).unwrap();
            };
            let err = refused(&t.into_inner().unwrap(), how, plant, identity);
            assert!(err.contains("entry h:"), "{err}");
        }
    }

    #[test]
    fn absolute_names_and_dot_dot_components_are_refused() {
        for how in BOTH {
            for name in ["/abs/evil", "../evil", "a/../../evil", "./a/../evil"] {
                let mut t = tar::Builder::new(Vec::new());
                file(&mut t, name);
                let err = refused(&t.into_inner().unwrap(), how, |_, _| {}, identity);
                assert!(err.contains(&format!("entry {name}:")), "{err}");
                assert!(err.contains("absolute") || err.contains("`..`"), "{err}");
            }
            // A `place` that maps into `..` is refused too.
            let mut t = tar::Builder::new(Vec::new());
            file(&mut t, "x");
            let up = |_: &str| Some(PathBuf::from("../x"));
            let err = refused(&t.into_inner().unwrap(), how, |_, _| {}, up);
            assert!(err.contains("entry x:"), "{err}");
        }
    }

    #[test]
    fn a_file_never_writes_through_a_link_in_its_place() {
        for how in BOTH {
            let tmp = tempfile::tempdir().unwrap();
            let dest = tmp.path().join("dest");
            fs::create_dir_all(&dest).unwrap();
            let victim = tmp.path().join("victim");
            fs::write(&victim, "keep").unwrap();
            std::os::unix::fs::symlink(&victim, dest.join("f")).unwrap();
            let mut t = tar::Builder::new(Vec::new());
            file(&mut t, "f");
            let bytes = t.into_inner().unwrap();
            extract_with(
                "ok.tar",
                &mut tar::Archive::new(&bytes[..]),
                &dest,
                identity,
                how,
            )
            .unwrap();
            assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
            assert_eq!(fs::read_to_string(dest.join("f")).unwrap(), "evil");
            assert!(!fs::symlink_metadata(dest.join("f")).unwrap().is_symlink());
        }
    }

    /// A .deb with a file, a directory, a relative link, an absolute link and a hard link.
    fn deb(dir: &Path) -> Deb {
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
        let err = extract_deb(&d, &dest, gocode).unwrap_err().to_string();
        // The escaping link is refused, naming it; everything before it is in place.
        assert!(
            err.contains("a/out") && err.contains("leaves the extraction root"),
            "{err}"
        );
        assert!(err.contains(&d.path().display().to_string()), "{err}");
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
    fn this_kernel_has_openat2() {
        // mmx's CI kernels are all 5.6+; the walk is for older hosts.
        assert_eq!(Resolution::detect(), Resolution::Beneath);
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
