//! One short ssh command (or a host's hook) on the supervisor: its stdin written and closed, its
//! stdout and stderr collected (bounded like every channel), stopped on its time limit or
//! Ctrl-C. The long-running step, the agent's run, is supervised in `visit.rs` with the results
//! protocol.

use std::ffi::OsString;
use std::process::Command;
use std::time::Duration;

use crate::backend::supervise::{
    self, Channel, ChannelInfo, Line, Observer, Role, Stdin, Stop, View,
};
use crate::backend::Deadlines;
use crate::proc::Cancel;
use crate::results::BootEnd;

/// The ssh client binary (the system's OpenSSH).
pub const SSH: &str = "ssh";

/// What a finished step said.
#[derive(Debug, Default)]
pub struct StepOutput {
    /// Exit code; `None` when it died from a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Why a step has no exit status of its own.
#[derive(Debug)]
pub enum StepError {
    /// It could not be started.
    Spawn(String),
    /// The supervisor stopped it: its time limit (`BootEnd::Timeout`), Ctrl-C or an output
    /// flood (`BootEnd::Infra`). Carries what it printed until then.
    Stopped(BootEnd, StepOutput),
}

/// The ssh command line `args` as a command.
pub fn ssh(args: &[OsString]) -> Command {
    let mut c = Command::new(SSH);
    c.args(args);
    c
}

/// Run ssh with `args`, writing `stdin` to it then closing it, and collect its output.
pub fn run(
    args: &[OsString],
    stdin: &[u8],
    limit: Duration,
    cancel: &Cancel,
) -> Result<StepOutput, StepError> {
    run_command(ssh(args), stdin, limit, cancel)
}

/// [`run`] for any command (the provision and teardown hooks).
pub fn run_command(
    cmd: Command,
    stdin: &[u8],
    limit: Duration,
    cancel: &Cancel,
) -> Result<StepOutput, StepError> {
    let spec = supervise::Spec {
        command: cmd,
        channels: vec![
            Channel::stdout("stdout", Role::Diagnostics, None),
            Channel::stderr("stderr", Role::Diagnostics, None),
        ],
        stdin: Stdin::Feed(stdin.to_vec()),
        stop: Stop::Term {
            grace: supervise::STEP_STOP_GRACE,
        },
        // A step has one limit; it may be silent or say nothing like a hello all along.
        deadlines: Deadlines {
            boot: limit,
            silence: limit,
            plan: limit,
        },
        cancel: cancel.clone(),
    };
    let mut collected = Collect::default();
    let sup =
        supervise::run(spec, None, &mut collected).map_err(|e| StepError::Spawn(e.to_string()))?;
    let output = StepOutput {
        code: sup.status.and_then(|s| s.code()),
        stdout: collected.stdout,
        stderr: collected.stderr,
    };
    match sup.stopped {
        None => Ok(output),
        Some(end) => Err(StepError::Stopped(end, output)),
    }
}

/// Keeps a step's output as text (bounded by the channels' budgets).
#[derive(Debug, Default)]
struct Collect {
    stdout: String,
    stderr: String,
}

impl Observer for Collect {
    fn line(&mut self, channel: &ChannelInfo, line: &Line, _: &View) -> Option<BootEnd> {
        let out = if channel.name == "stdout" {
            &mut self.stdout
        } else {
            &mut self.stderr
        };
        out.push_str(&line.text);
        out.push('\n');
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::InfraCause;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn a_step_gets_its_stdin_and_gives_its_output_and_code() {
        let out = run_command(
            sh("tr a-z A-Z; echo err >&2; exit 3"),
            b"plan\nagent",
            Duration::from_secs(30),
            &Cancel::new(),
        )
        .unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "PLAN\nAGENT\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn a_step_past_its_limit_is_stopped_with_what_it_said() {
        let err = run_command(
            sh("echo started; exec sleep 30"),
            b"",
            Duration::from_millis(300),
            &Cancel::new(),
        )
        .unwrap_err();
        let StepError::Stopped(end, out) = err else {
            panic!("{err:?}")
        };
        assert!(matches!(end, BootEnd::Timeout { .. }), "{end:?}");
        assert_eq!(out.stdout, "started\n");
        let cancel = Cancel::new();
        cancel.cancel();
        let err = run_command(sh("exec sleep 30"), b"", Duration::from_secs(30), &cancel);
        assert!(matches!(
            err,
            Err(StepError::Stopped(
                BootEnd::Infra {
                    cause: InfraCause::Cancelled,
                    ..
                },
                _
            ))
        ));
    }

    #[test]
    fn a_missing_program_cannot_start() {
        let err = run_command(
            Command::new("/nonexistent/ssh"),
            b"",
            Duration::from_secs(5),
            &Cancel::new(),
        );
        assert!(matches!(err, Err(StepError::Spawn(m)) if m.contains("/nonexistent/ssh")));
    }
}
