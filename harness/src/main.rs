//! `mmx`: the command line. Arguments are parsed here and resolved into each module's options;
//! exit codes are decided in one place: 0 all cells pass (or are unsupported, which is an
//! answer), 1 failures or a failed gate (or a failed `doctor` check), 2 usage or configuration
//! errors. Every subcommand's `--help` names the files it reads and writes.
//!
//! Commands print through the terminal ([`harness::terminal`]), a subscriber of their events;
//! what is printed here is what only `main` knows: a command's error, the files `mmx report`
//! and `mmx merge` wrote, the cell ids, completions and man pages.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use harness::events::Note;
use harness::proc::Cancel;
use harness::run::{BackendChoice, Bus, Event, RunOptions, Shard, Subscriber};
use harness::terminal::{Ending, Terminal};

#[derive(Parser)]
#[command(
    name = "mmx",
    about = "Which way of building an idmapped overlay rootfs works on this kernel, filesystem and CPU topology, and how fast is it under contention",
    after_help = "Start in a repository of your own: `mmx init`, `mmx doctor`, `mmx run`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the matrix: boot guests (and visit hosts), run every cell, write run.json and reports.
    #[command(after_help = RUN_FILES)]
    Run(RunArgs),
    /// Re-render report.md, report.html and junit.xml from a run's run.json alone.
    #[command(
        after_help = "Reads:  RUN/run.json.\nWrites: report.md, report.html and junit.xml beside it; appends report.md to $GITHUB_STEP_SUMMARY when set."
    )]
    Report {
        /// A run directory or its run.json.
        run: PathBuf,
    },
    /// Where a run's guest time went: per target (kernel × topology, the local machine, a host)
    /// and kind (boot to agent-ready, probes, mounts, each lock benchmark), then one line.
    #[command(
        after_help = "Reads:  RUN/run.json (the boots' timelines).\nWrites: the table to stdout."
    )]
    Time {
        /// A run directory or its run.json.
        run: PathBuf,
    },
    /// Compare a candidate run with a baseline, metric by metric and cell by cell; exit 1 when
    /// the gate fails.
    #[command(
        after_help = "Reads:  the two run.json files.\nWrites: the comparison to stdout, and to --markdown-out when given."
    )]
    Compare(harness::compare::CompareArgs),
    /// Join the run.json of shards into one run (and one report).
    #[command(
        after_help = "Reads:  each input's run.json.\nWrites: OUT/run.json, OUT/report.md, OUT/report.html, OUT/junit.xml; appends report.md to $GITHUB_STEP_SUMMARY and run-dir=, report= to $GITHUB_OUTPUT when set."
    )]
    Merge {
        /// run.json files or run directories.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Directory for the merged run.json and reports.
        #[arg(long, default_value = "runs/merged")]
        out: PathBuf,
    },
    /// Find the first commit of a git kernel tree whose answers (the cells a filter selects,
    /// and probes) differ from a good revision's: builds, boots and judges each step; exit 0
    /// when found, 1 when there is no change or no answer.
    #[command(after_help = harness::bisect::FILES_HELP)]
    Bisect(harness::bisect::BisectArgs),
    /// Kernel recipes: resolve them into kernels.lock, fetch them into the cache, list them.
    #[command(after_help = KERNELS_FILES)]
    Kernels {
        #[command(subcommand)]
        cmd: harness::kernels::KernelsCmd,
        /// The directory holding kernels/ (default: the current directory).
        #[arg(long, default_value = ".", global = true)]
        root: PathBuf,
    },
    /// Runtime recipes: lock their sources into runtimes.lock, build them into the cache.
    Runtimes {
        #[command(subcommand)]
        cmd: harness::runtimes::RuntimesCmd,
        /// The directory holding runtimes/ (default: the directory of --recipes, where
        /// `mmx run` looks for it).
        #[arg(long, global = true)]
        root: Option<PathBuf>,
    },
    /// List the cell ids a matrix expands to.
    #[command(after_help = "Reads:  the matrix file.\nWrites: nothing (the ids go to stdout).")]
    Cells {
        #[arg(long, default_value = "matrix.toml")]
        matrix: PathBuf,
        #[arg(long, value_enum, default_value = "all")]
        backend: BackendChoice,
    },
    /// Start using mmx in a repository: a commented matrix.toml, kernels/ (recipes and a lock)
    /// and a GitHub Actions workflow that runs the matrix with mmx's action.
    #[command(after_help = harness::init::FILES_HELP)]
    Init(harness::init::InitArgs),
    /// Check what this machine can run and what is missing, one line per check with its fix;
    /// exit 0 when the matrix can run here (under TCG if KVM is not usable), 1 otherwise.
    #[command(after_help = harness::doctor::FILES_HELP)]
    Doctor(harness::doctor::DoctorArgs),
    /// Print a completion script for SHELL, e.g. `mmx completions bash > /etc/bash_completion.d/mmx`.
    #[command(after_help = "Reads:  nothing.\nWrites: the script to stdout.")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `mmx man | man -l -`; or write one page per command.
    #[command(
        after_help = "Reads:  nothing.\nWrites: mmx.1 to stdout, or mmx.1 and mmx-COMMAND.1 into --out DIR."
    )]
    Man {
        /// Write mmx.1 and one mmx-COMMAND.1 per subcommand into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

const RUN_FILES: &str =
    "Reads:  the matrix (--matrix); kernels/*.toml and kernels/kernels.lock in the matrix's
        directory; the cache ($MMX_CACHE_DIR, else $XDG_CACHE_HOME/mmx, else ~/.cache/mmx).
Writes: OUT/RUN-ID/run.json (after every boot), report.md, report.html, junit.xml and
        logs/ (one console/agent log per boot); appends report.md to $GITHUB_STEP_SUMMARY and
        run-dir=, report= (the run directory, which is OUT/RUN-ID-N when OUT/RUN-ID is taken)
        to $GITHUB_OUTPUT when set; fills the cache (kernels, disk images, initramfs bases, the agent, the KVM verdict).
        A kernel or runtime without a lock entry is resolved and its entry written (one line
        says so), unless --locked or CI=true; kernels.lock and runtimes.lock are never moved.
Environment: MMX_AGENT (an agent instead of the one mmx carries), MMX_QEMU (the QEMU binary),
        MMX_CACHE_DIR, CI=true (as --locked).";

const KERNELS_FILES: &str =
    "Reads:  ROOT/kernels/*.toml, ROOT/kernels/kernels.lock; the cache ($MMX_CACHE_DIR, else
        $XDG_CACHE_HOME/mmx, else ~/.cache/mmx).
