//! Writing runtimes.lock as kernels.lock is written (`kernels::relock`): the entries a
//! `[[runtimes]]` recipe needs — the Go toolchain, and containerd's sources when they come from
//! Debian — are resolved on first use ([`complete`]) and written, unless the lock is frozen
//! (`--locked`, `CI=true`); entries that are there move only when asked (`mmx runtimes lock
//! --update`, [`relock`]).

use std::collections::BTreeSet;
use std::path::Path;

use protocol::RuntimeName;

use super::lock::{LockedSources, LockedToolchain, RuntimesLock, GO_SUITE};
use super::program::ALL;
use super::recipe::{GoSource, RuntimeRecipe, RuntimeSource, DEFAULT_SUITE};
use super::RuntimeError;
use crate::debian::lock::shown;
use crate::debian::{Apt, Cache, DebianError, LockDocument, LockPolicy};
use crate::events::{Note, Sink};
use crate::results::GoProgram;

/// One entry of runtimes.lock.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wanted {
    /// The Go toolchain every Go runtime build uses.
    Toolchain,
    /// A project's sources: a Debian package in a suite.
    Sources {
        program: GoProgram,
        package: String,
        suite: String,
    },
}

impl Wanted {
    /// A program's default sources, which `mmx runtimes lock` locks even when no recipe names
    /// them.
    pub fn default_sources(program: GoProgram) -> Wanted {
        Wanted::Sources {
            program,
            package: program.default_package().to_string(),
            suite: DEFAULT_SUITE.to_string(),
        }
    }

    /// What a message calls it: `the Go toolchain (golang-go in sid)`.
    pub fn describe(&self) -> String {
        match self {
            Wanted::Toolchain => format!("the Go toolchain (golang-go in {GO_SUITE})"),
            Wanted::Sources {
                program,
                package,
                suite,
            } => format!("{}'s sources ({package} in {suite})", program.project()),
        }
    }

    fn is_in(&self, lock: &RuntimesLock) -> bool {
        match self {
            Wanted::Toolchain => lock.go.is_some(),
            Wanted::Sources {
                program,
                package,
                suite,
            } => lock.sources(*program, package, suite).is_some(),
        }
    }

    /// Resolve it against the archive into `lock` (the caller holds the apt lock and ran
    /// `apt-get update`); one line for the terminal: what it is now.
    fn resolve_into(&self, apt: &Apt, lock: &mut RuntimesLock) -> Result<String, RuntimeError> {
        match self {
            Wanted::Toolchain => {
                let go = LockedToolchain::resolve(apt, GO_SUITE)?;
                let now = go.packages.first().map(|p| p.spec()).unwrap_or_default();
                lock.go = Some(go);
                Ok(now)
            }
            Wanted::Sources {
                program,
                package,
                suite,
            } => {
                let c = LockedSources::resolve(apt, *program, package, suite)?;
                let now = format!("{package}={}", c.version);
                lock.upsert(*program, c);
                Ok(now)
            }
        }
    }
}

/// The entries `recipe` needs: none for a binary, the toolchain for a checkout, and the
/// toolchain and the sources for Debian sources.
pub fn needs(recipe: &RuntimeRecipe) -> Vec<Wanted> {
    match &recipe.source {
        RuntimeSource::Binary(_) => Vec::new(),
        RuntimeSource::Go {
            source: GoSource::Tree { .. },
            ..
        } => vec![Wanted::Toolchain],
        RuntimeSource::Go {
            program,
            source: GoSource::Debian { package, suite },
        } => vec![
            Wanted::Toolchain,
            Wanted::Sources {
                program: *program,
                package: package.clone(),
                suite: suite.clone(),
            },
        ],
    }
}

/// The entries of `wanted` that `lock` lacks, each once, in order.
pub fn missing(lock: &RuntimesLock, wanted: impl IntoIterator<Item = Wanted>) -> Vec<Wanted> {
    let set: BTreeSet<Wanted> = wanted.into_iter().filter(|w| !w.is_in(lock)).collect();
    set.into_iter().collect()
}

