//! [`Run`] against real commands: output and status, stdin, the deadline and the cancellation
//! (taking the whole group), and the bounds.

use std::time::Duration;

use super::*;
use crate::proc::spawn::tests::gone;

const LONG: Duration = Duration::from_secs(60);

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script);
    c
}

/// The pid a script printed on its first line.
fn first_pid(out: &Partial) -> u32 {
    out.stdout.lines().next().unwrap().trim().parse().unwrap()
}

#[test]
fn output_status_and_stdin() {
    let out = Run::new(sh("tr a-z A-Z; echo err >&2; exit 3"), LONG)
        .stdin(b"plan\nagent")
        .run()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, "PLAN\nAGENT\n");
    assert_eq!(out.stderr, "err\n");
    assert_eq!(out.text(), "PLAN\nAGENT\nerr\n");
    let out = Run::new(sh("echo one; echo two >&2; echo three"), LONG)
        .merge_stderr()
        .run()
        .unwrap();
    assert_eq!(out.stdout, "one\ntwo\nthree\n");
}

#[test]
fn a_stream_reaches_stdin_whole() {
    // 5 MiB: many times a pipe's buffer, so the loop refills and waits for the reader.
    let data: Vec<u8> = (0..5u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut reader = &data[..];
    let out = Run::new(sh("wc -c"), LONG)
        .stdin_from(&mut reader)
        .run()
        .unwrap();
    assert_eq!(out.stdout.trim(), (5u32 << 20).to_string());
}

#[test]
fn past_its_deadline_the_whole_group_is_stopped() {
    let err = Run::new(sh("sleep 300 & echo $!; wait"), Duration::from_millis(300))
        .run()
        .unwrap_err();
    let RunError::TimedOut { output, .. } = &err else {
        panic!("{err:?}")
    };
    let grandchild = first_pid(output);
    // The signal reaches the whole group at once; the grandchild's death is asynchronous.
    assert!(gone(grandchild), "sleep {grandchild} outlived the stop");
}

#[test]
fn a_cancellation_stops_it_and_says_so() {
    let cancel = Cancel::new();
    cancel.cancel();
    let err = Run::cancellable(sh("exec sleep 300"), &cancel)
        .run()
        .unwrap_err();
    assert!(matches!(err, RunError::Cancelled { .. }), "{err:?}");
}

#[test]
fn a_flood_is_stopped_and_lines_are_bounded() {
    let bounds = Bounds {
        max_line: 10,
        max_bytes: 1 << 20,
    };
    let err = Run::new(sh("exec yes"), LONG)
        .bounds(bounds)
        .run()
        .unwrap_err();
    let RunError::Flooded { stream, output, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*stream, Stream::Stdout);
    assert!(output.stdout.len() <= 1 << 20);
    let out = Run::new(sh("printf '%s\\n' 0123456789abcdef short"), LONG)
        .bounds(bounds)
        .run()
        .unwrap();
    assert_eq!(out.stdout, "0123456789\nshort\n", "cut at 10 bytes");
}

#[test]
fn lines_go_to_the_callback_and_only_the_tail_is_kept() {
    let mut seen = Vec::new();
    let mut f = |s: Stream, l: &Line| seen.push((s, l.text.clone()));
    let out = Run::new(sh("seq 1 100; echo oops >&2"), LONG)
        .on_line(&mut f)
        .run()
        .unwrap();
    assert_eq!(seen.len(), 101);
    assert!(seen.contains(&(Stream::Stderr, "oops".to_string())));
    assert!(out.stdout.ends_with("\n100\n") && !out.stdout.starts_with("1\n"));
    assert_eq!(out.stderr, "oops\n");
}

#[test]
fn a_missing_program_cannot_start() {
    let err = Run::new(Command::new("/nonexistent/tool"), LONG)
        .run()
        .unwrap_err();
    assert!(
        matches!(&err, RunError::Spawn { program, .. } if program == "/nonexistent/tool"),
        "{err:?}"
    );
}
