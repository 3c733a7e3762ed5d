//! Desk phones as stations (issue 14, item 1): a real receiver over TLS, the inventory and the
//! access-point table imported through the admin functions the CLI runs, simulated Cisco and
//! Spectralink requests from 127.0.0.1, and every XML answer validated by `xmllint --schema`
//! against the committed part of CiscoIPPhone.xsd. Runs on SQLite, and on PostgreSQL with
//! `DURESS_TEST_DATABASE=postgres`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use duress_core::{ProblemType, Source};
use duress_receiver::admin;
use duress_receiver::phones::admin as phones;

const KEY: &str = "k3y-0123456789abcdef";
const KEY_B: &str = "other-0123456789abcdef";
const AP_MAC: &str = "00907a0e4459";

/// SEP001122334455 may call from 127.0.0.0/8; SEP00AABBCCDDEE only from 127.0.0.2/32 (so the
/// test's 127.0.0.1 is the wrong network); SEP00907A0E4459 is a Spectralink handset.
fn inventory() -> String {
    format!(
        "device_name,extension,label,BLD,FLR,ROOM,secret,allowed_network\n\
         SEP001122334455,2140,\"Bldg A, Floor 2, Room 214\",A,2,214,{KEY},127.0.0.0/8\n\
         sep00aabbccddee,2141,\"Bldg A, Floor 2, Room 215\",A,2,215,{KEY_B},127.0.0.2/32\n\
         SEP00907A0E4459,3001,\"Ward 3 handset\",C,3,,{KEY},::ffff:127.0.0.0/104\n"
    )
}

async fn setup() -> Harness {
    let h = Harness::start().await;
    let at = h.data_dir();
    assert_eq!(
        phones::import_phones(at.clone(), &inventory())
            .await
            .unwrap(),
        3
    );
    let aps = "bssid,label,BLD,FLR,ROOM\n00:23:EB:E4:EB:AF,\"Bldg B, Floor 1, Room 101\",B,1,101\n";
    assert_eq!(phones::import_access_points(at, aps).await.unwrap(), 1);
    h
}

/// Validates an XML answer with xmllint against the committed schema part; fails loudly when
/// xmllint is missing (scripts/install-deps installs libxml2-utils).
fn assert_schema_valid(xml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("answer.xml");
    std::fs::write(&file, xml).unwrap();
    let xsd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/CiscoIPPhone-part.xsd"
    );
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema", xsd])
        .arg(&file)
        .output()
        .expect("xmllint (libxml2-utils, scripts/install-deps) must be installed");
    assert!(
        out.status.success(),
        "{xml}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn cisco(h: &Harness, query: &str) -> common::Answer {
    h.get(&format!("/v1/phones/cisco/duress?{query}")).await
}

