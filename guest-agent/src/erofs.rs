//! erofs layers: each image layer an erofs image (made on the host by `mkfs.erofs` from the
//! tree [`crate::layers::create`] writes) mounted read-only at the layer's directory
//! (`<root>/snapshots/<n>/fs`), the shape containerd's erofs snapshotter gives a node. The
//! strategies then run over these mounts as over directories.
//!
//! Each image is mounted with the new mount API: `fsopen("erofs")`,
//! `fsconfig(FSCONFIG_SET_FLAG, "ro")`, `fsconfig(FSCONFIG_SET_STRING, "source", …)`,
//! `FSCONFIG_CMD_CREATE`, `fsmount`,
//! `move_mount`. The source is the image file itself where the kernel takes one
//! (CONFIG_EROFS_FS_BACKED_BY_FILE, 6.12+: `erofs_fc_get_tree` falls back to `filp_open` when
//! the source is no block device), else a read-only loop device over it: the first layer's
//! `ENOTBLK` decides, and the result says which and why.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use protocol::erofs::{image_name, ErofsBacking, ErofsLayers};
use protocol::Evidence;

use crate::layers::Layers;
use crate::sys::{loopdev, mount_api as api, SysError, SysResult};

/// How often a free loop device is asked for again when another user took it first.
const LOOP_TRIES: u32 = 16;

/// Mount images `1..=count` of `images` at `<root>/snapshots/<n>/fs`. The mounts stay until
/// the caller detaches what is below `root`.
pub fn mount_layers(
    images: &Path,
    root: &Path,
    count: u32,
    stop: &dyn Fn() -> bool,
) -> SysResult<(Layers, ErofsLayers)> {
    let snapshots = root.join("snapshots");
    mkdir(&snapshots)?;
    let mut dirs = Vec::with_capacity(count as usize);
    let mut backing = ErofsBacking::File;
    let mut file_refused = None;
    for n in 1..=count {
        if stop() {
            return Err(SysError::plain("stop requested", libc::EINTR));
        }
        let snap = snapshots.join(n.to_string());
        mkdir(&snap)?;
        let target = snap.join("fs");
        mkdir(&target)?;
        let image = images.join(image_name(n));
        if !image.is_file() {
            return Err(
                SysError::plain("stat(erofs image)", libc::ENOENT).context(format!(
                    "{} is not a file: the host makes one per layer",
                    image.display()
                )),
            );
        }
        match (backing, mount_one(&image, &target, backing)) {
            (_, Ok(())) => {}
            // A kernel that mounts erofs from block devices only: loop devices from here on.
            (ErofsBacking::File, Err(e)) if e.errno == libc::ENOTBLK && n == 1 => {
                file_refused = Some(e.evidence());
                backing = ErofsBacking::Loop;
                mount_one(&image, &target, backing)?;
            }
            (_, Err(e)) => return Err(e),
        }
        dirs.push(target);
    }
    // mkfs.erofs keeps the tree's trusted.* xattrs: the opaque check applies when layer 2's
    // opaque directory still carries its mark.
    let opaque = dirs.get(1).is_none_or(|d| {
        let mut v = [0u8; 4];
        rustix::fs::getxattr(d.join("opaque").as_path(), "trusted.overlay.opaque", &mut v)
            .is_ok_and(|len| &v[..len] == b"y")
    });
    let info = ErofsLayers {
        backing,
        file_refused,
        mounts: count,
    };
    Ok((Layers { dirs, opaque }, info))
}

fn mkdir(path: &Path) -> SysResult<()> {
    std::fs::create_dir(path).map_err(|e| {
        SysError::from_io(|| "mkdir(layer mount point)".into(), &e).context(format!("{path:?}"))
    })
}

/// One image at `target`: `fsopen("erofs")`, `ro`, `source` = the file or a loop device over
/// it, create, `fsmount(MOUNT_ATTR_RDONLY)`, `move_mount`.
fn mount_one(image: &Path, target: &Path, backing: ErofsBacking) -> SysResult<()> {
    let device = match backing {
        ErofsBacking::File => None,
        ErofsBacking::Loop => Some(loop_device(image)?),
    };
    let source: PathBuf = device
        .as_ref()
        .map_or_else(|| image.to_path_buf(), |d| d.path.clone());
    let fs = api::fsopen("erofs")?;
    // Read-only from the start: `get_tree_bdev` opens the device for writing otherwise, which a
    // read-only loop device refuses (EACCES on 6.1), as mount(8)'s `-o ro` retry knows.
    api::fsconfig_set_flag(fs.as_fd(), "ro")?;
    api::fsconfig_set_string(fs.as_fd(), "source", source.as_path())?;
    api::fsconfig_create(fs.as_fd()).map_err(|e| e.context(format!("source {source:?}")))?;
    let mnt = api::fsmount(fs.as_fd(), true)?;
    api::move_mount_attach(mnt.as_fd(), api::cwd(), target)?;
    // The mount holds the device now; with autoclear it goes when the mount does.
    drop(device);
    Ok(())
}

