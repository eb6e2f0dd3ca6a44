//! The soak's pass/fail rules, as functions of the samples.

use serde::Serialize;

/// After warm-up, memory may end at most this much above its warm-up level.
pub const MEMORY_TOLERANCE: f64 = 0.10;
/// A "level" is the median of the samples in this many seconds before a point, so one
/// sample taken while many viewers overlap does not decide the verdict.
pub const LEVEL_WINDOW_S: f64 = 60.0;
/// Open files after every client left may exceed the baseline by this many.
pub const OPEN_FILES_ALLOWANCE: u64 = 5;

/// Memory of one service: warm-up level against end-of-churn level.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryVerdict {
    /// Median RSS of the minute ending with the warm-up.
    pub reference_kb: u64,
    /// Median RSS of the last minute of churn.
    pub end_kb: u64,
    /// Highest RSS sampled after warm-up, under churn.
    pub max_after_warmup_kb: u64,
    /// end / reference − 1, in %.
    pub change_pct: f64,
    /// Least-squares slope of RSS after warm-up, KiB per minute.
    pub slope_kb_per_min: f64,
    pub pass: bool,
}

/// `samples` are (seconds, RSS KiB) under churn; `None` without samples in both windows.
pub fn memory(
    samples: &[(f64, u64)],
    warmup_end_s: f64,
    churn_end_s: f64,
) -> Option<MemoryVerdict> {
    let reference = level(samples, warmup_end_s)?;
    let end = level(samples, churn_end_s)?;
    let after: Vec<(f64, u64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= warmup_end_s && *t <= churn_end_s)
        .collect();
    let change_pct = (end as f64 / reference.max(1) as f64 - 1.0) * 100.0;
    Some(MemoryVerdict {
        reference_kb: reference,
        end_kb: end,
        max_after_warmup_kb: after.iter().map(|(_, rss)| *rss).max().unwrap_or(end),
        change_pct,
        slope_kb_per_min: slope(&after) * 60.0,
        pass: change_pct <= MEMORY_TOLERANCE * 100.0,
    })
}

/// Median of the values sampled in (`at` − [`LEVEL_WINDOW_S`], `at`].
fn level(samples: &[(f64, u64)], at: f64) -> Option<u64> {
    let mut values: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t > at - LEVEL_WINDOW_S && *t <= at)
        .map(|(_, value)| *value)
        .collect();
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[values.len() / 2])
}

/// Least-squares slope of value over time (per second).
fn slope(points: &[(f64, u64)]) -> f64 {
    if points.len() < 2 {
        return 0.0;
    }
    let n = points.len() as f64;
    let mean_t = points.iter().map(|(t, _)| t).sum::<f64>() / n;
    let mean_v = points.iter().map(|(_, v)| *v as f64).sum::<f64>() / n;
    let covariance: f64 = points
        .iter()
        .map(|(t, v)| (t - mean_t) * (*v as f64 - mean_v))
        .sum();
    let variance: f64 = points.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance
    }
}

/// Open files of one service: before churn, at its peak, after every client left.
#[derive(Debug, Clone, Serialize)]
pub struct OpenFilesVerdict {
    pub baseline: u64,
    pub peak: u64,
    pub end: u64,
    pub pass: bool,
}

pub fn open_files(baseline: u64, peak: u64, end: u64) -> OpenFilesVerdict {
    OpenFilesVerdict {
        baseline,
        peak,
        end,
        pass: end <= baseline + OPEN_FILES_ALLOWANCE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[(f64, u64)]) -> Vec<(f64, u64)> {
        values.to_vec()
    }

    #[test]
    fn flat_memory_passes_and_growth_fails() {
        let flat: Vec<(f64, u64)> = (0..60)
            .map(|i| (i as f64 * 10.0, 50_000 + (i % 3) * 100))
            .collect();
        let verdict = memory(&flat, 300.0, 590.0).unwrap();
        assert!(verdict.pass);
        assert!(verdict.slope_kb_per_min.abs() < 50.0);

        // +100 KiB per sample: 52 800 at the warm-up's end, 55 700 at the end (+5.5 %).
        let growing: Vec<(f64, u64)> = (0..60)
            .map(|i| (i as f64 * 10.0, 50_000 + i * 100))
            .collect();
        let verdict = memory(&growing, 300.0, 590.0).unwrap();
        assert!((verdict.slope_kb_per_min - 600.0).abs() < 1.0);
        assert!(verdict.pass && verdict.change_pct > 5.0);
        // +400 KiB per sample: +20 %.
        let steeper: Vec<(f64, u64)> = (0..60)
            .map(|i| (i as f64 * 10.0, 50_000 + i * 400))
            .collect();
        assert!(!memory(&steeper, 300.0, 590.0).unwrap().pass);
    }

    #[test]
    fn levels_are_medians_of_the_last_minute() {
        let samples = series(&[(10.0, 1), (20.0, 100), (30.0, 5), (40.0, 6), (90.0, 7)]);
        assert_eq!(level(&samples, 40.0), Some(6));
        assert_eq!(level(&samples, 95.0), Some(7));
        assert_eq!(level(&samples, 5.0), None);
        assert!(memory(&samples, 5.0, 95.0).is_none());
    }

    #[test]
    fn open_files_allow_a_small_constant() {
        assert!(open_files(30, 90, 30 + OPEN_FILES_ALLOWANCE).pass);
        assert!(!open_files(30, 90, 31 + OPEN_FILES_ALLOWANCE).pass);
    }
}
