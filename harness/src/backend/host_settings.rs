//! The settings of this machine that the local agent may change, written down before the agent
//! starts and written back after it ends, however it ends.
//!
//! The agent restores what it changes itself (the lock benchmark's `SmtGuard`), but only when it
//! gets to: a stopped agent that is SIGKILLed after its grace, or one killed with mmx by the
//! death signal, runs no destructor, and a machine left with SMT off runs every later benchmark
//! on half its CPUs. So the harness keeps its own record:
//!
//! - before the agent starts, [`record`] reads every [`Setting`] and writes the values into a
//!   record file in the boot's scratch directory — a directory claimed for this mmx
//!   ([`leftovers`]: pid, start time, boot id), synced before the agent runs;
//! - after the agent ends (done, crashed, stopped, timed out, killed), [`Recorded::restore`]
//!   writes back every setting whose value changed, and removes the record;
//! - when mmx itself was killed, the next `mmx run` finds the record in the dead run's scratch
//!   directory while it removes that directory ([`leftovers::reap`]) and restores from it first
//!   ([`restore_left`]), saying so in one line.
//!
//! A record is trusted only from a directory and a file owned by this user that nobody else may
//! write (scratch dirs live in shared places like /var/tmp, where anyone can make a directory
//! with a matching name), and it only names *which* setting had *which* value: where a setting
//! lives and which values may be written come from [`Setting`], never from the file.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use protocol::SmtState;
use serde::{Deserialize, Serialize};

use crate::backend::leftovers;

/// The record's name inside a scratch directory.
pub const RECORD_FILE: &str = ".mmx-host-settings.json";

/// Points SMT control at a plain file, for tests that kill a run mid-toggle on a machine whose
/// SMT must not move. Honoured by debug builds only (what `cargo test` runs): an installed,
/// release `mmx` always records and restores the kernel's own file, whatever its environment
/// says. The agent (always a release build) gets the file on its command line
/// (`run-plan --smt-control`), so it never reads this variable either.
pub const TEST_SMT_CONTROL_ENV: &str = "MMX_TEST_SMT_CONTROL";

/// A setting of this machine that the local agent may change: the one list. A setting added
/// here is recorded before every local boot and restored after it and after a killed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setting {
    /// `/sys/devices/system/cpu/smt/control`: lockbench's `toggle_smt` switches SMT off and on.
    SmtControl,
}

impl Setting {
    /// Every setting the agent may change. (Its other writes are per process — uid maps of
    /// its own user namespaces, thread affinity — or inside its private mount namespace, and
    /// end with it.)
    pub const ALL: [Setting; 1] = [Setting::SmtControl];

    pub fn as_str(self) -> &'static str {
        match self {
            Setting::SmtControl => "smt-control",
        }
    }

    /// Where the setting lives on this machine.
    pub fn path(self) -> PathBuf {
        match self {
            Setting::SmtControl => {
                test_smt_control().unwrap_or_else(|| PathBuf::from(protocol::SMT_CONTROL))
            }
        }
    }

    /// Whether `value` (the file's contents, trimmed) is a value that can be written back. SMT
    /// takes `on` and `off`; `forceoff` cannot be undone without a reboot (and the agent never
    /// writes it), the others are not states at all.
    fn writable(self, value: &str) -> bool {
        match self {
            Setting::SmtControl => {
                matches!(SmtState::from_control(value), SmtState::On | SmtState::Off)
            }
        }
    }
}

/// The SMT control file of [`TEST_SMT_CONTROL_ENV`], in a debug build where it is set: the agent
/// must be pointed at it too.
pub fn test_smt_control() -> Option<PathBuf> {
    if !cfg!(debug_assertions) {
        return None;
    }
    std::env::var_os(TEST_SMT_CONTROL_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// One setting as it was before the agent started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub setting: Setting,
    /// Where it was read: a restore writes only when the setting still lives there.
    pub path: PathBuf,
    /// The file's contents, trimmed.
    pub value: String,
}

/// The record file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// `/proc/sys/kernel/random/boot_id` when recorded: after a reboot the settings are the
    /// boot's own again, and writing an old value back would undo what the admin chose since.
    boot: String,
    settings: Vec<Saved>,
}

