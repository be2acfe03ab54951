//! Runtimes as columns of the matrix, end to end through `mmx run`: the repository's example
//! runtime with each of its faults (chosen by the recipe's `args`, never by an environment
//! variable) on this machine's kernel and in a 7.x guest; containerd 2.1.9's own `core/mount`,
//! built by mmx from Debian, whose kernel-side mount count per container does not grow with the
//! layers; and the release gate: a second containerd built with the per-layer patch, both run
//! at L = 1, 10, 50, and `mmx compare` failing on the mount-count growth.
//!
//! Every answer is a known answer in the test's own matrix (`[[expect]]`), so `mmx run` itself
//! says whether they held (exit 0); the tests then read run.json for the evidence.
//!
//! Needs root (the local backend mounts), QEMU for the guest, and deb.debian.org or the cache for
//! the kernels and containerd's packages (runtimes/runtimes.lock, kernels/kernels.lock).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use harness::results::{CellRecord, RunRecord};
use protocol::{Outcome, MOUNT_OPS_PER_CONTAINER};

/// The example runtime, static, built once per test process.
fn example() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        harness::runtimes::example::build_static().expect("building the example runtime")
    })
    .clone()
}

fn root() -> bool {
    common::require(
        rustix::process::geteuid().is_root(),
        "`mmx run --backend local` needs root (mount and user namespaces, idmapped mounts)",
    )
}

/// A directory holding `matrix.toml` with the repository's `kernels/` and `runtimes/` beside it,
/// as a user's checkout has them.
fn project(matrix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mmx-runtime-cells-")
        .tempdir()
        .expect("tempdir");
    let repo = harness::agent::workspace_root();
    for sub in ["kernels", "runtimes"] {
        std::os::unix::fs::symlink(repo.join(sub), dir.path().join(sub)).expect("symlink");
    }
    std::fs::write(dir.path().join("matrix.toml"), matrix).expect("matrix.toml");
    dir
}

/// `mmx ARGS` in `dir`.
fn mmx(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running mmx")
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `mmx run` with `args`, as run `id`; its record.
fn run(dir: &Path, id: &str, args: &[&str]) -> (Output, RunRecord) {
    let mut all = vec!["run", "--run-id", id];
    all.extend_from_slice(args);
    let out = mmx(dir, &all);
    let path = dir.join("runs").join(id).join("run.json");
    let record = RunRecord::read(&path).unwrap_or_else(|e| panic!("{e:#}\n{}", text(&out)));
    (out, record)
}

fn cell<'a>(run: &'a RunRecord, id_part: &str) -> &'a CellRecord {
    run.cells
        .iter()
        .find(|c| c.key.to_string().contains(id_part))
        .unwrap_or_else(|| panic!("no cell `{id_part}` in {:#?}", ids(run)))
}

fn ids(run: &RunRecord) -> Vec<String> {
    run.cells.iter().map(|c| c.key.to_string()).collect()
}

fn ops_per_container(c: &CellRecord) -> Vec<f64> {
    c.metrics
        .get(MOUNT_OPS_PER_CONTAINER)
        .map(|m| m.samples.clone())
        .unwrap_or_default()
}

