//! mmx-example-runtime: the smallest program that speaks mmx's runtime contract
//! (`protocol::runtime`), so that "any static mounter" has a worked example and mmx's tests have
//! a runtime whose failures they can choose.
//!
//! Each mount job idmaps every layer on its own (`open_tree(OPEN_TREE_CLONE)` +
//! `mount_setattr(MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY)` + `move_mount` below the working
//! directory), mounts the overlay with mount(2), then detaches the per-layer mounts — what
//! containerd did before it mapped the layers' common parent. See [`mounts`].
//!
//! Fault injection (`--fault SPEC` or `MMX_EXAMPLE_FAULT=SPEC`), see [`fault`]:
//! `error:STEP:ERRNO`, `crash:STEP`, `hang:STEP`, `garbage`, `leak`.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use protocol::runtime::{Answer, Hello, Job, LineReader, RuntimeLineError, CONTRACT_VERSION};

mod fault;
mod mounts;

use fault::Fault;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(mounts::USERNS_HOLDER_ARG) {
        return mounts::userns_holder();
    }
    let fault = match Fault::from_args_and_env(&args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mmx-example-runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(&fault) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmx-example-runtime: {e}");
            ExitCode::from(2)
        }
    }
}

/// Say hello, then answer jobs until stdin closes.
fn serve(fault: &Fault) -> Result<(), String> {
    let mut out = BufWriter::new(io::stdout().lock());
    let hello = Hello {
        contract: CONTRACT_VERSION,
        runtime: "mmx-example".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let hello = serde_json::to_string(&hello).map_err(|e| format!("encoding hello: {e}"))?;
    send(&mut out, &format!("{hello}\n"))?;
    let mut jobs = LineReader::new(io::stdin().lock());
    loop {
        let line = match jobs.read_line() {
            Ok(l) => l,
            Err(RuntimeLineError::Eof) => return Ok(()),
            Err(e) => return Err(format!("reading a job: {e}")),
        };
        let job: Job =
            serde_json::from_str(&line).map_err(|e| format!("malformed job {line:?}: {e}"))?;
        if matches!(fault, Fault::Garbage) {
            send(&mut out, "mounted, probably\n")?;
            continue;
        }
        let answer = match mounts::run(&job, fault) {
            Ok(()) => Answer::Ok { id: job.id() },
            Err(f) => Answer::Error {
                id: job.id(),
                step: f.step,
                errno: f.errno,
                message: f.message,
            },
        };
        send(&mut out, &answer.to_line())?;
    }
}

fn send(out: &mut impl Write, line: &str) -> Result<(), String> {
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing an answer: {e}"))
}
