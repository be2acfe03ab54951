//! The guest's root: an initramfs in cpio "newc" format, written here in Rust.
//!
//! Two or three archives, concatenated (the kernel unpacks one after another):
//! - a *base* per (kernel, agent build), cached: `/init` (the static agent), the directories the
//!   agent mounts on, `/dev/console`, the kernel's modules under `/lib/modules` with the module
//!   table the agent answers the kernel's module requests from ([`protocol::modules`]), and
//!   a link to the agent named `modprobe`, which is how the kernel runs it for those;
//! - when the boot's cells start runtimes, their static executables under `/runtimes/<name>`,
//!   cached per set of runtimes (keyed by their SHA-256s, checked as they are read);
//! - a few hundred bytes per boot: `/plan.json`.
//!
//! Format: <https://docs.kernel.org/driver-api/early-userspace/buffer-format.html>. Every
//! header and every file body is padded to 4 bytes, so every archive's length is a multiple of
//! 4 and the next one starts aligned, as the kernel requires.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use protocol::modules::{ModuleEntry, ModuleTable};

use crate::debian::cache::key;
use crate::debian::{Cache, DebianError};
use crate::kernels::ModuleFeature;
use crate::kernels::ResolvedKernel;
use crate::rundir::IoError;

/// Bump when the base archive's contents change shape.
/// v2: the module table, soft dependencies shipped for on-request loading, `/mmx/modprobe`.
const BASE_FORMAT: &[u8] = b"initramfs-v2";

