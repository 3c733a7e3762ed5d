//! P2: the tray agent's idle footprint (release, in the tray, idle): anonymous RSS, CPU % of
//! one core, bytes per minute to the receiver, and whether a web process exists. Measured by the
//! tray's own script, `scripts/bench-footprint`, whose lines are parsed here; it needs the
//! release `duress-agent` (the script builds it when run by itself).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Figures, Options};

/// Where the release binaries of this run live (the bench binary's own directory).
pub fn release_dir() -> Option<PathBuf> {
    std::env::current_exe().ok()?.parent().map(Path::to_owned)
}

/// The release tray agent, when it has been built into the same target directory.
pub fn tray_agent() -> Result<PathBuf, String> {
    let dir = release_dir().ok_or("cannot locate the bench binary")?;
    let bin = dir.join("duress-agent");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is not built (cargo build --release -p duress-agent --features tauri/custom-protocol)",
            bin.display()
        ))
    }
}

pub fn run(opts: &Options, figures: &mut Figures) {
    match measure(opts) {
        Ok(f) => {
            figures.put("p2_status", "measured");
            figures.num("p2_idle_s", f.idle_s, 0);
            figures.num("p2_anon_rss_mb", f.anon_rss_mb, 1);
            figures.num("p2_cpu_pct", f.cpu_pct, 3);
            figures.num("p2_bytes_per_min", f.bytes_per_min, 0);
            figures.put("p2_web_processes", &f.web);
        }
        Err(reason) => {
            figures.put("p2_status", format!("unavailable({reason})"));
            figures.put("p2_anon_rss_mb", "n/a");
        }
    }
}

#[derive(Debug, Default)]
struct Footprint {
    idle_s: f64,
    anon_rss_mb: f64,
    cpu_pct: f64,
    bytes_per_min: f64,
    web: String,
}

fn measure(opts: &Options) -> Result<Footprint, String> {
    tray_agent()?;
    let script = crate::workspace_root()
        .join("scripts")
        .join("bench-footprint");
    if !script.exists() {
        return Err(format!("{} does not exist", script.display()));
    }
    let target = release_dir()
        .and_then(|d| d.parent().map(Path::to_owned))
        .ok_or("no target directory")?;
    let idle_s = opts.pick(10, 60);
    // Bounded: the script itself sleeps SETTLE + DURATION seconds.
    let out = Command::new("timeout")
        .arg(format!("{}", idle_s + 120))
        .arg(&script)
        .env("CARGO_TARGET_DIR", &target)
        .env("DURATION", idle_s.to_string())
        .env("SETTLE", opts.pick(5, 15).to_string())
        .current_dir(crate::workspace_root())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").to_owned();
        return Err(format!("bench-footprint failed: {last}"));
    }
    parse(&text, idle_s as f64).ok_or_else(|| format!("unexpected bench-footprint output: {text}"))
}

/// The first number on the line that starts with `label`.
fn number_after(text: &str, label: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.trim_start().starts_with(label))?;
    let rest = line.split_once(':')?.1;
    rest.split_whitespace().find_map(|w| w.parse::<f64>().ok())
}

fn parse(text: &str, idle_s: f64) -> Option<Footprint> {
    Some(Footprint {
        idle_s,
        anon_rss_mb: number_after(text, "anonymous RSS")?,
        cpu_pct: number_after(text, "CPU")?,
        bytes_per_min: number_after(text, "bytes sent")?,
        web: text
            .lines()
            .find(|l| l.starts_with("web processes"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".into(), |(_, v)| v.trim().to_owned()),
    })
}

/// Not used by P2 itself: a bound for the tray start in P1b.
pub const TRAY_START_TIMEOUT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    /// The script's human-readable lines parse into the figures.
    #[test]
    fn parses_bench_footprint_output() {
        let text = "duress-agent 0.1.0, release, idle 60s\n\
                    anonymous RSS : 24.3 MB (RSS 110.0 MB)\n\
                    CPU           : 0.150 % of one core\n\
                    bytes sent    : 312 B/min (TLS bytes agent → receiver)\n\
                    web processes : none\n";
        let f = parse(text, 60.0).unwrap_or_default();
        assert_eq!(
            (f.anon_rss_mb, f.cpu_pct, f.bytes_per_min),
            (24.3, 0.15, 312.0)
        );
        assert_eq!(f.web, "none");
    }
}
