//! Mount-event watchers: what a mount storm costs the daemons that watch the mount table
//! (ARCHITECTURE.md, "Watchers"). A mounts run (or a storm point) may run watchers beside its
//! workers, through the same measured window, each the way a real daemon watches:
//!
//! - [`Watcher::PollMountinfo`]: systemd's way (libmount's `mnt_monitor` on the kernel's table,
//!   util-linux `libmount/src/monitor_mountinfo.c`, used by systemd's `src/core/mount.c`): wait
//!   for `POLLPRI` on the mountinfo file, then re-read the whole table on every wakeup;
//! - [`Watcher::Fanotify`]: `FAN_MNT_ATTACH`/`FAN_MNT_DETACH` on a mount-namespace mark
//!   (`FAN_MARK_MNTNS`, `FAN_REPORT_MNT`, Linux 6.15+; libmount's `monitor_fanotify.c`), one event
//!   per operation carrying the mount's unique id.

use serde::{Deserialize, Serialize};

use crate::Summary;

/// One way of watching the mount table. Spelled as in matrix.toml and cell ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Watcher {
    /// `poll(POLLPRI)` on the mountinfo file, then the whole table read again (systemd).
    PollMountinfo,
    /// fanotify mount events on the namespace (Linux 6.15+).
    Fanotify,
}

impl Watcher {
    pub const ALL: [Watcher; 2] = [Watcher::PollMountinfo, Watcher::Fanotify];

    pub fn as_str(self) -> &'static str {
        match self {
            Watcher::PollMountinfo => "poll-mountinfo",
            Watcher::Fanotify => "fanotify",
        }
    }
}

impl std::fmt::Display for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Watcher {
    type Err = String;
    fn from_str(s: &str) -> Result<Watcher, String> {
        Watcher::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| format!("unknown watcher `{s}` (expected poll-mountinfo or fanotify)"))
    }
}

/// What one watcher did through a run's measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatcherFigures {
    pub watcher: Watcher,
    pub outcome: WatcherOutcome,
}

/// A watcher either watched, or the kernel refused its setup (with the call and errno).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum WatcherOutcome {
    Watched(WatcherStats),
    /// The kernel lacks what the watcher needs (fanotify mount events before 6.15: EINVAL from
    /// `fanotify_init(FAN_REPORT_MNT)`).
    Unsupported {
        step: String,
        errno: i32,
    },
    /// The watcher could not run for a reason that is not the kernel's answer (its thread, a
    /// read that failed mid-window).
    Failed {
        step: String,
        detail: String,
    },
}

/// The figures of one watcher through one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatcherStats {
    /// The watcher thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) from the window's opening to
    /// its last event handled, after the workers ended.
    pub cpu_ns: u64,
    /// Times the watcher woke with something to do (poll returned POLLPRI; fanotify had events).
    pub wakeups: u64,
    /// Bytes read: whole tables (poll-mountinfo) or event records (fanotify).
    pub bytes_read: u64,
    /// Mount attachments the watcher saw (new mount ids between two reads of the table; attach
    /// events), and detachments.
    pub attached_seen: u64,
    pub detached_seen: u64,
    /// Entries in the last table read (poll-mountinfo), the table size every wakeup paid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_entries: Option<u64>,
    /// Lag from a merged overlay's mount returning in its worker to the watcher seeing it,
    /// nanoseconds, over the overlays matched (by unique mount id for fanotify, by mount id and
    /// mount point for poll-mountinfo). None for a runtime's strategy: its mounts are its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ns: Option<Summary>,
    /// Overlays returned in a worker and matched with a sighting.
    pub lag_matched: u64,
    /// Of those, seen by the watcher before the mount call had returned to its worker (the
    /// table changes before the call returns): their lag counts as 0.
    pub seen_before_return: u64,
    /// Overlays the watcher never saw (poll-mountinfo coalesces: an overlay attached and
    /// detached between two reads is never in a table it read).
    pub lag_unmatched: u64,
}

impl WatcherStats {
    /// The watcher's CPU per container started, nanoseconds: what one container start of this
    /// mount pattern costs this watcher.
    pub fn cpu_ns_per_container(&self, containers: u32) -> Option<f64> {
        (containers > 0).then(|| self.cpu_ns as f64 / f64::from(containers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_are_spelled_as_in_the_matrix() {
        for w in Watcher::ALL {
            assert_eq!(w.as_str().parse::<Watcher>(), Ok(w));
            assert_eq!(serde_json::to_string(&w).unwrap(), format!("\"{w}\""));
        }
        let e = "inotify".parse::<Watcher>().unwrap_err();
        assert!(e.contains("poll-mountinfo or fanotify"), "{e}");
    }

    #[test]
    fn cpu_per_container_divides_by_the_containers_started() {
        let s = WatcherStats {
            cpu_ns: 1_000,
            wakeups: 1,
            bytes_read: 1,
            attached_seen: 1,
            detached_seen: 0,
            table_entries: None,
            lag_ns: None,
            lag_matched: 0,
            seen_before_return: 0,
            lag_unmatched: 0,
        };
        assert_eq!(s.cpu_ns_per_container(4), Some(250.0));
        assert_eq!(s.cpu_ns_per_container(0), None);
    }
}
