//! Switching a build directory's `src/` to another tree in place, so that make rebuilds only
//! what depends on the files that differ.
//!
//! make decides by modification times: an object is remade when a file it was built from is
//! newer. The rule that keeps a kept `out/` correct is therefore: a file whose content changes
//! gets a new file (mtime now), a file whose content stays is not touched at all. Both
//! switches below follow it, and neither ever writes through a hard link (the Debian trees in
//! `src/` are hard links into the pristine tree every build of that package shares): a file
//! that changes is removed and written anew.
//!
//! - [`adopt_git`]: `src/` becomes a clone of a git repository at a commit. git's index is
//!   filled from the commit and refreshed against the files already there (git hashes each
//!   one), so `git reset --hard` then rewrites only those whose content differs.
//! - [`sync_pristine`]: `src/` becomes a copy of a pristine tree: files that are the same inode
//!   or have the same bytes stay, others are copied (a new mtime; a hard link would carry the
//!   pristine tree's old one and make would miss the change), extra files go.

use super::build::{BuildError, BuildLog};
use super::tree::git;
use std::fs;
use std::io::{BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Make `src/` (holding some other tree) a `--shared` clone of `repo` at `commit`, rewriting
/// only the files whose content differs from the commit's.
pub(super) fn adopt_git(
    src: &Path,
    repo: &Path,
    commit: &str,
    log: &mut BuildLog,
) -> Result<(), BuildError> {
    log.note(&format!(
        "switching the tree in {} to {}@{commit} in place",
        src.display(),
        repo.display()
    ));
    let dot_git = src.join(".git");
    remove_any(&dot_git)?;
    // `git clone` wants an empty directory: clone beside `src/` and move its .git in.
    let scratch = src.with_file_name("clone.tmp");
    remove_any(&scratch)?;
    git(
        log,
        None,
        &[
            "clone",
            "--quiet",
            "--shared",
            "--no-checkout",
            &repo.to_string_lossy(),
            &scratch.to_string_lossy(),
        ],
    )?;
    fs::rename(scratch.join(".git"), &dot_git).map_err(BuildError::io("rename", &dot_git))?;
    remove_any(&scratch)?;
    // HEAD at the commit, the index from its tree, refreshed against the files there (a mixed
    // reset hashes every file whose stat data it lacks): afterwards the index says which
    // files differ, and `reset --hard` writes only those.
    git(
        log,
        Some(src),
        &["update-ref", "--no-deref", "HEAD", commit],
    )?;
    git(log, Some(src), &["reset", "--quiet"])?;
    git(log, Some(src), &["reset", "--quiet", "--hard"])?;
    git(log, Some(src), &["clean", "-fdxq"])?;
    Ok(())
}

/// Make `src/` hold exactly the files of `pristine`, touching only what differs.
pub(super) fn sync_pristine(
    pristine: &Path,
    src: &Path,
    log: &mut BuildLog,
) -> Result<(), BuildError> {
    let mut counts = Counts::default();
    sync_dir(pristine, src, &mut counts)?;
    log.note(&format!(
        "switched the tree in {} to {} in place: {} files kept, {} rewritten, {} removed",
        src.display(),
        pristine.display(),
        counts.kept,
        counts.rewritten,
        counts.removed
    ));
    Ok(())
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    kept: u64,
    rewritten: u64,
    removed: u64,
}

fn sync_dir(from: &Path, to: &Path, counts: &mut Counts) -> Result<(), BuildError> {
    // What is here and not there goes first (a file may have to make room for a directory).
    for entry in fs::read_dir(to).map_err(BuildError::io("read_dir", to))? {
        let entry = entry.map_err(BuildError::io("read_dir", to))?;
        if fs::symlink_metadata(from.join(entry.file_name())).is_err() {
            remove_any(&entry.path())?;
            counts.removed += 1;
        }
    }
    for entry in fs::read_dir(from).map_err(BuildError::io("read_dir", from))? {
        let entry = entry.map_err(BuildError::io("read_dir", from))?;
        let (a, b) = (entry.path(), to.join(entry.file_name()));
        let want = fs::symlink_metadata(&a).map_err(BuildError::io("stat", &a))?;
        let have = fs::symlink_metadata(&b).ok();
        let ft = want.file_type();
        if ft.is_dir() {
            if !have.as_ref().is_some_and(|h| h.is_dir()) {
                if have.is_some() {
                    remove_any(&b)?;
                    counts.removed += 1;
                }
                fs::create_dir(&b).map_err(BuildError::io("create_dir", &b))?;
            }
            sync_dir(&a, &b, counts)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&a).map_err(BuildError::io("readlink", &a))?;
            let same = have.as_ref().is_some_and(|h| h.file_type().is_symlink())
                && fs::read_link(&b).is_ok_and(|t| t == target);
            if same {
                counts.kept += 1;
            } else {
                remove_any(&b)?;
                std::os::unix::fs::symlink(&target, &b).map_err(BuildError::io("symlink", &b))?;
                counts.rewritten += 1;
            }
        } else if ft.is_file() {
            if have
                .as_ref()
                .is_some_and(|h| same_file(&want, h, &a, &b).unwrap_or(false))
            {
                counts.kept += 1;
            } else {
                remove_any(&b)?;
                fs::copy(&a, &b).map_err(BuildError::io("copy", &a))?;
                counts.rewritten += 1;
            }
        }
        // Sockets, fifos, devices: a source tree has none; leave them out.
    }
    Ok(())
}

