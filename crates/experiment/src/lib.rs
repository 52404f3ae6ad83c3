//! `mayfly experiment`'s evidence: what was measured in each run of each
//! variant ([`RunMeasurement`]), the comparison of every variant with the
//! baseline per metric ([`compare`]: the ratio of medians with a bootstrap
//! 95% interval, a rank test's p-value and a plain verdict), and the offline
//! HTML report with SVG plots ([`report::html`]).
//!
//! **Never knows** how runs are made (the CLI deploys the variants and
//! replays the workload), TOML, or the state store: it is numbers in, words
//! and pictures out, so that every rule here is tested on numbers alone.

pub mod report;
pub mod stats;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stats::{RatioEstimate, mann_whitney_p, median, ratio_of_medians};

/// A metric an experiment can compare. Lower is better for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Wall time from the run's start to its end, in seconds.
    Makespan,
    /// Estimated cost of the run from `[pricing]`.
    Cost,
    /// Median duration of the run's item attempts, in seconds.
    ItemP50,
    /// 95th percentile duration of the run's item attempts, in seconds.
    ItemP95,
    /// CPU time (user + system) of the run's processes on this host, in seconds.
    CpuSeconds,
    /// Failed item attempts plus items dead-lettered.
    Failures,
}

impl Metric {
    pub const ALL: [Metric; 6] =
        [Metric::Makespan, Metric::Cost, Metric::ItemP50, Metric::ItemP95, Metric::CpuSeconds, Metric::Failures];

    /// Its name in experiment files and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Makespan => "makespan",
            Metric::Cost => "cost",
            Metric::ItemP50 => "item_p50",
            Metric::ItemP95 => "item_p95",
            Metric::CpuSeconds => "cpu_seconds",
            Metric::Failures => "failures",
        }
    }

    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|metric| metric.name() == name)
    }

    /// How a value of it is written.
    pub fn format(self, value: f64) -> String {
        match self {
            Metric::Makespan | Metric::ItemP50 | Metric::ItemP95 | Metric::CpuSeconds => format_seconds(value),
            Metric::Cost => format!("{value:.4}"),
            Metric::Failures => format!("{value:.0}"),
        }
    }

    /// The words for "lower" and "higher" in a verdict.
    fn comparatives(self) -> (&'static str, &'static str) {
        match self {
            Metric::Makespan => ("faster", "slower"),
            Metric::Cost => ("cheaper", "dearer"),
            Metric::ItemP50 | Metric::ItemP95 => ("quicker per item", "slower per item"),
            Metric::CpuSeconds => ("less CPU", "more CPU"),
            Metric::Failures => ("fewer failures", "more failures"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Metric::Makespan => "makespan",
            Metric::Cost => "cost",
            Metric::ItemP50 => "median item duration",
            Metric::ItemP95 => "p95 item duration",
            Metric::CpuSeconds => "CPU time",
            Metric::Failures => "failures",
        }
    }
}

fn format_seconds(seconds: f64) -> String {
    if seconds < 1.0 { format!("{:.1} ms", seconds * 1000.0) } else { format!("{seconds:.2} s") }
}

/// What one run of one variant measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunMeasurement {
    pub variant: String,
    /// 1-based repetition.
    pub repetition: u32,
    /// Position in the experiment's (shuffled) order of runs, 1-based.
    pub order: u32,
    pub run_id: String,
    /// The run's final status (`succeeded`, `failed`, …).
    pub status: String,
    pub metrics: BTreeMap<Metric, f64>,
    /// Every item attempt's duration, in seconds (for the distribution plot).
    pub item_durations: Vec<f64>,
}

/// One metric of one variant against the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub metric: Metric,
    pub variant: String,
    pub baseline: String,
    pub runs: usize,
    pub baseline_runs: usize,
    pub median: f64,
    pub baseline_median: f64,
    /// `median / baseline_median` with its 95% interval; `None` when the
    /// baseline's median is 0 (no ratio: only the medians are compared).
    pub ratio: Option<RatioEstimate>,
    /// Two-sided Mann–Whitney p-value.
    pub p_value: Option<f64>,
    /// Whether the interval excludes 1 (or, with no ratio, the rank test is below 0.05).
    pub differs: bool,
    /// "2.1× faster (95% CI 1.9–2.3, p = 0.008)", "no clear difference (…)".
    pub verdict: String,
}

