//! The few system calls the lock benchmark makes beyond rustix's safe wrappers: a private mount
//! namespace for a group of threads, counting the mount table, and `listmount(2)`.
//! `unsafe` in this family lives here only.

use std::ffi::CString;
use std::io;
use std::path::Path;

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::thread::UnshareFlags;

use super::BenchError;

/// Run `f` on a new thread that has its own mount namespace, with `/` made recursively private
/// so nothing it mounts propagates to the host and nothing from the host arrives. Threads that
/// `f` spawns inherit the namespace; when the last of them ends the namespace and any mount
/// left in it are gone, so the host's mount table is never touched.
pub fn in_private_mount_ns<T: Send>(
    f: impl FnOnce() -> Result<T, BenchError> + Send,
) -> Result<T, BenchError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: only CLONE_NEWNS (which implies an unshared fs_struct for this thread);
            // the file descriptor table stays shared, which is what unshare_unsafe warns about.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }
                .map_err(|e| BenchError::from_io("unshare(CLONE_NEWNS)", &e.into()))?;
            rustix::mount::mount_change(
                "/",
                MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
            )
            .map_err(|e| {
                BenchError::from_io("mount(NULL, \"/\", NULL, MS_REC|MS_PRIVATE)", &e.into())
            })?;
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

/// `mount("tmpfs", target, "tmpfs", 0, "mode=0755")`.
pub fn mount_tmpfs(target: &Path) -> Result<(), BenchError> {
    rustix::mount::mount("tmpfs", target, "tmpfs", MountFlags::empty(), c"mode=0755")
        .map_err(|e| BenchError::from_io(format!("mount(tmpfs, {})", target.display()), &e.into()))
}

/// `umount2(target, MNT_DETACH)`: takes every mount below `target` with it.
pub fn detach(target: &Path) -> Result<(), BenchError> {
    rustix::mount::unmount(target, UnmountFlags::DETACH).map_err(|e| {
        BenchError::from_io(
            format!("umount2({}, MNT_DETACH)", target.display()),
            &e.into(),
        )
    })
}

pub fn cstring(p: &Path) -> Result<CString, BenchError> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| {
        BenchError::Infra(protocol::Evidence::new(format!(
            "path with a NUL byte: {}",
            p.display()
        )))
    })
}

/// listmount(2): 458 in the unified syscall table every architecture has used since 5.1; the
/// libc crate does not name it yet.
const SYS_LISTMOUNT: libc::c_long = 458;
/// `LSMT_ROOT`: list from the namespace's root.
const LSMT_ROOT: u64 = u64::MAX;

/// `struct mnt_id_req`, first version (MNT_ID_REQ_SIZE_VER0 = 24 bytes).
#[repr(C)]
struct MntIdReq {
    size: u32,
    spare: u32,
    mnt_id: u64,
    param: u64,
}

/// Every mount id in the calling thread's namespace through listmount(2), in pages of
/// `buf.len()`. Returns how many there were. ENOSYS on kernels before 6.8.
pub fn listmount_all(buf: &mut [u64]) -> io::Result<usize> {
    let mut total = 0;
    let mut last = 0u64;
    loop {
        let req = MntIdReq {
            size: std::mem::size_of::<MntIdReq>() as u32,
            spare: 0,
            mnt_id: LSMT_ROOT,
            param: last,
        };
        // SAFETY: `req` is a valid mnt_id_req of the size it states; the kernel writes at most
        // `buf.len()` u64s into `buf`.
        let n = unsafe {
            libc::syscall(
                SYS_LISTMOUNT,
                &req as *const MntIdReq,
                buf.as_mut_ptr(),
                buf.len(),
                0u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        total += n;
        if n < buf.len() || n == 0 {
            return Ok(total);
        }
        last = buf[n - 1];
    }
}