// Inode numbers: the kernel links entries of one archive that share (ino, nlink >= 2), so each
// entry gets its own; the plan archive counts from elsewhere so the two never look alike.
const BASE_FIRST_INO: u32 = 1;
const RUNTIMES_FIRST_INO: u32 = 1 << 29;
const PLAN_FIRST_INO: u32 = 1 << 30;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("cpio entry {name}: {what} does not fit the newc header's 32 bits")]
    TooLarge { name: String, what: &'static str },
    #[error("serialize the plan or the module table")]
    Plan(#[from] serde_json::Error),
    #[error("{path}: base archive length {len} is not a multiple of 4; delete it to rebuild", path = path.display())]
    Misaligned { path: PathBuf, len: u64 },
    #[error(transparent)]
    Cache(#[from] DebianError),
    #[error("runtime `{name}`: {detail}")]
    Runtime { name: String, detail: String },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> InitramfsError + 'a {
    move |source| InitramfsError::Io(IoError::new(op, path, source))
}

/// A cpio newc writer over any `Write`.
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W, first_ino: u32) -> Self {
        CpioWriter {
            out,
            next_ino: first_ino,
        }
    }

    /// A directory. Parents must come first: the kernel does not create them.
    pub fn append_dir(&mut self, name: &str, perm: u32) -> Result<(), InitramfsError> {
        self.append(name, S_IFDIR | perm, 2, (0, 0), &[])
    }

    pub fn append_file(
        &mut self,
        name: &str,
        perm: u32,
        data: &[u8],
    ) -> Result<(), InitramfsError> {
        self.append(name, S_IFREG | perm, 1, (0, 0), data)
    }

    /// A symlink: the body is the target, without a NUL.
    pub fn append_symlink(&mut self, name: &str, target: &str) -> Result<(), InitramfsError> {
        self.append(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    pub fn append_char_dev(
        &mut self,
        name: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), InitramfsError> {
        self.append(name, S_IFCHR | perm, 1, (major, minor), &[])
    }

    /// End the archive (`TRAILER!!!`) and hand back the writer.
    pub fn append_trailer(mut self) -> Result<W, InitramfsError> {
        self.next_ino = 0;
        self.append("TRAILER!!!", 0, 1, (0, 0), &[])?;
        Ok(self.out)
    }

    fn append(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        (rdev_major, rdev_minor): (u32, u32),
        data: &[u8],
    ) -> Result<(), InitramfsError> {
        let too_large = |what| InitramfsError::TooLarge {
            name: name.to_string(),
            what,
        };
        let filesize = u32::try_from(data.len()).map_err(|_| too_large("file size"))?;
        // The name is stored with its NUL, and its length counts it.
        let namesize = u32::try_from(name.len() + 1).map_err(|_| too_large("name size"))?;
        let ino = self.next_ino;
        self.next_ino = self
            .next_ino
            .checked_add(1)
            .ok_or_else(|| too_large("inode"))?;
        let fields: [u32; 13] = [
            ino,        // c_ino
            mode,       // c_mode: file type and permissions
            0,          // c_uid: root
            0,          // c_gid: root
            nlink,      // c_nlink
            0,          // c_mtime: 0 keeps the archive reproducible
            filesize,   // c_filesize
            0,          // c_maj: device the file lived on (unused)
            0,          // c_min
            rdev_major, // c_rmaj: for device nodes
            rdev_minor, // c_rmin
            namesize,   // c_namesize, including the NUL
            0,          // c_chksum: only for the "070702" format
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701"); // c_magic
        for f in fields {
            header.push_str(&format!("{f:08X}"));
        }
        let w = |r: std::io::Result<()>| {
            r.map_err(|source| {
                InitramfsError::Io(IoError::new("write cpio entry", Path::new(name), source))
            })
        };
        w(self.out.write_all(header.as_bytes()))?;
        w(self.out.write_all(name.as_bytes()))?;
        w(self.out.write_all(&[0]))?;
        // Header (110 bytes) plus name is padded to 4, and so is the body.
        w(self.out.write_all(pad(110 + name.len() + 1)))?;
        w(self.out.write_all(data))?;
        w(self.out.write_all(pad(data.len())))?;
        Ok(())
    }
}

fn pad(len: usize) -> &'static [u8] {
    &[0u8; 3][..(4 - len % 4) % 4]
}

/// Base archives unused for this long are removed when a new one is written: each agent build
/// makes new ones, and nothing else would ever delete the old.
const BASE_MAX_IDLE: std::time::Duration = std::time::Duration::from_secs(3 * 24 * 3600);

/// The cached base archive for `kernel` with `agent` as /init and the kernel's modules for
/// `features` only (a guest on xfs needs no btrfs: less for the kernel to unpack at every
/// boot); built on first use.
pub fn base_archive(
    agent: &Path,
    kernel: &ResolvedKernel,
    features: &[ModuleFeature],
    cache: &Cache,
) -> Result<PathBuf, InitramfsError> {
    let agent_bytes = fs::read(agent).map_err(io("read agent", agent))?;
    let agent_hash = blake3::hash(&agent_bytes);
    let mut wanted: Vec<ModuleFeature> = features.to_vec();
    wanted.sort();
    wanted.dedup();
    let wanted_key = format!("{wanted:?}");
    let k = key(&[
        BASE_FORMAT,
        kernel.cache_key.as_bytes(),
        agent_hash.as_bytes(),
        wanted_key.as_bytes(),
    ]);
    let dir = cache.dir("initramfs")?;
    let path = dir.join(format!("{}-{k}.cpio", kernel.release));
    if path.exists() {
        // Mark it used, for the pruning below.
        if let Ok(f) = fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        return Ok(path);
    }
    let _lock = cache.lock(&format!("initramfs-{k}"))?;
    if path.exists() {
        return Ok(path);
    }
    let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io("create temp in", &dir))?;
    let mut cpio = CpioWriter::new(std::io::BufWriter::new(tmp), BASE_FIRST_INO);
    for d in [
        "dev",
        "proc",
        "sys",
        "tmp",
        "scratch",
        "lib",
        "lib/modules",
        "mmx",
    ] {
        cpio.append_dir(d, 0o755)?;
    }
    // The kernel opens /dev/console for init's stdio before init runs; without it the agent
    // starts with no stdout.
    cpio.append_char_dev("dev/console", 0o600, 5, 1)?;
    cpio.append_file("init", 0o755, &agent_bytes)?;
    // The agent is the guest's modprobe when started by this name (it sets
    // /proc/sys/kernel/modprobe to it).
    cpio.append_symlink(
        protocol::modules::MODPROBE_PATH.trim_start_matches('/'),
        "/init",
    )?;
    for m in kernel.modules.iter().filter(|m| m.shipped_for(&wanted)) {
        let bytes = fs::read(&m.host_path).map_err(io("read module", &m.host_path))?;
        let name = m.initramfs_path.to_string_lossy();
        cpio.append_file(name.trim_start_matches('/'), 0o644, &bytes)?;
    }
    let table = serde_json::to_vec_pretty(&module_table(kernel, &wanted))?;
    cpio.append_file(
        protocol::modules::TABLE_PATH.trim_start_matches('/'),
        0o644,
        &table,
    )?;
    finish(cpio, &path)?;
    prune_idle(&dir);
    Ok(path)
}

/// The table of the modules a base archive for `features` carries (every one it ships, loaded
/// at boot or not), for the agent's modprobe.
pub fn module_table(kernel: &ResolvedKernel, features: &[ModuleFeature]) -> ModuleTable {
    let modules = kernel
        .modules
        .iter()
        .filter(|m| m.shipped_for(features))
        .map(|m| ModuleEntry {
            name: m.name.clone(),
            path: m.initramfs_path.clone(),
            depends: m.depends.clone(),
            aliases: m.aliases.clone(),
        })
        .collect();
    ModuleTable { modules }
}

/// Close a cached archive written to a temporary file and move it into place at `path`, so a
/// concurrent run never reads half an archive.
fn finish(
    cpio: CpioWriter<std::io::BufWriter<tempfile::NamedTempFile>>,
    path: &Path,
) -> Result<(), InitramfsError> {
    let tmp = cpio
        .append_trailer()?
        .into_inner()
        .map_err(|e| IoError::new("flush", path, e.into_error()))?;
    tmp.persist(path)
        .map_err(|e| IoError::new("rename into", path, e.error))?;
    Ok(())
}

/// Remove base archives nobody used for [`BASE_MAX_IDLE`]. Best effort: a file another run is
/// using right now was touched when it was picked, so it is never idle.
fn prune_idle(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "cpio") {
            continue;
        }
        let idle = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if idle.is_some_and(|d| d > BASE_MAX_IDLE) {
            let _ = fs::remove_file(&p);
        }
    }
}

