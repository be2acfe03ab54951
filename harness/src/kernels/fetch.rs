//! [`ensure`]: make a recipe's kernel ready in the cache, fetching and extracting when missing
//! (source recipes go to [`super::srcbuild`]), and check its config against mmx's needs.
//!
//! The warm path reads one small JSON manifest (`kernels/<key>/kernel.json`) and takes no lock.
//! The cold path holds the entry's lock, downloads under the apt lock, checks every .deb against
//! the SHA-256 in `kernels.lock`, extracts into a temporary directory and renames it into place.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::fragment::Role;
use super::lock::{relock_command, LockFile, LockedKernel};
use super::modules::{ModuleBytes, ModuleFeature, ModuleIndex};
use super::recipe::{Recipe, RecipeSource};
use super::srcbuild;
use super::{KernelError, KernelModule, KernelProvenance, KernelTimings, ResolvedKernel};
use crate::debian::cache::key;
use crate::debian::deb::{for_each_data_entry, EntryKind};
use crate::debian::{store, Apt, Cache, Deb, DebianError, Dropped, LockPolicy, LockedPackage};
use crate::events::{Note, Sink};
use crate::proc::Cancel;
use crate::results::LockSubstitution;
use crate::rundir::write_atomic;

/// Bump when the extracted layout or the module choice changes, so old entries are not reused.
/// v2: soft dependencies resolved through aliases, module aliases and dependencies recorded.
const EXTRACT_FORMAT: &[u8] = b"extract-v3";
const MANIFEST: &str = "kernel.json";

/// The command that moves kernels.lock to what the archive carries now.
pub(crate) const RELOCK: &str = "mmx kernels lock --update";

/// How [`ensure_opts`] behaves beyond the recipe.
#[derive(Clone, Copy)]
pub struct EnsureOptions<'a> {
    pub policy: LockPolicy,
    /// Hears a source build's progress, and what the user should know about the kernel (a
    /// locked package the archive dropped, a feature it lacks).
    pub sink: &'a dyn Sink,
    /// Stops a source build (make's whole process group). Without one, nothing stops a build
    /// but the end of mmx, which takes make's group with it.
    pub cancel: Option<&'a Cancel>,
}

