//! The agent's system calls, grouped by family. This module is the only place in the agent with
//! `unsafe`; everything above it speaks in safe wrappers whose errors name the failed call with
//! its inputs and keep the raw errno, so a probe or a strategy can turn a failure straight into
//! `protocol::Evidence`.
//!
//! Families: [`mount_api`] (open_tree, mount_setattr, move_mount, fsopen/fsconfig/fsmount),
//! [`legacy`] (mount(2), umount2), [`table`] (listmount/statmount), [`ns`] (mount and user
//! namespaces), [`fanotify`] (mount events), [`signal`] (SIGINT/SIGTERM flag).

use std::fmt;

pub mod fanotify;
pub mod legacy;
pub mod mount_api;
pub mod ns;
pub mod signal;
pub mod table;

/// A failed system call: the call as written in C, with its inputs, and the errno it returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SysError {
    /// The call, e.g. `mount_setattr(fd, "", AT_EMPTY_PATH, {MOUNT_ATTR_IDMAP, userns_fd})`.
    pub call: String,
    /// Raw errno.
    pub errno: i32,
}

impl SysError {
    /// Build the error lazily: the call text is only formatted when the call failed, so the hot
    /// path of a strategy never allocates for it.
    pub(crate) fn new(call: impl FnOnce() -> String, errno: rustix::io::Errno) -> Self {
        SysError {
            call: call(),
            errno: errno.raw_os_error(),
        }
    }

    pub(crate) fn from_io(call: impl FnOnce() -> String, e: &std::io::Error) -> Self {
        SysError {
            call: call(),
            errno: e.raw_os_error().unwrap_or(0),
        }
    }

    /// The symbolic errno name, or the number.
    pub fn errno_name(&self) -> String {
        protocol::errno_name(self.errno)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("errno {}", self.errno))
    }

    /// This failure as protocol evidence (step = the call, errno kept).
    pub fn evidence(&self) -> protocol::Evidence {
        protocol::Evidence::new(self.call.clone()).with_errno(self.errno)
    }
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = std::io::Error::from_raw_os_error(self.errno);
        write!(f, "{}: {} ({text})", self.call, self.errno_name())
    }
}

/// Result of a wrapped system call.
pub type SysResult<T> = Result<T, SysError>;
