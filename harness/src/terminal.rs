//! The terminal: with `main`, the one place mmx prints. A [`Subscriber`] of every command's
//! events: a run's start line and one line per boot (under a bar when stderr is a terminal,
//! plain lines otherwise, so CI logs and pipes stay readable), a kernel build's bar or its line
//! a minute, every note as `mmx: …` on stderr, a command's answer on stdout, and, when a run
//! ends, where its results are and the summary ([`crate::summary`]) or run.json itself.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use protocol::Outcome;

use crate::events::{BuildPhase, KernelBuild, Note};
use crate::report::Written;
use crate::results::{BootEnd, BootRecord, CellRecord, RunDir, RunRecord};
use crate::run::{Event, Subscriber};

/// How often a build without a bar says it is alive.
const BUILD_LINE_EVERY: Duration = Duration::from_secs(60);

/// What ends a run's output on the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The summary; `verbose` adds the full tables.
    Summary { verbose: bool },
    /// run.json on stdout (`--json`).
    Json,
}

/// The terminal's state: the run's bar, the builds under way.
pub struct Terminal {
    ending: Ending,
    /// stderr is a terminal: bars; otherwise plain lines.
    tty: bool,
    run: Option<RunShown>,
    builds: BTreeMap<String, BuildShown>,
}

/// A run in progress.
struct RunShown {
    total: usize,
    done: usize,
    running: usize,
    bar: Option<ProgressBar>,
}

/// A kernel build in progress.
struct BuildShown {
    bar: Option<ProgressBar>,
    expected: Option<u64>,
    steps: u64,
    current: String,
    start: Instant,
    last_line: Instant,
}

impl Terminal {
    /// The terminal of a command that is not `mmx run` (its ending is never reached).
    pub fn new() -> Terminal {
        Terminal::ending_with(Ending::Summary { verbose: false })
    }

    /// The terminal of `mmx run`, ending with `ending`.
    pub fn ending_with(ending: Ending) -> Terminal {
        Terminal {
            ending,
            tty: std::io::stderr().is_terminal(),
            run: None,
            builds: BTreeMap::new(),
        }
    }

    /// The bar lines are printed above, when one is drawn.
    fn bar(&self) -> Option<&ProgressBar> {
        self.run
            .as_ref()
            .and_then(|r| r.bar.as_ref())
            .or_else(|| self.builds.values().find_map(|b| b.bar.as_ref()))
    }

