//! The one supervisor of every process mmx runs for a boot: QEMU, the local agent, the ssh
//! session and its short steps, the hosts' hooks. Starting, reading and stopping a process is
//! [`crate::proc`]'s (its own group, the death signal, bounded lines, graceful-then-forceful
//! stops of the whole group); what is a boot's is here: the channels' roles and their bounds
//! ([`Role::bounds`]), the results channel fed to the boot's [`ResultStream`], every line handed
//! to the backend's [`Observer`] (the console alarms, the ssh status lines), the boot's three
//! watchdogs ([`Deadlines`]) and cancellation, and a [`BootEnd`] for every way a boot is stopped.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::RawFd;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::backend::stream::Fed;
use crate::backend::{Deadlines, ResultStream};
use crate::proc::lines::{self, Bounds, LineReader};
use crate::proc::{Cancel, Input, Pipe, Watch};
use crate::results::{BootEnd, ChannelStats, Deadline, InfraCause};

pub use crate::proc::lines::{excerpt, Line};
pub use crate::proc::{SpawnError, Stop};

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

impl Role {
    /// The one table of channel bounds. Past `max_bytes` in one boot the channel is flooded:
    /// the boot ends [`InfraCause::OutputFlood`] and reading stops.
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

/// One channel of a supervised process.
#[derive(Debug)]
pub struct Channel {
    /// Names the log (`logs/<boot>.<name>.log`) and the stats in run.json.
    pub name: String,
    pub role: Role,
    pipe: Pipe,
}

impl Channel {
    pub fn stdout(name: &str, role: Role, log: Option<File>) -> Channel {
        Channel::with(name, role, Pipe::stdout(role.bounds(), log))
    }

    pub fn stderr(name: &str, role: Role, log: Option<File>) -> Channel {
        Channel::with(name, role, Pipe::stderr(role.bounds(), log))
    }

    pub fn stdout_and_stderr(name: &str, role: Role, log: Option<File>) -> Channel {
        Channel::with(name, role, Pipe::stdout_and_stderr(role.bounds(), log))
    }

    /// A socket the child inherits; the number is the descriptor the child will have it
    /// under (name it on the command line, e.g. QEMU's `-chardev socket,fd=N`).
    pub fn socket(name: &str, role: Role, log: Option<File>) -> std::io::Result<(Channel, RawFd)> {
        let (pipe, n) = Pipe::socket(role.bounds(), log)?;
        Ok((Channel::with(name, role, pipe), n))
    }

    fn with(name: &str, role: Role, pipe: Pipe) -> Channel {
        Channel {
            name: name.to_string(),
            role,
            pipe,
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

/// One process to supervise.
#[derive(Debug)]
pub struct Spec {
    /// Program, arguments, environment; its stdio and spawning are the supervisor's.
    pub command: Command,
    pub channels: Vec<Channel>,
    pub stdin: Stdin,
    /// How the supervisor stops it (a watchdog, a flood, a violation, the observer, Ctrl-C).
    pub stop: Stop,
    /// Measured from the spawn.
    pub deadlines: Deadlines,
    pub cancel: Cancel,
}

/// A channel as observers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub name: String,
    pub role: Role,
}

/// The channels' recent lines, for excerpts.
pub struct View<'a> {
    infos: &'a [ChannelInfo],
    readers: &'a [LineReader],
}

impl View<'_> {
    /// The last lines of the first channel with `role`, cleaned for a report.
    pub fn excerpt(&self, role: Role) -> String {
        self.infos
            .iter()
            .zip(self.readers)
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
    infos: Vec<ChannelInfo>,
    readers: Vec<LineReader>,
}

impl Supervised {
    /// Bytes, lines and what the bounds did, per channel name.
    pub fn channels(&self) -> BTreeMap<String, ChannelStats> {
        self.infos
            .iter()
            .zip(&self.readers)
            .map(|(i, r)| (i.name.clone(), channel_stats(r.stats())))
            .collect()
    }

    pub fn view(&self) -> View<'_> {
        View {
            infos: &self.infos,
            readers: &self.readers,
        }
    }

