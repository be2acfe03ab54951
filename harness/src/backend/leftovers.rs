//! What an mmx that was killed (`kill -9`, the OOM killer, a lost CI runner) leaves behind, and
//! removing it when the next `mmx run` starts.
//!
//! Its processes go with it (`proc::spawn`: the death signal and the warden); its directories stay: a
//! QEMU boot's work dir under `<cache>/boots/` (the initrd, a scratch disk image of hundreds of
//! MiB), the local backend's scratch dir, an ssh control dir. Each of them is *claimed* when
//! made: an owner file names the process by pid, the pid's start time and the kernel's boot id,
//! so neither a reused pid nor a reboot makes a dead owner look alive. On start, mmx removes
//! every such directory whose owner is gone and leaves the others alone: two runs sharing a
//! cache never touch each other's boots.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::backend::host_settings;
use crate::events::{Note, Sink};

/// The owner file inside a claimed directory.
pub const OWNER_FILE: &str = ".mmx-owner";

/// A directory without an owner file is being claimed right now, or was made by an mmx from
/// before owner files, which may still be running (several versions can share one cache). No
/// boot lasts a day: after that it is a leftover.
const UNOWNED_AGE: Duration = Duration::from_secs(24 * 3600);

/// A process, named so that a reused pid or a reboot does not match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// `starttime` of `/proc/<pid>/stat`: clock ticks after boot when the process started.
    pub start: u64,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot: String,
}

impl Owner {
    /// This process.
    pub fn current() -> anyhow::Result<Owner> {
        let pid = std::process::id();
        Owner::of(pid).with_context(|| format!("reading /proc/{pid}/stat"))
    }

