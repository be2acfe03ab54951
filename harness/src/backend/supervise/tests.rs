//! The supervisor against real processes (`sh`, `cat`, `yes`): the bounds, the watchdogs, the
//! stop styles and the stream, each in well under a second.

use std::time::{Duration, Instant};

use super::*;
use crate::test_support::{hello_line, pass_line, tiny_plan};

const LONG: Duration = Duration::from_secs(60);

fn deadlines(boot: Duration, silence: Duration, plan: Duration) -> Deadlines {
    Deadlines {
        boot,
        silence,
        plan,
    }
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script);
    c
}

fn spec(command: Command, channels: Vec<Channel>, stop: Stop, d: Deadlines) -> Spec {
    Spec {
        command,
        channels,
        stdin: Stdin::Hold,
        stop,
        deadlines: d,
        cancel: Cancel::new(),
    }
}

/// Collects every line, by channel.
#[derive(Default)]
struct Record(Vec<(String, String)>);

impl Observer for Record {
    fn line(&mut self, ch: &ChannelInfo, line: &Line, _: &View) -> Option<BootEnd> {
        self.0.push((ch.name.clone(), line.text.clone()));
        None
    }
}

#[test]
fn lines_reach_the_stream_and_the_observer_and_a_clean_exit_is_no_stop() {
    let script = format!(
        "printf '%s\\n' '{}' '{}'; echo oops >&2",
        hello_line("k"),
        pass_line(0, "a")
    );
    let s = spec(
        sh(&script),
        vec![
            Channel::stdout("results", Role::Results, None),
            Channel::stderr("agent", Role::Diagnostics, None),
        ],
        Stop::Kill,
        deadlines(LONG, LONG, LONG),
    );
    let mut rec = Record::default();
    let out = run(s, Some(ResultStream::new(&tiny_plan(&["a"]))), &mut rec).unwrap();
    assert_eq!(out.stopped, None);
    assert!(out.status.unwrap().success());
    let stream = out.stream.as_ref().unwrap();
    assert!(stream.hello.is_some() && stream.results()[0].is_some());
    assert!(rec.0.contains(&("agent".into(), "oops".into())));
    assert_eq!(out.channels()["results"].lines, 2);
}

#[test]
fn a_broken_contract_stops_the_process_at_once_keeping_earlier_results() {
    let script = format!(
        "printf '%s\\n' '{h}' '{r}' '{r}' '{b}'; exec sleep 30",
        h = hello_line("k"),
        r = pass_line(0, "a"),
        b = pass_line(1, "b"),
    );
    let t = Instant::now();
    let out = run(
        spec(
            sh(&script),
            vec![Channel::stdout("results", Role::Results, None)],
            Stop::Term {
                grace: Duration::from_secs(5),
            },
            deadlines(LONG, LONG, LONG),
        ),
        Some(ResultStream::new(&tiny_plan(&["a", "b"]))),
        &mut Quiet,
    )
    .unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(
            &out.stopped,
            Some(BootEnd::Infra { cause: InfraCause::ProtocolViolation, message }) if message.contains("duplicate")
        ),
        "{:?}",
        out.stopped
    );
    let stream = out.stream.unwrap();
    assert!(stream.results()[0].is_some());
    assert!(
        stream.results()[1].is_none(),
        "nothing after the violation counts, even in the same read"
    );
}

#[test]
fn a_flood_ends_the_boot_and_stops_reading_with_a_bounded_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let out = run(
        spec(
            sh("exec yes 'a line of output'"),
            vec![Channel::stdout(
                "agent",
                Role::Diagnostics,
                Some(File::create(&log).unwrap()),
            )],
            Stop::Kill,
            deadlines(LONG, LONG, LONG),
        ),
        None,
        &mut Quiet,
    )
    .unwrap();
    assert!(
        matches!(
            out.stopped,
            Some(BootEnd::Infra {
                cause: InfraCause::OutputFlood,
                ..
            })
        ),
        "{:?}",
        out.stopped
    );
    let stats = &out.channels()["agent"];
    assert!(stats.flooded);
    assert_eq!(stats.bytes, DIAGNOSTICS_MAX);
    let len = std::fs::metadata(&log).unwrap().len();
    assert!(len <= DIAGNOSTICS_MAX + 200, "{len}");
    let text = std::fs::read(&log).unwrap();
    assert!(text.ends_with(b"on this channel]\n"));
}

