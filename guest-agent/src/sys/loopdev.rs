//! Loop devices: a read-only block device over an image file, for kernels whose erofs mounts
//! block devices only (file-backed erofs is 6.12+). `LOOP_CTL_GET_FREE` on `/dev/loop-control`,
//! then `LOOP_CONFIGURE` (5.8+: file, flags and size in one call) on `/dev/loop<N>`.
//!
//! Man page: loop(4). The constants and `struct loop_config` are from
//! include/uapi/linux/loop.h (libc does not carry them).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::{SysError, SysResult};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
/// The device detaches itself when its last user (the mount) lets go.
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A configured loop device, held open until the mount has it. Dropping it closes the device;
/// with autoclear, the kernel detaches it once the mount that uses it is gone.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    _dev: OwnedFd,
}

fn io_err<'a>(call: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SysError + 'a {
    move |e| SysError::from_io(|| call.into(), &e).context(format!("path {path:?}"))
}

/// `ioctl(open("/dev/loop-control"), LOOP_CTL_GET_FREE)`, then
/// `ioctl(open("/dev/loop<N>"), LOOP_CONFIGURE, &{ fd = image, READ_ONLY | AUTOCLEAR })`.
/// Another user may take the free device first (`EBUSY`): the caller may try again.
pub fn attach_read_only(image: &Path) -> SysResult<LoopDevice> {
    let control = Path::new("/dev/loop-control");
    let ctl = File::open(control).map_err(io_err("open(/dev/loop-control)", control))?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
    let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return Err(SysError::from_io(|| "ioctl(LOOP_CTL_GET_FREE)".into(), &e));
    }
    let path = PathBuf::from(format!("/dev/loop{n}"));
    let dev = File::options()
        .read(true)
        .open(&path)
        .map_err(io_err("open(/dev/loop<N>, O_RDONLY)", &path))?;
    let file = File::open(image).map_err(io_err("open(image, O_RDONLY)", image))?;
    let fd = u32::try_from(file.as_raw_fd())
        .map_err(|_| SysError::plain("image fd out of range", libc::EBADF))?;
    let config = LoopConfig {
        fd,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: `config` is a live, correctly laid out `struct loop_config` the kernel only reads
    // during the call; the image fd stays open until the call returned (the device keeps its
    // own reference to the file).
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_CONFIGURE as _,
            &config as *const LoopConfig,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(SysError::from_io(
            || "ioctl(LOOP_CONFIGURE, LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR)".into(),
            &e,
        )
        .context(format!("device {path:?}, image {image:?}")));
    }
    Ok(LoopDevice {
        path,
        _dev: dev.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_config_has_the_kernels_layout() {
        // include/uapi/linux/loop.h: loop_info64 is 232 bytes, loop_config 304.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
