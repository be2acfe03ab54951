//! One QEMU process from spawn to exit: both serial ports read live from their log files, the
//! three watchdogs, the console alarms, `Cancel`, and a kill on every way out (the [`Running`]
//! guard's `Drop`). Knows nothing about kernels, plans or disks: it gets a command line.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backend::{Cancel, Deadlines, ResultStream};
use crate::results::{BootEnd, Deadline, InfraCause};

use super::console::{self, Alarm};

/// Printed by the agent as PID 1 (`guest-agent/src/init.rs` `READY_MARK`).
pub const READY_MARK: &str = "mmx-agent: init started";

/// What QEMU prints when KVM cannot run the guest (nested or paravirtual KVM meeting an
/// instruction it cannot emulate); QEMU then stops the vCPU and waits forever.
pub const KVM_FAILURE: &str = "KVM internal error";

/// Console lines kept in memory for excerpts.
const EXCERPT_LINES: usize = 40;

/// How often the logs and the process are polled. Small next to any boot (seconds) and cheap:
/// a poll is three `read`s that usually return nothing.
const POLL: Duration = Duration::from_millis(25);

/// Everything needed to run one QEMU.
#[derive(Debug, Clone)]
pub struct Launch {
    pub qemu: PathBuf,
    pub args: Vec<OsString>,
    /// Files the serial chardevs write (named in `args`) and QEMU's own stdout+stderr.
    pub console_log: PathBuf,
    pub results_log: PathBuf,
    pub qemu_log: PathBuf,
    /// Measured from QEMU's start; `boot` ends when the agent runs as PID 1 (its ready line).
    pub deadlines: Deadlines,
}

/// What happened, with instants for the boot's timings.
#[derive(Debug)]
pub struct Watched {
    pub stream: ResultStream,
    pub end: BootEnd,
    pub qemu_started: Option<Instant>,
    pub ready_at: Option<Instant>,
    pub exited_at: Instant,
    /// QEMU's stderr said KVM could not run the guest.
    pub kvm_failed: bool,
}

impl Watched {
    /// Nothing seen yet.
    fn new(plan: &protocol::Plan) -> Watched {
        Watched {
            stream: ResultStream::new(plan),
            end: BootEnd::Completed,
            qemu_started: None,
            ready_at: None,
            exited_at: Instant::now(),
            kvm_failed: false,
        }
    }
}

/// Kills QEMU when dropped, whichever way the watcher leaves (return, `?`, panic).
struct Running(duct::Handle);

impl Drop for Running {
    fn drop(&mut self) {
        // Already exited: kill is a no-op that reaps. Otherwise SIGKILL and reap.
        let _ = self.0.kill();
    }
}

/// Reads a growing file and hands out whole lines.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    file: Option<File>,
    lines: LineSplitter,
}

impl Tail {
    pub fn new(path: &Path) -> Tail {
        Tail {
            path: path.to_path_buf(),
            file: None,
            lines: LineSplitter::default(),
        }
    }

    /// New complete lines since the last call (the file may not exist yet: QEMU creates it).
    pub fn poll(&mut self) -> Vec<String> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(f) = self.file.as_mut() else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        self.lines.push(&buf)
    }

    /// Whatever is left after the writer is gone: the last line may lack its newline.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = self.poll();
        out.extend(self.lines.flush());
        out
    }
}

/// Splits bytes into lines across reads; tolerates `\r\n` and invalid UTF-8.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                out.push(self.take());
            } else {
                self.partial.push(b);
            }
        }
        out
    }

    pub fn flush(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.partial)
            .trim_end_matches('\r')
            .to_string();
        self.partial.clear();
        line
    }
}

/// State of the console as the watcher reads it.
#[derive(Debug, Default)]
struct ConsoleState {
    recent: VecDeque<String>,
    first: Option<Instant>,
    ready: Option<Instant>,
    /// The first alarm that stops the guest, with its (cleaned) line.
    fatal: Option<(Alarm, String)>,
    /// The agent's setup failure line, if any.
    init_failed: Option<String>,
    /// The agent's panic line, if any.
    agent_panic: Option<String>,
}

impl ConsoleState {
    fn feed(&mut self, line: String, now: Instant) {
        self.first.get_or_insert(now);
        if self.ready.is_none() && line.contains(READY_MARK) {
            self.ready = Some(now);
        }
        match console::classify(&line) {
            Some(Alarm::AgentInitFailed) => {
                self.init_failed
                    .get_or_insert_with(|| console::clean(&line).to_string());
            }
            Some(Alarm::AgentPanic) => {
                self.agent_panic
                    .get_or_insert_with(|| console::clean(&line).to_string());
            }
            Some(alarm) if self.fatal.is_none() && alarm.kills_guest() => {
                self.fatal = Some((alarm, console::clean(&line).to_string()));
            }
            _ => {}
        }
        if self.recent.len() == EXCERPT_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }

    fn excerpt(&self) -> String {
        let text: Vec<&str> = self.recent.iter().map(String::as_str).collect();
        console::excerpt(&text.join("\n"), EXCERPT_LINES)
    }
}

/// Start QEMU and watch it to its end. Never returns an error: a QEMU that cannot start is a
/// [`BootEnd::Infra`] carrying its stderr.
pub fn run_guest(launch: &Launch, plan: &protocol::Plan, cancel: &Cancel) -> Watched {
    let Launch {
        qemu,
        args,
        console_log,
        results_log,
        qemu_log,
        deadlines,
    } = launch;
    let mut watched = Watched::new(plan);
    // The chardevs append to existing files; start from empty ones so the tails read this boot.
    for p in [console_log, results_log] {
        if let Err(e) = crate::rundir::create_nofollow(p) {
            watched.end = BootEnd::infra(InfraCause::BootSetup, format!("{e:#}"));
            return watched;
        }
    }
    // As an OsStr, not a Path: duct would read a bare `qemu-system-x86_64` Path as `./…`.
    let handle = duct::cmd(qemu.as_os_str(), args)
        .stdin_null()
        .stderr_to_stdout()
        .stdout_path(qemu_log)
        .unchecked()
        .start();
    let started = Instant::now();
    let running = match handle {
        Ok(h) => Running(h),
        Err(e) => {
            watched.end = BootEnd::infra(
                InfraCause::Spawn,
                format!("starting {}: {e}", qemu.display()),
            );
            watched.exited_at = Instant::now();
            return watched;
        }
    };
    watched.qemu_started = Some(started);

    let mut console_tail = Tail::new(console_log);
    let mut results_tail = Tail::new(results_log);
    let mut qemu_tail = Tail::new(qemu_log);
    let mut con = ConsoleState::default();
    let mut last_output = started;
    let mut stopped: Option<BootEnd> = None;

    let status = loop {
        let exited = running.0.try_wait();
        let now = Instant::now();
        let (con_lines, res_lines, qemu_lines) = match exited {
            Ok(Some(_)) | Err(_) => (
                console_tail.finish(),
                results_tail.finish(),
                qemu_tail.finish(),
            ),
            Ok(None) => (console_tail.poll(), results_tail.poll(), qemu_tail.poll()),
        };
        if !con_lines.is_empty() || !res_lines.is_empty() {
            last_output = now;
        }
        for line in con_lines {
            con.feed(line, now);
        }
        for line in res_lines {
            watched.stream.feed_line(&line);
        }
        if qemu_lines.iter().any(|l| l.contains(KVM_FAILURE)) {
            watched.kvm_failed = true;
        }
        match exited {
            Ok(Some(out)) => break Some(out.status.to_string()),
            Err(e) => break Some(format!("waiting for qemu failed: {e}")),
            Ok(None) => {}
        }
        if stopped.is_none() {
            stopped = watchdog(&con, &watched, deadlines, started, last_output, now, cancel);
            if stopped.is_some() {
                break None;
            }
        }
        std::thread::sleep(POLL);
    };
    // Stop QEMU now (a no-op when it exited) and read what it left.
    drop(running);
    watched.exited_at = Instant::now();
    for line in console_tail.finish() {
        con.feed(line, watched.exited_at);
    }
    for line in results_tail.finish() {
        watched.stream.feed_line(&line);
    }
    watched.ready_at = con.ready;
    let qemu_output = std::fs::read_to_string(qemu_log).unwrap_or_default();
    watched.kvm_failed |= qemu_output.contains(KVM_FAILURE);
    watched.end = stopped.unwrap_or_else(|| {
        classify_exit(
            &con,
            &watched,
            status.as_deref().unwrap_or("?"),
            &qemu_output,
        )
    });
    watched
}

/// The watchdogs and alarms, checked once per poll while QEMU runs: `Some` stops the guest.
fn watchdog(
    con: &ConsoleState,
    watched: &Watched,
    deadlines: &Deadlines,
    started: Instant,
    last_output: Instant,
    now: Instant,
    cancel: &Cancel,
) -> Option<BootEnd> {
    if let Some((alarm, line)) = &con.fatal {
        return Some(BootEnd::Panic {
            line: format!("{}: {line}", alarm.as_str()),
            excerpt: con.excerpt(),
        });
    }
    if watched.kvm_failed {
        return Some(BootEnd::infra(
            InfraCause::KvmUnusable,
            format!("{KVM_FAILURE}: KVM cannot run this guest (use --accel tcg)"),
        ));
    }
    if watched.stream.broke_contract() {
        return Some(BootEnd::infra(
            InfraCause::ProtocolViolation,
            "the agent broke the results contract",
        ));
    }
    if cancel.is_cancelled() {
        return Some(BootEnd::infra(
            InfraCause::Cancelled,
            "interrupted (Ctrl-C)",
        ));
    }
    let timeout = |deadline: Deadline, d: Duration| BootEnd::Timeout {
        deadline,
        seconds: d.as_secs_f64(),
        excerpt: con.excerpt(),
    };
    let elapsed = now.saturating_duration_since(started);
    if elapsed > deadlines.plan {
        return Some(timeout(Deadline::Plan, deadlines.plan));
    }
    if con.ready.is_none() && elapsed > deadlines.boot {
        return Some(timeout(Deadline::Boot, deadlines.boot));
    }
    if now.saturating_duration_since(last_output) > deadlines.silence {
        return Some(timeout(Deadline::Silence, deadlines.silence));
    }
    None
}

