//! The Spectralink 84-series `AlarmNotificationEvent` push (also sent by Cisco Wireless
//! 840/860 phones of the same lineage for their emergency button's trigger and cancel):
//!
//! ```xml
//! <PolycomIPPhone><AlarmNotificationEvent>
//!   <PhoneIP>172.29.71.157</PhoneIP><MACAddress>00907a0e4459</MACAddress>
//!   <BSSID>0023ebe4ebaf</BSSID><StillAlarm>0</StillAlarm><TiltAlarm>1</TiltAlarm>
//!   <RunningAlarm>0</RunningAlarm><DuressAlarm>0</DuressAlarm>
//!   <TimeStamp>2012-12-10T08:11:25-07:00</TimeStamp>
//! </AlarmNotificationEvent></PolycomIPPhone>
//! ```
//!
//! Each detector field is its current state (0 = no alarm, 1 = alarm). Parsed with quick-xml:
//! a DOCTYPE (and with it any entity definition) is refused, only the five predefined
//! entities and character references are understood, and sizes are bounded.

use quick_xml::events::Event;

/// The largest body accepted (a real event is about 400 bytes).
pub const MAX_BYTES: usize = 8 * 1024;
/// The longest text of one field.
const MAX_FIELD: usize = 64;
/// The deepest nesting accepted (the document has three levels).
const MAX_DEPTH: usize = 4;

/// One parsed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmEvent {
    pub phone_ip: Option<String>,
    /// Lower-case hex, 12 digits, no separators.
    pub mac: String,
    /// Lower case, colon separated (the access-point table's form); `None` when absent.
    pub bssid: Option<String>,
    pub still: bool,
    pub tilt: bool,
    pub running: bool,
    pub duress: bool,
    /// As the phone sent it (its clock is not trusted; it identifies the event).
    pub timestamp: String,
}

impl AlarmEvent {
    /// Any detector in alarm: a press. All clear: the alarm was cancelled on the phone.
    pub fn alarmed(&self) -> bool {
        self.duress || self.still || self.tilt || self.running
    }