/// Every variant but `baseline` against `baseline`, for each of `metrics`.
/// Seeds are derived from `seed` per (variant, metric), so a report is
/// reproduced exactly from the same measurements.
pub fn compare(runs: &[RunMeasurement], baseline: &str, metrics: &[Metric], seed: u64) -> Vec<Comparison> {
    let mut variants: Vec<&str> = Vec::new();
    for run in runs {
        if !variants.contains(&run.variant.as_str()) {
            variants.push(&run.variant);
        }
    }
    let values = |variant: &str, metric: Metric| -> Vec<f64> {
        runs.iter().filter(|run| run.variant == variant).filter_map(|run| run.metrics.get(&metric).copied()).collect()
    };
    let mut comparisons = Vec::new();
    for (v, variant) in variants.iter().enumerate().filter(|(_, variant)| **variant != baseline) {
        for (m, &metric) in metrics.iter().enumerate() {
            let candidate = values(variant, metric);
            let reference = values(baseline, metric);
            let (Some(median_value), Some(baseline_median)) = (median(&candidate), median(&reference)) else {
                continue;
            };
            let stream = seed ^ ((v as u64) << 32) ^ m as u64;
            let ratio = ratio_of_medians(&candidate, &reference, stream);
            let p_value = mann_whitney_p(&candidate, &reference);
            let differs = match ratio {
                Some(ratio) => ratio.excludes_one(),
                None => p_value.is_some_and(|p| p < 0.05),
            };
            let verdict = verdict(metric, median_value, baseline_median, ratio, p_value, differs);
            comparisons.push(Comparison {
                metric,
                variant: (*variant).to_owned(),
                baseline: baseline.to_owned(),
                runs: candidate.len(),
                baseline_runs: reference.len(),
                median: median_value,
                baseline_median,
                ratio,
                p_value,
                differs,
                verdict,
            });
        }
    }
    comparisons
}

fn verdict(
    metric: Metric,
    median: f64,
    baseline_median: f64,
    ratio: Option<RatioEstimate>,
    p_value: Option<f64>,
    differs: bool,
) -> String {
    let p = p_value.map_or(String::new(), |p| format!(", p = {}", format_p(p)));
    let (lower, higher) = metric.comparatives();
    let Some(ratio) = ratio else {
        return if median == baseline_median {
            format!("the same {} ({} each{p})", metric.label(), metric.format(median))
        } else {
            let word = if median < baseline_median { lower } else { higher };
            let clear = if differs { "" } else { "no clear difference: " };
            format!("{clear}{} against {} ({word}{p})", metric.format(median), metric.format(baseline_median))
        };
    };
    let interval = |low: f64, high: f64| format!("95% CI {}–{}", format_ratio(low), format_ratio(high));
    if !differs {
        return format!(
            "no clear difference in {} (ratio {}, {}{p})",
            metric.label(),
            format_ratio(ratio.ratio),
            interval(ratio.low, ratio.high)
        );
    }
    match metric {
        // Times read best as "N× faster"; money and counts as a percentage.
        Metric::Makespan | Metric::ItemP50 | Metric::ItemP95 | Metric::CpuSeconds if ratio.ratio < 1.0 => {
            format!("{}× {lower} ({}{p})", format_ratio(1.0 / ratio.ratio), interval(1.0 / ratio.high, 1.0 / ratio.low))
        }
        Metric::Makespan | Metric::ItemP50 | Metric::ItemP95 | Metric::CpuSeconds => {
            format!("{}× {higher} ({}{p})", format_ratio(ratio.ratio), interval(ratio.low, ratio.high))
        }
        Metric::Cost | Metric::Failures => {
            let percent = (1.0 - ratio.ratio).abs() * 100.0;
            let word = if ratio.ratio < 1.0 { lower } else { higher };
            format!("{percent:.0}% {word} ({}{p})", interval(ratio.low, ratio.high))
        }
    }
}

fn format_ratio(ratio: f64) -> String {
    if ratio >= 10.0 { format!("{ratio:.0}") } else { format!("{ratio:.2}") }
}

fn format_p(p: f64) -> String {
    if p < 0.001 { "< 0.001".to_owned() } else { format!("{p:.3}") }
}

