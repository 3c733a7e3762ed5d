//! The alarm path end to end over TLS: enroll, press, incident, grouping, self-tests, cancels,
//! idempotency, late alarms, the two clocks and heartbeats.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Harness, host, location};
use duress_core::{
    DeviceStatus, EventAck, EventKind, HeartbeatAnswer, HotkeyState, ProblemType, Source,
};
use duress_receiver::{Approve, admin};

/// Proves the core promise: a duress press is committed with an incident that carries the
/// location, host facts and source of the press; a second press within the window joins it
/// (press count 2); the 200 answer names the event and its incident.
#[tokio::test]
async fn press_opens_an_incident_and_a_second_press_joins_it() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;

    let first = agent.event(EventKind::Duress);
    let answer = h.post("/v1/events", agent.sign_event(&first)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.content_type, "application/json");
    let ack: EventAck = answer.json();
    assert_eq!(ack.id, first.id);
    assert!(!ack.delayed);
    let incident_id = ack.incident_id.expect("a duress event opens an incident");

    let mut second = agent.event(EventKind::Duress);
    second.source = Source::Tray;
    let ack2: EventAck = h.post("/v1/events", agent.sign_event(&second)).await.json();
    assert_eq!(
        ack2.incident_id,
        Some(incident_id),
        "joins the open incident"
    );

    let incidents = admin::list_incidents(h.data_dir()).await.unwrap();
    assert_eq!(incidents.len(), 1);
    let incident = &incidents[0];
    assert_eq!(incident.incident_id, incident_id);
    assert_eq!(incident.device_id, agent.device_id);
    assert_eq!(incident.status, "open");
    assert_eq!(incident.press_count, 2);
    assert_eq!(incident.kind, EventKind::Duress);
    assert_eq!(incident.source, Source::Hotkey, "source of the first press");
    assert_eq!(incident.location, location());
    assert_eq!(incident.host, host());
    let ids: Vec<_> = incident.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![first.id, second.id]);
    assert_eq!(incident.events[1].source, Source::Tray);

    let devices = admin::list_devices(h.data_dir()).await.unwrap();
    assert_eq!(devices[0].last_seq, Some(2));
    h.shutdown().await;
}

/// Proves the grouping window closes: with a 1 s window, a press 2 s (agent clock) after the
/// first opens a second incident.
#[tokio::test]
async fn a_press_after_the_window_opens_a_new_incident() {
    let h = Harness::start_with(|s| s.grouping_window = Duration::from_secs(1)).await;
    let mut agent = h.enrolled_agent().await;
    let mut first = agent.event(EventKind::Duress);
    first.occurred_at -= time::Duration::seconds(2);
    let a: EventAck = h.post("/v1/events", agent.sign_event(&first)).await.json();
    let second = agent.event(EventKind::Duress);
    let b: EventAck = h.post("/v1/events", agent.sign_event(&second)).await.json();
    assert_ne!(a.incident_id, b.incident_id);
    assert_eq!(admin::list_incidents(h.data_dir()).await.unwrap().len(), 2);
    h.shutdown().await;
}

/// Proves a self-test travels the whole path, is stored and listed apart, never opens or
/// joins a real incident, and is recorded on the device as its last self-test.
#[tokio::test]
async fn a_test_event_is_stored_apart_and_opens_no_incident() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let test = agent.event(EventKind::Test);
    let ack: EventAck = h.post("/v1/events", agent.sign_event(&test)).await.json();
    assert_eq!(ack.id, test.id);
    assert_eq!(ack.incident_id, None);

    // A real press afterwards opens its own incident; the test does not join it either.
    let press = agent.event(EventKind::Duress);
    let _: EventAck = h.post("/v1/events", agent.sign_event(&press)).await.json();
    let test2 = agent.event(EventKind::Test);
    let ack2: EventAck = h.post("/v1/events", agent.sign_event(&test2)).await.json();
    assert_eq!(ack2.incident_id, None);

    let incidents = admin::list_incidents(h.data_dir()).await.unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].press_count, 1);
    assert!(
        incidents[0]
            .events
            .iter()
            .all(|e| e.kind == EventKind::Duress)
    );
    let tests = admin::list_test_events(h.data_dir()).await.unwrap();
    assert_eq!(tests.len(), 2);
    assert!(tests.iter().all(|e| e.incident_id.is_none()));
    let device = &admin::list_devices(h.data_dir()).await.unwrap()[0];
    assert_eq!(device.last_self_test_id, Some(test2.id));
    assert!(device.last_self_test_at.is_some());
    h.shutdown().await;
}

