//! The view model: everything the report templates show, computed from a [`RunRecord`] alone.
//! Templates only loop and place; every grouping, ordering, number format and footnote is
//! decided here, so the markdown, HTML and JUnit outputs can never disagree.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use protocol::{Evidence, MountStrategy, Outcome, Scenario, Strategy};
use serde::Serialize;

use super::counts::{mount_counts, MountCounts};
pub use super::perf::{
    perf_value, perf_value_marked, PerfColumn, PerfRow, PerfTable, PerfValue, SERIALIZED_NOTE,
};
use super::sections::{boots, probes, provenance, BootRow, ProbeTable, ProvRow};
use super::warnings::{warnings, WarningRow};
use crate::results::{CellRecord, LockSubstitution, RunRecord};

#[derive(Debug, Serialize)]
pub struct ReportModel {
    pub run: RunHeader,
    /// What † on a value means.
    pub serialized_note: &'static str,
    pub counts: Vec<CountEntry>,
    pub matrix: CompatMatrix,
    pub footnotes: Vec<Footnote>,
    pub perf: Vec<PerfTable>,
    /// How the kernels counted mounts, allocations against the sequences, the agent's notes.
    pub mount_counts: MountCounts,
    pub provenance: Vec<ProvRow>,
    pub probes: ProbeTable,
    pub boots: Vec<BootRow>,
    /// The kernel's splats that did not end a boot, by cell.
    pub kernel_warnings: Vec<WarningRow>,
}

#[derive(Debug, Serialize)]
pub struct RunHeader {
    pub run_id: String,
    pub mmx_version: String,
    pub started_at: String,
    pub finished_at: String,
    pub matrix: String,
    pub shard: Option<String>,
    pub host: String,
    pub cells: usize,
    pub boots: usize,
    pub not_ok: usize,
    /// Accelerators the cells ran under, e.g. `tcg` or `kvm, tcg`.
    pub accels: String,
    /// How the boots' benchmarks were sized, and why: one line per distinct sizing.
    pub sizings: Vec<SizingLine>,
    pub verdict: String,
    /// The runtimes the run's `runtime:NAME` columns started: their identity.
    pub runtimes: Vec<RuntimeLine>,
    /// Kernels and runtimes that are not what the lock files pin: Debian's archive no longer
    /// carried the pinned packages and others ran. Empty in a frozen (`--locked`, CI) run.
    pub substituted: Vec<SubstitutionLine>,
}

/// One way the run's boots were sized (`sized for TCG: …`, `full: …`) and how many were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SizingLine {
    pub text: &'static str,
    pub sized: bool,
    pub boots: usize,
}

/// The run's sizings, sized first (what a reader must not take for a full sweep).
fn sizing_lines(run: &RunRecord) -> Vec<SizingLine> {
    let mut by: std::collections::BTreeMap<crate::results::Sizing, usize> = Default::default();
    for s in run.boots.iter().filter_map(|b| b.sizing) {
        *by.entry(s).or_default() += 1;
    }
    by.into_iter()
        .map(|(s, boots)| SizingLine {
            text: s.describe(),
            sized: s.is_sized(),
            boots,
        })
        .collect()
}

/// A lock entry the archive no longer carried, and what ran in its place.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SubstitutionLine {
    /// `kernel debian-6.1`, `runtime containerd-2.1`.
    pub what: String,
    /// The packages the lock pins, `name=version`, comma-separated.
    pub locked: String,
    /// The packages used instead.
    pub used: String,
}

