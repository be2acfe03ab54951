//! Reading the guest console: which lines mean the guest is dead or dying, and which mean the
//! agent gave up. Pure functions over the lines the supervisor delivers, so every pattern is
//! tested on real-looking console lines without a guest (the excerpt a report shows is the
//! supervisor's, `supervise::excerpt`).

/// What a console line says about the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    /// `Kernel panic - not syncing`.
    Panic,
    /// An oops, `BUG:`, a general protection fault: the kernel is broken from here on.
    Oops,
    /// RCU stall, soft or hard lockup, hung task: the kernel is (partly) stuck.
    Hang,
    /// The agent itself panicked (its panic hook prints this line).
    AgentPanic,
    /// The agent could not set the guest up (a mount, a module, the plan): our side.
    AgentInitFailed,
}

impl Alarm {
    pub fn as_str(self) -> &'static str {
        match self {
            Alarm::Panic => "kernel panic",
            Alarm::Oops => "kernel oops",
            Alarm::Hang => "kernel hang",
            Alarm::AgentPanic => "agent panic",
            Alarm::AgentInitFailed => "agent setup failed",
        }
    }

    /// Whether the guest must be stopped at once: the kernel's alarms. After its own panic or
    /// setup failure the agent drains the results port and powers off by itself; killing it
    /// then could lose result lines still on their way.
    pub fn kills_guest(self) -> bool {
        match self {
            Alarm::Panic | Alarm::Oops | Alarm::Hang => true,
            Alarm::AgentPanic | Alarm::AgentInitFailed => false,
        }
    }
}

/// Substrings that raise an alarm, first match wins (so `BUG: soft lockup` is a hang, not an
/// oops). Taken from the kernel's own messages: `panic()`, `die()`, `rcu_stall_*`,
/// `watchdog_timer_fn`, `check_hung_task`. Any other `BUG:` (KASAN, `sleeping function called
/// from invalid context`) is a splat the kernel survives (`backend::splat`); one that kills it
/// is followed by `Oops:`, which is here.
const PATTERNS: &[(&str, Alarm)] = &[
    ("Kernel panic - not syncing", Alarm::Panic),
    ("BUG: soft lockup", Alarm::Hang),
    ("rcu_sched detected stalls", Alarm::Hang),
    ("rcu_preempt detected stalls", Alarm::Hang),
    ("rcu: INFO: rcu_sched", Alarm::Hang),
    ("rcu: INFO: rcu_preempt", Alarm::Hang),
    ("detected stalls on CPUs/tasks", Alarm::Hang),
    ("self-detected stall on CPU", Alarm::Hang),
    ("Watchdog detected hard LOCKUP", Alarm::Hang),
    ("blocked for more than", Alarm::Hang),
    ("BUG: workqueue lockup", Alarm::Hang),
    ("general protection fault", Alarm::Oops),
    ("BUG: kernel NULL pointer dereference", Alarm::Oops),
    ("BUG: unable to handle", Alarm::Oops),
    ("Oops: ", Alarm::Oops),
    ("kernel BUG at", Alarm::Oops),
    ("mmx-agent: panicked", Alarm::AgentPanic),
    ("mmx-agent: init failed", Alarm::AgentInitFailed),
];

/// The console lines a setup failure's evidence keeps (the newest, whole lines only): enough
/// for the kernel's own complaint before it (`EXT4-fs (vda): Cannot load crc32c driver.`), few
/// enough for a report.
pub const SETUP_CONTEXT_LINES: usize = 20;
/// The bytes those lines may take together.
pub const SETUP_CONTEXT_BYTES: usize = 4096;

/// The newest lines of a console excerpt, at most [`SETUP_CONTEXT_LINES`] lines and
/// [`SETUP_CONTEXT_BYTES`] bytes, oldest first; a single line longer than that is cut.
pub fn setup_context(excerpt: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut bytes = 0;
    for line in excerpt.lines().rev().take(SETUP_CONTEXT_LINES) {
        let cost = line.len() + usize::from(!kept.is_empty());
        if bytes + cost > SETUP_CONTEXT_BYTES {
            if kept.is_empty() {
                return crate::oneline::first(line, SETUP_CONTEXT_BYTES / 4);
            }
            break;
        }
        bytes += cost;
        kept.push(line);
    }
    kept.reverse();
    kept.join("\n")
}

/// The alarm a console line raises, if any. Leading timestamps and `\r` do not matter.
pub fn classify(line: &str) -> Option<Alarm> {
    PATTERNS
        .iter()
        .find(|(pat, _)| line.contains(pat))
        .map(|(_, alarm)| *alarm)
}

