//! Starting a child program that must not outlive the thread that started it: a runtime under
//! test (`mounts::runtime`) is one per worker thread, and a worker that ends (or an agent that is
//! killed) must take its runtime along, whatever state the runtime is in.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// `prctl(PR_SET_PDEATHSIG, SIGKILL)` in the child before it execs: the kernel kills it when the
/// *thread* that spawned it exits (a worker thread, by design), or when the agent dies.
pub fn die_with_spawning_thread(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and makes one async-signal-safe system
    // call (prctl), touching no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