/// Every substitution of the run, once each: kernels from their cells' provenance, runtimes
/// from the run's runtime records.
fn substitution_lines(run: &RunRecord) -> Vec<SubstitutionLine> {
    let line = |what: String, s: &LockSubstitution| SubstitutionLine {
        what,
        locked: s.locked.join(", "),
        used: s.used.join(", "),
    };
    let kernels = run.cells.iter().filter_map(|c| {
        let s = c.provenance.kernel_substituted.as_ref()?;
        let (kernel, _) = c.key.target.row();
        Some(line(format!("kernel {kernel}"), s))
    });
    let runtimes = run.runtimes.iter().filter_map(|r| {
        let s = r.substituted.as_ref()?;
        Some(line(format!("runtime {}", r.name), s))
    });
    let set: BTreeSet<SubstitutionLine> = kernels.chain(runtimes).collect();
    set.into_iter().collect()
}

/// One runtime of the run, for the header and the provenance section.
#[derive(Debug, Serialize)]
pub struct RuntimeLine {
    /// `runtime:containerd-2.1`.
    pub column: String,
    /// Where it came from: `containerd 2.1.9+ds1-5 (debian sid, go1.27.3)`, a commit, a binary.
    pub source: String,
    /// What it said it is (its hello), as seen by the cells.
    pub said: String,
    /// The first 12 hex digits of its executable's SHA-256.
    pub sha256: String,
    pub args: String,
    /// `cached`, `built in 61.2 s`, or empty when it was not made ready.
    pub build: String,
    /// Why it was not made ready (its cells are infra-error).
    pub error: String,
}

