use std::time::{Duration as StdDuration, Instant};

use base64::Engine as _;
use duress_core::{ParsedJws, Typ};
use time::macros::datetime;

use super::*;
use crate::Secret;
use crate::keystore::require_keystore;

/// A receiver URL nothing listens on (connection refused at once).
const DEAD_RECEIVER: &str = "https://127.0.0.1:9";

fn policy_with(receiver: &str) -> Policy {
    Policy {
        receivers: vec![ReceiverConfig::new(receiver, None).unwrap()],
        location: Location {
            label: Some("Bldg T, Room 1".into()),
            room: Some("1".into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Pretends enrollment happened: a device id in the outbox and a fresh key in the keystore.
fn fake_enroll(engine: &Engine) -> Arc<DeviceKey> {
    let key = Arc::new(engine.keystore().load_or_create().unwrap());
    engine
        .with_outbox(|o| o.meta_set(keys::DEVICE_ID, "dev-test"))
        .unwrap();
    key
}

/// A press before enrollment is never refused: it is stored (unsigned, since there is no key
/// yet), counted as queued, and the status still says the station is not enrolled.
#[test]
fn record_without_enrollment_is_stored_unsigned() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(policy_with(DEAD_RECEIVER), dir.path().join("s")).unwrap();
    let claims = engine.record(EventKind::Duress, Source::Cli).unwrap();
    let stored = engine.event(claims.id).unwrap().expect("durable");
    assert_eq!(stored.first_token, None);
    assert_eq!(stored.claims, claims);
    let status = engine.status().unwrap();
    assert_eq!(status.queued, 1);
    assert!(!status.enrolled);
}

/// Opening an engine needs neither network nor keystore, and creates a private state dir.
#[test]
fn open_touches_nothing_outside_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let engine = Engine::open(Policy::default(), state.clone()).unwrap();
    assert!(state.join(crate::outbox::FILE_NAME).exists());
    let s = engine.status().unwrap();
    assert!(!s.enrolled);
    assert!(s.receivers.is_empty());
    assert_eq!(s.location_label, "(no location configured)");
}

/// `record` makes the signed event durable with no network at all: it works with no receiver
/// configured, a fresh connection sees the row at once, and the first token verifies with the
/// device key and carries the content fixed at the press.
#[test]
fn record_is_durable_before_any_network() {
    require_keystore();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let engine = Engine::open(Policy::default(), state.clone()).unwrap();
    let key = fake_enroll(&engine);
    let claims = engine.record(EventKind::Duress, Source::Cli).unwrap();
    assert_eq!(claims.seq, 1);
    assert_eq!(claims.id.get_version_num(), 7);
    // A separate connection, as after a crash right now, sees it.
    let other = crate::outbox::Outbox::open_in(&state).unwrap();
    let stored = other.get(claims.id).unwrap().expect("durable");
    assert_eq!(stored.claims, claims);
    assert!(stored.delivered_at.is_none());
    let parsed =
        ParsedJws::parse(stored.first_token.as_deref().expect("signed at the press")).unwrap();
    parsed.expect_typ(Typ::Event).unwrap();
    assert_eq!(parsed.header().kid.as_deref(), Some("dev-test"));
    let payload: EventClaims =
        serde_json::from_slice(parsed.verify(&key.verifying_key()).unwrap()).unwrap();
    assert_eq!(payload, claims);
    // The next press takes the next seq; a late press keeps its own occurred_at.
    let late = engine
        .record_at(
            EventKind::Test,
            Source::Cli,
            datetime!(2026-01-01 09:00:00.123456 UTC),
        )
        .unwrap();
    assert_eq!(late.seq, 2);
    assert_eq!(late.occurred_at, datetime!(2026-01-01 09:00:00.123 UTC));
    assert_eq!(engine.status().unwrap().queued, 2);
    engine.keystore().delete().unwrap();
}

/// With every receiver unreachable, delivery gives up at the deadline, and the event stays
/// queued with its attempts and last error recorded — nothing is deleted without a 2xx.
#[tokio::test]
async fn undeliverable_events_stay_queued() {
    require_keystore();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(policy_with(DEAD_RECEIVER), dir.path().join("s")).unwrap();
    fake_enroll(&engine);
    let claims = engine.record(EventKind::Duress, Source::Cli).unwrap();
    let started = Instant::now();
    let report = engine
        .deliver_pending(Some(Instant::now() + StdDuration::from_millis(1500)))
        .await;
    assert!(started.elapsed() < StdDuration::from_secs(5));
    assert!(report.delivered.is_empty());
    assert_eq!(report.queued, 1);
    assert!(report.passes >= 2, "retried fast: {report:?}");
    let stored = engine.event(claims.id).unwrap().unwrap();
    assert!(stored.delivered_at.is_none());
    assert!(stored.attempts >= 2);
    assert!(stored.last_error.is_some());
    let status = engine.status().unwrap();
    assert_eq!(status.queued, 1);
    assert!(status.unreachable_since.is_some());
    assert!(status.last_error.is_some());
    engine.keystore().delete().unwrap();
}

/// No file under the state directory holds the device seed, raw or in any common encoding,
/// after key creation, an enrollment attempt and a recorded (and attempted) event.
#[tokio::test]
async fn seed_is_in_no_file_under_the_state_dir() {
    require_keystore();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let mut policy = policy_with(DEAD_RECEIVER);
    policy.enrollment.token = Some(Secret::new("tok"));
    let engine = Engine::open(policy, state.clone()).unwrap();
    // The enrollment attempt creates the key, then fails to reach the receiver.
    let err = engine.enroll(&EnrollOptions::default()).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable(_)), "{err}");
    let key = engine
        .keystore()
        .load()
        .unwrap()
        .expect("key created by enroll");
    engine
        .with_outbox(|o| o.meta_set(keys::DEVICE_ID, "dev-test"))
        .unwrap();
    engine.record(EventKind::Duress, Source::Cli).unwrap();
    engine
        .deliver_pending(Some(Instant::now() + StdDuration::from_millis(300)))
        .await;
    let _ = engine.status().unwrap();

    let seed = key.seed();
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64_nopad = base64::engine::general_purpose::STANDARD_NO_PAD;
    let url = base64::engine::general_purpose::URL_SAFE;
    let url_nopad = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("raw", seed.to_vec()),
        ("hex", hex::encode(*seed).into_bytes()),
        ("HEX", hex::encode_upper(*seed).into_bytes()),
        ("base64", b64.encode(*seed).into_bytes()),
        ("base64 unpadded", b64_nopad.encode(*seed).into_bytes()),
        ("base64url", url.encode(*seed).into_bytes()),
        ("base64url unpadded", url_nopad.encode(*seed).into_bytes()),
    ];
    let mut files = Vec::new();
    let mut stack = vec![state.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    assert!(
        files.iter().any(|f| f.ends_with(crate::outbox::FILE_NAME)),
        "scanned {files:?}"
    );
    let mut scanned = 0;
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        scanned += bytes.len();
        for (name, needle) in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "the device seed ({name}) is in {}",
                f.display()
            );
        }
    }
    assert!(scanned > 0);
    // The public key is of course allowed; make sure the scan would have seen text at all.
    assert!(!format!("{key:?}").contains(&url_nopad.encode(*seed)));
    engine.keystore().delete().unwrap();
}

