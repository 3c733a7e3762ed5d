//! The sender against a tiny local HTTPS stub (its own CA, as the receiver's dev setup has):
//! how answers are classified, failover between receivers, trust only through the pinned CA,
//! and the engine's clock-skew correction end to end.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use duress_agent_core::clock::OffsetClock;
use duress_agent_core::duress_core::{
    AckSigningKey, EventAck, EventClaims, EventKind, Problem, ProblemType, Source,
};
use duress_agent_core::sender::{SendOutcome, Sender};
use duress_agent_core::{Engine, Policy, ReceiverConfig};
use time::OffsetDateTime;
use uuid::Uuid;

mod support;
use support::{send, token_for};

/// What the stub answers to the next request.
#[derive(Debug, Clone)]
enum Answer {
    /// 200 with an ack naming the posted event's id.
    Ack,
    /// 200 with an ack naming some other id.
    AckOther,
    /// 422 clock-skew with the stub's (true) time.
    Skew,
    /// That status with a problem of that type.
    Problem(ProblemType),
    /// A bare 503.
    Unavailable,
    /// 429 too-many-requests with `Retry-After: N`.
    RateLimited(u64),
    /// 200 with an ack naming the id, signed by the acknowledgement key with this seed.
    Signed([u8; 32]),
    /// Like `Signed`, but the signature covers another incident id than the one answered.
    SignedWrong([u8; 32]),
}

#[derive(Clone, Default)]
struct Stub {
    script: Arc<Mutex<VecDeque<Answer>>>,
    /// Every token received, in order.
    seen: Arc<Mutex<Vec<String>>>,
}

fn payload_of(token: &str) -> serde_json::Value {
    let p = token.split('.').nth(1).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p)
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

async fn events(State(stub): State<Stub>, body: Bytes) -> Response {
    let token = String::from_utf8(body.to_vec()).unwrap();
    stub.seen.lock().unwrap().push(token.clone());
    let answer = stub
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Answer::Ack);
    let claims = payload_of(&token);
    let id = Uuid::parse_str(claims["id"].as_str().unwrap()).unwrap();
    let signed_ack = |id, seed: Option<[u8; 32]>, wrong: bool| {
        let received_at = OffsetDateTime::now_utc();
        let incident_id = Some(Uuid::now_v7());
        let ack = seed.map(|seed| {
            let key = AckSigningKey::from_seed(&seed);
            let signed_incident = if wrong {
                Some(Uuid::now_v7())
            } else {
                incident_id
            };
            key.sign(id, received_at, signed_incident)
        });
        axum::Json(EventAck {
            id,
            incident_id,
            received_at,
            delay_ms: 0,
            delayed: false,
            ack,
        })
        .into_response()
    };
    let ack = |id| signed_ack(id, None, false);
    let problem = |p: Problem| {
        (
            StatusCode::from_u16(p.status).unwrap(),
            [(header::CONTENT_TYPE, "application/problem+json")],
            serde_json::to_string(&p).unwrap(),
        )
            .into_response()
    };
    match answer {
        Answer::Ack => ack(id),
        Answer::AckOther => ack(Uuid::now_v7()),
        Answer::Skew => problem(
            Problem::new(ProblemType::ClockSkew, "sent_at off")
                .with_server_time(OffsetDateTime::now_utc()),
        ),
        Answer::Problem(t) => problem(Problem::new(t, "stub says no")),
        Answer::Unavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Answer::RateLimited(secs) => {
            let mut r = problem(Problem::new(ProblemType::TooManyRequests, "slow down"));
            r.headers_mut()
                .insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
            r
        }
        Answer::Signed(seed) => signed_ack(id, Some(seed), false),
        Answer::SignedWrong(seed) => signed_ack(id, Some(seed), true),
    }
}

struct Running {
    url: String,
    ca: PathBuf,
    stub: Stub,
    _dir: tempfile::TempDir,
}

/// Starts an HTTPS stub on 127.0.0.1:0 with a fresh CA; the leaf is signed by the CA.
async fn start(script: &[Answer]) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let ca = support::ca("stub CA");
    let leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();

    let stub = Stub::default();
    stub.script.lock().unwrap().extend(script.iter().cloned());
    let app = Router::new()
        .route("/v1/events", post(events))
        .with_state(stub.clone());
    let url = support::serve_tls(app, vec![leaf.der().clone()], &leaf_key);
    Running {
        url,
        ca: ca_path,
        stub,
        _dir: dir,
    }
}

