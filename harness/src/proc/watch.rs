//! Watching a child to its end: its stdin written or held, each of its output channels read
//! from a pipe or a socket — never from a file the child writes, so a flooding child cannot fill
//! the disk — through a bounded [`LineReader`], every line handed to the owner's [`Watch`], and
//! the stop ([`Stop`]) taken step by step when the owner decides it.
//!
//! Everything happens on the calling thread, in one `poll` loop: no reader threads, no queues,
//! so memory is the read buffer plus each channel's bounded partial line and tail, whatever the
//! child sends. The boot supervisor and [`super::run`] are both this loop with their own
//! [`Watch`].

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

use super::lines::{Bounds, Line, LineReader};
use super::spawn::{spawn, Child};
use super::stop::{Step, Stop, Stopping};

/// Longest wait in `poll`: how late a cancellation or a deadline may be noticed.
const TICK: Duration = Duration::from_millis(100);
/// After the child exits, how long its channels may take to reach EOF (a grandchild that
/// inherited a pipe may hold it open forever).
const DRAIN: Duration = Duration::from_secs(2);
/// How often the exit of a child whose channels are all closed is looked for, where the kernel
/// has no `pidfd_open`.
const EXIT_POLL: Duration = Duration::from_millis(10);
/// One `read` per ready channel per round, at most this much; stdin is written in pieces of
/// this size too.
const CHUNK: usize = 64 << 10;

/// Where a channel's bytes come from.
#[derive(Debug)]
enum Source {
    Stdout,
    Stderr,
    /// stdout and stderr into one pipe (in the order the child wrote them).
    StdoutAndStderr,
    /// A socket pair: ours, and the end the child inherits under its own number.
    Socket(UnixStream, OwnedFd),
}

/// One output channel of a watched child.
#[derive(Debug)]
pub struct Pipe {
    bounds: Bounds,
    source: Source,
    /// Every line, as it came, cut lines and a flood marked (see [`LineReader`]).
    log: Option<File>,
}

impl Pipe {
    pub fn stdout(bounds: Bounds, log: Option<File>) -> Pipe {
        Pipe::with(bounds, Source::Stdout, log)
    }

    pub fn stderr(bounds: Bounds, log: Option<File>) -> Pipe {
        Pipe::with(bounds, Source::Stderr, log)
    }

    pub fn stdout_and_stderr(bounds: Bounds, log: Option<File>) -> Pipe {
        Pipe::with(bounds, Source::StdoutAndStderr, log)
    }

    /// A socket the child inherits; the number is the descriptor the child will have it under
    /// (name it on the command line, e.g. QEMU's `-chardev socket,fd=N`).
    pub fn socket(bounds: Bounds, log: Option<File>) -> std::io::Result<(Pipe, RawFd)> {
        let (ours, theirs) = UnixStream::pair()?;
        let n = theirs.as_raw_fd();
        let source = Source::Socket(ours, OwnedFd::from(theirs));
        Ok((Pipe::with(bounds, source, log), n))
    }

    fn with(bounds: Bounds, source: Source, log: Option<File>) -> Pipe {
        Pipe {
            bounds,
            source,
            log,
        }
    }
}

/// What the child reads.
pub enum Input<'a> {
    Null,
    /// Written, then closed (a patch for `patch`, a plan and an agent for `ssh … cat`).
    Bytes(Cow<'a, [u8]>),
    /// Read as the child takes it, then closed: a stream too big to hold (a kernel tarball for
    /// `tar`). A read error closes the child's stdin and is reported in [`Watched::input`].
    Read(&'a mut dyn Read),
    /// Held open until a stop closes it (the agent ends when its stdin closes).
    Hold,
    /// Written, then held open until a stop closes it (an ssh run script's token, then the
    /// agent's stdin).
    BytesThenHold(Cow<'a, [u8]>),
}

impl std::fmt::Debug for Input<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Null => f.write_str("Null"),
            Input::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Input::Read(_) => f.write_str("Read"),
            Input::Hold => f.write_str("Hold"),
            Input::BytesThenHold(b) => write!(f, "BytesThenHold({} bytes)", b.len()),
        }
    }
}

/// What the owner of a watched child does with its lines and its time: its own verdicts.
pub trait Watch {
    /// Why the owner stopped the child.
    type Reason;

    /// A line arrived on channel `pipe` (an index into the pipes given to [`watch`]).
    /// `Some(reason)` stops the child.
    fn line(&mut self, pipe: usize, line: &Line, readers: &[LineReader]) -> Option<Self::Reason>;