/// Proves a cancel joins the device's open incident (timeline, not press count, stays open)
/// and, with no open incident, is stored alone.
#[tokio::test]
async fn a_cancel_joins_the_open_incident_or_stands_alone() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let lone = agent.event(EventKind::Cancel);
    let ack: EventAck = h.post("/v1/events", agent.sign_event(&lone)).await.json();
    assert_eq!(ack.incident_id, None);

    let press = agent.event(EventKind::Duress);
    let opened: EventAck = h.post("/v1/events", agent.sign_event(&press)).await.json();
    let cancel = agent.event(EventKind::Cancel);
    let joined: EventAck = h.post("/v1/events", agent.sign_event(&cancel)).await.json();
    assert_eq!(joined.incident_id, opened.incident_id);

    let incident = &admin::list_incidents(h.data_dir()).await.unwrap()[0];
    assert_eq!(incident.press_count, 1);
    assert_eq!(incident.status, "open");
    assert!(incident.cancelled_at.is_some());
    assert_eq!(incident.events.len(), 2);
    assert_eq!(incident.events[1].kind, EventKind::Cancel);
    assert_eq!(h.event_count().await, 3);
    h.shutdown().await;
}

/// Proves idempotency: the same JWS posted 10 times gives one stored event and byte-identical
/// answers.
#[tokio::test]
async fn the_same_jws_ten_times_is_one_event_and_one_answer() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let event = agent.event(EventKind::Duress);
    let token = agent.sign_event(&event);
    let mut answers = Vec::new();
    for _ in 0..10 {
        let a = h.post("/v1/events", token.clone()).await;
        assert_eq!(a.status, 200);
        answers.push(a.body);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "answers differ");
    assert_eq!(h.event_count().await, 1);
    assert_eq!(
        admin::list_incidents(h.data_dir()).await.unwrap()[0].press_count,
        1
    );
    h.shutdown().await;
}

/// Proves a resend (same event, re-signed with a later sent_at) gets the original answer.
#[tokio::test]
async fn a_resigned_resend_gets_the_stored_answer() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let event = agent.event(EventKind::Duress);
    let first = h.post("/v1/events", agent.sign_event(&event)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let resent = event.resent_at(common::now());
    let again = h.post("/v1/events", agent.sign_event(&resent)).await;
    assert_eq!(first.body, again.body);
    assert_eq!(h.event_count().await, 1);
    h.shutdown().await;
}

/// Proves dedupe is race-safe: 20 concurrent posts of one event store one row and all get
/// the same 200 answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_store_one_row() {
    let h = std::sync::Arc::new(Harness::start().await);
    let mut agent = h.enrolled_agent().await;
    let event = agent.event(EventKind::Duress);
    let token = agent.sign_event(&event);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let h = h.clone();
            let token = token.clone();
            tokio::spawn(async move { h.post("/v1/events", token).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(a.status, 200, "{}", a.text());
        bodies.push(a.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(h.event_count().await, 1);
    assert_eq!(admin::list_incidents(h.data_dir()).await.unwrap().len(), 1);
}

/// Proves a late alarm is never refused: occurred 3 h ago, sent now → 200, delayed, delay ≈ 3 h.
#[tokio::test]
async fn a_three_hour_old_alarm_is_accepted_and_flagged_delayed() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let mut event = agent.event(EventKind::Duress);
    event.occurred_at -= time::Duration::hours(3);
    let ack: EventAck = h.post("/v1/events", agent.sign_event(&event)).await.json();
    assert!(ack.delayed);
    let three_hours = 3 * 3600 * 1000;
    assert!(
        (three_hours..three_hours + 10_000).contains(&ack.delay_ms),
        "{}",
        ack.delay_ms
    );
    let incident = &admin::list_incidents(h.data_dir()).await.unwrap()[0];
    assert!(incident.delayed);
    assert!(incident.events[0].delayed);
    h.shutdown().await;
}

/// Proves the two clocks: an agent 1 h slow is refused with 422 clock-skew carrying the
/// server time, stores nothing, and after correcting its offset the same event is accepted.
#[tokio::test]
async fn clock_skew_is_refused_with_server_time_and_a_corrected_resend_passes() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let mut event = agent.event(EventKind::Duress);
    event.sent_at -= time::Duration::hours(1);
    event.occurred_at -= time::Duration::hours(1);
    let refused = h.post("/v1/events", agent.sign_event(&event)).await;
    let problem = refused.problem(ProblemType::ClockSkew);
    let server_time = problem.server_time.expect("clock-skew carries server_time");
    assert!((server_time - common::now()).abs() < time::Duration::seconds(5));
    assert_eq!(h.event_count().await, 0);

    let corrected = event.resent_at(server_time);
    let ack: EventAck = h
        .post("/v1/events", agent.sign_event(&corrected))
        .await
        .json();
    assert_eq!(ack.id, event.id);
    assert_eq!(h.event_count().await, 1);
    h.shutdown().await;
}

