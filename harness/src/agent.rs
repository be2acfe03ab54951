//! The static `mmx-agent` the guests, hosts and the local backend run, carried inside `mmx`.
//!
//! `harness/build.rs` builds it (static, stripped, `--profile agent`) and this module embeds the
//! bytes, so an installed `mmx` runs anywhere without the mmx sources or cargo (see build.rs for
//! why embedding and what it costs). On first use the bytes are written once into the cache,
//! named by their hash, and that file is what initramfs builders, SSH visits and the local
//! backend use. `MMX_AGENT=/path/to/mmx-agent` overrides it (an agent under development, or one
//! built for a test).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;

/// The agent's target (static glibc; the guests' initramfs has no libc beside it).
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Cargo profile of the shipped agent: release, stripped (see the workspace Cargo.toml).
pub const PROFILE: &str = "agent";

/// Overrides the embedded agent with a file.
pub const AGENT_ENV: &str = "MMX_AGENT";

/// The agent this `mmx` was built with (harness/build.rs).
static EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mmx-agent"));

/// The embedded agent's bytes.
pub fn embedded() -> &'static [u8] {
    EMBEDDED
}

/// blake3 of the embedded agent, in hex.
pub fn embedded_hash_full() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| blake3::hash(EMBEDDED).to_hex().to_string())
}

/// The embedded agent's short hash (12 hex digits of blake3): what `mmx --version` names and
/// what run.json records as the agent a run used.
pub fn embedded_hash() -> &'static str {
    &embedded_hash_full()[..12]
}

/// Where the agent of this process comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The embedded agent, written into the cache at this path.
    Embedded(PathBuf),
    /// `MMX_AGENT`.
    Override(PathBuf),
}

impl Source {
    pub fn path(&self) -> &Path {
        match self {
            Source::Embedded(p) | Source::Override(p) => p,
        }
    }

    /// What run.json records: the embedded agent's hash, or the override's path and the hash of
    /// the file it named, so a result always says which agent produced it.
    pub fn record(&self) -> String {
        match self {
            Source::Embedded(_) => format!("embedded {}", embedded_hash()),
            Source::Override(p) => {
                let hash = std::fs::read(p)
                    .map(|b| blake3::hash(&b).to_hex()[..12].to_string())
                    .unwrap_or_else(|e| format!("unreadable: {e}"));
                format!("{AGENT_ENV}={} (blake3 {hash})", p.display())
            }
        }
    }

    /// One line for `mmx doctor`: `embedded 1a2b3c4d5e6f (/root/.cache/mmx/agent/…)`.
    pub fn describe(&self) -> String {
        match self {
            Source::Embedded(p) => format!("embedded {} ({})", embedded_hash(), p.display()),
            Source::Override(p) => format!("{AGENT_ENV}={}", p.display()),
        }
    }
}

/// [`source`]'s answer, once asked.
static SOURCE: OnceLock<Result<Source, String>> = OnceLock::new();

