//! `mmx kernels lock | fetch | build | list | config-fragment`.

use std::path::Path;

use super::build::ProgressMode;
use super::lock::LockFile;
use super::recipe::{load_recipes, Recipe, RecipeSource};
use super::relock::{complete, relock, Update};
use super::source::SourceBase;
use super::{cached, ensure_opts, EnsureOptions, KernelError, ResolvedKernel};
use crate::debian::{Cache, LockDocument, LockPolicy};

/// The `mmx kernels` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum KernelsCmd {
    /// Write kernels/kernels.lock: resolve every Debian recipe that has no entry (or whose
    /// recipe changed) to exact packages; entries that are there stay as they are unless
    /// `--update` moves them to what the archive carries now.
    Lock {
        /// Move these recipes' entries (all of them when none is named) to the archive's
        /// current packages: the way forward when Debian dropped a locked kernel.
        #[arg(long, num_args = 0..)]
        update: Option<Vec<String>>,
    },
    /// Download and extract kernels into the cache (all Debian and path recipes, or the ones
    /// named; a named source recipe is built). A recipe without a lock entry is resolved and
    /// its entry written first.
    Fetch {
        /// Recipe names (file stems in kernels/), e.g. debian-6.12.
        names: Vec<String>,
        /// Never write or move kernels.lock (also when CI=true): a recipe without an entry,
        /// or a locked kernel the archive dropped, is an error.
        #[arg(long)]
        locked: bool,
    },
    /// Build `[source]` recipes (all, or the ones named) into the cache, with a progress bar;
    /// Ctrl-C stops the build. Exit 1 when a build fails.
    Build {
        /// Recipe names, e.g. debian-6.12-minimal.
        names: Vec<String>,
        /// Never write or move kernels.lock (also when CI=true).
        #[arg(long)]
        locked: bool,
    },
    /// Show each recipe, what it is locked to, and whether it is in the cache.
    List,
    /// Print mmx's kernel config fragment: what every guest needs (for `[path]` kernels you
    /// build yourself; `config = "minimal"` source recipes merge it).
    ConfigFragment,
}

/// Run a `mmx kernels` subcommand for the checkout at `repo_root`. Ok(false): a kernel build
/// failed (reported on stderr; exit 1).
pub fn run_cmd(cmd: KernelsCmd, repo_root: &Path) -> anyhow::Result<bool> {
    if cmd == KernelsCmd::ConfigFragment {
        print!("{}", super::fragment::fragment_text());
        return Ok(true);
    }
    let dir = repo_root.join("kernels");
    let lock_path = dir.join("kernels.lock");
    let recipes = load_recipes(&dir)?;
    let cache = Cache::from_env()?;
    match cmd {
        KernelsCmd::Lock { update } => {
            let update = match &update {
                None => Update::None,
                Some(names) if names.is_empty() => Update::All,
                Some(names) => {
                    select(&recipes, names)?;
                    Update::Named(names)
                }
            };
            for r in relock(&recipes, &lock_path, &cache, update)? {
                println!("{:<20} {:<10} {}", r.name, r.change, r.packages.join(" "));
            }
            println!("wrote {}", lock_path.display());
            Ok(true)
        }
        KernelsCmd::Fetch { names, locked } => {
            let policy = LockPolicy::new(locked);
            // Fetching everything must not start ten-minute builds; naming one does.
            let (fetch, skip): (Vec<&Recipe>, Vec<&Recipe>) = select(&recipes, &names)?
                .into_iter()
                .partition(|r| !names.is_empty() || !matches!(r.source, RecipeSource::Build(_)));
            let lock = complete(&lock_path, &fetch, policy, &cache)?;
            let opts = EnsureOptions {
                policy,
                ..EnsureOptions::default()
            };
            for recipe in skip {
                println!(
                    "{:<20} source recipe: not fetched (`mmx kernels build {}` builds it)",
                    recipe.name, recipe.name
                );
            }
            for recipe in fetch {
                match ensure_opts(recipe, &lock, &cache, &opts) {
                    Ok(k) => print_kernel(&k),
                    Err(e @ KernelError::Build { .. }) => {
                        eprintln!("mmx: {e}");
                        return Ok(false);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(true)
        }
        KernelsCmd::Build { names, locked } => {
            let policy = LockPolicy::new(locked);
            let chosen: Vec<&Recipe> = if names.is_empty() {
                recipes
                    .iter()
                    .filter(|r| matches!(r.source, RecipeSource::Build(_)))
                    .collect()
            } else {
                select(&recipes, &names)?
            };
            let lock = complete(&lock_path, &chosen, policy, &cache)?;
            // Ctrl-C: make sees it (same process group) and mmx notices it while make runs
            // (see build.rs); outside make it ends mmx as usual, and nothing half-built is
            // ever published.
            let opts = EnsureOptions {
                policy,
                progress: ProgressMode::Bar,
                ..EnsureOptions::default()
            };
            let mut ok = true;
            for recipe in chosen {
                match ensure_opts(recipe, &lock, &cache, &opts) {
                    Ok(k) => print_kernel(&k),
                    // One failed build does not stop the others; the exit code says it.
                    Err(e @ KernelError::Build { .. }) => {
                        eprintln!("mmx: {e}");
                        ok = false;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(ok)
        }
        KernelsCmd::ConfigFragment => Ok(true),
        KernelsCmd::List => {
            let lock = LockFile::load(&lock_path)?;
            println!("{:<20} {:<40} {:<34} CACHED", "NAME", "SOURCE", "LOCKED");
            for r in &recipes {
                let locked = match &r.source {
                    RecipeSource::Path { .. } => "(path: not locked)".to_string(),
                    RecipeSource::Build(s) if matches!(s.base, SourceBase::Git { .. }) => {
                        "(git: not locked)".to_string()
                    }
                    RecipeSource::Debian { .. } | RecipeSource::Build(_) => lock
                        .get(&r.name)
                        .and_then(|l| l.packages.first())
                        .map_or("(not locked)".to_string(), |p| p.version.clone()),
                };
                let is_cached = match cached(r, &lock, &cache) {
                    Some(k) => format!("yes ({})", k.release),
                    None => "no".to_string(),
                };
                println!(
                    "{:<20} {:<40} {:<34} {is_cached}",
                    r.name,
                    r.source_label(),
                    locked
                );
            }
            Ok(true)
        }
    }
}

fn print_kernel(k: &ResolvedKernel) {
    let size = std::fs::metadata(&k.vmlinuz).map_or(0, |m| m.len());
    let t = k.timings;
    let how = match (t.cached, t.build.is_zero()) {
        (true, _) => "cached".to_string(),
        (false, true) => "fetched".to_string(),
        (false, false) => format!("built in {:.0}s", t.build.as_secs_f64()),
    };
    println!(
        "{:<20} {:<32} {} modules, vmlinuz {:.1} MiB, {how} (download {:.1}s, extract {:.1}s, total {:.2}s)",
        k.name,
        k.release,
        k.modules.len(),
        size as f64 / (1024.0 * 1024.0),
        t.download.as_secs_f64(),
        t.extract.as_secs_f64(),
        t.total.as_secs_f64(),
    );
    if !k.unavailable.is_empty() {
        println!(
            "{:<20} not in this kernel: {}",
            "",
            k.unavailable.join(", ")
        );
    }
    if matches!(k.provenance, super::KernelProvenance::Built(_)) {
        println!("{:<20} {}", "", k.provenance.describe());
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
