//! Registered stations and location drift in the console and the CLI (issue 16, item 3): the
//! approval form registers the location the approver confirms, an admin edits it, the subnet
//! map is kept on its admin page and by `duress-receiver subnets …`, and a station whose
//! latest address is in a subnet mapped to another building is flagged on the Stations page.
//! Each form is CSRF-protected and admin-only like the others. Runs on SQLite, and on
//! PostgreSQL with `DURESS_TEST_DATABASE=postgres`.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::console::{Console, add_user};
use common::{Agent, Harness};
use duress_receiver::admin;
use duress_receiver::store::{Approve, Role};

const BIN: &str = env!("CARGO_BIN_EXE_duress-receiver");

async fn device(h: &Harness, id: &str) -> duress_receiver::DeviceRecord {
    admin::list_devices(h.data_dir())
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.device_id == id)
        .unwrap()
}

async fn audit_log(h: &Harness) -> Vec<duress_receiver::store::AuditEntry> {
    admin::with_store(h.data_dir(), async |s| Ok(s.audit_log().await?))
        .await
        .unwrap()
}

/// A pending station (manual token), as an agent enrolls it: claims Bldg A, Floor 2, Room 214.
async fn pending_agent(h: &Harness) -> Agent {
    let token = h.token(1, Approve::Manual).await;
    h.enrolled_agent_with(&token).await
}

/// The `<tr>` of one station on the Stations page.
fn station_row<'a>(html: &'a str, device_id: &str) -> &'a str {
    let start = html
        .find(&format!("data-device-id=\"{device_id}\""))
        .unwrap_or_else(|| panic!("no row for {device_id}: {html}"));
    let rest = &html[start..];
    &rest[..rest.find("</tr>").unwrap()]
}

#[tokio::test]
async fn approval_registers_the_confirmed_location_and_an_admin_edits_it() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "root", Role::Admin).await;
    add_user(h.data_dir(), "ada", Role::Officer).await;
    let admin_c = Console::sign_in(&h, "root").await;
    let officer = Console::sign_in(&h, "ada").await;
    let agent = pending_agent(&h).await;
    let id = agent.device_id.clone();
    let path = format!("/stations/{id}/approve");

    // The approval form is prefilled from the claimed location; officers see no form.
    let page = admin_c.get("/stations").await.text();
    let row = station_row(&page, &id);
    assert!(row.contains(&format!("action=\"{path}\"")), "{row}");
    assert!(row.contains("name=\"BLD\" value=\"A\""), "{row}");
    assert!(row.contains("name=\"ROOM\" value=\"214\""), "{row}");
    // The approver sees the key's RFC 7638 thumbprint, as `duress-agent status` shows it.
    assert!(
        row.contains(&format!(
            "<code>{}</code>",
            agent.key.public_jwk().thumbprint()
        )),
        "{row}"
    );
    let officer_page = officer.get("/stations").await.text();
    assert!(!station_row(&officer_page, &id).contains("approve"));

    let fields = [
        ("label", "Bldg A, Floor 1, Room 101"),
        ("BLD", "A"),
        ("FLR", "1"),
        ("ROOM", "101"),
    ];
    // No CSRF token, an officer: refused, nothing written.
    let body = common::console::form(&fields);
    assert_eq!(admin_c.post_raw(&path, &body).await.status, 403);
    assert_eq!(officer.post_form(&path, &fields).await.status, 403);
    let d = device(&h, &id).await;
    assert_eq!(d.status.as_str(), "pending");
    assert_eq!(d.registered_location, None);

    let a = admin_c.post_form(&path, &fields).await;
    assert_eq!(a.status, 303, "{}", a.text());
    let d = device(&h, &id).await;
    assert_eq!(d.status.as_str(), "active");
    let reg = d.registered_location.clone().unwrap();
    assert_eq!(
        (reg.bld.as_deref(), reg.flr.as_deref(), reg.room.as_deref()),
        (Some("A"), Some("1"), Some("101"))
    );
    // The claimed civic address is kept under the registered room.
    assert_eq!(reg.a3.as_deref(), Some("Saint Paul"));
    assert_eq!(d.location.room.as_deref(), Some("214"));

    // The page shows the registered location first and flags the differing claim.
    let page = officer.get("/stations").await.text();
    let row = station_row(&page, &id);
    assert!(row.contains("Bldg A, Floor 1, Room 101"), "{row}");
    assert!(
        row.contains("claimed location differs: Bldg A, Floor 2, Room 214"),
        "{row}"
    );
    assert!(
        !row.contains("/location"),
        "officers get no edit form: {row}"
    );

    // The admin's edit form: prefilled from the registered location, changes it.
    let page = admin_c.get("/stations").await.text();
    let row = station_row(&page, &id);
    assert!(row.contains(&format!("action=\"/stations/{id}/location\"")));
    assert!(row.contains("name=\"ROOM\" value=\"101\""), "{row}");
    let edit = format!("/stations/{id}/location");
    let moved = [
        ("label", "Bldg A, Floor 2, Room 214"),
        ("BLD", "A"),
        ("FLR", "2"),
        ("ROOM", "214"),
    ];
    assert_eq!(officer.post_form(&edit, &moved).await.status, 403);
    assert_eq!(
        admin_c
            .post_raw(&edit, &common::console::form(&moved))
            .await
            .status,
        403
    );
    // A control character is refused with a clear page, nothing changed.
    let bad = admin_c
        .post_form(&edit, &[("BLD", "A"), ("ROOM", "2\u{7}14")])
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert_eq!(
        device(&h, &id)
            .await
            .registered_location
            .unwrap()
            .room
            .as_deref(),
        Some("101")
    );
    let a = admin_c.post_form(&edit, &moved).await;
    assert_eq!(a.status, 303, "{}", a.text());
    let reg = device(&h, &id).await.registered_location.unwrap();
    assert_eq!(reg.room.as_deref(), Some("214"));
    let page = officer.get("/stations").await.text();
    assert!(!station_row(&page, &id).contains("claimed location differs"));

    // Both changes are in the audit log, by the admin, with old and new.
    let log = audit_log(&h).await;
    let located: Vec<_> = log
        .iter()
        .filter(|e| e.action == "device.location" && e.subject == id)
        .collect();
    assert_eq!(located.len(), 2, "{log:?}");
    assert!(located.iter().all(|e| e.actor == "root"));
    assert!(located[1].detail.contains("\"101\"") && located[1].detail.contains("\"214\""));

    // All fields empty clears the registration; an unknown station is a 404.
    let a = admin_c
        .post_form(
            &edit,
            &[("label", ""), ("BLD", ""), ("FLR", ""), ("ROOM", "")],
        )
        .await;
    assert_eq!(a.status, 303);
    assert_eq!(device(&h, &id).await.registered_location, None);
    let a = admin_c.post_form("/stations/nobody/location", &moved).await;
    assert_eq!(a.status, 404);
    h.shutdown().await;
}