fn receiver(r: &Running) -> ReceiverConfig {
    ReceiverConfig::new(&r.url, Some(r.ca.clone())).unwrap()
}

/// Each kind of answer is classified as the spec says: a 2xx naming the id is an ack; a 2xx
/// naming another id is not (and with one receiver means unreachable); 422 clock-skew carries
/// the server time; another 4xx from every receiver (here: the only one) is a refusal; a 5xx,
/// a 408 request-timeout (the request did not arrive whole) and a 429 too-many-requests (the
/// device's rate limit) are answers specific to that receiver: "not accepted", retried on the
/// alarm schedule — never "unreachable", since the receiver did answer.
#[tokio::test]
async fn answers_are_classified() {
    let r = start(&[
        Answer::Ack,
        Answer::AckOther,
        Answer::Skew,
        Answer::Problem(ProblemType::DeviceDisabled),
        Answer::Unavailable,
        Answer::Problem(ProblemType::RequestTimeout),
        Answer::Problem(ProblemType::TooManyRequests),
    ])
    .await;
    let sender = Sender::new(&[receiver(&r)]).unwrap();
    let id = Uuid::now_v7();
    match sender.post_event(&token_for(id), id).await {
        SendOutcome::Acked(ack) => assert_eq!(ack.id, id),
        other => panic!("expected an ack: {other:?}"),
    }
    match sender.post_event(&token_for(id), id).await {
        SendOutcome::Unreachable(e) => assert!(e.contains("not an ack"), "{e}"),
        other => panic!("a 2xx for another id is no ack: {other:?}"),
    }
    match sender.post_event(&token_for(id), id).await {
        SendOutcome::ClockSkew { server_time } => {
            assert!((server_time - OffsetDateTime::now_utc()).abs() < time::Duration::seconds(5))
        }
        other => panic!("expected clock skew: {other:?}"),
    }
    match sender.post_event(&token_for(id), id).await {
        SendOutcome::Refused(p) => assert_eq!(p.kind(), Some(ProblemType::DeviceDisabled)),
        other => panic!("expected a refusal: {other:?}"),
    }
    match sender.post_event(&token_for(id), id).await {
        SendOutcome::NotAccepted { problem, detail } => {
            assert_eq!(problem.status, 503);
            assert!(detail.contains("503"), "{detail}")
        }
        other => panic!("expected not accepted: {other:?}"),
    }
    match sender.post_event(&token_for(id), id).await {
        SendOutcome::NotAccepted { problem, .. } => {
            assert_eq!(problem.kind(), Some(ProblemType::RequestTimeout))
        }
        other => panic!("a 408 is transient, not a refusal: {other:?}"),
    }
    match sender.post_event(&token_for(id), id).await {
        SendOutcome::NotAccepted { problem, .. } => {
            assert_eq!(problem.kind(), Some(ProblemType::TooManyRequests))
        }
        other => panic!("a 429 is retry-later, not a refusal: {other:?}"),
    }
}

