//! Runtimes: a container runtime's own mount code as a column of the matrix. A recipe
//! ([`RuntimeRecipe`]: containerd from Debian, containerd from a user's checkout, or any static
//! containers/storage's overlay driver from Debian or a checkout, or any static binary) becomes a [`ResolvedRuntime`] — a static executable speaking the runtime contract
//! (`protocol::runtime`) — that the agent starts once per worker.
//!
//! Phases, one file each: [`recipe`] (parse, check), [`program`] (what each Go runtime —
//! containerd, containers/storage — is built from), [`lock`] (`runtimes/runtimes.lock`: the
//! exact Debian packages of the Go toolchain and of each project's sources; downloading and
//! extracting them is `crate::debian`'s), [`build`] (the offline, static, content-cached
//! `go build`), `git` (checkouts, patches), [`driver`] (start a runtime and talk to it, with a per-job limit:
//! `protocol::runtime::driver`, the agent's own), [`relock`] (writing runtimes.lock: on first
//! use, or when asked), `cmd` (`mmx runtimes …`), [`example`] (the
//! repository's example runtime), [`ready`] (a run's runtimes, built once before its boots).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::debian::DebianError;
use crate::results::{LockSubstitution, RuntimeProvenance};
use crate::rundir::IoError;

pub mod build;
mod cmd;
pub mod example;
mod git;
pub mod lock;
pub mod program;
pub mod ready;
pub mod recipe;
pub mod relock;

/// The runtime driver lives beside the contract (the agent drives runtimes with it too).
pub mod driver {
    pub use protocol::runtime::driver::*;
}

pub use crate::results::GoProgram;
pub use build::{ensure, ensure_with};
pub use cmd::{run_cmd, RuntimesCmd};
pub use lock::{LockedSources, LockedToolchain, RuntimesLock};
pub use recipe::{load_recipes, GoSource, RuntimeRecipe, RuntimeSource};

/// A runtime ready to start: a static executable in the cache (or, for `binary`, on the user's
/// disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedRuntime {
    /// The recipe name: `containerd-2.1`.
    pub name: protocol::RuntimeName,
    pub binary: PathBuf,
    pub provenance: RuntimeProvenance,
    /// Identity of the build: changes whenever any byte of the binary may change.
    pub cache_key: String,
    /// How long [`ensure`] took this time; not part of the cached entry.
    #[serde(skip)]
    pub timings: BuildTimings,
    /// The archive no longer carried what runtimes.lock pins, and this was built from what it
    /// carries now; this time only, not part of the cached entry.
    #[serde(skip)]
    pub substituted: Option<LockSubstitution>,
}

/// Time spent in [`ensure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BuildTimings {
    /// The binary was already in the cache: nothing was downloaded or built.
    pub cached: bool,
    /// Downloading and verifying packages (and `apt-get update` when the lists were missing).
    pub download: Duration,
    /// Extracting the toolchain and sources, patching.
    pub extract: Duration,
    /// `go build`.
    pub build: Duration,
    pub total: Duration,
}

/// Everything that can go wrong with runtimes. Messages name the recipe, file, key or package.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Io(#[from] IoError),
    /// apt, a .deb, the cache, the lock file.
    #[error(transparent)]
    Debian(#[from] DebianError),
    #[error("{file}:{line}: {message}", file = file.display())]
    Recipe {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{what} is not in {lock}; run `{fix}`", lock = lock.display())]
    NotLocked {
        what: String,
        lock: PathBuf,
        fix: String,
    },
    #[error("patch {patch} does not apply to {against}: {detail}", patch = patch.display())]
    Patch {
        patch: PathBuf,
        against: String,
        detail: String,
    },
    #[error("{tree}: {detail}", tree = tree.display())]
    Tree { tree: PathBuf, detail: String },
    #[error("{step} failed:\n{log}")]
    Build { step: String, log: String },
    #[error("{path} is not a static executable: {detail}", path = path.display())]
    NotStatic { path: PathBuf, detail: String },
    #[error("runtime `{name}`")]
    Runtime {
        name: String,
        #[source]
        source: Box<RuntimeError>,
    },
}

impl RuntimeError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        RuntimeError::Io(IoError::new(op, path, source))
    }
}
