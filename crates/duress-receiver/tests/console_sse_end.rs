//! The console's live stream ends when its session does (issue 15 item 5): within one
//! keep-alive interval of a sign-out, and of the account being disabled, so a signed-out or
//! disabled officer's open board stops receiving alarms.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use common::console::{Console, add_user};
use duress_receiver::admin;
use duress_receiver::store::Role;

/// Short in this test (default 15 s) so the test is short.
const KEEP_ALIVE: Duration = Duration::from_secs(1);

async fn open_stream(c: &Console) -> reqwest::Response {
    let resp = c
        .client
        .get(format!("{}/events", c.base))
        .header("cookie", c.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

/// Reads the stream until it ends; returns how long that took (panics past `within`).
async fn ended_within(mut resp: reqwest::Response, within: Duration) -> Duration {
    let t = Instant::now();
    loop {
        match tokio::time::timeout(within.saturating_sub(t.elapsed()), resp.chunk()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) | Ok(Err(_)) => return t.elapsed(),
            Err(_) => panic!("the stream was still open after {within:?}"),
        }
    }
}

/// Proves the stream ends after sign-out and after the account is disabled, each within one
/// keep-alive interval (plus slack), while a stream whose session stays valid keeps going.
#[tokio::test]
async fn the_live_stream_ends_after_logout_and_after_the_account_is_disabled() {
    let h = Harness::start_with(|s| s.console.live_keep_alive = KEEP_ALIVE).await;
    add_user(h.data_dir(), "olga", Role::Officer).await;
    add_user(h.data_dir(), "oscar", Role::Officer).await;

    // Sign-out.
    let olga = Console::sign_in(&h, "olga").await;
    let stream = open_stream(&olga).await;
    let out = olga.post_form("/logout", &[]).await;
    assert_eq!(out.status, 303, "{}", out.text());
    let after_logout = ended_within(stream, KEEP_ALIVE * 3).await;

    // Disabled account (from the command line: its sessions are deleted).
    let oscar = Console::sign_in(&h, "oscar").await;
    let stream = open_stream(&oscar).await;
    // A valid session's stream outlives a few keep-alives.
    let alive = Console::sign_in(&h, "olga").await;
    let still = open_stream(&alive).await;
    admin::disable_user(h.data_dir(), "oscar").await.unwrap();
    let after_disable = ended_within(stream, KEEP_ALIVE * 3).await;
    let mut still = still;
    let t = Instant::now();
    while t.elapsed() < KEEP_ALIVE * 2 {
        match tokio::time::timeout(KEEP_ALIVE * 2, still.chunk()).await {
            Ok(Ok(Some(_))) => {}
            other => panic!("a valid session's stream ended: {other:?}"),
        }
    }
    println!(
        "live stream ended {after_logout:?} after sign-out and {after_disable:?} after the \
         account was disabled (keep-alive {KEEP_ALIVE:?})"
    );
    h.shutdown().await;
}