/// Proves heartbeats record liveness, hotkey state, queue depth and the reported seq, and
/// answer with server time, status and interval.
#[tokio::test]
async fn a_heartbeat_updates_the_device() {
    let h = Harness::start_with(|s| s.heartbeat_interval_s = 30).await;
    let agent = h.enrolled_agent().await;
    let mut hb = agent.heartbeat();
    hb.hotkey = HotkeyState::Unavailable {
        reason: "chord taken".into(),
    };
    let answer = h.post("/v1/heartbeats", agent.sign_heartbeat(&hb)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer: HeartbeatAnswer = answer.json();
    assert_eq!(answer.device_status, DeviceStatus::Active);
    assert_eq!(answer.interval_s, 30);
    assert!(answer.claimed_incidents.is_empty());

    let device = &admin::list_devices(h.data_dir()).await.unwrap()[0];
    assert!(device.last_heartbeat_at.is_some());
    assert_eq!(device.hotkey, Some(hb.hotkey.clone()));
    assert_eq!(device.queued, Some(2));
    assert_eq!(device.reported_last_seq, Some(2));
    assert_eq!(device.agent_version, "0.1.0");
    h.shutdown().await;
}

/// Proves the documented heartbeat choice: a disabled device is answered 200 with its status
/// (and liveness recorded); a revoked one is answered 200 with its status and nothing is written.
#[tokio::test]
async fn heartbeats_of_disabled_and_revoked_devices_report_their_status() {
    let h = Harness::start().await;
    let disabled = h.enrolled_agent().await;
    let revoked = h.enrolled_agent().await;
    admin::set_device_status(h.data_dir(), &disabled.device_id, DeviceStatus::Disabled)
        .await
        .unwrap();
    admin::set_device_status(h.data_dir(), &revoked.device_id, DeviceStatus::Revoked)
        .await
        .unwrap();
    for (agent, status) in [
        (&disabled, DeviceStatus::Disabled),
        (&revoked, DeviceStatus::Revoked),
    ] {
        let a: HeartbeatAnswer = h
            .post("/v1/heartbeats", agent.sign_heartbeat(&agent.heartbeat()))
            .await
            .json();
        assert_eq!(a.device_status, status);
    }
    let devices = admin::list_devices(h.data_dir()).await.unwrap();
    let find = |id: &str| devices.iter().find(|d| d.device_id == id).unwrap();
    assert!(find(&disabled.device_id).last_heartbeat_at.is_some());
    assert!(find(&revoked.device_id).last_heartbeat_at.is_none());
    // Revocation is final.
    assert!(
        admin::set_device_status(h.data_dir(), &revoked.device_id, DeviceStatus::Active)
            .await
            .is_err()
    );
    h.shutdown().await;
}

/// Proves the export carries, per event, the raw token exactly as posted and the public key
/// that verifies it.
#[tokio::test]
async fn export_carries_the_raw_token_and_its_key() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let event = agent.event(EventKind::Duress);
    let token = agent.sign_event(&event);
    assert_eq!(h.post("/v1/events", token.clone()).await.status, 200);
    let exported = admin::export_events(h.data_dir()).await.unwrap();
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0].jws, token);
    assert_eq!(exported[0].device_id, agent.device_id);
    let key = exported[0].public_jwk.to_verifying_key().unwrap();
    duress_core::ParsedJws::parse(&exported[0].jws)
        .unwrap()
        .verify(&key)
        .unwrap();
    let _ = Approve::Auto;
    h.shutdown().await;
}

