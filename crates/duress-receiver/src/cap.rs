//! An incident as an OASIS CAP 1.2 alert (issue 14, item 3; STANDARDS.md §5, §9.3), for
//! `GET /v1/incidents/{id}/cap` and the outbound channel kind `cap`.
//!
//! The mapping:
//! - `identifier`: `duress-{incident id}` for the first alert, `duress-{incident id}-{n}` for
//!   the n-th change since (timeline entries and presses after the first); `sent` is the time of
//!   that change. The same state always gives the same document, so a resend is harmless.
//! - `status`: `Test` when the incident was resolved with the disposition `test` (a drill),
//!   else `Actual`. (Self-tests never open an incident, so they are never CAP alerts.)
//! - `msgType`: `Alert` while nothing happened but the first press, `Update` after any claim,
//!   note, further press or cancel, `Cancel` once resolved; Update and Cancel reference the
//!   first alert (`references`).
//! - `scope`: `Restricted` with a `restriction` text (the default), or `Private` with the
//!   configured `addresses`; never `Public`: a duress alert must stay silent.
//! - `info`: `category` Security, urgency Immediate / severity Severe / certainty Observed
//!   (Past / Unknown / Observed once resolved), `areaDesc` = the location label, every civic
//!   field (RFC 5139 names) and the incident facts as `<parameter>`s.
//! - Timestamps: `YYYY-MM-DDThh:mm:ss-00:00` (UTC, whole seconds): CAP 1.2 forbids `Z`, and
//!   says UTC is written `-00:00`; its schema has no fraction digits.
//!
//! Written with a small writer over [`quick_xml::escape`] rather than a CAP object model: the
//! document is flat, its element order is fixed by the schema, and `tests/cap.rs` validates
//! every variant against the OASIS XSD.

use std::fmt::Write as _;

use time::OffsetDateTime;

use crate::records::IncidentRecord;
use crate::store::IncidentDetail;

/// The CAP 1.2 namespace.
pub const CAP_NAMESPACE: &str = "urn:oasis:names:tc:emergency:cap:1.2";
/// The media type the API and the channel send CAP documents with.
pub const CAP_CONTENT_TYPE: &str = "application/cap+xml";

/// Who may see the alert: CAP's `scope` with what it requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapScope {
    /// `Restricted` with this `restriction` text.
    Restricted(String),
    /// `Private` with these `addresses` (space-separated in the document; an address with a
    /// space is quoted, as CAP says).
    Private(Vec<String>),
}

impl Default for CapScope {
    fn default() -> Self {
        CapScope::Restricted(DEFAULT_RESTRICTION.to_owned())
    }
}

/// The default `restriction`.
pub const DEFAULT_RESTRICTION: &str = "Security staff only: a silent duress alarm; never \
     broadcast it, never alert the person who raised it or anyone near them";

/// What a CAP document is built with besides the incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapOptions {
    /// CAP `sender`: a unique identifier of this receiver (default `duress@HOSTNAME`).
    pub sender: String,
    pub scope: CapScope,
}

impl Default for CapOptions {
    fn default() -> Self {
        CapOptions {
            sender: default_sender(),
            scope: CapScope::default(),
        }
    }
}

/// `duress@HOSTNAME` (CAP: "identifies the originator … guaranteed by assigning the sender an
/// Internet domain name"; no spaces, commas or `<`/`&`, which [`identifier_safe`] removes).
pub fn default_sender() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!("duress@{}", identifier_safe(&host))
}

/// CAP `msgType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    Alert,
    Update,
    Cancel,
}

impl MsgType {
    pub const fn as_str(self) -> &'static str {
        match self {
            MsgType::Alert => "Alert",
            MsgType::Update => "Update",
            MsgType::Cancel => "Cancel",
        }
    }
}

/// What the document of an incident's current state says, before writing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapFacts {
    pub identifier: String,
    pub first_identifier: String,
    pub sent: OffsetDateTime,
    pub first_sent: OffsetDateTime,
    pub status: &'static str,
    pub msg_type: MsgType,
}

