//! The strategies, each reading like its syscall sequence in ARCHITECTURE.md. All run with the
//! worker's working directory set to the container's directory (`c/<idx>`), so every mount path
//! and overlay option is short and relative: `l/0`…`l/<L-1>` (per-layer targets), `p`
//! (common-parent target), `m` (merged), `u` (upper), `w` (work). Layer sources are absolute.
//! Passes run one after another and reuse the same targets.
//!
//! Every call of the sequence goes through [`Tally::timed`], which sums its time and makes its
//! failure the kernel's answer ([`Cause::Kernel`]). Nothing here counts attachments: the kernel
//! does (`super::count`).

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use protocol::Strategy;

use super::cause::Cause;
use crate::sys::{legacy, mount_api as api, open_tree_attr, SysError, SysResult};

/// Per-worker time inside mount syscalls.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// umount2 calls repeated after EBUSY.
    pub ebusy_retries: u64,
    /// Nanoseconds inside mount-family syscalls.
    pub syscall_ns: u64,
}

impl Tally {
    /// Run one call of the strategy's sequence: its time is summed, its failure is the
    /// kernel's answer.
    fn timed<T>(&mut self, f: impl FnOnce() -> SysResult<T>) -> Result<T, Cause> {
        let t = Instant::now();
        let r = f();
        self.syscall_ns += t.elapsed().as_nanos() as u64;
        r.map_err(Cause::Kernel)
    }

    pub fn merge(&mut self, o: &Tally) {
        self.ebusy_retries += o.ebusy_retries;
        self.syscall_ns += o.syscall_ns;
    }

