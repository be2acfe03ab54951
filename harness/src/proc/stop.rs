//! How a child is stopped: graceful first, forceful after a grace, always the whole process
//! group. One place turns a [`Stop`] into its steps; the watch loop takes them as they fall due.

use std::time::{Duration, Instant};

use rustix::process::Signal;

/// After [`Stop::CloseStdin`]'s grace, SIGTERM; SIGKILL this much later.
pub const TERM_GRACE: Duration = Duration::from_secs(2);

/// How a child is stopped when its owner ends it (a deadline, a flood, a cancellation, the
/// owner's own verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL at once: nothing inside to save (QEMU).
    Kill,
    /// Close stdin and SIGTERM; SIGKILL after `grace` (the local agent undoes its mounts, make
    /// deletes its half-written targets, a hook's shell runs its traps).
    Term { grace: Duration },
    /// Close stdin; SIGTERM after `grace`, SIGKILL [`TERM_GRACE`] later (ssh: the remote side
    /// sees EOF, stops the agent, cleans up and says so before the session ends).
    CloseStdin { grace: Duration },
}

/// One step of a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Close the child's stdin (it may end on EOF by itself).
    CloseStdin,
    /// Send this signal to the child's group.
    Signal(Signal),
    /// Close stdin and send this signal to the child's group.
    CloseStdinAndSignal(Signal),
}

/// A stop under way: which steps were taken, since when.
#[derive(Debug, Clone, Copy)]
pub struct Stopping {
    stop: Stop,
    since: Instant,
    taken: u8,
}

impl Stopping {
    pub fn new(stop: Stop, since: Instant) -> Stopping {
        Stopping {
            stop,
            since,
            taken: 0,
        }
    }

    /// The next step, if one is due at `now`: each style's first step at once, the harder ones
    /// after their grace. Each step is returned once.
    pub fn due(&mut self, now: Instant) -> Option<Step> {
        let waited = now.saturating_duration_since(self.since);
        let step = match (self.stop, self.taken) {
            (Stop::Kill, 0) => Step::Signal(Signal::KILL),
            (Stop::Term { .. }, 0) => Step::CloseStdinAndSignal(Signal::TERM),
            (Stop::Term { grace }, 1) if waited >= grace => Step::Signal(Signal::KILL),
            (Stop::CloseStdin { .. }, 0) => Step::CloseStdin,
            (Stop::CloseStdin { grace }, 1) if waited >= grace => Step::Signal(Signal::TERM),
            (Stop::CloseStdin { grace }, 2) if waited >= grace + TERM_GRACE => {
                Step::Signal(Signal::KILL)
            }
            _ => return None,
        };
        self.taken += 1;
        Some(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(stop: Stop, at: &[u64]) -> Vec<Option<Step>> {
        let t0 = Instant::now();
        let mut s = Stopping::new(stop, t0);
        at.iter()
            .map(|ms| s.due(t0 + Duration::from_millis(*ms)))
            .collect()
    }

    #[test]
    fn each_style_escalates_after_its_grace_once() {
        let grace = Duration::from_secs(5);
        assert_eq!(
            steps(Stop::Kill, &[0, 10_000]),
            [Some(Step::Signal(Signal::KILL)), None]
        );
        assert_eq!(
            steps(Stop::Term { grace }, &[0, 4_999, 5_000, 60_000]),
            [
                Some(Step::CloseStdinAndSignal(Signal::TERM)),
                None,
                Some(Step::Signal(Signal::KILL)),
                None
            ]
        );
        assert_eq!(
            steps(Stop::CloseStdin { grace }, &[0, 5_000, 6_000, 7_000, 8_000]),
            [
                Some(Step::CloseStdin),
                Some(Step::Signal(Signal::TERM)),
                None,
                Some(Step::Signal(Signal::KILL)),
                None
            ]
        );
    }
}
