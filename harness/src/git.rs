//! git, the one way mmx runs it: kernel trees ([`crate::kernels`]), runtime checkouts
//! ([`crate::runtimes`]) and `mmx bisect` all build their commands here and get the same
//! environment, limit, output and errors. A ground-floor room on top of [`crate::proc`].
//!
//! Every command runs with `LC_ALL=C` (mmx reads git's messages: `is the first bad commit`,
//! `error: patch failed: …`) and without the variables that would point git at another
//! repository, index or object store than the directory it is given.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::proc::{Cancel, Output, Run, RunError};

/// How long one git command may take. The longest mmx runs are a `clone --shared` and a
/// `checkout` of a whole kernel tree (90,000 files: a minute on a slow disk) and a `git am` of a
/// long series; past half an hour git is stuck (a lock file another git holds, a hook waiting
/// for input), and the step fails saying so.
pub const LIMIT: Duration = Duration::from_secs(30 * 60);

/// Variables that would point git somewhere else than the directory it is given.
const REDIRECTS: [&str; 7] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
];

/// One git command, built then run once.
pub struct Git<'a> {
    command: Command,
    /// `git` and its arguments, for messages.
    what: Vec<OsString>,
    stdin: Option<&'a [u8]>,
    cancel: Option<&'a Cancel>,
}

impl<'a> Git<'a> {
    /// git where its arguments say (`clone` with absolute paths).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Git<'a> {
        Git::bare_command()
    }

    /// `git -C dir …`: in the repository (or bare repository) at `dir`.
    pub fn in_repo(dir: &Path) -> Git<'a> {
        let mut g = Git::bare_command();
        g.command.arg("-C").arg(dir);
        g
    }

    /// git run in `dir` without looking for a repository above it (`GIT_CEILING_DIRECTORIES`):
    /// `git apply` patches plain files there like patch(1) does.
    pub fn outside_repo(dir: &Path) -> Git<'a> {
        let mut g = Git::bare_command();
        g.command
            .current_dir(dir)
            .env("GIT_CEILING_DIRECTORIES", dir.parent().unwrap_or(dir));
        g
    }

    fn bare_command() -> Git<'a> {
        let mut command = Command::new("git");
        command.env("LC_ALL", "C");
        for v in REDIRECTS {
            command.env_remove(v);
        }
        Git {
            command,
            what: vec!["git".into()],
            stdin: None,
            cancel: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg.as_ref());
        self.what.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Written to git's stdin (a mail for `git am`).
    pub fn stdin(mut self, bytes: &'a [u8]) -> Self {
        self.stdin = Some(bytes);
        self
    }

    /// Also stop git when `cancel` is set.
    pub fn cancel(mut self, cancel: &'a Cancel) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// `git …` as the user would type it (lossy), for messages.
    pub fn what(&self) -> String {
        let words: Vec<String> = self
            .what
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        words.join(" ")
    }

    /// The command as a [`Run`] under [`LIMIT`], for a caller that reads git's output its own
    /// way (a build log).
    pub fn into_run(self) -> Run<'a> {
        let mut run = Run::new(self.command, LIMIT);
        if let Some(bytes) = self.stdin {
            run = run.stdin(bytes);
        }
        if let Some(c) = self.cancel {
            run = run.cancel(c);
        }
        run
    }

    /// Run it: `Ok` whatever the exit status (the caller reads it), `Err` when git could not
    /// run or was stopped.
    pub fn run(self) -> Result<Output, GitError> {
        let what = self.what();
        self.into_run()
            .run()
            .map_err(|source| GitError::Run { what, source })
    }

    /// Run it and require success: its stdout, trimmed.
    pub fn ok(self) -> Result<String, GitError> {
        let what = self.what();
        let out = self.run()?;
        if out.success() {
            Ok(out.stdout.trim().to_string())
        } else {
            Err(GitError::Failed {
                what,
                status: out.status.to_string(),
                stderr: out.stderr.trim().to_string(),
                stdout: out.stdout.trim().to_string(),
            })
        }
    }
}

/// A git command that did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// It could not run, or was stopped (its limit, a cancellation).
    #[error("{what}: {source} (is git installed?)")]
    Run {
        what: String,
        #[source]
        source: RunError,
    },
    /// It ran and failed.
    #[error("{what}: {status}: {}", if stderr.is_empty() { stdout } else { stderr })]
    Failed {
        what: String,
        status: String,
        stdout: String,
        stderr: String,
    },
}

impl GitError {
    /// What git printed: its stderr (or stdout, when stderr is empty), or why it did not run.
    pub fn detail(&self) -> String {
        match self {
            GitError::Run { source, .. } => source.to_string(),
            GitError::Failed { stdout, stderr, .. } if stderr.is_empty() => stdout.clone(),
            GitError::Failed { stderr, .. } => stderr.clone(),
        }
    }
}

/// The commit `rev` names in the repository at `repo` (never changing it): `Ok(None)` when it
/// names no commit there.
pub fn resolve_commit(repo: &Path, rev: &str) -> Result<Option<String>, GitError> {
    let out = Git::in_repo(repo)
        .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
        .arg(format!("{rev}^{{commit}}"))
        .run()?;
    let id = out.stdout.trim();
    Ok((out.success() && id.len() >= 40).then(|| id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::sh;

    #[test]
    fn revisions_resolve_and_failures_carry_gits_words() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path();
        sh(
            repo,
            "git init -q && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m one",
        );
        let head = resolve_commit(repo, "HEAD").unwrap().unwrap();
        assert_eq!(head, sh(repo, "git rev-parse HEAD"));
        assert_eq!(resolve_commit(repo, "nonexistent").unwrap(), None);
        assert_eq!(
            resolve_commit(repo, "--help").unwrap(),
            None,
            "not an option"
        );
        let subject = Git::in_repo(repo)
            .args(["log", "-1", "--format=%s"])
            .ok()
            .unwrap();
        assert_eq!(subject, "one");
        let e = Git::in_repo(repo)
            .args(["show", "nonexistent"])
            .ok()
            .unwrap_err();
        assert!(
            matches!(&e, GitError::Failed { what, .. } if what == "git show nonexistent"),
            "{e}"
        );
        assert!(e.detail().contains("nonexistent"), "{e}");
    }

    #[test]
    fn outside_a_repository_git_never_finds_the_one_above() {
        let tmp = tempfile::tempdir().unwrap();
        sh(tmp.path(), "git init -q && mkdir -p src/module");
        let inside = Git::in_repo(&tmp.path().join("src"))
            .args(["rev-parse", "--git-dir"])
            .run()
            .unwrap();
        assert!(inside.success(), "{}", inside.stderr);
        let outside = Git::outside_repo(&tmp.path().join("src/module"))
            .args(["rev-parse", "--git-dir"])
            .run()
            .unwrap();
        assert!(!outside.success(), "{}", outside.stdout);
    }
}
