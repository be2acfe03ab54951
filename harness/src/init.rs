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

use crate::events::{Note, Sink};
use crate::rundir::IoError;

/// `mmx init`'s files, for `--help`.
pub const FILES_HELP: &str = "Reads:  nothing (the files are compiled into mmx).
Writes: DIR/matrix.toml, DIR/kernels/*.toml, DIR/kernels/kernels.lock, DIR/kernels/README.md,
        DIR/runtimes/runtimes.lock, DIR/.github/workflows/mmx.yml. Refuses to replace any
        existing one unless --force; never writes through a symlink below DIR.";

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
    #[error(
        "refusing to write through {path}: a symlink where `mmx init` makes a directory (make it \
         a real directory, or remove it)",
        path = path.display()
    )]
    Symlink { path: PathBuf },
    #[error("--action `{0}`: expected OWNER/REPO@REF, e.g. my-org/mmx@v0.1.0")]
    BadAction(String),
    #[error(transparent)]
    Io(#[from] IoError),
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

/// The kernel recipes in `kernels/`: the default matrix's, Debian's generic 6.12 and the fast
/// source-built profile (a test keeps this list equal to `kernels/`).
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
        "kernels/debian-6.12-generic.toml",
        include_str!("../carried/kernels/debian-6.12-generic.toml"),
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

/// Write `templates` under `dir`, never through a symlink (a shared checkout, or a directory
/// another user can write, may hold one where init writes): each directory below `dir` is
/// opened, or made, one component at a time with `O_NOFOLLOW`, so a symlink where a directory
/// goes is refused with its path; a file is created with `O_CREAT | O_EXCL | O_NOFOLLOW`, or
/// with `force` written to a fresh temporary file beside it and renamed over it (a rename
/// replaces a symlink, never follows it). `dir` itself is the user's to name and is followed.
/// Without `force`, nothing is written if any file exists, and the error names all of them.
/// Returns the paths written.
pub fn write(dir: &Path, templates: &[Template], force: bool) -> Result<Vec<PathBuf>, InitError> {
    let targets: Vec<PathBuf> = templates.iter().map(|t| dir.join(t.path)).collect();
    // Check every path before writing any: a planted symlink or (without --force) an existing
    // file leaves the directory as it was.
    let mut existing = Vec::new();
    if let Some(root) = safe_fs::open_root(dir)? {
        for (t, path) in templates.iter().zip(&targets) {
            let (parents, name) = safe_fs::split(dir, t.path)?;
            if let Some(d) = safe_fs::open_dirs(&root, dir, &parents, false)? {
                if safe_fs::exists(&d, name) {
                    existing.push(path.clone());
                }
            }
        }
    }
    if !force && !existing.is_empty() {
        return Err(InitError::Exists { paths: existing });
    }
    let root = safe_fs::make_root(dir)?;
    for (t, path) in templates.iter().zip(&targets) {
        let (parents, name) = safe_fs::split(dir, t.path)?;
        let d = safe_fs::make_dirs(&root, dir, &parents)?;
        if force {
            safe_fs::replace(&d, name, path, t.text.as_bytes())?;
        } else {
            safe_fs::create_new(&d, name, path, t.text.as_bytes())?;
        }
    }
    Ok(targets)
}

/// The directory walk and file writes of [`write`], relative to open directories (`openat`,
/// `mkdirat`, `renameat`): every name is resolved in a directory mmx holds open, so no symlink
/// below the target directory is followed, whatever is swapped in between two calls.
mod safe_fs {
    use std::io::Write;
    use std::os::fd::{AsFd, OwnedFd};
    use std::path::{Component, Path, PathBuf};

    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    use rustix::io::Errno;

    use super::{InitError, IoError};

    const DIR: OFlags = OFlags::DIRECTORY
        .union(OFlags::RDONLY)
        .union(OFlags::CLOEXEC);

    fn io(op: &'static str, path: &Path, e: Errno) -> InitError {
        IoError::new(op, path, e.into()).into()
    }

    /// A template's directories and file name (`kernels/x.toml` → `[kernels]`, `x.toml`).
    pub fn split<'a>(dir: &Path, rel: &'a str) -> Result<(Vec<&'a str>, &'a str), InitError> {
        let mut parts: Vec<&str> = Vec::new();
        for c in Path::new(rel).components() {
            match c {
                Component::Normal(p) => parts.push(p.to_str().unwrap_or_default()),
                _ => return Err(io("a template path below", &dir.join(rel), Errno::INVAL)),
            }
        }
        let name = parts
            .pop()
            .ok_or_else(|| io("a template path below", &dir.join(rel), Errno::INVAL))?;
        Ok((parts, name))
    }

    /// The target directory; `None` when it does not exist.
    pub fn open_root(dir: &Path) -> Result<Option<OwnedFd>, InitError> {
        match rustix::fs::open(dir, DIR, Mode::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io("open", dir, e)),
        }
    }

    /// The target directory, made with its parents when missing.
    pub fn make_root(dir: &Path) -> Result<OwnedFd, InitError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| InitError::from(IoError::new("create_dir_all", &dir, source)))?;
        rustix::fs::open(dir, DIR, Mode::empty()).map_err(|e| io("open", dir, e))
    }

    /// [`open_dirs`], making the missing ones.
    pub fn make_dirs(root: &OwnedFd, dir: &Path, parents: &[&str]) -> Result<OwnedFd, InitError> {
        open_dirs(root, dir, parents, true)?
            .ok_or_else(|| io("mkdir", &dir.join(parents.join("/")), Errno::NOENT))
    }

    /// `parents` below `root` (which is `dir`), each opened with `O_NOFOLLOW` and made when
    /// missing and `create`; `None` when one is missing and `create` is false. A symlink (or
    /// anything but a directory) where one goes is an error naming it.
    pub fn open_dirs(
        root: &OwnedFd,
        dir: &Path,
        parents: &[&str],
        create: bool,
    ) -> Result<Option<OwnedFd>, InitError> {
        let mut here = dir.to_path_buf();
        let mut cur = root
            .try_clone()
            .map_err(|source| InitError::from(IoError::new("dup", &here, source)))?;
        for name in parents {
            here.push(name);
            let open =
                |at: &OwnedFd| rustix::fs::openat(at, *name, DIR | OFlags::NOFOLLOW, Mode::empty());
            let next = match open(&cur) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if !create => return Ok(None),
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, *name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io("mkdir", &here, e)),
                    }
                    open(&cur).map_err(|e| not_a_dir(&cur, name, &here, e))?
                }
                Err(e) => return Err(not_a_dir(&cur, name, &here, e)),
            };
            cur = next;
        }
        Ok(Some(cur))
    }

    /// Why `name` in `at` did not open as a directory: a symlink is named as one.
    fn not_a_dir(at: &OwnedFd, name: &str, path: &Path, e: Errno) -> InitError {
        match rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                InitError::Symlink {
                    path: path.to_path_buf(),
                }
            }
            _ => io("open directory", path, e),
        }
    }

    /// Whether `name` exists in `at` (a symlink, dangling or not, counts).
    pub fn exists(at: &OwnedFd, name: &str) -> bool {
        rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// `name` in `at`, which must not exist (`O_EXCL` never follows a symlink either).
    pub fn create_new(
        at: &impl AsFd,
        name: &str,
        path: &Path,
        bytes: &[u8],
    ) -> Result<(), InitError> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(at, name, flags, Mode::from_raw_mode(0o644))
            .map_err(|e| io("create", path, e))?;
        std::fs::File::from(fd)
            .write_all(bytes)
            .map_err(|source| InitError::from(IoError::new("write", &path, source)))
    }

    /// `name` in `at` replaced: a fresh temporary file beside it, renamed over it.
    pub fn replace(at: &OwnedFd, name: &str, path: &Path, bytes: &[u8]) -> Result<(), InitError> {
        let tmp = format!(".{name}.mmx-init-{}.tmp", std::process::id());
        let tmp_path: PathBuf = path.with_file_name(&tmp);
        create_new(at, &tmp, &tmp_path, bytes)?;
        rustix::fs::renameat(at, &tmp, at, name).map_err(|e| {
            let _ = rustix::fs::unlinkat(at, &tmp, AtFlags::empty());
            io("rename", path, e)
        })
    }
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

/// `mmx init`: the files written, and what to do next, told to `sink`.
pub fn run(args: &InitArgs, sink: &dyn Sink) -> anyhow::Result<()> {
    let action = args.action.clone().unwrap_or_else(default_action);
    check_action(&action)?;
    let written = write(&args.dir, &templates(&action), args.force)?;
    for p in &written {
        sink.note(Note::info(format!("wrote {}", p.display())));
    }
    if action == ACTION_PLACEHOLDER {
        sink.note(Note::warning(format!(
            "the workflow uses the action `{ACTION_PLACEHOLDER}`: replace it with the GitHub \
             repository you install mmx from (or run `mmx init --force --action OWNER/REPO@REF`)"
        )));
    }
    sink.note(Note::info(
        "next: `mmx doctor` (what this machine can run), `mmx run` (the matrix in QEMU), \
         `mmx run --backend local` (this machine's kernel, as root); results go to runs/, which \
         you may want in .gitignore",
    ));
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
        let lock = <crate::kernels::LockFile as crate::debian::LockDocument>::load(
            &dir.path().join("kernels/kernels.lock"),
        )
        .expect("lock");
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