/// The agent to run: `MMX_AGENT` if set, else the embedded one written into the cache (once per
/// agent: the file is named by its hash). Memoized for the life of the process.
pub fn source() -> anyhow::Result<Source> {
    SOURCE
        .get_or_init(|| source_uncached().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// The agent's path (see [`source`]).
pub fn path() -> anyhow::Result<PathBuf> {
    source().map(|s| s.path().to_path_buf())
}

/// The name the run path used before the agent was embedded; it no longer builds anything.
/// Kept for callers in `run/` until they call [`path`].
pub fn build_static() -> anyhow::Result<PathBuf> {
    path()
}

fn source_uncached() -> anyhow::Result<Source> {
    if let Some(p) = std::env::var_os(AGENT_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        anyhow::ensure!(p.is_file(), "{AGENT_ENV}={} is not a file", p.display());
        return Ok(Source::Override(p));
    }
    let cache = crate::debian::Cache::from_env()?;
    Ok(Source::Embedded(install_embedded(cache.root())?))
}

/// Write the embedded agent to `<cache_dir>/agent/embedded/mmx-agent-<hash>` (0755) unless a
/// file with the same bytes is already there, and return its path. Safe against concurrent runs:
/// the file appears with one rename, complete or not at all.
pub fn install_embedded(cache_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = cache_dir.join("agent").join("embedded");
    let path = dir.join(format!("mmx-agent-{}", &embedded_hash_full()[..16]));
    // Hashing 3 MB costs about a millisecond; a truncated or altered file is replaced.
    if std::fs::read(&path)
        .is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == embedded_hash_full())
    {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".mmx-agent-")
        .tempfile_in(&dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(EMBEDDED)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing the agent to {}", tmp.path().display()))?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 755 {}", tmp.path().display()))?;
    tmp.persist(&path)
        .with_context(|| format!("renaming the agent to {}", path.display()))?;
    Ok(path)
}

/// The hash (full blake3 hex) the agent at `path` must have: the embedded agent's when `path` is
/// where [`source`] installed it; `None` for an agent `MMX_AGENT` names (its bytes are the
/// user's choice, and run as they were read) or any other file a caller hands the backend.
/// Looks at what [`source`] answered without asking it (asking would install the embedded
/// agent).
pub fn expected_hash(path: &Path) -> Option<&'static str> {
    match SOURCE.get() {
        Some(Ok(Source::Embedded(p))) if p == path => Some(embedded_hash_full()),
        _ => None,
    }
}

/// An agent file opened once, hashed through that descriptor, and run from it.
///
/// Checking a file by name and then executing it by name leaves a gap: whoever may write the
/// directory can rename another executable over the path in between, and mmx runs the local
/// agent as root. So the check reads the open file, and [`Verified::command`] executes that same
/// open file: `/proc/self/fd/N` is not a name looked up again but the kernel's handle on the
/// descriptor, so `execve` opens the very inode that was hashed, whatever the path holds by then
/// (glibc's `fexecve` does the same where `execveat(fd, "", AT_EMPTY_PATH)` is missing). Why not
/// `execveat` itself: `std::process::Command` only executes a path, and calling it from a
/// `pre_exec` hook would take more `unsafe` and run before the supervisor's own hook arms the
/// death signal.
///
/// The descriptor is close-on-exec: the kernel has opened the file for the exec before it
/// closes those, so the agent (a static ELF, not a script) starts and does not inherit it.
#[derive(Debug)]
pub struct Verified {
    file: std::fs::File,
    path: PathBuf,
    hash: blake3::Hash,
}

impl Verified {
    /// Open `path` (`O_RDONLY | O_CLOEXEC`), hash it through that descriptor, and require
    /// `expected` (full blake3 hex) when given.
    pub fn open(path: &Path, expected: Option<&str>) -> anyhow::Result<Verified> {
        let opened =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // The child's stdio is set up on descriptors 0-2 before the exec: ours must not be one
        // of them (an mmx started with stdin closed gets 0 for its first open).
        let mut file = std::fs::File::from(
            rustix::io::fcntl_dupfd_cloexec(&opened, 3)
                .with_context(|| format!("duplicating the descriptor of {}", path.display()))?,
        );
        drop(opened);
        let mut hasher = blake3::Hasher::new();
        std::io::copy(&mut file, &mut hasher)
            .with_context(|| format!("reading {}", path.display()))?;
        let hash = hasher.finalize();
        if let Some(want) = expected {
            anyhow::ensure!(
                hash.to_hex().as_str() == want,
                "{} has blake3 {}, not the {} it must have: the file changed after it was \
                 written; it is not run",
                path.display(),
                hash.to_hex(),
                want
            );
        }
        Ok(Verified {
            file,
            path: path.to_path_buf(),
            hash,
        })
    }

