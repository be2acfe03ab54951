//! Turning SMT off and on at run time through /sys/devices/system/cpu/smt/control, so one run
//! shows the same sweep with and without hyperthreads (Netflix: HT off gave 20–30% on m7i).
//! Whatever happens in between — an error, a panic in a benchmark thread — the state found at the
//! start is written back: [`SmtGuard`] restores on drop.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use protocol::SmtState;

/// The control file this process uses, when not the kernel's (see [`use_control_file`]).
static CONTROL_FILE: OnceLock<PathBuf> = OnceLock::new();

/// Toggle SMT through `path` instead of [`protocol::SMT_CONTROL`]: the harness's tests hand a
/// plain file (`run-plan --smt-control`), so that killing a run mid-toggle can be tested on a
/// machine whose SMT must not move. Set once, before any benchmark runs; a second call is
/// ignored.
pub fn use_control_file(path: PathBuf) {
    let _ = CONTROL_FILE.set(path);
}

/// The control file in use.
pub fn control() -> &'static Path {
    CONTROL_FILE
        .get()
        .map_or(Path::new(protocol::SMT_CONTROL), PathBuf::as_path)
}

/// The SMT state now: the control file, else inferred from the topology.
pub fn read() -> SmtState {
    read_at(control()).unwrap_or_else(|| crate::topology::observe().smt)
}

fn read_at(path: &Path) -> Option<SmtState> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| SmtState::from_control(&s))
}

/// The SMT states to run the points in, the current one first, and a note when a requested
/// toggle cannot happen.
pub fn states_to_run(current: SmtState, toggle: bool) -> (Vec<SmtState>, Option<String>) {
    if !toggle {
        return (vec![current], None);
    }
    match current {
        SmtState::On => (vec![SmtState::On, SmtState::Off], None),
        SmtState::Off => (vec![SmtState::Off, SmtState::On], None),
        other => (
            vec![other],
            Some(format!(
                "SMT toggle requested but {} says `{}`: ran with SMT as it is",
                control().display(),
                other.as_str()
            )),
        ),
    }
}

/// Holds the SMT state found at creation and writes it back when dropped.
pub struct SmtGuard {
    path: PathBuf,
    original: SmtState,
}

impl SmtGuard {
    pub fn new() -> SmtGuard {
        SmtGuard::at(control().to_path_buf())
    }

    fn at(path: PathBuf) -> SmtGuard {
        let original = read_at(&path).unwrap_or(SmtState::Unknown);
        SmtGuard { path, original }
    }

    /// Switch to `state` (`on` or `off` only; anything else is left alone).
    pub fn set(&self, state: SmtState) -> std::io::Result<()> {
        write_state(&self.path, state)
    }

    /// Write the original state back now (also done on drop), and say what the file reads after.
    pub fn restore(&self) -> std::io::Result<SmtState> {
        if read_at(&self.path) != Some(self.original) {
            write_state(&self.path, self.original)?;
        }
        Ok(read_at(&self.path).unwrap_or(SmtState::Unknown))
    }
}

impl Drop for SmtGuard {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!(
                "mmx-agent: could not restore SMT to `{}` in {}: {e}",
                self.original.as_str(),
                self.path.display()
            );
        }
    }
}

fn write_state(path: &Path, state: SmtState) -> std::io::Result<()> {
    match state {
        SmtState::On | SmtState::Off => std::fs::write(path, state.as_str()).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("write `{}` to {}: {e}", state.as_str(), path.display()),
            )
        }),
        // forceoff cannot be undone without a reboot; the others are not writable states.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        assert_eq!(states_to_run(SmtState::On, false).0, vec![SmtState::On]);
        assert_eq!(
            states_to_run(SmtState::On, true).0,
            vec![SmtState::On, SmtState::Off]
        );
        let (states, note) = states_to_run(SmtState::NotSupported, true);
        assert_eq!(states, vec![SmtState::NotSupported]);
        assert!(note.unwrap().contains("notsupported"));
    }

    #[test]
    fn guard_restores_even_on_panic() {
        let path = std::env::temp_dir().join(format!("mmx-smt-test-{}", std::process::id()));
        std::fs::write(&path, "on\n").unwrap();
        let p = path.clone();
        let r = std::panic::catch_unwind(move || {
            let g = SmtGuard::at(p);
            g.set(SmtState::Off).unwrap();
            panic!("benchmark blew up");
        });
        assert!(r.is_err());
        assert_eq!(read_at(&path), Some(SmtState::On));
        // forceoff is never written.
        let g = SmtGuard::at(path.clone());
        g.set(SmtState::ForceOff).unwrap();
        assert_eq!(g.restore().unwrap(), SmtState::On);
        drop(g);
        std::fs::remove_file(&path).unwrap();
    }
}
