//! Every bad input gets its own problem type (RFC 9457, stable `type`) and stores nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Agent, Harness, hmac_sha256, random_key, token_with};
use duress_core::jws::Header;
use duress_core::{DeviceStatus, EventKind, ProblemType, Typ};
use duress_receiver::{Approve, admin};

/// Counts of what refusals must not create.
async fn stored(h: &Harness) -> (usize, usize, usize) {
    (
        admin::list_events(h.data_dir()).await.unwrap().len(),
        admin::list_incidents(h.data_dir()).await.unwrap().len(),
        admin::list_devices(h.data_dir()).await.unwrap().len(),
    )
}

fn header(alg: &str, kid: Option<&str>, typ: Option<&str>) -> Header {
    Header {
        alg: alg.into(),
        kid: kid.map(Into::into),
        typ: typ.map(Into::into),
        jwk: None,
        crit: None,
    }
}

/// Proves each forged or malformed event is refused with its own type and nothing is stored:
/// forged signature, unknown kid, missing kid, malformed JWS, `alg: none`, HS256 keyed with the
/// public key, `crit`, wrong typ, invalid claims, wrong or missing content type, oversize body.
#[tokio::test]
async fn hostile_events_are_refused_each_with_its_own_type() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let before = stored(&h).await;
    let claims = agent.event(EventKind::Duress);
    let payload = serde_json::to_vec(&claims).unwrap();
    let kid = agent.device_id.clone();

    // Signed by another key under the enrolled device's kid.
    let forged = random_key().sign(Typ::Event, Some(&kid), &payload);
    h.post("/v1/events", forged)
        .await
        .problem(ProblemType::BadSignature);

    // A valid signature by a key no device has, under an unknown kid.
    let stranger = random_key().sign(
        Typ::Event,
        Some("0190f0f0-0000-7000-8000-000000000000"),
        &payload,
    );
    h.post("/v1/events", stranger)
        .await
        .problem(ProblemType::UnknownDevice);

    let no_kid = agent.key.sign(Typ::Event, None, &payload);
    h.post("/v1/events", no_kid)
        .await
        .problem(ProblemType::MissingKid);

    for garbage in ["", "not a jws", "a.b.c", "e30.e30.AAAA", "a.b.c.d"] {
        h.post("/v1/events", garbage)
            .await
            .problem(ProblemType::MalformedJws);
    }

    let none = token_with(
        &format!(r#"{{"alg":"none","kid":"{kid}","typ":"duress-event"}}"#),
        &payload,
        b"x",
    );
    h.post("/v1/events", none)
        .await
        .problem(ProblemType::UnsupportedAlgorithm);
    // `alg: none` with the empty signature it normally has: refused as malformed.
    let none_empty = token_with(
        &format!(r#"{{"alg":"none","kid":"{kid}","typ":"duress-event"}}"#),
        &payload,
        b"",
    );
    assert!(none_empty.ends_with('.'));
    h.post("/v1/events", none_empty)
        .await
        .problem(ProblemType::MalformedJws);

    // HS256 with the device's public key as the HMAC secret (the classic confusion attack).
    let hs_header = format!(r#"{{"alg":"HS256","kid":"{kid}","typ":"duress-event"}}"#);
    let unsigned = token_with(&hs_header, &payload, b"");
    let signing_input = unsigned.trim_end_matches('.');
    let public = agent.key.verifying_key().to_bytes();
    let hs256 = token_with(
        &hs_header,
        &payload,
        &hmac_sha256(&public, signing_input.as_bytes()),
    );
    h.post("/v1/events", hs256)
        .await
        .problem(ProblemType::UnsupportedAlgorithm);

    let mut crit = header("Ed25519", Some(&kid), Some("duress-event"));
    crit.crit = Some(vec!["exp".into()]);
    h.post("/v1/events", agent.key.sign_with_header(&crit, &payload))
        .await
        .problem(ProblemType::UnsupportedCrit);

    let heartbeat_typ = agent.key.sign(Typ::Heartbeat, Some(&kid), &payload);
    h.post("/v1/events", heartbeat_typ)
        .await
        .problem(ProblemType::WrongTyp);
    let no_typ = agent
        .key
        .sign_with_header(&header("Ed25519", Some(&kid), None), &payload);
    h.post("/v1/events", no_typ)
        .await
        .problem(ProblemType::WrongTyp);

    let mut not_v7 = claims.clone();
    not_v7.id = uuid::Uuid::from_u128(0x0190f0f0_0000_4000_8000_000000000001); // a v4 id
    h.post("/v1/events", agent.sign_event(&not_v7))
        .await
        .problem(ProblemType::InvalidClaims);
    let not_json = agent.key.sign(Typ::Event, Some(&kid), b"[1,2,3]");
    h.post("/v1/events", not_json)
        .await
        .problem(ProblemType::InvalidClaims);

    let good = agent.sign_event(&claims);
    h.post_as("/v1/events", "text/plain", good.clone().into_bytes())
        .await
        .problem(ProblemType::UnsupportedMediaType);
    h.post_as("/v1/events", "application/json", good.clone().into_bytes())
        .await
        .problem(ProblemType::UnsupportedMediaType);

    let oversize = vec![b'a'; 65 * 1024 + 1];
    h.post_as("/v1/events", "application/jose", oversize)
        .await
        .problem(ProblemType::BodyTooLarge);

    assert_eq!(stored(&h).await, before, "a refusal stored something");
    // And the genuine event still goes through afterwards.
    assert_eq!(h.post("/v1/events", good).await.status, 200);
    h.shutdown().await;
}

/// Proves a pending, disabled or revoked device cannot raise an alarm (403, its own type each)
/// and nothing is stored.
#[tokio::test]
async fn devices_that_may_not_alarm_get_403_by_status() {
    let h = Harness::start().await;
    let manual = h.token(1, Approve::Manual).await;
    let mut pending = h.enrolled_agent_with(&manual).await;
    let mut disabled = h.enrolled_agent().await;
    let mut revoked = h.enrolled_agent().await;
    admin::set_device_status(h.data_dir(), &disabled.device_id, DeviceStatus::Disabled)
        .await
        .unwrap();
    admin::set_device_status(h.data_dir(), &revoked.device_id, DeviceStatus::Revoked)
        .await
        .unwrap();
    for (agent, kind) in [
        (&mut pending, ProblemType::DevicePending),
        (&mut disabled, ProblemType::DeviceDisabled),
        (&mut revoked, ProblemType::DeviceRevoked),
    ] {
        let event = agent.event(EventKind::Duress);
        h.post("/v1/events", agent.sign_event(&event))
            .await
            .problem(kind);
    }
    assert_eq!(h.event_count().await, 0);

    // Approval makes the pending device able to alarm.
    admin::set_device_status(h.data_dir(), &pending.device_id, DeviceStatus::Active)
        .await
        .unwrap();
    let event = pending.event(EventKind::Duress);
    assert_eq!(
        h.post("/v1/events", pending.sign_event(&event))
            .await
            .status,
        200
    );
    h.shutdown().await;
}

/// Proves an event id is owned by the device that first sent it: the same id from another
/// device is 409 id-conflict and does not touch the stored event.
#[tokio::test]
async fn the_same_id_from_another_device_is_a_conflict() {
    let h = Harness::start().await;
    let mut a = h.enrolled_agent().await;
    let b = h.enrolled_agent().await;
    let event = a.event(EventKind::Duress);
    assert_eq!(h.post("/v1/events", a.sign_event(&event)).await.status, 200);
    h.post("/v1/events", b.sign_event(&event))
        .await
        .problem(ProblemType::IdConflict);
    let events = admin::list_events(h.data_dir()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].device_id, a.device_id);
    h.shutdown().await;
}

/// Proves heartbeats and enrollments check `typ` too, and heartbeats check the clock.
#[tokio::test]
async fn wrong_typ_on_heartbeats_and_enrollments_and_heartbeat_skew() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let claims = agent.event(EventKind::Duress);
    let event = agent.sign_event(&claims);
    h.post("/v1/heartbeats", event.clone())
        .await
        .problem(ProblemType::WrongTyp);
    h.post("/v1/enrollments", event)
        .await
        .problem(ProblemType::WrongTyp);

    let mut hb = agent.heartbeat();
    hb.sent_at += time::Duration::minutes(5);
    let p = h
        .post("/v1/heartbeats", agent.sign_heartbeat(&hb))
        .await
        .problem(ProblemType::ClockSkew);
    assert!(p.server_time.is_some());
    let forged = random_key().sign(
        Typ::Heartbeat,
        Some(&agent.device_id),
        &serde_json::to_vec(&agent.heartbeat()).unwrap(),
    );
    h.post("/v1/heartbeats", forged)
        .await
        .problem(ProblemType::BadSignature);
    let device = &admin::list_devices(h.data_dir()).await.unwrap()[0];
    assert!(
        device.last_heartbeat_at.is_none(),
        "refused heartbeats record nothing"
    );
    let _ = Agent::new();
    h.shutdown().await;
}

