//! [`Cancel`]: the one flag that asks every process mmx runs to stop — a boot's QEMU or agent, a
//! kernel's `make`, a runtime's `go build`, a hook. Ctrl-C sets it; whoever watches a process
//! checks it every tick and stops the process its own way ([`super::Stop`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Set by Ctrl-C (SIGINT/SIGTERM) or by the code that owns the work: processes watched with it
/// are stopped, their owners clean up and return what they have.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Install SIGINT/SIGTERM handlers that set this flag (a second Ctrl-C still kills: the
    /// handlers are registered with signal-hook's conditional-shutdown pattern).
    pub fn install_signal_handlers(&self) -> std::io::Result<()> {
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