impl<'a> EnsureOptions<'a> {
    /// The lock policy from the environment ([`lock_policy`]), no cancel.
    pub fn new(sink: &'a dyn Sink) -> EnsureOptions<'a> {
        EnsureOptions {
            policy: LockPolicy::from_env(),
            sink,
            cancel: None,
        }
    }
}

/// Make `recipe`'s kernel ready: from the cache when there, else fetch, verify and extract
/// (Debian), or build (`[source]`). The lock policy comes from the environment
/// ([`LockPolicy::from_env`]: frozen under `CI=true`). A kernel whose config lacks what every guest needs is refused
/// here, naming the options, before anything boots it.
pub fn ensure(
    recipe: &Recipe,
    lock: &LockFile,
    cache: &Cache,
    sink: &dyn Sink,
) -> Result<ResolvedKernel, KernelError> {
    ensure_opts(recipe, lock, cache, &EnsureOptions::new(sink))
}

/// [`ensure`] with an explicit policy for locked packages the archive no longer has.
pub fn ensure_with(
    recipe: &Recipe,
    lock: &LockFile,
    cache: &Cache,
    policy: LockPolicy,
    sink: &dyn Sink,
) -> Result<ResolvedKernel, KernelError> {
    let opts = EnsureOptions {
        policy,
        ..EnsureOptions::new(sink)
    };
    ensure_opts(recipe, lock, cache, &opts)
}

/// [`ensure`] with every option explicit.
pub fn ensure_opts(
    recipe: &Recipe,
    lock: &LockFile,
    cache: &Cache,
    opts: &EnsureOptions<'_>,
) -> Result<ResolvedKernel, KernelError> {
    let start = Instant::now();
    let result = match &recipe.source {
        RecipeSource::Debian { suite, package } => {
            let locked = lock.entry_for(recipe, package, Some(suite))?;
            match ensure_debian(recipe, locked, cache, start) {
                // Only a failed download: a checksum mismatch is never papered over.
                Err(e) if e.is_apt_failure() => {
                    follow_archive(recipe, locked, cache, start, e, opts.policy, opts.sink)
                }
                other => other,
            }
        }
        RecipeSource::Path {
            vmlinuz,
            modules,
            config,
        } => ensure_path(
            recipe,
            vmlinuz,
            modules.as_deref(),
            config.as_deref(),
            cache,
        ),
        RecipeSource::Build(spec) => srcbuild::ensure_source(recipe, spec, lock, cache, opts),
    };
    let mut kernel = result
        .and_then(|k| check_needs(recipe, k, opts.sink))
        .map_err(|e| match e {
            // These name the kernel already, and must read as what they are.
            e @ (KernelError::Build { .. }
            | KernelError::MissingOptions { .. }
            | KernelError::NotLocked { .. }
            | KernelError::StaleLock { .. }
            | KernelError::Debian(DebianError::Dropped(_))) => e,
            e => KernelError::Kernel {
                name: recipe.name.clone(),
                source: Box::new(e),
            },
        })?;
    kernel.timings.total = start.elapsed();
    Ok(kernel)
}

/// Refuse a kernel that lacks a boot need; say which feature needs it lacks.
fn check_needs(
    recipe: &Recipe,
    kernel: ResolvedKernel,
    sink: &dyn Sink,
) -> Result<ResolvedKernel, KernelError> {
    let Some(missing) = kernel.missing_options()? else {
        return Ok(kernel);
    };
    let (boot, features): (Vec<_>, Vec<_>) =
        missing.into_iter().partition(|m| m.role() == Role::Boot);
    if !boot.is_empty() {
        return Err(KernelError::MissingOptions {
            name: recipe.name.clone(),
            config: kernel.config.clone().unwrap_or_default(),
            missing: boot,
        });
    }
    for m in &features {
        sink.note(Note::warning(format!(
            "kernel {}: lacks {m}: cells that need it will be unsupported",
            recipe.name
        )));
    }
    Ok(kernel)
}

/// The cached kernel of a Debian or source recipe, if it is in the cache; never fetches or
/// builds.
pub fn cached(recipe: &Recipe, lock: &LockFile, cache: &Cache) -> Option<ResolvedKernel> {
    let (suite, package) = match &recipe.source {
        RecipeSource::Debian { suite, package } => (suite, package),
        RecipeSource::Build(spec) => return srcbuild::cached(recipe, spec, lock, cache),
        RecipeSource::Path { .. } => return None,
    };
    let locked = lock.entry_for(recipe, package, Some(suite)).ok()?;
    let dir = cache
        .root()
        .join("kernels")
        .join(debian_key(recipe, locked));
    read_manifest(&dir).ok().flatten()
}

fn debian_key(recipe: &Recipe, locked: &LockedKernel) -> String {
    let mut parts: Vec<&[u8]> = vec![EXTRACT_FORMAT, b"debian", locked.release.as_bytes()];
    for p in &locked.packages {
        parts.extend([p.name.as_bytes(), p.version.as_bytes(), p.sha256.as_bytes()]);
    }
    parts.extend(recipe.extra_modules.iter().map(|m| m.as_bytes()));
    key(&parts)
}

pub(crate) fn read_manifest(dir: &Path) -> Result<Option<ResolvedKernel>, KernelError> {
    let path = dir.join(MANIFEST);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(KernelError::io("read", &path, e)),
    };
    // An unreadable manifest (older mmx, disk trouble) is a cache miss, not an error.
    let Ok(mut k) = serde_json::from_slice::<ResolvedKernel>(&text) else {
        return Ok(None);
    };
    // Paths in the manifest are relative to the entry, so the cache can move.
    k.vmlinuz = dir.join(&k.vmlinuz);
    k.config = k.config.map(|c| dir.join(c));
    for m in &mut k.modules {
        m.host_path = dir.join(&m.host_path);
    }
    Ok(Some(k))
}

