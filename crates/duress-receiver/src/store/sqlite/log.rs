//! The audit entry and the live-log row every audited write adds to its own transaction.

use sqlx::{Row as _, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::{StoreResult, audit_chain, format_ts};

/// Appends one audit entry. The caller's transaction was opened with `BEGIN IMMEDIATE`, which
/// holds SQLite's single write lock: appends are serialised, so no two entries chain onto the
/// same predecessor.
pub(super) async fn audit(
    conn: &mut SqliteConnection,
    at: OffsetDateTime,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> StoreResult<i64> {
    let last = sqlx::query("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| Ok::<_, sqlx::Error>((row.try_get::<i64, _>("id")?, row.try_get("hash")?)))
        .transpose()?;
    let (id, prev_hash) = audit_chain::next_after(last);
    let at = format_ts(at);
    let hash = audit_chain::entry_hash(&prev_hash, id, &at, actor, action, subject, detail);
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor, action, subject, detail, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(&at)
    .bind(actor)
    .bind(action)
    .bind(subject)
    .bind(detail)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// Writes one live-log row; the caller's transaction commits it with the change.
pub(super) async fn live(
    conn: &mut SqliteConnection,
    at: OffsetDateTime,
    kind: &str,
    incident_id: Option<Uuid>,
    payload: &serde_json::Value,
) -> StoreResult<i64> {
    let id: i64 = sqlx::query_scalar(super::LIVE_INSERT)
        .bind(format_ts(at))
        .bind(kind)
        .bind(incident_id.map(|i| i.to_string()))
        .bind(payload.to_string())
        .fetch_one(&mut *conn)
        .await?;
    Ok(id)
}
