//! The claims of the three signed messages and the receiver's JSON answers.
//!
//! Claims are JSON objects; unknown members are ignored so that an older receiver never refuses
//! an alarm from a newer agent. Timestamps are RFC 3339 strings in UTC.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::location::Location;

/// Longest host string (hostname, user, OS, version, one address), in characters.
pub const MAX_HOST_FIELD_CHARS: usize = 256;
/// Most addresses of one kind a host may list.
pub const MAX_HOST_ADDRESSES: usize = 64;

/// What a press means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A real duress alarm.
    Duress,
    /// A self-test: travels the whole path, shown as a test, never opens a real incident.
    Test,
    /// The staff member cancels an earlier alarm (officers still follow up).
    Cancel,
}

impl EventKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Duress => "duress",
            EventKind::Test => "test",
            EventKind::Cancel => "cancel",
        }
    }
}

/// How the PIN of a `cancel` event was answered, when the policy asks for one. A person forced
/// to cancel can say so by typing the *duress PIN* (or any wrong PIN): the cancel is still sent,
/// exactly as a genuine one is, and only the console shows "cancel with duress PIN".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinCheck {
    /// The cancel PIN was typed.
    Ok,
    /// Neither the cancel PIN nor the duress PIN: treated as a duress PIN.
    Wrong,
    /// The policy's duress PIN was typed.
    Duress,
}

impl PinCheck {
    pub const fn as_str(self) -> &'static str {
        match self {
            PinCheck::Ok => "ok",
            PinCheck::Wrong => "wrong",
            PinCheck::Duress => "duress",
        }
    }

    /// True when the console must flag the cancel as made under duress.
    pub const fn is_duress(self) -> bool {
        matches!(self, PinCheck::Wrong | PinCheck::Duress)
    }
}

/// What was pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Hotkey,
    Tray,
    Hotspot,
    Cli,
    Phone,
    /// The agent's own policy-scheduled silent self-test (`kind: test` only).
    Schedule,
}

impl Source {
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Hotkey => "hotkey",
            Source::Tray => "tray",
            Source::Hotspot => "hotspot",
            Source::Cli => "cli",
            Source::Phone => "phone",
            Source::Schedule => "schedule",
        }
    }
}

/// Facts about the workstation, so officers know which machine and who was logged in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    pub hostname: String,
    /// The login user of the session that pressed.
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub macs: Vec<String>,
    /// "Debian GNU/Linux 12 (bookworm)", "Windows 11 Enterprise 23H2".
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub agent_version: String,
}

impl HostFacts {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("hostname", &self.hostname),
            ("user", &self.user),
            ("os", &self.os),
            ("agent_version", &self.agent_version),
        ] {
            check_text(&format!("host.{name}"), v)?;
        }
        for (name, list) in [("ips", &self.ips), ("macs", &self.macs)] {
            if list.len() > MAX_HOST_ADDRESSES {
                return Err(format!(
                    "host.{name} lists more than {MAX_HOST_ADDRESSES} entries"
                ));
            }
            for v in list {
                check_text(&format!("host.{name}"), v)?;
            }
        }
        Ok(())
    }
}

/// A heartbeat's chord list, shown on the Stations page: bounded in count and length, no
/// control characters, none empty. A real agent sends key names such as `Ctrl+Alt+D`;
/// anything else is garbage, refused with a message naming what is wrong. Bidirectional marks
/// are *not* refused: a desktop portal in a right-to-left locale may put an RLM in its trigger
/// description, and refusing that station's every heartbeat would show it offline. The
/// receiver shows them escaped instead ([`crate::text::escape_bidi`]).
fn check_chords(chords: &[String]) -> Result<(), String> {
    if chords.len() > MAX_CHORDS {
        return Err(format!("hotkey.chords lists more than {MAX_CHORDS} chords"));
    }
    for chord in chords {
        if chord.trim().is_empty() {
            return Err("hotkey.chords has an empty chord".into());
        }
        if chord.chars().count() > MAX_CHORD_CHARS {
            return Err(format!(
                "a hotkey chord is longer than {MAX_CHORD_CHARS} characters"
            ));
        }
        if chord.chars().any(char::is_control) {
            return Err("a hotkey chord contains a control character".into());
        }
    }
    Ok(())
}

