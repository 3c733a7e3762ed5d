//! The PostgreSQL store: for several receivers sharing one database (PostgreSQL 15, sqlx).
//!
//! Every method is one transaction on a pooled connection (READ COMMITTED, PostgreSQL's
//! default). What SQLite gets from its single write lock, this backend gets from explicit locks,
//! each as narrow as the rule it protects:
//!
//! - **Per device** (`SELECT … FROM devices WHERE device_id = $1 FOR UPDATE`, the first
//!   statement of ingest, heartbeat and status changes): a device's events are grouped one at a
//!   time, so two presses arriving at once on two receivers never open two incidents, and the
//!   status that decides an event is the status at its commit. Different devices never wait for
//!   each other here.
//! - **Per incident** (`SELECT … FROM incidents … FOR UPDATE`): officers' actions and
//!   escalation read the incident's state under its row lock, so of two officers claiming at
//!   once the second sees the first's claim (`ClaimedBy`).
//! - **Per token** (`FOR UPDATE` on the token row, then `UPDATE … WHERE uses_left > 0`): a
//!   one-use token enrolls exactly one device however many enrollments race.
//! - **The log lock** ([`log::LOG_LOCK`], `pg_advisory_xact_lock`): every transaction that
//!   appends to the audit chain or to the live log takes it, as its last lock, right before
//!   those rows, and holds it to commit. See [`log`] for why an advisory lock.
//!
//! Idempotent ingest is `INSERT … ON CONFLICT (id) DO NOTHING RETURNING`, before anything
//! else of the event is written. Connection failures are [`StoreError::Unavailable`] (the agent
//! keeps its alarm and retries). Error messages name the database by [`redact_url`], never with
//! its password.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use duress_core::{DeviceStatus, EventKind, Source, VerifyingKey};
use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Connection as _, Postgres, Row as _, Transaction};
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{
    DeviceKey, EnrollOutcome, EnrollRequest, HeartbeatRecorded, HeartbeatUpdate, IngestOutcome,
    IngestStore, NewEvent, Store, StoreError, StoreFuture, StoreResult, StoredEvent,
};

mod accounts;
mod incidents;
mod ingest;
mod log;
mod outbox;
mod stations;

/// How long a statement waits for a row lock before the store reports itself unavailable
/// (SQLite's busy timeout), and how long a request waits for a pooled connection.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per receiver.
const MAX_CONNECTIONS: u32 = 16;

/// The shared store on a PostgreSQL server.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Poked after every commit of this process that wrote a `console_events` row. Rows other
    /// receivers write are found by the console's pump at its next poll.
    wake: Arc<Notify>,
    /// Verified devices' public keys (see [`super::rules::KeyCache`]).
    keys: Arc<super::rules::KeyCache>,
    /// The URL without its password, for messages.
    name: String,
    /// What a new incident enqueues in the outbox.
    planner: Arc<super::PlannerSlot>,
}

/// The URL with its password (in the user info or a `password=` parameter) replaced by `***`,
/// for messages and logs.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{host}", &userinfo[..colon]),
                None => authority.to_owned(),
            }
        }
        None => authority.to_owned(),
    };
    let tail = match tail.find('?') {
        Some(q) => {
            let (path, query) = tail.split_at(q + 1);
            let (query, fragment) = match query.find('#') {
                Some(h) => query.split_at(h),
                None => (query, ""),
            };
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{path}{}{fragment}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

/// Parses a connection URL. libpq's form for a user on a Unix socket,
/// `postgres://USER@/DB?host=/socket/dir` (a user and no host), is not a URL the `url` crate
/// (and so sqlx) accepts ("empty host"): it is parsed as `postgres:///DB?host=…` with the user
/// (and password, if any) set afterwards.
fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let Some(i) = url.find("://") else {
        return PgConnectOptions::from_str(url);
    };
    let (scheme, rest) = (&url[..i + 3], &url[i + 3..]);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, "")) if !userinfo.is_empty() => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            let mut options = PgConnectOptions::from_str(&format!("{scheme}{tail}"))?
                .username(&percent_decode(user));
            if let Some(p) = password {
                options = options.password(&percent_decode(p));
            }
            Ok(options)
        }
        _ => PgConnectOptions::from_str(url),
    }
}