async fn audit_refusals(h: &Harness) -> Vec<(String, String)> {
    admin::with_store(h.data_dir(), async |s| Ok(s.audit_log().await?))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "phone.refused")
        .map(|e| (e.subject, e.detail))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cisco_press_opens_a_located_phone_incident_within_a_second() {
    let h = setup().await;
    // A store handle opened before the press, so the measured time is the receiver's (the
    // request, its commit, and one read), not a store opening.
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    let started = Instant::now();
    let a = cisco(&h, &format!("device=SEP001122334455&key={KEY}")).await;
    let mut incidents = Vec::new();
    // Bounded: at most 20 reads, 50 ms apart.
    for _ in 0..20 {
        incidents = store
            .list_incidents(duress_receiver::store::IncidentFilter::All)
            .await
            .unwrap();
        if !incidents.is_empty() || started.elapsed() > Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    store.close().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.content_type.starts_with("text/xml"), "{}", a.content_type);
    assert_schema_valid(&a.text());
    // Nothing on the phone's screen says an alarm was raised.
    let lower = a.text().to_lowercase();
    for word in ["alarm", "duress", "panic", "help", "incident"] {
        assert!(!lower.contains(word), "{word} in {}", a.text());
    }
    eprintln!("phone press to visible incident: {elapsed:?}");
    assert_eq!(incidents.len(), 1);
    let i = &incidents[0];
    assert_eq!(i.source, Source::Phone);
    assert_eq!(i.status, "open");
    assert_eq!(
        i.location.label.as_deref(),
        Some("Bldg A, Floor 2, Room 214")
    );
    assert_eq!(i.location.bld.as_deref(), Some("A"));
    assert_eq!(i.location.room.as_deref(), Some("214"));
    assert_eq!(i.host.hostname, "SEP001122334455");
    assert_eq!(i.host.user, "ext 2140");

    // The same press repeated at once (a double tap, an HTTP retry) is one event; a POST (the
    // 9800's HTTP Post, fields in a form body) later is a new press of the same incident.
    let again = cisco(&h, &format!("device=sep001122334455&key={KEY}")).await;
    assert_eq!(again.status, 200);
    let events = admin::list_events(h.data_dir()).await.unwrap();
    assert!(events.len() <= 2, "{}", events.len());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let post = h
        .post_as(
            "/v1/phones/cisco/duress",
            "application/x-www-form-urlencoded",
            format!("device=SEP001122334455&key={KEY}").into_bytes(),
        )
        .await;
    assert_eq!(post.status, 200, "{}", post.text());
    assert_schema_valid(&post.text());
    let incidents = admin::list_incidents(h.data_dir()).await.unwrap();
    assert_eq!(incidents.len(), 1, "grouped into the one incident");
    assert!(incidents[0].press_count >= 2);
    // The stored request never holds the key.
    for e in admin::export_events(h.data_dir()).await.unwrap() {
        assert!(!e.jws.contains(KEY), "{}", e.jws);
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_cisco_requests_are_refused_audited_and_raise_nothing() {
    let h = setup().await;
    let cases: [(&str, u16, &str, &str); 6] = [
        (
            "device=SEP0000DEADBEEF&key=k3y-0123456789abcdef",
            403,
            "phone-unknown",
            "SEP0000DEADBEEF",
        ),
        (
            "device=SEP001122334455&key=wrong-0123456789abcdef",
            403,
            "phone-bad-key",
            "SEP001122334455",
        ),
        (
            "device=SEP001122334455",
            403,
            "phone-bad-key",
            "SEP001122334455",
        ),
        // Right key, but 127.0.0.1 is outside the phone's 127.0.0.2/32.
        (
            "device=SEP00AABBCCDDEE&key=other-0123456789abcdef",
            403,
            "phone-wrong-network",
            "SEP00AABBCCDDEE",
        ),
        (
            "device=SEP%3Cx%3E&key=k3y-0123456789abcdef",
            400,
            "malformed-request",
            "SEP<x>",
        ),
        ("key=k3y-0123456789abcdef", 400, "malformed-request", ""),
    ];
    for (query, status, code, subject) in cases {
        let a = cisco(&h, query).await;
        assert_eq!(a.status, status, "{query}: {}", a.text());
        assert!(a.content_type.starts_with("text/xml"), "{query}");
        assert_schema_valid(&a.text());
        assert!(a.text().contains(code), "{query}: {}", a.text());
        let audited = audit_refusals(&h).await;
        assert!(
            audited
                .iter()
                .any(|(s, d)| s == subject && d.starts_with(code)),
            "{query}: {audited:?}"
        );
        // No secret in the audit log.
        assert!(audited.iter().all(|(_, d)| !d.contains("0123456789abcdef")));
    }
    assert!(
        admin::list_incidents(h.data_dir())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(h.event_count().await, 0);

    // A removed phone can no longer raise alarms.
    phones::remove_phone(h.data_dir(), "SEP001122334455")
        .await
        .unwrap();
    let a = cisco(&h, &format!("device=SEP001122334455&key={KEY}")).await;
    assert_eq!(a.status, 403, "{}", a.text());
    assert_schema_valid(&a.text());
    assert!(
        admin::list_incidents(h.data_dir())
            .await
            .unwrap()
            .is_empty()
    );
    h.shutdown().await;
}

fn alarm_event(duress: u8, timestamp: &str) -> String {
    format!(
        "<PolycomIPPhone>\n<AlarmNotificationEvent>\n<PhoneIP>127.0.0.1</PhoneIP>\n\
         <MACAddress>{AP_MAC}</MACAddress>\n<BSSID>0023ebe4ebaf</BSSID>\n<StillAlarm>0</StillAlarm>\n\
         <TiltAlarm>0</TiltAlarm>\n<RunningAlarm>0</RunningAlarm>\n<DuressAlarm>{duress}</DuressAlarm>\n\
         <TimeStamp>{timestamp}</TimeStamp>\n</AlarmNotificationEvent>\n</PolycomIPPhone>\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn spectralink_push_is_located_by_its_access_point_and_cancel_only_annotates() {
    let h = setup().await;
    let path = format!("/v1/phones/spectralink/alarm?key={KEY}");
    let body = alarm_event(1, "2026-12-01T08:11:25-07:00");
    let a = h
        .post_as(&path, "text/xml", body.clone().into_bytes())
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_schema_valid(&a.text());
    // The same push again (the phone retrying) is the same event.
    let again = h.post_as(&path, "text/xml", body.into_bytes()).await;
    assert_eq!(again.status, 200);
    assert_eq!(h.event_count().await, 1);

    let incidents = admin::list_incidents(h.data_dir()).await.unwrap();
    assert_eq!(incidents.len(), 1);
    let i = &incidents[0];
    assert_eq!(i.source, Source::Phone);
    assert_eq!(i.location.bld.as_deref(), Some("B"));
    assert_eq!(
        i.location.room.as_deref(),
        Some("101"),
        "the access point's room"
    );
    assert_eq!(
        i.location.label.as_deref(),
        Some("Bldg B, Floor 1, Room 101")
    );

    // The 840/860 path takes the same notification: the cancel (all detectors clear).
    let cancel = h
        .post_as(
            &format!("/v1/phones/cisco/event?key={KEY}"),
            "text/xml",
            alarm_event(0, "2026-12-01T08:12:00-07:00").into_bytes(),
        )
        .await;
    assert_eq!(cancel.status, 200, "{}", cancel.text());
    assert_schema_valid(&cancel.text());
    let id = i.incident_id;
    let detail = admin::with_store(h.data_dir(), async |s| Ok(s.incident(id).await?))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        detail.incident.status, "open",
        "a phone cancel never closes"
    );
    assert!(
        detail
            .timeline
            .iter()
            .any(|t| t.kind == "note" && t.text.starts_with("phone cancel")),
        "{:?}",
        detail.timeline
    );

    // Refusals of a push are problem+json, audited: a DTD, a wrong key, an unknown handset.
    let evil = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e \"x\">]>{}",
        alarm_event(1, "t")
    );
    h.post_as(&path, "text/xml", evil.into_bytes())
        .await
        .problem(ProblemType::MalformedXml);
    h.post_as(
        "/v1/phones/spectralink/alarm?key=wrong-0123456789abcdef",
        "text/xml",
        alarm_event(1, "t2").into_bytes(),
    )
    .await
    .problem(ProblemType::PhoneBadKey);
    h.post_as(
        &path,
        "text/xml",
        alarm_event(1, "t3")
            .replace(AP_MAC, "00907a000000")
            .into_bytes(),
    )
    .await
    .problem(ProblemType::PhoneUnknown);
    let audited = audit_refusals(&h).await;
    assert_eq!(audited.len(), 3, "{audited:?}");
    assert_eq!(h.event_count().await, 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_lists_edits_and_removes_phones_and_never_shows_a_secret() {
    use common::console::{Console, add_user};
    use duress_receiver::store::Role;
    let h = setup().await;
    add_user(h.data_dir(), "ada", Role::Admin).await;
    let admin_user = Console::sign_in(&h, "ada").await;
    let page = admin_user.get("/admin/phones").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    assert!(html.contains("data-device-name=\"SEP001122334455\""));
    assert!(html.contains("Bldg A, Floor 2, Room 214"));
    assert!(
        !html.contains(KEY) && !html.contains("argon2"),
        "no secret, no hash"
    );

    // Edit without a secret: the location changes, the key still works.
    let edit = [
        ("device_name", "SEP001122334455"),
        ("extension", "2140"),
        ("label", "Bldg A, Floor 3, Room 301"),
        ("BLD", "A"),
        ("FLR", "3"),
        ("ROOM", "301"),
        ("allowed_network", "127.0.0.0/8"),
        ("secret", ""),
    ];
    let saved = admin_user.post_form("/admin/phones", &edit).await;
    assert_eq!(saved.status, 303, "{}", saved.text());
    let a = cisco(&h, &format!("device=SEP001122334455&key={KEY}")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let incidents = admin::list_incidents(h.data_dir()).await.unwrap();
    assert_eq!(incidents[0].location.room.as_deref(), Some("301"));

    // A new phone without a secret, or with a bad network, is refused on the page.
    let mut new_phone = edit;
    new_phone[0].1 = "SEP0000000000AA";
    let refused = admin_user.post_form("/admin/phones", &new_phone).await;
    assert_eq!(refused.status, 422);
    assert!(
        refused.text().contains("give it a secret"),
        "{}",
        refused.text()
    );
    let mut bad_net = edit;
    bad_net[6].1 = "10.0.0.1/8";
    assert_eq!(
        admin_user.post_form("/admin/phones", &bad_net).await.status,
        422
    );

    let removed = admin_user
        .post_form("/admin/phones/SEP001122334455/remove", &[])
        .await;
    assert_eq!(removed.status, 303, "{}", removed.text());
    assert!(
        !admin_user
            .get("/admin/phones")
            .await
            .text()
            .contains("data-device-name=\"SEP001122334455\"")
    );
    let audited: Vec<String> = admin::with_store(h.data_dir(), async |s| Ok(s.audit_log().await?))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.actor == "ada")
        .map(|e| e.action)
        .collect();
    assert_eq!(audited.iter().filter(|a| *a == "phone.put").count(), 1);
    assert_eq!(audited.iter().filter(|a| *a == "phone.remove").count(), 1);
    h.shutdown().await;
}

/// The contract command: `duress-receiver phones import --data-dir DIR --csv FILE`, all lines
/// or none, a bad line named by its number.
#[test]
fn the_import_command_is_all_or_nothing_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("phones.csv");
    let run = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_duress-receiver"))
            .args(["phones", "import", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--csv")
            .arg(file)
            .env_remove("DURESS_DATABASE_URL")
            .output()
            .unwrap()
    };
    let bad = format!("{}SEP0011223344FF,1,L,,,,short,10.0.0.0/8\n", inventory());
    std::fs::write(&csv, bad).unwrap();
    let out = run(&csv);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 5: secret"), "{err}");
    std::fs::write(&csv, inventory()).unwrap();
    let out = run(&csv);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 3 phones"));
    let list = std::process::Command::new(env!("CARGO_BIN_EXE_duress-receiver"))
        .args(["phones", "list", "--json", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("DURESS_DATABASE_URL")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("SEP00AABBCCDDEE") && !text.contains(KEY_B),
        "{text}"
    );
}

/// A phone is a `devices` row without an agent key: an agent token naming a phone's device id
/// as its kid (an event or a heartbeat, signed with any key) is answered like a kid no device
/// has (401 unknown-device), never as a broken store (500), and raises nothing.
#[tokio::test]
async fn a_phone_device_id_on_the_agent_api_is_an_unknown_device() {
    let h = setup().await;
    let phone = phones::list_phones(h.data_dir())
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.device_name == "SEP001122334455")
        .expect("the imported phone");
    let mut impostor = common::Agent::new();
    impostor.device_id = phone.device_id.clone();
    let event = impostor.event(duress_core::EventKind::Duress);
    let answer = h.post("/v1/events", impostor.sign_event(&event)).await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    answer.problem(ProblemType::UnknownDevice);
    let answer = h
        .post(
            "/v1/heartbeats",
            impostor.sign_heartbeat(&impostor.heartbeat()),
        )
        .await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    answer.problem(ProblemType::UnknownDevice);
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    assert!(
        store
            .list_incidents(duress_receiver::store::IncidentFilter::All)
            .await
            .unwrap()
            .is_empty(),
        "an impostor of a phone must raise nothing"
    );
}