/// Enrollment overrides obey the policy: a receiver outside the policy's list, a CA next to a
/// policy list, or a location when the policy sets one are refused before any key is made;
/// without a token there is no enrollment.
#[tokio::test]
async fn enroll_overrides_follow_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(policy_with(DEAD_RECEIVER), dir.path().join("s")).unwrap();
    let other = ReceiverConfig::new("https://elsewhere.example", None).unwrap();
    let e = engine
        .enroll(&EnrollOptions {
            receiver: Some(other),
            token: Some(Secret::new("t")),
            location: None,
        })
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("not a receiver of the policy"),
        "{e}"
    );
    let e = engine
        .enroll(&EnrollOptions {
            receiver: Some(ReceiverConfig::new(DEAD_RECEIVER, Some("/x.pem".into())).unwrap()),
            token: Some(Secret::new("t")),
            location: None,
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ca_cert"), "{e}");
    let e = engine
        .enroll(&EnrollOptions {
            receiver: None,
            token: Some(Secret::new("t")),
            location: Some(Location {
                room: Some("9".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("location"), "{e}");
    let e = engine.enroll(&EnrollOptions::default()).await.unwrap_err();
    assert!(matches!(e, Error::NoEnrollmentToken), "{e}");
    // No policy receivers and no override: nowhere to enroll.
    let engine = Engine::open(Policy::default(), dir.path().join("t")).unwrap();
    let e = engine
        .enroll(&EnrollOptions {
            token: Some(Secret::new("t")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoReceiver), "{e}");
}

/// The corrected clock is the raw clock plus the learned offset, and the offset persists.
#[tokio::test]
async fn learned_offset_corrects_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let raw = Arc::new(crate::clock::OffsetClock::system(Duration::hours(-1)));
    let engine =
        Engine::open_with_clock(Policy::default(), dir.path().join("s"), raw.clone()).unwrap();
    let real = OffsetDateTime::now_utc();
    assert!((engine.now() - real).abs() > Duration::minutes(59));
    engine
        .learn_offset(OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!((engine.now() - OffsetDateTime::now_utc()).abs() < Duration::seconds(2));
    let reopened = Engine::open_with_clock(Policy::default(), dir.path().join("s"), raw).unwrap();
    assert!((reopened.now() - OffsetDateTime::now_utc()).abs() < Duration::seconds(2));
    assert!((reopened.status().unwrap().clock_offset_ms - 3_600_000).abs() < 2_000);
}

/// `run` stops promptly on shutdown even when nothing is enrolled or reachable.
#[tokio::test]
async fn run_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(policy_with(DEAD_RECEIVER), dir.path().join("s")).unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(HotkeyState::NotApplicable);
    let started = Instant::now();
    engine
        .run(tokio::time::sleep(StdDuration::from_millis(700)), rx)
        .await
        .unwrap();
    assert!(started.elapsed() < StdDuration::from_secs(3));
}

/// Hot desks: a user-chosen location is refused unless policy allows it, is used for presses
/// while policy allows it, and stops counting as soon as policy withdraws the permission.
#[test]
fn user_location_only_where_policy_allows() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let desk = Location {
        label: Some("Hot desk 7".into()),
        seat: Some("7".into()),
        ..Default::default()
    };
    let locked = Engine::open(policy_with(DEAD_RECEIVER), state.clone()).unwrap();
    assert!(locked.set_user_location(Some(&desk)).is_err());
    drop(locked);

    let mut allowing = policy_with(DEAD_RECEIVER);
    allowing.tray.allow_user_location = true;
    let engine = Engine::open(allowing, state.clone()).unwrap();
    let too_long = Location {
        label: Some("x".repeat(300)),
        ..Default::default()
    };
    assert!(engine.set_user_location(Some(&too_long)).is_err());
    engine.set_user_location(Some(&desk)).unwrap();
    assert_eq!(engine.effective_location().unwrap(), desk);
    let pressed = engine.record(EventKind::Duress, Source::Tray).unwrap();
    assert_eq!(pressed.location, desk);
    drop(engine);

    let withdrawn = Engine::open(policy_with(DEAD_RECEIVER), state).unwrap();
    assert_eq!(
        withdrawn.effective_location().unwrap().label.as_deref(),
        Some("Bldg T, Room 1")
    );
}

/// SHA-256 hex of a PIN, as policy carries it.
fn pin_hash(pin: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(pin.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A cancel is a signed `cancel` event; without a PIN policy it carries no `cancel_pin`. With
/// one, the right PIN gives `ok`, the duress PIN `duress`, anything else (nothing typed
/// included) `wrong` — and every one of them is recorded and queued the same way.
#[test]
fn cancel_records_the_pin_outcome_in_the_signed_claims() {
    require_keystore();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(Policy::default(), dir.path().join("a")).unwrap();
    let key = fake_enroll(&engine);
    let plain = engine.record_cancel(Source::Tray, Some("1234")).unwrap();
    assert_eq!(plain.kind, EventKind::Cancel);
    assert_eq!(plain.cancel_pin, None, "no PIN asked, none reported");

    let mut policy = Policy::default();
    policy.cancel.pin_sha256 = Some(pin_hash("1234"));
    policy.cancel.duress_pin_sha256 = Some(pin_hash("9999").to_uppercase());
    let engine = Engine::open(policy, dir.path().join("b")).unwrap();
    let key_b = fake_enroll(&engine);
    let mut outcomes = Vec::new();
    for pin in [Some("1234"), Some("9999"), Some("0000"), None] {
        let c = engine.record_cancel(Source::Cli, pin).unwrap();
        let stored = engine.event(c.id).unwrap().expect("durable");
        let token = stored.first_token.expect("signed at once");
        let parsed = ParsedJws::parse(&token).unwrap();
        let claims: EventClaims =
            serde_json::from_slice(parsed.verify(&key_b.verifying_key()).unwrap()).unwrap();
        assert_eq!(claims.kind, EventKind::Cancel);
        outcomes.push(claims.cancel_pin);
    }
    assert_eq!(
        outcomes,
        [
            Some(PinCheck::Ok),
            Some(PinCheck::Duress),
            Some(PinCheck::Wrong),
            Some(PinCheck::Wrong)
        ]
    );
    assert_eq!(engine.status().unwrap().queued, 4, "every cancel is queued");
    let _ = key;
}

/// The acknowledgement state is kept in the state database: another engine on the same state
/// (another process: `duress-agent status`) sees the claimed incidents a heartbeat stored.
#[test]
fn claimed_incidents_are_visible_to_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let engine = Engine::open(Policy::default(), state.clone()).unwrap();
    assert!(engine.status().unwrap().claimed_incidents.is_empty());
    let id = Uuid::now_v7();
    let json = serde_json::to_string(&vec![id]).unwrap();
    engine
        .with_outbox(|o| o.meta_set(keys::CLAIMED_INCIDENTS, &json))
        .unwrap();
    let other = Engine::open(Policy::default(), state).unwrap();
    assert_eq!(other.status().unwrap().claimed_incidents, vec![id]);
}
