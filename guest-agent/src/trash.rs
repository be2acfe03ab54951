//! Removing a stopped run's files after the agent has answered.
//!
//! A mounts run lays out C·(L+4) directories; removing 17,600 of them took 5–9 s on a loaded
//! 2-core machine whose root is ext4 mounted with `discard`, which broke the promise that a
//! stopped agent exits within seconds. So when the process is going down (a stop signal or stdin
//! EOF), a run's directory is not removed on the exit path: it is renamed to a trash name in the
//! same scratch directory (one `rename`, constant time, after its mounts were detached), and the
//! agent, once it has printed its answer, starts a detached reaper — itself, re-executed as
//! `mmx-agent reap-trash DIR…`, in its own process group with no stdio — that removes it.
//! Whatever a killed reaper leaves, the next run on that scratch directory removes first
//! ([`sweep`]), before its clock starts.
//!
//! Only a stop goes this way. A run that ends normally, or is cancelled by a plan item's timeout,
//! removes its files before the next item starts, so no background deletion ever overlaps a
//! measurement.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use crate::sys;

/// Trash names start with this, inside the scratch directory that held the run.
pub const PREFIX: &str = ".mmx-trash-";

/// Trash waiting for the reaper, in the order it was made.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static SEQ: AtomicU32 = AtomicU32::new(0);

/// Get rid of a run's directory (its mounts already detached): at once, unless the process is
/// stopping, in which case it becomes trash for [`reap_detached`].
pub fn discard(dir: &Path) {
    if sys::signal::stop_requested() {
        if let Some(trash) = rename_to_trash(dir) {
            if let Ok(mut pending) = PENDING.lock() {
                pending.push(trash);
                return;
            }
            remove(&trash);
            return;
        }
    }
    remove(dir);
}

/// `dir` renamed to `<parent>/.mmx-trash-<pid>-<n>`; None when the rename fails (then the caller
/// removes it in place).
fn rename_to_trash(dir: &Path) -> Option<PathBuf> {
    let parent = dir.parent()?;
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let trash = parent.join(format!("{PREFIX}{}-{n}", std::process::id()));
    std::fs::rename(dir, &trash).ok().map(|()| trash)
}

/// Start the detached reaper for the trash made so far, if any. Called once the answer is out,
/// on the way to exit. If the reaper cannot start, the trash is removed here after all: late is
/// better than left.
pub fn reap_detached() {
    let pending = match PENDING.lock() {
        Ok(mut p) => std::mem::take(&mut *p),
        Err(_) => return,
    };
    if pending.is_empty() {
        return;
    }
    let spawned = Command::new("/proc/self/exe")
        .arg("reap-trash")
        .args(&pending)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C or a `kill -- -PGID` meant for the agent spares it.
        .process_group(0)
        .spawn();
    if spawned.is_err() {
        pending.iter().for_each(|p| remove(p));
    }
}

/// The reaper's work: remove each trash directory. Refuses anything that is not trash, so a
/// wrong argument can never delete a user's files.
pub fn reap(dirs: &[PathBuf]) {
    for d in dirs {
        if is_trash(d) {
            remove(d);
        }
    }
}

/// Remove trash that an earlier agent left in `scratch` (its reaper was killed, or the machine
/// stopped). Trash of a live process is left to that process's reaper.
pub fn sweep(scratch: &Path) {
    let Ok(entries) = std::fs::read_dir(scratch) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(owner) = trash_owner(&path) else {
            continue;
        };
        if owner != std::process::id() && !process_alive(owner) {
            remove(&path);
        }
    }
}

fn is_trash(p: &Path) -> bool {
    trash_owner(p).is_some()
}

/// The pid in a trash name `.mmx-trash-<pid>-<n>`.
fn trash_owner(p: &Path) -> Option<u32> {
    let name = p.file_name()?.to_str()?;
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Best effort: a directory that cannot be removed now is swept by a later run.
fn remove(p: &Path) {
    let _ = std::fs::remove_dir_all(p);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trash_names_carry_their_owner() {
        assert_eq!(trash_owner(Path::new("/s/.mmx-trash-42-0")), Some(42));
        assert_eq!(trash_owner(Path::new("/s/.mmx-trash-42-x")), None);
        assert_eq!(trash_owner(Path::new("/s/mmx-mounts-42-0")), None);
        assert_eq!(trash_owner(Path::new("/s/.mmx-trash-")), None);
    }

    #[test]
    fn reap_touches_only_trash_and_sweep_only_the_dead() {
        let base = std::env::temp_dir().join(format!("mmx-trash-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let keep = base.join("user-files");
        // pid 0 never names a live process in /proc; our own trash is left to our reaper.
        let dead = base.join(format!("{PREFIX}0-1"));
        let ours = base.join(format!("{PREFIX}{}-7", std::process::id()));
        for d in [&keep, &dead, &ours] {
            std::fs::create_dir_all(d.join("a/b")).unwrap();
        }
        reap(std::slice::from_ref(&keep));
        assert!(keep.exists(), "reap refuses what is not trash");
        sweep(&base);
        assert!(!dead.exists(), "a dead owner's trash is swept");
        assert!(ours.exists(), "a live owner's trash is its reaper's");
        reap(std::slice::from_ref(&ours));
        assert!(!ours.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
