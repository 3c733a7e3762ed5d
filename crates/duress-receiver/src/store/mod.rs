//! The receiver's durable state behind one trait, so PostgreSQL can join SQLite later.
//!
//! Each method is one unit of work: whatever it writes, it writes in one transaction, and it
//! returns only after that transaction committed (or failed). Callers answer 2xx only on `Ok`.

pub mod sqlite;

use std::time::Duration;

use duress_core::{
    DeviceStatus, EventAck, EventKind, HostFacts, HotkeyState, Jwk, Location, Source, VerifyingKey,
};
use futures::future::BoxFuture;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::records::{DeviceRecord, EventRecord, ExportedEvent, IncidentRecord};

pub use sqlite::SqliteStore;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot take a write or answer right now (disk full, I/O error, busy,
    /// closed). Ingest answers 503 so the agent keeps the alarm and retries.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored value no longer parses; a bug or outside tampering.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("no device {0:?}")]
    NoSuchDevice(String),
    /// An admin request the state forbids (e.g. un-revoking a device).
    #[error("{0}")]
    Refused(String),
    #[error("migrating the database: {0}")]
    Migrate(String),
}

/// Whether devices enrolled with a token start active or wait for an administrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approve {
    Auto,
    Manual,
}

impl Approve {
    pub const fn as_str(self) -> &'static str {
        match self {
            Approve::Auto => "auto",
            Approve::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Approve::Auto),
            "manual" => Some(Approve::Manual),
            _ => None,
        }
    }
}

/// A token to store. Only the hash: the plaintext is shown once to the admin and never kept.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// SHA-256 of the token, lower-case hex.
    pub token_hash: String,
    pub uses: u32,
    pub expires_at: Option<OffsetDateTime>,
    pub approve: Approve,
    pub created_at: OffsetDateTime,
}

/// A verified enrollment request (proof of possession already checked).
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    pub token_hash: String,
    /// Used only when the key is new.
    pub new_device_id: String,
    pub public_jwk: Jwk,
    pub key_thumbprint: String,
    pub host: HostFacts,
    pub location: Location,
    pub now: OffsetDateTime,
}

/// Why an enrollment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollRefusal {
    TokenInvalid,
    TokenExpired,
    TokenUsedUp,
    TokenRevoked,
    /// The key belongs to a disabled or revoked device: a re-enrollment must not revive it.
    KeyAlreadyEnrolled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollOutcome {
    /// A new device; one use of the token was consumed in the same transaction.
    Enrolled {
        device_id: String,
        status: DeviceStatus,
    },
    /// The key was already enrolled (active or pending): its device is returned and no token
    /// use is consumed, so an agent that lost the first answer can simply retry.
    AlreadyEnrolled {
        device_id: String,
        status: DeviceStatus,
    },
    Refused(EnrollRefusal),
}

/// What request verification needs to know about a device.
#[derive(Debug, Clone)]
pub struct DeviceKey {
    pub device_id: String,
    pub public_jwk: Jwk,
    pub status: DeviceStatus,
}

/// A verified event to commit.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub device_id: String,
    pub seq: i64,
    pub kind: EventKind,
    pub source: Source,
    pub occurred_at: OffsetDateTime,
    pub sent_at: OffsetDateTime,
    /// Receiver time, millisecond precision.
    pub received_at: OffsetDateTime,
    /// The request body exactly as received.
    pub jws: String,
    pub location: Location,
    pub host: HostFacts,
}

/// The stored facts an event's acknowledgement is built from; the same columns give the same
/// bytes on every repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: Uuid,
    pub device_id: String,
    pub incident_id: Option<Uuid>,
    pub received_at: OffsetDateTime,
    pub delay_ms: i64,
    pub delayed: bool,
}

