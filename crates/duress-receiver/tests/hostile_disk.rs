//! The free-disk watermark (issue 15 item 3, docs/RELIABILITY.md "Hostile load"): with the
//! free-space reading injected (no disk is filled), below the watermark test events and
//! heartbeats are refused 503 `storage-unavailable` — the agent keeps them — while real alarms
//! and cancels are still accepted; `/healthz` and the board say so; above it again, the refused
//! test event is accepted when resent. Runs on either backend (`DURESS_TEST_DATABASE`).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::Harness;
use common::console::{Console, add_user};
use duress_core::{EventKind, ProblemType};
use duress_receiver::diskspace::{FreeSpace, Space};
use duress_receiver::store::Role;

const MIB: u64 = 1024 * 1024;
/// A 100 GiB filesystem: the default watermark is then 512 MiB (1 % would be 1 GiB).
const TOTAL: u64 = 100 * 1024 * MIB;

#[derive(Debug)]
struct Injected(AtomicU64);

impl FreeSpace for Injected {
    fn read(&self) -> std::io::Result<Space> {
        Ok(Space {
            available: self.0.load(Ordering::SeqCst),
            total: TOTAL,
        })
    }
}

/// Proves test events and heartbeats are refused below the watermark and alarms are not; the
/// state is visible on `/healthz` and the board, and clears when space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_watermark_only_alarms_are_accepted() {
    let free = Arc::new(Injected(AtomicU64::new(10 * 1024 * MIB)));
    let source: Arc<dyn FreeSpace> = free.clone();
    let h = Harness::start_with(|s| s.free_space = Some(source)).await;
    add_user(h.data_dir(), "officer", Role::Officer).await;
    let officer = Console::sign_in(&h, "officer").await;
    let mut agent = h.enrolled_agent().await;

    let hb = |agent: &common::Agent| agent.sign_heartbeat(&agent.heartbeat());
    assert_eq!(h.post("/v1/heartbeats", hb(&agent)).await.status, 200);
    let test = agent.event(EventKind::Test);
    assert_eq!(
        h.post("/v1/events", agent.sign_event(&test)).await.status,
        200
    );
    assert!(!officer.get("/").await.text().contains("Receiver trouble"));

    // 100 MiB free: below 512 MiB.
    free.0.store(100 * MIB, Ordering::SeqCst);
    let refused_hb = h
        .post("/v1/heartbeats", agent.sign_heartbeat(&agent.heartbeat()))
        .await
        .problem(ProblemType::StorageUnavailable);
    let detail = refused_hb.detail.unwrap_or_default();
    assert!(
        detail.contains("heartbeats are refused") && detail.contains("100 MiB free"),
        "{detail}"
    );
    let second_test = agent.event(EventKind::Test);
    let p = h
        .post("/v1/events", agent.sign_event(&second_test))
        .await
        .problem(ProblemType::StorageUnavailable);
    assert!(
        p.detail
            .unwrap_or_default()
            .contains("test events are refused"),
        "test event refused for the disk"
    );
    let alarm = agent.event(EventKind::Duress);
    let a = h.post("/v1/events", agent.sign_event(&alarm)).await;
    assert_eq!(a.status, 200, "alarm below the watermark: {}", a.text());
    let cancel = agent.event(EventKind::Cancel);
    let a = h.post("/v1/events", agent.sign_event(&cancel)).await;
    assert_eq!(a.status, 200, "cancel below the watermark: {}", a.text());

    let health = h.get("/healthz").await;
    assert_eq!(
        health.status, 200,
        "alarms are still accepted: stay in service"
    );
    let health: serde_json::Value = health.json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["disk"]["low"], true);
    assert_eq!(health["disk"]["available_bytes"], 100 * MIB);
    assert_eq!(health["disk"]["watermark_bytes"], 512 * MIB);
    let board = officer.get("/").await.text();
    assert!(
        board.contains("Receiver trouble") && board.contains("below its watermark"),
        "the board shows no trouble note"
    );

    let stored: Vec<_> = duress_receiver::admin::list_events(h.data_dir())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        stored,
        [test.id, alarm.id, cancel.id],
        "the refused test event was stored"
    );

    // Space back: the agent's resend of the queued test event is accepted.
    free.0.store(10 * 1024 * MIB, Ordering::SeqCst);
    let resent = second_test.resent_at(common::now());
    assert_eq!(
        h.post("/v1/events", agent.sign_event(&resent)).await.status,
        200
    );
    assert_eq!(h.post("/v1/heartbeats", hb(&agent)).await.status, 200);
    assert_eq!(
        h.get("/healthz").await.json::<serde_json::Value>(),
        serde_json::json!({"status": "ok"})
    );
    assert!(!officer.get("/").await.text().contains("Receiver trouble"));
    assert_eq!(h.event_count().await, 4);
    h.shutdown().await;
}
