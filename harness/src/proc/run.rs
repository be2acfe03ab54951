//! Running a command to its end: git, make, go, tar, patch, mkfs, objcopy, `qemu --version`, a
//! host's hook. A [`Run`] is the [`watch`] loop with a deadline or a [`Cancel`] (or both), its
//! stdout and stderr read as bounded lines (kept as text, handed to a callback, or both), and a
//! stop that takes the whole process group.

use std::borrow::Cow;
use std::os::fd::OwnedFd;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use super::cancel::Cancel;
use super::lines::{Bounds, Line, LineReader};
use super::stop::Stop;
use super::watch::{watch, Input, Pipe, Watch};

/// What a command may print on each of stdout and stderr: git, patch, tar, mkfs and go print
/// tens of KiB at most (a kernel's top Makefile, 70 KiB, is the largest text mmx reads from a
/// command); 16 MiB means a runaway, which is stopped. Lines up to 64 KiB, longer ones cut.
pub const OUTPUT: Bounds = Bounds {
    max_line: 64 << 10,
    max_bytes: 16 << 20,
};

/// A command stopped by its deadline or a cancellation gets SIGTERM, then SIGKILL this much
/// later: time for make to delete a half-written target, for a hook's shell to run its traps.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Which of the command's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout, or stdout and stderr together ([`Run::merge_stderr`]).
    Stdout,
    Stderr,
}

/// What [`Run::on_line`] calls with each line.
pub type OnLine<'a> = &'a mut dyn FnMut(Stream, &Line);

/// A command to run to its end. Built with [`Run::new`] (a deadline) or [`Run::cancellable`]
/// (a [`Cancel`] and no deadline), then options, then [`Run::run`].
pub struct Run<'a> {
    command: Command,
    limit: Option<Duration>,
    cancel: Option<&'a Cancel>,
    input: Input<'a>,
    stop: Stop,
    bounds: Bounds,
    merge: bool,
    keep: bool,
    inherit: Vec<OwnedFd>,
    on_line: Option<OnLine<'a>>,
}

