//! Kernel feature probes (ARCHITECTURE.md): each one tries the feature for real, in a private mount
//! namespace, on the scratch directory's own filesystem, and keeps the failing step and errno as
//! evidence. Where a feature's point is ids (idmapped mounts, overlay over them, fd layers) the
//! verdict comes from the ids seen through the mount, not from a syscall returning 0. Versions
//! are never consulted; the kernel release is only reported.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use protocol::{Capabilities, Evidence, Feature, ProbeResult};
use rustix::fs::AtFlags;

use crate::layers::{self, layer_gid, layer_uid, Layers};
use crate::mounts::ScratchGuard;
use crate::sys::userns::UserNs;
use crate::sys::{fanotify, legacy, mount_api as api, table, SysError, SysResult};

mod detached;

/// Host id that the probes' user namespace maps id 0 to.
pub(crate) const PROBE_BASE: u32 = 500_000_000;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Probe every [`Feature`] on the filesystem of `scratch`.
pub fn probe_all(scratch: &Path) -> Capabilities {
    let kernel_release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let probed_fs = layers::filesystem_name(scratch);
    let dir = scratch.to_owned();
    // A thread of our own: its private mount namespace and working directory leave the
    // caller's untouched, and every probe mount dies with it.
    let probes = std::thread::Builder::new()
        .name("mmx-probes".into())
        .spawn(move || probe_in_private_ns(&dir))
        .map_err(|e| Evidence::new("spawn the probe thread").with_detail(e.to_string()))
        .and_then(|h| {
            h.join().map_err(|p| {
                Evidence::new("probes panicked").with_detail(crate::mounts::panic_message(&*p))
            })
        })
        .unwrap_or_else(|ev| all_failed(&ev));
    Capabilities {
        kernel_release,
        probed_fs,
        disk: None,
        probes,
    }
}

fn all_failed(ev: &Evidence) -> Vec<ProbeResult> {
    Feature::ALL
        .into_iter()
        .map(|feature| ProbeResult {
            feature,
            supported: false,
            evidence: Some(ev.clone()),
            warning: None,
        })
        .collect()
}

fn yes(feature: Feature, note: Option<String>) -> ProbeResult {
    ProbeResult {
        feature,
        supported: true,
        evidence: note.map(|n| Evidence::new("ok").with_detail(n)),
        warning: None,
    }
}

fn no(feature: Feature, ev: Evidence) -> ProbeResult {
    ProbeResult {
        feature,
        supported: false,
        evidence: Some(ev),
        warning: None,
    }
}

fn from_sys(feature: Feature, r: SysResult<Option<String>>, fs: &str) -> ProbeResult {
    match r {
        Ok(note) => yes(feature, note),
        // Stable step (the call and the filesystem); variable inputs in the detail.
        Err(e) => {
            let mut ev = e.evidence();
            ev.step = format!("{} on {fs}", e.call);
            no(feature, ev)
        }
    }
}

/// Everything the probes share: layers, a user namespace, scratch directories.
struct Setup {
    layers: Layers,
    userns: UserNs,
    fs: String,
}

