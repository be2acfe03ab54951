//! Source trees for builds, kept so that the next build is incremental.
//!
//! A [`BuildDir`] (`<cache>/builds/<name>/`, locked while in use; the caller names it: one per
//! kernel version and config, shared by every tree of that version, and so by a bisect) holds
//! `src/` (the tree make reads), `out/` (make's `O=`), `build.log`, `state.json` and
//! `make.lock` (see [`BuildDir::open`]). Preparing
//! it for a new base or patch series rewrites only the files that change, so make recompiles
//! only those:
//! - a Debian source package is unpacked once into `<cache>/src/<key>/` (pristine, shared by
//!   every build of it) and `src/` is a hard-link copy of it; patches replace files rather than
//!   writing through the links (GNU patch writes a new file and renames it), and the files a
//!   series touched are copied back from the pristine tree before the next series is applied;
//! - a git tree is cloned with `--shared` (the user's objects, never the user's checkout or
//!   refs) and moved between commits with `git checkout`, which writes only differing files:
//!   what a bisect needs;
//! - when `src/` holds another tree (a Debian tree where a git tree of the same version goes,
//!   or the reverse), [`super::switch`] turns it into the new one in place, again rewriting
//!   only the files whose content differs.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};

use super::build::{logged, run_captured, BuildError, BuildLog};
use super::patches::{self, Patch};
use super::switch;
use super::KernelError;
use crate::debian::cache::{key, Cache, CacheLock};
use crate::debian::deb::{for_each_data_entry, Deb, EntryKind};
use crate::git::{self, Git};
use crate::proc::Run;
use crate::rundir::write_atomic;

/// `cp -al` of a kernel tree: 90,000 hard links, seconds; minutes on a loaded, slow disk. Past
/// half an hour it is stuck.
const LINK_LIMIT: Duration = Duration::from_secs(30 * 60);
/// Unpacking a kernel's source tarball (140 MB of xz, 1.5 GB unpacked): a minute or two;
/// past half an hour tar is stuck.
const UNTAR_LIMIT: Duration = Duration::from_secs(30 * 60);

/// A build directory, exclusively ours while this value lives.
#[derive(Debug)]
pub struct BuildDir {
    root: PathBuf,
    _lock: CacheLock,
    /// `make.lock`, flocked: every make run here inherits it (see [`BuildDir::open`]).
    make_lock: File,
}

/// What `src/` holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// Identity of the base: the pristine tree's key, or `git:<repo>`.
    base: Option<String>,
    /// Files (tree-relative) the applied series touched, to restore before the next one.
    touched: Vec<String>,
    /// kbuild steps of the last build, for the progress bar.
    steps: Option<u64>,
}

impl BuildDir {
    /// Open (and lock) the build directory `name`; waits while another build uses it.
    ///
    /// Two locks: the cache's lock of the directory, and `make.lock` inside it, which every
    /// make of ours inherits. The first is released when mmx exits; the second only when the
    /// last process holding it does — so when mmx is killed during a build, the next build
    /// here waits until the killed one's make and compilers are gone (its warden kills them),
    /// and never runs a second make in the same directory beside them.
    pub fn open(cache: &Cache, name: &str) -> Result<BuildDir, KernelError> {
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let lock = cache.lock(&format!("build-{safe}"))?;
        let root = cache.dir("builds")?.join(safe);
        fs::create_dir_all(&root).map_err(|e| KernelError::io("create_dir_all", &root, e))?;
        let path = root.join("make.lock");
        let make_lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| KernelError::io("open", &path, e))?;
        flock(&make_lock, FlockOperation::LockExclusive)
            .map_err(|e| KernelError::io("flock(LOCK_EX)", &path, e.into()))?;
        Ok(BuildDir {
            root,
            _lock: lock,
            make_lock,
        })
    }

    /// The lock every make here inherits ([`super::build::Make`]).
    pub fn make_lock(&self) -> BorrowedFd<'_> {
        self.make_lock.as_fd()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn src(&self) -> PathBuf {
        self.root.join("src")
    }
    pub fn out(&self) -> PathBuf {
        self.root.join("out")
    }
    pub fn log_path(&self) -> PathBuf {
        self.root.join("build.log")
    }

    fn state(&self) -> State {
        fs::read(self.root.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, state: &State) -> Result<(), BuildError> {
        let path = self.root.join("state.json");
        let json = serde_json::to_vec_pretty(state).unwrap_or_default();
        write_atomic(&path, &json).map_err(|e| BuildError::Step {
            what: "write build state".into(),
            detail: e.to_string(),
            log: self.log_path(),
        })
    }

    /// The step count of the last build here, for the progress bar.
    pub fn last_steps(&self) -> Option<u64> {
        self.state().steps
    }

    pub fn record_steps(&self, steps: u64) -> Result<(), BuildError> {
        let mut s = self.state();
        s.steps = Some(steps);
        self.save(&s)
    }
}

