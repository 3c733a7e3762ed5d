//! Live updates (SSE with replay), escalation, and the claim's way back to the agent.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use common::console::{Console, add_user};
use duress_core::{EventAck, EventKind, HeartbeatAnswer};
use duress_receiver::store::Role;

/// An open SSE response and what has been read of it.
struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(c: &Console, last_event_id: Option<i64>, query: &str) -> Self {
        let mut rb = c
            .client
            .get(format!("{}/events{query}", c.base))
            .header("cookie", c.cookie.clone().unwrap());
        if let Some(id) = last_event_id {
            rb = rb.header("last-event-id", id.to_string());
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Stream {
            resp,
            buf: String::new(),
        }
    }

    /// Reads until a complete frame whose data contains `needle`; returns (id, data).
    async fn until(&mut self, needle: &str, within: Duration) -> (i64, serde_json::Value) {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let id = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("id: "))
                    .map(|v| v.parse::<i64>().unwrap());
                let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
                if let (Some(id), Some(data)) = (id, data)
                    && data.contains(needle)
                {
                    return (id, serde_json::from_str(data).unwrap());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no frame with {needle:?} within {within:?}: {}",
                self.buf
            );
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(other) => panic!("stream ended: {other:?}"),
                Err(_) => panic!("no frame with {needle:?} within {within:?}: {}", self.buf),
            }
        }
    }
}

async fn press(h: &Harness, agent: &mut common::Agent) -> uuid::Uuid {
    let event = agent.event(EventKind::Duress);
    let ack: EventAck = h.post("/v1/events", agent.sign_event(&event)).await.json();
    ack.incident_id.unwrap()
}

/// Proves a new incident reaches a connected console within a second of its commit, and that
/// a console that lost its stream and reconnects with `Last-Event-ID` gets every event it
/// missed, in order, before anything new (no incident is ever missed).
#[tokio::test]
async fn sse_delivers_live_and_replays_after_last_event_id() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let officer = Console::sign_in(&h, "olivia").await;
    let mut a = h.enrolled_agent().await;
    let mut b = h.enrolled_agent().await;

    let mut live = Stream::open(&officer, None, "").await;
    let started = Instant::now();
    let first = press(&h, &mut a).await;
    let (first_id, data) = live.until(&first.to_string(), Duration::from_secs(1)).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(data["kind"], "incident.press");
    assert_eq!(data["id"], first_id);
    drop(live); // the network blip

    let missed = press(&h, &mut b).await;
    let claimed_meanwhile = officer
        .post_form(&format!("/incidents/{first}/claim"), &[])
        .await;
    assert_eq!(claimed_meanwhile.status, 303);

    let mut resumed = Stream::open(&officer, Some(first_id), "").await;
    let (missed_id, data) = resumed
        .until(&missed.to_string(), Duration::from_secs(2))
        .await;
    assert_eq!(
        missed_id,
        first_id + 1,
        "replayed in order, nothing skipped"
    );
    assert_eq!(data["incident_id"], missed.to_string());
    let (claim_id, data) = resumed
        .until("incident.claim", Duration::from_secs(2))
        .await;
    assert!(claim_id > missed_id);
    assert_eq!(data["incident_id"], first.to_string());

    // `?after=` (the id a page was rendered at) replays the same way.
    let mut from_page = Stream::open(&officer, None, &format!("?after={first_id}")).await;
    let (id, _) = from_page
        .until(&missed.to_string(), Duration::from_secs(2))
        .await;
    assert_eq!(id, missed_id);
    h.shutdown().await;
}

/// Proves an incident nobody claims within the configured time is escalated (board, timeline,
/// audit, live event), and that a claimed one is not.
#[tokio::test]
async fn unclaimed_incidents_escalate_after_the_configured_time() {
    let h = Harness::start_with(|s| s.console.escalate_after = Duration::from_secs(1)).await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let officer = Console::sign_in(&h, "olivia").await;
    let mut live = Stream::open(&officer, None, "").await;
    let mut a = h.enrolled_agent().await;
    let mut b = h.enrolled_agent().await;
    let ignored = press(&h, &mut a).await;
    let handled = press(&h, &mut b).await;
    assert_eq!(
        officer
            .post_form(&format!("/incidents/{handled}/claim"), &[])
            .await
            .status,
        303
    );

    let (_, data) = live
        .until("incident.escalation", Duration::from_secs(5))
        .await;
    assert_eq!(data["incident_id"], ignored.to_string());
    let board = officer.get("/api/board").await.text();
    assert!(board.contains("Escalated · unclaimed"), "{board}");
    let page = officer.get(&format!("/incidents/{ignored}")).await.text();
    assert!(page.contains("Not claimed within 1 s: escalated"), "{page}");
    let alarm: serde_json::Value = officer.get("/api/alarm").await.json();
    assert_eq!(alarm["escalated"], 1);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let page = officer.get(&format!("/incidents/{handled}")).await.text();
    assert!(
        !page.contains("escalated"),
        "a claimed incident is not escalated"
    );
    let audit = officer.get("/audit").await;
    assert_eq!(audit.status, 403, "officers do not browse the audit log");
    h.shutdown().await;
}

