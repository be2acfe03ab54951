//! The kernel log as both sides read it: the agent's item boundaries written into it
//! ([`Mark`], one format, written to `/dev/kmsg` so they interleave in order with the
//! kernel's own messages on a guest's console), and the splats that do not kill the kernel
//! ([`SplatKind`], one table of the lines that start them, [`splat_start`]).
//!
//! The lines are the kernel's own: `__warn()` in kernel/panic.c and `CUT_HERE` in
//! include/asm-generic/bug.h, the report headers of kernel/locking/lockdep.c and
//! kernel/rcu/update.c (`lockdep_rcu_suspicious`), mm/kasan/report.c, lib/ubsan.c and
//! lib/refcount.c (`refcount_warn_saturate`). A `BUG:` that kills the kernel is followed by
//! `Oops:`; the harness's console alarms see that first and end the boot.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a splat is, by the line that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplatKind {
    /// `WARN()`/`WARN_ON()`: `WARNING: CPU: 0 PID: 1 at fs/x.c:12 f+0x1/0x2`.
    Warning,
    /// A lockdep report: circular or recursive locking, inconsistent lock state, suspicious
    /// RCU usage, bad unlock balance.
    Lockdep,
    /// `BUG: KASAN: slab-use-after-free in …`.
    Kasan,
    /// `UBSAN: array-index-out-of-bounds in …`.
    Ubsan,
    /// `refcount_t: underflow; use-after-free.`
    Refcount,
    /// Any other `BUG:` the kernel survives (`BUG: sleeping function called from invalid
    /// context`, `BUG: scheduling while atomic`).
    Bug,
}

impl SplatKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SplatKind::Warning => "warning",
            SplatKind::Lockdep => "lockdep",
            SplatKind::Kasan => "kasan",
            SplatKind::Ubsan => "ubsan",
            SplatKind::Refcount => "refcount",
            SplatKind::Bug => "bug",
        }
    }

    /// Whether a later line of the same block may say more: `refcount_t:` and `UBSAN:` come
    /// after the `WARNING:` line on some kernels, and they are what the block is.
    pub fn refines(self, earlier: SplatKind) -> bool {
        earlier == SplatKind::Warning && matches!(self, SplatKind::Refcount | SplatKind::Ubsan)
    }
}

impl fmt::Display for SplatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a console line takes part in a splat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplatLine {
    /// `------------[ cut here ]------------`: a block starts; its next lines say what it is.
    CutHere,
    /// A line that names a splat (and starts one when no block is open).
    Names(SplatKind),
    /// `---[ end trace 0000000000000000 ]---`: the block ends with this line.
    EndTrace,
}

/// The one table: substrings of a console line, first match wins (so `BUG: KASAN:` is KASAN,
/// not a plain `BUG:`). Every entry is checked reachable by a test.
const SPLAT_LINES: &[(&str, SplatLine)] = &[
    ("------------[ cut here ]------------", SplatLine::CutHere),
    ("---[ end trace ", SplatLine::EndTrace),
    // kernel/locking/lockdep.c's report headers.
    (
        "WARNING: possible circular locking dependency detected",
        SplatLine::Names(SplatKind::Lockdep),
    ),
    (
        "WARNING: possible recursive locking detected",
        SplatLine::Names(SplatKind::Lockdep),
    ),
    (
        "WARNING: inconsistent lock state",
        SplatLine::Names(SplatKind::Lockdep),
    ),
    (
        "WARNING: possible irq lock inversion dependency detected",
        SplatLine::Names(SplatKind::Lockdep),
    ),
    ("lock order detected", SplatLine::Names(SplatKind::Lockdep)),
    (
        "WARNING: bad unlock balance detected!",
        SplatLine::Names(SplatKind::Lockdep),
    ),
    (
        "WARNING: held lock freed!",
        SplatLine::Names(SplatKind::Lockdep),
    ),
    (
        "WARNING: lock held when returning to user space!",
        SplatLine::Names(SplatKind::Lockdep),
    ),
    (
        "WARNING: suspicious RCU usage",
        SplatLine::Names(SplatKind::Lockdep),
    ),
    (
        "WARNING: Nested lock was not taken",
        SplatLine::Names(SplatKind::Lockdep),
    ),
    ("BUG: KASAN: ", SplatLine::Names(SplatKind::Kasan)),
    ("UBSAN: ", SplatLine::Names(SplatKind::Ubsan)),
    ("refcount_t: ", SplatLine::Names(SplatKind::Refcount)),
    // kernel/panic.c __warn(): with a file and line, or only the caller.
    ("WARNING: CPU: ", SplatLine::Names(SplatKind::Warning)),
    ("BUG: ", SplatLine::Names(SplatKind::Bug)),
];

/// What `line` (a console line, timestamp or not) is to a splat, if anything.
pub fn splat_line(line: &str) -> Option<SplatLine> {
    SPLAT_LINES
        .iter()
        .find(|(pat, _)| line.contains(pat))
        .map(|(_, s)| *s)
}

/// The kind a line names, if it names one.
pub fn splat_start(line: &str) -> Option<SplatKind> {
    match splat_line(line) {
        Some(SplatLine::Names(k)) => Some(k),
        _ => None,
    }
}

