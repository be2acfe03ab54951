//! [`ensure`]: make a recipe's runtime ready — from the cache when its key is there, else
//! download, extract, patch and build it offline.
//!
//! **How the Go build stays offline.** Debian ships Go sources in GOPATH layout
//! (`/usr/share/gocode/src/<import path>`, containerd 2.x under `…/containerd/v2`,
//! containers/storage under `go.podman.io/storage`), which is how
//! Debian itself builds Go packages. So a Debian build assembles a GOPATH from the extracted
//! packages, puts the job program (`runtimes/containerd/main.go`,
//! `runtimes/containers-storage/main.go`) beside them and runs `go build` with
//! `GO111MODULE=off`: no go.mod, no module cache, no proxy, and an import nobody packaged fails
//! naming its path. A `tree` build is the opposite: the user's checkout at `rev` (`git archive`,
//! so uncommitted edits never leak in), main.go added as `cmd/mmx-runtime-<program>`, and
//! module mode with *their* go.mod — `-mod=vendor` when the checkout has `vendor/modules.txt`,
//! otherwise `-mod=mod` against a module cache that already holds every module
//! (`GOMODCACHE`, else `$GOPATH/pkg/mod`, else `~/go/pkg/mod`; fill it once with
//! `go mod download`). Both run with `GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0`, the
//! toolchain from `runtimes.lock`, and the build cache in `<cache>/gocache`.
//!
//! **Cache key**: the build format, the program (its key and main.go), the toolchain's packages, the sources (the Debian
//! packages' SHA-256, or the commit) and every patch's bytes. Entries live in
//! `<cache>/runtimes/<key>/` (binary + `runtime.json`), the toolchain in `<cache>/go/<key>/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::git::{apply_patch, git_archive, resolve_rev};
use super::lock::{LockedSources, LockedToolchain, RuntimesLock};
use super::recipe::{GoSource, RuntimeRecipe, RuntimeSource};
use super::relock::relock_command;
use super::{BuildTimings, ResolvedRuntime, RuntimeError};
use crate::debian::cache::key;
use crate::debian::deb::sha256_file;
use crate::debian::extract::extract_deb;
use crate::debian::store;
use crate::debian::{Apt, Cache, Deb, DebianError, LockPolicy, LockedPackage};
use crate::events::{Note, Sink};
use crate::proc::Run;
use crate::results::{GoProgram, LockSubstitution, PackageId, PatchId, RuntimeProvenance};
use crate::rundir::write_atomic;

/// One `go build` of a runtime, offline: a minute cold on two cores (the compiler and the
/// standard library are built once into the cache's GOCACHE); past half an hour go is stuck.
const GO_BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);
/// `go version` answers at once; a minute covers a loaded machine.
const GO_VERSION_LIMIT: Duration = Duration::from_secs(60);

/// Bump when the build's inputs or layout change, so old entries are not reused.
const BUILD_FORMAT: &[u8] = b"runtime-build-v1";
const MANIFEST: &str = "runtime.json";
const BINARY: &str = "mmx-runtime";

/// The command that moves runtimes.lock to what the archive carries now.
const RELOCK: &str = "mmx runtimes lock --update";

/// Make `recipe`'s runtime ready (see the module doc). `lock_path` is only named in messages;
/// `sink` hears when a locked package the archive dropped was replaced.
pub fn ensure(
    recipe: &RuntimeRecipe,
    lock: &RuntimesLock,
    lock_path: &Path,
    cache: &Cache,
    sink: &dyn Sink,
) -> Result<ResolvedRuntime, RuntimeError> {
    ensure_with(recipe, lock, lock_path, cache, LockPolicy::from_env(), sink)
}

