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
//! - **The log lock** (`log::LOG_LOCK`, `pg_advisory_xact_lock`): every transaction that
//!   appends to the audit chain or to the live log takes it, as its last lock, right before
//!   those rows, and holds it to commit. See the `log` module for why an advisory lock.
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
    DeviceCredential, EnrollOutcome, EnrollRequest, HeartbeatRecorded, HeartbeatUpdate,
    IngestOutcome, IngestStore, NewEvent, Store, StoreError, StoreFuture, StoreResult, StoredEvent,
};

mod account_security;
mod accounts;
mod apikeys;
mod cluster;
mod displays;
mod floor_plans;
mod group_commit;
mod heartbeats;
mod incidents;
mod ingest;
mod log;
mod outbox;
mod phones;
mod retention;
mod sso;
mod stations;

/// How long a statement waits for a row lock before the store reports itself unavailable
/// (SQLite's busy timeout), and how long a request waits for a pooled connection.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a console pump re-reads the live log when no doorbell rang: the safety net for a
/// lost notification (issue 12: at most 5 s). Rows of other nodes normally arrive by the
/// doorbell within milliseconds, so this poll can be slow.
const LIVE_SAFETY_NET: Duration = Duration::from_secs(5);
/// Connections per receiver for the alarm path (enrollment, key look-ups, events).
const ALARM_CONNECTIONS: u32 = 8;
/// Connections per receiver for heartbeats.
const HEARTBEAT_CONNECTIONS: u32 = 12;
/// Connections per receiver for everything else (console, admin commands).
const CONSOLE_CONNECTIONS: u32 = 6;
/// Connections per receiver for reads of keys not cached yet (see `PostgresStore::key_pool`).
const KEY_LOOKUP_CONNECTIONS: u32 = 2;

