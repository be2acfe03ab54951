//! Synthetic image layers, laid out like containerd's overlay snapshotter
//! (`<root>/snapshots/<n>/fs`), with contents chosen so that overlay semantics and id mapping
//! can be checked through a merged view:
//!
//! | layer | contents (owner uid:gid) |
//! |---|---|
//! | every n | `layer-<n>` and `shared` owned by `layer_uid(n):layer_gid(n)` |
//! | 1 | `etc/` and `etc/passwd` (0:0), `doomed`, `opaque/from-1` |
//! | 2 | whiteout `doomed` (char dev 0/0), opaque `opaque/` (`trusted.overlay.opaque=y`) with `from-2` |
//!
//! So the merged view must show `shared` from the top layer, no `doomed`, and only `from-2` in
//! `opaque/`. Layer 1 is the bottom; overlay's `lowerdir` lists the top first.
//!
//! Also here: the layers' common directory, as containerd's idmapped-mount code computes it.

use std::fs;
use std::io;
use std::os::unix::fs::{chown, DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Host-side owner of layer `n`'s files: distinct per layer, inside a 65536-id mapping.
pub fn layer_uid(n: u32) -> u32 {
    1000 + n
}

/// Group of layer `n`'s files.
pub fn layer_gid(n: u32) -> u32 {
    2000 + n
}

/// Errors while writing the layers.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{op}({path}): {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("stop requested while writing layers")]
    Stopped,
}

impl LayerError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            LayerError::Io { source, .. } => source.raw_os_error(),
            LayerError::Stopped => Some(libc::EINTR),
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LayerError + 'a {
    move |source| LayerError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// A set of written layers.
#[derive(Debug, Clone)]
pub struct Layers {
    /// `snapshots/<n>/fs` for n = 1..=L; index 0 is the bottom layer.
    pub dirs: Vec<PathBuf>,
    /// Whether the opaque directory could be marked (the filesystem takes `trusted.*` xattrs).
    /// When false, the opaque check is reported as not applicable rather than failed.
    pub opaque: bool,
}

impl Layers {
    /// Whether layer 2 (whiteout, opaque dir) exists.
    pub fn has_overrides(&self) -> bool {
        self.dirs.len() >= 2
    }
}

fn mkdir(path: &Path, uid: u32, gid: u32) -> Result<(), LayerError> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(path)
        .map_err(io_err("mkdir", path))?;
    chown(path, Some(uid), Some(gid)).map_err(io_err("chown", path))
}

fn file(path: &Path, text: &str, uid: u32, gid: u32) -> Result<(), LayerError> {
    fs::write(path, text).map_err(io_err("write", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).map_err(io_err("chmod", path))?;
    chown(path, Some(uid), Some(gid)).map_err(io_err("chown", path))
}

/// Write `count` layers under `<root>/snapshots`. `root` must exist and be empty of them.
pub fn create(root: &Path, count: u32) -> Result<Layers, LayerError> {
    create_stoppable(root, count, &|| false)
}

/// [`create`], giving up between layers once `stop()` says so (the caller removes `root`).
pub fn create_stoppable(
    root: &Path,
    count: u32,
    stop: &dyn Fn() -> bool,
) -> Result<Layers, LayerError> {
    let snapshots = root.join("snapshots");
    mkdir(&snapshots, 0, 0)?;
    let mut dirs = Vec::with_capacity(count as usize);
    let mut opaque = true;
    for n in 1..=count {
        if stop() {
            return Err(LayerError::Stopped);
        }
        let (uid, gid) = (layer_uid(n), layer_gid(n));
        let snap = snapshots.join(n.to_string());
        mkdir(&snap, 0, 0)?;
        let fs_dir = snap.join("fs");
        mkdir(&fs_dir, 0, 0)?;
        file(
            &fs_dir.join(format!("layer-{n}")),
            &format!("layer {n}\n"),
            uid,
            gid,
        )?;
        file(
            &fs_dir.join("shared"),
            &format!("from layer {n}\n"),
            uid,
            gid,
        )?;
        if n == 1 {
            mkdir(&fs_dir.join("etc"), 0, 0)?;
            file(
                &fs_dir.join("etc/passwd"),
                "root:x:0:0::/root:/bin/sh\n",
                0,
                0,
            )?;
            file(&fs_dir.join("doomed"), "whited out by layer 2\n", uid, gid)?;
            mkdir(&fs_dir.join("opaque"), uid, gid)?;
            file(
                &fs_dir.join("opaque/from-1"),
                "hidden by layer 2\n",
                uid,
                gid,
            )?;
        }
        if n == 2 {
            // An overlay whiteout is a character device 0/0.
            let w = fs_dir.join("doomed");
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &w,
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from_raw_mode(0o000),
                0,
            )
            .map_err(|e| LayerError::Io {
                op: "mknod(c 0 0)",
                path: w.clone(),
                source: e.into(),
            })?;
            let o = fs_dir.join("opaque");
            mkdir(&o, uid, gid)?;
            file(&o.join("from-2"), "visible\n", uid, gid)?;
            match rustix::fs::setxattr(
                &o,
                "trusted.overlay.opaque",
                b"y",
                rustix::fs::XattrFlags::empty(),
            ) {
                Ok(()) => {}
                // A filesystem without trusted xattrs still makes layers; the opaque check
                // then says "not applicable" instead of failing.
                Err(rustix::io::Errno::OPNOTSUPP) => opaque = false,
                Err(e) => {
                    return Err(LayerError::Io {
                        op: "setxattr(trusted.overlay.opaque=y)",
                        path: o,
                        source: e.into(),
                    })
                }
            }
        }
        dirs.push(fs_dir);
    }
    Ok(Layers { dirs, opaque })
}

