//! The one contract between the `mmx` harness and `mmx-agent`.
//!
//! # Wire format
//!
//! The harness hands the agent a [`Plan`] as one JSON document (a file in the initramfs at
//! `/plan.json`, a file on a metal host, or `--plan PATH` for the `local` backend). The agent
//! refuses a plan whose [`Plan::schema_version`] it does not know ([`check_schema`]).
//!
//! The agent answers with a stream of [`AgentEvent`]s, one JSON object per line, each line
//! prefixed with [`LINE_PREFIX`] so that a reader can pick them out of a channel that may also
//! carry other text (a serial port, an SSH session's stdout). Lines are written whole and flushed
//! one at a time, so a guest that dies mid-plan leaves every result it finished readable.
//! The stream starts with [`AgentEvent::Hello`] and ends with [`AgentEvent::Done`]; a stream
//! without `Done` was cut short (the harness classifies why).
//!
//! Every [`PlanItem`] carries an index ([`PlanItem::item`]) that its [`CellResult`] echoes: the
//! harness accepts exactly one result per item, for an item of its plan, and counts anything
//! else (an unknown item, a second result, a line that does not parse) as a protocol violation.
//! Errnos travel as numbers only; their names come from [`errno`] on the side that shows them.
//! Every number a plan can carry has a range in [`limits`], checked by the harness when it reads
//! a matrix and by the agent before it runs an item.
//!
//! A guest's initramfs also carries a [`modules::ModuleTable`]: the modules it holds and the
//! aliases they answer, so the agent can serve the kernel's `request_module` as its modprobe.
//!
//! Everything here is plain data with serde derives, except [`runtime`]'s bounded line reader and
//! process driver: the agent's side of the runtime contract, kept beside the contract so the
//! agent and the harness's contract tests drive runtimes with one implementation.

use serde::Deserialize;

mod caps;
pub mod erofs;
pub mod errno;
mod event;
pub mod kmsg;
pub mod limits;
pub mod lockbench;
pub mod modules;
mod outcome;
mod plan;
pub mod runtime;
mod stats;
mod topology;
pub mod watch;

pub use caps::{Capabilities, Feature, ProbeResult, ProbeWarning};
pub use event::{
    AgentEvent, Better, CellDetail, CellResult, Check, CountSource, LogLevel, Metric, MountOps,
    MountsResult, TableCost, TableTeardown, Unit, MOUNT_OPS_PER_CONTAINER,
};
pub use outcome::{Evidence, Outcome};
pub use plan::{
    filesystem_name, Filesystem, MountStrategy, MountsScenario, Plan, PlanItem, PlanRuntime,
    Scenario, ScenarioKey, ScratchDisk, Strategy,
};
pub use runtime::RuntimeName;
pub use stats::{percentile, Summary};
pub use topology::{
    topology_name, Hypervisor, NumaNode, ObservedTopology, SmtState, Virtualization, SMT_CONTROL,
};
pub use watch::{Watcher, WatcherFigures, WatcherOutcome, WatcherStats};

/// Version of the plan and result schema. Bump on any incompatible change.
/// 2: plan items and results carry an item index; errno names no longer travel.
/// 3: a mounts strategy may be a runtime (`runtime:NAME`); plans carry their runtimes.
/// 4: a plan has a scratch disk per filesystem and each item names its own; capabilities come
///    once per disk.
pub const SCHEMA_VERSION: u32 = 4;

/// Prefix of every result line the agent writes, so results can share a channel with noise.
pub const LINE_PREFIX: &str = "MMX1 ";

/// Errors in reading the wire format.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("plan has schema version {found}, this agent speaks version {expected}; rebuild the agent and the harness from the same tree")]
    SchemaVersion { found: u32, expected: u32 },
    #[error("malformed {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Refuse a plan of an unknown schema version with a clear message.
