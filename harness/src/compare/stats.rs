//! The Mann–Whitney U test (two-sided), deciding whether two sample sets differ in location.
//! Chosen over a bootstrap because it is deterministic without a seed, makes no normality
//! assumption (latencies are skewed), and its exact form is cheap for the small sample counts
//! mmx has (repeats × containers).
//!
//! Exact p-values come from the null distribution of U, counted by the recurrence
//! `N(m, n, u) = N(m-1, n, u-n) + N(m, n-1, u)` (Mann & Whitney 1947), for up to
//! [`EXACT_MAX`] samples a side without ties; otherwise the normal approximation with tie and
//! continuity correction.

use std::collections::HashMap;

/// Largest sample count per side for the exact distribution.
pub const EXACT_MAX: usize = 25;

/// Caches exact null distributions by (m, n): a comparison of 5,000 cells uses a handful.
#[derive(Default)]
pub struct MannWhitney {
    exact: HashMap<(usize, usize), Vec<f64>>,
}

impl MannWhitney {
    /// Two-sided p-value that `a` and `b` come from the same distribution. `None` when a side is
    /// empty. NaNs are ignored.
    pub fn p_value(&mut self, a: &[f64], b: &[f64]) -> Option<f64> {
        let a: Vec<f64> = a.iter().copied().filter(|x| !x.is_nan()).collect();
        let b: Vec<f64> = b.iter().copied().filter(|x| !x.is_nan()).collect();
        let (m, n) = (a.len(), b.len());
        if m == 0 || n == 0 {
            return None;
        }
        // Rank the pooled samples, ties getting their average rank.
        let mut pooled: Vec<(f64, bool)> = a
            .iter()
            .map(|x| (*x, true))
            .chain(b.iter().map(|x| (*x, false)))
            .collect();
        pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
        let total = pooled.len();
        let mut rank_sum_a = 0.0;
        let mut tie_term = 0.0;
        let mut i = 0;
        while i < total {
            let mut j = i;
            while j + 1 < total && pooled[j + 1].0 == pooled[i].0 {
                j += 1;
            }
            let t = (j - i + 1) as f64;
            let avg = (i + j) as f64 / 2.0 + 1.0;
            rank_sum_a += avg * pooled[i..=j].iter().filter(|p| p.1).count() as f64;
            tie_term += t * t * t - t;
            i = j + 1;
        }
        let u = rank_sum_a - (m * (m + 1)) as f64 / 2.0;
        let (mf, nf) = (m as f64, n as f64);
        if tie_term == 0.0 && m <= EXACT_MAX && n <= EXACT_MAX {
            let cdf = self.cdf(m, n);
            // U is an integer without ties.
            let u = u.round() as usize;
            let lower = cdf[u];
            let upper = 1.0 - if u == 0 { 0.0 } else { cdf[u - 1] };
            return Some((2.0 * lower.min(upper)).min(1.0));
        }
        let nn = mf + nf;
        let var = mf * nf / 12.0 * ((nn + 1.0) - tie_term / (nn * (nn - 1.0)));
        if var <= 0.0 {
            // Every sample equal: no evidence of a difference.
            return Some(1.0);
        }
        let z = ((u - mf * nf / 2.0).abs() - 0.5).max(0.0) / var.sqrt();
        Some((2.0 * normal_sf(z)).min(1.0))
    }

    /// Cumulative null distribution P(U ≤ u), u = 0..=m·n.
    fn cdf(&mut self, m: usize, n: usize) -> &[f64] {
        self.exact.entry((m, n)).or_insert_with(|| {
            let counts = u_counts(m, n);
            let total: f64 = counts.iter().sum();
            let mut acc = 0.0;
            counts
                .iter()
                .map(|c| {
                    acc += c / total;
                    acc
                })
                .collect()
        })
    }
}

/// Number of orderings of m a's and n b's giving each U (count of (a, b) pairs with b < a).
fn u_counts(m: usize, n: usize) -> Vec<f64> {
    // table[i][j] is the distribution for i a's and j b's; built up row by row.
    let mut table: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); n + 1]; m + 1];
    for i in 0..=m {
        for j in 0..=n {
            let mut d = vec![0.0; i * j + 1];
            if i == 0 || j == 0 {
                d[0] = 1.0;
            } else {
                // Largest element is an a (beats all j b's) or a b.
                for (u, slot) in d.iter_mut().enumerate() {
                    let from_a = if u >= j {
                        table[i - 1][j].get(u - j).copied().unwrap_or(0.0)
                    } else {
                        0.0
                    };
                    let from_b = table[i][j - 1].get(u).copied().unwrap_or(0.0);
                    *slot = from_a + from_b;
                }
            }
            table[i][j] = d;
        }
    }
    std::mem::take(&mut table[m][n])
}

/// Upper tail of the standard normal, via erfc (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7).
fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let r = poly * (-x * x).exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_matches_tables() {
        let mut mw = MannWhitney::default();
        // Complete separation, 3 vs 3: p = 2 / C(6,3) = 0.1 (two-sided).
        let p = mw.p_value(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
        assert!((p - 0.1).abs() < 1e-12, "{p}");
        // 4 vs 4 separated: 2 / 70.
        let p = mw
            .p_value(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0])
            .unwrap();
        assert!((p - 2.0 / 70.0).abs() < 1e-12, "{p}");
        // Interleaved: no evidence.
        let p = mw
            .p_value(&[1.0, 3.0, 5.0, 7.0], &[2.0, 4.0, 6.0, 8.0])
            .unwrap();
        assert!(p > 0.5, "{p}");
        // One sample a side can never be significant.
        assert_eq!(mw.p_value(&[1.0], &[100.0]), Some(1.0));
        assert_eq!(mw.p_value(&[], &[1.0]), None);
    }

    #[test]
    fn counts_sum_to_binomial() {
        let c = u_counts(5, 7);
        assert_eq!(c.len(), 36);
        assert_eq!(c.iter().sum::<f64>(), 792.0); // C(12, 5)
        assert_eq!(c[0], 1.0);
        assert_eq!(c[35], 1.0);
    }

    #[test]
    fn normal_approximation_with_ties() {
        let mut mw = MannWhitney::default();
        let a: Vec<f64> = (0..40).map(|i| f64::from(i % 5)).collect();
        let b: Vec<f64> = (0..40).map(|i| f64::from(i % 5) + 3.0).collect();
        assert!(mw.p_value(&a, &b).unwrap() < 1e-6);
        assert!(mw.p_value(&a, &a).unwrap() > 0.9);
        assert_eq!(mw.p_value(&[2.0; 30], &[2.0; 30]), Some(1.0));
        assert!((normal_sf(1.959_964) - 0.025).abs() < 1e-4);
    }
}
