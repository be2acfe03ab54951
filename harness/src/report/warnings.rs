//! The kernel-warnings section every report shows: one row per splat, by the cell it printed
//! during (or the boot, when it printed outside every item), with its first lines. Computed
//! from run.json alone; the templates escape every value.

use serde::Serialize;

use crate::results::{CellFailure, KernelWarning, RunRecord};

#[derive(Debug, Serialize)]
pub struct WarningRow {
    /// The cell's id, or the boot's when the splat printed outside every item.
    pub at: String,
    /// `warning`, `lockdep`, `kasan`, `ubsan`, `refcount`, `bug`.
    pub kind: &'static str,
    /// `item 3`, `probes`, or `outside the plan`.
    pub during: String,
    /// The cell failed on it (`--fail-on-kernel-warning`).
    pub failed: bool,
    /// Its first lines ([`KernelWarning::shown`]).
    pub lines: Vec<String>,
    /// How many lines it had in all.
    pub lines_total: u32,
}

fn row(at: String, w: &KernelWarning, failed: bool) -> WarningRow {
    WarningRow {
        at,
        kind: w.kind.as_str(),
        during: w
            .during
            .map_or_else(|| "outside the plan".to_string(), |p| p.to_string()),
        failed,
        lines: w.shown().to_vec(),
        lines_total: w.lines_total,
    }
}

/// Every cell's splats, in cell order, then each boot's that no cell carries.
pub(super) fn warnings(run: &RunRecord) -> Vec<WarningRow> {
    let mut cells: Vec<_> = run.cells.iter().collect();
    cells.sort_by(|a, b| a.key.cmp(&b.key));
    let mut rows: Vec<WarningRow> = Vec::new();
    for c in cells {
        let failed = c.failed_by == Some(CellFailure::KernelWarning);
        rows.extend(
            c.kernel_warnings
                .iter()
                .map(|w| row(c.key.to_string(), w, failed)),
        );
    }
    let mut boots: Vec<_> = run.boots.iter().collect();
    boots.sort_by(|a, b| a.key.cmp(&b.key));
    for b in boots {
        let unattributed = b
            .kernel_warnings
            .iter()
            .filter(|w| !matches!(w.during, Some(protocol::kmsg::Phase::Item(_))));
        rows.extend(unattributed.map(|w| row(b.key.to_string(), w, false)));
    }
    rows
}

#[cfg(test)]
mod tests {
    use protocol::kmsg::{Phase, SplatKind};
    use protocol::{MountsScenario, Scenario, Strategy};

    use crate::report::{render_html, render_junit, render_markdown, testing};
    use crate::results::{
        Accel, CellFailure, HostInfo, KernelWarning, RunRecord, RUN_SCHEMA_VERSION,
    };

    /// Every report shows the splat's first lines beside its cell, escaped (a kernel's line is
    /// outside text), and the failure when the run failed the cell on it.
    #[test]
    fn every_report_shows_the_splat_escaped_and_the_failure() {
        let scenario = Scenario::Mounts(MountsScenario {
            strategy: Strategy::PerLayer.into(),
            layers: 4,
            containers: 1,
            concurrency: 1,
            passes: 2,
            watchers: Vec::new(),
        });
        let mut cell = testing::cell(scenario, None, Default::default(), Accel::Tcg);
        cell.kernel_warnings = vec![KernelWarning {
            kind: SplatKind::Warning,
            during: Some(Phase::Item(1)),
            lines: vec![
                "WARNING: CPU: 0 PID: 87 at fs/overlayfs/super.c:1326 ovl_fill_super+0x5a/0x8f0"
                    .into(),
                "Modules linked in: <b>[x](y)</b>".into(),
            ],
            lines_total: 30,
        }];
        cell.failed_by = Some(CellFailure::KernelWarning);
        let run = RunRecord {
            schema_version: RUN_SCHEMA_VERSION,
            mmx_version: "0".into(),
            agent: String::new(),
            run_id: "r".into(),
            started_at: "2026-11-26T10:00:00Z".into(),
            finished_at: "2026-11-26T11:00:00Z".into(),
            matrix: "matrix.toml".into(),
            shard: None,
            host: HostInfo::default(),
            boots: Vec::new(),
            cells: vec![cell],
            runtimes: Vec::new(),
        };
        let md = render_markdown(&run).unwrap();
        let compat = md.split("### Kernel warnings").next().unwrap();
        assert!(compat.contains("✅ pass ⚡ kernel warning"), "{compat}");
        let section = md.split("### Kernel warnings").nth(1).expect(&md);
        assert!(
            section.contains(
                "| ` debian-7.x/1s2c1t/ext4/per-layer-L4-C1-P2-J1 ` ❌ failed: kernel-warning | warning | item 1 | ` WARNING: CPU: 0 PID: 87 at fs/overlayfs/super.c:1326 ovl_fill_super+0x5a/0x8f0 `<br>` Modules linked in: <b>[x](y)</b> `<br><sub>30 lines in all</sub> |"
            ),
            "{section}"
        );
        let html = render_html(&run).unwrap();
        assert!(
            html.contains("WARNING: CPU: 0 PID: 87 at fs&#x2f;overlayfs&#x2f;super.c:1326")
                && html.contains("Modules linked in: &lt;b&gt;[x](y)&lt;&#x2f;b&gt;")
                && html.contains("failed: kernel-warning"),
            "{html}"
        );
        assert!(!html.contains("<b>[x]"));
        assert!(
            html.contains(r##"<a class="warn" href="#kernel-warnings""##),
            "{html}"
        );
        let junit = render_junit(&run).unwrap();
        assert!(
            junit.contains(
                r#"<failure type="kernel-warning" message="kernel-warning: WARNING: CPU: 0 PID: 87"#
            ) && junit.contains(
                r#"<property name="kernel_warning" value="warning during item 1: WARNING: CPU: 0"#
            ),
            "{junit}"
        );
        assert!(junit.contains(r#"failures="1""#), "{junit}");
    }
}