    /// The last lines of channel `name`, oldest first.
    pub fn tail(&self, name: &str) -> Vec<&str> {
        self.infos
            .iter()
            .zip(&self.readers)
            .find(|(i, _)| i.name == name)
            .map(|(_, r)| r.tail().collect())
            .unwrap_or_default()
    }
}

/// run.json's record of a channel: what the reader counted, field by field.
fn channel_stats(s: &lines::Stats) -> ChannelStats {
    let lines::Stats {
        bytes,
        lines,
        lines_cut,
        invalid_utf8,
        flooded,
    } = *s;
    ChannelStats {
        bytes,
        lines,
        lines_cut,
        invalid_utf8,
        flooded,
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
        command,
        channels,
        stdin,
        stop,
        deadlines,
        cancel,
    } = spec;
    let input = match stdin {
        Stdin::Null => Input::Null,
        Stdin::Feed(bytes) => Input::Bytes(Cow::Owned(bytes)),
        Stdin::Hold => Input::Hold,
        Stdin::FeedAndHold(bytes) => Input::BytesThenHold(Cow::Owned(bytes)),
    };
    let mut infos = Vec::new();
    let mut pipes = Vec::new();
    for ch in channels {
        infos.push(ChannelInfo {
            name: ch.name,
            role: ch.role,
        });
        pipes.push(ch.pipe);
    }
    let now = Instant::now();
    let mut boot = Boot {
        infos,
        stream,
        broken: false,
        observer,
        deadlines,
        cancel,
        started: now,
        last_line: now,
    };
    let watched = crate::proc::watch(command, pipes, input, stop, Vec::new(), &mut boot)?;
    Ok(Supervised {
        stream: boot.stream.take(),
        stopped: watched.stopped,
        status: watched.status,
        started: watched.started,
        exited_at: watched.exited_at,
        infos: boot.infos,
        readers: watched.readers,
    })
}

/// A boot's verdicts on its process: the results contract, the observer's, the watchdogs.
struct Boot<'o> {
    infos: Vec<ChannelInfo>,
    stream: Option<ResultStream>,
    /// The stream broke the results contract: nothing more is fed to it.
    broken: bool,
    observer: &'o mut dyn Observer,
    deadlines: Deadlines,
    cancel: Cancel,
    /// Measured from the spawn (within a tick: `watch` spawns right after this is set).
    started: Instant,
    /// The last complete line on any channel (the silence watchdog).
    last_line: Instant,
}

impl Watch for Boot<'_> {
    type Reason = BootEnd;

    /// Feed the stream (results) and the observer; a broken contract or an observer's verdict
    /// stops the process.
    fn line(&mut self, i: usize, line: &Line, readers: &[LineReader]) -> Option<BootEnd> {
        self.last_line = Instant::now();
        let mut end = None;
        // After the first violation the stream is not trusted: whatever follows it (in the same
        // read, or while the process stops) is not taken as a result.
        if self.infos[i].role == Role::Results && !self.broken {
            if let Some(stream) = self.stream.as_mut() {
                let fed = if line.cut {
                    stream.feed_cut_line(&line.text)
                } else {
                    stream.feed_line(&line.text)
                };
                if let Fed::Violation(kind) = fed {
                    self.broken = true;
                    end = Some(BootEnd::infra(
                        InfraCause::ProtocolViolation,
                        format!("the agent broke the results contract: {}", kind.as_str()),
                    ));
                }
            }
        }
        let view = View {
            infos: &self.infos,
            readers,
        };
        let verdict = self.observer.line(&self.infos[i], line, &view);
        end.or(verdict)
    }

    fn flooded(&mut self, i: usize, readers: &[LineReader]) -> Option<BootEnd> {
        Some(BootEnd::infra(
            InfraCause::OutputFlood,
            format!(
                "output flood: more than {} MiB on the {} channel; reading stopped \
                 (its log ends with a marker)",
                readers[i].bounds().max_bytes >> 20,
                self.infos[i].name
            ),
        ))
    }

    /// The deadlines and cancellation, checked every round while the process runs.
    fn tick(&mut self, now: Instant, readers: &[LineReader]) -> Option<BootEnd> {
        if self.cancel.is_cancelled() {
            return Some(BootEnd::infra(
                InfraCause::Cancelled,
                "interrupted (Ctrl-C)",
            ));
        }
        let d = self.deadlines;
        let view = View {
            infos: &self.infos,
            readers,
        };
        let timeout = |deadline: Deadline, after: Duration| {
            Some(BootEnd::Timeout {
                deadline,
                seconds: after.as_secs_f64(),
                excerpt: view.timeout_excerpt(),
            })
        };
        let elapsed = now.saturating_duration_since(self.started);
        let ready =
            self.observer.ready() || self.stream.as_ref().is_some_and(|s| s.hello.is_some());
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
}

#[cfg(test)]
mod tests;
