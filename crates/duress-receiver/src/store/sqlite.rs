//! The SQLite store: WAL, `synchronous=FULL` (a commit is on disk before we answer 2xx),
//! foreign keys on, and every write transaction opened with `BEGIN IMMEDIATE`, which takes
//! the write lock up front. Writers therefore queue (bounded by the busy timeout) instead of
//! failing on a lock upgrade, and a dedupe check made inside the transaction cannot be raced.
//!
//! The hot writes — event ingest and heartbeats — go through one writer task with its own
//! connection that commits whatever is queued in one transaction (group commit, see
//! [`writer`]); everything else uses the pool.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use duress_core::{DeviceStatus, EventKind};
use futures::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite, SqliteConnection, Transaction};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{
    DeviceKey, EnrollOutcome, EnrollRefusal, EnrollRequest, HeartbeatUpdate, IngestOutcome,
    NewEvent, NewToken, Store, StoreError, StoreResult, StoredEvent, format_ts, parse_ts,
};
use crate::incidents::{self, OpenIncident, Placement};
use crate::records::{DeviceRecord, EventRecord, ExportedEvent, IncidentRecord};

mod listings;
mod rows;
mod tokens;
mod writer;

use rows::{from_json, parse_uuid, to_json};

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

/// The embedded store in `DATA_DIR/receiver.sqlite3`.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Poked after every commit that wrote a `console_events` row, so the live-update pump
    /// (console/live.rs) reads and fans it out at once instead of at its next poll.
    wake: Arc<Notify>,
    /// The group-commit writer: events and heartbeats.
    writer: writer::Writer,
}

