//! `mmx kernels lock | fetch | list`.

use std::path::Path;

use anyhow::Context;

use super::apt::Apt;
use super::lock::{LockFile, LockedKernel};
use super::recipe::{load_recipes, Recipe, RecipeSource};
use super::{cached, ensure, Cache, KernelError};

/// The `mmx kernels` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum KernelsCmd {
    /// Resolve every Debian recipe to exact packages and rewrite kernels/kernels.lock.
    Lock,
    /// Download and extract kernels into the cache (all recipes, or the ones named).
    Fetch {
        /// Recipe names (file stems in kernels/), e.g. debian-6.12.
        names: Vec<String>,
    },
    /// Show each recipe, what it is locked to, and whether it is in the cache.
    List,
}

/// Run a `mmx kernels` subcommand for the checkout at `repo_root`.
pub fn run_cmd(cmd: KernelsCmd, repo_root: &Path) -> anyhow::Result<()> {
    let dir = repo_root.join("kernels");
    let lock_path = dir.join("kernels.lock");
    let recipes = load_recipes(&dir)?;
    let cache = Cache::from_env()?;
    match cmd {
        KernelsCmd::Lock => lock(&recipes, &lock_path, &cache),
        KernelsCmd::Fetch { names } => {
            let lock = LockFile::load(&lock_path)?;
            for recipe in select(&recipes, &names)? {
                let k = ensure(recipe, &lock, &cache)?;
                let size = std::fs::metadata(&k.vmlinuz).map_or(0, |m| m.len());
                let t = k.timings;
                println!(
                    "{:<14} {:<32} {} modules, vmlinuz {:.1} MiB, {} (download {:.1}s, extract {:.1}s, total {:.2}s)",
                    k.name,
                    k.release,
                    k.modules.len(),
                    size as f64 / (1024.0 * 1024.0),
                    if t.cached { "cached" } else { "fetched" },
                    t.download.as_secs_f64(),
                    t.extract.as_secs_f64(),
                    t.total.as_secs_f64(),
                );
                if !k.unavailable.is_empty() {
                    println!(
                        "{:<14} not in this kernel: {}",
                        "",
                        k.unavailable.join(", ")
                    );
                }
            }
            Ok(())
        }
        KernelsCmd::List => {
            let lock = LockFile::load(&lock_path)?;
            println!("{:<14} {:<40} {:<34} CACHED", "NAME", "SOURCE", "LOCKED");
            for r in &recipes {
                let locked = match &r.source {
                    RecipeSource::Path { .. } => "(path: not locked)".to_string(),
                    RecipeSource::Debian { .. } => lock
                        .get(&r.name)
                        .and_then(|l| l.packages.first())
                        .map_or("(not locked)".to_string(), |p| p.version.clone()),
                };
                let is_cached = match cached(r, &lock, &cache) {
                    Some(k) => format!("yes ({})", k.release),
                    None => "no".to_string(),
                };
                println!(
                    "{:<14} {:<40} {:<34} {is_cached}",
                    r.name,
                    r.source_label(),
                    locked
                );
            }
            Ok(())
        }
    }
}

/// The named recipes, or all of them.
fn select<'a>(recipes: &'a [Recipe], names: &[String]) -> Result<Vec<&'a Recipe>, KernelError> {
    if names.is_empty() {
        return Ok(recipes.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            recipes
                .iter()
                .find(|r| &r.name == n)
                .ok_or_else(|| KernelError::UnknownKernel {
                    name: n.clone(),
                    known: recipes
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        })
        .collect()
}

fn lock(recipes: &[Recipe], lock_path: &Path, cache: &Cache) -> anyhow::Result<()> {
    let old = LockFile::load(lock_path)?;
    let mut new = LockFile::default();
    {
        let _apt_lock = cache.lock("apt")?;
        let apt = Apt::new(cache)?;
        eprintln!(
            "apt-get update (private lists in {})",
            cache.root().join("apt").display()
        );
        apt.update()?;
        for r in recipes {
            let Some(entry) = LockedKernel::resolve(&apt, r)
                .with_context(|| format!("kernel `{}` ({})", r.name, r.file.display()))?
            else {
                continue;
            };
            let change = match old.get(&r.name) {
                None => "new",
                Some(o) if *o == entry => "unchanged",
                Some(_) => "updated",
            };
            let pkgs: Vec<_> = entry
                .packages
                .iter()
                .map(|p| format!("{}={}", p.name, p.version))
                .collect();
            println!("{:<14} {:<10} {}", r.name, change, pkgs.join(" "));
            new.upsert(entry);
        }
    }
    for gone in old.kernels.iter().filter(|o| new.get(&o.name).is_none()) {
        println!("{:<14} removed (no recipe)", gone.name);
    }
    new.save(lock_path)?;
    println!("wrote {}", lock_path.display());
    Ok(())
}
