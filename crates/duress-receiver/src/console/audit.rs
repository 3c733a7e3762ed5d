//! The audit log: append-only and hash-chained. Each row stores the previous row's hash and
//! `hash = SHA-256(prev_hash || canonical content)`, where the canonical content is the JSON
//! array `[id, at, actor, action, subject, detail]`. Changing, inserting or deleting a row in
//! the middle breaks the chain at that row; `duress-receiver audit verify` names it.
//!
//! Entries are appended inside the transaction of the change they record, so a change without
//! its entry (or an entry without its change) cannot be committed.

use std::path::Path;

use anyhow::Context as _;
use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use sha2::{Digest as _, Sha256};
use sqlx::{Row as _, SqliteConnection, SqlitePool};
use std::sync::Arc;
use time::OffsetDateTime;

use super::pages::{Layout, Ts, render, server_error};
use super::{Console, CurrentUser};
use crate::store::format_ts;

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn entry_hash(
    prev_hash: &str,
    id: i64,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> String {
    let canonical = serde_json::json!([id, at, actor, action, subject, detail]).to_string();
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// Appends one entry; the caller's transaction (opened with `BEGIN IMMEDIATE`, so appends are
/// serialised) commits it together with the change it records.
pub(crate) async fn append(
    conn: &mut SqliteConnection,
    at: OffsetDateTime,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<i64, sqlx::Error> {
    let last = sqlx::query("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let (id, prev_hash) = match last {
        Some(row) => (
            row.try_get::<i64, _>("id")? + 1,
            row.try_get::<String, _>("hash")?,
        ),
        None => (1, GENESIS.to_owned()),
    };
    let at = format_ts(at);
    let hash = entry_hash(&prev_hash, id, &at, actor, action, subject, detail);
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

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The first entry that does not verify.
    pub id: i64,
    pub reason: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "audit chain broken at entry {}: {}",
            self.id, self.reason
        )
    }
}

/// Recomputes the whole chain: `Ok(entries)` or the first bad entry.
pub async fn verify_chain(pool: &SqlitePool) -> anyhow::Result<Result<usize, ChainBreak>> {
    let rows = sqlx::query("SELECT * FROM audit_log ORDER BY id")
        .fetch_all(pool)
        .await
        .context("reading the audit log")?;
    let mut prev = GENESIS.to_owned();
    for (expected_id, row) in (1i64..).zip(rows.iter()) {
        let id: i64 = row.try_get("id")?;
        let get = |c: &str| row.try_get::<String, _>(c);
        let (at, actor, action, subject, detail, prev_hash, hash) = (
            get("at")?,
            get("actor")?,
            get("action")?,
            get("subject")?,
            get("detail")?,
            get("prev_hash")?,
            get("hash")?,
        );
        let broken = |reason: &str| {
            Ok(Err(ChainBreak {
                id,
                reason: reason.to_owned(),
            }))
        };
        if id != expected_id {
            return broken(&format!(
                "expected entry {expected_id} here (an entry was removed)"
            ));
        }
        if prev_hash != prev {
            return broken("prev_hash does not match the previous entry's hash");
        }
        if entry_hash(&prev_hash, id, &at, &actor, &action, &subject, &detail) != hash {
            return broken("content does not match its hash (the row was altered)");
        }
        prev = hash;
    }
    Ok(Ok(rows.len()))
}

/// `duress-receiver audit verify`: opens the store in `data_dir` and verifies the chain.
pub async fn verify_data_dir(data_dir: &Path) -> anyhow::Result<Result<usize, ChainBreak>> {
    let store = crate::store::SqliteStore::open(data_dir)
        .await
        .with_context(|| format!("opening the receiver store in {}", data_dir.display()))?;
    let result = verify_chain(store.pool()).await;
    crate::store::Store::close(&store).await;
    result
}

#[derive(Debug)]
pub struct AuditRow {
    pub id: i64,
    pub at: Ts,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
    pub hash: String,
}

#[derive(Debug, Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    chain: Result<usize, ChainBreak>,
    rows: Vec<AuditRow>,
}

/// `GET /audit` (admin): the chain's state and the latest entries.
pub async fn page(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> Response {
    let chain = match verify_chain(&console.pool).await {
        Ok(c) => c,
        Err(e) => return server_error(e),
    };
    let rows = match sqlx::query("SELECT * FROM audit_log ORDER BY id DESC LIMIT 500")
        .fetch_all(&console.pool)
        .await
    {
        Ok(rows) => rows,
        Err(e) => return server_error(e),
    };
    let rows = rows
        .iter()
        .map(|r| AuditRow {
            id: r.get("id"),
            at: Ts::from_text(&r.get::<String, _>("at")),
            actor: r.get("actor"),
            action: r.get("action"),
            subject: r.get("subject"),
            detail: r.get("detail"),
            hash: r.get::<String, _>("hash").chars().take(12).collect(),
        })
        .collect();
    render(&AuditPage {
        layout: Layout::new(&user, "audit", "Audit log"),
        chain,
        rows,
    })
}
