//! The scratch disk: a raw image holding the layers' filesystem, one fresh copy per boot.
//!
//! `mkfs` runs once per filesystem and tool version into a pristine image in the cache; each
//! boot gets a sparse copy of it (only the few MiB of metadata mkfs wrote are copied), which
//! keeps the harness's work per guest far below the cost of running mkfs every time.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use protocol::Filesystem;

use crate::proc::{Run, RunError};
use crate::rundir::IoError;

/// Size of every scratch image. Sparse, so it costs only what the guest writes; large enough
/// for mkfs.xfs's 300 MiB minimum and for thousands of small layers.
pub const IMAGE_MIB: u64 = 2048;

/// Bump when the mkfs options below change, so old pristine images are not reused.
const PRISTINE_FORMAT: &str = "v1";

/// `mkfs.* -V` answers at once; a minute covers a loaded machine.
const MKFS_VERSION_LIMIT: Duration = Duration::from_secs(60);
/// Formatting the sparse image: a second or two (ext4 and xfs write their tables lazily or
/// sparsely); a loaded disk makes it minutes. Past ten minutes mkfs is stuck.
const MKFS_LIMIT: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{tool} is not installed (package {package}); it is needed for {fs} scratch disks")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
        fs: Filesystem,
    },
    #[error("{tool} {image} failed ({status}):\n{output}")]
    Mkfs {
        tool: &'static str,
        image: String,
        status: String,
        output: String,
    },
    #[error(transparent)]
    Io(#[from] IoError),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DiskError + 'a {
    move |source| DiskError::Io(IoError::new(op, path, source))
}

/// The mkfs command for a filesystem: tool, package it comes from, arguments before the image.
/// `None` for tmpfs, which needs no disk.
pub fn mkfs_command(
    fs: Filesystem,
) -> Option<(&'static str, &'static str, &'static [&'static str])> {
    match fs {
        // Lazy init: mkfs writes only the metadata it must, the kernel zeroes the rest later.
        Filesystem::Ext4 => Some((
            "mkfs.ext4",
            "e2fsprogs",
            &[
                "-q",
                "-F",
                "-L",
                "mmx-scratch",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
            ],
        )),
        Filesystem::Xfs => Some(("mkfs.xfs", "xfsprogs", &["-q", "-f", "-L", "mmx-scratch"])),
        Filesystem::Btrfs => Some((
            "mkfs.btrfs",
            "btrfs-progs",
            &["-q", "-f", "-L", "mmx-scratch"],
        )),
        Filesystem::Tmpfs => None,
        // The images are files on an ext4 disk, formatted with them in it (`mkfs.ext4 -d`).
        Filesystem::Erofs => mkfs_command(Filesystem::Ext4),
    }
}

/// The tool that makes each erofs layer image, and its Debian package.
pub const MKFS_EROFS: (&str, &str) = ("mkfs.erofs", "erofs-utils");

/// Every tool a `fs` scratch disk needs (tool, package): its mkfs, and for erofs also
/// `mkfs.erofs`. Empty for tmpfs.
pub fn tools(fs: Filesystem) -> Vec<(&'static str, &'static str)> {
    let mut t: Vec<_> = mkfs_command(fs)
        .map(|(t, p, _)| (t, p))
        .into_iter()
        .collect();
    if fs == Filesystem::Erofs {
        t.push(MKFS_EROFS);
    }
    t
}

/// Find `tool` on PATH or in the sbin directories, which a non-root PATH often lacks.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn tool_version(exe: &Path) -> String {
    let mut cmd = Command::new(exe);
    cmd.arg("-V");
    Run::new(cmd, MKFS_VERSION_LIMIT)
        .merge_stderr()
        .run()
        .map(|o| o.stdout)
        .unwrap_or_default()
}

