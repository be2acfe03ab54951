//! The `ssh` backend: the agent on a metal host's own kernel and hardware, reached with the
//! system OpenSSH client.
//!
//! A [`HostSession`] is one host's stay in a run: the user's provision hook, one shared SSH
//! connection (one handshake) for every visit, then the connection closed and the teardown hook.
//! A visit ([`HostSession::run`]) copies the agent to a private temp dir, runs the plan under an
//! SMT setting, streams results back and cleans up, on the host and from the harness, on every
//! path: success, failure, timeout, Ctrl-C and a lost connection. See `remote.rs` for what runs
//! on the host and `visit.rs` for the steps.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::backend::{BootOutput, BootRequest};
use crate::cell::SmtSetting;
use crate::events::{Note, SharedSink};
use crate::matrix::Host;
use crate::proc::Cancel;
use crate::results::{Accel, BootEnd, InfraCause};

pub mod args;
mod remote;
mod smt;
mod step;
mod visit;

/// Where each session's private control dir goes (`CONTROL_BASE/CONTROL_PREFIX*`).
pub const CONTROL_BASE: &str = "/tmp";
pub const CONTROL_PREFIX: &str = "mmx-ssh-";

/// How long a provision or teardown hook may take (cloud instances can be slow to start).
const HOOK_LIMIT: Duration = Duration::from_secs(30 * 60);
/// Stopping the shared connection.
const EXIT_MASTER_LIMIT: Duration = Duration::from_secs(10);

/// One host's stay in a run. Visits through one session share one SSH connection.
///
/// Use: `open` before the host's first visit, `run` once per SMT setting (one at a time: they
/// share the hardware), `close` after the last. Dropping an unclosed session closes it.
#[derive(Debug)]
pub struct HostSession {
    host: Host,
    /// Private (0700) dir holding the connection's control socket.
    control: Option<tempfile::TempDir>,
    /// Why no visit can run (a failed provision hook): each visit reports it.
    broken: Option<(InfraCause, String)>,
    /// The teardown hook is owed (the provision hook ran, or there is none to run).
    hooks: bool,
    closed: bool,
    /// Hears a teardown that failed when the session is dropped unclosed.
    sink: SharedSink,
}

impl HostSession {
    /// Start a host's stay: run its provision hook (if any). Never fails: a problem is kept and
    /// every visit reports it as `infra-error`; `close` still runs the teardown hook.
    pub fn open(host: &Host, cancel: &Cancel, sink: SharedSink) -> HostSession {
        let mut s = HostSession::without_hooks(host, sink);
        s.hooks = true;
        if s.broken.is_none() {
            if let Err(e) = run_hook("provision", host, host.provision.as_deref(), cancel) {
                s.broken = Some((InfraCause::HostSetup, e));
            }
        }
        s
    }

    /// A session that runs neither hook (for [`run_host`]).
    fn without_hooks(host: &Host, sink: SharedSink) -> HostSession {
        let mut broken = None;
        // Short and fixed: unix socket paths are limited to ~100 bytes (ssh adds a suffix).
        let control = tempfile::Builder::new()
            .prefix(CONTROL_PREFIX)
            .tempdir_in(CONTROL_BASE)
            .map_err(|e| format!("creating a private dir for the ssh control socket in /tmp: {e}"))
            .and_then(|d| {
                crate::backend::leftovers::claim(d.path())
                    .map(|()| d)
                    .map_err(|e| format!("{e:#}"))
            });
        let control = match control {
            Ok(d) => Some(d),
            Err(e) => {
                broken = Some((InfraCause::BootSetup, e));
                None
            }
        };
        HostSession {
            host: host.clone(),
            control,
            broken,
            hooks: false,
            closed: false,
            sink,
        }
    }

    /// One visit: run `req.plan` with `agent` under `smt`. The request's plan deadline bounds
    /// the visit (connect, copy, run); cleanup comes after it with its own short limit.
    pub fn run(&mut self, agent: &Path, smt: SmtSetting, req: &BootRequest) -> BootOutput {
        let infra =
            |cause, msg: String| BootOutput::infra(&req.plan, Accel::Metal, cause, msg, vec![]);
        match (&self.broken, &self.control, self.closed) {
            (Some((cause, e)), _, _) => infra(*cause, e.clone()),
            (None, _, true) => infra(
                InfraCause::Internal,
                format!("host `{}`: session already closed", self.host.name),
            ),
            (None, Some(dir), false) => visit::run(&self.host, dir.path(), agent, smt, req),
            (None, None, false) => infra(InfraCause::Internal, "no control dir".into()),
        }
    }

    /// End the stay: close the shared connection, then run the teardown hook (when `open` ran
    /// the provision step). The error is the teardown hook's.
    pub fn close(mut self) -> Result<(), String> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), String> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        if let Some(dir) = &self.control {
            // Fails harmlessly when no connection is up (never connected, or it dropped).
            let args = args::exit_master_args(&self.host, dir.path());
            let _ = step::run(&args, &[], EXIT_MASTER_LIMIT, &Cancel::new());
        }
        if self.hooks {
            run_hook(
                "teardown",
                &self.host,
                self.host.teardown.as_deref(),
                &Cancel::new(),
            )
        } else {
            Ok(())
        }
    }
}

impl Drop for HostSession {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            self.sink
                .note(Note::warning(format!("host `{}`: {e}", self.host.name)));
        }
    }
}

/// One visit on its own connection, without the provision/teardown hooks (see [`HostSession`]
/// to share one connection across a host's visits and run the hooks).
pub fn run_host(agent: &Path, host: &Host, smt: SmtSetting, req: &BootRequest) -> BootOutput {
    let mut s = HostSession::without_hooks(host, req.sink.clone());
    let out = s.run(agent, smt, req);
    let _ = s.close();
    out
}

/// Run a user hook with `sh -c` on this machine, in the matrix's directory (so `./up.sh` is the
/// matrix's). It learns the host from `MMX_HOST_NAME`, `MMX_HOST_DESTINATION` and
/// `MMX_HOST_PORT`. A provision hook returns once sshd answers.
fn run_hook(kind: &str, host: &Host, cmd: Option<&str>, cancel: &Cancel) -> Result<(), String> {
    let Some(cmd) = cmd else { return Ok(()) };
    let mut c = Command::new("sh");
    c.current_dir(&host.base_dir)
        .arg("-c")
        .arg(cmd)
        .env("MMX_HOST_NAME", &host.name)
        .env("MMX_HOST_DESTINATION", &host.destination)
        .env(
            "MMX_HOST_PORT",
            host.port.map(|p| p.to_string()).unwrap_or_default(),
        );
    let fail = |why: String, out: &step::StepOutput| {
        format!(
            "{kind} hook of host `{}` ({cmd}) {why}: {}{}",
            host.name,
            out.stdout.trim(),
            out.stderr.trim()
        )
    };
    match step::run_command(c, &[], HOOK_LIMIT, cancel) {
        Ok(o) if o.code == Some(0) => Ok(()),
        Ok(o) => Err(fail(format!("failed (exit {:?})", o.code), &o)),
        Err(step::StepError::Spawn(m)) => Err(format!("{kind} hook of host `{}`: {m}", host.name)),
        Err(step::StepError::Stopped(BootEnd::Timeout { .. }, o)) => {
            Err(fail(format!("took over {} s", HOOK_LIMIT.as_secs()), &o))
        }
        Err(step::StepError::Stopped(end, o)) => {
            Err(fail(format!("was stopped ({})", end.summary()), &o))
        }
    }
}
