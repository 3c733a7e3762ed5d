//! Facts about the workstation, so officers know which machine pressed and who was logged in.
//! Collection never fails: a fact that cannot be read is an empty string or list.

use duress_core::HostFacts;
use duress_core::messages::{MAX_HOST_ADDRESSES, MAX_HOST_FIELD_CHARS};

/// Collects the host facts now. Never fails and never panics outward.
pub fn collect() -> HostFacts {
    let hostname = guard(|| gethostname::gethostname().to_string_lossy().into_owned());
    let user = guard(whoami::username);
    let os = guard(whoami::distro);
    let (ips, macs) = guard(addresses);
    sanitize(HostFacts {
        hostname,
        user,
        ips,
        macs,
        os,
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
