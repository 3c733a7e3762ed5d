//! Unauthenticated traffic off the alarm path (issue 15 item 4, docs/RELIABILITY.md "Hostile
//! load"): 5,000 enrollments with made-up tokens and 5,000 events with made-up `kid`s (sent
//! round again until the honest alarms are all raised) from
//! parallel clients of one hostile address (127.0.0.2) while an enrolled agent (127.0.0.1)
//! raises alarms and an officer loads the board. Every alarm commits and the board loads;
//! prints the alarm latency under attack. Runs on either backend (`DURESS_TEST_DATABASE`).
//!
//! The flood test raises the per-address limits out of the way, so every hostile request
//! reaches the store (the hard case: with the defaults, all but the first few dozen are
//! answered 429 before any work). The limits themselves are proved by the second test.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::console::{Console, add_user};
use common::{Agent, Harness, random_key};
use duress_core::{EventKind, Typ};
use duress_receiver::admin;
use duress_receiver::store::Role;
use futures::StreamExt as _;

const ENROLLMENTS: usize = 5000;
const EVENTS: usize = 5000;
/// Hostile requests in flight at once.
const PARALLEL: usize = 64;
/// Alarms the honest agent raises during the flood, one after the other.
const ALARMS: usize = 10;
/// Bound on the flood's rounds over its bodies (it stops as soon as the alarms are raised).
const MAX_PASSES: usize = 20;

