//! PID 1 in an mmx guest.
//!
//! The kernel unpacks the initramfs (the static agent, the modules this boot needs, `/plan.json`)
//! and runs us as `/init`. We set the guest up, run the plan with results on the second serial
//! port (`/dev/ttyS1`, an 8250 that needs no module on any kernel mmx boots), and power off. The
//! console (`/dev/console` = ttyS0) only carries the kernel log and our own diagnostics, so a
//! panic or an oops can never corrupt a result line.
//!
//! Nothing here may hang the guest: every failure prints one line naming the failed call and
//! powers off, and a panic that escapes the plan is caught at the top and does the same. The
//! host's watchdogs are the last resort, not the plan.

use std::ffi::CStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use protocol::{Filesystem, Plan};
use rustix::mount::MountFlags;

/// Printed on the console as soon as PID 1 runs: the host's "agent ready" mark, comparable with
/// a guest whose `/init` only prints a line.
pub const READY_MARK: &str = "mmx-agent: init started";

/// Where the harness puts the plan in the initramfs.
const PLAN_PATH: &str = "/plan.json";

/// The results channel: the second 8250 serial port.
const RESULTS_TTY: &str = "/dev/ttyS1";

/// Where the kernel reads which program answers its `request_module` calls.
const MODPROBE_SYSCTL: &str = "/proc/sys/kernel/modprobe";

/// How long to wait for the scratch disk's device node after the block driver loaded:
/// virtio probing and devtmpfs node creation can lag the module's init under TCG.
const DISK_WAIT: Duration = Duration::from_secs(30);

/// One pseudo-filesystem PID 1 mounts before anything else.
struct EarlyMount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MountFlags,
}

/// The guest's mounts, handled by one loop in [`mount_early`]. The initramfs root is already
/// a writable tmpfs/ramfs, so nothing else is needed.
const EARLY_MOUNTS: &[EarlyMount] = &[
    EarlyMount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
    },
    EarlyMount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
    },
    EarlyMount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MountFlags::NOSUID,
    },
];

/// Errors of guest setup, each reading like the call that failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("mkdir({path}) failed: {source}")]
    Mkdir {
        path: String,
        source: std::io::Error,
    },
    #[error("mount({source_}, {target}, {fstype}, {flags:?}) failed: {errno}")]
    Mount {
        source_: String,
        target: String,
        fstype: String,
        flags: MountFlags,
        errno: rustix::io::Errno,
    },
    #[error("reading {path} failed: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{PLAN_PATH}: {0}")]
    Plan(#[from] protocol::ProtocolError),
    #[error("open({path}) failed: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Module(#[from] crate::modprobe::LoadError),
    #[error("writing {path} failed: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("scratch disk {path} did not appear within {secs} s")]
    NoDisk { path: String, secs: u64 },
    #[error("setting {path} raw (tcgetattr/tcsetattr) failed: {errno}")]
    Termios {
        path: String,
        errno: rustix::io::Errno,
    },
}

/// Set the guest up, run `/plan.json`, power off. Never returns.
///
/// A panic that escapes the plan (the plan catches its items' own) is caught here, reported
/// on the console in the line the host watches for, and the guest powers off: PID 1 exiting
/// would panic the kernel and hide the message behind "Attempted to kill init".
pub fn main() -> ! {
    console(READY_MARK);
    match std::panic::catch_unwind(run) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => console(&format!("mmx-agent: init failed: {e:#}")),
        Err(p) => console(&format!("mmx-agent: panicked: {}", panic_text(&*p))),
    }
    power_off()
}

/// The message of a caught panic (a `&str` or `String` payload; anything else is unnamed).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

fn run() -> anyhow::Result<()> {
    mount_early()?;
    // The plan's marks must all reach the console (two per item); a refusal only costs marks.
    if let Err(e) = crate::sys::kmsg::allow_all_records() {
        console(&format!(
            "mmx-agent: printk_devkmsg stays rate-limited: {e}"
        ));
    }
    let text = std::fs::read_to_string(PLAN_PATH).map_err(|source| InitError::Read {
        path: PLAN_PATH.into(),
        source,
    })?;
    let plan = protocol::parse_plan(&text).map_err(InitError::Plan)?;
    answer_module_requests()?;
    load_modules(&plan.modules)?;
    mount_scratch(&plan)?;
    let mut results = open_results()?;
    let outcome = execute(&plan, &mut results);
    // Results must leave the UART before power-off cuts it: a buffered `Done` would be lost.
    let _ = results.flush();
    let _ = rustix::termios::tcdrain(results.as_fd());
    outcome
}

/// Mount /proc, /sys and /dev from [`EARLY_MOUNTS`]. `EBUSY` means the kernel already mounted
/// it (`CONFIG_DEVTMPFS_MOUNT` does /dev for some configurations): fine.
fn mount_early() -> Result<(), InitError> {
    for m in EARLY_MOUNTS {
        let EarlyMount {
            source,
            target,
            fstype,
            flags,
        } = m;
        mkdir_p(Path::new(target))?;
        match rustix::mount::mount(*source, *target, *fstype, *flags, None::<&CStr>) {
            Ok(()) | Err(rustix::io::Errno::BUSY) => {}
            Err(errno) => {
                return Err(InitError::Mount {
                    source_: (*source).into(),
                    target: (*target).into(),
                    fstype: (*fstype).into(),
                    flags: *flags,
                    errno,
                })
            }
        }
    }
    Ok(())
}

fn mkdir_p(path: &Path) -> Result<(), InitError> {
    std::fs::create_dir_all(path).map_err(|source| InitError::Mkdir {
        path: path.display().to_string(),
        source,
    })
}

