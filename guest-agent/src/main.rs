//! mmx-agent: the guest side of mmx. As PID 1 in an initramfs it sets the guest up and runs the
//! plan baked into the archive ([`init`]); started by the kernel as `modprobe` it loads the
//! module the kernel asks for ([`modprobe`]); on any Linux host it is a plain CLI (`probe`,
//! `mounts`, `lockbench`, `run-plan`). The wire format is the `protocol` crate's.
//!
//! Exit codes, decided here only: 0 every result pass or unsupported, 1 a fail / timeout / panic /
//! infra-error, 2 usage or setup errors (not root, bad arguments), 130 stopped by a signal or by
//! stdin EOF. As modprobe: kmod's (0 loaded, 1 not, 2 usage), decided in [`modprobe::main`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod erofs;
mod hypervisor;
mod init;
mod layers;
mod lockbench;
mod modprobe;
mod mounts;
mod plan;
mod probes;
mod report;
mod sys;
#[cfg(test)]
mod testing;
mod topology;
mod trash;
mod watchers;
mod window;

#[derive(Parser)]
#[command(name = "mmx-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a plan (protocol::Plan as JSON) and stream result lines on stdout.
    RunPlan {
        /// The plan file.
        plan: PathBuf,
        /// Exit (cleaning up) when stdin reaches EOF: the harness's connection went away.
        #[arg(long)]
        exit_on_stdin_eof: bool,
        /// Toggle SMT through this file instead of /sys/devices/system/cpu/smt/control. For
        /// the harness's tests only (a debug-built mmx passes it; a release one never does).
        #[arg(long, hide = true, value_name = "FILE")]
        smt_control: Option<PathBuf>,
    },
    /// Probe the kernel's mount features on the scratch directory's filesystem.
    Probe {
        /// Directory on the filesystem to probe (the layers' filesystem).
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        scratch: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Build idmapped overlay rootfses with one strategy and measure it.
    Mounts(MountsArgs),
    /// Print the CPU topology this machine shows.
    Topology {
        #[arg(long)]
        json: bool,
    },
    /// The lock benchmark.
    Lockbench(Box<lockbench::Args>),
    /// Remove a stopped run's trash directories (the agent starts this itself, detached).
    #[command(hide = true)]
    ReapTrash { dirs: Vec<PathBuf> },
    /// Write the synthetic layers `1..=count` under `<dir>/snapshots/<n>/fs`: the trees the
    /// host turns into erofs images (`mkfs.erofs`), so both kinds of layer hold the same files.
    #[command(hide = true)]
    Layers { dir: PathBuf, count: u32 },
}

#[derive(clap::Args)]
struct MountsArgs {
    /// per-layer, common-parent, fsconfig-fd, fsconfig-fd-attr, or runtime:NAME with `--runtime NAME=PATH`.
    #[arg(long)]
    strategy: protocol::MountStrategy,
    /// A runtime speaking mmx's runtime contract: NAME=PATH (a static executable). Its
    /// arguments follow `--runtime-arg` (repeatable); each job may take `--job-timeout-s`.
    #[arg(long, value_name = "NAME=PATH")]
    runtime: Option<String>,
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    runtime_arg: Vec<String>,
    #[arg(long, default_value_t = protocol::runtime::DEFAULT_JOB_TIMEOUT_S)]
    job_timeout_s: u64,
    /// Image layers per container (1..=256).
    #[arg(long, default_value_t = 50)]
    layers: u32,
    /// Containers to start.
    #[arg(long, default_value_t = 20)]
    containers: u32,
    /// Worker threads starting containers at once (at most `containers`).
    #[arg(long, default_value_t = 2)]
    concurrency: u32,
    /// Passes per container: read-only views, then the rootfs (containerd does 2).
    #[arg(long, default_value_t = 2)]
    passes: u32,
    /// Mount-table watchers beside the workers: poll-mountinfo, fanotify (repeatable).
    #[arg(long = "watcher")]
    watchers: Vec<protocol::Watcher>,
    /// Directory on the layers' filesystem; the run works in a subdirectory it removes.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    scratch: PathBuf,
    /// Layers as erofs images: a directory of `<n>.erofs` (made by `mkfs.erofs` from the
    /// tree `mmx-agent layers` writes), each mounted at its layer's directory.
    #[arg(long, value_name = "DIR")]
    erofs_images: Option<PathBuf>,
    /// Print the protocol::CellResult as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Why a command did not succeed, for the exit code.
enum Failure {
    /// Results came, and at least one is not a success.
    Results,
    /// Usage, setup or I/O error.
    Error(anyhow::Error),
    /// SIGINT/SIGTERM/SIGHUP or stdin EOF stopped the work.
    Stopped,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Error(e)
    }
}

/// Everything that mounts needs root: say what and why before trying.
fn require_root(what: &str) -> anyhow::Result<()> {
    if rustix::process::geteuid().is_root() {
        return Ok(());
    }
    anyhow::bail!(
        "{what} needs root: it creates mount and user namespaces, idmapped mounts and overlay \
         mounts (CAP_SYS_ADMIN), and writes layer files owned by many uids (CAP_CHOWN, CAP_MKNOD); \
         run it with sudo or as root in a VM"
    )
}

