//! Primary + synchronous standby (issue 12, docs/scale-out.md), on real PostgreSQL 15
//! processes this test starts (`duress_testpg::ReplicatedPg`):
//!
//! - a burst of alarms from 20 stations through two receiver nodes; the primary is stopped with
//!   `pg_ctl stop -m immediate` during it, the standby promoted (`pg_ctl promote`) and the
//!   database name moved to it; the receivers reconnect by themselves → every alarm stored
//!   exactly once, and every alarm acknowledged before the kill was already on the standby's
//!   disk (read there before promotion). Prints the time from the kill to the first commit on
//!   the new primary.
//! - the standby stopped: commits wait, the console shows "Receiver redundancy degraded"
//!   (page and `event: trouble`), the Cluster view says so; the operator's way out
//!   (`ALTER SYSTEM SET synchronous_standby_names = ''`) releases the waiting alarm and the
//!   banner says "one disk".
//!
//! Always on PostgreSQL (a standby is a PostgreSQL thing); the test fails loudly when it cannot
//! start the servers.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::console::{Console, add_user};
use common::{Harness, webpki_client};
use duress_core::EventKind;
use duress_receiver::store::{DatabaseUrl, Role};
use duress_receiver::{Approve, Settings};
use duress_testpg::ReplicatedPg;
use uuid::Uuid;

const STATIONS: usize = 20;
const ALARMS_PER_STATION: usize = 10;
/// The primary is stopped once this many alarms are acknowledged.
const KILL_AFTER_ACKS: usize = 60;
/// How long one alarm may take, outage included, before the test fails.
const ALARM_DEADLINE: Duration = Duration::from_secs(90);

/// A receiver node on `url`, in its own data dir holding `audit_key` (nodes sharing a database
/// share the audit key file, docs/storage.md) or creating it.
async fn node(url: &str, audit_key: Option<&[u8]>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    if let Some(key) = audit_key {
        std::fs::write(dir.path().join("audit-hmac.key"), key).unwrap();
    }
    let mut settings = Settings::new(dir.path());
    settings.database = Some(DatabaseUrl::new(url.to_owned()));
    // Resent alarms count against the per-device limit: raise it so the outage's retries are
    // never refused by the rate limiter (the test is about the database).
    settings.device_event_burst = 1000;
    settings.device_events_per_second = 1000.0;
    let receiver = duress_receiver::start(settings).await.unwrap();
    let client = webpki_client(&receiver.cert_pem_path);
    Harness {
        receiver,
        client,
        dir,
    }
}

