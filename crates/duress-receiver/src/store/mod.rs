//! The receiver's durable state behind one boundary: traits split by area, shared types, and
//! one implementation per backend ([`sqlite`], the embedded default; [`postgres`], for several
//! receivers sharing one database).
//!
//! Why modules of this crate rather than one crate per backend (atuin's layout): the store's
//! types are the receiver's own domain (incidents, stations, accounts) and nothing else uses
//! them, and one crate builds with one feature set, so the whole workspace compiles once. The
//! boundary is kept by the rule that no module outside `store::sqlite` and `store::postgres`
//! names sqlx or SQL (`scripts/test` greps for it).
//!
//! Every method is one unit of work: whatever it writes, it writes in one transaction, and it
//! returns only after that transaction committed (or failed). Callers answer 2xx only on `Ok`.
//! Every write that changes what officers or auditors see takes the actor and writes its own
//! audit entry and live-log row in that same transaction.
//!
//! - [`IngestStore`]: the alarm path (enrollment, verification keys, events, heartbeats).
//! - [`StationStore`]: devices, enrollment tokens.
//! - [`IncidentStore`]: the one read model of an incident, officers' actions, escalation.
//! - [`AccountStore`]: console users and sessions.
//! - [`AuditStore`]: the hash-chained audit log.
//! - [`LiveStore`]: the live-update log the console's stream replays.
//! - [`SettingsStore`]: console settings kept in the database (camera mappings).
//! - [`OutboxStore`]: the notifier outbox (notifications written with the change that causes
//!   them, taken by the delivery worker, every attempt recorded).
//! - [`RetentionStore`]: purging what the retention policy no longer keeps, audited.
//! - [`ApiKeyStore`]: integration API keys (hashed, scoped, revocable, audited).
//! - [`PhoneStore`]: the desk-phone inventory and the access-point table (`phones`).
//! - [`DisplayStore`]: the console's paired duty displays (view-only, revocable, audited).
//! - [`AccountSecurityStore`]: local accounts' password change and reset, TOTP second factor,
//!   and the sign-in steps between a right password and a session.
//! - [`SsoStore`]: pending OpenID Connect sign-ins and SSO accounts (`sso`).
//! - [`FloorPlanStore`]: floor-plan images per building and floor, and rooms placed on them.

pub mod account_security;
pub mod apikeys;
pub mod audit_chain;
pub mod cluster;
pub mod floor_plans;
pub mod outbox;
pub mod phones;
pub mod postgres;
pub mod retention;
mod rules;
pub mod sqlite;
pub mod sso;
pub mod types;

pub use account_security::{
    AccountSecurityStore, NewSignInStep, SignInStage, SignInStep, TotpRecord,
};
pub use apikeys::{
    APIKEY_CREATE_ACTION, APIKEY_REVOKE_ACTION, ApiKeyRecord, ApiKeyScope, ApiKeyStore, NewApiKey,
};
pub use floor_plans::{
    FLOOR_PLAN_DELETE_ACTION, FLOOR_PLAN_PLACE_ACTION, FLOOR_PLAN_REPLACE_ACTION,
    FLOOR_PLAN_UNPLACE_ACTION, FLOOR_PLAN_UPLOAD_ACTION, FloorPlanPut, FloorPlanRecord,
    FloorPlanStore, NewFloorPlan, RoomPlacement,
};
pub use outbox::{
    AttemptOutcome, AttemptRecord, NewAttempt, NotificationFacts, NotificationRecord,
    NotifyPlanner, OutboxItem, OutboxStore, PlannedNotification, PlannerSlot,
};
pub use phones::{
    AccessPoint, NewPhone, PhoneCredential, PhonePutRefusal, PhoneRecord, PhoneStore, SecretHash,
};
pub use retention::{PurgeCounts, PurgeCutoffs, PurgeOutcome, PurgeRequest, RetentionStore};
pub use sso::{NewOidcFlow, OidcFlow, SSO_REFUSED_ACTION, SsoOutcome, SsoSignIn, SsoStore};
pub use types::*;

