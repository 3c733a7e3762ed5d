//! What the admin commands show (and whole-system tests read): devices, incidents with their
//! timelines, events, exported raw tokens. Plain serde structs, JSON as the CLI prints it.

use duress_core::{
    DeviceStatus, EventKind, HostFacts, HotkeyState, Jwk, Location, PinCheck, Source,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Added to the self-test period before a station is flagged: the agent tests at its own minute
/// of a daily window, so a station that was off at that minute tests in the next day's window.
pub const SELF_TEST_GRACE: std::time::Duration = std::time::Duration::from_secs(86_400);

/// An enrolled device and its supervision state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// UUIDv7; the `kid` of everything the device signs.
    pub device_id: String,
    pub status: DeviceStatus,
    pub public_jwk: Jwk,
    /// RFC 7638 thumbprint of `public_jwk`: one key, one device.
    pub key_thumbprint: String,
    pub hostname: String,
    /// Latest host facts (enrollment, then heartbeats).
    pub host: HostFacts,
    /// Latest location (enrollment, then heartbeats).
    pub location: Location,
    pub agent_version: String,
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_heartbeat_at: Option<OffsetDateTime>,
    /// The hotkey state of the latest heartbeat.
    pub hotkey: Option<HotkeyState>,
    /// Events the agent reported queued in its latest heartbeat.
    pub queued: Option<u64>,
    /// The highest `seq` the agent reported assigning (heartbeat).
    pub reported_last_seq: Option<u64>,
    /// The highest `seq` of an event received here; below `reported_last_seq` means events
    /// are still queued on the device.
    pub last_seq: Option<u64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_event_at: Option<OffsetDateTime>,
    /// Receiver time of the latest self-test (`kind: test`) event, scheduled or by hand.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_self_test_at: Option<OffsetDateTime>,
    pub last_self_test_id: Option<Uuid>,
    /// Where the station's policy came from and the SHA-256 of it, from its latest heartbeat
    /// that reported them (`None` before that, and for older agents).
    #[serde(default)]
    pub policy_source: Option<String>,
    #[serde(default)]
    pub policy_sha256: Option<String>,
    /// Where the station is registered (set at approval or by an admin, never by the agent);
    /// `None` while it is not registered.
    #[serde(default)]
    pub registered_location: Option<Location>,
    /// The client address of the station's latest heartbeat or event, as the receiver saw it
    /// (a reverse proxy's address when there is one: docs/deployment.md).
    #[serde(default)]
    pub last_addr: Option<String>,
    /// When the station was retired (`duress-agent decommission`, or an admin); a retired
    /// station is also `revoked`. `None`: not retired.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub retired_at: Option<OffsetDateTime>,
    /// Who retired it (`device:ID` for the agent itself, else the admin).
    #[serde(default)]
    pub retired_by: Option<String>,
    /// Why a queued alarm of the station is being refused, from its latest heartbeat (the
    /// agent's status line says "alert not accepted by the receiver: " and this); `None` when
    /// nothing is refused.
    #[serde(default)]
    pub alarm_refused: Option<String>,
}

/// Whether a station proved its whole path recently: any `kind: test` event counts (a
/// scheduled one, `source: schedule`, or one somebody sent by hand — both travel the same path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelfTestState {
    /// Tested within the period (plus grace).
    Ok,
    /// The latest test is older than the period plus grace.
    Overdue,
    /// Never sent a test event.
    Never,
}

impl SelfTestState {
    pub const fn as_str(self) -> &'static str {
        match self {
            SelfTestState::Ok => "ok",
            SelfTestState::Overdue => "overdue",
            SelfTestState::Never => "never",
        }
    }

    /// Flagged on the Stations page.
    pub const fn is_flagged(self) -> bool {
        !matches!(self, SelfTestState::Ok)
    }
}

