//! HTTP surface and store lifecycle: health, 404/405 as problem+json, the body limit on a
//! chunked body, migrations on an empty and an existing data dir.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::Harness;
use duress_core::ProblemType;
use duress_receiver::ack_key::AckKeys;
use duress_receiver::api::{AppState, router};
use duress_receiver::ratelimit::FailureLimiter;
use duress_receiver::store::SqliteStore;
use duress_receiver::{Approve, admin};
use futures::StreamExt as _;
use tower::ServiceExt as _;

/// Proves `/healthz` answers 200 `{"status":"ok"}` while the database answers.
#[tokio::test]
async fn healthz_is_ok() {
    let h = Harness::start().await;
    let a = h.get("/healthz").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json::<serde_json::Value>(),
        serde_json::json!({"status": "ok"})
    );
    h.shutdown().await;
}

/// Proves unknown routes and wrong methods answer problem+json (404 not-found, 405
/// method-not-allowed), not axum's plain text.
#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let h = Harness::start().await;
    h.get("/nope").await.problem(ProblemType::NotFound);
    h.get("/v1/events")
        .await
        .problem(ProblemType::MethodNotAllowed);
    h.post_as("/healthz", "application/jose", b"x".to_vec())
        .await
        .problem(ProblemType::MethodNotAllowed);
    h.shutdown().await;
}

/// Proves a body without Content-Length (chunked) is cut off at 64 KiB with 413 body-too-large.
#[tokio::test]
async fn a_chunked_oversize_body_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let app = router(AppState {
        store: Arc::new(store),
        grouping_window: Duration::from_secs(300),
        group_same_room: false,
        heartbeat_interval_s: 60,
        enrollment_failures: Arc::new(FailureLimiter::new(10, Duration::from_secs(60))),
        unknown_kids: Arc::new(FailureLimiter::new(20, Duration::from_secs(60))),
        device_events: Arc::new(duress_receiver::ratelimit::DeviceBuckets::new(30, 1.0)),
        phones: Arc::default(),
        body_read_timeout: Duration::from_secs(10),
        ack_keys: Arc::new(AckKeys::load_or_create(dir.path()).unwrap()),
        disk: Arc::new(duress_receiver::diskspace::DiskGuard::new(
            Arc::new(duress_receiver::diskspace::Statvfs(dir.path().to_owned())),
            Default::default(),
        )),
    });
    let chunks = (0..100).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 1024]));
    let request = Request::post("/v1/events")
        .header("content-type", "application/jose")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 413);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let p: duress_core::Problem = serde_json::from_slice(&body).unwrap();
    assert_eq!(p.kind(), Some(ProblemType::BodyTooLarge));
}