/// Work in a private mount namespace (set up before any thread exists, so it covers the whole
/// process) and turn SIGINT/SIGTERM/SIGHUP into a stop flag.
fn enter_sandbox(what: &str) -> anyhow::Result<()> {
    require_root(what)?;
    sys::ns::enter_private_mount_ns()
        .map_err(|e| anyhow::anyhow!("cannot make a private mount namespace: {e}"))?;
    sys::signal::install().map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::RunPlan {
            plan,
            exit_on_stdin_eof,
            smt_control,
        } => {
            enter_sandbox("mmx-agent run-plan")?;
            if let Some(file) = smt_control {
                lockbench::use_smt_control_file(file);
            }
            if exit_on_stdin_eof {
                plan::watch_stdin_eof();
            }
            let text = std::fs::read_to_string(&plan)
                .map_err(|e| anyhow::anyhow!("read plan {}: {e}", plan.display()))?;
            let plan = protocol::parse_plan(&text)
                .map_err(|e| anyhow::anyhow!("plan {}: {e}", plan.display()))?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let ok = plan::execute_reporting(&plan, &mut out)?;
            if sys::signal::stop_requested() {
                return Err(Failure::Stopped);
            }
            if !ok {
                return Err(Failure::Results);
            }
            Ok(())
        }
        Command::Probe { scratch, json } => {
            enter_sandbox("mmx-agent probe")?;
            let caps = probes::probe_all(&scratch);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&caps).map_err(anyhow::Error::from)?
                );
            } else {
                print!("{}", report::capabilities_table(&caps));
            }
            Ok(())
        }
        Command::Mounts(a) => {
            let scenario = protocol::MountsScenario {
                strategy: a.strategy.clone(),
                layers: a.layers,
                containers: a.containers,
                concurrency: a.concurrency,
                passes: a.passes,
                watchers: a.watchers.clone(),
            };
            mounts::validate(&scenario).map_err(|m| anyhow::anyhow!("mounts: {m}"))?;
            let runtimes = cli_runtime(&a)?;
            enter_sandbox("mmx-agent mounts")?;
            let cell_id = format!("local/{}", scenario.label());
            let opts = mounts::Options {
                runtimes,
                erofs_images: a.erofs_images.clone(),
                ..mounts::Options::default()
            };
            let r = mounts::run_with(
                &scenario,
                &a.scratch,
                &cell_id,
                &mounts::Cancel::default(),
                &opts,
            );
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).map_err(anyhow::Error::from)?
                );
            } else {
                print!("{}", report::mounts_table(&r));
            }
            if sys::signal::stop_requested() {
                return Err(Failure::Stopped);
            }
            if !r.outcome.is_success() {
                return Err(Failure::Results);
            }
            Ok(())
        }
        Command::Topology { json } => {
            let t = topology::observe();
            if json {
                println!("{}", serde_json::to_string_pretty(&t).unwrap_or_default());
            } else {
                println!("{t:#?}");
            }
            Ok(())
        }
        Command::Layers { dir, count } => {
            require_root("mmx-agent layers")?;
            protocol::limits::LAYERS
                .check(count)
                .map_err(|e| anyhow::anyhow!("layers: {e}"))?;
            layers::create(&dir, count)
                .map_err(|e| anyhow::anyhow!("layers in {}: {e}", dir.display()))?;
            Ok(())
        }
        Command::ReapTrash { dirs } => {
            trash::reap(&dirs);
            Ok(())
        }
        Command::Lockbench(args) => {
            // A stop ends the sweep between points, restoring SMT and removing its files.
            sys::signal::install()
                .map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))?;
            let r = lockbench::cli(*args);
            if sys::signal::stop_requested() {
                return Err(Failure::Stopped);
            }
            Ok(r?)
        }
    }
}

/// The runtime `--runtime NAME=PATH` names, as a plan would carry it; `--strategy runtime:NAME`
/// must name it.
fn cli_runtime(a: &MountsArgs) -> anyhow::Result<Vec<protocol::PlanRuntime>> {
    let Some(spec) = &a.runtime else {
        if let Some(n) = a.strategy.runtime() {
            anyhow::bail!("--strategy runtime:{n} needs --runtime {n}=PATH");
        }
        return Ok(Vec::new());
    };
    let (name, path) = spec
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--runtime {spec}: expected NAME=PATH"))?;
    let name: protocol::RuntimeName = name
        .parse()
        .map_err(|e| anyhow::anyhow!("--runtime {spec}: {e}"))?;
    protocol::limits::RUNTIME_JOB_TIMEOUT_S
        .check(a.job_timeout_s)
        .map_err(|e| anyhow::anyhow!("--{e}"))?;
    let path = std::fs::canonicalize(path)
        .map_err(|e| anyhow::anyhow!("--runtime {spec}: {path}: {e}"))?;
    Ok(vec![protocol::PlanRuntime {
        name,
        path,
        args: a.runtime_arg.clone(),
        job_timeout_s: a.job_timeout_s,
        // Nothing copied it: nothing to check it against.
        sha256: String::new(),
    }])
}

fn main() -> ExitCode {
    // PID 1 in a guest: there is no command line to parse, only the plan in the archive.
    if std::process::id() == 1 {
        init::main();
    }
    // The kernel's request_module, through the link the init named in /proc/sys/kernel/modprobe.
    let mut args = std::env::args_os();
    if modprobe::invoked_as_modprobe(args.next().as_deref()) {
        return modprobe::main(&args.collect::<Vec<_>>());
    }
    let cli = Cli::parse();
    let outcome = run(cli);
    // The answer is out: a stopped run's files go now, without holding up the exit.
    trash::reap_detached();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Results) => ExitCode::from(1),
        Err(Failure::Stopped) => {
            eprintln!("mmx-agent: stopped; mounts were undone and scratch files removed");
            ExitCode::from(130)
        }
        Err(Failure::Error(e)) => {
            eprintln!("mmx-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}