/// What restoring one setting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Did {
    /// It still had the recorded value (the agent restored it, or never changed it).
    Unchanged,
    /// It read `found`; the recorded value was written back.
    WroteBack { found: String },
    /// Left alone, and why: the machine rebooted since the record was made, the setting lives
    /// elsewhere now, the recorded value cannot be written.
    LeftAlone(String),
    /// Writing it back failed.
    Failed(String),
}

/// One setting's restore, for a line on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    pub saved: Saved,
    pub did: Did,
}

impl std::fmt::Display for Restore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Saved {
            setting,
            path,
            value,
        } = &self.saved;
        let (name, path) = (setting.as_str(), path.display());
        match &self.did {
            Did::Unchanged => write!(f, "{name} ({path}) is `{value}` as recorded"),
            Did::WroteBack { found } => {
                write!(f, "{name} ({path}) was `{found}`: wrote back `{value}`")
            }
            Did::LeftAlone(why) => write!(f, "{name} ({path}) left alone: {why}"),
            Did::Failed(why) => {
                write!(
                    f,
                    "{name} ({path}) could not be set back to `{value}`: {why}"
                )
            }
        }
    }
}

/// The settings recorded for one running agent. [`Recorded::restore`] writes them back; a
/// dropped one restores too (a panic between start and end), silently.
#[derive(Debug)]
pub struct Recorded {
    file: PathBuf,
    record: Option<Record>,
}

/// Read every [`Setting`] and record them in `dir` (the boot's claimed scratch directory),
/// synced, before the agent starts. A record already there is from an earlier boot of this run
/// whose restore failed: it holds the older, truer values, so it is restored first, and when
/// that fails the agent must not start (its toggles would be recorded as the originals).
pub fn record(dir: &Path) -> anyhow::Result<Recorded> {
    let file = dir.join(RECORD_FILE);
    if let Some(Ok(earlier)) = restore_left(dir) {
        let failed: Vec<String> = earlier
            .iter()
            .filter(|r| matches!(r.did, Did::Failed(_)))
            .map(Restore::to_string)
            .collect();
        anyhow::ensure!(
            failed.is_empty(),
            "restoring the settings an earlier agent changed: {}",
            failed.join("; ")
        );
    }
    let settings = Setting::ALL
        .into_iter()
        .filter_map(|setting| {
            let path = setting.path();
            // A setting this machine does not have (no SMT control) cannot be changed either.
            let value = read_value(&path)?;
            Some(Saved {
                setting,
                path,
                value,
            })
        })
        .collect();
    let record = Record {
        boot: leftovers::boot_id(),
        settings,
    };
    let json = serde_json::to_vec_pretty(&record).context("encoding the host settings")?;
    write_private(&file, &json)?;
    Ok(Recorded {
        file,
        record: Some(record),
    })
}

impl Recorded {
    /// Write back every recorded setting that changed, after the agent has ended; remove the
    /// record unless a write failed.
    pub fn restore(mut self) -> Vec<Restore> {
        self.restore_now()
    }

    fn restore_now(&mut self) -> Vec<Restore> {
        match self.record.take() {
            Some(record) => restore_from(&record, &self.file),
            None => Vec::new(),
        }
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.restore_now();
    }
}

/// Restore from the record a killed run left in `dir`, and remove it unless a write failed.
/// `None`: `dir` holds no record. `Err` with why: a record this user may not trust (see the
/// module's doc) or cannot read, which is not used.
pub fn restore_left(dir: &Path) -> Option<Result<Vec<Restore>, String>> {
    let file = dir.join(RECORD_FILE);
    let record = match read_trusted(dir, &file)? {
        Ok(r) => r,
        Err(why) => return Some(Err(why)),
    };
    Some(Ok(restore_from(&record, &file)))
}