/// Proves the heartbeat answer's `claimed_incidents` lists the device's open incidents once an
/// officer has claimed them (the agent's covert acknowledgement), and no longer once resolved.
#[tokio::test]
async fn a_claim_shows_in_the_heartbeat_answer() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let officer = Console::sign_in(&h, "olivia").await;
    let mut agent = h.enrolled_agent().await;
    let other = h.enrolled_agent().await;
    let incident = press(&h, &mut agent).await;

    let beat = |agent: &common::Agent| agent.sign_heartbeat(&agent.heartbeat());
    let answer: HeartbeatAnswer = h.post("/v1/heartbeats", beat(&agent)).await.json();
    assert!(answer.claimed_incidents.is_empty(), "not claimed yet");

    assert_eq!(
        officer
            .post_form(&format!("/incidents/{incident}/claim"), &[])
            .await
            .status,
        303
    );
    let answer: HeartbeatAnswer = h.post("/v1/heartbeats", beat(&agent)).await.json();
    assert_eq!(answer.claimed_incidents, vec![incident]);
    let answer: HeartbeatAnswer = h.post("/v1/heartbeats", beat(&other)).await.json();
    assert!(
        answer.claimed_incidents.is_empty(),
        "only the device's own incidents"
    );

    let resolved = officer
        .post_form(
            &format!("/incidents/{incident}/resolve"),
            &[
                ("disposition", "accidental"),
                ("follow_up", "called her back"),
            ],
        )
        .await;
    assert_eq!(resolved.status, 303);
    let answer: HeartbeatAnswer = h.post("/v1/heartbeats", beat(&agent)).await.json();
    assert!(
        answer.claimed_incidents.is_empty(),
        "resolved incidents are not listed"
    );
    h.shutdown().await;
}

/// The receiver's command line on the harness's store (SQLite data dir or PostgreSQL URL).
fn cli_json(h: &Harness, args: &[&str]) -> serde_json::Value {
    let at = h.data_dir();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_duress-receiver"));
    cmd.args(args)
        .args(["--json", "--data-dir"])
        .arg(&at.data_dir);
    if let Some(url) = &at.database {
        cmd.env("DURESS_DATABASE_URL", url.expose());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Issue 18: a cancel sent with the duress PIN (or a wrong PIN) is flagged "Cancel with duress
/// PIN" on the live stream, the board card, the incident page and `incidents list --json`; a
/// cancel with the right PIN shows as "Staff pressed cancel". Neither closes, claims or
/// silences the incident: the board still sounds for both.
#[tokio::test]
async fn a_cancel_with_the_duress_pin_is_flagged_everywhere_and_silences_nothing() {
    use duress_core::PinCheck;
    let h = Harness::start().await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let officer = Console::sign_in(&h, "olivia").await;
    let mut forced = h.enrolled_agent().await;
    let mut genuine = h.enrolled_agent().await;
    let forced_incident = press(&h, &mut forced).await;
    let genuine_incident = press(&h, &mut genuine).await;
    let mut live = Stream::open(&officer, None, "").await;

    let cancel = |agent: &mut common::Agent, pin: PinCheck| {
        let mut claims = agent.event(EventKind::Cancel);
        claims.cancel_pin = Some(pin);
        agent.sign_event(&claims)
    };
    let ack: EventAck = h
        .post("/v1/events", cancel(&mut forced, PinCheck::Duress))
        .await
        .json();
    assert_eq!(ack.incident_id, Some(forced_incident));
    let (_, frame) = live.until("incident.cancel", Duration::from_secs(1)).await;
    assert_eq!(frame["incident_id"], forced_incident.to_string());
    assert_eq!(frame["payload"]["cancel_pin"], "duress");
    assert_eq!(frame["payload"]["cancel_with_duress_pin"], true);
    let ack: EventAck = h
        .post("/v1/events", cancel(&mut genuine, PinCheck::Ok))
        .await
        .json();
    assert_eq!(ack.incident_id, Some(genuine_incident));
    let (_, frame) = live.until("incident.cancel", Duration::from_secs(1)).await;
    assert_eq!(frame["payload"]["cancel_with_duress_pin"], false);

    let board = officer.get("/api/board").await.text();
    let card = |id: uuid::Uuid| -> String {
        let start = board
            .find(&format!("data-incident-id=\"{id}\""))
            .expect("card");
        let end = board[start..].find("</li>").unwrap() + start;
        board[start..end].to_owned()
    };
    let forced_card = card(forced_incident);
    assert!(
        forced_card.contains("Cancel with duress PIN"),
        "{forced_card}"
    );
    assert!(
        !forced_card.contains("Staff pressed cancel"),
        "{forced_card}"
    );
    assert!(forced_card.contains("New · unclaimed"), "still unclaimed");
    let genuine_card = card(genuine_incident);
    assert!(
        genuine_card.contains("Staff pressed cancel"),
        "{genuine_card}"
    );
    assert!(!genuine_card.contains("duress PIN"), "{genuine_card}");

    let page = officer
        .get(&format!("/incidents/{forced_incident}"))
        .await
        .text();
    assert!(page.contains("badge-duress-pin"), "{page}");
    assert!(page.contains("Cancel with duress PIN"), "{page}");
    assert!(
        page.contains("The duress PIN was typed: staff may be forced to cancel"),
        "{page}"
    );
    assert!(
        page.contains("Claim: I am handling this"),
        "still claimable"
    );

    let alarm: serde_json::Value = officer.get("/api/alarm").await.json();
    assert_eq!(alarm["unclaimed"], 2, "a cancel silences nothing: {alarm}");
    assert_eq!(alarm["open"], 2);

    let listed = cli_json(&h, &["incidents", "list"]);
    let of = |id: uuid::Uuid| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["incident_id"] == id.to_string())
            .unwrap()
            .clone()
    };
    let f = of(forced_incident);
    assert_eq!(f["status"], "open");
    assert_eq!(f["cancel_with_duress_pin"], true, "{f:#}");
    assert_eq!(f["events"][1]["kind"], "cancel");
    assert_eq!(f["events"][1]["cancel_pin"], "duress");
    let g = of(genuine_incident);
    assert_eq!(g["cancel_with_duress_pin"], false, "{g:#}");
    assert_eq!(g["events"][1]["cancel_pin"], "ok");
    h.shutdown().await;
}
