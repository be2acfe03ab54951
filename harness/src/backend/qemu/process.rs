//! One QEMU process on the supervisor: its serial ports as sockets the supervisor reads (see
//! [`args::serial_args`] for why sockets), the console alarms and QEMU's KVM failure as the
//! supervisor's [`Observer`], and how a guest that QEMU ended by itself ended. Knows nothing
//! about kernels, plans or disks: it gets a command line.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Instant;

use crate::backend::splat;
use crate::backend::supervise::{
    self, Channel, ChannelInfo, Line, Observer, Role, Stdin, Stop, View,
};
use crate::backend::{Deadlines, ResultStream};
use crate::proc::Cancel;
use crate::results::{BootEnd, ChannelStats, InfraCause, KernelWarning};

use super::args;
use super::console::{self, Alarm};

/// Printed by the agent as PID 1 (`guest-agent/src/init.rs` `READY_MARK`).
pub const READY_MARK: &str = "mmx-agent: init started";

/// What QEMU prints when KVM cannot run the guest (nested or paravirtual KVM meeting an
/// instruction it cannot emulate); QEMU then stops the vCPU and waits forever.
pub const KVM_FAILURE: &str = "KVM internal error";

/// Everything needed to run one QEMU.
#[derive(Debug, Clone)]
pub struct Launch {
    pub qemu: PathBuf,
    /// Everything but the serial ports, which [`run_guest`] adds: they are sockets it opens.
    pub args: Vec<OsString>,
    /// Logs the supervisor writes: the console, the results port, QEMU's own stdout+stderr.
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
    /// Per channel: bytes, lines and what the bounds did.
    pub channels: BTreeMap<String, ChannelStats>,
    /// The console's splats that did not end the boot, and how many were only counted.
    pub kernel_warnings: Vec<KernelWarning>,
    pub kernel_warnings_dropped: u64,
}

/// State of the console as the supervisor delivers it.
#[derive(Debug, Default)]
struct ConsoleState {
    first: Option<Instant>,
    ready: Option<Instant>,
    /// The first alarm that stops the guest, with its (cleaned) line.
    fatal: Option<(Alarm, String)>,
    /// The agent's setup failure line, if any.
    init_failed: Option<String>,
    /// The console's last lines when that line came ([`console::setup_context`]): the kernel
    /// usually says why first.
    setup_context: Option<String>,
    /// The agent's panic line, if any.
    agent_panic: Option<String>,
    /// Splats that do not end the boot, by the plan stretch they printed during.
    splats: splat::Scanner,
}

impl ConsoleState {
    fn feed(&mut self, line: &str, now: Instant) {
        self.first.get_or_insert(now);
        self.splats.feed(line);
        if self.ready.is_none() && line.contains(READY_MARK) {
            self.ready = Some(now);
        }
        match console::classify(line) {
            Some(Alarm::AgentInitFailed) => {
                self.init_failed
                    .get_or_insert_with(|| console::clean(line).to_string());
            }
            Some(Alarm::AgentPanic) => {
                self.agent_panic
                    .get_or_insert_with(|| console::clean(line).to_string());
            }
            Some(alarm) if self.fatal.is_none() && alarm.kills_guest() => {
                self.fatal = Some((alarm, console::clean(line).to_string()));
            }
            _ => {}
        }
    }
}

/// The guest as the supervisor's observer: console alarms stop it, and so does QEMU saying
/// KVM cannot run it.
#[derive(Debug, Default)]
struct Guest {
    console: ConsoleState,
    kvm_failed: bool,
}

impl Observer for Guest {
    fn line(&mut self, channel: &ChannelInfo, line: &Line, view: &View) -> Option<BootEnd> {
        match channel.role {
            Role::Console => {
                let had_fatal = self.console.fatal.is_some();
                self.console.feed(&line.text, Instant::now());
                if self.console.init_failed.is_some() && self.console.setup_context.is_none() {
                    self.console.setup_context =
                        Some(console::setup_context(&view.excerpt(Role::Console)));
                }
                match &self.console.fatal {
                    Some((alarm, text)) if !had_fatal => Some(BootEnd::Panic {
                        line: format!("{}: {text}", alarm.as_str()),
                        excerpt: view.excerpt(Role::Console),
                    }),
                    _ => None,
                }
            }
            Role::Diagnostics if line.text.contains(KVM_FAILURE) => {
                self.kvm_failed = true;
                Some(kvm_unusable())
            }
            Role::Diagnostics | Role::Results => None,
        }
    }