    /// One line on stderr, above the bar when there is one.
    fn say(&self, line: &str) {
        match self.bar() {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// The command's answer on stdout, with the bar out of the way while it prints.
    fn answer(&self, text: &str) {
        match self.bar() {
            Some(bar) => bar.suspend(|| println!("{text}")),
            None => println!("{text}"),
        }
    }

    fn note(&self, note: &Note) {
        self.say(&format!("mmx: {}", note.text()));
    }

    fn run_started(&mut self, cells: usize, boots: usize, jobs: usize, dir: &std::path::Path) {
        self.say(&format!(
            "mmx: {cells} cells in {boots} boots, {jobs} at a time → {}",
            dir.display()
        ));
        let bar = self.tty.then(|| {
            let bar = ProgressBar::new(boots as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} boots ({msg}), eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        self.run = Some(RunShown {
            total: boots,
            done: 0,
            running: 0,
            bar,
        });
    }

    fn boot_started(&mut self) {
        if let Some(run) = &mut self.run {
            run.running += 1;
            if let Some(bar) = &run.bar {
                bar.set_message(format!("{} running", run.running));
            }
        }
    }

    /// `[  3/12] qemu/debian-6.12/1s2c1t/xfs  4 pass, 1 unsupported (tcg, 48.2 s)`.
    fn boot_ended(&mut self, boot: &BootRecord, cells: &[CellRecord], took: Duration) {
        let Some(run) = &mut self.run else { return };
        run.done += 1;
        run.running = run.running.saturating_sub(1);
        let mut counts: BTreeMap<Outcome, usize> = BTreeMap::new();
        for c in cells {
            *counts.entry(c.outcome).or_default() += 1;
        }
        let summary: Vec<String> = counts.iter().map(|(o, n)| format!("{n} {o}")).collect();
        let end = match &boot.end {
            BootEnd::Completed => String::new(),
            other => format!(" — {}", other.summary()),
        };
        let line = format!(
            "[{:>3}/{}] {}  {} ({}, {:.1} s){end}",
            run.done,
            run.total,
            boot.key,
            summary.join(", "),
            boot.accel.as_str(),
            took.as_secs_f64()
        );
        if let Some(bar) = &run.bar {
            bar.inc(1);
            bar.set_message(format!("{} running", run.running));
        }
        self.say(&line);
    }

    fn build(&mut self, b: &KernelBuild) {
        match &b.phase {
            BuildPhase::Started { expected_steps } => {
                // One bar at a time: inside a run (its bar owns the terminal) or beside another
                // build, a build says it is alive in lines.
                let bar = (self.tty && self.bar().is_none()).then(|| build_bar(*expected_steps));
                if bar.is_none() {
                    self.say(&format!(
                        "mmx: kernel {}: building (make output goes to the build log)",
                        b.kernel
                    ));
                }
                self.builds.insert(
                    b.kernel.clone(),
                    BuildShown {
                        bar,
                        expected: *expected_steps,
                        steps: 0,
                        current: String::new(),
                        start: Instant::now(),
                        last_line: Instant::now(),
                    },
                );
            }
            BuildPhase::Step { steps, target } => {
                let Some(shown) = self.builds.get_mut(&b.kernel) else {
                    return;
                };
                shown.steps = *steps;
                shown.current.clone_from(target);
                if let Some(bar) = &shown.bar {
                    if bar.length().is_some_and(|l| *steps > l) {
                        bar.set_length(*steps);
                    }
                    bar.set_position(*steps);
                    bar.set_message(format!("{}: {target}", b.kernel));
                    return;
                }
                if shown.last_line.elapsed() < BUILD_LINE_EVERY {
                    return;
                }
                shown.last_line = Instant::now();
                let of = shown
                    .expected
                    .map(|e| format!(" of ~{e}"))
                    .unwrap_or_default();
                let line = format!(
                    "mmx: kernel {}: building, {} steps{of}, {}s, at {}",
                    b.kernel,
                    shown.steps,
                    shown.start.elapsed().as_secs(),
                    shown.current
                );
                self.say(&line);
            }
            BuildPhase::Finished { .. } => {
                if let Some(bar) = self.builds.remove(&b.kernel).and_then(|s| s.bar) {
                    bar.finish_and_clear();
                }
            }
        }
    }

    fn run_ended(&mut self, run: &RunRecord, dir: &RunDir) {
        if let Some(bar) = self.run.take().and_then(|r| r.bar) {
            bar.finish_and_clear();
        }
        eprintln!("mmx: results in {}", dir.run_json().display());
        match self.ending {
            Ending::Json => match serde_json::to_string_pretty(run) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("mmx: could not print run.json: {e}"),
            },
            Ending::Summary { verbose } => print!(
                "{}",
                crate::summary::render(run, Written::found_in(&dir.root).as_ref(), verbose)
            ),
        }
        // The last line: where the guest time went (`mmx time RUN` has the table). Beside
        // run.json on stdout it goes to stderr, so stdout stays one JSON document.
        if let Some(line) = crate::timing::Breakdown::of_run(run).line() {
            match self.ending {
                Ending::Json => eprintln!("mmx: {line}"),
                Ending::Summary { .. } => println!("{line}"),
            }
        }
    }
}

impl Default for Terminal {
    fn default() -> Terminal {
        Terminal::new()
    }
}

impl Subscriber for Terminal {
    fn on(&mut self, event: &Event<'_>) -> Option<Note> {
        match *event {
            Event::RunStarted {
                cells,
                boots,
                jobs,
                dir,
            } => self.run_started(cells, boots, jobs, dir),
            Event::BootStarted { .. } => self.boot_started(),
            Event::BootEnded {
                boot, cells, took, ..
            } => self.boot_ended(boot, cells, took),
            Event::Build(b) => self.build(b),
            Event::Note(n) => self.note(n),
            Event::Answer(text) => self.answer(text),
            Event::RunEnded { run, dir } => self.run_ended(run, dir),
        }
        None
    }
}

impl Drop for Terminal {
    /// A command that ends early (an error, Ctrl-C) leaves no bar drawn.
    fn drop(&mut self) {
        let run = self.run.take().and_then(|r| r.bar);
        for bar in run
            .into_iter()
            .chain(self.builds.values().filter_map(|b| b.bar.clone()))
        {
            bar.finish_and_clear();
        }
    }
}

/// A build's bar: its length from the last build in the same directory, a spinner otherwise.
fn build_bar(expected: Option<u64>) -> ProgressBar {
    let bar = match expected {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let template = if expected.is_some() {
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}"
    } else {
        "{spinner} [{elapsed_precise}] {pos} steps {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