/// Where a build's tree comes from, ready to be laid out in a [`BuildDir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// An unpacked, never-modified tree (Debian's source package) and its cache key.
    Pristine { root: PathBuf, key: String },
    /// A git repository and a resolved commit.
    Git { repo: PathBuf, commit: String },
}

/// Lay out `base` + `series` in `dir`'s `src/`, touching only what changes since the last time.
pub fn prepare(
    dir: &BuildDir,
    base: &Base,
    series: &[Patch],
    log: &mut BuildLog,
) -> Result<(), BuildError> {
    let src = dir.src();
    let mut state = dir.state();
    match base {
        Base::Pristine { root, key } => {
            let id = format!("pristine:{key}");
            if !src.is_dir() {
                log.note(&format!("fresh tree: hard links to {}", root.display()));
                // The links carry the pristine tree's old mtimes: objects made from any other
                // tree would look newer than them, so make would keep them. They go.
                remove_dir_if_exists(&dir.out())?;
                link_tree(root, &src, log)?;
                state = State {
                    base: Some(id),
                    ..State::default()
                };
                dir.save(&state)?;
            } else if state.base.as_deref() != Some(id.as_str()) {
                // Another tree (another package's, a git checkout): switch in place, so make
                // rebuilds only what the differing files feed. Until it is done the directory
                // holds no known base, so an interrupted switch is redone.
                state = State {
                    base: None,
                    touched: Vec::new(),
                    steps: state.steps,
                };
                dir.save(&state)?;
                switch::sync_pristine(root, &src, log)?;
                state.base = Some(id);
                dir.save(&state)?;
            } else {
                restore(root, &src, &state.touched, log)?;
                state.touched.clear();
                dir.save(&state)?;
            }
            let total = series.len();
            for (i, p) in series.iter().enumerate() {
                // Recorded before applying: a half-applied patch is undone next time too.
                for f in patches::touched_files(&p.text) {
                    if !state.touched.contains(&f) {
                        state.touched.push(f);
                    }
                }
                dir.save(&state)?;
                patches::apply_plain(&src, p, (i + 1, total), log)?;
            }
        }
        Base::Git { repo, commit } => {
            let id = format!("git:{}", repo.display());
            if !src.is_dir() {
                git(
                    log,
                    None,
                    &[
                        "clone",
                        "--quiet",
                        "--shared",
                        "--no-checkout",
                        &repo.to_string_lossy(),
                        &src.to_string_lossy(),
                    ],
                )?;
                state = State {
                    base: Some(id),
                    steps: state.steps,
                    ..State::default()
                };
                dir.save(&state)?;
            } else if state.base.as_deref() != Some(id.as_str()) || !src.join(".git").exists() {
                // Another tree (a Debian source package of the same version, another clone):
                // switch in place, so make rebuilds only what the differing files feed.
                state = State {
                    base: None,
                    touched: Vec::new(),
                    steps: state.steps,
                };
                dir.save(&state)?;
                switch::adopt_git(&src, repo, commit, log)?;
                state.base = Some(id);
                dir.save(&state)?;
            } else {
                // Leftovers of a failed `git am` or of patched files, then the commit: git
                // rewrites only the files that differ, so make rebuilds only those.
                if src.join(".git/rebase-apply").exists() {
                    git(log, Some(&src), &["am", "--abort"])?;
                }
                git(log, Some(&src), &["reset", "--quiet", "--hard"])?;
                git(log, Some(&src), &["clean", "-fdxq"])?;
            }
            git(
                log,
                Some(&src),
                &[
                    "-c",
                    "advice.detachedHead=false",
                    "checkout",
                    "--quiet",
                    "--force",
                    "--detach",
                    commit,
                ],
            )?;
            let total = series.len();
            for (i, p) in series.iter().enumerate() {
                if p.is_mail() {
                    patches::apply_mail(&src, p, (i + 1, total), log)?;
                } else {
                    patches::apply_plain(&src, p, (i + 1, total), log)?;
                }
            }
        }
    }
    Ok(())
}