Writes: `lock`: ROOT/kernels/kernels.lock. `fetch`, `build`: kernels into the cache, and the
        entries kernels.lock lacks (unless --locked or CI=true). `list`: nothing.";

#[derive(clap::Args)]
struct RunArgs {
    /// The matrix file.
    #[arg(long, default_value = "matrix.toml")]
    matrix: PathBuf,
    /// Which part of the matrix: QEMU guests and hosts (all), or one backend.
    #[arg(long, value_enum, default_value = "all")]
    backend: BackendChoice,
    /// Accelerator for guests: KVM if it really runs a guest here, else single-threaded TCG
    /// (auto); or force one for every guest. Multi-threaded TCG (tcg-mt) is opt-in: its guests'
    /// vCPUs run at once, but under load 7.x and 6.12 guests have oopsed (int3) or stalled in
    /// early boot under it.
    #[arg(long, value_enum, default_value = "auto")]
    accel: harness::backend::qemu::AccelChoice,
    /// Boots at a time (default: from cores and memory).
    #[arg(long)]
    jobs: Option<usize>,
    /// Run only cells whose id contains this (or matches this `*` glob); repeatable. A host
    /// without a declared `filesystem` (its cells read `host/smt/unmeasured/…` until its visit
    /// measures one) matches when the filter would match on any filesystem.
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
    /// Print run.json to stdout at the end instead of the summary.
    #[arg(long)]
    json: bool,
    /// End with the full tables (every mount cell, every lock point), not just the summary.
    #[arg(long, short)]
    verbose: bool,
    /// Never write or move kernels.lock or runtimes.lock (CI=true does the same): a kernel or
    /// runtime without a lock entry, or one whose locked packages Debian's archive dropped,
    /// is an error naming the command that fixes it. Without it, a missing entry is resolved
    /// and written, and a dropped package is replaced by the archive's current one, said in
    /// the terminal, run.json and the report.
    #[arg(long)]
    locked: bool,
    /// Fail a cell when the guest's kernel printed a splat that did not kill it (`WARNING:`,
    /// lockdep, KASAN, UBSAN, refcount, `BUG:`) while the cell ran. Without it the splat is
    /// reported beside the cell and the cell keeps its own answer.
    #[arg(long)]
    fail_on_kernel_warning: bool,
    /// Run the full benchmark sweeps under single-threaded TCG too (as `[run] tcg_benchmarks =
    /// "full"`). By default a TCG guest, whose vCPUs take turns, runs what means something
    /// there (the mount table's read time against its size) and a short smoke of the
    /// contention code; KVM, tcg-mt, local and hosts always run the full sweeps.
    #[arg(long)]
    full_bench: bool,
}