/// The filesystem type holding `path`, by statfs magic (`ext4`, `tmpfs`, …).
pub fn filesystem_name(path: &Path) -> String {
    match rustix::fs::statfs(path) {
        Ok(st) => protocol::filesystem_name(st.f_type as u64),
        Err(e) => format!("unknown ({e})"),
    }
}

/// Why there is no usable common directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommonDirError {
    #[error("no layer paths")]
    Empty,
    #[error("no common prefix found")]
    NoCommonPrefix,
    #[error("invalid common directory: {0}")]
    Invalid(String),
}

/// The longest common directory of `paths`, compared component by component.
///
/// Like containerd's `getCommonDirectory` (core/mount/mount_idmapped_linux.go), `/` and `.` are
/// refused: idmapping the whole root would be wrong, and an empty prefix means nothing is
/// shared. Unlike containerd, which takes the longest common *string* prefix and then its
/// `path.Dir`, this never cuts a name in half, so a path that is itself the common directory
/// stays so (`/a/b` and `/a/b/c` give `/a/b`, containerd gives `/a`). For containerd's own
/// layout (`…/snapshots/<n>/fs`, distinct `n`) both give `…/snapshots`.
pub fn common_directory<P: AsRef<Path>>(paths: &[P]) -> Result<PathBuf, CommonDirError> {
    let first = paths.first().ok_or(CommonDirError::Empty)?;
    let mut common: Vec<Component<'_>> = first.as_ref().components().collect();
    for p in &paths[1..] {
        let n = common
            .iter()
            .zip(p.as_ref().components())
            .take_while(|(a, b)| **a == *b)
            .count();
        common.truncate(n);
    }
    let dir: PathBuf = common.iter().collect();
    match common.as_slice() {
        [] => Err(CommonDirError::NoCommonPrefix),
        [Component::RootDir] => Err(CommonDirError::Invalid("/".into())),
        [Component::CurDir] => Err(CommonDirError::Invalid(".".into())),
        _ => Ok(dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_directory_of_containerd_layout() {
        let paths = [
            "/var/lib/containerd/snapshots/12/fs",
            "/var/lib/containerd/snapshots/13/fs",
            "/var/lib/containerd/snapshots/1/fs",
        ];
        assert_eq!(
            common_directory(&paths).unwrap(),
            PathBuf::from("/var/lib/containerd/snapshots")
        );
    }

    #[test]
    fn common_directory_refuses_root_and_no_prefix() {
        assert_eq!(
            common_directory(&["/a/fs", "/b/fs"]),
            Err(CommonDirError::Invalid("/".into()))
        );
        assert_eq!(
            common_directory(&["a/fs", "b/fs"]),
            Err(CommonDirError::NoCommonPrefix)
        );
        // Absolute and relative paths share nothing.
        assert_eq!(
            common_directory(&["/a/fs", "a/fs"]),
            Err(CommonDirError::NoCommonPrefix)
        );
        assert_eq!(common_directory::<&str>(&[]), Err(CommonDirError::Empty));
        assert_eq!(
            common_directory(&["./x", "./y"]),
            Err(CommonDirError::Invalid(".".into()))
        );
    }

    #[test]
    fn common_directory_never_splits_a_name() {
        // A string prefix would be "/s/snap" + "1"; components keep whole names.
        assert_eq!(
            common_directory(&["/s/snap1/fs", "/s/snap10/fs"]).unwrap(),
            PathBuf::from("/s")
        );
        assert_eq!(
            common_directory(&["/a/b", "/a/b/c"]).unwrap(),
            PathBuf::from("/a/b")
        );
        assert_eq!(
            common_directory(&["/a/b/fs"]).unwrap(),
            PathBuf::from("/a/b/fs")
        );
        // Redundant separators do not matter.
        assert_eq!(
            common_directory(&["/a//b/1", "/a/b/2/"]).unwrap(),
            PathBuf::from("/a/b")
        );
    }

    #[test]
    fn layer_ids_are_distinct_and_mappable() {
        let ids: std::collections::BTreeSet<u32> = (1..=499).map(layer_uid).collect();
        assert_eq!(ids.len(), 499);
        assert!((1..=499).all(|n| layer_uid(n) < 65536 && layer_gid(n) < 65536));
    }

    #[test]
    fn layers_are_written_with_owners_whiteout_and_opaque_dir() {
        if !crate::testing::require_root(
            "layers_are_written_with_owners_whiteout_and_opaque_dir",
            "chown to per-layer ids and mknod of a whiteout",
        ) {
            return;
        }
        let tmp = std::env::temp_dir().join(format!("mmx-layers-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).unwrap();
        let layers = create(&tmp, 3).unwrap();
        assert_eq!(layers.dirs.len(), 3);
        assert_eq!(layers.dirs[2], tmp.join("snapshots/3/fs"));
        use std::os::unix::fs::MetadataExt;
        let md = fs::metadata(layers.dirs[2].join("layer-3")).unwrap();
        assert_eq!((md.uid(), md.gid()), (layer_uid(3), layer_gid(3)));
        let w = fs::symlink_metadata(layers.dirs[1].join("doomed")).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(w.file_type().is_char_device());
        assert_eq!(w.rdev(), 0);
        if layers.opaque {
            let mut v = [0u8; 4];
            let n = rustix::fs::getxattr(
                layers.dirs[1].join("opaque").as_path(),
                "trusted.overlay.opaque",
                &mut v,
            )
            .unwrap();
            assert_eq!(&v[..n], b"y");
        }
        fs::remove_dir_all(&tmp).unwrap();
    }
}
