//! Where a station is, from evidence the receiver holds rather than what the agent claims:
//! the subnet → building/floor map and "location drift" (a station whose heartbeats or events
//! come from an address in a subnet mapped to another building, or floor when the subnet names
//! one, than where it is registered, else where it claims to be), and the registered-location
//! fields an admin gives. A leaf module (plain data and pure functions): the store, the records
//! and the console all use it.
//!
//! Matching is done here, not in SQL, so both backends apply one longest-prefix rule; the map
//! is an admin's list (tens to hundreds of rows), read once per page.

use std::net::IpAddr;

use duress_core::Location;
use serde::{Deserialize, Serialize};

/// One row of the subnet → building (and optionally floor) map: network evidence of where a
/// station is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Subnet {
    /// The network, host bits cleared ("10.1.0.0/16"), so one network is one row.
    #[serde(rename = "cidr", serialize_with = "serialize_display")]
    pub net: ipnet::IpNet,
    #[serde(rename = "BLD")]
    pub building: String,
    #[serde(rename = "FLR", default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
}

fn serialize_display<S: serde::Serializer>(
    value: &impl std::fmt::Display,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

impl Subnet {
    /// The canonical text of the network, as stored.
    pub fn cidr(&self) -> String {
        self.net.trunc().to_string()
    }

    pub fn audit_detail(&self) -> String {
        match &self.floor {
            Some(f) => format!("BLD {:?}, FLR {f:?}", self.building),
            None => format!("BLD {:?}", self.building),
        }
    }
}

/// Parses a CIDR ("10.1.0.0/16", "2001:db8::/48"); a bare address is refused (an admin who
/// means one host writes /32 or /128), and host bits are cleared ("10.1.2.3/16" is
/// 10.1.0.0/16).
pub fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| format!("{text:?} is not a network in CIDR form (like 10.1.0.0/16)"))
}

/// Checks and builds one map row from what an admin typed (CLI, CSV or console).
pub fn new_subnet(cidr: &str, building: &str, floor: &str) -> Result<Subnet, String> {
    let net = parse_cidr(cidr)?;
    let building = building.trim();
    if building.is_empty() {
        return Err(format!("{net}: the building (BLD) is empty"));
    }
    let floor = Some(floor.trim()).filter(|f| !f.is_empty());
    for (name, value) in [("BLD", Some(building)), ("FLR", floor)] {
        if let Some(v) = value
            && (v.chars().count() > duress_core::location::MAX_FIELD_CHARS
                || v.chars().any(char::is_control))
        {
            return Err(format!(
                "{net}: {name} is too long or contains a control character"
            ));
        }
    }
    Ok(Subnet {
        net,
        building: building.to_owned(),
        floor: floor.map(str::to_owned),
    })
}

/// Reads a CSV with the header `cidr,BLD,FLR` (FLR may be empty). Every row is checked first,
/// so an import with one bad row imports nothing; errors name the line.
pub fn parse_csv(text: &str) -> Result<Vec<Subnet>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err("empty file: expected the header cidr,BLD,FLR".into());
    };
    let header: Vec<String> = header
        .trim_start_matches('\u{feff}')
        .split(',')
        .map(|h| h.trim().to_owned())
        .collect();
    if header != ["cidr", "BLD", "FLR"] {
        return Err(format!(
            "the header is {:?}; expected cidr,BLD,FLR",
            header.join(",")
        ));
    }
    let mut out: Vec<Subnet> = Vec::new();
    for (i, line) in lines {
        // The fields are a network, a building and a floor: no quoting is needed, and a
        // quoted field is refused rather than half-understood.
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 3 || line.contains('"') {
            return Err(format!(
                "line {}: expected three unquoted fields cidr,BLD,FLR",
                i + 1
            ));
        }
        let subnet = new_subnet(fields[0], fields[1], fields[2])
            .map_err(|e| format!("line {}: {e}", i + 1))?;
        if out.iter().any(|s| s.net == subnet.net) {
            return Err(format!("line {}: {} is listed twice", i + 1, subnet.net));
        }
        out.push(subnet);
    }
    Ok(out)
}