/// `%XX` escapes of a URL's user info, decoded (invalid escapes are kept as written).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:pass@host/db`, or a Unix socket:
    /// `postgres://USER@/DB?host=/socket/dir`) and applies pending migrations.
    ///
    /// Two receivers starting at once are safe: sqlx's migrator takes a session-level
    /// `pg_advisory_lock` (keyed by the database name) before it even creates its
    /// `_sqlx_migrations` table and releases it when done, so the second waits, then finds every
    /// migration applied (checked in sqlx-core 0.9 `Migrator::run_direct` and sqlx-postgres
    /// `migrate.rs`). The migrations run on a connection of their own that is closed afterwards,
    /// so even a failed run cannot leave that session lock held on a pooled connection; that
    /// connection has no `lock_timeout`, so a receiver waiting for a long migration waits.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let name = redact_url(url);
        let options = connect_options(url)
            .map_err(|e| StoreError::Unavailable(format!("database URL {name}: {e}")))?
            .application_name("duress-receiver");
        let unreachable =
            |e: sqlx::Error| StoreError::Unavailable(format!("connecting to {name}: {e}"));

        let mut migrating = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(unreachable)?;
        let migrated = sqlx::migrate!("./migrations/postgres")
            .run(&mut migrating)
            .await
            .map_err(|e| StoreError::Migrate(format!("{name}: {e}")));
        let _ = migrating.close().await;
        migrated?;

        let lock_timeout = format!("{}ms", LOCK_TIMEOUT.as_millis());
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(LOCK_TIMEOUT)
            .connect_with(options.options([("lock_timeout", lock_timeout.as_str())]))
            .await
            .map_err(unreachable)?;
        Ok(PostgresStore {
            pool,
            wake: Arc::new(Notify::new()),
            keys: Arc::default(),
            name,
            planner: Arc::default(),
        })
    }

    /// The database, as messages name it (no password).
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// A read-only transaction whose statements all see one snapshot.
    async fn begin_snapshot(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?)
    }
}

/// Receiver time as stored: milliseconds, so a value reads back exactly as written.
fn ms(t: OffsetDateTime) -> OffsetDateTime {
    duress_core::clock::truncate_to_millis(t)
}

fn json<T: serde::de::DeserializeOwned>(row: &PgRow, column: &str) -> StoreResult<T> {
    Ok(row.try_get::<Json<T>, _>(column)?.0)
}

fn opt_json<T: serde::de::DeserializeOwned>(row: &PgRow, column: &str) -> StoreResult<Option<T>> {
    Ok(row.try_get::<Option<Json<T>>, _>(column)?.map(|j| j.0))
}

fn status(text: &str) -> StoreResult<DeviceStatus> {
    DeviceStatus::parse(text).ok_or_else(|| StoreError::Corrupt(format!("device status {text:?}")))
}

fn kind(text: &str) -> StoreResult<EventKind> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|e| StoreError::Corrupt(format!("event kind {text:?}: {e}")))
}

fn source(text: &str) -> StoreResult<Source> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|e| StoreError::Corrupt(format!("event source {text:?}: {e}")))
}

fn unsigned(column: &str, value: i64) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} is negative")))
}

fn opt_unsigned(row: &PgRow, column: &str) -> StoreResult<Option<u64>> {
    row.try_get::<Option<i64>, _>(column)?
        .map(|v| unsigned(column, v))
        .transpose()
}

