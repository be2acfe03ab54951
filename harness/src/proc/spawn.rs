//! Starting a child so that it, and everything it starts, can never outlive mmx; and the
//! [`Child`] that kills the whole of it on every way out.
//!
//! Every child is the leader of a process group of its own, so a stop reaches its whole tree
//! (make's compilers, a hook's background jobs) and a terminal's Ctrl-C reaches mmx only: mmx
//! decides how each child is stopped ([`super::Stop`]).
//!
//! **The death signal.** `PR_SET_PDEATHSIG(SIGKILL)` makes the kernel kill the child the moment
//! the thread that forked it dies — including when mmx itself is killed with `kill -9`, which no
//! handler of ours can see. It has two edges, both handled here:
//!
//! - it fires when the *forking thread* exits, not the process: callers fork from the thread
//!   that watches the child and do not return before the child is reaped (the [`Child`] kills
//!   and reaps on every path, panics included), so the thread always outlives its child;
//! - mmx may die between `fork` and `prctl`: the child then checks `getppid()` against the pid
//!   mmx had before forking and exits if it was already re-parented.
//!
//! **The warden.** The death signal is not inherited across `fork`: when mmx is killed, make dies
//! but the compilers it started would run on, and a hook's `sleep 1000 &` would never end. So
//! every child gets a warden: a tiny `sh` in a group of its own, ignoring the terminal's
//! signals, that reads the child's group id and then waits on a pipe whose only writer is mmx.
//! When the child is done with (reaped, its group stopped or left to itself) mmx writes one line
//! and the warden exits; when mmx dies the pipe closes without that line and the warden kills
//! the group. A group id is not reused while any process of the group lives, so the warden (or a
//! late stop) can only hit what the child started. What is left: mmx killed in the microseconds
//! between the child's start and the warden learning its group (the child still dies by its
//! death signal), and a process that leaves the group (`setsid`, as a daemon does) on purpose.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::io::FdFlags;
use rustix::process::{Pid, Signal};

/// The warden's script. `kill -9 -G` is the spelling dash and bash both take (dash's `kill` has
/// no `--`).
const WARDEN: &str = "trap '' INT TERM HUP
read g || exit 0
read _ && exit 0
kill -9 \"-$g\" 2>/dev/null";

/// Start `cmd` as the leader of a new process group, with the death signal set, watched by a
/// warden, and with `inherit` passed to the child under their own numbers (mmx opens every
/// descriptor close-on-exec; only these lose the flag, and only in the child). The caller names
/// the numbers on the command line (`fd=N`). The caller sets stdio; `Stdio::inherit` is never
/// right for a child whose output matters.
pub fn spawn(mut cmd: Command, inherit: Vec<OwnedFd>) -> std::io::Result<Child> {
    let mut warden = Warden::start()?;
    let parent = rustix::process::getpid();
    cmd.process_group(0);
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed. It makes raw syscalls only (rustix's linux_raw backend: prctl,
    // getppid, fcntl), allocates nothing (`inherit` was built before the fork; the error is a
    // raw OS error) and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            if rustix::process::getppid() != Some(parent) {
                // mmx died before the death signal was armed: do not start at all.
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            for fd in &inherit {
                rustix::io::fcntl_setfd(fd, FdFlags::empty())?;
            }
            Ok(())
        })
    };
    // The command (and with it our copies of the inherited descriptors) is dropped on return.
    let child = cmd.spawn()?;
    let group = i32::try_from(child.id())
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| std::io::Error::other("the child has no valid pid"))?;
    warden.arm(group);
    Ok(Child {
        inner: child,
        group,
        status: None,
        stopping: false,
        warden: Some(warden),
    })
}

/// A started child and its process group. Dropping it kills the group and reaps the child,
/// whichever way the owner leaves (return, `?`, panic), unless the child ended by itself: what
/// a finished child left running (a provision hook's daemon) is its own business.
#[derive(Debug)]
pub struct Child {
    inner: std::process::Child,
    /// The child's pid, which is its group's id.
    group: Pid,
    /// The exit status, once reaped (kept: the pid may belong to another process by then).
    status: Option<ExitStatus>,
    /// A stop was begun: the whole group goes, whatever the leader does.
    stopping: bool,
    warden: Option<Warden>,
}

impl Child {
    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.inner.stdin.take()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.inner.stdout.take()
    }

    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.inner.stderr.take()
    }

    /// The exit status, if the child has exited (reaped here, once).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.inner.try_wait()?;
            if self.status.is_some() && !self.stopping {
                // It ended by itself: nothing of its group is ours to kill any more.
                self.dismiss_warden();
            }
        }
        Ok(self.status)
    }

    /// Send `sig` to the child's whole group: a step of a stop. After this the group is killed
    /// when the child is dropped, even if the child itself has exited.
    pub fn signal(&mut self, sig: Signal) {
        if self.status.is_some() && !self.stopping {
            // It ended by itself before the stop: its group is no longer ours.
            return;
        }
        self.stopping = true;
        // ESRCH: every process of the group is gone already.
        let _ = rustix::process::kill_process_group(self.group, sig);
    }

    /// SIGKILL the group and wait for the child's exit.
    pub fn kill(&mut self) -> std::io::Result<ExitStatus> {
        if self.status.is_none() || self.stopping {
            self.signal(Signal::KILL);
        }
        let status = match self.status {
            Some(s) => s,
            None => self.inner.wait()?,
        };
        self.status = Some(status);
        self.dismiss_warden();
        Ok(status)
    }

    /// Wait at most `limit` for the exit, polling.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            match self.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    fn dismiss_warden(&mut self) {
        if let Some(w) = self.warden.take() {
            w.dismiss();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The warden of one child's group (see the module's doc).
#[derive(Debug)]
struct Warden {
    process: std::process::Child,
    /// The only writer of the warden's stdin: closed by mmx's death, or after the last line.
    pipe: Option<ChildStdin>,
}

impl Warden {
    fn start() -> std::io::Result<Warden> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WARDEN)
            .arg("mmx-warden")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Not in mmx's group: whatever kills mmx's group must leave the warden its job.
            .process_group(0);
        let mut process = cmd
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("starting its warden (sh): {e}")))?;
        let pipe = process.stdin.take();
        Ok(Warden { process, pipe })
    }

    /// Tell the warden the group to kill should mmx die.
    fn arm(&mut self, group: Pid) {
        if let Some(p) = self.pipe.as_mut() {
            let _ = writeln!(p, "{}", group.as_raw_nonzero());
        }
    }

    /// The group needs no warden any more: the warden exits without killing, and is reaped.
    fn dismiss(mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(b"done\n");
        }
        let _ = self.process.wait();
    }
}

impl Drop for Warden {
    /// Dropped without a dismissal: an armed warden kills the group (nothing said it is done
    /// with), an unarmed one (the child never started) just exits.
    fn drop(&mut self) {
        if self.pipe.take().is_some() {
            let _ = self.process.wait();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