/// One sentence per variant: its verdicts on every metric that differs, or
/// that nothing differs, and the number of runs: "variant `indexed` is 4.1×
/// faster (95% CI 3.8–4.4, p = 0.002) and 71% cheaper (…); 10 runs each".
pub fn summaries(comparisons: &[Comparison]) -> Vec<String> {
    let mut by_variant: BTreeMap<&str, Vec<&Comparison>> = BTreeMap::new();
    for comparison in comparisons {
        by_variant.entry(&comparison.variant).or_default().push(comparison);
    }
    by_variant
        .into_iter()
        .map(|(variant, comparisons)| {
            let baseline = &comparisons[0].baseline;
            let runs = comparisons.iter().map(|c| (c.runs, c.baseline_runs)).max().unwrap_or_default();
            let runs = if runs.0 == runs.1 {
                format!("{} runs each", runs.0)
            } else {
                format!("{} runs against {}", runs.0, runs.1)
            };
            let differing: Vec<&str> = comparisons.iter().filter(|c| c.differs).map(|c| c.verdict.as_str()).collect();
            if differing.is_empty() {
                format!("variant `{variant}` shows no clear difference from `{baseline}` in any metric; {runs}")
            } else {
                format!("variant `{variant}` against `{baseline}`: {}; {runs}", differing.join(", and "))
            }
        })
        .collect()
}

/// The comparisons among `metrics` in which a variant is worse than the
/// baseline beyond the 95% interval by more than `tolerance` (a fraction:
/// 0.05 is 5%): the interval's lower end above `1 + tolerance` (or, where
/// there is no ratio, a clear difference with a higher median). What
/// `mayfly deploy --require-no-regression` refuses. A tolerance of 0 refuses
/// any regression the interval shows, however small.
pub fn regressions<'a>(comparisons: &'a [Comparison], metrics: &[Metric], tolerance: f64) -> Vec<&'a Comparison> {
    comparisons
        .iter()
        .filter(|comparison| metrics.contains(&comparison.metric))
        .filter(|comparison| match comparison.ratio {
            Some(ratio) => ratio.low > 1.0 + tolerance,
            None => comparison.differs && comparison.median > comparison.baseline_median,
        })
        .collect()
}

