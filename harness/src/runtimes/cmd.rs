//! `mmx runtimes lock | build | list`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::lock::RuntimesLock;
use super::recipe::{load_recipes, RuntimeRecipe};
use super::{ensure, RuntimeSource};
use crate::debian::apt::Apt;
use crate::debian::{Cache, LockDocument};
use crate::events::{Note, Sink};

/// The `mmx runtimes` subcommands. Recipes are the `[[runtimes]]` tables of a matrix file.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum RuntimesCmd {
    /// Resolve the Go toolchain and every Debian containerd the recipes name (and the default,
    /// golang-github-containerd-containerd-dev in sid) into runtimes/runtimes.lock.
    Lock {
        /// The file holding `[[runtimes]]` (optional for lock).
        #[arg(long, alias = "recipe", default_value = "matrix.toml")]
        recipes: PathBuf,
    },
    /// Build the named runtimes (all when none is named) into the cache, offline from the
    /// locked packages, and print where each binary is.
    Build {
        names: Vec<String>,
        #[arg(long, alias = "recipe", default_value = "matrix.toml")]
        recipes: PathBuf,
    },
    /// Show each runtime recipe and its source.
    List {
        #[arg(long, alias = "recipe", default_value = "matrix.toml")]
        recipes: PathBuf,
    },
}

/// Run a `mmx runtimes` subcommand for the checkout at `repo_root` (which holds runtimes/), its
/// answer and notes into `sink`.
pub fn run_cmd(cmd: RuntimesCmd, repo_root: &Path, sink: &dyn Sink) -> anyhow::Result<()> {
    let lock_path = repo_root.join("runtimes").join("runtimes.lock");
    let cache = Cache::from_env()?;
    match cmd {
        RuntimesCmd::Lock { recipes } => {
            let recipes = if recipes.exists() {
                load_recipes(&recipes)?
            } else {
                Vec::new()
            };
            let old = RuntimesLock::load(&lock_path)?;
            let new = {
                let _apt_lock = cache.lock("apt")?;
                let apt = Apt::new(&cache)?;
                sink.note(Note::info(format!(
                    "apt-get update (private lists in {})",
                    cache.root().join("apt").display()
                )));
                apt.update()?;
                RuntimesLock::resolve(&apt, &recipes)?
            };
            if let Some(go) = &new.go {
                let pkgs: Vec<String> = go
                    .packages
                    .iter()
                    .map(|p| format!("{}={}", p.name, p.version))
                    .collect();
                let change = if old.go.as_ref() == Some(go) {
                    "unchanged"
                } else {
                    "updated"
                };
                sink.answer(&format!("{:<10} {:<10} {}", "go", change, pkgs.join(" ")));
            }
            for c in &new.containerd {
                let change = match old.containerd(&c.requested, &c.suite) {
                    None => "new",
                    Some(o) if o == c => "unchanged",
                    Some(_) => "updated",
                };
                sink.answer(&format!(
                    "{:<10} {:<10} {} {}={} (+{} packages core/mount imports)",
                    "containerd",
                    change,
                    c.suite,
                    c.requested,
                    c.version,
                    c.packages.len() - 1
                ));
            }
            new.save(&lock_path)?;
            sink.answer(&format!("wrote {}", lock_path.display()));
            Ok(())
        }
        RuntimesCmd::Build { names, recipes } => {
            let all = load_recipes(&recipes)?;
            let lock = RuntimesLock::load(&lock_path)?;
            for r in select(&all, &names, &recipes)? {
                let rt = ensure(r, &lock, &lock_path, &cache, sink)?;
                let t = rt.timings;
                sink.answer(&format!(
                    "{:<16} {} ({}; download {:.1}s, extract {:.1}s, build {:.1}s, total {:.1}s)\n{:<16} {}",
                    rt.name,
                    rt.provenance.describe(),
                    if t.cached { "cached" } else { "built" },
                    t.download.as_secs_f64(),
                    t.extract.as_secs_f64(),
                    t.build.as_secs_f64(),
                    t.total.as_secs_f64(),
                    "",
                    rt.binary.display()
                ));
            }
            Ok(())
        }
        RuntimesCmd::List { recipes } => {
            let all = load_recipes(&recipes)?;
            let lock = RuntimesLock::load(&lock_path)?;
            for r in &all {
                let locked = match &r.source {
                    RuntimeSource::Containerd(super::ContainerdSource::Debian {
                        package,
                        suite,
                    }) => lock
                        .containerd(package, suite)
                        .map_or("(not locked)".to_string(), |c| c.version.clone()),
                    _ => String::new(),
                };
                sink.answer(&format!("{:<16} {:<60} {locked}", r.name, r.source_label()));
            }
            Ok(())
        }
    }
}

fn select<'a>(
    all: &'a [RuntimeRecipe],
    names: &[String],
    file: &Path,
) -> anyhow::Result<Vec<&'a RuntimeRecipe>> {
    if names.is_empty() {
        return Ok(all.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            all.iter().find(|r| r.name.as_str() == n).with_context(|| {
                let known: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
                format!(
                    "no runtime named `{n}` in {} (known: {})",
                    file.display(),
                    known.join(", ")
                )
            })
        })
        .collect()
}
