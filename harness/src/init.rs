//! `mmx init`: everything a repository needs to run mmx — a commented `matrix.toml`, `kernels/`
//! (recipes and a lock), `runtimes/runtimes.lock` (what `[[runtimes]]` build containerd from)
//! and a GitHub Actions workflow that uses mmx's action.
//!
//! The files are this repository's own (`matrix.toml`, `kernels/`, `examples/github-actions.yml`)
//! compiled in with `include_str!` through `harness/carried/` (links to them in the repository,
//! the files themselves in the package, see `build.rs`), so what `init` writes is exactly what mmx
//! is tested with and can never drift from it; a test checks that every recipe in `kernels/` is
//! carried.

use std::path::{Path, PathBuf};

/// `mmx init`'s files, for `--help`.
pub const FILES_HELP: &str = "Reads:  nothing (the files are compiled into mmx).
Writes: DIR/matrix.toml, DIR/kernels/*.toml, DIR/kernels/kernels.lock, DIR/kernels/README.md,
        DIR/runtimes/runtimes.lock, DIR/.github/workflows/mmx.yml. Refuses to replace any
        existing one unless --force.";

/// How `examples/github-actions.yml` names mmx's action; `init` writes `--action` in its place.
pub const ACTION_PLACEHOLDER: &str = "OWNER/mmx@main";

#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// The repository to set up.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Replace files that already exist.
    #[arg(long)]
    pub force: bool,
    /// The action the workflow uses, `OWNER/REPO@REF`: where your copy of mmx lives on GitHub
    /// (default: derived from the package's repository URL, else a placeholder to edit).
    #[arg(long)]
    pub action: Option<String>,
}

/// One file `init` writes: its path relative to the target directory, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub path: &'static str,
    pub text: String,
}

/// Why `init` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "refusing to overwrite {n} existing file(s): {list} (use --force to replace them)",
        n = paths.len(),
        list = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Exists { paths: Vec<PathBuf> },
    #[error("--action `{0}`: expected OWNER/REPO@REF, e.g. my-org/mmx@v0.1.0")]
    BadAction(String),
    #[error("{op} {path}", path = path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

const HEADER: &str = "\
# Written by `mmx init`. `mmx cells` lists the cells this expands to, `mmx doctor` checks that
# this machine can run them, `mmx run` runs them (`mmx run --help` names every file involved).
# kernels/ beside this file holds the kernel recipes and their lock; runtimes/runtimes.lock pins
# the Go toolchain and containerd's sources that `[[runtimes]]` build from.
#
";

/// The repository's default matrix: what `mmx run` does with no flags.
const MATRIX: &str = include_str!("../carried/matrix.toml");

/// The kernel recipes in `kernels/`: the default matrix's and the fast source-built profile (a
/// test keeps this list equal to `kernels/`).
const RECIPES: &[(&str, &str)] = &[
    (
        "kernels/debian-6.1.toml",
        include_str!("../carried/kernels/debian-6.1.toml"),
    ),
    (
        "kernels/debian-6.12.toml",
        include_str!("../carried/kernels/debian-6.12.toml"),
    ),
    (
        "kernels/debian-6.12-minimal.toml",
        include_str!("../carried/kernels/debian-6.12-minimal.toml"),
    ),
    (
        "kernels/debian-7.x.toml",
        include_str!("../carried/kernels/debian-7.x.toml"),
    ),
];

const LOCK: &str = include_str!("../carried/kernels/kernels.lock");
/// The Go toolchain and containerd sources `[[runtimes]]` recipes build from (`mmx runtimes lock`).
const RUNTIMES_LOCK: &str = include_str!("../carried/runtimes/runtimes.lock");
const KERNELS_README: &str = include_str!("../carried/kernels/README.md");
const WORKFLOW: &str = include_str!("../carried/examples/github-actions.yml");

/// The action to name when `--action` is not given: `OWNER/REPO@v<version>` from the package's
/// GitHub repository URL, else the placeholder (which `init` then tells the user to edit).
pub fn default_action() -> String {
    let repo = env!("CARGO_PKG_REPOSITORY");
    repo.strip_prefix("https://github.com/")
        .map(|r| r.trim_end_matches('/').trim_end_matches(".git"))
        .filter(|r| r.split('/').count() == 2)
        .map_or_else(
            || ACTION_PLACEHOLDER.to_string(),
            |r| format!("{r}@v{}", env!("CARGO_PKG_VERSION")),
        )
}

/// Every file `init` writes, with `action` as the workflow's action.
pub fn templates(action: &str) -> Vec<Template> {
    let mut t = vec![Template {
        path: "matrix.toml",
        text: format!("{HEADER}{MATRIX}"),
    }];
    t.extend(RECIPES.iter().map(|(path, text)| Template {
        path,
        text: (*text).to_string(),
    }));
    t.push(Template {
        path: "kernels/kernels.lock",
        text: LOCK.to_string(),
    });
    t.push(Template {
        path: "kernels/README.md",
        text: KERNELS_README.to_string(),
    });
    t.push(Template {
        path: "runtimes/runtimes.lock",
        text: RUNTIMES_LOCK.to_string(),
    });
    t.push(Template {
        path: ".github/workflows/mmx.yml",
        text: WORKFLOW.replace(ACTION_PLACEHOLDER, action),
    });
    t
}

/// Write `templates` under `dir`. Without `force`, nothing is written if any file exists, and
/// the error names all of them. Returns the paths written.
pub fn write(dir: &Path, templates: &[Template], force: bool) -> Result<Vec<PathBuf>, InitError> {
    let targets: Vec<PathBuf> = templates.iter().map(|t| dir.join(t.path)).collect();
    if !force {
        let existing: Vec<PathBuf> = targets
            .iter()
            .filter(|p| p.symlink_metadata().is_ok())
            .cloned()
            .collect();
        if !existing.is_empty() {
            return Err(InitError::Exists { paths: existing });
        }
    }
    for (t, path) in templates.iter().zip(&targets) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| InitError::Io {
                op: "create_dir_all",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(path, &t.text).map_err(|source| InitError::Io {
            op: "write",
            path: path.clone(),
            source,
        })?;
    }
    Ok(targets)
}

/// Check `OWNER/REPO@REF`.
fn check_action(action: &str) -> Result<(), InitError> {
    let ok = action.split_once('@').is_some_and(|(repo, r#ref)| {
        !r#ref.is_empty()
            && repo.split('/').count() == 2
            && repo.split('/').all(|p| !p.is_empty())
            && !action.chars().any(char::is_whitespace)
    });
    if ok {
        Ok(())
    } else {
        Err(InitError::BadAction(action.to_string()))
    }
}

/// `mmx init`.
pub fn run(args: &InitArgs) -> anyhow::Result<()> {
    let action = args.action.clone().unwrap_or_else(default_action);
    check_action(&action)?;
    let written = write(&args.dir, &templates(&action), args.force)?;
    for p in &written {
        eprintln!("mmx: wrote {}", p.display());
    }
    if action == ACTION_PLACEHOLDER {
        eprintln!(
            "mmx: the workflow uses the action `{ACTION_PLACEHOLDER}`: replace it with the GitHub \
             repository you install mmx from (or run `mmx init --force --action OWNER/REPO@REF`)"
        );
    }
    eprintln!(
        "mmx: next: `mmx doctor` (what this machine can run), `mmx run` (the matrix in QEMU), \
         `mmx run --backend local` (this machine's kernel, as root); results go to runs/, which \
         you may want in .gitignore"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;

    #[test]
    fn every_recipe_in_kernels_is_carried() {
        let dir = crate::agent::workspace_root().join("kernels");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("kernels/")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".toml"))
            .map(|n| format!("kernels/{n}"))
            .collect();
        on_disk.sort();
        let mut carried: Vec<String> = RECIPES.iter().map(|(p, _)| p.to_string()).collect();
        carried.sort();
        assert_eq!(carried, on_disk, "add the new recipe to init.rs RECIPES");
    }

    #[test]
    fn the_written_matrix_loads_with_its_kernels_and_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write(dir.path(), &templates("me/mmx@v1"), false).expect("write");
        assert_eq!(written.len(), templates("x/y@z").len());
        let m = Matrix::load(&dir.path().join("matrix.toml")).expect("matrix");
        let recipes = crate::kernels::load_recipes(&dir.path().join("kernels")).expect("recipes");
        let lock =
            crate::kernels::LockFile::load(&dir.path().join("kernels/kernels.lock")).expect("lock");
        for k in &m.kernels {
            assert!(recipes.iter().any(|r| &r.name == k), "no recipe for {k}");
            assert!(lock.get(k).is_some(), "{k} is not locked");
        }
        assert!(!m.expectations.0.is_empty(), "the known answers came along");
        let wf = std::fs::read_to_string(dir.path().join(".github/workflows/mmx.yml"))
            .expect("workflow");
        assert!(wf.contains("uses: me/mmx@v1"), "{wf}");
        assert!(!wf.contains(ACTION_PLACEHOLDER));
    }

    #[test]
    fn existing_files_are_named_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("matrix.toml"), "mine").expect("write");
        let err = write(dir.path(), &templates("a/b@c"), false).expect_err("refuses");
        let InitError::Exists { paths } = &err else {
            panic!("{err}")
        };
        assert_eq!(paths, &vec![dir.path().join("matrix.toml")]);
        assert!(err.to_string().contains("matrix.toml"), "{err}");
        assert!(!dir.path().join("kernels").exists(), "wrote nothing");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("matrix.toml")).expect("read"),
            "mine"
        );
        write(dir.path(), &templates("a/b@c"), true).expect("--force");
        assert!(std::fs::read_to_string(dir.path().join("matrix.toml"))
            .expect("read")
            .contains("[[scenarios]]"));
    }

    #[test]
    fn actions_are_owner_repo_at_ref() {
        assert!(check_action("me/mmx@v1").is_ok());
        assert!(check_action(ACTION_PLACEHOLDER).is_ok());
        for bad in ["mmx@v1", "me/mmx", "me/mmx@", "/mmx@v1", "me/m x@v1"] {
            assert!(check_action(bad).is_err(), "{bad}");
        }
    }
}