impl StoredEvent {
    pub fn ack(&self) -> EventAck {
        EventAck {
            id: self.id,
            incident_id: self.incident_id,
            received_at: self.received_at,
            delay_ms: self.delay_ms,
            delayed: self.delayed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Newly committed.
    Committed(StoredEvent),
    /// This device sent this id before; nothing was written.
    Duplicate(StoredEvent),
    /// Another device owns this id; nothing was written.
    IdConflict,
    /// A new event from a device that may not raise alarms (pending, disabled, revoked), as
    /// read under the write lock; nothing was written.
    DeviceNotActive(DeviceStatus),
}

/// A verified heartbeat to record.
#[derive(Debug, Clone)]
pub struct HeartbeatUpdate {
    pub device_id: String,
    pub received_at: OffsetDateTime,
    pub hotkey: HotkeyState,
    pub queued: i64,
    pub reported_last_seq: i64,
    /// `None` keeps the stored host facts (the agent sent none).
    pub host: Option<HostFacts>,
    /// `None` keeps the stored location (the agent sent none).
    pub location: Option<Location>,
}

/// What a heartbeat's answer needs, read in the transaction that recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRecorded {
    /// The device's status; a revoked device's heartbeat writes nothing.
    pub status: DeviceStatus,
    /// This device's open incidents that an officer has claimed (the answer's
    /// `claimed_incidents`, for the agent's covert acknowledgement); empty for a revoked device.
    pub claimed_incidents: Vec<Uuid>,
}

/// The receiver's store. Object-safe (boxed futures) so the API holds an `Arc<dyn Store>`.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Answers when the database does (for `/healthz`).
    fn health(&self) -> BoxFuture<'_, StoreResult<()>>;
    fn create_token(&self, token: NewToken) -> BoxFuture<'_, StoreResult<()>>;
    /// Marks the token with this hash revoked; `false` when no such token exists.
    fn revoke_token<'a>(&'a self, token_hash: &'a str) -> BoxFuture<'a, StoreResult<bool>>;
    /// Checks the token and registers the device (or finds it) in one transaction.
    fn enroll(&self, request: EnrollRequest) -> BoxFuture<'_, StoreResult<EnrollOutcome>>;
    /// The device's enrolled key and its current status, read from the database.
    fn device_key<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<DeviceKey>>>;
    /// The device's enrolled public key, parsed, for signature checks (`None`: no such
    /// device). A device's key never changes, so implementations may cache it; its status does
    /// change and is therefore checked by `ingest_event` and `record_heartbeat` under the write
    /// lock, never taken from a cache.
    fn verifying_key<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<VerifyingKey>>>;
    /// The committed event with this id, if any (a read; the API dedupes with it before the
    /// device-status and clock checks).
    fn find_event(&self, id: Uuid) -> BoxFuture<'_, StoreResult<Option<StoredEvent>>>;
    /// Dedupes by id, checks the device is active, and commits the event with its incident in
    /// one transaction (in that order: a repeat is answered whatever the status is now).
    fn ingest_event(
        &self,
        event: NewEvent,
        grouping_window: Duration,
    ) -> BoxFuture<'_, StoreResult<IngestOutcome>>;
    /// Records liveness (not for a revoked device) and returns what the answer needs.
    fn record_heartbeat(
        &self,
        update: HeartbeatUpdate,
    ) -> BoxFuture<'_, StoreResult<HeartbeatRecorded>>;
    fn set_device_status<'a>(
        &'a self,
        device_id: &'a str,
        status: DeviceStatus,
    ) -> BoxFuture<'a, StoreResult<()>>;
    fn list_devices(&self) -> BoxFuture<'_, StoreResult<Vec<DeviceRecord>>>;
    /// Real incidents, oldest first, each with its timeline.
    fn list_incidents(&self) -> BoxFuture<'_, StoreResult<Vec<IncidentRecord>>>;
    /// Every event, in order of arrival.
    fn list_events(&self) -> BoxFuture<'_, StoreResult<Vec<EventRecord>>>;
    fn export_events(&self) -> BoxFuture<'_, StoreResult<Vec<ExportedEvent>>>;
    /// Flushes and closes; later calls fail with `Unavailable`.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// Stored timestamps: UTC, always three fraction digits, so text order is time order.
const TS_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

pub(crate) fn format_ts(t: OffsetDateTime) -> String {
    let t = duress_core::clock::truncate_to_millis(t);
    // Formatting a valid UTC date with a fixed description cannot fail for years 0..=9999.
    t.format(TS_FORMAT).unwrap_or_default()
}

pub(crate) fn parse_ts(text: &str) -> StoreResult<OffsetDateTime> {
    time::PrimitiveDateTime::parse(text, TS_FORMAT)
        .map(time::PrimitiveDateTime::assume_utc)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {text:?}: {e}")))
}

/// `received - occurred` in milliseconds, saturating (a wildly wrong agent clock must not panic).
pub(crate) fn delay_ms(occurred_at: OffsetDateTime, received_at: OffsetDateTime) -> i64 {
    let ms = (received_at - occurred_at).whole_milliseconds();
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn timestamps_sort_as_text_and_round_trip() {
        let a = datetime!(2026-11-26 12:00:00 UTC);
        let b = datetime!(2026-11-26 12:00:00.5 UTC);
        assert_eq!(format_ts(a), "2026-11-26T12:00:00.000Z");
        assert!(format_ts(a) < format_ts(b));
        assert_eq!(parse_ts(&format_ts(b)).unwrap(), b);
        let offset = datetime!(2026-11-26 14:00:00.123456 +02:00);
        assert_eq!(format_ts(offset), "2026-11-26T12:00:00.123Z");
    }
}
