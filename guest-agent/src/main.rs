//! mmx-agent: the guest side of mmx. As PID 1 in an initramfs it sets the guest up and runs the
//! plan baked into the archive ([`init`]); on any Linux host it is a plain CLI (`probe`, `mounts`,
//! `lockbench`, `run-plan`). The wire format is the `protocol` crate's.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod init;
mod layers;
mod sys;
mod lockbench;
mod topology;

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
    },
    /// Print the CPU topology this machine shows.
    Topology {
        #[arg(long)]
        json: bool,
    },
    /// The lock benchmark.
    Lockbench(lockbench::Args),
}

fn main() -> ExitCode {
    // PID 1 in a guest: there is no command line to parse, only the plan in the archive.
    if std::process::id() == 1 {
        init::main();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::RunPlan {
            plan,
            exit_on_stdin_eof,
        } => {
            let _ = (plan, exit_on_stdin_eof);
            Err(anyhow::anyhow!("run-plan: not wired yet"))
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
        Command::Lockbench(args) => lockbench::cli(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmx-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}