/// Proves the receiver's key cache never caches a device's *status*: a device that has just
/// raised an alarm (its key now cached) and is then disabled from another process (the admin
/// command line, as here) is refused at once, its heartbeat answered `disabled`; re-enabled, its
/// next alarm is accepted at once; revoked, its heartbeat writes nothing and names no incident.
#[tokio::test]
async fn status_changes_apply_at_once_though_keys_are_cached() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let first = agent.event(EventKind::Duress);
    assert_eq!(
        h.post("/v1/events", agent.sign_event(&first)).await.status,
        200
    );

    admin::set_device_status(h.data_dir(), &agent.device_id, DeviceStatus::Disabled)
        .await
        .unwrap();
    let refused = agent.event(EventKind::Duress);
    h.post("/v1/events", agent.sign_event(&refused))
        .await
        .problem(ProblemType::DeviceDisabled);
    let hb = h
        .post("/v1/heartbeats", agent.sign_heartbeat(&agent.heartbeat()))
        .await;
    assert_eq!(hb.status, 200);
    assert_eq!(hb.json::<serde_json::Value>()["device_status"], "disabled");
    // The committed one is still answered as before (dedupe comes before the status).
    assert_eq!(
        h.post("/v1/events", agent.sign_event(&first)).await.status,
        200
    );

    admin::set_device_status(h.data_dir(), &agent.device_id, DeviceStatus::Active)
        .await
        .unwrap();
    assert_eq!(
        h.post("/v1/events", agent.sign_event(&refused))
            .await
            .status,
        200
    );
    assert_eq!(h.event_count().await, 2);

    admin::set_device_status(h.data_dir(), &agent.device_id, DeviceStatus::Revoked)
        .await
        .unwrap();
    let before = admin::list_devices(h.data_dir()).await.unwrap();
    let hb = h
        .post("/v1/heartbeats", agent.sign_heartbeat(&agent.heartbeat()))
        .await;
    assert_eq!(hb.status, 200);
    let answer = hb.json::<serde_json::Value>();
    assert_eq!(answer["device_status"], "revoked");
    assert_eq!(answer["claimed_incidents"], serde_json::json!([]));
    let after = admin::list_devices(h.data_dir()).await.unwrap();
    assert_eq!(
        format!("{before:?}"),
        format!("{after:?}"),
        "a revoked device's heartbeat wrote something"
    );
    h.shutdown().await;
}