/// Whether `b` already is `a` for make and the build: the same inode, or a regular file with
/// the same bytes and the same execute bits.
fn same_file(
    want: &fs::Metadata,
    have: &fs::Metadata,
    a: &Path,
    b: &Path,
) -> std::io::Result<bool> {
    if !have.is_file() {
        return Ok(false);
    }
    if want.dev() == have.dev() && want.ino() == have.ino() {
        return Ok(true);
    }
    let exec = |m: &fs::Metadata| m.permissions().mode() & 0o111;
    if want.len() != have.len() || exec(want) != exec(have) {
        return Ok(false);
    }
    let (mut x, mut y) = (
        BufReader::with_capacity(1 << 16, fs::File::open(a)?),
        BufReader::with_capacity(1 << 16, fs::File::open(b)?),
    );
    let (mut bx, mut by) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = read_full(&mut x, &mut bx)?;
        let m = read_full(&mut y, &mut by)?;
        if n != m || bx[..n] != by[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Remove a file, symlink or directory tree; absent is fine.
fn remove_any(p: &Path) -> Result<(), BuildError> {
    let Ok(m) = fs::symlink_metadata(p) else {
        return Ok(());
    };
    let r = if m.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    };
    r.map_err(BuildError::io("remove", p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::sh;

    fn ino(p: &Path) -> u64 {
        fs::metadata(p).unwrap().ino()
    }

    /// A pristine tree: a/x.c, a/y.c, b.c, run.sh (+x), link -> b.c.
    fn pristine(root: &Path) -> std::path::PathBuf {
        let p = root.join("pristine");
        fs::create_dir_all(p.join("a")).unwrap();
        fs::write(p.join("a/x.c"), "x\n").unwrap();
        fs::write(p.join("a/y.c"), "y\n").unwrap();
        fs::write(p.join("b.c"), "b\n").unwrap();
        fs::write(p.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(p.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("b.c", p.join("link")).unwrap();
        p
    }

    #[test]
    fn a_linked_tree_becomes_a_clone_rewriting_only_what_differs() {
        let tmp = tempfile::tempdir().unwrap();
        let p = pristine(tmp.path());
        // The user's repository: the pristine tree, then a commit that changes a/y.c.
        let repo = tmp.path().join("repo");
        sh(tmp.path(), "cp -a pristine repo");
        let g = "git -c user.name=t -c user.email=t@t";
        sh(
            &repo,
            &format!("git init -q && git add -A && {g} commit -qm base && rm a/y.c && echo Y > a/y.c && {g} commit -qam y"),
        );
        let commit = sh(&repo, "git rev-parse HEAD");
        // src/: a hard-link copy of the pristine tree, with a leftover of another series.
        let build = tmp.path().join("build");
        fs::create_dir(&build).unwrap();
        let src = build.join("src");
        sh(tmp.path(), "cp -al pristine build/src");
        fs::write(src.join("leftover.o"), "o").unwrap();
        let mut log = BuildLog::create(&build.join("build.log")).unwrap();
        adopt_git(&src, &repo, &commit, &mut log).unwrap();

        assert_eq!(fs::read_to_string(src.join("a/y.c")).unwrap(), "Y\n");
        assert_eq!(ino(&src.join("a/x.c")), ino(&p.join("a/x.c")), "kept");
        assert_eq!(ino(&src.join("b.c")), ino(&p.join("b.c")), "kept");
        assert_ne!(ino(&src.join("a/y.c")), ino(&p.join("a/y.c")));
        assert_eq!(fs::read_to_string(p.join("a/y.c")).unwrap(), "y\n");
        assert!(!src.join("leftover.o").exists());
        assert_eq!(sh(&src, "git rev-parse HEAD"), commit);
        assert_eq!(sh(&src, "git status --porcelain"), "");
        assert!(!build.join("clone.tmp").exists());
        // The user's repository did not move.
        assert_eq!(sh(&repo, "git rev-parse HEAD"), commit);
        assert_eq!(sh(&repo, "git status --porcelain"), "");

        // And back: the same files are hard links no more, but only y.c and .git change.
        let x_ino = ino(&src.join("a/x.c"));
        sync_pristine(&p, &src, &mut log).unwrap();
        assert_eq!(ino(&src.join("a/x.c")), x_ino);
        assert_eq!(fs::read_to_string(src.join("a/y.c")).unwrap(), "y\n");
        assert!(!src.join(".git").exists());
        assert_eq!(fs::read_to_string(p.join("a/y.c")).unwrap(), "y\n");
    }

    #[test]
    fn sync_keeps_equal_files_and_rewrites_the_rest_with_a_new_mtime() {
        let tmp = tempfile::tempdir().unwrap();
        let p = pristine(tmp.path());
        let src = tmp.path().join("src");
        // Same bytes in a file of its own, a changed file, a missing one, an extra one, a
        // file where the tree has a directory, a lost execute bit and a wrong link.
        fs::create_dir(&src).unwrap();
        fs::write(src.join("b.c"), "b\n").unwrap();
        fs::write(src.join("a"), "not a dir").unwrap();
        fs::write(src.join("extra.c"), "e").unwrap();
        fs::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("a/x.c", src.join("link")).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::options()
            .write(true)
            .open(src.join("b.c"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let b_ino = ino(&src.join("b.c"));
        let dir = tempfile::tempdir().unwrap();
        let mut log = BuildLog::create(&dir.path().join("log")).unwrap();
        let mut counts = Counts::default();
        sync_dir(&p, &src, &mut counts).unwrap();

        assert_eq!(ino(&src.join("b.c")), b_ino, "same bytes: untouched");
        assert_eq!(
            fs::metadata(src.join("b.c")).unwrap().modified().unwrap(),
            old
        );
        assert_eq!(fs::read_to_string(src.join("a/x.c")).unwrap(), "x\n");
        assert_ne!(ino(&src.join("a/x.c")), ino(&p.join("a/x.c")), "a copy");
        assert!(
            fs::metadata(src.join("a/x.c")).unwrap().modified().unwrap()
                >= fs::metadata(p.join("a/x.c")).unwrap().modified().unwrap()
        );
        assert!(!src.join("extra.c").exists());
        assert_eq!(
            fs::metadata(src.join("run.sh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o111,
            0o111
        );
        assert_eq!(fs::read_link(src.join("link")).unwrap(), Path::new("b.c"));
        // extra.c and the file `a` removed; a/x.c, a/y.c, run.sh, link written.
        assert_eq!(
            counts,
            Counts {
                kept: 1,
                rewritten: 4,
                removed: 2
            }
        );
        // A second pass changes nothing.
        sync_pristine(&p, &src, &mut log).unwrap();
        let mut again = Counts::default();
        sync_dir(&p, &src, &mut again).unwrap();
        assert_eq!(again.rewritten + again.removed, 0);
    }
}
