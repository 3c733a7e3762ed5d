//! The live-update log and its fan-out.
//!
//! Every change officers must see writes one live-log row **in the transaction of the change**
//! (the store does it: see [`crate::store::LiveStore`]). After COMMIT the writer pokes a [`Notify`]; one pump task per
//! receiver ([`run_pump`]) then reads the new rows in id order, formats each once as an SSE
//! frame (`id: N`) and broadcasts it as [`Bytes`] (reference-counted: every console gets the
//! same buffer, no per-client copy).
//!
//! Rows written by another process — another receiver node on the same PostgreSQL database,
//! an admin command — ring the store's doorbell ([`crate::store::LiveStore::live_doorbell`]:
//! `LISTEN/NOTIFY` on PostgreSQL), which pokes the same [`Notify`]; the pump then re-reads
//! from its last seen id. The rows are the truth, the doorbell only says "look": the pump also
//! re-reads every [`crate::store::LiveStore::live_safety_net`] (1 s on SQLite, 5 s on
//! PostgreSQL), so a lost notification costs latency, never an update (docs/scale-out.md).
//!
//! A console that was disconnected replays from the table after its `Last-Event-ID`
//! ([`replay`]), so the broadcast may drop frames for a slow client without anything being
//! lost: see [`super::sse`].

use std::sync::Arc;

use axum::body::Bytes;
use tokio::sync::{Notify, broadcast};

use crate::store::{LiveRow, Store, StoreResult, format_ts};

/// Frames a slow console may fall behind before it re-reads from the table.
const CHANNEL_CAPACITY: usize = 1024;
/// At most this many rows per replay read; the client then continues from the last id.
pub const REPLAY_BATCH: u32 = 500;

/// One live-log row, ready to send.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: i64,
    /// `id: N\ndata: {...}\n\n`
    pub bytes: Bytes,
}

fn frame(row: &LiveRow) -> Frame {
    // The payload is JSON we wrote ourselves (one line); the envelope adds what the board needs.
    let payload: serde_json::Value = serde_json::from_str(&row.payload).unwrap_or_default();
    let data = serde_json::json!({
        "id": row.id,
        "at": format_ts(row.at),
        "kind": row.kind,
        "incident_id": row.incident_id,
        "payload": payload,
    });
    Frame {
        id: row.id,
        bytes: Bytes::from(format!("id: {}\ndata: {data}\n\n", row.id)),
    }
}

/// Rows after `after`, in id order, at most [`REPLAY_BATCH`].
pub async fn replay(store: &dyn Store, after: i64) -> StoreResult<Vec<Frame>> {
    Ok(store
        .live_after(after, REPLAY_BATCH)
        .await?
        .iter()
        .map(frame)
        .collect())
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

/// Reads new rows after each poke (this process's commits, the doorbell) or each safety-net
/// interval, and broadcasts them. Runs until aborted; the doorbell (and its connection) is
/// dropped with it.
pub async fn run_pump(store: Arc<dyn Store>, feed: LiveFeed) {
    let wake: Arc<Notify> = store.live_wake();
    let doorbell = store.live_doorbell(wake.clone());
    // Both run for ever; `join!` polls them on this one task.
    tokio::join!(doorbell, pump(store, feed, wake));
}

async fn pump(store: Arc<dyn Store>, feed: LiveFeed, wake: Arc<Notify>) {
    let net = store.live_safety_net();
    // Read before the doorbell is listening, on purpose: its first ring comes once it
    // listens, and re-reads from here whatever committed in between.
    let mut last = store.live_latest_id().await.unwrap_or(0);
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(net) => {}
        }
        loop {
            match replay(store.as_ref(), last).await {
                Ok(frames) => {
                    let full = frames.len() == REPLAY_BATCH as usize;
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
                    tracing::warn!(error = %e, "console live pump: reading the live log failed");
                    break;
                }
            }
        }
    }
}