use std::sync::Arc;
use std::time::Duration;

use duress_core::{
    AckSignature, DeviceStatus, EventAck, EventKind, HostFacts, HotkeyState, Jwk, Location, Source,
    VerifyingKey,
};
use futures::future::BoxFuture;
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::records::{DeviceRecord, EventRecord, ExportedEvent};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

pub type StoreResult<T> = Result<T, StoreError>;

/// A database URL. It may carry a password: `Debug` and `Display` show it without one.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    /// The URL as given, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", postgres::redact_url(&self.0))
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&postgres::redact_url(&self.0))
    }
}

/// Where the store is: SQLite in the data directory (the embedded default), or the database a
/// URL names (`--database URL` / `DURESS_DATABASE_URL`). The data directory still holds the
/// TLS material either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLocation {
    pub data_dir: std::path::PathBuf,
    /// `postgres://…` or `postgresql://…`; `None`: SQLite in `data_dir`.
    pub database: Option<DatabaseUrl>,
}

impl StoreLocation {
    pub fn new(data_dir: impl Into<std::path::PathBuf>, database: Option<DatabaseUrl>) -> Self {
        StoreLocation {
            data_dir: data_dir.into(),
            database: database.filter(|d| !d.0.trim().is_empty()),
        }
    }

    /// The context of an error opening it: a PostgreSQL error already names its URL (without
    /// the password), a SQLite one does not name its file.
    pub fn opening(&self) -> String {
        match &self.database {
            None => format!("opening the store {}", self.describe()),
            Some(_) => "opening the store".to_owned(),
        }
    }

    /// What the store is, for messages: the SQLite file, or the URL without its password.
    pub fn describe(&self) -> String {
        match &self.database {
            None => crate::store::sqlite::database_path(&self.data_dir)
                .display()
                .to_string(),
            Some(url) => url.to_string(),
        }
    }
}

impl From<&std::path::Path> for StoreLocation {
    fn from(data_dir: &std::path::Path) -> Self {
        StoreLocation::new(data_dir, None)
    }
}

impl From<&std::path::PathBuf> for StoreLocation {
    fn from(data_dir: &std::path::PathBuf) -> Self {
        StoreLocation::new(data_dir.clone(), None)
    }
}

impl From<&StoreLocation> for StoreLocation {
    fn from(location: &StoreLocation) -> Self {
        location.clone()
    }
}

/// Creates `dir` (and any missing parents) private to the receiver's user (0700 on Unix): the
/// data directory holds the store, the TLS key, the acknowledgement and audit keys. An existing
/// directory is left as it is (it may be a path the administrator chose on purpose, and
/// changing the mode of, say, a shared parent would be worse), with a warning when other users
/// can read it.
pub(crate) fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.is_dir() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "the data directory is accessible to other users; chmod 700 it"
                );
            }
        }
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Opens (and migrates) the store at `location`. An unsupported or unreachable URL is an
/// error that names it without its password.
pub async fn open(location: &StoreLocation) -> StoreResult<Arc<dyn Store>> {
    match location.database.as_ref().map(DatabaseUrl::expose) {
        None => Ok(Arc::new(SqliteStore::open(&location.data_dir).await?)),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(
            Arc::new(PostgresStore::connect(url, &location.data_dir).await?),
        ),
        Some(url) => Err(StoreError::Unavailable(format!(
            "unsupported database URL {}: use postgres://… (or leave --database out for SQLite \
             in the data directory)",
            postgres::redact_url(url)
        ))),
    }
}

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
/// (`clap::ValueEnum`: `token create --approve auto|manual` parses this very type.)
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Approve {
    Auto,
    Manual,
}

