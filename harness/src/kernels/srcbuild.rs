//! `[source]` recipes through [`super::ensure`]: a kernel built on demand and cached by content,
//! so a matrix run uses it like any other kernel.
//!
//! The cache key covers everything that can change the bytes the guest boots: the base (the
//! source package's SHA-256 or the commit id), every patch's SHA-256 in order, the config inputs
//! (mmx's fragment or the given file, and each fragment), and the compiler. A finished build is
//! published as `<cache>/kernels/<key>/` (vmlinuz, config, build.log, kernel.json) with one
//! rename, like fetched kernels; the build itself happens in a [`BuildDir`] shared by every build
//! of the same tree and config (whatever the recipe) and kept for the next, incremental build. Whoever builds holds the entry's lock, so concurrent runs share
//! one build; an interrupted or failed build publishes nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::build::{build_tree, compiler_version, BuildError, BuildLog, BuildRequest};
use super::config::{ConfigOrigin, MINIMAL_BASE};
use super::fetch::{build_entry, download, publish, read_manifest, EnsureOptions, Substitution};
use super::lock::{LockFile, LockedKernel};
use super::modules::ModuleIndex;
use super::patches::{self, Patch};
use super::recipe::Recipe;
use super::source::{ConfigSpec, Located, SourceBase, SourceSpec};
use super::tree::{self, Base, BuildDir};
use super::{
    fragment, BuiltBase, BuiltKernel, KernelError, KernelProvenance, KernelTimings, ResolvedKernel,
};
use crate::debian::cache::key;
use crate::debian::{Apt, Cache};
use crate::events::Note;
use crate::proc::Cancel;

/// Bump when the build's layout or its make invocation changes.
const BUILD_FORMAT: &[u8] = b"build-v1";

/// Everything a build needs, resolved, and its cache key.
struct Plan {
    base: PlannedBase,
    patches: Vec<Patch>,
    compiler: String,
    key: String,
    /// Identity of the config inputs (and compiler): with the kernel version it names the
    /// build directory ([`build_dir_name`]).
    config_key: String,
}

enum PlannedBase {
    Debian {
        suite: String,
        locked: LockedKernel,
    },
    Git {
        repo: PathBuf,
        rev: String,
        commit: String,
    },
}

impl PlannedBase {
    fn provenance(&self) -> BuiltBase {
        match self {
            PlannedBase::Debian { suite, locked } => BuiltBase::Debian {
                suite: suite.clone(),
                package: locked.packages[0].clone(),
            },
            PlannedBase::Git { repo, rev, commit } => BuiltBase::Git {
                tree: repo.clone(),
                rev: rev.clone(),
                commit: commit.clone(),
            },
        }
    }
}

fn recipe_error(recipe: &Recipe, line: usize, key: &str, message: String) -> KernelError {
    KernelError::Recipe {
        file: recipe.file.clone(),
        line,
        key: key.to_string(),
        message,
    }
}

/// The lock entry of a Debian source recipe, checked against what the recipe asks.
/// A source recipe's lock entry: the one source package it is pinned to.
pub(crate) fn locked_source<'a>(
    recipe: &Recipe,
    lock: &'a LockFile,
    package: &str,
    suite: Option<&str>,
) -> Result<&'a LockedKernel, KernelError> {
    let locked = lock.entry_for(recipe, package, suite)?;
    if locked.packages.len() != 1 {
        return Err(KernelError::StaleLock {
            name: recipe.name.clone(),
            detail: "a source recipe's lock entry lists exactly one package".into(),
        });
    }
    Ok(locked)
}

