//! Running one ssh command: feeding its stdin, collecting or streaming its output, and stopping
//! it on a deadline or Ctrl-C. Each ssh runs in its own process group so a terminal's Ctrl-C
//! reaches mmx only, and mmx decides how the remote side is stopped and cleaned up.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::Cancel;

/// The ssh client binary (the system's OpenSSH).
pub const SSH: &str = "ssh";

/// What a finished step said.
#[derive(Debug, Default)]
pub struct StepOutput {
    /// Exit code; `None` when ssh died from a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Why a step has no exit status of its own.
#[derive(Debug)]
pub enum StepError {
    /// ssh could not be started.
    Spawn(String),
    /// Past its time limit; killed. Carries what it printed until then.
    TimedOut(StepOutput),
    /// Ctrl-C; killed. Carries what it printed until then.
    Cancelled(StepOutput),
}

fn ssh(args: &[OsString]) -> Command {
    let mut c = Command::new(SSH);
    c.args(args);
    c
}

fn spawn(mut cmd: Command, stdout: Stdio, stderr: Stdio) -> Result<Child, StepError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| StepError::Spawn(format!("starting `{program}`: {e}")))
}

fn reader<R: Read + Send + 'static>(r: Option<R>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A child whose exit is reported on a channel, so the caller can wait with a deadline and
/// still signal it by pid (the pid stays valid until the waiter reaps it).
struct Watched {
    pid: Option<rustix::process::Pid>,
    exited: Receiver<std::io::Result<ExitStatus>>,
}

impl Watched {
    fn new(mut child: Child) -> Watched {
        let pid = rustix::process::Pid::from_raw(child.id() as i32);
        let (tx, exited) = channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        Watched { pid, exited }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        if let Some(pid) = self.pid {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// SIGTERM (a mux client then closes its channel, which the remote side sees as EOF), then
    /// SIGKILL after `grace`.
    fn stop(&self, grace: Duration) -> Option<ExitStatus> {
        self.signal(rustix::process::Signal::TERM);
        match self.exited.recv_timeout(grace) {
            Ok(s) => s.ok(),
            Err(_) => {
                self.signal(rustix::process::Signal::KILL);
                self.exited.recv().ok().and_then(Result::ok)
            }
        }
    }
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
    let mut child = spawn(cmd, Stdio::piped(), Stdio::piped())?;
    let input = child.stdin.take();
    let data = stdin.to_vec();
    // A remote that exits without reading (a failed check) breaks the pipe: not an error here,
    // its output says what happened.
    let writer = std::thread::spawn(move || {
        if let Some(mut w) = input {
            let _ = w.write_all(&data);
        }
    });
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let watched = Watched::new(child);
    let deadline = Instant::now() + limit;
    let mut stopped: Option<bool> = None; // Some(true): cancelled, Some(false): timed out
    let status = loop {
        match watched.exited.recv_timeout(Duration::from_millis(50)) {
            Ok(s) => break s.ok(),
            Err(RecvTimeoutError::Disconnected) => break None,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if cancel.is_cancelled() || Instant::now() > deadline {
            stopped = Some(cancel.is_cancelled());
            break watched.stop(Duration::from_secs(2));
        }
    };
    let _ = writer.join();
    let output = StepOutput {
        code: status.and_then(|s| s.code()),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    match stopped {
        None => Ok(output),
        Some(true) => Err(StepError::Cancelled(output)),
        Some(false) => Err(StepError::TimedOut(output)),
    }
}

/// One line of a streamed step, or its end.
pub enum Streamed {
    Line(String),
    /// Stdout closed and the process exited (code; `None` when killed by a signal).
    Exited(Option<i32>),
}

/// A long-running ssh command whose stdout is read live. Its stdin stays open (the remote agent
/// stops when it closes) until the process ends or [`Streaming::stop`] is called.
pub struct Streaming {
    watched: Watched,
    stdin: Option<std::process::ChildStdin>,
    lines: Receiver<String>,
    reader: Option<JoinHandle<()>>,
    status: Option<Option<i32>>,
}

impl Streaming {
    pub fn start(args: &[OsString], stderr: Stdio) -> Result<Streaming, StepError> {
        let mut child = spawn(ssh(args), Stdio::piped(), stderr)?;
        let stdin = child.stdin.take();
        let (tx, lines) = channel();
        let reader = child.stdout.take().map(|out| {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
        });
        Ok(Streaming {
            watched: Watched::new(child),
            stdin,
            lines,
            reader,
            status: None,
        })
    }

    /// The next line, waiting at most `wait`; `None` on a quiet interval. After stdout closes,
    /// waits for the exit and reports it once.
    pub fn next(&mut self, wait: Duration) -> Option<Streamed> {
        if self.status.is_some() {
            return None;
        }
        match self.lines.recv_timeout(wait) {
            Ok(line) => Some(Streamed::Line(line)),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                let code = match self.watched.exited.recv_timeout(wait) {
                    Ok(s) => s.ok().and_then(|s| s.code()),
                    Err(RecvTimeoutError::Timeout) => return None,
                    Err(RecvTimeoutError::Disconnected) => None,
                };
                self.finish(code);
                Some(Streamed::Exited(code))
            }
        }
    }

    fn finish(&mut self, code: Option<i32>) {
        self.status = Some(code);
        self.stdin = None;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// Stop the client (its channel closes: the remote agent sees EOF) and return its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        if let Some(code) = self.status {
            return code;
        }
        let code = self
            .watched
            .stop(Duration::from_secs(5))
            .and_then(|s| s.code());
        self.finish(code);
        code
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.stop();
    }
}