/// Issue 12: a refusal specific to one receiver (it does not know the device, a 5xx) sends the
/// alarm to the next receiver in the same attempt; a refusal about the device itself (revoked)
/// is final only when every receiver says so — one such refusal beside an unreachable receiver
/// is "not accepted" (fast retry), not final.
#[tokio::test]
async fn only_a_refusal_every_receiver_agrees_on_is_final() {
    let dead = || ReceiverConfig::new("https://127.0.0.1:9", None).unwrap();
    let id = Uuid::now_v7();

    let unknown = start(&[Answer::Problem(ProblemType::UnknownDevice)]).await;
    let good = start(&[]).await;
    let sender = Sender::new(&[dead(), receiver(&unknown), receiver(&good)]).unwrap();
    match sender.post_event(&token_for(id), id).await {
        SendOutcome::Acked(ack) => assert_eq!(ack.id, id),
        other => panic!("the third receiver accepts, in the same attempt: {other:?}"),
    }
    assert_eq!(sender.preferred().as_str(), format!("{}/", good.url));

    let revoked_a = start(&[
        Answer::Problem(ProblemType::DeviceRevoked),
        Answer::Problem(ProblemType::DeviceRevoked),
    ])
    .await;
    let revoked_b = start(&[Answer::Problem(ProblemType::DeviceRevoked)]).await;
    let sender = Sender::new(&[receiver(&revoked_a), receiver(&revoked_b)]).unwrap();
    match sender.post_event(&token_for(id), id).await {
        SendOutcome::Refused(p) => assert_eq!(p.kind(), Some(ProblemType::DeviceRevoked)),
        other => panic!("both receivers say revoked: final: {other:?}"),
    }
    assert_eq!(
        revoked_b.stub.seen.lock().unwrap().len(),
        1,
        "both were asked"
    );

    let sender = Sender::new(&[receiver(&revoked_a), dead()]).unwrap();
    match sender.post_event(&token_for(id), id).await {
        SendOutcome::NotAccepted { problem, detail } => {
            assert_eq!(problem.kind(), Some(ProblemType::DeviceRevoked));
            assert!(detail.contains("127.0.0.1:9"), "{detail}");
        }
        other => panic!("one receiver unreachable: not final: {other:?}"),
    }

    let unknown = start(&[Answer::Problem(ProblemType::UnknownDevice)]).await;
    let sender = Sender::new(&[dead(), receiver(&unknown)]).unwrap();
    match sender.post_event(&token_for(id), id).await {
        SendOutcome::NotAccepted { problem, .. } => {
            assert_eq!(problem.kind(), Some(ProblemType::UnknownDevice))
        }
        other => panic!("primary down, backup does not know the device: {other:?}"),
    }
}

/// A 429 with `Retry-After` keeps that receiver — only that one — out of the following
/// attempts until then: the other receiver is asked meanwhile, and the rate-limited one sees
/// no request.
#[tokio::test]
async fn retry_after_is_honoured_for_that_receiver_only() {
    let limited = start(&[Answer::RateLimited(30)]).await;
    let other = start(&[Answer::Unavailable, Answer::Unavailable, Answer::Ack]).await;
    let sender = Sender::new(&[receiver(&limited), receiver(&other)]).unwrap();
    let id = Uuid::now_v7();
    match sender.post_event(&token_for(id), id).await {
        SendOutcome::NotAccepted { problem, .. } => {
            assert_eq!(problem.kind(), Some(ProblemType::TooManyRequests))
        }
        other => panic!("429 then 503: not accepted: {other:?}"),
    }
    match sender.post_event(&token_for(id), id).await {
        SendOutcome::NotAccepted { problem, detail } => {
            assert_eq!(problem.kind(), Some(ProblemType::TooManyRequests));
            assert!(detail.contains("not tried for another"), "{detail}");
        }
        other => panic!("still rate-limited, the other 503: {other:?}"),
    }
    assert_eq!(
        limited.stub.seen.lock().unwrap().len(),
        1,
        "Retry-After honoured"
    );
    assert!(matches!(
        sender.post_event(&token_for(id), id).await,
        SendOutcome::Acked(_)
    ));
    assert_eq!(limited.stub.seen.lock().unwrap().len(), 1);
    assert_eq!(other.stub.seen.lock().unwrap().len(), 3);
}

/// A dead first receiver, or one answering 5xx, fails over to the next in order; the one that
/// answered is remembered.
#[tokio::test]
async fn failover_in_policy_order() {
    let bad = start(&[Answer::Unavailable]).await;
    let good = start(&[]).await;
    let dead = ReceiverConfig::new("https://127.0.0.1:9", None).unwrap();
    let sender = Sender::new(&[dead, receiver(&bad), receiver(&good)]).unwrap();
    let id = Uuid::now_v7();
    assert!(matches!(
        sender.post_event(&token_for(id), id).await,
        SendOutcome::Acked(_)
    ));
    assert_eq!(sender.preferred().as_str(), format!("{}/", good.url));
    assert_eq!(bad.stub.seen.lock().unwrap().len(), 1);
    assert_eq!(good.stub.seen.lock().unwrap().len(), 1);
}