#[tokio::test]
async fn location_drift_from_the_subnet_map_shown_on_the_stations_page() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "root", Role::Admin).await;
    add_user(h.data_dir(), "ada", Role::Officer).await;
    let admin_c = Console::sign_in(&h, "root").await;
    let officer = Console::sign_in(&h, "ada").await;
    let agent = h.enrolled_agent().await;
    let id = agent.device_id.clone();
    // Registered in building A (it also claims A).
    admin_c
        .post_form(
            &format!("/stations/{id}/location"),
            &[("BLD", "A"), ("FLR", "2"), ("ROOM", "214")],
        )
        .await;

    // The subnet page: admins only, CSRF, bad CIDR refused clearly.
    assert_eq!(officer.get("/admin/subnets").await.status, 403);
    let add = [("cidr", "127.0.0.0/8"), ("BLD", "Z"), ("FLR", "")];
    assert_eq!(officer.post_form("/admin/subnets", &add).await.status, 403);
    assert_eq!(
        admin_c
            .post_raw("/admin/subnets", &common::console::form(&add))
            .await
            .status,
        403
    );
    let bad = admin_c
        .post_form("/admin/subnets", &[("cidr", "127.0.0.1"), ("BLD", "Z")])
        .await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.text().contains("not a network in CIDR form"),
        "{}",
        bad.text()
    );
    assert!(admin::list_subnets(h.data_dir()).await.unwrap().is_empty());

    // The heartbeat comes from 127.0.0.1 (loopback): before any subnet maps it, no drift.
    let answer = h
        .post("/v1/heartbeats", agent.sign_heartbeat(&agent.heartbeat()))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        device(&h, &id).await.last_addr.as_deref(),
        Some("127.0.0.1")
    );
    let page = officer.get("/stations").await.text();
    assert!(!page.contains("location drift:"), "{page}");

    // Map loopback to building Z: the station (registered in A) drifts, with the evidence.
    let a = admin_c.post_form("/admin/subnets", &add).await;
    assert_eq!(a.status, 303, "{}", a.text());
    let subnets_page = admin_c.get("/admin/subnets").await.text();
    assert!(subnets_page.contains("data-cidr=\"127.0.0.0/8\""));
    let page = officer.get("/stations").await.text();
    let row = station_row(&page, &id);
    assert!(
        row.contains("location drift: address 127.0.0.1 is in 127.0.0.0/8, mapped to Bldg Z"),
        "{row}"
    );
    assert!(page.contains("1 with location drift"));
    let filtered = officer.get("/stations?state=location+drift").await.text();
    assert!(filtered.contains(&format!("data-device-id=\"{id}\"")));

    // A more specific subnet mapping loopback to building A wins: no drift.
    admin::add_subnet(h.data_dir(), "127.0.0.0/24", "A", None)
        .await
        .unwrap();
    let page = officer.get("/stations").await.text();
    assert!(!station_row(&page, &id).contains("location drift:"));
    // ...unless it names another floor.
    admin::add_subnet(h.data_dir(), "127.0.0.0/24", "A", Some("5"))
        .await
        .unwrap();
    let page = officer.get("/stations").await.text();
    assert!(station_row(&page, &id).contains("mapped to Bldg A, Floor 5"));

    // Removing through the page (audited) ends the flag.
    for cidr in ["127.0.0.0/24", "127.0.0.0/8"] {
        let a = admin_c
            .post_form("/admin/subnets/remove", &[("cidr", cidr)])
            .await;
        assert_eq!(a.status, 303, "{}", a.text());
    }
    let page = officer.get("/stations").await.text();
    assert!(!page.contains("location drift:"));
    let log = audit_log(&h).await;
    let acts: Vec<(&str, &str, &str)> = log
        .iter()
        .filter(|e| e.action.starts_with("subnet."))
        .map(|e| (e.action.as_str(), e.subject.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        acts,
        vec![
            ("subnet.put", "127.0.0.0/8", "root"),
            ("subnet.put", "127.0.0.0/24", "cli"),
            ("subnet.put", "127.0.0.0/24", "cli"),
            ("subnet.remove", "127.0.0.0/24", "root"),
            ("subnet.remove", "127.0.0.0/8", "root"),
        ]
    );
    h.shutdown().await;
}

