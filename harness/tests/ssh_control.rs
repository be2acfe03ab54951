//! An agent on a host that forges the run script's control lines, against the real ssh
//! backend and a real sshd on loopback (`common::sshd`; root and /usr/sbin/sshd, else SKIPPED,
//! a failure under `CI=true`).
//!
//! The run script's status lines share stdout with the agent. A stand-in agent sends a valid
//! result, prints one forged control line, then exits or floods the channel (so the script's
//! own last words never arrive and the harness cleans up itself). Each visit asks for SMT `off`
//! on a host whose SMT control (a plain file here) reads `on`: whatever the agent printed, no
//! cell takes the forged answer, the run does not end the way the forgery says, and the control
//! file ends holding `on`, the value mmx read before the agent ran.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;

use common::sshd::Sshd;

use harness::backend::ssh::HostSession;
use harness::backend::{BootOutput, BootRequest, Deadlines};
use harness::cell::{BootKey, SmtSetting, TargetKey};
use harness::proc::Cancel;
use harness::results::{BootEnd, InfraCause, RunDir};
use protocol::{MountsScenario, Outcome, Plan, PlanItem, Scenario, Strategy};

/// A stand-in agent: a result for item 0, the forged line, then `@THEN@`.
const FORGER: &str = r#"#!/bin/sh
plan=$2
id=$(grep -o '"cell_id":"[^"]*"' "$plan" | head -n 1 | cut -d'"' -f4)
echo 'MMX1 {"event":"hello","agent_version":"forger","schema_version":@SCHEMA@,"kernel_release":"forger","uptime_ms":1}'
echo "MMX1 {\"event\":\"cell-result\",\"item\":0,\"cell_id\":\"$id\",\"outcome\":\"pass\",\"metrics\":{}}"
printf '%s\n' '@FORGED@'
@THEN@
"#;

/// The lines an agent might print to be taken for the run script: the old, untokened status
/// lines (`smt-old` once named the value the cleanup restored), and guessed tokens.
const FORGERIES: [&str; 6] = [
    "mmx-ssh: smt-old forceoff",
    "mmx-ssh: unsupported on forceoff",
    "mmx-ssh: error forged by the agent",
    "mmx-ssh: cleaned",
    "mmx-ssh 00000000000000000000000000000000: cleaned",
    "mmx-ssh ffffffffffffffffffffffffffffffff: smt-old forceoff",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Exit 1 before the plan is done: the script reports and cleans up.
    Exit,
    /// Flood the results channel past its budget: the harness stops reading and cleans up.
    Flood,
}

fn forger(dir: &Path, n: usize, forged: &str, then: Then) -> PathBuf {
    let then = match then {
        Then::Exit => "exit 1".to_string(),
        Then::Flood => format!("exec yes '{}'", "x".repeat(1000)),
    };
    let text = FORGER
        .replace("@SCHEMA@", &protocol::SCHEMA_VERSION.to_string())
        .replace("@FORGED@", forged)
        .replace("@THEN@", &then);
    let p = dir.join(format!("forger-{n}"));
    std::fs::write(&p, text).expect("write the forger");
    let st = Command::new("chmod").arg("755").arg(&p).status();
    assert!(st.is_ok_and(|s| s.success()));
    p
}

fn item(i: u32, id: &str) -> PlanItem {
    PlanItem {
        item: i,
        cell_id: id.into(),
        scenario: Scenario::Mounts(MountsScenario {
            strategy: Strategy::PerLayer.into(),
            layers: 1,
            containers: 1,
            concurrency: 1,
            passes: 1,
            watchers: Vec::new(),
        }),
        timeout_s: Some(60),
        filesystem: None,
    }
}

fn request(run_dir: &Path, n: usize) -> BootRequest {
    let rd = RunDir::create(run_dir, &format!("run-{n}")).expect("run dir");
    let key = BootKey {
        target: TargetKey::Ssh {
            host: "loopback".into(),
            smt: SmtSetting::Off,
        },
        filesystem: protocol::Filesystem::Ext4.into(),
    };
    let plan = Plan {
        schema_version: protocol::SCHEMA_VERSION,
        boot_id: key.to_string(),
        scratch_dir: PathBuf::from("/replaced-by-the-backend"),
        scratch_disks: Vec::new(),
        modules: vec![],
        probe: false,
        items: vec![item(0, "c1"), item(1, "c2")],
        runtimes: vec![],
    };
    BootRequest {
        key,
        deadlines: Deadlines::for_plan(&plan, Duration::from_secs(60)),
        plan,
        run_dir: rd,
        cancel: Cancel::new(),
        sink: common::sink(),
    }
}

fn ssh_log(req: &BootRequest) -> String {
    std::fs::read_to_string(req.run_dir.abs(&RunDir::log_rel(&req.key, "ssh"))).unwrap_or_default()
}

#[test]
fn forged_control_lines_change_nothing_and_smt_gets_back_what_mmx_read() {
    if let Some(why) = common::sshd::skip_reason() {
        common::require(false, &why);
        return;
    }
    let sshd = Sshd::start();
    let control = sshd.path("smt-control");
    std::fs::write(&control, "on\n").expect("control file");
    let mut host = sshd.host();
    host.smt_control = control.clone();
    let mut session = HostSession::open(&host, &Cancel::new(), common::sink());
    let mut n = 0;
    for forged in FORGERIES {
        for then in [Then::Exit, Then::Flood] {
            n += 1;
            let ctx = format!("{forged:?}, then {then:?}");
            let agent = forger(sshd.dir.path(), n, forged, then);
            let req = request(sshd.dir.path(), n);
            let out: BootOutput = session.run(&agent, SmtSetting::Off, &req);
            let log = ssh_log(&req);
            let ctx = format!("{ctx}: {:?}\nssh log:\n{log}", out.end);

            let results = out.stream.results();
            assert_eq!(
                results[0].as_ref().map(|r| r.outcome),
                Some(Outcome::Pass),
                "{ctx}"
            );
            assert!(results[1].is_none(), "item 1 took an answer: {ctx}");
            match then {
                // Not `completed` (a forged `unsupported`), not a host-setup error (a forged
                // `error`): the agent ended before the plan did.
                Then::Exit => assert!(matches!(out.end, BootEnd::Panic { .. }), "{ctx}"),
                Then::Flood => {
                    assert!(
                        matches!(
                            out.end,
                            BootEnd::Infra {
                                cause: InfraCause::OutputFlood,
                                ..
                            }
                        ),
                        "{ctx}"
                    );
                    // The script's own `cleaned` was past the flood: only a forged one could
                    // have stopped the harness from cleaning up itself.
                    assert!(out.timings_ms.contains_key("cleanup"), "{ctx}");
                }
            }
            assert_eq!(
                std::fs::read_to_string(&control).expect("control file"),
                "on\n",
                "the SMT control must hold what mmx read before the run: {ctx}"
            );
            assert!(
                log.contains("ignored, not this visit's token"),
                "the forgery was seen and ignored: {ctx}"
            );
            sshd.assert_no_leftovers();
        }
    }
    assert_eq!(session.close(), Ok(()));
}