impl SqliteStore {
    /// Opens (creating the directory and file if needed) and applies pending migrations.
    pub async fn open(data_dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Unavailable(format!("creating {}: {e}", data_dir.display()))
        })?;
        let options = SqliteConnectOptions::new()
            .filename(crate::settings::database_path(data_dir))
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
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        let wake = Arc::new(Notify::new());
        let writer = writer::Writer::start(options, wake.clone()).await?;
        Ok(SqliteStore { pool, wake, writer })
    }

    /// The connection pool, for the console's queries (SQLite-specific, like this type).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The wake-up poked after commits that wrote console events.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn enroll_impl(&self, req: EnrollRequest) -> StoreResult<EnrollOutcome> {
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
            return Ok(match status {
                DeviceStatus::Disabled | DeviceStatus::Revoked => {
                    EnrollOutcome::Refused(EnrollRefusal::KeyAlreadyEnrolled)
                }
                // A retry with the token that enrolled it: answer again even if that token
                // is used up by now (it was this very enrollment that used it).
                _ if enrolled_with == req.token_hash => {
                    EnrollOutcome::AlreadyEnrolled { device_id, status }
                }
                _ => match token_problem {
                    Some(refusal) => EnrollOutcome::Refused(refusal),
                    None => EnrollOutcome::AlreadyEnrolled { device_id, status },
                },
            });
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
        tx.commit().await?;
        Ok(EnrollOutcome::Enrolled {
            device_id: req.new_device_id,
            status,
        })
    }

    async fn set_status_impl(
        &self,
        device_id: &str,
        status: DeviceStatus,
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
        if rows::status(&current)? == DeviceStatus::Revoked && status != DeviceStatus::Revoked {
            return Err(StoreError::Refused(format!(
                "device {device_id} is revoked; revocation is final (enroll it again with a new key)"
            )));
        }
        sqlx::query("UPDATE devices SET status = ? WHERE device_id = ?")
            .bind(status.as_str())
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        let now = crate::api::receiver_now();
        crate::console::audit::append(
            &mut tx,
            now,
            actor,
            "device.status",
            device_id,
            &format!("{current} -> {}", status.as_str()),
        )
        .await?;
        crate::console::live::record(
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

    /// Approves, disables or revokes a device, audited as done by `actor`.
    pub async fn set_device_status_by(
        &self,
        device_id: &str,
        status: DeviceStatus,
        actor: &str,
    ) -> StoreResult<()> {
        self.set_status_impl(device_id, status, actor).await
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

/// Dedupes by id and writes the event, in the caller's transaction (the writer's savepoint).
/// The check runs under the write lock, so a concurrent or batched copy cannot slip past it.
async fn ingest_in(
    conn: &mut SqliteConnection,
    ev: &NewEvent,
    window: Duration,
) -> StoreResult<IngestOutcome> {
    if let Some(found) = find_event(&mut *conn, ev.id).await? {
        return Ok(classify(found, &ev.device_id));
    }
    // With one writer and the check above, the primary key cannot be violated here; if it
    // were, the error answers 503 and the agent's retry finds the row and its stored answer.
    Ok(IngestOutcome::Committed(
        insert_event(conn, ev, window).await?,
    ))
}

/// Records a heartbeat, in the caller's transaction (the writer's savepoint).
async fn heartbeat_in(conn: &mut SqliteConnection, hb: &HeartbeatUpdate) -> StoreResult<()> {
    let host_json = hb.host.as_ref().map(to_json);
    let hostname = hb.host.as_ref().map(|h| h.hostname.clone());
    let version = hb.host.as_ref().map(|h| h.agent_version.clone());
    sqlx::query(
        "UPDATE devices SET last_heartbeat_at = ?, hotkey_json = ?, queued = ?,
                reported_last_seq = ?,
                host_json = COALESCE(?, host_json), hostname = COALESCE(?, hostname),
                agent_version = COALESCE(?, agent_version),
                location_json = COALESCE(?, location_json)
         WHERE device_id = ?",
    )
    .bind(format_ts(hb.received_at))
    .bind(to_json(&hb.hotkey))
    .bind(hb.queued)
    .bind(hb.reported_last_seq)
    .bind(host_json)
    .bind(hostname)
    .bind(version)
    .bind(hb.location.as_ref().map(to_json))
    .bind(&hb.device_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
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

/// Replaces a connection [`stuck_in_transaction`] by a fresh one (kept as is when a new one
/// cannot be opened: the next attempt tries again).
pub(super) async fn replace_if_stuck(
    conn: &mut sqlx::SqliteConnection,
    options: &SqliteConnectOptions,
) {
    use sqlx::{ConnectOptions as _, Connection as _};
    if !stuck_in_transaction(conn).await {
        return;
    }
    match options.connect().await {
        Ok(fresh) => {
            tracing::warn!("replacing a connection left in a rolled-back transaction");
            let old = std::mem::replace(conn, fresh);
            let _ = old.close_hard().await;
        }
        Err(e) => tracing::error!(error = %e, "cannot open a fresh connection"),
    }
}

fn classify(found: StoredEvent, device_id: &str) -> IngestOutcome {
    if found.device_id == device_id {
        IngestOutcome::Duplicate(found)
    } else {
        IngestOutcome::IdConflict
    }
}

async fn find_event<'e, E>(exec: E, id: Uuid) -> StoreResult<Option<StoredEvent>>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let row = sqlx::query(
        "SELECT device_id, incident_id, received_at, delay_ms, delayed FROM events WHERE id = ?",
    )
    .bind(id.to_string())
    .fetch_optional(exec)
    .await?;
    let Some(row) = row else { return Ok(None) };
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
    }))
}