/// How a guest ended that QEMU ended by itself (power-off, panic reboot, or QEMU's own error).
fn classify_exit(
    con: &ConsoleState,
    watched: &Watched,
    status: &str,
    qemu_output: &str,
) -> BootEnd {
    if let Some((alarm, line)) = &con.fatal {
        return BootEnd::Panic {
            line: format!("{}: {line}", alarm.as_str()),
            excerpt: con.excerpt(),
        };
    }
    if let Some(line) = &con.agent_panic {
        return BootEnd::Panic {
            line: format!("{}: {line}", Alarm::AgentPanic.as_str()),
            excerpt: con.excerpt(),
        };
    }
    if watched.stream.broke_contract() {
        return BootEnd::infra(
            InfraCause::ProtocolViolation,
            "the agent broke the results contract",
        );
    }
    if watched.stream.is_done() {
        return BootEnd::Completed;
    }
    if watched.kvm_failed {
        return BootEnd::infra(
            InfraCause::KvmUnusable,
            format!("{KVM_FAILURE}: KVM cannot run this guest (use --accel tcg)"),
        );
    }
    if let Some(line) = &con.init_failed {
        return BootEnd::infra(
            InfraCause::AgentSetup,
            format!("the agent could not set the guest up: {line}"),
        );
    }
    if con.first.is_none() {
        return BootEnd::infra(
            InfraCause::GuestSilent,
            format!(
                "qemu exited ({status}) before the guest printed anything: {}",
                qemu_output.trim()
            ),
        );
    }
    BootEnd::Panic {
        line: format!("the guest stopped before the agent reported done (qemu: {status})"),
        excerpt: con.excerpt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_reads() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"Linux ver").is_empty());
        assert_eq!(
            s.push(b"sion 6.1\r\nnext\n\xffpart"),
            ["Linux version 6.1", "next"]
        );
        assert_eq!(s.flush().as_deref(), Some("\u{fffd}part"));
        assert_eq!(s.flush(), None);
    }

    #[test]
    fn console_state_finds_ready_and_the_first_fatal_alarm() {
        let mut c = ConsoleState::default();
        let t = Instant::now();
        c.feed("[    2.88] Run /init as init process".into(), t);
        c.feed(READY_MARK.into(), t);
        c.feed(
            "[    9.1] BUG: kernel NULL pointer dereference, address: 08".into(),
            t,
        );
        c.feed(
            "[    9.2] Kernel panic - not syncing: Fatal exception".into(),
            t,
        );
        assert!(c.ready.is_some());
        let (alarm, line) = c.fatal.clone().expect("alarm");
        assert_eq!(alarm, Alarm::Oops);
        assert_eq!(line, "BUG: kernel NULL pointer dereference, address: 08");
        assert!(c.excerpt().contains("Fatal exception"));
    }

    #[test]
    fn exit_without_done_is_classified_by_what_was_seen() {
        let w = Watched::new(&protocol::Plan {
            schema_version: protocol::SCHEMA_VERSION,
            boot_id: "b".into(),
            scratch_dir: "/s".into(),
            scratch_disk: None,
            modules: vec![],
            probe: false,
            items: vec![],
        });
        let none = ConsoleState::default();
        let end = classify_exit(&none, &w, "exit status: 1", "qemu: -foo: invalid option");
        assert!(
            matches!(&end, BootEnd::Infra { cause: InfraCause::GuestSilent, message } if message.contains("invalid option")),
            "{end:?}"
        );
        let mut init = ConsoleState::default();
        init.feed(
            "mmx-agent: init failed: open(/dev/ttyS1) failed: ENOENT".into(),
            Instant::now(),
        );
        assert!(matches!(
            classify_exit(&init, &w, "exit status: 0", ""),
            BootEnd::Infra { .. }
        ));
        let mut quiet = ConsoleState::default();
        quiet.feed("reboot: Power down".into(), Instant::now());
        assert!(matches!(
            classify_exit(&quiet, &w, "exit status: 0", ""),
            BootEnd::Panic { .. }
        ));
    }
}