/// A stretch of a plan the agent marks in the kernel log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The feature probes, before the first item.
    Probes,
    /// A plan item, by its index ([`crate::PlanItem::item`]).
    Item(u32),
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Probes => f.write_str("probes"),
            Phase::Item(i) => write!(f, "item {i}"),
        }
    }
}

/// An item boundary in the kernel log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Begin(Phase),
    End(Phase),
}

/// Every mark's line starts so; nothing the kernel prints does.
pub const MARK_PREFIX: &str = "mmx-mark: ";

impl Mark {
    /// The record written to `/dev/kmsg`: `<5>` (notice) so a console at the default level
    /// prints it, and a newline that ends the record.
    pub fn kmsg_record(self) -> String {
        format!("<5>{self}\n")
    }

    /// The mark a console line carries (after the kernel's timestamp, or anywhere in it).
    pub fn parse(line: &str) -> Option<Mark> {
        let rest = &line[line.find(MARK_PREFIX)? + MARK_PREFIX.len()..];
        let rest = rest.trim_end_matches(['\r', '\n']);
        let (edge, what) = rest.split_once(' ')?;
        let phase = match what {
            "probes" => Phase::Probes,
            _ => Phase::Item(what.strip_prefix("item ")?.parse().ok()?),
        };
        match edge {
            "begin" => Some(Mark::Begin(phase)),
            "end" => Some(Mark::End(phase)),
            _ => None,
        }
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mark::Begin(p) => write!(f, "{MARK_PREFIX}begin {p}"),
            Mark::End(p) => write!(f, "{MARK_PREFIX}end {p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_entry_can_match() {
        for (i, (pat, _)) in SPLAT_LINES.iter().enumerate() {
            let first = SPLAT_LINES.iter().position(|(p, _)| pat.contains(p));
            assert_eq!(first, Some(i), "`{pat}` is shadowed by an earlier entry");
        }
    }

    /// Lines as kernels printed them (issue trackers and the kernel's own format strings).
    #[test]
    fn real_splat_lines_are_named() {
        use SplatKind::*;
        let cases = [
            // kernel/panic.c __warn(), 6.x: file and line, then the caller.
            (
                "[   12.345678] WARNING: CPU: 0 PID: 645312 at lib/refcount.c:28 refcount_warn_saturate+0xd8/0xe0",
                Some(SplatLine::Names(Warning)),
            ),
            (
                "[16751.877151] refcount_t: underflow; use-after-free.",
                Some(SplatLine::Names(Refcount)),
            ),
            (
                "[   83.199313] refcount_t: saturated; leaking memory.",
                Some(SplatLine::Names(Refcount)),
            ),
            (
                "[16751.877150] ------------[ cut here ]------------",
                Some(SplatLine::CutHere),
            ),
            (
                "[   83.180450] ---[ end trace ad90440e13d042f9 ]---",
                Some(SplatLine::EndTrace),
            ),
            (
                "[  120.1] WARNING: possible circular locking dependency detected",
                Some(SplatLine::Names(Lockdep)),
            ),
            (
                "[  120.1] WARNING: possible recursive locking detected",
                Some(SplatLine::Names(Lockdep)),
            ),
            (
                "[    3.3] WARNING: suspicious RCU usage",
                Some(SplatLine::Names(Lockdep)),
            ),
            (
                "[    3.3] WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected",
                Some(SplatLine::Names(Lockdep)),
            ),
            (
                "[   40.2] BUG: KASAN: slab-use-after-free in ovl_fill_super+0x1a2/0x9d0",
                Some(SplatLine::Names(Kasan)),
            ),
            (
                "[   40.2] UBSAN: array-index-out-of-bounds in fs/overlayfs/super.c:1018:12",
                Some(SplatLine::Names(Ubsan)),
            ),
            (
                "[    9.9] BUG: sleeping function called from invalid context at kernel/locking/mutex.c:585",
                Some(SplatLine::Names(Bug)),
            ),
            ("[    0.0] Linux version 6.12.57", None),
            ("[    2.1] overlayfs: upper fs does not support tmpfile.", None),
        ];
        for (line, want) in cases {
            assert_eq!(splat_line(line), want, "{line}");
        }
        assert!(Refcount.refines(Warning) && Ubsan.refines(Warning));
        assert!(!Warning.refines(Refcount) && !Kasan.refines(Warning));
    }

    #[test]
    fn marks_round_trip_through_a_console_line() {
        for m in [
            Mark::Begin(Phase::Probes),
            Mark::End(Phase::Probes),
            Mark::Begin(Phase::Item(0)),
            Mark::End(Phase::Item(4_000_000)),
        ] {
            let record = m.kmsg_record();
            assert!(record.starts_with("<5>mmx-mark: ") && record.ends_with('\n'));
            let console = format!("[   12.345678] {}\r", &record[3..record.len() - 1]);
            assert_eq!(Mark::parse(&console), Some(m), "{console}");
        }
        for bad in [
            "mmx-mark: begin",
            "mmx-mark: begin item x",
            "mmx-mark: start item 1",
            "mmx-mark: end item -1",
            "[ 1.0] overlayfs: mmx-mark",
        ] {
            assert_eq!(Mark::parse(bad), None, "{bad}");
        }
    }
}
