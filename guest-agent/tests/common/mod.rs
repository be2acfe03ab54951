//! Scaffolding shared by the agent's end-to-end tests: the root check that skips loudly, a
//! scratch directory, and the host mount table before and after.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::collections::BTreeSet;
use std::path::PathBuf;

pub const AGENT: &str = env!("CARGO_BIN_EXE_mmx-agent");

/// True as root; otherwise says loudly that `test` is skipped and why.
pub fn is_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    eprintln!(
        "\n*** {test}: SKIPPED (needs root: mount and user namespaces, idmapped mounts, chown) ***\n"
    );
    false
}

/// A fresh, empty scratch directory under $TMPDIR; removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `mmx-<kind>-<name>-<pid>`: `kind` tells which test binary made it.
    pub fn new(kind: &str, name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("mmx-{kind}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("make scratch dir");
        Scratch(p)
    }

    pub fn entries(&self) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(&self.0)
            .expect("read scratch")
            .map(|e| e.expect("dir entry").file_name())
            .collect()
    }

    pub fn assert_empty(&self) {
        let left = self.entries();
        assert!(left.is_empty(), "scratch dir not cleaned: {left:?}");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The host's mount table, one entry per line.
pub fn mount_table() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The table must be the same as before. Other processes on a shared machine may mount things
/// meanwhile, so only mounts that could be ours (below a test scratch dir, overlays, idmapped
/// mounts) count as leaks; everything else that changed is printed.
pub fn assert_no_leak(before: &BTreeSet<String>) {
    let after = mount_table();
    let added: Vec<_> = after.difference(before).collect();
    let ours: Vec<_> = added
        .iter()
        .filter(|l| l.contains("mmx-") || l.contains("overlay") || l.contains("idmapped"))
        .collect();
    assert!(
        ours.is_empty(),
        "mounts leaked into the host table: {ours:#?}"
    );
    if before != &after {
        eprintln!("note: host mount table changed by someone else: +{added:?}");
    }
}
