//! The one way mmx starts a child process — QEMU, the local agent, ssh, hooks, make, git, go,
//! tar, mkfs, objcopy, the probes of QEMU and KVM — and the one way it stops one.
//!
//! - [`spawn`]: the child leads a process group of its own, gets the death signal (with the
//!   `getppid` check) and a warden that kills its group if mmx is killed, so nothing it starts
//!   outlives mmx;
//! - [`lines`]: its output read as bounded lines, whatever it sends;
//! - [`Stop`]: graceful, then forceful, always applied to the whole group;
//! - [`watch`]: the one `poll` loop that feeds a child, reads it and stops it, under the owner's
//!   verdicts ([`Watch`]); the boot supervisor is this loop with the results stream;
//! - [`Run`]: a command to its end under a deadline or a [`Cancel`].
//!
//! A ground-floor room: it knows nothing of boots, kernels or runs.

pub mod cancel;
pub mod lines;
pub mod run;
pub mod spawn;
pub mod stop;
pub mod watch;

pub use cancel::Cancel;
pub use lines::{Bounds, Line, LineReader};
pub use run::{Output, Run, RunError, Stream};
pub use spawn::{spawn, Child};
pub use stop::Stop;
pub use watch::{watch, Input, Pipe, SpawnError, Watch, Watched};

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// What starting a child looks like outside this room (`Command::new` only builds one).
    const STARTS: [&str; 5] = [".spawn()", ".output()", ".status()", ".exec()", "duct::"];

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_child_starts_here() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut found = Vec::new();
        for file in &files {
            let rel = file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.starts_with("proc/") {
                continue;
            }
            let text = std::fs::read_to_string(file).unwrap();
            // A file's own tests (below its `#[cfg(test)]`, or a tests.rs) may run fixtures.
            if rel.ends_with("/tests.rs") || rel == "test_support.rs" {
                continue;
            }
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("#[cfg(test)]") {
                    break;
                }
                if let Some(p) = STARTS.iter().find(|p| line.contains(*p)) {
                    found.push(format!("src/{rel}:{}: {p}", n + 1));
                }
            }
        }
        assert!(
            found.is_empty(),
            "children started outside harness/src/proc (use proc::Run, proc::watch or \
             proc::spawn):\n{}",
            found.join("\n")
        );
        assert!(files.len() > 50, "found the sources ({})", files.len());
    }
}