/// A console line without its trailing `\r` and the kernel's `[    1.234567] ` timestamp.
pub fn clean(line: &str) -> &str {
    let line = line.trim_end_matches(['\r', '\n']);
    let trimmed = line.trim_start();
    if let Some(rest) = trimmed.strip_prefix('[') {
        if let Some((stamp, after)) = rest.split_once(']') {
            if stamp.trim().parse::<f64>().is_ok() {
                return after.trim_start();
            }
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_can_match() {
        // First match wins: a pattern that contains an earlier one could never be reached.
        for (i, (pat, _)) in PATTERNS.iter().enumerate() {
            let first = PATTERNS.iter().position(|(p, _)| pat.contains(p));
            assert_eq!(first, Some(i), "`{pat}` is shadowed by an earlier pattern");
        }
    }

    #[test]
    fn real_console_lines_are_classified() {
        let cases = [
            (
                "[    2.913370] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
                Some(Alarm::Panic),
            ),
            (
                "[    3.201] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\r",
                Some(Alarm::Panic),
            ),
            (
                "[   48.123456] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [mmx-agent:1]",
                Some(Alarm::Hang),
            ),
            (
                "[   63.000001] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
                Some(Alarm::Hang),
            ),
            (
                "[  242.8] INFO: task mmx-agent:1 blocked for more than 120 seconds.",
                Some(Alarm::Hang),
            ),
            (
                "[    5.5] BUG: kernel NULL pointer dereference, address: 0000000000000008",
                Some(Alarm::Oops),
            ),
            (
                "[    5.6] Oops: 0002 [#1] PREEMPT SMP NOPTI",
                Some(Alarm::Oops),
            ),
            (
                "[    7.0] general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] SMP",
                Some(Alarm::Oops),
            ),
            ("[    7.1] kernel BUG at fs/namespace.c:1234!", Some(Alarm::Oops)),
            // Survivable: a splat (`backend::splat`), not an alarm.
            (
                "[    9.9] BUG: sleeping function called from invalid context at kernel/locking/mutex.c:585",
                None,
            ),
            (
                "[   40.2] BUG: KASAN: slab-use-after-free in ovl_fill_super+0x1a2/0x9d0",
                None,
            ),
            (
                "mmx-agent: panicked on thread main: index out of bounds",
                Some(Alarm::AgentPanic),
            ),
            (
                "mmx-agent: init failed: mount(/dev/vda, /scratch, xfs, MountFlags(0x0)) failed: ENODEV",
                Some(Alarm::AgentInitFailed),
            ),
            ("[    0.000000] Linux version 6.1.0-50-cloud-amd64", None),
            ("[    2.880339] Run /init as init process", None),
            ("[    1.0] RAS: Correctable Errors collector initialized.", None),
            ("mmx-agent: init started", None),
        ];
        for (line, want) in cases {
            assert_eq!(classify(line), want, "{line}");
        }
    }

    #[test]
    fn only_kernel_alarms_stop_the_guest_at_once() {
        assert!(Alarm::Panic.kills_guest());
        assert!(Alarm::Hang.kills_guest());
        assert!(!Alarm::AgentPanic.kills_guest());
        assert!(!Alarm::AgentInitFailed.kills_guest());
    }

    #[test]
    fn setup_context_keeps_the_newest_lines_within_both_bounds() {
        let lines: Vec<String> = (0..30).map(|i| format!("[    {i}.0] line {i}")).collect();
        let ctx = setup_context(&lines.join("\n"));
        let kept: Vec<&str> = ctx.lines().collect();
        assert_eq!(kept.len(), SETUP_CONTEXT_LINES);
        assert_eq!(kept.first(), Some(&"[    10.0] line 10"));
        assert_eq!(kept.last(), Some(&"[    29.0] line 29"));

        let long: Vec<String> = (0..10)
            .map(|i| format!("{i}{}", "x".repeat(1000)))
            .collect();
        let ctx = setup_context(&long.join("\n"));
        assert!(ctx.len() <= SETUP_CONTEXT_BYTES, "{}", ctx.len());
        assert_eq!(ctx.lines().count(), 4);
        assert!(ctx.lines().last().unwrap().starts_with('9'));

        let flood = "y".repeat(100_000);
        assert!(setup_context(&flood).chars().count() <= SETUP_CONTEXT_BYTES);
        assert_eq!(setup_context(""), "");
    }

    #[test]
    fn clean_drops_timestamps_and_carriage_returns() {
        assert_eq!(
            clean("[    2.913370] Kernel panic - not syncing: VFS\r"),
            "Kernel panic - not syncing: VFS"
        );
        assert_eq!(
            clean("mmx-agent: init started\r\n"),
            "mmx-agent: init started"
        );
        assert_eq!(clean("[not a stamp] x"), "[not a stamp] x");
    }
}