/// The command that writes `lock`'s entries, as a user types it where mmx runs: `mmx runtimes
/// lock`, `--recipes` naming the matrix when it is not `./matrix.toml` (runtimes/ is looked for
/// beside it, by `mmx run` and by this command alike), `--root` (last) when the lock is
/// elsewhere.
pub fn relock_command(lock: &Path, recipes: Option<&Path>, update: bool) -> String {
    let here = std::env::current_dir().ok();
    let is_here =
        |d: &Path| d.as_os_str().is_empty() || d == Path::new(".") || Some(d) == here.as_deref();
    let root = lock
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new(""));
    let update = if update { " --update" } else { "" };
    let mut args = String::new();
    match recipes {
        Some(file) => {
            let dir = file.parent().unwrap_or(Path::new(""));
            if !is_here(dir) || file.file_name() != Some("matrix.toml".as_ref()) {
                let shown = here
                    .as_deref()
                    .and_then(|h| file.strip_prefix(h).ok())
                    .unwrap_or(file);
                args.push_str(&format!(" --recipes {}", shown.display()));
            }
            if root != dir && !(is_here(root) && is_here(dir)) {
                return format!("mmx runtimes lock{args}{update} --root {}", root.display());
            }
        }
        None if !is_here(root) => {
            return format!("mmx runtimes lock{update} --root {}", root.display());
        }
        None => {}
    }
    format!("mmx runtimes lock{args}{update}")
}

/// Give every runtime of `used` the entries its recipe needs in the lock at `lock_path`
/// before anything is built: resolved on first use, written atomically and each said in one
/// line; or, frozen, an error naming what is missing and `mmx runtimes lock`. `recipes_file`
/// (the matrix) is only named in that command.
pub fn complete(
    lock_path: &Path,
    recipes: &[RuntimeRecipe],
    used: &BTreeSet<RuntimeName>,
    recipes_file: &Path,
    policy: LockPolicy,
    sink: &dyn Sink,
) -> Result<(), RuntimeError> {
    let wanted = || {
        recipes
            .iter()
            .filter(|r| used.contains(&r.name))
            .flat_map(needs)
    };
    if wanted().next().is_none() {
        return Ok(());
    }
    let lock = RuntimesLock::load(lock_path)?;
    let lacking = missing(&lock, wanted());
    if lacking.is_empty() {
        return Ok(());
    }
    if let LockPolicy::Locked(frozen) = policy {
        let what: Vec<String> = lacking.iter().map(Wanted::describe).collect();
        return Err(DebianError::Unlocked {
            what: what.join(" and "),
            lock: lock_path.to_path_buf(),
            frozen,
            fix: relock_command(lock_path, Some(recipes_file), false),
        }
        .into());
    }
    let cache = Cache::from_env()?;
    let _apt_lock = cache.lock("apt")?;
    let apt = Apt::new(&cache)?;
    apt.update()?;
    // Read again under the apt lock: another mmx may have written it while this one waited.
    let mut lock = RuntimesLock::load(lock_path)?;
    let mut said = Vec::new();
    for w in missing(&lock, wanted()) {
        let now = w.resolve_into(&apt, &mut lock)?;
        said.push(format!(
            "{}: added {} = {now} (resolved on first use)",
            shown(lock_path).display(),
            w.describe()
        ));
    }
    lock.save(lock_path)?;
    for line in said {
        sink.note(Note::info(line));
    }
    Ok(())
}

/// How one entry came out of [`relock`]: `go`, `containerd` or `storage`, `new`/`updated`/`unchanged`,
/// and what it pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relocked {
    pub kind: &'static str,
    pub change: &'static str,
    pub pins: String,
}