    /// blake3 of the bytes that run, in hex.
    pub fn hash_hex(&self) -> String {
        self.hash.to_hex().to_string()
    }

    /// A command that executes the verified bytes (arguments and the rest are the caller's);
    /// `argv[0]` is the path, for `ps`. It names this value's descriptor: keep `self` alive until
    /// the command has been spawned.
    pub fn command(&self) -> std::process::Command {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let mut c = std::process::Command::new(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
        c.arg0(&self.path);
        c
    }
}

/// The workspace this binary was compiled from. Only tests and development tools use it (to find
/// the repository's own matrix and kernels); runs never do.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_agent_is_a_static_elf() {
        let b = embedded();
        assert_eq!(&b[..4], b"\x7fELF", "not an ELF file");
        // A static executable has no PT_INTERP program header (no dynamic loader to ask for).
        let u16_at = |o: usize| usize::from(u16::from_le_bytes([b[o], b[o + 1]]));
        let phoff = usize::try_from(u64::from_le_bytes(b[0x20..0x28].try_into().expect("8")))
            .expect("phoff");
        let (entsize, count) = (u16_at(0x36), u16_at(0x38));
        const PT_INTERP: u32 = 3;
        let interp = (0..count).any(|i| {
            let o = phoff + i * entsize;
            u32::from_le_bytes(b[o..o + 4].try_into().expect("4")) == PT_INTERP
        });
        assert!(!interp, "the embedded agent asks for a dynamic loader");
        assert_eq!(embedded_hash().len(), 12);
    }

    #[test]
    fn the_verified_bytes_run_even_when_another_file_is_renamed_over_the_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = install_embedded(dir.path()).expect("install");
        let agent = Verified::open(&path, Some(embedded_hash_full())).expect("verify");
        assert_eq!(agent.hash_hex(), embedded_hash_full());
        // After the check, before the exec: a script is renamed over the checked path.
        let marker = dir.path().join("the-swapped-file-ran");
        let swapped = dir.path().join("swapped");
        std::fs::write(
            &swapped,
            format!("#!/bin/sh\ntouch '{}'\nexit 7\n", marker.display()),
        )
        .expect("write");
        std::fs::set_permissions(&swapped, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&swapped, &path).expect("swap");

        // Spawned the way the supervisor spawns it.
        let mut cmd = agent.command();
        cmd.arg("--version").stdout(std::process::Stdio::piped());
        let mut child = crate::proc::spawn(cmd, vec![]).expect("spawn");
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut child.take_stdout().expect("stdout"), &mut stdout)
            .expect("read");
        let status = child
            .wait_for(std::time::Duration::from_secs(60))
            .expect("exit");
        assert!(status.success(), "{status:?} {stdout}");
        assert!(stdout.starts_with("mmx-agent "), "{stdout}");
        assert!(!marker.exists(), "the file swapped in after the check ran");
        // By name, the swapped file is what runs: the gap the descriptor closes is real.
        let by_name = std::process::Command::new(&path)
            .status()
            .expect("run by name");
        assert_eq!(by_name.code(), Some(7));
        assert!(marker.exists());

        // A file that is not what it must be is refused, naming both hashes.
        let e = Verified::open(&path, Some(embedded_hash_full())).expect_err("swapped");
        let e = format!("{e:#}");
        assert!(
            e.contains(embedded_hash_full()) && e.contains("not run"),
            "{e}"
        );
    }

    #[test]
    fn installing_is_once_per_hash_and_repairs_a_bad_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = install_embedded(dir.path()).expect("install");
        let bytes = std::fs::read(&p).expect("read");
        assert_eq!(bytes.len(), embedded().len());
        let mode = std::fs::metadata(&p).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        std::fs::write(&p, b"truncated").expect("corrupt");
        assert_eq!(install_embedded(dir.path()).expect("again"), p);
        assert_eq!(std::fs::read(&p).expect("read").len(), embedded().len());
    }
}