/// The stub's certificate is trusted only through the CA pinned for it: without `ca_cert` the
/// TLS handshake fails and nothing is sent.
#[tokio::test]
async fn trust_comes_from_the_pinned_ca() {
    let r = start(&[]).await;
    let unpinned = ReceiverConfig::new(&r.url, None).unwrap();
    let sender = Sender::new(&[unpinned]).unwrap();
    let id = Uuid::now_v7();
    match sender.post_event(&token_for(id), id).await {
        SendOutcome::Unreachable(e) => assert!(e.to_lowercase().contains("certificate"), "{e}"),
        other => panic!("an unknown CA must not be trusted: {other:?}"),
    }
    assert!(r.stub.seen.lock().unwrap().is_empty());
}

/// An engine whose clock is an hour slow is told the server time, learns the offset, re-signs
/// the same event with a corrected `sent_at` and gets it acknowledged — all in one delivery.
/// (Uses the real keystore.)
#[tokio::test]
async fn clock_skew_is_corrected_and_the_event_resent() {
    let r = start(&[Answer::Skew, Answer::Ack]).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy {
        receivers: vec![receiver(&r)],
        ..Default::default()
    };
    let slow = Arc::new(OffsetClock::system(time::Duration::hours(-1)));
    let engine = Engine::open_with_clock(policy, dir.path().join("s"), slow).unwrap();
    require_keystore(&engine);
    // Enrolled by hand: a device id in the outbox.
    let outbox = duress_agent_core::outbox::Outbox::open_in(engine.state_dir()).unwrap();
    let mut outbox = outbox;
    outbox
        .meta_set(duress_agent_core::outbox::keys::DEVICE_ID, "dev-skew")
        .unwrap();
    drop(outbox);
    let event = engine.record(EventKind::Duress, Source::Cli).unwrap();
    let report = engine
        .deliver_pending(Some(Instant::now() + Duration::from_secs(10)))
        .await;
    assert_eq!(report.delivered, vec![event.id], "{report:?}");
    let seen = r.stub.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let first: EventClaims = serde_json::from_value(payload_of(&seen[0])).unwrap();
    let second: EventClaims = serde_json::from_value(payload_of(&seen[1])).unwrap();
    let now = OffsetDateTime::now_utc();
    assert!((first.sent_at - now).abs() > time::Duration::minutes(59));
    assert!((second.sent_at - now).abs() < time::Duration::seconds(5));
    assert_eq!(second.id, first.id);
    assert_eq!(second.seq, first.seq);
    assert_eq!(second.occurred_at, first.occurred_at);
    let offset = engine.status().unwrap().clock_offset_ms;
    assert!((offset - 3_600_000).abs() < 5_000, "{offset}");
    engine.keystore().delete().unwrap();
}

fn require_keystore(engine: &Engine) {
    if let Err(e) = engine.keystore().load_or_create() {
        panic!(
            "\n\n*** THE OS KEYSTORE IS NOT REACHABLE: {e}\n*** Run inside dbus-run-session with an \
             unlocked gnome-keyring (scripts/with-keyring cargo test -p duress-agent-core).\n\n"
        );
    }
}

// ---- signed acknowledgements (docs/protocol.md §5.4) ---------------------------------------

const ACK_SEED: [u8; 32] = [21u8; 32];
const NEW_ACK_SEED: [u8; 32] = [22u8; 32];

fn ack_key(seed: [u8; 32]) -> AckSigningKey {
    AckSigningKey::from_seed(&seed)
}

fn jwk_json(seed: [u8; 32]) -> String {
    serde_json::to_string(ack_key(seed).public_jwk()).unwrap()
}

fn with_ack_key(r: &Running, spec: &str) -> ReceiverConfig {
    let mut c = receiver(r);
    c.ack_key = Some(spec.to_owned());
    c
}

fn unverified(outcome: &SendOutcome<EventAck>, why: &str) {
    match outcome {
        SendOutcome::Unreachable(e) => {
            assert!(
                e.contains(duress_agent_core::sender::ACK_NOT_VERIFIED),
                "{e}"
            );
            assert!(e.contains(why), "{e}");
        }
        other => panic!("expected an unverified answer, got {other:?}"),
    }
}

