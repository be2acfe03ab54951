//! SIGINT/SIGTERM/SIGHUP: the handler only sets a flag (the one thing a handler may safely do);
//! every long loop checks it (layer writing, container layout, the helper maker, the workers
//! before each container, lock-benchmark points and windows), so the agent cleans up and exits
//! non-zero within about a container's start of the signal. SIGHUP counts as a stop because
//! people run the agent over `ssh -t`, where a lost connection hangs the terminal up.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

/// `sigaction(SIGINT|SIGTERM|SIGHUP, {on_signal, SA_RESTART})`.
pub fn install() -> super::SysResult<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that only stores to atomics.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Err(super::SysError::from_io(|| format!("sigaction({sig})"), &e));
        }
    }
    Ok(())
}

/// Whether a stop was requested (signal, or stdin EOF with `--exit-on-stdin-eof`).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Ask every worker to stop, as SIGINT does.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// The signal that asked for the stop, if one did.
pub fn stop_signal() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}
