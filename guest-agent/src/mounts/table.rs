//! Cross-checking the agent's own mount counts against the kernel's mount table: `listmount` +
//! `statmount` where the kernel has them, `/proc/thread-self/mountinfo` otherwise. The counts
//! look only below one directory (a container's), so concurrent containers do not disturb them.
//!
//! `thread-self`, not `self`: a run lives in its own mount namespace, entered by its thread, and
//! `/proc/self` would show the main thread's.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::sys::table::{listmount_all, statmount_mnt_point};
use crate::sys::{SysError, SysResult};

/// How the table is read.
pub enum Observer {
    /// listmount/statmount; mounts present before the run are skipped without a statmount.
    /// With a single worker (`sole_writer`) every other mount in the run's private namespace is
    /// that worker's container's, so the count needs no statmount at all.
    Listmount {
        baseline: HashSet<u64>,
        sole_writer: bool,
    },
    /// mountinfo; mount points present before the run (the storm's padding, say) are
    /// remembered with their multiplicity and never counted as the run's.
    Mountinfo { baseline: HashMap<Vec<u8>, u64> },
}

impl Observer {
    /// Pick the method the kernel supports (mountinfo when `mountinfo` asks for it), remembering
    /// the mounts that are not ours. Call it in the run's namespace before any worker mounts.
    pub fn new(sole_writer: bool, mountinfo: bool) -> Observer {
        if !mountinfo {
            if let Ok(ids) = listmount_all() {
                return Observer::Listmount {
                    baseline: ids.into_iter().collect(),
                    sole_writer,
                };
            }
        }
        let mut baseline = HashMap::new();
        if let Ok(text) = read_mountinfo() {
            for p in mount_points(&text) {
                *baseline.entry(p).or_insert(0) += 1;
            }
        }
        Observer::Mountinfo { baseline }
    }

    pub fn method(&self) -> &'static str {
        match self {
            Observer::Listmount { .. } => "listmount",
            Observer::Mountinfo { .. } => "mountinfo",
        }
    }

    /// Mounts whose mount point lies strictly below `dir` (an absolute, canonical path).
    pub fn count_below(&self, dir: &Path) -> SysResult<u64> {
        let mut prefix = dir.as_os_str().as_bytes().to_vec();
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        match self {
            Observer::Listmount {
                baseline,
                sole_writer: true,
            } => Ok(listmount_all()?
                .iter()
                .filter(|id| !baseline.contains(id))
                .count() as u64),
            Observer::Listmount {
                baseline,
                sole_writer: false,
            } => {
                let mut n = 0;
                for id in listmount_all()? {
                    if baseline.contains(&id) {
                        continue;
                    }
                    match statmount_mnt_point(id) {
                        Ok(point) if point.starts_with(&prefix) => n += 1,
                        Ok(_) => {}
                        // Unmounted by another worker between the two calls.
                        Err(SysError { errno, .. }) if errno == libc::ENOENT => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(n)
            }
            Observer::Mountinfo { baseline } => {
                let text = read_mountinfo()?;
                let mut now: HashMap<Vec<u8>, u64> = HashMap::new();
                for p in mount_points(&text).filter(|p| p.starts_with(&prefix)) {
                    *now.entry(p).or_insert(0) += 1;
                }
                Ok(now
                    .iter()
                    .map(|(p, n)| n.saturating_sub(baseline.get(p).copied().unwrap_or(0)))
                    .sum())
            }
        }
    }
}

fn read_mountinfo() -> SysResult<Vec<u8>> {
    std::fs::read("/proc/thread-self/mountinfo")
        .map_err(|e| SysError::from_io(|| "read(\"/proc/thread-self/mountinfo\")".into(), &e))
}

/// A mount seen in the table: where it is attached and its filesystem type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub point: std::path::PathBuf,
    pub fstype: String,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.point.display(), self.fstype)
    }
}