fn plan(
    recipe: &Recipe,
    spec: &SourceSpec,
    locked: Option<&LockedKernel>,
) -> Result<Plan, KernelError> {
    let base = match (&spec.base, locked) {
        (SourceBase::Debian { .. }, Some(l)) => PlannedBase::Debian {
            suite: l.suite.clone(),
            locked: l.clone(),
        },
        (SourceBase::Debian { package, .. }, None) => {
            return Err(KernelError::NotLocked {
                name: format!("{} ({package})", recipe.name),
                lock: recipe.file.with_file_name("kernels.lock"),
            })
        }
        (SourceBase::Git { tree, rev }, _) => {
            if !tree.value.is_dir() {
                return Err(recipe_error(
                    recipe,
                    tree.line,
                    "source.tree",
                    format!("{} is not a directory", tree.value.display()),
                ));
            }
            let commit = tree::resolve_rev(&tree.value, rev)
                .map_err(|m| recipe_error(recipe, tree.line, "source.rev", m))?;
            PlannedBase::Git {
                repo: tree.value.clone(),
                rev: rev.clone(),
                commit,
            }
        }
    };
    let patches = patches::load(&spec.patches, &recipe.file)?;
    let compiler = compiler_version();
    // Two hashes: the config inputs (with the kernel version, the build directory), and those
    // plus the exact base and patches (the cache entry).
    let mut parts: Vec<Vec<u8>> = vec![BUILD_FORMAT.to_vec()];
    match &base {
        PlannedBase::Debian { locked, .. } => {
            let p = &locked.packages[0];
            parts.extend([
                b"debian".to_vec(),
                p.name.clone().into(),
                p.sha256.clone().into(),
            ]);
        }
        PlannedBase::Git { commit, .. } => {
            parts.extend([b"git".to_vec(), commit.clone().into()]);
        }
    }
    for p in &patches {
        parts.push(p.sha256.clone().into());
    }
    let read = |l: &Located<PathBuf>, key: &str| {
        fs::read(&l.value)
            .map_err(|e| recipe_error(recipe, l.line, key, format!("{}: {e}", l.value.display())))
    };
    let mut config_parts: Vec<Vec<u8>> = Vec::new();
    match &spec.config {
        ConfigSpec::Minimal => {
            config_parts.extend([
                b"minimal".to_vec(),
                MINIMAL_BASE.into(),
                fragment::fragment_text().into(),
            ]);
        }
        ConfigSpec::File(l) => {
            config_parts.extend([b"file".to_vec(), read(l, "source.config")?]);
        }
    }
    for f in &spec.fragments {
        config_parts.push(read(f, "source.fragments")?);
    }
    config_parts.push(compiler.clone().into());
    let config_refs: Vec<&[u8]> = std::iter::once(BUILD_FORMAT)
        .chain(config_parts.iter().map(Vec::as_slice))
        .collect();
    let config_key = key(&config_refs);
    parts.extend(config_parts);
    parts.extend(recipe.extra_modules.iter().map(|m| m.clone().into_bytes()));
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Ok(Plan {
        base,
        patches,
        compiler,
        key: key(&refs),
        config_key,
    })
}

/// The cached build of a source recipe, if there is one; never builds.
pub(crate) fn cached(
    recipe: &Recipe,
    spec: &SourceSpec,
    lock: &LockFile,
    cache: &Cache,
) -> Option<ResolvedKernel> {
    let locked = match &spec.base {
        SourceBase::Debian { package, suite } => {
            Some(locked_source(recipe, lock, package, suite.as_deref()).ok()?)
        }
        SourceBase::Git { .. } => None,
    };
    let plan = plan(recipe, spec, locked).ok()?;
    read_manifest(&cache.root().join("kernels").join(&plan.key))
        .ok()
        .flatten()
}

/// Build (or find in the cache) a source recipe's kernel.
pub(crate) fn ensure_source(
    recipe: &Recipe,
    spec: &SourceSpec,
    lock: &LockFile,
    cache: &Cache,
    opts: &EnsureOptions<'_>,
) -> Result<ResolvedKernel, KernelError> {
    let locked = match &spec.base {
        SourceBase::Debian { package, suite } => {
            Some(locked_source(recipe, lock, package, suite.as_deref())?)
        }
        SourceBase::Git { .. } => None,
    };
    let first = plan(recipe, spec, locked)?;
    match build_planned(recipe, spec, cache, opts, first, None) {
        // The archive dropped the locked source package: as with binary kernels, the policy
        // decides between an error naming both and a build of the current one, recorded.
        Err(failure) if failure.is_apt_failure() => {
            let (SourceBase::Debian { package, suite }, Some(old)) = (&spec.base, locked) else {
                return Err(failure);
            };
            let fresh = {
                let _apt_lock = cache.lock("apt")?;
                let apt = Apt::new(cache)?;
                apt.update()?;
                LockedKernel::resolve_source(&apt, &recipe.name, package, suite.as_deref())?
            };
            if fresh.packages == old.packages {
                return Err(failure);
            }
            let substitution = Substitution::new(recipe, &old.packages, &fresh.packages);
            substitution.allowed(opts.policy, opts.sink)?;
            let fresh_plan = plan(recipe, spec, Some(&fresh))?;
            let mut kernel = build_planned(recipe, spec, cache, opts, fresh_plan, None)?;
            kernel.substituted = Some(substitution.into_record());
            Ok(kernel)
        }
        other => other,
    }
}