impl Approve {
    /// The approval a token gets when none is asked for: automatic for a one-use token (the
    /// admin handed it to one known workstation), manual for a multi-use one (anyone who copies
    /// it from a deployment share must not get a trusted station without an admin's look).
    pub const fn default_for_uses(uses: u32) -> Approve {
        if uses > 1 {
            Approve::Manual
        } else {
            Approve::Auto
        }
    }

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

impl NewToken {
    /// What the audit log records of a new token (never the token itself).
    pub fn audit_detail(&self) -> String {
        format!(
            "uses {}, approve {}, expires {}",
            self.uses,
            self.approve.as_str(),
            self.expires_at.map_or("never".into(), format_ts)
        )
    }
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

impl EnrollRequest {
    /// What the audit log records of a new device (issue 16: every enrollment is audited):
    /// the token's log reference, the status it starts in, its key thumbprint (what approvers
    /// compare with `duress-agent status`), host and claimed location.
    pub fn audit_detail(&self, status: DeviceStatus) -> String {
        format!(
            "token {}, status {}, key {}, host {:?}, user {:?}, claimed {}",
            crate::tokens::log_ref(&self.token_hash),
            status.as_str(),
            self.key_thumbprint,
            self.host.hostname,
            self.host.user,
            location_summary(Some(&self.location))
        )
    }
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

/// What request verification needs to know about an enrolled device: its public key and
/// standing (not the private `duress_core::DeviceKey` an agent signs with).
#[derive(Debug, Clone)]
pub struct DeviceCredential {
    pub device_id: String,
    pub public_jwk: Jwk,
    pub status: DeviceStatus,
    /// Retired (`retire_device`); a retired device is also revoked.
    pub retired: bool,
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
    /// Signs the acknowledgement inside the commit's transaction, once the incident is known,
    /// and the signature is stored with the event (`event_acks`). `None` (store tests): no
    /// signature is made or stored.
    pub ack_signer: Option<Arc<dyn AckSigner>>,
    /// The client address the request came from (evidence for "location drift"); `None` when
    /// unknown.
    pub client_addr: Option<String>,
}

/// The receiver's acknowledgement key as the store sees it (see `crate::ack_key`): signs the
/// four facts of an answer (docs/protocol.md §5.4). Called inside the ingest transaction, so
/// it must not block (an Ed25519 signature, some tens of microseconds).
pub trait AckSigner: Send + Sync + std::fmt::Debug {
    fn sign_ack(
        &self,
        id: Uuid,
        received_at: OffsetDateTime,
        incident_id: Option<Uuid>,
    ) -> AckSignature;
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
    /// The newest stored acknowledgement signature of this event, if any.
    pub ack: Option<AckSignature>,
}

impl StoredEvent {
    pub fn ack(&self) -> EventAck {
        EventAck {
            id: self.id,
            incident_id: self.incident_id,
            received_at: self.received_at,
            delay_ms: self.delay_ms,
            delayed: self.delayed,
            ack: self.ack.clone(),
        }
    }