/// With `ack_key` (as a JWK or as its thumbprint), only an answer whose signature verifies is
/// an acknowledgement: an unsigned 200 naming the id, a signature over other facts and a
/// signature by another key are not; without `ack_key`, an unsigned answer is accepted as
/// before.
#[tokio::test]
async fn with_an_ack_key_only_a_valid_signature_acknowledges() {
    let key = ack_key(ACK_SEED);
    for spec in [jwk_json(ACK_SEED), key.kid().to_owned()] {
        let r = start(&[
            Answer::Ack,
            Answer::SignedWrong(ACK_SEED),
            Answer::Signed(NEW_ACK_SEED),
            Answer::Signed(ACK_SEED),
        ])
        .await;
        let sender = Sender::new(&[with_ack_key(&r, &spec)]).unwrap();
        unverified(&send(&sender).await, "no acknowledgement signature");
        unverified(&send(&sender).await, "does not verify");
        unverified(&send(&sender).await, "does not list");
        assert!(matches!(send(&sender).await, SendOutcome::Acked(_)));
    }
    // No key: as before.
    let r = start(&[Answer::Ack]).await;
    let sender = Sender::new(&[receiver(&r)]).unwrap();
    assert!(!sender.acks_verified());
    assert!(matches!(send(&sender).await, SendOutcome::Acked(_)));
}

/// Key rotation with overlap: while the policy lists both keys, answers signed by either are
/// acknowledgements; once it lists only the new one, the old key's are not.
#[tokio::test]
async fn rotation_overlap_accepts_both_listed_keys() {
    let old = ack_key(ACK_SEED);
    let new = ack_key(NEW_ACK_SEED);
    let r = start(&[
        Answer::Signed(ACK_SEED),
        Answer::Signed(NEW_ACK_SEED),
        Answer::Signed(ACK_SEED),
        Answer::Signed(NEW_ACK_SEED),
    ])
    .await;
    let both = Sender::new(&[with_ack_key(
        &r,
        &format!("{}; {}", old.kid(), jwk_json(NEW_ACK_SEED)),
    )])
    .unwrap();
    assert!(matches!(send(&both).await, SendOutcome::Acked(_)));
    assert!(matches!(send(&both).await, SendOutcome::Acked(_)));
    let new_only = Sender::new(&[with_ack_key(&r, new.kid())]).unwrap();
    unverified(&send(&new_only).await, "does not list");
    assert!(matches!(send(&new_only).await, SendOutcome::Acked(_)));
}

/// The engine keeps an alarm whose answers are not signed by the policy's key queued, retries
/// it, and its status (and status line, after the grace) says why; the first validly signed
/// answer delivers it and clears that. (Uses the real keystore.)
#[tokio::test]
async fn an_unverified_answer_keeps_the_alarm_queued_and_status_says_why() {
    let r = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy {
        receivers: vec![with_ack_key(&r, ack_key(ACK_SEED).kid())],
        ..Default::default()
    };
    let engine = Engine::open(policy.clone(), dir.path().join("s")).unwrap();
    require_keystore(&engine);
    let mut outbox = duress_agent_core::outbox::Outbox::open_in(engine.state_dir()).unwrap();
    outbox
        .meta_set(duress_agent_core::outbox::keys::DEVICE_ID, "dev-ack")
        .unwrap();
    drop(outbox);
    assert_eq!(engine.status().unwrap().acknowledgements, "verified");
    let event = engine.record(EventKind::Duress, Source::Cli).unwrap();
    // The stub answers every attempt with an unsigned 200 naming the id.
    let report = engine
        .deliver_pending(Some(Instant::now() + Duration::from_secs(3)))
        .await;
    assert!(report.delivered.is_empty(), "{report:?}");
    assert_eq!(report.queued, 1);
    let attempts = r.stub.seen.lock().unwrap().len();
    assert!(attempts >= 2, "retried: {attempts} attempts");
    let s = engine.status().unwrap();
    assert_eq!(s.queued, 1);
    let since = s
        .ack_unverified_since
        .expect("the status records the failure");
    let reason = s.ack_unverified_reason.clone().unwrap();
    assert!(reason.contains("no acknowledgement signature"), "{reason}");
    let line = duress_agent_core::status_line::status_line(
        &s,
        &policy,
        since + time::Duration::seconds(31),
        time::UtcOffset::UTC,
    );
    assert!(
        line.text
            .starts_with("Duress: receiver answer not verified since")
            && line.text.ends_with("1 alert queued"),
        "{}",
        line.text
    );
    assert!(
        engine
            .event(event.id)
            .unwrap()
            .unwrap()
            .delivered_at
            .is_none()
    );

    // Now the receiver signs with the configured key.
    r.stub
        .script
        .lock()
        .unwrap()
        .extend([Answer::Signed(ACK_SEED)]);
    let report = engine
        .deliver_pending(Some(Instant::now() + Duration::from_secs(5)))
        .await;
    assert_eq!(report.delivered, vec![event.id], "{report:?}");
    let s = engine.status().unwrap();
    assert_eq!((s.queued, s.ack_unverified_since), (0, None));
    engine.keystore().delete().unwrap();
}

