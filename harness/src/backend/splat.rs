//! Splats on a guest's console that do not end the boot, attributed to the plan stretch they
//! printed during. The agent marks the probes and each item in the kernel log
//! (`protocol::kmsg::Mark`, written to /dev/kmsg), so marks and the kernel's own lines reach the
//! console in the order the kernel logged them; a splat belongs to the stretch open when its
//! first line printed. Which lines start, name and end a splat is `protocol::kmsg`'s one table;
//! a line that ends the boot (a panic, an oops, a lockup) is the console alarms' and is never a
//! splat here. Bounds are `results::kernel_warning`'s.

use protocol::kmsg::{splat_line, Mark, Phase, SplatKind, SplatLine};

use crate::backend::qemu::console;
use crate::results::kernel_warning::{
    KernelWarning, SPLATS_PER_BOOT, SPLAT_LINES_KEPT, SPLAT_LINE_CHARS,
};

/// A splat being read.
#[derive(Debug)]
struct Open {
    /// `None` after a `cut here` until a line names it.
    kind: Option<SplatKind>,
    during: Option<Phase>,
    lines: Vec<String>,
    total: u32,
}

impl Open {
    fn new(kind: Option<SplatKind>, during: Option<Phase>) -> Open {
        Open {
            kind,
            during,
            lines: Vec::new(),
            total: 0,
        }
    }

    fn push(&mut self, line: &str) {
        self.total = self.total.saturating_add(1);
        if self.lines.len() < SPLAT_LINES_KEPT {
            self.lines
                .push(crate::oneline::first(line, SPLAT_LINE_CHARS));
        }
    }
}

/// The console's splats so far, fed line by line.
#[derive(Debug, Default)]
pub struct Scanner {
    /// The stretch the agent marked open, if any.
    phase: Option<Phase>,
    open: Option<Open>,
    found: Vec<KernelWarning>,
    dropped: u64,
}

impl Scanner {
    /// One console line, as it arrived (timestamp and `\r` or not).
    pub fn feed(&mut self, raw: &str) {
        let line = console::clean(raw);
        if let Some(mark) = Mark::parse(line) {
            self.close();
            self.phase = match mark {
                Mark::Begin(p) => Some(p),
                Mark::End(_) => None,
            };
            return;
        }
        if console::classify(line).is_some_and(|a| a.kills_guest()) {
            // The boot ends on this line; the alarm reports it.
            self.close();
            return;
        }
        match splat_line(line) {
            Some(SplatLine::CutHere) => {
                self.close();
                self.open = Some(Open::new(None, self.phase));
            }
            Some(SplatLine::EndTrace) => {
                if let Some(o) = self.open.as_mut() {
                    o.push(line);
                }
                self.close();
            }
            Some(SplatLine::Names(kind)) => match self.open.as_mut() {
                Some(o) if o.kind.is_none() => {
                    o.kind = Some(kind);
                    o.push(line);
                }
                // refcount_t: then WARNING: is one block (lib/refcount.c WARNs after saying).
                Some(o) if o.kind.is_some_and(|k| k.refines(kind)) => o.push(line),
                Some(o) if o.kind.is_some_and(|k| kind.refines(k)) => {
                    o.kind = Some(kind);
                    // The naming line leads what a report shows.
                    o.total = o.total.saturating_add(1);
                    o.lines
                        .insert(0, crate::oneline::first(line, SPLAT_LINE_CHARS));
                    o.lines.truncate(SPLAT_LINES_KEPT);
                }
                _ => {
                    self.close();
                    let mut o = Open::new(Some(kind), self.phase);
                    o.push(line);
                    self.open = Some(o);
                }
            },
            None => {
                if let Some(o) = self.open.as_mut() {
                    if o.kind == Some(SplatKind::Kasan) && is_kasan_rule(line) {
                        // mm/kasan/report.c closes its report with a row of `=`.
                        self.close();
                    } else {
                        o.push(line);
                    }
                }
            }
        }
    }

    /// Close what is open and hand back every splat, and how many past the bound were dropped.
    pub fn finish(mut self) -> (Vec<KernelWarning>, u64) {
        self.close();
        (self.found, self.dropped)
    }

