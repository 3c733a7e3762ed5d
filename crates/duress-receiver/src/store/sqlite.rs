//! The SQLite store: WAL, `synchronous=FULL` (a commit is on disk before we answer 2xx),
//! foreign keys on, and every write transaction opened with `BEGIN IMMEDIATE`, which takes
//! the write lock up front. Writers therefore queue (bounded by the busy timeout) instead of
//! failing on a lock upgrade, and a dedupe check made inside the transaction cannot be raced.
//!
//! The hot writes — event ingest and heartbeats — go through one writer task with its own
//! connection that commits whatever is queued in one transaction (group commit, see
//! `writer`); everything else uses the pool. One submodule per area of the store's traits.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use duress_core::{DeviceStatus, VerifyingKey};
use futures::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite, Transaction};
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{
    DeviceCredential, EnrollOutcome, EnrollRefusal, EnrollRequest, HeartbeatRecorded,
    HeartbeatUpdate, IngestOutcome, IngestStore, NewEvent, Store, StoreError, StoreFuture,
    StoreResult, StoredEvent, format_ts, parse_ts,
};

mod account_security;
mod accounts;
mod apikeys;
mod cluster;
mod displays;
mod floor_plans;
mod incidents;
mod listings;
mod log;
mod outbox;
mod phones;
mod retention;
mod rows;
mod settings;
mod sso;
mod stations;
mod writer;

use rows::{from_json, parse_uuid, to_json};

/// The live-log row's insert, for the group-commit writer (rusqlite); [`log::live`] is the
/// same for sqlx transactions.
pub(super) const LIVE_INSERT: &str = "INSERT INTO console_events (at, kind, incident_id, payload) VALUES (?1, ?2, ?3, ?4) RETURNING id";

/// A heartbeat's covert acknowledgement: the device's open, claimed incidents — its own and the
/// ones its presses joined (same-room grouping, `incident_joins`) — oldest first. Two indexed
/// probes (`incidents_open_by_device`, the joins' primary key), never a scan of incidents.
pub(super) const CLAIMED_INCIDENTS: &str = "SELECT incident_id FROM (
         SELECT incident_id, opened_at FROM incidents
          WHERE device_id = ?1 AND status = 'open' AND claimed_by IS NOT NULL
         UNION
         SELECT i.incident_id, i.opened_at FROM incident_joins j
           JOIN incidents i ON i.incident_id = j.incident_id
          WHERE j.device_id = ?1 AND i.status = 'open' AND i.claimed_by IS NOT NULL
     ) ORDER BY opened_at, incident_id";

/// The newest stored acknowledgement of an event (kid, public_jwk, sig), for both drivers.
pub(super) const ACK_SELECT: &str =
    "SELECT kid, public_jwk, sig FROM event_acks WHERE event_id = ?1 ORDER BY n DESC LIMIT 1";
/// Stores an acknowledgement; the same key's signature twice is one row.
pub(super) const ACK_INSERT: &str = "INSERT INTO event_acks (event_id, kid, public_jwk, sig, signed_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (event_id, kid) DO NOTHING";

/// How long a request waits for the write lock before the store reports itself unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite failures are, from the client's point of view, "cannot commit right now": the agent
/// keeps the alarm in its outbox and retries. Decoding problems are ours, not transient.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(e.to_string())
            }
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// The SQLite store's file in a data directory.
pub fn database_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("receiver.sqlite3")
}

/// The embedded store in `DATA_DIR/receiver.sqlite3`.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The alarm path's reads (a device's key and status, a committed event), on connections
    /// of their own: the console's reads, which can be long (reports, exports, the board),
    /// share `pool` and must never make an alarm wait for a connection (issue 15). WAL readers
    /// never wait for each other or for the writer.
    ingest_reads: SqlitePool,
    /// Poked after every commit that wrote a `console_events` row, so the live-update pump
    /// (console/live.rs) reads and fans it out at once instead of at its next poll.
    wake: Arc<Notify>,
    /// The group-commit writer: events and heartbeats.
    writer: writer::Writer,
    /// Verified devices' public keys (see [`super::rules::KeyCache`]).
    keys: Arc<super::rules::KeyCache>,
    /// The audit chain's key, from `DATA_DIR/audit-hmac.key` (see [`super::audit_chain`]).
    audit_key: super::audit_chain::AuditKey,
    /// What a new incident enqueues in the outbox (shared with the writer thread).
    planner: Arc<super::PlannerSlot>,
}