/// git in `dir` (or, with `None`, where absolute paths say), its output into the log; a
/// failure is the build's.
pub(super) fn git(log: &mut BuildLog, dir: Option<&Path>, args: &[&str]) -> Result<(), BuildError> {
    let g = match dir {
        Some(d) => Git::in_repo(d),
        None => Git::new(),
    }
    .args(args);
    let what = g.what();
    log.note(&what);
    let (ok, out) = logged(g.into_run().run(), log, &what)?;
    if ok {
        Ok(())
    } else {
        Err(BuildError::Step {
            what,
            detail: out.trim().to_string(),
            log: log.path().to_path_buf(),
        })
    }
}

/// `VERSION.PATCHLEVEL` (`6.12`) from a kernel's top Makefile.
pub fn makefile_version(text: &str) -> Option<String> {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
    };
    Some(format!("{}.{}", get("VERSION")?, get("PATCHLEVEL")?))
}

/// The kernel version of a base's tree (its top Makefile); None when it has none to read.
pub fn base_version(base: &Base) -> Option<String> {
    let text = match base {
        Base::Pristine { root, .. } => fs::read_to_string(root.join("Makefile")).ok()?,
        Base::Git { repo, commit } => Git::in_repo(repo)
            .arg("show")
            .arg(format!("{commit}:Makefile"))
            .ok()
            .ok()?,
    };
    makefile_version(&text)
}

/// Resolve `rev` in the user's repository to a commit id (never changes the repository).
pub fn resolve_rev(repo: &Path, rev: &str) -> Result<String, String> {
    git::resolve_commit(repo, rev)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("`{rev}` is not a commit in {}", repo.display()))
}

fn remove_dir_if_exists(d: &Path) -> Result<(), BuildError> {
    match fs::remove_dir_all(d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BuildError::io("remove_dir_all", d)(e)),
    }
}

/// `cp -al`: a copy of the tree made of hard links (seconds for ~90k files, no space).
fn link_tree(from: &Path, to: &Path, log: &mut BuildLog) -> Result<(), BuildError> {
    let mut cmd = Command::new("cp");
    cmd.arg("-al").arg(from).arg(to);
    let (ok, out) = run_captured(cmd, LINK_LIMIT, None, log, "cp -al")?;
    if ok {
        Ok(())
    } else {
        Err(BuildError::Step {
            what: format!("cp -al {} {}", from.display(), to.display()),
            detail: out.trim().to_string(),
            log: log.path().to_path_buf(),
        })
    }
}

/// Put the pristine version of `files` back (a fresh copy, so its mtime is now and make
/// rebuilds what used the patched one); files the patches created are removed.
fn restore(
    pristine: &Path,
    src: &Path,
    files: &[String],
    log: &mut BuildLog,
) -> Result<(), BuildError> {
    for f in files {
        let (orig, cur) = (pristine.join(f), src.join(f));
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => fs::remove_file(&cur).map_err(BuildError::io("remove", &cur))?,
            Err(_) => {}
        }
        if orig.is_file() {
            if let Some(parent) = cur.parent() {
                fs::create_dir_all(parent).map_err(BuildError::io("create_dir_all", parent))?;
            }
            fs::copy(&orig, &cur).map_err(BuildError::io("copy", &orig))?;
        }
    }
    if !files.is_empty() {
        log.note(&format!(
            "restored {} files the previous series touched",
            files.len()
        ));
    }
    Ok(())
}