#[test]
fn an_endless_line_is_cut_once_and_counted() {
    let out = run(
        spec(
            sh("head -c 3000000 /dev/zero | tr '\\0' x; echo; echo after"),
            vec![Channel::stdout("results", Role::Results, None)],
            Stop::Kill,
            deadlines(LONG, LONG, LONG),
        ),
        Some(ResultStream::new(&tiny_plan(&[]))),
        &mut Quiet,
    )
    .unwrap();
    let stats = &out.channels()["results"];
    assert_eq!(stats.lines_cut, 1);
    assert_eq!(stats.lines, 2, "the cut line and `after`");
    assert_eq!(out.tail("results").last(), Some(&"after"));
}

#[test]
fn a_result_line_over_the_limit_ends_the_boot_and_is_not_taken() {
    // A valid result for item 1, padded with spaces past the limit: cut there, its beginning
    // would parse. Then a done that must not count either.
    let pad = RESULT_LINE_MAX + 10;
    let script = format!(
        "printf '%s\\n' '{h}' '{r}'; printf '%s' '{b}'; head -c {pad} /dev/zero | tr '\\0' ' '; \
         printf '\\n%s\\n' '{d}'; exec sleep 30",
        h = hello_line("k"),
        r = pass_line(0, "a"),
        b = pass_line(1, "b"),
        d = protocol::encode_line(&protocol::AgentEvent::Done { uptime_ms: 1 }),
    );
    let out = run(
        spec(
            sh(&script),
            vec![Channel::stdout("results", Role::Results, None)],
            Stop::Term {
                grace: Duration::from_secs(5),
            },
            deadlines(LONG, LONG, LONG),
        ),
        Some(ResultStream::new(&tiny_plan(&["a", "b"]))),
        &mut Quiet,
    )
    .unwrap();
    assert!(
        matches!(
            &out.stopped,
            Some(BootEnd::Infra { cause: InfraCause::ProtocolViolation, message }) if message.contains("too-long")
        ),
        "{:?}",
        out.stopped
    );
    assert_eq!(out.channels()["results"].lines_cut, 1);
    let stream = out.stream.unwrap();
    assert_eq!(
        stream.violations[0].kind,
        crate::results::ViolationKind::TooLong
    );
    assert!(stream.results()[0].is_some(), "the result before it stays");
    assert!(
        stream.results()[1].is_none(),
        "the padded result is not taken"
    );
    assert!(!stream.is_done());
}

#[test]
fn silence_and_boot_deadlines_fire() {
    let short = Duration::from_millis(300);
    let out = run(
        spec(
            sh(&format!("echo '{}'; exec sleep 30", hello_line("k"))),
            vec![Channel::stdout("results", Role::Results, None)],
            Stop::Kill,
            deadlines(short, short, LONG),
        ),
        Some(ResultStream::new(&tiny_plan(&[]))),
        &mut Quiet,
    )
    .unwrap();
    assert!(
        matches!(
            out.stopped,
            Some(BootEnd::Timeout {
                deadline: Deadline::Silence,
                ..
            })
        ),
        "{:?}",
        out.stopped
    );
    // No hello: the boot deadline, though lines keep coming.
    let out = run(
        spec(
            sh("while :; do echo tick; sleep 0.05; done"),
            vec![Channel::stdout("results", Role::Results, None)],
            Stop::Kill,
            deadlines(short, LONG, LONG),
        ),
        Some(ResultStream::new(&tiny_plan(&[]))),
        &mut Quiet,
    )
    .unwrap();
    assert!(
        matches!(
            &out.stopped,
            Some(BootEnd::Timeout {
                deadline: Deadline::Boot,
                ..
            })
        ),
        "{:?}",
        out.stopped
    );
}

