//! git for `mmx bisect`: reading the user's repository (never writing it), and git's own bisect
//! algorithm run in a private bare clone.
//!
//! Why `git bisect` and not a loop of our own over `git rev-list --bisect`: git's choice of the
//! next commit (the midpoint by reachability, merges included) and its `skip` handling (a
//! commit away from the skipped ones, and the list of candidates when only skipped commits are
//! left) are exactly what a kernel developer expects, and `git bisect log` is a record they can
//! replay. It runs in a `git clone --bare --shared` of the user's repository in a private
//! directory: git treats a bare repository as `--no-checkout` (the commit to test is
//! `BISECT_HEAD`, no files are written), and the clone borrows the user's objects read-only.
//! So the user's HEAD, index, files, refs (no `refs/bisect`) and worktree list never change,
//! whatever happens to mmx; removing the private directory removes every trace.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::answers::Verdict;
use crate::git::Git;
use crate::proc::Output;

/// The user's repository, read only.
pub struct UserRepo {
    pub path: PathBuf,
}

impl UserRepo {
    /// Whether `ancestor` is an ancestor of `of`.
    pub fn is_ancestor(&self, ancestor: &str, of: &str) -> anyhow::Result<bool> {
        let out = Git::in_repo(&self.path)
            .args(["merge-base", "--is-ancestor", ancestor, of])
            .run()?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => anyhow::bail!(
                "git merge-base --is-ancestor in {}: {}",
                self.path.display(),
                out.stderr.trim()
            ),
        }
    }

    /// A commit's subject line.
    pub fn subject(&self, commit: &str) -> String {
        Git::in_repo(&self.path)
            .args(["log", "-1", "--format=%s", commit, "--"])
            .ok()
            .unwrap_or_default()
    }

    /// The commits `good..bad` (what a bisect chooses from).
    pub fn count(&self, good: &str, bad: &str) -> anyhow::Result<u64> {
        let count = Git::in_repo(&self.path)
            .args(["rev-list", "--count", &format!("{good}..{bad}")])
            .ok()
            .with_context(|| format!("in {}", self.path.display()))?;
        count
            .parse()
            .context("git rev-list --count printed no number")
    }

    /// The first parent of a commit, if it has one.
    pub fn parent(&self, commit: &str) -> Option<String> {
        Git::in_repo(&self.path)
            .args(["rev-parse", "--verify", "--quiet", &format!("{commit}^1")])
            .ok()
            .ok()
    }
}

/// What git says after a mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Test this commit next.
    Test(String),
    /// The first bad commit.
    Found(String),
    /// Only skipped commits are left; the first bad one is among these.
    OnlySkipped(Vec<String>),
}

/// A `git bisect` in a private bare clone; dropping it removes the clone.
pub struct Session {
    dir: tempfile::TempDir,
}

impl Session {
    /// Clone `repo` (bare, sharing its objects) into a private directory under `parent` and
    /// start bisecting between `good` and `bad`, both already judged.
    pub fn start(
        repo: &UserRepo,
        parent: &Path,
        good: &str,
        bad: &str,
    ) -> anyhow::Result<(Session, Next)> {
        let dir = tempfile::Builder::new()
            .prefix(".git-bisect-")
            .tempdir_in(parent)
            .with_context(|| format!("creating a directory in {}", parent.display()))?;
        let clone = dir.path().join("repo.git");
        Git::in_repo(parent)
            .args(["clone", "--quiet", "--bare", "--shared"])
            .arg(&repo.path)
            .arg(&clone)
            .ok()?;
        let s = Session { dir };
        let out = Git::in_repo(&s.git_dir())
            .args(["bisect", "start", bad, good, "--"])
            .run()?;
        let next = s.next(out, "git bisect start")?;
        Ok((s, next))
    }

    fn git_dir(&self) -> PathBuf {
        self.dir.path().join("repo.git")
    }

    /// Record a verdict on `commit`.
    pub fn mark(&self, commit: &str, verdict: Verdict) -> anyhow::Result<Next> {
        let what = format!("git bisect {} {commit}", verdict.git_word());
        let out = Git::in_repo(&self.git_dir())
            .args(["bisect", verdict.git_word(), commit])
            .run()?;
        self.next(out, &what)
    }

    /// `git bisect log`: the marks, replayable with `git bisect replay`.
    pub fn log(&self) -> String {
        Git::in_repo(&self.git_dir())
            .args(["bisect", "log"])
            .run()
            .map(|o| o.stdout)
            .unwrap_or_default()
    }

    fn next(&self, out: Output, what: &str) -> anyhow::Result<Next> {
        if let Some(next) = parse(&out.stdout) {
            return Ok(next);
        }
        anyhow::ensure!(
            out.success(),
            "{what}: {}{}",
            out.stdout.trim(),
            out.stderr.trim()
        );
        let head = Git::in_repo(&self.git_dir())
            .args(["rev-parse", "--verify", "BISECT_HEAD"])
            .ok()
            .with_context(|| format!("{what} left no BISECT_HEAD: {}", out.stdout.trim()))?;
        Ok(Next::Test(head))
    }
}

fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The end of a bisect in git's output (`LC_ALL=C`): `<id> is the first bad commit`, or the
/// list of candidates when only skipped commits are left. None: bisecting goes on.
fn parse(stdout: &str) -> Option<Next> {
    for line in stdout.lines() {
        if let Some(id) = line.strip_suffix(" is the first bad commit") {
            if is_commit_id(id) {
                return Some(Next::Found(id.to_string()));
            }
        }
    }
    if stdout.contains("There are only 'skip'ped commits left to test") {
        let candidates = stdout
            .lines()
            .map(str::trim)
            .filter(|l| is_commit_id(l))
            .map(str::to_string)
            .collect();
        return Some(Next::OnlySkipped(candidates));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bisect::answers::SkipReason;
    use crate::test_support::sh;

    /// c1..c7, one file; returns the ids, oldest first.
    fn repo(dir: &Path) -> Vec<String> {
        sh(
            dir,
            "git init -q && for i in 1 2 3 4 5 6 7; do echo $i > f; git add f; \
             git -c user.name=t -c user.email=t@t commit -qm c$i; done",
        );
        let ids = sh(dir, "git rev-list --reverse HEAD");
        ids.lines().map(str::to_string).collect()
    }

    #[test]
    fn git_finds_the_first_bad_commit_and_the_repository_never_moves() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("repo");
        std::fs::create_dir(&path).unwrap();
        let ids = repo(&path);
        let user = UserRepo { path: path.clone() };
        let before = sh(&path, "git rev-parse HEAD; git status --porcelain; ls .git");
        assert!(user.is_ancestor(&ids[0], &ids[6]).unwrap());
        assert!(!user.is_ancestor(&ids[6], &ids[0]).unwrap());
        assert_eq!(user.count(&ids[0], &ids[6]).unwrap(), 6);
        assert_eq!(user.subject(&ids[4]), "c5");
        assert_eq!(user.parent(&ids[4]).as_deref(), Some(ids[3].as_str()));
        assert_eq!(user.parent(&ids[0]), None);

        // c5 changed the answers. Good: c1..c4, bad: c5..c7; c3 does not build.
        let runs = tmp.path().join("runs");
        std::fs::create_dir(&runs).unwrap();
        let (session, mut next) = Session::start(&user, &runs, &ids[0], &ids[6]).unwrap();
        let mut tested = Vec::new();
        let found = loop {
            match next {
                Next::Test(c) => {
                    let i = ids.iter().position(|x| *x == c).unwrap();
                    let verdict = match i {
                        2 => Verdict::Skip {
                            why: SkipReason::BuildFailed,
                        },
                        i if i >= 4 => Verdict::Bad,
                        _ => Verdict::Good,
                    };
                    tested.push(i);
                    next = session.mark(&c, verdict).unwrap();
                }
                Next::Found(c) => break c,
                Next::OnlySkipped(c) => panic!("{c:?}"),
            }
        };
        assert_eq!(found, ids[4], "tested {tested:?}");
        assert!(session.log().contains("first bad commit"));
        let private = session.dir.path().to_path_buf();
        drop(session);
        assert!(!private.exists());
        assert_eq!(
            sh(&path, "git rev-parse HEAD; git status --porcelain; ls .git"),
            before
        );
        assert_eq!(sh(&path, "git for-each-ref refs/bisect"), "");
    }

    #[test]
    fn only_skipped_commits_left_gives_the_candidates() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("repo");
        std::fs::create_dir(&path).unwrap();
        let ids = repo(&path);
        let user = UserRepo { path };
        let (session, mut next) = Session::start(&user, tmp.path(), &ids[0], &ids[3]).unwrap();
        let skip = Verdict::Skip {
            why: SkipReason::BuildFailed,
        };
        let candidates = loop {
            match next {
                Next::Test(c) => next = session.mark(&c, skip).unwrap(),
                Next::OnlySkipped(c) => break c,
                Next::Found(c) => panic!("{c}"),
            }
        };
        let mut want = ids[1..=3].to_vec();
        let mut got = candidates;
        want.sort();
        got.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn the_end_is_read_from_git_output() {
        let id = "50ca6467b41996f46707303b04fd3a91f7aa9862";
        assert_eq!(
            parse(&format!("{id} is the first bad commit\ncommit {id}\n")),
            Some(Next::Found(id.into()))
        );
        assert_eq!(
            parse("Bisecting: 2 revisions left to test after this (roughly 2 steps)\n[x] c5\n"),
            None
        );
        let skipped = format!(
            "There are only 'skip'ped commits left to test.\nThe first bad commit could be any of:\n{id}\nWe cannot bisect more!\n"
        );
        assert_eq!(parse(&skipped), Some(Next::OnlySkipped(vec![id.into()])));
    }
}