fn cli(h: &Harness, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--data-dir").arg(h.dir.path());
    if let Some(db) = &h.data_dir().database {
        cmd.arg("--database").arg(db.expose());
    }
    cmd.output().unwrap()
}

#[tokio::test]
async fn subnets_cli_adds_imports_lists_and_removes() {
    let h = Harness::start().await;
    let ok = |o: &std::process::Output| {
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(&cli(&h, &["subnets", "add", "10.9.8.7/16", "--bld", "A"]));
    let csv = h.dir.path().join("subnets.csv");
    std::fs::write(&csv, "cidr,BLD,FLR\n10.2.0.0/16,B,\n10.3.0.0/24,C,3\n").unwrap();
    let out = ok(&cli(
        &h,
        &["subnets", "import", "--csv", csv.to_str().unwrap()],
    ));
    assert!(out.contains("imported 2 subnets"), "{out}");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&cli(&h, &["subnets", "list", "--json"]))).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([
            {"cidr": "10.2.0.0/16", "BLD": "B"},
            {"cidr": "10.3.0.0/24", "BLD": "C", "FLR": "3"},
            {"cidr": "10.9.0.0/16", "BLD": "A"},
        ])
    );
    // A bad row anywhere imports nothing, and says which line.
    std::fs::write(&csv, "cidr,BLD,FLR\n10.4.0.0/16,D,\n10.5.0.0,E,\n").unwrap();
    let bad = cli(&h, &["subnets", "import", "--csv", csv.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("line 3"));
    assert_eq!(admin::list_subnets(h.data_dir()).await.unwrap().len(), 3);
    ok(&cli(&h, &["subnets", "remove", "10.9.0.0/16"]));
    let gone = cli(&h, &["subnets", "remove", "10.9.0.0/16"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not in the subnet map"));
    let out = ok(&cli(&h, &["subnets", "list"]));
    assert!(
        out.contains("10.2.0.0/16") && !out.contains("10.9.0.0/16"),
        "{out}"
    );
    h.shutdown().await;
}

/// A station registered in Room 101 raises an alarm claiming Room 214 from an address mapped
/// to another building: one incident, shown under the registered location with the "claimed
/// location differs" and "location drift" flags on the board and the incident page, and in
/// `incidents list --json` (registered_location, location_mismatch, location_drift).
#[tokio::test]
async fn an_incident_shows_the_registered_location_first_and_both_flags() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "root", Role::Admin).await;
    add_user(h.data_dir(), "ada", Role::Officer).await;
    let admin_c = Console::sign_in(&h, "root").await;
    let officer = Console::sign_in(&h, "ada").await;
    let mut agent = pending_agent(&h).await;
    let id = agent.device_id.clone();
    let a = admin_c
        .post_form(
            &format!("/stations/{id}/approve"),
            &[
                ("label", "Bldg A, Floor 1, Room 101"),
                ("BLD", "A"),
                ("FLR", "1"),
                ("ROOM", "101"),
            ],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.text());
    admin::add_subnet(h.data_dir(), "127.0.0.0/8", "Q", None)
        .await
        .unwrap();

    let ev = agent.event(duress_core::EventKind::Duress);
    let answer = h.post("/v1/events", agent.sign_event(&ev)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let ack: duress_core::EventAck = answer.json();
    let incident = ack.incident_id.unwrap();

    let listed = Command::new(BIN)
        .args(["incidents", "list", "--json", "--data-dir"])
        .arg(h.dir.path())
        .args(
            h.data_dir()
                .database
                .iter()
                .flat_map(|d| ["--database".to_owned(), d.expose().to_owned()]),
        )
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "one incident: the alarm is never dropped");
    let i = &listed[0];
    assert_eq!(i["registered_location"]["ROOM"], "101");
    assert_eq!(i["location"]["ROOM"], "214");
    assert_eq!(i["location_mismatch"], true);
    assert_eq!(i["location_drift"]["addr"], "127.0.0.1");
    assert_eq!(i["location_drift"]["subnet"], "127.0.0.0/8");
    assert_eq!(i["location_drift"]["BLD"], "Q");
    assert_eq!(i["events"][0]["client_addr"], "127.0.0.1");

    for page in [
        officer.get("/").await.text(),
        officer.get(&format!("/incidents/{incident}")).await.text(),
    ] {
        // The registered location is the heading (board card and incident page).
        assert!(
            page.contains(
                "Bldg A, Floor 1, Room 101</a> <span class=\"muted small registered-tag\">"
            ) || page
                .contains("Bldg A, Floor 1, Room 101 <span class=\"muted small registered-tag\">"),
            "{page}"
        );
        assert!(page.contains("Claimed location differs: Bldg A, Floor 2, Room 214"));
        assert!(
            page.contains("Location drift: address 127.0.0.1 is in 127.0.0.0/8, mapped to Bldg Q")
        );
    }
    // Read to 911: the registered room.
    let page = officer.get(&format!("/incidents/{incident}")).await.text();
    let civic = &page[page.find("civic-big").unwrap()..];
    assert!(civic[..civic.find("</p>").unwrap()].contains("Room 101"));

    // Unregistered and unmapped: no flags.
    admin::remove_subnet(h.data_dir(), "127.0.0.0/8")
        .await
        .unwrap();
    admin_c
        .post_form(
            &format!("/stations/{id}/location"),
            &[("label", ""), ("BLD", ""), ("FLR", ""), ("ROOM", "")],
        )
        .await;
    let board = officer.get("/").await.text();
    assert!(!board.contains("Claimed location differs") && !board.contains("Location drift:"));
    assert!(board.contains("Bldg A, Floor 2, Room 214"));
    h.shutdown().await;
}

