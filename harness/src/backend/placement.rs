//! Where a boot's plan runs. `run::plan_for` makes the plan complete in what the agent must do:
//! the items, their limits, the runtimes they start and each runtime's SHA-256. Where it runs is
//! known only to the backend, once the boot is under way: the far side's scratch and runtime
//! directories (a guest's fixed paths, the run's log directory, a host's fresh temp directory),
//! a guest's scratch disk and the modules its kernel needs, and whether an emulator runs it (the
//! KVM verdict, made per boot and retried under TCG). [`Placement`] is that input, typed, and
//! [`Placement::plan`] makes the plan the agent reads from the two in one step: nothing is
//! patched into a plan afterwards.

use std::path::PathBuf;

use protocol::{Plan, PlanItem, PlanRuntime, ScratchDisk};

/// Where one boot's plan runs: everything in the agent's plan that only the backend knows.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The layers' parent directory on the far side.
    pub scratch_dir: PathBuf,
    /// The devices (or tmpfs) the agent mounts under `scratch_dir` first, one per filesystem
    /// the boot serves: guests only.
    pub scratch_disks: Vec<ScratchDisk>,
    /// Kernel modules the agent loads first, as paths in the initramfs: guests only.
    pub modules: Vec<PathBuf>,
    /// Where the runtimes' copies are on the far side, each as `<runtimes_dir>/<name>`.
    pub runtimes_dir: PathBuf,
    /// Item limits and runtime job limits are this many times the run's: `TCG_SCALE` under an
    /// emulator (a slow emulator is not a hung kernel or a hung runtime), else 1.
    pub limit_scale: u64,
}

impl Placement {
    /// The plan the agent reads: the run's `plan`, placed here. Every field is named, so a new
    /// one cannot be passed through unplaced by accident.
    pub fn plan(&self, plan: &Plan) -> Plan {
        let Plan {
            schema_version,
            boot_id,
            // The run's scratch dir is the local backend's placement; every backend says its own.
            scratch_dir: _,
            // Only a backend knows these; the run's plan has none.
            scratch_disks: _,
            modules: _,
            probe,
            items,
            runtimes,
        } = plan;
        let scale = self.limit_scale.max(1);
        let job_max = protocol::limits::RUNTIME_JOB_TIMEOUT_S.max;
        Plan {
            schema_version: *schema_version,
            boot_id: boot_id.clone(),
            scratch_dir: self.scratch_dir.clone(),
            scratch_disks: self.scratch_disks.clone(),
            modules: self.modules.clone(),
            probe: *probe,
            items: items
                .iter()
                .map(|i| PlanItem {
                    timeout_s: i.timeout_s.map(|t| t.saturating_mul(scale)),
                    // A plan made for one filesystem (its items name none) runs on the one disk.
                    filesystem: i.filesystem.or(match self.scratch_disks.as_slice() {
                        [one] => Some(one.filesystem),
                        _ => None,
                    }),
                    ..i.clone()
                })
                .collect(),
            runtimes: runtimes
                .iter()
                .map(|r| PlanRuntime {
                    path: self.runtimes_dir.join(r.name.as_str()),
                    job_timeout_s: r.job_timeout_s.saturating_mul(scale).min(job_max),
                    ..r.clone()
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Filesystem, MountStrategy, MountsScenario, Scenario};

    fn run_plan() -> Plan {
        let name: protocol::RuntimeName = "rt".parse().unwrap();
        Plan {
            schema_version: protocol::SCHEMA_VERSION,
            boot_id: "b".into(),
            scratch_dir: "/run/scratch".into(),
            scratch_disks: Vec::new(),
            modules: vec![],
            probe: true,
            items: vec![PlanItem {
                item: 0,
                cell_id: "c".into(),
                scenario: Scenario::Mounts(MountsScenario {
                    strategy: MountStrategy::Runtime(name.clone()),
                    layers: 1,
                    containers: 1,
                    concurrency: 1,
                    passes: 2,
                    watchers: Vec::new(),
                }),
                timeout_s: Some(100),
                filesystem: None,
            }],
            runtimes: vec![PlanRuntime {
                name,
                path: "/home/me/.cache/mmx/runtimes/k/mmx-runtime".into(),
                args: vec!["--x".into()],
                job_timeout_s: 3000,
                sha256: "ab".repeat(32),
            }],
        }
    }

    #[test]
    fn a_placed_plan_is_the_runs_plan_where_it_runs() {
        let run = run_plan();
        let guest = Placement {
            scratch_dir: "/scratch".into(),
            scratch_disks: vec![ScratchDisk {
                device: "/dev/vda".into(),
                filesystem: Filesystem::Ext4,
            }],
            modules: vec!["/lib/modules/overlay.ko".into()],
            runtimes_dir: "/runtimes".into(),
            limit_scale: 3,
        };
        let placed = guest.plan(&run);
        assert_eq!(placed.scratch_dir, PathBuf::from("/scratch"));
        assert_eq!(placed.scratch_disks, guest.scratch_disks);
        assert_eq!(placed.modules, guest.modules);
        assert_eq!(placed.items[0].timeout_s, Some(300));
        // The item names no filesystem: it runs on the guest's one disk.
        assert_eq!(placed.items[0].filesystem, Some(Filesystem::Ext4));
        assert_eq!(placed.runtimes[0].path, PathBuf::from("/runtimes/rt"));
        // Stretched, but never past what the contract allows a job.
        assert_eq!(
            placed.runtimes[0].job_timeout_s,
            protocol::limits::RUNTIME_JOB_TIMEOUT_S.max
        );
        // What the agent must do is the run's.
        assert_eq!(
            (&placed.boot_id, placed.probe, &placed.runtimes[0].sha256),
            (&run.boot_id, run.probe, &run.runtimes[0].sha256)
        );
        assert_eq!(placed.items[0].cell_id, run.items[0].cell_id);

        let host = Placement {
            scratch_dir: "/var/tmp/mmx.x/scratch".into(),
            scratch_disks: Vec::new(),
            modules: vec![],
            runtimes_dir: "/var/tmp/mmx.x/runtimes".into(),
            limit_scale: 1,
        };
        let placed = host.plan(&run);
        assert_eq!(placed.items[0].timeout_s, Some(100));
        assert_eq!(placed.items[0].filesystem, None);
        assert_eq!(placed.runtimes[0].job_timeout_s, 3000);
        assert_eq!(
            placed.runtimes[0].path,
            PathBuf::from("/var/tmp/mmx.x/runtimes/rt")
        );
    }
}
