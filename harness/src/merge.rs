//! `mmx merge`: join the run.json files of shards (or of separate runs of disjoint cells) into
//! one run, so one report covers a matrix fanned out over many CI runners.

use std::path::PathBuf;

use anyhow::Context;

use crate::cell::CellKey;
use crate::events::{Note, Sink};
use crate::results::{run_json_path, RunRecord, RUN_SCHEMA_VERSION};

/// Merge runs. A cell present in two inputs is an error naming both files: shards never
/// overlap, so an overlap means two different runs were mixed up. Inputs from different
/// matrices are merged, and `sink` hears of it.
pub fn merge(inputs: &[PathBuf], sink: &dyn Sink) -> anyhow::Result<RunRecord> {
    anyhow::ensure!(!inputs.is_empty(), "mmx merge needs at least one run.json");
    let mut merged: Option<RunRecord> = None;
    let mut origin: std::collections::HashMap<CellKey, PathBuf> = Default::default();
    for input in inputs {
        let path = run_json_path(input);
        let run = RunRecord::read(&path)?;
        for c in &run.cells {
            if let Some(first) = origin.insert(c.key.clone(), path.clone()) {
                anyhow::bail!(
                    "cell {} is in both {} and {}: merge takes disjoint shards",
                    c.key,
                    first.display(),
                    path.display()
                );
            }
        }
        merged = Some(match merged {
            None => RunRecord { shard: None, ..run },
            Some(mut m) => {
                if m.matrix != run.matrix {
                    sink.note(Note::warning(format!(
                        "merge: {} came from matrix {}, earlier inputs from {}",
                        path.display(),
                        run.matrix,
                        m.matrix
                    )));
                }
                m.started_at = m.started_at.min(run.started_at);
                m.finished_at = m.finished_at.max(run.finished_at);
                m.cells.extend(run.cells);
                m.boots.extend(run.boots);
                // Shards build the same runtimes: one record each.
                for r in run.runtimes {
                    if !m.runtimes.iter().any(|x| x.name == r.name) {
                        m.runtimes.push(r);
                    }
                }
                m
            }
        });
    }
    let mut m = merged.context("no input")?;
    m.schema_version = RUN_SCHEMA_VERSION;
    m.sort();
    m.run_id = format!("merged-{}", m.run_id);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::TargetKey;
    use crate::events::Discard;
    use crate::results::{
        Accel, BackendKind, BootEnd, BootRecord, CellRecord, HostInfo, Provenance,
    };
    use protocol::{MountsScenario, Outcome, Scenario, Strategy};

    fn key(layers: u32) -> CellKey {
        CellKey::new(
            TargetKey::Qemu {
                kernel: "k".into(),
                topology: "t".into(),
            },
            protocol::Filesystem::Ext4,
            scenario(layers).key(),
        )
    }

    fn scenario(layers: u32) -> Scenario {
        Scenario::Mounts(MountsScenario {
            strategy: Strategy::PerLayer.into(),
            layers,
            containers: 1,
            concurrency: 1,
            passes: 2,
            watchers: Vec::new(),
        })
    }

    fn run(layers: &[u32], shard: &str) -> RunRecord {
        let boot = key(1).boot();
        RunRecord {
            schema_version: RUN_SCHEMA_VERSION,
            mmx_version: "0".into(),
            agent: String::new(),
            run_id: format!("r{shard}"),
            started_at: format!("2026-11-26T10:0{shard}:00Z"),
            finished_at: format!("2026-11-26T11:0{shard}:00Z"),
            matrix: "matrix.toml".into(),
            shard: Some(format!("{shard}/2")),
            host: HostInfo::default(),
            cells: layers
                .iter()
                .map(|l| CellRecord {
                    key: key(*l),
                    scenario: scenario(*l),
                    outcome: Outcome::Pass,
                    evidence: None,
                    metrics: Default::default(),
                    detail: None,
                    provenance: Provenance {
                        backend: BackendKind::Qemu,
                        accel: Accel::Tcg,
                        host_cpu: String::new(),
                        kernel_release: None,
                        kernel_source: None,
                        kernel_substituted: None,
                        requested_topology: None,
                        observed_topology: None,
                        topology_mismatch: None,
                        runtime: None,
                        sizing: None,
                    },
                    boot: boot.clone(),
                    attempts: 1,
                    repeats: 1,
                    expected: None,
                    caveats: Default::default(),
                    kernel_warnings: Vec::new(),
                    failed_by: None,
                })
                .collect(),
            boots: vec![BootRecord {
                key: boot.clone(),
                backend: BackendKind::Qemu,
                accel: Accel::Tcg,
                end: BootEnd::Completed,
                kernel_release: None,
                logs: vec![],
                timings_ms: Default::default(),
                capabilities: None,
                observed_topology: None,
                cells: vec![],
                attempts: 1,
                violations: vec![],
                violations_total: 0,
                channels: Default::default(),
                kernel_warnings: Vec::new(),
                kernel_warnings_dropped: 0,
                timeline: None,
                sizing: None,
                guest: None,
            }],
            runtimes: vec![],
        }
    }

    #[test]
    fn a_guest_that_served_several_boots_counts_once() {
        let mut r = run(&[1], "1");
        let second = r.boots[0].clone();
        r.boots.push(second);
        assert_eq!(r.booted(), 2, "two boots of their own");
        for b in &mut r.boots {
            b.guest = Some(crate::results::GuestRun {
                id: "k_t".into(),
                filesystems: vec![protocol::Filesystem::Ext4, protocol::Filesystem::Xfs],
                rerun: false,
            });
        }
        assert_eq!(r.booted(), 1, "one guest served both");
        if let Some(b) = r.boots.get_mut(1) {
            b.guest = None;
        }
        assert_eq!(r.booted(), 2);
    }

    #[test]
    fn shards_merge_and_overlaps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        run(&[1, 3], "1").write(&a).unwrap();
        run(&[2], "2").write(&b).unwrap();
        let m = merge(&[a.clone(), b.clone()], &Discard).unwrap();
        let ids: Vec<_> = m.cells.iter().map(|c| c.key.clone()).collect();
        assert_eq!(ids, [key(1), key(2), key(3)]);
        assert_eq!(m.boots.len(), 2);
        assert_eq!(m.shard, None);
        assert_eq!(m.started_at, "2026-11-26T10:01:00Z");
        assert_eq!(m.finished_at, "2026-11-26T11:02:00Z");

        let err = merge(&[a.clone(), a.clone()], &Discard)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cell k/t/ext4/per-layer-L1-C1-P2-J1 is in both"),
            "{err}"
        );

        std::fs::write(&b, "{not json").unwrap();
        let err = format!("{:#}", merge(&[a, b.clone()], &Discard).unwrap_err());
        assert!(err.contains(&b.display().to_string()), "{err}");
    }

    /// Notes kept, for the test to read.
    #[derive(Default)]
    struct Kept(std::sync::Mutex<Vec<Note>>);

    impl Sink for Kept {
        fn note(&self, note: Note) {
            self.0.lock().unwrap().push(note);
        }
        fn build(&self, _: crate::events::KernelBuild) {}
        fn answer(&self, _: &str) {}
    }

    #[test]
    fn runs_of_another_matrix_merge_with_a_warning_naming_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        run(&[1], "1").write(&a).unwrap();
        let other = RunRecord {
            matrix: "other.toml".into(),
            ..run(&[2], "2")
        };
        other.write(&b).unwrap();
        let kept = Kept::default();
        let m = merge(&[a.clone(), b.clone()], &kept).unwrap();
        assert_eq!(m.cells.len(), 2);
        let notes = kept.0.into_inner().unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].severity(), crate::events::Severity::Warning);
        assert_eq!(
            notes[0].text(),
            format!(
                "merge: {} came from matrix other.toml, earlier inputs from matrix.toml",
                b.display()
            )
        );
        // Inputs of one matrix merge without a word.
        let kept = Kept::default();
        merge(&[a], &kept).unwrap();
        assert!(kept.0.into_inner().unwrap().is_empty());
    }
}