/// [`ensure`] with an explicit policy for locked packages the archive no longer has.
pub fn ensure_with(
    recipe: &RuntimeRecipe,
    lock: &RuntimesLock,
    lock_path: &Path,
    cache: &Cache,
    policy: LockPolicy,
    sink: &dyn Sink,
) -> Result<ResolvedRuntime, RuntimeError> {
    let start = Instant::now();
    let result = match &recipe.source {
        RuntimeSource::Binary(path) => binary(recipe, path),
        RuntimeSource::Go { program, source } => {
            let not_locked = |what: String| RuntimeError::NotLocked {
                what,
                lock: lock_path.to_path_buf(),
                fix: relock_command(lock_path, None, false),
            };
            let go = lock
                .go
                .as_ref()
                .ok_or_else(|| not_locked("the Go toolchain".into()))?;
            let sources = match source {
                GoSource::Debian { package, suite } => Sources::Debian(
                    lock.sources(*program, package, suite)
                        .ok_or_else(|| not_locked(format!("{package} ({suite})")))?,
                ),
                GoSource::Tree { tree, rev } => Sources::Tree { tree, rev },
            };
            match go_runtime(recipe, *program, go, &sources, cache) {
                Err(RuntimeError::Debian(DebianError::Apt { op, detail })) => {
                    let failed = FailedFetch {
                        op,
                        detail,
                        lock_path,
                        policy,
                    };
                    follow_archive(recipe, *program, go, &sources, cache, failed, sink)
                }
                other => other,
            }
        }
    };
    let mut runtime = result.map_err(|e| match e {
        // It names the runtime already, and must read as what it is.
        e @ RuntimeError::Debian(DebianError::Dropped(_)) => e,
        e => RuntimeError::Runtime {
            name: recipe.name.to_string(),
            source: Box::new(e),
        },
    })?;
    runtime.timings.total = start.elapsed();
    Ok(runtime)
}

enum Sources<'a> {
    Debian(&'a LockedSources),
    Tree { tree: &'a Path, rev: &'a str },
}

/// A user's binary: used where it is, identified by its content.
fn binary(recipe: &RuntimeRecipe, path: &Path) -> Result<ResolvedRuntime, RuntimeError> {
    check_static(path)?;
    let sha256 = sha256_file(path)?;
    Ok(ResolvedRuntime {
        name: recipe.name.clone(),
        binary: path.to_path_buf(),
        cache_key: sha256.get(..32).unwrap_or(&sha256).to_string(),
        provenance: RuntimeProvenance::Binary {
            path: path.to_path_buf(),
            sha256,
        },
        timings: BuildTimings {
            cached: true,
            ..BuildTimings::default()
        },
        substituted: None,
    })
}

/// A download of locked packages that failed, and what may be done about it.
struct FailedFetch<'a> {
    op: String,
    detail: String,
    lock_path: &'a Path,
    policy: LockPolicy,
}