/// Writes the event, its incident and the device's counters; the caller commits.
async fn insert_event(
    tx: &mut SqliteConnection,
    ev: &NewEvent,
    window: Duration,
) -> Result<StoredEvent, sqlx::Error> {
    let received = format_ts(ev.received_at);
    let occurred = format_ts(ev.occurred_at);
    // Computed from the stored (millisecond) values, so the answer is a function of columns.
    let received_at = duress_core::clock::truncate_to_millis(ev.received_at);
    let occurred_at = duress_core::clock::truncate_to_millis(ev.occurred_at);
    let delay_ms = super::delay_ms(occurred_at, received_at);
    let delayed = delay_ms > duress_core::clock::DELAYED_AFTER.whole_milliseconds() as i64;

    let latest_open = if ev.kind == EventKind::Test {
        None
    } else {
        let row = sqlx::query(
            "SELECT incident_id, last_press_at FROM incidents
             WHERE device_id = ? AND status = 'open' ORDER BY last_press_at DESC LIMIT 1",
        )
        .bind(&ev.device_id)
        .fetch_optional(&mut *tx)
        .await?;
        match row {
            Some(row) => Some(OpenIncident {
                incident_id: decode(parse_uuid(&row.try_get::<String, _>("incident_id")?))?,
                last_press_at: decode(parse_ts(&row.try_get::<String, _>("last_press_at")?))?,
            }),
            None => None,
        }
    };

    let incident_id = match incidents::place(ev.kind, latest_open, occurred_at, window) {
        Placement::Apart => None,
        Placement::Open => {
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO incidents (incident_id, device_id, status, opened_at, first_occurred_at,
                                        last_press_at, press_count, kind, source, location_json,
                                        host_json, delayed, delay_ms)
                 VALUES (?, ?, 'open', ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
            )
            .bind(id.to_string())
            .bind(&ev.device_id)
            .bind(&received)
            .bind(&occurred)
            .bind(&occurred)
            .bind(ev.kind.as_str())
            .bind(ev.source.as_str())
            .bind(to_json(&ev.location))
            .bind(to_json(&ev.host))
            .bind(delayed)
            .bind(delay_ms)
            .execute(&mut *tx)
            .await?;
            Some(id)
        }
        Placement::JoinPress(id) => {
            sqlx::query(
                "UPDATE incidents SET press_count = press_count + 1,
                        last_press_at = MAX(last_press_at, ?) WHERE incident_id = ?",
            )
            .bind(&occurred)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
            Some(id)
        }
        Placement::JoinCancel(id) => {
            sqlx::query(
                "UPDATE incidents SET cancelled_at = COALESCE(cancelled_at, ?) WHERE incident_id = ?",
            )
            .bind(&received)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
            Some(id)
        }
    };

    sqlx::query(
        "INSERT INTO events (id, device_id, incident_id, seq, kind, source, occurred_at, sent_at,
                             received_at, delay_ms, delayed, location_json, host_json, jws)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(ev.id.to_string())
    .bind(&ev.device_id)
    .bind(incident_id.map(|id| id.to_string()))
    .bind(ev.seq)
    .bind(ev.kind.as_str())
    .bind(ev.source.as_str())
    .bind(&occurred)
    .bind(format_ts(ev.sent_at))
    .bind(&received)
    .bind(delay_ms)
    .bind(delayed)
    .bind(to_json(&ev.location))
    .bind(to_json(&ev.host))
    .bind(&ev.jws)
    .execute(&mut *tx)
    .await?;

    // The live-update row, in this transaction: a console can never see the incident without
    // being told, nor be told of one that was rolled back.
    let live_kind = match (ev.kind, incident_id) {
        (EventKind::Test, _) => "selftest",
        (EventKind::Cancel, Some(_)) => "incident.cancel",
        (EventKind::Cancel, None) => "cancel",
        (EventKind::Duress, _) => "incident.press",
    };
    crate::console::live::record(
        tx,
        ev.received_at,
        live_kind,
        incident_id,
        &serde_json::json!({
            "event_id": ev.id,
            "device_id": ev.device_id,
            "label": ev.location.display_label(),
        }),
    )
    .await?;

    let is_test = ev.kind == EventKind::Test;
    sqlx::query(
        "UPDATE devices SET last_seq = MAX(COALESCE(last_seq, ?1), ?1), last_event_at = ?2,
                last_self_test_at = CASE WHEN ?3 THEN ?2 ELSE last_self_test_at END,
                last_self_test_id = CASE WHEN ?3 THEN ?4 ELSE last_self_test_id END
         WHERE device_id = ?5",
    )
    .bind(ev.seq)
    .bind(&received)
    .bind(is_test)
    .bind(ev.id.to_string())
    .bind(&ev.device_id)
    .execute(&mut *tx)
    .await?;

    Ok(StoredEvent {
        id: ev.id,
        device_id: ev.device_id.clone(),
        incident_id,
        received_at,
        delay_ms,
        delayed,
    })
}

