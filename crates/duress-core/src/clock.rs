//! The send-time window: the receiver's check on `sent_at` (never on `occurred_at`).
//!
//! SIA DC-09 §5.5.1.9 accepts a message timestamp between 20 s ahead of and 40 s behind the
//! receiver's clock; we use the same window for `sent_at`. An alarm that sat in a queue keeps its
//! old `occurred_at` and is re-signed with a fresh `sent_at`, so it passes.

use time::{Duration, OffsetDateTime};

/// How far `sent_at` may lie in the receiver's future.
pub const MAX_AHEAD: Duration = Duration::seconds(20);
/// How far `sent_at` may lie in the receiver's past.
pub const MAX_BEHIND: Duration = Duration::seconds(40);

/// An alarm that reaches the receiver later than this after its press is flagged "delayed"
/// (EN 50131-1: a hold-up alarm may not be delayed more than 10 s).
pub const DELAYED_AFTER: Duration = Duration::seconds(10);

/// `Ok` when `sent_at` lies inside the window around `now`, else the signed skew
/// (`sent_at - now`).
pub fn check_sent_at(sent_at: OffsetDateTime, now: OffsetDateTime) -> Result<(), Duration> {
    let skew = sent_at - now;
    if skew > MAX_AHEAD || skew < -MAX_BEHIND {
        Err(skew)
    } else {
        Ok(())
    }
}

/// Timestamps on the wire: RFC 3339 in UTC with millisecond precision.
pub fn truncate_to_millis(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn window_is_plus_20_minus_40() {
        let now = datetime!(2026-11-26 12:00:00 UTC);
        assert!(check_sent_at(now, now).is_ok());
        assert!(check_sent_at(now + Duration::seconds(20), now).is_ok());
        assert!(check_sent_at(now - Duration::seconds(40), now).is_ok());
        assert_eq!(
            check_sent_at(now + Duration::seconds(21), now),
            Err(Duration::seconds(21))
        );
        assert_eq!(
            check_sent_at(now - Duration::hours(1), now),
            Err(Duration::hours(-1))
        );
    }
}