/// The locked packages could not be fetched: resolve the toolchain and the sources again. When
/// the archive carries something else now, the policy decides: frozen, an error naming both;
/// otherwise a build from what it carries, said in one line and recorded as a substitution.
fn follow_archive(
    recipe: &RuntimeRecipe,
    program: GoProgram,
    go: &LockedToolchain,
    sources: &Sources<'_>,
    cache: &Cache,
    failed: FailedFetch<'_>,
    sink: &dyn Sink,
) -> Result<ResolvedRuntime, RuntimeError> {
    let (fresh_go, fresh_src) = {
        let _apt_lock = cache.lock("apt")?;
        let apt = Apt::new(cache)?;
        apt.update()?;
        let g = LockedToolchain::resolve(&apt, &go.suite)?;
        let s = match sources {
            Sources::Debian(c) => Some(LockedSources::resolve(
                &apt,
                program,
                &c.requested,
                &c.suite,
            )?),
            Sources::Tree { .. } => None,
        };
        (g, s)
    };
    // What was locked and what is there now, package by package: only the ones that moved.
    let mut locked: Vec<&LockedPackage> = Vec::new();
    let mut used: Vec<&LockedPackage> = Vec::new();
    if fresh_go.packages != go.packages {
        locked.extend(&go.packages);
        used.extend(&fresh_go.packages);
    }
    if let (Sources::Debian(old), Some(new)) = (sources, &fresh_src) {
        if old.packages != new.packages {
            locked.extend(&old.packages);
            used.extend(&new.packages);
        }
    }
    let FailedFetch {
        op,
        detail,
        lock_path,
        policy,
    } = failed;
    if locked.is_empty() {
        return Err(DebianError::Apt { op, detail }.into());
    }
    let substitution = LockSubstitution {
        locked: locked.iter().map(|p| p.spec()).collect(),
        used: used.iter().map(|p| p.spec()).collect(),
    };
    let fix = relock_command(lock_path, None, true);
    match policy {
        LockPolicy::Locked(frozen) => {
            return Err(DebianError::Dropped(Box::new(crate::debian::Dropped {
                what: format!("runtime `{}`", recipe.name),
                lock: lock_path.to_path_buf(),
                locked: substitution.locked.join(", "),
                available: substitution.used.join(", "),
                frozen,
                fix,
            }))
            .into())
        }
        LockPolicy::UpdateMissing => sink.note(Note::warning(format!(
            "runtime {}: {} pins {}, which the archive no longer carries; building with {} \
             instead (recorded in run.json; `{fix}` moves the lock, --locked or CI=true make \
             this an error)",
            recipe.name,
            lock_path.display(),
            substitution.locked.join(", "),
            substitution.used.join(", ")
        ))),
    }
    let sources = match (&fresh_src, sources) {
        (Some(new), _) => Sources::Debian(new),
        (None, Sources::Tree { tree, rev }) => Sources::Tree { tree, rev },
        (None, Sources::Debian(old)) => Sources::Debian(old),
    };
    let mut runtime = go_runtime(recipe, program, &fresh_go, &sources, cache)?;
    runtime.substituted = Some(substitution);
    Ok(runtime)
}

/// Identity of one patch: its path and content hash (its bytes go into the cache key).
fn patch_ids(recipe: &RuntimeRecipe) -> Result<Vec<(PatchId, Vec<u8>)>, RuntimeError> {
    recipe
        .patches
        .iter()
        .map(|p| {
            let bytes = fs::read(p).map_err(|e| RuntimeError::io("read patch", p, e))?;
            let sha256 = hex::encode(Sha256::digest(&bytes));
            Ok((
                PatchId {
                    file: p.clone(),
                    sha256,
                },
                bytes,
            ))
        })
        .collect()
}

/// A locked package as the run's record names it (the record does not know lock files).
fn package_id(p: &LockedPackage) -> PackageId {
    let LockedPackage {
        name,
        version,
        sha256,
        filename,
        size,
    } = p;
    PackageId {
        name: name.clone(),
        version: version.clone(),
        sha256: sha256.clone(),
        filename: filename.clone(),
        size: *size,
    }
}

