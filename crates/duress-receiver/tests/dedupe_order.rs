//! Regression (issue 6): the receiver dedupes right after the signature verifies, before the
//! device-status and send-time checks. Before the fix, a resend of an event the receiver had
//! already committed, from a device disabled since (or with a skewed `sent_at`), was answered
//! 403/422 instead of its stored answer — and, since only a 2xx naming the id dequeues, it
//! stayed queued on the workstation forever.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Harness, random_key};
use duress_core::{DeviceStatus, EventKind, ProblemType, Typ};
use duress_receiver::admin;

/// Proves a committed event resent by its device gets the byte-identical stored answer whether
/// the device is now disabled, revoked, or its clock far off, and nothing more is written; a
/// new event from the disabled device is still refused (403), and a forged resend (wrong key)
/// is still 401 — dedupe never skips the signature.
#[tokio::test]
async fn a_resend_of_a_committed_event_gets_its_answer_whatever_the_status_or_clock() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let event = agent.event(EventKind::Duress);
    let first = h.post("/v1/events", agent.sign_event(&event)).await;
    assert_eq!(first.status, 200, "{}", first.text());

    admin::set_device_status(h.data_dir(), &agent.device_id, DeviceStatus::Disabled)
        .await
        .unwrap();
    // The agent re-signs the same content with a fresh sent_at (it never saw the first answer).
    let resend = event.resent_at(time::OffsetDateTime::now_utc());
    let again = h.post("/v1/events", agent.sign_event(&resend)).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.body, first.body, "the stored answer, byte for byte");

    // A send-time far outside the window: still the stored answer (the event is committed).
    let skewed = event.resent_at(time::OffsetDateTime::now_utc() + time::Duration::hours(24));
    let late = h.post("/v1/events", agent.sign_event(&skewed)).await;
    assert_eq!(late.status, 200, "{}", late.text());
    assert_eq!(late.body, first.body);

    // A new event from the disabled device is refused as before.
    let fresh = agent.event(EventKind::Duress);
    h.post("/v1/events", agent.sign_event(&fresh))
        .await
        .problem(ProblemType::DeviceDisabled);

    // Dedupe comes after the signature: a forged copy of the committed event is 401.
    let forged = random_key().sign(
        Typ::Event,
        Some(&agent.device_id),
        &serde_json::to_vec(&resend).unwrap(),
    );
    h.post("/v1/events", forged)
        .await
        .problem(ProblemType::BadSignature);

    admin::set_device_status(h.data_dir(), &agent.device_id, DeviceStatus::Revoked)
        .await
        .unwrap();
    let revoked = h.post("/v1/events", agent.sign_event(&resend)).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(revoked.body, first.body);

    assert_eq!(h.event_count().await, 1, "repeats write nothing");
    assert_eq!(admin::list_incidents(h.data_dir()).await.unwrap().len(), 1);
    h.shutdown().await;
}

/// Proves dedupe does not let another device borrow an id: the same id signed by a second
/// (disabled) device is still refused by its status, and by an active one with 409.
#[tokio::test]
async fn another_devices_copy_of_an_id_is_not_a_repeat() {
    let h = Harness::start().await;
    let mut a = h.enrolled_agent().await;
    let b = h.enrolled_agent().await;
    let event = a.event(EventKind::Duress);
    assert_eq!(h.post("/v1/events", a.sign_event(&event)).await.status, 200);
    h.post("/v1/events", b.sign_event(&event))
        .await
        .problem(ProblemType::IdConflict);
    admin::set_device_status(h.data_dir(), &b.device_id, DeviceStatus::Disabled)
        .await
        .unwrap();
    h.post("/v1/events", b.sign_event(&event))
        .await
        .problem(ProblemType::DeviceDisabled);
    assert_eq!(h.event_count().await, 1);
    h.shutdown().await;
}
