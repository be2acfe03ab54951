//! Talking to a runtime process over the contract ([`super`]): start it, read its hello, send
//! jobs and wait for each answer at most a per-job limit, stop it. The runtime is untrusted: its
//! lines are bounded, its stderr is kept (bounded) as evidence, and a runtime that goes silent is
//! killed, never waited for.
//!
//! This is the one implementation of the agent's side of the contract: `mmx-agent` drives every
//! runtime cell with it, and the harness's contract tests drive runtimes with it directly. It
//! uses std processes, pipes and threads only; how the process is started (its working
//! directory, its mount namespace, a parent-death signal) is the caller's [`Command`].

use std::io::{BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{parse_answer, parse_hello, Answer, Hello, Job, LineReader, RuntimeLineError};

/// Most stderr kept per runtime process.
pub const MAX_STDERR: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("starting {program}: {source}", program = program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{source}; stderr: {stderr:?}")]
    Line {
        #[source]
        source: RuntimeLineError,
        stderr: String,
    },
    #[error("no {what} within {limit:?}; stderr: {stderr:?}")]
    Timeout {
        what: String,
        limit: Duration,
        stderr: String,
    },
    #[error("writing job {id} to the runtime: {source}; stderr: {stderr:?}")]
    Write {
        id: u64,
        #[source]
        source: std::io::Error,
        stderr: String,
    },
}

/// A running runtime.
pub struct RuntimeProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Result<String, RuntimeLineError>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    hello: Hello,
    next_id: u64,
}

impl RuntimeProcess {
    /// Start `cmd` (stdio is set here) and read its hello within `limit`.
    pub fn start(mut cmd: Command, limit: Duration) -> Result<RuntimeProcess, DriveError> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| DriveError::Spawn {
                program: PathBuf::from(cmd.get_program()),
                source,
            })?;
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut reader = LineReader::new(BufReader::new(out));
                loop {
                    let r = reader.read_line();
                    let end = r.is_err();
                    if tx.send(r).is_err() || end {
                        break;
                    }
                }
            });
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut err) = child.stderr.take() {
            let keep = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut k = keep.lock().unwrap_or_else(|e| e.into_inner());
                    let room = MAX_STDERR.saturating_sub(k.len());
                    k.extend_from_slice(&buf[..n.min(room)]);
                }
            });
        }
        let stdin = child.stdin.take();
        let mut p = RuntimeProcess {
            child,
            stdin,
            lines,
            stderr,
            hello: Hello {
                contract: 0,
                runtime: String::new(),
                version: String::new(),
            },
            next_id: 1,
        };
        let line = p.next_line("hello", limit)?;
        p.hello = parse_hello(&line).map_err(|source| p.line_error(source))?;
        Ok(p)
    }

    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A fresh job id.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Send `job` and wait at most `limit` for its answer.
    pub fn run(&mut self, job: &Job, limit: Duration) -> Result<Answer, DriveError> {
        self.run_timed(job, limit).map(|(a, _)| a)
    }

    /// [`RuntimeProcess::run`], also returning the time from just before the job was written to
    /// when its answer line arrived.
    pub fn run_timed(
        &mut self,
        job: &Job,
        limit: Duration,
    ) -> Result<(Answer, Duration), DriveError> {
        let id = job.id();
        let t0 = Instant::now();
        let written = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(job.to_line().as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
        };
        if let Err(source) = written {
            return Err(DriveError::Write {
                id,
                source,
                stderr: self.stderr_text(),
            });
        }
        let line = self.next_line(&format!("answer to job {id}"), limit)?;
        let took = t0.elapsed();
        parse_answer(&line, id)
            .map(|a| (a, took))
            .map_err(|source| self.line_error(source))
    }

    /// Kill the runtime now and reap it (after a broken answer: the stream is out of step).
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Close stdin and wait at most `limit` for the runtime to exit; kill it after that.
    pub fn finish(mut self, limit: Duration) -> Result<ExitStatus, DriveError> {
        drop(self.stdin.take());
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(DriveError::Timeout {
                    what: "exit after stdin closed".into(),
                    limit,
                    stderr: self.stderr_text(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The runtime's exit status, waiting at most `limit` (a crashed runtime is reaped here).
    pub fn exit_status(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return None,
            }
        }
    }

    /// What the runtime wrote on stderr so far (at most [`MAX_STDERR`] bytes).
    pub fn stderr_text(&self) -> String {
        let k = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&k).into_owned()
    }

    fn next_line(&mut self, what: &str, limit: Duration) -> Result<String, DriveError> {
        match self.lines.recv_timeout(limit) {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(source)) => Err(self.line_error(source)),
            Err(RecvTimeoutError::Disconnected) => Err(self.line_error(RuntimeLineError::Eof)),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(DriveError::Timeout {
                    what: what.to_string(),
                    limit,
                    stderr: self.stderr_text(),
                })
            }
        }
    }

    fn line_error(&mut self, source: RuntimeLineError) -> DriveError {
        // Give a dying runtime a moment to finish its last words on stderr.
        if matches!(source, RuntimeLineError::Eof) {
            let _ = self.exit_status(Duration::from_millis(500));
            std::thread::sleep(Duration::from_millis(20));
        }
        DriveError::Line {
            source,
            stderr: self.stderr_text(),
        }
    }
}

impl Drop for RuntimeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
