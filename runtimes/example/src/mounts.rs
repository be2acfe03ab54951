//! The mount work: a user namespace from the job's id maps, one idmapped mount per layer below
//! the working directory (`ovl-<job>/<i>`), the overlay on the target, then the per-layer mounts
//! detached again. On any failure what the job attached is detached before answering.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use protocol::runtime::{IdMap, Job, Pass};
use rustix::io::Errno;
use rustix::mount::{
    move_mount, open_tree, MountFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};

use crate::fault::{Fault, Step};

/// First argument of the child that holds a fresh user namespace open (see [`userns`]).
pub const USERNS_HOLDER_ARG: &str = "__userns-holder";

/// Why a job failed: the contract's `step`, `errno` and `message`.
pub struct Failure {
    pub step: String,
    pub errno: Option<i32>,
    pub message: String,
}

impl Failure {
    fn sys(step: impl Into<String>, e: Errno) -> Failure {
        let step = step.into();
        Failure {
            message: format!("{step}: {e}"),
            step,
            errno: Some(e.raw_os_error()),
        }
    }

    fn io(step: impl Into<String>, e: &std::io::Error) -> Failure {
        let step = step.into();
        Failure {
            message: format!("{step}: {e}"),
            step,
            errno: e.raw_os_error(),
        }
    }
}

/// Run one job.
pub fn run(job: &Job, fault: &Fault) -> Result<(), Failure> {
    match job {
        Job::Mount {
            id,
            layers,
            pass,
            target,
            uidmap,
            gidmap,
        } => mount(*id, layers, pass, target, uidmap, gidmap, fault),
        Job::Unmount { target, .. } => {
            inject(fault, Step::Unmount)?;
            if matches!(fault, Fault::Leak) {
                return Ok(());
            }
            unmount(target)
        }
    }
}

/// Act out a fault that strikes at `step`.
fn inject(fault: &Fault, step: Step) -> Result<(), Failure> {
    match fault.at(step) {
        Some(Fault::Error { errno, .. }) => Err(Failure {
            step: format!("{step} (injected)"),
            errno: Some(*errno),
            message: format!("fault injected at {step}: errno {errno}"),
        }),
        Some(Fault::Crash(_)) => {
            eprintln!("mmx-example-runtime: crashing at {step} (injected)");
            std::process::abort()
        }
        Some(Fault::Hang(_)) => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        _ => Ok(()),
    }
}

fn mount(
    id: u64,
    layers: &[PathBuf],
    pass: &Pass,
    target: &Path,
    uidmap: &IdMap,
    gidmap: &IdMap,
    fault: &Fault,
) -> Result<(), Failure> {
    if layers.is_empty() {
        return Err(Failure {
            step: "job".into(),
            errno: None,
            message: "a mount job needs at least one layer".into(),
        });
    }
    inject(fault, Step::Userns)?;
    let userns = userns(uidmap, gidmap)?;
    let dir = PathBuf::from(format!("ovl-{id}"));
    fs::create_dir(&dir).map_err(|e| Failure::io(format!("mkdir {}", dir.display()), &e))?;
    let mut attached: Vec<PathBuf> = Vec::with_capacity(layers.len());
    let result = (|| {
        inject(fault, Step::Idmap)?;
        for (i, layer) in layers.iter().enumerate() {
            let at = dir.join(i.to_string());
            fs::create_dir(&at).map_err(|e| Failure::io(format!("mkdir {}", at.display()), &e))?;
            idmap(layer, &at, userns.as_fd())?;
            attached.push(at);
        }
        inject(fault, Step::Overlay)?;
        overlay(&attached, pass, target)
    })();
    // The overlay holds its layers; the per-layer mounts are not needed any more (and on
    // failure must go).
    for at in attached.iter().rev() {
        let _ = umount_retry(at, UnmountFlags::empty())
            .or_else(|_| rustix::mount::unmount(at, UnmountFlags::DETACH));
    }
    let _ = fs::remove_dir_all(&dir);
    result
}

/// A user namespace with the job's maps: a child of ours unshares one and waits; we write its
/// maps, keep a handle on the namespace, and let the child go.
fn userns(uidmap: &IdMap, gidmap: &IdMap) -> Result<OwnedFd, Failure> {
    let step = "userns";
    let mut child = Command::new("/proc/self/exe")
        .arg(USERNS_HOLDER_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::io(format!("{step}: spawn the holder"), &e))?;
    let result = (|| {
        let mut ready = [0u8; 1];
        child
            .stdout
            .as_mut()
            .map_or(Ok(0), |o| o.read(&mut ready))
            .ok()
            .filter(|n| *n == 1)
            .ok_or_else(|| Failure {
                step: format!("{step}: unshare(CLONE_NEWUSER) in the holder"),
                errno: None,
                message: "the holder exited before unsharing (see its stderr)".into(),
            })?;
        let proc = PathBuf::from(format!("/proc/{}", child.id()));
        for (file, map) in [("uid_map", uidmap), ("gid_map", gidmap)] {
            let path = proc.join(file);
            fs::write(&path, map.proc_map())
                .map_err(|e| Failure::io(format!("{step}: write {}", path.display()), &e))?;
        }
        let ns = proc.join("ns/user");
        File::open(&ns)
            .map(OwnedFd::from)
            .map_err(|e| Failure::io(format!("{step}: open {}", ns.display()), &e))
    })();
    release(child);
    result
}