/// A stored value that does not parse, surfaced through sqlx's error type inside the insert.
fn decode<T>(r: StoreResult<T>) -> Result<T, sqlx::Error> {
    r.map_err(|e| sqlx::Error::Decode(e.to_string().into()))
}

impl Store for SqliteStore {
    fn health(&self) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            sqlx::query_scalar::<_, i64>("SELECT 1")
                .fetch_one(&self.pool)
                .await?;
            Ok(())
        })
    }

    // Through the trait: the admin command line; the console calls the `_by` methods.
    fn create_token(&self, token: NewToken) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.create_token_by(token, "cli"))
    }

    fn revoke_token<'a>(&'a self, token_hash: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(self.revoke_token_by(token_hash, "cli"))
    }

    fn enroll(&self, request: EnrollRequest) -> BoxFuture<'_, StoreResult<EnrollOutcome>> {
        Box::pin(self.enroll_impl(request))
    }

    fn device_key<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<DeviceKey>>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT public_jwk, status FROM devices WHERE device_id = ?")
                .bind(device_id)
                .fetch_optional(&self.pool)
                .await?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(DeviceKey {
                device_id: device_id.to_owned(),
                public_jwk: from_json("public_jwk", &row.try_get::<String, _>("public_jwk")?)?,
                status: rows::status(&row.try_get::<String, _>("status")?)?,
            }))
        })
    }

    fn find_event(&self, id: Uuid) -> BoxFuture<'_, StoreResult<Option<StoredEvent>>> {
        Box::pin(find_event(&self.pool, id))
    }

    fn ingest_event(
        &self,
        event: NewEvent,
        grouping_window: Duration,
    ) -> BoxFuture<'_, StoreResult<IngestOutcome>> {
        Box::pin(self.writer.ingest(event, grouping_window))
    }

    fn record_heartbeat(&self, update: HeartbeatUpdate) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.writer.heartbeat(update))
    }

    fn set_device_status<'a>(
        &'a self,
        device_id: &'a str,
        status: DeviceStatus,
    ) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(self.set_status_impl(device_id, status, "cli"))
    }

    fn claimed_incidents<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Vec<Uuid>>> {
        Box::pin(async move {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT incident_id FROM incidents
                 WHERE device_id = ? AND status = 'open' AND claimed_by IS NOT NULL
                 ORDER BY opened_at",
            )
            .bind(device_id)
            .fetch_all(&self.pool)
            .await?;
            ids.iter().map(|id| parse_uuid(id)).collect()
        })
    }

    fn list_devices(&self) -> BoxFuture<'_, StoreResult<Vec<DeviceRecord>>> {
        Box::pin(listings::devices(&self.pool))
    }

    fn list_incidents(&self) -> BoxFuture<'_, StoreResult<Vec<IncidentRecord>>> {
        Box::pin(listings::incidents(&self.pool))
    }

    fn list_events(&self) -> BoxFuture<'_, StoreResult<Vec<EventRecord>>> {
        Box::pin(listings::events(&self.pool))
    }

    fn export_events(&self) -> BoxFuture<'_, StoreResult<Vec<ExportedEvent>>> {
        Box::pin(listings::export(&self.pool))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.writer.close().await;
            self.pool.close().await;
        })
    }
}
