//! Userns helpers made ahead of the workers. Making one (clone, two id maps, the namespace fd)
//! costs ~100 µs of agent time per container; the run thread, idle while the workers start
//! containers, makes them instead: the first few before the clock starts, then each one a few
//! containers ahead of the workers. A worker whose helper is not ready makes its own, so a
//! slow maker never stalls a worker; one that finds it being made waits the few µs left.
//!
//! Helpers made here have the run thread as parent (their parent-death signal follows it);
//! it outlives every worker.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::cause::Cause;
use super::container::{base_id, ID_COUNT};
use crate::sys::userns::{Batches, UserNs};
use crate::sys::SysResult;

const FREE: u8 = 0;
const MAKING: u8 = 1;
const READY: u8 = 2;
const TAKEN: u8 = 3;

/// Most helpers made ahead of the workers: each is a process and five fds.
const MAX_AHEAD: u32 = 32;

pub struct Helpers {
    state: Vec<AtomicU8>,
    ready: Vec<Mutex<Option<SysResult<UserNs>>>>,
    batches: Batches,
    /// How many containers past the last one claimed get a helper ahead of time.
    ahead: u32,
    /// Whether helpers run on spare CPUs beside the workers (then with a raised priority).
    spare_cpus: bool,
}

impl Helpers {
    pub fn new(containers: u32, concurrency: u32, batches: Batches, spare_cpus: bool) -> Helpers {
        Helpers {
            state: (0..containers).map(|_| AtomicU8::new(FREE)).collect(),
            ready: (0..containers).map(|_| Mutex::new(None)).collect(),
            batches,
            ahead: (concurrency + 1).min(MAX_AHEAD),
            spare_cpus,
        }
    }

    fn make(&self, idx: u32) -> SysResult<UserNs> {
        let ns = UserNs::create(base_id(idx), ID_COUNT, self.batches.clone())?;
        if self.spare_cpus {
            ns.raise_priority();
        }
        Ok(ns)
    }

    /// Container `idx`'s helper: the one made ahead, or a new one. Every failure here is the
    /// agent's own (its helper process, its bookkeeping), never the kernel's answer to the
    /// strategy.
    pub fn take(&self, idx: u32) -> Result<UserNs, Cause> {
        let Some(state) = self.state.get(idx as usize) else {
            return Err(Cause::bug(format!(
                "userns helper for container {idx}, out of range"
            )));
        };
        loop {
            match state.compare_exchange(FREE, TAKEN, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return self.make(idx).map_err(Cause::agent),
                Err(READY) => {
                    state.store(TAKEN, Ordering::Release);
                    let made = self.ready[idx as usize]
                        .lock()
                        .ok()
                        .and_then(|mut slot| slot.take());
                    return match made {
                        Some(made) => made.map_err(Cause::agent),
                        None => Err(Cause::bug(format!(
                            "userns helper made ahead for container {idx}: missing"
                        ))),
                    };
                }
                // Being made: a clone and two writes away.
                Err(MAKING) => std::thread::yield_now(),
                Err(_) => {
                    return Err(Cause::bug(format!(
                        "userns helper of container {idx} taken twice"
                    )))
                }
            }
        }
    }

    /// Make helpers for the containers in `[claimed, claimed + ahead)`, from `*from` on.
    fn make_window(&self, claimed: u32, from: &mut u32) {
        let end = claimed
            .saturating_add(self.ahead)
            .min(self.state.len() as u32);
        *from = (*from).max(claimed);
        while *from < end {
            let n = *from as usize;
            if self.state[n]
                .compare_exchange(FREE, MAKING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let made = self.make(*from);
                if let Ok(mut slot) = self.ready[n].lock() {
                    *slot = Some(made);
                }
                self.state[n].store(READY, Ordering::Release);
            }
            *from += 1;
        }
    }

    /// Before the clock: helpers for the first containers.
    pub fn make_first(&self) -> u32 {
        let mut from = 0;
        self.make_window(0, &mut from);
        from
    }

    /// While the workers run (on the run thread): keep `ahead` helpers ready past the last
    /// container claimed (`next`), until no worker runs (`running`) or `stop()`. Workers unpark
    /// this thread when they claim a container or end.
    /// `tick` runs on every wake-up, and at least every `period` (the run's mount-event counter
    /// drains its queue there).
    pub fn make_ahead(
        &self,
        mut from: u32,
        next: &AtomicU32,
        running: &AtomicU32,
        stop: &dyn Fn() -> bool,
        (tick, period): (&mut dyn FnMut(), Duration),
    ) {
        while running.load(Ordering::Acquire) > 0 && !stop() {
            tick();
            let claimed = next.load(Ordering::Acquire);
            if claimed >= self.state.len() as u32 {
                break;
            }
            self.make_window(claimed, &mut from);
            std::thread::park_timeout(period);
        }
    }
}