    /// Signs this (new) event's acknowledgement with `ev`'s signer, if it has one.
    pub(crate) fn signed_by(mut self, ev: &NewEvent) -> Self {
        self.ack = ev
            .ack_signer
            .as_ref()
            .map(|s| s.sign_ack(self.id, self.received_at, self.incident_id));
        self
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
    /// `None` keeps the stored policy report (the agent sent none).
    pub policy: Option<duress_core::PolicyFacts>,
    /// The client address the request came from; `None` keeps the stored one.
    pub client_addr: Option<String>,
    /// Why a queued alarm of the station is being refused, as the agent reports it; `None`
    /// clears it (nothing refused, or an older agent).
    pub alarm_refused: Option<String>,
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

/// A boxed future of a store answer (the traits are object-safe: the receiver holds an
/// `Arc<dyn Store>`).
pub type StoreFuture<'a, T> = BoxFuture<'a, StoreResult<T>>;

/// The alarm path.
pub trait IngestStore: Send + Sync + std::fmt::Debug + 'static {
    /// Answers when the database does (for `/healthz`).
    fn health(&self) -> StoreFuture<'_, ()>;
    /// Checks the token and registers the device (or finds it) in one transaction.
    fn enroll(&self, request: EnrollRequest) -> StoreFuture<'_, EnrollOutcome>;
    /// The device's enrolled key and its current status, read from the database.
    fn device_credential<'a>(
        &'a self,
        device_id: &'a str,
    ) -> StoreFuture<'a, Option<DeviceCredential>>;
    /// The device's enrolled public key, parsed, for signature checks (`None`: no such
    /// device). A device's key never changes, so implementations may cache it; its status does
    /// change and is therefore checked by `ingest_event` and `record_heartbeat` under the write
    /// lock, never taken from a cache.
    fn verifying_key<'a>(&'a self, device_id: &'a str) -> StoreFuture<'a, Option<VerifyingKey>>;
    /// The device's key if it is cached, never touching the database (the API lets an address
    /// that sent too many unknown kids through only with a kid known this way).
    fn cached_verifying_key(&self, device_id: &str) -> Option<VerifyingKey>;
    /// The committed event with this id, if any (a read; the API dedupes with it before the
    /// device-status and clock checks).
    fn find_event(&self, id: Uuid) -> StoreFuture<'_, Option<StoredEvent>>;
    /// Dedupes by id, checks the device is active, and commits the event with its incident,
    /// its live-log row and the device's supervision columns in one transaction (in that
    /// order: a repeat is answered whatever the status is now).
    fn ingest_event(
        &self,
        event: NewEvent,
        grouping_window: Duration,
    ) -> StoreFuture<'_, IngestOutcome> {
        self.ingest_grouped(event, grouping_window.into())
    }
    /// [`IngestStore::ingest_event`] under a grouping policy: with `same_room`, a press that
    /// would open an incident joins the open incident of another station in the same room
    /// (`incidents`), decided in the same transaction, race-free (SQLite: the one writer
    /// thread; PostgreSQL: a transaction lock on the room, see `postgres::group_commit`).
    fn ingest_grouped(
        &self,
        event: NewEvent,
        grouping: crate::incidents::Grouping,
    ) -> StoreFuture<'_, IngestOutcome>;
    /// Records liveness (not for a revoked device) and returns what the answer needs.
    fn record_heartbeat(&self, update: HeartbeatUpdate) -> StoreFuture<'_, HeartbeatRecorded>;
    /// Stores another acknowledgement signature of a committed event (a repeat answered after a
    /// key rotation, or an event committed before acknowledgement keys existed). Storing the
    /// same key's signature again changes nothing.
    fn record_ack<'a>(
        &'a self,
        event_id: Uuid,
        ack: &'a AckSignature,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()>;
}

/// Devices and enrollment tokens.
pub trait StationStore: Send + Sync {
    /// Stores a new enrollment token (only its hash), audited as done by `actor`.
    fn create_token<'a>(&'a self, token: NewToken, actor: &'a str) -> StoreFuture<'a, ()>;
    /// Marks the token with this hash revoked, audited; `false` when no such token exists.
    fn revoke_token<'a>(&'a self, token_hash: &'a str, actor: &'a str) -> StoreFuture<'a, bool>;
    /// The newest tokens first, at most `limit`.
    fn list_tokens(&self, limit: u32) -> StoreFuture<'_, Vec<TokenRecord>>;
    /// Approves, disables or revokes a device, audited, with a live-log row. Revocation is
    /// final: `Refused` when asked to lift it.
    fn set_device_status<'a>(
        &'a self,
        device_id: &'a str,
        status: DeviceStatus,
        actor: &'a str,
    ) -> StoreFuture<'a, ()>;
    /// Every device, in order of enrollment.
    fn list_devices(&self) -> StoreFuture<'_, Vec<DeviceRecord>>;
    /// Sets the station's registered location (`None` clears it), audited (`device.location`,
    /// old and new) with a live-log row. `NoSuchDevice` when unknown.
    fn set_registered_location<'a>(
        &'a self,
        device_id: &'a str,
        location: Option<Location>,
        actor: &'a str,
    ) -> StoreFuture<'a, ()>;
    /// Sets the registered locations of several stations (a CSV import) in one transaction,
    /// each audited as [`StationStore::set_registered_location`]: all or nothing
    /// (`NoSuchDevice` for the first unknown one). Returns how many.
    fn set_registered_locations<'a>(
        &'a self,
        changes: Vec<(String, Option<Location>)>,
        actor: &'a str,
    ) -> StoreFuture<'a, usize>;
    /// Approves a pending station (or enables a disabled one) and registers its location
    /// (`None`: leaves it as it is), in one transaction, both audited: a station is never
    /// active with the approver's location half-written. Revocation stays final (`Refused`).
    fn approve_device<'a>(
        &'a self,
        device_id: &'a str,
        location: Option<Location>,
        actor: &'a str,
    ) -> StoreFuture<'a, ()>;
    /// Retires a station for good, in one transaction: its status becomes `revoked` (its key
    /// can no longer raise alarms or send heartbeats, the supervision sweep skips it), it is
    /// marked retired (when, by `actor`), its pending offline notifications are stopped, and
    /// the change is audited (`device.retire`) with a live-log row. Retiring a retired station
    /// again changes nothing (`AlreadyRetired`), so a resent retire message is harmless.
    fn retire_device<'a>(
        &'a self,
        device_id: &'a str,
        actor: &'a str,
    ) -> StoreFuture<'a, RetireOutcome>;
}