fn check_text(name: &str, v: &str) -> Result<(), String> {
    if v.chars().count() > MAX_HOST_FIELD_CHARS {
        return Err(format!(
            "{name} is longer than {MAX_HOST_FIELD_CHARS} characters"
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(format!("{name} contains a control character"));
    }
    Ok(())
}

/// Claims of a `duress-event`. Everything but `sent_at` is fixed at the press; each send attempt
/// signs the same content afresh with a new `sent_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventClaims {
    /// UUIDv7 made at the press: the idempotency key.
    pub id: Uuid,
    /// Per-device counter, +1 per event; a gap tells the receiver events are still queued.
    pub seq: u64,
    pub kind: EventKind,
    /// The press, by the agent's (offset-corrected) clock. Never checked for freshness.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// This send attempt, by the agent's (offset-corrected) clock. Checked against the
    /// receiver's clock (+20 s / −40 s).
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
    pub source: Source,
    #[serde(default)]
    pub location: Location,
    #[serde(default)]
    pub host: HostFacts,
    /// `cancel` events only, when the policy asks for a PIN: how it was answered (absent
    /// otherwise; unknown to older receivers, which ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_pin: Option<PinCheck>,
}

impl EventClaims {
    /// The same event, re-stamped for a new send attempt.
    pub fn resent_at(&self, sent_at: OffsetDateTime) -> Self {
        EventClaims {
            sent_at: crate::clock::truncate_to_millis(sent_at),
            ..self.clone()
        }
    }

    /// Shape checks that do not need a clock or a key.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.get_version_num() != 7 {
            return Err("id must be a UUIDv7".into());
        }
        self.location.validate()?;
        self.host.validate()
    }
}

/// The hotkey's state, reported in every heartbeat so officers know which stations have a dead
/// chord.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HotkeyState {
    /// Every configured chord is registered with the OS.
    Registered { chords: Vec<String> },
    /// No chord works; `reason` says why (taken by another app, Wayland, permission).
    Unavailable { reason: String },
    /// This process does not listen for chords (headless engine, CLI).
    NotApplicable,
}

/// Claims of a `duress-heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatClaims {
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
    pub hotkey: HotkeyState,
    /// Events durable in the outbox and not yet acknowledged.
    pub queued: u64,
    /// The highest `seq` the device has assigned so far.
    pub last_seq: u64,
    /// The id of the last self-test the receiver acknowledged, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_self_test: Option<Uuid>,
    #[serde(default)]
    pub location: Location,
    #[serde(default)]
    pub host: HostFacts,
    /// Where the station's policy came from and its hash, so officers can see stations whose
    /// policy differs from the fleet's (absent from older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyFacts>,
    /// While a queued alarm is being refused by the receivers that answer it: why, as the
    /// station's status line says it ("alert not accepted by the receiver: REASON" — this is
    /// the REASON, at most 200 characters). Absent when nothing queued is refused (and from
    /// older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_refused: Option<String>,
}

/// The policy a station runs with, as its heartbeat reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFacts {
    /// `flag:PATH`, `env:PATH` or `os:LAYERS` (and `, ignored: …` when a named file was not
    /// honoured).
    pub source: String,
    /// SHA-256 (hex) of the effective policy.
    pub sha256: String,
}

/// Chords one heartbeat may list: the agent registers a handful at most.
pub const MAX_CHORDS: usize = 16;
/// Longest chord name, in characters (`Ctrl+Alt+Shift+Super+F12` is 24; a desktop portal's
/// localised trigger description is longer, but not by this much).
pub const MAX_CHORD_CHARS: usize = 128;

impl HeartbeatClaims {
    pub fn validate(&self) -> Result<(), String> {
        match &self.hotkey {
            HotkeyState::Unavailable { reason } => check_text("hotkey.reason", reason)?,
            HotkeyState::Registered { chords } => check_chords(chords)?,
            HotkeyState::NotApplicable => {}
        }
        if let Some(p) = &self.policy {
            check_text("policy.source", &p.source)?;
            if p.sha256.len() != 64 || !p.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("policy.sha256 must be 64 hex digits".into());
            }
        }
        if let Some(r) = &self.alarm_refused {
            check_text("alarm_refused", r)?;
        }
        self.location.validate()?;
        self.host.validate()
    }
}

