//! Per-device limits (issue 15 item 3): one enrolled device sending 1,000 events in a second,
//! and 1,000 events whose `occurred_at` is spread over days. The excess is answered 429 with
//! `Retry-After`; resending each refused event after that (what the agent does: the event stays
//! in its outbox, a 429 is retried on the alarm schedule) delivers every one exactly once, and
//! the device never has more open incidents than the cap. Runs on either backend
//! (`DURESS_TEST_DATABASE`).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Harness};
use duress_core::EventKind;
use duress_receiver::admin;
use duress_receiver::incidents::MAX_OPEN_PER_DEVICE;
use futures::StreamExt as _;

const EVENTS: usize = 1000;
/// The bucket in this test: 20 at once, then 150 a second, below what either backend commits in debug builds (the default, 30 then 1 a second,
/// would make the resends of 1,000 events take a quarter of an hour).
const BURST: u32 = 20;
const RATE: f64 = 150.0;

/// Sends every body at once (32 in flight, so 32 connections: under the per-address cap), then resends the 429-refused ones after their
/// `Retry-After`, until all are committed. Returns (429s seen, rounds, time).
async fn deliver_all(h: &Harness, bodies: Vec<String>) -> (usize, usize, Duration) {
    let t = Instant::now();
    let mut pending = bodies;
    let mut refused = 0;
    for round in 1..=200 {
        let answers: Vec<(String, u16, Option<u64>)> =
            futures::stream::iter(pending.iter().cloned().map(|body| async move {
                let resp = h
                    .client
                    .post(format!("{}/v1/events", h.receiver.url))
                    .header("content-type", "application/jose")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                (body, resp.status().as_u16(), retry)
            }))
            .buffer_unordered(32)
            .collect()
            .await;
        let mut next = Vec::new();
        let mut wait = 0;
        for (body, status, retry) in answers {
            match status {
                200..=299 => {}
                429 => {
                    refused += 1;
                    let retry = retry.expect("a 429 carries Retry-After");
                    assert!((1..=60).contains(&retry), "Retry-After {retry}");
                    wait = wait.max(retry);
                    next.push(body);
                }
                other => panic!("event answered {other}"),
            }
        }
        if next.is_empty() {
            return (refused, round, t.elapsed());
        }
        pending = next;
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    panic!("{} events still refused after 200 rounds", pending.len());
}

async fn open_incidents_of(h: &Harness, device_id: &str) -> usize {
    admin::list_incidents(h.data_dir())
        .await
        .unwrap()
        .iter()
        .filter(|i| i.device_id == device_id && i.status == "open")
        .count()
}

/// Proves the burst case: 1,000 alarms from one device within a second → 429s, all delivered
/// by resending, stored once each, one open incident (they are all within the window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_in_a_second_are_throttled_and_all_delivered() {
    let h = Harness::start_with(|s| {
        s.device_event_burst = BURST;
        s.device_events_per_second = RATE;
    })
    .await;
    let mut agent = h.enrolled_agent().await;
    let mut ids = Vec::new();
    let bodies: Vec<String> = (0..EVENTS)
        .map(|_| {
            let claims = agent.event(EventKind::Duress);
            ids.push(claims.id);
            agent.sign_event(&claims)
        })
        .collect();
    let (refused, rounds, took) = deliver_all(&h, bodies).await;
    let events = admin::list_events(h.data_dir()).await.unwrap();
    println!(
        "device burst: {EVENTS} events at once from one device: {refused} answered 429, all \
         delivered in {rounds} rounds, {took:?}; {} stored",
        events.len()
    );
    assert!(refused > 0, "the bucket never refused");
    for id in &ids {
        assert_eq!(events.iter().filter(|e| e.id == *id).count(), 1);
    }
    assert_eq!(events.len(), EVENTS);
    assert_eq!(open_incidents_of(&h, &agent.device_id).await, 1);
    h.shutdown().await;
}

