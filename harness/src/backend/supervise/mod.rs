//! The one supervisor of every process mmx runs for a boot: QEMU, the local agent, the ssh
//! session and its short steps, the hosts' hooks. It spawns the process ([`child`]: it never
//! outlives mmx), reads each of its channels from a pipe or a socket — never from a file the
//! process writes, so a flooding guest cannot make QEMU fill the disk — writes each channel's
//! log itself, bounded ([`lines`]), feeds the results channel to the boot's [`ResultStream`],
//! hands every line to the backend's [`Observer`] (the console alarms, the ssh status lines),
//! runs the boot's three watchdogs ([`Deadlines`]) and cancellation, and stops the process the
//! way its backend needs ([`Stop`]).
//!
//! Everything happens on the calling thread, in one `poll` loop: no reader threads, no queues,
//! so memory is the read buffer plus each channel's bounded partial line and tail, whatever
//! the process sends. Every limit is here: [`Role::bounds`] and the constants below (channel
//! budgets, line lengths, how long each kind of process gets to stop).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::Signal;

use crate::backend::stream::Fed;
use crate::backend::{Cancel, Deadlines, ResultStream};
use crate::results::{BootEnd, ChannelStats, Deadline, InfraCause};

pub mod child;
pub mod lines;

pub use lines::{excerpt, Line};

/// The longest result line: the protocol's (`protocol::limits`), which the agent keeps to. A
/// longer one is cut like any line and the stream reads it as a protocol violation.
pub use protocol::limits::RESULT_LINE_MAX;
/// A boot's result channel: a plan is at most a few hundred items of tens of KiB each. The
/// stream keeps every valid result in memory, so this is also what one boot's results may cost.
pub const RESULTS_MAX: u64 = 16 << 20;
/// The longest console or diagnostics line: the kernel's lines are under 1 KiB (printk's
/// limit) plus a timestamp; the agent's, QEMU's and ssh's messages are sentences.
pub const TEXT_LINE_MAX: usize = 16 << 10;
/// A guest's console: a kernel boot prints about 100 KiB, a dying one some screens more; 16 MiB
/// is 100 verbose boots. Under TCG a serial port carries about 0.5 MB/s, so a flooding guest
/// reaches this in about 30 s.
pub const CONSOLE_MAX: u64 = 16 << 20;
/// QEMU's own output, the agent's stderr, ssh's messages and a hook's output.
pub const DIAGNOSTICS_MAX: u64 = 16 << 20;

/// Longest wait in `poll`: how late a cancellation or a deadline may be noticed.
const TICK: Duration = Duration::from_millis(100);
/// After the process exits, how long its channels may take to reach EOF (a grandchild that
/// inherited a pipe may hold it open forever).
const DRAIN: Duration = Duration::from_secs(2);
/// How often the exit of a process whose channels are all closed is looked for, where the
/// kernel has no `pidfd_open`.
const EXIT_POLL: Duration = Duration::from_millis(10);
/// One `read` per ready channel per round, at most this much.
const READ_CHUNK: usize = 64 << 10;
/// After [`Stop::CloseStdin`]'s grace, SIGTERM; SIGKILL this much later.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// How long a stopped local agent may take to undo its mounts before SIGKILL: it promises to
/// answer a stop within 5 s, on a loaded machine too.
pub const AGENT_STOP_GRACE: Duration = Duration::from_secs(10);
/// A stopped ssh run: its stdin closes, the run script stops the agent (SIGTERM, SIGKILL 12 s
/// later if it must), cleans up and says so. After this long ssh gets SIGTERM.
pub const SSH_RUN_STOP_GRACE: Duration = Duration::from_secs(20);
/// A stopped short step or hook gets this long after SIGTERM (a multiplexing ssh client closes
/// its channel, which the host sees as EOF) before SIGKILL.
pub const STEP_STOP_GRACE: Duration = Duration::from_secs(2);

/// What a channel carries: decides its bounds and where its lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The agent's result lines (`MMX1 …`), fed to the boot's [`ResultStream`]; on ssh also the
    /// run script's status lines beside them.
    Results,
    /// A guest's serial console: the kernel log and the agent's diagnostics.
    Console,
    /// A process's own messages: QEMU's, the agent's stderr, ssh's, a hook's output.
    Diagnostics,
}

/// How much one channel may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// A longer line is cut there, marked and counted.
    pub max_line: usize,
    /// Past this many bytes in one boot the channel is flooded: the boot ends
    /// [`InfraCause::OutputFlood`] and reading stops.
    pub max_bytes: u64,
}

