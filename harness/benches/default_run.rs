//! The default run's time breakdown, reproduced: `mmx run` on a matrix (the repository's
//! matrix.toml unless told) into a temporary directory, then where its guest time went — the
//! table `mmx time` prints, per target and kind, and the one line — and the run's wall time.
//! Printed, never asserted: speed is judged by people and `mmx compare`, not by tests.
//!
//! ```text
//! cargo bench -p harness --bench default_run [-- --matrix FILE] [-- … -- MMX-RUN-ARGS]
//! ```
//!
//! Everything after a second `--` goes to `mmx run` as it is (`--backend local`,
//! `--filter debian-6.12`, `--full-bench`, `--jobs 1`). Kernels come from the shared cache
//! (fetched on first use, which the wall time then includes).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use harness::results::RunRecord;

fn main() {
    // `cargo bench` passes `--bench`; everything else is ours, up to a `--`.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (ours, theirs) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (&args[..], &[][..]),
    };
    let matrix = ours
        .iter()
        .position(|a| a == "--matrix")
        .and_then(|i| ours.get(i + 1))
        .map_or_else(
            || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../matrix.toml")),
            PathBuf::from,
        );
    let out = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("default_run: a temporary directory: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "default_run: mmx run --matrix {} {} (into {})",
        matrix.display(),
        theirs.join(" "),
        out.path().display()
    );
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_mmx"))
        .arg("run")
        .arg("--matrix")
        .arg(&matrix)
        .arg("--out")
        .arg(out.path())
        .args(["--run-id", "bench"])
        .args(theirs)
        .env_remove("GITHUB_STEP_SUMMARY")
        .env_remove("GITHUB_OUTPUT")
        .status();
    let wall = started.elapsed();
    match status {
        Ok(s) => println!(
            "default_run: mmx run exited {s} after {:.1} s",
            wall.as_secs_f64()
        ),
        Err(e) => {
            eprintln!("default_run: could not start mmx: {e}");
            std::process::exit(2);
        }
    }
    // A run whose cells failed still has its timeline: the breakdown is what this is for.
    match RunRecord::read(&out.path().join("bench/run.json")) {
        Ok(run) => {
            println!("\nwall time {:.1} s\n", wall.as_secs_f64());
            print!("{}", harness::timing::table(&run));
        }
        Err(e) => {
            eprintln!("default_run: {e:#}");
            std::process::exit(1);
        }
    }
}
