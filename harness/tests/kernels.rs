//! Kernels end to end, for real: resolve Debian's bookworm kernel through the private apt,
//! download, verify, extract into a temporary cache, then build an initrd from it. Needs
//! deb.debian.org; everything else here runs offline.

use std::path::{Path, PathBuf};
use std::time::Instant;

use harness::debian::{Apt, Cache, LockDocument};
use harness::events::Discard;
use harness::initramfs::{base_archive, write_initrd};
use harness::kernels::recipe::parse_recipe;
use harness::kernels::{ensure, KernelError, LockFile, LockedKernel, ModuleFeature, RecipeSource};

fn recipe(text: &str) -> harness::kernels::Recipe {
    parse_recipe(Path::new("kernels/test.toml"), text).expect("test recipe parses")
}

const BOOKWORM: &str = "[debian]\nsuite = \"bookworm\"\npackage = \"linux-image-cloud-amd64\"\n";

#[test]
fn unlocked_and_stale_recipes_say_what_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::at(dir.path());
    let r = recipe(BOOKWORM);
    let err = ensure(&r, &LockFile::default(), &cache, &Discard)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`test`") && err.contains("mmx kernels lock"),
        "{err}"
    );

    let mut lock = LockFile::default();
    lock.upsert(LockedKernel {
        name: "test".into(),
        suite: "trixie".into(),
        requested: "linux-image-cloud-amd64".into(),
        release: "x".into(),
        packages: vec![],
    });
    // Lock errors already name the kernel; they are not wrapped again.
    let err = ensure(&r, &lock, &cache, &Discard).unwrap_err();
    assert!(matches!(err, KernelError::StaleLock { .. }), "{err}");
    assert!(err.to_string().contains("bookworm"), "{err}");
}

#[test]
fn bookworm_kernel_fetches_extracts_and_boots_into_an_initrd() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::at(dir.path().join("cache"));
    let r = recipe(BOOKWORM);

    let t = Instant::now();
    let apt = Apt::new(&cache).unwrap();
    apt.update().expect("apt-get update against deb.debian.org");
    let locked = LockedKernel::resolve(&apt, &r).unwrap().unwrap();
    println!("resolved in {:?}: {locked:?}", t.elapsed());
    assert!(locked.release.starts_with("6.1."), "{}", locked.release);
    assert_eq!(
        locked.packages[0].name,
        format!("linux-image-{}", locked.release)
    );
    let mut lock = LockFile::default();
    lock.upsert(locked);

    let cold = ensure(&r, &lock, &cache, &Discard).unwrap();
    println!("cold ensure: {:?}", cold.timings);
    assert!(!cold.timings.cached);
    assert!(cold.vmlinuz.is_file());
    assert!(cold.config.as_ref().is_some_and(|c| c.is_file()));
    let names: Vec<_> = cold.modules.iter().map(|m| m.name.as_str()).collect();
    let pos = |n: &str| {
        names
            .iter()
            .position(|m| *m == n)
            .unwrap_or_else(|| panic!("{n} in {names:?}"))
    };
    // 6.1 builds virtio, the PCI transport and the block driver as modules, ext4 in.
    assert!(pos("virtio") < pos("virtio_ring") && pos("virtio_ring") < pos("virtio_blk"));
    assert!(pos("virtio_pci") < pos("virtio_blk") || pos("virtio_pci") > pos("virtio_ring"));
    assert!(pos("libcrc32c") < pos("xfs") && pos("libcrc32c") < pos("btrfs"));
    pos("overlay");
    assert!(
        cold.builtin.contains(&"ext4".to_string()),
        "{:?}",
        cold.builtin
    );
    assert!(cold.unavailable.is_empty(), "{:?}", cold.unavailable);
    // No CONFIG_MODULE_DECOMPRESS on 6.1: plain .ko.
    assert!(!cold.module_decompress);
    for m in &cold.modules {
        assert!(!m.compressed && m.host_path.is_file(), "{m:?}");
        assert_eq!(
            m.initramfs_path,
            PathBuf::from(format!("/lib/modules/{}.ko", m.name))
        );
    }
    // xfs, btrfs and erofs (its superblock checksum) all depend on it.
    let xfs = cold.modules.iter().find(|m| m.name == "libcrc32c").unwrap();
    assert_eq!(
        xfs.needed_for,
        vec![
            ModuleFeature::Xfs,
            ModuleFeature::Btrfs,
            ModuleFeature::Erofs
        ]
    );

    let t = Instant::now();
    let warm = ensure(&r, &lock, &cache, &Discard).unwrap();
    println!("warm ensure: {:?}", t.elapsed());
    assert!(warm.timings.cached);
    assert_eq!(warm.modules, cold.modules);

    // A `path` recipe over what was just extracted: release read from the bzImage header,
    // modules chosen from a flat directory (which has no modules.builtin, so ext4 is missing).
    let modules_dir = cold.modules[0].host_path.parent().unwrap();
    let path_recipe = recipe(&format!(
        "[path]\nvmlinuz = \"{}\"\nmodules = \"{}\"\n",
        cold.vmlinuz.display(),
        modules_dir.display()
    ));
    let own = ensure(&path_recipe, &LockFile::default(), &cache, &Discard).unwrap();
    assert_eq!(own.release, cold.release);
    assert_eq!(own.unavailable, vec!["ext4".to_string()]);
    assert_eq!(own.modules.len(), cold.modules.len());
    assert!(matches!(path_recipe.source, RecipeSource::Path { .. }));

    // The initrd a boot would use; the test binary stands in for the agent.
    let agent = std::env::current_exe().unwrap();
    let base = base_archive(&agent, &warm, &ModuleFeature::ALL, &cache).unwrap();
    let plan = protocol::Plan {
        schema_version: protocol::SCHEMA_VERSION,
        boot_id: "test".into(),
        scratch_dir: "/scratch".into(),
        scratch_disks: Vec::new(),
        modules: warm
            .modules
            .iter()
            .map(|m| m.initramfs_path.clone())
            .collect(),
        probe: true,
        items: vec![],
        runtimes: vec![],
    };
    let out = dir.path().join("initrd");
    let t = Instant::now();
    let kernel = ensure(&r, &lock, &cache, &Discard).unwrap();
    let base2 = base_archive(&agent, &kernel, &ModuleFeature::ALL, &cache).unwrap();
    write_initrd(&base2, None, &plan, &out).unwrap();
    println!(
        "warm ensure + base_archive + write_initrd: {:?} (base {} bytes)",
        t.elapsed(),
        std::fs::metadata(&base).unwrap().len()
    );
    assert_eq!(base, base2);
    assert_eq!(std::fs::metadata(&out).unwrap().len() % 4, 0);
}

