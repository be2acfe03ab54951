//! The report sections about where numbers came from rather than what they are: provenance
//! per kernel and topology, the kernel feature probes per kernel and filesystem, and the boots.

use std::collections::HashMap;

use protocol::Feature;
use serde::Serialize;

use super::model::{evidence_text, one_line, EVIDENCE_CHARS};
use crate::cell::TargetKey;
use crate::results::{BootEnd, CellRecord, RunRecord};
use crate::rundir::RunDir;

#[derive(Debug, Serialize)]
pub struct ProvRow {
    pub kernel: String,
    pub topology: String,
    pub backend: &'static str,
    pub accel: &'static str,
    pub host_cpu: String,
    pub kernel_release: String,
    pub kernel_source: String,
    pub requested: String,
    pub observed: String,
    pub mismatch: String,
    pub cells: usize,
}

#[derive(Debug, Serialize)]
pub struct ProbeTable {
    pub columns: Vec<ProbeCol>,
    pub rows: Vec<ProbeRow>,
}

#[derive(Debug, Serialize)]
pub struct ProbeCol {
    pub kernel: String,
    pub filesystem: String,
    pub release: String,
}

#[derive(Debug, Serialize)]
pub struct ProbeRow {
    pub feature: &'static str,
    pub cells: Vec<ProbeCell>,
}

#[derive(Debug, Serialize)]
pub struct ProbeCell {
    /// `None`: this boot did not run this probe.
    pub ok: Option<bool>,
    /// The kernel did something it should not (a probe's `warning`): shown apart from `no`.
    pub warning: bool,
    pub text: String,
    pub title: String,
}

#[derive(Debug, Serialize)]
pub struct BootRow {
    pub id: String,
    /// `3 protocol violations (duplicate, unknown-item)`, empty when the agent kept the contract.
    pub violations: String,
    pub backend: &'static str,
    pub accel: &'static str,
    pub end: &'static str,
    pub end_detail: String,
    pub release: String,
    pub agent_ready_ms: String,
    pub plan_done_ms: String,
    /// `sized` or `full` (empty: not recorded), and why.
    pub sizing: &'static str,
    pub sizing_why: &'static str,
    /// The logs mmx wrote for this boot, linked by a path mmx made ([`RunDir::known_log`]).
    pub logs: Vec<LogLink>,
    pub cells: usize,
}

#[derive(Debug, Serialize)]
pub struct LogLink {
    /// `console`, `results`, `agent`, `plan`, …: the link text.
    pub channel: String,
    /// Relative to the run directory: `logs/<flat boot id>.console.log`.
    pub href: String,
}

pub(super) fn provenance(cells: &[&CellRecord]) -> Vec<ProvRow> {
    let mut rows: Vec<ProvRow> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for c in cells {
        let p = &c.provenance;
        let observed = p
            .observed_topology
            .as_ref()
            .map(|t| format!("{} (SMT {})", t.short(), t.smt.as_str()))
            .unwrap_or_default();
        let (kernel, topology) = c.key.target.row();
        let row = ProvRow {
            kernel: kernel.to_string(),
            topology: topology.to_string(),
            backend: p.backend.as_str(),
            accel: p.accel.as_str(),
            host_cpu: p.host_cpu.clone(),
            kernel_release: p.kernel_release.clone().unwrap_or_default(),
            kernel_source: p.kernel_source.clone().unwrap_or_default(),
            requested: p.requested_topology.clone().unwrap_or_default(),
            observed,
            mismatch: p.topology_mismatch.clone().unwrap_or_default(),
            cells: 1,
        };
        let key = format!(
            "{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}",
            row.kernel,
            row.topology,
            row.backend,
            row.accel,
            row.host_cpu,
            row.kernel_release,
            row.kernel_source,
            row.requested,
            row.observed,
            row.mismatch
        );
        match index.get(&key) {
            Some(&i) => rows[i].cells += 1,
            None => {
                index.insert(key, rows.len());
                rows.push(row);
            }
        }
    }
    rows
}