fn ensure_debian(
    recipe: &Recipe,
    locked: &LockedKernel,
    cache: &Cache,
    start: Instant,
) -> Result<ResolvedKernel, KernelError> {
    let cache_key = debian_key(recipe, locked);
    let dir = cache.dir("kernels")?.join(&cache_key);
    let hit = |mut k: ResolvedKernel| {
        k.name = recipe.name.clone();
        k.timings.cached = true;
        k
    };
    if let Some(k) = read_manifest(&dir)? {
        return Ok(hit(k));
    }
    let _entry_lock = cache.lock(&format!("kernel-{cache_key}"))?;
    // Someone else may have filled it while we waited.
    if let Some(k) = read_manifest(&dir)? {
        return Ok(hit(k));
    }
    let downloads = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(cache.dir("kernels")?)
        .map_err(|e| KernelError::io("create temp dir", cache.root(), e))?;
    let debs = download(locked, cache, downloads.path())?;
    let download_time = start.elapsed();

    let extract_start = Instant::now();
    let work = tempfile::Builder::new()
        .prefix(".extract-")
        .tempdir_in(cache.dir("kernels")?)
        .map_err(|e| KernelError::io("create temp dir", cache.root(), e))?;
    let mut found = Found::default();
    for deb in &debs {
        scan_deb(deb, work.path(), &locked.release, &mut found)?;
    }
    let Found {
        vmlinuz,
        config,
        index,
    } = found;
    let vmlinuz = vmlinuz.ok_or_else(|| KernelError::Layout {
        detail: format!(
            "no vmlinuz for {} in {}",
            locked.release,
            package_list(locked)
        ),
    })?;
    build_entry(
        recipe,
        work.path(),
        &index,
        vmlinuz,
        config,
        &locked.release,
        KernelProvenance::Debian {
            suite: locked.suite.clone(),
            packages: locked.packages.clone(),
        },
        cache_key,
    )?;
    publish(work, &dir)?;
    let mut kernel = read_manifest(&dir)?.ok_or_else(|| KernelError::Layout {
        detail: format!("{} vanished after writing", dir.join(MANIFEST).display()),
    })?;
    kernel.name = recipe.name.clone();
    kernel.timings = KernelTimings {
        cached: false,
        download: download_time,
        build: Duration::ZERO,
        extract: extract_start.elapsed(),
        total: Duration::ZERO,
        kbuild_steps: 0,
    };
    Ok(kernel)
}

/// The locked packages could not be fetched: resolve the recipe again. When the archive carries
/// something else now, the policy decides: frozen, an error naming both; otherwise that kernel,
/// said in one line and recorded as a substitution. Nothing newer: the failure stands (the
/// archive is unreachable, say).
fn follow_archive(
    recipe: &Recipe,
    locked: &LockedKernel,
    cache: &Cache,
    start: Instant,
    failure: KernelError,
    policy: LockPolicy,
    sink: &dyn Sink,
) -> Result<ResolvedKernel, KernelError> {
    let fresh = {
        let _apt_lock = cache.lock("apt")?;
        let apt = Apt::new(cache)?;
        LockedKernel::resolve(&apt, recipe)?
    };
    let Some(fresh) = fresh.filter(|f| f.packages != locked.packages) else {
        return Err(failure);
    };
    let substitution = Substitution::new(recipe, &locked.packages, &fresh.packages);
    substitution.allowed(policy, sink)?;
    let mut kernel = ensure_debian(recipe, &fresh, cache, start)?;
    kernel.substituted = Some(substitution.into_record());
    Ok(kernel)
}

/// A kernel the archive dropped, and the one it carries now, for one recipe.
pub(crate) struct Substitution<'a> {
    recipe: &'a Recipe,
    record: LockSubstitution,
}

