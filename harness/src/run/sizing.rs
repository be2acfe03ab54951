//! A boot's plan sized for its accelerator: what [`Sizing::decide`] chose, applied to the lock
//! benchmarks' items. Sized (single-threaded TCG), every benchmark still runs every lock,
//! pinning, strategy and table size it names — so every cell, point name, known answer and
//! chart is still there — but as a smoke: minimal windows, and a storm with its one mountinfo
//! reader (the read time against the table's size, the curve that is real under TCG) and one
//! container per thread. Mounts cells are answers, not contention numbers: never sized.

use protocol::lockbench::{Bench, LockbenchScenario};
use protocol::{Plan, Scenario};

use crate::results::Sizing;

/// A sized benchmark's warm-up: none (the smoke is not a measurement).
pub const SMOKE_WARMUP_MS: u64 = 0;
/// A sized benchmark's measured window: long enough for every thread to take the lock.
pub const SMOKE_WINDOW_MS: u64 = 10;
/// A sized storm's containers per point: one per starting thread (the agent never starts
/// fewer containers than threads).
pub const SMOKE_STORM_CONTAINERS: u32 = 1;

/// Size `plan`'s lock benchmarks as `sizing` says (a full sizing leaves it as it is).
pub fn apply(plan: &mut Plan, sizing: Sizing) {
    if !sizing.is_sized() {
        return;
    }
    for item in &mut plan.items {
        if let Scenario::Lockbench(l) = &mut item.scenario {
            smoke(l);
        }
    }
}

/// One benchmark as its smoke. Only shrinks: a matrix that already asks for less keeps it.
fn smoke(l: &mut LockbenchScenario) {
    l.warmup_ms = l.warmup_ms.min(SMOKE_WARMUP_MS);
    l.duration_ms = l.duration_ms.min(SMOKE_WINDOW_MS);
    match l.bench {
        // The stat() bystanders time QEMU's turns; the mountinfo reader is the curve.
        Bench::Storm => {
            l.readers = 0;
            l.containers = l.containers.min(SMOKE_STORM_CONTAINERS);
        }
        Bench::UserSpin | Bench::MountLock | Bench::Mountinfo => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Accel, TcgBenchmarks};

    fn plan(scenarios: Vec<Scenario>) -> Plan {
        let mut p = crate::test_support::tiny_plan(&vec!["c"; scenarios.len()]);
        for (item, s) in p.items.iter_mut().zip(scenarios) {
            item.scenario = s;
        }
        p
    }

    fn storm() -> LockbenchScenario {
        LockbenchScenario {
            bench: Bench::Storm,
            prepopulated_mounts: vec![0, 1_000, 10_000],
            threads: vec![2],
            containers: 6,
            readers: 1,
            warmup_ms: 20,
            duration_ms: 100,
            ..Default::default()
        }
    }

    #[test]
    fn sized_benchmarks_keep_every_point_and_shrink_the_rest() {
        let mounts = crate::test_support::tiny_plan(&["m"]).items[0]
            .scenario
            .clone();
        let spin = LockbenchScenario::default();
        let mut p = plan(vec![
            mounts.clone(),
            Scenario::Lockbench(storm()),
            Scenario::Lockbench(spin.clone()),
        ]);
        apply(
            &mut p,
            Sizing::decide(Accel::Tcg, TcgBenchmarks::Sized, false),
        );
        assert_eq!(p.items[0].scenario, mounts, "mounts cells are never sized");
        let Scenario::Lockbench(s) = &p.items[1].scenario else {
            panic!("storm")
        };
        assert_eq!(
            s.prepopulated_mounts,
            vec![0, 1_000, 10_000],
            "the curve stays"
        );
        assert_eq!(s.strategies, storm().strategies);
        assert_eq!(s.threads, vec![2]);
        assert_eq!((s.readers, s.containers), (0, SMOKE_STORM_CONTAINERS));
        assert_eq!((s.warmup_ms, s.duration_ms), (0, SMOKE_WINDOW_MS));
        let Scenario::Lockbench(u) = &p.items[2].scenario else {
            panic!("user-spin")
        };
        assert_eq!(
            (&u.locks, &u.pinning, &u.threads),
            (&spin.locks, &spin.pinning, &spin.threads)
        );
        assert_eq!(u.duration_ms, SMOKE_WINDOW_MS);
        // Every sized scenario is still one the agent takes.
        for i in &p.items {
            i.scenario.validate().expect("valid");
        }
    }

    #[test]
    fn a_full_sizing_leaves_the_plan_alone() {
        let before = plan(vec![Scenario::Lockbench(storm())]);
        for sizing in [
            Sizing::decide(Accel::Kvm, TcgBenchmarks::Sized, false),
            Sizing::decide(Accel::Tcg, TcgBenchmarks::Full, false),
            Sizing::decide(Accel::Tcg, TcgBenchmarks::Sized, true),
        ] {
            let mut p = before.clone();
            apply(&mut p, sizing);
            assert_eq!(p, before, "{sizing:?}");
        }
    }
}
