//! Retry schedules. Alarms retry fast — the first retry within a second, doubling, never more
//! than 4 s apart — so an alarm goes out within seconds of the network coming back. Heartbeats
//! back off further. Both are jittered (±20 %) so a building full of agents does not retry in
//! lock-step after an outage.

use std::time::Duration;

/// Delay before the first alarm retry (before jitter).
pub const ALARM_FIRST_RETRY: Duration = Duration::from_millis(250);
/// Longest delay between two alarm attempts, jitter included. 4 s, not 5: the queue must drain
/// within 5 s of a receiver's return (issue 6), and the worst case is this delay plus the sends
/// themselves (`tests/tests/faults_outage.rs`).
pub const ALARM_MAX_RETRY: Duration = Duration::from_secs(4);
/// Relative jitter applied to every delay.
pub const JITTER: f64 = 0.2;
/// How often an event a receiver *refused* (4xx other than clock skew) is tried again. The
/// event stays in the outbox: nothing is deleted without a 2xx.
pub const REFUSED_RETRY: Duration = Duration::from_secs(60);
/// First heartbeat retry after a failure (before jitter).
pub const HEARTBEAT_FIRST_RETRY: Duration = Duration::from_secs(5);

/// Delay before alarm attempt number `attempt + 1` (`attempt` = failed attempts so far − 1).
/// `jitter` is a uniform sample from `[-1, 1]`.
pub fn alarm_retry_delay(attempt: u32, jitter: f64) -> Duration {
    let base = ALARM_FIRST_RETRY.saturating_mul(1u32 << attempt.min(16));
    let base = base.min(ALARM_MAX_RETRY);
    apply_jitter(base, jitter).min(ALARM_MAX_RETRY)
}

/// Delay before the next heartbeat after `failures` consecutive failures (≥ 1): 5 s, 10 s,
/// 20 s … up to the heartbeat interval, jittered.
pub fn heartbeat_retry_delay(failures: u32, interval: Duration, jitter: f64) -> Duration {
    let n = failures.saturating_sub(1).min(16);
    let base = HEARTBEAT_FIRST_RETRY
        .saturating_mul(1u32 << n)
        .min(interval);
    apply_jitter(base, jitter).min(interval.max(HEARTBEAT_FIRST_RETRY))
}

/// `base × (1 + JITTER × jitter)`, with `jitter` clamped to `[-1, 1]`.
pub fn apply_jitter(base: Duration, jitter: f64) -> Duration {
    let j = if jitter.is_finite() {
        jitter.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    base.mul_f64(1.0 + JITTER * j)
}

/// A uniform sample from `[-1, 1]` from the OS random source (0 if it fails).
pub fn random_jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::getrandom(&mut b).is_err() {
        return 0.0;
    }
    (u32::from_le_bytes(b) as f64 / u32::MAX as f64) * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first alarm retry comes within 1 s whatever the jitter, delays double, and no delay
    /// ever exceeds 4 s.
    #[test]
    fn alarm_schedule_first_under_1s_doubling_capped_at_5s() {
        for j in [-1.0, -0.5, 0.0, 0.5, 1.0] {
            assert!(alarm_retry_delay(0, j) <= Duration::from_secs(1));
            for attempt in 0..100 {
                assert!(
                    alarm_retry_delay(attempt, j) <= ALARM_MAX_RETRY,
                    "{attempt} {j}"
                );
            }
        }
        assert_eq!(alarm_retry_delay(0, 0.0), Duration::from_millis(250));
        assert_eq!(alarm_retry_delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(alarm_retry_delay(2, 0.0), Duration::from_millis(1000));
        assert_eq!(alarm_retry_delay(3, 0.0), Duration::from_millis(2000));
        assert_eq!(alarm_retry_delay(4, 0.0), Duration::from_millis(4000));
        assert_eq!(alarm_retry_delay(5, 0.0), ALARM_MAX_RETRY);
        assert_eq!(alarm_retry_delay(u32::MAX, 0.0), ALARM_MAX_RETRY);
    }

    /// Jitter stays within ±20 % of the base delay (and under the cap).
    #[test]
    fn alarm_jitter_bounds() {
        assert_eq!(alarm_retry_delay(0, -1.0), Duration::from_millis(200));
        assert_eq!(alarm_retry_delay(0, 1.0), Duration::from_millis(300));
        assert_eq!(alarm_retry_delay(10, -1.0), Duration::from_millis(3200));
        assert_eq!(alarm_retry_delay(10, 1.0), ALARM_MAX_RETRY);
        for _ in 0..1000 {
            let j = random_jitter();
            assert!((-1.0..=1.0).contains(&j));
            let d = alarm_retry_delay(2, j);
            assert!(d >= Duration::from_millis(800) && d <= Duration::from_millis(1200));
        }
        // Out-of-range or NaN jitter is clamped, never a longer delay.
        assert_eq!(alarm_retry_delay(0, 50.0), Duration::from_millis(300));
        assert_eq!(alarm_retry_delay(0, f64::NAN), Duration::from_millis(250));
    }

    /// Heartbeat retries back off from 5 s and never wait longer than the interval.
    #[test]
    fn heartbeat_backoff() {
        let iv = Duration::from_secs(60);
        assert_eq!(heartbeat_retry_delay(1, iv, 0.0), Duration::from_secs(5));
        assert_eq!(heartbeat_retry_delay(2, iv, 0.0), Duration::from_secs(10));
        assert_eq!(heartbeat_retry_delay(4, iv, 0.0), Duration::from_secs(40));
        assert_eq!(heartbeat_retry_delay(5, iv, 0.0), iv);
        assert_eq!(heartbeat_retry_delay(50, iv, 1.0), iv);
        assert!(heartbeat_retry_delay(1, iv, -1.0) >= Duration::from_secs(4));
    }
}
