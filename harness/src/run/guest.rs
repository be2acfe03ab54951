//! One guest per kernel × topology: the boots of every filesystem of a QEMU target (`BootKey`s
//! that differ only in their filesystem) share one guest, with one scratch disk per filesystem
//! attached at once (tmpfs needs none) and each plan item on its own filesystem's disk. Booting
//! is the guest's fixed cost (5–10 s to agent-ready under TCG, and the kernel, modules and
//! initramfs once); the default matrix's 24 boots become 6.
//!
//! Records stay per boot: a [`Guest`]'s output is split back into one `BootOutput` per
//! filesystem ([`Guest::split`]) — its items' results, the probes run on that filesystem's disk
//! — and each is folded as a boot of its own, so cell keys, provenance, per-filesystem evidence
//! and known answers are what one boot per filesystem gave. Each record names the guest
//! (`results::GuestRun`).
//!
//! A panic or hang costs only the cells the guest was running: the cell of the first item without
//! a result is classified from the guest's end as before, cells that had results keep them, and
//! the cells it never reached (all of them, when it died before its agent started) are run
//! again in one fresh guest ([`Guest::split`] returns them as
//! a guest; the runner reruns once, and that guest's end is final).

use std::collections::BTreeSet;

use protocol::{Filesystem, Plan};

use super::{plan_for, BootPlan};
use crate::backend::BootOutput;
use crate::cell::BootKey;
use crate::matrix::{Cell, Target};
use crate::results::{BootEnd, GuestRun};
use crate::rundir::LogStem;
use crate::runtimes::ready::RunRuntimes;

/// The boots one guest serves: same target, one filesystem each, in key order.
#[derive(Debug, Clone)]
pub struct Guest {
    pub parts: Vec<BootPlan>,
    /// This guest reruns cells an earlier one did not reach.
    pub rerun: bool,
}

/// One boot's share of a guest's output, ready to fold.
#[derive(Debug)]
pub struct Part {
    pub boot: BootPlan,
    pub out: BootOutput,
}

impl Guest {
    /// Whether a boot belongs in a shared guest: a QEMU boot with a known filesystem.
    pub fn shares(boot: &BootPlan) -> bool {
        matches!(boot.target, Target::Qemu { .. }) && boot.key.filesystem.known().is_some()
    }

    /// The filesystems this guest serves, its disks in this order.
    pub fn filesystems(&self) -> Vec<Filesystem> {
        self.parts
            .iter()
            .filter_map(|p| p.key.filesystem.known())
            .collect()
    }

    /// The key the guest's request carries (its first boot's; notes name it).
    pub fn key(&self) -> Option<&BootKey> {
        self.parts.first().map(|p| &p.key)
    }

    /// What the guest's logs are named after.
    pub fn log_stem(&self) -> Option<LogStem> {
        self.key().map(|k| LogStem::Guest {
            target: k.target.clone(),
            rerun: self.rerun,
        })
    }

    /// What every record of this guest says about it.
    pub fn record(&self) -> Option<GuestRun> {
        Some(GuestRun {
            id: self.log_stem()?.to_string(),
            filesystems: self.filesystems(),
            rerun: self.rerun,
        })
    }

    /// The guest's plan: each boot's plan ([`plan_for`]) in turn, items numbered anew, the
    /// runtimes every boot's cells start.
    pub fn plan(&self, repeats: u32, scratch: &std::path::Path, runtimes: &RunRuntimes) -> Plan {
        let all: Vec<Cell> = self.parts.iter().flat_map(|p| p.cells.clone()).collect();
        let mut items = Vec::new();
        for p in &self.parts {
            for mut item in plan_for(p, repeats, scratch, runtimes).items {
                item.item = u32::try_from(items.len()).unwrap_or(u32::MAX);
                items.push(item);
            }
        }
        let mut plan = plan_for(
            &BootPlan {
                key: self.key().cloned().unwrap_or_else(|| BootKey {
                    target: crate::cell::TargetKey::Local,
                    filesystem: crate::cell::LayerFs::Unmeasured,
                }),
                target: self
                    .parts
                    .first()
                    .map_or(Target::Local, |p| p.target.clone()),
                cells: all,
            },
            1,
            scratch,
            runtimes,
        );
        plan.boot_id = self.log_stem().map(|s| s.to_string()).unwrap_or_default();
        plan.items = items;
        plan
    }

