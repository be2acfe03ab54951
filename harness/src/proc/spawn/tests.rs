//! Real children (`sh`, `sleep`): the group, the death signal, the warden, and what a stop and a
//! drop leave behind — nothing, unless the child ended by itself.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use super::*;

/// `pid (comm) state ppid pgrp …` → (state, pgrp).
fn state_and_group(pid: u32) -> Option<(String, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields[0].to_string(), fields[2].to_string()))
}

/// Whether `pid` still runs. A zombie does not: it is dead and waits for whoever adopted it
/// to reap it (in a container, PID 1 may never do so).
pub(crate) fn alive(pid: u32) -> bool {
    state_and_group(pid).is_some_and(|(s, _)| s != "Z" && s != "X")
}

/// Wait (at most 10 s, for a loaded machine) until `pid` no longer runs; false if it still does.
pub(crate) fn gone(pid: u32) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script);
    c
}

/// A child that starts `sleep 300` in the background, prints its pid and waits; returns the
/// child and the grandchild's pid.
fn with_grandchild() -> (Child, u32) {
    let mut cmd = sh("sleep 300 & echo $!; wait");
    cmd.stdout(Stdio::piped()).stdin(Stdio::null());
    let mut child = spawn(cmd, vec![]).unwrap();
    let mut line = String::new();
    BufReader::new(child.take_stdout().unwrap())
        .read_line(&mut line)
        .unwrap();
    let grandchild: u32 = line.trim().parse().unwrap();
    assert!(alive(grandchild));
    (child, grandchild)
}

#[test]
fn an_inherited_descriptor_reaches_the_child_under_its_number() {
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let n = std::os::fd::AsRawFd::as_raw_fd(&theirs);
    let child = spawn(
        sh(&format!("echo through-{n} >&{n}")),
        vec![OwnedFd::from(theirs)],
    );
    let mut g = child.unwrap();
    assert!(g.wait_for(Duration::from_secs(10)).unwrap().success());
    let mut got = String::new();
    ours.read_to_string(&mut got).unwrap();
    assert_eq!(got, format!("through-{n}\n"));
}

#[test]
fn the_child_dies_with_the_thread_that_started_it_and_has_its_own_group() {
    // The thread starts `sleep`, forgets it (no guard) and ends: the death signal must kill
    // it, as it would if mmx were killed.
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
    assert!(gone(pid), "sleep {pid} outlived its thread");
    let _ = rustix::process::waitpid(
        Pid::from_raw(pid as i32),
        rustix::process::WaitOptions::empty(),
    );
}

#[test]
fn dropping_the_child_kills_and_reaps_its_whole_group() {
    let (child, grandchild) = with_grandchild();
    let pid = child.id();
    drop(child);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(
        gone(grandchild),
        "the background sleep {grandchild} outlived the drop"
    );
}

#[test]
fn a_stop_reaches_the_whole_group_even_after_the_leader_died() {
    let (mut child, grandchild) = with_grandchild();
    // SIGTERM: the shell dies at once; the background sleep too (same group).
    child.signal(Signal::TERM);
    let status = child.wait_for(Duration::from_secs(10)).unwrap();
    assert!(!status.success());
    assert!(
        gone(grandchild),
        "the background sleep {grandchild} survived the stop"
    );
}

#[test]
fn the_warden_kills_the_group_when_mmx_is_gone() {
    // mmx killed = the warden's pipe closes without the last line. Close it so here, by
    // dropping the armed warden, while the child and its background sleep run.
    let (mut child, grandchild) = with_grandchild();
    let warden = child.warden.take().unwrap();
    let warden_pid = warden.process.id();
    drop(warden);
    assert!(gone(grandchild), "the warden left {grandchild} running");
    assert!(child.wait_for(Duration::from_secs(10)).is_some());
    assert!(!alive(warden_pid));
}

#[test]
fn a_child_that_ended_by_itself_keeps_what_it_started() {
    // A provision hook may leave a daemon behind on purpose: neither the drop nor the warden
    // touches it once the hook exited by itself.
    let mut cmd = sh("sleep 300 & echo $!");
    cmd.stdout(Stdio::piped());
    let mut child = spawn(cmd, vec![]).unwrap();
    let mut line = String::new();
    BufReader::new(child.take_stdout().unwrap())
        .read_line(&mut line)
        .unwrap();
    let daemon: u32 = line.trim().parse().unwrap();
    assert!(child.wait_for(Duration::from_secs(10)).unwrap().success());
    drop(child);
    assert!(alive(daemon), "a finished child's daemon was killed");
    let _ = rustix::process::kill_process(Pid::from_raw(daemon as i32).unwrap(), Signal::KILL);
}
