//! Where a run's guest time went: each boot's timeline (run.json) summed by category
//! ([`TimeKind`]), as the one line `mmx run` ends with and the table `mmx time` prints. Guest
//! time is the sum of every boot's own time, start to end, whatever ran beside it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::results::{BootTimeline, RunRecord, TimeKind};

/// Milliseconds per category.
pub type ByKind = BTreeMap<TimeKind, f64>;

/// One boot's time by category. The boot until agent-ready, the probes, each item's span;
/// whatever no event accounts for is [`TimeKind::Rest`]. Every category adds up to the boot's
/// time (spans are clamped into the boot, so a clock oddity cannot make a share negative).
pub fn of_boot(t: &BootTimeline) -> ByKind {
    let end = t.end_ms.max(0.0);
    let clamp = |ms: f64| ms.clamp(0.0, end);
    let mut by = ByKind::new();
    let ready = clamp(t.agent_ready_ms.unwrap_or(end));
    *by.entry(TimeKind::BootToReady).or_default() += ready;
    if let Some(probed) = t.probes_done_ms {
        *by.entry(TimeKind::Probes).or_default() += (clamp(probed) - ready).max(0.0);
    }
    for i in &t.items {
        *by.entry(i.kind).or_default() += (clamp(i.end_ms) - clamp(i.start_ms)).max(0.0);
    }
    let accounted: f64 = by.values().sum();
    by.insert(TimeKind::Rest, (end - accounted).max(0.0));
    by.retain(|_, ms| *ms > 0.0);
    by
}

/// One timeline per machine started, with the target it ran: a guest that served the boots of
/// several filesystems (`BootRecord::guest`) has a record per filesystem, each with that
/// filesystem's items but the guest's boot, probes and end, so they are merged back into one
/// (its items from every record) rather than counting the guest's boot once per filesystem.
pub fn machine_timelines(run: &RunRecord) -> Vec<(String, BootTimeline)> {
    merge_guests(run.boots.iter().filter_map(|b| {
        let t = b.timeline.as_ref()?;
        let guest = b.guest.as_ref().map(|g| g.id.as_str());
        Some((b.key.target.to_string(), guest, t))
    }))
}

/// [`machine_timelines`] of (target, guest id, timeline) triples in run order.
fn merge_guests<'a>(
    boots: impl Iterator<Item = (String, Option<&'a str>, &'a BootTimeline)>,
) -> Vec<(String, BootTimeline)> {
    let mut out: Vec<(String, BootTimeline)> = Vec::new();
    let mut guests: BTreeMap<&str, usize> = BTreeMap::new();
    for (target, shared, t) in boots {
        match shared.and_then(|id| guests.get(id)) {
            Some(&at) => {
                let merged = &mut out[at].1;
                merged.items.extend(t.items.iter().cloned());
                merged.end_ms = merged.end_ms.max(t.end_ms);
            }
            None => {
                if let Some(id) = shared {
                    guests.insert(id, out.len());
                }
                out.push((target, t.clone()));
            }
        }
    }
    for (_, t) in &mut out {
        t.items.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    }
    out
}

/// The breakdown of a set of boots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Breakdown {
    pub by_kind: ByKind,
    /// Boots with a timeline (a run.json from before mmx kept them has none).
    pub boots: usize,
}

impl Breakdown {
    pub fn add(&mut self, t: &BootTimeline) {
        for (k, ms) in of_boot(t) {
            *self.by_kind.entry(k).or_default() += ms;
        }
        self.boots += 1;
    }

    pub fn of_run(run: &RunRecord) -> Breakdown {
        let mut b = Breakdown::default();
        for (_, t) in machine_timelines(run) {
            b.add(&t);
        }
        b
    }

    pub fn total_ms(&self) -> f64 {
        self.by_kind.values().sum()
    }