async fn find_event<'e, E>(exec: E, id: Uuid) -> StoreResult<Option<StoredEvent>>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let row = sqlx::query(
        "SELECT device_id, incident_id, received_at, delay_ms, delayed FROM events WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(exec)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(StoredEvent {
        id,
        device_id: row.try_get("device_id")?,
        incident_id: row.try_get("incident_id")?,
        received_at: row.try_get("received_at")?,
        delay_ms: row.try_get("delay_ms")?,
        delayed: row.try_get("delayed")?,
    }))
}

impl IngestStore for PostgresStore {
    fn health(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query_scalar::<_, i32>("SELECT 1")
                .fetch_one(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn enroll(&self, request: EnrollRequest) -> StoreFuture<'_, EnrollOutcome> {
        Box::pin(self.enroll_impl(request))
    }

    fn device_key<'a>(&'a self, device_id: &'a str) -> StoreFuture<'a, Option<DeviceKey>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT public_jwk, status FROM devices WHERE device_id = $1")
                .bind(device_id)
                .fetch_optional(&self.pool)
                .await?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(DeviceKey {
                device_id: device_id.to_owned(),
                public_jwk: json(&row, "public_jwk")?,
                status: status(&row.try_get::<String, _>("status")?)?,
            }))
        })
    }

    fn verifying_key<'a>(&'a self, device_id: &'a str) -> StoreFuture<'a, Option<VerifyingKey>> {
        Box::pin(async move {
            self.keys
                .verifying_key(device_id, self.device_key(device_id))
                .await
        })
    }

    fn find_event(&self, id: Uuid) -> StoreFuture<'_, Option<StoredEvent>> {
        Box::pin(find_event(&self.pool, id))
    }

    fn ingest_event(
        &self,
        event: NewEvent,
        grouping_window: Duration,
    ) -> StoreFuture<'_, IngestOutcome> {
        Box::pin(self.ingest_impl(event, grouping_window))
    }

    fn record_heartbeat(&self, update: HeartbeatUpdate) -> StoreFuture<'_, HeartbeatRecorded> {
        Box::pin(self.heartbeat_impl(update))
    }
}

impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgresql"
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.pool.close())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_url_is_named_without_its_password() {
        assert_eq!(
            redact_url("postgres://duress:s3cr%40t@db.example/duress"),
            "postgres://duress:***@db.example/duress"
        );
        // A password holding '@' and ':' (unencoded): everything up to the last '@' goes.
        assert_eq!(
            redact_url("postgresql://u:pa:ss@w@db:5432/x?sslmode=require"),
            "postgresql://u:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u@db/x?password=hunter2&sslmode=verify-full"),
            "postgres://u@db/x?password=***&sslmode=verify-full"
        );
        assert_eq!(
            redact_url("postgres://u@/x?host=/run/pg&PASSWORD=hunter2#frag"),
            "postgres://u@/x?host=/run/pg&PASSWORD=***#frag"
        );
    }

    #[test]
    fn a_user_on_a_unix_socket_is_understood() {
        let o = super::connect_options("postgres://duress@/receiver?host=/run/postgresql").unwrap();
        assert_eq!(o.get_username(), "duress");
        assert_eq!(o.get_database(), Some("receiver"));
        assert_eq!(
            o.get_socket().map(|p| p.to_str().unwrap()),
            Some("/run/postgresql")
        );
        let o = super::connect_options("postgres://d%40x:p%3Aw@/db?host=/tmp").unwrap();
        assert_eq!(o.get_username(), "d@x");
        let o = super::connect_options("postgres://u:pw@db.example:5433/x").unwrap();
        assert_eq!(o.get_host(), "db.example");
        assert_eq!(o.get_port(), 5433);
        assert_eq!(o.get_username(), "u");
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        for url in [
            "postgres://postgres@/duress?host=/tmp/sock",
            "postgres://db.example/duress",
            "postgres:///duress",
            "not a url",
            "",
        ] {
            assert_eq!(redact_url(url), url);
        }
        assert!(!redact_url("postgres://a:hunter2@h/d").contains("hunter2"));
    }
}
