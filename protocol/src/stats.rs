//! Order statistics shared by the agent (latency summaries) and the harness (reports, compare),
//! so both sides compute p50/p99 the same way.

use serde::{Deserialize, Serialize};

/// Nearest-rank percentile of already sorted samples; `q` in 0..=100. `None` when empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 100.0);
    // Nearest rank: the smallest value with at least q% of the samples at or below it.
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
}

/// Median, spread and tail of a sample set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    /// Median absolute deviation: a spread that one outlier cannot blow up.
    pub mad: f64,
}

impl Summary {
    /// Summarize samples in any order. NaNs are ignored. `None` when nothing is left.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let p50 = median_sorted(&v);
        let mut dev: Vec<f64> = v.iter().map(|x| (x - p50).abs()).collect();
        dev.sort_by(f64::total_cmp);
        Some(Summary {
            n: v.len(),
            min: v[0],
            p50,
            p99: percentile(&v, 99.0)?,
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
            mad: median_sorted(&dev),
        })
    }
}

fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    }

    #[test]
    fn summary_is_robust() {
        let s = Summary::of(&[3.0, 1.0, 2.0, 1000.0, f64::NAN]).unwrap();
        assert_eq!(s.n, 4);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 1000.0);
        assert_eq!(s.p50, 2.5);
        assert_eq!(s.mad, 1.0);
        assert!(Summary::of(&[]).is_none());
    }
}