    /// Categories by share, largest first, with their percentage of the total.
    pub fn shares(&self) -> Vec<(TimeKind, f64)> {
        let total = self.total_ms();
        let mut shares: Vec<_> = self
            .by_kind
            .iter()
            .filter(|(_, ms)| **ms > 0.0)
            .map(|(k, ms)| (*k, if total > 0.0 { ms * 100.0 / total } else { 0.0 }))
            .collect();
        shares.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        shares
    }

    /// `guest time 1207 s: 62 % storm, 21 % boot to agent-ready, …` (`None` without timelines).
    pub fn line(&self) -> Option<String> {
        if self.boots == 0 {
            return None;
        }
        let parts: Vec<String> = self
            .shares()
            .iter()
            .map(|(k, pct)| format!("{} % {}", pct_text(*pct), k.label()))
            .collect();
        Some(format!(
            "guest time {:.0} s in {} boot{}: {}",
            self.total_ms() / 1e3,
            self.boots,
            if self.boots == 1 { "" } else { "s" },
            if parts.is_empty() {
                "nothing measured".to_string()
            } else {
                parts.join(", ")
            }
        ))
    }
}

/// A share as people read it: whole percents, and `<1` rather than a `0` that is not nothing.
fn pct_text(pct: f64) -> String {
    if pct > 0.0 && pct < 0.5 {
        "<1".to_string()
    } else {
        format!("{pct:.0}")
    }
}