/// Debian drops superseded kernels from its archive, so a lock goes stale by itself. By default
/// mmx resolves the recipe again, says so and records both; a frozen lock fails and names the
/// fix.
#[test]
fn a_lock_the_archive_dropped_is_followed_loudly_or_refused_when_strict() {
    use harness::debian::{Frozen, LockPolicy};
    use harness::kernels::{ensure_with, KernelProvenance};
    let root = harness::agent::workspace_root().join("kernels");
    let r = harness::kernels::load_recipe(&root.join("debian-6.1.toml")).unwrap();
    let real = LockFile::load(&root.join("kernels.lock")).unwrap();
    let mut gone = real
        .get("debian-6.1")
        .expect("debian-6.1 is locked")
        .clone();
    gone.packages[0].version = "6.1.0-0+gone1".into();
    gone.packages[0].sha256 = "0".repeat(64);
    let pinned = gone.packages[0].spec();
    let mut lock = LockFile::default();
    lock.upsert(gone);
    // The shared cache: its apt lists and (usually) the current 6.1 are there already.
    let cache = Cache::from_env().unwrap();

    let err = ensure_with(
        &r,
        &lock,
        &cache,
        LockPolicy::Locked(Frozen::Flag),
        &Discard,
    )
    .unwrap_err();
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(chain.contains("mmx kernels lock"), "{chain}");

    let k = ensure_with(&r, &lock, &cache, LockPolicy::UpdateMissing, &Discard).unwrap();
    assert!(k.release.starts_with("6.1."), "{}", k.release);
    let KernelProvenance::Debian { packages, .. } = &k.provenance else {
        panic!("{:?}", k.provenance)
    };
    assert!(
        packages.iter().all(|p| p.version != "6.1.0-0+gone1"),
        "the provenance records what was really used: {packages:?}"
    );
    let s = k
        .substituted
        .as_ref()
        .expect("the substitution is recorded");
    assert_eq!(s.locked, vec![pinned]);
    assert_eq!(s.used[0], packages[0].spec());
}
