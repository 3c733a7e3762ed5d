//! The audit log: append-only and hash-chained. Each row stores the previous row's hash and
//! `hash = HMAC-SHA256(audit key, prev_hash || canonical content)` (legacy rows: SHA-256),
//! where the canonical content is the JSON array `[id, at, actor, action, subject, detail]`. Changing, inserting or deleting a row in
//! the middle breaks the chain at that row; `duress-receiver audit verify` names it.
//!
//! Entries are appended by the store inside the transaction of the change they record, so a
//! change without its entry (or an entry without its change) cannot be committed; the chain
//! itself is [`crate::store::audit_chain`]. This module is the audit page.

use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use std::sync::Arc;

use super::error::ConsoleResult;
use super::pages::{Layout, Ts, render};
use super::{Console, CurrentUser};
pub use crate::store::audit_chain::{ChainBreak, GENESIS};
use crate::store::{Store, StoreResult};

/// Recomputes the whole chain under the store's key: `Ok(entries)` or the first bad entry.
pub async fn verify_chain(store: &dyn Store) -> StoreResult<Result<usize, ChainBreak>> {
    crate::store::verify_audit(store, None).await
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
) -> ConsoleResult<Response> {
    let chain = verify_chain(console.store.as_ref()).await?;
    let rows = console
        .store
        .recent_audit(500)
        .await?
        .into_iter()
        .map(|e| AuditRow {
            id: e.id,
            at: Ts::from_text(&e.at),
            actor: e.actor,
            action: e.action,
            subject: e.subject,
            detail: e.detail,
            hash: e.hash.chars().take(12).collect(),
        })
        .collect();
    Ok(render(&AuditPage {
        layout: Layout::new(&user, "audit", "Audit log"),
        chain,
        rows,
    }))
}
