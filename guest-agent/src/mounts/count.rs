//! The kernel's own count of a run's mount-table operations, never the agent's: the formula check
//! compares the strategy's formula with what the kernel reports, so a strategy that mounts once
//! too often (or once too rarely) fails whatever the agent believes it did.
//!
//! Sources, best first ([`CountSource`]):
//! - fanotify mount events on the run's namespace (6.15+): every attachment and detachment with
//!   the unique id of its mount. The ids of the merged overlays (read with statx at each pass's
//!   peak) tell the teardown's detachments from the start path's. Events for mounts the run
//!   never attached, or attached and left outside the run directory, are another process's:
//!   noted, not counted.
//! - unique mount ids (6.8+): each pass's mounts below its container, seen at the peak (all of
//!   the start path's attachments are attached then), after the start path and after the
//!   teardown.
//! - the mount table (mountinfo), the same three looks, counted by mount point.
//!
//! Separately, where the kernel has unique mount ids, the number of mounts it allocated during
//! the run: the id of a probe clone made before the workers start and of one made after they
//! end (the counter behind the ids is system-wide and only grows), minus the probes
//! ([`Allocations`]).
//!
//! A runtime's worker counts its jobs itself ([`JobEvents`]): its runtime runs in a mount
//! namespace of the worker's own, so every event there is the runtime's, and the events read
//! after each answer are that job's, exactly — attachments and detachments while it mounted,
//! detachments while it unmounted.

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use protocol::CountSource;

use crate::sys::fanotify::{self, MountEvent};
use crate::sys::{mount_api as api, ns, table, SysError};

/// Bytes read from the fanotify fd at once: a few hundred events.
const READ_BUF: usize = 64 * 1024;

/// The run's counter, made on the run thread (in the run's namespace) before the workers start.
pub struct Counter {
    fan: Option<Events>,
    alloc: Allocations,
}

/// Mounts the kernel allocates between [`Allocations::start`] and [`Allocations::finish`]
/// (unique mount ids, 6.8+; system-wide).
pub struct Allocations {
    /// Unique id of the probe clone made at the start.
    start: Option<u64>,
}

impl Allocations {
    /// Read the counter now, when `best` allows unique ids and the kernel has them.
    pub fn start(probe_dir: &Path, best: CountSource) -> Allocations {
        let ids = matches!(
            best,
            CountSource::FanotifyMountEvents | CountSource::UniqueMountIds
        );
        Allocations {
            start: ids.then(|| allocation_probe(probe_dir)).flatten(),
        }
    }

    /// Whether the kernel counts allocations (it has unique mount ids).
    pub fn counting(&self) -> bool {
        self.start.is_some()
    }

    /// Mounts allocated since the start, the probes left out.
    pub fn finish(&self, probe_dir: &Path) -> Option<u64> {
        let a = self.start?;
        // Minus the probe clone that reads the end.
        allocation_probe(probe_dir).map(|b| b.saturating_sub(a).saturating_sub(1))
    }
}

/// One runtime worker's mount events: its namespace's, read after each job.
pub struct JobEvents(Events);

impl JobEvents {
    /// Watch the calling thread's mount namespace, when `best` allows events and the kernel
    /// (6.15+) has them.
    pub fn start(best: CountSource) -> Option<JobEvents> {
        Events::start(best).map(JobEvents)
    }

    /// (attachments, detachments) since the last call. An error when the count cannot be
    /// trusted any more (a failed read, lost events).
    pub fn take(&mut self) -> Result<(u64, u64), String> {
        let ev = &mut self.0;
        ev.events.clear();
        while ev.error.is_none() {
            match fanotify::read_mount_events(ev.fd.as_fd(), &mut ev.buf, &mut ev.events) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => ev.error = Some(e),
            }
        }
        if let Some(e) = &ev.error {
            return Err(format!("reading mount events failed: {e}"));
        }
        let (mut attach, mut detach) = (0, 0);
        for e in &ev.events {
            match e {
                MountEvent::Attach(_) => attach += 1,
                MountEvent::Detach(_) => detach += 1,
                MountEvent::Overflow => {
                    return Err("the fanotify queue overflowed: events were lost".into())
                }
                MountEvent::Unknown(m) => {
                    return Err(format!("a fanotify event of an unknown kind (mask {m:#x})"))
                }
            }
        }
        Ok((attach, detach))
    }
}