impl<'a> Substitution<'a> {
    pub(crate) fn new(
        recipe: &'a Recipe,
        locked: &[LockedPackage],
        used: &[LockedPackage],
    ) -> Substitution<'a> {
        Substitution {
            recipe,
            record: LockSubstitution {
                locked: locked.iter().map(LockedPackage::spec).collect(),
                used: used.iter().map(LockedPackage::spec).collect(),
            },
        }
    }

    /// Frozen: the error naming both and the command that moves the lock. Otherwise say, in one
    /// line, what runs instead.
    pub(crate) fn allowed(&self, policy: LockPolicy, sink: &dyn Sink) -> Result<(), KernelError> {
        let lock = self.recipe.file.with_file_name("kernels.lock");
        let fix = relock_command(&lock, Some(&self.recipe.name));
        match policy {
            LockPolicy::Locked(frozen) => Err(DebianError::Dropped(Box::new(Dropped {
                what: format!("kernel `{}`", self.recipe.name),
                lock,
                locked: self.record.locked.join(", "),
                available: self.record.used.join(", "),
                frozen,
                fix,
            }))
            .into()),
            LockPolicy::UpdateMissing => {
                sink.note(Note::warning(format!(
                    "kernel {}: {} pins {}, which the archive no longer carries; running {} \
                     instead (recorded in run.json; `{fix}` moves the lock, --locked or CI=true \
                     make this an error)",
                    self.recipe.name,
                    lock.display(),
                    self.record.locked.join(", "),
                    self.record.used.join(", ")
                )));
                Ok(())
            }
        }
    }

    pub(crate) fn into_record(self) -> LockSubstitution {
        self.record
    }
}

fn package_list(locked: &LockedKernel) -> String {
    let names: Vec<_> = locked.packages.iter().map(|p| p.name.as_str()).collect();
    names.join(", ")
}

/// Download the locked packages and check their SHA-256 against the lock.
pub(crate) fn download(
    locked: &LockedKernel,
    cache: &Cache,
    into: &Path,
) -> Result<Vec<Deb>, KernelError> {
    let packages: Vec<_> = locked.packages.iter().collect();
    Ok(store::download(&packages, cache, into, RELOCK)?)
}

#[derive(Default)]
struct Found {
    vmlinuz: Option<PathBuf>,
    config: Option<PathBuf>,
    index: ModuleIndex,
}

/// One pass over a .deb: vmlinuz and config to `work`, modules and what is built in
/// (`modules.builtin`, `modules.builtin.modinfo`) to memory.
/// Old packages put vmlinuz and config in /boot, newer ones in /usr/lib/modules/<release>/.
fn scan_deb(deb: &Deb, work: &Path, release: &str, found: &mut Found) -> Result<(), KernelError> {
    let module_dirs = [
        format!("lib/modules/{release}/"),
        format!("usr/lib/modules/{release}/"),
    ];
    let boot_vmlinuz = format!("boot/vmlinuz-{release}");
    let boot_config = format!("boot/config-{release}");
    for_each_data_entry(deb, |path, kind, reader| -> Result<(), KernelError> {
        if kind != EntryKind::File {
            return Ok(());
        }
        let in_tree = module_dirs
            .iter()
            .find_map(|d| path.strip_prefix(d.as_str()));
        let mut save = |name: &str| -> Result<PathBuf, KernelError> {
            let out = work.join(name);
            let mut f = fs::File::create(&out).map_err(|e| KernelError::io("create", &out, e))?;
            std::io::copy(reader, &mut f).map_err(|e| KernelError::io("write", &out, e))?;
            Ok(out)
        };
        match in_tree {
            _ if path == boot_vmlinuz => found.vmlinuz = Some(save("vmlinuz")?),
            _ if path == boot_config => found.config = Some(save("config")?),
            Some("vmlinuz") => found.vmlinuz = Some(save("vmlinuz")?),
            Some("config") => found.config = Some(save("config")?),
            Some("modules.builtin") => {
                let mut text = String::new();
                reader
                    .read_to_string(&mut text)
                    .map_err(|e| KernelError::io("read modules.builtin from", deb.path(), e))?;
                found.index.set_builtin(&text);
            }
            Some("modules.builtin.modinfo") => {
                let mut bytes = Vec::new();
                reader.read_to_end(&mut bytes).map_err(|e| {
                    KernelError::io("read modules.builtin.modinfo from", deb.path(), e)
                })?;
                found.index.set_builtin_modinfo(&bytes);
            }
            Some(rel) if rel.starts_with("kernel/") && rel.contains(".ko") => {
                let mut bytes = Vec::new();
                reader
                    .read_to_end(&mut bytes)
                    .map_err(|e| KernelError::io("read module from", deb.path(), e))?;
                found.index.insert(rel, ModuleBytes::Memory(bytes));
            }
            _ => {}
        }
        Ok(())
    })
}