#[test]
fn cancellation_goes_through_the_same_stop() {
    let s = spec(
        sh("exec sleep 30"),
        vec![],
        Stop::Kill,
        deadlines(LONG, LONG, LONG),
    );
    s.cancel.cancel();
    let out = run(s, None, &mut Quiet).unwrap();
    assert!(matches!(
        out.stopped,
        Some(BootEnd::Infra {
            cause: InfraCause::Cancelled,
            ..
        })
    ));
}

#[test]
fn term_stops_are_graceful_and_reading_goes_on_while_stopping() {
    let mut rec = Record::default();
    let out = run(
        spec(
            sh("trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 0.05; done"),
            vec![Channel::stdout("agent", Role::Diagnostics, None)],
            Stop::Term {
                grace: Duration::from_secs(5),
            },
            deadlines(LONG, Duration::from_millis(300), LONG),
        ),
        None,
        &mut rec,
    )
    .unwrap();
    assert!(out.stopped.is_some());
    assert!(
        rec.0.contains(&("agent".into(), "bye".into())),
        "{:?}",
        rec.0
    );
    assert!(out.status.unwrap().success(), "it exited by itself");
}

#[test]
fn close_stdin_stops_a_reader_of_stdin_and_its_last_words_arrive() {
    let mut rec = Record::default();
    let out = run(
        spec(
            sh("echo up; cat >/dev/null; echo stdin-closed"),
            vec![Channel::stdout("results", Role::Results, None)],
            Stop::CloseStdin {
                grace: Duration::from_secs(5),
            },
            deadlines(LONG, Duration::from_millis(300), LONG),
        ),
        Some(ResultStream::new(&tiny_plan(&[]))),
        &mut rec,
    )
    .unwrap();
    assert!(
        rec.0.iter().any(|(_, l)| l == "stdin-closed"),
        "{:?}",
        rec.0
    );
    assert!(out.status.unwrap().success());
}

#[test]
fn fed_and_held_stdin_is_written_then_open_until_the_stop() {
    let mut rec = Record::default();
    let mut s = spec(
        sh("read -r first; echo \"got $first\"; cat >/dev/null; echo stdin-closed"),
        vec![Channel::stdout("results", Role::Results, None)],
        Stop::CloseStdin {
            grace: Duration::from_secs(5),
        },
        deadlines(LONG, Duration::from_millis(300), LONG),
    );
    s.stdin = Stdin::FeedAndHold(b"token\n".to_vec());
    let out = run(s, Some(ResultStream::new(&tiny_plan(&[]))), &mut rec).unwrap();
    let lines: Vec<&str> = rec.0.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(lines, ["got token", "stdin-closed"]);
    assert!(
        matches!(
            out.stopped,
            Some(BootEnd::Timeout {
                deadline: Deadline::Silence,
                ..
            })
        ),
        "stdin stayed open until the stop: {:?}",
        out.stopped
    );
}

#[test]
fn fed_stdin_and_an_inherited_socket_carry_data() {
    let (ch, fd) = Channel::socket("console", Role::Console, None).unwrap();
    let mut s = spec(
        sh(&format!("cat >&{fd}")),
        vec![ch],
        Stop::Kill,
        deadlines(LONG, LONG, LONG),
    );
    let input: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    s.stdin = Stdin::Feed(input);
    let out = run(s, None, &mut Quiet).unwrap();
    assert_eq!(out.stopped, None);
    assert_eq!(out.channels()["console"].lines, 20_000);
    assert_eq!(out.tail("console").last(), Some(&"19999"));
}

#[test]
fn a_stop_takes_what_the_process_forked_too() {
    // A hook past its limit: its shell and the child it forked both go.
    let out = run(
        spec(
            sh("sleep 300 & echo $!; wait"),
            vec![Channel::stdout("stdout", Role::Diagnostics, None)],
            Stop::Term {
                grace: STEP_STOP_GRACE,
            },
            deadlines(LONG, Duration::from_millis(300), LONG),
        ),
        None,
        &mut Quiet,
    )
    .unwrap();
    assert!(matches!(out.stopped, Some(BootEnd::Timeout { .. })));
    let forked: u32 = out.tail("stdout")[0].parse().unwrap();
    let running = std::fs::read_to_string(format!("/proc/{forked}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    });
    assert!(!running, "the forked sleep {forked} outlived the stop");
}
