//! The audit entry and the live-log row an audited write adds to its own transaction, both
//! under the log lock.
//!
//! **Why an advisory lock and not a row lock.** Both logs need "one appender at a time, until
//! commit": the audit chain so that no two entries chain onto the same predecessor, the live
//! log so that its ids become visible in id order (an identity column hands out 10 and 11 to
//! two transactions that may commit 11 first; a console that then continued after 11 would
//! never see 10). `pg_advisory_xact_lock` gives exactly that: a lock on a number, taken by a
//! statement, held to the end of the transaction, released by commit or rollback (or by the
//! server when the session dies), never written to disk. A row lock would need a row that
//! exists before the first entry and is updated by every append — a write (and a dead tuple)
//! per live row only to lock it — and `LOCK TABLE` would also block readers of the logs. The
//! audit chain still keeps its head in a row (`audit_head`, so ids are never reused), but that
//! row is only ever touched under this lock.
//!
//! Deadlock freedom: the log lock is always the *last* lock a transaction takes (after its
//! device, token or incident row locks), and nothing row-locks after it, so no holder of the
//! log lock ever waits for another transaction's row.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, Row as _};
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use super::ms;
use crate::store::audit_chain::{self, AuditKey};
use crate::store::{StoreResult, format_ts};

/// The advisory lock key of the audit and live logs ("duress" in ASCII, then 1).
pub(super) const LOG_LOCK: i64 = 0x0064_7572_6573_7301;

/// Takes the log lock for the rest of the transaction (re-entrant within it).
pub(super) async fn lock(conn: &mut PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOG_LOCK)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Appends one audit entry, keyed with `key`; returns its id.
pub(super) async fn audit(
    conn: &mut PgConnection,
    key: &AuditKey,
    at: OffsetDateTime,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> StoreResult<i64> {
    lock(conn).await?;
    let head = sqlx::query("SELECT id, hash FROM audit_head")
        .fetch_one(&mut *conn)
        .await?;
    let head_id: i64 = head.try_get("id")?;
    let last = (head_id > 0)
        .then(|| head.try_get::<String, _>("hash"))
        .transpose()?;
    let (id, prev_hash) = audit_chain::next_after(last.map(|hash| (head_id, hash)));
    let at = ms(at);
    let at_text = format_ts(at);
    let hash = key.entry_hash(&prev_hash, id, &at_text, actor, action, subject, detail);
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor, action, subject, detail, prev_hash, hash, keyed)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, true)",
    )
    .bind(id)
    .bind(at)
    .bind(actor)
    .bind(action)
    .bind(subject)
    .bind(detail)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_head SET id = $1, hash = $2")
        .bind(id)
        .bind(&hash)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

/// The `LISTEN/NOTIFY` channel of the doorbell (docs/scale-out.md, "How the nodes share
/// work"): a transaction that appends live-log rows notifies it, so the console pumps of the
/// other receiver nodes re-read the log at once instead of at their safety-net poll.
pub(super) const DOORBELL_CHANNEL: &str = "duress_live";

/// Whether this store rings the doorbell. Muting is a test switch only
/// ([`crate::store::LiveStore::mute_doorbell`]): it stands for notifications lost on the way.
#[derive(Debug, Default)]
pub(super) struct Doorbell {
    muted: AtomicBool,
}

impl Doorbell {
    pub(super) fn mute(&self, muted: bool) {
        self.muted.store(muted, Ordering::SeqCst);
    }
}

/// Writes one live-log row (`payload`: a JSON object as text); returns its id.
///
/// Also queues the doorbell's notification, delivered by PostgreSQL at commit (never for a
/// rolled-back transaction). The payload is empty on purpose — the rows are the truth, the
/// notification only says "re-read" — and PostgreSQL delivers identical notifications of one
/// transaction once, so a transaction that appends several rows rings once. Heartbeats never
/// get here (they write no live rows): NOTIFY serialises committing notifiers on a
/// cluster-wide lock, which these transactions already are by the log lock above.
pub(super) async fn live(
    bell: &Doorbell,
    conn: &mut PgConnection,
    at: OffsetDateTime,
    kind: &str,
    incident_id: Option<Uuid>,
    payload: &str,
) -> StoreResult<i64> {
    lock(conn).await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO console_events (at, kind, incident_id, payload)
         VALUES ($1, $2, $3, $4::json) RETURNING id",
    )
    .bind(ms(at))
    .bind(kind)
    .bind(incident_id)
    .bind(payload)
    .fetch_one(&mut *conn)
    .await?;
    if !bell.muted.load(Ordering::SeqCst) {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(DOORBELL_CHANNEL)
            .execute(&mut *conn)
            .await?;
    }
    Ok(id)
}