/// "makespan 1.52× the baseline's (95% CI 1.31–1.80)": a regression in words, ratio and interval.
pub fn describe_regression(comparison: &Comparison) -> String {
    match comparison.ratio {
        Some(ratio) => format!(
            "{} is {}× the baseline's (95% CI {}–{}; {} against {})",
            comparison.metric.name(),
            format_ratio(ratio.ratio),
            format_ratio(ratio.low),
            format_ratio(ratio.high),
            comparison.metric.format(comparison.median),
            comparison.metric.format(comparison.baseline_median)
        ),
        None => format!(
            "{} is {} against the baseline's {} (no ratio: the baseline's is 0)",
            comparison.metric.name(),
            comparison.metric.format(comparison.median),
            comparison.metric.format(comparison.baseline_median)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn runs_of(variant: &str, makespans: &[f64]) -> Vec<RunMeasurement> {
        makespans
            .iter()
            .enumerate()
            .map(|(i, &makespan)| RunMeasurement {
                variant: variant.to_owned(),
                repetition: i as u32 + 1,
                order: 0,
                run_id: format!("run-{variant}-{i}"),
                status: "succeeded".to_owned(),
                metrics: BTreeMap::from([(Metric::Makespan, makespan), (Metric::Failures, 0.0)]),
                item_durations: Vec::new(),
            })
            .collect()
    }

    /// Makespans of a noisy machine: `base` seconds times log-normal noise of about 8%.
    fn noisy(rng: &mut ChaCha8Rng, base: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                // Box–Muller from two uniforms.
                let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                base * (0.08 * z).exp()
            })
            .collect()
    }

    #[test]
    fn identical_variants_show_no_difference_in_at_least_19_of_20_seeded_experiments() {
        let mut no_difference = 0;
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(1000 + seed);
            let mut runs = runs_of("a", &noisy(&mut rng, 10.0, 10));
            runs.extend(runs_of("b", &noisy(&mut rng, 10.0, 10)));
            let comparison = &compare(&runs, "a", &[Metric::Makespan], seed)[0];
            let ratio = comparison.ratio.unwrap();
            if ratio.low <= 1.0 && 1.0 <= ratio.high {
                no_difference += 1;
            }
        }
        assert!(no_difference >= 19, "the interval included 1 in only {no_difference} of 20 experiments");
    }

    #[test]
    fn a_variant_slowed_by_30_percent_is_detected_in_every_seeded_experiment() {
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(2000 + seed);
            let mut runs = runs_of("base", &noisy(&mut rng, 10.0, 10));
            runs.extend(runs_of("slow", &noisy(&mut rng, 13.0, 10)));
            let comparison = &compare(&runs, "base", &[Metric::Makespan], seed)[0];
            let ratio = comparison.ratio.unwrap();
            assert!(comparison.differs && ratio.low > 1.0, "seed {seed}: {comparison:?}");
            assert!((ratio.ratio - 1.3).abs() < 0.12, "seed {seed}: {ratio:?}");
            assert!(comparison.verdict.contains("× slower"), "{}", comparison.verdict);
            assert!(comparison.p_value.unwrap() < 0.01, "{comparison:?}");
        }
    }

    #[test]
    fn only_a_metric_worse_beyond_its_interval_is_a_regression() {
        let mut runs = runs_of("deployed", &[1.0, 1.02, 0.98]);
        runs.extend(runs_of("new", &[4.0, 4.1, 3.9]));
        let comparisons = compare(&runs, "deployed", &[Metric::Makespan, Metric::Failures], 3);
        let found = regressions(&comparisons, &[Metric::Makespan, Metric::Cost], 0.0);
        assert_eq!(found.len(), 1, "{comparisons:?}");
        assert_eq!(found[0].metric, Metric::Makespan);
        let words = describe_regression(found[0]);
        assert!(words.starts_with("makespan is 4.00× the baseline's (95% CI "), "{words}");
        assert!(regressions(&comparisons, &[Metric::Cost], 0.0).is_empty(), "only the metrics asked about");

        let mut faster = runs_of("deployed", &[4.0, 4.1, 3.9]);
        faster.extend(runs_of("new", &[1.0, 1.02, 0.98]));
        let comparisons = compare(&faster, "deployed", &[Metric::Makespan], 3);
        assert!(regressions(&comparisons, &[Metric::Makespan], 0.0).is_empty(), "faster is no regression");
    }

    /// The deploy gate at its defaults (3 runs of each version): how often an
    /// unchanged workload on a noisy machine (8% log-normal noise) is
    /// refused with no tolerance and with 5%, and that a 30% slowdown is
    /// still refused with 5% — over 400 seeded evaluations each.
    #[test]
    fn a_tolerance_keeps_noise_from_refusing_an_unchanged_workload_and_still_refuses_30_percent() {
        let refusals = |slowdown: f64, tolerance: f64| {
            (0..400u64)
                .filter(|&seed| {
                    let mut rng = ChaCha8Rng::seed_from_u64(3000 + seed);
                    let mut runs = runs_of("deployed", &noisy(&mut rng, 10.0, 3));
                    runs.extend(runs_of("new", &noisy(&mut rng, 10.0 * slowdown, 3)));
                    let comparisons = compare(&runs, "deployed", &[Metric::Makespan], seed);
                    !regressions(&comparisons, &[Metric::Makespan], tolerance).is_empty()
                })
                .count()
        };
        let (strict, tolerant) = (refusals(1.0, 0.0), refusals(1.0, 0.05));
        eprintln!("unchanged workload refused: {strict} of 400 with no tolerance, {tolerant} with 5%");
        assert!(strict > tolerant, "a tolerance refuses less often: {strict} vs {tolerant}");
        assert!(tolerant <= 4, "an unchanged workload refused {tolerant} times in 400 with a 5% tolerance");
        let (slowed_strict, slowed) = (refusals(1.3, 0.0), refusals(1.3, 0.05));
        eprintln!("30% slower refused: {slowed_strict} of 400 with no tolerance, {slowed} with 5%");
        // Three runs a version is little evidence: even with no tolerance a
        // 30% slowdown escapes now and then; 5% must not cost much of that.
        assert!(slowed >= 300, "a 30% slowdown refused only {slowed} times in 400 with a 5% tolerance");
        assert!(slowed * 100 >= slowed_strict * 85, "5% lost too much: {slowed} vs {slowed_strict}");
    }

    #[test]
    fn verdicts_read_plainly() {
        let mut runs = runs_of("plain", &[8.0, 8.2, 7.9, 8.1, 8.0]);
        runs.extend(runs_of("indexed", &[2.0, 1.9, 2.1, 2.0, 1.95]));
        let comparisons = compare(&runs, "plain", &[Metric::Makespan, Metric::Failures], 1);
        assert_eq!(comparisons.len(), 2);
        assert!(comparisons[0].verdict.starts_with("4.00× faster (95% CI"), "{}", comparisons[0].verdict);
        assert!(!comparisons[1].differs);
        assert_eq!(comparisons[1].verdict, "the same failures (0 each, p = 1.000)");
        let summary = &summaries(&comparisons)[0];
        assert!(summary.starts_with("variant `indexed` against `plain`: 4.00× faster"), "{summary}");
        assert!(summary.ends_with("; 5 runs each"), "{summary}");
    }
}