/// Make the agent the kernel's modprobe (through the link the harness put at
/// [`protocol::modules::MODPROBE_PATH`]): modules that load their helpers on request (ext4 and
/// btrfs asking for `crypto-crc32c` on Debian's generic kernels) find them in the initramfs.
/// Before the modules load, so their own requests are answered. A kernel without module
/// support has no such file and needs none.
fn answer_module_requests() -> Result<(), InitError> {
    let path = protocol::modules::MODPROBE_PATH;
    match std::fs::OpenOptions::new()
        .write(true)
        .open(MODPROBE_SYSCTL)
    {
        Ok(mut f) => f.write_all(format!("{path}\n").as_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|source| InitError::Write {
        path: MODPROBE_SYSCTL.into(),
        source,
    })
}

/// Load the plan's modules front to back (the harness ordered them dependencies first).
/// `.ko.xz` files go to the kernel compressed; one already loaded or built in is fine.
fn load_modules(modules: &[std::path::PathBuf]) -> Result<(), InitError> {
    for path in modules {
        crate::modprobe::load_file(None, path)?;
    }
    Ok(())
}

/// Mount every scratch disk of the plan at its directory (`scratch_dir/<filesystem>`): a block
/// device, or a fresh tmpfs for tmpfs (no disk at all). A plan without disks uses `scratch_dir`
/// as it is. Disks are mounted in the plan's order, which is the order of their devices.
fn mount_scratch(plan: &Plan) -> Result<(), InitError> {
    mkdir_p(&plan.scratch_dir)?;
    for disk in &plan.scratch_disks {
        let dir = plan.disk_dir(disk.filesystem);
        mkdir_p(&dir)?;
        mount_disk(disk, &dir)?;
    }
    Ok(())
}

fn mount_disk(disk: &protocol::ScratchDisk, dir: &Path) -> Result<(), InitError> {
    let target = dir.display().to_string();
    let (source, fstype) = match disk.filesystem {
        Filesystem::Tmpfs => ("tmpfs".to_string(), "tmpfs"),
        // erofs layers are images on an ext4 disk: the disk mounts as its carrier.
        fs @ (Filesystem::Ext4 | Filesystem::Xfs | Filesystem::Btrfs | Filesystem::Erofs) => {
            wait_for(&disk.device)?;
            (disk.device.display().to_string(), fs.carrier().as_str())
        }
    };
    let flags = MountFlags::empty();
    rustix::mount::mount(
        source.as_str(),
        target.as_str(),
        fstype,
        flags,
        None::<&CStr>,
    )
    .map_err(|errno| InitError::Mount {
        source_: source.clone(),
        target: target.clone(),
        fstype: fstype.into(),
        flags,
        errno,
    })
}

fn wait_for(device: &Path) -> Result<(), InitError> {
    let start = Instant::now();
    while !device.exists() {
        if start.elapsed() > DISK_WAIT {
            return Err(InitError::NoDisk {
                path: device.display().to_string(),
                secs: DISK_WAIT.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Open the results port and make it raw: no `\n` → `\r\n`, no echo, 8 bits clean.
fn open_results() -> Result<File, InitError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(RESULTS_TTY)
        .map_err(|source| InitError::Open {
            path: RESULTS_TTY.into(),
            source,
        })?;
    let termios_err = |errno| InitError::Termios {
        path: RESULTS_TTY.into(),
        errno,
    };
    let mut t = rustix::termios::tcgetattr(&file).map_err(termios_err)?;
    t.make_raw();
    // QEMU's UART does not pace by baud rate; the speed only has to be one the driver accepts.
    let _ = t.set_speed(115_200);
    rustix::termios::tcsetattr(&file, rustix::termios::OptionalActions::Now, &t)
        .map_err(termios_err)?;
    Ok(file)
}

/// Run the plan with results on `out`.
fn execute(plan: &Plan, out: &mut dyn Write) -> anyhow::Result<()> {
    crate::plan::execute(plan, out)
}

/// One line on the console (PID 1's stderr is /dev/console).
fn console(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
}

/// Flush filesystems and power the guest off. With `-no-reboot` QEMU exits on it either way; if
/// the call itself fails, exiting makes the kernel panic ("Attempted to kill init"), which
/// `panic=-1` + `-no-reboot` also turn into a QEMU exit.
fn power_off() -> ! {
    rustix::fs::sync();
    if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::PowerOff) {
        console(&format!("mmx-agent: reboot(RB_POWER_OFF) failed: {e}"));
    }
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_like_the_failed_call() {
        let e = InitError::Mount {
            source_: "/dev/vda".into(),
            target: "/scratch".into(),
            fstype: "xfs".into(),
            flags: MountFlags::empty(),
            errno: rustix::io::Errno::NODEV,
        };
        let s = e.to_string();
        assert!(s.starts_with("mount(/dev/vda, /scratch, xfs,"), "{s}");
        let e = InitError::from(crate::modprobe::LoadError::FinitModule {
            path: "/lib/modules/xfs.ko.xz".into(),
            flags: 4,
            errno: rustix::io::Errno::NOEXEC,
        });
        assert!(e
            .to_string()
            .starts_with("finit_module(/lib/modules/xfs.ko.xz, \"\", 4)"));
    }

    #[test]
    fn early_mounts_cover_proc_sys_dev() {
        let targets: Vec<_> = EARLY_MOUNTS.iter().map(|m| m.target).collect();
        assert_eq!(targets, ["/proc", "/sys", "/dev"]);
    }
}
