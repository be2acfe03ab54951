//! Kernels: recipes (`kernels/*.toml`) → exact packages (`kernels/kernels.lock`) → an extracted
//! kernel in the cache ([`ResolvedKernel`]: vmlinuz, config, the modules the guest needs in load
//! order) that the initramfs builder and the QEMU backend consume.
//!
//! Phases, one file each: [`recipe`] (parse, check), [`lock`] (what a kernels.lock entry is, and
//! how a recipe resolves to one), [`relock`] (writing entries: on first use, or when asked),
//! [`modules`] (which modules, which order;
//! [`aliases`]: what they answer to), [`fetch`] (put it
//! together in the cache), [`cmd`] (`mmx kernels …`). The Debian machinery underneath — the
//! private apt, reading .debs, the cache, the lock file's format — is `crate::debian`'s.
//!
//! Kernels mmx builds (`[source]` recipes): [`source`] (the recipe table), [`patches`] (series),
//! [`tree`] (source trees and build directories; `switch` moves one to another tree in
//! place), [`config`] and [`fragment`] (kconfig, and
//! what every kernel must have), [`build`] (make), [`srcbuild`] (through [`ensure`], cached).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::debian::{DebianError, LockedPackage};
use crate::results::LockSubstitution;
use crate::rundir::IoError;

mod aliases;
pub mod build;
mod cmd;
pub mod config;
mod fetch;
pub mod fragment;
pub mod lock;
pub mod modules;
pub mod patches;
pub mod recipe;
pub mod relock;
pub mod source;
mod srcbuild;
mod switch;
pub mod tree;

pub use build::BuildError;
pub use cmd::{run_cmd, KernelsCmd};
pub use config::{ConfigOrigin, Missing};
pub use fetch::{cached, ensure, ensure_opts, ensure_with, EnsureOptions};
pub use lock::{relock_command, LockFile, LockedKernel};
pub use modules::ModuleFeature;
pub use recipe::{load_recipe, load_recipes, Recipe, RecipeSource};
pub use srcbuild::{build_dir_at, debian_source_tree, ensure_source_at};

/// A kernel ready to boot: everything in the cache (or, for `path` recipes, on the user's disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedKernel {
    /// The recipe name: `debian-6.12`.
    pub name: String,
    /// `uname -r`: `6.12.117+deb13-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    pub config: Option<PathBuf>,
    /// The modules a guest may carry, dependencies first: those loaded at boot (load them front
    /// to back) and soft dependencies loaded on the kernel's request.
    pub modules: Vec<KernelModule>,
    /// Wanted modules the kernel has built in (nothing to load).
    pub builtin: Vec<String>,
    /// Wanted modules the kernel lacks altogether: the feature needing them is unsupported.
    pub unavailable: Vec<String>,
    /// CONFIG_MODULE_DECOMPRESS=y: the kernel loads `.ko.xz` itself (finit_module flag
    /// MODULE_INIT_COMPRESSED_FILE); otherwise every module is shipped decompressed.
    pub module_decompress: bool,
    pub provenance: KernelProvenance,
    /// Identity of the cache entry: changes whenever any byte the guest sees may change.
    pub cache_key: String,
    /// How long [`ensure`] took this time; not part of the cached entry.
    #[serde(skip)]
    pub timings: KernelTimings,
    /// The archive no longer carried the packages kernels.lock pins, and these are others
    /// ([`crate::debian::LockPolicy::UpdateMissing`]); this time only, not part of the cached
    /// entry (the same entry serves a lock that pins it).
    #[serde(skip)]
    pub substituted: Option<LockSubstitution>,
}

/// One module in the initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelModule {
    /// Normalised module name (`virtio_blk`).
    pub name: String,
    /// The file to put into the initramfs.
    pub host_path: PathBuf,
    /// Where it goes: `/lib/modules/<name>.ko` or `.ko.xz`.
    pub initramfs_path: PathBuf,
    /// xz-compressed (only when the kernel decompresses modules itself).
    pub compressed: bool,
    /// The features that load it at boot, directly or as a dependency.
    pub needed_for: Vec<ModuleFeature>,
    /// The features that ship it without loading it: a soft dependency (`crypto-crc32c`), for
    /// the agent's modprobe to load when the kernel asks for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_request_for: Vec<ModuleFeature>,
    /// The modules it depends on (each earlier in [`ResolvedKernel::modules`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends: Vec<String>,
    /// What else it answers to (`.modinfo`'s `alias=`), for the guest's module table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

impl KernelModule {
    /// Whether a boot that needs `features` carries it in its initramfs.
    pub fn shipped_for(&self, features: &[ModuleFeature]) -> bool {
        self.loaded_at_boot_for(features)
            || self.on_request_for.iter().any(|f| features.contains(f))
    }

    /// Whether a boot that needs `features` loads it before the plan runs.
    pub fn loaded_at_boot_for(&self, features: &[ModuleFeature]) -> bool {
        self.needed_for.iter().any(|f| features.contains(f))
    }
}

/// Where a kernel came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum KernelProvenance {
    Debian {
        suite: String,
        packages: Vec<LockedPackage>,
    },
    Path {
        vmlinuz: PathBuf,
        modules: Option<PathBuf>,
    },
    /// Built by mmx from a `[source]` recipe.
    Built(Box<BuiltKernel>),
}

