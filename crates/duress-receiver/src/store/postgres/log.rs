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

use sqlx::{PgConnection, Row as _};
use time::OffsetDateTime;
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

/// Writes one live-log row (`payload`: a JSON object as text); returns its id.
pub(super) async fn live(
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
    Ok(id)
}