fn runtime_lines(run: &RunRecord) -> Vec<RuntimeLine> {
    run.runtimes
        .iter()
        .map(|r| {
            let said = run
                .cells
                .iter()
                .filter_map(|c| c.provenance.runtime.as_ref())
                .find(|x| x.name == r.name)
                .and_then(|x| x.said.clone())
                .unwrap_or_default();
            RuntimeLine {
                column: format!("{}{}", MountStrategy::RUNTIME_PREFIX, r.name),
                source: r.describe.clone(),
                said,
                sha256: r
                    .sha256
                    .as_deref()
                    .map(|h| h.get(..12).unwrap_or(h).to_string())
                    .unwrap_or_default(),
                args: r.args.join(" "),
                build: match r.build {
                    Some(b) if b.cached => "cached".into(),
                    Some(b) => format!("built in {:.1} s", b.seconds),
                    None => String::new(),
                },
                error: r
                    .error
                    .as_deref()
                    .map(|e| one_line(e, EVIDENCE_CHARS))
                    .unwrap_or_default(),
            }
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct CountEntry {
    pub outcome: &'static str,
    pub symbol: &'static str,
    pub glyph: &'static str,
    pub count: usize,
}

#[derive(Debug, Serialize)]
pub struct CompatMatrix {
    /// Column groups: one per strategy (or lockbench bench), spanning its filesystems.
    pub groups: Vec<ColGroup>,
    pub columns: Vec<ColHead>,
    pub rows: Vec<MatrixRow>,
}

#[derive(Debug, Serialize)]
pub struct ColGroup {
    pub name: String,
    pub span: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColHead {
    pub family: String,
    pub filesystem: String,
}

#[derive(Debug, Serialize)]
pub struct MatrixRow {
    pub kernel: String,
    pub topology: String,
    pub release: String,
    pub accel: String,
    pub cells: Vec<MatrixCell>,
}

#[derive(Debug, Serialize)]
pub struct MatrixCell {
    /// Worst outcome among the cells in this slot; `None` when the matrix has no cell here.
    pub outcome: Option<&'static str>,
    pub symbol: &'static str,
    pub glyph: &'static str,
    /// `pass`, or `fail 2/3` when the slot's cells disagree.
    pub word: String,
    /// The guest did not see the topology it asked for (⚠, with its note among `notes`).
    pub topology_warning: bool,
    /// The kernel printed a splat while one of the slot's cells ran (the kernel-warnings
    /// section shows it).
    pub kernel_warning: bool,
    pub notes: Vec<usize>,
    pub title: String,
}

/// The mark of a topology note: the cells ran, but not on the topology their row names.
pub const TOPOLOGY_MARK: &str = "⚠";
/// The mark of a slot whose cells ran while the kernel printed a warning.
pub const KERNEL_WARNING_MARK: &str = "⚡";
/// What a topology note's `outcome` says (CSS class `o-topology`).
pub const TOPOLOGY_NOTE: &str = "topology";

#[derive(Debug, Serialize)]
pub struct Footnote {
    pub n: usize,
    /// An outcome, or [`TOPOLOGY_NOTE`].
    pub outcome: &'static str,
    pub symbol: &'static str,
    pub glyph: &'static str,
    pub evidence: String,
    /// Where it was seen, per boot: `debian-6.1 · 1s2c1t · tmpfs (9 cells)` or, for one or two
    /// cells, their scenarios. Capped at [`FOOTNOTE_PLACES`]; `more` counts the rest.
    pub cells: Vec<String>,
    pub more: usize,
}

/// Footnotes list at most this many places (boots) each; the rest are counted.
const FOOTNOTE_PLACES: usize = 6;
/// Evidence longer than this is cut (a console excerpt belongs in the log, not the table).
pub(super) const EVIDENCE_CHARS: usize = 240;

pub fn build(run: &RunRecord) -> ReportModel {
    let mut cells: Vec<&CellRecord> = run.cells.iter().collect();
    cells.sort_by(|a, b| cell_order(a, b));
    let (matrix, footnotes) = compat_matrix(&cells);
    let not_ok = run.cells.iter().filter(|c| !c.is_ok()).count();
    let accels: BTreeSet<&str> = run
        .cells
        .iter()
        .map(|c| c.provenance.accel.as_str())
        .collect();
    ReportModel {
        serialized_note: SERIALIZED_NOTE,
        run: RunHeader {
            run_id: run.run_id.clone(),
            mmx_version: run.mmx_version.clone(),
            started_at: run.started_at.clone(),
            finished_at: run.finished_at.clone(),
            matrix: run.matrix.clone(),
            shard: run.shard.clone(),
            host: format!(
                "{} ({}, {} CPUs, {} MiB, Linux {})",
                run.host.hostname,
                run.host.cpu_model,
                run.host.cpus,
                run.host.memory_mib,
                run.host.kernel_release
            ),
            cells: run.cells.len(),
            boots: run.boots.len(),
            not_ok,
            accels: accels.into_iter().collect::<Vec<_>>().join(", "),
            sizings: sizing_lines(run),
            runtimes: runtime_lines(run),
            substituted: substitution_lines(run),
            verdict: if run.cells.is_empty() {
                "no cells ran".into()
            } else if not_ok == 0 {
                format!(
                    "all {} cells pass or are unsupported{}",
                    run.cells.len(),
                    if run.cells.iter().any(|c| c.expected.is_some()) {
                        " as expected"
                    } else {
                        ""
                    }
                )
            } else {
                format!(
                    "{not_ok} of {} cells {}",
                    run.cells.len(),
                    if run.cells.iter().any(|c| c.expected.is_some()) {
                        "failed or broke their known answer"
                    } else {
                        "did not pass"
                    }
                )
            },
        },
        counts: run
            .outcome_counts()
            .into_iter()
            .map(|(o, count)| CountEntry {
                outcome: o.as_str(),
                symbol: o.symbol(),
                glyph: glyph(o),
                count,
            })
            .collect(),
        matrix,
        footnotes,
        perf: super::perf::perf_tables(&cells),
        mount_counts: mount_counts(&cells),
        provenance: provenance(&cells),
        probes: probes(run),
        boots: boots(run),
        kernel_warnings: warnings(run),
    }
}

// ---------------------------------------------------------------------------------------------
// Ordering helpers.
// ---------------------------------------------------------------------------------------------

/// Column family of a cell: the strategy for mount cells (the three built-ins in their order,
/// then the runtimes by name, `runtime:<name>`), `lockbench-<bench>` otherwise.
pub fn family(s: &Scenario) -> (usize, String) {
    match s {
        Scenario::Mounts(m) => match &m.strategy {
            MountStrategy::Builtin(b) => (
                Strategy::ALL.iter().position(|x| x == b).unwrap_or(0),
                b.as_str().to_string(),
            ),
            MountStrategy::Runtime(_) => (Strategy::ALL.len(), m.strategy.to_string()),
        },
        Scenario::Lockbench(l) => (Strategy::ALL.len() + 1, l.label()),
    }
}

/// The filesystem a cell's matrix column is about: the lock benchmark does not depend on the
/// layers' filesystem, so its cells share one column per row (`all`, with the per-filesystem
/// outcomes folded as for layer counts).
fn column_fs(c: &CellRecord) -> String {
    match c.scenario {
        Scenario::Mounts(_) => c.key.filesystem.to_string(),
        Scenario::Lockbench(_) => "all".into(),
    }
}

/// A matrix column's filesystem in `Filesystem` order (ext4, xfs, btrfs, tmpfs), `all` after.
pub fn fs_rank(fs: &str) -> usize {
    protocol::Filesystem::ALL
        .iter()
        .position(|x| x.as_str() == fs)
        .unwrap_or(protocol::Filesystem::ALL.len())
}

/// Report order: target (row), then column family, then filesystem, then the rest of the key.
fn cell_order(a: &CellRecord, b: &CellRecord) -> Ordering {
    a.key
        .target
        .cmp(&b.key.target)
        .then_with(|| family(&a.scenario).cmp(&family(&b.scenario)))
        .then_with(|| a.key.filesystem.cmp(&b.key.filesystem))
        .then_with(|| a.key.cmp(&b.key))
}

/// Outcome symbols for the HTML report: plain Unicode that common system fonts (DejaVu,
/// Liberation) carry, so the page reads right without an emoji font. report.md keeps
/// [`Outcome::symbol`] (GitHub renders emoji).
pub fn glyph(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "✓",
        Outcome::Fail => "✗",
        Outcome::Unsupported => "⊘",
        Outcome::Timeout => "◷",
        Outcome::Panic => "☠",
        Outcome::InfraError => "⚠",
    }
}

// ---------------------------------------------------------------------------------------------
// Text helpers.
// ---------------------------------------------------------------------------------------------

/// First line of `s`, control characters dropped, cut to `max` characters.
pub use crate::oneline::first as one_line;

/// The evidence in one line: failing step, errno name and number, first line of the detail.
pub fn evidence_text(e: Option<&Evidence>) -> String {
    let Some(e) = e else {
        return "no evidence recorded".into();
    };
    let mut s = evidence_headline(e);
    let detail = one_line(&e.detail, EVIDENCE_CHARS);
    if !detail.is_empty() {
        s.push_str(" — ");
        s.push_str(&detail);
    }
    s
}

/// The failing step and its errno, without the per-cell detail: what makes an `unsupported`
/// answer the same answer across cells.
pub fn evidence_headline(e: &Evidence) -> String {
    let mut s = one_line(&e.step, EVIDENCE_CHARS);
    match (e.errno_name(), e.errno) {
        (Some(name), Some(n)) => s.push_str(&format!(": {name} ({n})")),
        (_, Some(n)) => s.push_str(&format!(": errno {n}")),
        (_, None) => {}
    }
    s
}

/// Compact numbers for tables: 3 significant digits, k/M/G above 10,000.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a >= 1e10 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e7 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || a == 0.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

// ---------------------------------------------------------------------------------------------
// Sections.
// ---------------------------------------------------------------------------------------------

fn compat_matrix(cells: &[&CellRecord]) -> (CompatMatrix, Vec<Footnote>) {
    // Columns: family × filesystem, in family then filesystem order.
    let mut cols: BTreeMap<((usize, String), usize, String), ()> = BTreeMap::new();
    let mut rows: Vec<&crate::cell::TargetKey> = Vec::new();
    let mut slots: HashMap<(usize, usize), Vec<&CellRecord>> = HashMap::new();
    for c in cells {
        cols.insert(
            (family(&c.scenario), fs_rank(&column_fs(c)), column_fs(c)),
            (),
        );
    }
    let col_keys: Vec<_> = cols.into_keys().collect();
    let col_index: HashMap<(String, String), usize> = col_keys
        .iter()
        .enumerate()
        .map(|(i, ((_, f), _, fs))| ((f.clone(), fs.clone()), i))
        .collect();
    for c in cells {
        // `cells` is sorted by target first: a new row is always the last one.
        if rows.last() != Some(&&c.key.target) {
            rows.push(&c.key.target);
        }
        let ci = col_index[&(family(&c.scenario).1, column_fs(c))];
        slots.entry((rows.len() - 1, ci)).or_default().push(c);
    }
    let columns: Vec<ColHead> = col_keys
        .iter()
        .map(|((_, f), _, fs)| ColHead {
            family: f.clone(),
            filesystem: fs.clone(),
        })
        .collect();
    let mut groups: Vec<ColGroup> = Vec::new();
    for c in &columns {
        match groups.last_mut() {
            Some(g) if g.name == c.family => g.span += 1,
            _ => groups.push(ColGroup {
                name: c.family.clone(),
                span: 1,
            }),
        }
    }

    let mut notes: Vec<Footnote> = Vec::new();
    let mut note_index: HashMap<(&'static str, String), usize> = HashMap::new();
    let mut places: Vec<Vec<(String, Vec<String>)>> = Vec::new();
    let mut out_rows = Vec::new();
    for (ri, target) in rows.iter().enumerate() {
        let (kernel, topology) = target.row();
        let mut releases = BTreeSet::new();
        let mut accels = BTreeSet::new();
        let mut row_cells = Vec::new();
        for ci in 0..columns.len() {
            let Some(group) = slots.get(&(ri, ci)) else {
                row_cells.push(MatrixCell {
                    outcome: None,
                    symbol: "",
                    glyph: "",
                    word: "—".into(),
                    topology_warning: false,
                    kernel_warning: false,
                    notes: Vec::new(),
                    title: "not in this run".into(),
                });
                continue;
            };
            let mut per: BTreeMap<Outcome, usize> = BTreeMap::new();
            let mut cell_notes = BTreeSet::new();
            let mut topology_warning = false;
            for c in group {
                releases.extend(c.provenance.kernel_release.clone());
                accels.insert(c.provenance.accel.as_str());
                *per.entry(c.outcome).or_default() += 1;
                // Note keys: (what, text). A topology note is about the boot, whatever the
                // cell's outcome; an outcome note is its evidence.
                let mut keys: Vec<(&'static str, &'static str, &'static str, String)> = Vec::new();
                if let Some(m) = &c.provenance.topology_mismatch {
                    topology_warning = true;
                    keys.push((
                        TOPOLOGY_NOTE,
                        "⚠️",
                        TOPOLOGY_MARK,
                        format!("the guest sees {m}"),
                    ));
                }
                // Points of a passing cell the harness judged unsupported (SMT pinning in a
                // guest without siblings): said beside the cell, not hidden in a chart.
                for u in &c.caveats.unsupported_points {
                    let u_o = Outcome::Unsupported;
                    keys.push((
                        u_o.as_str(),
                        u_o.symbol(),
                        glyph(u_o),
                        format!("{} points: {}", u.pinning.as_str(), u.reason),
                    ));
                }
                if c.outcome != Outcome::Pass {
                    // An unsupported answer is its step and errno; which container met it first
                    // is noise that would split one answer into a note per cell. Other outcomes
                    // keep their detail (expected vs seen ids, the console line).
                    let ev = match (c.outcome, c.evidence.as_ref()) {
                        (Outcome::Unsupported, Some(e)) => evidence_headline(e),
                        (_, e) => evidence_text(e),
                    };
                    keys.push((c.outcome.as_str(), c.outcome.symbol(), glyph(c.outcome), ev));
                }
                for (what, symbol, mark, text) in keys {
                    let n = *note_index.entry((what, text.clone())).or_insert_with(|| {
                        notes.push(Footnote {
                            n: notes.len() + 1,
                            outcome: what,
                            symbol,
                            glyph: mark,
                            evidence: text,
                            cells: Vec::new(),
                            more: 0,
                        });
                        notes.len()
                    });
                    // Where, grouped by boot (kernel · topology · filesystem), first seen first.
                    if places.len() < n {
                        places.resize_with(n, Vec::new);
                    }
                    let (k, t) = c.key.target.row();
                    let place = format!("{k} · {t} · {}", c.key.filesystem);
                    let groups = &mut places[n - 1];
                    match groups.iter_mut().find(|(g, _)| *g == place) {
                        Some((_, labels)) => labels.push(c.scenario.label()),
                        None => groups.push((place, vec![c.scenario.label()])),
                    }
                    cell_notes.insert(n);
                }
            }
            let worst = group
                .iter()
                .map(|c| c.outcome)
                .max_by_key(|o| o.severity())
                .unwrap_or(Outcome::Pass);
            let total = group.len();
            let worst_n = per.get(&worst).copied().unwrap_or(0);
            let word = if worst_n == total {
                worst.as_str().to_string()
            } else {
                format!("{} {worst_n}/{total}", worst.as_str())
            };
            let title = per
                .iter()
                .map(|(o, n)| format!("{n} {o}"))
                .collect::<Vec<_>>()
                .join(", ");
            row_cells.push(MatrixCell {
                outcome: Some(worst.as_str()),
                symbol: worst.symbol(),
                glyph: glyph(worst),
                word,
                topology_warning,
                kernel_warning: group.iter().any(|c| !c.kernel_warnings.is_empty()),
                notes: cell_notes.into_iter().collect(),
                title: if topology_warning {
                    format!(
                        "{total} cells: {title}; the guest did not see the topology it asked for"
                    )
                } else {
                    format!("{total} cells: {title}")
                },
            });
        }
        out_rows.push(MatrixRow {
            kernel: kernel.to_string(),
            topology: topology.to_string(),
            release: releases.into_iter().collect::<Vec<_>>().join(", "),
            accel: accels.into_iter().collect::<Vec<_>>().join(", "),
            cells: row_cells,
        });
    }
    for (note, groups) in notes.iter_mut().zip(places) {
        note.more = groups.len().saturating_sub(FOOTNOTE_PLACES);
        note.cells = groups
            .into_iter()
            .take(FOOTNOTE_PLACES)
            .map(|(place, labels)| match labels.as_slice() {
                [one] => format!("{place} · {one}"),
                [a, b] => format!("{place} · {a}, {b}"),
                _ => format!("{place} ({} cells)", labels.len()),
            })
            .collect();
    }
    (
        CompatMatrix {
            groups,
            columns,
            rows: out_rows,
        },
        notes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_is_one_line() {
        let e = Evidence::new("mount_setattr(MOUNT_ATTR_IDMAP) on tmpfs")
            .with_errno(22)
            .with_detail("\nfirst\nsecond");
        assert_eq!(
            evidence_text(Some(&e)),
            "mount_setattr(MOUNT_ATTR_IDMAP) on tmpfs: EINVAL (22) — first"
        );
        assert_eq!(one_line("a\u{1b}[0mb", 10), "a[0mb");
        assert_eq!(one_line("abcdef", 4), "abc…");
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(fmt_num(12345.0), "12.3k");
        assert_eq!(fmt_num(202.0), "202");
        assert_eq!(fmt_num(1.23456), "1.23");
        assert_eq!(fmt_num(0.5), "0.500");
        assert_eq!(fmt_num(f64::NAN), "–");
    }
}