    /// The detectors in alarm, for the stored record and the audit entry.
    pub fn detectors(&self) -> Vec<&'static str> {
        [
            (self.duress, "duress"),
            (self.still, "still"),
            (self.tilt, "tilt"),
            (self.running, "running"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("body exceeds {MAX_BYTES} bytes")]
    TooLarge,
    #[error("a DOCTYPE is not accepted")]
    Doctype,
    #[error("not well-formed XML: {0}")]
    Syntax(String),
    #[error("no AlarmNotificationEvent element")]
    NoEvent,
    #[error("field {0} is missing")]
    Missing(&'static str),
    #[error("field {0} is invalid")]
    Invalid(&'static str),
}

/// A MAC address or BSSID in any common spelling (`00907a0e4459`, `00:90:7A:0E:44:59`,
/// `0090.7a0e.4459`) as 12 lower-case hex digits.
pub fn normalize_mac(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

/// 12 hex digits as `aa:bb:cc:dd:ee:ff`.
pub fn colon_mac(hex12: &str) -> String {
    hex12
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

fn flag(field: &'static str, text: Option<&String>) -> Result<bool, ParseError> {
    match text.map(|s| s.trim()) {
        None | Some("0") | Some("") => Ok(false),
        Some("1") => Ok(true),
        Some(_) => Err(ParseError::Invalid(field)),
    }
}

/// Appends text to a field, bounded.
fn append(
    fields: &mut std::collections::HashMap<String, String>,
    field: &str,
    text: &str,
) -> Result<(), ParseError> {
    let value = fields.entry(field.to_owned()).or_default();
    value.push_str(text);
    if value.chars().count() > MAX_FIELD {
        return Err(ParseError::Syntax(format!("field {field} too long")));
    }
    Ok(())
}

/// Parses one `AlarmNotificationEvent` (inside `PolycomIPPhone` or on its own).
pub fn parse(body: &[u8]) -> Result<AlarmEvent, ParseError> {
    if body.len() > MAX_BYTES {
        return Err(ParseError::TooLarge);
    }
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut path: Vec<String> = Vec::new();
    let mut in_event = false;
    let mut seen_event = false;
    let mut fields: std::collections::HashMap<String, String> = Default::default();
    let mut buf = Vec::new();
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| ParseError::Syntax(e.to_string()))?;
        match ev {
            Event::DocType(_) => return Err(ParseError::Doctype),
            Event::Start(e) => {
                let name = e.local_name().into_inner().to_owned();
                if path.len() >= MAX_DEPTH {
                    return Err(ParseError::Syntax("nested too deep".into()));
                }
                if name == "AlarmNotificationEvent" {
                    if seen_event {
                        return Err(ParseError::Syntax("more than one event".into()));
                    }
                    in_event = true;
                    seen_event = true;
                }
                path.push(name);
            }
            Event::End(_) => {
                let closed = path.pop();
                in_event &= closed.as_deref() != Some("AlarmNotificationEvent");
            }
            Event::Text(t) => {
                if in_event && let Some(field) = path.last() {
                    append(&mut fields, field, &t.xml10_content())?;
                }
            }
            // `&name;` and `&#N;` arrive as their own events: only character references and
            // the five predefined entities mean anything (no DTD can define others).
            Event::GeneralRef(r) => {
                let c = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| ParseError::Syntax(e.to_string()))?
                        .map(String::from)
                } else {
                    quick_xml::escape::resolve_predefined_entity(&r.xml10_content())
                        .map(str::to_owned)
                };
                let Some(c) = c else {
                    return Err(ParseError::Syntax("undefined entity".into()));
                };
                if in_event && let Some(field) = path.last() {
                    append(&mut fields, field, &c)?;
                }
            }
            Event::Eof => break,
            // Declarations, comments, empty elements, CDATA, processing instructions: ignored
            // (an empty <BSSID/> is simply absent).
            _ => {}
        }
        buf.clear();
    }
    if !seen_event {
        return Err(ParseError::NoEvent);
    }
    for v in fields.values_mut() {
        *v = v.trim().to_owned();
    }
    let mac = fields
        .get("MACAddress")
        .ok_or(ParseError::Missing("MACAddress"))?;
    let mac = normalize_mac(mac).ok_or(ParseError::Invalid("MACAddress"))?;
    let bssid = match fields.get("BSSID").filter(|s| !s.is_empty()) {
        None => None,
        Some(b) => Some(colon_mac(
            &normalize_mac(b).ok_or(ParseError::Invalid("BSSID"))?,
        )),
    };
    let timestamp = fields
        .get("TimeStamp")
        .filter(|s| !s.is_empty())
        .ok_or(ParseError::Missing("TimeStamp"))?
        .clone();
    Ok(AlarmEvent {
        phone_ip: fields.get("PhoneIP").cloned(),
        mac,
        bssid,
        still: flag("StillAlarm", fields.get("StillAlarm"))?,
        tilt: flag("TiltAlarm", fields.get("TiltAlarm"))?,
        running: flag("RunningAlarm", fields.get("RunningAlarm"))?,
        duress: flag("DuressAlarm", fields.get("DuressAlarm"))?,
        timestamp,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SAMPLE: &str = "<PolycomIPPhone>\n<AlarmNotificationEvent>\n<PhoneIP>172.29.71.157</PhoneIP>\n\
        <MACAddress>00907a0e4459</MACAddress>\n<BSSID>0023ebe4ebaf</BSSID>\n<StillAlarm>0</StillAlarm>\n\
        <TiltAlarm>0</TiltAlarm>\n<RunningAlarm>0</RunningAlarm>\n<DuressAlarm>1</DuressAlarm>\n\
        <TimeStamp>2012-12-10T08:11:25-07:00</TimeStamp>\n</AlarmNotificationEvent>\n</PolycomIPPhone>";

    #[test]
    fn parses_the_documented_event() {
        let e = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(e.mac, "00907a0e4459");
        assert_eq!(e.bssid.as_deref(), Some("00:23:eb:e4:eb:af"));
        assert!(e.duress && e.alarmed());
        assert_eq!(e.timestamp, "2012-12-10T08:11:25-07:00");
    }

    #[test]
    fn refuses_doctype_entities_and_junk() {
        let evil = format!(
            "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\">]>{}",
            SAMPLE.replace("172.29.71.157", "&a;")
        );
        assert_eq!(parse(evil.as_bytes()), Err(ParseError::Doctype));
        assert!(parse(SAMPLE.replace("172.29.71.157", "&a;").as_bytes()).is_err());
        assert_eq!(parse(b"<x/>"), Err(ParseError::NoEvent));
        assert!(parse(b"<a><b>").is_err() || parse(b"<a><b>") == Err(ParseError::NoEvent));
        assert_eq!(
            parse(SAMPLE.replace(">1<", ">2<").as_bytes()),
            Err(ParseError::Invalid("DuressAlarm"))
        );
        assert_eq!(parse(&vec![b' '; MAX_BYTES + 1]), Err(ParseError::TooLarge));
    }
}