    /// Each boot's share of the guest's output `out`, and the guest that must run the cells this
    /// one did not reach (None when it reached all, or when its end is final: a completed plan,
    /// a broken contract, an infra error, or this guest is itself a rerun). A guest that
    /// panicked or hung before its agent started reached none.
    ///
    /// A boot whose every item answered ended `completed`; the others take the guest's end
    /// (its unreported cells are classified from it, as for a boot of their own).
    pub fn split(
        &self,
        repeats: u32,
        out: &BootOutput,
        runtimes: &RunRuntimes,
    ) -> (Vec<Part>, Option<Guest>) {
        let scratch = std::path::Path::new("/");
        let stream = &out.stream;
        // A panic in boot counts too: a loaded TCG host makes a kernel fail its timer check
        // ("IO-APIC + timer doesn't work!") now and then, and every cell is then unreached.
        let cut_short = !self.rerun
            && !stream.is_done()
            && !stream.broke_contract()
            && matches!(out.end, BootEnd::Panic { .. } | BootEnd::Timeout { .. });
        // Cells not reached: no result for any of their items, and not the one running when the
        // guest died (the first item without a result).
        let mut unreached: BTreeSet<String> = BTreeSet::new();
        if cut_short {
            let plan = self.plan(repeats, scratch, runtimes);
            let answered: BTreeSet<&str> = plan
                .items
                .iter()
                .zip(stream.results())
                .filter(|(_, r)| r.is_some())
                .map(|(i, _)| i.cell_id.as_str())
                .collect();
            // No cell was running while the kernel booted or the probes ran.
            let items_began = stream.hello.is_some()
                && (!plan.probe || stream.capabilities.len() >= self.parts.len());
            let running = plan
                .items
                .iter()
                .zip(stream.results())
                .find(|(_, r)| r.is_none())
                .filter(|_| items_began)
                .map(|(i, _)| i.cell_id.as_str());
            unreached = plan
                .items
                .iter()
                .map(|i| i.cell_id.as_str())
                .filter(|c| !answered.contains(c) && Some(*c) != running)
                .map(str::to_string)
                .collect();
        }
        let guest_plan = self.plan(repeats, scratch, runtimes);
        let mut parts = Vec::new();
        let mut rest = Vec::new();
        for p in &self.parts {
            let (gone, kept): (Vec<Cell>, Vec<Cell>) = p
                .cells
                .iter()
                .cloned()
                .partition(|c| unreached.contains(&c.key.to_string()));
            if !gone.is_empty() {
                rest.push(BootPlan {
                    cells: gone,
                    ..p.clone()
                });
            }
            if kept.is_empty() {
                continue;
            }
            let boot = BootPlan {
                cells: kept,
                ..p.clone()
            };
            let plan = plan_for(&boot, repeats, scratch, runtimes);
            let part_stream = stream.select(&plan, p.key.filesystem.known());
            let complete = part_stream.results().iter().all(Option::is_some);
            let end = if cut_short && complete {
                BootEnd::Completed
            } else {
                out.end.clone()
            };
            parts.push(Part {
                boot,
                out: BootOutput {
                    stream: part_stream,
                    end,
                    accel: out.accel,
                    logs: out.logs.clone(),
                    timings_ms: out.timings_ms.clone(),
                    kernel_source: out.kernel_source.clone(),
                    kernel_substituted: out.kernel_substituted.clone(),
                    channels: out.channels.clone(),
                    started: out.started,
                    sizing: out.sizing.clone(),
                    kernel_warnings: splats_of(out, &guest_plan, &plan, parts.is_empty()),
                    kernel_warnings_dropped: if parts.is_empty() {
                        out.kernel_warnings_dropped
                    } else {
                        0
                    },
                },
            });
        }
        let rerun = (!rest.is_empty()).then_some(Guest {
            parts: rest,
            rerun: true,
        });
        (parts, rerun)
    }
}

/// The splats of a guest's output that belong to one of its boots, renumbered into that boot's
/// plan: those printed during its items (matched as [`crate::backend::ResultStream::select`]
/// matches results: the n-th item of a cell in the guest is its n-th item in the boot), and,
/// for the `first` boot only, those printed outside any item (kernel boot, probes), so every
/// splat lands on exactly one record.
fn splats_of(
    out: &BootOutput,
    guest: &Plan,
    part: &Plan,
    first: bool,
) -> Vec<crate::results::KernelWarning> {
    use protocol::kmsg::Phase;
    let mut taken = vec![false; guest.items.len()];
    let mut renumber = std::collections::BTreeMap::new();
    for item in &part.items {
        if let Some(i) =
            (0..guest.items.len()).find(|&i| !taken[i] && guest.items[i].cell_id == item.cell_id)
        {
            taken[i] = true;
            renumber.insert(guest.items[i].item, item.item);
        }
    }
    out.kernel_warnings
        .iter()
        .filter_map(|w| match w.during {
            Some(Phase::Item(i)) => renumber.get(&i).map(|&n| crate::results::KernelWarning {
                during: Some(Phase::Item(n)),
                ..w.clone()
            }),
            _ => first.then(|| w.clone()),
        })
        .collect()
}

/// Boots in guests: every QEMU boot with a known filesystem joins the guest of its target (in
/// key order); the others are returned as they are.
pub fn guests_of(boots: Vec<BootPlan>) -> (Vec<Guest>, Vec<BootPlan>) {
    let mut guests: Vec<Guest> = Vec::new();
    let mut alone = Vec::new();
    for b in boots {
        if !Guest::shares(&b) {
            alone.push(b);
            continue;
        }
        match guests
            .iter_mut()
            .find(|g| g.key().is_some_and(|k| k.target == b.key.target))
        {
            Some(g) => g.parts.push(b),
            None => guests.push(Guest {
                parts: vec![b],
                rerun: false,
            }),
        }
    }
    for g in &mut guests {
        g.parts.sort_by(|a, b| a.key.cmp(&b.key));
    }
    (guests, alone)
}

// Tests: `run/tests.rs`, beside the folding they feed.
