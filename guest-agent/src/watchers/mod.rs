//! Mount-table watchers beside a mounts run: what a mount pattern costs the daemons that watch
//! the table on the same node (`protocol::watch`). Each watcher is a thread started by the
//! run's measured window (`mounts::measure`) from the run thread, so it lives in the run's mount
//! namespace and sees exactly the run's table:
//!
//! - `poll-mountinfo`: libmount's kernel monitor (util-linux `libmount/src/monitor_mountinfo.c`,
//!   systemd's `src/core/mount.c` through `mnt_monitor`): wait for `POLLPRI` on the mountinfo
//!   file, then read the whole table again and diff it against the last one. systemd's own
//!   mount event source is further rate-limited to 5 dispatches a second
//!   (`sd_event_source_set_ratelimit(m->mount_event_source, 1 * USEC_PER_SEC, 5)`, a burst
//!   `$SYSTEMD_DEFAULT_MOUNT_RATE_LIMIT_BURST` may raise): this watcher is the unthrottled
//!   monitor, an upper bound on CPU and a lower bound on lag for systemd. The file is
//!   `/proc/thread-self/mountinfo`, the run thread's table (`/proc/self` is the agent's
//!   leader's, another namespace).
//! - `fanotify`: `fanotify_init(FAN_REPORT_MNT)` + `fanotify_mark(FAN_MARK_MNTNS)` on the run's
//!   namespace (Linux 6.15+, fs/notify/fanotify, libmount's `monitor_fanotify.c`); the events
//!   carry each mount's unique id. A kernel without them refuses `fanotify_init` with EINVAL:
//!   the watcher is `unsupported` with that errno.
//!
//! Each watcher sets itself up (and reads the table once, as a daemon does when it starts)
//! before the window opens; its CPU clock starts there and stops once the workers have ended
//! and it has handled what they left queued. Lag is matched in [`lag`].

mod lag;

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Instant;

use protocol::{
    Better, CellDetail, CellResult, Metric, Summary, Unit, Watcher, WatcherFigures, WatcherOutcome,
    WatcherStats,
};

use crate::sys::{self, fanotify, SysError};
pub use lag::Key;

/// The run thread's table, as the watcher threads it starts see it.
const TABLE: &str = "/proc/thread-self/mountinfo";
/// Bytes read from a fanotify fd at once.
const EVENT_BUF: usize = 64 * 1024;

/// Where the workers say when each merged overlay's mount returned: what lag is measured from.
#[derive(Default)]
pub struct Returns(Mutex<Vec<(Key, Instant)>>);

impl Returns {
    /// The overlay `keys` name returned at `at`.
    pub fn record(&self, at: Instant, keys: impl IntoIterator<Item = Key>) {
        if let Ok(mut v) = self.0.lock() {
            v.extend(keys.into_iter().map(|k| (k, at)));
        }
    }

    fn take(&self) -> Vec<(Key, Instant)> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// What a watcher thread hands back.
struct Watched {
    stats: WatcherStats,
    sightings: Vec<(Key, Instant)>,
}

/// The watchers of one window, started and ready.
pub struct Running {
    stop: Option<OwnedFd>,
    watchers: Vec<(Watcher, Started)>,
}

enum Started {
    Thread(JoinHandle<Result<Watched, SysError>>),
    Refused(WatcherOutcome),
}

/// Start `watchers` from the run thread and wait until each is ready (set up, table read once)
/// or refused. Nothing to start: nothing runs.
pub fn start(watchers: &[Watcher]) -> Running {
    let stop = match watchers.is_empty() {
        true => None,
        false => match sys::watch::stop_fd() {
            Ok(fd) => Some(fd),
            Err(e) => return Running::failed(watchers, &e),
        },
    };
    let mut started = Vec::new();
    for &w in watchers {
        let Some(stop_fd) = stop.as_ref().and_then(|s| s.try_clone().ok()) else {
            started.push((w, Started::Refused(failed("dup(eventfd)", "no stop fd"))));
            continue;
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("mmx-watch-{w}"))
            .spawn(move || watch(w, &stop_fd, &ready_tx));
        let s = match spawned {
            Err(e) => Started::Refused(failed("spawn the watcher thread", &e.to_string())),
            Ok(h) => match ready_rx.recv() {
                Ok(Ok(())) => Started::Thread(h),
                Ok(Err(outcome)) => {
                    let _ = h.join();
                    Started::Refused(outcome)
                }
                Err(_) => Started::Thread(h),
            },
        };
        started.push((w, s));
    }
    Running {
        stop,
        watchers: started,
    }
}

impl Running {
    /// Watchers that cannot watch this run's mounts, with why.
    pub fn not_here(watchers: &[Watcher], why: &str) -> Running {
        Running {
            stop: None,
            watchers: watchers
                .iter()
                .map(|&w| (w, Started::Refused(failed("watch the run's mounts", why))))
                .collect(),
        }
    }