impl<'a> Run<'a> {
    /// Run `command` for at most `limit`: past it the command is stopped and the run is
    /// [`RunError::TimedOut`]. Each caller names its limit in a constant that says why.
    pub fn new(command: Command, limit: Duration) -> Run<'a> {
        Run {
            command,
            limit: Some(limit),
            cancel: None,
            input: Input::Null,
            stop: Stop::Term { grace: STOP_GRACE },
            bounds: OUTPUT,
            merge: false,
            keep: true,
            inherit: Vec::new(),
            on_line: None,
        }
    }

    /// Run `command` until it ends or `cancel` is set: for work with no honest upper bound (a
    /// kernel build takes ten minutes here and hours on a slow machine), which the user stops.
    pub fn cancellable(command: Command, cancel: &'a Cancel) -> Run<'a> {
        Run {
            limit: None,
            cancel: Some(cancel),
            ..Run::new(command, Duration::MAX)
        }
    }

    /// Also stop when `cancel` is set.
    pub fn cancel(mut self, cancel: &'a Cancel) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// Write `bytes` to stdin, then close it (stdin is `/dev/null` otherwise).
    pub fn stdin(mut self, bytes: &'a [u8]) -> Self {
        self.input = Input::Bytes(Cow::Borrowed(bytes));
        self
    }

    /// Stream `reader` to stdin as the command takes it, then close it.
    pub fn stdin_from(mut self, reader: &'a mut dyn std::io::Read) -> Self {
        self.input = Input::Read(reader);
        self
    }

    /// How the command is stopped (default: SIGTERM, SIGKILL [`STOP_GRACE`] later).
    pub fn stop(mut self, stop: Stop) -> Self {
        self.stop = stop;
        self
    }

    /// Bounds of each output (default [`OUTPUT`]).
    pub fn bounds(mut self, bounds: Bounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// stderr into stdout's pipe, in the order written: one text, [`Output::stdout`].
    pub fn merge_stderr(mut self) -> Self {
        self.merge = true;
        self
    }

    /// Hand every line to `f` as it arrives, and keep only the last lines of each output
    /// (for a build whose output goes to a log of its own).
    pub fn on_line(mut self, f: OnLine<'a>) -> Self {
        self.on_line = Some(f);
        self.keep = false;
        self
    }

    /// Pass `fd` to the command (and so to everything it starts), under its own number: a lock
    /// that must be held while any of them runs.
    pub fn inherit(mut self, fd: OwnedFd) -> Self {
        self.inherit.push(fd);
        self
    }

    /// Run to the end. `Ok` whatever the exit status (the caller judges it); `Err` when the
    /// command could not start, was stopped, or flooded.
    pub fn run(self) -> Result<Output, RunError> {
        let Run {
            command,
            limit,
            cancel,
            input,
            stop,
            bounds,
            merge,
            keep,
            inherit,
            on_line,
        } = self;
        let program = command.get_program().to_string_lossy().into_owned();
        let pipes = if merge {
            vec![Pipe::stdout_and_stderr(bounds, None)]
        } else {
            vec![Pipe::stdout(bounds, None), Pipe::stderr(bounds, None)]
        };
        let mut w = Collect {
            deadline: limit.and_then(|l| Instant::now().checked_add(l)),
            cancel,
            keep,
            on_line,
            text: [String::new(), String::new()],
        };
        let watched =
            watch(command, pipes, input, stop, inherit, &mut w).map_err(|e| RunError::Spawn {
                program: program.clone(),
                source: e.source,
            })?;
        let [stdout, stderr] = w.text;
        let (stdout, stderr) = if keep {
            (stdout, stderr)
        } else {
            let tail = |r: Option<&LineReader>| {
                r.map(|r| r.tail().map(|l| format!("{l}\n")).collect())
                    .unwrap_or_default()
            };
            (tail(watched.readers.first()), tail(watched.readers.get(1)))
        };
        let partial = Partial { stdout, stderr };
        match (watched.stopped, watched.status, watched.input) {
            (Some(Ended::TimedOut), _, _) => Err(RunError::TimedOut {
                program,
                limit: limit.unwrap_or_default(),
                output: partial,
            }),
            (Some(Ended::Cancelled), _, _) => Err(RunError::Cancelled {
                program,
                output: partial,
            }),
            (Some(Ended::Flooded(s)), _, _) => Err(RunError::Flooded {
                program,
                stream: s,
                max_bytes: bounds.max_bytes,
                output: partial,
            }),
            (None, _, Some(source)) => Err(RunError::Input {
                program,
                source,
                output: partial,
            }),
            (None, None, None) => Err(RunError::Wait { program }),
            (None, Some(status), None) => Ok(Output {
                status,
                stdout: partial.stdout,
                stderr: partial.stderr,
            }),
        }
    }
}

/// A finished command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    /// Every line, each ending in `\n` (the last lines only with [`Run::on_line`]); with
    /// [`Run::merge_stderr`], stderr's too.
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout then stderr: everything the command said.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// What a stopped command had said.
#[derive(Debug, Default)]
pub struct Partial {
    pub stdout: String,
    pub stderr: String,
}

/// Why a command has no exit status of its own to judge.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` ran longer than {} s and was stopped", limit.as_secs())]
    TimedOut {
        program: String,
        limit: Duration,
        output: Partial,
    },
    #[error("`{program}` was stopped: interrupted")]
    Cancelled { program: String, output: Partial },
    #[error("`{program}` printed more than {} MiB on {stream:?} and was stopped", max_bytes >> 20)]
    Flooded {
        program: String,
        stream: Stream,
        max_bytes: u64,
        output: Partial,
    },
    #[error("feeding `{program}` its input: {source}")]
    Input {
        program: String,
        #[source]
        source: std::io::Error,
        output: Partial,
    },
    #[error("`{program}`: waiting for its exit failed")]
    Wait { program: String },
}

impl RunError {
    /// What the command said before it was stopped (empty when it never ran).
    pub fn partial(&self) -> Option<&Partial> {
        match self {
            RunError::TimedOut { output, .. }
            | RunError::Cancelled { output, .. }
            | RunError::Flooded { output, .. }
            | RunError::Input { output, .. } => Some(output),
            RunError::Spawn { .. } | RunError::Wait { .. } => None,
        }
    }
}

/// Why a [`Run`] stopped its command.
enum Ended {
    TimedOut,
    Cancelled,
    Flooded(Stream),
}

struct Collect<'a> {
    deadline: Option<Instant>,
    cancel: Option<&'a Cancel>,
    keep: bool,
    on_line: Option<OnLine<'a>>,
    text: [String; 2],
}

fn stream(pipe: usize) -> Stream {
    if pipe == 0 {
        Stream::Stdout
    } else {
        Stream::Stderr
    }
}

impl Watch for Collect<'_> {
    type Reason = Ended;

    fn line(&mut self, pipe: usize, line: &Line, _: &[LineReader]) -> Option<Ended> {
        if let Some(f) = self.on_line.as_mut() {
            f(stream(pipe), line);
        }
        if self.keep {
            // Bounded by the pipe's byte budget.
            let t = &mut self.text[pipe.min(1)];
            t.push_str(&line.text);
            t.push('\n');
        }
        None
    }

    fn flooded(&mut self, pipe: usize, _: &[LineReader]) -> Option<Ended> {
        Some(Ended::Flooded(stream(pipe)))
    }

    fn tick(&mut self, now: Instant, _: &[LineReader]) -> Option<Ended> {
        if self.cancel.is_some_and(Cancel::is_cancelled) {
            return Some(Ended::Cancelled);
        }
        if self.deadline.is_some_and(|d| now >= d) {
            return Some(Ended::TimedOut);
        }
        None
    }
}

#[cfg(test)]
mod tests;
