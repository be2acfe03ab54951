//! This machine's cores as a budget the pool's boots share. A guest under single-threaded TCG
//! (or any boot that measures no contention) keeps one host thread busy and takes one core; a
//! guest whose vCPUs run at once to measure contention (tcg-mt, KVM) takes a core per vCPU, so
//! "a core for every vCPU" also holds while other boots run. Without it a 2-vCPU tcg-mt guest
//! shared two cores with a busy TCG guest: its vCPUs took turns again, and one such boot
//! stalled in early boot until its deadline.
//!
//! Boots get their cores in the order they asked (a ticket each), so a boot that wants every
//! core is not overtaken forever by boots that want one.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::proc::Cancel;

pub struct Cores {
    total: usize,
    state: Mutex<State>,
    turn: Condvar,
}

struct State {
    free: usize,
    next_ticket: u64,
    serving: u64,
}

/// Cores held by one boot, given back when dropped.
pub struct Held<'a> {
    cores: &'a Cores,
    n: usize,
}

impl Cores {
    /// A budget of `total` cores (at least one).
    pub fn new(total: usize) -> Cores {
        let total = total.max(1);
        Cores {
            total,
            state: Mutex::new(State {
                free: total,
                next_ticket: 0,
                serving: 0,
            }),
            turn: Condvar::new(),
        }
    }

    /// The machine's: as many as threads can run at once.
    pub fn of_this_machine() -> Cores {
        Cores::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Wait for `want` cores (at most all of them), in turn. None when the run is cancelled
    /// while waiting: every waiter sees the same run-wide flag, so none is left waiting for a
    /// turn that a cancelled one skipped.
    pub fn take(&self, want: usize, cancel: &Cancel) -> Option<Held<'_>> {
        let n = want.clamp(1, self.total);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        while st.serving != ticket || st.free < n {
            if cancel.is_cancelled() {
                if st.serving == ticket {
                    st.serving += 1;
                    self.turn.notify_all();
                }
                return None;
            }
            st = self
                .turn
                .wait_timeout(st, Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        st.free -= n;
        st.serving += 1;
        self.turn.notify_all();
        Some(Held { cores: self, n })
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut st = self.cores.state.lock().unwrap_or_else(|e| e.into_inner());
        st.free += self.n;
        self.cores.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[test]
    fn never_more_than_the_budget_is_held() {
        let cores = Cores::new(2);
        let cancel = Cancel::new();
        let busy = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for i in 0..12 {
                let (cores, cancel, busy, most) = (&cores, &cancel, &busy, &most);
                s.spawn(move || {
                    let want = if i % 3 == 0 { 2 } else { 1 };
                    let held = cores.take(want, cancel).expect("not cancelled");
                    let now = busy.fetch_add(want, Ordering::SeqCst) + want;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    busy.fetch_sub(want, Ordering::SeqCst);
                    drop(held);
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= 2);
        assert_eq!(cores.state.lock().unwrap().free, 2, "all given back");
    }

    #[test]
    fn a_boot_that_wants_every_core_is_not_overtaken() {
        let cores = Cores::new(2);
        let cancel = Cancel::new();
        let first = cores.take(1, &cancel).expect("free");
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            let (cores, cancel) = (&cores, &cancel);
            let tx2 = tx.clone();
            s.spawn(move || {
                let _all = cores.take(2, cancel).expect("in turn");
                tx2.send("all").unwrap();
            });
            // Let the big one take its ticket first.
            while cores.state.lock().unwrap().next_ticket < 2 {
                std::thread::yield_now();
            }
            s.spawn(move || {
                let _one = cores.take(1, cancel).expect("in turn");
                tx.send("one").unwrap();
            });
            std::thread::sleep(Duration::from_millis(50));
            drop(first);
        });
        let order: Vec<&str> = rx.iter().collect();
        assert_eq!(order, ["all", "one"]);
    }

    #[test]
    fn more_than_the_machine_has_is_all_of_it_and_cancel_ends_a_wait() {
        let cores = Cores::new(2);
        let cancel = Cancel::new();
        let all = cores.take(16, &cancel).expect("clamped to 2");
        std::thread::scope(|s| {
            let (cores, c2) = (&cores, cancel.clone());
            let waiter = s.spawn(move || cores.take(1, &c2).is_none());
            std::thread::sleep(Duration::from_millis(20));
            cancel.cancel();
            assert!(waiter.join().unwrap(), "a cancelled wait gives nothing");
        });
        drop(all);
    }
}
