//! The kernel's own numbers, end to end on this host's kernel: every strategy's mount-table
//! operations as the kernel counts them (fanotify mount events where the probe says the kernel
//! has them, and the fallbacks the test hook leaves) equal the strategy's formula; one bind mount
//! too many, made through the test hook `MMX_AGENT_TEST_HOOK=extra-bind`, fails the cell with the
//! numbers; an internal error of the agent (`agent-error`) fails the cell, never `unsupported`.
//! They need root; without it they say so loudly (and fail with `CI=true`).
//!
//! No test asserts a time.

use std::path::Path;
use std::process::Command;

use protocol::{CellResult, CountSource, Feature, Outcome, Strategy};

mod common;

use common::{assert_no_leak, detail, is_root, mount_table, mounts, Scratch, AGENT};

/// Whether this kernel reports mount events, by the agent's own probe.
fn kernel_has_mount_events(scratch: &Path) -> bool {
    let out = Command::new(AGENT)
        .args(["probe", "--json", "--scratch"])
        .arg(scratch)
        .output()
        .expect("run mmx-agent probe");
    let caps: protocol::Capabilities = serde_json::from_slice(&out.stdout).expect("capabilities");
    caps.supports(Feature::FanotifyMountEvents)
}

/// The counts of a passing run, against the formulas, whole run.
fn assert_counts_match(r: &CellResult, source: CountSource) {
    assert_eq!(r.outcome, Outcome::Pass, "{r:#?}");
    let m = detail(r);
    let s = &m.scenario;
    let c = u64::from(s.containers);
    let o = &m.mount_ops;
    assert_eq!(o.count_source, source, "{o:#?}");
    assert_eq!(
        (o.attachments, o.detachments, o.teardown_detachments),
        (
            s.expected_attachments_per_container().expect("a formula") * c,
            s.expected_detachments_per_container().expect("a formula") * c,
            s.teardown_per_container().expect("a formula") * c
        ),
        "{}: {o:#?}",
        r.cell_id
    );
    assert_eq!(Some(o.ops), o.expected_ops);
    let check = m
        .checks
        .iter()
        .find(|c| c.name == "mount-ops-formula")
        .expect("the formula check");
    assert!(check.ok, "{check:?}");
    if source != CountSource::MountTableDiff {
        // The counter is system-wide: other processes on this machine can only add to it.
        let (got, want) = (o.mounts_allocated, o.expected_allocated);
        let want = want.expect("an allocation formula where ids are counted");
        assert!(
            got.is_some_and(|g| g >= want),
            "{}: allocated {got:?}, the sequence makes {want}",
            r.cell_id
        );
    }
}

#[test]
fn kernel_counts_equal_the_formula_for_every_strategy() {
    if !is_root("kernel_counts_equal_the_formula_for_every_strategy") {
        return;
    }
    let scratch = Scratch::new("counts", "formula");
    let before = mount_table();
    let events = kernel_has_mount_events(&scratch.0);
    if !events {
        eprintln!("note: this kernel has no fanotify mount events; the fallbacks count");
    }
    for strategy in Strategy::ALL {
        for j in [1, 2] {
            let (r, out) = mounts(None, strategy, (4, 3, j), &scratch.0);
            assert!(out.status.success(), "{strategy} J{j}: {:?}", out.status);
            let source = detail(&r).mount_ops.count_source;
            // The best source the kernel has: fanotify exactly where the probe found it.
            assert_eq!(
                source == CountSource::FanotifyMountEvents,
                events,
                "{source}"
            );
            assert_counts_match(&r, source);
            scratch.assert_empty();
        }
        // The fallbacks of older kernels, on this one: never a better source than allowed.
        for (hook, allowed) in [
            (
                "no-fanotify",
                &[CountSource::UniqueMountIds, CountSource::MountTableDiff][..],
            ),
            ("no-unique-ids", &[CountSource::MountTableDiff][..]),
        ] {
            let (r, _) = mounts(Some(hook), strategy, (4, 3, 2), &scratch.0);
            let source = detail(&r).mount_ops.count_source;
            assert!(allowed.contains(&source), "{hook}: {source}");
            assert_counts_match(&r, source);
            scratch.assert_empty();
        }
    }
    assert_no_leak(&before);
}

#[test]
fn one_bind_mount_too_many_fails_the_formula_check() {
    if !is_root("one_bind_mount_too_many_fails_the_formula_check") {
        return;
    }
    let scratch = Scratch::new("counts", "extra");
    let before = mount_table();
    let events = kernel_has_mount_events(&scratch.0);
    // Whatever counts (the best source this kernel has, and the fallbacks), the extra mount is
    // caught.
    for hook in [
        "extra-bind",
        "extra-bind,no-fanotify",
        "extra-bind,no-unique-ids",
    ] {
        for strategy in Strategy::ALL {
            let (r, out) = mounts(Some(hook), strategy, (3, 2, 1), &scratch.0);
            assert_eq!(r.outcome, Outcome::Fail, "{hook}: {r:#?}");
            assert_eq!(out.status.code(), Some(1));
            let ev = r.evidence.as_ref().expect("evidence");
            assert_eq!(ev.step, "check mount-ops-formula", "{hook}: {ev:?}");
            let m = detail(&r);
            let s = &m.scenario;
            let source = m.mount_ops.count_source;
            if hook == "extra-bind" {
                assert_eq!(
                    source == CountSource::FanotifyMountEvents,
                    events,
                    "{source}"
                );
            }
            // One attach and one detach more per pass: 2 containers × 2 passes.
            let want = s.expected_ops_per_container().expect("a formula") * 2;
            let got = m.mount_ops.ops;
            assert_eq!(got, want + 2 * 2 * 2, "{hook}: {:#?}", m.mount_ops);
            assert!(
                ev.detail
                    .contains(&format!("{source} counted {got} mount-table operations"))
                    && ev.detail.contains(&format!("the formula says {want}")),
                "{}",
                ev.detail
            );
            // Where the kernel's allocations are read, the extra mount is there too.
            if m.mount_ops.mounts_allocated.is_some() {
                assert!(m.mount_ops.mounts_allocated > m.mount_ops.expected_allocated);
            }
            scratch.assert_empty();
        }
    }
    assert_no_leak(&before);
}

#[test]
fn an_internal_error_is_fail_never_unsupported() {
    if !is_root("an_internal_error_is_fail_never_unsupported") {
        return;
    }
    let scratch = Scratch::new("counts", "agent-error");
    let before = mount_table();
    for strategy in Strategy::ALL {
        let (r, out) = mounts(Some("agent-error"), strategy, (3, 2, 1), &scratch.0);
        assert_eq!(r.outcome, Outcome::Fail, "{r:#?}");
        assert_eq!(out.status.code(), Some(1));
        let ev = r.evidence.as_ref().expect("evidence");
        // It carries EINVAL, which by errno alone once read as the kernel's "unsupported".
        assert_eq!(ev.errno_name(), Some("EINVAL"), "{ev:?}");
        assert!(ev.step.starts_with("agent error: "), "{ev:?}");
        assert!(
            ev.detail.contains("MMX_AGENT_TEST_HOOK=agent-error"),
            "{ev:?}"
        );
        assert_eq!(detail(&r).mount_ops.leaked, 0);
        scratch.assert_empty();
    }
    // An unknown hook is refused, never ignored.
    let (r, _) = mounts(
        Some("no-such-hook"),
        Strategy::PerLayer,
        (1, 1, 1),
        &scratch.0,
    );
    assert_eq!(r.outcome, Outcome::InfraError, "{r:#?}");
    assert_no_leak(&before);
}