    /// The process `pid` is now, if it exists.
    fn of(pid: u32) -> Option<Owner> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid …`: comm may hold anything, so count fields after its `)`;
        // starttime is field 22, the 20th after comm.
        let start = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(19)?
            .parse()
            .ok()?;
        Some(Owner {
            pid,
            start,
            boot: boot_id(),
        })
    }

    /// The same process still runs.
    pub fn is_alive(&self) -> bool {
        Owner::of(self.pid).as_ref() == Some(self)
    }

    fn render(&self) -> String {
        format!("{} {} {}\n", self.pid, self.start, self.boot)
    }

    fn parse(text: &str) -> Option<Owner> {
        let mut f = text.split_whitespace();
        let owner = Owner {
            pid: f.next()?.parse().ok()?,
            start: f.next()?.parse().ok()?,
            boot: f.next()?.to_string(),
        };
        f.next().is_none().then_some(owner)
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Mark `dir` as this process's (right after making it).
pub fn claim(dir: &Path) -> anyhow::Result<()> {
    let owner = Owner::current()?;
    Ok(crate::rundir::write_atomic(
        &dir.join(OWNER_FILE),
        owner.render().as_bytes(),
    )?)
}

/// The owner named in `dir`, if it has a readable owner file.
pub fn owner_of(dir: &Path) -> Option<Owner> {
    Owner::parse(&std::fs::read_to_string(dir.join(OWNER_FILE)).ok()?)
}

/// What to do with a directory that has no owner file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unowned {
    /// Remove it once it is older than [`UNOWNED_AGE`]: the place is mmx's own (the cache).
    Remove,
    /// Leave it: the place is shared (/tmp, /var/tmp) and the directory may not be ours.
    Keep,
}

/// What [`reap`] did.
#[derive(Debug, Default)]
pub struct Reaped {
    pub removed: Vec<PathBuf>,
    /// Directories that should go but could not, with why.
    pub failed: Vec<(PathBuf, String)>,
    /// Host settings a killed run's agent had changed, restored from its record
    /// ([`host_settings::restore_left`]) before its directory went.
    pub restored: Vec<host_settings::Restore>,
    /// Records that were not used (not trusted, unreadable), with why.
    pub ignored_records: Vec<(PathBuf, String)>,
}

impl Reaped {
    fn extend(&mut self, other: Reaped) {
        let Reaped {
            removed,
            failed,
            restored,
            ignored_records,
        } = other;
        self.removed.extend(removed);
        self.failed.extend(failed);
        self.restored.extend(restored);
        self.ignored_records.extend(ignored_records);
    }
}

/// Remove the directories `base/<prefix>*` whose owner is gone. Never follows a symlink and
/// never reaches into a mount point.
pub fn reap(base: &Path, prefix: &str, unowned: Unowned) -> Reaped {
    let mut out = Reaped::default();
    let Ok(entries) = std::fs::read_dir(base) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let dead = match owner_of(&path) {
            Some(owner) => !owner.is_alive(),
            None => {
                unowned == Unowned::Remove
                    && meta
                        .modified()
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > UNOWNED_AGE)
            }
        };
        if !dead {
            continue;
        }
        // The host settings its agent changed go back before the record goes with the
        // directory; a failed write keeps both, so the next run tries again.
        match host_settings::restore_left(&path) {
            None => {}
            Some(Err(why)) => out.ignored_records.push((path.clone(), why)),
            Some(Ok(done)) => {
                let failed: Vec<String> = done
                    .iter()
                    .filter(|r| matches!(r.did, host_settings::Did::Failed(_)))
                    .map(ToString::to_string)
                    .collect();
                out.restored.extend(done);
                if !failed.is_empty() {
                    let why = format!("host settings not restored: {}", failed.join("; "));
                    out.failed.push((path, why));
                    continue;
                }
            }
        }
        if has_mounts_under(&path) {
            out.failed
                .push((path, "something is mounted inside; left alone".into()));
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => out.removed.push(path),
            Err(e) => out.failed.push((path, e.to_string())),
        }
    }
    out
}

/// Remove what earlier, killed runs left in every place mmx makes directories: boot dirs in
/// the cache (`cache_root`, when there is one), local scratch dirs under `local_base`, ssh
/// control dirs. Tells `sink` what it removed and what it could not.
pub fn reap_earlier_runs(cache_root: Option<&Path>, local_base: &Path, sink: &dyn Sink) -> Reaped {
    use crate::backend::{local, qemu, ssh};
    let mut places = vec![
        (
            local_base.to_path_buf(),
            local::SCRATCH_PREFIX,
            Unowned::Keep,
        ),
        (
            PathBuf::from(ssh::CONTROL_BASE),
            ssh::CONTROL_PREFIX,
            Unowned::Keep,
        ),
    ];
    if let Some(root) = cache_root {
        places.push((
            qemu::boots_dir(root),
            qemu::BOOT_DIR_PREFIX,
            Unowned::Remove,
        ));
    }
    let mut all = Reaped::default();
    for (base, prefix, unowned) in places {
        all.extend(reap(&base, prefix, unowned));
    }
    let written: Vec<String> = all
        .restored
        .iter()
        .filter(|r| matches!(r.did, host_settings::Did::WroteBack { .. }))
        .map(ToString::to_string)
        .collect();
    if !written.is_empty() {
        sink.note(Note::warning(format!(
            "restored host settings the agent of a killed run had changed: {}",
            written.join("; ")
        )));
    }
    for r in &all.restored {
        if let host_settings::Did::LeftAlone(_) = r.did {
            sink.note(Note::warning(format!(
                "a killed run's host-settings record: {r}"
            )));
        }
    }
    for (p, why) in &all.ignored_records {
        sink.note(Note::warning(format!(
            "did not use the host-settings record in {}: {why}",
            p.display()
        )));
    }
    if !all.removed.is_empty() {
        let names: Vec<String> = all
            .removed
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        sink.note(Note::info(format!(
            "removed what {} earlier run(s) left when they were killed: {}",
            names.len(),
            names.join(", ")
        )));
    }
    for (p, why) in &all.failed {
        sink.note(Note::warning(format!(
            "could not remove {}, left by a killed run: {why}",
            p.display()
        )));
    }
    all
}

/// Whether the mount table shows a mount point at or below `dir`.
fn has_mounts_under(dir: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table.lines().any(|l| {
        // Field 5 is the mount point (octal escapes for spaces; mmx's names have none).
        l.split(' ')
            .nth(4)
            .is_some_and(|m| Path::new(m).starts_with(dir))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = Owner::current().unwrap();
        assert!(me.is_alive());
        assert_eq!(Owner::parse(&me.render()), Some(me.clone()));
        let reused = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(!reused.is_alive(), "same pid, another process");
        let rebooted = Owner {
            boot: "another-boot".into(),
            ..me
        };
        assert!(!rebooted.is_alive());
        assert_eq!(Owner::parse("12 x y"), None);
    }

    #[test]
    fn dead_owners_dirs_go_live_and_fresh_ones_stay() {
        let base = tempfile::tempdir().unwrap();
        let mk = |name: &str| {
            let d = base.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("initrd.cpio"), b"x").unwrap();
            d
        };
        let mine = mk("boot-mine");
        claim(&mine).unwrap();
        // A process that ran and ended: its pid is free (or someone else's) now.
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let _ = child.wait_with_output();
        let dead = mk("boot-dead");
        let owner = Owner {
            pid,
            start: 1,
            boot: boot_id(),
        };
        std::fs::write(dead.join(OWNER_FILE), owner.render()).unwrap();
        let fresh = mk("boot-fresh");
        let other = mk("other-dead");
        std::fs::write(other.join(OWNER_FILE), owner.render()).unwrap();
        // Unowned and two days old: from an mmx before owner files.
        let ancient = mk("boot-ancient");
        let two_days = std::time::SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
        std::fs::File::open(&ancient)
            .and_then(|d| d.set_modified(two_days))
            .unwrap();

        let r = reap(base.path(), "boot-", Unowned::Keep);
        assert_eq!(
            r.removed,
            vec![dead.clone()],
            "only owned dirs in a shared place"
        );
        let r = reap(base.path(), "boot-", Unowned::Remove);
        assert_eq!(r.removed, vec![ancient.clone()]);
        assert!(r.failed.is_empty());
        assert!(mine.exists() && fresh.exists() && other.exists());
        assert!(!dead.exists() && !ancient.exists());
    }

    #[test]
    fn a_symlink_named_like_a_boot_dir_is_not_followed() {
        let base = tempfile::tempdir().unwrap();
        let victim = tempfile::tempdir().unwrap();
        std::fs::write(victim.path().join("keep"), b"x").unwrap();
        std::os::unix::fs::symlink(victim.path(), base.path().join("boot-link")).unwrap();
        let r = reap(base.path(), "boot-", Unowned::Remove);
        assert!(r.removed.is_empty());
        assert!(victim.path().join("keep").exists());
    }
}
