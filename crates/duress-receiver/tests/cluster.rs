//! Several receiver nodes on one PostgreSQL database (issue 12, docs/scale-out.md "How the nodes
//! share work"): consoles on every node get live updates (the doorbell, and its safety net when
//! notifications are lost), and work done for the cluster — escalation, the supervision sweep —
//! is done exactly once, and taken over when the node doing it dies.
//!
//! Always on a real PostgreSQL (`duress-testpg` starts a throw-away cluster; these tests fail,
//! naming why, when it cannot): SQLite is one node. Nodes are in-process receivers on one
//! database, and a `duress-receiver serve` process where a node must really die (`kill -9`).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use common::Harness;
use common::console::{Console, add_user};
use duress_core::{EventAck, EventKind};
use duress_receiver::Settings;
use duress_receiver::config::ReceiverConfig;
use duress_receiver::store::{DatabaseUrl, Role, StoreLocation};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_duress-receiver");

fn pg() -> &'static duress_testpg::TestPg {
    duress_testpg::TestPg::shared()
        .unwrap_or_else(|e| panic!("the cluster tests need a real PostgreSQL: {e}"))
}

/// An in-process node on `url`. Nodes of one database share the audit key: `key_from` is the
/// data directory of the first node (docs/storage.md).
async fn node(url: &str, key_from: Option<&Path>, adjust: impl FnOnce(&mut Settings)) -> Harness {
    let url = url.to_owned();
    let key_from = key_from.map(Path::to_path_buf);
    Harness::start_with(move |s| {
        s.database = Some(DatabaseUrl::new(url));
        if let Some(from) = key_from {
            std::fs::copy(
                from.join("audit-hmac.key"),
                s.data_dir.join("audit-hmac.key"),
            )
            .unwrap();
        }
        adjust(s);
    })
    .await
}

/// An open SSE response and what has been read of it.
struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(c: &Console) -> Self {
        let resp = c
            .client
            .get(format!("{}/events", c.base))
            .header("cookie", c.cookie.clone().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Stream {
            resp,
            buf: String::new(),
        }
    }

    /// Reads until a frame whose data contains `needle`; panics after `within`.
    async fn until(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                if frame
                    .lines()
                    .any(|l| l.starts_with("data: ") && l.contains(needle))
                {
                    return;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(other) => panic!("stream ended: {other:?}"),
                Err(_) => panic!("no frame with {needle:?} within {within:?}: {}", self.buf),
            }
        }
    }
}

/// One duress press of a new station (enrolled on `enroll_on`) sent to `node`; its incident.
async fn press(enroll_on: &Harness, node: &Harness) -> Uuid {
    let mut agent = enroll_on.enrolled_agent().await;
    let event = agent.event(EventKind::Duress);
    let answer = node.post("/v1/events", agent.sign_event(&event)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let ack: EventAck = answer.json();
    ack.incident_id.unwrap()
}

/// Proves a console signed in on node 2 receives an alarm ingested by node 1 within 1 s (the
/// doorbell: PostgreSQL `LISTEN/NOTIFY`), and — with the notifications of the ingesting node
/// suppressed (the test switch `Settings::mute_doorbell`) — within the safety-net interval
/// (5 s): a lost notification costs latency, never an update.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_console_on_node_2_sees_alarms_of_node_1_by_the_doorbell_and_the_safety_net() {
    let url = pg().fresh_url().unwrap();
    let n1 = node(&url, None, |_| {}).await;
    let n2 = node(&url, Some(n1.dir.path()), |_| {}).await;
    // Its writes ring no doorbell: as if every notification it sends were lost.
    let muted = node(&url, Some(n1.dir.path()), |s| s.mute_doorbell = true).await;
    add_user(n2.data_dir(), "officer", Role::Officer).await;
    let console = Console::sign_in(&n2, "officer").await;
    let mut stream = Stream::open(&console).await;

    // Warm-up: node 2's pump is running and its listener subscribed (within the safety net
    // whatever the listener's state).
    let warm = press(&n1, &n1).await;
    stream
        .until(&warm.to_string(), Duration::from_secs(7))
        .await;

    let mut doorbell = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let incident = press(&n1, &n1).await;
        stream
            .until(&incident.to_string(), Duration::from_secs(1))
            .await;
        doorbell.push(t.elapsed());
    }
    let mut safety_net = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let incident = press(&n1, &muted).await;
        // The safety net's 5 s, plus the press's own round trip on a loaded 2-core machine.
        stream
            .until(&incident.to_string(), Duration::from_secs(7))
            .await;
        safety_net.push(t.elapsed());
    }
    println!(
        "figure: node 1 alarm -> node 2 console, doorbell: {:?} (max {:?}); notifications \
         lost, safety net: {:?}",
        doorbell,
        doorbell.iter().max().unwrap(),
        safety_net
    );
    for h in [n1, n2, muted] {
        h.shutdown().await;
    }
}

