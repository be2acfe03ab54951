//! Kernel splats that did not kill the boot — `WARN`, lockdep, KASAN, UBSAN, refcount, a
//! survivable `BUG:` — as run.json keeps them: the kind, the plan stretch it printed during, and
//! its first lines, bounded here (the one place) so a splat storm costs a boot a few KiB.

use protocol::kmsg::{Phase, SplatKind};
use serde::{Deserialize, Serialize};

/// The lines of one splat that are kept: the naming line and the stack's top frames.
pub const SPLAT_LINES_KEPT: usize = 12;
/// The characters one kept line may take (the kernel's lines are well under this).
pub const SPLAT_LINE_CHARS: usize = 240;
/// The splats one boot keeps; past this they are only counted ([`crate::results::BootRecord`]).
pub const SPLATS_PER_BOOT: usize = 32;
/// The lines a report shows of each splat.
pub const SPLAT_LINES_SHOWN: usize = 4;

/// One splat, as the console showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelWarning {
    pub kind: SplatKind,
    /// The plan stretch its first line printed during, by the agent's marks in the kernel log;
    /// `None`: outside any (the kernel's boot, between items, or a kernel without marks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub during: Option<Phase>,
    /// Its first lines, timestamps dropped, at most [`SPLAT_LINES_KEPT`] of
    /// [`SPLAT_LINE_CHARS`]; the `cut here` line is not kept.
    pub lines: Vec<String>,
    /// The lines it had in all, until its end trace, the next mark or the next splat.
    pub lines_total: u32,
}

impl KernelWarning {
    /// The line that says what it is (`WARNING: CPU: 0 PID: 1 at fs/overlayfs/super.c:1340 …`).
    pub fn headline(&self) -> &str {
        self.lines.first().map_or("", String::as_str)
    }

    /// The first [`SPLAT_LINES_SHOWN`] lines, for reports.
    pub fn shown(&self) -> &[String] {
        &self.lines[..self.lines.len().min(SPLAT_LINES_SHOWN)]
    }
}

/// Why the harness failed a cell whose own answer held: the closed set reports name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellFailure {
    /// The kernel printed a splat while the cell ran, and the run was asked to fail on that
    /// (`--fail-on-kernel-warning`).
    KernelWarning,
}

impl CellFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            CellFailure::KernelWarning => "kernel-warning",
        }
    }
}
