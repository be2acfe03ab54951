//! What a run tells the world, as events: it started, a boot started or ended (with its cells'
//! records), a kernel build moved on, a note, a line of a command's answer, it ended. A [`Bus`]
//! hands each event to its [`Subscriber`]s in order: the terminal (progress, notes, the
//! summary), the run.json writer ([`RunJson`]), the reports with junit, and the step summary.
//! The run never prints and never knows who listens.
//!
//! The bus is also the [`Sink`] the rooms below `run` report into (kernels, runtimes,
//! backends): what they say becomes [`Event::Note`], [`Event::Build`] or [`Event::Answer`].
//! Every event goes to every subscriber under one lock, so lines from worker threads never
//! interleave and a boot's end reaches the run.json writer and the terminal together.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cell::BootKey;
use crate::events::{KernelBuild, Note, SharedSink, Sink};
use crate::results::{BootRecord, CellRecord, RunDir, RunRecord};

/// One thing that happened. Events borrow: the run keeps its record, subscribers see it.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The boots are about to start; run.json is in `dir` already.
    RunStarted {
        cells: usize,
        boots: usize,
        jobs: usize,
        dir: &'a Path,
    },
    /// A boot (a guest, the local agent, a host visit) starts.
    BootStarted { key: &'a BootKey },
    /// A boot ended and was folded: its record, its cells' records, how long it took, and the
    /// run so far (this boot included), for whoever keeps run.json.
    BootEnded {
        boot: &'a BootRecord,
        cells: &'a [CellRecord],
        took: Duration,
        run: &'a RunRecord,
    },
    /// A kernel build moved on.
    Build(&'a KernelBuild),
    /// Something the user should know.
    Note(&'a Note),
    /// A line of a command's answer (stdout).
    Answer(&'a str),
    /// Every boot has ended (or was never started: Ctrl-C); `run` is final, sorted and written.
    RunEnded { run: &'a RunRecord, dir: &'a RunDir },
}

/// Acts on events. Called under the bus's lock, one event at a time, in the bus's order.
pub trait Subscriber: Send {
    /// Act on `event`. A note when acting failed (a file not written): the bus hands it to
    /// every other subscriber at once, before the event goes on to the next one.
    fn on(&mut self, event: &Event<'_>) -> Option<Note>;
}

/// The run's subscribers, in order.
pub struct Bus {
    subscribers: Mutex<Vec<Box<dyn Subscriber>>>,
}

impl Bus {
    /// A bus that hands every event to `subscribers`, first to last.
    pub fn new(subscribers: Vec<Box<dyn Subscriber>>) -> Bus {
        Bus {
            subscribers: Mutex::new(subscribers),
        }
    }

    /// Add a subscriber after those there.
    pub fn subscribe(&self, subscriber: Box<dyn Subscriber>) {
        self.lock().push(subscriber);
    }

    /// Hand `event` to every subscriber, first to last.
    pub fn emit(&self, event: &Event<'_>) {
        let mut subscribers = self.lock();
        for i in 0..subscribers.len() {
            let Some(note) = subscribers[i].on(event) else {
                continue;
            };
            // A subscriber failing to act on another's failure has nobody left to tell.
            for (_, s) in subscribers.iter_mut().enumerate().filter(|(j, _)| *j != i) {
                let _ = s.on(&Event::Note(&note));
            }
        }
    }

    /// This bus as a sink for the rooms below `run`, to keep and share between threads.
    pub fn sink(self: &Arc<Bus>) -> SharedSink {
        SharedSink::new(Arc::clone(self) as Arc<dyn Sink>)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Box<dyn Subscriber>>> {
        // A subscriber that panicked left nothing half-done that others depend on.
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sink for Bus {
    fn note(&self, note: Note) {
        self.emit(&Event::Note(&note));
    }

    fn build(&self, build: KernelBuild) {
        self.emit(&Event::Build(&build));
    }

    fn answer(&self, text: &str) {
        self.emit(&Event::Answer(text));
    }
}

/// run.json, written again after every boot (a crash or Ctrl-C later loses nothing gathered).
pub struct RunJson {
    path: PathBuf,
}

impl RunJson {
    pub fn new(dir: &RunDir) -> RunJson {
        RunJson {
            path: dir.run_json(),
        }
    }
}

impl Subscriber for RunJson {
    fn on(&mut self, event: &Event<'_>) -> Option<Note> {
        let Event::BootEnded { run, .. } = event else {
            return None;
        };
        let e = run.write(&self.path).err()?;
        Some(Note::warning(format!("could not write run.json: {e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it saw, as text; fails when told to.
    struct Seen {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        fail_on_answer: bool,
    }

    impl Subscriber for Seen {
        fn on(&mut self, event: &Event<'_>) -> Option<Note> {
            let what = match event {
                Event::Note(n) => format!("note {}", n.text()),
                Event::Answer(a) => format!("answer {a}"),
                other => format!("{other:?}"),
            };
            self.log
                .lock()
                .expect("log")
                .push(format!("{}: {what}", self.name));
            (self.fail_on_answer && matches!(event, Event::Answer(_)))
                .then(|| Note::warning(format!("{} could not act", self.name)))
        }
    }

    #[test]
    fn a_failing_subscriber_is_heard_by_the_others_before_the_event_goes_on() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = |name, fail_on_answer| -> Box<dyn Subscriber> {
            Box::new(Seen {
                name,
                log: Arc::clone(&log),
                fail_on_answer,
            })
        };
        let bus = Arc::new(Bus::new(vec![seen("a", false), seen("b", true)]));
        bus.subscribe(seen("c", false));
        let sink = bus.sink();
        sink.note(Note::info("first"));
        sink.answer("row");
        let log = log.lock().expect("log").clone();
        assert_eq!(
            log,
            [
                "a: note first",
                "b: note first",
                "c: note first",
                "a: answer row",
                "b: answer row",
                "a: note b could not act",
                "c: note b could not act",
                "c: answer row",
            ]
        );
    }
}