impl SqliteStore {
    /// Opens (creating the directory and file if needed) and applies pending migrations.
    pub async fn open(data_dir: &Path) -> StoreResult<Self> {
        super::create_private_dir(data_dir).map_err(|e| {
            StoreError::Unavailable(format!("creating {}: {e}", data_dir.display()))
        })?;
        let options = SqliteConnectOptions::new()
            .filename(database_path(data_dir))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // Never hand out a connection stuck in a transaction SQLite already rolled back
            // (see `stuck_in_transaction`): the pool closes it and opens a fresh one.
            .before_acquire(|conn, _meta| {
                Box::pin(async move { Ok(!stuck_in_transaction(conn).await) })
            })
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        // The database and its WAL and shared-memory files: 0600 (SQLite creates the WAL and
        // shared-memory files later with the database file's own mode).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let db = database_path(data_dir);
            for suffix in ["", "-wal", "-shm"] {
                let mut path = db.clone().into_os_string();
                path.push(suffix);
                let path = std::path::PathBuf::from(path);
                if path.exists() {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
                }
            }
        }
        // Only ever read (nothing on it begins a transaction); two connections are plenty
        // since keys are cached and a key read is one indexed row.
        let ingest_reads = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options.clone())
            .await?;
        let head: i64 = sqlx::query_scalar("SELECT id FROM audit_head")
            .fetch_one(&pool)
            .await?;
        let audit_key = super::audit_chain::AuditKey::load_or_create(data_dir, head + 1)?;
        let wake = Arc::new(Notify::new());
        let planner = Arc::new(super::PlannerSlot::default());
        let writer = writer::Writer::start(
            database_path(data_dir),
            BUSY_TIMEOUT,
            wake.clone(),
            planner.clone(),
        )?;
        Ok(SqliteStore {
            pool,
            ingest_reads,
            wake,
            writer,
            keys: Arc::default(),
            audit_key,
            planner,
        })
    }

    /// A write transaction: `BEGIN IMMEDIATE` takes the write lock up front.
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn enroll_impl(&self, req: EnrollRequest) -> StoreResult<EnrollOutcome> {
        // An unknown token is refused on a plain read, before the write lock: a flood of
        // made-up tokens never queues in front of the writer (issue 15). The token is read
        // again under the lock below, so nothing decided here can be raced.
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM enrollment_tokens WHERE token_hash = ?")
                .bind(&req.token_hash)
                .fetch_optional(&self.pool)
                .await?;
        if exists.is_none() {
            return Ok(EnrollOutcome::Refused(EnrollRefusal::TokenInvalid));
        }
        let mut tx = self.begin_write().await?;
        let token = sqlx::query(
            "SELECT approve, uses_left, expires_at, revoked FROM enrollment_tokens WHERE token_hash = ?",
        )
        .bind(&req.token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(token) = token else {
            return Ok(EnrollOutcome::Refused(EnrollRefusal::TokenInvalid));
        };
        let token_problem = token_refusal(&token, req.now)?;

        let known = sqlx::query(
            "SELECT device_id, status, token_hash FROM devices WHERE key_thumbprint = ?",
        )
        .bind(&req.key_thumbprint)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(device) = known {
            let device_id: String = device.try_get("device_id")?;
            let status = rows::status(&device.try_get::<String, _>("status")?)?;
            let enrolled_with: String = device.try_get("token_hash")?;
            // Nothing is written on this path; dropping `tx` rolls back.
            return Ok(super::rules::known_key_outcome(
                device_id,
                status,
                enrolled_with == req.token_hash,
                token_problem,
            ));
        }
        if let Some(refusal) = token_problem {
            return Ok(EnrollOutcome::Refused(refusal));
        }
        let approve: String = token.try_get("approve")?;
        let status = match super::Approve::parse(&approve) {
            Some(super::Approve::Manual) => DeviceStatus::Pending,
            _ => DeviceStatus::Active,
        };
        sqlx::query(
            "UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE token_hash = ? AND uses_left > 0",
        )
        .bind(&req.token_hash)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO devices (device_id, status, public_jwk, key_thumbprint, token_hash, hostname,
                                  host_json, location_json, agent_version, enrolled_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&req.new_device_id)
        .bind(status.as_str())
        .bind(to_json(&req.public_jwk))
        .bind(&req.key_thumbprint)
        .bind(&req.token_hash)
        .bind(&req.host.hostname)
        .bind(to_json(&req.host))
        .bind(to_json(&req.location))
        .bind(&req.host.agent_version)
        .bind(format_ts(req.now))
        .execute(&mut *tx)
        .await?;
        log::audit(
            &mut tx,
            &self.audit_key,
            req.now,
            "enrollment",
            "device.enroll",
            &req.new_device_id,
            &req.audit_detail(status),
        )
        .await?;
        tx.commit().await?;
        self.keys.enrolled(&req.new_device_id);
        Ok(EnrollOutcome::Enrolled {
            device_id: req.new_device_id,
            status,
        })
    }

    /// Changes the status and, when `registered` is given (approval with a location), the
    /// registered location, in one transaction.
    pub(super) async fn set_status_impl(
        &self,
        device_id: &str,
        status: DeviceStatus,
        registered: Option<&duress_core::Location>,
        actor: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT status FROM devices WHERE device_id = ?")
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            return Err(StoreError::NoSuchDevice(device_id.to_owned()));
        };
        super::rules::check_status_change(device_id, rows::status(&current)?, status)?;
        sqlx::query("UPDATE devices SET status = ? WHERE device_id = ?")
            .bind(status.as_str())
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        let now = crate::clock::receiver_now();
        log::audit(
            &mut tx,
            &self.audit_key,
            now,
            actor,
            "device.status",
            device_id,
            &format!("{current} -> {}", status.as_str()),
        )
        .await?;
        if let Some(location) = registered {
            stations::write_registered(&mut tx, &self.audit_key, device_id, Some(location), actor)
                .await?;
        }
        log::live(
            &mut tx,
            now,
            "device",
            None,
            &serde_json::json!({"device_id": device_id, "status": status.as_str()}),
        )
        .await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok(())
    }
}