/// How [`StationStore::retire_device`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireOutcome {
    Retired,
    AlreadyRetired,
}

/// The audit action of a retirement.
pub const RETIRE_ACTION: &str = "device.retire";

/// Incidents: one read model ([`IncidentRecord`]) for the CLI, the console and the API.
pub trait IncidentStore: Send + Sync {
    /// Real incidents (never tests) of `filter`, oldest first (opened_at, then id), each with
    /// its presses and cancels in order of arrival.
    fn list_incidents(&self, filter: IncidentFilter) -> StoreFuture<'_, Vec<IncidentRecord>>;
    /// One incident with its presses and the officers' timeline, read in one snapshot.
    fn incident(&self, id: Uuid) -> StoreFuture<'_, Option<IncidentDetail>>;
    /// Applies an officer's action: checks the incident's current state, changes it and writes
    /// the timeline entry, the audit entry and the live-log row, in one transaction. Two
    /// officers claiming at once cannot both win.
    fn apply_action<'a>(
        &'a self,
        id: Uuid,
        actor: &'a str,
        action: IncidentAction,
    ) -> StoreFuture<'a, ActionOutcome>;
    /// Resolves every open incident of the station `device_id` (an admin's action against a
    /// broken or hostile workstation that filled the board), each with `disposition` and the
    /// follow-up `note`, its own timeline entry, audit entry (`incident.resolve`, one per
    /// incident) and live-log row, all in one transaction. Returns the incidents resolved,
    /// oldest first (none: nothing was open). `NoSuchDevice` when no such device is enrolled.
    fn resolve_open_of_device<'a>(
        &'a self,
        device_id: &'a str,
        actor: &'a str,
        disposition: &'a str,
        note: &'a str,
    ) -> StoreFuture<'a, Vec<Uuid>>;
    /// Resolves each of `ids` (at most [`MAX_BULK_RESOLVE`]; duplicates count once) with
    /// `disposition` and the follow-up `note`, by `actor`, each in a transaction of its own
    /// that is exactly a single resolve (timeline entry, `incident.resolve` audit entry,
    /// live-log row, resolve notifications), except that an incident another officer claimed
    /// is skipped ([`bulk_resolve_skip`]). One outcome per distinct id, in the order given; a
    /// storage failure on one is reported as `Failed` (and logged) and the rest are still tried.
    fn resolve_incidents<'a>(
        &'a self,
        ids: &'a [Uuid],
        actor: &'a str,
        disposition: &'a str,
        note: &'a str,
    ) -> StoreFuture<'a, Vec<(Uuid, BulkResolveOutcome)>>;
    /// Marks open incidents that nobody claimed within `after` of opening, and that are not
    /// escalated yet, as escalated (timeline, audit, live row each); returns how many. Each
    /// incident is escalated once, however many callers race.
    fn escalate_unclaimed(&self, after: Duration) -> StoreFuture<'_, usize>;
    /// Self-test events received since `since`, newest first, at most `limit`.
    fn recent_self_tests(
        &self,
        since: OffsetDateTime,
        limit: u32,
    ) -> StoreFuture<'_, Vec<SelfTestRecord>>;
    /// Every event, in order of arrival.
    fn list_events(&self) -> StoreFuture<'_, Vec<EventRecord>>;
    /// Every event as evidence: the raw token and the key that verifies it.
    fn export_events(&self) -> StoreFuture<'_, Vec<ExportedEvent>>;
}