/// `stations import --csv` (header station,label,BLD,FLR,ROOM; station = device id or
/// hostname, quoted labels with commas) and `stations set`: registered, audited as `cli`, all
/// rows or none; the Stations page then shows the registered location.
#[tokio::test]
async fn stations_import_and_set_register_locations_all_or_nothing() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "ada", Role::Officer).await;
    let officer = Console::sign_in(&h, "ada").await;
    let by_id = h.enrolled_agent().await;
    let by_host = h.enrolled_agent().await;
    let mut hb = by_host.heartbeat();
    hb.host.hostname = "ws-reg-02".into();
    assert_eq!(
        h.post("/v1/heartbeats", by_host.sign_heartbeat(&hb))
            .await
            .status,
        200
    );
    let csv = h.dir.path().join("stations.csv");
    let run = |args: &[&str]| cli(&h, args);

    // One unknown station: nothing registered, the row named.
    std::fs::write(
        &csv,
        format!(
            "station,label,BLD,FLR,ROOM\n{},\"Bldg A, Floor 1, Room 101\",A,1,101\nws-nowhere,x,B,1,1\n",
            by_id.device_id
        ),
    )
    .unwrap();
    let bad = run(&["stations", "import", "--csv", csv.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("row 2"),
        "{bad:?}"
    );
    assert_eq!(device(&h, &by_id.device_id).await.registered_location, None);

    std::fs::write(
        &csv,
        format!(
            "station,label,BLD,FLR,ROOM\n{},\"Bldg A, Floor 1, Room 101\",A,1,101\nWS-REG-02,,B,3,\n",
            by_id.device_id
        ),
    )
    .unwrap();
    let ok = run(&["stations", "import", "--csv", csv.to_str().unwrap()]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("2 station(s)"));
    let a = device(&h, &by_id.device_id)
        .await
        .registered_location
        .unwrap();
    assert_eq!(a.label.as_deref(), Some("Bldg A, Floor 1, Room 101"));
    assert_eq!(a.room.as_deref(), Some("101"));
    let b = device(&h, &by_host.device_id)
        .await
        .registered_location
        .unwrap();
    assert_eq!(
        (b.bld.as_deref(), b.flr.as_deref(), b.room),
        (Some("B"), Some("3"), None)
    );
    let log = audit_log(&h).await;
    assert_eq!(
        log.iter()
            .filter(|e| e.action == "device.location" && e.actor == "cli")
            .count(),
        2
    );
    let page = officer.get("/stations").await.text();
    assert!(station_row(&page, &by_id.device_id).contains("Bldg A, Floor 1, Room 101"));

    let set = run(&[
        "stations",
        "set",
        "--station",
        &by_id.device_id,
        "--bld",
        "A",
        "--flr",
        "2",
        "--room",
        "214",
    ]);
    assert!(set.status.success(), "{set:?}");
    let a = device(&h, &by_id.device_id)
        .await
        .registered_location
        .unwrap();
    assert_eq!(a.room.as_deref(), Some("214"));
    // A bad header is refused.
    std::fs::write(&csv, "host,label,BLD,FLR,ROOM\nx,,A,1,1\n").unwrap();
    assert!(
        !run(&["stations", "import", "--csv", csv.to_str().unwrap()])
            .status
            .success()
    );
    h.shutdown().await;
}

