//! As root, mmx refuses directories someone else could write — the cache, the private apt's
//! directories, `--out` — with exit 2 and a message naming the directory, its owner and its
//! mode, before anything runs. The tests need root (to run as it, and to chown); elsewhere
//! they fail under CI=true and say SKIPPED.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::require;

fn is_root() -> bool {
    require(
        rustix::process::geteuid().is_root(),
        "not root: mmx checks directory owners only as root, and chown needs it",
    )
}

/// A checkout with one kernel recipe and a matrix using it, in a directory only root can write.
fn checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("kernels")).unwrap();
    std::fs::write(
        dir.path().join("kernels/k.toml"),
        "[debian]\nsuite = \"bookworm\"\npackage = \"linux-image-cloud-amd64\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("matrix.toml"),
        "kernels = [\"k\"]\n[[scenarios]]\nkind = \"mounts\"\nlayers = [1]\ncontainers = [2]\n",
    )
    .unwrap();
    dir
}

fn mmx(dir: &Path, cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(args)
        .current_dir(dir)
        .env("MMX_CACHE_DIR", cache)
        .env_remove("GITHUB_STEP_SUMMARY")
        .output()
        .expect("running mmx")
}

fn mkdir(p: PathBuf, mode: u32) -> PathBuf {
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// Exit 2, and stderr names `path`, the owner and the mode.
fn refused(o: &Output, path: &Path, owner_mode: &str) -> String {
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains(owner_mode), "{e}");
    e
}

#[test]
fn a_cache_owned_by_another_user_stops_run_and_kernels_fetch() {
    if !is_root() {
        return;
    }
    let dir = checkout();
    let cache = mkdir(dir.path().join("cache"), 0o755);
    std::os::unix::fs::chown(&cache, Some(12345), None).unwrap();
    let o = mmx(dir.path(), &cache, &["run", "--backend", "qemu"]);
    let e = refused(&o, &cache, "owner uid 12345, mode 0755");
    assert!(
        e.contains("the cache directory") && e.contains("not root's"),
        "{e}"
    );
    // Nothing ran: no run directory, nothing written into the cache.
    assert!(std::fs::read_dir(dir.path().join("runs")).map_or(true, |mut d| d.next().is_none()));
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);

    let o = mmx(dir.path(), &cache, &["kernels", "fetch"]);
    refused(&o, &cache, "owner uid 12345, mode 0755");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
}

#[test]
fn a_group_writable_cache_stops_run() {
    if !is_root() {
        return;
    }
    let dir = checkout();
    let cache = mkdir(dir.path().join("cache"), 0o775);
    let o = mmx(dir.path(), &cache, &["run", "--backend", "qemu"]);
    let e = refused(&o, &cache, "owner uid 0, mode 0775");
    assert!(e.contains("group- or other-writable"), "{e}");
}

#[test]
fn a_cache_below_another_users_directory_is_refused_naming_that_directory() {
    if !is_root() {
        return;
    }
    let dir = checkout();
    let home = mkdir(dir.path().join("home"), 0o755);
    std::os::unix::fs::chown(&home, Some(12345), None).unwrap();
    // Not there yet: mmx would make it, as root, where uid 12345 can swap it.
    let cache = home.join(".cache/mmx");
    let o = mmx(dir.path(), &cache, &["kernels", "fetch"]);
    refused(&o, &home, "owner uid 12345, mode 0755");
    assert!(
        !home.join(".cache").exists(),
        "nothing is made before the refusal"
    );
}

#[test]
fn an_out_directory_owned_by_another_user_stops_run() {
    if !is_root() {
        return;
    }
    let dir = checkout();
    let cache = mkdir(dir.path().join("cache"), 0o755);
    let out = mkdir(dir.path().join("theirs"), 0o755);
    std::os::unix::fs::chown(&out, Some(12345), None).unwrap();
    let out_arg = out.display().to_string();
    let o = mmx(
        dir.path(),
        &cache,
        &["run", "--backend", "qemu", "--out", &out_arg],
    );
    let e = refused(&o, &out, "owner uid 12345, mode 0755");
    assert!(e.contains("--out"), "{e}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

#[test]
fn a_writable_apt_conf_d_stops_apt_before_it_runs() {
    if !is_root() {
        return;
    }
    let dir = checkout();
    let cache = mkdir(dir.path().join("cache"), 0o755);
    // apt reads every file here as configuration, with its sandbox off.
    let conf_d = mkdir(cache.join("apt/etc/apt.conf.d"), 0o777);
    let o = mmx(dir.path(), &cache, &["kernels", "lock"]);
    let e = refused(&o, &conf_d, "owner uid 0, mode 0777");
    assert!(e.contains("apt's directory"), "{e}");
    assert!(!cache.join("apt/state").exists(), "apt never ran");
}
