//! Writing kernels.lock, the way cargo writes Cargo.lock: an entry a recipe lacks is resolved on
//! first use ([`complete`]: `mmx run`, `mmx kernels fetch` and `build`) and written, unless the
//! lock is frozen (`--locked`, `CI=true`); an entry that is there moves only when someone asks
//! (`mmx kernels lock --update`, [`relock`]).

use std::path::Path;

use super::lock::{relock_command, LockFile, LockedKernel};
use super::recipe::{Recipe, RecipeSource};
use super::source::{SourceBase, SourceSpec};
use super::srcbuild::locked_source;
use super::KernelError;
use crate::debian::lock::shown;
use crate::debian::{Apt, Cache, DebianError, LockDocument, LockPolicy};
use crate::events::{Note, Sink};

/// Why a recipe needs an entry written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanting {
    /// The lock has no entry of that name.
    Missing,
    /// The entry was resolved for another package or suite: the recipe changed since.
    RecipeChanged,
}

impl Wanting {
    fn verb(self) -> &'static str {
        match self {
            Wanting::Missing => "added",
            Wanting::RecipeChanged => "updated (the recipe changed)",
        }
    }
}

/// Whether `recipe` needs an entry `lock` does not have. Only Debian recipes (binary, or a
/// `[source]` recipe on a Debian source package) are locked; `[path]` kernels and git trees
/// are what they are.
pub fn wants_entry(recipe: &Recipe, lock: &LockFile) -> Option<Wanting> {
    let usable = match &recipe.source {
        RecipeSource::Debian { suite, package } => {
            lock.entry_for(recipe, package, Some(suite)).is_ok()
        }
        RecipeSource::Build(SourceSpec {
            base: SourceBase::Debian { package, suite },
            ..
        }) => locked_source(recipe, lock, package, suite.as_deref()).is_ok(),
        RecipeSource::Path { .. } | RecipeSource::Build(_) => return None,
    };
    match (usable, lock.get(&recipe.name)) {
        (true, _) => None,
        (false, None) => Some(Wanting::Missing),
        (false, Some(_)) => Some(Wanting::RecipeChanged),
    }
}

/// The lock at `lock_path`, with an entry for every recipe of `recipes` that is locked at all.
/// Frozen: a recipe without one is an error naming it and `mmx kernels lock`, and nothing is
/// written. Otherwise the entries wanting are resolved against the archive, written to the lock
/// file atomically, and each is said in one line on stderr.
pub fn complete(
    lock_path: &Path,
    recipes: &[&Recipe],
    policy: LockPolicy,
    cache: &Cache,
    sink: &dyn Sink,
) -> Result<LockFile, KernelError> {
    let lock = LockFile::load(lock_path)?;
    let wanting: Vec<&Recipe> = recipes
        .iter()
        .copied()
        .filter(|r| wants_entry(r, &lock).is_some())
        .collect();
    if wanting.is_empty() {
        return Ok(lock);
    }
    if let LockPolicy::Locked(frozen) = policy {
        let names: Vec<String> = wanting.iter().map(|r| format!("`{}`", r.name)).collect();
        return Err(DebianError::Unlocked {
            what: format!(
                "kernel{} {}",
                if names.len() == 1 { "" } else { "s" },
                names.join(", ")
            ),
            lock: lock_path.to_path_buf(),
            frozen,
            fix: relock_command(lock_path, None),
        }
        .into());
    }
    let _apt_lock = cache.lock("apt")?;
    let apt = Apt::new(cache)?;
    apt.update()?;
    // Read again under the apt lock: another mmx may have written it while this one waited.
    let mut lock = LockFile::load(lock_path)?;
    let mut said = Vec::new();
    for recipe in wanting {
        let Some(why) = wants_entry(recipe, &lock) else {
            continue;
        };
        let entry = LockedKernel::resolve(&apt, recipe)
            .map_err(|e| KernelError::Kernel {
                name: recipe.name.clone(),
                source: Box::new(e),
            })?
            .ok_or_else(|| KernelError::Layout {
                detail: format!("kernel `{}` is not a recipe mmx locks", recipe.name),
            })?;
        if let Some(p) = entry.packages.first() {
            said.push(format!(
                "{}: {} {} = {} ({}) (resolved on first use)",
                shown(lock_path).display(),
                why.verb(),
                recipe.name,
                p.name,
                p.version
            ));
        }
        lock.upsert(entry);
    }
    lock.save(lock_path)?;
    for line in said {
        sink.note(Note::info(line));
    }
    Ok(lock)
}

/// What `mmx kernels lock` resolves besides the entries recipes lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update<'a> {
    /// Nothing: entries that are there stay as they are.
    None,
    /// Every locked recipe, to what the archive carries now.
    All,
    /// These recipes.
    Named(&'a [String]),
}

/// How one entry came out of [`relock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relocked {
    pub name: String,
    /// `new`, `updated`, `unchanged`, or `removed (no recipe)`.
    pub change: &'static str,
    /// `name=version` of each package (empty when removed).
    pub packages: Vec<String>,
}

