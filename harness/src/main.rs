//! `mmx`: the command line. Arguments are parsed here and resolved into each module's options;
//! exit codes are decided in one place: 0 all cells pass (or are unsupported, which is an
//! answer), 1 failures or a failed gate, 2 usage or configuration errors.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use harness::backend::Cancel;
use harness::run::{BackendChoice, RunOptions, Shard};

#[derive(Parser)]
#[command(
    name = "mmx",
    version,
    about = "Which way of building an idmapped overlay rootfs works on this kernel, filesystem and CPU topology, and how fast is it under contention"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the matrix: boot guests (and visit hosts), run every cell, write run.json and reports.
    Run(RunArgs),
    /// Re-render report.md, report.html and junit.xml from a run's run.json alone.
    Report {
        /// A run directory or its run.json.
        run: PathBuf,
    },
    /// Compare a candidate run with a baseline, metric by metric and cell by cell; exit 1 when
    /// the gate fails.
    Compare(harness::compare::CompareArgs),
    /// Join the run.json of shards into one run (and one report).
    Merge {
        /// run.json files or run directories.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Directory for the merged run.json and reports.
        #[arg(long, default_value = "runs/merged")]
        out: PathBuf,
    },
    /// Kernel recipes: resolve them into kernels.lock, fetch them into the cache, list them.
    Kernels {
        #[command(subcommand)]
        cmd: harness::kernels::KernelsCmd,
        /// The directory holding kernels/ (default: the current directory).
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
    /// List the cell ids a matrix expands to.
    Cells {
        #[arg(long, default_value = "matrix.toml")]
        matrix: PathBuf,
        #[arg(long, value_enum, default_value = "all")]
        backend: BackendChoice,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The matrix file.
    #[arg(long, default_value = "matrix.toml")]
    matrix: PathBuf,
    /// Which part of the matrix: QEMU guests and hosts (all), or one backend.
    #[arg(long, value_enum, default_value = "all")]
    backend: BackendChoice,
    /// Accelerator for guests: KVM if it really runs a guest here, else TCG (auto); or force one.
    #[arg(long, value_enum, default_value = "auto")]
    accel: harness::backend::qemu::AccelChoice,
    /// Boots at a time (default: from cores and memory).
    #[arg(long)]
    jobs: Option<usize>,
    /// Run only cells whose id contains this (or matches this `*` glob); repeatable.
    #[arg(long)]
    filter: Vec<String>,
    /// Run shard I of N (a stable subset: whole boots dealt round-robin in id order).
    #[arg(long)]
    shard: Option<Shard>,
    /// Retry a boot that ended in an infra error this many times (never kernel verdicts).
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Where run directories go.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Name of the run directory (default: the UTC start time).
    #[arg(long)]
    run_id: Option<String>,
    /// Print run.json to stdout at the end instead of the tables.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("mmx: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Ok(true): success; Ok(false): the run or gate found failures; Err: usage/config error.
fn dispatch(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Run(args) => cmd_run(args),
        Command::Report { run } => {
            let path = harness::merge::run_json_path(&run);
            let record = harness::results::RunRecord::read(&path)?;
            let dir = path
                .parent()
                .map_or_else(|| PathBuf::from("."), PathBuf::from);
            let written = harness::report::render_all(&record, &dir)?;
            print_written(&written);
            Ok(true)
        }
        Command::Compare(args) => harness::compare::compare_cmd(args),
        Command::Merge { inputs, out } => {
            let merged = harness::merge::merge(&inputs)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let path = out.join("run.json");
            merged.write(&path)?;
            let written = harness::report::render_all(&merged, &out)?;
            print_written(&written);
            eprintln!(
                "mmx: merged {} runs, {} cells → {}",
                inputs.len(),
                merged.cells.len(),
                path.display()
            );
            Ok(merged.cells.iter().all(|c| c.is_ok()))
        }
        Command::Kernels { cmd, root } => harness::kernels::run_cmd(cmd, &root),
        Command::Cells { matrix, backend } => {
            let m = harness::matrix::Matrix::load(&matrix)?;
            let cells = match backend {
                BackendChoice::All => [m.qemu_cells(), m.ssh_cells()].concat(),
                BackendChoice::Qemu => m.qemu_cells(),
                BackendChoice::Ssh => m.ssh_cells(),
                BackendChoice::Local => m.local_cells(protocol::Filesystem::Ext4),
            };
            for c in cells {
                println!("{}", c.id);
            }
            Ok(true)
        }
    }
}

fn cmd_run(args: RunArgs) -> anyhow::Result<bool> {
    let matrix = harness::matrix::Matrix::load(&args.matrix)?;
    let guest_mem = matrix
        .topologies
        .iter()
        .map(|t| t.memory_mib)
        .max()
        .unwrap_or(1024);
    let jobs = match args.jobs {
        Some(0) => anyhow::bail!("--jobs 0: need at least one job"),
        Some(j) => j,
        None => match args.backend {
            // The agent on the host shares it: one at a time keeps numbers honest.
            BackendChoice::Local => 1,
            _ => harness::run::default_jobs(guest_mem),
        },
    };
    let opts = RunOptions {
        matrix: args.matrix,
        backend: args.backend,
        accel: args.accel,
        jobs,
        filter: args.filter,
        shard: args.shard,
        retries: args.retries,
        out_dir: args.out,
        run_id: args.run_id,
        progress: true,
    };
    let cancel = Cancel::new();
    cancel
        .install_signal_handlers()
        .context("installing the Ctrl-C handler")?;
    let (record, run_dir) = harness::run::execute(&opts, &cancel)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        print!("{}", harness::summary::render(&record));
    }
    eprintln!("mmx: results in {}", run_dir.run_json().display());
    // Reports come from run.json alone; a rendering problem never loses the results.
    match harness::report::render_all(&record, &run_dir.root) {
        Ok(written) => print_written(&written),
        Err(e) => eprintln!(
            "mmx: could not render the reports ({e:#}); run `mmx report {}` to retry",
            run_dir.root.display()
        ),
    }
    Ok(record.cells.iter().all(|c| c.is_ok()) && !cancel.is_cancelled())
}

fn print_written(w: &harness::report::Written) {
    eprintln!(
        "mmx: reports: {}, {}, {}",
        w.markdown.display(),
        w.html.display(),
        w.junit.display()
    );
}