/// Proves the spread case: 1,000 presses whose `occurred_at` lie 10 minutes apart (about a
/// week, each outside the 5-minute grouping window of the previous one) → never more than
/// the cap of open incidents; every press stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presses_spread_over_days_never_open_more_than_the_cap() {
    let h = Harness::start_with(|s| {
        s.device_event_burst = BURST;
        s.device_events_per_second = RATE;
    })
    .await;
    let mut agent: Agent = h.enrolled_agent().await;
    let mut ids = Vec::new();
    let start = common::now() - time::Duration::days(7);
    let bodies: Vec<String> = (0..EVENTS)
        .map(|i| {
            let mut claims = agent.event(EventKind::Duress);
            claims.occurred_at = start + time::Duration::minutes(10 * i as i64);
            ids.push(claims.id);
            agent.sign_event(&claims)
        })
        .collect();
    let (refused, rounds, took) = deliver_all(&h, bodies).await;
    let events = admin::list_events(h.data_dir()).await.unwrap();
    let open = open_incidents_of(&h, &agent.device_id).await;
    println!(
        "device spread: {EVENTS} presses over {} days: {refused} answered 429, delivered in \
         {rounds} rounds, {took:?}; {open} open incidents (cap {MAX_OPEN_PER_DEVICE})",
        10 * EVENTS / (60 * 24)
    );
    for id in &ids {
        assert_eq!(events.iter().filter(|e| e.id == *id).count(), 1);
    }
    assert!(refused > 0);
    assert!(open as u64 <= MAX_OPEN_PER_DEVICE, "{open} open incidents");
    assert_eq!(open as u64, MAX_OPEN_PER_DEVICE);
    h.shutdown().await;
}

/// Signs `claims` (any JSON) as `agent`'s event.
fn sign_json(agent: &Agent, claims: &serde_json::Value) -> String {
    agent.key.sign(
        duress_core::Typ::Event,
        Some(&agent.device_id),
        &serde_json::to_vec(claims).unwrap(),
    )
}

/// Proves unknown-claim padding is refused (issue 15 item 3): an event padded with an unknown
/// claim, with unknown fields nested in a known one, or with whitespace, beyond the allowance
/// (`MAX_UNKNOWN_CLAIM_BYTES`) → 422 invalid-claims naming why, nothing stored; while a real
/// agent's event — with every text field long and multi-byte, or with a small claim a newer
/// agent might add — is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padded_claims_are_refused_and_real_events_are_not() {
    use duress_receiver::api::MAX_UNKNOWN_CLAIM_BYTES;
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let pad = "x".repeat(MAX_UNKNOWN_CLAIM_BYTES + 1);

    let mut top = serde_json::to_value(agent.event(EventKind::Duress)).unwrap();
    top["padding"] = pad.clone().into();
    let mut nested = serde_json::to_value(agent.event(EventKind::Duress)).unwrap();
    nested["location"]["zz_unknown"] = pad.clone().into();
    let spaced = {
        let claims = agent.event(EventKind::Duress);
        let json = serde_json::to_string(&claims).unwrap();
        let padded = format!("{}{json}", " ".repeat(MAX_UNKNOWN_CLAIM_BYTES + 1));
        agent.key.sign(
            duress_core::Typ::Event,
            Some(&agent.device_id),
            padded.as_bytes(),
        )
    };
    for (case, body) in [
        ("unknown claim", sign_json(&agent, &top)),
        ("unknown nested field", sign_json(&agent, &nested)),
        ("whitespace", spaced),
    ] {
        let answer = h.post("/v1/events", body).await;
        let p = answer.problem(duress_core::ProblemType::InvalidClaims);
        let detail = p.detail.unwrap_or_default();
        assert!(
            detail.contains("unknown claims or padding"),
            "{case}: {detail}"
        );
    }
    assert_eq!(h.event_count().await, 0, "a padded event was stored");

    // A real agent's event at its largest: every text field at its limit in multi-byte
    // characters, and as many addresses as allowed.
    let mut big = agent.event(EventKind::Duress);
    let long = "ü".repeat(duress_core::messages::MAX_HOST_FIELD_CHARS);
    big.location.label = Some(long.clone());
    big.host.hostname = long.clone();
    big.host.user = long.clone();
    big.host.os = long.clone();
    big.host.agent_version = long;
    big.host.ips = (0..duress_core::messages::MAX_HOST_ADDRESSES)
        .map(|i| format!("fd00:1234:5678:9abc:def0:1234:5678:{i:04x}"))
        .collect();
    let answer = h.post("/v1/events", agent.sign_event(&big)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // A claim a newer agent might add, within the allowance.
    let mut newer = serde_json::to_value(agent.event(EventKind::Duress)).unwrap();
    newer["future_claim"] = "x".repeat(100).into();
    let answer = h.post("/v1/events", sign_json(&agent, &newer)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(h.event_count().await, 2);
    h.shutdown().await;
}