/// `duress-receiver serve` on `url` as a process of its own (so it can be killed for real),
/// escalating after 1 s; returns it once it serves.
fn serve_process(url: &str, data_dir: &Path) -> Child {
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database",
            url,
            "--escalate-after",
            "1s",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let served = lines
        .by_ref()
        .take(12)
        .map_while(Result::ok)
        .any(|l| l.starts_with("Store: "));
    assert!(served, "serve did not start");
    // Keep reading its stdout, so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

/// The escalation audit entries (`incident.escalate`) of `incident`, checked against its
/// timeline's escalation entries (one transaction writes both). The two are read one after
/// the other, not in one snapshot, so an escalation committed between the reads is read again
/// (bounded) rather than taken for a disagreement.
async fn escalations(at: &StoreLocation, incident: Uuid) -> usize {
    let store = duress_receiver::store::open(at).await.unwrap();
    let mut counts = (0, 0);
    for _ in 0..20 {
        let audited = store
            .audit_log()
            .await
            .unwrap()
            .iter()
            .filter(|e| e.action == "incident.escalate" && e.subject == incident.to_string())
            .count();
        let timeline = store
            .incident(incident)
            .await
            .unwrap()
            .unwrap()
            .timeline
            .iter()
            .filter(|t| t.kind == "escalation")
            .count();
        counts = (audited, timeline);
        if audited == timeline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.close().await;
    assert_eq!(
        counts.0, counts.1,
        "audit entries and timeline entries agree"
    );
    counts.0
}

/// Waits (bounded) until every incident of `ids` was escalated, then a few more ticks of both
/// nodes, and asserts each was escalated exactly once.
async fn escalated_once(at: &StoreLocation, ids: &[Uuid], within: Duration) {
    let deadline = Instant::now() + within;
    for &id in ids {
        while escalations(at, id).await == 0 {
            assert!(Instant::now() < deadline, "incident {id} not escalated");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Three more ticks of every node: nobody escalates them again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for &id in ids {
        assert_eq!(escalations(at, id).await, 1, "incident {id}");
    }
}

/// A `psql` session standing for a node that is in the middle of escalating `incident` (its row
/// locked in an open transaction), to be killed with `-9` like a node dying mid-work.
fn node_mid_escalation(url: &str, incident: Uuid) -> (Child, std::process::ChildStdin) {
    // `postgres://USER@/DB?host=DIR` (duress-testpg's form).
    let db = url.split("@/").nth(1).unwrap().split('?').next().unwrap();
    let mut child = Command::new(duress_testpg::bin_dir().unwrap().join("psql"))
        .args(["-X", "-q", "-A", "-t", "-h"])
        .arg(pg().socket_dir())
        .args(["-U", "postgres", "-d", db])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        "BEGIN; SELECT incident_id FROM incidents WHERE incident_id = '{incident}' FOR UPDATE;"
    )
    .unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), incident.to_string(), "the row is locked");
    // Kept open by the caller (psql stays in its transaction while its stdin is open).
    (child, stdin)
}

/// Proves escalation is done exactly once with two nodes running (a `serve` process and an
/// in-process node, both ticking every second), that a node dying in the middle of escalating
/// an incident (its row lock held, then its session killed) neither blocks the other node nor
/// loses the escalation, and that after the first node is killed with `-9` the second escalates
/// a new incident exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn escalation_fires_once_with_two_nodes_and_once_after_a_node_is_killed() {
    let url = pg().fresh_url().unwrap();
    let dir1 = tempfile::tempdir().unwrap();
    let mut n1 = serve_process(&url, dir1.path());
    let n2 = node(&url, Some(dir1.path()), |s| {
        s.console.escalate_after = Duration::from_secs(1);
    })
    .await;
    let at = n2.data_dir();

    let ids = [
        press(&n2, &n2).await,
        press(&n2, &n2).await,
        press(&n2, &n2).await,
    ];
    escalated_once(&at, &ids, Duration::from_secs(15)).await;

    // A node mid-escalation: the other skips the locked row (SKIP LOCKED), and escalates the
    // rest without waiting for it.
    let held = press(&n2, &n2).await;
    let (mut dying, _dying_stdin) = node_mid_escalation(&url, held);
    let free = press(&n2, &n2).await;
    escalated_once(&at, &[free], Duration::from_secs(10)).await;
    assert_eq!(escalations(&at, held).await, 0, "a locked row is skipped");
    // It dies: PostgreSQL ends its transaction with its session, and the row is taken over.
    dying.kill().unwrap();
    dying.wait().unwrap();
    escalated_once(&at, &[held], Duration::from_secs(10)).await;

    // Node 1 killed for real: node 2 alone escalates a new incident, once.
    n1.kill().unwrap();
    n1.wait().unwrap();
    let after = press(&n2, &n2).await;
    escalated_once(&at, &[after], Duration::from_secs(10)).await;
    n2.shutdown().await;
}