    fn close(&mut self) {
        let Some(o) = self.open.take() else {
            return;
        };
        // A `cut here` that nothing named is not a splat mmx can say anything about.
        let Some(kind) = o.kind else {
            return;
        };
        if self.found.len() >= SPLATS_PER_BOOT {
            self.dropped += 1;
            return;
        }
        self.found.push(KernelWarning {
            kind,
            during: o.during,
            lines: o.lines,
            lines_total: o.total,
        });
    }
}

fn is_kasan_rule(line: &str) -> bool {
    line.len() >= 20 && line.bytes().all(|b| b == b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Vec<KernelWarning> {
        let mut s = Scanner::default();
        for l in text.lines() {
            s.feed(l);
        }
        s.finish().0
    }

    /// A WARN_ON_ONCE in overlayfs as a 6.12 guest prints it (kernel/panic.c __warn, the
    /// x86 register dump, the end trace), between the agent's marks.
    #[test]
    fn a_warn_between_marks_belongs_to_that_item() {
        let got = scan(
            "[    9.0] mmx-mark: begin probes\n\
             [   10.0] mmx-mark: end probes\n\
             [   11.0] mmx-mark: begin item 0\n\
             [   11.5] mmx-mark: end item 0\n\
             [   12.0] mmx-mark: begin item 1\n\
             [   12.1] ------------[ cut here ]------------\n\
             [   12.1] WARNING: CPU: 1 PID: 87 at fs/overlayfs/super.c:1326 ovl_fill_super+0x5a/0x8f0\n\
             [   12.1] Modules linked in: overlay\n\
             [   12.1] CPU: 1 UID: 0 PID: 87 Comm: mmx-item-x Not tainted 6.12.57 #1\n\
             [   12.1] RIP: 0010:ovl_fill_super+0x5a/0x8f0\n\
             [   12.1] Call Trace:\n\
             [   12.1]  <TASK>\n\
             [   12.1]  get_tree_nodev+0x5c/0xa0\n\
             [   12.1]  vfs_get_tree+0x25/0xd0\n\
             [   12.1]  path_mount+0x4b6/0xb40\n\
             [   12.1]  __x64_sys_mount+0x11f/0x160\n\
             [   12.1]  do_syscall_64+0x82/0x190\n\
             [   12.1]  entry_SYSCALL_64_after_hwframe+0x76/0x7e\n\
             [   12.1]  </TASK>\n\
             [   12.1] ---[ end trace 0000000000000000 ]---\n\
             [   13.0] mmx-mark: end item 1\n\
             [   13.1] mmx-mark: begin item 2\n\
             [   14.0] mmx-mark: end item 2\n",
        );
        assert_eq!(got.len(), 1, "{got:?}");
        let w = &got[0];
        assert_eq!(w.kind, SplatKind::Warning);
        assert_eq!(w.during, Some(Phase::Item(1)));
        assert!(
            w.headline()
                .starts_with("WARNING: CPU: 1 PID: 87 at fs/overlayfs/super.c:1326"),
            "{w:?}"
        );
        assert_eq!(w.lines.len(), SPLAT_LINES_KEPT);
        assert_eq!(w.lines_total, 14);
    }

    /// Real splat texts (issue trackers quoting them; the kernel's format strings).
    #[test]
    fn each_kind_is_read_from_its_real_text() {
        // lib/refcount.c, 4.19: cut here, then refcount_t, then the WARNING line.
        let refcount = scan(
            "[16751.877150] ------------[ cut here ]------------\n\
             [16751.877151] refcount_t: underflow; use-after-free.\n\
             [16751.877173] WARNING: CPU: 1 PID: 17 at lib/refcount.c:187 refcount_sub_and_test_checked+0x3e/0x50\n\
             [16751.877217] CPU: 1 PID: 17 Comm: ksoftirqd/1 Not tainted 4.19.67\n",
        );
        assert_eq!(refcount.len(), 1, "{refcount:?}");
        assert_eq!(refcount[0].kind, SplatKind::Refcount);
        assert_eq!(
            refcount[0].headline(),
            "refcount_t: underflow; use-after-free."
        );
        assert_eq!(refcount[0].lines_total, 3);
        // The older order: the WARNING line first; refcount_t still says what it is.
        let older = scan(
            "[   83.185564] ------------[ cut here ]------------\n\
             [   83.190358] WARNING: CPU: 0 PID: 9 at lib/refcount.c:19 ovpn_pktid_recv+0x5a8/0xfec [ovpn_dco_v2]\n\
             [   83.199313] refcount_t: saturated; leaking memory.\n\
             [   83.204180] Modules linked in: ovpn_dco_v2\n",
        );
        assert_eq!(older[0].kind, SplatKind::Refcount);
        assert_eq!(
            older[0].headline(),
            "refcount_t: saturated; leaking memory."
        );
        assert_eq!(older[0].lines_total, 3);
        // kernel/locking/lockdep.c print_circular_bug_header.
        let lockdep = scan(
            "[  120.0] ======================================================\n\
             [  120.0] WARNING: possible circular locking dependency detected\n\
             [  120.0] 6.12.57 #1 Not tainted\n\
             [  120.0] ------------------------------------------------------\n\
             [  120.0] mmx-agent/1 is trying to acquire lock:\n",
        );
        assert_eq!(lockdep.len(), 1);
        assert_eq!(lockdep[0].kind, SplatKind::Lockdep);
        // mm/kasan/report.c: between two rows of `=`; what follows is not the report's.
        let kasan = scan(
            "[   40.1] ==================================================================\n\
             [   40.2] BUG: KASAN: slab-use-after-free in ovl_fill_super+0x1a2/0x9d0\n\
             [   40.2] Read of size 8 at addr ffff888003a1c0a8 by task mmx-agent/1\n\
             [   40.9] ==================================================================\n\
             [   41.0] overlayfs: upper fs does not support tmpfile.\n",
        );
        assert_eq!(kasan.len(), 1);
        assert_eq!(kasan[0].kind, SplatKind::Kasan);
        assert_eq!(kasan[0].lines_total, 2);
        // lib/ubsan.c: CUT_HERE, the header, the trace, the end trace.
        let ubsan = scan(
            "[    5.0] ------------[ cut here ]------------\n\
             [    5.0] UBSAN: array-index-out-of-bounds in fs/overlayfs/super.c:1018:12\n\
             [    5.0] index 5 is out of range for type 'ovl_layer [4]'\n\
             [    5.0] ---[ end trace ]---\n\
             [    6.0] BUG: sleeping function called from invalid context at kernel/locking/mutex.c:585\n",
        );
        let kinds: Vec<SplatKind> = ubsan.iter().map(|w| w.kind).collect();
        assert_eq!(kinds, [SplatKind::Ubsan, SplatKind::Bug]);
        assert!(ubsan.iter().all(|w| w.during.is_none()));
    }

    #[test]
    fn what_ends_the_boot_is_no_splat_and_a_storm_is_bounded() {
        let oops = scan(
            "[    9.1] BUG: kernel NULL pointer dereference, address: 08\n\
             [    9.2] Oops: 0002 [#1] PREEMPT SMP NOPTI\n\
             [   48.1] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [mmx-agent:1]\n\
             [    1.0] ------------[ cut here ]------------\n\
             [    1.0] nothing named this block\n",
        );
        assert!(oops.is_empty(), "{oops:?}");

        let mut s = Scanner::default();
        for i in 0..(SPLATS_PER_BOOT + 5) {
            s.feed("------------[ cut here ]------------");
            s.feed(&format!("WARNING: CPU: 0 PID: 1 at x.c:{i} f+0x0/0x1"));
            for _ in 0..100 {
                s.feed(&"x".repeat(1000));
            }
        }
        let (found, dropped) = s.finish();
        assert_eq!((found.len(), dropped), (SPLATS_PER_BOOT, 5));
        for w in &found {
            assert_eq!(w.lines_total, 101);
            assert!(w.lines.len() <= SPLAT_LINES_KEPT);
            assert!(w
                .lines
                .iter()
                .all(|l| l.chars().count() <= SPLAT_LINE_CHARS));
        }
    }
}
