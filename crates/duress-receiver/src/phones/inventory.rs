//! The phone inventory's and the access-point table's CSV files, and the checks every phone
//! field passes whether it comes from a CSV line, the console or the CLI.

use crate::store::{AccessPoint, NewPhone, SecretHash};

/// The inventory's header, exactly (docs/integrations.md, "Desk phones").
pub const PHONE_HEADER: [&str; 8] = [
    "device_name",
    "extension",
    "label",
    "BLD",
    "FLR",
    "ROOM",
    "secret",
    "allowed_network",
];

/// The access-point table's header.
pub const AP_HEADER: [&str; 5] = ["bssid", "label", "BLD", "FLR", "ROOM"];

/// The shortest per-phone secret accepted: it is all that stands between a phone's URL and a
/// forged alarm, so it must be unguessable (`openssl rand -hex 16` gives 32 characters).
pub const MIN_SECRET_CHARS: usize = 16;
pub const MAX_SECRET_CHARS: usize = 128;

/// `SEP001122334455` → itself, upper case; refuses anything that CUCM would not substitute.
pub fn device_name(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty()
        || t.len() > 64
        || !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "device_name {t:?} must be 1-64 letters, digits, '-' or '_' (like SEP001122334455)"
        ));
    }
    Ok(t.to_ascii_uppercase())
}

/// A per-phone secret: URL-safe characters only (it travels in the Service URL's query).
pub fn check_secret(secret: &str) -> Result<(), String> {
    let n = secret.chars().count();
    if !(MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&n)
        || !secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
    {
        return Err(format!(
            "secret must be {MIN_SECRET_CHARS}-{MAX_SECRET_CHARS} characters of A-Z a-z 0-9 - _ . ~"
        ));
    }
    Ok(())
}

/// A network in CIDR form, or one address (a /32 or /128); host bits must be zero.
pub fn allowed_network(text: &str) -> Result<ipnet::IpNet, String> {
    let t = text.trim();
    let net = match t.parse::<ipnet::IpNet>() {
        Ok(n) => n,
        Err(_) => t
            .parse::<std::net::IpAddr>()
            .map(ipnet::IpNet::from)
            .map_err(|_| format!("allowed_network {t:?} is not an address or a CIDR network"))?,
    };
    if net.trunc() != net {
        return Err(format!(
            "allowed_network {t:?} has host bits set (did you mean {}?)",
            net.trunc()
        ));
    }
    Ok(net)
}

fn text_field(name: &str, value: &str, required: bool) -> Result<Option<String>, String> {
    let v = value.trim();
    if v.is_empty() {
        return if required {
            Err(format!("{name} is empty"))
        } else {
            Ok(None)
        };
    }
    if v.chars().count() > duress_core::location::MAX_FIELD_CHARS || v.chars().any(char::is_control)
    {
        return Err(format!(
            "{name} is too long or contains a control character"
        ));
    }
    Ok(Some(v.to_owned()))
}

/// One phone from its fields (the secret not yet hashed: `secret` is checked here, hashed by
/// the caller, so a CSV with a bad line hashes nothing).
#[derive(Debug)]
pub struct PhoneFields<'a> {
    pub device_name: &'a str,
    pub extension: &'a str,
    pub label: &'a str,
    pub building: &'a str,
    pub floor: &'a str,
    pub room: &'a str,
    pub allowed_network: &'a str,
}

pub fn new_phone(f: &PhoneFields<'_>) -> Result<NewPhone, String> {
    Ok(NewPhone {
        device_name: device_name(f.device_name)?,
        extension: text_field("extension", f.extension, true)?.unwrap_or_default(),
        label: text_field("label", f.label, true)?.unwrap_or_default(),
        building: text_field("BLD", f.building, false)?,
        floor: text_field("FLR", f.floor, false)?,
        room: text_field("ROOM", f.room, false)?,
        secret_hash: None,
        allowed_network: allowed_network(f.allowed_network)?,
    })
}

/// Hashes a checked secret (argon2id, as console passwords are).
pub fn hash_secret(secret: &str) -> anyhow::Result<SecretHash> {
    Ok(SecretHash(crate::console::accounts::hash_password(secret)?))
}

/// Reads the header and records of a CSV whose header must be exactly `header`; every
/// record has as many fields. Errors name the line.
fn records(text: &str, header: &[&str]) -> Result<Vec<(u64, csv::StringRecord)>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let found = reader
        .headers()
        .map_err(|e| format!("line 1: {e}"))?
        .iter()
        .map(str::trim)
        .collect::<Vec<_>>();
    if found != header {
        return Err(format!(
            "line 1: the header is {:?}; expected {}",
            found.join(","),
            header.join(",")
        ));
    }
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, csv::Position::line);
            format!("line {line}: {e}")
        })?;
        let line = record.position().map_or(0, csv::Position::line);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        out.push((line, record));
    }
    Ok(out)
}