impl DeviceRecord {
    /// The self-test state at `now` for a `period` (plus [`SELF_TEST_GRACE`]);
    /// `None` for a station that may not raise alarms (pending, disabled, revoked), which no
    /// test can prove.
    pub fn self_test_state(
        &self,
        now: OffsetDateTime,
        period: std::time::Duration,
    ) -> Option<SelfTestState> {
        if self.status != DeviceStatus::Active {
            return None;
        }
        let Some(last) = self.last_self_test_at else {
            return Some(SelfTestState::Never);
        };
        let limit = period.saturating_add(SELF_TEST_GRACE);
        // A test stamped in the future (receiver clock stepped back) counts as recent.
        let age = (now - last).max(time::Duration::ZERO).unsigned_abs();
        Some(if age > limit {
            SelfTestState::Overdue
        } else {
            SelfTestState::Ok
        })
    }
}

/// One device as `devices list --json` prints it: the stored record and its self-test flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceListing {
    #[serde(flatten)]
    pub device: DeviceRecord,
    /// `ok`, `overdue`, `never`, or `null` for a station that is not active.
    pub self_test: Option<SelfTestState>,
    /// `self_test` is `overdue` or `never`: the station has not proved its path within the
    /// period.
    pub self_test_overdue: bool,
}

impl DeviceListing {
    pub fn new(device: DeviceRecord, now: OffsetDateTime, period: std::time::Duration) -> Self {
        let state = device.self_test_state(now, period);
        DeviceListing {
            device,
            self_test: state,
            self_test_overdue: state.is_some_and(SelfTestState::is_flagged),
        }
    }
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentEvent {
    pub id: Uuid,
    pub seq: u64,
    pub kind: EventKind,
    pub source: Source,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub delayed: bool,
    pub delay_ms: i64,
    /// Host facts of this press (who was signed in where).
    #[serde(default)]
    pub host: HostFacts,
    /// `cancel` events only: how the cancel PIN was answered (`ok`, `wrong`, `duress`), read
    /// from the signed claims; `null` when no PIN was asked (or for a press).
    #[serde(default)]
    pub cancel_pin: Option<PinCheck>,
    /// The client address the press came from, as the receiver saw it (`null` before it was
    /// recorded).
    #[serde(default)]
    pub client_addr: Option<String>,
    /// The station that sent it: the incident's own, or (same-room grouping) another station
    /// in its room. Not in the API's JSON (its schema is fixed); the console lists it.
    #[serde(skip)]
    pub device_id: String,
}

impl From<EventRecord> for IncidentEvent {
    fn from(e: EventRecord) -> Self {
        IncidentEvent {
            id: e.id,
            seq: e.seq,
            kind: e.kind,
            source: e.source,
            occurred_at: e.occurred_at,
            received_at: e.received_at,
            delayed: e.delayed,
            delay_ms: e.delay_ms,
            host: e.host,
            cancel_pin: e.cancel_pin,
            client_addr: e.client_addr,
            device_id: e.device_id,
        }
    }
}

/// A real incident (never a test): the one read model the CLI, the console and the API share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentRecord {
    /// UUIDv7.
    pub incident_id: Uuid,
    pub device_id: String,
    /// `open`, or `closed` once an officer resolved it.
    pub status: String,
    /// Receiver time of the first event.
    #[serde(with = "time::serde::rfc3339")]
    pub opened_at: OffsetDateTime,
    /// Agent time of the first press.
    #[serde(with = "time::serde::rfc3339")]
    pub first_occurred_at: OffsetDateTime,
    /// Agent time of the latest press (the grouping window counts from here).
    #[serde(with = "time::serde::rfc3339")]
    pub last_press_at: OffsetDateTime,
    /// Duress presses in this incident (cancels do not count).
    pub press_count: u64,
    /// Kind of the first event (always `duress` today).
    pub kind: EventKind,
    /// Source, location and host facts of the first press: where to send the patrol.
    pub source: Source,
    pub location: Location,
    pub host: HostFacts,
    /// Whether the first press reached the receiver late, and by how much.
    pub delayed: bool,
    pub delay_ms: i64,
    /// Receiver time of the first cancel joined to this incident, if any (it stays open).
    #[serde(with = "time::serde::rfc3339::option")]
    pub cancelled_at: Option<OffsetDateTime>,
    /// A cancel of this incident was made with the duress PIN or a wrong PIN: the person may
    /// have been forced to cancel ("cancel with duress PIN" on the console). Derived from
    /// [`IncidentRecord::events`] by [`IncidentRecord::set_events`].
    #[serde(default)]
    pub cancel_with_duress_pin: bool,
    /// The officer handling it now, and since when.
    pub claimed_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub claimed_at: Option<OffsetDateTime>,
    /// The first claim (kept across take-overs): "time to claim" counts to it.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub first_claimed_at: Option<OffsetDateTime>,
    /// Nobody claimed it in time.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub escalated_at: Option<OffsetDateTime>,
    pub response_level: Option<String>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub called_911_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub resolved_at: Option<OffsetDateTime>,
    pub resolved_by: Option<String>,
    pub disposition: Option<String>,
    pub follow_up: Option<String>,
    /// Presses and cancels, in order of arrival.
    pub events: Vec<IncidentEvent>,
    /// The station's registered location (set at approval or by an admin; `null` when it is
    /// not registered), shown before the claimed `location`. Filled in by
    /// [`crate::subnets::annotate_incidents`].
    #[serde(default)]
    pub registered_location: Option<Location>,
    /// The claimed `location` names another building, floor or room than the registered one.
    #[serde(default)]
    pub location_mismatch: bool,
    /// A press came from an address in a subnet mapped elsewhere than the registered (else
    /// claimed) location: the evidence, else `null`.
    #[serde(default)]
    pub location_drift: Option<crate::location_evidence::Drift>,
}

