//! Clocks. The engine reads a *raw* clock (the workstation's, optionally skewed for tests) and
//! adds the offset it learned from the receiver (`server_time − raw_now`), so `occurred_at` and
//! `sent_at` are stamped in the receiver's time even on a workstation with a wrong clock.

use std::fmt;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};

/// Environment variable, **for tests only**: shifts the raw clock by this many seconds (may be
/// negative), so whole-system tests can give the real binary a wrong workstation clock.
pub const ENV_TEST_CLOCK_SKEW_S: &str = "DURESS_AGENT_TEST_CLOCK_SKEW_S";

/// A source of "now".
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> OffsetDateTime;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Another clock shifted by a fixed offset (tests; the env test skew).
#[derive(Debug, Clone)]
pub struct OffsetClock {
    base: Arc<dyn Clock>,
    offset: Duration,
}

impl OffsetClock {
    pub fn new(base: Arc<dyn Clock>, offset: Duration) -> Self {
        OffsetClock { base, offset }
    }

    /// The system clock shifted by `offset`.
    pub fn system(offset: Duration) -> Self {
        OffsetClock::new(Arc::new(SystemClock), offset)
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> OffsetDateTime {
        self.base.now() + self.offset
    }
}

/// The raw clock the engine uses by default: the system clock, shifted by
/// [`ENV_TEST_CLOCK_SKEW_S`] when that is set to an integer (tests only).
pub fn raw_clock_from_env() -> Arc<dyn Clock> {
    match std::env::var(ENV_TEST_CLOCK_SKEW_S) {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse::<i64>() {
            Ok(s) => {
                tracing::warn!(
                    skew_s = s,
                    "{ENV_TEST_CLOCK_SKEW_S} is set: the raw clock is shifted (tests only)"
                );
                Arc::new(OffsetClock::system(Duration::seconds(s)))
            }
            Err(_) => {
                tracing::warn!("{ENV_TEST_CLOCK_SKEW_S}={v:?} is not an integer; ignored");
                Arc::new(SystemClock)
            }
        },
        _ => Arc::new(SystemClock),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An offset clock is exactly its base plus the offset.
    #[test]
    fn offset_clock_shifts_its_base() {
        #[derive(Debug)]
        struct Fixed(OffsetDateTime);
        impl Clock for Fixed {
            fn now(&self) -> OffsetDateTime {
                self.0
            }
        }
        let t = time::macros::datetime!(2026-01-01 00:00 UTC);
        let c = OffsetClock::new(Arc::new(Fixed(t)), Duration::hours(-1));
        assert_eq!(c.now(), t - Duration::hours(1));
    }
}