pub fn check_schema(plan: &Plan) -> Result<(), ProtocolError> {
    if plan.schema_version != SCHEMA_VERSION {
        return Err(ProtocolError::SchemaVersion {
            found: plan.schema_version,
            expected: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Parse a plan and check its version in one step.
pub fn parse_plan(text: &str) -> Result<Plan, ProtocolError> {
    // Read only the version first so that a plan from a newer harness gets the version error,
    // not a confusing "unknown field" error.
    #[derive(Deserialize)]
    struct VersionOnly {
        schema_version: u32,
    }
    let v: VersionOnly = serde_json::from_str(text).map_err(|source| ProtocolError::Json {
        what: "plan",
        source,
    })?;
    if v.schema_version != SCHEMA_VERSION {
        return Err(ProtocolError::SchemaVersion {
            found: v.schema_version,
            expected: SCHEMA_VERSION,
        });
    }
    serde_json::from_str(text).map_err(|source| ProtocolError::Json {
        what: "plan",
        source,
    })
}

/// Encode one event as a result line (prefix + JSON, no newline).
pub fn encode_line(event: &AgentEvent) -> String {
    // Serializing plain data with string keys cannot fail.
    let json = serde_json::to_string(event).unwrap_or_else(|e| {
        format!(r#"{{"event":"log","level":"error","message":"unencodable event: {e}"}}"#)
    });
    format!("{LINE_PREFIX}{json}")
}

/// Decode a line if it is a result line; `None` for any other text on the channel.
///
/// A result line starts with [`LINE_PREFIX`]; the prefix anywhere else is text that happens to
/// contain it (another writer's half line, a log line quoting one), never a result. A line must
/// also be whole: one longer than [`limits::RESULT_LINE_MAX`] is a protocol violation for the
/// reader to report, never something to cut and parse.
pub fn decode_line(line: &str) -> Option<Result<AgentEvent, ProtocolError>> {
    let json = line.strip_prefix(LINE_PREFIX)?.trim_end();
    Some(
        serde_json::from_str(json).map_err(|source| ProtocolError::Json {
            what: "result line",
            source,
        }),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::Serialize;

    use super::*;

    fn roundtrip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + fmt::Debug>(v: &T) {
        let s = serde_json::to_string(v).expect("serialize");
        let back: T = serde_json::from_str(&s).expect("deserialize");
        assert_eq!(&back, v, "round trip through {s}");
    }

    fn mounts(strategy: Strategy) -> MountsScenario {
        MountsScenario {
            strategy: strategy.into(),
            layers: 50,
            containers: 20,
            concurrency: 2,
            passes: 2,
            watchers: Vec::new(),
        }
    }

    pub(crate) fn sample_plan() -> Plan {
        Plan {
            schema_version: SCHEMA_VERSION,
            boot_id: "debian-6.12/1s2c1t/ext4".into(),
            scratch_dir: "/scratch".into(),
            scratch_disks: vec![ScratchDisk {
                device: "/dev/vda".into(),
                filesystem: Filesystem::Ext4,
            }],
            modules: vec!["/lib/modules/overlay.ko.xz".into()],
            probe: true,
            items: vec![
                PlanItem {
                    item: 0,
                    cell_id: "a/b/ext4/per-layer-L50-C20-P2-J2".into(),
                    scenario: Scenario::Mounts(mounts(Strategy::PerLayer)),
                    timeout_s: Some(60),
                    filesystem: Some(Filesystem::Ext4),
                },
                PlanItem {
                    item: 1,
                    cell_id: "a/b/ext4/lockbench".into(),
                    scenario: Scenario::Lockbench(lockbench::LockbenchScenario::default()),
                    timeout_s: None,
                    filesystem: None,
                },
                PlanItem {
                    item: 2,
                    cell_id: "a/b/ext4/runtime:containerd-2.1-L50-C20-P2-J2".into(),
                    scenario: Scenario::Mounts(MountsScenario {
                        strategy: "runtime:containerd-2.1".parse().unwrap(),
                        ..mounts(Strategy::PerLayer)
                    }),
                    timeout_s: Some(60),
                    filesystem: None,
                },
            ],
            runtimes: vec![PlanRuntime {
                name: "containerd-2.1".parse().unwrap(),
                path: "/runtimes/containerd-2.1".into(),
                args: vec![],
                job_timeout_s: 30,
                sha256: "00".repeat(32),
            }],
        }
    }

    #[test]
    fn plan_round_trips() {
        roundtrip(&sample_plan());
    }

    #[test]
    fn plan_of_unknown_version_is_refused_clearly() {
        let mut plan = sample_plan();
        plan.schema_version = 99;
        let text = serde_json::to_string(&plan).unwrap();
        let err = parse_plan(&text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("schema version 99"), "{msg}");
        assert!(msg.contains(&format!("version {SCHEMA_VERSION}")), "{msg}");
        // Even a plan with fields this version does not know gets the version error first.
        let future = format!(
            r#"{{"schema_version": {}, "brand_new": true}}"#,
            SCHEMA_VERSION + 1
        );
        assert!(matches!(
            parse_plan(&future),
            Err(ProtocolError::SchemaVersion { found, .. }) if found == SCHEMA_VERSION + 1
        ));
    }

    #[test]
    fn plan_parses_and_rejects_unknown_fields() {
        let plan = sample_plan();
        let text = serde_json::to_string(&plan).unwrap();
        assert_eq!(parse_plan(&text).unwrap(), plan);
        let bad = text.replacen("\"boot_id\"", "\"bootid\"", 1);
        assert!(parse_plan(&bad).is_err());
    }

    #[test]
    fn every_event_round_trips_through_a_line() {
        let events = vec![
            AgentEvent::Hello {
                agent_version: "0.1.0".into(),
                schema_version: SCHEMA_VERSION,
                kernel_release: "6.12.0".into(),
                uptime_ms: 1234,
            },
            AgentEvent::Topology(ObservedTopology {
                cpu_model: "QEMU Virtual CPU".into(),
                cpus_online: vec![0, 1, 2, 3],
                sockets: 2,
                cores_per_socket: 1,
                threads_per_core: 2,
                core_siblings: vec![vec![0, 1], vec![2, 3]],
                smt: SmtState::On,
                numa_nodes: vec![NumaNode {
                    id: 0,
                    cpus: vec![0, 1],
                    memory_mib: 512,
                    distances: vec![10, 20],
                }],
                virtualization: Some(crate::Virtualization {
                    hypervisor: Some(crate::Hypervisor::QemuTcg),
                    evidence: vec!["cpuid 0x40000000: TCGTCGTCGTCG".into()],
                }),
            }),
            AgentEvent::Capabilities(Capabilities {
                kernel_release: "6.1.0".into(),
                probed_fs: "tmpfs".into(),
                disk: None,
                probes: vec![
                    ProbeResult {
                        feature: Feature::IdmapMount,
                        supported: false,
                        evidence: Some(
                            Evidence::new("mount_setattr(MOUNT_ATTR_IDMAP) on tmpfs")
                                .with_errno(22),
                        ),
                        warning: None,
                    },
                    ProbeResult {
                        feature: Feature::OpenTreeAttrIdmapLocked,
                        supported: false,
                        evidence: Some(Evidence::new("allowed: open_tree_attr in place")),
                        warning: Some(ProbeWarning::IdmapChangeAllowed),
                    },
                ],
            }),
            AgentEvent::CellResult(CellResult {
                item: 3,
                cell_id: "x".into(),
                outcome: Outcome::Pass,
                evidence: None,
                metrics: BTreeMap::from([(
                    "latency_p50_us".to_string(),
                    Metric::one(Unit::Microseconds, Better::Lower, 12.5),
                )]),
                detail: Some(CellDetail::Mounts(MountsResult {
                    scenario: mounts(Strategy::FsconfigFd),
                    layers_fs: "ext4".into(),
                    table: None,
                    mount_ops: MountOps {
                        attachments: 40,
                        detachments: 0,
                        ops: 40,
                        expected_ops: Some(40),
                        teardown_detachments: 40,
                        cross_check_method: "listmount".into(),
                        peak_extra_mounts: 1,
                        leaked: 0,
                        count_source: CountSource::FanotifyMountEvents,
                        mounts_allocated: Some(480),
                        expected_allocated: Some(480),
                        notes: vec!["2 events were not the run's".into()],
                    },
                    latency_us: vec![1, 2, 3],
                    latency: Summary::of(&[1.0, 2.0, 3.0]),
                    wall_us: 10,
                    syscall_us: 9,
                    overhead_us: 1,
                    checks: vec![Check {
                        name: "uid".into(),
                        ok: true,
                        detail: String::new(),
                    }],
                    runtime: Some(runtime::Hello {
                        contract: runtime::CONTRACT_VERSION,
                        runtime: "containerd".into(),
                        version: "2.1.9+ds1-5 go1.27.3".into(),
                    }),
                    erofs: Some(crate::erofs::ErofsLayers {
                        backing: crate::erofs::ErofsBacking::Loop,
                        file_refused: Some(
                            Evidence::new("fsconfig(FSCONFIG_CMD_CREATE)").with_errno(15),
                        ),
                        mounts: 3,
                    }),
                    watchers: vec![
                        WatcherFigures {
                            watcher: Watcher::PollMountinfo,
                            outcome: WatcherOutcome::Watched(WatcherStats {
                                cpu_ns: 1_500_000,
                                wakeups: 12,
                                bytes_read: 48_000,
                                attached_seen: 20,
                                detached_seen: 20,
                                table_entries: Some(31),
                                lag_ns: Summary::of(&[1e4, 2e4]),
                                lag_matched: 2,
                                seen_before_return: 0,
                                lag_unmatched: 18,
                            }),
                        },
                        WatcherFigures {
                            watcher: Watcher::Fanotify,
                            outcome: WatcherOutcome::Unsupported {
                                step: "fanotify_init(FAN_REPORT_MNT)".into(),
                                errno: 22,
                            },
                        },
                    ],
                })),
            }),
            AgentEvent::Log {
                level: LogLevel::Warn,
                message: "hi".into(),
            },
            AgentEvent::Done { uptime_ms: 99 },
        ];
        for e in &events {
            roundtrip(e);
            let line = encode_line(e);
            assert!(line.starts_with(LINE_PREFIX));
            // A carriage return at the end does not matter.
            assert_eq!(&decode_line(&format!("{line}\r")).unwrap().unwrap(), e);
            // The prefix counts only at the start of the line: after other text it is text.
            let noisy = format!("[    3.1] {line}");
            assert!(decode_line(&noisy).is_none(), "{noisy}");
            assert!(decode_line(&format!(" {line}")).is_none());
        }
        assert!(decode_line("[    0.000] Linux version 6.1").is_none());
        assert!(decode_line("MMX1 {not json").unwrap().is_err());
    }

    #[test]
    fn statfs_magic_names_the_filesystem() {
        assert_eq!(
            Filesystem::from_statfs_magic(0xEF53),
            Some(Filesystem::Ext4)
        );
        assert_eq!(
            Filesystem::from_statfs_magic(0x0102_1994),
            Some(Filesystem::Tmpfs)
        );
        assert_eq!(
            Filesystem::from_statfs_magic(0x2fc1_2fc1),
            None,
            "zfs is named, not labelled"
        );
        assert_eq!(filesystem_name(0x2fc1_2fc1), "zfs");
        assert_eq!(filesystem_name(0x1234), "unknown (magic 0x1234)");
    }

    #[test]
    fn enums_use_the_documented_spellings() {
        for o in Outcome::ALL {
            assert_eq!(
                serde_json::to_string(&o).unwrap(),
                format!("\"{}\"", o.as_str())
            );
        }
        for s in Strategy::ALL {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
            assert_eq!(s.as_str().parse::<Strategy>().unwrap(), s);
        }
        for f in Filesystem::ALL {
            assert_eq!(f.as_str().parse::<Filesystem>().unwrap(), f);
        }
        for f in Feature::ALL {
            assert_eq!(
                serde_json::to_string(&f).unwrap(),
                format!("\"{}\"", f.as_str())
            );
        }
        assert!("zfs".parse::<Filesystem>().is_err());
    }

    #[test]
    fn formulas_match_design() {
        // per-layer 2·(1+2L), common-parent 2·3, fsconfig-fd 2·1 with 2 passes.
        assert_eq!(
            mounts(Strategy::PerLayer).expected_ops_per_container(),
            Some(2 * 101)
        );
        assert_eq!(
            mounts(Strategy::CommonParent).expected_ops_per_container(),
            Some(6)
        );
        assert_eq!(
            mounts(Strategy::FsconfigFd).expected_ops_per_container(),
            Some(2)
        );
        // A runtime has no formula; its time limits assume it maps every layer.
        let rt = MountsScenario {
            strategy: "runtime:x".parse().unwrap(),
            ..mounts(Strategy::PerLayer)
        };
        assert_eq!(rt.expected_ops_per_container(), None);
        assert_eq!(rt.expected_allocated_per_container(), None);
        assert_eq!(rt.teardown_per_container(), None);
        assert_eq!(rt.ops_bound_per_container(), 2 * 101);
    }

    #[test]
    fn strategies_spell_builtins_and_runtimes() {
        for s in Strategy::ALL {
            let m = MountStrategy::from(s);
            assert_eq!(m.to_string(), s.as_str());
            assert_eq!(s.as_str().parse::<MountStrategy>().unwrap(), m);
            // The spelling run.json and plans always had.
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{s}\""));
        }
        let rt: MountStrategy = "runtime:containerd-2.1".parse().unwrap();
        assert_eq!(
            rt.runtime().map(RuntimeName::as_str),
            Some("containerd-2.1")
        );
        assert_eq!(rt.builtin(), None);
        assert_eq!(
            serde_json::from_str::<MountStrategy>("\"runtime:containerd-2.1\"").unwrap(),
            rt
        );
        let label = MountsScenario {
            strategy: rt.clone(),
            layers: 10,
            containers: 10,
            concurrency: 2,
            passes: 2,
            watchers: Vec::new(),
        }
        .label();
        assert_eq!(label, "runtime:containerd-2.1-L10-C10-P2-J2");
        // Watchers share the CPUs and locks: each one is in the id.
        let watched = MountsScenario {
            watchers: vec![Watcher::PollMountinfo, Watcher::Fanotify],
            ..mounts(Strategy::PerLayer)
        };
        assert_eq!(
            watched.label(),
            "per-layer-L50-C20-P2-J2+poll-mountinfo+fanotify"
        );
        // Built-ins sort before runtimes: report columns read the three, then the runtimes.
        assert!(MountStrategy::from(Strategy::FsconfigFd) < rt);
        for bad in [
            "runtime:",
            "runtime:a b",
            "runtime:a/b",
            "perlayer",
            "runtime",
        ] {
            let e = bad.parse::<MountStrategy>().unwrap_err();
            assert!(e.contains("runtime"), "{bad}: {e}");
        }
        assert!(serde_json::from_str::<MountStrategy>("\"runtime:../x\"").is_err());
    }

    #[test]
    fn formulas_split_into_attachments_detachments_and_allocations() {
        for st in Strategy::ALL {
            let m = mounts(st);
            assert_eq!(
                m.expected_ops_per_container().unwrap(),
                m.expected_attachments_per_container().unwrap()
                    + m.expected_detachments_per_container().unwrap()
            );
            assert_eq!(m.teardown_per_container(), Some(2));
        }
        // Per pass: per-layer L clones + overlay + L+1 private layer clones; common-parent one
        // clone + overlay + L+1; fsconfig-fd like per-layer (its clones stay detached).
        assert_eq!(
            mounts(Strategy::PerLayer).expected_allocated_per_container(),
            Some(2 * 102)
        );
        assert_eq!(
            mounts(Strategy::CommonParent).expected_allocated_per_container(),
            Some(2 * 53)
        );
        assert_eq!(
            mounts(Strategy::FsconfigFd).expected_allocated_per_container(),
            Some(2 * 102)
        );
    }

    #[test]
    fn counts_recorded_before_the_kernel_counted_read_as_the_agents_tally() {
        let old = r#"{"attachments":4,"detachments":2,"ops":6,"expected_ops":6,
            "teardown_detachments":2,"cross_check_method":"mountinfo","peak_extra_mounts":3,
            "leaked":0}"#;
        let m: MountOps = serde_json::from_str(old).expect("an older run's counts");
        assert_eq!(m.count_source, CountSource::AgentTally);
        assert_eq!((m.mounts_allocated, m.notes.len()), (None, 0));
        for (c, s) in [
            (CountSource::FanotifyMountEvents, "fanotify-mount-events"),
            (CountSource::UniqueMountIds, "unique-mount-ids"),
            (CountSource::MountTableDiff, "mount-table-diff"),
            (CountSource::AgentTally, "agent-tally"),
        ] {
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{s}\""));
            assert_eq!(c.as_str(), s);
        }
    }

    #[test]
    fn storms_need_a_table_size_within_the_limit() {
        let mut l = lockbench::LockbenchScenario {
            bench: lockbench::Bench::Storm,
            ..Default::default()
        };
        assert_eq!(l.prepopulated_mounts, vec![0]);
        assert!(l.validate().is_ok());
        l.prepopulated_mounts = vec![0, 10_000, 50_000];
        assert!(l.validate().is_ok());
        l.prepopulated_mounts = vec![200_000];
        let e = l.validate().unwrap_err().to_string();
        assert!(e.contains("200000"), "{e}");
        l.prepopulated_mounts = vec![];
        assert!(l.validate().is_err());
        // A scenario written before the axis existed reads as one storm on the table as is.
        let old: lockbench::LockbenchScenario =
            serde_json::from_str(r#"{"bench":"storm"}"#).unwrap();
        assert_eq!(old.prepopulated_mounts, vec![0]);
    }

    #[test]
    fn outcome_success_is_decided_for_every_variant() {
        let ok: Vec<_> = Outcome::ALL
            .into_iter()
            .filter(|o| o.is_success())
            .collect();
        assert_eq!(ok, vec![Outcome::Pass, Outcome::Unsupported]);
    }

    #[test]
    fn a_kernel_verdict_outranks_our_breakage() {
        let worst = |a: Outcome, b: Outcome| std::cmp::max_by_key(a, b, |o| o.severity());
        assert_eq!(worst(Outcome::Unsupported, Outcome::Fail), Outcome::Fail);
        assert_eq!(worst(Outcome::InfraError, Outcome::Fail), Outcome::Fail);
        assert_eq!(
            worst(Outcome::Pass, Outcome::InfraError),
            Outcome::InfraError
        );
        let mut ranks: Vec<u8> = Outcome::ALL.iter().map(|o| o.severity()).collect();
        ranks.sort_unstable();
        ranks.dedup();
        assert_eq!(ranks.len(), Outcome::ALL.len(), "a strict order");
    }

    #[test]
    fn evidence_reads_like_the_failed_call() {
        let e = Evidence::new("fsconfig(FSCONFIG_SET_FD, \"lowerdir+\")").with_errno(95);
        assert_eq!(
            e.to_string(),
            "fsconfig(FSCONFIG_SET_FD, \"lowerdir+\"): EOPNOTSUPP"
        );
    }
}