/// Longest wait between attempts to (re)connect the doorbell's listener.
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The doorbell's listening side ([`crate::store::LiveStore::live_doorbell`]): `LISTEN` on a
/// connection of its own and poke `wake` for every notification, once right after each
/// (re)subscription (whatever committed before the `LISTEN` took effect is read then), and
/// after every reconnect (notifications sent while the connection was down are lost for good:
/// the pump re-reads from its last id). Runs until dropped; the connection closes with it.
pub(super) async fn listen(options: PgConnectOptions, name: String, wake: Arc<Notify>) {
    // A pool of one only because `PgListener` reconnects through a pool: this connection is
    // nobody else's, and it is dropped (closed) with this future.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options);
    let mut backoff = Duration::from_millis(100);
    loop {
        match subscribe(&pool).await {
            Ok(mut listener) => {
                backoff = Duration::from_millis(100);
                wake.notify_one();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => wake.notify_one(),
                        Ok(None) => {
                            tracing::warn!(
                                database = %name,
                                "live doorbell: connection lost and re-established; re-reading \
                                 the live log"
                            );
                            wake.notify_one();
                        }
                        Err(e) => {
                            tracing::warn!(database = %name, error = %e,
                                "live doorbell: listening failed; consoles fall back to the \
                                 safety-net poll until it reconnects");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(database = %name, error = %e,
                "live doorbell: cannot listen; consoles fall back to the safety-net poll"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
        // After a failure: anything may have been missed.
        wake.notify_one();
    }
}

async fn subscribe(pool: &sqlx::PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // The pool is this listener's alone and never closed by anyone else.
    listener.ignore_pool_close_event(true);
    listener.listen(DOORBELL_CHANNEL).await?;
    Ok(listener)
}

/// The first key of the two-key advisory locks of cluster leases ("Du"); the second is
/// `hashtext(name)`. PostgreSQL keeps two-key and one-key (the log lock, sqlx's migrator)
/// advisory locks apart, so they never collide with those. Two lease names hashing alike (a
/// 32-bit hash over a handful of names: the sweep and the SIEM sinks; odds about 1 in 10^8)
/// would make them one lock, so the second kind of work would not run while the first is held
/// (each lease has its own session): a liveness risk, never two holders. Rename a SIEM sink if
/// its feed never starts and no node logged "cluster lease taken" for `siem:<name>`.
const LEASE_CLASS: i32 = 0x4475;

/// A cluster lease ([`crate::store::ClusterLease`]) on PostgreSQL: `pg_try_advisory_lock` on
/// a connection of its own, kept open while the lease lives (also while not held, so trying
/// again is one statement, not a new session). Never unlocked by hand: it ends with the
/// session — the connection dropped with the lease, closed by a dying process's kernel, or
/// cut by the server.
#[derive(Debug)]
pub(super) struct Lease {
    options: PgConnectOptions,
    /// The database, for messages (no password).
    database: String,
    name: String,
    conn: Option<PgConnection>,
    held: bool,
}

impl Lease {
    pub(super) fn new(options: PgConnectOptions, database: String, name: &str) -> Self {
        Lease {
            options,
            database,
            name: name.to_owned(),
            conn: None,
            held: false,
        }
    }

    async fn hold_impl(&mut self) -> crate::store::StoreResult<bool> {
        use sqlx::Connection as _;
        let result = async {
            if self.conn.is_none() {
                self.held = false;
                // Bounded like the pools' acquire: an unreachable server skips this round.
                let connect = PgConnection::connect_with(&self.options);
                self.conn = Some(
                    tokio::time::timeout(super::LOCK_TIMEOUT, connect)
                        .await
                        .map_err(|_| sqlx::Error::PoolTimedOut)??,
                );
            }
            let Some(conn) = self.conn.as_mut() else {
                return Ok(false);
            };
            if self.held {
                // Held for as long as this session lives: one round trip proves it does.
                conn.ping().await?;
            } else {
                self.held = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
                    .bind(LEASE_CLASS)
                    .bind(&self.name)
                    .fetch_one(&mut *conn)
                    .await?;
            }
            Ok::<bool, sqlx::Error>(self.held)
        }
        .await;
        result.map_err(|e| {
            // Whatever failed, this session can no longer be trusted to hold the lock: drop
            // it (closing it releases the lock if the server still had it) and start over.
            self.conn = None;
            self.held = false;
            crate::store::StoreError::Unavailable(format!(
                "cluster lease {} on {}: {e}",
                self.name, self.database
            ))
        })
    }
}

impl crate::store::ClusterLease for Lease {
    fn hold(&mut self) -> crate::store::StoreFuture<'_, bool> {
        Box::pin(self.hold_impl())
    }
}
