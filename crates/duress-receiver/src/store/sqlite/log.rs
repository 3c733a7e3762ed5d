//! The audit entry and the live-log row every audited write adds to its own transaction.

use sqlx::{Row as _, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::audit_chain::{self, AuditKey};
use crate::store::{StoreResult, format_ts};

/// Appends one audit entry, keyed with `key`. The caller's transaction was opened with
/// `BEGIN IMMEDIATE`, which holds SQLite's single write lock: appends are serialised, so no two
/// entries chain onto the same predecessor. The next id comes from `audit_head`, never from
/// `MAX(id)`, so the ids of deleted entries are never handed out again.
pub(super) async fn audit(
    conn: &mut SqliteConnection,
    key: &AuditKey,
    at: OffsetDateTime,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> StoreResult<i64> {
    let head = sqlx::query("SELECT id, hash FROM audit_head WHERE only_row = 1")
        .fetch_one(&mut *conn)
        .await?;
    let head_id: i64 = head.try_get("id")?;
    let last = (head_id > 0)
        .then(|| head.try_get::<String, _>("hash"))
        .transpose()?;
    let (id, prev_hash) = audit_chain::next_after(last.map(|hash| (head_id, hash)));
    let at = format_ts(at);
    let hash = key.entry_hash(&prev_hash, id, &at, actor, action, subject, detail);
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor, action, subject, detail, prev_hash, hash, keyed)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
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
    sqlx::query("UPDATE audit_head SET id = ?, hash = ? WHERE only_row = 1")
        .bind(id)
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