/// Console accounts and server-side sessions.
pub trait AccountStore: Send + Sync {
    /// Adds a user (the password already hashed), audited. `Refused` when the name is taken.
    fn add_user<'a>(&'a self, user: NewUser, actor: &'a str) -> StoreFuture<'a, ()>;
    /// Disables a user and deletes their sessions, audited. `Refused` when unknown.
    fn disable_user<'a>(&'a self, username: &'a str, actor: &'a str) -> StoreFuture<'a, ()>;
    fn list_users(&self) -> StoreFuture<'_, Vec<UserRecord>>;
    /// What sign-in checks a password against.
    fn credentials<'a>(&'a self, username: &'a str) -> StoreFuture<'a, Option<Credentials>>;
    /// Audits a failed sign-in (`actor` is `ip:ADDR`).
    fn record_login_failure<'a>(&'a self, username: &'a str, actor: &'a str)
    -> StoreFuture<'a, ()>;
    /// Audits one summary of sign-ins held back for `username` (`actor` is `ip:ADDR`): written
    /// once when a limit is reached, not once per refused attempt, so a flood cannot push real
    /// entries out of sight.
    fn record_login_lockout<'a>(
        &'a self,
        username: &'a str,
        actor: &'a str,
        detail: &'a str,
    ) -> StoreFuture<'a, ()>;
    /// Creates the session and audits the sign-in in one transaction.
    fn create_session<'a>(&'a self, session: NewSession, detail: &'a str) -> StoreFuture<'a, ()>;
    /// The session with this id hash and its user's current role and state.
    fn session<'a>(&'a self, id_hash: &'a str) -> StoreFuture<'a, Option<SessionRecord>>;
    fn touch_session<'a>(&'a self, id_hash: &'a str, at: OffsetDateTime) -> StoreFuture<'a, ()>;
    /// Extends a session ("Stay signed in"): its end moves to `expires_at` (never earlier
    /// than it was) and it counts as used at `at`, audited as `session.extend` by its user, in
    /// one transaction. `false` when there is no such session.
    fn extend_session<'a>(
        &'a self,
        id_hash: &'a str,
        expires_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, bool>;
    /// Deletes an expired or idle session (nothing audited: nobody acted).
    fn expire_session<'a>(&'a self, id_hash: &'a str) -> StoreFuture<'a, ()>;
    /// Deletes the session at sign-out, audited as done by `actor`.
    fn end_session<'a>(&'a self, id_hash: &'a str, actor: &'a str) -> StoreFuture<'a, ()>;
}

/// The audit log (see [`audit_chain`] for the hash chain).
pub trait AuditStore: Send + Sync {
    /// The newest entries first, at most `limit`.
    fn recent_audit(&self, limit: u32) -> StoreFuture<'_, Vec<AuditEntry>>;
    /// Every entry in id order (for verification).
    fn audit_log(&self) -> StoreFuture<'_, Vec<AuditEntry>>;
    /// The head row: the newest entry's id and hash as the last append left them.
    fn audit_head(&self) -> StoreFuture<'_, audit_chain::AuditHead>;
    /// The key this store's appends are keyed with (read from the data directory at open).
    fn audit_key(&self) -> &audit_chain::AuditKey;
    /// Appends an entry for an act that changes nothing else (an export, a printed report).
    fn record_audit<'a>(
        &'a self,
        actor: &'a str,
        action: &'a str,
        subject: &'a str,
        detail: &'a str,
    ) -> StoreFuture<'a, ()>;
}