impl Role {
    /// The one table of channel bounds.
    pub const fn bounds(self) -> Bounds {
        match self {
            Role::Results => Bounds {
                max_line: RESULT_LINE_MAX,
                max_bytes: RESULTS_MAX,
            },
            Role::Console => Bounds {
                max_line: TEXT_LINE_MAX,
                max_bytes: CONSOLE_MAX,
            },
            Role::Diagnostics => Bounds {
                max_line: TEXT_LINE_MAX,
                max_bytes: DIAGNOSTICS_MAX,
            },
        }
    }
}

/// Where a channel's bytes come from.
#[derive(Debug)]
enum Source {
    Stdout,
    Stderr,
    /// stdout and stderr into one pipe (QEMU's messages, in the order it wrote them).
    StdoutAndStderr,
    /// A socket pair: ours, and the end the child inherits under its own number.
    Socket(UnixStream, OwnedFd),
}

/// One channel of a supervised process.
#[derive(Debug)]
pub struct Channel {
    /// Names the log (`logs/<boot>.<name>.log`) and the stats in run.json.
    pub name: String,
    pub role: Role,
    source: Source,
    log: Option<File>,
}

impl Channel {
    pub fn stdout(name: &str, role: Role, log: Option<File>) -> Channel {
        Channel::with(name, role, Source::Stdout, log)
    }

    pub fn stderr(name: &str, role: Role, log: Option<File>) -> Channel {
        Channel::with(name, role, Source::Stderr, log)
    }

    pub fn stdout_and_stderr(name: &str, role: Role, log: Option<File>) -> Channel {
        Channel::with(name, role, Source::StdoutAndStderr, log)
    }

    /// A socket the child inherits; the number is the descriptor the child will have it
    /// under (name it on the command line, e.g. QEMU's `-chardev socket,fd=N`).
    pub fn socket(name: &str, role: Role, log: Option<File>) -> std::io::Result<(Channel, RawFd)> {
        let (ours, theirs) = UnixStream::pair()?;
        let n = theirs.as_raw_fd();
        let source = Source::Socket(ours, OwnedFd::from(theirs));
        Ok((Channel::with(name, role, source, log), n))
    }

    fn with(name: &str, role: Role, source: Source, log: Option<File>) -> Channel {
        Channel {
            name: name.to_string(),
            role,
            source,
            log,
        }
    }
}

/// What the process reads.
#[derive(Debug)]
pub enum Stdin {
    Null,
    /// Written, then closed (a plan and an agent for `ssh … cat`).
    Feed(Vec<u8>),
    /// Held open until the stop (the agent ends when its stdin closes).
    Hold,
    /// Written, then held open until the stop (an ssh run script's token, then the agent's
    /// stdin).
    FeedAndHold(Vec<u8>),
}

/// How a process is stopped when the supervisor ends it (a watchdog, a flood, a violation,
/// the observer, Ctrl-C).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL at once: nothing inside to save (QEMU).
    Kill,
    /// Close stdin and SIGTERM; SIGKILL after `grace` (the local agent undoes its mounts).
    Term { grace: Duration },
    /// Close stdin; SIGTERM after `grace`, SIGKILL [`TERM_GRACE`] later (ssh: the remote side
    /// sees EOF, stops the agent, cleans up and says so before the session ends).
    CloseStdin { grace: Duration },
}

/// One process to supervise.
#[derive(Debug)]
pub struct Spec {
    /// Program, arguments, environment; its stdio and spawning are the supervisor's.
    pub command: Command,
    pub channels: Vec<Channel>,
    pub stdin: Stdin,
    pub stop: Stop,
    /// Measured from the spawn.
    pub deadlines: Deadlines,
    pub cancel: Cancel,
}

/// The process could not be started.
#[derive(Debug, thiserror::Error)]
#[error("starting `{program}`: {source}")]
pub struct SpawnError {
    pub program: String,
    #[source]
    pub source: std::io::Error,
}

/// A channel as observers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub name: String,
    pub role: Role,
}

/// The channels' recent lines, for excerpts.
pub struct View<'a>(&'a [(ChannelInfo, lines::LineReader)]);

impl View<'_> {
    /// The last lines of the first channel with `role`, cleaned for a report.
    pub fn excerpt(&self, role: Role) -> String {
        self.0
            .iter()
            .find(|(i, _)| i.role == role)
            .map(|(_, r)| excerpt(r.tail(), lines::TAIL_LINES))
            .unwrap_or_default()
    }

    /// What a timeout shows: the console, else the process's own messages.
    pub fn timeout_excerpt(&self) -> String {
        let console = self.excerpt(Role::Console);
        if console.is_empty() {
            self.excerpt(Role::Diagnostics)
        } else {
            console
        }
    }
}