/// Proves a body that stops arriving is answered 408 request-timeout once the body read
/// timeout passes (a trickling client does not hold the request for ever), and nothing is
/// stored.
#[tokio::test]
async fn a_body_that_stops_arriving_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let app = router(AppState {
        store: store.clone(),
        grouping_window: Duration::from_secs(300),
        group_same_room: false,
        heartbeat_interval_s: 60,
        enrollment_failures: Arc::new(FailureLimiter::new(10, Duration::from_secs(60))),
        unknown_kids: Arc::new(FailureLimiter::new(20, Duration::from_secs(60))),
        device_events: Arc::new(duress_receiver::ratelimit::DeviceBuckets::new(30, 1.0)),
        phones: Arc::default(),
        body_read_timeout: Duration::from_millis(300),
        ack_keys: Arc::new(AckKeys::load_or_create(dir.path()).unwrap()),
        disk: Arc::new(duress_receiver::diskspace::DiskGuard::new(
            Arc::new(duress_receiver::diskspace::Statvfs(dir.path().to_owned())),
            Default::default(),
        )),
    });
    // Ten bytes of a declared hundred, then nothing.
    let first = futures::stream::iter([Ok::<_, std::io::Error>(b"eyJhbGciOi".to_vec())]);
    let stalled = first.chain(futures::stream::pending());
    let request = Request::post("/v1/events")
        .header("content-type", "application/jose")
        .header("content-length", "100")
        .body(Body::from_stream(stalled))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), app.oneshot(request))
        .await
        .expect("the receiver must give up on the body by itself")
        .unwrap();
    assert_eq!(response.status(), 408);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let p: duress_core::Problem = serde_json::from_slice(&body).unwrap();
    assert_eq!(p.kind(), Some(ProblemType::RequestTimeout));
    assert!(
        duress_receiver::admin::list_events(dir.path())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Proves a store that cannot commit answers 503 storage-unavailable (never a 2xx), for
/// events and for the health check: the agent keeps the alarm and retries. `GET /v1/ping`,
/// which touches no store, still answers 204.
#[tokio::test]
async fn a_store_that_cannot_commit_answers_503() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let event = agent.event(duress_core::EventKind::Duress);
    let jws = agent.sign_event(&event);
    let Harness { receiver, dir, .. } = h;
    receiver.shutdown().await.unwrap();

    // The same data, served by a router whose store is already closed (as after an I/O failure).
    let store = SqliteStore::open(dir.path()).await.unwrap();
    duress_receiver::store::Store::close(&store).await;
    let app = router(AppState {
        store: Arc::new(store),
        grouping_window: Duration::from_secs(300),
        group_same_room: false,
        heartbeat_interval_s: 60,
        enrollment_failures: Arc::new(FailureLimiter::new(10, Duration::from_secs(60))),
        unknown_kids: Arc::new(FailureLimiter::new(20, Duration::from_secs(60))),
        device_events: Arc::new(duress_receiver::ratelimit::DeviceBuckets::new(30, 1.0)),
        phones: Arc::default(),
        body_read_timeout: Duration::from_secs(10),
        ack_keys: Arc::new(AckKeys::load_or_create(dir.path()).unwrap()),
        disk: Arc::new(duress_receiver::diskspace::DiskGuard::new(
            Arc::new(duress_receiver::diskspace::Statvfs(dir.path().to_owned())),
            Default::default(),
        )),
    });
    let request = Request::post("/v1/events")
        .header("content-type", "application/jose")
        .body(Body::from(jws))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 503);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let p: duress_core::Problem = serde_json::from_slice(&body).unwrap();
    assert_eq!(p.kind(), Some(ProblemType::StorageUnavailable));
    let health = app
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    // The no-op endpoint touches no store: it still answers 204, with no body.
    let ping = app
        .oneshot(Request::get("/v1/ping").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(ping.status(), 204);
    assert!(
        axum::body::to_bytes(ping.into_body(), 16)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(admin::list_events(dir.path()).await.unwrap().is_empty());
}

/// Proves migrations apply on an empty directory, re-open idempotently (data kept), and that
/// the database is in WAL mode.
#[tokio::test]
async fn migrations_apply_on_an_empty_dir_and_reopen_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("fresh/nested");
    let token = admin::create_token(&data_dir, 1, None, Approve::Auto)
        .await
        .unwrap();
    assert!(data_dir.join("receiver.sqlite3").exists());
    for _ in 0..3 {
        let store = SqliteStore::open(&data_dir).await.unwrap();
        duress_receiver::store::Store::close(&store).await;
    }
    assert!(admin::list_devices(&data_dir).await.unwrap().is_empty());
    // The token survived the re-opens.
    admin::revoke_token(&data_dir, &token).await.unwrap();
    let header = std::fs::read(data_dir.join("receiver.sqlite3")).unwrap();
    // SQLite header bytes 18/19 are 2 in WAL mode.
    assert_eq!((header[18], header[19]), (2, 2));
}

/// Proves a receiver restarted on the same data dir keeps its store and its certificate.
#[tokio::test]
async fn a_restart_keeps_data_and_certificate() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let event = agent.event(duress_core::EventKind::Duress);
    assert_eq!(
        h.post("/v1/events", agent.sign_event(&event)).await.status,
        200
    );
    let fingerprint = h.receiver.cert_sha256.clone();
    let store = h.data_dir();
    let Harness { receiver, dir, .. } = h;
    receiver.shutdown().await.unwrap();

    let mut settings = duress_receiver::Settings::new(dir.path());
    settings.database = store.database.clone();
    let again = duress_receiver::start(settings).await.unwrap();
    assert_eq!(again.cert_sha256, fingerprint);
    let client = common::webpki_client(&again.cert_pem_path);
    let resp = client
        .post(format!("{}/v1/events", again.url))
        .header("content-type", "application/jose")
        .body(agent.sign_event(&event))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the repeat is answered from the store");
    assert_eq!(admin::list_events(&store).await.unwrap().len(), 1);
    again.shutdown().await.unwrap();
}
