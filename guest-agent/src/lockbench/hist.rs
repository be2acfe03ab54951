//! A log-linear latency histogram: fixed memory however long a window runs or however many
//! threads record, mergeable across threads, with exact min and max. Values below 64 ns are exact;
//! above, each power of two is cut into 32 buckets, so a percentile is within 1/32 (3%) of the
//! true sample. Keeping every sample instead would cost hundreds of MB at 64 threads × 500 ms.

const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
const LINEAR: u64 = 64;
const BUCKETS: usize = LINEAR as usize + (64 - 6) * SUB;

#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    n: u64,
    min: u64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
            n: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= 6
    let sub = ((v >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    LINEAR as usize + (exp as usize - 6) * SUB + sub
}

/// The smallest value that lands in bucket `i`.
fn lower_bound(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let j = i - LINEAR as usize;
    let exp = (j / SUB) as u32 + 6;
    let sub = (j % SUB) as u64;
    (1u64 << exp) | (sub << (exp - SUB_BITS))
}

impl Hist {
    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.n += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn min(&self) -> Option<u64> {
        (self.n > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<u64> {
        (self.n > 0).then_some(self.max)
    }

    /// Nearest-rank percentile (as `protocol::percentile`), reported as the bucket's midpoint,
    /// clamped to the exact min and max.
    pub fn percentile(&self, q: f64) -> Option<u64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 100.0) / 100.0) * self.n as f64)
            .ceil()
            .max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let lo = lower_bound(i);
                let hi = if i + 1 < BUCKETS {
                    lower_bound(i + 1)
                } else {
                    lo
                };
                let mid = lo + (hi.saturating_sub(lo)) / 2;
                return Some(mid.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_cover_values() {
        for v in [0, 1, 63, 64, 65, 100, 1000, 123_456, u64::MAX / 3, u64::MAX] {
            let i = index(v);
            assert!(lower_bound(i) <= v, "{v}");
            if i + 1 < BUCKETS {
                assert!(lower_bound(i + 1) > v, "{v}");
            }
        }
    }

    #[test]
    fn percentiles_are_close() {
        let mut h = Hist::default();
        for v in 1..=10_000u64 {
            h.record(v * 10);
        }
        let p50 = h.percentile(50.0).unwrap() as f64;
        let p99 = h.percentile(99.0).unwrap() as f64;
        assert!((p50 / 50_000.0 - 1.0).abs() < 0.04, "{p50}");
        assert!((p99 / 99_000.0 - 1.0).abs() < 0.04, "{p99}");
        assert_eq!(h.max(), Some(100_000));
        assert_eq!(h.min(), Some(10));
        let mut g = Hist::default();
        g.record(5);
        g.merge(&h);
        assert_eq!(g.count(), 10_001);
        assert_eq!(g.min(), Some(5));
        assert_eq!(Hist::default().percentile(50.0), None);
    }
}