    /// Channel `pipe` passed its byte budget: it is no longer read. `Some(reason)` stops the
    /// child.
    fn flooded(&mut self, pipe: usize, readers: &[LineReader]) -> Option<Self::Reason>;

    /// Called every round (at least every 100 ms) while the child runs: deadlines and
    /// cancellation. `Some(reason)` stops the child.
    fn tick(&mut self, now: Instant, readers: &[LineReader]) -> Option<Self::Reason>;
}

/// How a watched child went.
#[derive(Debug)]
pub struct Watched<R> {
    /// Set when the owner stopped the child (the first reason given); `None`: it ended by
    /// itself.
    pub stopped: Option<R>,
    /// `None` when waiting for it failed.
    pub status: Option<ExitStatus>,
    pub started: Instant,
    pub exited_at: Instant,
    /// Each channel's reader, in the order of the pipes: stats and the last lines.
    pub readers: Vec<LineReader>,
    /// Reading [`Input::Read`] failed: the child got a truncated stdin.
    pub input: Option<std::io::Error>,
}

/// The child could not be started.
#[derive(Debug, thiserror::Error)]
#[error("starting `{program}`: {source}")]
pub struct SpawnError {
    pub program: String,
    #[source]
    pub source: std::io::Error,
}

/// Start `command` ([`spawn`]: its own group, the death signal, a warden), feed it `input`,
/// read `pipes` and hand their lines to `watch` until it ends. When `watch` gives a reason the
/// child is stopped per `stop`. Never returns early: the child is reaped before this returns,
/// and its group killed unless it ended by itself.
pub fn watch<W: Watch>(
    mut command: Command,
    pipes: Vec<Pipe>,
    input: Input<'_>,
    stop: Stop,
    mut inherit: Vec<OwnedFd>,
    watch: &mut W,
) -> Result<Watched<W::Reason>, SpawnError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let spawn_err = |source| SpawnError {
        program: program.clone(),
        source,
    };
    command.stdin(match input {
        Input::Null => Stdio::null(),
        Input::Bytes(_) | Input::Read(_) | Input::Hold | Input::BytesThenHold(_) => Stdio::piped(),
    });
    command.stdout(Stdio::null()).stderr(Stdio::null());
    /// Where our end of a channel comes from once the child runs.
    enum Ours {
        Fd(OwnedFd),
        Stdout,
        Stderr,
    }
    let mut pending = Vec::new();
    for p in pipes {
        let reader = LineReader::new(p.bounds, p.log);
        let ours = match p.source {
            Source::Stdout => {
                command.stdout(Stdio::piped());
                Ours::Stdout
            }
            Source::Stderr => {
                command.stderr(Stdio::piped());
                Ours::Stderr
            }
            Source::StdoutAndStderr => {
                let (r, w) = std::io::pipe().map_err(spawn_err)?;
                command.stdout(w.try_clone().map_err(spawn_err)?).stderr(w);
                Ours::Fd(OwnedFd::from(r))
            }
            Source::Socket(ours, theirs) => {
                inherit.push(theirs);
                Ours::Fd(OwnedFd::from(ours))
            }
        };
        pending.push((ours, reader));
    }
    // The command (and with it our copies of the child's ends) is dropped inside `spawn`.
    let mut child = spawn(command, inherit).map_err(spawn_err)?;
    let started = Instant::now();
    let (mut out, mut err) = (child.take_stdout(), child.take_stderr());
    let stdin = child.take_stdin().map(|s| File::from(OwnedFd::from(s)));
    let mut fds = Vec::new();
    let mut readers = Vec::new();
    for (ours, reader) in pending {
        let fd = match ours {
            Ours::Fd(fd) => Some(fd),
            Ours::Stdout => out.take().map(OwnedFd::from),
            Ours::Stderr => err.take().map(OwnedFd::from),
        };
        let fd = fd.map(File::from);
        if let Some(f) = &fd {
            let _ = rustix::io::ioctl_fionbio(f, true);
        }
        fds.push(fd);
        readers.push(reader);
    }
    let hold = matches!(input, Input::Hold | Input::BytesThenHold(_));
    let (feed, source): (Option<Cow<'_, [u8]>>, Option<&mut dyn Read>) = match input {
        Input::Bytes(b) | Input::BytesThenHold(b) => (Some(b), None),
        Input::Read(r) => (Some(Cow::Owned(Vec::new())), Some(r)),
        Input::Null | Input::Hold => (None, None),
    };
    if let (Some(f), Some(_)) = (&stdin, &feed) {
        let _ = rustix::io::ioctl_fionbio(f, true);
    }
    let pidfd = rustix::process::Pid::from_raw(child.id() as i32).and_then(|pid| {
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
    });
    let mut l = Loop {
        child,
        pidfd,
        fds,
        readers,
        stdin,
        feed,
        source,
        fed: 0,
        hold,
        input_error: None,
        stop,
        stopped: None,
        stopping: None,
        exited_at: None,
        status: None,
    };
    l.run(watch);
    let exited_at = l.exited_at.unwrap_or_else(Instant::now);
    Ok(Watched {
        stopped: l.stopped.take(),
        status: l.status,
        started,
        exited_at,
        readers: std::mem::take(&mut l.readers),
        input: l.input_error.take(),
    })
}