fn loop_device(image: &Path) -> SysResult<loopdev::LoopDevice> {
    let mut tries = 0;
    loop {
        match loopdev::attach_read_only(image) {
            Err(e) if e.errno == libc::EBUSY && tries + 1 < LOOP_TRIES => tries += 1,
            r => return r,
        }
    }
}

/// What the result says when mounting the images failed.
pub fn failure_evidence(e: &SysError) -> Evidence {
    let mut ev = e.evidence();
    ev.step = format!("mount erofs layer: {}", e.call);
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real thing on this machine's kernel: images from `mkfs.erofs` over the agent's own
    /// layer tree, mounted file-backed or through loop devices, with owners and overlay marks
    /// as written.
    #[test]
    fn images_of_the_layer_tree_mount_with_their_owners() {
        if !crate::testing::require_root(
            "images_of_the_layer_tree_mount_with_their_owners",
            "erofs mounts and loop devices",
        ) {
            return;
        }
        let mkfs = [
            "/usr/bin/mkfs.erofs",
            "/usr/sbin/mkfs.erofs",
            "/sbin/mkfs.erofs",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file());
        if !crate::testing::require(
            mkfs.is_some(),
            "images_of_the_layer_tree_mount_with_their_owners",
            "mkfs.erofs is not installed (erofs-utils)",
        ) {
            return;
        }
        let mkfs = mkfs.unwrap_or(Path::new("mkfs.erofs"));
        // A real disk filesystem: file-backed erofs needs `read_folio`, which tmpfs lacks.
        let tmp =
            std::path::PathBuf::from(format!("/var/tmp/mmx-erofs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let tmp = Tmp(tmp);
        let tree = tmp.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        let written = crate::layers::create(&tree, 2).unwrap();
        let images = tmp.path().join("images");
        std::fs::create_dir(&images).unwrap();
        for (i, dir) in written.dirs.iter().enumerate() {
            let out = std::process::Command::new(mkfs)
                .arg("--quiet")
                .arg("-T0")
                .arg(images.join(image_name(i as u32 + 1)))
                .arg(dir)
                .status()
                .unwrap();
            assert!(out.success());
        }
        let root = tmp.path().join("run");
        std::fs::create_dir(&root).unwrap();
        let done = std::thread::spawn(move || {
            crate::sys::ns::enter_private_mount_ns().unwrap();
            let (layers, info) = mount_layers(&images, &root, 2, &|| false).unwrap();
            use std::os::unix::fs::MetadataExt;
            let md = std::fs::metadata(layers.dirs[1].join("layer-2")).unwrap();
            assert_eq!(
                (md.uid(), md.gid()),
                (crate::layers::layer_uid(2), crate::layers::layer_gid(2))
            );
            assert_eq!(crate::layers::filesystem_name(&layers.dirs[0]), "erofs");
            assert!(
                layers.opaque,
                "trusted.overlay.opaque did not survive mkfs.erofs"
            );
            // The loop path, as kernels before 6.12 need it, on this kernel too.
            let via_loop = root.join("via-loop");
            std::fs::create_dir(&via_loop).unwrap();
            mount_one(&images.join(image_name(2)), &via_loop, ErofsBacking::Loop).unwrap();
            let md = std::fs::metadata(via_loop.join("layer-2")).unwrap();
            assert_eq!(md.uid(), crate::layers::layer_uid(2));
            crate::sys::legacy::umount_detach(via_loop.as_path()).unwrap();
            // No image for layer 3: refused with the reason, not a half-made set.
            let e = mount_layers(&images, &root.join("snapshots/1"), 3, &|| false);
            assert!(e.is_err());
            for d in layers.dirs.iter().rev() {
                crate::sys::legacy::umount_detach(d.as_path()).unwrap();
            }
            info
        });
        let info = done.join().unwrap();
        eprintln!(
            "erofs layers mounted via {:?} ({:?})",
            info.backing, info.file_refused
        );
        assert_eq!(info.mounts, 2);
        assert_eq!(
            info.file_refused.is_some(),
            info.backing == ErofsBacking::Loop
        );
    }

    struct Tmp(std::path::PathBuf);
    impl Tmp {
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
