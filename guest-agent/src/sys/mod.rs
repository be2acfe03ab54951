//! The agent's system calls, grouped by family. This module is the only place in the agent with
//! `unsafe`; everything above it speaks in safe wrappers whose errors name the failed call with
//! its inputs and keep the raw errno, so a probe or a strategy can turn a failure straight into
//! `protocol::Evidence`.
//!
//! Families: [`mount_api`] (open_tree, mount_setattr, move_mount, fsopen/fsconfig/fsmount),
//! [`open_tree_attr`] (open_tree_attr, OPEN_TREE_NAMESPACE), [`legacy`] (mount(2), umount2),
//! [`loopdev`] (read-only loop devices over image files), [`table`] (listmount/statmount), [`ns`] (mount
//! namespaces), [`userns`] (user namespaces and their helper processes), [`fanotify`] (mount events), [`signal`] (SIGINT/SIGTERM flag),
//! [`process`] (children that die with the thread that started them),
//! [`cspin`] (the lock benchmark's C reference loop), [`watch`] (what a mount-table watcher polls
//! and reads).

use std::fmt;

pub mod cspin;
pub mod fanotify;
pub mod kmsg;
pub mod legacy;
pub mod loopdev;
pub mod mount_api;
pub mod ns;
pub mod open_tree_attr;
pub mod process;
pub mod signal;
pub mod table;
pub mod userns;
pub mod watch;

/// A failed system call. `call` is stable: the call with its meaningful constant inputs (flags,
/// attribute and key names), never fd numbers, pids or paths with run-specific parts, so the
/// same failure reads the same in every cell, run and kernel and reports can group it. The
/// variable inputs (which path, which layer, which fd) go to `context`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SysError {
    /// The call, e.g. `mount_setattr(AT_EMPTY_PATH, MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY)`.
    pub call: String,
    /// Raw errno; 0 where no syscall failed (a wrong answer, a helper that went away): the agent
    /// never makes one up.
    pub errno: i32,
    /// Variable inputs, e.g. `path "/var/tmp/x/mmx-mounts-812-0/snapshots/3/fs"`; may be empty.
    pub context: String,
}

impl SysError {
    /// Build the error lazily: the call text is only formatted when the call failed, so the hot
    /// path of a strategy never allocates for it.
    pub(crate) fn new(call: impl FnOnce() -> String, errno: rustix::io::Errno) -> Self {
        SysError::plain(call(), errno.raw_os_error())
    }

    pub(crate) fn from_io(call: impl FnOnce() -> String, e: &std::io::Error) -> Self {
        SysError::plain(call(), e.raw_os_error().unwrap_or(0))
    }

    /// A failure with a stable call text and no context yet.
    pub(crate) fn plain(call: impl Into<String>, errno: i32) -> Self {
        SysError {
            call: call.into(),
            errno,
            context: String::new(),
        }
    }

    /// Add a variable detail (appended, `; `-separated, to what is there).
    pub(crate) fn context(mut self, more: impl AsRef<str>) -> Self {
        let more = more.as_ref();
        if !more.is_empty() {
            if !self.context.is_empty() {
                self.context.push_str("; ");
            }
            self.context.push_str(more);
        }
        self
    }

    /// The symbolic errno name, or the number.
    pub fn errno_name(&self) -> String {
        protocol::errno::describe(self.errno)
    }

    /// This failure as protocol evidence: step = the stable call, detail = the context, errno
    /// kept (none where it is 0).
    pub fn evidence(&self) -> protocol::Evidence {
        let ev = protocol::Evidence::new(self.call.clone()).with_detail(self.context.clone());
        if self.errno == 0 {
            ev
        } else {
            ev.with_errno(self.errno)
        }
    }
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.call)?;
        if !self.context.is_empty() {
            write!(f, " [{}]", self.context)?;
        }
        if self.errno != 0 {
            let text = std::io::Error::from_raw_os_error(self.errno);
            write!(f, ": {} ({text})", self.errno_name())?;
        }
        Ok(())
    }
}

/// Result of a wrapped system call.
pub type SysResult<T> = Result<T, SysError>;
