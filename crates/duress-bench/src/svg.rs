//! The two plots of docs/PERFORMANCE.md, written as plain SVG (no plotting dependency): the P1
//! latency distribution (histogram with the floor, p50 and p99 marked) and P3 throughput
//! against concurrency (durable ingest beside the no-op endpoint, with the goal line).

use std::fmt::Write as _;

const W: f64 = 720.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn header(title: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        W / 2.0,
        escape(title)
    );
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" step for about `n` ticks over `0..max`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn axes(s: &mut String, x_label: &str, y_label: &str) {
    let (x0, y0, x1, y1) = (LEFT, H - BOTTOM, W - RIGHT, TOP);
    let _ = write!(
        s,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"black\"/>\n\
         <line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>\n",
        (x0 + x1) / 2.0,
        H - 18.0,
        escape(x_label),
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
        escape(y_label)
    );
}

fn y_ticks(s: &mut String, y_max: f64, y: impl Fn(f64) -> f64) {
    let step = nice_step(y_max, 5.0);
    let mut v = 0.0;
    while v <= y_max * 1.0001 {
        let py = y(v);
        let _ = write!(
            s,
            "<line x1=\"{}\" y1=\"{py:.1}\" x2=\"{}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            LEFT,
            W - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            fmt_num(v)
        );
        v += step;
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Histogram of `values_ms` (up to the 99.5th percentile, the rest in the last bar) with
/// vertical marks at `marks` (label, ms).
pub fn latency_histogram(title: &str, sorted_ms: &[f64], marks: &[(&str, f64)]) -> String {
    let mut s = header(title);
    axes(&mut s, "milliseconds (press → console frame)", "alarms");
    if sorted_ms.is_empty() {
        s.push_str("</svg>\n");
        return s;
    }
    let hi_idx = ((sorted_ms.len() as f64 * 0.995).ceil() as usize).clamp(1, sorted_ms.len()) - 1;
    let x_max = marks
        .iter()
        .map(|(_, v)| *v)
        .fold(sorted_ms[hi_idx], f64::max)
        * 1.08;
    let bins = 60usize;
    let mut counts = vec![0usize; bins];
    for &v in sorted_ms {
        let b = ((v / x_max) * bins as f64) as usize;
        counts[b.min(bins - 1)] += 1;
    }
    let c_max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |v: f64| LEFT + v / x_max * pw;
    let y = |c: f64| H - BOTTOM - c / (c_max * 1.1) * ph;
    y_ticks(&mut s, c_max * 1.1, y);
    let step = nice_step(x_max, 8.0);
    let mut v = 0.0;
    while v <= x_max {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(v),
            H - BOTTOM + 16.0,
            fmt_num(v)
        );
        v += step;
    }
    let bw = pw / bins as f64;
    for (i, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#4a7ebb\"/>",
            LEFT + i as f64 * bw + 0.5,
            y(c as f64),
            (bw - 1.0).max(0.5),
            H - BOTTOM - y(c as f64)
        );
    }
    let colors = ["#c0392b", "#27ae60", "#8e44ad", "#d35400"];
    for (i, (label, at)) in marks.iter().enumerate() {
        let c = colors[i % colors.len()];
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"{c}\" stroke-width=\"2\" stroke-dasharray=\"5,3\"/>\n\
             <text x=\"{3:.1}\" y=\"{4}\" fill=\"{c}\">{5} {6:.2} ms</text>\n",
            x(*at),
            TOP,
            H - BOTTOM,
            x(*at) + 4.0,
            TOP + 14.0 + 14.0 * i as f64,
            escape(label),
            at
        );
    }
    s.push_str("</svg>\n");
    s
}

/// One line of the throughput chart.
#[derive(Debug, Clone)]
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub values: Vec<f64>,
}

/// Lines over categorical x values (concurrency levels), with an optional goal line.
pub fn throughput_chart(
    title: &str,
    x_values: &[usize],
    series: &[Series<'_>],
    goal: Option<(&str, f64)>,
) -> String {
    let mut s = header(title);
    axes(
        &mut s,
        "concurrent requests (connections)",
        "requests per second",
    );
    let y_max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .chain(goal.map(|(_, g)| g))
        .fold(1.0, f64::max)
        * 1.1;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let n = x_values.len().max(1);
    let x = |i: usize| LEFT + (i as f64 + 0.5) / n as f64 * pw;
    let y = |v: f64| H - BOTTOM - v / y_max * ph;
    y_ticks(&mut s, y_max, y);
    for (i, xv) in x_values.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{xv}</text>",
            x(i),
            H - BOTTOM + 16.0
        );
    }
    if let Some((label, g)) = goal {
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#c0392b\" stroke-dasharray=\"6,4\"/>\n\
             <text x=\"{2}\" y=\"{3:.1}\" fill=\"#c0392b\">{4}</text>\n",
            y(g),
            W - RIGHT,
            LEFT + 6.0,
            y(g) - 5.0,
            escape(label)
        );
    }
    for (k, line) in series.iter().enumerate() {
        let pts: Vec<String> = line
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
            pts.join(" "),
            line.color
        );
        for (i, v) in line.values.iter().enumerate() {
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{}\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\" fill=\"{}\">{:.0}</text>\n",
                x(i),
                y(*v),
                line.color,
                x(i),
                y(*v) - 7.0,
                line.color,
                v
            );
        }
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            LEFT + 14.0,
            TOP + 0.45 * ph + 18.0 * k as f64,
            line.color,
            LEFT + 32.0,
            TOP + 0.45 * ph + 10.0 + 18.0 * k as f64,
            escape(line.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both plots are well-formed enough: one root, the marks and series present, text escaped.
    #[test]
    fn plots_render() {
        let h = latency_histogram("P1 <test>", &[1.0, 1.5, 2.0, 9.0], &[("floor", 0.8)]);
        assert!(h.starts_with("<svg") && h.trim_end().ends_with("</svg>"));
        assert!(h.contains("floor 0.80 ms") && h.contains("P1 &lt;test&gt;"));
        let t = throughput_chart(
            "P3",
            &[1, 4],
            &[Series {
                name: "events",
                color: "#000",
                values: vec![10.0, 20.0],
            }],
            Some(("goal", 15.0)),
        );
        assert!(t.contains("<polyline") && t.contains("goal"));
        assert_eq!(nice_step(97.0, 5.0), 20.0);
    }
}