/// `mmx runtimes lock`: the toolchain, each program's default sources and every Debian source of
/// `recipes` that the lock lacks resolved and added; with `update`, all of them resolved again
/// (and entries no recipe names dropped). The archive is asked only when something is to be
/// resolved.
pub fn relock(
    recipes: &[RuntimeRecipe],
    lock_path: &Path,
    cache: &Cache,
    update: bool,
    sink: &dyn Sink,
) -> Result<Vec<Relocked>, RuntimeError> {
    let old = RuntimesLock::load(lock_path)?;
    let wanted = ALL
        .into_iter()
        .map(Wanted::default_sources)
        .chain(std::iter::once(Wanted::Toolchain))
        .chain(recipes.iter().flat_map(needs));
    let lacking = missing(&old, wanted);
    let new = if update || !lacking.is_empty() {
        let _apt_lock = cache.lock("apt")?;
        let apt = Apt::new(cache)?;
        sink.note(Note::info(format!(
            "apt-get update (private lists in {})",
            cache.root().join("apt").display()
        )));
        apt.update()?;
        if update {
            RuntimesLock::resolve(&apt, recipes)?
        } else {
            let mut new = old.clone();
            for w in &lacking {
                w.resolve_into(&apt, &mut new)?;
            }
            new
        }
    } else {
        old.clone()
    };
    let mut out = Vec::new();
    if let Some(go) = &new.go {
        out.push(Relocked {
            kind: "go",
            change: match &old.go {
                None => "new",
                Some(o) if o == go => "unchanged",
                Some(_) => "updated",
            },
            pins: go
                .packages
                .iter()
                .map(|p| p.spec())
                .collect::<Vec<_>>()
                .join(" "),
        });
    }
    for program in ALL {
        let entries = match program {
            GoProgram::Containerd => &new.containerd,
            GoProgram::Storage => &new.storage,
        };
        for c in entries {
            out.push(Relocked {
                kind: program.key(),
                change: match old.sources(program, &c.requested, &c.suite) {
                    None => "new",
                    Some(o) if o == c => "unchanged",
                    Some(_) => "updated",
                },
                pins: format!(
                    "{} {}={} (+{} packages {} imports)",
                    c.suite,
                    c.requested,
                    c.version,
                    c.packages.len().saturating_sub(1),
                    program.mount_code()
                ),
            });
        }
    }
    new.save(lock_path)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::Frozen;
    use crate::runtimes::recipe::parse_recipes;

    const RECIPES: &str = "[[runtimes]]\nname = \"c\"\ncontainerd = { debian = \"golang-github-containerd-containerd-dev\" }\n\n[[runtimes]]\nname = \"b\"\nbinary = \"/bin/true\"\n";

    #[test]
    fn a_recipe_needs_the_toolchain_and_its_sources_once() {
        let recipes = parse_recipes(Path::new("m.toml"), RECIPES).unwrap();
        let all = missing(&RuntimesLock::default(), recipes.iter().flat_map(needs));
        assert_eq!(
            all,
            vec![
                Wanted::Toolchain,
                Wanted::default_sources(GoProgram::Containerd)
            ]
        );
        assert!(needs(&recipes[1]).is_empty(), "a binary needs no lock");
    }

    /// Frozen, a used runtime without its entries is an error naming them and a command that
    /// works from here; the lock file (and its directory) are not made.
    #[test]
    fn a_frozen_lock_refuses_to_grow_and_names_a_command_that_works() {
        let dir = tempfile::tempdir().unwrap();
        let matrix = dir.path().join("m.toml");
        let lock_path = dir.path().join("runtimes/runtimes.lock");
        let recipes = parse_recipes(&matrix, RECIPES).unwrap();
        let used: BTreeSet<RuntimeName> = ["c".parse().unwrap()].into();
        let err = complete(
            &lock_path,
            &recipes,
            &used,
            &matrix,
            LockPolicy::Locked(Frozen::Flag),
            &crate::events::Discard,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("the Go toolchain")
                && err.contains("golang-github-containerd-containerd-dev in sid")
                && err.contains("--locked")
                && err.contains(&format!("mmx runtimes lock --recipes {}", matrix.display())),
            "{err}"
        );
        assert!(!dir.path().join("runtimes").exists());
        // A binary alone needs nothing, frozen or not.
        let used: BTreeSet<RuntimeName> = ["b".parse().unwrap()].into();
        let frozen = LockPolicy::Locked(Frozen::Ci);
        complete(
            &lock_path,
            &recipes,
            &used,
            &matrix,
            frozen,
            &crate::events::Discard,
        )
        .unwrap();
    }

    #[test]
    fn the_relock_command_names_the_matrix_and_the_root_only_when_needed() {
        let here = std::env::current_dir().unwrap();
        let lock = here.join("runtimes/runtimes.lock");
        assert_eq!(
            relock_command(&lock, Some(&here.join("matrix.toml")), false),
            "mmx runtimes lock"
        );
        assert_eq!(
            relock_command(&lock, Some(&here.join("m.toml")), true),
            "mmx runtimes lock --recipes m.toml --update"
        );
        assert_eq!(
            relock_command(
                Path::new("/x/runtimes/runtimes.lock"),
                Some(Path::new("/x/m.toml")),
                false
            ),
            "mmx runtimes lock --recipes /x/m.toml"
        );
        assert_eq!(
            relock_command(Path::new("/x/runtimes/runtimes.lock"), None, false),
            "mmx runtimes lock --root /x"
        );
    }
}