/// The state of one watch.
struct Loop<'a, R> {
    child: Child,
    /// Readable when the child exits (`pidfd_open`, Linux 5.3+), so `poll` wakes for the exit
    /// too; without it the loop looks every [`EXIT_POLL`].
    pidfd: Option<OwnedFd>,
    /// Our end of each channel, by index; `None` once at EOF or flooded.
    fds: Vec<Option<File>>,
    readers: Vec<LineReader>,
    stdin: Option<File>,
    /// What is still to be written to stdin, from `fed` on; `None` when nothing is (held, or
    /// done).
    feed: Option<Cow<'a, [u8]>>,
    /// Where more of the input comes from when `feed` is written ([`Input::Read`]).
    source: Option<&'a mut dyn Read>,
    fed: usize,
    /// Keep stdin open once the feed is written (until a stop closes it).
    hold: bool,
    input_error: Option<std::io::Error>,
    stop: Stop,
    stopped: Option<R>,
    stopping: Option<Stopping>,
    exited_at: Option<Instant>,
    status: Option<ExitStatus>,
}

impl<R> Loop<'_, R> {
    fn run<W: Watch<Reason = R>>(&mut self, watch: &mut W) {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let now = Instant::now();
            if self.exited_at.is_none() {
                match self.child.try_wait() {
                    Ok(Some(s)) => {
                        self.status = Some(s);
                        self.exited_at = Some(now);
                    }
                    Ok(None) => {}
                    Err(_) => {
                        self.status = self.child.kill().ok();
                        self.exited_at = Some(now);
                    }
                }
            }
            if let Some(t) = self.exited_at {
                if self.fds.iter().all(Option::is_none) || now >= t + DRAIN {
                    break;
                }
            }
            self.poll_once(&mut buf, watch);
            let now = Instant::now();
            if self.stopped.is_none() && self.exited_at.is_none() {
                if let Some(reason) = watch.tick(now, &self.readers) {
                    self.decide(reason, now);
                }
            }
            if self.exited_at.is_none() {
                self.stop_step(now);
            }
        }
        // Channels still open belong to a grandchild that outlived the child: let go.
        for i in 0..self.fds.len() {
            self.close_channel(i, watch);
        }
    }

    /// Wait for any channel (or stdin, while feeding) at most one tick, then read once from
    /// each ready channel and write once to stdin.
    fn poll_once<W: Watch<Reason = R>>(&mut self, buf: &mut [u8], watch: &mut W) {
        let open: Vec<usize> = (0..self.fds.len())
            .filter(|i| self.fds[*i].is_some())
            .collect();
        let feeding = self.feed.is_some() && self.stdin.is_some();
        let (ready, stdin_ready) = {
            let mut pfds: Vec<PollFd> = open
                .iter()
                .filter_map(|i| self.fds[*i].as_ref())
                .map(|f| PollFd::new(f, PollFlags::IN))
                .collect();
            let channels = pfds.len();
            if feeding {
                if let Some(f) = &self.stdin {
                    pfds.push(PollFd::new(f, PollFlags::OUT));
                }
            }
            match (&self.pidfd, self.exited_at) {
                (Some(p), None) => pfds.push(PollFd::new(p, PollFlags::IN)),
                (None, None) if pfds.is_empty() => {
                    std::thread::sleep(EXIT_POLL);
                    return;
                }
                _ => {}
            }
            let tick = Timespec {
                tv_sec: i64::try_from(TICK.as_secs()).unwrap_or(0),
                tv_nsec: i64::from(TICK.subsec_nanos()),
            };
            if pfds.is_empty() {
                std::thread::sleep(TICK);
            } else if rustix::event::poll(&mut pfds, Some(&tick)).is_err() {
                // EINTR: go round again.
                return;
            }
            let ready: Vec<usize> = open
                .iter()
                .zip(&pfds)
                .filter(|(_, p)| !p.revents().is_empty())
                .map(|(i, _)| *i)
                .collect();
            let stdin_ready =
                feeding && pfds.get(channels).is_some_and(|p| !p.revents().is_empty());
            (ready, stdin_ready)
        };
        for i in ready {
            self.read_channel(i, buf, watch);
        }
        if stdin_ready {
            self.write_stdin();
        }
    }

    fn read_channel<W: Watch<Reason = R>>(&mut self, i: usize, buf: &mut [u8], watch: &mut W) {
        let Some(f) = self.fds[i].as_mut() else {
            return;
        };
        match f.read(buf) {
            Ok(0) => self.close_channel(i, watch),
            Ok(n) => {
                let lines = self.readers[i].push(&buf[..n]);
                self.deliver(i, lines, watch);
                if self.readers[i].flooded() {
                    // Reading stops: dropping our end tells the writer.
                    self.fds[i] = None;
                    if let Some(reason) = watch.flooded(i, &self.readers) {
                        self.decide(reason, Instant::now());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A reset socket or a broken pipe: the writer is gone.
            Err(_) => self.close_channel(i, watch),
        }
    }

    fn close_channel<W: Watch<Reason = R>>(&mut self, i: usize, watch: &mut W) {
        if self.fds[i].take().is_some() {
            let lines = self.readers[i].finish();
            self.deliver(i, lines, watch);
        }
    }

    /// Hand each line to the owner; its verdict stops the child.
    fn deliver<W: Watch<Reason = R>>(&mut self, i: usize, lines: Vec<Line>, watch: &mut W) {
        for line in lines {
            if let Some(reason) = watch.line(i, &line, &self.readers) {
                self.decide(reason, Instant::now());
            }
        }
    }

    fn write_stdin(&mut self) {
        if self.stdin.is_none() {
            return;
        }
        let Some(data) = self.feed.as_mut() else {
            return;
        };
        if self.fed >= data.len() {
            // Refill from the stream, if there is one; else (or at its end) stdin is done.
            let more = match self.source.as_mut() {
                Some(r) => {
                    let buf = data.to_mut();
                    buf.resize(CHUNK, 0);
                    match r.read(buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                            buf.clear();
                            return;
                        }
                        Err(e) => {
                            self.input_error = Some(e);
                            0
                        }
                    }
                }
                None => 0,
            };
            if more == 0 {
                self.finish_stdin();
                return;
            }
            data.to_mut().truncate(more);
            self.fed = 0;
        }
        let (Some(f), Some(data)) = (self.stdin.as_mut(), self.feed.as_ref()) else {
            return;
        };
        let end = (self.fed + CHUNK).min(data.len());
        let written = f.write(&data[self.fed..end]);
        let all = end >= data.len();
        match written {
            Ok(n) => {
                self.fed += n;
                if all && self.fed >= end && self.source.is_none() {
                    if self.hold {
                        self.feed = None;
                    } else {
                        self.finish_stdin();
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // The child stopped reading (it exited, or refused the input): its output says why.
            Err(_) => self.finish_stdin(),
        }
    }

    fn finish_stdin(&mut self) {
        self.feed = None;
        self.source = None;
        self.stdin = None;
    }

    fn decide(&mut self, reason: R, now: Instant) {
        if self.stopped.is_none() {
            self.stopped = Some(reason);
            self.stopping = Some(Stopping::new(self.stop, now));
        }
    }

    /// Take the next step of the stop, if one is due. Reading goes on meanwhile (an ssh run
    /// script reports its cleanup on the way out).
    fn stop_step(&mut self, now: Instant) {
        let Some(step) = self.stopping.as_mut().and_then(|s| s.due(now)) else {
            return;
        };
        match step {
            Step::CloseStdin => self.finish_stdin(),
            Step::Signal(sig) => self.child.signal(sig),
            Step::CloseStdinAndSignal(sig) => {
                self.finish_stdin();
                self.child.signal(sig);
            }
        }
    }
}