/// `mmx kernels lock`: every entry a recipe lacks, and the ones `update` names, resolved
/// against the archive; entries without a recipe removed; the lock written. The archive is
/// asked only when something is to be resolved.
pub fn relock(
    recipes: &[Recipe],
    lock_path: &Path,
    cache: &Cache,
    update: Update<'_>,
    sink: &dyn Sink,
) -> Result<Vec<Relocked>, KernelError> {
    let old = LockFile::load(lock_path)?;
    let moving = |r: &Recipe| match update {
        Update::None => false,
        Update::All => true,
        Update::Named(names) => names.contains(&r.name),
    };
    let resolve: Vec<&Recipe> = recipes
        .iter()
        .filter(|r| wants_entry(r, &old).is_some() || (moving(r) && locks(r)))
        .collect();
    let mut new = LockFile::default();
    let mut out = Vec::new();
    let mut fresh = Vec::new();
    if !resolve.is_empty() {
        let _apt_lock = cache.lock("apt")?;
        let apt = Apt::new(cache)?;
        sink.note(Note::info(format!(
            "apt-get update (private lists in {})",
            cache.root().join("apt").display()
        )));
        apt.update()?;
        for r in &resolve {
            let entry = LockedKernel::resolve(&apt, r).map_err(|e| KernelError::Kernel {
                name: format!("{} ({})", r.name, r.file.display()),
                source: Box::new(e),
            })?;
            fresh.extend(entry);
        }
    }
    for r in recipes {
        let entry = match fresh.iter().find(|e| e.name == r.name) {
            Some(e) => e.clone(),
            None => match old.get(&r.name) {
                Some(e) if locks(r) => e.clone(),
                _ => continue,
            },
        };
        let change = match old.get(&r.name) {
            None => "new",
            Some(o) if *o == entry => "unchanged",
            Some(_) => "updated",
        };
        out.push(Relocked {
            name: r.name.clone(),
            change,
            packages: entry.packages.iter().map(|p| p.spec()).collect(),
        });
        new.upsert(entry);
    }
    for gone in old.kernels.iter().filter(|o| new.get(&o.name).is_none()) {
        out.push(Relocked {
            name: gone.name.clone(),
            change: "removed (no recipe)",
            packages: Vec::new(),
        });
    }
    new.save(lock_path)?;
    Ok(out)
}

/// Whether a recipe has a lock entry at all.
fn locks(recipe: &Recipe) -> bool {
    matches!(
        &recipe.source,
        RecipeSource::Debian { .. }
            | RecipeSource::Build(SourceSpec {
                base: SourceBase::Debian { .. },
                ..
            })
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::{Frozen, LockedPackage};
    use crate::kernels::recipe::parse_recipe;

    fn recipe(name: &str, text: &str) -> Recipe {
        parse_recipe(Path::new(&format!("kernels/{name}.toml")), text).unwrap()
    }

    const TRIXIE: &str = "[debian]\nsuite = \"trixie\"\npackage = \"linux-image-cloud-amd64\"\n";

    fn entry(name: &str, suite: &str) -> LockedKernel {
        LockedKernel {
            name: name.into(),
            suite: suite.into(),
            requested: "linux-image-cloud-amd64".into(),
            release: "6.12.1-cloud-amd64".into(),
            packages: vec![LockedPackage {
                name: "linux-image-6.12.1-cloud-amd64".into(),
                version: "6.12.1-1".into(),
                sha256: "0".repeat(64),
                filename: "pool/x.deb".into(),
                size: 1,
            }],
        }
    }

    #[test]
    fn only_debian_recipes_want_entries_and_a_changed_recipe_wants_a_new_one() {
        let mut lock = LockFile::default();
        let k = recipe("k", TRIXIE);
        assert_eq!(wants_entry(&k, &lock), Some(Wanting::Missing));
        lock.upsert(entry("k", "trixie"));
        assert_eq!(wants_entry(&k, &lock), None);
        lock.upsert(entry("k", "bookworm"));
        assert_eq!(wants_entry(&k, &lock), Some(Wanting::RecipeChanged));
        let path = recipe("p", "[path]\nvmlinuz = \"/boot/vmlinuz\"\n");
        assert_eq!(wants_entry(&path, &lock), None);
        let src = recipe("s", "[source]\ndebian = \"linux-source-6.12\"\n");
        assert_eq!(wants_entry(&src, &lock), Some(Wanting::Missing));
    }

    /// Frozen, a missing entry is an error naming the recipe, the lock and the command, and
    /// neither the archive nor the lock file is touched (the cache does not even exist).
    #[test]
    fn a_frozen_lock_refuses_to_grow_and_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let lock_path = dir.path().join("kernels/kernels.lock");
        let k = recipe("new-one", TRIXIE);
        let cache = Cache::at(dir.path().join("no-cache"));
        let err = complete(
            &lock_path,
            &[&k],
            LockPolicy::Locked(Frozen::Ci),
            &cache,
            &crate::events::Discard,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("kernel `new-one`")
                && err.contains("CI=true")
                && err.contains(&format!("mmx kernels lock --root {}", dir.path().display())),
            "{err}"
        );
        assert!(!lock_path.exists() && !dir.path().join("no-cache").exists());
        // Nothing wanting: nothing asked, frozen or not.
        let path = recipe("p", "[path]\nvmlinuz = \"/boot/vmlinuz\"\n");
        let lock = complete(
            &lock_path,
            &[&path],
            LockPolicy::Locked(Frozen::Flag),
            &cache,
            &crate::events::Discard,
        );
        assert_eq!(lock.unwrap(), LockFile::default());
    }
}
