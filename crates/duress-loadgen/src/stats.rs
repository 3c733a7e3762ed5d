//! Percentiles over measured durations (nearest-rank on the sorted sample).

use std::time::Duration;

/// p50/p95/p99/max of a sample, in milliseconds with one decimal.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(sample: &[Duration]) -> Self {
        if sample.is_empty() {
            return Percentiles::default();
        }
        let mut v: Vec<Duration> = sample.to_vec();
        v.sort_unstable();
        let at = |p: f64| {
            // Nearest rank: the smallest value with at least p of the sample at or below it.
            let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
            ms(v[rank - 1])
        };
        Percentiles {
            count: v.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: ms(v[v.len() - 1]),
        }
    }

    /// `name_p50_ms=…` lines.
    pub fn lines(&self, name: &str) -> Vec<String> {
        vec![
            format!("{name}_p50_ms={:.1}", self.p50_ms),
            format!("{name}_p95_ms={:.1}", self.p95_ms),
            format!("{name}_p99_ms={:.1}", self.p99_ms),
            format!("{name}_max_ms={:.1}", self.max_ms),
        ]
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest-rank percentiles of 1..=100 ms are the obvious values.
    #[test]
    fn nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&v);
        assert_eq!(
            (p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(Percentiles::of(&[]).count, 0);
    }
}