fn probe_in_private_ns(scratch: &Path) -> Vec<ProbeResult> {
    let prepared = (|| -> Result<(ScratchGuard, Layers), Evidence> {
        crate::sys::ns::enter_private_mount_ns().map_err(|e| e.evidence())?;
        crate::sys::ns::unshare_fs().map_err(|e| e.evidence())?;
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let root = scratch.join(format!("mmx-probe-{}-{seq}", std::process::id()));
        std::fs::create_dir(&root).map_err(|e| {
            let ev = Evidence::new("mkdir(probe directory)").with_detail(format!(
                "scratch dir is not writable: {}: {e}",
                root.display()
            ));
            e.raw_os_error().map_or(ev.clone(), |n| ev.with_errno(n))
        })?;
        let guard = ScratchGuard { path: root.clone() };
        let layers = layers::create(&root, 2).map_err(|e| {
            let ev = Evidence::new("write probe layers").with_detail(e.to_string());
            e.errno().map_or(ev.clone(), |n| ev.with_errno(n))
        })?;
        for d in ["t0", "t1", "m", "u", "w"] {
            std::fs::create_dir(root.join(d))
                .map_err(|e| Evidence::new(format!("mkdir({d})")).with_detail(e.to_string()))?;
        }
        rustix::process::chdir(&root).map_err(|e| {
            Evidence::new("chdir(probe directory)")
                .with_errno(e.raw_os_error())
                .with_detail(root.display().to_string())
        })?;
        Ok((guard, layers))
    })();
    let (guard, layers) = match prepared {
        Ok(p) => p,
        Err(ev) => return all_failed(&ev),
    };
    let userns = match UserNs::create(PROBE_BASE, 65536, std::sync::Arc::new(vec![])) {
        Ok(u) => u,
        Err(e) => return all_failed(&e.evidence()),
    };
    let setup = Setup {
        layers,
        userns,
        fs: layers::filesystem_name(&guard.path),
    };
    let fs = setup.fs.clone();
    let idmap = from_sys(Feature::IdmapMount, idmap_mount(&setup), &fs);
    let mut results = vec![
        from_sys(Feature::NewMountApi, new_mount_api(&setup), &fs),
        idmap.clone(),
        if idmap.supported {
            from_sys(Feature::OverlayOverIdmap, overlay_over_idmap(&setup), &fs)
        } else {
            no(Feature::OverlayOverIdmap, needs(&idmap))
        },
        from_sys(Feature::CreateExcl, create_excl(), &fs),
        from_sys(Feature::LowerdirPlusString, lowerdir_plus_string(), &fs),
        from_sys(Feature::Listmount, listmount(), &fs),
        from_sys(Feature::Statmount, statmount(), &fs),
        if idmap.supported {
            from_sys(Feature::FsconfigSetFdLayer, set_fd_layers(&setup), &fs)
        } else {
            no(Feature::FsconfigSetFdLayer, needs(&idmap))
        },
        from_sys(Feature::FsconfigSetFdUpperWork, set_fd_upper_work(), &fs),
        from_sys(Feature::FanotifyMountEvents, fanotify_events(&setup), &fs),
    ];
    let attr = from_sys(Feature::OpenTreeAttr, detached::open_tree_attr(&setup), &fs);
    let locked = if attr.supported {
        detached::idmap_locked(&setup)
    } else {
        no(Feature::OpenTreeAttrIdmapLocked, needs(&attr))
    };
    results.extend([
        attr,
        locked,
        from_sys(
            Feature::IdmapOverlay,
            detached::idmap_overlay_detached(&setup),
            &fs,
        ),
        from_sys(
            Feature::IdmapOverlayAttached,
            detached::idmap_overlay_attached(&setup),
            &fs,
        ),
        from_sys(
            Feature::OpenTreeNamespace,
            detached::open_tree_namespace_probe(&setup),
            &fs,
        ),
        from_sys(
            Feature::StatmountByFd,
            detached::statmount_by_fd(&setup),
            &fs,
        ),
    ]);
    let _ = rustix::process::chdir("/");
    drop(setup);
    // The helper must not outlive the probes.
    crate::sys::userns::reap_pending(std::time::Duration::from_secs(5));
    drop(guard);
    results
}

fn needs(dep: &ProbeResult) -> Evidence {
    let why = dep
        .evidence
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    Evidence::new(format!("needs {}", dep.feature)).with_detail(why)
}

fn layer(s: &Setup, i: usize) -> CString {
    CString::new(s.layers.dirs[i].as_os_str().as_bytes()).unwrap_or_default()
}

/// The ids the probe layers' file of layer `n` reads with through a mapping of 0 to `base`.
fn mapped(base: u32, n: u32) -> (u32, u32) {
    (base + layer_uid(n), base + layer_gid(n))
}

/// A failed expectation about ids, as an error with the step and what was seen.
fn ids_error(step: String, seen: SysResult<(u32, u32)>, want: (u32, u32)) -> SysError {
    let what = match seen {
        Ok((u, g)) => format!("uid:gid {u}:{g}"),
        Err(e) => e.to_string(),
    };
    SysError::plain(step, 0).context(format!("saw {what}, expected {}:{}", want.0, want.1))
}

fn ids_at(dir: BorrowedFd<'_>, path: &str) -> SysResult<(u32, u32)> {
    rustix::fs::statat(dir, path, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| (st.st_uid, st.st_gid))
        .map_err(|e| SysError::new(|| format!("fstatat({path:?})"), e))
}