/// The shared store on a PostgreSQL server.
///
/// **Separate pools, so no kind of traffic can take another's connections.** Measured before the
/// split (docs/PERFORMANCE.md, "Storage backends"): with one pool of 16, 2,000 stations'
/// heartbeats kept every connection busy and an alarm waited up to 1.1 s (p99) for one. Now
/// alarms have connections of their own, heartbeats theirs, and the console (whose queries can
/// be slow) its own, uncached key reads theirs (`key_pool`): 28 connections per receiver, so
/// three receivers fit in PostgreSQL's
/// default `max_connections = 100` (raise it for more nodes; docs/storage.md).
///
/// The heartbeat pool's sessions run with `synchronous_commit = off`: a heartbeat's commit
/// returns before its WAL record is flushed (PostgreSQL flushes it within `wal_writer_delay`,
/// 200 ms by default). A crash may lose the last fraction of a second of heartbeats — harmless,
/// the next one (≤ 60 s later) rewrites the same columns — but never corrupts anything, and
/// heartbeats stop competing with alarms for WAL flushes and, with a synchronous standby, never
/// wait for it. Alarms, enrollments and every audited change keep `synchronous_commit = on`.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// Console and admin work.
    pool: PgPool,
    /// Enrollment, key look-ups and event ingest.
    alarm_pool: PgPool,
    /// Heartbeats (`synchronous_commit = off`).
    heartbeat_pool: PgPool,
    /// Reads of a device's key and status that the cache could not answer. Their own two
    /// connections (issue 15): a flood of made-up kids, each a read, queues here and never
    /// takes an alarm's connection; an enrolled device's key is read once and then cached.
    /// Measured (tests/hostile_unauth.rs, debug build, 2 cores): with these reads on the
    /// alarm pool, an alarm under a 64-in-flight flood of made-up kids and tokens took 476 ms
    /// (median, 635 ms max); with this pool, 52 ms (79 ms max).
    key_pool: PgPool,
    /// This node's heartbeats, coalesced into one statement per batch (`heartbeats.rs`).
    heartbeats: heartbeats::Coalescer,
    /// Poked after every commit of this process that wrote a `console_events` row. Rows other
    /// receivers write are found by the console's pump at its next poll.
    wake: Arc<Notify>,
    /// Whether this store's live-log transactions ring the cross-node doorbell (`log::live`).
    doorbell: Arc<log::Doorbell>,
    /// How the doorbell's listener connects (the console pool's options, no `lock_timeout`
    /// needed: it only waits for notifications).
    listen_options: PgConnectOptions,
    /// Verified devices' public keys (see [`super::rules::KeyCache`]).
    keys: Arc<super::rules::KeyCache>,
    /// The URL without its password, for messages.
    name: String,
    /// The audit chain's key, from `DATA_DIR/audit-hmac.key` (see [`super::audit_chain`]).
    audit_key: super::audit_chain::AuditKey,
    /// What a new incident enqueues in the outbox.
    planner: Arc<super::PlannerSlot>,
    /// Event ingest, batched into one transaction per group of waiting events.
    ingest_writer: group_commit::IngestWriter,
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
    ///
    /// `data_dir` holds the audit key (`audit-hmac.key`, created on first use): receivers
    /// sharing a database must share that file.
    pub async fn connect(url: &str, data_dir: &std::path::Path) -> StoreResult<Self> {
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

        let listen_options = options.clone();
        let lock_timeout = format!("{}ms", LOCK_TIMEOUT.as_millis());
        let options = options.options([("lock_timeout", lock_timeout.as_str())]);
        let pool_of = |size: u32, options: PgConnectOptions| {
            PgPoolOptions::new()
                .max_connections(size)
                .acquire_timeout(LOCK_TIMEOUT)
                .connect_with(options)
        };
        let pool = pool_of(CONSOLE_CONNECTIONS, options.clone())
            .await
            .map_err(unreachable)?;
        let alarm_pool = pool_of(ALARM_CONNECTIONS, options.clone())
            .await
            .map_err(unreachable)?;
        let key_pool = pool_of(KEY_LOOKUP_CONNECTIONS, options.clone())
            .await
            .map_err(unreachable)?;
        let heartbeat_pool = pool_of(
            HEARTBEAT_CONNECTIONS,
            options.options([("synchronous_commit", "off")]),
        )
        .await
        .map_err(unreachable)?;
        let head: i64 = sqlx::query_scalar("SELECT id FROM audit_head")
            .fetch_one(&pool)
            .await?;
        super::create_private_dir(data_dir).map_err(|e| {
            StoreError::Unavailable(format!("creating {}: {e}", data_dir.display()))
        })?;
        let audit_key = super::audit_chain::AuditKey::load_or_create(data_dir, head + 1)?;
        let heartbeats = heartbeats::Coalescer::start(heartbeat_pool.clone());
        let planner: Arc<super::PlannerSlot> = Arc::default();
        let wake = Arc::new(Notify::new());
        let doorbell: Arc<log::Doorbell> = Arc::default();
        let ingest_writer = group_commit::IngestWriter::start(
            alarm_pool.clone(),
            planner.clone(),
            wake.clone(),
            doorbell.clone(),
        );
        Ok(PostgresStore {
            heartbeats,
            pool,
            alarm_pool,
            heartbeat_pool,
            key_pool,
            wake,
            doorbell,
            listen_options,
            keys: Arc::default(),
            name,
            audit_key,
            planner,
            ingest_writer,
        })
    }

    /// The database, as messages name it (no password).
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// A transaction on the alarm path's own connections.
    async fn begin_alarm(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.alarm_pool.begin().await?)
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
    // With its newest acknowledgement, if any (one statement: one snapshot).
    let row = sqlx::query(
        "SELECT e.device_id, e.incident_id, e.received_at, e.delay_ms, e.delayed,
                a.kid, a.public_jwk, a.sig
         FROM events e LEFT JOIN event_acks a ON a.event_id = e.id
         WHERE e.id = $1 ORDER BY a.n DESC NULLS LAST LIMIT 1",
    )
    .bind(id)
    .fetch_optional(exec)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let ack = match row.try_get::<Option<String>, _>("kid")? {
        Some(kid) => Some(duress_core::AckSignature {
            kid,
            jwk: serde_json::from_str(&row.try_get::<String, _>("public_jwk")?)
                .map_err(|e| StoreError::Corrupt(format!("event_acks.public_jwk: {e}")))?,
            sig: row.try_get("sig")?,
        }),
        None => None,
    };
    Ok(Some(StoredEvent {
        id,
        device_id: row.try_get("device_id")?,
        incident_id: row.try_get("incident_id")?,
        received_at: row.try_get("received_at")?,
        delay_ms: row.try_get("delay_ms")?,
        delayed: row.try_get("delayed")?,
        ack,
    }))
}

/// Stores an acknowledgement; the same key's signature twice is one row.
pub(super) async fn insert_ack(
    conn: &mut sqlx::PgConnection,
    event_id: Uuid,
    ack: &duress_core::AckSignature,
    at: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO event_acks (event_id, kid, public_jwk, sig, signed_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id, kid) DO NOTHING",
    )
    .bind(event_id)
    .bind(&ack.kid)
    .bind(serde_json::to_string(&ack.jwk).unwrap_or_default())
    .bind(&ack.sig)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
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

    fn device_credential<'a>(
        &'a self,
        device_id: &'a str,
    ) -> StoreFuture<'a, Option<DeviceCredential>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT public_jwk, status, retired_at IS NOT NULL AS retired FROM devices
                 WHERE device_id = $1",
            )
            .bind(device_id)
            .fetch_optional(&self.key_pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(DeviceCredential {
                device_id: device_id.to_owned(),
                public_jwk: json(&row, "public_jwk")?,
                status: status(&row.try_get::<String, _>("status")?)?,
                retired: row.try_get("retired")?,
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
        Box::pin(find_event(&self.alarm_pool, id))
    }

    fn ingest_grouped(
        &self,
        event: NewEvent,
        grouping: crate::incidents::Grouping,
    ) -> StoreFuture<'_, IngestOutcome> {
        Box::pin(self.ingest_impl(event, grouping))
    }

    fn record_heartbeat(&self, update: HeartbeatUpdate) -> StoreFuture<'_, HeartbeatRecorded> {
        Box::pin(self.heartbeat_impl(update))
    }

    fn record_ack<'a>(
        &'a self,
        event_id: Uuid,
        ack: &'a duress_core::AckSignature,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            insert_ack(&mut conn, event_id, ack, at).await
        })
    }
}

impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgresql"
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            tokio::join!(
                self.pool.close(),
                self.alarm_pool.close(),
                self.heartbeat_pool.close(),
                self.key_pool.close()
            );
        })
    }

    fn cluster_lease(&self, name: &str) -> Box<dyn super::ClusterLease> {
        Box::new(log::Lease::new(
            self.listen_options.clone(),
            self.name.clone(),
            name,
        ))
    }
}

/// The libpq environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`) naming the
/// database of `url`, for `pg_dump` and `pg_restore`: the password goes to the child's
/// environment (readable only by its user), never onto a command line that `ps` shows.
fn libpq_env(url: &str) -> StoreResult<Vec<(&'static str, String)>> {
    let name = redact_url(url);
    let options = connect_options(url)
        .map_err(|e| StoreError::Unavailable(format!("database URL {name}: {e}")))?;
    let mut env = vec![
        ("PGPORT", options.get_port().to_string()),
        ("PGUSER", options.get_username().to_owned()),
        ("PGAPPNAME", "duress-receiver backup".to_owned()),
    ];
    match options.get_socket() {
        Some(dir) => env.push(("PGHOST", dir.display().to_string())),
        None => env.push(("PGHOST", options.get_host().to_owned())),
    }
    if let Some(db) = options.get_database() {
        env.push(("PGDATABASE", db.to_owned()));
    }
    if let Some(password) = url_password(url) {
        env.push(("PGPASSWORD", password));
    }
    Ok(env)
}

/// The password of a `postgres://user:password@…` URL or its `password=` parameter, decoded.
fn url_password(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
    {
        return Some(percent_decode(password));
    }
    let query = rest.split_once('?')?.1.split('#').next()?;
    query
        .split('&')
        .find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| k.eq_ignore_ascii_case("password"))
        })
        .map(|(_, v)| percent_decode(v))
}

/// Runs a PostgreSQL client tool on the database of `url`; its stderr becomes the error.
fn run_pg_tool(tool: &str, url: &str, args: &[&std::ffi::OsStr]) -> StoreResult<()> {
    let out = std::process::Command::new(tool)
        .args(args)
        .envs(libpq_env(url)?)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            StoreError::Unavailable(format!(
                "running {tool} (apt-get install postgresql-client): {e}"
            ))
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "{tool} on {} failed: {}",
            redact_url(url),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A consistent online dump of the database of `url` into `dest`: `pg_dump --format=custom`,
/// which reads inside one REPEATABLE READ snapshot while receivers keep writing.
pub fn dump_to(url: &str, dest: &std::path::Path) -> StoreResult<()> {
    run_pg_tool(
        "pg_dump",
        url,
        &[
            "--format=custom".as_ref(),
            "--no-owner".as_ref(),
            "--no-privileges".as_ref(),
            "--file".as_ref(),
            dest.as_os_str(),
        ],
    )
}

/// Restores a [`dump_to`] dump into the database of `url` in one transaction (all or
/// nothing); `clean` first drops what the dump recreates.
pub fn restore_from(url: &str, src: &std::path::Path, clean: bool) -> StoreResult<()> {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--single-transaction".as_ref(),
        "--exit-on-error".as_ref(),
        "--no-owner".as_ref(),
        "--no-privileges".as_ref(),
    ];
    if clean {
        args.push("--clean".as_ref());
        args.push("--if-exists".as_ref());
    }
    let dbname = format!(
        "--dbname={}",
        libpq_env(url)?
            .into_iter()
            .find(|(k, _)| *k == "PGDATABASE")
            .map(|(_, v)| v)
            .unwrap_or_else(|| "postgres".into())
    );
    args.push(dbname.as_ref());
    args.push(src.as_os_str());
    run_pg_tool("pg_restore", url, &args)
}

/// Whether the database of `url` holds anything an operator would lose by overwriting it.
pub async fn holds_data(url: &str) -> StoreResult<bool> {
    let name = redact_url(url);
    let options = connect_options(url)
        .map_err(|e| StoreError::Unavailable(format!("database URL {name}: {e}")))?;
    let mut conn = sqlx::PgConnection::connect_with(&options)
        .await
        .map_err(|e| StoreError::Unavailable(format!("connecting to {name}: {e}")))?;
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('public.audit_log') IS NOT NULL")
        .fetch_one(&mut conn)
        .await?;
    let holds = if migrated {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM devices) OR EXISTS (SELECT 1 FROM events)
                 OR EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM audit_log)",
        )
        .fetch_one(&mut conn)
        .await?
    } else {
        false
    };
    let _ = conn.close().await;
    Ok(holds)
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
