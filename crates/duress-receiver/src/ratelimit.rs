//! Failed-attempt limiting for enrollment, per client address, in memory; and the per-device
//! event token bucket ([`DeviceBuckets`]).
//!
//! Only *failures* count, so a campus rolling out hundreds of agents behind one NAT is never
//! slowed down by success. IPv6 clients are counted per /64, since one host commonly owns a
//! whole /64 and could otherwise rotate addresses. A restart forgets the counts, which is
//! fine: the limit is there to make token guessing pointless, not to be an audit trail.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries beyond this trigger a sweep of expired windows, bounding memory under a scan.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Counts failures per client in fixed windows.
#[derive(Debug)]
pub struct FailureLimiter {
    limit: u32,
    window: Duration,
    clients: Mutex<HashMap<IpAddr, Window>>,
}

impl FailureLimiter {
    /// At most `limit` failures per `window` per client.
    pub fn new(limit: u32, window: Duration) -> Self {
        FailureLimiter {
            limit,
            window,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` when `ip` has used up its failures in the current window.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let clients = self.lock();
        match clients.get(&client_key(ip)) {
            Some(w) if now.duration_since(w.started) < self.window && w.failures >= self.limit => {
                Err(self.window - now.duration_since(w.started))
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed attempt by `ip`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut clients = self.lock();
        if clients.len() > SWEEP_ABOVE {
            let window = self.window;
            clients.retain(|_, w| now.duration_since(w.started) < window);
        }
        let entry = clients.entry(client_key(ip)).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(entry.started) >= self.window {
            *entry = Window {
                started: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        // A panic while holding this lock cannot leave the map inconsistent; keep going.
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Bucket entries beyond this trigger a sweep of full buckets (a full bucket is the state of a
/// device never seen), bounding memory.
const BUCKETS_SWEEP_ABOVE: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per device on events: `burst` events at once, refilled at `per_second`.
/// One hostile (or broken) enrolled workstation cannot fill the store or the board; its
/// excess is answered 429 with `Retry-After` and the agent keeps those events queued and
/// resends them (nothing is lost: resending is harmless, and an alarm retries on the alarm
/// schedule). Checked only after the signature is verified, so nobody can spend another
/// device's tokens.
#[derive(Debug)]
pub struct DeviceBuckets {
    burst: f64,
    per_second: f64,
    devices: Mutex<HashMap<String, Bucket>>,
}

impl DeviceBuckets {
    pub fn new(burst: u32, per_second: f64) -> Self {
        DeviceBuckets {
            burst: f64::from(burst.max(1)),
            per_second: per_second.max(0.001),
            devices: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `device_id`, or `Err(wait)` until the next one.
    pub fn take(&self, device_id: &str, now: Instant) -> Result<(), Duration> {
        let mut devices = self
            .devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if devices.len() > BUCKETS_SWEEP_ABOVE {
            let (burst, rate) = (self.burst, self.per_second);
            devices.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = devices.entry(device_id.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refilled = now.duration_since(b.at).as_secs_f64() * self.per_second;
        b.tokens = (b.tokens + refilled).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
        }
    }
}

/// IPv4 per address; IPv6 per /64 (IPv4-mapped IPv6 counts as the IPv4 address).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

/// The per-source-address limits of the desk-phone endpoints (`crate::phones`).
#[derive(Debug)]
pub struct PhoneLimits {
    /// Every phone request, per source address (a token bucket): a phone sends one request
    /// per press, so a burst of 30 and 2 per second never stops a real one.
    pub per_source: DeviceBuckets,
    /// Refused requests per source address: past 20 in 10 minutes the address is answered 429
    /// without a store lookup, a secret check or an audit entry, so a scan of device names
    /// or keys neither burns argon2 time nor floods the audit log.
    pub failures: FailureLimiter,
}

impl Default for PhoneLimits {
    fn default() -> Self {
        PhoneLimits {
            per_source: DeviceBuckets::new(30, 2.0),
            failures: FailureLimiter::new(20, Duration::from_secs(600)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_and_forgets_after_the_window() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(ip, t0).is_ok());
            limiter.record_failure(ip, t0);
        }
        assert!(limiter.check(ip, t0 + Duration::from_secs(1)).is_err());
        assert!(limiter.check(other, t0).is_ok(), "per client");
        assert!(limiter.check(ip, t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn device_buckets_allow_the_burst_then_the_rate() {
        let buckets = DeviceBuckets::new(3, 2.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(buckets.take("d1", t0).is_ok());
        }
        let wait = buckets.take("d1", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert!(buckets.take("d2", t0).is_ok(), "per device");
        assert!(buckets.take("d1", t0 + Duration::from_millis(500)).is_ok());
        assert!(buckets.take("d1", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let limiter = FailureLimiter::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        limiter.record_failure("2001:db8::1".parse().unwrap(), t0);
        assert!(
            limiter
                .check("2001:db8::ffff".parse().unwrap(), t0)
                .is_err()
        );
        assert!(
            limiter
                .check("2001:db8:0:1::1".parse().unwrap(), t0)
                .is_ok()
        );
    }
}
