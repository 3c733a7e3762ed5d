//! Human durations (`90s`, `5m`, `24h`, `7d`): a leaf module, so both the command line
//! (`settings`) and the configuration file (`config`) parse them the same way.

use std::time::Duration;

/// Parses a human duration: a whole number followed by `s`, `m`, `h` or `d` (`90s`, `5m`,
/// `24h`, `7d`). Used by the command line for `--expires` and `--grouping-window`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: s, m, h or d (e.g. 24h)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use s, m, h or d")),
    };
    n.checked_mul(factor)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}