/// Proves signed acknowledgements (docs/protocol.md §5.4): a new event's answer carries the
/// receiver's signature over {id, received_at, incident_id, kid} by the key `ack-key show`
/// prints; a repeat gets the same bytes; after `ack-key rotate` and a restart, a repeat is
/// answered with the new key's signature (the old key's no longer answers), and `events
/// export` holds both signatures, each verifiable.
#[tokio::test]
async fn acknowledgements_are_signed_and_re_signed_after_a_rotation() {
    use duress_core::TrustedAckKey;
    use duress_receiver::ack_key;
    let h = Harness::start().await;
    let shown = ack_key::AckKeys::load(h.dir.path()).unwrap().show_text();
    let old_kid = shown.lines().last().unwrap().to_owned();
    assert_eq!(old_kid, h.receiver.ack_kid);
    let jwk_line = shown.lines().next().unwrap();
    assert_eq!(
        serde_json::from_str::<duress_core::Jwk>(jwk_line).unwrap(),
        h.receiver.ack_jwk
    );

    let mut agent = h.enrolled_agent().await;
    let ev = agent.event(EventKind::Duress);
    let jws = agent.sign_event(&ev);
    let first = h.post("/v1/events", jws.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let ack: EventAck = first.json();
    let by_thumbprint = [TrustedAckKey::parse(&old_kid).unwrap()];
    let by_jwk = [TrustedAckKey::parse(jwk_line).unwrap()];
    ack.verify_signature(&by_thumbprint).unwrap();
    ack.verify_signature(&by_jwk).unwrap();
    let again = h.post("/v1/events", jws.clone()).await;
    assert_eq!(again.body, first.body, "a repeat gets the same bytes");

    // Rotate, restart on the same data and store.
    let Harness { receiver, dir, .. } = h;
    let database = receiver.store.database.clone();
    receiver.shutdown().await.unwrap();
    let rotated = ack_key::rotate(dir.path()).unwrap();
    let new_kid = rotated.current().kid().to_owned();
    assert_ne!(new_kid, old_kid);
    let mut settings = duress_receiver::Settings::new(dir.path());
    settings.database = database;
    let receiver = duress_receiver::start(settings).await.unwrap();
    assert_eq!(receiver.ack_kid, new_kid);
    let client = common::webpki_client(&receiver.cert_pem_path);
    let h = Harness {
        receiver,
        client,
        dir,
    };
    let repeat = h.post("/v1/events", jws).await;
    assert_eq!(repeat.status, 200, "{}", repeat.text());
    let re: EventAck = repeat.json();
    assert_eq!(
        (re.id, re.received_at, re.incident_id),
        (ack.id, ack.received_at, ack.incident_id)
    );
    re.verify_signature(&[TrustedAckKey::parse(&new_kid).unwrap()])
        .unwrap();
    assert!(re.verify_signature(&by_thumbprint).is_err());
    // Both keys listed (the overlap): either verifies.
    let both = TrustedAckKey::parse_list(&format!("{old_kid};{new_kid}")).unwrap();
    re.verify_signature(&both).unwrap();
    ack.verify_signature(&both).unwrap();

    let exported = admin::export_events(h.data_dir()).await.unwrap();
    assert_eq!(exported.len(), 1);
    let kids: Vec<&str> = exported[0].acks.iter().map(|a| a.kid.as_str()).collect();
    assert_eq!(kids, [old_kid.as_str(), new_kid.as_str()]);
    for a in &exported[0].acks {
        duress_core::ack::verify(
            &both,
            Some(&a.signature()),
            exported[0].id,
            exported[0].received_at,
            exported[0].incident_id,
        )
        .unwrap();
    }
    h.shutdown().await;
}