/// What a backend does with the lines: its own alarms and status lines.
pub trait Observer {
    /// A line arrived on `channel` (results lines have been fed to the stream already).
    /// `Some(end)` stops the process: the boot ends so.
    fn line(&mut self, channel: &ChannelInfo, line: &Line, view: &View) -> Option<BootEnd>;

    /// The agent runs: the boot deadline no longer applies. A hello on the results channel
    /// always counts.
    fn ready(&self) -> bool {
        false
    }
}

/// Observes nothing: the stream and the watchdogs are all there is.
pub struct Quiet;

impl Observer for Quiet {
    fn line(&mut self, _: &ChannelInfo, _: &Line, _: &View) -> Option<BootEnd> {
        None
    }
}

/// How a supervised process went.
#[derive(Debug)]
pub struct Supervised {
    pub stream: Option<ResultStream>,
    /// Set when the supervisor ended the process; `None`: it ended by itself.
    pub stopped: Option<BootEnd>,
    /// `None` when waiting for it failed.
    pub status: Option<ExitStatus>,
    pub started: Instant,
    pub exited_at: Instant,
    readers: Vec<(ChannelInfo, lines::LineReader)>,
}

impl Supervised {
    /// Bytes, lines and what the bounds did, per channel name.
    pub fn channels(&self) -> BTreeMap<String, ChannelStats> {
        self.readers
            .iter()
            .map(|(i, r)| (i.name.clone(), r.stats().clone()))
            .collect()
    }

    pub fn view(&self) -> View<'_> {
        View(&self.readers)
    }

    /// The last lines of channel `name`, oldest first.
    pub fn tail(&self, name: &str) -> Vec<&str> {
        self.readers
            .iter()
            .find(|(i, _)| i.name == name)
            .map(|(_, r)| r.tail().collect())
            .unwrap_or_default()
    }
}