fn release(mut child: Child) {
    drop(child.stdin.take());
    let _ = child.wait();
}

/// The child's side: unshare a user namespace, say so, wait for stdin to close.
pub fn userns_holder() -> ExitCode {
    // SAFETY: CLONE_NEWUSER unshares no file descriptor table (the reason rustix marks
    // unshare unsafe), and this process is single-threaded as the kernel requires.
    if let Err(e) = unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER) }
    {
        eprintln!("mmx-example-runtime: unshare(CLONE_NEWUSER): {e}");
        return ExitCode::from(1);
    }
    let mut out = std::io::stdout();
    if out.write_all(b"1").and_then(|()| out.flush()).is_err() {
        return ExitCode::from(1);
    }
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    ExitCode::SUCCESS
}

/// open_tree(OPEN_TREE_CLONE) of `layer`, mount_setattr(IDMAP | RDONLY), move_mount to `at`.
fn idmap(layer: &Path, at: &Path, userns: BorrowedFd<'_>) -> Result<(), Failure> {
    let tree = open_tree(
        rustix::fs::CWD,
        layer,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| Failure::sys(format!("open_tree(OPEN_TREE_CLONE) {}", layer.display()), e))?;
    mount_setattr_idmap(tree.as_fd(), userns).map_err(|e| {
        Failure::sys(
            format!("mount_setattr(MOUNT_ATTR_IDMAP) {}", layer.display()),
            e,
        )
    })?;
    move_mount(
        tree.as_fd(),
        c"",
        rustix::fs::CWD,
        at,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| Failure::sys(format!("move_mount {}", at.display()), e))
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH, {MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY, userns})`;
/// rustix has no wrapper for it.
fn mount_setattr_idmap(fd: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> Result<(), Errno> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP | libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: the path is a NUL-terminated empty string and `attr` a live, correctly sized
    // `struct mount_attr`; the kernel reads both only during the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO))
    }
}

/// The overlay on `target` over the idmapped layers (top first, relative to the working
/// directory so the options stay short). overlay refuses a single lower dir without an upper,
/// so a one-layer view is that layer's idmapped mount moved onto the target instead.
fn overlay(attached: &[PathBuf], pass: &Pass, target: &Path) -> Result<(), Failure> {
    let lower: Vec<String> = attached.iter().map(|p| p.display().to_string()).collect();
    let (data, flags) = match pass {
        Pass::View if attached.len() == 1 => {
            return rustix::mount::mount_move(&attached[0], target)
                .map_err(|e| Failure::sys(format!("mount(MS_MOVE) {}", target.display()), e));
        }
        Pass::View => (format!("lowerdir={}", lower.join(":")), MountFlags::RDONLY),
        Pass::Rootfs { upper, work } => (
            format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.join(":"),
                upper.display(),
                work.display()
            ),
            MountFlags::empty(),
        ),
    };
    let data = CString::new(data).map_err(|_| Failure {
        step: "overlay options".into(),
        errno: None,
        message: "a path contains a NUL byte".into(),
    })?;
    rustix::mount::mount("overlay", target, "overlay", flags, data.as_c_str())
        .map_err(|e| Failure::sys(format!("mount(overlay) {}", target.display()), e))
}

/// umount2(target, 0) until nothing is left there; EINVAL (not a mount point) ends it.
fn unmount(target: &Path) -> Result<(), Failure> {
    loop {
        match umount_retry(target, UnmountFlags::empty()) {
            Ok(()) => continue,
            Err(Errno::INVAL) => return Ok(()),
            Err(e) => return Err(Failure::sys(format!("umount2 {}", target.display()), e)),
        }
    }
}

/// umount2, retried for a while on EBUSY (a concurrent path walk holds a mount for a moment).
fn umount_retry(target: &Path, flags: UnmountFlags) -> Result<(), Errno> {
    for _ in 0..50 {
        match rustix::mount::unmount(target, flags) {
            Err(Errno::BUSY) => std::thread::sleep(Duration::from_millis(10)),
            r => return r,
        }
    }
    rustix::mount::unmount(target, flags)
}