impl SqliteStore {
    async fn retire_impl(&self, device_id: &str, actor: &str) -> StoreResult<super::RetireOutcome> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT status, retired_at FROM devices WHERE device_id = ?")
            .bind(device_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::NoSuchDevice(device_id.to_owned()));
        };
        if row.try_get::<Option<String>, _>("retired_at")?.is_some() {
            return Ok(super::RetireOutcome::AlreadyRetired);
        }
        let current: String = row.try_get("status")?;
        let now = crate::clock::receiver_now();
        let at = format_ts(now);
        sqlx::query(
            "UPDATE devices SET status = 'revoked', retired_at = ?1, retired_by = ?2
             WHERE device_id = ?3",
        )
        .bind(&at)
        .bind(actor)
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
        // Never supervised again: an outage notice not yet sent is stopped, the outage forgotten.
        sqlx::query(
            "UPDATE notifications SET status = 'stopped', done_at = ?1, lease_owner = NULL,
                    lease_until = NULL
             WHERE device_id = ?2 AND reason = 'offline' AND status = 'pending'",
        )
        .bind(&at)
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM supervision_state WHERE device_id = ?")
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        log::audit(
            &mut tx,
            &self.audit_key,
            now,
            actor,
            super::RETIRE_ACTION,
            device_id,
            &format!("{current} -> retired"),
        )
        .await?;
        log::live(
            &mut tx,
            now,
            "device",
            None,
            &serde_json::json!({"device_id": device_id, "status": "revoked", "retired": true}),
        )
        .await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok(super::RetireOutcome::Retired)
    }
}

/// `Some(refusal)` when the token cannot enroll a new device now.
fn token_refusal(
    token: &sqlx::sqlite::SqliteRow,
    now: time::OffsetDateTime,
) -> StoreResult<Option<EnrollRefusal>> {
    if token.try_get::<bool, _>("revoked")? {
        return Ok(Some(EnrollRefusal::TokenRevoked));
    }
    if let Some(expires) = token.try_get::<Option<String>, _>("expires_at")?
        && parse_ts(&expires)? <= now
    {
        return Ok(Some(EnrollRefusal::TokenExpired));
    }
    if token.try_get::<i64, _>("uses_left")? <= 0 {
        return Ok(Some(EnrollRefusal::TokenUsedUp));
    }
    Ok(None)
}

/// Whether sqlx still counts a transaction on `conn` after its rollback could not run. A
/// disk-full (or I/O) error makes SQLite roll the transaction back by itself; the ROLLBACK sqlx
/// sends when the transaction is dropped then fails, and sqlx keeps counting it, so that
/// connection refuses every later BEGIN ("non-zero transaction depth") and the store would stay
/// unavailable after space returns (found by `tests/tests/faults_disk_full.rs`).
pub(super) async fn stuck_in_transaction(conn: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection as _;
    if conn.is_in_transaction() {
        // Let a rollback queued by a dropped transaction run first.
        let _ = conn.ping().await;
    }
    conn.is_in_transaction()
}