/// Choose modules, write them under `dir/modules`, and write the manifest. `vmlinuz` and
/// `config` may be inside `dir` (stored relative) or elsewhere (stored absolute).
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_entry(
    recipe: &Recipe,
    dir: &Path,
    index: &ModuleIndex,
    vmlinuz: PathBuf,
    config: Option<PathBuf>,
    release: &str,
    provenance: KernelProvenance,
    cache_key: String,
) -> Result<ResolvedKernel, KernelError> {
    if let Some(found) = vmlinuz_release(&vmlinuz)? {
        if found != release {
            return Err(KernelError::Layout {
                detail: format!(
                    "{} says release {found}, expected {release}",
                    vmlinuz.display()
                ),
            });
        }
    }
    let module_decompress = match &config {
        Some(c) => fs::read_to_string(c)
            .map_err(|e| KernelError::io("read", c, e))?
            .lines()
            .any(|l| l.trim() == "CONFIG_MODULE_DECOMPRESS=y"),
        None => false,
    };
    let mut wants: Vec<(String, ModuleFeature)> = ModuleFeature::BUILT_IN_SET
        .iter()
        .flat_map(|f| f.modules().iter().map(|m| (m.to_string(), *f)))
        .collect();
    wants.extend(
        recipe
            .extra_modules
            .iter()
            .map(|m| (m.clone(), ModuleFeature::Extra)),
    );
    // Without a module tree, everything wanted must be built in (modules.builtin, when
    // known) or is unavailable.
    let selection = index.select(&wants)?;
    let mod_dir = dir.join("modules");
    fs::create_dir_all(&mod_dir).map_err(|e| KernelError::io("create_dir_all", &mod_dir, e))?;
    let mut modules = Vec::new();
    for c in selection.chosen {
        let compressed = c.xz && module_decompress;
        let file = format!("{}.ko{}", c.name, if compressed { ".xz" } else { "" });
        let bytes = if compressed { &c.raw } else { &c.plain };
        let out = mod_dir.join(&file);
        fs::write(&out, bytes).map_err(|e| KernelError::io("write", &out, e))?;
        modules.push(KernelModule {
            name: c.name,
            host_path: Path::new("modules").join(&file),
            initramfs_path: Path::new("/lib/modules").join(&file),
            compressed,
            needed_for: c.needed_for.into_iter().collect(),
            on_request_for: c.on_request_for.into_iter().collect(),
            depends: c.depends,
            aliases: c.aliases,
        });
    }
    let rel = |p: PathBuf| p.strip_prefix(dir).map(Path::to_path_buf).unwrap_or(p);
    let kernel = ResolvedKernel {
        name: recipe.name.clone(),
        release: release.to_string(),
        vmlinuz: rel(vmlinuz),
        config: config.map(rel),
        modules,
        builtin: selection.builtin,
        unavailable: selection.unavailable,
        module_decompress,
        provenance,
        cache_key,
        timings: KernelTimings::default(),
        substituted: None,
    };
    let json = serde_json::to_vec_pretty(&kernel).map_err(|e| KernelError::Layout {
        detail: format!("serialize manifest: {e}"),
    })?;
    write_atomic(&dir.join(MANIFEST), &json)?;
    Ok(kernel)
}

/// Move a finished temporary entry into place. Under the entry lock, so no one else renames.
pub(crate) fn publish(work: tempfile::TempDir, dir: &Path) -> Result<(), KernelError> {
    if dir.exists() {
        // A leftover without a readable manifest (we checked under the lock): replace it.
        fs::remove_dir_all(dir).map_err(|e| KernelError::io("remove_dir_all", dir, e))?;
    }
    let work = work.keep();
    fs::rename(&work, dir).map_err(|e| KernelError::io("rename", dir, e))
}

