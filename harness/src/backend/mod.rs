//! Backends run one boot's plan somewhere and hand back what the agent said and how it ended:
//! [`local`] on this machine's kernel, [`qemu`] in a guest, [`ssh`] on a metal host.
//!
//! They share one contract: a [`BootRequest`] in, a [`BootOutput`] out, never an `Err` for a
//! problem on the far side (that is a [`BootEnd`]), so one broken boot never loses the others.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use protocol::{AgentEvent, Plan};

use crate::results::{Accel, BootEnd, RunDir};

pub mod local;
pub mod qemu;
pub mod ssh;

/// Set by Ctrl-C (SIGINT/SIGTERM): backends stop their guests and agents, clean up, and return
/// what they have.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Install SIGINT/SIGTERM handlers that set this flag (a second Ctrl-C still kills: the
    /// handlers are registered with signal-hook's conditional-shutdown pattern).
    pub fn install_signal_handlers(&self) -> anyhow::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        for sig in [SIGINT, SIGTERM] {
            // Second signal while the flag is set: exit at once with 130.
            signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&self.0))?;
            signal_hook::flag::register(sig, Arc::clone(&self.0))?;
        }
        Ok(())
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One boot's work.
#[derive(Debug, Clone)]
pub struct BootRequest {
    /// `kernel/topology/filesystem`: the cells' common prefix.
    pub id: String,
    /// What the agent must do (all cells of the boot, repeats included).
    pub plan: Plan,
    /// Where logs go (`RunDir::log_rel(id, channel)`).
    pub run_dir: RunDir,
    pub cancel: Cancel,
}

/// What came back from one boot.
#[derive(Debug, Clone)]
pub struct BootOutput {
    /// Every event the agent managed to send, in order.
    pub events: Vec<AgentEvent>,
    pub end: BootEnd,
    pub accel: Accel,
    /// Logs kept, relative to the run directory.
    pub logs: Vec<PathBuf>,
    /// Phase timings in ms since the boot started (see `results::BootRecord::timings_ms`).
    pub timings_ms: BTreeMap<String, f64>,
    /// Where the kernel came from (package + version, a path), when the backend knows.
    pub kernel_source: Option<String>,
}

impl BootOutput {
    /// A boot that never got going.
    pub fn infra(accel: Accel, message: impl Into<String>, logs: Vec<PathBuf>) -> BootOutput {
        BootOutput {
            events: Vec::new(),
            end: BootEnd::Infra {
                message: message.into(),
            },
            accel,
            logs,
            timings_ms: BTreeMap::new(),
            kernel_source: None,
        }
    }
}

/// Picks result lines out of a channel (serial port, pipe, SSH session) and keeps what it can.
///
/// Pure over lines so every backend parses the same way and tests need no guest.
#[derive(Debug, Default)]
pub struct EventCollector {
    pub events: Vec<AgentEvent>,
    /// Result lines that did not decode: kept for the report, never silently dropped.
    pub garbled: Vec<String>,
    pub hello_at: Option<Instant>,
    pub done_at: Option<Instant>,
}

impl EventCollector {
    pub fn new() -> EventCollector {
        EventCollector::default()
    }

    /// Feed one line of channel text. Returns the event when the line was a result line.
    pub fn feed_line(&mut self, line: &str) -> Option<&AgentEvent> {
        match protocol::decode_line(line)? {
            Ok(ev) => {
                match &ev {
                    AgentEvent::Hello { .. } => self.hello_at = Some(Instant::now()),
                    AgentEvent::Done { .. } => self.done_at = Some(Instant::now()),
                    _ => {}
                }
                self.events.push(ev);
                self.events.last()
            }
            Err(e) => {
                self.garbled.push(format!("{e}: {line}"));
                None
            }
        }
    }

    pub fn is_done(&self) -> bool {
        self.done_at.is_some()
    }
}

/// Milliseconds between two instants, for timings maps.
pub fn ms_between(start: Instant, end: Instant) -> f64 {
    end.saturating_duration_since(start).as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_keeps_results_and_garbled_lines_apart() {
        let mut c = EventCollector::new();
        let done = protocol::encode_line(&AgentEvent::Done { uptime_ms: 5 });
        assert!(c.feed_line("[    1.0] random console noise").is_none());
        assert!(c.feed_line("MMX1 {broken").is_none());
        assert!(c.feed_line(&done).is_some());
        assert_eq!(c.events.len(), 1);
        assert_eq!(c.garbled.len(), 1);
        assert!(c.is_done());
    }
}
