//! A dispatchable location in RFC 5139 civic-address element names, plus a human label.
//!
//! The same field names are used in the policy file, on the wire and in the receiver's store,
//! so a value never changes name between the IT admin who types it and the officer who reads it
//! to a 911 call-taker.

use serde::{Deserialize, Serialize};

/// Longest value of any one location field, in characters.
pub const MAX_FIELD_CHARS: usize = 256;

/// RFC 5139 §3.1 civic address elements (all optional) and a label.
///
/// Unknown fields are ignored on the wire (an alarm is never refused for an extra field);
/// the agent's policy loader refuses them by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// What officers read first: "Bldg A, Floor 2, Room 214".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// ISO 3166 alpha-2 country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// National subdivision (state, province).
    #[serde(rename = "A1", default, skip_serializing_if = "Option::is_none")]
    pub a1: Option<String>,
    /// County, parish.
    #[serde(rename = "A2", default, skip_serializing_if = "Option::is_none")]
    pub a2: Option<String>,
    /// City, township.
    #[serde(rename = "A3", default, skip_serializing_if = "Option::is_none")]
    pub a3: Option<String>,
    /// City division, borough.
    #[serde(rename = "A4", default, skip_serializing_if = "Option::is_none")]
    pub a4: Option<String>,
    /// Neighbourhood.
    #[serde(rename = "A5", default, skip_serializing_if = "Option::is_none")]
    pub a5: Option<String>,
    /// Street (deprecated by RFC 5139 in favour of RD, accepted for old data).
    #[serde(rename = "A6", default, skip_serializing_if = "Option::is_none")]
    pub a6: Option<String>,
    /// Primary road or street.
    #[serde(rename = "RD", default, skip_serializing_if = "Option::is_none")]
    pub rd: Option<String>,
    /// Leading street direction (N, W).
    #[serde(rename = "PRD", default, skip_serializing_if = "Option::is_none")]
    pub prd: Option<String>,
    /// Trailing street suffix direction.
    #[serde(rename = "POD", default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Street suffix (Ave, Platz).
    #[serde(rename = "STS", default, skip_serializing_if = "Option::is_none")]
    pub sts: Option<String>,
    /// House number.
    #[serde(rename = "HNO", default, skip_serializing_if = "Option::is_none")]
    pub hno: Option<String>,
    /// House number suffix (A, 1/2).
    #[serde(rename = "HNS", default, skip_serializing_if = "Option::is_none")]
    pub hns: Option<String>,
    /// Landmark or vanity address.
    #[serde(rename = "LMK", default, skip_serializing_if = "Option::is_none")]
    pub lmk: Option<String>,
    /// Additional location information ("north entrance").
    #[serde(rename = "LOC", default, skip_serializing_if = "Option::is_none")]
    pub loc: Option<String>,
    /// Name (business or resident).
    #[serde(rename = "NAM", default, skip_serializing_if = "Option::is_none")]
    pub nam: Option<String>,
    /// Postal code.
    #[serde(rename = "PC", default, skip_serializing_if = "Option::is_none")]
    pub pc: Option<String>,
    /// Building.
    #[serde(rename = "BLD", default, skip_serializing_if = "Option::is_none")]
    pub bld: Option<String>,
    /// Floor.
    #[serde(rename = "FLR", default, skip_serializing_if = "Option::is_none")]
    pub flr: Option<String>,
    /// Unit (apartment, suite).
    #[serde(rename = "UNIT", default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Room.
    #[serde(rename = "ROOM", default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Seat (desk, cubicle, workstation).
    #[serde(rename = "SEAT", default, skip_serializing_if = "Option::is_none")]
    pub seat: Option<String>,
    /// Place type (RFC 4589: office, school, hospital).
    #[serde(rename = "PLC", default, skip_serializing_if = "Option::is_none")]
    pub plc: Option<String>,
}