/// Restore every setting of `record`, then remove its `file` unless a write failed (the next
/// attempt needs it).
fn restore_from(record: &Record, file: &Path) -> Vec<Restore> {
    let rebooted = record.boot != leftovers::boot_id();
    let done: Vec<Restore> = record
        .settings
        .iter()
        .map(|saved| Restore {
            saved: saved.clone(),
            did: restore_one(saved, rebooted, &saved.setting.path()),
        })
        .collect();
    if !done.iter().any(|r| matches!(r.did, Did::Failed(_))) {
        let _ = std::fs::remove_file(file);
    }
    done
}

/// Restore `saved`, whose setting lives at `here` now.
fn restore_one(saved: &Saved, rebooted: bool, here: &Path) -> Did {
    let Saved {
        setting,
        path,
        value,
    } = saved;
    if rebooted {
        return Did::LeftAlone("the machine rebooted since it was recorded".into());
    }
    if path != here {
        return Did::LeftAlone(format!("this mmx controls it at {}", here.display()));
    }
    let Some(found) = read_value(path) else {
        return Did::LeftAlone("it cannot be read any more".into());
    };
    if found == *value {
        return Did::Unchanged;
    }
    if !setting.writable(value) {
        return Did::LeftAlone(format!("`{value}` is not a value that can be written"));
    }
    match write_value(path, value) {
        Ok(()) => Did::WroteBack { found },
        Err(e) => Did::Failed(e.to_string()),
    }
}

/// A setting's value: the file's first line, trimmed (sysfs ends it with a newline).
fn read_value(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.lines().next().unwrap_or("").trim().to_string())
}

/// Write `value` into an existing setting file (never created, never through a final symlink).
fn write_value(path: &Path, value: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(value.as_bytes())
}

/// The record in `dir`, if there is a file: `Err` with why when it may not be trusted (a
/// directory or file someone else owns or may write, not a plain file) or does not parse.
fn read_trusted(dir: &Path, file: &Path) -> Option<Result<Record, String>> {
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(file)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(format!("opening {}: {e}", file.display()))),
    };
    Some((|| {
        let me = rustix::process::geteuid().as_raw();
        let private = |what: &str, meta: &std::fs::Metadata| {
            if meta.uid() != me || meta.mode() & 0o022 != 0 {
                return Err(format!(
                    "{what} is owned by uid {} with mode {:o}; only uid {me}'s, writable by it \
                     alone, is trusted",
                    meta.uid(),
                    meta.mode() & 0o7777
                ));
            }
            Ok(())
        };
        let dmeta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
        private(&dir.display().to_string(), &dmeta)?;
        let fmeta = f.metadata().map_err(|e| e.to_string())?;
        if !fmeta.is_file() {
            return Err(format!("{} is not a plain file", file.display()));
        }
        private(&file.display().to_string(), &fmeta)?;
        // A record is a few hundred bytes; more is not ours.
        let mut text = String::new();
        (&mut f)
            .take(64 << 10)
            .read_to_string(&mut text)
            .map_err(|e| format!("reading {}: {e}", file.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))
    })())
}

