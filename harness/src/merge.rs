//! `mmx merge`: join the run.json files of shards (or of separate runs of disjoint cells) into
//! one run, so one report covers a matrix fanned out over many CI runners.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::results::{RunRecord, RUN_SCHEMA_VERSION};

/// Accept either a run.json or a run directory holding one.
pub fn run_json_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("run.json")
    } else {
        p.to_path_buf()
    }
}

/// Merge runs. A cell id present in two inputs is an error naming both files: shards never
/// overlap, so an overlap means two different runs were mixed up.
pub fn merge(inputs: &[PathBuf]) -> anyhow::Result<RunRecord> {
    anyhow::ensure!(!inputs.is_empty(), "mmx merge needs at least one run.json");
    let mut merged: Option<RunRecord> = None;
    let mut origin: std::collections::HashMap<String, PathBuf> = Default::default();
    for input in inputs {
        let path = run_json_path(input);
        let run = RunRecord::read(&path)?;
        for c in &run.cells {
            if let Some(first) = origin.insert(c.id.clone(), path.clone()) {
                anyhow::bail!(
                    "cell {} is in both {} and {}: merge takes disjoint shards",
                    c.id,
                    first.display(),
                    path.display()
                );
            }
        }
        merged = Some(match merged {
            None => RunRecord { shard: None, ..run },
            Some(mut m) => {
                if m.matrix != run.matrix {
                    eprintln!(
                        "mmx merge: note: {} came from matrix {}, earlier inputs from {}",
                        path.display(),
                        run.matrix,
                        m.matrix
                    );
                }
                m.started_at = m.started_at.min(run.started_at);
                m.finished_at = m.finished_at.max(run.finished_at);
                m.cells.extend(run.cells);
                m.boots.extend(run.boots);
                m
            }
        });
    }
    let mut m = merged.context("no input")?;
    m.schema_version = RUN_SCHEMA_VERSION;
    m.cells.sort_by(|a, b| a.id.cmp(&b.id));
    m.boots.sort_by(|a, b| a.id.cmp(&b.id));
    m.run_id = format!("merged-{}", m.run_id);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{
        Accel, BackendKind, BootEnd, BootRecord, CellRecord, HostInfo, Provenance,
    };
    use protocol::{MountsScenario, Outcome, Scenario, Strategy};

    fn run(ids: &[&str], shard: &str) -> RunRecord {
        RunRecord {
            schema_version: RUN_SCHEMA_VERSION,
            mmx_version: "0".into(),
            run_id: format!("r{shard}"),
            started_at: format!("2026-11-26T10:0{shard}:00Z"),
            finished_at: format!("2026-11-26T11:0{shard}:00Z"),
            matrix: "matrix.toml".into(),
            shard: Some(format!("{shard}/2")),
            host: HostInfo::default(),
            cells: ids
                .iter()
                .map(|id| CellRecord {
                    id: id.to_string(),
                    kernel: "k".into(),
                    topology: "t".into(),
                    filesystem: "ext4".into(),
                    scenario: Scenario::Mounts(MountsScenario {
                        strategy: Strategy::PerLayer,
                        layers: 1,
                        containers: 1,
                        concurrency: 1,
                        passes: 2,
                    }),
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
                        requested_topology: None,
                        observed_topology: None,
                        topology_mismatch: None,
                    },
                    boot_id: "b".into(),
                    attempts: 1,
                    repeats: 1,
                    expected: None,
                })
                .collect(),
            boots: vec![BootRecord {
                id: format!("boot{shard}"),
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
            }],
        }
    }

    #[test]
    fn shards_merge_and_overlaps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        run(&["x/1", "x/3"], "1").write(&a).unwrap();
        run(&["x/2"], "2").write(&b).unwrap();
        let m = merge(&[a.clone(), b.clone()]).unwrap();
        let ids: Vec<_> = m.cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["x/1", "x/2", "x/3"]);
        assert_eq!(m.boots.len(), 2);
        assert_eq!(m.shard, None);
        assert_eq!(m.started_at, "2026-11-26T10:01:00Z");
        assert_eq!(m.finished_at, "2026-11-26T11:02:00Z");

        let err = merge(&[a.clone(), a.clone()]).unwrap_err().to_string();
        assert!(err.contains("cell x/1 is in both"), "{err}");

        std::fs::write(&b, "{not json").unwrap();
        let err = format!("{:#}", merge(&[a, b.clone()]).unwrap_err());
        assert!(err.contains(&b.display().to_string()), "{err}");
    }
}