/// `program`'s job program built against `sources` (see the module doc).
fn go_runtime(
    recipe: &RuntimeRecipe,
    program: GoProgram,
    go: &LockedToolchain,
    sources: &Sources<'_>,
    cache: &Cache,
) -> Result<ResolvedRuntime, RuntimeError> {
    let patches = patch_ids(recipe)?;
    let commit = match sources {
        Sources::Tree { tree, rev } => Some(resolve_rev(tree, rev)?),
        Sources::Debian(_) => None,
    };
    let mut parts: Vec<&[u8]> = vec![BUILD_FORMAT, program.main_go().as_bytes()];
    // containerd's keys stay what they were before there was a second program.
    if program != GoProgram::Containerd {
        parts.push(program.key().as_bytes());
    }
    for p in &go.packages {
        parts.push(p.sha256.as_bytes());
    }
    match (sources, &commit) {
        (Sources::Debian(c), _) => {
            parts.push(b"debian");
            parts.extend(c.packages.iter().map(|p| p.sha256.as_bytes()));
        }
        (Sources::Tree { .. }, Some(commit)) => {
            parts.extend([b"tree".as_slice(), commit.as_bytes()])
        }
        (Sources::Tree { .. }, None) => {}
    }
    for (_, bytes) in &patches {
        parts.push(bytes);
    }
    let cache_key = key(&parts);
    let dir = cache.dir("runtimes")?.join(&cache_key);
    let hit = |mut r: ResolvedRuntime| {
        r.name = recipe.name.clone();
        // The entry is keyed by the patches' bytes: the same patches may live elsewhere for
        // this recipe (another checkout); provenance names this recipe's files.
        if let RuntimeProvenance::Debian { patches: ids, .. }
        | RuntimeProvenance::Tree { patches: ids, .. } = &mut r.provenance
        {
            for (id, file) in ids.iter_mut().zip(&recipe.patches) {
                id.file.clone_from(file);
            }
        }
        r.timings = BuildTimings {
            cached: true,
            ..BuildTimings::default()
        };
        r
    };
    if let Some(r) = read_manifest(&dir)? {
        return Ok(hit(r));
    }
    let _entry_lock = cache.lock(&format!("runtime-{cache_key}"))?;
    if let Some(r) = read_manifest(&dir)? {
        return Ok(hit(r));
    }

    let t_download = Instant::now();
    let (go_debs, _) = store::fetch(&go.packages, cache, RELOCK)?;
    let src_debs = match sources {
        Sources::Debian(c) => store::fetch(&c.packages, cache, RELOCK)?.0,
        Sources::Tree { .. } => Vec::new(),
    };
    let download = t_download.elapsed();

    let t_extract = Instant::now();
    let goroot = toolchain(go, &go_debs, cache)?;
    let work = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(cache.dir("runtimes")?)
        .map_err(|e| RuntimeError::io("create temp dir in", cache.root(), e))?;
    let patch_list: Vec<PatchId> = patches.iter().map(|(id, _)| id.clone()).collect();
    let (module_root, package_dir, mode) = match sources {
        Sources::Debian(c) => {
            let src = work.path().join("gopath/src");
            for deb in &src_debs {
                extract_deb(deb, &src, |p| {
                    p.strip_prefix("usr/share/gocode/src/")
                        .filter(|r| !r.is_empty())
                        .map(PathBuf::from)
                })?;
            }
            let root = src.join(program.gopath_module());
            if !root.join(program.mount_code()).is_dir() {
                return Err(RuntimeError::Build {
                    step: format!("extracting {}", c.requested),
                    log: format!("{} has no {}", root.display(), program.mount_code()),
                });
            }
            (
                root,
                src.join(program.main_dir()),
                GoMode::Gopath(work.path().join("gopath")),
            )
        }
        Sources::Tree { tree, .. } => {
            let commit = commit.as_deref().unwrap_or_default();
            let root = work.path().join("src");
            git_archive(tree, commit, &root)?;
            let mode = if root.join("vendor/modules.txt").is_file() {
                GoMode::Vendor
            } else {
                GoMode::ModCache(mod_cache())
            };
            (
                root.clone(),
                root.join("cmd").join(program.main_dir()),
                mode,
            )
        }
    };
    fs::create_dir_all(&package_dir)
        .map_err(|e| RuntimeError::io("create_dir_all", &package_dir, e))?;
    let main_go = package_dir.join("main.go");
    fs::write(&main_go, program.main_go()).map_err(|e| RuntimeError::io("write", &main_go, e))?;
    for (id, _) in &patches {
        apply_patch(&id.file, &module_root, &recipe_source_label(sources))?;
    }
    let extract = t_extract.elapsed();

    let t_build = Instant::now();
    let version = version_stamp(sources, commit.as_deref(), &patch_list);
    let out_dir = work.path().join("out");
    fs::create_dir_all(&out_dir).map_err(|e| RuntimeError::io("create_dir_all", &out_dir, e))?;
    let binary = out_dir.join(BINARY);
    go_build(
        &goroot,
        &mode,
        &GoTarget {
            program,
            module_root: &module_root,
            package_dir: &package_dir,
            out: &binary,
        },
        &version,
        cache,
        work.path(),
    )?;
    check_static(&binary)?;
    let go_version = go_version(&goroot)?;
    let build = t_build.elapsed();

    let provenance = match sources {
        Sources::Debian(c) => RuntimeProvenance::Debian {
            program,
            suite: c.suite.clone(),
            version: c.version.clone(),
            go: go_version,
            patches: patch_list,
            packages: c.packages.iter().map(package_id).collect(),
        },
        Sources::Tree { tree, rev } => RuntimeProvenance::Tree {
            program,
            tree: tree.to_path_buf(),
            rev: rev.to_string(),
            commit: commit.clone().unwrap_or_default(),
            go: go_version,
            patches: patch_list,
        },
    };
    let runtime = ResolvedRuntime {
        name: recipe.name.clone(),
        binary: PathBuf::from(BINARY),
        provenance,
        cache_key: cache_key.clone(),
        timings: BuildTimings::default(),
        substituted: None,
    };
    let json = serde_json::to_vec_pretty(&runtime).map_err(|e| RuntimeError::Build {
        step: "serialize runtime.json".into(),
        log: e.to_string(),
    })?;
    write_atomic(&out_dir.join(MANIFEST), &json)?;
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| RuntimeError::io("remove_dir_all", &dir, e))?;
    }
    fs::rename(&out_dir, &dir).map_err(|e| RuntimeError::io("rename", &dir, e))?;
    let mut runtime = read_manifest(&dir)?.ok_or_else(|| RuntimeError::Build {
        step: "publish".into(),
        log: format!("{} vanished after writing", dir.join(MANIFEST).display()),
    })?;
    runtime.name = recipe.name.clone();
    runtime.timings = BuildTimings {
        cached: false,
        download,
        extract,
        build,
        total: Duration::ZERO,
    };
    Ok(runtime)
}

