//! Starting a supervised process so that it can never outlive mmx, and the guard that kills it
//! on every way out of the supervisor.
//!
//! **Why `PR_SET_PDEATHSIG` and not a watchdog process.** The kernel delivers SIGKILL to the child
//! the moment the thread that forked it dies — including when mmx itself is killed with
//! `kill -9`, which no handler of ours can see. A watchdog process reaping a process group would
//! need a second process per run, its own death handling, and would miss a child that changes
//! group. The death signal has two edges, both handled here:
//!
//! - it fires when the *forking thread* exits, not the process: the supervisor forks from the
//!   thread that runs its loop and does not return before the child is reaped (the [`Guard`]
//!   kills and reaps on every path, panics included), so the thread always outlives its child;
//! - mmx may die between `fork` and `prctl`: the child then checks `getppid()` against the pid
//!   mmx had before forking and exits if it was already re-parented.
//!
//! It is not inherited across `fork`: a child's own children (QEMU has none; the agent's helpers
//! set their own; ssh's shared connection master lingers at most `ControlPersist`) are theirs to
//! handle. Every child also gets its own process group, so a terminal's Ctrl-C reaches mmx only
//! and mmx decides how each child is stopped ([`super::Stop`]).

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use rustix::io::FdFlags;
use rustix::process::{Pid, Signal};

/// Start `cmd` with the death signal set and `inherit` passed to the child under their own
/// numbers (mmx opens every descriptor close-on-exec; only these lose the flag, and only in
/// the child). The caller names the numbers on the command line (`fd=N`).
pub fn spawn(mut cmd: Command, inherit: Vec<OwnedFd>) -> std::io::Result<Child> {
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
    cmd.spawn()
}

/// Owns a started child: kills and reaps it when dropped, whichever way the supervisor leaves
/// (return, `?`, panic). The exit status, once seen, is kept.
#[derive(Debug)]
pub struct Guard {
    child: Child,
    status: Option<ExitStatus>,
}

impl Guard {
    pub fn new(child: Child) -> Guard {
        Guard {
            child,
            status: None,
        }
    }

    /// The exit status, if the child has exited (reaped here, once).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Send `sig` unless the child was reaped (its pid may belong to another process by then).
    pub fn signal(&mut self, sig: Signal) {
        if self.status.is_some() {
            return;
        }
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// SIGKILL and wait for the exit.
    pub fn kill(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let _ = self.child.kill();
        let s = self.child.wait()?;
        self.status = Some(s);
        Ok(s)
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

    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn an_inherited_descriptor_reaches_the_child_under_its_number() {
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let n = std::os::fd::AsRawFd::as_raw_fd(&theirs);
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("echo through-{n} >&{n}"));
        let child = spawn(cmd, vec![OwnedFd::from(theirs)]).unwrap();
        let mut g = Guard::new(child);
        assert!(g.wait_for(Duration::from_secs(10)).unwrap().success());
        let mut got = String::new();
        ours.read_to_string(&mut got).unwrap();
        assert_eq!(got, format!("through-{n}\n"));
    }

    /// `pid (comm) state ppid pgrp …` → (state, pgrp).
    fn state_and_group(pid: u32) -> Option<(String, String)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some((fields[0].to_string(), fields[2].to_string()))
    }

    #[test]
    fn the_child_dies_with_the_thread_that_started_it_and_has_its_own_group() {
        // The thread starts `sleep`, forgets it (no guard) and ends: the death signal must
        // kill it, as it would if mmx were killed.
        let pid = std::thread::spawn(|| {
            let mut c = Command::new("sleep");
            c.arg("300");
            let child = spawn(c, vec![]).unwrap();
            let pid = child.id();
            let (_, group) = state_and_group(pid).unwrap();
            assert_eq!(group, pid.to_string(), "own process group");
            std::mem::forget(child);
            pid
        })
        .join()
        .unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        // Killed and not yet reaped: a zombie (we are still its parent).
        while state_and_group(pid).is_some_and(|(s, _)| s != "Z") {
            assert!(Instant::now() < until, "sleep {pid} outlived its thread");
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = rustix::process::waitpid(
            Pid::from_raw(pid as i32),
            rustix::process::WaitOptions::empty(),
        );
    }

    #[test]
    fn dropping_the_guard_kills_and_reaps() {
        let child = spawn(
            {
                let mut c = Command::new("sleep");
                c.arg("300");
                c
            },
            vec![],
        )
        .unwrap();
        let pid = child.id();
        drop(Guard::new(child));
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