/// The pristine tree of a Debian `linux-source-X` package: unpacked once per package (by its
/// SHA-256) under `<cache>/src/`, published with one rename. `fetch` downloads and checks the
/// .deb into the directory it is given, when the tree is not there yet.
pub fn debian_pristine(
    cache: &Cache,
    package: &str,
    sha256: &str,
    fetch: impl FnOnce(&Path) -> Result<Deb, KernelError>,
) -> Result<PathBuf, KernelError> {
    let k = key(&[b"src-v1", package.as_bytes(), sha256.as_bytes()]);
    let dir = cache.dir("src")?.join(&k);
    if let Some(t) = top_dir(&dir) {
        return Ok(t);
    }
    let _l = cache.lock(&format!("src-{k}"))?;
    if let Some(t) = top_dir(&dir) {
        return Ok(t);
    }
    // A fixed name, cleared under the lock: an unpack killed half way (Ctrl-C in tar) leaves
    // 1.7 GB that the next attempt removes instead of keeping forever.
    let work = cache.dir("src")?.join(format!(".unpack-{k}"));
    remove_dir_if_exists(&work).map_err(|e| KernelError::Layout {
        detail: e.to_string(),
    })?;
    fs::create_dir(&work).map_err(|e| KernelError::io("create_dir", &work, e))?;
    let deb = fetch(&work)?;
    let tree = work.join("tree");
    fs::create_dir(&tree).map_err(|e| KernelError::io("create_dir", &tree, e))?;
    // The package holds usr/src/<package>.tar.xz; stream it into tar.
    let member = format!("usr/src/{package}.tar.xz");
    let mut found = false;
    for_each_data_entry(&deb, |path, kind, reader| {
        if kind != EntryKind::File || path != member {
            return Ok(());
        }
        found = true;
        untar_xz(reader, &tree)
    })?;
    if !found {
        return Err(KernelError::Layout {
            detail: format!("{}: no {member}", deb.path().display()),
        });
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| KernelError::io("remove_dir_all", &dir, e))?;
    }
    fs::rename(&tree, &dir).map_err(|e| KernelError::io("rename", &dir, e))?;
    let _ = fs::remove_dir_all(&work);
    top_dir(&dir).ok_or_else(|| KernelError::Layout {
        detail: format!("{}: the tarball has no single top directory", dir.display()),
    })
}

/// The one directory inside an unpacked tarball (`linux-source-6.12/`), with a Makefile.
fn top_dir(dir: &Path) -> Option<PathBuf> {
    let mut entries = fs::read_dir(dir).ok()?.filter_map(Result::ok);
    let first = entries.next()?;
    if entries.next().is_some() {
        return None;
    }
    let t = first.path();
    t.join("Makefile").is_file().then_some(t)
}

