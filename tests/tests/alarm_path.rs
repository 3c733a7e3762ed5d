//! The alarm path end to end, in one process: the real receiver (`duress_receiver::start`,
//! TLS on 127.0.0.1:0, SQLite) driven by the agent engine's real client (reqwest + rustls,
//! the device key in the real Secret Service, the SQLite outbox).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duress_agent_core::clock::OffsetClock;
use duress_agent_core::{Engine, EnrollOptions, Policy};
use duress_core::{EventKind, Source};
use duress_receiver::{Approve, RunningReceiver, Settings};
use duress_tests::require_secret_service;

struct World {
    _tmp: tempfile::TempDir,
    receiver: RunningReceiver,
    data_dir: std::path::PathBuf,
    state_dir: std::path::PathBuf,
    policy: Policy,
}

async fn world() -> World {
    require_secret_service();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("receiver");
    let receiver = duress_receiver::start(Settings::new(&data_dir))
        .await
        .expect("receiver starts");
    let token = duress_receiver::admin::create_token(
        &data_dir,
        1,
        Some(Duration::from_secs(3600)),
        Approve::Auto,
    )
    .await
    .expect("token");
    let policy = Policy::from_toml_str(
        &format!(
            r#"
[[receivers]]
url = "{url}"
ca_cert = "{ca}"
[enrollment]
token = "{token}"
[location]
label = "Financial Aid, front desk"
country = "US"
A1 = "MN"
A3 = "Saint Paul"
RD = "University Ave"
HNO = "100"
BLD = "A"
FLR = "2"
ROOM = "214"
"#,
            url = receiver.url,
            ca = receiver.cert_pem_path.display()
        ),
        "test policy",
    )
    .expect("policy parses");
    World {
        state_dir: tmp.path().join("agent"),
        _tmp: tmp,
        receiver,
        data_dir,
        policy,
    }
}

async fn enrolled_engine(w: &World) -> Engine {
    let engine = Engine::open(w.policy.clone(), w.state_dir.clone()).expect("engine opens");
    let answer = engine
        .enroll(&EnrollOptions::default())
        .await
        .expect("enrollment succeeds");
    assert_eq!(answer.status, duress_core::DeviceStatus::Active);
    engine
}

async fn deliver_all(engine: &Engine) {
    let report = engine
        .deliver_pending(Some(Instant::now() + Duration::from_secs(10)))
        .await;
    assert_eq!(report.queued, 0, "undelivered: {report:?}");
}

/// Enroll → trigger → one incident carrying the location, host facts and source; a second
/// press within the grouping window joins it (press count 2); a self-test is stored as a test,
/// opens no incident, and shows as the station's last self-test on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn press_opens_incident_second_press_joins_test_stays_apart() {
    let w = world().await;
    let engine = enrolled_engine(&w).await;

    let first = engine
        .record(EventKind::Duress, Source::Hotkey)
        .expect("durable");
    assert_eq!(
        engine.status().expect("status").queued,
        1,
        "durable before any send"
    );
    deliver_all(&engine).await;

    let incidents = duress_receiver::admin::list_incidents(&w.data_dir)
        .await
        .expect("list");
    assert_eq!(incidents.len(), 1);
    let inc = &incidents[0];
    assert_eq!(inc.press_count, 1);
    assert_eq!(inc.source, Source::Hotkey);
    assert_eq!(
        inc.location.label.as_deref(),
        Some("Financial Aid, front desk")
    );
    assert_eq!(inc.location.room.as_deref(), Some("214"));
    assert!(
        !inc.host.hostname.is_empty(),
        "host facts travel with the alarm"
    );
    assert!(!inc.host.agent_version.is_empty());
    assert_eq!(inc.events[0].id, first.id);
    assert!(!inc.delayed);

    let second = engine
        .record(EventKind::Duress, Source::Tray)
        .expect("durable");
    deliver_all(&engine).await;
    let incidents = duress_receiver::admin::list_incidents(&w.data_dir)
        .await
        .expect("list");
    assert_eq!(
        incidents.len(),
        1,
        "a second press within the window joins the incident"
    );
    assert_eq!(incidents[0].press_count, 2);
    assert_eq!(incidents[0].events[1].id, second.id);
    assert_eq!(second.seq, first.seq + 1);

    let test = engine
        .record(EventKind::Test, Source::Tray)
        .expect("durable");
    deliver_all(&engine).await;
    let incidents = duress_receiver::admin::list_incidents(&w.data_dir)
        .await
        .expect("list");
    assert_eq!(incidents.len(), 1, "a test opens no incident");
    assert_eq!(incidents[0].press_count, 2, "a test joins no incident");
    let tests = duress_receiver::admin::list_test_events(&w.data_dir)
        .await
        .expect("tests");
    assert_eq!(tests.len(), 1);
    assert_eq!(tests[0].id, test.id);
    assert_eq!(tests[0].incident_id, None);
    let status = engine.status().expect("status");
    assert_eq!(status.last_self_test.map(|t| t.id), Some(test.id));
    let devices = duress_receiver::admin::list_devices(&w.data_dir)
        .await
        .expect("devices");
    assert_eq!(devices[0].last_self_test_id, Some(test.id));

    w.receiver.shutdown().await.expect("shutdown");
}