fn client_from(h: &Harness, local: &str) -> reqwest::Client {
    common::trusting_builder(&h.receiver.cert_pem_path)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(Some(local.parse().unwrap()))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A made-up enrollment: a fresh key proving possession, a random token.
fn random_enrollment() -> String {
    Agent::new().enrollment(&duress_receiver::tokens::generate().unwrap())
}

/// A well-formed event signed by a key no device has, under a random kid.
fn random_kid_event() -> String {
    let mut stranger = Agent::new();
    let claims = stranger.event(EventKind::Duress);
    random_key().sign(
        Typ::Event,
        Some(&uuid::Uuid::now_v7().to_string()),
        &serde_json::to_vec(&claims).unwrap(),
    )
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> u16 {
    match client
        .post(url)
        .header("content-type", "application/jose")
        .body(body)
        .send()
        .await
    {
        Ok(resp) => resp.status().as_u16(),
        // Counted apart: a refused connection is the caps doing their work.
        Err(_) => 0,
    }
}

/// Proves the flood case: 5,000 random-token enrollments and 5,000 random-kid events, 64 in
/// flight, every one reaching the store; meanwhile each of the honest agent's alarms is
/// answered 200 and committed, and the signed-in board loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_enrollments_and_kids_do_not_delay_an_alarm_or_the_board() {
    let h = Harness::start_with(|s| {
        s.enrollment_failures_per_minute = u32::MAX;
        s.unknown_kids_per_minute = u32::MAX;
        // Ten alarms in a few seconds from one device: within the bucket.
        s.device_event_burst = 100;
    })
    .await;
    add_user(h.data_dir(), "officer", Role::Officer).await;
    let officer = Console::sign_in(&h, "officer").await;
    let mut agent = h.enrolled_agent().await;
    // The agent's first heartbeat, as after any start (its key is then cached).
    let hb = agent.sign_heartbeat(&agent.heartbeat());
    assert_eq!(h.post("/v1/heartbeats", hb).await.status, 200);

    // Signing is the attacker's cost, not the receiver's: prepare the bodies first.
    let bodies: Vec<(bool, String)> = (0..ENROLLMENTS)
        .map(|_| (true, random_enrollment()))
        .chain((0..EVENTS).map(|_| (false, random_kid_event())))
        .collect();
    let hostile = client_from(&h, "127.0.0.2");
    let enroll_url = format!("{}/v1/enrollments", h.receiver.url);
    let event_url = format!("{}/v1/events", h.receiver.url);
    // The flood goes round its bodies until the honest agent has raised every alarm (at least
    // once through, at most MAX_PASSES times): on a fast machine one pass takes about two
    // seconds, fewer than the alarms need, and an alarm raised after the flood proves nothing.
    let alarms_done = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let flood = {
        let (alarms_done, done, answered) = (alarms_done.clone(), done.clone(), answered.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            // Interleaved, so both kinds run for the whole flood.
            let mut interleaved = Vec::with_capacity(bodies.len());
            let (enrolls, events): (Vec<_>, Vec<_>) = bodies.into_iter().partition(|b| b.0);
            for (e, v) in enrolls.into_iter().zip(events) {
                interleaved.push(e);
                interleaved.push(v);
            }
            let one_pass = interleaved.len();
            let statuses: Vec<(bool, u16)> = futures::stream::iter(
                interleaved
                    .into_iter()
                    .cycle()
                    .take(one_pass * MAX_PASSES)
                    .enumerate(),
            )
            .take_while(|(sent, _)| {
                std::future::ready(*sent < one_pass || !alarms_done.load(Ordering::SeqCst))
            })
            .map(|(_, (is_enroll, body))| {
                let (hostile, answered) = (hostile.clone(), answered.clone());
                let url = if is_enroll { &enroll_url } else { &event_url }.clone();
                async move {
                    let status = post(&hostile, &url, body).await;
                    answered.fetch_add(1, Ordering::Relaxed);
                    (is_enroll, status)
                }
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
            done.store(true, Ordering::SeqCst);
            (statuses, t.elapsed())
        })
    };

    // Wait until the flood is under way, then raise alarms and load the board during it.
    let started = Instant::now();
    while answered.load(Ordering::Relaxed) < 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "flood never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut alarm_ms = Vec::new();
    let mut board_ms = Vec::new();
    let mut ids = Vec::new();
    let mut during = 0;
    for _ in 0..ALARMS {
        let claims = agent.event(EventKind::Duress);
        ids.push(claims.id);
        let t = Instant::now();
        let answer = h.post("/v1/events", agent.sign_event(&claims)).await;
        alarm_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(answer.status, 200, "alarm under attack: {}", answer.text());
        let t = Instant::now();
        let board = officer.get("/").await;
        board_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(board.status, 200, "board under attack: {}", board.text());
        if !done.load(Ordering::SeqCst) {
            during += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    alarms_done.store(true, Ordering::SeqCst);
    let (statuses, flood_took) = flood.await.unwrap();
    assert!(
        during >= ALARMS / 2,
        "only {during} of {ALARMS} alarms were sent while the flood lasted ({flood_took:?}); \
         the test did not test what it claims"
    );

    let count = |enroll: bool, status: u16| {
        statuses
            .iter()
            .filter(|(e, s)| *e == enroll && *s == status)
            .count()
    };
    // Every made-up token is refused as unknown and every made-up kid as unknown: nothing
    // else (no 5xx, no 429, no dropped connection: the store answered each one).
    let sent = |enroll: bool| statuses.iter().filter(|(e, _)| *e == enroll).count();
    assert!(
        sent(true) >= ENROLLMENTS && sent(false) >= EVENTS,
        "one whole pass at least"
    );
    assert_eq!(count(true, 401), sent(true), "enrollment answers");
    assert_eq!(count(false, 401), sent(false), "event answers");

    let events = admin::list_events(h.data_dir()).await.unwrap();
    for id in &ids {
        assert_eq!(
            events.iter().filter(|e| e.id == *id).count(),
            1,
            "alarm {id} committed once"
        );
    }
    assert_eq!(events.len(), ALARMS, "nothing of the flood was stored");
    let devices = admin::list_devices(h.data_dir()).await.unwrap();
    assert_eq!(devices.len(), 1, "no made-up enrollment enrolled");

    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let median = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    println!(
        "FIGURE unauthenticated flood ({}): {} made-up enrollments + {} made-up kids \
         ({ENROLLMENTS} + {EVENTS} distinct), {PARALLEL} in flight, {:.0} requests/s for {flood_took:.1?}; {ALARMS} \
         alarms meanwhile ({during} during the flood): latency median {:.1} ms, max {:.1} ms; \
         board median {:.1} ms, max {:.1} ms",
        if h.on_postgres() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        sent(true),
        sent(false),
        statuses.len() as f64 / flood_took.as_secs_f64(),
        median(&alarm_ms),
        max(&alarm_ms),
        median(&board_ms),
        max(&board_ms),
    );
    h.shutdown().await;
}

/// Proves the per-address limit on unknown kids: past the configured number, an address gets
/// 429 with `Retry-After` for unknown kids (no store read is made for them), while an enrolled
/// device at that same address, whose key is known, still commits its alarm, and another
/// address is not affected. Also: a repeated unknown kid is answered from the negative cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_are_limited_per_address() {
    const LIMIT: u32 = 5;
    let h = Harness::start_with(|s| s.unknown_kids_per_minute = LIMIT).await;
    let mut neighbour = h.enrolled_agent().await;
    let hostile = client_from(&h, "127.0.0.3");
    let event_url = format!("{}/v1/events", h.receiver.url);
    // The enrolled neighbour behind the same address: its key gets cached by its heartbeat.
    let hb = neighbour.sign_heartbeat(&neighbour.heartbeat());
    let resp = hostile
        .post(format!("{}/v1/heartbeats", h.receiver.url))
        .header("content-type", "application/jose")
        .body(hb)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // One made-up kid, sent again and again, is still one unknown kid per request.
    let mut statuses = Vec::new();
    for _ in 0..LIMIT {
        statuses.push(post(&hostile, &event_url, random_kid_event()).await);
    }
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let resp = hostile
        .post(&event_url)
        .header("content-type", "application/jose")
        .body(random_kid_event())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body = resp.text().await.unwrap();
    assert!(body.contains("unknown kids"), "{body}");

    // The neighbour's alarm from the same address commits.
    let claims = neighbour.event(EventKind::Duress);
    assert_eq!(
        post(&hostile, &event_url, neighbour.sign_event(&claims)).await,
        200
    );
    // Another address still gets the honest answer for an unknown kid.
    assert_eq!(h.post("/v1/events", random_kid_event()).await.status, 401);
    assert_eq!(h.event_count().await, 1);
    h.shutdown().await;
}