impl Events {
    /// fanotify mount events on the calling thread's namespace, when `best` allows them.
    fn start(best: CountSource) -> Option<Events> {
        if best != CountSource::FanotifyMountEvents {
            return None;
        }
        let fd = fanotify::init_mount_events(true).ok()?;
        let mntns = ns::open_mount_ns().ok()?;
        fanotify::mark_mount_ns(fd.as_fd(), mntns.as_fd()).ok()?;
        Some(Events {
            fd,
            buf: vec![0; READ_BUF],
            events: Vec::new(),
            error: None,
        })
    }
}

/// fanotify state: the fd and what was read from it so far.
struct Events {
    fd: OwnedFd,
    buf: Vec<u8>,
    events: Vec<MountEvent>,
    /// A read that failed: the count is incomplete.
    error: Option<SysError>,
}

/// What the workers saw of their own mounts where there are no events: sums over containers
/// and passes (see the module doc).
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Mounts below the container at each pass's peak.
    pub at_peak: u64,
    /// Of those, gone once the start path returned.
    pub gone_after_start: u64,
    /// Of those left, gone after the teardown.
    pub gone_after_teardown: u64,
    /// Unique ids of the merged overlays, one per pass (fanotify source).
    pub merged_ids: Vec<u64>,
}

impl Observed {
    pub fn merge(&mut self, o: &Observed) {
        self.at_peak += o.at_peak;
        self.gone_after_start += o.gone_after_start;
        self.gone_after_teardown += o.gone_after_teardown;
        self.merged_ids.extend_from_slice(&o.merged_ids);
    }
}

/// The counts of a finished run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub source: CountSource,
    pub attachments: u64,
    pub detachments: u64,
    pub teardown: u64,
    pub mounts_allocated: Option<u64>,
    /// Why the counts cannot be trusted (a failed read, lost events): the formula check fails.
    pub incomplete: Option<String>,
    pub notes: Vec<String>,
}

/// The unique id of a fresh detached clone of `dir`: the allocation counter's value now.
fn allocation_probe(dir: &Path) -> Option<u64> {
    let fd = api::open_tree_clone(api::cwd(), dir, false).ok()?;
    api::mount_id_unique(fd.as_fd(), c"", true).ok().flatten()
}

impl Counter {
    /// Start counting in the calling thread's mount namespace, with the best source the kernel
    /// has, `best` at most (tests ask for less). `probe_dir` is cloned (never attached) to read
    /// the allocation counter.
    pub fn start(probe_dir: &Path, best: CountSource) -> Counter {
        Counter {
            fan: Events::start(best),
            alloc: Allocations::start(probe_dir, best),
        }
    }

    /// The source this run's counts come from.
    pub fn source(&self) -> CountSource {
        match (&self.fan, self.alloc.counting()) {
            (Some(_), _) => CountSource::FanotifyMountEvents,
            (None, true) => CountSource::UniqueMountIds,
            (None, false) => CountSource::MountTableDiff,
        }
    }

    /// How often the run thread should [`Counter::drain`] while the workers run. Every event
    /// the kernel queues is compared with up to 128 queued before it (fanotify's merge walk,
    /// done for mount events too though they never merge): with 20 ms of per-layer events
    /// queued that walk cost about 1 µs per event, on the measured calls. Emptied every
    /// millisecond the queue stays short, and the drain itself (one read) costs less than the
    /// walks it saves even on a CPU shared with a worker.
    pub fn drain_period(&self) -> Duration {
        match &self.fan {
            None => Duration::from_millis(20),
            Some(_) => Duration::from_millis(1),
        }
    }

    /// Read the events queued so far (the run thread calls this while the workers run, so the
    /// kernel never holds more than a few milliseconds of them).
    pub fn drain(&mut self) {
        let Some(ev) = &mut self.fan else { return };
        while ev.error.is_none() {
            match fanotify::read_mount_events(ev.fd.as_fd(), &mut ev.buf, &mut ev.events) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => ev.error = Some(e),
            }
        }
    }

    /// The counts, once every worker has ended. `run_dir` tells the run's mounts from others.
    pub fn finish(mut self, observed: &Observed, run_dir: &Path, probe_dir: &Path) -> Counted {
        self.drain();
        let allocated = self.alloc.finish(probe_dir);
        let source = self.source();
        let mut counted = match self.fan {
            Some(ev) => from_events(ev, &observed.merged_ids, run_dir),
            None => Counted {
                source,
                attachments: observed.at_peak,
                detachments: observed.gone_after_start,
                teardown: observed.gone_after_teardown,
                mounts_allocated: None,
                incomplete: None,
                notes: Vec::new(),
            },
        };
        counted.source = source;
        counted.mounts_allocated = allocated;
        counted
    }
}

