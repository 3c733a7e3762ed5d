//! Percentiles (nearest rank) over measured durations, in milliseconds.

use std::time::Duration;

use crate::Figures;

/// A sorted sample in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    sorted_ms: Vec<f64>,
}

impl Sample {
    pub fn new(durations: &[Duration]) -> Self {
        let mut sorted_ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        sorted_ms.sort_by(f64::total_cmp);
        Sample { sorted_ms }
    }

    pub fn len(&self) -> usize {
        self.sorted_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted_ms.is_empty()
    }

    /// The smallest value with at least `p` (0..=1) of the sample at or below it; 0 when empty.
    pub fn pct(&self, p: f64) -> f64 {
        if self.sorted_ms.is_empty() {
            return 0.0;
        }
        let n = self.sorted_ms.len();
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        self.sorted_ms[rank - 1]
    }

    pub fn p50(&self) -> f64 {
        self.pct(0.50)
    }

    pub fn p95(&self) -> f64 {
        self.pct(0.95)
    }

    pub fn p99(&self) -> f64 {
        self.pct(0.99)
    }

    pub fn max(&self) -> f64 {
        self.sorted_ms.last().copied().unwrap_or(0.0)
    }

    pub fn sorted_ms(&self) -> &[f64] {
        &self.sorted_ms
    }

    /// `prefix_p50_ms`, `_p95_ms`, `_p99_ms`, `_max_ms` with three decimals.
    pub fn put(&self, figures: &mut Figures, prefix: &str) {
        figures.num(&format!("{prefix}_p50_ms"), self.p50(), 3);
        figures.num(&format!("{prefix}_p95_ms"), self.p95(), 3);
        figures.num(&format!("{prefix}_p99_ms"), self.p99(), 3);
        figures.num(&format!("{prefix}_max_ms"), self.max(), 3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest-rank percentiles of 1..=100 ms are the obvious values; empty is zero.
    #[test]
    fn nearest_rank() {
        let v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = Sample::new(&v);
        assert_eq!(
            (s.p50(), s.p95(), s.p99(), s.max()),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(Sample::new(&[]).p99(), 0.0);
    }
}
