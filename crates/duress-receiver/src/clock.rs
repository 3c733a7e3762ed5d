//! The receiver's clock, in a leaf module so the store, the API and the console read the same
//! time without depending on each other.
//!
//! Every time the receiver stores or compares goes through [`receiver_now`] (only the TLS
//! certificate checks in `tls.rs` read the system clock, as the TLS stack itself does), so the thresholds that depend
//! on time — escalation after 90 s, session idle and lifetime limits, stale and offline stations,
//! token expiry — can be tested by moving this clock forward ([`advance`]) instead of sleeping
//! for minutes or hours.
//!
//! The offset is process-wide, not a value carried in `Settings`: the store computes "now"
//! inside its transactions and is opened in many places (every CLI command, `serve`, backups), and
//! a process-wide source is the one way every one of them reads the same moved clock. Nothing in
//! the receiver's CLI, configuration or HTTP API can move it; it exists for tests, which run the
//! receiver in their own process. Monotonic timers (`Instant`: rate limits, connection timeouts)
//! are not affected.

use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// Milliseconds added to the system clock (0 outside tests).
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// The receiver clock as it is stored and answered: UTC, millisecond precision.
pub fn receiver_now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let offset = OFFSET_MS.load(Ordering::Relaxed);
    let now = if offset == 0 {
        now
    } else {
        now.checked_add(time::Duration::milliseconds(offset))
            .unwrap_or(now)
    };
    duress_core::clock::truncate_to_millis(now)
}

/// Moves the receiver clock forward by `by` for this whole process (tests only: a test that
/// moves it owns its process — one test binary, its cases serialised).
pub fn advance(by: std::time::Duration) {
    let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
    OFFSET_MS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
            Some(o.saturating_add(ms))
        })
        .ok();
}

/// Back to the system clock.
pub fn reset() {
    OFFSET_MS.store(0, Ordering::Relaxed);
}