/// The kernel's 1.5 GB source tarball goes through GNU tar rather than
/// `crate::debian::extract`: tar creates a link that is absolute or climbs with `..` only at
/// the end, as a placeholder file until then, so no later entry can be written through it
/// (checked: `a/b -> ..`, `a/b/c -> ../..`, `a/b/c/evil` fails with "Not a directory").
fn untar_xz(reader: &mut dyn Read, into: &Path) -> Result<(), KernelError> {
    let mut tar = Command::new("tar");
    tar.args(["-xJf", "-", "--no-same-owner", "-C"]).arg(into);
    let out = Run::new(tar, UNTAR_LIMIT)
        .stdin_from(reader)
        .run()
        .map_err(|e| match e {
            crate::proc::RunError::Input { source, .. } => {
                KernelError::io("unpack into", into, source)
            }
            e => KernelError::Layout {
                detail: format!("tar -xJ into {}: {e}", into.display()),
            },
        })?;
    if !out.success() {
        return Err(KernelError::Layout {
            detail: format!(
                "tar -xJ into {}: {}: {}",
                into.display(),
                out.status,
                out.stderr.trim()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::sh;

    fn patch(text: &str) -> Patch {
        super::super::patches::tests_support::patch(text)
    }

    #[test]
    fn pristine_series_are_swapped_touching_only_their_files() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().join("cache"));
        let pristine = tmp.path().join("pristine");
        fs::create_dir_all(pristine.join("d")).unwrap();
        fs::write(pristine.join("d/a.c"), "one\ntwo\nthree\n").unwrap();
        fs::write(pristine.join("b.c"), "b\n").unwrap();
        let base = Base::Pristine {
            root: pristine.clone(),
            key: "k1".into(),
        };
        let dir = BuildDir::open(&cache, "t").unwrap();
        let mut log = BuildLog::create(&dir.log_path()).unwrap();
        let p1 = patch("--- a/d/a.c\n+++ b/d/a.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n--- /dev/null\n+++ b/new.c\n@@ -0,0 +1 @@\n+new\n");
        prepare(&dir, &base, &[p1], &mut log).unwrap();
        let src = dir.src();
        assert_eq!(
            fs::read_to_string(src.join("d/a.c")).unwrap(),
            "one\nTWO\nthree\n"
        );
        assert!(src.join("new.c").exists());
        // The pristine tree is untouched (the patch broke the link, not the file).
        assert_eq!(
            fs::read_to_string(pristine.join("d/a.c")).unwrap(),
            "one\ntwo\nthree\n"
        );
        use std::os::unix::fs::MetadataExt;
        let b_ino = fs::metadata(src.join("b.c")).unwrap().ino();
        assert_eq!(b_ino, fs::metadata(pristine.join("b.c")).unwrap().ino());

        // Another series: the first one's files come back, untouched files keep their inode.
        prepare(&dir, &base, &[], &mut log).unwrap();
        assert_eq!(
            fs::read_to_string(src.join("d/a.c")).unwrap(),
            "one\ntwo\nthree\n"
        );
        assert!(!src.join("new.c").exists());
        assert_eq!(fs::metadata(src.join("b.c")).unwrap().ino(), b_ino);

        // A patch that does not apply names itself and its hunk.
        let bad = patch("--- a/d/a.c\n+++ b/d/a.c\n@@ -1,3 +1,3 @@\n one\n-zwei\n+TWO\n three\n");
        let e = prepare(&dir, &base, &[bad], &mut log).unwrap_err();
        match &e {
            BuildError::Patch(r) => {
                assert_eq!((r.file.as_str(), r.n, r.total), ("d/a.c", 1, 1));
                assert!(r.detail.contains("-zwei"), "{}", r.detail);
            }
            other => panic!("{other}"),
        }
        assert!(!src.join("d/a.c.orig").exists() && !src.join("d/a.c.rej").exists());
    }

    #[test]
    fn one_directory_switches_between_a_debian_and_a_git_tree_in_place() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let pristine = tmp.path().join("pristine");
        fs::create_dir_all(pristine.join("fs")).unwrap();
        fs::write(pristine.join("fs/a.c"), "a\n").unwrap();
        fs::write(pristine.join("b.c"), "b\n").unwrap();
        // The user's repository: the same tree, then a commit changing fs/a.c.
        let repo = tmp.path().join("repo");
        sh(tmp.path(), "cp -a pristine repo");
        sh(&repo, "git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm base \
                   && rm fs/a.c && echo A > fs/a.c && git -c user.name=t -c user.email=t@t commit -qam a");
        let commit = resolve_rev(&repo, "HEAD").unwrap();
        let cache = Cache::at(tmp.path().join("cache"));
        let dir = BuildDir::open(&cache, "linux-x").unwrap();
        let mut log = BuildLog::create(&dir.log_path()).unwrap();
        let debian = Base::Pristine {
            root: pristine.clone(),
            key: "k".into(),
        };
        let git_base = Base::Git {
            repo: repo.clone(),
            commit: commit.clone(),
        };
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        prepare(&dir, &debian, &[], &mut log).unwrap();
        // make's output of the Debian tree: kept across the switches.
        fs::create_dir_all(dir.out()).unwrap();
        fs::write(dir.out().join("b.o"), "obj").unwrap();

        prepare(&dir, &git_base, &[], &mut log).unwrap();
        assert_eq!(fs::read_to_string(dir.src().join("fs/a.c")).unwrap(), "A\n");
        assert_eq!(ino(&dir.src().join("b.c")), ino(&pristine.join("b.c")));
        assert!(dir.out().join("b.o").exists());
        assert_eq!(dir.state().base, Some(format!("git:{}", repo.display())));

        prepare(&dir, &debian, &[], &mut log).unwrap();
        assert_eq!(fs::read_to_string(dir.src().join("fs/a.c")).unwrap(), "a\n");
        assert!(!dir.src().join(".git").exists());
        assert_eq!(ino(&dir.src().join("b.c")), ino(&pristine.join("b.c")));
        assert!(dir.out().join("b.o").exists());
        assert_eq!(fs::read_to_string(pristine.join("fs/a.c")).unwrap(), "a\n");

        // No tree to compare with: the links carry old mtimes, so the old objects go.
        fs::remove_dir_all(dir.src()).unwrap();
        prepare(&dir, &debian, &[], &mut log).unwrap();
        assert!(!dir.out().exists());
    }

    #[test]
    fn the_version_comes_from_the_top_makefile() {
        let text = "# SPDX\nVERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 57\nEXTRAVERSION =\nNAME = Baby Opossum Posse\n";
        assert_eq!(makefile_version(text).as_deref(), Some("6.12"));
        assert_eq!(makefile_version("VERSION = 6\n"), None);
        assert_eq!(makefile_version("VERSION = $(X)\nPATCHLEVEL = 1\n"), None);
    }

    #[test]
    fn git_bases_move_between_commits_and_take_mails() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        fs::create_dir(&repo).unwrap();
        sh(&repo, "git init -q && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m base \
                   && echo one > f && git add f && git -c user.name=t -c user.email=t@t commit -q -m one \
                   && echo two > f && git -c user.name=t -c user.email=t@t commit -q -am two");
        let c1 = resolve_rev(&repo, "HEAD~1").unwrap();
        let c2 = resolve_rev(&repo, "HEAD").unwrap();
        assert!(resolve_rev(&repo, "nonexistent")
            .unwrap_err()
            .contains("not a commit"));
        let cache = Cache::at(tmp.path().join("cache"));
        let dir = BuildDir::open(&cache, "g").unwrap();
        let mut log = BuildLog::create(&dir.log_path()).unwrap();
        let at = |c: &str| Base::Git {
            repo: repo.clone(),
            commit: c.to_string(),
        };
        prepare(&dir, &at(&c1), &[], &mut log).unwrap();
        assert_eq!(fs::read_to_string(dir.src().join("f")).unwrap(), "one\n");
        let mail = patch("From 0 Mon Sep 17 00:00:00 2001\nFrom: A <a@b>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nSubject: [PATCH] f: three\n\n---\ndiff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-two\n+three\n-- \n2.0\n\n");
        prepare(&dir, &at(&c2), std::slice::from_ref(&mail), &mut log).unwrap();
        assert_eq!(fs::read_to_string(dir.src().join("f")).unwrap(), "three\n");
        // The mail was committed with its author, on top of c2.
        let out = Git::in_repo(&dir.src())
            .args(["log", "-1", "--format=%an|%s"])
            .ok()
            .unwrap();
        assert_eq!(out, "A|f: three");
        // The same mail does not apply on c1: the error names the hunk, and the tree is clean.
        let e = prepare(&dir, &at(&c1), &[mail], &mut log).unwrap_err();
        assert!(matches!(&e, BuildError::Patch(r) if r.file == "f"), "{e}");
        prepare(&dir, &at(&c1), &[], &mut log).unwrap();
        assert_eq!(fs::read_to_string(dir.src().join("f")).unwrap(), "one\n");
        // The user's repository never moved.
        let head = resolve_rev(&repo, "HEAD").unwrap();
        assert_eq!(head, c2);
    }
}