/// The most specific mapped subnet holding `addr` (an IPv4-mapped IPv6 address counts as
/// its IPv4 address).
pub fn lookup(subnets: &[Subnet], addr: IpAddr) -> Option<&Subnet> {
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    };
    subnets
        .iter()
        .filter(|s| s.net.contains(&addr))
        .max_by_key(|s| s.net.prefix_len())
}

/// The evidence of a drift, shown on the Stations page and the incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// The client address the receiver saw.
    pub addr: String,
    /// The mapped subnet it falls in, and what that subnet maps to.
    pub subnet: String,
    #[serde(rename = "BLD")]
    pub building: String,
    #[serde(rename = "FLR", default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    /// Where the station is expected: its registered location, else its claimed one.
    pub expected: String,
}

impl Drift {
    /// One line for officers: "address 10.2.0.7 is in 10.2.0.0/16, mapped to Bldg B".
    pub fn text(&self) -> String {
        let place = match &self.floor {
            Some(f) => format!("Bldg {}, Floor {f}", self.building),
            None => format!("Bldg {}", self.building),
        };
        format!(
            "address {} is in {}, mapped to {place} (station: {})",
            self.addr, self.subnet, self.expected
        )
    }
}

fn same(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Whether `addr` is evidence that the station is elsewhere than `expected` (its registered
/// location, else its claimed one): the most specific subnet holding it maps to another
/// building, or to the same building and another floor when the subnet names a floor. No
/// drift without a mapped subnet, without an address, or when the expected location names no
/// building (nothing to compare).
pub fn drift(subnets: &[Subnet], addr: Option<&str>, expected: &Location) -> Option<Drift> {
    let addr_text = addr?;
    let ip: IpAddr = addr_text.parse().ok()?;
    let subnet = lookup(subnets, ip)?;
    let bld = expected.bld.as_deref().filter(|b| !b.trim().is_empty())?;
    let other_building = !same(bld, &subnet.building);
    let other_floor = match (&subnet.floor, expected.flr.as_deref()) {
        (Some(f), Some(own)) => !same(f, own),
        _ => false,
    };
    (other_building || other_floor).then(|| Drift {
        addr: addr_text.to_owned(),
        subnet: subnet.cidr(),
        building: subnet.building.clone(),
        floor: subnet.floor.clone(),
        expected: expected.display_label(),
    })
}

/// Whether two locations name different places, as officers read them: building, floor, room
/// (case and surrounding spaces ignored); a field one side leaves out is not a difference.
pub fn locations_differ(registered: &Location, claimed: &Location) -> bool {
    [
        (&registered.bld, &claimed.bld),
        (&registered.flr, &claimed.flr),
        (&registered.room, &claimed.room),
    ]
    .into_iter()
    .any(|(a, b)| match (a.as_deref(), b.as_deref()) {
        (Some(a), Some(b)) => !same(a, b),
        _ => false,
    })
}

/// `base` (a station's registered, else claimed, location: its civic address is kept) with
/// the four fields an admin gives (label, BLD, FLR, ROOM), an empty one removed, checked.
pub fn with_fields(
    base: &Location,
    label: &str,
    bld: &str,
    flr: &str,
    room: &str,
) -> Result<Location, String> {
    let v = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let location = Location {
        label: v(label),
        bld: v(bld),
        flr: v(flr),
        room: v(room),
        ..base.clone()
    };
    location.validate()?;
    Ok(location)
}

/// One row of a `stations import` CSV (header `station,label,BLD,FLR,ROOM`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StationRow {
    /// A device id, or a hostname (every station enrolled from that host: one per user).
    pub station: String,
    #[serde(default)]
    pub label: String,
    #[serde(rename = "BLD", default)]
    pub bld: String,
    #[serde(rename = "FLR", default)]
    pub flr: String,
    #[serde(rename = "ROOM", default)]
    pub room: String,
}

/// Reads a `stations import` CSV (RFC 4180: labels may hold commas and quotes, in quotes);
/// the header must be exactly `station,label,BLD,FLR,ROOM`. Errors name the line.
pub fn parse_stations_csv(text: &str) -> Result<Vec<StationRow>, String> {
    let text = text.trim_start_matches('\u{feff}');
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("reading the header: {e}"))?
        .iter()
        .map(str::to_owned)
        .collect();
    if header != ["station", "label", "BLD", "FLR", "ROOM"] {
        return Err(format!(
            "the header is {:?}; expected station,label,BLD,FLR,ROOM",
            header.join(",")
        ));
    }
    let mut rows = Vec::new();
    for (i, row) in reader.deserialize::<StationRow>().enumerate() {
        let row = row.map_err(|e| format!("line {}: {e}", i + 2))?;
        if row.station.is_empty() {
            return Err(format!("line {}: the station is empty", i + 2));
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(bld: &str, flr: Option<&str>) -> Location {
        Location {
            bld: Some(bld.into()),
            flr: flr.map(str::to_owned),
            ..Location::default()
        }
    }

    #[test]
    fn cidrs_are_canonical_and_bare_addresses_refused() {
        assert_eq!(
            parse_cidr("10.1.2.3/16").unwrap().to_string(),
            "10.1.0.0/16"
        );
        assert_eq!(
            parse_cidr(" 2001:db8::1/48 ").unwrap().to_string(),
            "2001:db8::/48"
        );
        assert!(parse_cidr("10.1.2.3").is_err());
        assert!(parse_cidr("10.1.0.0/33").is_err());
        assert!(new_subnet("10.0.0.0/8", " ", "").is_err());
    }

    #[test]
    fn the_csv_is_checked_whole() {
        let ok = parse_csv("cidr,BLD,FLR\n10.1.0.0/16,A,\n10.2.0.0/24,B,2\n").unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].floor, None);
        assert_eq!(ok[1].floor.as_deref(), Some("2"));
        for bad in [
            "",
            "net,BLD,FLR\n",
            "cidr,BLD,FLR\nnope,A,\n",
            "cidr,BLD,FLR\n10.1.0.0/16,A\n",
            "cidr,BLD,FLR\n10.1.0.0/16,\"A,B\",\n",
            "cidr,BLD,FLR\n10.1.0.0/16,A,\n10.1.0.9/16,B,\n",
        ] {
            assert!(parse_csv(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse_csv("cidr,BLD,FLR\n10.1.0.0/16,A,\nbad,B,\n")
                .unwrap_err()
                .starts_with("line 3:")
        );
    }

    #[test]
    fn drift_follows_the_most_specific_subnet() {
        let map = vec![
            new_subnet("10.0.0.0/8", "A", "").unwrap(),
            new_subnet("10.2.0.0/16", "B", "").unwrap(),
            new_subnet("10.3.0.0/16", "A", "3").unwrap(),
        ];
        // In building A's /8 but B's /16: B wins.
        let d = drift(&map, Some("10.2.0.7"), &at("A", Some("1"))).unwrap();
        assert_eq!(
            (d.subnet.as_str(), d.building.as_str()),
            ("10.2.0.0/16", "B")
        );
        assert!(d.text().contains("10.2.0.7"));
        // Same building, no floor in the subnet: no drift.
        assert_eq!(drift(&map, Some("10.9.0.1"), &at("A", Some("1"))), None);
        assert_eq!(drift(&map, Some("10.9.0.1"), &at("a", None)), None);
        // The subnet names floor 3, the station is on floor 1: drift.
        assert!(drift(&map, Some("10.3.0.1"), &at("A", Some("1"))).is_some());
        assert_eq!(drift(&map, Some("10.3.0.1"), &at("A", Some("3"))), None);
        // Unmapped, unparsable, no address, no building: no drift.
        assert_eq!(drift(&map, Some("192.168.1.1"), &at("B", None)), None);
        assert_eq!(drift(&map, Some("garbage"), &at("B", None)), None);
        assert_eq!(drift(&map, None, &at("B", None)), None);
        assert_eq!(drift(&map, Some("10.2.0.7"), &Location::default()), None);
        // IPv4-mapped IPv6 (a dual-stack listener) counts as IPv4.
        assert!(drift(&map, Some("::ffff:10.2.0.7"), &at("A", None)).is_some());
    }
}