/// A late alarm — pressed 3 hours ago, delivered now — is accepted and flagged delayed with
/// its delay; its `occurred_at` is the press time, not the send time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_alarm_is_accepted_and_flagged_delayed() {
    let w = world().await;
    let engine = enrolled_engine(&w).await;
    let pressed = engine.now() - time::Duration::hours(3);
    let event = engine
        .record_at(EventKind::Duress, Source::Hotkey, pressed)
        .expect("durable");
    deliver_all(&engine).await;

    let incidents = duress_receiver::admin::list_incidents(&w.data_dir)
        .await
        .expect("list");
    let inc = &incidents[0];
    assert_eq!(inc.events[0].id, event.id);
    assert!(inc.delayed, "a 3-hour-old press is flagged delayed");
    let hours = inc.delay_ms as f64 / 3_600_000.0;
    assert!((2.99..3.01).contains(&hours), "delay {hours} h");
    assert_eq!(inc.first_occurred_at, event.occurred_at);
    w.receiver.shutdown().await.expect("shutdown");
}

/// Two clocks: an agent whose clock is an hour fast is told the server time (clock-skew),
/// corrects its offset, re-signs and is accepted; the event's press time is not rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_clock_an_hour_off_is_corrected_and_accepted() {
    let w = world().await;
    drop(enrolled_engine(&w).await);

    // The same installation restarted on a workstation whose clock is one hour fast.
    let skewed = Engine::open_with_clock(
        w.policy.clone(),
        w.state_dir.clone(),
        Arc::new(OffsetClock::system(time::Duration::hours(1))),
    )
    .expect("engine opens");
    let event = skewed
        .record(EventKind::Duress, Source::Cli)
        .expect("durable");
    deliver_all(&skewed).await;

    let offset = skewed.clock_offset();
    assert!(
        (offset + time::Duration::hours(1)).abs() < time::Duration::seconds(5),
        "learned offset {offset} should be about -1 h"
    );
    let stored = duress_receiver::admin::list_events(&w.data_dir)
        .await
        .expect("events");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, event.id);
    assert_eq!(
        stored[0].occurred_at, event.occurred_at,
        "occurred_at preserved"
    );
    w.receiver.shutdown().await.expect("shutdown");
}

/// The private key lives only in the keystore: after enrolling, pressing and delivering,
/// no file under the agent's state dir contains the seed, raw or encoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_is_in_no_file_under_the_state_dir() {
    let w = world().await;
    let engine = enrolled_engine(&w).await;
    engine
        .record(EventKind::Duress, Source::Cli)
        .expect("durable");
    deliver_all(&engine).await;
    let key = engine
        .keystore()
        .load()
        .expect("keystore answers")
        .expect("a key exists");
    let seed = key.seed();
    let needles = seed_encodings(&seed[..]);
    let mut files = 0;
    scan(&w.state_dir, &mut |path, bytes| {
        files += 1;
        for needle in &needles {
            assert!(
                !contains(bytes, needle),
                "{} contains the device seed",
                path.display()
            );
        }
    });
    assert!(files > 0, "the state dir holds the outbox");
    w.receiver.shutdown().await.expect("shutdown");
}

fn seed_encodings(seed: &[u8]) -> Vec<Vec<u8>> {
    use base64_like::*;
    vec![
        seed.to_vec(),
        hex(seed).into_bytes(),
        hex(seed).to_uppercase().into_bytes(),
        b64(seed, false).into_bytes(),
        b64(seed, true).into_bytes(),
    ]
}

