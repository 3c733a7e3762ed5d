//! `GET /events`: the console's live stream (Server-Sent Events).
//!
//! On connect the client names what it has already seen: the `Last-Event-ID` header (sent by
//! EventSource on its own reconnects) or `?after=N` (the id the page was rendered at). We
//! subscribe to the live feed *first*, then replay every row after that id from the table,
//! then forward live frames, skipping ids already sent. A client that falls too far behind the
//! broadcast (lagged) re-reads from the table. Nothing committed can therefore be missed: a row
//! is either in the replay (committed before the read) or arrives on the feed (after it).
//! A comment line every `live_keep_alive` (15 s) keeps proxies from closing an idle stream;
//! at each one the stream also checks its session, and ends when the session was ended,
//! expired or its account disabled (so a signed-out or disabled officer's open board stops
//! receiving alarms within that interval). It also tells the page, at connect and at each
//! keep-alive, how long its session has left (`event: session`): the page's expiry warning and
//! its "stream silent" check count on it (docs/console.md).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::live::{self, Frame};
use super::{Console, sessions};

#[derive(Debug, Deserialize)]
pub struct After {
    after: Option<i64>,
}

/// Who a stream is for: an officer's session (its id hash) or a paired duty display.
#[derive(Debug, Clone)]
enum Viewer {
    Session(String),
    Display(i64),
}

pub async fn stream(
    State(console): State<Arc<Console>>,
    axum::Extension(user): axum::Extension<super::CurrentUser>,
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
    // The guard let this request in with a valid session or an active display: this is it.
    let viewer = match user.display {
        Some(id) => Viewer::Display(id),
        None => Viewer::Session(
            sessions::session_cookie(&headers)
                .ok()
                .flatten()
                .map(|id| sessions::hash_id(&id))
                .unwrap_or_default(),
        ),
    };
    let subscription = console.feed.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(forward(console, viewer, after, subscription, tx));
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
    viewer: Viewer,
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
    // The trouble banner (`notify::watch`): its state now, then every change. No `id:` line,
    // so it never moves the client's Last-Event-ID. Always the first frame after the replay:
    // the page takes it as "caught up" (live frames after it may raise a browser notification,
    // replayed ones never do; console.js).
    let mut trouble = console.watchdog.subscribe();
    let mut trouble_open = true;
    let now = trouble.borrow_and_update().clone();
    if tx.send(trouble_frame(&now)).await.is_err() {
        return;
    }
    let keep_alive_every: Duration = console.settings.live_keep_alive;
    // The session's remaining time and the keep-alive interval, so the page can warn before
    // the session ends and knows how long a silence means the stream is down.
    // Subscribed before the first check, so a revocation in between is not missed.
    let mut revoked = console.display_revoked.subscribe();
    match viewer_state(&console, &viewer, keep_alive_every).await {
        Ok(Some(frame)) => {
            if tx.send(frame).await.is_err() {
                return;
            }
        }
        Ok(None) => return,
        Err(e) => tracing::warn!(error = %e, "console stream: session check failed"),
    }
    let mut keep_alive = tokio::time::interval(keep_alive_every);
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
                match viewer_state(&console, &viewer, keep_alive_every).await {
                    // The page's countdown to its warning, corrected at every keep-alive.
                    Ok(Some(frame)) => {
                        if tx.send(frame).await.is_err() {
                            return;
                        }
                    }
                    // Ended, expired or disabled: dropping `tx` ends the response body.
                    Ok(None) => return,
                    // A store hiccup is not a sign-out: keep streaming, ask again next time.
                    Err(e) => tracing::warn!(error = %e, "console stream: session check failed"),
                }
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
            }
            changed = trouble.changed(), if trouble_open => {
                if changed.is_err() {
                    // The watchdog is gone: stop listening to it, keep forwarding alarms.
                    trouble_open = false;
                    continue;
                }
                let lines = trouble.borrow_and_update().clone();
                if tx.send(trouble_frame(&lines)).await.is_err() {
                    return;
                }
            }
            // This display was revoked: its stream ends now, not at the next keep-alive.
            gone = revoked.recv(), if matches!(viewer, Viewer::Display(_)) => match gone {
                Ok(id) if matches!(viewer, Viewer::Display(mine) if mine == id) => return,
                Ok(_) => {}
                // Missed some: ask the store whether this display is one of them.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Viewer::Display(id) = viewer
                        && !super::displays::still_active(console.store.as_ref(), id).await.unwrap_or(true)
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {}
            },
            () = tx.closed() => return,
        }
    }
}

/// The `event: session` frame for this viewer, or `None` when its session is over (ended,
/// expired, disabled) or its display no longer active.
async fn viewer_state(
    console: &Console,
    viewer: &Viewer,
    keep_alive: Duration,
) -> crate::store::StoreResult<Option<Bytes>> {
    match viewer {
        Viewer::Session(id_hash) => {
            Ok(
                sessions::remaining(console.store.as_ref(), id_hash, &console.settings)
                    .await?
                    .map(|r| session_frame(r, keep_alive)),
            )
        }
        Viewer::Display(id) => {
            if !super::displays::still_active(console.store.as_ref(), *id).await? {
                return Ok(None);
            }
            let json =
                serde_json::json!({ "display": true, "keep_alive": keep_alive.as_secs_f64() });
            Ok(Some(Bytes::from(format!(
                "event: session\ndata: {json}\n\n"
            ))))
        }
    }
}

/// `event: session`: `{"expires_in": s, "extendable": b, "warn": s, "keep_alive": s}`. No
/// `id:` line (it never moves the client's Last-Event-ID).
fn session_frame(r: sessions::Remaining, keep_alive: Duration) -> Bytes {
    let json = serde_json::json!({
        "expires_in": r.expires_in,
        "extendable": r.extendable,
        "warn": r.warn,
        "keep_alive": keep_alive.as_secs_f64(),
    });
    Bytes::from(format!("event: session\ndata: {json}\n\n"))
}

/// `event: trouble` with the banner's lines as a JSON array (empty: all well).
fn trouble_frame(lines: &[String]) -> Bytes {
    let json = serde_json::to_string(lines).unwrap_or_else(|_| "[]".into());
    Bytes::from(format!("event: trouble\ndata: {json}\n\n"))
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