/// Verifies the audit chain of `store` under its key: the stored head first, then every entry
/// (so an append racing with it only lengthens the log), and `expect` if given.
pub async fn verify_audit(
    store: &dyn Store,
    expect: Option<&audit_chain::AuditHead>,
) -> StoreResult<Result<usize, audit_chain::ChainBreak>> {
    let head = store.audit_head().await?;
    let log = store.audit_log().await?;
    Ok(audit_chain::verify(
        &log,
        store.audit_key(),
        Some(&head),
        expect,
    ))
}

/// The live-update log: one row per change officers must see, written with the change.
pub trait LiveStore: Send + Sync {
    /// Rows after `after`, in id order, at most `limit`.
    fn live_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<LiveRow>>;
    /// The newest row's id (0 when none).
    fn live_latest_id(&self) -> StoreFuture<'_, i64>;
    /// Poked after every commit this process made that wrote a live row, so the console's
    /// pump reads it at once instead of at its next poll.
    fn live_wake(&self) -> Arc<Notify>;
    /// The doorbell between processes: runs until dropped, poking `wake` whenever another
    /// process (another receiver node on the same database, an admin command) may have
    /// appended live rows, and after every reconnect of its own (notifications sent while it
    /// was away are lost, so the pump re-reads from its last id). PostgreSQL: `LISTEN` on a
    /// connection of its own. SQLite (one node): nothing to listen to; rows written by the
    /// command line are found by the pump's poll ([`LiveStore::live_safety_net`]).
    fn live_doorbell(&self, wake: Arc<Notify>) -> BoxFuture<'static, ()> {
        let _ = wake;
        Box::pin(std::future::pending())
    }
    /// How often the console's pump re-reads the live log with no poke: the safety net for a
    /// lost notification (at most 5 s, issue 12).
    fn live_safety_net(&self) -> Duration {
        Duration::from_secs(1)
    }
    /// **Test switch only**: stop ringing the doorbell for this store's writes, standing for
    /// notifications lost on the way (`Settings::mute_doorbell`). No effect on SQLite.
    fn mute_doorbell(&self, muted: bool) {
        let _ = muted;
    }
}

/// Duty displays: browsers an admin paired as view-only wall screens (`console::displays`).
/// Only hashes of their cookie tokens and pairing codes are stored.
pub trait DisplayStore: Send + Sync {
    /// Adds a pending display (its screen shows the pairing code), after deleting pending
    /// ones whose code expired. Not audited (nobody signed in acted). `false`, and nothing
    /// added, when `max_pending` unexpired pending displays already exist.
    fn create_pending_display<'a>(
        &'a self,
        display: NewDisplay,
        max_pending: u32,
    ) -> StoreFuture<'a, bool>;
    /// An admin entered a code: the pending display with that code (unexpired) becomes
    /// active under `name`, audited as `display.pair` by `actor`. `None` when no such code.
    fn pair_display<'a>(
        &'a self,
        code_hash: &'a str,
        name: &'a str,
        actor: &'a str,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Option<i64>>;
    /// The display whose cookie token hashes to `token_hash`, whatever its state.
    fn display_by_token<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> StoreFuture<'a, Option<DisplayRecord>>;
    /// The display with this id, whatever its state.
    fn display<'a>(&'a self, id: i64) -> StoreFuture<'a, Option<DisplayRecord>>;
    fn touch_display(&self, id: i64, at: OffsetDateTime) -> StoreFuture<'_, ()>;
    /// Revokes an active display, audited as `display.revoke` by `actor`; `false` when it is
    /// not active.
    fn revoke_display<'a>(
        &'a self,
        id: i64,
        actor: &'a str,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, bool>;
    /// Active and revoked displays (not pending ones), newest first.
    fn displays(&self) -> StoreFuture<'_, Vec<DisplayRecord>>;
}

