//! Outcomes and their evidence: the closed vocabulary every cell ends in.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::errno;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Ran and every check held.
    Pass,
    /// Ran, but a check showed a wrong result (ids, contents, counts).
    Fail,
    /// The kernel or filesystem lacks a feature the cell needs; evidence says which step failed.
    Unsupported,
    /// Did not finish in its time limit.
    Timeout,
    /// The kernel panicked, oopsed, stalled, or the agent crashed.
    Panic,
    /// Our side broke: a download, QEMU, the disk image, SSH. Never a kernel verdict.
    InfraError,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Pass,
        Outcome::Fail,
        Outcome::Unsupported,
        Outcome::Timeout,
        Outcome::Panic,
        Outcome::InfraError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Unsupported => "unsupported",
            Outcome::Timeout => "timeout",
            Outcome::Panic => "panic",
            Outcome::InfraError => "infra-error",
        }
    }

    /// A one-character symbol for compact tables.
    pub fn symbol(self) -> &'static str {
        match self {
            Outcome::Pass => "✅",
            Outcome::Fail => "❌",
            Outcome::Unsupported => "➖",
            Outcome::Timeout => "⏱️",
            Outcome::Panic => "💥",
            Outcome::InfraError => "⚠️",
        }
    }

    /// Rank for showing one outcome for many (repeats of a cell, the cells of a matrix slot):
    /// the highest wins. A kernel verdict (fail, panic) outranks our own breakage, so an infra
    /// error in one repeat never hides a failure seen in another.
    pub fn severity(self) -> u8 {
        match self {
            Outcome::Pass => 0,
            Outcome::Unsupported => 1,
            Outcome::InfraError => 2,
            Outcome::Timeout => 3,
            Outcome::Fail => 4,
            Outcome::Panic => 5,
        }
    }

    /// Whether this outcome lets a run exit 0. `unsupported` is an answer, not a failure.
    pub fn is_success(self) -> bool {
        match self {
            Outcome::Pass | Outcome::Unsupported => true,
            Outcome::Fail | Outcome::Timeout | Outcome::Panic | Outcome::InfraError => false,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an outcome is what it is: the failing step and, for a syscall, its errno.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The step, written like the call: `mount_setattr(MOUNT_ATTR_IDMAP) on tmpfs`.
    pub step: String,
    /// Raw errno, where a syscall failed. Only the number travels: its name comes from
    /// [`crate::errno`] on whichever side shows it ([`Evidence::errno_name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// Anything else worth a reader's eye: expected vs seen, a console line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Evidence {
    pub fn new(step: impl Into<String>) -> Self {
        Evidence {
            step: step.into(),
            errno: None,
            detail: String::new(),
        }
    }

    pub fn with_errno(mut self, errno: i32) -> Self {
        self.errno = Some(errno);
        self
    }

    /// The errno's symbolic name from the one table (`EINVAL`), where Linux defines one.
    pub fn errno_name(&self) -> Option<&'static str> {
        self.errno.and_then(errno::name)
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.step)?;
        if let Some(n) = self.errno {
            write!(f, ": {}", errno::describe(n))?;
        }
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}