/// One POST of a signed event to `base`: `Ok(status)` or the transport error.
async fn post_event(client: &reqwest::Client, base: &str, jws: &str) -> Result<u16, String> {
    client
        .post(format!("{base}/v1/events"))
        .header("content-type", "application/jose")
        .timeout(Duration::from_secs(5))
        .body(jws.to_owned())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// Event ids stored in `db` on `pg`, with how often each is there.
fn stored_ids(pg: &duress_testpg::TestPg, db: &str) -> BTreeMap<Uuid, u32> {
    let out = pg
        .psql_in(
            db,
            "SELECT id::text || ' ' || count(*) FROM events GROUP BY id",
        )
        .unwrap();
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (id, n) = l.split_once(' ').unwrap();
            (id.parse().unwrap(), n.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_killed_during_a_burst_loses_and_duplicates_nothing_after_promotion() {
    let pair = Arc::new(Mutex::new(
        tokio::task::spawn_blocking(ReplicatedPg::start)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("starting primary + standby: {e}")),
    ));
    let (url, db) = {
        let p = pair.lock().unwrap();
        (p.url(), p.primary.database().to_owned())
    };
    let n1 = node(&url, None).await;
    let key = std::fs::read(n1.dir.path().join("audit-hmac.key")).unwrap();
    let n2 = node(&url, Some(&key)).await;
    let bases = [n1.receiver.url.clone(), n2.receiver.url.clone()];

    let mut agents = Vec::new();
    for i in 0..STATIONS {
        let h = if i % 2 == 0 { &n1 } else { &n2 };
        let token = h.token(1, Approve::Auto).await;
        agents.push(h.enrolled_agent_with(&token).await);
    }

    // Acknowledged ids with the instant of their acknowledgement.
    let acked: Arc<Mutex<Vec<(Uuid, Instant)>>> = Arc::default();
    let mut burst = Vec::new();
    for (i, mut agent) in agents.into_iter().enumerate() {
        let client = n1.client.clone();
        let bases = bases.clone();
        let acked = acked.clone();
        burst.push(tokio::spawn(async move {
            for _ in 0..ALARMS_PER_STATION {
                let claims = agent.event(EventKind::Duress);
                let jws = agent.sign_event(&claims);
                let started = Instant::now();
                // Like the agent: the same signed alarm again until one receiver acknowledges
                // it, alternating receivers (resending is harmless: ingest is idempotent).
                let mut attempt = i;
                loop {
                    let base = &bases[attempt % bases.len()];
                    match post_event(&client, base, &jws).await {
                        Ok(200) => break,
                        Ok(s) if s == 503 || s == 500 || s == 408 => {}
                        Ok(s) => panic!("alarm {} refused with {s}", claims.id),
                        Err(_) => {}
                    }
                    assert!(
                        started.elapsed() < ALARM_DEADLINE,
                        "alarm {} never acknowledged",
                        claims.id
                    );
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                acked.lock().unwrap().push((claims.id, Instant::now()));
                // A station presses again shortly after (the burst spans the outage).
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }

    // Kill the primary mid-burst.
    let wait_start = Instant::now();
    while acked.lock().unwrap().len() < KILL_AFTER_ACKS {
        assert!(
            wait_start.elapsed() < Duration::from_secs(120),
            "the burst never got going"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = Instant::now();
    {
        let pair = pair.clone();
        tokio::task::spawn_blocking(move || pair.lock().unwrap().primary.stop())
            .await
            .unwrap()
            .unwrap();
    }
    let stopped_at = Instant::now();
    // Everything acknowledged so far was committed on the primary before it died, so it must
    // be on the standby's disk: read it there (still read-only, before promotion) once it has
    // replayed all it received.
    let acked_before_kill: BTreeSet<Uuid> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at <= stopped_at)
        .map(|(id, _)| *id)
        .collect();
    let on_standby = {
        let pair = pair.clone();
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            let p = pair.lock().unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while p
                .standby
                .psql("SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()")
                .unwrap()
                != "t"
            {
                assert!(
                    Instant::now() < deadline,
                    "the standby never replayed what it received"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(p.standby.psql("SELECT pg_is_in_recovery()").unwrap(), "t");
            stored_ids(&p.standby, &db)
        })
        .await
        .unwrap()
    };
    let missing: Vec<_> = acked_before_kill
        .iter()
        .filter(|id| !on_standby.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} alarms acknowledged before the kill are not on the standby: {missing:?}",
        missing.len(),
        acked_before_kill.len()
    );

    // Manual promotion (docs/scale-out.md), then the name moves to the new primary.
    {
        let pair = pair.clone();
        tokio::task::spawn_blocking(move || pair.lock().unwrap().promote_standby())
            .await
            .unwrap()
            .unwrap();
    }
    let promoted_at = Instant::now();

    for task in burst {
        task.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let first_after_kill = acked
        .iter()
        .filter(|(_, at)| *at > stopped_at)
        .map(|(_, at)| *at)
        .min()
        .expect("alarms were acknowledged after the kill");
    let stored = {
        let pair = pair.clone();
        let db = db.clone();
        tokio::task::spawn_blocking(move || stored_ids(&pair.lock().unwrap().standby, &db))
            .await
            .unwrap()
    };
    let acked_ids: BTreeSet<Uuid> = acked.iter().map(|(id, _)| *id).collect();
    assert_eq!(acked.len(), STATIONS * ALARMS_PER_STATION);
    assert_eq!(
        acked_ids.len(),
        acked.len(),
        "an alarm was acknowledged twice"
    );
    let lost: Vec<_> = acked_ids
        .iter()
        .filter(|id| !stored.contains_key(id))
        .collect();
    let duplicated: Vec<_> = stored.iter().filter(|(_, n)| **n != 1).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(duplicated.is_empty(), "duplicated: {duplicated:?}");
    assert_eq!(stored.len(), acked_ids.len(), "stored alarms nobody sent");
    println!(
        "FIGURE failover: {} alarms from {STATIONS} stations via 2 nodes, primary killed after \
         {} acks; stop took {} ms; promotion done {} ms after the kill; first commit on the new \
         primary {} ms after the kill; 0 lost, 0 duplicated",
        acked.len(),
        acked_before_kill.len(),
        (stopped_at - killed_at).as_millis(),
        (promoted_at - killed_at).as_millis(),
        (first_after_kill - killed_at).as_millis(),
    );
    n1.shutdown().await;
    n2.shutdown().await;
}

/// Reads the page `path` until its trouble banner contains `needle` (bounded).
async fn banner_says(console: &Console, needle: &str, within: Duration) -> String {
    let start = Instant::now();
    loop {
        let page = console.get("/admin/cluster").await;
        assert_eq!(page.status, 200, "{}", page.text());
        let html = page.text();
        let banner = html
            .split("id=\"trouble-banner\"")
            .nth(1)
            .and_then(|rest| rest.split("</div>").next())
            .unwrap_or_default()
            .to_owned();
        if banner.contains(needle) {
            return html;
        }
        assert!(
            start.elapsed() < within,
            "the banner never said {needle:?}; it says: {banner}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_standby_is_a_redundancy_banner_and_the_operator_can_run_on_one_disk() {
    let mut pair = tokio::task::spawn_blocking(ReplicatedPg::start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("starting primary + standby: {e}"));
    let h = node(&pair.url(), None).await;
    add_user(h.data_dir(), "admin", Role::Admin).await;
    let console = Console::sign_in(&h, "admin").await;
    let mut agent = h.enrolled_agent().await;

    // Redundant: no banner, the Cluster view lists this node and a synchronous standby.
    let page = console.get("/admin/cluster").await;
    let html = page.text();
    assert!(html.contains("(this node)"), "{html}");
    assert!(html.contains("class=\"db-role\">primary<"), "{html}");
    let start = Instant::now();
    loop {
        let html = console.get("/admin/cluster").await.text();
        if html.contains("class=\"db-synchronous\">yes<") {
            assert!(html.contains(duress_testpg::STANDBY_NAME), "{html}");
            assert!(html.contains("class=\"sync-state\">sync<"), "{html}");
            assert!(!html.contains("redundancy degraded"), "{html}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{html}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let claims = agent.event(EventKind::Duress);
    assert_eq!(
        h.post("/v1/events", agent.sign_event(&claims)).await.status,
        200
    );

    // The standby goes away: commits wait for it, the console says so within seconds.
    let lost_at = Instant::now();
    tokio::task::block_in_place(|| pair.standby.stop().unwrap());
    let html = banner_says(
        &console,
        "Receiver redundancy degraded",
        Duration::from_secs(15),
    )
    .await;
    let shown_after = lost_at.elapsed();
    assert!(html.contains("is not connected"), "{html}");
    assert!(html.contains("class=\"db-synchronous\">no<"), "{html}");
    // Open pages get it over the live stream too.
    let mut stream = console
        .client
        .get(format!("{}/events", console.base))
        .header("cookie", console.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("event: trouble") || !seen.contains("redundancy degraded") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("the live stream sent no trouble frame")
            .unwrap()
            .expect("the live stream ended");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);

    // An alarm now is not acknowledged: its commit waits for a standby.
    let claims = agent.event(EventKind::Duress);
    let jws = agent.sign_event(&claims);
    let client = h.client.clone();
    let base = h.receiver.url.clone();
    let waiting = tokio::spawn(async move {
        client
            .post(format!("{base}/v1/events"))
            .header("content-type", "application/jose")
            .timeout(Duration::from_secs(60))
            .body(jws)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !waiting.is_finished(),
        "an alarm was acknowledged from one disk"
    );

    // The operator's conscious choice (docs/scale-out.md): run on one disk.
    tokio::task::block_in_place(|| {
        pair.primary
            .psql("ALTER SYSTEM SET synchronous_standby_names = ''")
            .unwrap();
        pair.primary.psql("SELECT pg_reload_conf()").unwrap();
    });
    let status = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiting alarm was not released")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    let html = banner_says(&console, "one disk", Duration::from_secs(15)).await;
    assert!(
        html.contains("(empty: commits wait for no standby)"),
        "{html}"
    );
    println!(
        "FIGURE redundancy banner: shown {} ms after the standby stopped",
        shown_after.as_millis()
    );
    h.shutdown().await;
}