impl IncidentRecord {
    pub fn is_open(&self) -> bool {
        self.status == "open"
    }

    /// Attaches the incident's events (in order of arrival) and what is derived from them, the
    /// same in every backend.
    pub fn set_events(&mut self, events: Vec<IncidentEvent>) {
        self.cancel_with_duress_pin = events
            .iter()
            .any(|e| e.kind == EventKind::Cancel && e.cancel_pin.is_some_and(PinCheck::is_duress));
        self.events = events;
    }
}

/// Any stored event, with its incident (none for tests and lone cancels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: Uuid,
    pub device_id: String,
    pub incident_id: Option<Uuid>,
    pub seq: u64,
    pub kind: EventKind,
    pub source: Source,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// `sent_at` of the attempt that was committed.
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub delayed: bool,
    pub delay_ms: i64,
    pub location: Location,
    pub host: HostFacts,
    /// `cancel` events only: how the cancel PIN was answered, from the signed claims.
    #[serde(default)]
    pub cancel_pin: Option<PinCheck>,
    /// The client address the event came from (`null` before it was recorded).
    #[serde(default)]
    pub client_addr: Option<String>,
}

/// One line of `events export`: the raw token and the key that verifies it, so anyone can
/// re-verify the evidence without trusting the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedEvent {
    pub id: Uuid,
    pub device_id: String,
    pub kind: EventKind,
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub delayed: bool,
    pub delay_ms: i64,
    /// The incident the event opened or joined (a signed fact of its acknowledgement).
    #[serde(default)]
    pub incident_id: Option<Uuid>,
    /// The compact JWS exactly as received.
    pub jws: String,
    pub public_jwk: Jwk,
    /// Every acknowledgement signature the receiver answered this event with, oldest first
    /// (one per acknowledgement key): each verifies over {id, received_at, incident_id, kid}
    /// as docs/protocol.md §5.4 says, with the `jwk` it names.
    #[serde(default)]
    pub acks: Vec<ExportedAck>,
}

/// One stored acknowledgement signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedAck {
    /// RFC 7638 thumbprint of `jwk`.
    pub kid: String,
    pub jwk: Jwk,
    /// base64url Ed25519 signature.
    pub sig: String,
    /// When it was first answered.
    #[serde(with = "time::serde::rfc3339")]
    pub signed_at: OffsetDateTime,
}

impl ExportedAck {
    /// The signature as an answer carries it.
    pub fn signature(&self) -> duress_core::AckSignature {
        duress_core::AckSignature {
            kid: self.kid.clone(),
            jwk: self.jwk.clone(),
            sig: self.sig.clone(),
        }
    }
}