/// Classify the events: attachments, start-path detachments, teardown detachments (of the
/// merged overlays), and events that were not the run's.
fn from_events(ev: Events, merged: &[u64], run_dir: &Path) -> Counted {
    let merged: HashSet<u64> = merged.iter().copied().collect();
    // Attached during the run and not (yet) detached.
    let mut attached: HashSet<u64> = HashSet::new();
    let mut seen_attached: HashSet<u64> = HashSet::new();
    let (mut attachments, mut detachments, mut teardown) = (0u64, 0u64, 0u64);
    let (mut foreign_detach, mut unknown, mut overflow) = (0u64, 0u64, false);
    for e in &ev.events {
        match *e {
            MountEvent::Attach(id) => {
                attachments += 1;
                attached.insert(id);
                seen_attached.insert(id);
            }
            MountEvent::Detach(id) if merged.contains(&id) => {
                teardown += 1;
                attached.remove(&id);
            }
            MountEvent::Detach(id) if seen_attached.contains(&id) => {
                detachments += 1;
                attached.remove(&id);
            }
            // A mount the run never attached: it was there before the run.
            MountEvent::Detach(_) => foreign_detach += 1,
            MountEvent::Overflow => overflow = true,
            MountEvent::Unknown(_) => unknown += 1,
        }
    }
    // Still attached: the run's leaks (below its directory, counted by the leak check) or
    // another process's mounts.
    let mut prefix = run_dir.as_os_str().as_bytes().to_vec();
    prefix.push(b'/');
    let foreign_attach = attached
        .iter()
        .filter(|&&id| match table::statmount_mnt_point(id) {
            Ok(point) => !point.starts_with(&prefix),
            // Gone meanwhile: not ours either (ours are all detached by now or still here).
            Err(_) => true,
        })
        .count() as u64;
    attachments -= foreign_attach;
    let mut notes = Vec::new();
    if foreign_attach + foreign_detach > 0 {
        notes.push(format!(
            "{} events in the run's mount namespace were not the run's ({foreign_attach} \
             attachments outside its directory, {foreign_detach} detachments of mounts older \
             than the run): another process mounts there; not counted",
            foreign_attach + foreign_detach
        ));
    }
    if unknown > 0 {
        notes.push(format!(
            "{unknown} fanotify events of an unknown kind, not counted"
        ));
    }
    let incomplete = match (ev.error, overflow) {
        (Some(e), _) => Some(format!("reading mount events failed: {e}")),
        (None, true) => Some("the fanotify queue overflowed: events were lost".to_owned()),
        (None, false) => None,
    };
    Counted {
        source: CountSource::FanotifyMountEvents,
        attachments,
        detachments,
        teardown,
        mounts_allocated: None,
        incomplete,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(list: &[MountEvent]) -> Events {
        Events {
            // Any fd: `from_events` never reads it.
            fd: std::fs::File::open("/dev/null").expect("/dev/null").into(),
            buf: Vec::new(),
            events: list.to_vec(),
            error: None,
        }
    }

    #[test]
    fn teardown_is_told_apart_by_the_merged_overlays_ids() {
        use MountEvent::*;
        // One per-layer pass with two layers: binds 1 and 2, overlay 3; binds detached, then
        // the overlay at teardown.
        let ev = events(&[
            Attach(1),
            Attach(2),
            Attach(3),
            Detach(1),
            Detach(2),
            Detach(3),
        ]);
        let c = from_events(ev, &[3], Path::new("/nonexistent-run"));
        assert_eq!((c.attachments, c.detachments, c.teardown), (3, 2, 1));
        assert!(c.notes.is_empty() && c.incomplete.is_none(), "{c:?}");
    }

    #[test]
    fn events_that_are_not_the_runs_are_noted_not_counted() {
        use MountEvent::*;
        // 7 was mounted before the run and removed during it; 9 is attached by someone else
        // and still there (statmount cannot find it below the run: not ours).
        let ev = events(&[Attach(1), Detach(7), Detach(1), Attach(9), Overflow]);
        let c = from_events(ev, &[], Path::new("/nonexistent-run"));
        assert_eq!((c.attachments, c.detachments, c.teardown), (1, 1, 0));
        assert!(c.notes[0].starts_with("2 events"), "{:?}", c.notes);
        assert!(c.incomplete.expect("lost events").contains("overflowed"));
    }
}