/// The example runtime five times over: as it is, and with each fault its recipe's `args` picks.
/// Known answers: it passes mapping every layer (2·(2L+1) per container, P = 2); an injected
/// EOPNOTSUPP at its overlay step is `unsupported` there; a crash `fail`s; a hang `timeout`s at
/// the job limit; a leak `fail`s `no-leaked-mounts`.
fn example_runtimes(layers: u32, job_timeout_s: u32) -> String {
    let bin = example();
    let per = 2 * (2 * layers + 1);
    let mut m = String::new();
    for (name, args) in [
        ("example", ""),
        ("example-error", r#"args = ["--fault", "error:overlay:95"]"#),
        ("example-crash", r#"args = ["--fault", "crash:overlay"]"#),
        ("example-hang", r#"args = ["--fault", "hang:idmap"]"#),
        ("example-leak", r#"args = ["--fault", "leak"]"#),
    ] {
        m.push_str(&format!(
            "[[runtimes]]\nname = \"{name}\"\nbinary = \"{}\"\n{args}\njob_timeout_s = {job_timeout_s}\n\n",
            bin.display()
        ));
    }
    m.push_str(&format!(
        r#"[[expect]]
cells = "*/runtime:example-L*"
outcome = "pass"
mount_ops_per_container = {per}
reason = "one idmapped mount per layer and the overlay attached, the layers detached, per pass"

[[expect]]
cells = "*/runtime:example-error-*"
outcome = "unsupported"
errno = "EOPNOTSUPP"
step = "overlay (injected)"

[[expect]]
cells = "*/runtime:example-crash-*"
outcome = "fail"
step = "killed by signal 6 (SIGABRT)"

[[expect]]
cells = "*/runtime:example-hang-*"
outcome = "timeout"
step = "did not answer"

[[expect]]
cells = "*/runtime:example-leak-*"
outcome = "fail"
step = "no-leaked-mounts"

"#
    ));
    m
}

const EXAMPLE_COLUMNS: &str = r#""runtime:example", "runtime:example-error", "runtime:example-crash", "runtime:example-hang", "runtime:example-leak""#;

/// What each fault leaves as evidence, beyond the known answer's outcome and step.
fn assert_example_evidence(run: &RunRecord, layers: u32) {
    let ok = cell(run, &format!("/runtime:example-L{layers}-"));
    assert_eq!(ok.outcome, Outcome::Pass, "{ok:#?}");
    let per = f64::from(2 * (2 * layers + 1));
    let samples = ops_per_container(ok);
    assert!(
        !samples.is_empty() && samples.iter().all(|&n| n == per),
        "{samples:?}"
    );
    let rt = ok
        .provenance
        .runtime
        .as_ref()
        .expect("the runtime's identity");
    assert_eq!(rt.said.as_deref(), Some("mmx-example 0.1.0"), "{rt:?}");
    assert!(rt.source.starts_with("binary "), "{rt:?}");

    let crash = cell(run, "/runtime:example-crash-");
    let ev = crash.evidence.as_ref().expect("evidence");
    assert!(
        ev.detail.contains("crashing at overlay"),
        "the stderr: {ev:?}"
    );

    let leak = cell(run, "/runtime:example-leak-");
    let ev = leak.evidence.as_ref().expect("evidence");
    assert!(
        ev.detail.contains("/c/0/m (overlay)"),
        "the leaked path: {ev:?}"
    );
    let hang = cell(run, "/runtime:example-hang-");
    assert!(
        hang.evidence
            .as_ref()
            .expect("ev")
            .step
            .contains("job_timeout_s"),
        "{hang:#?}"
    );
    // The args are part of what the cell ran.
    assert_eq!(
        leak.provenance.runtime.as_ref().expect("rt").args,
        ["--fault", "leak"]
    );
    let names: Vec<String> = run.runtimes.iter().map(|r| r.name.to_string()).collect();
    assert!(names.contains(&"example-hang".to_string()), "{names:?}");
}

#[test]
fn the_example_runtime_and_its_faults_on_the_host() {
    if !root() {
        return;
    }
    let layers = 3;
    let matrix = format!(
        "{}[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"common-parent\", {EXAMPLE_COLUMNS}]\nlayers = [{layers}]\ncontainers = [3]\nconcurrency = [1]\n",
        example_runtimes(layers, 3)
    );
    let dir = project(&matrix);
    let (out, run) = run(dir.path(), "host", &["--backend", "local"]);
    assert!(
        out.status.success(),
        "every known answer holds:\n{}",
        text(&out)
    );
    assert_eq!(run.cells.len(), 6, "{:#?}", ids(&run));
    assert!(run
        .cells
        .iter()
        .filter(|c| c.scenario.runtime().is_some())
        .all(|c| c.expected.as_ref().is_some_and(|e| e.met)));
    assert_example_evidence(&run, layers);
    // The terminal and the reports carry the columns and the runtimes.
    let t = text(&out);
    assert!(
        t.contains("runtime:example-leak") && t.contains("Runtimes"),
        "{t}"
    );
    let md = std::fs::read_to_string(dir.path().join("runs/host/report.md")).expect("report.md");
    // A column name with `:` is a code span in report.md (escape.rs), in the matrix's header.
    assert!(md.contains("runtime:example-crash `<br>"), "{md}");
}

/// containerd's sources from Debian, as `mmx runtimes build` builds them.
const CONTAINERD: &str = r#"[[runtimes]]
name = "containerd-2.1"
containerd = { debian = "golang-github-containerd-containerd-dev" }

"#;

/// The known answers of containerd 2.1.9: its common parent, mapped once per pass, makes 6
/// operations per container on every layer count (P = 2) — but a single layer's read-only view
/// is a read-only rbind that core/mount remounts read-only and returns from before it idmaps
/// it, so the files of a one-layer image show their unmapped ids.
const CONTAINERD_ANSWERS: &str = r#"[[expect]]
cells = "*/runtime:containerd-2.1-L1-*"
outcome = "fail"
step = "ids-from-host"
reason = "containerd 2.1.9 does not idmap a single layer's read-only rbind view"

[[expect]]
cells = "*/runtime:containerd-2.1-*"
outcome = "pass"
mount_ops_per_container = 6
reason = "the layers' common parent, once per pass (containerd#12092)"

"#;

#[test]
fn containerd_from_debian_on_the_host_maps_the_common_parent_at_every_layer_count() {
    if !root() {
        return;
    }
    // Up to 30 layers: beyond, the scratch paths on this host push the overlay options past
    // core/mount's page limit and it mounts from a thread whose working directory is inside the
    // idmapped parent, which then cannot be unmounted (see README: what mmx found).
    let matrix = format!(
        "{CONTAINERD}{CONTAINERD_ANSWERS}[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"runtime:containerd-2.1\"]\nlayers = [1, 2, 10, 30]\ncontainers = [4]\nconcurrency = [2]\n"
    );
    let dir = project(&matrix);
    let (out, run) = run(dir.path(), "containerd", &["--backend", "local"]);
    assert!(out.status.success(), "{}", text(&out));
    let build = run.runtimes[0].build.expect("built");
    println!(
        "containerd runtime: {} ({} in {:.1} s)",
        run.runtimes[0].describe,
        if build.cached { "cached" } else { "built" },
        build.seconds
    );
    for l in [2u32, 10, 30] {
        let c = cell(&run, &format!("/runtime:containerd-2.1-L{l}-"));
        assert_eq!(ops_per_container(c), vec![6.0; 4], "L={l}: {c:#?}");
        let said = c.provenance.runtime.as_ref().and_then(|r| r.said.clone());
        assert!(
            said.as_deref()
                .is_some_and(|s| s.starts_with("containerd 2.1.9")),
            "{said:?}"
        );
    }
    let l1 = cell(&run, "/runtime:containerd-2.1-L1-");
    let ev = l1.evidence.as_ref().expect("evidence");
    assert!(ev.detail.contains("m/layer-1"), "{ev:?}");
}

#[test]
fn the_example_runtime_and_containerd_in_a_7x_guest() {
    if common::qemu_missing() {
        return;
    }
    let layers = 2;
    let matrix = format!(
        "kernels = [\"debian-7.x\"]\nfilesystems = [\"tmpfs\"]\n\n{CONTAINERD}{}{CONTAINERD_ANSWERS}[[scenarios]]\nkind = \"mounts\"\nstrategies = [{EXAMPLE_COLUMNS}, \"runtime:containerd-2.1\"]\nlayers = [{layers}]\ncontainers = [2]\nconcurrency = [1]\n\n[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"runtime:containerd-2.1\"]\nlayers = [1, 10]\ncontainers = [2]\nconcurrency = [1]\n",
        example_runtimes(layers, 2)
    );
    let dir = project(&matrix);
    let (out, run) = run(dir.path(), "guest", &["--backend", "qemu"]);
    assert!(
        out.status.success(),
        "every known answer holds in the guest:\n{}",
        text(&out)
    );
    assert!(
        run.cells
            .iter()
            .all(|c| c.key.to_string().starts_with("debian-7.x/")),
        "{:#?}",
        ids(&run)
    );
    assert_example_evidence(&run, layers);
    for l in [2u32, 10] {
        let c = cell(&run, &format!("/runtime:containerd-2.1-L{l}-"));
        assert_eq!(ops_per_container(c), vec![6.0; 2], "L={l}: {c:#?}");
        let m = c.mounts().expect("detail");
        assert_eq!(
            m.mount_ops.count_source,
            protocol::CountSource::FanotifyMountEvents
        );
    }
}

/// The release gate on a real runtime change: containerd 2.1.9 as Debian ships it (baseline)
/// and with `runtimes/containerd/testdata/per-layer-idmap.patch` (candidate, the behaviour
/// before containerd#12092), both as the column `runtime:containerd`, at L = 1, 10, 50.
#[test]
fn compare_fails_a_containerd_that_maps_every_layer_again() {
    if !root() {
        return;
    }
    let patch =
        harness::agent::workspace_root().join("runtimes/containerd/testdata/per-layer-idmap.patch");
    let matrix = |patches: &str| {
        format!(
            "[[runtimes]]\nname = \"containerd\"\ncontainerd = {{ debian = \"golang-github-containerd-containerd-dev\" }}\npatches = [{patches}]\n\n[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"runtime:containerd\"]\nlayers = [1, 10, 50]\ncontainers = [10]\nconcurrency = [1]\n"
        )
    };
    let base = project(&matrix(""));
    let cand = project(&matrix(&format!("\"{}\"", patch.display())));
    // Known answers are the compare's business here: both runs end as they end.
    let (_, b) = run(base.path(), "baseline", &["--backend", "local"]);
    let (_, c) = run(cand.path(), "candidate", &["--backend", "local"]);
    for (run, name) in [(&b, "baseline"), (&c, "candidate")] {
        for l in [1u32, 10, 50] {
            let x = cell(run, &format!("/runtime:containerd-L{l}-"));
            println!(
                "{name} L={l}: {} ops/container {:?}, start latency p50 {:?} µs",
                x.outcome,
                ops_per_container(x).first(),
                x.metrics
                    .get("start_latency_us")
                    .and_then(|m| m.summary())
                    .map(|s| s.p50)
            );
        }
    }
    assert_eq!(
        ops_per_container(cell(&c, "/runtime:containerd-L10-")),
        vec![42.0; 10],
        "the patched build maps each of 10 layers: 2·(1+2·10)"
    );
    assert!(c.runtimes[0].describe.contains("per-layer-idmap.patch"));
    let out = mmx(
        base.path(),
        &[
            "compare",
            "runs/baseline",
            &cand.path().join("runs/candidate").display().to_string(),
        ],
    );
    let md = text(&out);
    println!("{md}");
    assert_eq!(out.status.code(), Some(1), "the gate fails:\n{md}");
    // The growth, named per cell: the regressions list the count for L=10 and L=50.
    let regressions = md
        .split("### ")
        .find(|s| s.starts_with("Regressions") || s.contains("Regressions"))
        .unwrap_or_default();
    let line_of = |l: u32, metric: &str| {
        let id = format!("runtime:containerd-L{l}-C10-P2-J1");
        md.lines()
            .any(|line| line.contains(&id) && line.contains(metric))
    };
    for l in [10, 50] {
        assert!(
            line_of(l, MOUNT_OPS_PER_CONTAINER),
            "no mount-count line for L={l}:\n{md}"
        );
    }
    // And the latency change of the same cells, with whatever verdict its samples allow (listed
    // when it moved beyond its threshold; which way is the runtime's business).
    assert!(
        [10, 50].iter().any(|&l| line_of(l, "start_latency_us")),
        "no latency change named:\n{md}"
    );
    assert!(
        regressions.contains(MOUNT_OPS_PER_CONTAINER),
        "the count is a regression:\n{md}"
    );
}

/// A runtime that cannot be made ready costs its own cells only: they end `infra-error` with the
/// reason, and the boot runs the others.
#[test]
fn a_runtime_that_cannot_be_built_costs_only_its_cells() {
    if !root() {
        return;
    }
    let matrix = "[[runtimes]]\nname = \"not-static\"\nbinary = \"/bin/sh\"\n\n[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"common-parent\", \"runtime:not-static\"]\nlayers = [2]\ncontainers = [2]\n";
    let dir = project(matrix);
    let (out, run) = run(dir.path(), "broken", &["--backend", "local"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let ok = cell(&run, "/common-parent-L2-");
    assert_eq!(ok.outcome, Outcome::Pass, "{ok:#?}");
    let broken = cell(&run, "/runtime:not-static-L2-");
    assert_eq!(broken.outcome, Outcome::InfraError, "{broken:#?}");
    let ev = broken.evidence.as_ref().expect("evidence");
    assert_eq!(ev.step, "infra: runtime", "{ev:?}");
    assert!(ev.detail.contains("not a static executable"), "{ev:?}");
    assert!(run.runtimes[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("dynamically linked") || e.contains("not a 64-bit")));
    // The boot is the one that ran the passing cell.
    assert_eq!(broken.boot, ok.boot);
    assert_eq!(run.boots.len(), 1);
}

/// Where the kernel has no mount events (before 6.15; here the agent's test hook makes it count
/// as such a kernel would), a runtime's transient mounts cannot be seen: its cell says the count
/// is incomplete and makes no per-container metric, so no known answer or gate judges a count
/// that is not the kernel's whole count.
#[test]
fn without_mount_events_a_runtimes_count_is_said_to_be_incomplete() {
    if !root() {
        return;
    }
    let matrix = format!(
        "[[runtimes]]\nname = \"example\"\nbinary = \"{}\"\n\n[[scenarios]]\nkind = \"mounts\"\nstrategies = [\"runtime:example\"]\nlayers = [3]\ncontainers = [2]\n",
        example().display()
    );
    let dir = project(&matrix);
    let out = Command::new(env!("CARGO_BIN_EXE_mmx"))
        .args(["run", "--backend", "local", "--run-id", "no-events"])
        .env("MMX_AGENT_TEST_HOOK", "no-fanotify")
        .current_dir(dir.path())
        .output()
        .expect("mmx");
    assert!(out.status.success(), "{}", text(&out));
    let run = RunRecord::read(&dir.path().join("runs/no-events/run.json")).expect("run.json");
    let c = cell(&run, "/runtime:example-L3-");
    assert!(ops_per_container(c).is_empty(), "{:?}", c.metrics);
    let m = c.mounts().expect("detail");
    assert_eq!(
        m.mount_ops.count_source,
        protocol::CountSource::MountTableDiff
    );
    assert!(
        m.mount_ops
            .notes
            .iter()
            .any(|n| n.contains("no kernel count per container")),
        "{:?}",
        m.mount_ops.notes
    );
    // What the table shows: the overlay each job left, gone at its unmount.
    assert_eq!(
        (m.mount_ops.attachments, m.mount_ops.teardown_detachments),
        (4, 4)
    );
}
