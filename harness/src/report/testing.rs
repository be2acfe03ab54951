//! Cells for the report's unit tests: what a fold leaves, with only the fields a chart or a
//! table reads filled in.

use std::collections::BTreeMap;

use protocol::{CellDetail, Filesystem, Metric, Outcome, Scenario};

use crate::cell::{CellKey, TargetKey};
use crate::results::{Accel, BackendKind, CellRecord, Provenance};

pub fn cell(
    scenario: Scenario,
    detail: Option<CellDetail>,
    metrics: BTreeMap<String, Metric>,
    accel: Accel,
) -> CellRecord {
    let key = CellKey::new(
        TargetKey::Qemu {
            kernel: "debian-7.x".into(),
            topology: "1s2c1t".into(),
        },
        Filesystem::Ext4,
        scenario.key(),
    );
    CellRecord {
        boot: key.boot(),
        key,
        scenario,
        outcome: Outcome::Pass,
        evidence: None,
        metrics,
        detail,
        provenance: Provenance {
            backend: BackendKind::Qemu,
            accel,
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
        attempts: 1,
        repeats: 1,
        expected: None,
        caveats: Default::default(),
        kernel_warnings: Vec::new(),
        failed_by: None,
    }
}