/// `mmx time`'s table: per target (kernel × topology, the local machine, a host) and
/// category, the seconds, the spans counted (boots for the boot's own categories, items for
/// the items') and the share of the run's guest time; then the line.
pub fn table(run: &RunRecord) -> String {
    let whole = Breakdown::of_run(run);
    let total = whole.total_ms();
    let mut rows: BTreeMap<(String, TimeKind), (f64, usize)> = BTreeMap::new();
    for (target, t) in machine_timelines(run) {
        let t = &t;
        for (k, ms) in of_boot(t) {
            let row = rows.entry((target.clone(), k)).or_default();
            row.0 += ms;
            row.1 += match k {
                TimeKind::BootToReady | TimeKind::Probes | TimeKind::Rest => 1,
                _ => t.items.iter().filter(|i| i.kind == k).count(),
            };
        }
    }
    let width = rows.keys().map(|(t, _)| t.len()).max().unwrap_or(6).max(6);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:width$}  {:22} {:>6} {:>10} {:>7}",
        "target", "kind", "count", "seconds", "share"
    );
    for ((target, kind), (ms, n)) in &rows {
        let share = if total > 0.0 { ms * 100.0 / total } else { 0.0 };
        let _ = writeln!(
            out,
            "{target:width$}  {:22} {n:>6} {:>10.1} {:>6.1}%",
            kind.label(),
            ms / 1e3,
            share
        );
    }
    match whole.line() {
        Some(line) => {
            let _ = writeln!(out, "{line}");
        }
        None => {
            let _ = writeln!(
                out,
                "no boot of this run has a timeline (run.json written by an older mmx)"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::{CellKey, LayerFs, TargetKey};
    use crate::results::ItemSpan;

    fn span(kind: TimeKind, start_ms: f64, end_ms: f64) -> ItemSpan {
        ItemSpan {
            item: 0,
            cell: CellKey {
                target: TargetKey::Local,
                filesystem: LayerFs::Unmeasured,
                scenario: protocol::ScenarioKey::Lockbench {
                    bench: protocol::lockbench::Bench::Storm,
                    name: None,
                },
            },
            kind,
            start_ms,
            end_ms,
            answered: true,
        }
    }

    fn timeline(
        ready: Option<f64>,
        probes: Option<f64>,
        items: Vec<ItemSpan>,
        end: f64,
    ) -> BootTimeline {
        BootTimeline {
            started_at: "2026-12-07T00:00:00.000Z".into(),
            agent_ready_ms: ready,
            probes_done_ms: probes,
            items,
            end_ms: end,
        }
    }

    #[test]
    fn a_boot_adds_up_to_its_own_time() {
        let t = timeline(
            Some(2_000.0),
            Some(2_500.0),
            vec![
                span(TimeKind::Mounts, 2_500.0, 4_000.0),
                span(TimeKind::Storm, 4_000.0, 9_000.0),
            ],
            10_000.0,
        );
        let by = of_boot(&t);
        assert_eq!(by[&TimeKind::BootToReady], 2_000.0);
        assert_eq!(by[&TimeKind::Probes], 500.0);
        assert_eq!(by[&TimeKind::Mounts], 1_500.0);
        assert_eq!(by[&TimeKind::Storm], 5_000.0);
        assert_eq!(by[&TimeKind::Rest], 1_000.0);
        assert_eq!(by.values().sum::<f64>(), 10_000.0);
    }

    /// A guest serving two filesystems has a record per filesystem, each with its own items and
    /// the guest's boot: merged, the guest's boot counts once and its time adds up to its own.
    #[test]
    fn a_shared_guests_records_are_one_machine() {
        let ext4 = timeline(
            Some(2_000.0),
            Some(2_500.0),
            vec![span(TimeKind::Mounts, 2_500.0, 4_000.0)],
            10_000.0,
        );
        let tmpfs = timeline(
            Some(2_000.0),
            Some(2_500.0),
            vec![span(TimeKind::Storm, 4_000.0, 9_000.0)],
            10_000.0,
        );
        let alone = timeline(Some(1_000.0), None, vec![], 3_000.0);
        let machines = merge_guests(
            [
                ("k/1s2c1t".to_string(), Some("g"), &ext4),
                ("k/1s2c1t".to_string(), Some("g"), &tmpfs),
                ("local".to_string(), None, &alone),
            ]
            .into_iter(),
        );
        assert_eq!(machines.len(), 2);
        let by = of_boot(&machines[0].1);
        assert_eq!(by[&TimeKind::BootToReady], 2_000.0, "the guest booted once");
        assert_eq!(by[&TimeKind::Mounts], 1_500.0);
        assert_eq!(by[&TimeKind::Storm], 5_000.0);
        assert_eq!(by.values().sum::<f64>(), 10_000.0);
        assert_eq!(machines[1].1, alone);
    }

    #[test]
    fn a_boot_that_never_got_ready_is_all_boot() {
        let by = of_boot(&timeline(None, None, vec![], 3_000.0));
        assert_eq!(by, ByKind::from([(TimeKind::BootToReady, 3_000.0)]));
    }

    #[test]
    fn spans_past_the_boot_are_clamped() {
        let t = timeline(
            Some(1_000.0),
            None,
            vec![span(TimeKind::Storm, 500.0, 9_000.0)],
            2_000.0,
        );
        let by = of_boot(&t);
        assert_eq!(by[&TimeKind::Storm], 1_500.0);
        assert!(!by.contains_key(&TimeKind::Rest));
        assert_eq!(by[&TimeKind::BootToReady], 1_000.0);
    }

    #[test]
    fn the_line_names_the_largest_share_first() {
        let mut b = Breakdown::default();
        b.add(&timeline(
            Some(1_000.0),
            Some(1_000.0),
            vec![
                span(TimeKind::Storm, 1_000.0, 8_000.0),
                span(TimeKind::Mounts, 8_000.0, 10_000.0),
            ],
            10_000.0,
        ));
        b.add(&timeline(Some(2_000.0), None, vec![], 2_000.0));
        assert_eq!(b.boots, 2);
        assert_eq!(b.total_ms(), 12_000.0);
        assert_eq!(
            b.line().as_deref(),
            Some("guest time 12 s in 2 boots: 58 % storm, 25 % boot to agent-ready, 17 % mounts")
        );
        assert_eq!(Breakdown::default().line(), None);
        assert_eq!(pct_text(0.2), "<1");
    }
}