/// Parses an inventory CSV: every line is checked before any secret is hashed or anything
/// written, so one bad line imports nothing. Returns each phone with its (unhashed) secret.
pub fn parse_phones_csv(text: &str) -> Result<Vec<(NewPhone, String)>, String> {
    let mut out: Vec<(NewPhone, String)> = Vec::new();
    for (line, r) in records(text, &PHONE_HEADER)? {
        let at = |e: String| format!("line {line}: {e}");
        let phone = new_phone(&PhoneFields {
            device_name: &r[0],
            extension: &r[1],
            label: &r[2],
            building: &r[3],
            floor: &r[4],
            room: &r[5],
            allowed_network: &r[7],
        })
        .map_err(at)?;
        let secret = r[6].trim().to_owned();
        check_secret(&secret).map_err(at)?;
        if out.iter().any(|(p, _)| p.device_name == phone.device_name) {
            return Err(at(format!("{} is listed twice", phone.device_name)));
        }
        out.push((phone, secret));
    }
    if out.is_empty() {
        return Err("the file lists no phones".into());
    }
    Ok(out)
}

/// Parses an access-point CSV (`bssid,label,BLD,FLR,ROOM`), all lines checked first.
pub fn parse_access_points_csv(text: &str) -> Result<Vec<AccessPoint>, String> {
    let mut out: Vec<AccessPoint> = Vec::new();
    for (line, r) in records(text, &AP_HEADER)? {
        let at = |e: String| format!("line {line}: {e}");
        let bssid = super::alarm_event::normalize_mac(&r[0])
            .map(|h| super::alarm_event::colon_mac(&h))
            .ok_or_else(|| at(format!("bssid {:?} is not a MAC address", r[0].trim())))?;
        let ap = AccessPoint {
            bssid,
            label: text_field("label", &r[1], true)
                .map_err(at)?
                .unwrap_or_default(),
            building: text_field("BLD", &r[2], false).map_err(at)?,
            floor: text_field("FLR", &r[3], false).map_err(at)?,
            room: text_field("ROOM", &r[4], false).map_err(at)?,
        };
        if out.iter().any(|a| a.bssid == ap.bssid) {
            return Err(at(format!("{} is listed twice", ap.bssid)));
        }
        out.push(ap);
    }
    if out.is_empty() {
        return Err("the file lists no access points".into());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HEAD: &str = "device_name,extension,label,BLD,FLR,ROOM,secret,allowed_network\n";

    #[test]
    fn phones_csv_all_or_nothing_with_line_numbers() {
        let ok = format!(
            "{HEAD}sep001122334455,2140,\"Bldg A, Floor 2, Room 214\",A,2,214,0123456789abcdef0123,10.1.2.0/24\n"
        );
        let phones = parse_phones_csv(&ok).unwrap();
        assert_eq!(phones[0].0.device_name, "SEP001122334455");
        assert_eq!(phones[0].0.label, "Bldg A, Floor 2, Room 214");
        assert_eq!(phones[0].0.allowed_network.to_string(), "10.1.2.0/24");
        let bad = format!("{ok}SEP00112233445A,2141,Desk,A,2,215,short,10.1.2.7\n");
        let e = parse_phones_csv(&bad).unwrap_err();
        assert!(e.starts_with("line 3: secret"), "{e}");
        let e = parse_phones_csv(&format!("{HEAD}SEP1,1,L,,,,0123456789abcdef,10.1.2.3/24\n"))
            .unwrap_err();
        assert!(e.contains("line 2") && e.contains("host bits"), "{e}");
        let e = parse_phones_csv("device_name,extension\nx,y\n").unwrap_err();
        assert!(e.starts_with("line 1: the header"), "{e}");
        let e = parse_phones_csv(&format!("{HEAD}SEP1,1,L\n")).unwrap_err();
        assert!(e.starts_with("line 2"), "{e}");
    }

    #[test]
    fn access_points_csv() {
        let aps = parse_access_points_csv(
            "bssid,label,BLD,FLR,ROOM\n00-23-EB-E4-EB-AF,\"Bldg B, Floor 1, Room 101\",B,1,101\n",
        )
        .unwrap();
        assert_eq!(aps[0].bssid, "00:23:eb:e4:eb:af");
        assert!(
            parse_access_points_csv("bssid,label,BLD,FLR,ROOM\nnope,L,,,\n")
                .unwrap_err()
                .starts_with("line 2")
        );
    }
}