/// The full command line, with the version that names the agent this binary carries.
fn cli_command() -> clap::Command {
    let version = format!(
        "{} (agent {})",
        env!("CARGO_PKG_VERSION"),
        harness::agent::embedded_hash()
    );
    Cli::command().version(version)
}

fn main() -> ExitCode {
    let cli = Cli::from_arg_matches(&cli_command().get_matches()).unwrap_or_else(|e| e.exit());
    match dispatch(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("mmx: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The events of a command that is not `mmx run`, shown by the terminal.
fn terminal() -> Arc<Bus> {
    Arc::new(Bus::new(vec![Box::new(Terminal::new())]))
}

/// Ok(true): success; Ok(false): the run or gate found failures; Err: usage/config error.
fn dispatch(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Run(args) => cmd_run(args),
        Command::Report { run } => {
            let path = harness::results::run_json_path(&run);
            let record = harness::results::RunRecord::read(&path)?;
            let dir = path
                .parent()
                .map_or_else(|| PathBuf::from("."), PathBuf::from);
            let written = harness::report::render_all(&record, &dir)?;
            print_written(&written);
            Ok(true)
        }
        Command::Time { run } => {
            let record = harness::results::RunRecord::read(&harness::results::run_json_path(&run))?;
            print!("{}", harness::timing::table(&record));
            Ok(true)
        }
        Command::Compare(args) => {
            let compared = harness::compare::compare_cmd(args)?;
            print!("{}", compared.output);
            Ok(compared.passed)
        }
        Command::Merge { inputs, out } => {
            let merged = harness::merge::merge(&inputs, &*terminal())?;
            harness::rundir::create_runs_dir(&out)?;
            let path = out.join("run.json");
            merged.write(&path)?;
            let written = harness::report::render_all(&merged, &out)?;
            print_written(&written);
            write_step_outputs(&out, Some(&written));
            eprintln!(
                "mmx: merged {} runs, {} cells → {}",
                inputs.len(),
                merged.cells.len(),
                path.display()
            );
            Ok(merged.cells.iter().all(|c| c.is_ok()))
        }
        Command::Bisect(args) => harness::bisect::run(&args, terminal().sink()),
        Command::Kernels { cmd, root } => {
            let failed = harness::kernels::run_cmd(cmd, &root, &*terminal())?;
            // Whole, after the rest: a build's error ends with the log's last lines.
            for e in &failed {
                eprintln!("mmx: {e}");
            }
            Ok(failed.is_empty())
        }
        Command::Runtimes { cmd, root } => {
            harness::runtimes::run_cmd(cmd, root.as_deref(), &*terminal()).map(|()| true)
        }
        Command::Cells { matrix, backend } => {
            let m = harness::matrix::Matrix::load(&matrix)?;
            let cells = match backend {
                BackendChoice::All => [m.qemu_cells(), m.ssh_cells()].concat(),
                BackendChoice::Qemu => m.qemu_cells(),
                BackendChoice::Ssh => m.ssh_cells(),
                // The filesystem the local scratch dir would be on, as the run measures it.
                BackendChoice::Local => {
                    let base = m.local_scratch.clone().unwrap_or_else(|| "/var/tmp".into());
                    let fs = harness::backend::local::filesystem_of(&base)
                        .ok()
                        .and_then(Result::ok)
                        .map_or(harness::cell::LayerFs::Unmeasured, Into::into);
                    m.local_cells(fs)
                }
            };
            for c in cells {
                println!("{}", c.key);
            }
            Ok(true)
        }
        Command::Init(args) => {
            harness::init::run(&args, &*terminal())?;
            Ok(true)
        }
        Command::Doctor(args) => harness::doctor::run(&args, &*terminal()),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut cli_command(), "mmx", &mut std::io::stdout());
            Ok(true)
        }
        Command::Man { out: None } => {
            clap_mangen::Man::new(cli_command())
                .render(&mut std::io::stdout())
                .context("writing the man page")?;
            Ok(true)
        }
        Command::Man { out: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cli_command(), &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            eprintln!("mmx: man pages in {}", dir.display());
            Ok(true)
        }
    }
}