/// Minimal encoders for the scan (base64 with the standard and the URL alphabet, unpadded).
mod base64_like {
    pub fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
    pub fn b64(b: &[u8], url: bool) -> String {
        let alphabet: &[u8] = if url {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        } else {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        };
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn scan(dir: &Path, f: &mut dyn FnMut(&Path, &[u8])) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            scan(&path, f);
        } else if let Ok(bytes) = std::fs::read(&path) {
            f(&path, &bytes);
        }
    }
}

/// A press before enrollment finished is never lost: it is stored at once (unsigned), and
/// delivered, signed with the new device key, as soon as the station is enrolled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn press_before_enrollment_is_delivered_after_it() {
    let w = world().await;
    let engine = Engine::open(w.policy.clone(), w.state_dir.clone()).expect("engine opens");
    let early = engine
        .record(EventKind::Duress, Source::Hotkey)
        .expect("durable");
    assert_eq!(engine.status().expect("status").queued, 1);
    engine
        .enroll(&EnrollOptions::default())
        .await
        .expect("enrollment succeeds");
    deliver_all(&engine).await;
    let incidents = duress_receiver::admin::list_incidents(&w.data_dir)
        .await
        .expect("list");
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].events[0].id, early.id);
    w.receiver.shutdown().await.expect("shutdown");
}

/// Signed acknowledgements end to end: with the receiver's acknowledgement key in the policy
/// (`[[receivers]] ack_key`, the thumbprint `ack-key show` prints) the real engine delivers
/// against the real receiver and its status says acknowledgements are verified; with the key
/// of another receiver in the policy, the same receiver's answers are not acknowledgements —
/// the alarm stays queued (the receiver did store it: resending is harmless) and the status
/// says why; back to the right key, it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_are_verified_against_the_policy_ack_key() {
    let mut w = world().await;
    let shown = duress_receiver::ack_key::AckKeys::load(&w.data_dir)
        .expect("ack key")
        .show_text();
    let kid = shown.lines().last().expect("thumbprint line").to_owned();
    assert_eq!(kid, w.receiver.ack_kid);
    w.policy.receivers[0].ack_key = Some(kid.clone());
    let engine = enrolled_engine(&w).await;
    assert_eq!(
        engine.status().expect("status").acknowledgements,
        "verified"
    );
    let first = engine
        .record(EventKind::Duress, Source::Hotkey)
        .expect("durable");
    deliver_all(&engine).await;
    assert!(
        engine
            .event(first.id)
            .expect("read")
            .expect("stored")
            .delivered_at
            .is_some()
    );
    drop(engine);

    // Another key in the policy: not an acknowledgement.
    let other = duress_core::AckSigningKey::from_seed(&[77u8; 32]);
    let mut wrong = w.policy.clone();
    wrong.receivers[0].ack_key = Some(other.kid().to_owned());
    let engine = Engine::open(wrong, w.state_dir.clone()).expect("engine opens");
    let second = engine
        .record(EventKind::Duress, Source::Hotkey)
        .expect("durable");
    let report = engine
        .deliver_pending(Some(Instant::now() + Duration::from_secs(2)))
        .await;
    assert!(report.delivered.is_empty(), "{report:?}");
    let s = engine.status().expect("status");
    assert_eq!(s.queued, 1);
    let reason = s.ack_unverified_reason.expect("status says why");
    assert!(reason.contains("does not list"), "{reason}");
    drop(engine);

    let engine = Engine::open(w.policy.clone(), w.state_dir.clone()).expect("engine opens");
    deliver_all(&engine).await;
    assert!(
        engine
            .event(second.id)
            .expect("read")
            .expect("stored")
            .delivered_at
            .is_some()
    );
    assert_eq!(engine.status().expect("status").ack_unverified_since, None);
    let exported = duress_receiver::admin::export_events(&w.data_dir)
        .await
        .expect("export");
    assert!(
        exported
            .iter()
            .all(|e| e.acks.len() == 1 && e.acks[0].kid == kid)
    );

    // The heartbeat reports the policy's source and hash; the receiver stores them.
    engine
        .send_heartbeat(duress_core::HotkeyState::NotApplicable)
        .await
        .expect("heartbeat");
    let devices = duress_receiver::admin::list_devices(&w.data_dir)
        .await
        .expect("devices");
    let s = engine.status().expect("status");
    assert_eq!(
        devices[0].policy_sha256.as_deref(),
        Some(s.policy_sha256.as_str())
    );
    assert_eq!(
        devices[0].policy_source.as_deref(),
        Some(s.policy_source.as_str())
    );
    w.receiver.shutdown().await.expect("shutdown");
}
