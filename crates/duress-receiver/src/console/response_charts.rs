//! Response-time distributions for the reports page: time to claim (opening → first claim) and
//! time to resolve (opening → resolution), each as counts per time bucket with its p50, p90 and
//! maximum, drawn here as an inline SVG histogram (no script, no chart library) with a table of
//! the same numbers beside it for screen readers and for print.
//!
//! Percentiles are nearest-rank: the p-th percentile of n sorted values is the value at rank
//! ⌈p·n/100⌉ (1-based), always one of the observed times, so "p90 2 min 10 s" means nine
//! incidents in ten were claimed within 2 min 10 s.

use std::fmt::Write as _;

use super::incident_view::IncidentView;
use super::pages::human_duration;

/// The buckets' upper bounds in seconds (exclusive); the last bucket is "this long or more".
/// Human steps rather than equal widths: claims take seconds to minutes, resolutions minutes
/// to hours, and both must be readable on one axis.
const BUCKET_BOUNDS_S: &[i64] = &[30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600];

/// One bar of a histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// "1–2 min", "≥ 24 h".
    pub label: &'static str,
    pub count: usize,
}

const BUCKET_LABELS: &[&str] = &[
    "< 30 s",
    "30–60 s",
    "1–2 min",
    "2–5 min",
    "5–10 min",
    "10–30 min",
    "30–60 min",
    "1–4 h",
    "4–24 h",
    "≥ 24 h",
];

/// A distribution of response times, ready for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distribution {
    /// Used in element ids: `claim`, `resolve`.
    pub key: &'static str,
    /// "Time to claim".
    pub title: &'static str,
    /// How many incidents have such a time (claimed ones, resolved ones).
    pub count: usize,
    pub p50_s: Option<i64>,
    pub p90_s: Option<i64>,
    pub max_s: Option<i64>,
    pub buckets: Vec<Bucket>,
}

impl Distribution {
    /// Builds the distribution of `values` (seconds; negatives count as 0).
    pub fn of(key: &'static str, title: &'static str, values: &[i64]) -> Self {
        let mut sorted: Vec<i64> = values.iter().map(|v| (*v).max(0)).collect();
        sorted.sort_unstable();
        let mut buckets: Vec<Bucket> = BUCKET_LABELS
            .iter()
            .map(|&label| Bucket { label, count: 0 })
            .collect();
        for v in &sorted {
            let i = BUCKET_BOUNDS_S
                .iter()
                .position(|bound| v < bound)
                .unwrap_or(BUCKET_BOUNDS_S.len());
            buckets[i].count += 1;
        }
        Distribution {
            key,
            title,
            count: sorted.len(),
            p50_s: nearest_rank(&sorted, 50),
            p90_s: nearest_rank(&sorted, 90),
            max_s: sorted.last().copied(),
            buckets,
        }
    }

    /// Time to claim of every claimed incident.
    pub fn time_to_claim(incidents: &[IncidentView]) -> Self {
        let v: Vec<i64> = incidents.iter().filter_map(|i| i.time_to_claim_s).collect();
        Distribution::of("claim", "Time to claim", &v)
    }

    /// Time to resolve of every resolved incident.
    pub fn time_to_resolve(incidents: &[IncidentView]) -> Self {
        let v: Vec<i64> = incidents
            .iter()
            .filter_map(|i| i.time_to_resolve_s)
            .collect();
        Distribution::of("resolve", "Time to resolve", &v)
    }

    pub fn p50_text(&self) -> String {
        seconds_text(self.p50_s)
    }

    pub fn p90_text(&self) -> String {
        seconds_text(self.p90_s)
    }

    pub fn max_text(&self) -> String {
        seconds_text(self.max_s)
    }