/// The mounts of the calling thread's namespace at or below any of `dirs` (absolute, canonical),
/// from `/proc/thread-self/mountinfo`, in table order (the latest last).
pub fn mounts_under(dirs: &[&Path]) -> SysResult<Vec<Seen>> {
    Ok(mounts_under_in(&read_mountinfo()?, dirs))
}

fn mounts_under_in(text: &[u8], dirs: &[&Path]) -> Vec<Seen> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let Some(point) = fields.get(4).map(|p| unescape(p)) else {
            continue;
        };
        let under = dirs.iter().any(|d| {
            let d = d.as_os_str().as_bytes();
            point == d || (point.starts_with(d) && point.get(d.len()) == Some(&b'/'))
        });
        if !under {
            continue;
        }
        // The filesystem type follows the ` - ` separator of the optional fields.
        let fstype = fields
            .iter()
            .position(|f| *f == b"-")
            .and_then(|i| fields.get(i + 1))
            .map_or_else(String::new, |t| String::from_utf8_lossy(t).into_owned());
        out.push(Seen {
            point: std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&point)),
            fstype,
        });
    }
    out
}

/// Mount points (field 5) of a mountinfo text, with the kernel's octal escapes (`\040` for a
/// space, …) undone. Malformed lines are skipped.
pub fn mount_points(text: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    text.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4).map(unescape))
}

fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let digits = &field[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
35 22 0:31 / /proc rw,nosuid - proc proc rw
101 22 254:0 /s/snapshots/1/fs /s/c/0/p0/0 ro,relatime idmapped - ext4 /dev/vda rw
102 22 0:50 / /s/c/0/p0/m ro,relatime - overlay overlay rw,lowerdir=0
103 22 0:51 / /s/with\\040space/m rw - tmpfs tmpfs rw
104 22 0:52 / /s/c/01/p0/m rw - tmpfs tmpfs rw
bad line
";

    #[test]
    fn mountinfo_mount_points_are_unescaped() {
        let points: Vec<Vec<u8>> = mount_points(SAMPLE.as_bytes()).collect();
        assert_eq!(points.len(), 6);
        assert_eq!(points[0], b"/");
        assert_eq!(points[4], b"/s/with space/m");
    }

    #[test]
    fn counting_below_a_directory_uses_whole_names() {
        let below = |dir: &str| {
            let mut p = dir.as_bytes().to_vec();
            p.push(b'/');
            mount_points(SAMPLE.as_bytes())
                .filter(|m| m.starts_with(&p))
                .count()
        };
        assert_eq!(below("/s/c/0"), 2);
        // "/s/c/0" must not count "/s/c/01/…", nor the directory itself.
        assert_eq!(below("/s/c"), 3);
        assert_eq!(below("/s/c/01"), 1);
        assert_eq!(below("/s/c/0/p0/m"), 0);
    }

    #[test]
    fn mounts_under_a_directory_carry_their_type() {
        let seen = mounts_under_in(
            SAMPLE.as_bytes(),
            &[Path::new("/s/c/0"), Path::new("/s/with space")],
        );
        let points: Vec<String> = seen.iter().map(ToString::to_string).collect();
        assert_eq!(
            points,
            [
                "/s/c/0/p0/0 (ext4)",
                "/s/c/0/p0/m (overlay)",
                "/s/with space/m (tmpfs)"
            ]
        );
        // The directory itself counts (a runtime's target); a sibling with a longer name not.
        let at = mounts_under_in(SAMPLE.as_bytes(), &[Path::new("/s/c/0/p0/m")]);
        assert_eq!(at.len(), 1);
        assert!(mounts_under_in(SAMPLE.as_bytes(), &[Path::new("/s/c/0/p")]).is_empty());
    }

    #[test]
    fn unescape_leaves_odd_backslashes_alone() {
        assert_eq!(unescape(b"a\\1"), b"a\\1");
        assert_eq!(unescape(b"a\\999b"), b"a\\999b");
        assert_eq!(unescape(b"\\134"), b"\\");
    }
}
