//! The probes of detached idmapped trees (`open-tree-attr`, its locked idmap, idmapped overlays,
//! `OPEN_TREE_NAMESPACE`, `STATMOUNT_BY_FD`) on this machine's kernel, run for real by the agent
//! binary as root. What holds on every kernel is asserted everywhere; the exact answers are
//! pinned for the kernels whose source was read for them (the host this was written on, 6.18),
//! and printed for others. The guests' answers (6.1, 6.12, 7.x) are pinned in
//! harness/tests/qemu.rs.

use protocol::{Capabilities, Feature, ProbeResult};

mod common;

use common::{assert_no_leak, is_root, mount_table, Scratch, AGENT};

fn probe() -> Capabilities {
    let scratch = Scratch::new("it", "probe-detached");
    let before = mount_table();
    let out = std::process::Command::new(AGENT)
        .args([
            "probe",
            "--scratch",
            scratch.0.to_str().expect("utf-8"),
            "--json",
        ])
        .output()
        .expect("run the agent");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    scratch.assert_empty();
    assert_no_leak(&before);
    serde_json::from_slice(&out.stdout).expect("capabilities")
}

fn get(caps: &Capabilities, f: Feature) -> &ProbeResult {
    caps.get(f)
        .unwrap_or_else(|| panic!("{f} not probed: {caps:#?}"))
}

/// The refusing call and errno name of an unsupported probe.
fn refused(p: &ProbeResult) -> (String, Option<&'static str>) {
    let ev = p
        .evidence
        .as_ref()
        .unwrap_or_else(|| panic!("no evidence: {p:?}"));
    (ev.step.clone(), ev.errno_name())
}

#[test]
fn detached_tree_probes_answer_with_the_refusing_call() {
    if !is_root("detached_tree_probes_answer_with_the_refusing_call") {
        return;
    }
    let caps = probe();
    let attr = get(&caps, Feature::OpenTreeAttr);
    let locked = get(&caps, Feature::OpenTreeAttrIdmapLocked);
    if attr.supported {
        // With open_tree_attr the idmap either holds or the kernel is flagged: a refusal for
        // another reason would mean the probe did not test the lock.
        assert!(locked.supported || locked.warning.is_some(), "{locked:?}");
    } else {
        assert!(!locked.supported && locked.warning.is_none(), "{locked:?}");
        let (step, _) = refused(locked);
        assert!(step.starts_with("needs open-tree-attr"), "{step}");
    }
    // Type 2: where overlay refuses an idmap, the refusal is mount_setattr's; for the attached
    // overlay that means open_tree cloned it first.
    for f in [Feature::IdmapOverlay, Feature::IdmapOverlayAttached] {
        let p = get(&caps, f);
        if !p.supported {
            let (step, _) = refused(p);
            assert!(
                step.starts_with("mount_setattr(AT_EMPTY_PATH, MOUNT_ATTR_IDMAP"),
                "{p:?}"
            );
        }
    }

    let release = &caps.kernel_release;
    if !release.starts_with("6.18.") {
        eprintln!("no pinned answers for kernel {release}: {caps:#?}");
        return;
    }
    // 6.18 (fs/namespace.c of v6.18): open_tree_attr is syscall 467 (6.15); the in-place
    // open_tree_attr takes no MOUNT_KATTR_IDMAP_REPLACE (the fix "do not allow id-mapping
    // changes without OPEN_TREE_CLONE"), so can_idmap_mount's is_idmapped_mnt() check refuses
    // it with EPERM, as it refuses mount_setattr; overlayfs's ovl_fs_type has no
    // FS_ALLOW_IDMAP (EINVAL); OPEN_TREE_NAMESPACE and STATMOUNT_BY_FD are 7.0's, so
    // vfs_open_tree and statmount refuse the unknown flag (EINVAL).
    assert!(attr.supported, "{attr:?}");
    assert!(locked.supported && locked.warning.is_none(), "{locked:?}");
    let fs = &caps.probed_fs;
    let want = [
        (
            Feature::IdmapOverlay,
            "mount_setattr(AT_EMPTY_PATH, MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY)",
        ),
        (
            Feature::IdmapOverlayAttached,
            "mount_setattr(AT_EMPTY_PATH, MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY)",
        ),
        (
            Feature::OpenTreeNamespace,
            "open_tree(OPEN_TREE_NAMESPACE | OPEN_TREE_CLOEXEC)",
        ),
        (
            Feature::StatmountByFd,
            "statmount(STATMOUNT_BY_FD, STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC)",
        ),
    ];
    for (f, call) in want {
        let p = get(&caps, f);
        assert!(!p.supported, "{p:?}");
        assert_eq!(
            refused(p),
            (format!("{call} on {fs}"), Some("EINVAL")),
            "{f}"
        );
    }
}