fn recipe_source_label(sources: &Sources<'_>) -> String {
    match sources {
        Sources::Debian(c) => format!("{} {}", c.requested, c.version),
        Sources::Tree { tree, rev } => format!("{} at {rev}", tree.display()),
    }
}

/// What hello's version says: the sources' version or commit, and the patches
/// (`2.1.9+ds1-5+per-layer-idmap.patch`). No spaces: it travels in `-ldflags -X`.
fn version_stamp(sources: &Sources<'_>, commit: Option<&str>, patches: &[PatchId]) -> String {
    let mut v = match (sources, commit) {
        (Sources::Debian(c), _) => c.version.clone(),
        (Sources::Tree { .. }, Some(c)) => c.get(..12).unwrap_or(c).to_string(),
        (Sources::Tree { rev, .. }, None) => rev.to_string(),
    };
    for p in patches {
        if let Some(n) = p.file.file_name() {
            v.push('+');
            v.push_str(&n.to_string_lossy());
        }
    }
    v.retain(|c| !c.is_whitespace() && c != '\'' && c != '"');
    v
}

fn read_manifest(dir: &Path) -> Result<Option<ResolvedRuntime>, RuntimeError> {
    let path = dir.join(MANIFEST);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RuntimeError::io("read", &path, e)),
    };
    // An unreadable manifest (older mmx) is a cache miss.
    let Ok(mut r) = serde_json::from_slice::<ResolvedRuntime>(&text) else {
        return Ok(None);
    };
    r.binary = dir.join(&r.binary);
    Ok(r.binary.is_file().then_some(r))
}

/// The extracted toolchain (GOROOT), extracting it on first use.
fn toolchain(go: &LockedToolchain, debs: &[Deb], cache: &Cache) -> Result<PathBuf, RuntimeError> {
    let parts: Vec<&[u8]> = go.packages.iter().map(|p| p.sha256.as_bytes()).collect();
    let k = key(&parts);
    let dir = cache.dir("go")?.join(&k);
    let goroot = dir.join(&go.goroot);
    let ready = dir.join(".complete");
    if ready.is_file() {
        return Ok(goroot);
    }
    let _l = cache.lock(&format!("go-{k}"))?;
    if ready.is_file() {
        return Ok(goroot);
    }
    let work = tempfile::Builder::new()
        .prefix(".extract-")
        .tempdir_in(cache.dir("go")?)
        .map_err(|e| RuntimeError::io("create temp dir in", cache.root(), e))?;
    let share = go.goroot.replace("usr/lib/", "usr/share/");
    for deb in debs {
        extract_deb(deb, work.path(), |p| {
            // The toolchain, without the compiler's own test suite (half its size).
            let keep = (p.starts_with(&go.goroot) || p.starts_with(&share))
                && !p.starts_with(&format!("{share}/test"));
            keep.then(|| PathBuf::from(p))
        })?;
    }
    write_atomic(&work.path().join(".complete"), b"")?;
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| RuntimeError::io("remove_dir_all", &dir, e))?;
    }
    let kept = work.keep();
    fs::rename(&kept, &dir).map_err(|e| RuntimeError::io("rename", &dir, e))?;
    Ok(goroot)
}