pub(super) fn probes(run: &RunRecord) -> ProbeTable {
    let mut boots: Vec<&crate::results::BootRecord> = run.boots.iter().collect();
    boots.sort_by(|a, b| a.key.cmp(&b.key));
    let mut cols: Vec<(ProbeCol, &protocol::Capabilities)> = Vec::new();
    let mut seen: Vec<(TargetKey, crate::cell::LayerFs)> = Vec::new();
    for b in boots {
        let Some(caps) = &b.capabilities else {
            continue;
        };
        // One column per kernel (or host) and filesystem: other topologies probe the same
        // kernel; a host's SMT settings likewise.
        let kernel_only = match &b.key.target {
            TargetKey::Qemu { kernel, .. } => TargetKey::Qemu {
                kernel: kernel.clone(),
                topology: String::new(),
            },
            TargetKey::Ssh { host, .. } => TargetKey::Ssh {
                host: host.clone(),
                smt: crate::cell::SmtSetting::AsIs,
            },
            TargetKey::Local => TargetKey::Local,
        };
        let column = (kernel_only, b.key.filesystem);
        if seen.contains(&column) {
            continue;
        }
        seen.push(column);
        cols.push((
            ProbeCol {
                kernel: b.key.target.row().0.to_string(),
                filesystem: caps.probed_fs.clone(),
                release: caps.kernel_release.clone(),
            },
            caps,
        ));
    }
    let rows = Feature::ALL
        .iter()
        .map(|f| ProbeRow {
            feature: f.as_str(),
            cells: cols
                .iter()
                .map(|(_, caps)| match caps.get(*f) {
                    None => ProbeCell {
                        ok: None,
                        warning: false,
                        text: "·".into(),
                        title: "not probed".into(),
                    },
                    Some(p) => {
                        let errno = p
                            .evidence
                            .as_ref()
                            .and_then(|e| e.errno)
                            .map(protocol::errno::describe);
                        let evidence = p
                            .evidence
                            .as_ref()
                            .map(|e| evidence_text(Some(e)))
                            .unwrap_or_default();
                        ProbeCell {
                            ok: Some(p.supported),
                            warning: p.warning.is_some(),
                            text: match (p.warning, p.supported, errno) {
                                (Some(w), _, _) => w.as_str().into(),
                                (None, true, _) => "yes".into(),
                                (None, false, Some(e)) => format!("no {e}"),
                                (None, false, None) => "no".into(),
                            },
                            title: match p.warning {
                                Some(w) => format!("{}: {evidence}", w.message()),
                                None => evidence,
                            },
                        }
                    }
                })
                .collect(),
        })
        .collect();
    ProbeTable {
        columns: cols.into_iter().map(|(c, _)| c).collect(),
        rows,
    }
}

pub(super) fn boots(run: &RunRecord) -> Vec<BootRow> {
    let ms = |b: &crate::results::BootRecord, k: &str| {
        b.timings_ms
            .get(k)
            .map(|v| format!("{v:.0}"))
            .unwrap_or_default()
    };
    let mut boots: Vec<&crate::results::BootRecord> = run.boots.iter().collect();
    boots.sort_by(|a, b| a.key.cmp(&b.key));
    boots
        .into_iter()
        .map(|b| {
            let (end, end_detail) = match &b.end {
                BootEnd::Completed => ("completed", String::new()),
                BootEnd::Timeout {
                    deadline, seconds, ..
                } => (
                    "timeout",
                    format!("{} deadline after {seconds:.0} s", deadline.as_str()),
                ),
                BootEnd::Panic { line, .. } => ("panic", one_line(line, EVIDENCE_CHARS)),
                BootEnd::Infra { cause, message } => (
                    "infra-error",
                    one_line(&format!("{}: {message}", cause.as_str()), EVIDENCE_CHARS),
                ),
            };
            let mut kinds: Vec<&str> = b.violations.iter().map(|v| v.kind.as_str()).collect();
            kinds.dedup();
            BootRow {
                id: b.key.to_string(),
                violations: if b.violations_total == 0 {
                    String::new()
                } else {
                    format!(
                        "{} protocol violation(s) ({})",
                        b.violations_total,
                        kinds.join(", ")
                    )
                },
                backend: b.backend.as_str(),
                accel: b.accel.as_str(),
                end,
                end_detail,
                release: b.kernel_release.clone().unwrap_or_default(),
                agent_ready_ms: ms(b, "agent-ready"),
                plan_done_ms: ms(b, "plan-done"),
                sizing: b
                    .sizing
                    .map_or("", |s| if s.is_sized() { "sized" } else { "full" }),
                sizing_why: b.sizing.map_or("", |s| s.describe()),
                // A path in run.json that is not one of this boot's logs is not linked.
                logs: b
                    .logs
                    .iter()
                    .filter_map(|p| RunDir::known_log(&b.key, p))
                    .map(|(channel, path)| LogLink {
                        channel,
                        href: path.display().to_string(),
                    })
                    .collect(),
                cells: b.cells.len(),
            }
        })
        .collect()
}
