//! The mount-table scaffolding the lock benchmark's families share: a private mount namespace
//! for a group of threads, a private tmpfs in it, and counting its table. The calls themselves
//! are the agent's `sys` module's (one copy of each, `unsafe` only there).

use std::ffi::CString;
use std::io;
use std::path::Path;

use super::BenchError;
use crate::sys;

/// Run `f` on a new thread that has its own mount namespace, with `/` made recursively private
/// so nothing it mounts propagates to the host and nothing from the host arrives. Threads that
/// `f` spawns inherit the namespace; when the last of them ends the namespace and any mount
/// left in it are gone, so the host's mount table is never touched.
pub fn in_private_mount_ns<T: Send>(
    f: impl FnOnce() -> Result<T, BenchError> + Send,
) -> Result<T, BenchError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            sys::ns::enter_private_mount_ns().map_err(|e| BenchError::from_sys(&e))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(BenchError::Infra(protocol::Evidence::new(
                "lockbench thread in a private mount namespace panicked",
            )))
        })
    })
}

/// Run `body` on a fresh tmpfs at `work/<name>` inside a private mount namespace (see
/// [`in_private_mount_ns`]). One lazy unmount afterwards takes the tmpfs and everything the
/// body mounted on it; whatever is still in the namespace beyond its starting count is counted
/// into the family's `leaked_mounts`.
pub fn on_private_tmpfs(
    work: &Path,
    name: &str,
    body: impl FnOnce(&Path) -> Result<super::Family, BenchError> + Send,
) -> Result<super::Family, BenchError> {
    let base = work.join(name);
    std::fs::create_dir_all(&base)
        .map_err(|e| BenchError::from_io(format!("mkdir {}", base.display()), &e))?;
    let r = in_private_mount_ns(|| {
        let before = count_mounts().map_err(|e| BenchError::from_io("read mountinfo", &e))?;
        mount_tmpfs(&base)?;
        let r = body(&base);
        let detached = detach(&base);
        let after = count_mounts().map_err(|e| BenchError::from_io("read mountinfo", &e))?;
        let mut fam = r?;
        detached?;
        fam.leaked_mounts += after.saturating_sub(before) as u64;
        Ok(fam)
    });
    let _ = std::fs::remove_dir(&base);
    r
}

/// Entries in the calling thread's mount table. `/proc/thread-self`, not `/proc/self`: the
/// latter shows the main thread's namespace, which is the host's.
pub fn count_mounts() -> io::Result<usize> {
    let text = std::fs::read("/proc/thread-self/mountinfo")?;
    Ok(text.iter().filter(|&&b| b == b'\n').count())
}

/// A tmpfs at `target`.
pub fn mount_tmpfs(target: &Path) -> Result<(), BenchError> {
    sys::legacy::mount_tmpfs(target).map_err(|e| BenchError::from_sys(&e))
}

/// `umount2(target, MNT_DETACH)`: takes every mount below `target` with it.
pub fn detach(target: &Path) -> Result<(), BenchError> {
    sys::legacy::umount_detach(target).map_err(|e| BenchError::from_sys(&e))
}

pub fn cstring(p: &Path) -> Result<CString, BenchError> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| {
        BenchError::Infra(protocol::Evidence::new(format!(
            "path with a NUL byte: {}",
            p.display()
        )))
    })
}