async fn find_event<'e, E>(exec: E, id: Uuid) -> StoreResult<Option<StoredEvent>>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    // With its newest acknowledgement, if any (one statement: one snapshot).
    let row = sqlx::query(
        "SELECT e.device_id, e.incident_id, e.received_at, e.delay_ms, e.delayed,
                a.kid, a.public_jwk, a.sig
         FROM events e LEFT JOIN event_acks a ON a.event_id = e.id
         WHERE e.id = ? ORDER BY a.n DESC NULLS LAST LIMIT 1",
    )
    .bind(id.to_string())
    .fetch_optional(exec)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let ack = match row.try_get::<Option<String>, _>("kid")? {
        Some(kid) => Some(rows::ack(
            kid,
            &row.try_get::<String, _>("public_jwk")?,
            row.try_get("sig")?,
        )?),
        None => None,
    };
    Ok(Some(StoredEvent {
        id,
        device_id: row.try_get("device_id")?,
        incident_id: row
            .try_get::<Option<String>, _>("incident_id")?
            .map(|s| parse_uuid(&s))
            .transpose()?,
        received_at: parse_ts(&row.try_get::<String, _>("received_at")?)?,
        delay_ms: row.try_get("delay_ms")?,
        delayed: row.try_get("delayed")?,
        ack,
    }))
}

impl IngestStore for SqliteStore {
    fn health(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query_scalar::<_, i64>("SELECT 1")
                .fetch_one(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn enroll(&self, request: EnrollRequest) -> StoreFuture<'_, EnrollOutcome> {
        Box::pin(self.enroll_impl(request))
    }

    fn device_credential<'a>(
        &'a self,
        device_id: &'a str,
    ) -> StoreFuture<'a, Option<DeviceCredential>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT public_jwk, status, retired_at FROM devices WHERE device_id = ?",
            )
            .bind(device_id)
            .fetch_optional(&self.ingest_reads)
            .await?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(DeviceCredential {
                device_id: device_id.to_owned(),
                public_jwk: from_json("public_jwk", &row.try_get::<String, _>("public_jwk")?)?,
                status: rows::status(&row.try_get::<String, _>("status")?)?,
                retired: row.try_get::<Option<String>, _>("retired_at")?.is_some(),
            }))
        })
    }

    fn verifying_key<'a>(&'a self, device_id: &'a str) -> StoreFuture<'a, Option<VerifyingKey>> {
        Box::pin(async move {
            self.keys
                .verifying_key(device_id, self.device_credential(device_id))
                .await
        })
    }

    fn cached_verifying_key(&self, device_id: &str) -> Option<VerifyingKey> {
        self.keys.get(device_id)
    }

    fn find_event(&self, id: Uuid) -> StoreFuture<'_, Option<StoredEvent>> {
        Box::pin(find_event(&self.ingest_reads, id))
    }

    fn ingest_grouped(
        &self,
        event: NewEvent,
        grouping: crate::incidents::Grouping,
    ) -> StoreFuture<'_, IngestOutcome> {
        Box::pin(self.writer.ingest(event, grouping))
    }

    fn record_heartbeat(&self, update: HeartbeatUpdate) -> StoreFuture<'_, HeartbeatRecorded> {
        Box::pin(self.writer.heartbeat(update))
    }

    fn record_ack<'a>(
        &'a self,
        event_id: Uuid,
        ack: &'a duress_core::AckSignature,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.begin_write().await?;
            sqlx::query(ACK_INSERT)
                .bind(event_id.to_string())
                .bind(&ack.kid)
                .bind(rows::to_json(&ack.jwk))
                .bind(&ack.sig)
                .bind(format_ts(at))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.writer.close().await;
            self.pool.close().await;
            self.ingest_reads.close().await;
        })
    }
}

/// Writes a consistent copy of the SQLite store in `data_dir` to `dest` (which must not
/// exist), while the receiver keeps running: `VACUUM INTO` reads inside one read transaction,
/// so the copy is the database as of one commit (WAL readers never block the writer, nor it
/// them), written compact and without a WAL of its own. Used by `duress-receiver backup`.
pub fn snapshot_into(data_dir: &Path, dest: &Path) -> StoreResult<()> {
    let db = database_path(data_dir);
    if !db.is_file() {
        return Err(StoreError::Unavailable(format!(
            "no SQLite store at {}",
            db.display()
        )));
    }
    let conn = rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let dest = dest
        .to_str()
        .ok_or_else(|| StoreError::Unavailable("the backup path is not UTF-8".into()))?;
    conn.execute("VACUUM INTO ?1", [dest])?;
    Ok(())
}

/// Whether the SQLite store in `data_dir` holds anything an operator would lose by
/// overwriting it (any device, event, account or audit entry).
pub fn holds_data(data_dir: &Path) -> StoreResult<bool> {
    let db = database_path(data_dir);
    if !db.exists() {
        return Ok(false);
    }
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let has_tables: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_log')",
        [],
        |r| r.get(0),
    )?;
    if !has_tables {
        return Ok(false);
    }
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM devices) OR EXISTS (SELECT 1 FROM events)
             OR EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM audit_log)",
        [],
        |r| r.get(0),
    )?)
}
