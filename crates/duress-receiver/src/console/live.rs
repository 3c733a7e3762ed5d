//! The live-update log and its fan-out.
//!
//! Every change officers must see writes one `console_events` row **in the transaction of the
//! change** ([`record`]). After COMMIT the writer pokes a [`Notify`]; one pump task per
//! receiver ([`run_pump`]) then reads the new rows in id order, formats each once as an SSE
//! frame (`id: N`) and broadcasts it as [`Bytes`] (reference-counted: every console gets the
//! same buffer, no per-client copy). The pump also polls once a second, which picks up rows
//! written by another process (the admin command line) and is a safety net for a lost poke.
//!
//! A console that was disconnected replays from the table after its `Last-Event-ID`
//! ([`replay`]), so the broadcast may drop frames for a slow client without anything being
//! lost: see [`super::sse`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use sqlx::{Row as _, SqliteConnection, SqlitePool};
use time::OffsetDateTime;
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use crate::store::format_ts;

/// How often the pump looks for rows nobody poked it about.
const POLL: Duration = Duration::from_secs(1);
/// Frames a slow console may fall behind before it re-reads from the table.
const CHANNEL_CAPACITY: usize = 1024;
/// At most this many rows per replay read; the client then continues from the last id.
pub const REPLAY_BATCH: i64 = 500;

/// One `console_events` row, ready to send.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: i64,
    /// `id: N\ndata: {...}\n\n`
    pub bytes: Bytes,
}

/// The live-update row's insert, shared by [`record`] (sqlx, console actions) and the store's
/// group-commit writer (rusqlite, ingest).
pub(crate) const INSERT_ROW: &str = "INSERT INTO console_events (at, kind, incident_id, payload) VALUES (?1, ?2, ?3, ?4) RETURNING id";

/// The live-update row of a committed event: its kind and JSON payload.
pub(crate) fn event_row(
    ev: &crate::store::NewEvent,
    incident_id: Option<Uuid>,
) -> (&'static str, String) {
    use duress_core::EventKind;
    let kind = match (ev.kind, incident_id) {
        (EventKind::Test, _) => "selftest",
        (EventKind::Cancel, Some(_)) => "incident.cancel",
        (EventKind::Cancel, None) => "cancel",
        (EventKind::Duress, _) => "incident.press",
    };
    let payload = serde_json::json!({
        "event_id": ev.id,
        "device_id": ev.device_id,
        "label": ev.location.display_label(),
    });
    (kind, payload.to_string())
}

/// Writes one live-update row; the caller's transaction commits it with the change.
pub(crate) async fn record(
    conn: &mut SqliteConnection,
    at: OffsetDateTime,
    kind: &str,
    incident_id: Option<Uuid>,
    payload: &serde_json::Value,
) -> Result<i64, sqlx::Error> {
    let id: i64 = sqlx::query_scalar(INSERT_ROW)
        .bind(format_ts(at))
        .bind(kind)
        .bind(incident_id.map(|i| i.to_string()))
        .bind(payload.to_string())
        .fetch_one(&mut *conn)
        .await?;
    Ok(id)
}

fn frame(id: i64, at: &str, kind: &str, incident_id: Option<&str>, payload: &str) -> Frame {
    // The payload is JSON we wrote ourselves (one line); the envelope adds what the board needs.
    let payload: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    let data = serde_json::json!({
        "id": id,
        "at": at,
        "kind": kind,
        "incident_id": incident_id,
        "payload": payload,
    });
    Frame {
        id,
        bytes: Bytes::from(format!("id: {id}\ndata: {data}\n\n")),
    }
}

/// Rows after `after`, in id order, at most [`REPLAY_BATCH`].
pub async fn replay(pool: &SqlitePool, after: i64) -> Result<Vec<Frame>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, at, kind, incident_id, payload FROM console_events WHERE id > ? ORDER BY id LIMIT ?",
    )
    .bind(after)
    .bind(REPLAY_BATCH)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(frame(
                r.try_get("id")?,
                &r.try_get::<String, _>("at")?,
                &r.try_get::<String, _>("kind")?,
                r.try_get::<Option<String>, _>("incident_id")?.as_deref(),
                &r.try_get::<String, _>("payload")?,
            ))
        })
        .collect()
}

/// The id of the newest row (0 when none): a page rendered now has seen everything up to it.
pub async fn latest_id(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM console_events")
        .fetch_one(pool)
        .await
}

/// The broadcast side every SSE connection subscribes to.
#[derive(Debug, Clone)]
pub struct LiveFeed {
    sender: broadcast::Sender<Frame>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveFeed {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        LiveFeed { sender }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Frame> {
        self.sender.subscribe()
    }
}

/// Reads new rows after each poke (or each [`POLL`]) and broadcasts them. Runs until aborted.
pub async fn run_pump(pool: SqlitePool, wake: Arc<Notify>, feed: LiveFeed) {
    let mut last = latest_id(&pool).await.unwrap_or(0);
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
        loop {
            match replay(&pool, last).await {
                Ok(frames) => {
                    let full = frames.len() as i64 == REPLAY_BATCH;
                    for f in frames {
                        last = f.id;
                        // No subscriber is fine: nobody is watching right now.
                        let _ = feed.sender.send(f);
                    }
                    if !full {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "console live pump: reading console_events failed");
                    break;
                }
            }
        }
    }
}