/// What the capture server received, by path.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, Bytes)>>>);

impl Capture {
    fn bodies(&self, path: &str) -> Vec<serde_json::Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| serde_json::from_slice(b).unwrap())
            .collect()
    }
}

async fn capture_server(cap: &Capture) -> String {
    async fn take(State(cap): State<Capture>, uri: Uri, body: Bytes) -> StatusCode {
        cap.0.lock().unwrap().push((uri.path().to_owned(), body));
        StatusCode::OK
    }
    let app = axum::Router::new().fallback(take).with_state(cap.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, app).into_future());
    format!("http://{addr}")
}

/// Waits (bounded) until `device` has been notified offline, then several more sweeps of
/// every node, and asserts it was notified exactly once.
async fn offline_once(cap: &Capture, device: &str) {
    let of = |cap: &Capture| {
        cap.bodies("/trouble")
            .iter()
            .filter(|b| b["type"] == "station.offline" && b["data"]["device_id"] == device)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while of(cap) == 0 {
        assert!(
            Instant::now() < deadline,
            "{device}: no offline notification"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(of(cap), 1, "{device}: notified once");
}

/// Proves the supervision sweep notifies a station's offline transition once with two nodes
/// sweeping every second, and that when the node holding the sweep's cluster lease stops, the
/// other takes the sweep over (the lease's connection closed with it) and notifies the next
/// outage, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offline_transition_is_notified_once_with_two_nodes_and_after_one_stops() {
    let cap = Capture::default();
    let http = capture_server(&cap).await;
    let config = Arc::new(
        ReceiverConfig::parse(&format!(
            r#"
[[channels]]
name = "trouble"
kind = "webhook"
url = "{http}/trouble"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[supervision]
channels = ["trouble"]
interval_s = 1
offline_after_s = 2
"#
        ))
        .unwrap(),
    );
    let url = pg().fresh_url().unwrap();
    let with_config = |s: &mut Settings| {
        s.config = Some(config.clone());
        s.notify_retry_base = Duration::from_millis(200);
    };
    let n1 = node(&url, None, with_config).await;
    // Node 1 sweeps first, so it holds the lease when node 2 starts.
    let store = duress_receiver::store::open(&n1.data_dir()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.last_sweep().await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "node 1 never swept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.close().await;
    let n2 = node(&url, Some(n1.dir.path()), with_config).await;

    let quiet = n1.enrolled_agent().await;
    let answer = n2
        .post("/v1/heartbeats", quiet.sign_heartbeat(&quiet.heartbeat()))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    offline_once(&cap, &quiet.device_id).await;

    // The lease holder stops (its tasks aborted, the lease's connection closed with them).
    n1.shutdown().await;
    let next = n2.enrolled_agent().await;
    let answer = n2
        .post("/v1/heartbeats", next.sign_heartbeat(&next.heartbeat()))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    offline_once(&cap, &next.device_id).await;
    n2.shutdown().await;
}
