//! git for runtime builds: a user's checkout at one commit (`rev-parse`, `archive`), and
//! patches applied to extracted sources (`git apply`, which needs no repository).

use std::path::Path;
use std::process::Command;

use super::RuntimeError;
use crate::debian::extract::extract_tar;

/// `git rev-parse --verify REV^{commit}` in the user's checkout.
pub(crate) fn resolve_rev(tree: &Path, rev: &str) -> Result<String, RuntimeError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(tree)
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ])
        .output()
        .map_err(|e| RuntimeError::Tree {
            tree: tree.to_path_buf(),
            detail: format!("cannot run git: {e}"),
        })?;
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || commit.is_empty() {
        return Err(RuntimeError::Tree {
            tree: tree.to_path_buf(),
            detail: format!("`{rev}` is not a commit there (is it a containerd git checkout?)"),
        });
    }
    Ok(commit)
}

/// The checkout's files at `commit` (tracked files only) into `dest`.
pub(crate) fn git_archive(tree: &Path, commit: &str, dest: &Path) -> Result<(), RuntimeError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(tree)
        .args(["archive", "--format=tar", commit])
        .output()
        .map_err(|e| RuntimeError::Tree {
            tree: tree.to_path_buf(),
            detail: format!("cannot run git archive: {e}"),
        })?;
    if !out.status.success() {
        return Err(RuntimeError::Tree {
            tree: tree.to_path_buf(),
            detail: format!(
                "git archive {commit}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let archive = format!("git archive {commit} of {}", tree.display());
    extract_tar(
        &archive,
        &mut tar::Archive::new(&out.stdout[..]),
        dest,
        |p| Some(p.into()),
    )?;
    if !dest.join("go.mod").is_file() {
        return Err(RuntimeError::Tree {
            tree: tree.to_path_buf(),
            detail: format!("{commit} has no go.mod at its root (not containerd 2.x?)"),
        });
    }
    Ok(())
}

/// `git apply -p1` in containerd's module root. Git never looks for a repository above it
/// (`GIT_CEILING_DIRECTORIES`), so it patches plain files like patch(1) does.
pub(crate) fn apply_patch(patch: &Path, root: &Path, against: &str) -> Result<(), RuntimeError> {
    let ceiling = root.parent().unwrap_or(root);
    let out = Command::new("git")
        .current_dir(root)
        .env("GIT_CEILING_DIRECTORIES", ceiling)
        .args(["apply", "-p1", "--whitespace=nowarn"])
        .arg(patch)
        .output()
        .map_err(|e| RuntimeError::Patch {
            patch: patch.to_path_buf(),
            against: against.to_string(),
            detail: format!("cannot run git apply: {e}"),
        })?;
    if !out.status.success() {
        return Err(RuntimeError::Patch {
            patch: patch.to_path_buf(),
            against: against.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}