/// The facts of `detail`'s current state (see the module comment).
pub fn facts(detail: &IncidentDetail) -> CapFacts {
    let i = &detail.incident;
    let first_identifier = format!("duress-{}", i.incident_id);
    // Every change after the first press: further presses and cancels, and officers' entries.
    let changes = i.events.len().saturating_sub(1) + detail.timeline.len();
    let last_change = detail
        .timeline
        .iter()
        .map(|t| t.at)
        .chain(i.events.iter().map(|e| e.received_at))
        .chain(i.resolved_at)
        .max()
        .unwrap_or(i.opened_at)
        .max(i.opened_at);
    let msg_type = if !i.is_open() {
        MsgType::Cancel
    } else if changes == 0 {
        MsgType::Alert
    } else {
        MsgType::Update
    };
    let (identifier, sent) = if changes == 0 {
        (first_identifier.clone(), i.opened_at)
    } else {
        (format!("{first_identifier}-{changes}"), last_change)
    };
    CapFacts {
        identifier,
        first_identifier,
        sent,
        first_sent: i.opened_at,
        status: if i.disposition.as_deref() == Some("test") {
            "Test"
        } else {
            "Actual"
        },
        msg_type,
    }
}

/// CAP's dateTime: whole seconds, a numeric offset, UTC written `-00:00`.
pub fn cap_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}-00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Removes what a CAP identifier or sender may not contain (spaces, commas, `<`, `&`) and
/// anything outside printable ASCII.
pub fn identifier_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, ',' | '<' | '&'))
        .collect()
}

/// Text for an XML 1.0 document: the characters XML 1.0 cannot carry at all (most C0
/// controls, U+FFFE/U+FFFF) are dropped, since no escape exists for them; the rest is escaped.
fn text(s: &str) -> String {
    let clean: String = s
        .chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r')
                || ('\u{20}'..='\u{D7FF}').contains(&c)
                || ('\u{E000}'..='\u{FFFD}').contains(&c)
                || c >= '\u{10000}'
        })
        .collect();
    quick_xml::escape::partial_escape(clean.as_str()).into_owned()
}

fn element(out: &mut String, indent: usize, name: &str, value: &str) {
    let _ = writeln!(
        out,
        "{:indent$}<{name}>{}</{name}>",
        "",
        text(value),
        indent = indent
    );
}

fn parameter(out: &mut String, name: &str, value: &str) {
    if value.trim().is_empty() {
        return;
    }
    out.push_str("    <parameter>\n");
    element(out, 6, "valueName", name);
    element(out, 6, "value", value);
    out.push_str("    </parameter>\n");
}

