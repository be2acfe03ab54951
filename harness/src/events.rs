//! What a room says while it works, without printing: a [`Note`] for the user (one line with a
//! severity), a kernel build's progress ([`KernelBuild`]), or a line of a command's own answer,
//! each handed to a [`Sink`] it was given. Only the terminal (`crate::terminal`) and `main`
//! print; a room below `run` (kernels, runtimes, backends) is handed a sink explicitly and never
//! knows whether the run shows a bar, plain lines, or nothing. `run` turns what its sink
//! receives into its own events and fans them out to subscribers.

use std::sync::Arc;

use crate::oneline;

/// The most characters a note keeps: it embeds other programs' errors and lists of paths (what
/// killed runs left), so it is long enough for a few dozen paths and still bounded.
pub const NOTE_CHARS: usize = 4000;

/// How much a note matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// What happened, for the record: a runtime made ready, a setting restored as planned.
    Info,
    /// What changes how to read the run, or what the user should act on: guests under TCG,
    /// a locked package the archive dropped, a kernel that lacks a module, a leftover mmx
    /// could not remove.
    Warning,
}

/// One line for the user, after `mmx: `. Built through [`oneline::fold`], so a multi-line error
/// from another program never splits it and a flood never makes it unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    severity: Severity,
    text: String,
}

impl Note {
    pub fn info(text: impl AsRef<str>) -> Note {
        Note::new(Severity::Info, text.as_ref())
    }

    pub fn warning(text: impl AsRef<str>) -> Note {
        Note::new(Severity::Warning, text.as_ref())
    }

    fn new(severity: Severity, text: &str) -> Note {
        Note {
            severity,
            text: oneline::fold(text, NOTE_CHARS),
        }
    }

    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// The line, without the `mmx: ` the terminal puts before it.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// How far a kernel build has come: make's output goes to the build's log, and each kbuild
/// step (`  CC      fs/overlayfs/params.o`) is reported here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBuild {
    /// The recipe's name.
    pub kernel: String,
    pub phase: BuildPhase,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildPhase {
    /// make started; `expected_steps`: the last build's step count in this build directory.
    Started { expected_steps: Option<u64> },
    /// One more kbuild step; `target` is what it builds.
    Step { steps: u64, target: String },
    /// make ended (built, failed or stopped: the build's result says which).
    Finished { steps: u64 },
}

/// Where a room reports while it works. Shared by a run's worker threads, so `&self` and
/// `Sync`; cheap calls (a kernel build reports every step).
pub trait Sink: Send + Sync {
    /// Something the user should know, on its own line (stderr).
    fn note(&self, note: Note);
    /// A kernel build's progress.
    fn build(&self, build: KernelBuild);
    /// The command's own answer (stdout), printed as it is with a newline after it: a table
    /// row, a doctor check (and its fix on a second line), a bisect step; or a block of lines
    /// that is the answer whole (the kernel config fragment).
    fn answer(&self, text: &str);
}

/// A sink that keeps nothing: for a library call whose caller shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Discard;

impl Sink for Discard {
    fn note(&self, _: Note) {}
    fn build(&self, _: KernelBuild) {}
    fn answer(&self, _: &str) {}
}

/// A sink kept by a request or a runner, shared by threads: cheap to clone.
#[derive(Clone)]
pub struct SharedSink(Arc<dyn Sink>);

impl SharedSink {
    pub fn new(sink: Arc<dyn Sink>) -> SharedSink {
        SharedSink(sink)
    }

    /// A [`Discard`] sink.
    pub fn discard() -> SharedSink {
        SharedSink(Arc::new(Discard))
    }
}

impl std::ops::Deref for SharedSink {
    type Target = dyn Sink;
    fn deref(&self) -> &(dyn Sink + 'static) {
        &*self.0
    }
}

impl std::fmt::Debug for SharedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSink")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_one_bounded_line() {
        let n = Note::warning("qemu said:\nfailed to set MSR\n\n  assertion failed\n");
        assert_eq!(
            n.text(),
            "qemu said: ⏎ failed to set MSR ⏎ assertion failed"
        );
        assert_eq!(n.severity(), Severity::Warning);
        let flood = Note::info("x".repeat(NOTE_CHARS * 3));
        assert_eq!(flood.text().chars().count(), NOTE_CHARS);
        assert!(flood.text().ends_with('…'));
    }
}