/// Build a git `[source]` recipe at another revision than its own (a bisect step), in the build
/// directory `build_dir` (one per bisect, [`build_dir_at`] its first revision: each step
/// rebuilds only what changed since the last). Cached by content like any build, so a revision
/// built before costs nothing.
pub fn ensure_source_at(
    recipe: &Recipe,
    rev: &str,
    build_dir: &str,
    cache: &Cache,
    opts: &EnsureOptions<'_>,
) -> Result<ResolvedKernel, KernelError> {
    let at = spec_at(recipe, rev)?;
    let p = plan(recipe, &at, None)?;
    build_planned(recipe, &at, cache, opts, p, Some(build_dir))
}

/// The build directory a build of the git `[source]` recipe at `rev` uses: the one of its
/// kernel version and config inputs, shared with every other tree of that version (a Debian
/// source package of it, say), so even a first build there is incremental.
pub fn build_dir_at(recipe: &Recipe, rev: &str) -> Result<String, KernelError> {
    let at = spec_at(recipe, rev)?;
    let p = plan(recipe, &at, None)?;
    let PlannedBase::Git { repo, commit, .. } = &p.base else {
        unreachable!("spec_at makes a git base")
    };
    let version = tree::base_version(&Base::Git {
        repo: repo.clone(),
        commit: commit.clone(),
    });
    Ok(build_dir_name(version.as_deref(), &p.config_key))
}

/// `linux-6.12-0a1b2c3d4e5f`: trees of one kernel version differ in few files, so one build
/// directory per version and config keeps every switch between them incremental.
fn build_dir_name(version: Option<&str>, config_key: &str) -> String {
    format!(
        "linux-{}-{}",
        version.unwrap_or("unknown"),
        config_key.get(..12).unwrap_or(config_key)
    )
}

/// The recipe's `[source]` at another revision of its git tree.
fn spec_at(recipe: &Recipe, rev: &str) -> Result<SourceSpec, KernelError> {
    let super::RecipeSource::Build(spec) = &recipe.source else {
        return Err(recipe_error(
            recipe,
            1,
            "source",
            "not a [source] recipe".into(),
        ));
    };
    let SourceBase::Git { tree, .. } = &spec.base else {
        return Err(recipe_error(
            recipe,
            1,
            "source.tree",
            "building at another revision needs a git `tree`".into(),
        ));
    };
    let mut at = spec.clone();
    at.base = SourceBase::Git {
        tree: tree.clone(),
        rev: rev.to_string(),
    };
    Ok(at)
}

/// The unpacked, pristine tree of a Debian `[source]` recipe's package (downloaded and
/// unpacked on first use, shared by every build of it). Never write into it.
pub fn debian_source_tree(
    recipe: &Recipe,
    lock: &LockFile,
    cache: &Cache,
) -> Result<PathBuf, KernelError> {
    let super::RecipeSource::Build(SourceSpec {
        base: SourceBase::Debian { package, suite },
        ..
    }) = &recipe.source
    else {
        return Err(recipe_error(
            recipe,
            1,
            "source.debian",
            "not a Debian [source] recipe".into(),
        ));
    };
    pristine_of(
        locked_source(recipe, lock, package, suite.as_deref())?,
        cache,
    )
}

/// The pristine tree of a locked source package, downloaded and unpacked when not there yet.
fn pristine_of(locked: &LockedKernel, cache: &Cache) -> Result<PathBuf, KernelError> {
    let p = &locked.packages[0];
    tree::debian_pristine(cache, &p.name, &p.sha256, |into| {
        download(locked, cache, into)?
            .into_iter()
            .next()
            .ok_or_else(|| KernelError::Layout {
                detail: format!("apt downloaded nothing for {}", p.name),
            })
    })
}