/// Bump when the runtimes archive changes shape.
const RUNTIMES_FORMAT: &[u8] = b"initramfs-runtimes-v1";
/// Where a guest finds its runtimes.
const RUNTIMES_DIR: &str = "runtimes";

/// Where a guest finds its runtimes: `/runtimes`.
pub fn runtimes_dir() -> PathBuf {
    Path::new("/").join(RUNTIMES_DIR)
}

/// Where a runtime's executable is in a guest: `/runtimes/<name>`.
pub fn runtime_path(name: &protocol::RuntimeName) -> PathBuf {
    runtimes_dir().join(name.as_str())
}

/// The cached archive holding `runtimes` (their `path` on this machine) under
/// `/runtimes/<name>`, or None when there are none. Each executable's SHA-256 is checked
/// against the plan's as it is read: a guest runs exactly the bytes the run recorded.
pub fn runtimes_archive(
    runtimes: &[protocol::PlanRuntime],
    cache: &Cache,
) -> Result<Option<PathBuf>, InitramfsError> {
    use sha2::{Digest, Sha256};
    if runtimes.is_empty() {
        return Ok(None);
    }
    let mut parts: Vec<&[u8]> = vec![RUNTIMES_FORMAT];
    for r in runtimes {
        parts.extend([r.name.as_str().as_bytes(), r.sha256.as_bytes()]);
    }
    let k = key(&parts);
    let dir = cache.dir("initramfs")?;
    let path = dir.join(format!("runtimes-{k}.cpio"));
    if path.exists() {
        if let Ok(f) = fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        return Ok(Some(path));
    }
    let _lock = cache.lock(&format!("initramfs-{k}"))?;
    if path.exists() {
        return Ok(Some(path));
    }
    let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io("create temp in", &dir))?;
    let mut cpio = CpioWriter::new(std::io::BufWriter::new(tmp), RUNTIMES_FIRST_INO);
    cpio.append_dir(RUNTIMES_DIR, 0o755)?;
    for r in runtimes {
        let bytes = fs::read(&r.path).map_err(io("read runtime", &r.path))?;
        let got = hex::encode(Sha256::digest(&bytes));
        if got != r.sha256 {
            return Err(InitramfsError::Runtime {
                name: r.name.to_string(),
                detail: format!(
                    "{} has sha256 {got}, the run recorded {}: it changed since it was built",
                    r.path.display(),
                    r.sha256
                ),
            });
        }
        cpio.append_file(&format!("{RUNTIMES_DIR}/{}", r.name), 0o755, &bytes)?;
    }
    finish(cpio, &path)?;
    Ok(Some(path))
}

/// The per-boot archive: `/plan.json`.
pub fn plan_archive(plan: &protocol::Plan) -> Result<Vec<u8>, InitramfsError> {
    let json = serde_json::to_vec_pretty(plan)?;
    let mut cpio = CpioWriter::new(Vec::with_capacity(json.len() + 512), PLAN_FIRST_INO);
    cpio.append_file("plan.json", 0o644, &json)?;
    cpio.append_trailer()
}

