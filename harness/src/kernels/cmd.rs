//! `mmx kernels lock | fetch | build | list | config-fragment`.

use std::path::Path;

use anyhow::Context;

use super::lock::LockFile;
use super::recipe::{load_recipes, Recipe, RecipeSource};
use super::relock::{complete, relock, Update};
use super::source::SourceBase;
use super::{cached, ensure_opts, EnsureOptions, KernelError, ResolvedKernel};
use crate::debian::{Cache, LockDocument, LockPolicy};
use crate::events::{Note, Sink};
use crate::proc::Cancel;

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

/// Run a `mmx kernels` subcommand for the checkout at `repo_root`, its answer (tables, what
/// was fetched or built) and notes into `sink`. Returns the builds that failed (exit 1): their
/// errors are many lines (the log's last ones), for the caller to show whole.
pub fn run_cmd(
    cmd: KernelsCmd,
    repo_root: &Path,
    sink: &dyn Sink,
) -> anyhow::Result<Vec<KernelError>> {
    if cmd == KernelsCmd::ConfigFragment {
        let text = super::fragment::fragment_text();
        sink.answer(text.strip_suffix('\n').unwrap_or(&text));
        return Ok(Vec::new());
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
            for r in relock(&recipes, &lock_path, &cache, update, sink)? {
                sink.answer(&format!(
                    "{:<20} {:<10} {}",
                    r.name,
                    r.change,
                    r.packages.join(" ")
                ));
            }
            sink.answer(&format!("wrote {}", lock_path.display()));
            Ok(Vec::new())
        }
        KernelsCmd::Fetch { names, locked } => {
            let policy = LockPolicy::new(locked);
            // Fetching everything must not start ten-minute builds; naming one does.
            let (fetch, skip): (Vec<&Recipe>, Vec<&Recipe>) = select(&recipes, &names)?
                .into_iter()
                .partition(|r| !names.is_empty() || !matches!(r.source, RecipeSource::Build(_)));
            let lock = complete(&lock_path, &fetch, policy, &cache, sink)?;
            let opts = EnsureOptions {
                policy,
                ..EnsureOptions::new(sink)
            };
            for recipe in skip {
                sink.answer(&format!(
                    "{:<20} source recipe: not fetched (`mmx kernels build {}` builds it)",
                    recipe.name, recipe.name
                ));
            }
            for recipe in fetch {
                match ensure_opts(recipe, &lock, &cache, &opts) {
                    Ok(k) => answer_kernel(&k, sink),
                    Err(e @ KernelError::Build { .. }) => return Ok(vec![e]),
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(Vec::new())
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
            let lock = complete(&lock_path, &chosen, policy, &cache, sink)?;
            // Ctrl-C sets `cancel`: make's whole group is stopped and the build fails saying
            // so; a second Ctrl-C ends mmx at once. Nothing half-built is ever published.
            let cancel = Cancel::new();
            cancel
                .install_signal_handlers()
                .context("installing the Ctrl-C handler")?;
            let opts = EnsureOptions {
                policy,
                cancel: Some(&cancel),
                ..EnsureOptions::new(sink)
            };
            let mut failed = Vec::new();
            for recipe in chosen {
                match ensure_opts(recipe, &lock, &cache, &opts) {
                    Ok(k) => answer_kernel(&k, sink),
                    // One failed build does not stop the others (an interrupted one does); the
                    // exit code says it.
                    Err(e @ KernelError::Build { .. }) => {
                        sink.note(Note::warning(format!(
                            "kernel {}: the build failed (the error follows at the end)",
                            recipe.name
                        )));
                        failed.push(e);
                        if cancel.is_cancelled() {
                            break;
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(failed)
        }
        KernelsCmd::ConfigFragment => Ok(Vec::new()),
        KernelsCmd::List => {
            let lock = LockFile::load(&lock_path)?;
            sink.answer(&format!(
                "{:<20} {:<40} {:<34} CACHED",
                "NAME", "SOURCE", "LOCKED"
            ));
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
                sink.answer(&format!(
                    "{:<20} {:<40} {:<34} {is_cached}",
                    r.name,
                    r.source_label(),
                    locked
                ));
            }
            Ok(Vec::new())
        }
    }
}

fn answer_kernel(k: &ResolvedKernel, sink: &dyn Sink) {
    let size = std::fs::metadata(&k.vmlinuz).map_or(0, |m| m.len());
    let t = k.timings;
    let how = match (t.cached, t.build.is_zero()) {
        (true, _) => "cached".to_string(),
        (false, true) => "fetched".to_string(),
        (false, false) => format!("built in {:.0}s", t.build.as_secs_f64()),
    };
    sink.answer(&format!(
        "{:<20} {:<32} {} modules, vmlinuz {:.1} MiB, {how} (download {:.1}s, extract {:.1}s, total {:.2}s)",
        k.name,
        k.release,
        k.modules.len(),
        size as f64 / (1024.0 * 1024.0),
        t.download.as_secs_f64(),
        t.extract.as_secs_f64(),
        t.total.as_secs_f64(),
    ));
    if !k.unavailable.is_empty() {
        sink.answer(&format!(
            "{:<20} not in this kernel: {}",
            "",
            k.unavailable.join(", ")
        ));
    }
    if matches!(k.provenance, super::KernelProvenance::Built(_)) {
        sink.answer(&format!("{:<20} {}", "", k.provenance.describe()));
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
