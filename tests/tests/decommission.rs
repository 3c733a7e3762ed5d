//! `duress-agent decommission` end to end (issue 21, item 7), with the real receiver and agent
//! binaries and the real Secret Service (run under `scripts/with-keyring`): an enrolled
//! station with an alarm still queued (receiver down) refuses to decommission and stays
//! enrolled; with the receiver back it delivers the alarm first, retires itself, loses its key
//! and enrollment; the receiver lists it retired (audited, by the station itself), a later
//! event signed with the old key is refused, and its heartbeats and supervision stay silent.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use duress_agent_core::ReceiverConfig;
use duress_agent_core::duress_core::{EventClaims, EventKind, ProblemType, Source, Typ};
use duress_agent_core::keystore::Keystore;
use duress_agent_core::sender::{SendOutcome, Sender};
use duress_tests::faults::enrolled_agent;
use duress_tests::{ReceiverProcess, free_port};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn decommission_delivers_first_retires_the_station_and_its_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = ReceiverProcess::start(&dir.path().join("receiver"), free_port());
    let agent = enrolled_agent(dir.path(), "ws-retire", &receiver);
    let status = agent.status();
    let device_id = status["device_id"].as_str().unwrap().to_owned();
    let install_id = status["install_id"].as_str().unwrap().to_owned();
    // The key as the station holds it, kept by the test to play the "old key" later.
    let old_key = Keystore::for_install(&install_id).load().unwrap().unwrap();

    // An alarm raised while the receiver is down: decommission refuses, nothing is forgotten.
    receiver.stop();
    let out = agent.run(&["trigger"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = agent.run(&["decommission", "--deliver-within", "2"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("1 event(s) in the outbox are not delivered yet"),
        "{}",
        text(&out)
    );
    assert_eq!(
        agent.status()["device_id"].as_str(),
        Some(device_id.as_str())
    );
    assert!(Keystore::for_install(&install_id).load().unwrap().is_some());

    // Receiver back: the alarm goes first, then the retirement.
    receiver.restart();
    let out = agent.run(&["decommission"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("delivered first: 1 queued event(s)"),
        "{said}"
    );
    assert!(said.contains(": retired\n"), "{said}");
    assert!(
        said.contains(&format!("decommissioned: device {device_id} retired")),
        "{said}"
    );
    assert_eq!(
        agent.status()["device_id"],
        serde_json::Value::Null,
        "not enrolled any more"
    );
    assert_eq!(agent.status()["queued"].as_u64(), Some(0));
    assert!(
        Keystore::for_install(&install_id).load().unwrap().is_none(),
        "the device key left the keystore"
    );
    // Run again: nothing to do, still success (an uninstaller may run it twice).
    let out = agent.run(&["decommission"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not enrolled"), "{}", text(&out));

    // The receiver: retired, by the station itself, audited; the alarm is there.
    let devices: serde_json::Value =
        serde_json::from_str(&receiver.admin(&["devices", "list", "--json"])).unwrap();
    let me = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == device_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(me["status"], "revoked", "{me}");
    assert!(me["retired_at"].is_string(), "{me}");
    assert_eq!(me["retired_by"], format!("device:{device_id}"));
    let incidents: serde_json::Value =
        serde_json::from_str(&receiver.admin(&["incidents", "list", "--json"])).unwrap();
    assert_eq!(
        incidents.as_array().unwrap().len(),
        1,
        "the queued alarm arrived"
    );
    assert!(
        receiver
            .admin(&["audit", "verify"])
            .starts_with("audit chain ok")
    );

    // A later event signed with the old key is refused (device-revoked), and stored nowhere.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sender =
        Sender::new(&[ReceiverConfig::new(&receiver.url(), Some(receiver.ca_path())).unwrap()])
            .unwrap();
    let now =
        duress_agent_core::duress_core::clock::truncate_to_millis(time::OffsetDateTime::now_utc());
    let claims = EventClaims {
        id: uuid::Uuid::now_v7(),
        seq: 99,
        kind: EventKind::Duress,
        occurred_at: now,
        sent_at: now,
        source: Source::Cli,
        location: Default::default(),
        host: Default::default(),
        cancel_pin: None,
    };
    let token = old_key.sign(
        Typ::Event,
        Some(&device_id),
        &serde_json::to_vec(&claims).unwrap(),
    );
    match rt.block_on(sender.post_event(&token, claims.id)) {
        SendOutcome::Refused(p) => assert_eq!(p.kind(), Some(ProblemType::DeviceRevoked), "{p:?}"),
        other => panic!("a retired key's event was not refused: {other:?}"),
    }
    let incidents: serde_json::Value =
        serde_json::from_str(&receiver.admin(&["incidents", "list", "--json"])).unwrap();
    assert_eq!(incidents.as_array().unwrap().len(), 1);
    // Its heartbeat writes nothing and says revoked; the station is never supervised (the
    // sweep skips revoked stations: store_contract covers the notification side).
    let hb = duress_agent_core::duress_core::HeartbeatClaims {
        sent_at: now,
        hotkey: duress_agent_core::duress_core::HotkeyState::NotApplicable,
        queued: 0,
        last_seq: 99,
        last_self_test: None,
        location: Default::default(),
        host: Default::default(),
        policy: None,
        alarm_refused: None,
    };
    let token = old_key.sign(
        Typ::Heartbeat,
        Some(&device_id),
        &serde_json::to_vec(&hb).unwrap(),
    );
    match rt.block_on(sender.post_heartbeat(&token)) {
        SendOutcome::Acked(a) => assert_eq!(a.device_status.as_str(), "revoked"),
        other => panic!("{other:?}"),
    }
    receiver.stop();
}

/// A station an admin retired (`duress-receiver stations retire`): its running agent learns it
/// from the next heartbeat and says it is not enrolled; `decommission` then still succeeds
/// (the receiver answers "already retired") and removes the key.
#[test]
fn a_station_retired_by_an_admin_shows_not_enrolled_and_decommissions() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = ReceiverProcess::start(&dir.path().join("receiver"), free_port());
    let agent = enrolled_agent(dir.path(), "ws-admin-retired", &receiver);
    let status = agent.status();
    let device_id = status["device_id"].as_str().unwrap().to_owned();
    let install_id = status["install_id"].as_str().unwrap().to_owned();
    assert!(
        receiver
            .admin(&["stations", "retire", "--station", &device_id])
            .contains("retired")
    );
    let mut run = duress_tests::faults::KillOnDrop(agent.spawn_headless());
    let shown = duress_tests::wait_until(Duration::from_secs(30), || {
        agent.status()["enrolled"] == false
    });
    assert!(
        shown,
        "the agent never learned it was retired: {}",
        agent.status()
    );
    let out = agent.run(&["status"]);
    assert!(
        text(&out).contains("enrolled: no (device"),
        "{}",
        text(&out)
    );
    duress_tests::faults::kill9(&mut run.0);
    let out = agent.run(&["decommission"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(": already retired\n"), "{}", text(&out));
    assert!(Keystore::for_install(&install_id).load().unwrap().is_none());
}