/// How `go build` finds the sources' dependencies.
enum GoMode {
    /// GO111MODULE=off with this GOPATH (Debian sources).
    Gopath(PathBuf),
    /// The checkout's vendor/ directory.
    Vendor,
    /// The checkout's go.mod against this module cache, offline.
    ModCache(PathBuf),
}

fn mod_cache() -> PathBuf {
    let env = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    env("GOMODCACHE")
        .or_else(|| env("GOPATH").map(|g| g.join("pkg/mod")))
        .or_else(|| env("HOME").map(|h| h.join("go/pkg/mod")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent-go-mod-cache"))
}

/// A `go` command with nothing of the user's Go environment and the network off.
fn go_command(goroot: &Path, cache: &Cache, work: &Path) -> Result<Command, RuntimeError> {
    let tmp = work.join("tmp");
    fs::create_dir_all(&tmp).map_err(|e| RuntimeError::io("create_dir_all", &tmp, e))?;
    let mut cmd = Command::new(goroot.join("bin/go"));
    cmd.env_clear()
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", goroot.join("bin").display()),
        )
        .env("HOME", work)
        .env("GOROOT", goroot)
        .env("GOENV", "off")
        .env("GOCACHE", cache.dir("gocache")?)
        .env("GOTMPDIR", &tmp)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOSUMDB", "off")
        .env("GOTELEMETRY", "off")
        .env("GOFLAGS", "")
        .env("GOOS", "linux")
        .env("GOARCH", "amd64")
        .env("CGO_ENABLED", "0");
    Ok(cmd)
}

/// What one `go build` makes: `program`'s job program in `package_dir`, inside the module at
/// `module_root`, written to `out`.
struct GoTarget<'a> {
    program: GoProgram,
    module_root: &'a Path,
    package_dir: &'a Path,
    out: &'a Path,
}

fn go_build(
    goroot: &Path,
    mode: &GoMode,
    target: &GoTarget<'_>,
    version: &str,
    cache: &Cache,
    work: &Path,
) -> Result<(), RuntimeError> {
    let GoTarget {
        program,
        module_root,
        package_dir,
        out,
    } = *target;
    let main_dir = format!("./cmd/{}", program.main_dir());
    let mut cmd = go_command(goroot, cache, work)?;
    let ldflags = format!("-s -w -X {}={version}", program.version_var());
    cmd.args([
        "build",
        "-trimpath",
        "-buildvcs=false",
        "-ldflags",
        &ldflags,
        "-o",
    ])
    .arg(out);
    match mode {
        GoMode::Gopath(gopath) => {
            cmd.env("GO111MODULE", "off")
                .env("GOPATH", gopath)
                .current_dir(package_dir)
                .arg(".");
        }
        GoMode::Vendor => {
            cmd.env("GO111MODULE", "on")
                .env("GOPATH", work.join("gopath"))
                .current_dir(module_root)
                .args(["-mod=vendor", &main_dir]);
        }
        GoMode::ModCache(modcache) => {
            cmd.env("GO111MODULE", "on")
                .env("GOPATH", work.join("gopath"))
                .env("GOMODCACHE", modcache)
                .current_dir(module_root)
                .args(["-mod=mod", &main_dir]);
        }
    }
    let what = match mode {
        GoMode::Gopath(_) => "go build (GOPATH mode, Debian sources)".to_string(),
        GoMode::Vendor => "go build -mod=vendor (the checkout's vendor/)".to_string(),
        GoMode::ModCache(m) => format!(
            "go build -mod=mod with GOPROXY=off against the module cache {} (fill it with `go mod download` in the checkout, or vendor the modules)",
            m.display()
        ),
    };
    run(cmd, &what)
}

