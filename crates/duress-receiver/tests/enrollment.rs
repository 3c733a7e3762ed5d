//! Enrollment: tokens (hashed, expiry, uses, revocation, approval), proof of possession,
//! idempotent re-enrollment and the failed-attempt limit.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Agent, Harness, random_key};
use duress_core::jws::Header;
use duress_core::{DeviceStatus, EnrollmentAnswer, EnrollmentClaims, ProblemType, Typ};
use duress_receiver::{Approve, admin};

async fn devices(h: &Harness) -> usize {
    admin::list_devices(h.data_dir()).await.unwrap().len()
}

/// Proves an auto token enrolls an active device with a UUIDv7 id, the key, host facts and
/// location, and that a manual token enrolls a pending one.
#[tokio::test]
async fn tokens_enroll_active_or_pending_devices() {
    let h = Harness::start().await;
    let agent = h.enrolled_agent().await;
    let manual = h.token(1, Approve::Manual).await;
    let pending = Agent::new();
    let a: EnrollmentAnswer = h
        .post("/v1/enrollments", pending.enrollment(&manual))
        .await
        .json();
    assert_eq!(a.status, DeviceStatus::Pending);

    let list = admin::list_devices(h.data_dir()).await.unwrap();
    assert_eq!(list.len(), 2);
    let d = list
        .iter()
        .find(|d| d.device_id == agent.device_id)
        .unwrap();
    assert_eq!(
        uuid::Uuid::parse_str(&d.device_id)
            .unwrap()
            .get_version_num(),
        7
    );
    assert_eq!(d.status, DeviceStatus::Active);
    assert_eq!(d.public_jwk, agent.key.public_jwk());
    assert_eq!(d.hostname, "ws-214");
    assert_eq!(d.location, common::location());
    h.shutdown().await;
}

/// Proves each token refusal has its own type and creates no device: unknown, expired,
/// used up, revoked.
#[tokio::test]
async fn bad_tokens_are_refused_each_with_its_own_type() {
    let h = Harness::start().await;
    let expired = admin::create_token(h.data_dir(), 1, Some(Duration::ZERO), Approve::Auto)
        .await
        .unwrap();
    let used = h.token(1, Approve::Auto).await;
    h.enrolled_agent_with(&used).await;
    let revoked = h.token(5, Approve::Auto).await;
    admin::revoke_token(h.data_dir(), &revoked).await.unwrap();
    let before = devices(&h).await;

    let cases = [
        ("det_nope".to_owned(), ProblemType::TokenInvalid),
        (expired, ProblemType::TokenExpired),
        (used, ProblemType::TokenUsedUp),
        (revoked, ProblemType::TokenRevoked),
    ];
    for (token, kind) in cases {
        h.post("/v1/enrollments", Agent::new().enrollment(&token))
            .await
            .problem(kind);
    }
    assert_eq!(devices(&h).await, before);
    h.shutdown().await;
}

/// Proves proof of possession: an enrollment whose jwk is not the signing key, or that has no
/// jwk, is 401 proof-of-possession and creates no device (and uses no token).
#[tokio::test]
async fn enrollment_must_be_signed_by_the_key_it_enrolls() {
    let h = Harness::start().await;
    let token = h.token(1, Approve::Auto).await;
    let victim = random_key();
    let attacker = random_key();
    let claims = EnrollmentClaims {
        token: token.clone(),
        sent_at: common::now(),
        location: common::location(),
        host: common::host(),
    };
    let payload = serde_json::to_vec(&claims).unwrap();
    let mut header = Header {
        alg: "Ed25519".into(),
        kid: None,
        typ: Some(Typ::Enrollment.as_str().into()),
        jwk: Some(victim.public_jwk()),
        crit: None,
    };
    h.post(
        "/v1/enrollments",
        attacker.sign_with_header(&header, &payload),
    )
    .await
    .problem(ProblemType::ProofOfPossession);
    header.jwk = None;
    h.post(
        "/v1/enrollments",
        attacker.sign_with_header(&header, &payload),
    )
    .await
    .problem(ProblemType::ProofOfPossession);
    assert_eq!(devices(&h).await, 0);
    // The token was not spent by the refusals.
    h.enrolled_agent_with(&token).await;
    h.shutdown().await;
}

/// Proves re-enrollment of a known key returns the same device id without spending a use,
/// and that a disabled device's key cannot be enrolled again (409).
#[tokio::test]
async fn re_enrollment_is_idempotent_but_cannot_revive_a_disabled_device() {
    let h = Harness::start().await;
    let token = h.token(1, Approve::Auto).await;
    let agent = Agent::new();
    let first: EnrollmentAnswer = h
        .post("/v1/enrollments", agent.enrollment(&token))
        .await
        .json();
    let again = h.post("/v1/enrollments", agent.enrollment(&token)).await;
    assert_eq!(again.status, 201, "{}", again.text());
    let again: EnrollmentAnswer = again.json();
    assert_eq!(again.device_id, first.device_id);
    assert_eq!(devices(&h).await, 1);

    admin::set_device_status(h.data_dir(), &first.device_id, DeviceStatus::Disabled)
        .await
        .unwrap();
    let other = h.token(1, Approve::Auto).await;
    h.post("/v1/enrollments", agent.enrollment(&other))
        .await
        .problem(ProblemType::KeyAlreadyEnrolled);
    assert_eq!(devices(&h).await, 1);
    h.shutdown().await;
}

/// Proves enrollment clock skew is refused with the server time.
#[tokio::test]
async fn enrollment_checks_the_send_time_window() {
    let h = Harness::start().await;
    let token = h.token(1, Approve::Auto).await;
    let key = random_key();
    let claims = EnrollmentClaims {
        token,
        sent_at: common::now() - time::Duration::hours(2),
        location: common::location(),
        host: common::host(),
    };
    let p = h
        .post(
            "/v1/enrollments",
            key.sign_enrollment(&serde_json::to_vec(&claims).unwrap()),
        )
        .await
        .problem(ProblemType::ClockSkew);
    assert!(p.server_time.is_some());
    assert_eq!(devices(&h).await, 0);
    h.shutdown().await;
}

/// Proves token guessing is cut off: after 10 failed enrollments from one address within a
/// minute the 11th attempt gets 429 (with Retry-After), even with a valid token.
#[tokio::test]
async fn guessing_tokens_hits_429_after_the_limit() {
    let h = Harness::start().await;
    for i in 0..10 {
        h.post(
            "/v1/enrollments",
            Agent::new().enrollment(&format!("det_guess{i}")),
        )
        .await
        .problem(ProblemType::TokenInvalid);
    }
    let valid = h.token(1, Approve::Auto).await;
    let resp = h
        .client
        .post(format!("{}/v1/enrollments", h.receiver.url))
        .header("content-type", "application/jose")
        .body(Agent::new().enrollment(&valid))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["retry-after"], "60");
    common::Answer::read(resp)
        .await
        .problem(ProblemType::TooManyRequests);
    assert_eq!(devices(&h).await, 0);
    h.shutdown().await;
}