/// Console settings kept in the database.
pub trait SettingsStore: Send + Sync {
    fn camera_mappings(&self) -> StoreFuture<'_, Vec<CameraMapping>>;
    /// Adds a mapping, audited; returns its id.
    fn add_camera_mapping<'a>(
        &'a self,
        mapping: NewCameraMapping,
        actor: &'a str,
    ) -> StoreFuture<'a, i64>;
    /// Deletes a mapping, audited; `false` when there was none.
    fn delete_camera_mapping<'a>(&'a self, id: i64, actor: &'a str) -> StoreFuture<'a, bool>;
    /// The subnet → building/floor map, in network text order.
    fn subnets(&self) -> StoreFuture<'_, Vec<Subnet>>;
    /// Adds these subnets, replacing the mapping of any already listed, each audited
    /// (`subnet.put`), all in one transaction (an import is all or nothing); returns how many.
    fn put_subnets<'a>(&'a self, subnets: Vec<Subnet>, actor: &'a str) -> StoreFuture<'a, usize>;
    /// Removes the subnet with this canonical CIDR, audited; `false` when there was none.
    fn remove_subnet<'a>(&'a self, cidr: &'a str, actor: &'a str) -> StoreFuture<'a, bool>;
}

/// The whole store: what the receiver holds as `Arc<dyn Store>`.
pub trait Store:
    IngestStore
    + StationStore
    + IncidentStore
    + AccountStore
    + AuditStore
    + LiveStore
    + SettingsStore
    + OutboxStore
    + RetentionStore
    + cluster::ClusterStore
    + ApiKeyStore
    + PhoneStore
    + DisplayStore
    + AccountSecurityStore
    + SsoStore
    + FloorPlanStore
{
    /// Which backend, for logs: `sqlite` or `postgresql`.
    fn backend(&self) -> &'static str;
    /// Flushes and closes; later calls fail with `Unavailable`.
    fn close(&self) -> BoxFuture<'_, ()>;
    /// The cluster-wide lease `name` for work that one receiver node does for all (the
    /// supervision sweep, each SIEM sink): see [`ClusterLease`]. SQLite is one node, so its
    /// lease is always held.
    fn cluster_lease(&self, name: &str) -> Box<dyn ClusterLease> {
        let _ = name;
        Box::new(SingleNode)
    }
}

/// A lease on one kind of work for the whole cluster (docs/scale-out.md, "How the nodes share
/// work"). On PostgreSQL a session-level advisory lock on a connection of the lease's own: held
/// until that connection closes, so a node that dies (killed, crashed, cut off) releases it
/// with its session and another node's next [`ClusterLease::hold`] takes the work over; dropping
/// the lease closes its connection. The model is GoAlert's `engine/processinglock`, reduced to
/// its core: one holder at a time, the database decides, nothing to expire by clock.
pub trait ClusterLease: Send + std::fmt::Debug {
    /// Whether this node holds the lease now: takes it when it is free, checks (one round
    /// trip) that its connection is alive when already held. Called before each round of the
    /// work; `false` (or an error) means another node does it, or nobody can right now.
    fn hold(&mut self) -> StoreFuture<'_, bool>;
}

/// The lease of a single-node store: always held.
#[derive(Debug)]
struct SingleNode;

impl ClusterLease for SingleNode {
    fn hold(&mut self) -> StoreFuture<'_, bool> {
        Box::pin(std::future::ready(Ok(true)))
    }
}

/// Holds `lease` for one round of the work `what`, logging when this node takes it over or
/// loses it; `false`: skip this round.
pub async fn hold_lease(lease: &mut dyn ClusterLease, held_before: &mut bool, what: &str) -> bool {
    let held = match lease.hold().await {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(work = what, error = %e, "cluster lease: cannot check it; skipping this round");
            false
        }
    };
    if held && !*held_before {
        tracing::info!(
            work = what,
            "cluster lease taken: this node does this work now"
        );
    } else if !held && *held_before {
        tracing::warn!(
            work = what,
            "cluster lease lost: another node takes this work over"
        );
    }
    *held_before = held;
    held
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