/// Run a go command for `step` (at most [`GO_BUILD_LIMIT`]); a failure carries the end of what
/// go said.
fn run(cmd: Command, step: &str) -> Result<(), RuntimeError> {
    let out = Run::new(cmd, GO_BUILD_LIMIT)
        .run()
        .map_err(|e| RuntimeError::Build {
            step: step.to_string(),
            log: e.to_string(),
        })?;
    if out.success() {
        return Ok(());
    }
    let mut log = out.stderr.clone();
    log.push_str(&out.stdout);
    let tail = log.len().saturating_sub(8000);
    let tail = log
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| i >= tail)
        .unwrap_or(0);
    Err(RuntimeError::Build {
        step: format!("{step} ({})", out.status),
        log: log[tail..].trim_end().to_string(),
    })
}

/// `go version` of the toolchain: `go1.27.3`.
fn go_version(goroot: &Path) -> Result<String, RuntimeError> {
    let go = goroot.join("bin/go");
    let mut cmd = Command::new(&go);
    cmd.arg("version")
        .env("GOROOT", goroot)
        .env("GOTOOLCHAIN", "local");
    let out = Run::new(cmd, GO_VERSION_LIMIT)
        .run()
        .map_err(|e| RuntimeError::Build {
            step: "go version".into(),
            log: e.to_string(),
        })?;
    out.stdout
        .split_whitespace()
        .nth(2)
        .map(str::to_string)
        .ok_or_else(|| RuntimeError::Build {
            step: "go version".into(),
            log: out.text(),
        })
}

/// A runtime travels into guests with no libc beside it: refuse an ELF with an interpreter
/// (dynamically linked) or anything that is not a 64-bit little-endian ELF executable.
pub fn check_static(path: &Path) -> Result<(), RuntimeError> {
    let bad = |detail: String| RuntimeError::NotStatic {
        path: path.to_path_buf(),
        detail,
    };
    let bytes = fs::read(path).map_err(|e| RuntimeError::io("read", path, e))?;
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err(bad("not a 64-bit little-endian ELF file".into()));
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Err(bad("truncated ELF header".into()));
    };
    const PT_INTERP: u32 = 3;
    for i in 0..usize::from(phnum) {
        let at = usize::try_from(phoff).unwrap_or(usize::MAX) + i * usize::from(phentsize);
        match u32_at(at) {
            Some(PT_INTERP) => {
                return Err(bad(
                    "it is dynamically linked (has an ELF interpreter); link it statically (Rust: -C target-feature=+crt-static, Go: CGO_ENABLED=0, C: -static)".into(),
                ))
            }
            Some(_) => {}
            None => return Err(bad("truncated program headers".into())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_check_reads_program_headers() {
        // This test binary is dynamically linked; /proc/self/exe says so.
        let e = check_static(Path::new("/proc/self/exe"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dynamically linked"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        fs::write(&script, "#!/bin/sh\n").unwrap();
        let e = check_static(&script).unwrap_err().to_string();
        assert!(e.contains("not a 64-bit"), "{e}");
    }

    #[test]
    fn version_stamps_have_no_spaces() {
        let c = LockedSources {
            suite: "sid".into(),
            requested: "p".into(),
            version: "2.1.9+ds1-5".into(),
            packages: vec![],
        };
        let p = PatchId {
            file: "/x/per layer.patch".into(),
            sha256: "00".into(),
        };
        assert_eq!(
            version_stamp(&Sources::Debian(&c), None, &[p]),
            "2.1.9+ds1-5+perlayer.patch"
        );
        let t = Sources::Tree {
            tree: Path::new("/t"),
            rev: "main",
        };
        assert_eq!(
            version_stamp(&t, Some("0123456789abcdef"), &[]),
            "0123456789ab"
        );
    }
}
