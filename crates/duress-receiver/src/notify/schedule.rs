//! Protection schedules: when a station is expected to be protected, so that its going offline
//! is trouble worth a notification (an office PC switched off at night is not). A schedule is
//! the union of weekly windows (`[[schedules]]` entries sharing a name), each in an IANA time
//! zone evaluated with jiff (daylight saving included); `supervision.rules` map a station,
//! building or site to a schedule. Without a schedule a station is always protected.
//!
//! The sweep asks [`super::Plan`] (`NotifyPlanner::supervised`) with the sweep's own clock
//! reading, so a test can evaluate any instant. A station offline outside its schedule is not
//! recorded as an outage; if it is still offline when its schedule begins, that sweep notifies.

use std::collections::BTreeMap;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use time::OffsetDateTime;

use crate::config::{ProtectionRule, ScheduleConfig, SupervisionConfig};
use crate::store::NotificationFacts;

/// The reserved schedule name: protected at every instant.
pub const ALWAYS: &str = "always";

/// One weekly window.
#[derive(Debug, Clone)]
struct Window {
    /// Days the window starts on.
    days: [bool; 7],
    from: Time,
    /// `None`: the end of the day (`24:00`).
    to: Option<Time>,
    tz: TimeZone,
}

fn day_index(d: Weekday) -> usize {
    usize::from(d.to_monday_zero_offset().unsigned_abs())
}

impl Window {
    fn contains(&self, at: jiff::Timestamp) -> bool {
        let local = at.to_zoned(self.tz.clone());
        let now = local.time();
        let today = day_index(local.weekday());
        let yesterday = (today + 6) % 7;
        match self.to {
            // `from` .. end of the day.
            None => self.days[today] && now >= self.from,
            Some(to) if to > self.from => self.days[today] && now >= self.from && now < to,
            // Past midnight: the evening of a listed day, or the early hours after one.
            Some(to) => {
                (self.days[today] && now >= self.from) || (self.days[yesterday] && now < to)
            }
        }
    }
}

fn parse_days(days: &[String]) -> Result<[bool; 7], String> {
    let mut out = [false; 7];
    if days.is_empty() {
        return Err("days: name at least one day".into());
    }
    for d in days {
        let set: &[usize] = match d.to_ascii_lowercase().as_str() {
            "mon" => &[0],
            "tue" => &[1],
            "wed" => &[2],
            "thu" => &[3],
            "fri" => &[4],
            "sat" => &[5],
            "sun" => &[6],
            "weekdays" => &[0, 1, 2, 3, 4],
            "weekend" => &[5, 6],
            "daily" => &[0, 1, 2, 3, 4, 5, 6],
            other => {
                return Err(format!(
                    "days: {other:?} is not a day (mon … sun, weekdays, weekend, daily)"
                ));
            }
        };
        for &i in set {
            out[i] = true;
        }
    }
    Ok(out)
}

/// `HH:MM` (two digits each); `24:00` only where `end` allows it (→ `None`).
fn parse_time(what: &str, text: &str, end: bool) -> Result<Option<Time>, String> {
    let bad = || {
        format!(
            "{what}: {text:?} is not HH:MM (00:00 to 23:59{})",
            if end { ", or 24:00" } else { "" }
        )
    };
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    if end && h == 24 && m == 0 {
        return Ok(None);
    }
    Time::new(h, m, 0, 0).map(Some).map_err(|_| bad())
}

/// Every schedule of a configuration, parsed (time zones looked up once, at start).
#[derive(Debug, Clone, Default)]
pub struct Schedules {
    by_name: BTreeMap<String, Vec<Window>>,
}

impl Schedules {
    /// Parses and checks `[[schedules]]`; the error names the schedule and the key.
    pub fn from_config(entries: &[ScheduleConfig]) -> Result<Self, String> {
        let mut by_name: BTreeMap<String, Vec<Window>> = BTreeMap::new();
        for e in entries {
            let at = |what: &str| format!("schedule {:?}: {what}", e.name);
            if e.name.is_empty() || e.name == ALWAYS {
                return Err(at("choose another name (\"always\" is built in)"));
            }
            let days = parse_days(&e.days).map_err(|m| at(&m))?;
            let from = parse_time("from", &e.from, false)
                .map_err(|m| at(&m))?
                .unwrap_or(Time::midnight());
            let to = parse_time("to", &e.to, true).map_err(|m| at(&m))?;
            if to == Some(from) {
                return Err(at(
                    "from and to are the same time (use 00:00 to 24:00 for a whole day)",
                ));
            }
            let tz = TimeZone::get(&e.timezone).map_err(|err| {
                at(&format!(
                    "timezone {:?} is not a known IANA time zone ({err})",
                    e.timezone
                ))
            })?;
            by_name
                .entry(e.name.clone())
                .or_default()
                .push(Window { days, from, to, tz });
        }
        Ok(Schedules { by_name })
    }