impl Location {
    /// Every field as (RFC 5139 name, value), in the order a call-taker expects them.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        let all: [(&'static str, &Option<String>); 24] = [
            ("label", &self.label),
            ("NAM", &self.nam),
            ("BLD", &self.bld),
            ("FLR", &self.flr),
            ("UNIT", &self.unit),
            ("ROOM", &self.room),
            ("SEAT", &self.seat),
            ("LOC", &self.loc),
            ("HNO", &self.hno),
            ("HNS", &self.hns),
            ("PRD", &self.prd),
            ("RD", &self.rd),
            ("STS", &self.sts),
            ("POD", &self.pod),
            ("A6", &self.a6),
            ("LMK", &self.lmk),
            ("A5", &self.a5),
            ("A4", &self.a4),
            ("A3", &self.a3),
            ("A2", &self.a2),
            ("A1", &self.a1),
            ("PC", &self.pc),
            ("country", &self.country),
            ("PLC", &self.plc),
        ];
        all.into_iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
            .collect()
    }

    /// The label, or one built from building / floor / room when IT gave none. Bidirectional
    /// controls are shown as `[U+202E]` ([`crate::text::escape_bidi`]): this is what officers
    /// read, and a device's location cannot be refused without losing its alarm.
    pub fn display_label(&self) -> String {
        crate::text::escape_bidi(&self.raw_label()).into_owned()
    }

    fn raw_label(&self) -> String {
        if let Some(label) = self.label.as_deref().filter(|l| !l.trim().is_empty()) {
            return label.to_owned();
        }
        let parts: Vec<String> = [
            self.bld.as_deref().map(|b| format!("Bldg {b}")),
            self.flr.as_deref().map(|f| format!("Floor {f}")),
            self.room.as_deref().map(|r| format!("Room {r}")),
            self.seat.as_deref().map(|s| format!("Seat {s}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            "(no location configured)".to_owned()
        } else {
            parts.join(", ")
        }
    }

    /// The civic address on one line, ready to read to a 911 call-taker:
    /// "100 University Ave, Saint Paul, MN 55101, US — Bldg A, Floor 2, Room 214".
    /// Bidirectional controls escaped, as in [`Location::display_label`].
    pub fn civic_address(&self) -> String {
        crate::text::escape_bidi(&self.raw_civic_address()).into_owned()
    }

    fn raw_civic_address(&self) -> String {
        let street: Vec<&str> = [
            self.hno.as_deref(),
            self.hns.as_deref(),
            self.prd.as_deref(),
            self.rd.as_deref().or(self.a6.as_deref()),
            self.sts.as_deref(),
            self.pod.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let state_pc: Vec<&str> = [self.a1.as_deref(), self.pc.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let mut line: Vec<String> = Vec::new();
        if let Some(n) = &self.nam {
            line.push(n.clone());
        }
        if !street.is_empty() {
            line.push(street.join(" "));
        }
        if let Some(c) = &self.a3 {
            line.push(c.clone());
        }
        if !state_pc.is_empty() {
            line.push(state_pc.join(" "));
        }
        if let Some(c) = &self.country {
            line.push(c.clone());
        }
        let inside: Vec<String> = [
            self.bld.as_deref().map(|b| format!("Bldg {b}")),
            self.flr.as_deref().map(|f| format!("Floor {f}")),
            self.unit.as_deref().map(|u| format!("Unit {u}")),
            self.room.as_deref().map(|r| format!("Room {r}")),
            self.seat.as_deref().map(|s| format!("Seat {s}")),
            self.loc.clone(),
        ]
        .into_iter()
        .flatten()
        .collect();
        match (line.is_empty(), inside.is_empty()) {
            (true, true) => String::new(),
            (false, true) => line.join(", "),
            (true, false) => inside.join(", "),
            (false, false) => format!("{} — {}", line.join(", "), inside.join(", ")),
        }
    }

    /// Refuses fields longer than [`MAX_FIELD_CHARS`] or containing control characters.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in self.fields() {
            if value.chars().count() > MAX_FIELD_CHARS {
                return Err(format!(
                    "location {name} is longer than {MAX_FIELD_CHARS} characters"
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(format!("location {name} contains a control character"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bidi_controls_are_shown_escaped() {
        let loc = Location {
            label: Some("Room \u{202E}412".into()),
            room: Some("2\u{2067}14".into()),
            ..Location::default()
        };
        assert_eq!(loc.display_label(), "Room [U+202E]412");
        assert_eq!(loc.civic_address(), "Room 2[U+2067]14");
    }

    #[test]
    fn rfc5139_names_round_trip() {
        let json = r#"{"label":"Bldg A, Floor 2, Room 214","country":"US","A1":"MN","A3":"Saint Paul","RD":"University Ave","HNO":"100","PC":"55101","BLD":"A","FLR":"2","ROOM":"214"}"#;
        let loc: Location = serde_json::from_str(json).unwrap();
        assert_eq!(loc.a1.as_deref(), Some("MN"));
        assert_eq!(serde_json::to_string(&loc).unwrap(), json);
        assert_eq!(
            loc.civic_address(),
            "100 University Ave, Saint Paul, MN 55101, US — Bldg A, Floor 2, Room 214"
        );
    }

    #[test]
    fn label_falls_back_to_building_floor_room() {
        let loc = Location {
            bld: Some("A".into()),
            flr: Some("2".into()),
            room: Some("214".into()),
            ..Default::default()
        };
        assert_eq!(loc.display_label(), "Bldg A, Floor 2, Room 214");
        assert_eq!(
            Location::default().display_label(),
            "(no location configured)"
        );
    }

    #[test]
    fn unknown_wire_fields_are_ignored_not_fatal() {
        let loc: Location = serde_json::from_str(r#"{"ROOM":"1","FUTURE":"x"}"#).unwrap();
        assert_eq!(loc.room.as_deref(), Some("1"));
    }

    #[test]
    fn validate_limits_length_and_control_chars() {
        let mut loc = Location {
            room: Some("x".repeat(257)),
            ..Default::default()
        };
        assert!(loc.validate().unwrap_err().contains("ROOM"));
        loc.room = Some("2\u{7}".into());
        assert!(loc.validate().is_err());
        loc.room = Some("Salle 2 — 北".into());
        assert!(loc.validate().is_ok());
    }
}