fn expect_ids(dir: BorrowedFd<'_>, path: &str, want: (u32, u32), step: &str) -> SysResult<()> {
    let seen = ids_at(dir, path);
    if seen.as_ref().ok() == Some(&want) {
        return Ok(());
    }
    Err(ids_error(format!("{step} {path}"), seen, want))
}

/// Undo attachments whatever happened.
fn detach(targets: &[&std::ffi::CStr]) {
    for t in targets.iter().rev() {
        let _ = legacy::umount_detach(*t);
    }
}

fn new_mount_api(s: &Setup) -> SysResult<Option<String>> {
    let fd = api::open_tree_clone(api::cwd(), layer(s, 0).as_c_str(), false)?;
    api::move_mount_attach(fd.as_fd(), api::cwd(), c"t0")?;
    // An open fd on the attached tree would keep it busy.
    drop(fd);
    legacy::umount(c"t0")?;
    Ok(None)
}

fn idmapped(s: &Setup, i: usize) -> SysResult<OwnedFd> {
    let fd = api::open_tree_clone(api::cwd(), layer(s, i).as_c_str(), false)?;
    api::mount_setattr_idmap(fd.as_fd(), s.userns.fd(), true, false)?;
    Ok(fd)
}

fn idmap_mount(s: &Setup) -> SysResult<Option<String>> {
    let fd = idmapped(s, 0)?;
    let want = (PROBE_BASE + layer_uid(1), PROBE_BASE + layer_gid(1));
    expect_ids(
        fd.as_fd(),
        "layer-1",
        want,
        "ids through the idmapped mount:",
    )?;
    Ok(Some(format!(
        "layer-1 shows {}:{} from the host",
        want.0, want.1
    )))
}

fn overlay_over_idmap(s: &Setup) -> SysResult<Option<String>> {
    let r = (|| {
        for (i, t) in [c"t0", c"t1"].into_iter().enumerate() {
            let fd = idmapped(s, i)?;
            api::move_mount_attach(fd.as_fd(), api::cwd(), t)?;
        }
        legacy::mount_overlay(c"m", c"lowerdir=t1:t0", true)?;
        let m = rustix::fs::open(
            c"m",
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| SysError::new(|| "open(\"m\", O_PATH)".into(), e))?;
        expect_mapped_layers(m.as_fd(), "ids through overlay over idmapped layers:")
    })();
    detach(&[c"t0", c"t1", c"m"]);
    r
}

fn create_excl() -> SysResult<Option<String>> {
    let fs = api::fsopen("overlay")?;
    api::fsconfig_set_string(fs.as_fd(), "lowerdir", c"snapshots/2/fs:snapshots/1/fs")?;
    api::fsconfig_create_excl(fs.as_fd())?;
    Ok(None)
}

fn lowerdir_plus_string() -> SysResult<Option<String>> {
    let fs = api::fsopen("overlay")?;
    api::fsconfig_set_string(fs.as_fd(), "lowerdir+", c"snapshots/2/fs")?;
    api::fsconfig_set_string(fs.as_fd(), "lowerdir+", c"snapshots/1/fs")?;
    api::fsconfig_create(fs.as_fd())?;
    let m = api::fsmount(fs.as_fd(), true)?;
    expect_ids(
        m.as_fd(),
        "shared",
        (layer_uid(2), layer_gid(2)),
        "top layer through the overlay:",
    )?;
    Ok(None)
}

fn listmount() -> SysResult<Option<String>> {
    let ids = table::listmount_all()?;
    Ok(Some(format!("{} mounts listed", ids.len())))
}

fn statmount() -> SysResult<Option<String>> {
    // Needs a mount id; listmount (same release) gives one.
    let ids = table::listmount_all()?;
    let first = ids
        .first()
        .copied()
        .ok_or_else(|| SysError::plain("listmount(LSMT_ROOT): no mounts", 0))?;
    let point = table::statmount_mnt_point(first)?;
    Ok(Some(format!(
        "mount {first} at {}",
        String::from_utf8_lossy(&point)
    )))
}