    pub fn knows(&self, name: &str) -> bool {
        name == ALWAYS || self.by_name.contains_key(name)
    }

    pub fn names(&self) -> String {
        std::iter::once(ALWAYS)
            .chain(self.by_name.keys().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether schedule `name` protects at `at` (an unknown name — refused at start — counts
    /// as always: supervising too much is the safe side).
    pub fn active(&self, name: &str, at: OffsetDateTime) -> bool {
        let Some(windows) = self.by_name.get(name) else {
            return true;
        };
        let Ok(ts) = jiff::Timestamp::from_nanosecond(at.unix_timestamp_nanos()) else {
            return true;
        };
        windows.iter().any(|w| w.contains(ts))
    }
}

fn rule_matches(rule: &ProtectionRule, facts: &NotificationFacts) -> bool {
    let loc = &facts.location;
    rule.station.as_deref().is_none_or(|s| s == facts.device_id)
        && rule
            .building
            .as_deref()
            .is_none_or(|b| loc.bld.as_deref() == Some(b))
        && rule
            .site
            .as_deref()
            .is_none_or(|s| loc.nam.as_deref() == Some(s))
}

/// The schedule that protects the station of `facts`: the first matching rule's, else the
/// supervision default, else always.
pub fn schedule_for<'a>(sup: &'a SupervisionConfig, facts: &NotificationFacts) -> &'a str {
    sup.rules
        .iter()
        .find(|r| rule_matches(r, facts))
        .map(|r| r.schedule.as_str())
        .or(sup.schedule.as_deref())
        .unwrap_or(ALWAYS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn schedules(text: &str) -> Schedules {
        let entries: Vec<ScheduleConfig> =
            toml::from_str::<BTreeMap<String, Vec<ScheduleConfig>>>(text).unwrap()["schedules"]
                .clone();
        Schedules::from_config(&entries).unwrap()
    }

    #[test]
    fn windows_follow_the_local_clock_and_daylight_saving() {
        let s = schedules(
            r#"
[[schedules]]
name = "office"
days = ["weekdays"]
from = "07:00"
to = "19:00"
timezone = "America/Chicago"
[[schedules]]
name = "nights"
days = ["fri"]
from = "22:00"
to = "06:00"
timezone = "Europe/Berlin"
"#,
        );
        // Tue 2026-12-01 (CST, UTC-6): 12:59 UTC is 06:59 local, 13:00 UTC is 07:00.
        assert!(!s.active("office", datetime!(2026-12-01 12:59 UTC)));
        assert!(s.active("office", datetime!(2026-12-01 13:00 UTC)));
        assert!(s.active("office", datetime!(2026-12-02 00:59 UTC)));
        assert!(!s.active("office", datetime!(2026-12-02 01:00 UTC)));
        // In July (CDT, UTC-5) the same local 07:00 is 12:00 UTC.
        assert!(s.active("office", datetime!(2026-07-07 12:00 UTC)));
        // Saturday: not protected.
        assert!(!s.active("office", datetime!(2026-12-05 15:00 UTC)));
        // Friday 22:00 Berlin (CET, UTC+1) to Saturday 06:00.
        assert!(!s.active("nights", datetime!(2026-12-04 20:59 UTC)));
        assert!(s.active("nights", datetime!(2026-12-04 21:00 UTC)));
        assert!(s.active("nights", datetime!(2026-12-05 04:59 UTC)));
        assert!(!s.active("nights", datetime!(2026-12-05 05:00 UTC)));
        // Thursday night is not Friday night.
        assert!(!s.active("nights", datetime!(2026-12-03 23:00 UTC)));
        assert!(s.active(ALWAYS, datetime!(2026-12-05 15:00 UTC)));
    }

    #[test]
    fn bad_schedules_are_refused_by_name() {
        let bad = |days: &str, from: &str, to: &str, tz: &str| {
            Schedules::from_config(&[ScheduleConfig {
                name: "x".into(),
                days: vec![days.into()],
                from: from.into(),
                to: to.into(),
                timezone: tz.into(),
            }])
            .unwrap_err()
        };
        assert!(bad("funday", "07:00", "08:00", "UTC").contains("funday"));
        assert!(bad("mon", "7:00", "08:00", "UTC").contains("from"));
        assert!(bad("mon", "07:00", "25:00", "UTC").contains("to"));
        assert!(bad("mon", "07:00", "07:00", "UTC").contains("same time"));
        assert!(bad("mon", "07:00", "08:00", "Mars/Olympus").contains("Mars/Olympus"));
        assert!(
            Schedules::from_config(&[ScheduleConfig {
                name: "x".into(),
                days: vec!["daily".into()],
                from: "00:00".into(),
                to: "24:00".into(),
                timezone: "UTC".into(),
            }])
            .is_ok()
        );
    }
}