    fn ready(&self) -> bool {
        self.console.ready.is_some()
    }
}

fn kvm_unusable() -> BootEnd {
    BootEnd::infra(
        InfraCause::KvmUnusable,
        format!("{KVM_FAILURE}: KVM cannot run this guest (use --accel tcg)"),
    )
}

/// Start QEMU and supervise it to its end. Never returns an error: a QEMU that cannot start is
/// a [`BootEnd::Infra`] carrying why.
pub fn run_guest(launch: &Launch, plan: &protocol::Plan, cancel: &Cancel) -> Watched {
    let mut watched = Watched {
        stream: ResultStream::new(plan),
        end: BootEnd::Completed,
        qemu_started: None,
        ready_at: None,
        exited_at: Instant::now(),
        kvm_failed: false,
        channels: BTreeMap::new(),
        kernel_warnings: Vec::new(),
        kernel_warnings_dropped: 0,
    };
    let channels = match channels(launch) {
        Ok(c) => c,
        Err(e) => {
            watched.end = BootEnd::infra(InfraCause::BootSetup, format!("{e:#}"));
            return watched;
        }
    };
    let (channels, console_fd, results_fd) = channels;
    // A bare `qemu-system-x86_64` is looked up on PATH.
    let mut command = Command::new(&launch.qemu);
    command
        .args(&launch.args)
        .args(args::serial_args(console_fd, results_fd));
    let spec = supervise::Spec {
        command,
        channels,
        stdin: Stdin::Null,
        // Nothing in a guest is worth a graceful stop: its results are already out.
        stop: Stop::Kill,
        deadlines: launch.deadlines,
        cancel: cancel.clone(),
    };
    let mut guest = Guest::default();
    let sup = match supervise::run(spec, Some(ResultStream::new(plan)), &mut guest) {
        Ok(s) => s,
        Err(e) => {
            watched.end = BootEnd::infra(InfraCause::Spawn, e.to_string());
            return watched;
        }
    };
    watched.qemu_started = Some(sup.started);
    watched.exited_at = sup.exited_at;
    watched.ready_at = guest.console.ready;
    watched.kvm_failed = guest.kvm_failed;
    watched.channels = sup.channels();
    let qemu_output = sup.tail("qemu").join("\n");
    let console_excerpt = sup.view().excerpt(Role::Console);
    let stream = sup.stream.unwrap_or_else(|| ResultStream::new(plan));
    watched.end = sup.stopped.unwrap_or_else(|| {
        classify_exit(
            &guest.console,
            &stream,
            sup.status,
            &qemu_output,
            &console_excerpt,
        )
    });
    watched.stream = stream;
    let (found, dropped) = std::mem::take(&mut guest.console.splats).finish();
    watched.kernel_warnings = found;
    watched.kernel_warnings_dropped = dropped;
    watched
}

/// The three channels and the descriptor numbers QEMU gets the two serial sockets under.
fn channels(launch: &Launch) -> anyhow::Result<(Vec<Channel>, i32, i32)> {
    let log = |p: &PathBuf| crate::rundir::create_nofollow(p).map(Some);
    let (console, console_fd) =
        Channel::socket("console", Role::Console, log(&launch.console_log)?)?;
    let (results, results_fd) =
        Channel::socket("results", Role::Results, log(&launch.results_log)?)?;
    let qemu = Channel::stdout_and_stderr("qemu", Role::Diagnostics, log(&launch.qemu_log)?);
    Ok((vec![console, results, qemu], console_fd, results_fd))
}