/// Write `bytes` to `path` as [`crate::rundir::write_atomic`] does, but readable by this user
/// only (0600, then synced): the record is what a later run trusts.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_file_name(format!(".{RECORD_FILE}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_with(dir: &Path, smt: &Path, value: &str, boot: String) {
        let r = Record {
            boot,
            settings: vec![Saved {
                setting: Setting::SmtControl,
                path: smt.to_path_buf(),
                value: value.into(),
            }],
        };
        write_private(&dir.join(RECORD_FILE), &serde_json::to_vec(&r).unwrap()).unwrap();
    }

    #[test]
    fn a_changed_setting_is_written_back_once_and_only_where_it_lives() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("control");
        std::fs::write(&fake, "off\n").unwrap();
        let saved = |value: &str| Saved {
            setting: Setting::SmtControl,
            path: fake.clone(),
            value: value.into(),
        };
        let other = dir.path().join("elsewhere");
        let left_alone = |d: Did, what: &str| matches!(d, Did::LeftAlone(w) if w.contains(what));
        assert!(left_alone(
            restore_one(&saved("on"), true, &fake),
            "rebooted"
        ));
        assert!(left_alone(
            restore_one(&saved("on"), false, &other),
            "controls it at"
        ));
        assert!(left_alone(
            restore_one(&saved("forceoff"), false, &fake),
            "not a value"
        ));
        assert_eq!(std::fs::read_to_string(&fake).unwrap(), "off\n");
        assert_eq!(
            restore_one(&saved("on"), false, &fake),
            Did::WroteBack {
                found: "off".into()
            }
        );
        assert_eq!(std::fs::read_to_string(&fake).unwrap(), "on");
        assert_eq!(restore_one(&saved("on"), false, &fake), Did::Unchanged);
        std::fs::remove_file(&fake).unwrap();
        assert!(left_alone(
            restore_one(&saved("on"), false, &fake),
            "cannot be read"
        ));
        assert!(!fake.exists(), "a setting file is never created");
        assert!(Setting::SmtControl.writable("on") && Setting::SmtControl.writable("off"));
        assert!(!Setting::SmtControl.writable("notsupported"));
    }

    #[test]
    fn a_left_record_is_used_once_and_never_for_another_path() {
        let dir = tempfile::tempdir().unwrap();
        // This test process has no override: Setting::path() is the kernel's file, so a record
        // naming a plain file is left alone and the kernel's file is never written.
        let fake = dir.path().join("control");
        std::fs::write(&fake, "off\n").unwrap();
        record_with(dir.path(), &fake, "on", leftovers::boot_id());
        let done = restore_left(dir.path())
            .expect("a record")
            .expect("trusted");
        assert_eq!(done.len(), 1);
        let real = Setting::SmtControl.path().display().to_string();
        assert!(
            matches!(&done[0].did, Did::LeftAlone(why) if why.contains(&real)),
            "{done:?}"
        );
        assert_eq!(std::fs::read_to_string(&fake).unwrap(), "off\n");
        assert!(!dir.path().join(RECORD_FILE).exists());
        assert_eq!(restore_left(dir.path()), None, "nothing left to restore");
    }

    #[test]
    fn a_record_others_may_write_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("control");
        record_with(dir.path(), &fake, "on", leftovers::boot_id());
        let rec = dir.path().join(RECORD_FILE);
        std::fs::set_permissions(&rec, std::fs::Permissions::from_mode(0o666)).unwrap();
        let why = restore_left(dir.path()).expect("a record").unwrap_err();
        assert!(why.contains("666"), "{why}");
        // A symlink in the record's place is not followed.
        let elsewhere = dir.path().join("elsewhere.json");
        std::fs::rename(&rec, &elsewhere).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &rec).unwrap();
        let why = restore_left(dir.path()).expect("a record").unwrap_err();
        assert!(why.contains("opening"), "{why}");
        // Nor is one in a directory others may write.
        std::fs::remove_file(&rec).unwrap();
        record_with(dir.path(), &fake, "on", leftovers::boot_id());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = restore_left(dir.path()).expect("a record").unwrap_err();
        assert!(why.contains("777"), "{why}");
    }

    #[test]
    fn recording_reads_every_setting_this_machine_has() {
        let dir = tempfile::tempdir().unwrap();
        let rec = record(dir.path()).unwrap();
        let file = dir.path().join(RECORD_FILE);
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let on_disk: Record = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(Some(&on_disk), rec.record.as_ref());
        let has_smt = read_value(&Setting::SmtControl.path()).is_some();
        assert_eq!(on_disk.settings.len(), usize::from(has_smt));
        // Nothing changed: nothing is written, and the record goes.
        let done = rec.restore();
        assert!(done.iter().all(|r| r.did == Did::Unchanged), "{done:?}");
        assert!(!file.exists());
    }
}