/// Write `out` = base archive [+ runtimes archive] + plan archive: the initrd for one boot.
pub fn write_initrd(
    base: &Path,
    runtimes: Option<&Path>,
    plan: &protocol::Plan,
    out: &Path,
) -> Result<(), InitramfsError> {
    let len = fs::copy(base, out).map_err(io("copy base archive to", out))?;
    if len % 4 != 0 {
        return Err(InitramfsError::Misaligned {
            path: base.to_path_buf(),
            len,
        });
    }
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(out)
        .map_err(io("open", out))?;
    if let Some(r) = runtimes {
        let mut src = fs::File::open(r).map_err(io("open", r))?;
        let len = std::io::copy(&mut src, &mut f).map_err(io("append runtimes to", out))?;
        if len % 4 != 0 {
            return Err(InitramfsError::Misaligned {
                path: r.to_path_buf(),
                len,
            });
        }
    }
    f.write_all(&plan_archive(plan)?)
        .map_err(io("append plan to", out))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One parsed entry: (name, mode, nlink, rdev, data).
    pub(crate) type Entry = (String, u32, u32, (u32, u32), Vec<u8>);

    /// A strict newc reader: checks magic and 4-byte alignment; reads concatenated archives,
    /// each ending in a trailer, as the kernel does.
    pub(crate) fn read_all(mut buf: &[u8]) -> Vec<Vec<Entry>> {
        let total = buf.len();
        let mut archives = vec![];
        let mut current = vec![];
        while !buf.is_empty() {
            assert_eq!((total - buf.len()) % 4, 0, "entry starts unaligned");
            assert_eq!(&buf[..6], b"070701", "magic");
            let field = |i: usize| {
                u32::from_str_radix(
                    std::str::from_utf8(&buf[6 + 8 * i..14 + 8 * i]).unwrap(),
                    16,
                )
                .unwrap()
            };
            let (mode, nlink, filesize) = (field(1), field(4), field(6) as usize);
            let (rmaj, rmin, namesize) = (field(9), field(10), field(11) as usize);
            let name = std::str::from_utf8(&buf[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(buf[110 + namesize - 1], 0, "name NUL");
            let data_start = (110 + namesize).div_ceil(4) * 4;
            let data = buf[data_start..data_start + filesize].to_vec();
            buf = &buf[(data_start + filesize).div_ceil(4) * 4..];
            if name == "TRAILER!!!" {
                archives.push(std::mem::take(&mut current));
            } else {
                current.push((name, mode, nlink, (rmaj, rmin), data));
            }
        }
        assert!(current.is_empty(), "archive without trailer");
        archives
    }

    fn sample_plan() -> protocol::Plan {
        protocol::Plan {
            schema_version: protocol::SCHEMA_VERSION,
            boot_id: "t".into(),
            scratch_dir: "/scratch".into(),
            scratch_disks: Vec::new(),
            modules: vec!["/lib/modules/overlay.ko.xz".into()],
            probe: true,
            items: vec![],
            runtimes: vec![],
        }
    }

    #[test]
    fn entries_are_aligned_and_read_back() {
        let mut c = CpioWriter::new(Vec::new(), 1);
        c.append_dir("dev", 0o755).unwrap();
        c.append_char_dev("dev/console", 0o600, 5, 1).unwrap();
        for len in 0..9 {
            let name = "f".repeat(len + 1);
            c.append_file(&name, 0o644, &vec![b'x'; len]).unwrap();
        }
        c.append_symlink("sbin", "bin").unwrap();
        let bytes = c.append_trailer().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let archives = read_all(&bytes);
        assert_eq!(archives.len(), 1);
        let a = &archives[0];
        assert_eq!(a[0].0, "dev");
        assert_eq!(a[0].1, S_IFDIR | 0o755);
        assert_eq!(
            a[1],
            ("dev/console".into(), S_IFCHR | 0o600, 1, (5, 1), vec![])
        );
        for len in 0..9 {
            assert_eq!(a[2 + len].4, vec![b'x'; len]);
        }
        assert_eq!(a[11].4, b"bin");
    }

    #[test]
    fn plan_archive_appends_to_a_base() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.cpio");
        let mut c = CpioWriter::new(Vec::new(), 1);
        c.append_file("init", 0o755, b"#!agent").unwrap();
        fs::write(&base, c.append_trailer().unwrap()).unwrap();
        let out = dir.path().join("initrd");
        write_initrd(&base, None, &sample_plan(), &out).unwrap();
        let archives = read_all(&fs::read(&out).unwrap());
        assert_eq!(archives.len(), 2);
        assert_eq!(archives[0][0].0, "init");
        assert_eq!(archives[1][0].0, "plan.json");
        let plan = protocol::parse_plan(std::str::from_utf8(&archives[1][0].4).unwrap()).unwrap();
        assert_eq!(plan, sample_plan());
    }

    #[test]
    fn runtimes_travel_in_their_own_cached_archive_checked_by_sha256() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path().join("cache"));
        let exe = dir.path().join("mounter");
        fs::write(&exe, b"\x7fELF runtime").unwrap();
        let sha256 = hex::encode(Sha256::digest(b"\x7fELF runtime"));
        let rt = protocol::PlanRuntime {
            name: "containerd-2.1".parse().unwrap(),
            path: exe.clone(),
            args: vec![],
            job_timeout_s: 30,
            sha256: sha256.clone(),
        };
        assert_eq!(runtimes_archive(&[], &cache).unwrap(), None);
        let a = runtimes_archive(std::slice::from_ref(&rt), &cache)
            .unwrap()
            .unwrap();
        assert_eq!(
            runtimes_archive(std::slice::from_ref(&rt), &cache).unwrap(),
            Some(a.clone()),
            "cached"
        );
        let base = dir.path().join("base.cpio");
        let mut c = CpioWriter::new(Vec::new(), 1);
        c.append_file("init", 0o755, b"#!agent").unwrap();
        fs::write(&base, c.append_trailer().unwrap()).unwrap();
        let out = dir.path().join("initrd");
        write_initrd(&base, Some(&a), &sample_plan(), &out).unwrap();
        let archives = read_all(&fs::read(&out).unwrap());
        assert_eq!(archives.len(), 3);
        let names: Vec<&str> = archives[1].iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["runtimes", "runtimes/containerd-2.1"]);
        assert_eq!(archives[1][1].1, S_IFREG | 0o755);
        assert_eq!(archives[1][1].4, b"\x7fELF runtime");
        assert_eq!(archives[2][0].0, "plan.json");
        assert_eq!(
            runtime_path(&rt.name),
            PathBuf::from("/runtimes/containerd-2.1")
        );
        // A binary that changed since the run hashed it never reaches a guest.
        let other = protocol::PlanRuntime {
            sha256: "00".repeat(32),
            ..rt
        };
        let e = runtimes_archive(&[other], &cache).unwrap_err().to_string();
        assert!(e.contains("changed since it was built"), "{e}");
    }

    #[test]
    fn misaligned_base_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.cpio");
        fs::write(&base, b"07070").unwrap();
        let err = write_initrd(&base, None, &sample_plan(), &dir.path().join("o")).unwrap_err();
        assert!(
            matches!(err, InitramfsError::Misaligned { len: 5, .. }),
            "{err}"
        );
    }

    fn module(
        name: &str,
        needed: &[ModuleFeature],
        on_request: &[ModuleFeature],
        depends: &[&str],
    ) -> crate::kernels::KernelModule {
        crate::kernels::KernelModule {
            name: name.into(),
            host_path: format!("modules/{name}.ko.xz").into(),
            initramfs_path: format!("/lib/modules/{name}.ko.xz").into(),
            compressed: true,
            needed_for: needed.to_vec(),
            on_request_for: on_request.to_vec(),
            depends: depends.iter().map(|d| d.to_string()).collect(),
            aliases: vec![],
        }
    }

    #[test]
    fn the_module_table_lists_what_a_boot_ships_loaded_or_not() {
        use ModuleFeature::{Btrfs, Ext4, Xfs};
        let mut crc = module("crc32c_generic", &[], &[Ext4, Xfs, Btrfs], &[]);
        crc.aliases = vec!["crypto-crc32c".into()];
        let kernel = ResolvedKernel {
            name: "k".into(),
            release: "6.12.117+deb13-amd64".into(),
            vmlinuz: "vmlinuz".into(),
            config: None,
            modules: vec![
                crc,
                module("libcrc32c", &[Xfs, Btrfs], &[], &[]),
                module("xfs", &[Xfs], &[], &["libcrc32c"]),
                module("ext4", &[Ext4], &[], &[]),
            ],
            builtin: vec![],
            unavailable: vec![],
            module_decompress: true,
            provenance: crate::kernels::KernelProvenance::Path {
                vmlinuz: "/v".into(),
                modules: None,
            },
            cache_key: "abc".into(),
            timings: Default::default(),
            substituted: None,
        };
        let table = module_table(&kernel, &[Xfs]);
        let names: Vec<_> = table.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["crc32c_generic", "libcrc32c", "xfs"]);
        let text = serde_json::to_string(&table).unwrap();
        let table = ModuleTable::parse(&text).expect("the agent reads what the harness writes");
        assert_eq!(
            table.resolve("crypto-crc32c")[0].path,
            Path::new("/lib/modules/crc32c_generic.ko.xz")
        );
        assert!(module_table(&kernel, &[]).modules.is_empty());
    }

    #[test]
    fn base_archive_is_cached_per_kernel_and_agent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path().join("cache"));
        let agent = dir.path().join("agent");
        fs::write(&agent, b"agent v1").unwrap();
        let module = dir.path().join("overlay.ko");
        fs::write(&module, b"\x7fELF module").unwrap();
        let kernel = ResolvedKernel {
            name: "k".into(),
            release: "6.1.0-test".into(),
            vmlinuz: dir.path().join("vmlinuz"),
            config: None,
            modules: vec![crate::kernels::KernelModule {
                name: "overlay".into(),
                host_path: module,
                initramfs_path: "/lib/modules/overlay.ko".into(),
                compressed: false,
                needed_for: vec![crate::kernels::ModuleFeature::Overlay],
                on_request_for: vec![],
                depends: vec![],
                aliases: vec!["fs-overlay".into()],
            }],
            builtin: vec![],
            unavailable: vec![],
            module_decompress: false,
            provenance: crate::kernels::KernelProvenance::Path {
                vmlinuz: "/v".into(),
                modules: None,
            },
            cache_key: "abc".into(),
            timings: Default::default(),
            substituted: None,
        };
        let all = &crate::kernels::ModuleFeature::ALL;
        let a = base_archive(&agent, &kernel, all, &cache).unwrap();
        assert_eq!(base_archive(&agent, &kernel, all, &cache).unwrap(), a);
        let entries = &read_all(&fs::read(&a).unwrap())[0];
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "proc",
                "sys",
                "tmp",
                "scratch",
                "lib",
                "lib/modules",
                "mmx",
                "dev/console",
                "init",
                "mmx/modprobe",
                "lib/modules/overlay.ko",
                "lib/modules/mmx-modules.json"
            ]
        );
        let modprobe = entries.iter().find(|e| e.0 == "mmx/modprobe").unwrap();
        assert_eq!(
            (modprobe.1, modprobe.4.as_slice()),
            (S_IFLNK | 0o777, &b"/init"[..])
        );
        let table = entries
            .iter()
            .find(|e| e.0 == "lib/modules/mmx-modules.json")
            .unwrap();
        let table = ModuleTable::parse(std::str::from_utf8(&table.4).unwrap()).unwrap();
        assert_eq!(
            table.resolve("fs-overlay")[0].path,
            Path::new("/lib/modules/overlay.ko")
        );
        let init = entries.iter().find(|e| e.0 == "init").unwrap();
        assert_eq!(
            (init.1, init.4.as_slice()),
            (S_IFREG | 0o755, &b"agent v1"[..])
        );
        // A boot that needs no overlay (none does; this checks the filter) gets a base without.
        let xfs_only = [crate::kernels::ModuleFeature::Xfs];
        let b = base_archive(&agent, &kernel, &xfs_only, &cache).unwrap();
        assert_ne!(a, b, "other features, other base");
        let entries = &read_all(&fs::read(&b).unwrap())[0];
        assert!(entries.iter().all(|e| e.0 != "lib/modules/overlay.ko"));
        let table = entries
            .iter()
            .find(|e| e.0 == "lib/modules/mmx-modules.json")
            .unwrap();
        assert_eq!(
            ModuleTable::parse(std::str::from_utf8(&table.4).unwrap()).unwrap(),
            ModuleTable::default(),
            "the table lists only what the archive carries"
        );
        fs::write(&agent, b"agent v2").unwrap();
        assert_ne!(
            base_archive(&agent, &kernel, all, &cache).unwrap(),
            a,
            "new agent, new base"
        );
    }
}
