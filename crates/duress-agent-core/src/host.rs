//! Facts about the workstation, so officers know which machine pressed and who was logged in.
//! Collection never fails: a fact that cannot be read is an empty string or list.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use duress_core::HostFacts;
use duress_core::messages::{MAX_HOST_ADDRESSES, MAX_HOST_FIELD_CHARS};

/// How long the slow facts (OS name, interface addresses) collected by one call serve the
/// presses that follow. Heartbeats (every 60 s by default) collect afresh, so on a running
/// agent a press uses addresses at most one heartbeat old.
pub const SLOW_FACTS_MAX_AGE: Duration = Duration::from_secs(300);

/// The facts that cost real time to read: enumerating interfaces alone is ≈ 1 ms (netlink and
/// sysfs), more than the outbox fsync of a press.
#[derive(Debug, Clone)]
struct SlowFacts {
    os: String,
    ips: Vec<String>,
    macs: Vec<String>,
}

static SLOW_FACTS: Mutex<Option<(Instant, SlowFacts)>> = Mutex::new(None);

/// Collects every host fact now (heartbeats, enrollment) and refreshes what presses reuse.
/// Never fails and never panics outward.
pub fn collect() -> HostFacts {
    let slow = collect_slow();
    *SLOW_FACTS.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), slow.clone()));
    assemble(slow)
}

/// The facts for a press: hostname and logged-in user read now (who is at the keyboard matters
/// most and is cheap), OS and addresses from the last collection when it is younger than
/// [`SLOW_FACTS_MAX_AGE`], else collected now. Keeps ≈ 1 ms off the press path.
pub fn collect_for_press() -> HostFacts {
    let cached = SLOW_FACTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|(at, _)| at.elapsed() < SLOW_FACTS_MAX_AGE)
        .map(|(_, slow)| slow.clone());
    match cached {
        Some(slow) => assemble(slow),
        None => collect(),
    }
}

fn collect_slow() -> SlowFacts {
    let os = guard(whoami::distro);
    let (ips, macs) = guard(addresses);
    SlowFacts { os, ips, macs }
}

fn assemble(slow: SlowFacts) -> HostFacts {
    let hostname = guard(|| gethostname::gethostname().to_string_lossy().into_owned());
    let user = guard(whoami::username);
    sanitize(HostFacts {
        hostname,
        user,
        ips: slow.ips,
        macs: slow.macs,
        os: slow.os,
        agent_version: crate::AGENT_VERSION.to_owned(),
    })
}

/// IPs and MACs of the interfaces that are up, loopback excluded.
fn addresses() -> (Vec<String>, Vec<String>) {
    let mut ips = Vec::new();
    let mut macs = Vec::new();
    for iface in netdev::get_interfaces() {
        if !iface.is_up() || iface.is_loopback() {
            continue;
        }
        ips.extend(iface.ipv4.iter().map(|n| n.addr().to_string()));
        ips.extend(iface.ipv6.iter().map(|n| n.addr().to_string()));
        if let Some(mac) = iface.mac_addr {
            let mac = mac.address();
            if mac != "00:00:00:00:00:00" && !macs.contains(&mac) {
                macs.push(mac);
            }
        }
    }
    (ips, macs)
}

/// Runs `f`, turning a panic inside a platform library into the empty value.
fn guard<T: Default>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> T {
    std::panic::catch_unwind(f).unwrap_or_default()
}

/// Keeps the facts inside the protocol's limits so a receiver never refuses an alarm over them.
fn sanitize(mut h: HostFacts) -> HostFacts {
    for s in [
        &mut h.hostname,
        &mut h.user,
        &mut h.os,
        &mut h.agent_version,
    ] {
        *s = clean(s);
    }
    for list in [&mut h.ips, &mut h.macs] {
        list.truncate(MAX_HOST_ADDRESSES);
        for s in list.iter_mut() {
            *s = clean(s);
        }
    }
    h
}

fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_HOST_FIELD_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collection works here and always yields facts the protocol accepts.
    #[test]
    fn collected_facts_are_valid() {
        let h = collect();
        h.validate().unwrap();
        assert_eq!(h.agent_version, crate::AGENT_VERSION);
        assert!(!h.hostname.is_empty(), "hostname should be readable in CI");
        assert!(!h.ips.iter().any(|ip| ip == "127.0.0.1" || ip == "::1"));
    }

    /// A press reuses the addresses of the last full collection but reads the user afresh,
    /// and with nothing collected yet it collects everything.
    #[test]
    fn press_facts_match_a_full_collection() {
        let full = collect();
        let press = collect_for_press();
        assert_eq!(press, full);
        *SLOW_FACTS.lock().unwrap() = None;
        let cold = collect_for_press();
        cold.validate().unwrap();
        assert_eq!(cold.hostname, full.hostname);
        assert!(
            SLOW_FACTS.lock().unwrap().is_some(),
            "a cold press fills the cache"
        );
    }

    /// Over-long or control-character facts are trimmed instead of refused.
    #[test]
    fn sanitize_keeps_limits() {
        let h = sanitize(HostFacts {
            hostname: format!("a\u{7}{}", "x".repeat(1000)),
            ips: vec!["1.2.3.4".into(); 200],
            ..Default::default()
        });
        h.validate().unwrap();
        assert_eq!(h.hostname.chars().count(), MAX_HOST_FIELD_CHARS);
        assert_eq!(h.ips.len(), MAX_HOST_ADDRESSES);
    }
}
