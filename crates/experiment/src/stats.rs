//! The statistics of a comparison: medians, a percentile bootstrap of the
//! ratio of two medians, and the Mann–Whitney U (Wilcoxon rank-sum) test.
//!
//! Why these: run times are skewed and have outliers (a machine's other load),
//! so a median compares better than a mean; the ratio of medians reads as "2×
//! faster"; the bootstrap needs no assumption about the distribution; the rank
//! test says how likely a difference this large is between samples of one
//! distribution, again without assuming its shape. Every random draw comes
//! from a seeded generator, so a report can be reproduced exactly.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Resamples drawn for a bootstrap interval.
pub const BOOTSTRAP_RESAMPLES: usize = 4_000;

/// The median of `values` (the mean of the middle two for an even count);
/// `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    quantile(values, 0.5)
}

/// The `q` quantile of `values` by linear interpolation between order
/// statistics (type 7, as R's default and NumPy's); `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(quantile_of_sorted(&sorted, q))
}

fn quantile_of_sorted(sorted: &[f64], q: f64) -> f64 {
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let fraction = position - below as f64;
    sorted[below] + (sorted[above] - sorted[below]) * fraction
}

/// A ratio of medians, `candidate / baseline`, with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RatioEstimate {
    pub ratio: f64,
    pub low: f64,
    pub high: f64,
}

impl RatioEstimate {
    /// Whether the interval excludes 1: the samples differ at the 95% level.
    pub fn excludes_one(&self) -> bool {
        self.high < 1.0 || self.low > 1.0
    }
}

/// The ratio of the medians of `candidate` and `baseline` with a 95% percentile
/// bootstrap interval (each sample resampled with replacement on its own,
/// [`BOOTSTRAP_RESAMPLES`] times, from a generator seeded with `seed`).
/// `None` when a sample is empty or a median is zero (no ratio exists; a
/// caller compares differences there instead).
pub fn ratio_of_medians(candidate: &[f64], baseline: &[f64], seed: u64) -> Option<RatioEstimate> {
    let ratio = median(candidate)? / nonzero(median(baseline)?)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ratios = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    let mut a = vec![0.0; candidate.len()];
    let mut b = vec![0.0; baseline.len()];
    for _ in 0..BOOTSTRAP_RESAMPLES {
        resample(candidate, &mut a, &mut rng);
        resample(baseline, &mut b, &mut rng);
        let (Some(top), Some(bottom)) = (median(&a), median(&b).and_then(nonzero)) else { continue };
        ratios.push(top / bottom);
    }
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    Some(RatioEstimate { ratio, low: quantile_of_sorted(&ratios, 0.025), high: quantile_of_sorted(&ratios, 0.975) })
}

fn nonzero(value: f64) -> Option<f64> {
    (value != 0.0).then_some(value)
}

fn resample(from: &[f64], into: &mut [f64], rng: &mut ChaCha8Rng) {
    for slot in into.iter_mut() {
        *slot = from[rng.random_range(0..from.len())];
    }
}

/// The two-sided p-value of the Mann–Whitney U test of `a` against `b`:
/// exact (every arrangement of the ranks counted) when both samples are
/// small and have no ties, else the normal approximation with the tie
/// correction and a continuity correction. `None` when a sample is empty.
pub fn mann_whitney_p(a: &[f64], b: &[f64]) -> Option<f64> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    // Rank the pooled sample, ties sharing their mean rank.
    let mut pooled: Vec<(f64, bool)> = a.iter().map(|&v| (v, true)).chain(b.iter().map(|&v| (v, false))).collect();
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < pooled.len() {
        let mut j = i;
        while j + 1 < pooled.len() && pooled[j + 1].0 == pooled[i].0 {
            j += 1;
        }
        let tied = (j - i + 1) as f64;
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_a += mean_rank * pooled[i..=j].iter().filter(|(_, in_a)| *in_a).count() as f64;
        tie_term += tied * tied * tied - tied;
        i = j + 1;
    }
    let u_a = rank_sum_a - (n1 * (n1 + 1)) as f64 / 2.0;
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let mean = n1f * n2f / 2.0;
    if tie_term == 0.0 && n1 <= 30 && n2 <= 30 {
        return Some(exact_two_sided(n1, n2, u_a.min(n1f * n2f - u_a)));
    }
    let n = n1f + n2f;
    let variance = n1f * n2f / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if variance <= 0.0 {
        return Some(1.0);
    }
    let z = ((u_a - mean).abs() - 0.5).max(0.0) / variance.sqrt();
    Some((2.0 * normal_upper_tail(z)).min(1.0))
}

