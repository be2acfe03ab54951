//! How much the agent costs on top of the system calls it measures (issue 10, item 8): the
//! per-container start latency of `mmx-agent mounts --strategy per-layer` against
//! `startpath.c`, a minimal C program making the same calls in the same order without checks,
//! counting or bookkeeping. Both run in turn, several rounds, on the same scratch directory; the
//! ratio is of the medians over all containers of all rounds.
//!
//! `sudo cargo bench -p guest-agent --bench startpath` (root: mounts and user namespaces). Knobs
//! through the environment: `MMX_BENCH_SCRATCH` (default $TMPDIR), `MMX_BENCH_ROUNDS` (10),
//! `MMX_BENCH_SHAPE` (`L,C,P`, default `50,20,2`), `MMX_BENCH_CPU` (pin both to this CPU with
//! taskset: on a small VM whose vCPUs the host shares, an idle vCPU's wake-up latency otherwise
//! swings each umount's RCU grace period by tens of percent from run to run). The agent also
//! runs with its kernel counting reduced (`MMX_AGENT_TEST_HOOK=no-fanotify`), which shows what
//! fanotify's mount events cost the kernel on the measured path.
//!
//! Two ratios: the median of the rounds' ratios (robust to a noisy round) and the ratio of the
//! medians over all containers.

use std::path::{Path, PathBuf};
use std::process::Command;

use protocol::{CellDetail, CellResult};

const AGENT: &str = env!("CARGO_BIN_EXE_mmx-agent");

/// `taskset -c CPU` before a command when `MMX_BENCH_CPU` is set.
fn command(bin: &Path) -> Command {
    match std::env::var("MMX_BENCH_CPU") {
        Ok(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu]).arg(bin);
            c
        }
        Err(_) => Command::new(bin),
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Compile startpath.c next to the agent's build output.
fn build_c() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/startpath.c");
    let out = Path::new(AGENT)
        .parent()
        .expect("the agent's directory")
        .join("startpath");
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-O2", "-Wall", "-Wno-format-truncation", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run the C compiler (set CC to choose one)");
    assert!(status.success(), "compiling {} failed", src.display());
    out
}

fn c_run(bin: &Path, scratch: &str, (l, c, p): (u32, u32, u32)) -> Vec<f64> {
    let out = command(bin)
        .args([scratch, &l.to_string(), &c.to_string(), &p.to_string()])
        .output()
        .expect("run startpath");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "startpath failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split_once(':')
        .map(|(_, v)| {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn agent_run(hook: Option<&str>, scratch: &str, (l, c, p): (u32, u32, u32)) -> Vec<f64> {
    let mut cmd = command(Path::new(AGENT));
    cmd.env_remove("MMX_AGENT_TEST_HOOK");
    if let Some(h) = hook {
        cmd.env("MMX_AGENT_TEST_HOOK", h);
    }
    let out = cmd
        .args([
            "mounts",
            "--strategy",
            "per-layer",
            "--json",
            "--concurrency",
            "1",
        ])
        .args(["--layers", &l.to_string(), "--containers", &c.to_string()])
        .args(["--passes", &p.to_string(), "--scratch", scratch])
        .output()
        .expect("run mmx-agent");
    let r: CellResult = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no result from the agent ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(r.outcome.is_success(), "{:?}", r.evidence);
    match r.detail {
        Some(CellDetail::Mounts(m)) => m.latency_us.iter().map(|&v| v as f64).collect(),
        _ => panic!("no mounts detail"),
    }
}

fn median(v: &[f64]) -> f64 {
    protocol::Summary::of(v).map_or(f64::NAN, |s| s.p50)
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (a filter) is not ours to read.
    if !rustix::process::geteuid().is_root() {
        eprintln!("startpath: needs root (mounts, user namespaces); run it with sudo");
        std::process::exit(2);
    }
    let scratch = env_or("MMX_BENCH_SCRATCH", &std::env::temp_dir().to_string_lossy());
    let rounds: u32 = env_or("MMX_BENCH_ROUNDS", "10")
        .parse()
        .expect("MMX_BENCH_ROUNDS");
    let shape: Vec<u32> = env_or("MMX_BENCH_SHAPE", "50,20,2")
        .split(',')
        .map(|x| x.trim().parse().expect("MMX_BENCH_SHAPE: L,C,P"))
        .collect();
    let shape = (shape[0], shape[1], shape[2]);
    let bin = build_c();
    let pin =
        std::env::var("MMX_BENCH_CPU").map_or("not pinned".to_owned(), |c| format!("on CPU {c}"));
    println!(
        "per-layer L{} C{} P{} J1 on {scratch}, {pin}, {rounds} rounds; per-container start latency, µs",
        shape.0, shape.1, shape.2
    );
    let (mut c_all, mut a_all, mut n_all) = (Vec::new(), Vec::new(), Vec::new());
    let (mut a_ratio, mut n_ratio) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Alternate who goes first: a neighbour's burst should not favour one side.
        let runs: [Option<&str>; 2] = if round % 2 == 1 {
            [None, Some("c")]
        } else {
            [Some("c"), None]
        };
        let (mut c, mut a) = (Vec::new(), Vec::new());
        for who in runs {
            match who {
                Some(_) => c = c_run(&bin, &scratch, shape),
                None => a = agent_run(None, &scratch, shape),
            }
        }
        let n = agent_run(Some("no-fanotify"), &scratch, shape);
        println!(
            "round {round}: C p50 {:.0}  agent p50 {:.0} (×{:.3})  agent without fanotify p50 {:.0} (×{:.3})",
            median(&c),
            median(&a),
            median(&a) / median(&c),
            median(&n),
            median(&n) / median(&c)
        );
        a_ratio.push(median(&a) / median(&c));
        n_ratio.push(median(&n) / median(&c));
        c_all.extend(c);
        a_all.extend(a);
        n_all.extend(n);
    }
    let (c, a, n) = (median(&c_all), median(&a_all), median(&n_all));
    println!(
        "agent/C: {:.3} (median of the rounds' ratios), {:.3} (medians of all containers: agent {a:.0} µs, C {c:.0} µs)",
        median(&a_ratio),
        a / c
    );
    println!(
        "agent without fanotify/C: {:.3} (median of the rounds' ratios), {:.3} (medians of all containers: {n:.0} µs)",
        median(&n_ratio),
        n / c
    );
}