/// How a guest ended that QEMU ended by itself (power-off, panic reboot, or QEMU's own error).
fn classify_exit(
    con: &ConsoleState,
    stream: &ResultStream,
    status: Option<ExitStatus>,
    qemu_output: &str,
    excerpt: &str,
) -> BootEnd {
    let status = status.map_or_else(|| "?".to_string(), |s| s.to_string());
    if let Some((alarm, line)) = &con.fatal {
        return BootEnd::Panic {
            line: format!("{}: {line}", alarm.as_str()),
            excerpt: excerpt.to_string(),
        };
    }
    if let Some(line) = &con.agent_panic {
        return BootEnd::Panic {
            line: format!("{}: {line}", Alarm::AgentPanic.as_str()),
            excerpt: excerpt.to_string(),
        };
    }
    if stream.broke_contract() {
        return BootEnd::infra(
            InfraCause::ProtocolViolation,
            "the agent broke the results contract",
        );
    }
    if stream.is_done() {
        return BootEnd::Completed;
    }
    if let Some(line) = &con.init_failed {
        let context = con.setup_context.as_deref().unwrap_or_default();
        let mut message = format!("the agent could not set the guest up: {line}");
        if !context.is_empty() {
            message.push_str("\nlast console lines:\n");
            message.push_str(context);
        }
        return BootEnd::infra(InfraCause::AgentSetup, message);
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
        excerpt: excerpt.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn console_state_finds_ready_and_the_first_fatal_alarm() {
        let mut c = ConsoleState::default();
        let t = Instant::now();
        c.feed("[    2.88] Run /init as init process", t);
        c.feed(READY_MARK, t);
        c.feed(
            "[    9.1] BUG: kernel NULL pointer dereference, address: 08",
            t,
        );
        c.feed("[    9.2] Kernel panic - not syncing: Fatal exception", t);
        assert!(c.ready.is_some());
        let (alarm, line) = c.fatal.clone().expect("alarm");
        assert_eq!(alarm, Alarm::Oops);
        assert_eq!(line, "BUG: kernel NULL pointer dereference, address: 08");
    }

    #[test]
    fn exit_without_done_is_classified_by_what_was_seen() {
        let stream = ResultStream::new(&protocol::Plan {
            schema_version: protocol::SCHEMA_VERSION,
            boot_id: "b".into(),
            scratch_dir: "/s".into(),
            scratch_disks: Vec::new(),
            modules: vec![],
            probe: false,
            items: vec![],
            runtimes: vec![],
        });
        let exit = |code: i32| Some(ExitStatus::from_raw(code << 8));
        let none = ConsoleState::default();
        let end = classify_exit(&none, &stream, exit(1), "qemu: -foo: invalid option", "");
        assert!(
            matches!(&end, BootEnd::Infra { cause: InfraCause::GuestSilent, message } if message.contains("invalid option")),
            "{end:?}"
        );
        let mut init = ConsoleState::default();
        init.feed(
            "mmx-agent: init failed: open(/dev/ttyS1) failed: ENOENT",
            Instant::now(),
        );
        assert!(matches!(
            classify_exit(&init, &stream, exit(0), "", ""),
            BootEnd::Infra {
                cause: InfraCause::AgentSetup,
                ..
            }
        ));
        // The kernel's complaint before the agent's line travels with it.
        init.setup_context = Some(console::setup_context(
            "[    3.9] EXT4-fs (vda): Cannot load crc32c driver.\n\
             mmx-agent: init failed: mount(/dev/vda, /scratch, ext4, MountFlags(0x0)) failed",
        ));
        let end = classify_exit(&init, &stream, exit(0), "", "");
        let BootEnd::Infra { cause, message } = &end else {
            panic!("{end:?}")
        };
        assert_eq!(*cause, InfraCause::AgentSetup);
        assert!(
            message.starts_with("the agent could not set the guest up: mmx-agent: init failed")
                && message.contains(
                    "last console lines:\n[    3.9] EXT4-fs (vda): Cannot load crc32c driver."
                ),
            "{message}"
        );
        assert!(end
            .summary()
            .starts_with("agent-setup: the agent could not set the guest up"));
        let mut quiet = ConsoleState::default();
        quiet.feed("reboot: Power down", Instant::now());
        assert!(matches!(
            classify_exit(&quiet, &stream, exit(0), "", "reboot: Power down"),
            BootEnd::Panic { .. }
        ));
    }
}
