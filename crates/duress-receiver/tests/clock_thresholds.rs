//! The receiver's time thresholds, tested by moving its clock (`duress_receiver::clock::advance`)
//! instead of sleeping through them: stations stale and offline, console sessions idle and at
//! their lifetime, escalation of an unclaimed incident, and enrollment-token expiry.
//!
//! The clock offset is process-wide, so the cases of this binary run one at a time (`SERIAL`),
//! each starting from the system clock; the test "agent" of `common` signs with the receiver's
//! clock, so its requests stay inside the clock window wherever the clock has been moved.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Harness;
use common::console::{Console, add_user};
use duress_core::{EventKind, ProblemType};
use duress_receiver::clock;
use duress_receiver::store::Role;
use duress_receiver::{Approve, admin};

/// Serialises the cases: they share the process-wide clock offset.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the lock and puts the clock back to the system clock when the case ends (or fails).
struct ClockCase(#[allow(dead_code)] tokio::sync::MutexGuard<'static, ()>);

impl ClockCase {
    async fn begin() -> Self {
        let guard = SERIAL.lock().await;
        clock::reset();
        ClockCase(guard)
    }
}

impl Drop for ClockCase {
    fn drop(&mut self) {
        clock::reset();
    }
}

/// The liveness word the Stations page shows for `device_id`.
fn station_state(html: &str, device_id: &str) -> String {
    let row = html
        .split("<tr class=\"station\"")
        .find(|r| r.contains(&format!("data-device-id=\"{device_id}\"")))
        .unwrap_or_else(|| panic!("no row for {device_id} in the Stations page"));
    let start = row.find("class=\"state state-").expect("a state cell") + "class=\"state ".len();
    let rest = &row[start..];
    let text_start = rest.find('>').unwrap() + 1;
    let text_end = rest.find('<').unwrap();
    rest[text_start..text_end].to_owned()
}

/// Online within one heartbeat interval plus the grace, stale until two intervals plus the
/// grace, then offline — on the Stations page an officer reads.
#[tokio::test]
async fn stations_go_stale_then_offline_on_the_receiver_clock() {
    let _case = ClockCase::begin().await;
    let h = Harness::start().await;
    add_user(h.data_dir(), "officer", Role::Officer).await;
    let agent = h.enrolled_agent().await;
    let hb = h
        .post("/v1/heartbeats", agent.sign_heartbeat(&agent.heartbeat()))
        .await;
    assert_eq!(hb.status, 200, "{}", hb.text());
    let console = Console::sign_in(&h, "officer").await;
    let state = |html: String| station_state(&html, &agent.device_id);

    // Defaults: a 60 s heartbeat interval, 30 s grace.
    assert_eq!(state(console.get("/stations").await.text()), "online");
    clock::advance(Duration::from_secs(85));
    assert_eq!(
        state(console.get("/stations").await.text()),
        "online",
        "85 s after a heartbeat is within one interval plus the grace"
    );
    clock::advance(Duration::from_secs(10)); // 95 s
    assert_eq!(state(console.get("/stations").await.text()), "stale");
    clock::advance(Duration::from_secs(50)); // 145 s
    assert_eq!(
        state(console.get("/stations").await.text()),
        "stale",
        "145 s is within two intervals plus the grace"
    );
    clock::advance(Duration::from_secs(10)); // 155 s
    assert_eq!(state(console.get("/stations").await.text()), "offline");

    // A heartbeat at the moved time brings it back.
    let hb = h
        .post("/v1/heartbeats", agent.sign_heartbeat(&agent.heartbeat()))
        .await;
    assert_eq!(hb.status, 200, "{}", hb.text());
    assert_eq!(state(console.get("/stations").await.text()), "online");
    h.shutdown().await;
}

/// A session unused for `session_idle` is over; one in use all along is over at
/// `session_lifetime` anyway.
#[tokio::test]
async fn sessions_end_when_idle_and_at_their_lifetime() {
    let _case = ClockCase::begin().await;
    let h = Harness::start_with(|s| {
        s.console.session_idle = Duration::from_secs(15 * 60);
        s.console.session_lifetime = Duration::from_secs(8 * 3600);
    })
    .await;
    add_user(h.data_dir(), "officer", Role::Officer).await;

    // Idle: 14 min unused is still signed in (and the use touches it) …
    let idle = Console::sign_in(&h, "officer").await;
    clock::advance(Duration::from_secs(14 * 60));
    assert_eq!(idle.get("/").await.status, 200);
    // … 14 more minutes after that use, still in; 16 minutes unused, out.
    clock::advance(Duration::from_secs(14 * 60));
    assert_eq!(idle.get("/").await.status, 200);
    clock::advance(Duration::from_secs(16 * 60));
    let (out, headers) = idle.get_response("/").await;
    assert_eq!(out.status, 303, "an idle session must be over");
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some("/login")
    );
    // Over means deleted, not only refused once.
    clock::reset();
    assert_eq!(idle.get("/").await.status, 303);

    // Lifetime: used every 10 minutes, never idle, but over after 8 h.
    let busy = Console::sign_in(&h, "officer").await;
    for _ in 0..47 {
        clock::advance(Duration::from_secs(10 * 60));
        assert_eq!(busy.get("/").await.status, 200);
    }
    // 7 h 50 min so far; 11 minutes more passes the 8 h lifetime.
    clock::advance(Duration::from_secs(11 * 60));
    let out = busy.get("/").await;
    assert_eq!(out.status, 303, "a session must end at its lifetime");
    h.shutdown().await;
}

/// An open incident nobody claims is escalated once `escalate_after` has passed on the
/// receiver's clock (the escalation task runs every second), and not before.
#[tokio::test]
async fn an_unclaimed_incident_escalates_after_the_configured_time() {
    let _case = ClockCase::begin().await;
    let h = Harness::start_with(|s| {
        s.console.escalate_after = Duration::from_secs(90);
    })
    .await;
    let mut agent = h.enrolled_agent().await;
    let claims = agent.event(EventKind::Duress);
    let answer = h.post("/v1/events", agent.sign_event(&claims)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    let escalated = || async {
        admin::list_incidents(h.data_dir())
            .await
            .unwrap()
            .iter()
            .filter(|i| i.escalated_at.is_some())
            .count()
    };
    clock::advance(Duration::from_secs(80));
    // Three ticks of the escalation task at 80 s: nothing due yet.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    assert_eq!(escalated().await, 0, "escalated before 90 s");

    clock::advance(Duration::from_secs(15)); // 95 s
    let mut waited = 0;
    while escalated().await == 0 {
        assert!(waited < 50, "not escalated within 5 s of being due");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(escalated().await, 1);
    h.shutdown().await;
}

/// An enrollment token is refused once its lifetime has passed.
#[tokio::test]
async fn an_enrollment_token_expires_at_its_lifetime() {
    let _case = ClockCase::begin().await;
    let h = Harness::start().await;
    let token = admin::create_token(
        h.data_dir(),
        2,
        Some(Duration::from_secs(3600)),
        Approve::Auto,
    )
    .await
    .unwrap();
    clock::advance(Duration::from_secs(59 * 60));
    let _first = h.enrolled_agent_with(&token).await;

    clock::advance(Duration::from_secs(2 * 60)); // 61 min
    let late = common::Agent::new();
    let answer = h.post("/v1/enrollments", late.enrollment(&token)).await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    answer.problem(ProblemType::TokenExpired);
    h.shutdown().await;
}