fn build_planned(
    recipe: &Recipe,
    spec: &SourceSpec,
    cache: &Cache,
    opts: &EnsureOptions<'_>,
    plan: Plan,
    build_dir: Option<&str>,
) -> Result<ResolvedKernel, KernelError> {
    let entry = cache.dir("kernels")?.join(&plan.key);
    let hit = |mut k: ResolvedKernel| {
        k.name = recipe.name.clone();
        k.timings.cached = true;
        k
    };
    if let Some(k) = read_manifest(&entry)? {
        return Ok(hit(k));
    }
    let _entry_lock = cache.lock(&format!("kernel-{}", plan.key))?;
    if let Some(k) = read_manifest(&entry)? {
        return Ok(hit(k));
    }
    let failed = |error: BuildError| KernelError::Build {
        name: recipe.name.clone(),
        error: Box::new(error),
    };
    let download_start = std::time::Instant::now();
    let base = match &plan.base {
        PlannedBase::Debian { locked, .. } => Base::Pristine {
            root: pristine_of(locked, cache)?,
            key: locked.packages[0].sha256.clone(),
        },
        PlannedBase::Git { repo, commit, .. } => Base::Git {
            repo: repo.clone(),
            commit: commit.clone(),
        },
    };
    let download = download_start.elapsed();
    let name = match build_dir {
        Some(n) => n.to_string(),
        None => build_dir_name(tree::base_version(&base).as_deref(), &plan.config_key),
    };
    let dir = BuildDir::open(cache, &name)?;
    let mut log = BuildLog::create(&dir.log_path()).map_err(failed)?;
    log.note(&format!(
        "kernel {} ({}), cache key {}",
        recipe.name,
        spec.label(),
        plan.key
    ));
    tree::prepare(&dir, &base, &plan.patches, &mut log).map_err(failed)?;
    let (src, out) = (dir.src(), dir.out());
    // Without a cancel of the caller's, no one stops the build but the end of mmx, and make's
    // whole group goes with it (death signal, warden).
    let uncancelled = Cancel::new();
    let req = BuildRequest {
        label: &recipe.name,
        src: &src,
        out: &out,
        config: &spec.config,
        fragments: &spec.fragments,
        sink: opts.sink,
        expected_steps: dir.last_steps(),
        cancel: opts.cancel.unwrap_or(&uncancelled),
        lock: dir.make_lock(),
    };
    let built = build_tree(&req, &mut log).map_err(failed)?;
    dir.record_steps(built.steps).map_err(failed)?;
    for w in &built.warnings {
        opts.sink
            .note(Note::warning(format!("kernel {}: lacks {w}", recipe.name)));
    }

    // Publish: copy what the guest needs out of the build directory into a new entry.
    let extract_start = std::time::Instant::now();
    let work = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(cache.dir("kernels")?)
        .map_err(|e| KernelError::io("create temp dir", cache.root(), e))?;
    let copy = |from: &Path, name: &str| -> Result<PathBuf, KernelError> {
        let to = work.path().join(name);
        fs::copy(from, &to).map_err(|e| KernelError::io("copy", from, e))?;
        Ok(to)
    };
    let vmlinuz = copy(&built.bzimage, "vmlinuz")?;
    let config = copy(&built.config, "config")?;
    copy(log.path(), "build.log")?;
    let index = match &built.modules {
        Some(m) => ModuleIndex::from_dir(m)?,
        None => {
            let mut index = ModuleIndex::default();
            let text = fs::read_to_string(&built.modules_builtin)
                .map_err(|e| KernelError::io("read", &built.modules_builtin, e))?;
            index.set_builtin(&text);
            index
        }
    };
    let config_sha256 = hex::encode(Sha256::digest(
        fs::read(&config).map_err(|e| KernelError::io("read", &config, e))?,
    ));
    let provenance = KernelProvenance::Built(Box::new(BuiltKernel {
        base: plan.base.provenance(),
        patches: plan.patches.iter().map(Patch::info).collect(),
        config: match &spec.config {
            ConfigSpec::Minimal => ConfigOrigin::Minimal {
                fragments: spec.fragments.iter().map(|f| f.value.clone()).collect(),
            },
            ConfigSpec::File(l) => ConfigOrigin::File {
                path: l.value.clone(),
                fragments: spec.fragments.iter().map(|f| f.value.clone()).collect(),
            },
        },
        config_sha256,
        compiler: plan.compiler.clone(),
        built_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        build_ms: u64::try_from(built.took.as_millis()).unwrap_or(u64::MAX),
    }));
    build_entry(
        recipe,
        work.path(),
        &index,
        vmlinuz,
        Some(config),
        &built.release,
        provenance,
        plan.key.clone(),
    )?;
    publish(work, &entry)?;
    let mut kernel = read_manifest(&entry)?.ok_or_else(|| KernelError::Layout {
        detail: format!("{} vanished after writing", entry.display()),
    })?;
    kernel.name = recipe.name.clone();
    kernel.timings = KernelTimings {
        cached: false,
        download,
        build: built.took,
        extract: extract_start.elapsed(),
        total: Duration::ZERO,
        kbuild_steps: built.steps,
    };
    Ok(kernel)
}

