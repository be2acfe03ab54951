//! What the library's own unit tests share: the one rule for a missing precondition (a tool,
//! root), running a shell script to set up a fixture (a git repository, a tree), and the smallest
//! plan and agent lines the stream and supervisor tests feed each other.

/// A test's precondition: true when it holds. When it does not, under `CI=true` the test fails
/// with the reason (CI must never pass what it did not test); elsewhere it says SKIPPED loudly
/// and the caller returns.
pub fn require(ok: bool, reason: &str) -> bool {
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and a precondition is missing: {reason}"
        );
        eprintln!("\n*** SKIPPED ({reason}) ***\n");
    }
    ok
}

/// Run `script` with `sh -c` in `dir` (at most ten minutes: a fixture is a few git commands);
/// its trimmed stdout. Panics with the script and its stderr when it fails: a fixture that
/// cannot be set up is the test's failure.
pub fn sh(dir: &std::path::Path, script: &str) -> String {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(script).current_dir(dir);
    let out = crate::proc::Run::new(cmd, std::time::Duration::from_secs(600))
        .run()
        .unwrap_or_else(|e| panic!("sh -c {script}: {e}"));
    assert!(out.success(), "{script}: {}", out.stderr);
    out.stdout.trim().to_string()
}

/// A plan of one tiny per-layer mounts item per cell id, numbered in order.
pub fn tiny_plan(cells: &[&str]) -> protocol::Plan {
    protocol::Plan {
        schema_version: protocol::SCHEMA_VERSION,
        boot_id: "b".into(),
        scratch_dir: "/s".into(),
        scratch_disks: Vec::new(),
        modules: vec![],
        probe: false,
        items: cells
            .iter()
            .enumerate()
            .map(|(i, c)| protocol::PlanItem {
                item: i as u32,
                cell_id: (*c).into(),
                scenario: protocol::Scenario::Mounts(protocol::MountsScenario {
                    strategy: protocol::Strategy::PerLayer.into(),
                    layers: 1,
                    containers: 1,
                    concurrency: 1,
                    passes: 1,
                    watchers: Vec::new(),
                }),
                timeout_s: None,
                filesystem: None,
            })
            .collect(),
        runtimes: vec![],
    }
}

/// The agent's hello line, from a kernel calling itself `kernel_release`.
pub fn hello_line(kernel_release: &str) -> String {
    protocol::encode_line(&protocol::AgentEvent::Hello {
        agent_version: "0".into(),
        schema_version: protocol::SCHEMA_VERSION,
        kernel_release: kernel_release.into(),
        uptime_ms: 1,
    })
}

/// A passing result line for plan item `item`, cell `cell`.
pub fn pass_line(item: u32, cell: &str) -> String {
    protocol::encode_line(&protocol::AgentEvent::CellResult(protocol::CellResult {
        item,
        cell_id: cell.into(),
        outcome: protocol::Outcome::Pass,
        evidence: None,
        metrics: Default::default(),
        detail: None,
    }))
}
