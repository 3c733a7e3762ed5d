//! Concurrency of the write path (group commit: many requests share one transaction, each in
//! its own savepoint). Every answer still comes after the COMMIT that holds its rows, and
//! deduplication still holds when copies of one event arrive together.
#![allow(clippy::unwrap_used)]

mod common;

use common::Harness;
use duress_core::{EventAck, EventKind};
use duress_receiver::admin;

/// A receiver whose hostile-load limits do not get in the way of this file's bursts: 200
/// simultaneous new connections from one address (past the per-address cap on unproven
/// connections) and 200 events of one device at once (past its event bucket). Those limits
/// have their own tests (hostile_load.rs, device_limits.rs); here the write path is under test.
async fn harness() -> Harness {
    Harness::start_with(|s| {
        s.connections.max_per_address = 100_000;
        s.device_event_burst = 100_000;
    })
    .await
}

/// Proves 200 concurrent ingests of distinct events (20 stations × 10 presses) are all
/// answered 200 with their own id, all 200 rows are stored, and each station's presses were
/// grouped into one incident with press count 10 even though they were committed in batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_distinct_events_all_commit() {
    let h = harness().await;
    let mut bodies = Vec::new();
    for _ in 0..20 {
        let mut agent = h.enrolled_agent().await;
        for _ in 0..10 {
            let claims = agent.event(EventKind::Duress);
            bodies.push((claims.id, agent.sign_event(&claims)));
        }
    }
    let url = format!("{}/v1/events", h.receiver.url);
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|(id, body)| {
            let (client, url) = (h.client.clone(), url.clone());
            tokio::spawn(async move {
                let resp = client
                    .post(url)
                    .header("content-type", "application/jose")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let ack: EventAck = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
                (id, status, ack)
            })
        })
        .collect();
    for t in tasks {
        let (id, status, ack) = t.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(ack.id, id, "each answer names its own event");
    }
    assert_eq!(h.event_count().await, 200);
    let incidents = admin::list_incidents(h.data_dir()).await.unwrap();
    assert_eq!(incidents.len(), 20, "one incident per station");
    assert!(incidents.iter().all(|i| i.press_count == 10));
    h.shutdown().await;
}

/// Proves 200 concurrent copies of one signed event (same body, as an agent retrying over many
/// connections would send) create one row and one press, and every copy is answered 200 with
/// byte-identical bodies — whether a copy shared the first one's batch or came later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_repeats_of_one_event_store_one_row() {
    let h = harness().await;
    let mut agent = h.enrolled_agent().await;
    let claims = agent.event(EventKind::Duress);
    let body = agent.sign_event(&claims);
    let url = format!("{}/v1/events", h.receiver.url);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (client, url, body) = (h.client.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let resp = client
                    .post(url)
                    .header("content-type", "application/jose")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), resp.bytes().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert!(answers.iter().all(|(status, _)| *status == 200));
    let first = &answers[0].1;
    assert!(
        answers.iter().all(|(_, b)| b == first),
        "every copy gets the same bytes"
    );
    let ack: EventAck = serde_json::from_slice(first).unwrap();
    assert_eq!(ack.id, claims.id);
    assert_eq!(h.event_count().await, 1, "one row");
    let incidents = admin::list_incidents(h.data_dir()).await.unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].press_count, 1, "one press");
    h.shutdown().await;
}

/// Proves heartbeats committed in batches beside events are recorded (the station's last
/// heartbeat is set) and events sent at the same time are all stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_and_events_share_batches() {
    let h = harness().await;
    let mut agent = h.enrolled_agent().await;
    let url = h.receiver.url.clone();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (path, body) = if i % 2 == 0 {
            ("/v1/heartbeats", agent.sign_heartbeat(&agent.heartbeat()))
        } else {
            let c = agent.event(EventKind::Test);
            ("/v1/events", agent.sign_event(&c))
        };
        let (client, url) = (h.client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{url}{path}"))
                .header("content-type", "application/jose")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(
        admin::list_test_events(h.data_dir()).await.unwrap().len(),
        50
    );
    let devices = admin::list_devices(h.data_dir()).await.unwrap();
    assert!(devices[0].last_heartbeat_at.is_some());
    h.shutdown().await;
}