/// Issue 12: a heartbeat saying a queued alarm of the station is being refused
/// (`alarm_refused`) shows on the Stations page as "alert not accepted by the receiver: …";
/// the next heartbeat without it clears it.
#[tokio::test]
async fn a_refused_alarm_reported_by_heartbeat_shows_on_the_stations_page() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "ada", Role::Officer).await;
    let officer = Console::sign_in(&h, "ada").await;
    let agent = h.enrolled_agent().await;
    let mut hb = agent.heartbeat();
    hb.queued = 1;
    hb.alarm_refused = Some("too-many-requests (HTTP 429)".into());
    let beat =
        |hb: &duress_core::HeartbeatClaims| h.post("/v1/heartbeats", agent.sign_heartbeat(hb));
    assert_eq!(beat(&hb).await.status, 200);
    assert_eq!(
        device(&h, &agent.device_id).await.alarm_refused.as_deref(),
        Some("too-many-requests (HTTP 429)")
    );
    let page = officer.get("/stations").await.text();
    let row = station_row(&page, &agent.device_id);
    assert!(
        row.contains("alert not accepted by the receiver: too-many-requests (HTTP 429)"),
        "{row}"
    );
    hb.alarm_refused = None;
    hb.queued = 0;
    assert_eq!(beat(&hb).await.status, 200);
    let page = officer.get("/stations").await.text();
    assert!(!station_row(&page, &agent.device_id).contains("alert not accepted"));
    // A control character is refused like any other bad claim, nothing recorded.
    hb.alarm_refused = Some("bad\u{7}".into());
    assert_eq!(beat(&hb).await.status, 422);
    h.shutdown().await;
}