    /// `umount2(target, 0)`, retried on EBUSY: a helper process or a concurrent path walk can
    /// hold a mount for a moment (containerd retries for the same reason).
    fn umount_retry(&mut self, target: &CStr) -> Result<(), Cause> {
        const TRIES: u32 = 100;
        for attempt in 0.. {
            match self.timed(|| legacy::umount(target)) {
                Err(Cause::Kernel(SysError { errno, .. }))
                    if errno == libc::EBUSY && attempt + 1 < TRIES =>
                {
                    self.ebusy_retries += 1;
                    std::thread::sleep(Duration::from_micros(200));
                }
                r => return r,
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// Lazily detach what an interrupted start path left attached.
    fn detach_all(&mut self, targets: &[&CStr]) {
        for t in targets.iter().rev() {
            let _ = self.timed(|| legacy::umount_detach(*t));
        }
    }
}

/// Everything a strategy needs that is the same for every container of a run.
pub struct Plan {
    pub strategy: Strategy,
    /// Absolute layer directories, bottom (layer 1) first.
    pub layers: Vec<CString>,
    /// Relative per-layer targets `l/0`…`l/<L-1>` (per-layer only).
    pub targets: Vec<CString>,
    /// The layers' common directory (common-parent only).
    pub common: Option<CString>,
    /// Whether each layer is a mount of its own below the common directory (erofs images):
    /// the recursive clone then carries L + 1 mounts, and `umount2(0)` of its top refuses
    /// with EBUSY while the children hang below it, so a runtime must detach the tree with
    /// `MNT_DETACH` (one call, L + 1 detachments).
    pub common_has_submounts: bool,
    /// Upper and work dirs and overlay options, the same for every container.
    paths: Paths,
    /// Test hook `extra-bind`: one bind mount more than the strategy's sequence in every pass,
    /// attached before it and detached after it (so it is attached at the peak, where every
    /// count source looks), which the kernel's count must catch.
    pub extra_bind: bool,
}

/// A container's upper and work dirs and overlay options, relative to its directory.
pub struct Paths {
    pub upper: CString,
    pub work: CString,
    /// overlay mount(2) options for a read-only view (upper as top lowerdir) and for a rootfs.
    pub data_view: CString,
    pub data_rootfs: CString,
}

impl Plan {
    /// Build the per-run constants. `rel` gives each layer's path below the common directory
    /// (common-parent) and is ignored otherwise.
    pub fn new(
        strategy: Strategy,
        layers: Vec<CString>,
        common: Option<(CString, Vec<String>)>,
    ) -> Plan {
        let n = layers.len();
        let targets: Vec<CString> = (0..n)
            .map(|i| CString::new(format!("l/{i}")).unwrap_or_default())
            .collect();
        // Top layer first, as overlay wants.
        let lowers: Vec<String> = match (&strategy, &common) {
            (Strategy::CommonParent, Some((_, rel))) => {
                rel.iter().rev().map(|r| format!("p/{r}")).collect()
            }
            _ => (0..n).rev().map(|i| format!("l/{i}")).collect(),
        };
        let lowers = lowers.join(":");
        let c = |s: String| CString::new(s).unwrap_or_default();
        Plan {
            strategy,
            layers,
            targets,
            common: common.map(|(c, _)| c),
            common_has_submounts: false,
            extra_bind: false,
            paths: Paths {
                upper: c("u".into()),
                work: c("w".into()),
                data_view: c(format!("lowerdir=u:{lowers}")),
                data_rootfs: c(format!("lowerdir={lowers},upperdir=u,workdir=w")),
            },
        }
    }

    /// The upper and work dirs and overlay options (relative to a container's directory).
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Mounts one container holds at the peak of its start path.
    pub fn peak_mounts(&self) -> u64 {
        match self.strategy {
            Strategy::PerLayer => self.layers.len() as u64 + 1,
            // The parent's clone carries the layers' own mounts (erofs) along.
            Strategy::CommonParent if self.common_has_submounts => self.layers.len() as u64 + 2,
            Strategy::CommonParent => 2,
            Strategy::FsconfigFd | Strategy::FsconfigFdAttr => 1,
        }
    }
}

const MERGED: &CStr = c"m";
/// Where the test hook `extra-bind` mounts (see [`Plan::extra_bind`]).
pub const EXTRA_TARGET: &str = "x";
const EXTRA: &CStr = c"x";
const PARENT_TARGET: &CStr = c"p";

/// Build one pass's overlay at `m`. `rootfs` selects pass B (upper/work) over pass A (read-only
/// view with the upper dir as top lowerdir). `at_peak` runs once while the most mounts are
/// attached (the cross-check); its time is left out of the returned start-path duration.
pub fn start(
    plan: &Plan,
    paths: &Paths,
    userns: BorrowedFd<'_>,
    rootfs: bool,
    tally: &mut Tally,
    at_peak: &mut dyn FnMut(),
) -> Result<Duration, Cause> {
    let t0 = Instant::now();
    if plan.extra_bind {
        let layer = plan
            .layers
            .first()
            .ok_or_else(|| Cause::bug("a plan without layers"))?;
        tally.timed(|| legacy::mount_bind(layer.as_c_str(), EXTRA))?;
    }
    let mut paused = Duration::ZERO;
    let mut peak = || {
        let p = Instant::now();
        at_peak();
        paused += p.elapsed();
    };
    let r = match plan.strategy {
        Strategy::PerLayer => per_layer(plan, paths, userns, rootfs, tally, &mut peak),
        Strategy::CommonParent => common_parent(plan, paths, userns, rootfs, tally, &mut peak),
        Strategy::FsconfigFd => {
            let layers = LayerCalls::OpenTreeThenSetattr;
            fsconfig_fd(plan, paths, userns, rootfs, layers, tally, &mut peak)
        }
        Strategy::FsconfigFdAttr => {
            let layers = LayerCalls::OpenTreeAttr;
            fsconfig_fd(plan, paths, userns, rootfs, layers, tally, &mut peak)
        }
    };
    if plan.extra_bind {
        let undone = tally.umount_retry(EXTRA);
        r.and(undone)?;
    } else {
        r?;
    }
    Ok(t0.elapsed().saturating_sub(paused))
}

/// Unmount the finished overlay (not part of the start path).
pub fn teardown(tally: &mut Tally) -> Result<(), Cause> {
    tally.umount_retry(MERGED)
}

/// An idmapped, read-only, detached clone of one directory.
fn idmapped_clone(
    tally: &mut Tally,
    path: &CStr,
    userns: BorrowedFd<'_>,
    recursive: bool,
) -> Result<OwnedFd, Cause> {
    let fd = tally.timed(|| api::open_tree_clone(api::cwd(), path, recursive))?;
    tally.timed(|| api::mount_setattr_idmap(fd.as_fd(), userns, true, recursive))?;
    Ok(fd)
}

/// The same detached layer made in one call: `open_tree_attr(OPEN_TREE_CLONE,
/// MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY)` (6.15).
fn idmapped_clone_attr(
    tally: &mut Tally,
    path: &CStr,
    userns: BorrowedFd<'_>,
) -> Result<OwnedFd, Cause> {
    tally.timed(|| {
        open_tree_attr::open_tree_attr_idmap(
            api::cwd(),
            path,
            open_tree_attr::Target::Clone,
            userns,
            true,
        )
    })
}

/// How fsconfig-fd and fsconfig-fd-attr make each detached idmapped layer; the rest of their
/// sequence is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerCalls {
    /// `open_tree(OPEN_TREE_CLONE)` + `mount_setattr(MOUNT_ATTR_IDMAP)` (fsconfig-fd).
    OpenTreeThenSetattr,
    /// `open_tree_attr(OPEN_TREE_CLONE, MOUNT_ATTR_IDMAP)` (fsconfig-fd-attr).
    OpenTreeAttr,
}

/// Closing a detached tree dissolves it under the mount locks: time it like a mount call.
fn close_tree(tally: &mut Tally, fd: OwnedFd) {
    let _ = tally.timed(|| {
        api::close_tree(fd);
        Ok(())
    });
}

/// per layer: open_tree(CLONE) → mount_setattr(IDMAP|RDONLY) → move_mount to `l/i`;
/// mount("overlay", lowerdir=l/<L-1>:…:l/0); per layer umount2.
fn per_layer(
    plan: &Plan,
    paths: &Paths,
    userns: BorrowedFd<'_>,
    rootfs: bool,
    tally: &mut Tally,
    peak: &mut dyn FnMut(),
) -> Result<(), Cause> {
    let mut attached: Vec<&CStr> = Vec::with_capacity(plan.layers.len() + 1);
    let r = (|| {
        for (layer, target) in plan.layers.iter().zip(&plan.targets) {
            let fd = idmapped_clone(tally, layer, userns, false)?;
            tally.timed(|| api::move_mount_attach(fd.as_fd(), api::cwd(), target.as_c_str()))?;
            attached.push(target);
            close_tree(tally, fd);
        }
        overlay(paths, rootfs, tally)?;
        attached.push(MERGED);
        peak();
        while attached.len() > 1 {
            let target = attached.remove(0);
            tally.umount_retry(target)?;
        }
        Ok(())
    })();
    if r.is_err() {
        tally.detach_all(&attached);
    }
    r
}

/// one open_tree(CLONE|AT_RECURSIVE) of the common directory → mount_setattr(AT_RECURSIVE) →
/// move_mount to `p`; mount("overlay", lowerdir=p/<rel>…); one umount2 (`MNT_DETACH` when the
/// layers are mounts of their own below it).
fn common_parent(
    plan: &Plan,
    paths: &Paths,
    userns: BorrowedFd<'_>,
    rootfs: bool,
    tally: &mut Tally,
    peak: &mut dyn FnMut(),
) -> Result<(), Cause> {
    let common = plan
        .common
        .as_deref()
        .ok_or_else(|| Cause::bug("a common-parent plan without the layers' common directory"))?;
    let mut attached: Vec<&CStr> = Vec::with_capacity(2);
    let r = (|| {
        let fd = idmapped_clone(tally, common, userns, true)?;
        tally.timed(|| api::move_mount_attach(fd.as_fd(), api::cwd(), PARENT_TARGET))?;
        attached.push(PARENT_TARGET);
        close_tree(tally, fd);
        overlay(paths, rootfs, tally)?;
        attached.push(MERGED);
        peak();
        if plan.common_has_submounts {
            tally.timed(|| legacy::umount_detach(PARENT_TARGET))?;
        } else {
            tally.umount_retry(PARENT_TARGET)?;
        }
        attached.remove(0);
        Ok(())
    })();
    if r.is_err() {
        tally.detach_all(&attached);
    }
    r
}

fn overlay(paths: &Paths, rootfs: bool, tally: &mut Tally) -> Result<(), Cause> {
    let data = if rootfs {
        &paths.data_rootfs
    } else {
        &paths.data_view
    };
    tally.timed(|| legacy::mount_overlay(MERGED, data, !rootfs))
}

/// per layer open_tree(CLONE) + mount_setattr(IDMAP) (fsconfig-fd) or one
/// open_tree_attr(CLONE, IDMAP) (fsconfig-fd-attr), detached; fsopen("overlay"),
/// fsconfig(SET_FD, "lowerdir+", detached idmapped layer) per layer, upper/work by SET_STRING,
/// CMD_CREATE, close the layer fds, fsmount, one move_mount. The read-only view's top layer is
/// the upper dir, not idmapped, handed by path (`SET_STRING "lowerdir+"`): what the first fd
/// call answers is then about detached idmapped layers, the feature the strategy exists for;
/// handing upper or work dirs as `O_PATH` fds is a feature of its own (the probe
/// `fsconfig-set-fd-upper-work`).
fn fsconfig_fd(
    plan: &Plan,
    paths: &Paths,
    userns: BorrowedFd<'_>,
    rootfs: bool,
    calls: LayerCalls,
    tally: &mut Tally,
    peak: &mut dyn FnMut(),
) -> Result<(), Cause> {
    let mut trees = Vec::with_capacity(plan.layers.len());
    for layer in &plan.layers {
        trees.push(match calls {
            LayerCalls::OpenTreeThenSetattr => idmapped_clone(tally, layer, userns, false)?,
            LayerCalls::OpenTreeAttr => idmapped_clone_attr(tally, layer, userns)?,
        });
    }
    let fs = tally.timed(|| api::fsopen("overlay"))?;
    if !rootfs {
        tally
            .timed(|| api::fsconfig_set_string(fs.as_fd(), "lowerdir+", paths.upper.as_c_str()))
            .map_err(|e| e.context("the upper dir as the view's top layer"))?;
    }
    let n = trees.len();
    for (i, tree) in trees.iter().enumerate().rev() {
        tally
            .timed(|| {
                api::fsconfig_set_fd(
                    fs.as_fd(),
                    "lowerdir+",
                    tree.as_fd(),
                    api::FdKind::DetachedIdmappedLayer,
                )
            })
            .map_err(|e| e.context(format!("layer {} of {n}", i + 1)))?;
    }
    if rootfs {
        tally.timed(|| api::fsconfig_set_string(fs.as_fd(), "upperdir", paths.upper.as_c_str()))?;
        tally.timed(|| api::fsconfig_set_string(fs.as_fd(), "workdir", paths.work.as_c_str()))?;
    }
    tally.timed(|| api::fsconfig_create(fs.as_fd()))?;
    for tree in trees {
        close_tree(tally, tree);
    }
    let mnt = tally.timed(|| api::fsmount(fs.as_fd(), !rootfs))?;
    tally.timed(|| api::move_mount_attach(mnt.as_fd(), api::cwd(), MERGED))?;
    peak();
    close_tree(tally, mnt);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(n: usize) -> Vec<CString> {
        (1..=n)
            .map(|i| CString::new(format!("/s/snapshots/{i}/fs")).unwrap())
            .collect()
    }

    #[test]
    fn overlay_options_list_the_top_layer_first() {
        let p = Plan::new(Strategy::PerLayer, layers(3), None);
        let c = p.paths();
        assert_eq!(c.data_view.to_str().unwrap(), "lowerdir=u:l/2:l/1:l/0");
        assert_eq!(
            c.data_rootfs.to_str().unwrap(),
            "lowerdir=l/2:l/1:l/0,upperdir=u,workdir=w"
        );
        assert_eq!(c.upper.to_str().unwrap(), "u");
        assert_eq!(p.peak_mounts(), 4);
        let rel = vec!["1/fs".to_string(), "2/fs".to_string()];
        let c = Plan::new(
            Strategy::CommonParent,
            layers(2),
            Some((CString::new("/s/snapshots").unwrap(), rel)),
        );
        assert_eq!(
            c.paths().data_view.to_str().unwrap(),
            "lowerdir=u:p/2/fs:p/1/fs"
        );
        assert_eq!(c.peak_mounts(), 2);
    }

    #[test]
    fn options_stay_under_a_page_at_the_layer_cap() {
        // mount(2) copies at most one page of options.
        let n = protocol::limits::LAYERS.max as usize;
        let plan = Plan::new(Strategy::PerLayer, layers(n), None);
        let p = plan.paths();
        assert!(
            p.data_view.as_bytes().len() < 4096,
            "{}",
            p.data_view.as_bytes().len()
        );
        assert!(p.data_rootfs.as_bytes().len() < 4096);
        let rel = (1..=n).map(|i| format!("{i}/fs")).collect();
        let c = Plan::new(
            Strategy::CommonParent,
            layers(n),
            Some((CString::new("/s/snapshots").unwrap(), rel)),
        );
        let c = c.paths();
        assert!(
            c.data_view.as_bytes().len() < 4096,
            "{}",
            c.data_view.as_bytes().len()
        );
    }
}