/// The pristine formatted image for `fs` in `cache_dir`, made on first use. Keyed by the
/// tool's version, so a newer mkfs (with new default features) never reuses an older image.
/// An erofs disk holds the layer images ([`erofs_images`]), so its key also names
/// `mkfs.erofs`'s version and the agent that wrote the layers' trees.
pub fn pristine(
    fs: Filesystem,
    cache_dir: &Path,
    agent: &Path,
) -> Result<Option<PathBuf>, DiskError> {
    let Some((tool, package, args)) = mkfs_command(fs) else {
        return Ok(None);
    };
    let exe = find_tool(tool).ok_or(DiskError::MissingTool { tool, package, fs })?;
    let version = tool_version(&exe);
    let mut keyed = format!("{PRISTINE_FORMAT} {IMAGE_MIB} {args:?} {version}");
    let erofs = if fs == Filesystem::Erofs {
        let (tool, package) = MKFS_EROFS;
        let mkfs_erofs = find_tool(tool).ok_or(DiskError::MissingTool { tool, package, fs })?;
        let agent_hash = std::fs::read(agent)
            .map(|b| blake3::hash(&b).to_hex().to_string())
            .map_err(io("read", agent))?;
        keyed = format!(
            "{keyed} erofs {EROFS_MKFS_ARGS:?} {} layers {} agent {agent_hash}",
            tool_version(&mkfs_erofs),
            protocol::limits::LAYERS.max
        );
        Some(mkfs_erofs)
    } else {
        None
    };
    let key = blake3::hash(keyed.as_bytes());
    let dir = cache_dir.join("disks");
    std::fs::create_dir_all(&dir).map_err(io("create_dir_all", &dir))?;
    let path = dir.join(format!("{fs}-{IMAGE_MIB}M-{}.img", &key.to_hex()[..16]));
    if path.is_file() {
        return Ok(Some(path));
    }
    // Format a temp file and rename it in: parallel boots never see a half-made image.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{fs}-"))
        .tempfile_in(&dir)
        .map_err(io("create temp image in", &dir))?;
    tmp.as_file()
        .set_len(IMAGE_MIB * 1024 * 1024)
        .map_err(io("set_len", tmp.path()))?;
    // The erofs disk's contents, made beside the image and removed with it.
    let contents = match &erofs {
        Some(mkfs_erofs) => Some(erofs_images(agent, mkfs_erofs, &dir)?),
        None => None,
    };
    let mut cmd = Command::new(&exe);
    cmd.args(args);
    if let Some(c) = &contents {
        cmd.arg("-d").arg(c.path());
    }
    cmd.arg(tmp.path());
    let mkfs_failed = |status: String, output: String| DiskError::Mkfs {
        tool,
        image: tmp.path().display().to_string(),
        status,
        output,
    };
    let out = match Run::new(cmd, MKFS_LIMIT).merge_stderr().run() {
        Ok(out) => out,
        Err(RunError::Spawn { source, .. }) => return Err(io("run mkfs on", tmp.path())(source)),
        Err(e) => {
            let output = e.partial().map(|p| p.stdout.clone()).unwrap_or_default();
            return Err(mkfs_failed(e.to_string(), output));
        }
    };
    if !out.success() {
        return Err(mkfs_failed(out.status.to_string(), out.stdout));
    }
    tmp.persist(&path)
        .map_err(|e| IoError::new("rename into", &path, e.error))?;
    Ok(Some(path))
}

/// `mkfs.erofs` options: quiet, and every timestamp 0 so an image depends only on its tree.
const EROFS_MKFS_ARGS: &[&str] = &["--quiet", "-T0"];

/// Agent runs and one `mkfs.erofs` of a few files each take milliseconds; a loaded machine
/// makes it seconds.
const EROFS_STEP_LIMIT: Duration = Duration::from_secs(120);

/// [`erofs_images`] with `mkfs.erofs` found on this machine: for tests and tools that want
/// the images without a disk around them.
pub fn layer_images(agent: &Path, dir: &Path) -> Result<tempfile::TempDir, DiskError> {
    let (tool, package) = MKFS_EROFS;
    let mkfs_erofs = find_tool(tool).ok_or(DiskError::MissingTool {
        tool,
        package,
        fs: Filesystem::Erofs,
    })?;
    erofs_images(agent, &mkfs_erofs, dir)
}

/// A directory holding `erofs-layers/<n>.erofs` for every layer count a cell may ask for: the
/// agent writes the layer trees (`mmx-agent layers`, the same files a directory cell gets,
/// with their owners, whiteout and opaque mark: it needs root, as chown and mknod do), and
/// `mkfs.erofs` makes one image of each.
fn erofs_images(
    agent: &Path,
    mkfs_erofs: &Path,
    dir: &Path,
) -> Result<tempfile::TempDir, DiskError> {
    let work = tempfile::Builder::new()
        .prefix(".erofs-")
        .tempdir_in(dir)
        .map_err(io("create temp dir in", dir))?;
    let tree = work.path().join("tree");
    let contents = tempfile::Builder::new()
        .prefix(".erofs-disk-")
        .tempdir_in(dir)
        .map_err(io("create temp dir in", dir))?;
    let images = contents.path().join(protocol::erofs::IMAGES_DIR);
    for d in [&tree, &images] {
        std::fs::create_dir(d).map_err(io("mkdir", d))?;
    }
    let count = protocol::limits::LAYERS.max;
    let mut cmd = Command::new(agent);
    cmd.arg("layers").arg(&tree).arg(count.to_string());
    run_step("mmx-agent layers", &tree, cmd)?;
    for n in 1..=u32::try_from(count).unwrap_or(u32::MAX) {
        let image = images.join(protocol::erofs::image_name(n));
        let mut cmd = Command::new(mkfs_erofs);
        cmd.args(EROFS_MKFS_ARGS)
            .arg(&image)
            .arg(tree.join("snapshots").join(n.to_string()).join("fs"));
        run_step(MKFS_EROFS.0, &image, cmd)?;
    }
    Ok(contents)
}