/// Claims of a `duress-enrollment`; the header carries the new public key as `jwk` and the
/// signature proves the agent holds its private half. `Debug` redacts the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentClaims {
    /// The enrollment token IT handed out.
    pub token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
    #[serde(default)]
    pub location: Location,
    #[serde(default)]
    pub host: HostFacts,
}

impl std::fmt::Debug for EnrollmentClaims {
    // The token is a secret: a `{:?}` in a log line must not leak it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentClaims")
            .field("token", &"<redacted>")
            .field("sent_at", &self.sent_at)
            .field("location", &self.location)
            .field("host", &self.host)
            .finish()
    }
}

impl EnrollmentClaims {
    pub fn validate(&self) -> Result<(), String> {
        check_text("token", &self.token)?;
        self.location.validate()?;
        self.host.validate()
    }
}

/// A device's standing at the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// Enrolled and trusted.
    Active,
    /// Enrolled with a manual-approval token; waits for an admin.
    Pending,
    /// Switched off by an admin; may be re-enabled.
    Disabled,
    /// Permanently distrusted.
    Revoked,
}

impl DeviceStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Active => "active",
            DeviceStatus::Pending => "pending",
            DeviceStatus::Disabled => "disabled",
            DeviceStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(DeviceStatus::Active),
            "pending" => Some(DeviceStatus::Pending),
            "disabled" => Some(DeviceStatus::Disabled),
            "revoked" => Some(DeviceStatus::Revoked),
            _ => None,
        }
    }
}

/// `201` answer to an enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentAnswer {
    /// The id to put in every later `kid`.
    pub device_id: String,
    pub status: DeviceStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub server_time: OffsetDateTime,
}

/// `200` answer to an event, sent only after the event is committed. The same event id always
/// gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAck {
    /// The acknowledged event's id: the agent deletes nothing whose id is not named here.
    pub id: Uuid,
    /// The incident the event opened or joined (none for a test).
    #[serde(default)]
    pub incident_id: Option<Uuid>,
    /// When the receiver first committed the event.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// `received_at - occurred_at` in milliseconds (may be negative with a skewed agent clock).
    pub delay_ms: i64,
    /// The event arrived more than 10 s after its press.
    pub delayed: bool,
    /// The receiver's detached signature over {id, received_at, incident_id, kid}
    /// ([`crate::ack`]); absent from receivers older than the acknowledgement key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<crate::ack::AckSignature>,
}

impl EventAck {
    /// Checks [`EventAck::ack`] against the keys an agent trusts for this receiver.
    pub fn verify_signature(
        &self,
        trusted: &[crate::ack::TrustedAckKey],
    ) -> Result<(), crate::ack::AckError> {
        crate::ack::verify(
            trusted,
            self.ack.as_ref(),
            self.id,
            self.received_at,
            self.incident_id,
        )
    }
}

/// `200` answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    #[serde(with = "time::serde::rfc3339")]
    pub server_time: OffsetDateTime,
    pub device_status: DeviceStatus,
    /// The interval the receiver expects, in seconds (the policy's, echoed or overridden).
    pub interval_s: u64,
    /// Open incidents of this device that an officer has claimed (for the covert
    /// acknowledgement; empty unless an officer has claimed one).
    #[serde(default)]
    pub claimed_incidents: Vec<Uuid>,
    /// `true`: this station was retired (by an admin, or by its own `decommission`): its key
    /// can no longer raise alarms, and the agent says it is not enrolled. Absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
}

/// `POST /v1/retirements`: a station taking itself out of service for good, signed by its
/// device key (`typ: duress-retirement`). The agent sends it only once nothing is left in its
/// outbox (`queued` says so, for the receiver's log and audit entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetirementClaims {
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
    /// Events still in the agent's outbox (0: the agent refuses to retire otherwise).
    pub queued: u64,
}