    fn failed(watchers: &[Watcher], e: &SysError) -> Running {
        Running {
            stop: None,
            watchers: watchers
                .iter()
                .map(|&w| (w, Started::Refused(failed(&e.call, &e.to_string()))))
                .collect(),
        }
    }

    /// Stop the watchers (the workers have ended) and measure each against `returns` (None:
    /// the strategy's mounts are not the agent's to time, a runtime's).
    pub fn finish(mut self, returns: Option<&Returns>) -> Vec<WatcherFigures> {
        self.signal_stop();
        let returned = returns.map(Returns::take);
        std::mem::take(&mut self.watchers)
            .into_iter()
            .map(|(watcher, s)| {
                let outcome = match s {
                    Started::Refused(o) => o,
                    Started::Thread(h) => match h.join() {
                        Err(p) => failed(
                            "watcher thread panicked",
                            &crate::mounts::panic_message(&*p),
                        ),
                        Ok(Err(e)) => failed(&e.call, &e.to_string()),
                        Ok(Ok(mut w)) => {
                            if let Some(r) = &returned {
                                let mine: Vec<_> = r
                                    .iter()
                                    .filter(|(k, _)| k.names_for(watcher))
                                    .cloned()
                                    .collect();
                                let l = lag::lags(&mine, &w.sightings);
                                w.stats.lag_ns = Summary::of(&l.samples);
                                w.stats.lag_matched = l.matched;
                                w.stats.seen_before_return = l.before_return;
                                w.stats.lag_unmatched = l.unmatched;
                            }
                            WatcherOutcome::Watched(w.stats)
                        }
                    },
                };
                WatcherFigures { watcher, outcome }
            })
            .collect()
    }
}

impl Running {
    fn signal_stop(&self) {
        if let Some(stop) = &self.stop {
            let _ = sys::watch::signal_stop(stop.as_fd());
        }
    }
}

/// A window that ends without `finish` (a panic on the run thread) still stops its watchers,
/// so no thread stays blocked in poll on the run's table.
impl Drop for Running {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

fn failed(step: &str, detail: &str) -> WatcherOutcome {
    WatcherOutcome::Failed {
        step: step.to_owned(),
        detail: detail.to_owned(),
    }
}

/// The kernel's refusal of a watcher's setup, or another failure.
fn refused(e: SysError) -> WatcherOutcome {
    // Only fanotify_init's and fanotify_mark's EINVAL is "this kernel has no mount events".
    if e.call.starts_with("fanotify_") && e.errno == libc::EINVAL {
        WatcherOutcome::Unsupported {
            step: e.call,
            errno: e.errno,
        }
    } else {
        failed(&e.call, &e.to_string())
    }
}

/// One watcher thread: set up, say ready, watch until stopped.
fn watch(
    w: Watcher,
    stop: &OwnedFd,
    ready: &mpsc::Sender<Result<(), WatcherOutcome>>,
) -> Result<Watched, SysError> {
    match w {
        Watcher::PollMountinfo => {
            let setup = || -> Result<_, SysError> {
                let mut f = sys::watch::open_table(Path::new(TABLE))?;
                let mut buf = Vec::new();
                // Consume the file's first priority event and read the table once.
                sys::watch::poll_table(f.as_fd(), None, Some(std::time::Duration::ZERO))?;
                sys::watch::reread_table(&mut f, &mut buf)?;
                Ok((f, buf))
            };
            match setup() {
                Ok((f, buf)) => {
                    let _ = ready.send(Ok(()));
                    poll_mountinfo(f, buf, stop)
                }
                Err(e) => {
                    let _ = ready.send(Err(refused(e.clone())));
                    Err(e)
                }
            }
        }
        Watcher::Fanotify => {
            let setup = || -> Result<_, SysError> {
                let fan = fanotify::init_mount_events(true)?;
                let ns = sys::ns::open_mount_ns()?;
                fanotify::mark_mount_ns(fan.as_fd(), ns.as_fd())?;
                Ok(fan)
            };
            match setup() {
                Ok(fan) => {
                    let _ = ready.send(Ok(()));
                    fanotify_events(&fan, stop)
                }
                Err(e) => {
                    let _ = ready.send(Err(refused(e.clone())));
                    Err(e)
                }
            }
        }
    }
}

fn stats() -> WatcherStats {
    WatcherStats {
        cpu_ns: 0,
        wakeups: 0,
        bytes_read: 0,
        attached_seen: 0,
        detached_seen: 0,
        table_entries: None,
        lag_ns: None,
        lag_matched: 0,
        seen_before_return: 0,
        lag_unmatched: 0,
    }
}

/// systemd's way: every `POLLPRI` wakeup reads the whole table again and diffs it.
fn poll_mountinfo(
    mut f: std::fs::File,
    mut buf: Vec<u8>,
    stop: &OwnedFd,
) -> Result<Watched, SysError> {
    let cpu0 = sys::watch::thread_cpu();
    let mut st = stats();
    let mut sightings = Vec::new();
    let mut last: HashSet<(u64, Vec<u8>)> = table_entries(&buf).collect();
    let mut stopping = false;
    loop {
        // Once stopped, only what the workers left flagged.
        let r = if stopping {
            sys::watch::poll_table(f.as_fd(), None, Some(std::time::Duration::ZERO))?
        } else {
            sys::watch::poll_table(f.as_fd(), Some(stop.as_fd()), None)?
        };
        if r.table {
            st.wakeups += 1;
            st.bytes_read += sys::watch::reread_table(&mut f, &mut buf)?;
            let now = Instant::now();
            let table: HashSet<(u64, Vec<u8>)> = table_entries(&buf).collect();
            for (id, point) in table.difference(&last) {
                st.attached_seen += 1;
                sightings.push((Key::Table(*id, point.clone()), now));
            }
            st.detached_seen += last.difference(&table).count() as u64;
            st.table_entries = Some(table.len() as u64);
            last = table;
        } else if stopping {
            break;
        }
        stopping |= r.stop;
    }
    st.cpu_ns = (sys::watch::thread_cpu().saturating_sub(cpu0)).as_nanos() as u64;
    Ok(Watched {
        stats: st,
        sightings,
    })
}

/// The fanotify way: one event per attach or detach, with the mount's unique id.
fn fanotify_events(fan: &OwnedFd, stop: &OwnedFd) -> Result<Watched, SysError> {
    let cpu0 = sys::watch::thread_cpu();
    let mut st = stats();
    let mut sightings = Vec::new();
    let mut buf = vec![0u8; EVENT_BUF];
    let mut events = Vec::new();
    loop {
        let r = sys::watch::poll_readable(fan.as_fd(), stop.as_fd())?;
        // Once stopped, drain what is queued (the read does not block).
        if r.table || r.stop {
            let mut woke = false;
            loop {
                events.clear();
                let (n, bytes) =
                    fanotify::read_mount_events_sized(fan.as_fd(), &mut buf, &mut events)?;
                if n == 0 {
                    break;
                }
                woke = true;
                st.bytes_read += bytes as u64;
                let now = Instant::now();
                for e in &events {
                    match e {
                        fanotify::MountEvent::Attach(id) => {
                            st.attached_seen += 1;
                            sightings.push((Key::Unique(*id), now));
                        }
                        fanotify::MountEvent::Detach(_) => st.detached_seen += 1,
                        fanotify::MountEvent::Overflow | fanotify::MountEvent::Unknown(_) => {}
                    }
                }
            }
            st.wakeups += u64::from(woke);
        }
        if r.stop {
            break;
        }
    }
    st.cpu_ns = (sys::watch::thread_cpu().saturating_sub(cpu0)).as_nanos() as u64;
    Ok(Watched {
        stats: st,
        sightings,
    })
}

/// Each entry of a mountinfo text as (mount id, mount point as the table spells it).
fn table_entries(text: &[u8]) -> impl Iterator<Item = (u64, Vec<u8>)> + '_ {
    text.split(|&b| b == b'\n').filter_map(|line| {
        let mut f = line.split(|&b| b == b' ');
        let id = std::str::from_utf8(f.next()?).ok()?.parse().ok()?;
        let point = f.nth(3)?;
        Some((id, point.to_vec()))
    })
}

/// Put a run's watcher figures into its result: the detail, and per watcher the metrics a
/// compare can gate on (CPU per container started, median lag).
pub fn attach(result: &mut CellResult, containers: u32, figures: Vec<WatcherFigures>) {
    if figures.is_empty() {
        return;
    }
    for f in &figures {
        if let WatcherOutcome::Watched(s) = &f.outcome {
            if let Some(cpu) = s.cpu_ns_per_container(containers) {
                result.metrics.insert(
                    format!("watcher_{}_cpu_us_per_container", f.watcher),
                    Metric::one(Unit::Microseconds, Better::Lower, cpu / 1e3),
                );
            }
            if let Some(l) = &s.lag_ns {
                result.metrics.insert(
                    format!("watcher_{}_lag_p50_us", f.watcher),
                    Metric::one(Unit::Microseconds, Better::Lower, l.p50 / 1e3),
                );
            }
        }
    }
    if let Some(CellDetail::Mounts(m)) = &mut result.detail {
        m.watchers = figures;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_entries_are_ids_and_mount_points() {
        let t = b"36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw\n\
                  37 36 0:5 / /c/0/m rw - overlay overlay rw\n\nbad line\n";
        let v: Vec<_> = table_entries(t).collect();
        assert_eq!(
            v,
            vec![(36, b"/mnt/parent".to_vec()), (37, b"/c/0/m".to_vec())]
        );
    }

    /// A real watcher pair on this kernel, in a private namespace of its own: a bind mount made
    /// while they watch is seen by both (fanotify where the kernel has mount events, else
    /// refused with EINVAL), with its lag matched by key.
    #[test]
    fn both_watchers_see_a_bind_mount_made_while_they_watch() {
        let test = "both_watchers_see_a_bind_mount_made_while_they_watch";
        if !crate::testing::require_root(test, "mounts in a namespace of its own") {
            return;
        }
        let stopped = std::thread::spawn(|| -> Result<Vec<WatcherFigures>, String> {
            sys::ns::enter_private_mount_ns().map_err(|e| e.to_string())?;
            let dir = std::env::temp_dir().join(format!("mmx-watch-test-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let running = start(&Watcher::ALL);
            let returns = Returns::default();
            let mounted = sys::legacy::mount_tmpfs(dir.as_path());
            let at = Instant::now();
            if let Ok(()) = &mounted {
                let unique = sys::mount_api::mount_id_unique(rustix::fs::CWD, dir.as_path(), false)
                    .ok()
                    .flatten()
                    .map(Key::Unique);
                let old = sys::watch::table_mount_id(rustix::fs::CWD, dir.as_path())
                    .ok()
                    .flatten()
                    .map(|id| Key::Table(id, dir.as_os_str().as_encoded_bytes().to_vec()));
                returns.record(at, unique.into_iter().chain(old));
            }
            let figures = running.finish(Some(&returns));
            let _ = sys::legacy::umount_detach(dir.as_path());
            let _ = std::fs::remove_dir(&dir);
            mounted.map_err(|e| e.to_string())?;
            Ok(figures)
        });
        let figures = stopped
            .join()
            .expect("the test thread")
            .expect("the test's mounts");
        assert_eq!(figures.len(), 2);
        for f in &figures {
            match (&f.watcher, &f.outcome) {
                (_, WatcherOutcome::Watched(s)) => {
                    assert!(s.wakeups >= 1 && s.attached_seen >= 1, "{f:?}");
                    assert!(s.bytes_read > 0, "{f:?}");
                    assert_eq!((s.lag_matched, s.lag_unmatched), (1, 0), "{f:?}");
                    assert!(s.lag_ns.is_some_and(|l| l.min >= 0.0), "{f:?}");
                }
                (Watcher::Fanotify, WatcherOutcome::Unsupported { errno, .. }) => {
                    assert_eq!(*errno, libc::EINVAL, "{f:?}")
                }
                _ => panic!("{f:?}"),
            }
        }
    }
}
