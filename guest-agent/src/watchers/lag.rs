//! Lag: from a merged overlay's mount returning in its worker to a watcher first seeing it,
//! matched by key (pure, so the matching is tested without a kernel).
//!
//! A key names one mount as a watcher can see it: fanotify reports the unique mount id (never
//! reused, 6.8+), mountinfo shows the old mount id and the mount point. Old ids are reused (the
//! next pass's overlay on the same mount point often gets the same one), so one key may name
//! several mounts in turn: a sighting belongs to the latest return of its key at or before it,
//! or to the first return when it came before every return (seen before the call returned: the
//! table changes before the mount call gets back to user space). A mount's lag is its first
//! sighting's.

use std::collections::HashMap;
use std::time::Instant;

/// One mount as a watcher can name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// The unique mount id (`STATX_MNT_ID_UNIQUE`, fanotify's `FAN_EVENT_INFO_TYPE_MNT`).
    Unique(u64),
    /// mountinfo's first field and its mount point, as the table spells it.
    Table(u64, Vec<u8>),
}

impl Key {
    /// Whether `watcher` names mounts this way.
    pub fn names_for(&self, watcher: protocol::Watcher) -> bool {
        matches!(
            (self, watcher),
            (Key::Unique(_), protocol::Watcher::Fanotify)
                | (Key::Table(..), protocol::Watcher::PollMountinfo)
        )
    }
}

/// The lags of one watcher's sightings against the run's returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lags {
    /// Nanoseconds, one per matched mount.
    pub samples: Vec<f64>,
    pub matched: u64,
    pub before_return: u64,
    pub unmatched: u64,
}

/// Match `sightings` (key, when the watcher saw it) with `returns` (key, when its mount call
/// returned), both in any order.
pub fn lags(returns: &[(Key, Instant)], sightings: &[(Key, Instant)]) -> Lags {
    let mut by_key: HashMap<&Key, Vec<(Instant, Option<Instant>)>> = HashMap::new();
    for (k, at) in returns {
        by_key.entry(k).or_default().push((*at, None));
    }
    for v in by_key.values_mut() {
        v.sort_by_key(|(at, _)| *at);
    }
    for (k, seen) in sightings {
        let Some(v) = by_key.get_mut(k) else { continue };
        // The latest return at or before the sighting, else the first.
        let i = v.partition_point(|(at, _)| at <= seen).saturating_sub(1);
        let first = &mut v[i].1;
        if first.is_none_or(|f| *seen < f) {
            *first = Some(*seen);
        }
    }
    let mut out = Lags::default();
    for (at, seen) in by_key.into_values().flatten() {
        match seen {
            Some(s) => {
                out.matched += 1;
                match s.checked_duration_since(at) {
                    Some(d) => out.samples.push(d.as_nanos() as f64),
                    None => {
                        out.before_return += 1;
                        out.samples.push(0.0);
                    }
                }
            }
            None => out.unmatched += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_mount_gets_its_first_sighting_and_reused_keys_split_by_return() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let a = Key::Table(7, b"/c/0/m".to_vec());
        let returns = vec![
            (a.clone(), ms(10)),
            (a.clone(), ms(50)),
            (Key::Unique(9), ms(20)),
            (Key::Unique(10), ms(30)),
        ];
        let sightings = vec![
            (a.clone(), ms(14)),
            (a.clone(), ms(12)),
            (a.clone(), ms(53)),
            // Seen before its call returned: lag 0, counted apart.
            (Key::Unique(9), ms(19)),
            // Not the run's.
            (Key::Unique(11), ms(40)),
        ];
        let l = lags(&returns, &sightings);
        let mut s = l.samples.clone();
        s.sort_by(f64::total_cmp);
        assert_eq!(s, vec![0.0, 2e6, 3e6]);
        assert_eq!((l.matched, l.before_return, l.unmatched), (3, 1, 1));
        assert_eq!(lags(&returns, &[]).unmatched, 4);
    }
}
