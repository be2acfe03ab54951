//! `mmx runtimes lock | build | list`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use protocol::RuntimeName;

use super::lock::RuntimesLock;
use super::recipe::{load_recipes, RuntimeRecipe};
use super::relock::{complete, relock};
use super::{ensure_with, RuntimeSource};
use crate::debian::{Cache, LockDocument, LockPolicy};
use crate::events::Sink;

/// The `mmx runtimes` subcommands. Recipes are the `[[runtimes]]` tables of a matrix file;
/// runtimes/runtimes.lock is the one beside it (where `mmx run` looks), unless `--root` says
/// otherwise.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum RuntimesCmd {
    /// Write runtimes/runtimes.lock: resolve the Go toolchain, the default containerd
    /// (golang-github-containerd-containerd-dev in sid) and containers/storage
    /// (golang-github-containers-storage-dev in sid) and every Debian source the recipes
    /// name that it lacks; entries that are there stay as they are unless `--update` moves
    /// them all to what the archive carries now. Makes runtimes/ when there is none.
    Lock {
        /// The file holding `[[runtimes]]` (optional for lock).
        #[arg(long, alias = "recipe", default_value = "matrix.toml")]
        recipes: PathBuf,
        /// Resolve every entry again: the way forward when Debian dropped a locked package.
        #[arg(long)]
        update: bool,
    },
    /// Build the named runtimes (all when none is named) into the cache, offline from the
    /// locked packages, and print where each binary is. A recipe without its lock entries gets
    /// them resolved and written first.
    Build {
        names: Vec<String>,
        #[arg(long, alias = "recipe", default_value = "matrix.toml")]
        recipes: PathBuf,
        /// Never write or move runtimes.lock (also when CI=true): a recipe without its
        /// entries, or a locked package the archive dropped, is an error.
        #[arg(long)]
        locked: bool,
    },
    /// Show each runtime recipe and its source.
    List {
        #[arg(long, alias = "recipe", default_value = "matrix.toml")]
        recipes: PathBuf,
    },
}

impl RuntimesCmd {
    fn recipes(&self) -> &Path {
        match self {
            RuntimesCmd::Lock { recipes, .. }
            | RuntimesCmd::Build { recipes, .. }
            | RuntimesCmd::List { recipes } => recipes,
        }
    }
}

/// Run a `mmx runtimes` subcommand. runtimes/ is in `root`, else beside the recipes file, as
/// `mmx run` looks for it there. Its answer and notes go into `sink`.
pub fn run_cmd(cmd: RuntimesCmd, root: Option<&Path>, sink: &dyn Sink) -> anyhow::Result<()> {
    let root = match root {
        Some(r) => r.to_path_buf(),
        None => cmd
            .recipes()
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    let lock_path = root.join("runtimes").join("runtimes.lock");
    let cache = Cache::from_env()?;
    match cmd {
        RuntimesCmd::Lock { recipes, update } => {
            let recipes = if recipes.exists() {
                load_recipes(&recipes)?
            } else {
                Vec::new()
            };
            for r in relock(&recipes, &lock_path, &cache, update, sink)? {
                sink.answer(&format!("{:<10} {:<10} {}", r.kind, r.change, r.pins));
            }
            sink.answer(&format!("wrote {}", lock_path.display()));
            Ok(())
        }
        RuntimesCmd::Build {
            names,
            recipes,
            locked,
        } => {
            let all = load_recipes(&recipes)?;
            let chosen = select(&all, &names, &recipes)?;
            let policy = LockPolicy::new(locked);
            let used: BTreeSet<RuntimeName> = chosen.iter().map(|r| r.name.clone()).collect();
            complete(&lock_path, &all, &used, &recipes, policy, sink)?;
            let lock = RuntimesLock::load(&lock_path)?;
            for r in chosen {
                let rt = ensure_with(r, &lock, &lock_path, &cache, policy, sink)?;
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
                    RuntimeSource::Go {
                        program,
                        source: super::GoSource::Debian { package, suite },
                    } => lock
                        .sources(*program, package, suite)
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
