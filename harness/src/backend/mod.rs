//! Backends run one boot's plan somewhere and hand back what the agent said and how it ended:
//! [`local`] on this machine's kernel, [`qemu`] in a guest, [`ssh`] on a metal host.
//!
//! They share one contract: a [`BootRequest`] in, a [`BootOutput`] out, never an `Err` for a
//! problem on the far side (that is a [`BootEnd`]), so one broken boot never loses the others.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use protocol::Plan;

use crate::cell::BootKey;
use crate::events::SharedSink;
use crate::proc::Cancel;
use crate::results::{
    Accel, BootEnd, ChannelStats, InfraCause, KernelWarning, LockSubstitution, RunDir,
};

pub mod host_settings;
pub mod leftovers;
pub mod local;
pub mod placement;
pub mod qemu;
pub mod splat;
pub mod ssh;
pub mod stream;
pub mod supervise;

pub use placement::Placement;
pub use stream::ResultStream;

/// The three watchdogs of one boot, from the start of the boot. `run` computes them once from
/// the plan ([`Deadlines::for_plan`]); each backend scales them for its accelerator
/// ([`Deadlines::under`]) and hands them to the one watchdog of its supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Until the agent says hello (a guest's kernel boot; an SSH connect and copy).
    pub boot: Duration,
    /// The longest silence on every channel together.
    pub silence: Duration,
    /// The whole boot, start to exit.
    pub plan: Duration,
}

/// How much slower than KVM or metal every deadline is under TCG.
pub const TCG_SCALE: u32 = 3;

/// An item without its own `timeout_s` is given this long.
const DEFAULT_ITEM: Duration = Duration::from_secs(300);

/// Time the agent's feature probes may take.
const PROBES: Duration = Duration::from_secs(30);

impl Deadlines {
    /// From the plan's items (each item's own limit, which the agent enforces) and what it
    /// takes the backend to get the agent going (`start`: a guest's boot, an SSH connect and
    /// copy). Items may be silent while they run, so silence covers the longest item.
    pub fn for_plan(plan: &Plan, start: Duration) -> Deadlines {
        let item = |i: &protocol::PlanItem| i.timeout_s.map_or(DEFAULT_ITEM, Duration::from_secs);
        let items: Duration = plan.items.iter().map(item).sum();
        let longest = plan.items.iter().map(item).max().unwrap_or_default();
        Deadlines {
            boot: start,
            silence: start + longest + PROBES,
            plan: start + items + PROBES,
        }
    }

    /// These deadlines for a boot under `accel`: stretched under TCG, where a slow emulator is
    /// not a hung kernel.
    pub fn under(self, accel: Accel) -> Deadlines {
        let scale = if accel.is_emulated() { TCG_SCALE } else { 1 };
        Deadlines {
            boot: self.boot * scale,
            silence: self.silence * scale,
            plan: self.plan * scale,
        }
    }
}

/// One boot's work.
#[derive(Debug, Clone)]
pub struct BootRequest {
    /// The cells' common target and filesystem.
    pub key: BootKey,
    /// What the agent must do (all cells of the boot, repeats included).
    pub plan: Plan,
    /// Computed by `run` from the plan; scaled by the backend for its accelerator.
    pub deadlines: Deadlines,
    /// Where logs go (`RunDir::log_rel(key, channel)`).
    pub run_dir: RunDir,
    pub cancel: Cancel,
    /// Where the backend reports what the user should know (a host setting restored, a host
    /// left untidy).
    pub sink: SharedSink,
}

/// What came back from one boot.
#[derive(Debug)]
pub struct BootOutput {
    /// Everything the agent managed to send that kept the contract, and what broke it.
    pub stream: ResultStream,
    pub end: BootEnd,
    pub accel: Accel,
    /// When the boot started: `timings_ms` and the stream's instants are measured from here.
    pub started: Instant,
    /// How `run` sized the plan's benchmarks for the accelerator (`None`: it ran none).
    pub sizing: Option<crate::results::Sizing>,
    /// Logs kept, relative to the run directory.
    pub logs: Vec<PathBuf>,
    /// Phase timings in ms since the boot started (see `results::BootRecord::timings_ms`).
    pub timings_ms: BTreeMap<String, f64>,
    /// Where the kernel came from (package + version, a path), when the backend knows.
    pub kernel_source: Option<String>,
    /// The archive no longer carried the locked kernel and this one ran instead: both.
    pub kernel_substituted: Option<LockSubstitution>,
    /// What each channel carried and what the bounds did to it.
    pub channels: BTreeMap<String, ChannelStats>,
    /// The console's splats that did not end the boot ([`splat`]), and how many past the
    /// bound were only counted. Only a guest's console shows them.
    pub kernel_warnings: Vec<KernelWarning>,
    pub kernel_warnings_dropped: u64,
}

impl BootOutput {
    /// A boot that never got going.
    pub fn infra(
        plan: &Plan,
        accel: Accel,
        cause: InfraCause,
        message: impl Into<String>,
        logs: Vec<PathBuf>,
    ) -> BootOutput {
        BootOutput {
            stream: ResultStream::new(plan),
            end: BootEnd::infra(cause, message),
            accel,
            started: Instant::now(),
            sizing: None,
            logs,
            timings_ms: BTreeMap::new(),
            kernel_source: None,
            kernel_substituted: None,
            channels: BTreeMap::new(),
            kernel_warnings: Vec::new(),
            kernel_warnings_dropped: 0,
        }
    }
}

/// Milliseconds between two instants, for timings maps.
pub fn ms_between(start: Instant, end: Instant) -> f64 {
    end.saturating_duration_since(start).as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{MountsScenario, PlanItem, Scenario, Strategy};

    fn plan(timeouts: &[Option<u64>]) -> Plan {
        Plan {
            schema_version: protocol::SCHEMA_VERSION,
            boot_id: "b".into(),
            scratch_dir: "/x".into(),
            scratch_disks: Vec::new(),
            modules: vec![],
            probe: true,
            items: timeouts
                .iter()
                .enumerate()
                .map(|(i, t)| PlanItem {
                    item: i as u32,
                    cell_id: "c".into(),
                    scenario: Scenario::Mounts(MountsScenario {
                        strategy: Strategy::PerLayer.into(),
                        layers: 1,
                        containers: 1,
                        concurrency: 1,
                        passes: 2,
                        watchers: Vec::new(),
                    }),
                    timeout_s: *t,
                    filesystem: None,
                })
                .collect(),
            runtimes: vec![],
        }
    }

    #[test]
    fn deadlines_grow_with_items_and_under_tcg() {
        let boot = Duration::from_secs(40);
        let kvm = Deadlines::for_plan(&plan(&[Some(10), Some(20)]), boot).under(Accel::Kvm);
        assert_eq!(kvm.boot, Duration::from_secs(40));
        assert_eq!(kvm.plan, Duration::from_secs(40 + 30 + 30));
        assert_eq!(kvm.silence, Duration::from_secs(40 + 20 + 30));
        let tcg = Deadlines::for_plan(&plan(&[Some(10), Some(20)]), boot).under(Accel::Tcg);
        assert_eq!(tcg.plan, Duration::from_secs(3 * 100));
        let default = Deadlines::for_plan(&plan(&[None]), boot);
        assert_eq!(default.plan, Duration::from_secs(40 + 300 + 30));
    }
}
