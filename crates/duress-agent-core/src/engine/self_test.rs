//! The policy-scheduled silent self-test (`[self_test] every_days`, `window`): a `kind: test`
//! event from `source: schedule`, which travels the whole path and never opens an incident.
//! Each station tests at its own random minute of the window (chosen once and kept), so a
//! campus does not test all at once; nothing is shown and nothing is heard.

use time::{Duration, OffsetDateTime, UtcOffset};

use super::Engine;
use crate::Result;
use crate::outbox::{fmt_time, keys, parse_time};
use crate::policy::SelfTestPolicy;

/// Whether a scheduled self-test is due at `now` (shown in `local` time).
///
/// Due when the policy schedules tests, the local time of day is at or past this station's
/// minute (`window start + minute`) and before the window's end, and the latest test — the
/// last one a receiver confirmed or the last one scheduled, whichever is later — is at least
/// `every_days` days old less the window's length (so a weekly test stays on its minute instead of
/// drifting later each week). Never tested: due at the next such minute.
pub fn due(
    policy: &SelfTestPolicy,
    minute: u32,
    latest: Option<OffsetDateTime>,
    now: OffsetDateTime,
    local: UtcOffset,
) -> bool {
    if policy.every_days == 0 {
        return false;
    }
    let Ok((start, end)) = policy.window_minutes() else {
        return false;
    };
    let at = start + minute % (end - start);
    let local_now = now.to_offset(local);
    let of_day = u32::from(local_now.hour()) * 60 + u32::from(local_now.minute());
    if of_day < at || of_day >= end {
        return false;
    }
    match latest {
        None => true,
        Some(t) => {
            let slack = Duration::minutes(i64::from(end - start));
            now - t >= Duration::days(i64::from(policy.every_days)) - slack
        }
    }
}

impl Engine {
    /// This station's minute in the window, chosen at random the first time and kept.
    fn self_test_minute(&self) -> Result<u32> {
        self.with_outbox(|o| {
            if let Some(m) = o
                .meta_get(keys::SELF_TEST_MINUTE)?
                .and_then(|v| v.parse::<u32>().ok())
            {
                return Ok(m);
            }
            let mut b = [0u8; 4];
            // Without randomness every station would pick minute 0: still a valid schedule.
            let _ = getrandom::getrandom(&mut b);
            let m = u32::from_le_bytes(b) % (24 * 60);
            o.meta_set(keys::SELF_TEST_MINUTE, &m.to_string())?;
            Ok(m)
        })
    }

    /// Records a scheduled self-test when one is due (see [`due`]); returns whether it did.
    /// Synchronous (an fsync): call it off the async workers.
    pub fn run_scheduled_self_test(&self, local: UtcOffset) -> Result<bool> {
        let policy = &self.inner.policy.self_test;
        if policy.every_days == 0 {
            return Ok(false);
        }
        let minute = self.self_test_minute()?;
        let (confirmed, scheduled) = self.with_outbox(|o| {
            Ok((
                o.meta_get(keys::LAST_SELF_TEST_AT)?,
                o.meta_get(keys::LAST_SCHEDULED_TEST_AT)?,
            ))
        })?;
        let time = |s: Option<String>| s.and_then(|s| parse_time(&s).ok());
        let latest = time(confirmed).max(time(scheduled));
        let now = self.now();
        if !due(policy, minute, latest, now, local) {
            return Ok(false);
        }
        let claims = self.record(duress_core::EventKind::Test, duress_core::Source::Schedule)?;
        let at = fmt_time(now);
        self.with_outbox(|o| o.meta_set(keys::LAST_SCHEDULED_TEST_AT, &at))?;
        tracing::info!(event = %claims.id, "scheduled self-test recorded");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, offset};

    fn weekly() -> SelfTestPolicy {
        SelfTestPolicy {
            every_days: 7,
            window: "09:00-17:00".into(),
        }
    }

    /// Off by default; never tested: due from this station's minute until the window ends,
    /// in local time.
    #[test]
    fn due_at_the_stations_minute_inside_the_window() {
        let p = weekly();
        let utc = offset!(UTC);
        // minute 90 → 10:30 local.
        assert!(!due(
            &SelfTestPolicy::default(),
            90,
            None,
            datetime!(2026-03-02 10:30 UTC),
            utc
        ));
        assert!(!due(&p, 90, None, datetime!(2026-03-02 10:29 UTC), utc));
        assert!(due(&p, 90, None, datetime!(2026-03-02 10:30 UTC), utc));
        assert!(due(&p, 90, None, datetime!(2026-03-02 16:59 UTC), utc));
        assert!(!due(&p, 90, None, datetime!(2026-03-02 17:00 UTC), utc));
        // The same instants, at UTC−6: 10:30 local is 16:30 UTC.
        assert!(!due(
            &p,
            90,
            None,
            datetime!(2026-03-02 10:30 UTC),
            offset!(-6)
        ));
        assert!(due(
            &p,
            90,
            None,
            datetime!(2026-03-02 16:30 UTC),
            offset!(-6)
        ));
        // A minute past the window's length wraps into it.
        assert!(due(
            &p,
            480 + 90,
            None,
            datetime!(2026-03-02 10:30 UTC),
            utc
        ));
    }

    /// Once tested, the next test is due `every_days` later at the same minute — not every
    /// minute of the window, and not a week plus the window's length later.
    #[test]
    fn weekly_after_the_last_test() {
        let p = weekly();
        let utc = offset!(UTC);
        let last = Some(datetime!(2026-03-02 10:30:20 UTC));
        assert!(!due(&p, 90, last, datetime!(2026-03-02 10:31 UTC), utc));
        assert!(!due(&p, 90, last, datetime!(2026-03-08 10:30 UTC), utc));
        assert!(due(&p, 90, last, datetime!(2026-03-09 10:30 UTC), utc));
    }
}