/// `200` answer to a retirement: the station is retired (now, or already before: a resend is
/// answered the same way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetirementAnswer {
    pub device_id: String,
    /// `true`: this request retired it; `false`: it was retired already.
    pub retired_now: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn heartbeat(chords: Vec<String>) -> HeartbeatClaims {
        HeartbeatClaims {
            sent_at: datetime!(2026-12-01 12:00 UTC),
            hotkey: HotkeyState::Registered { chords },
            queued: 0,
            last_seq: 0,
            last_self_test: None,
            location: Location::default(),
            host: HostFacts::default(),
            policy: None,
            alarm_refused: None,
        }
    }

    #[test]
    fn heartbeat_chords_are_bounded_and_clean() {
        let ok = vec!["Ctrl+Alt+D".to_owned(), "Ctrl+Shift+F12".to_owned()];
        assert!(heartbeat(ok).validate().is_ok());
        assert!(heartbeat(vec![]).validate().is_ok());
        let too_many = vec!["Ctrl+Alt+D".to_owned(); MAX_CHORDS + 1];
        assert!(
            heartbeat(too_many)
                .validate()
                .unwrap_err()
                .contains("more than")
        );
        let long = vec!["K".repeat(MAX_CHORD_CHARS + 1)];
        assert!(heartbeat(long).validate().unwrap_err().contains("longer"));
        let control = vec!["Ctrl+\u{7}".to_owned()];
        assert!(
            heartbeat(control)
                .validate()
                .unwrap_err()
                .contains("control")
        );
        // Accepted (a right-to-left desktop may add marks); the receiver shows it escaped.
        assert!(
            heartbeat(vec!["\u{200F}Ctrl+D".to_owned()])
                .validate()
                .is_ok()
        );
        assert!(
            heartbeat(vec![" ".to_owned()])
                .validate()
                .unwrap_err()
                .contains("empty")
        );
    }

    fn sample() -> EventClaims {
        EventClaims {
            id: Uuid::parse_str("019abcde-f012-7abc-8def-0123456789ab").unwrap(),
            seq: 1,
            kind: EventKind::Duress,
            occurred_at: datetime!(2026-11-26 12:00:00.123 UTC),
            sent_at: datetime!(2026-11-26 12:00:00.456 UTC),
            source: Source::Hotkey,
            location: Location {
                label: Some("Room 1".into()),
                ..Default::default()
            },
            host: HostFacts {
                hostname: "ws-1".into(),
                ..Default::default()
            },
            cancel_pin: None,
        }
    }

    #[test]
    fn event_wire_shape() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["kind"], "duress");
        assert_eq!(json["source"], "hotkey");
        assert_eq!(json["occurred_at"], "2026-11-26T12:00:00.123Z");
        assert_eq!(json["location"]["label"], "Room 1");
        let back: EventClaims = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn resend_keeps_content_and_changes_only_sent_at() {
        let e = sample();
        let later = e.resent_at(datetime!(2026-11-26 15:00:00.999999 UTC));
        assert_eq!(later.id, e.id);
        assert_eq!(later.seq, e.seq);
        assert_eq!(later.occurred_at, e.occurred_at);
        assert_eq!(later.sent_at, datetime!(2026-11-26 15:00:00.999 UTC));
    }

    #[test]
    fn id_must_be_v7() {
        let mut e = sample();
        assert!(e.validate().is_ok());
        e.id = Uuid::nil();
        assert!(e.validate().is_err());
    }

    #[test]
    fn enrollment_debug_never_shows_the_token() {
        let claims = EnrollmentClaims {
            token: "det_secret-token-value".into(),
            sent_at: datetime!(2026-11-26 12:00:00 UTC),
            location: Location::default(),
            host: HostFacts::default(),
        };
        let dbg = format!("{claims:?}");
        assert!(!dbg.contains("secret-token-value"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn hotkey_state_wire_shape() {
        let s = serde_json::to_string(&HotkeyState::Unavailable {
            reason: "taken".into(),
        })
        .unwrap();
        assert_eq!(s, r#"{"state":"unavailable","reason":"taken"}"#);
        let s = serde_json::to_string(&HotkeyState::NotApplicable).unwrap();
        assert_eq!(s, r#"{"state":"not_applicable"}"#);
    }
}