/// Run `spec` to its end. `stream` (when the process speaks the results protocol) is fed every
/// line of the [`Role::Results`] channels. Never returns early: the process is reaped before
/// this returns, whatever happened.
pub fn run(
    spec: Spec,
    stream: Option<ResultStream>,
    observer: &mut dyn Observer,
) -> Result<Supervised, SpawnError> {
    let Spec {
        mut command,
        channels,
        stdin,
        stop,
        deadlines,
        cancel,
    } = spec;
    let program = command.get_program().to_string_lossy().into_owned();
    let spawn_err = |source| SpawnError {
        program: program.clone(),
        source,
    };
    command.stdin(match stdin {
        Stdin::Null => Stdio::null(),
        Stdin::Feed(_) | Stdin::Hold | Stdin::FeedAndHold(_) => Stdio::piped(),
    });
    command.stdout(Stdio::null()).stderr(Stdio::null());
    /// Where our end of a channel comes from once the child runs.
    enum Ours {
        Fd(OwnedFd),
        Stdout,
        Stderr,
    }
    let mut inherit = Vec::new();
    let mut pending = Vec::new();
    for ch in channels {
        let info = ChannelInfo {
            name: ch.name,
            role: ch.role,
        };
        let reader = lines::LineReader::new(ch.role.bounds(), ch.log);
        let ours = match ch.source {
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
        pending.push((info, ours, reader));
    }
    // The command (and with it our copies of the child's ends) is dropped inside `spawn`.
    let mut c = child::spawn(command, inherit).map_err(spawn_err)?;
    let started = Instant::now();
    let (mut out, mut err) = (c.stdout.take(), c.stderr.take());
    let stdin_fd = c.stdin.take().map(OwnedFd::from);
    let guard = child::Guard::new(c);
    let mut fds = Vec::new();
    let mut readers = Vec::new();
    for (info, ours, reader) in pending {
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
        readers.push((info, reader));
    }
    let (feed, hold) = match stdin {
        Stdin::Feed(bytes) => (Some(bytes), false),
        Stdin::FeedAndHold(bytes) => (Some(bytes), true),
        Stdin::Null | Stdin::Hold => (None, true),
    };
    let stdin = stdin_fd.map(File::from);
    if let (Some(f), Some(_)) = (&stdin, &feed) {
        let _ = rustix::io::ioctl_fionbio(f, true);
    }
    let pidfd = rustix::process::Pid::from_raw(guard.id() as i32).and_then(|pid| {
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
    });
    let mut sup = Loop {
        guard,
        pidfd,
        fds,
        readers,
        stdin,
        feed,
        fed: 0,
        hold,
        stream,
        broken: false,
        stop,
        deadlines,
        cancel,
        started,
        last_line: started,
        stopped: None,
        stopping_since: None,
        signals: 0,
        exited_at: None,
        status: None,
    };
    sup.run(observer);
    let exited_at = sup.exited_at.unwrap_or_else(Instant::now);
    Ok(Supervised {
        stream: sup.stream.take(),
        stopped: sup.stopped.take(),
        status: sup.status,
        started,
        exited_at,
        readers: std::mem::take(&mut sup.readers),
    })
}

/// The state of one supervision.
struct Loop {
    guard: child::Guard,
    /// Readable when the process exits (`pidfd_open`, Linux 5.3+), so `poll` wakes for the exit
    /// too; without it the loop looks every [`EXIT_POLL`].
    pidfd: Option<OwnedFd>,
    /// Our end of each channel, by index; `None` once at EOF or flooded.
    fds: Vec<Option<File>>,
    readers: Vec<(ChannelInfo, lines::LineReader)>,
    stdin: Option<File>,
    feed: Option<Vec<u8>>,
    fed: usize,
    /// Keep stdin open once the feed is written.
    hold: bool,
    stream: Option<ResultStream>,
    /// The stream broke the results contract: nothing more is fed to it.
    broken: bool,
    stop: Stop,
    deadlines: Deadlines,
    cancel: Cancel,
    started: Instant,
    /// The last complete line on any channel (the silence watchdog).
    last_line: Instant,
    stopped: Option<BootEnd>,
    stopping_since: Option<Instant>,
    /// Stop steps taken so far (see [`Loop::stop_step`]).
    signals: u8,
    exited_at: Option<Instant>,
    status: Option<ExitStatus>,
}

impl Loop {
    fn run(&mut self, observer: &mut dyn Observer) {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let now = Instant::now();
            if self.exited_at.is_none() {
                match self.guard.try_wait() {
                    Ok(Some(s)) => {
                        self.status = Some(s);
                        self.exited_at = Some(now);
                    }
                    Ok(None) => {}
                    Err(_) => {
                        self.status = self.guard.kill().ok();
                        self.exited_at = Some(now);
                    }
                }
            }
            if let Some(t) = self.exited_at {
                if self.fds.iter().all(Option::is_none) || now >= t + DRAIN {
                    break;
                }
            }
            self.poll_once(&mut buf, observer);
            let now = Instant::now();
            if self.stopped.is_none() {
                if let Some(end) = self.watchdog(observer, now) {
                    self.decide(end, now);
                }
            }
            if self.exited_at.is_none() {
                self.stop_step(now);
            }
        }
        // Channels still open belong to a grandchild that outlived the process: let go.
        for i in 0..self.fds.len() {
            self.close_channel(i, observer);
        }
    }

    /// Wait for any channel (or stdin, while feeding) at most one tick, then read once from
    /// each ready channel and write once to stdin.
    fn poll_once(&mut self, buf: &mut [u8], observer: &mut dyn Observer) {
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
            self.read_channel(i, buf, observer);
        }
        if stdin_ready {
            self.write_stdin();
        }
    }

    fn read_channel(&mut self, i: usize, buf: &mut [u8], observer: &mut dyn Observer) {
        let Some(f) = self.fds[i].as_mut() else {
            return;
        };
        match f.read(buf) {
            Ok(0) => self.close_channel(i, observer),
            Ok(n) => {
                let lines = self.readers[i].1.push(&buf[..n]);
                self.deliver(i, lines, observer);
                if self.readers[i].1.flooded() {
                    // Reading stops: dropping our end tells the writer.
                    self.fds[i] = None;
                    let (info, reader) = &self.readers[i];
                    let end = BootEnd::infra(
                        InfraCause::OutputFlood,
                        format!(
                            "output flood: more than {} MiB on the {} channel; reading stopped \
                             (its log ends with a marker)",
                            reader.bounds().max_bytes >> 20,
                            info.name
                        ),
                    );
                    self.decide(end, Instant::now());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A reset socket or a broken pipe: the writer is gone.
            Err(_) => self.close_channel(i, observer),
        }
    }

    fn close_channel(&mut self, i: usize, observer: &mut dyn Observer) {
        if self.fds[i].take().is_some() {
            let lines = self.readers[i].1.finish();
            self.deliver(i, lines, observer);
        }
    }

    /// Hand each line to the stream (results) and the observer; a broken contract or an
    /// observer's verdict stops the process.
    fn deliver(&mut self, i: usize, lines: Vec<Line>, observer: &mut dyn Observer) {
        if lines.is_empty() {
            return;
        }
        let now = Instant::now();
        self.last_line = now;
        let role = self.readers[i].0.role;
        for line in lines {
            // After the first violation the stream is not trusted: whatever follows it (in
            // the same read, or while the process stops) is not taken as a result.
            if role == Role::Results && !self.broken {
                if let Some(stream) = self.stream.as_mut() {
                    let fed = if line.cut {
                        stream.feed_cut_line(&line.text)
                    } else {
                        stream.feed_line(&line.text)
                    };
                    if let Fed::Violation(kind) = fed {
                        self.broken = true;
                        let end = BootEnd::infra(
                            InfraCause::ProtocolViolation,
                            format!("the agent broke the results contract: {}", kind.as_str()),
                        );
                        self.decide(end, now);
                    }
                }
            }
            let verdict = observer.line(&self.readers[i].0, &line, &View(&self.readers));
            if let Some(end) = verdict {
                self.decide(end, now);
            }
        }
    }

    fn write_stdin(&mut self) {
        let (Some(f), Some(data)) = (self.stdin.as_mut(), self.feed.as_ref()) else {
            return;
        };
        let end = (self.fed + READ_CHUNK).min(data.len());
        match f.write(&data[self.fed..end]) {
            Ok(n) => self.fed += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
            // The process stopped reading (it exited, or refused the input): its output says why.
            Err(_) => self.fed = data.len(),
        }
        if self.fed >= data.len() {
            self.feed = None;
            if !self.hold {
                self.stdin = None;
            }
        }
    }

    /// The deadlines and cancellation, checked every round while the process runs.
    fn watchdog(&self, observer: &dyn Observer, now: Instant) -> Option<BootEnd> {
        if self.exited_at.is_some() {
            return None;
        }
        if self.cancel.is_cancelled() {
            return Some(BootEnd::infra(
                InfraCause::Cancelled,
                "interrupted (Ctrl-C)",
            ));
        }
        let d = self.deadlines;
        let timeout = |deadline: Deadline, after: Duration| {
            Some(BootEnd::Timeout {
                deadline,
                seconds: after.as_secs_f64(),
                excerpt: View(&self.readers).timeout_excerpt(),
            })
        };
        let elapsed = now.saturating_duration_since(self.started);
        let ready = observer.ready() || self.stream.as_ref().is_some_and(|s| s.hello.is_some());
        if elapsed > d.plan {
            return timeout(Deadline::Plan, d.plan);
        }
        if !ready && elapsed > d.boot {
            return timeout(Deadline::Boot, d.boot);
        }
        if now.saturating_duration_since(self.last_line) > d.silence {
            return timeout(Deadline::Silence, d.silence);
        }
        None
    }

    fn decide(&mut self, end: BootEnd, now: Instant) {
        if self.stopped.is_none() {
            self.stopped = Some(end);
            self.stopping_since = Some(now);
        }
    }

    /// Take the next step of the stop, if one is due: each style's first step at once, the
    /// harder ones after their grace. Reading goes on meanwhile (an ssh run script reports its
    /// cleanup on the way out).
    fn stop_step(&mut self, now: Instant) {
        let Some(since) = self.stopping_since else {
            return;
        };
        let waited = now.saturating_duration_since(since);
        match (self.stop, self.signals) {
            (Stop::Kill, 0) => {
                self.guard.signal(Signal::KILL);
                self.signals = 1;
            }
            (Stop::Term { .. }, 0) => {
                self.stdin = None;
                self.guard.signal(Signal::TERM);
                self.signals = 1;
            }
            (Stop::Term { grace }, 1) if waited >= grace => {
                self.guard.signal(Signal::KILL);
                self.signals = 2;
            }
            (Stop::CloseStdin { .. }, 0) => {
                self.stdin = None;
                self.feed = None;
                self.signals = 1;
            }
            (Stop::CloseStdin { grace }, 1) if waited >= grace => {
                self.guard.signal(Signal::TERM);
                self.signals = 2;
            }
            (Stop::CloseStdin { grace }, 2) if waited >= grace + TERM_GRACE => {
                self.guard.signal(Signal::KILL);
                self.signals = 3;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