fn cmd_run(args: RunArgs) -> anyhow::Result<bool> {
    if let Some(id) = &args.run_id {
        harness::rundir::check_run_id(id)?;
    }
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
        lock_policy: harness::debian::LockPolicy::new(args.locked),
        fail_on_kernel_warning: args.fail_on_kernel_warning,
        full_bench: args.full_bench,
    };
    let cancel = Cancel::new();
    cancel
        .install_signal_handlers()
        .context("installing the Ctrl-C handler")?;
    // In this order when the run ends: the reports are written (junit among them), report.md
    // goes to the step summary, then the terminal says where everything is.
    let ending = if args.json {
        Ending::Json
    } else {
        Ending::Summary {
            verbose: args.verbose,
        }
    };
    let bus = Arc::new(Bus::new(vec![
        Box::new(harness::report::Reports),
        Box::new(StepSummary),
        Box::new(Terminal::ending_with(ending)),
    ]));
    let (record, _) = harness::run::execute(&opts, &cancel, &bus)?;
    Ok(record.cells.iter().all(|c| c.is_ok()) && !cancel.is_cancelled())
}

/// Say where the reports went, and append report.md to `$GITHUB_STEP_SUMMARY`.
fn print_written(w: &harness::report::Written) {
    eprintln!(
        "mmx: reports: {}, {}, {}",
        w.markdown.display(),
        w.html.display(),
        w.junit.display()
    );
    if let Err(note) = append_step_summary(&w.markdown) {
        eprintln!("mmx: {}", note.text());
    }
}

/// When the run ends, tells the GitHub Actions step where the run went (`$GITHUB_OUTPUT`) and
/// appends its report.md to `$GITHUB_STEP_SUMMARY` when the report is there (it is not when it
/// could not be rendered, which the reports' note says).
struct StepSummary;

impl Subscriber for StepSummary {
    fn on(&mut self, event: &Event<'_>) -> Option<Note> {
        let Event::RunEnded { dir, .. } = event else {
            return None;
        };
        let written = harness::report::Written::found_in(&dir.root);
        write_step_outputs(&dir.root, written.as_ref());
        let markdown = dir.root.join("report.md");
        if !markdown.is_file() {
            return None;
        }
        append_step_summary(&markdown).err()
    }
}

/// Append report.md to `$GITHUB_STEP_SUMMARY` when GitHub Actions set it: only the command a
/// user ran writes there, never a library call.
fn append_step_summary(markdown: &Path) -> Result<(), Note> {
    let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let appended = std::fs::read(markdown).and_then(|md| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&summary)?;
        f.write_all(&md)?;
        f.write_all(b"\n")
    });
    appended.map_err(|e| {
        Note::warning(format!(
            "could not append report.md to $GITHUB_STEP_SUMMARY ({}): {e}",
            PathBuf::from(summary).display()
        ))
    })
}

/// Tell the GitHub Actions step that ran this command where its run went, when `$GITHUB_OUTPUT`
/// is set: `run-dir=` the run directory and, when it was rendered, `report=` its report.md. The
/// directory is not always the asked-for `OUT/RUN-ID` (a taken id gets a suffix), so a workflow
/// uploads the one mmx names, never a guess that may be an older run's.
fn write_step_outputs(dir: &Path, written: Option<&harness::report::Written>) {
    let Some(file) = std::env::var_os("GITHUB_OUTPUT").filter(|s| !s.is_empty()) else {
        return;
    };
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut lines = vec![("run-dir", absolute(dir))];
    lines.extend(written.map(|w| ("report", absolute(&w.markdown))));
    let mut text = String::new();
    for (key, path) in lines {
        // One line per output: a path with a line break in it would write outputs of its own.
        match path.to_str().filter(|p| !p.contains(['\n', '\r'])) {
            Some(p) => text.push_str(&format!("{key}={p}\n")),
            None => eprintln!(
                "mmx: not writing {key} to $GITHUB_OUTPUT: {} is not one line of UTF-8",
                path.display()
            ),
        }
    }
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
    if let Err(e) = appended {
        eprintln!(
            "mmx: could not write to $GITHUB_OUTPUT ({}): {e}",
            PathBuf::from(file).display()
        );
    }
}