fn set_fd_layers(s: &Setup) -> SysResult<Option<String>> {
    let lower1 = idmapped(s, 0)?;
    let lower2 = idmapped(s, 1)?;
    let fs = api::fsopen("overlay")?;
    let layer = api::FdKind::DetachedIdmappedLayer;
    api::fsconfig_set_fd(fs.as_fd(), "lowerdir+", lower2.as_fd(), layer)?;
    api::fsconfig_set_fd(fs.as_fd(), "lowerdir+", lower1.as_fd(), layer)?;
    api::fsconfig_create(fs.as_fd())?;
    drop((lower1, lower2));
    let m = api::fsmount(fs.as_fd(), true)?;
    expect_mapped_layers(m.as_fd(), "ids through overlay over detached idmapped fds:")
}

/// Through a merged view over the two idmapped probe layers, a file only the bottom layer has
/// and the file both have (the top one wins) must show the layers' ids shifted by the mapping.
fn expect_mapped_layers(merged: BorrowedFd<'_>, step: &str) -> SysResult<Option<String>> {
    expect_ids(
        merged,
        "layer-1",
        (PROBE_BASE + layer_uid(1), PROBE_BASE + layer_gid(1)),
        step,
    )?;
    expect_ids(
        merged,
        "shared",
        (PROBE_BASE + layer_uid(2), PROBE_BASE + layer_gid(2)),
        step,
    )?;
    Ok(Some("merged view shows the mapped ids".to_owned()))
}

/// Upper and work dirs handed to overlay as `O_PATH` fds (`open_tree` without a clone), the
/// layers by path: a write through the mount must land in the upper dir.
fn set_fd_upper_work() -> SysResult<Option<String>> {
    let upper = api::open_tree_path(api::cwd(), c"u")?;
    let work = api::open_tree_path(api::cwd(), c"w")?;
    let fs = api::fsopen("overlay")?;
    api::fsconfig_set_string(fs.as_fd(), "lowerdir+", c"snapshots/2/fs")?;
    api::fsconfig_set_string(fs.as_fd(), "lowerdir+", c"snapshots/1/fs")?;
    api::fsconfig_set_fd(fs.as_fd(), "upperdir", upper.as_fd(), api::FdKind::OPath)?;
    api::fsconfig_set_fd(fs.as_fd(), "workdir", work.as_fd(), api::FdKind::OPath)?;
    api::fsconfig_create(fs.as_fd())?;
    let m = api::fsmount(fs.as_fd(), false)?;
    let name = c"written-through-fd-upper";
    rustix::fs::openat(
        m.as_fd(),
        name,
        rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .map_err(|e| SysError::new(|| "openat(merged view, O_CREAT)".into(), e))?;
    rustix::fs::statat(upper.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
        SysError::new(
            || "fstatat(upper dir) of a file written through the mount".into(),
            e,
        )
    })?;
    Ok(Some(
        "a write through the mount landed in the upper dir".to_owned(),
    ))
}

/// One bind attached and detached in the probe's namespace: fanotify must report both, each
/// with the mount's unique id.
fn fanotify_events(s: &Setup) -> SysResult<Option<String>> {
    let fan = fanotify::init_mount_events(false)?;
    let ns = crate::sys::ns::open_mount_ns()?;
    fanotify::mark_mount_ns(fan.as_fd(), ns.as_fd())?;
    let fd = api::open_tree_clone(api::cwd(), layer(s, 0).as_c_str(), false)?;
    api::move_mount_attach(fd.as_fd(), api::cwd(), c"t0")?;
    drop(fd);
    let id = api::mount_id_unique(api::cwd(), c"t0", false);
    let r = legacy::umount(c"t0");
    detach(&[c"t0"]);
    r?;
    let id = id?;
    let mut events = Vec::new();
    let mut buf = vec![0u8; 4096];
    fanotify::read_mount_events(fan.as_fd(), &mut buf, &mut events)?;
    let attached = events
        .iter()
        .filter(|e| matches!(e, fanotify::MountEvent::Attach(m) if Some(*m) == id || id.is_none()))
        .count();
    let detached = events
        .iter()
        .filter(|e| matches!(e, fanotify::MountEvent::Detach(m) if Some(*m) == id || id.is_none()))
        .count();
    if attached != 1 || detached != 1 {
        return Err(
            SysError::plain("fanotify mount events after one attach and one detach", 0).context(
                format!(
            "read {attached} attach and {detached} detach events of the mount (of {} events)",
            events.len()
        ),
            ),
        );
    }
    Ok(Some(
        "one attach and one detach event, with the mount's id".into(),
    ))
}