/// P(U ≤ u_small) × 2 under the null, from the count of arrangements of
/// `n1` and `n2` ranks giving each U (a dynamic program over sample sizes).
fn exact_two_sided(n1: usize, n2: usize, u_small: f64) -> f64 {
    let max_u = n1 * n2;
    // counts[i][j][u]: arrangements of i and j items with statistic u, built up row by row.
    let mut previous: Vec<Vec<f64>> = vec![vec![1.0]; n2 + 1];
    for i in 1..=n1 {
        let mut current: Vec<Vec<f64>> = Vec::with_capacity(n2 + 1);
        current.push(vec![1.0]);
        for j in 1..=n2 {
            // The largest value is either from the first sample (adds j to U) or the second.
            let mut row = vec![0.0; i * j + 1];
            for (u, count) in previous[j].iter().enumerate() {
                row[u + j] += count;
            }
            for (u, count) in current[j - 1].iter().enumerate() {
                row[u] += count;
            }
            current.push(row);
        }
        previous = current;
    }
    let counts = &previous[n2];
    let total: f64 = counts.iter().sum();
    let limit = u_small.floor() as usize;
    let tail: f64 = counts.iter().take(limit.min(max_u) + 1).sum();
    (2.0 * tail / total).min(1.0)
}

/// P(Z > z) for a standard normal Z (Abramowitz and Stegun 7.1.26 through erfc; error under 1.5e-7).
fn normal_upper_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    0.5 * poly * (-x * x).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_order_statistics() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.95), Some(4.8));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn the_exact_rank_test_matches_published_values() {
        // Completely separated samples of 5 and 5: P = 2/252 = 0.00794 (two-sided).
        let p = mann_whitney_p(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0]).unwrap();
        assert!((p - 2.0 / 252.0).abs() < 1e-12, "{p}");
        // Interleaved samples: no evidence of a difference.
        let p = mann_whitney_p(&[1.0, 3.0, 5.0, 7.0], &[2.0, 4.0, 6.0, 8.0]).unwrap();
        assert!(p > 0.5, "{p}");
        // 3 against 3, separated: 2/20.
        let p = mann_whitney_p(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
        assert!((p - 0.1).abs() < 1e-12, "{p}");
    }

    #[test]
    fn the_normal_approximation_handles_ties_and_agrees_with_the_exact_test() {
        let a: Vec<f64> = (0..40).map(|i| f64::from(i % 10)).collect();
        let b: Vec<f64> = (0..40).map(|i| f64::from(i % 10) + 3.0).collect();
        let p = mann_whitney_p(&a, &b).unwrap();
        assert!(p < 0.001, "{p}");
        let same = mann_whitney_p(&a, &a).unwrap();
        assert!(same > 0.9, "{same}");
        assert!((normal_upper_tail(1.959_964) - 0.025).abs() < 1e-6);
    }

    #[test]
    fn a_ratio_interval_brackets_the_ratio_and_is_reproducible() {
        let slow = [10.2, 10.5, 9.9, 10.1, 10.4, 10.0];
        let fast = [5.1, 5.0, 4.9, 5.3, 5.2, 5.0];
        let estimate = ratio_of_medians(&slow, &fast, 7).unwrap();
        assert!((estimate.ratio - 2.0).abs() < 0.1, "{estimate:?}");
        assert!(estimate.low <= estimate.ratio && estimate.ratio <= estimate.high, "{estimate:?}");
        assert!(estimate.excludes_one());
        assert_eq!(ratio_of_medians(&slow, &fast, 7), Some(estimate), "same seed, same interval");
        assert_eq!(ratio_of_medians(&slow, &[0.0, 0.0], 7), None);
    }
}