fn run_step(tool: &'static str, on: &Path, cmd: Command) -> Result<(), DiskError> {
    let failed = |status: String, output: String| DiskError::Mkfs {
        tool,
        image: on.display().to_string(),
        status,
        output,
    };
    match Run::new(cmd, EROFS_STEP_LIMIT).merge_stderr().run() {
        Ok(out) if out.success() => Ok(()),
        Ok(out) => Err(failed(out.status.to_string(), out.stdout)),
        Err(RunError::Spawn { source, .. }) => Err(io("run", on)(source)),
        Err(e) => {
            let output = e.partial().map(|p| p.stdout.clone()).unwrap_or_default();
            Err(failed(e.to_string(), output))
        }
    }
}

/// Copy `src` to `dst` keeping holes: only the data extents (`SEEK_DATA`/`SEEK_HOLE`) are read
/// and written, then the length is set. A plain copy would write the whole image.
pub fn sparse_copy(src: &Path, dst: &Path) -> Result<u64, DiskError> {
    let mut from = File::open(src).map_err(io("open", src))?;
    let len = from.metadata().map_err(io("stat", src))?.len();
    let mut to = File::create(dst).map_err(io("create", dst))?;
    to.set_len(len).map_err(io("set_len", dst))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    let mut pos = 0u64;
    while pos < len {
        let data = match rustix::fs::seek(&from, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) => d,
            // ENXIO: no data after `pos`, the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(io("lseek(SEEK_DATA)", src)(e.into())),
        };
        let hole = rustix::fs::seek(&from, rustix::fs::SeekFrom::Hole(data))
            .map_err(|e| io("lseek(SEEK_HOLE)", src)(e.into()))?;
        from.seek(SeekFrom::Start(data)).map_err(io("seek", src))?;
        to.seek(SeekFrom::Start(data)).map_err(io("seek", dst))?;
        let mut left = hole - data;
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            from.read_exact(&mut buf[..n]).map_err(io("read", src))?;
            to.write_all(&buf[..n]).map_err(io("write", dst))?;
            left -= n as u64;
            copied += n as u64;
        }
        pos = hole;
    }
    Ok(copied)
}

/// A fresh scratch image for one boot at `dst` (None for tmpfs).
pub fn scratch_image(
    fs: Filesystem,
    cache_dir: &Path,
    agent: &Path,
    dst: &Path,
) -> Result<Option<PathBuf>, DiskError> {
    let Some(pristine) = pristine(fs, cache_dir, agent)? else {
        return Ok(None);
    };
    sparse_copy(&pristine, dst)?;
    Ok(Some(dst.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_needs_no_mkfs() {
        assert!(mkfs_command(Filesystem::Tmpfs).is_none());
        assert!(tools(Filesystem::Tmpfs).is_empty());
        // erofs images ride on an ext4 disk.
        assert_eq!(
            tools(Filesystem::Erofs),
            vec![("mkfs.ext4", "e2fsprogs"), ("mkfs.erofs", "erofs-utils")]
        );
        for fs in [Filesystem::Ext4, Filesystem::Xfs, Filesystem::Btrfs] {
            let (tool, _, _) = mkfs_command(fs).expect("disk filesystem");
            assert_eq!(tool, format!("mkfs.{fs}"));
        }
    }

    #[test]
    fn sparse_copy_keeps_holes_and_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.img");
        {
            let mut f = File::create(&src).expect("create");
            f.set_len(64 << 20).expect("set_len");
            f.seek(SeekFrom::Start(1 << 20)).expect("seek");
            f.write_all(b"superblock").expect("write");
            f.seek(SeekFrom::Start(40 << 20)).expect("seek");
            f.write_all(b"journal").expect("write");
        }
        let dst = dir.path().join("dst.img");
        let copied = sparse_copy(&src, &dst).expect("copy");
        assert!(copied < 1 << 20, "copied {copied} bytes: holes were filled");
        let a = std::fs::read(&src).expect("read");
        let b = std::fs::read(&dst).expect("read");
        assert_eq!(a, b);
        let meta = std::fs::metadata(&dst).expect("stat");
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < 4 << 20, "destination is not sparse");
    }

    #[test]
    fn pristine_images_are_made_once_and_copied_sparsely() {
        let Some((tool, _, _)) = mkfs_command(Filesystem::Ext4) else {
            return;
        };
        if !crate::test_support::require(
            find_tool(tool).is_some(),
            &format!("{tool} not installed"),
        ) {
            return;
        }
        let cache = tempfile::tempdir().expect("tempdir");
        // An ext4 disk holds no layer images: no agent is read.
        let no_agent = Path::new("/nonexistent/mmx-agent");
        let a = pristine(Filesystem::Ext4, cache.path(), no_agent)
            .expect("mkfs")
            .expect("image");
        let b = pristine(Filesystem::Ext4, cache.path(), no_agent)
            .expect("cached")
            .expect("image");
        assert_eq!(a, b);
        let dst = cache.path().join("boot.img");
        let start = std::time::Instant::now();
        scratch_image(Filesystem::Ext4, cache.path(), no_agent, &dst).expect("copy");
        let took = start.elapsed();
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&dst).expect("stat");
        assert_eq!(meta.len(), IMAGE_MIB << 20);
        assert!(meta.blocks() * 512 < 256 << 20, "copy is not sparse");
        eprintln!("sparse copy of a pristine ext4 image took {took:?}");
    }
}