/// An address list as CAP writes it: space-separated, an address with a space in quotes.
fn addresses(list: &[String]) -> String {
    list.iter()
        .map(|a| a.replace('"', ""))
        .filter(|a| !a.trim().is_empty())
        .map(|a| {
            if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The location CAP's `areaDesc` (required) carries: the label, else the civic summary.
fn area_desc(i: &IncidentRecord) -> String {
    area_of(i.registered_location.as_ref().unwrap_or(&i.location))
}

/// What one CAP document says, before it is written: built from an incident
/// ([`alert_xml`]) or from a notification of the outbox ([`notification_xml`]).
#[derive(Debug, Clone)]
struct Alert {
    facts: CapFacts,
    event: &'static str,
    urgency: &'static str,
    severity: &'static str,
    area: String,
    description: String,
    parameters: Vec<(String, String)>,
}

fn civic_parameters(location: &duress_core::Location, out: &mut Vec<(String, String)>) {
    for (name, value) in location.fields() {
        out.push((name.to_owned(), value.to_owned()));
    }
}

fn area_of(location: &duress_core::Location) -> String {
    let label = location.display_label();
    if label.trim().is_empty() {
        "Unknown location (see the parameters)".to_owned()
    } else {
        label
    }
}

/// The CAP 1.2 document of `detail`'s current state.
pub fn alert_xml(detail: &IncidentDetail, options: &CapOptions) -> String {
    let i = &detail.incident;
    let f = facts(detail);
    let cancel = f.msg_type == MsgType::Cancel;
    let mut parameters: Vec<(String, String)> = vec![
        ("incident_id".into(), i.incident_id.to_string()),
        ("device_id".into(), i.device_id.clone()),
        ("source".into(), i.source.as_str().into()),
        ("hostname".into(), i.host.hostname.clone()),
        ("press_count".into(), i.press_count.to_string()),
        ("status".into(), i.status.clone()),
    ];
    if let Some(by) = &i.claimed_by {
        parameters.push(("claimed_by".into(), by.clone()));
    }
    if i.cancelled_at.is_some() {
        parameters.push(("cancelled".into(), "true".into()));
    }
    if i.cancel_with_duress_pin {
        parameters.push(("cancel_with_duress_pin".into(), "true".into()));
    }
    if let Some(d) = &i.disposition {
        parameters.push(("disposition".into(), d.clone()));
    }
    // Civic fields (RFC 5139 names), of the registered location when there is one.
    let location = i.registered_location.as_ref().unwrap_or(&i.location);
    civic_parameters(location, &mut parameters);
    write(
        &Alert {
            facts: f,
            event: "Silent duress alarm",
            urgency: if cancel { "Past" } else { "Immediate" },
            severity: if cancel { "Unknown" } else { "Severe" },
            area: area_desc(i),
            description: description(i),
            parameters,
        },
        options,
    )
}

/// The CAP 1.2 document of one outbox notification (the channel kind `cap`): a new incident is
/// the `Alert` `duress-{incident id}` (the same identifier and `sent` as the API's first alert
/// of it), an escalation an `Update` referencing it, the incident's resolve a `Cancel`
/// referencing it; a self-test is `status` Test; a station
/// gone offline an `Alert` of its own. Every other notification's identifier is
/// `duress-{notification id}`, so a resend is the same document.
pub fn notification_xml(msg: &crate::notify::channels::Message, options: &CapOptions) -> String {
    let f = &msg.facts;
    let first_identifier = match f.incident_id {
        Some(id) => format!("duress-{id}"),
        None => format!("duress-{}", identifier_safe(&msg.id)),
    };
    let escalation = f.reason == "incident" && (msg.step > 0 || msg.repeat_index > 0);
    let (identifier, msg_type) = if f.reason == "resolved" {
        // The incident was resolved: its alert is cancelled (references the first alert).
        (
            format!("duress-{}", identifier_safe(&msg.id)),
            MsgType::Cancel,
        )
    } else if escalation {
        (
            format!("duress-{}", identifier_safe(&msg.id)),
            MsgType::Update,
        )
    } else {
        (first_identifier.clone(), MsgType::Alert)
    };
    let (event, urgency, severity, status) = match f.reason.as_str() {
        "test" => (
            "Duress self-test (no emergency)",
            "Unknown",
            "Minor",
            "Test",
        ),
        "offline" => ("Duress station offline", "Expected", "Moderate", "Actual"),
        "resolved" => ("Silent duress alarm", "Past", "Unknown", "Actual"),
        _ => ("Silent duress alarm", "Immediate", "Severe", "Actual"),
    };
    let mut parameters: Vec<(String, String)> = vec![
        ("reason".into(), f.reason.clone()),
        ("device_id".into(), f.device_id.clone()),
        ("hostname".into(), f.host.hostname.clone()),
    ];
    if let Some(id) = f.incident_id {
        parameters.push(("incident_id".into(), id.to_string()));
    }
    if let Some(n) = msg.press_count {
        parameters.push(("press_count".into(), n.to_string()));
    }
    if escalation {
        parameters.push(("escalation_step".into(), msg.step.to_string()));
    }
    if let Some(url) = &msg.incident_url {
        parameters.push(("incident_url".into(), url.clone()));
    }
    civic_parameters(&f.location, &mut parameters);
    write(
        &Alert {
            facts: CapFacts {
                identifier,
                first_identifier,
                sent: f.at,
                first_sent: f.alarm_at.unwrap_or(f.at),
                status,
                msg_type,
            },
            event,
            urgency,
            severity,
            area: area_of(&f.location),
            description: msg.text(),
            parameters,
        },
        options,
    )
}

fn write(a: &Alert, options: &CapOptions) -> String {
    let f = &a.facts;
    let sender = identifier_safe(&options.sender);
    let mut out = String::with_capacity(4096);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(out, "<alert xmlns=\"{CAP_NAMESPACE}\">");
    element(&mut out, 2, "identifier", &f.identifier);
    element(&mut out, 2, "sender", &sender);
    element(&mut out, 2, "sent", &cap_time(f.sent));
    element(&mut out, 2, "status", f.status);
    element(&mut out, 2, "msgType", f.msg_type.as_str());
    element(&mut out, 2, "source", "Duress receiver");
    match &options.scope {
        CapScope::Restricted(restriction) => {
            element(&mut out, 2, "scope", "Restricted");
            element(&mut out, 2, "restriction", restriction);
        }
        CapScope::Private(list) => {
            element(&mut out, 2, "scope", "Private");
            element(&mut out, 2, "addresses", &addresses(list));
        }
    }
    if f.msg_type != MsgType::Alert {
        element(
            &mut out,
            2,
            "references",
            &format!("{sender},{},{}", f.first_identifier, cap_time(f.first_sent)),
        );
    }
    element(&mut out, 2, "incidents", &f.first_identifier);
    out.push_str("  <info>\n");
    element(&mut out, 4, "language", "en-US");
    element(&mut out, 4, "category", "Security");
    element(&mut out, 4, "event", a.event);
    element(&mut out, 4, "urgency", a.urgency);
    element(&mut out, 4, "severity", a.severity);
    element(&mut out, 4, "certainty", "Observed");
    element(&mut out, 4, "senderName", "Duress silent panic button");
    element(&mut out, 4, "headline", &format!("{}: {}", a.event, a.area));
    element(&mut out, 4, "description", &a.description);
    element(
        &mut out,
        4,
        "instruction",
        "Send security to the location. Do not call or message the station or the person: the \
         alarm is silent on purpose.",
    );
    for (name, value) in &a.parameters {
        parameter(&mut out, name, value);
    }
    out.push_str("    <area>\n");
    element(&mut out, 6, "areaDesc", &a.area);
    out.push_str("    </area>\n");
    out.push_str("  </info>\n");
    out.push_str("</alert>\n");
    out
}

fn description(i: &IncidentRecord) -> String {
    let mut d = format!(
        "Duress alarm from station {} ({} press(es)), opened {}.",
        if i.host.hostname.is_empty() {
            &i.device_id
        } else {
            &i.host.hostname
        },
        i.press_count,
        cap_time(i.opened_at)
    );
    if let Some(by) = &i.claimed_by {
        let _ = write!(d, " Claimed by {by}.");
    }
    if i.cancelled_at.is_some() {
        d.push_str(" The person sent a cancel; officers still follow up.");
    }
    if !i.is_open() {
        let _ = write!(
            d,
            " Resolved: {}.",
            i.disposition.as_deref().unwrap_or("resolved")
        );
    }
    d
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn times_have_a_numeric_offset_never_z() {
        assert_eq!(
            cap_time(datetime!(2026-12-01 18:05:09.123 UTC)),
            "2026-12-01T18:05:09-00:00"
        );
        assert_eq!(
            cap_time(datetime!(2026-12-01 20:05:09 +02:00)),
            "2026-12-01T18:05:09-00:00"
        );
    }

    #[test]
    fn text_is_escaped_and_controls_dropped() {
        assert_eq!(text("a<b & \"c\"\u{1}"), "a&lt;b &amp; \"c\"");
        assert_eq!(identifier_safe("a b,c<d&e"), "abcde");
        assert_eq!(
            addresses(&["ops".into(), "desk one".into()]),
            "ops \"desk one\""
        );
    }
}