/// Lock entries for a source package: what `mmx kernels lock` records.
impl LockedKernel {
    pub fn resolve_source(
        apt: &Apt,
        name: &str,
        package: &str,
        suite: Option<&str>,
    ) -> Result<LockedKernel, KernelError> {
        let (suite, record) = apt.resolve_source(package, suite)?;
        Ok(LockedKernel {
            name: name.to_string(),
            suite,
            requested: package.to_string(),
            release: record.version.clone(),
            packages: vec![record.into()],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::LockedPackage;
    use crate::kernels::recipe::load_recipe;
    use crate::kernels::RecipeSource;

    fn locked() -> LockedKernel {
        LockedKernel {
            name: "k".into(),
            suite: "trixie".into(),
            requested: "linux-source-6.12".into(),
            release: "6.12.117-1".into(),
            packages: vec![LockedPackage {
                name: "linux-source-6.12".into(),
                version: "6.12.117-1".into(),
                sha256: "9141".into(),
                filename: "pool/x.deb".into(),
                size: 1,
            }],
        }
    }

    /// (cache key, config key) of a recipe written into `dir`.
    fn keys(dir: &Path, table: &str) -> (String, String) {
        let file = dir.join("k.toml");
        fs::write(
            &file,
            format!("[source]\ndebian = \"linux-source-6.12\"\n{table}"),
        )
        .unwrap();
        let r = load_recipe(&file).unwrap();
        let RecipeSource::Build(spec) = &r.source else {
            panic!()
        };
        let p = plan(&r, spec, Some(&locked())).unwrap();
        (p.key, p.config_key)
    }

    #[test]
    fn patches_change_the_entry_and_configs_change_the_build_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::write(d.join("a.patch"), "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n").unwrap();
        fs::write(d.join("extra.config"), "CONFIG_EXT4_FS=y\n").unwrap();
        let plain = keys(d, "");
        let patched = keys(d, "patches = [\"*.patch\"]\n");
        let fragment = keys(d, "fragments = [\"extra.config\"]\n");
        assert_ne!(plain.0, patched.0);
        assert_eq!(plain.1, patched.1, "a patch keeps the build directory");
        assert_eq!(
            build_dir_name(Some("6.12"), &plain.1),
            format!("linux-6.12-{}", &plain.1[..12])
        );
        assert_ne!(plain.0, fragment.0);
        assert_ne!(
            plain.1, fragment.1,
            "another config gets its own build directory"
        );
        // Same inputs, same key; a changed patch, another key.
        assert_eq!(keys(d, "patches = [\"*.patch\"]\n"), patched);
        fs::write(d.join("a.patch"), "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+c\n").unwrap();
        assert_ne!(keys(d, "patches = [\"*.patch\"]\n").0, patched.0);
    }

    #[test]
    fn a_missing_config_file_names_the_recipe_line() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("k.toml");
        fs::write(
            &file,
            "[source]\ndebian = \"linux-source-6.12\"\nconfig = \"nope/.config\"\n",
        )
        .unwrap();
        let r = load_recipe(&file).unwrap();
        let RecipeSource::Build(spec) = &r.source else {
            panic!()
        };
        match plan(&r, spec, Some(&locked())) {
            Err(KernelError::Recipe { line, key, .. }) => {
                assert_eq!((line, key.as_str()), (3, "source.config"))
            }
            other => panic!("{:?}", other.map(|p| p.key)),
        }
    }
}
