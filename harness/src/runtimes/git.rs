//! git for runtime builds: a user's checkout at one commit (`rev-parse`, `archive`), and
//! patches applied to extracted sources (`git apply`, which needs no repository). The commands
//! are [`crate::git`]'s; here is what a runtime build makes of their answers.

use std::fs;
use std::path::Path;

use super::RuntimeError;
use crate::debian::extract::extract_tar;
use crate::git::{self, Git};

/// `git rev-parse --verify REV^{commit}` in the user's checkout.
pub(crate) fn resolve_rev(tree: &Path, rev: &str) -> Result<String, RuntimeError> {
    let tree_err = |detail: String| RuntimeError::Tree {
        tree: tree.to_path_buf(),
        detail,
    };
    git::resolve_commit(tree, rev)
        .map_err(|e| tree_err(e.to_string()))?
        .ok_or_else(|| {
            tree_err(format!(
                "`{rev}` is not a commit there (is it a containerd git checkout?)"
            ))
        })
}

/// The checkout's files at `commit` (tracked files only) into `dest`, through an archive file
/// beside it (removed after).
pub(crate) fn git_archive(tree: &Path, commit: &str, dest: &Path) -> Result<(), RuntimeError> {
    let tree_err = |detail: String| RuntimeError::Tree {
        tree: tree.to_path_buf(),
        detail,
    };
    let archive = dest.with_extension("tar");
    Git::in_repo(tree)
        .args(["archive", "--format=tar", "--output"])
        .arg(&archive)
        .arg(commit)
        .ok()
        .map_err(|e| tree_err(e.to_string()))?;
    let file = fs::File::open(&archive).map_err(|e| RuntimeError::io("open", &archive, e))?;
    let name = format!("git archive {commit} of {}", tree.display());
    let unpacked = extract_tar(&name, &mut tar::Archive::new(file), dest, |p| {
        Some(p.into())
    });
    let _ = fs::remove_file(&archive);
    unpacked?;
    if !dest.join("go.mod").is_file() {
        return Err(tree_err(format!(
            "{commit} has no go.mod at its root (not containerd 2.x?)"
        )));
    }
    Ok(())
}

/// `git apply -p1` in containerd's module root, patching plain files like patch(1) does
/// ([`Git::outside_repo`]).
pub(crate) fn apply_patch(patch: &Path, root: &Path, against: &str) -> Result<(), RuntimeError> {
    Git::outside_repo(root)
        .args(["apply", "-p1", "--whitespace=nowarn"])
        .arg(patch)
        .ok()
        .map(drop)
        .map_err(|e| RuntimeError::Patch {
            patch: patch.to_path_buf(),
            against: against.to_string(),
            detail: e.detail(),
        })
}