/// Without `ack_key`, the status says acknowledgements are not verified.
#[test]
fn without_a_key_the_status_says_acknowledgements_are_not_verified() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy {
        receivers: vec![ReceiverConfig::new("https://127.0.0.1:9", None).unwrap()],
        ..Default::default()
    };
    let engine = Engine::open(policy, dir.path().join("s")).unwrap();
    assert_eq!(
        engine.status().unwrap().acknowledgements,
        "acknowledgements not verified"
    );
}

/// Issue 12, in the engine: primary down and the backup refusing `unknown-device` → the alarm
/// stays queued on the fast schedule (many attempts within 2 s, never the 60 s of a final
/// refusal) and the status line says "alert not accepted by the receiver: …", never "on"; once
/// the backup accepts, the next pass delivers it and the line is "on" again.
#[tokio::test]
async fn a_refusing_backup_shows_in_the_status_line_and_is_retried_fast() {
    let backup = start(&vec![Answer::Problem(ProblemType::UnknownDevice); 1000]).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy {
        receivers: vec![
            ReceiverConfig::new("https://127.0.0.1:9", None).unwrap(),
            receiver(&backup),
        ],
        ..Default::default()
    };
    let engine = Engine::open(policy.clone(), dir.path().join("s")).unwrap();
    require_keystore(&engine);
    let mut outbox = duress_agent_core::outbox::Outbox::open_in(engine.state_dir()).unwrap();
    outbox
        .meta_set(duress_agent_core::outbox::keys::DEVICE_ID, "dev-failover")
        .unwrap();
    drop(outbox);
    let event = engine.record(EventKind::Duress, Source::Cli).unwrap();
    let report = engine
        .deliver_pending(Some(Instant::now() + Duration::from_secs(2)))
        .await;
    assert!(
        report.delivered.is_empty() && report.refused.is_empty(),
        "{report:?}"
    );
    let attempts = backup.stub.seen.lock().unwrap().len();
    assert!(attempts >= 3, "fast schedule: {attempts} attempts in 2 s");
    let s = engine.status().unwrap();
    assert_eq!(s.queued, 1);
    assert!(s.unreachable_since.is_none(), "the backup answered: {s:?}");
    let line = duress_agent_core::status_line::status_line(
        &s,
        &policy,
        OffsetDateTime::now_utc(),
        time::UtcOffset::UTC,
    );
    assert_eq!(
        line.text,
        "Duress: alert not accepted by the receiver: unknown-device (HTTP 401) — 1 alert queued"
    );

    backup.stub.script.lock().unwrap().clear();
    let t0 = Instant::now();
    let report = engine
        .deliver_pending(Some(Instant::now() + Duration::from_secs(5)))
        .await;
    assert_eq!(report.delivered, vec![event.id], "{report:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let s = engine.status().unwrap();
    assert_eq!((s.queued, s.alarm_refused_reason.as_deref()), (0, None));
    let line = duress_agent_core::status_line::status_line(
        &s,
        &policy,
        OffsetDateTime::now_utc(),
        time::UtcOffset::UTC,
    );
    assert_eq!(line.text, "Duress: on");
    engine.keystore().delete().unwrap();
}
