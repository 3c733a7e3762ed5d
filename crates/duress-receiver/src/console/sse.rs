//! `GET /events`: the console's live stream (Server-Sent Events).
//!
//! On connect the client names what it has already seen: the `Last-Event-ID` header (sent by
//! EventSource on its own reconnects) or `?after=N` (the id the page was rendered at). We
//! subscribe to the live feed *first*, then replay every row after that id from the table,
//! then forward live frames, skipping ids already sent. A client that falls too far behind the
//! broadcast (lagged) re-reads from the table. Nothing committed can therefore be missed: a row
//! is either in the replay (committed before the read) or arrives on the feed (after it).
//! A comment line every 15 s keeps proxies from closing an idle stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::Console;
use super::live::{self, Frame};

const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
pub struct After {
    after: Option<i64>,
}

pub async fn stream(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(query): Query<After>,
) -> Response {
    let from_header = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = match (from_header, query.after) {
        (Some(h), _) => h,
        (None, Some(q)) => q,
        // A client that names nothing gets live frames only.
        (None, None) => console.store.live_latest_id().await.unwrap_or(0),
    };
    let subscription = console.feed.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(forward(console, after, subscription, tx));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut response = Body::from_stream(body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tells nginx-style proxies not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Replays, then forwards live frames, until the client goes away.
async fn forward(
    console: Arc<Console>,
    mut last: i64,
    mut subscription: broadcast::Receiver<Frame>,
    tx: mpsc::Sender<Bytes>,
) {
    // Tells EventSource how soon to reconnect by itself (our JS also has its own backoff).
    if tx
        .send(Bytes::from_static(b"retry: 1000\n\n"))
        .await
        .is_err()
    {
        return;
    }
    if !catch_up(&console, &mut last, &tx).await {
        return;
    }
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.tick().await;
    let mut closing = console.closing.subscribe();
    loop {
        if *closing.borrow_and_update() {
            return;
        }
        tokio::select! {
            _ = closing.changed() => return,
            received = subscription.recv() => match received {
                Ok(frame) => {
                    if frame.id <= last {
                        continue;
                    }
                    // A gap means the pump sent rows before we subscribed that the replay
                    // missed (committed between our read and our subscribe): read them.
                    if frame.id > last + 1 && !catch_up(&console, &mut last, &tx).await {
                        return;
                    }
                    if frame.id <= last {
                        continue;
                    }
                    last = frame.id;
                    if tx.send(frame.bytes).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if !catch_up(&console, &mut last, &tx).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = keep_alive.tick() => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
        }
    }
}

/// Sends every stored row after `last`; `false` when the client is gone or the store failed
/// (the client reconnects with its Last-Event-ID and tries again).
async fn catch_up(console: &Console, last: &mut i64, tx: &mpsc::Sender<Bytes>) -> bool {
    loop {
        let frames = match live::replay(console.store.as_ref(), *last).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "console stream: replay failed");
                return false;
            }
        };
        let full = frames.len() == live::REPLAY_BATCH as usize;
        for f in frames {
            *last = f.id;
            if tx.send(f.bytes).await.is_err() {
                return false;
            }
        }
        if !full {
            return true;
        }
    }
}