/// How a kernel mmx built was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltKernel {
    pub base: BuiltBase,
    /// In the order applied.
    pub patches: Vec<PatchInfo>,
    pub config: ConfigOrigin,
    /// SHA-256 of the final `.config`.
    pub config_sha256: String,
    /// `gcc --version`, first line.
    pub compiler: String,
    /// RFC 3339, when the build finished.
    pub built_at: String,
    /// How long configure + make took.
    pub build_ms: u64,
}

/// The tree a built kernel came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BuiltBase {
    /// Debian's `linux-source-X` package.
    Debian {
        suite: String,
        package: LockedPackage,
    },
    /// A git tree at a commit (`rev` as the recipe wrote it).
    Git {
        tree: PathBuf,
        rev: String,
        commit: String,
    },
}

/// One applied patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchInfo {
    pub file: PathBuf,
    /// Position in its mbox, for series given as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<usize>,
    pub subject: String,
    pub sha256: String,
}

impl KernelProvenance {
    /// One line for logs and reports: `debian bookworm: linux-image-…=6.1.176-1`, or for a
    /// built kernel its base, every patch's subject, config, and compiler.
    pub fn describe(&self) -> String {
        match self {
            KernelProvenance::Debian { suite, packages } => {
                let pkgs: Vec<_> = packages
                    .iter()
                    .map(|p| format!("{}={}", p.name, p.version))
                    .collect();
                format!("debian {suite}: {}", pkgs.join(" "))
            }
            KernelProvenance::Path { vmlinuz, .. } => format!("path: {}", vmlinuz.display()),
            KernelProvenance::Built(b) => {
                let BuiltKernel {
                    base,
                    patches,
                    config,
                    config_sha256,
                    compiler,
                    ..
                } = b.as_ref();
                let base = match base {
                    BuiltBase::Debian { suite, package } => {
                        format!("debian {suite}: {}={}", package.name, package.version)
                    }
                    BuiltBase::Git { tree, rev, commit } => {
                        let short = commit.get(..12).unwrap_or(commit);
                        format!("git {}@{short} ({rev})", tree.display())
                    }
                };
                let patches = match patches.as_slice() {
                    [] => String::new(),
                    ps => {
                        let subjects: Vec<String> =
                            ps.iter().map(|p| format!("\"{}\"", p.subject)).collect();
                        format!(
                            " + {} patch{}: {}",
                            ps.len(),
                            if ps.len() == 1 { "" } else { "es" },
                            subjects.join(", ")
                        )
                    }
                };
                format!(
                    "built from {base}{patches}; config {} ({}); {compiler}",
                    config.describe(),
                    config_sha256.get(..12).unwrap_or(config_sha256)
                )
            }
        }
    }
}

impl ResolvedKernel {
    /// The boot and feature options ([`fragment::NEEDS`]) this kernel's config does not meet;
    /// `=m` counts when the module is shipped to the guest. None when no config is known (a
    /// `[path]` recipe without `config`).
    pub fn missing_options(&self) -> Result<Option<Vec<Missing>>, KernelError> {
        let Some(path) = &self.config else {
            return Ok(None);
        };
        let cfg = config::read(path).map_err(|e| KernelError::io("read", path, e))?;
        let shipped = |m: &str| self.modules.iter().any(|k| k.name == m);
        Ok(Some(config::missing(&cfg, &shipped)))
    }
}

/// Time spent in [`ensure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelTimings {
    /// The entry was already in the cache.
    pub cached: bool,
    /// `apt-get update` (only when the private lists were missing or stale) + `apt-get download`.
    pub download: Duration,
    /// Building from source (configure + make), for `[source]` recipes.
    pub build: Duration,
    /// Reading the .debs (or the build's output), choosing and writing modules.
    pub extract: Duration,
    pub total: Duration,
    /// kbuild steps make ran (`CC`, `LD` … lines); 0 when nothing was built.
    pub kbuild_steps: u64,
}

/// Everything that can go wrong with kernels. Messages name the file, key, package or kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Io(#[from] IoError),
    /// apt, a .deb, the cache, the lock file.
    #[error(transparent)]
    Debian(#[from] DebianError),
    #[error("{file}:{line}: key `{key}`: {message}", file = file.display())]
    Recipe {
        file: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    #[error("modules: {detail}")]
    Modules { detail: String },
    #[error("{detail}")]
    Layout { detail: String },
    #[error("kernel `{name}` has no entry in {lock}; run `mmx kernels lock`", lock = lock.display())]
    NotLocked { name: String, lock: PathBuf },
    #[error("kernels.lock is out of date for `{name}`: {detail}; run `mmx kernels lock`")]
    StaleLock { name: String, detail: String },
    #[error("no kernel recipe named `{name}` (known: {known})")]
    UnknownKernel { name: String, known: String },
    /// Building a `[source]` recipe failed; the message names the file at fault and the log.
    #[error("kernel build failed: {name}: {error}")]
    Build {
        name: String,
        error: Box<BuildError>,
    },
    #[error("kernel `{name}`: {config} lacks what every mmx guest needs: {list}; `mmx kernels config-fragment` prints all mmx needs",
        config = config.display(), list = config::list(missing))]
    MissingOptions {
        name: String,
        config: PathBuf,
        missing: Vec<Missing>,
    },
    #[error("kernel `{name}`")]
    Kernel {
        name: String,
        #[source]
        source: Box<KernelError>,
    },
}

impl KernelError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        KernelError::Io(IoError::new(op, path, source))
    }

    /// apt failed to fetch something: the one failure following the archive may answer.
    pub(crate) fn is_apt_failure(&self) -> bool {
        matches!(self, KernelError::Debian(DebianError::Apt { .. }))
    }
}