/// The release string of an x86 bzImage: the setup header's `kernel_version` field (offset
/// 0x20E) points at "6.1.0-50-cloud-amd64 (debian-kernel@…) #1 SMP …". None for other formats.
/// <https://docs.kernel.org/arch/x86/boot.html>
pub(crate) fn vmlinuz_release(vmlinuz: &Path) -> Result<Option<String>, KernelError> {
    let mut head = vec![0u8; 64 * 1024];
    let mut f = fs::File::open(vmlinuz).map_err(|e| KernelError::io("open", vmlinuz, e))?;
    let n = f
        .read(&mut head)
        .map_err(|e| KernelError::io("read", vmlinuz, e))?;
    head.truncate(n);
    if head.get(0x202..0x206) != Some(b"HdrS") {
        return Ok(None);
    }
    let Some(ptr) = head.get(0x20e..0x210) else {
        return Ok(None);
    };
    let at = usize::from(u16::from_le_bytes([ptr[0], ptr[1]])) + 0x200;
    let Some(tail) = head.get(at..) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&tail[..tail.iter().position(|&b| b == 0).unwrap_or(0)])
        .into_owned();
    Ok(text.split_whitespace().next().map(str::to_string))
}

/// A kernel on the local disk: modules are chosen from its tree every time (users rebuild in
/// place), and the entry is keyed by the content of what was chosen.
fn ensure_path(
    recipe: &Recipe,
    vmlinuz: &Path,
    modules: Option<&Path>,
    config: Option<&Path>,
    cache: &Cache,
) -> Result<ResolvedKernel, KernelError> {
    let start = Instant::now();
    let meta = fs::metadata(vmlinuz).map_err(|e| KernelError::io("stat", vmlinuz, e))?;
    let release = match (vmlinuz_release(vmlinuz)?, modules.and_then(Path::file_name)) {
        (Some(r), _) => r,
        (None, Some(dir)) => dir.to_string_lossy().into_owned(),
        (None, None) => "unknown".to_string(),
    };
    let index = match modules {
        Some(m) => ModuleIndex::from_dir(m)?,
        None => ModuleIndex::default(),
    };
    // Key: vmlinuz identity plus the bytes of every module file that may be chosen is too much
    // to hash; the chosen ones are hashed after choosing, in a scratch entry.
    let work = tempfile::Builder::new()
        .prefix(".path-")
        .tempdir_in(cache.dir("kernels")?)
        .map_err(|e| KernelError::io("create temp dir", cache.root(), e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let provenance = KernelProvenance::Path {
        vmlinuz: vmlinuz.to_path_buf(),
        modules: modules.map(Path::to_path_buf),
    };
    let mut kernel = build_entry(
        recipe,
        work.path(),
        &index,
        vmlinuz.to_path_buf(),
        config.map(Path::to_path_buf),
        &release,
        provenance,
        String::new(),
    )?;
    let mut h = blake3::Hasher::new();
    h.update(EXTRACT_FORMAT);
    h.update(vmlinuz.as_os_str().as_encoded_bytes());
    h.update(&meta.len().to_le_bytes());
    h.update(&mtime.to_le_bytes());
    h.update(&serde_json::to_vec(&kernel).unwrap_or_default());
    for m in &kernel.modules {
        let p = work.path().join(&m.host_path);
        h.update(&fs::read(&p).map_err(|e| KernelError::io("read", &p, e))?);
    }
    kernel.cache_key = hex::encode(&h.finalize().as_bytes()[..16]);
    let dir = cache.dir("kernels")?.join(&kernel.cache_key);
    let existing = read_manifest(&dir)?;
    if existing.is_none() {
        let _l = cache.lock(&format!("kernel-{}", kernel.cache_key))?;
        if read_manifest(&dir)?.is_none() {
            let json = serde_json::to_vec_pretty(&kernel).map_err(|e| KernelError::Layout {
                detail: format!("serialize manifest: {e}"),
            })?;
            write_atomic(&work.path().join(MANIFEST), &json)?;
            publish(work, &dir)?;
        }
    }
    let mut kernel = read_manifest(&dir)?.ok_or_else(|| KernelError::Layout {
        detail: format!("{} vanished after writing", dir.join(MANIFEST).display()),
    })?;
    kernel.name = recipe.name.clone();
    kernel.timings = KernelTimings {
        cached: existing.is_some(),
        download: Duration::ZERO,
        build: Duration::ZERO,
        extract: start.elapsed(),
        total: Duration::ZERO,
        kbuild_steps: 0,
    };
    Ok(kernel)
}