    /// The histogram as inline SVG: bars with their counts, the buckets on the x axis, the
    /// incident count on the y axis, both axes titled, and the figures above the plot. The
    /// only text in it is numbers and the fixed labels above (their `<` escaped); it is
    /// `aria-hidden` because the table beside it says the same to a screen reader.
    pub fn svg(&self) -> String {
        let (w, h) = (760.0_f64, 300.0_f64);
        let (left, right, top, bottom) = (56.0_f64, 12.0_f64, 40.0_f64, 64.0_f64);
        let plot_w = w - left - right;
        let plot_h = h - top - bottom;
        let max_count = self
            .buckets
            .iter()
            .map(|b| b.count)
            .max()
            .unwrap_or(0)
            .max(1);
        let slot = plot_w / self.buckets.len() as f64;
        let font = "font-family=\"sans-serif\" fill=\"#1f2933\"";
        let mut svg = String::with_capacity(4096);
        let _ = write!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"histogram\" id=\"histogram-{key}\" \
             viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" aria-hidden=\"true\" \
             focusable=\"false\"><rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>\
             <text x=\"{left}\" y=\"16\" {font} font-size=\"14\" font-weight=\"bold\">{title}</text>\
             <text x=\"{left}\" y=\"32\" {font} font-size=\"12\" class=\"figures\">{n} incident(s) · \
             p50 {p50} · p90 {p90} · max {max}</text>",
            key = self.key,
            title = self.title,
            n = self.count,
            p50 = self.p50_text(),
            p90 = self.p90_text(),
            max = self.max_text(),
        );
        // Axes, the y axis with ticks at 0, half and the maximum count.
        let x_axis_y = top + plot_h;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{x_axis_y}\" stroke=\"#5b6470\"/>\
             <line x1=\"{left}\" y1=\"{x_axis_y}\" x2=\"{x2}\" y2=\"{x_axis_y}\" stroke=\"#5b6470\"/>",
            x2 = left + plot_w,
        );
        let mut ticks = vec![0, max_count];
        if max_count >= 4 {
            ticks.insert(1, max_count / 2);
        }
        for t in ticks {
            let y = x_axis_y - plot_h * t as f64 / max_count as f64;
            let _ = write!(
                svg,
                "<line x1=\"{x1}\" y1=\"{y:.1}\" x2=\"{left}\" y2=\"{y:.1}\" stroke=\"#5b6470\"/>\
                 <text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\" {font} font-size=\"11\">{t}</text>",
                x1 = left - 4.0,
                tx = left - 6.0,
                ty = y + 4.0,
            );
        }
        for (i, b) in self.buckets.iter().enumerate() {
            let bar_h = plot_h * b.count as f64 / max_count as f64;
            let x = left + slot * i as f64 + slot * 0.12;
            let bw = slot * 0.76;
            let cx = x + bw / 2.0;
            let _ = write!(
                svg,
                "<rect class=\"bar\" data-count=\"{n}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" \
                 height=\"{bar_h:.1}\" fill=\"#1f5fa8\"/>\
                 <text x=\"{cx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\" {font} font-size=\"11\">{n}</text>\
                 <text x=\"{cx:.1}\" y=\"{by:.1}\" text-anchor=\"middle\" {font} font-size=\"10\">{label}</text>",
                n = b.count,
                y = x_axis_y - bar_h,
                ly = (x_axis_y - bar_h - 4.0).max(top + 10.0),
                by = x_axis_y + 16.0,
                // The one markup character in a label.
                label = b.label.replace('<', "&lt;"),
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{cx:.1}\" y=\"{ay}\" text-anchor=\"middle\" {font} font-size=\"12\">{title} \
             (from the alarm)</text>\
             <text x=\"14\" y=\"{my:.1}\" text-anchor=\"middle\" {font} font-size=\"12\" \
             transform=\"rotate(-90 14 {my:.1})\">Incidents</text></svg>",
            cx = left + plot_w / 2.0,
            ay = h - 16.0,
            title = self.title,
            my = top + plot_h / 2.0,
        );
        svg
    }
}

/// The value at rank ⌈p·n/100⌉ of sorted `values`; `None` when there are none.
fn nearest_rank(sorted: &[i64], p: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// "45 s", "2 min 10 s", "–" for none.
fn seconds_text(s: Option<i64>) -> String {
    match s {
        Some(s) => human_duration(s.saturating_mul(1000)),
        None => "–".to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_and_buckets_count_every_value_once() {
        // 10 values: p50 is the 5th, p90 the 9th.
        let values = [5, 25, 30, 59, 60, 119, 300, 3599, 3600, 100_000];
        let d = Distribution::of("claim", "Time to claim", &values);
        assert_eq!(d.count, 10);
        assert_eq!(d.p50_s, Some(60));
        assert_eq!(d.p90_s, Some(3600));
        assert_eq!(d.max_s, Some(100_000));
        let counts: Vec<usize> = d.buckets.iter().map(|b| b.count).collect();
        // <30: 5,25 · 30–60: 30,59 · 1–2 min: 60,119 · 2–5: – · 5–10: 300 · 10–30: – ·
        // 30–60 min: 3599 · 1–4 h: 3600 · 4–24 h: – · ≥24 h: 100000
        assert_eq!(counts, vec![2, 2, 2, 0, 1, 0, 1, 1, 0, 1]);
        assert_eq!(counts.iter().sum::<usize>(), values.len());
        assert_eq!(d.p50_text(), "1 min 00 s");
    }

    #[test]
    fn one_value_and_none() {
        let one = Distribution::of("resolve", "Time to resolve", &[42]);
        assert_eq!(
            (one.p50_s, one.p90_s, one.max_s),
            (Some(42), Some(42), Some(42))
        );
        let none = Distribution::of("resolve", "Time to resolve", &[]);
        assert_eq!((none.count, none.p50_s, none.max_s), (0, None, None));
        assert_eq!(none.p90_text(), "–");
        assert!(none.svg().contains("0 incident(s)"));
        // Negative (a clock stepped back) counts as 0.
        assert_eq!(Distribution::of("c", "t", &[-5]).max_s, Some(0));
    }

    #[test]
    fn the_svg_has_titled_axes_the_figures_and_one_bar_per_bucket() {
        let d = Distribution::of("claim", "Time to claim", &[10, 20, 90]);
        let svg = d.svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("class=\"bar\"").count(), BUCKET_LABELS.len());
        assert!(svg.contains("data-count=\"2\""));
        assert!(svg.contains("Time to claim (from the alarm)"));
        assert!(svg.contains(">Incidents</text>"));
        assert!(svg.contains("p50 20 s · p90 1 min 30 s · max 1 min 30 s"));
        assert!(svg.contains("&lt; 30 s") && !svg.contains("< 30"));
    }
}
