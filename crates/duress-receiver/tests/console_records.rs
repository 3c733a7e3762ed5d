//! The record officers leave: the hash-chained audit log, the CSV export, and untrusted text
//! rendered as text.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::Harness;
use common::console::{Console, add_user};
use duress_core::{EventAck, EventKind};
use duress_receiver::store::{Role, StoreLocation};

const BIN: &str = env!("CARGO_BIN_EXE_duress-receiver");

fn verify(at: StoreLocation) -> std::process::Output {
    audit(&at, &["verify"])
}

/// `duress-receiver audit ARGS… --data-dir DIR` (and the database URL in its variable).
fn audit(at: &StoreLocation, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("audit")
        .args(args)
        .args(["--data-dir", at.data_dir.to_str().unwrap()]);
    if let Some(url) = &at.database {
        cmd.env("DURESS_DATABASE_URL", url.expose());
    }
    cmd.output().unwrap()
}

/// `audit verify --expect-head H`: whether it held, and what it printed.
fn verify_expecting(at: &StoreLocation, head: &str) -> (bool, String) {
    let out = audit(at, &["verify", "--expect-head", head]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `audit head`: the head alone on the last line.
fn head(at: &StoreLocation) -> String {
    let out = audit(at, &["head"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap().to_owned();
    assert!(!last.contains(' '), "{stdout}");
    last
}

/// Runs `sql` on the store directly, as someone with access to the database would.
async fn tamper(at: &StoreLocation, sql: &str) {
    match &at.database {
        None => {
            rusqlite::Connection::open(at.data_dir.join("receiver.sqlite3"))
                .unwrap()
                .execute(sql, [])
                .unwrap();
        }
        Some(url) => {
            use sqlx::Connection as _;
            // The harness's URL is libpq's `postgres://postgres@/DB?host=DIR`, which the `url`
            // crate refuses (empty host); the same connection as sqlx reads it:
            let url = url
                .expose()
                .replacen("postgres://postgres@/", "postgres:///", 1)
                + "&user=postgres";
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// Proves officers' actions (sign-in, claim, note, level, 911, resolve, reopen) are audited,
/// `audit verify` accepts the untouched chain, and names the first altered entry when a row is
/// changed directly in the database.
#[tokio::test]
async fn the_audit_chain_verifies_and_detects_an_altered_row() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let officer = Console::sign_in(&h, "olivia").await;
    let mut agent = h.enrolled_agent().await;
    let event = agent.event(EventKind::Duress);
    let ack: EventAck = h.post("/v1/events", agent.sign_event(&event)).await.json();
    let id = ack.incident_id.unwrap();
    let base = format!("/incidents/{id}");
    for (path, fields) in [
        ("/claim", vec![]),
        (
            "/notes",
            vec![("text", "Camera 3 shows two people at the desk")],
        ),
        ("/level", vec![("level", "patrol")]),
        ("/called-911", vec![]),
        (
            "/resolve",
            vec![
                ("disposition", "no emergency found"),
                ("follow_up", "Checked in at 10:00"),
            ],
        ),
        ("/reopen", vec![]),
    ] {
        let a = officer.post_form(&format!("{base}{path}"), &fields).await;
        assert_eq!(a.status, 303, "{path}: {}", a.text());
    }
    let out = verify(h.data_dir());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // user.add, login.success, token.create (the agent's enrollment token), device.enroll, 6
    // incident actions.
    assert_eq!(stdout.trim(), "audit chain ok: 10 entries");

    duress_receiver::admin::with_store(h.data_dir(), async |store| {
        let actions: Vec<String> = store
            .audit_log()
            .await?
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(
            actions,
            [
                "user.add",
                "login.success",
                "token.create",
                "device.enroll",
                "incident.claim",
                "incident.note",
                "incident.level",
                "incident.911",
                "incident.resolve",
                "incident.reopen"
            ]
        );
        Ok(())
    })
    .await
    .unwrap();
    tamper(
        &h.data_dir(),
        "UPDATE audit_log SET detail = 'nothing to see' WHERE id = 5",
    )
    .await;
    let out = verify(h.data_dir());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("entry 5"), "{stderr}");
    let page = Console::sign_in(&h, "olivia").await.get("/reports").await;
    assert_eq!(page.status, 200);
    h.shutdown().await;
}

/// Proves the anchored audit log on the backend under test: `audit head` prints the head alone
/// on its last line; `audit verify --expect-head` holds on the intact chain, and fails after the
/// newest entries are deleted (also when the stored head is rewound with them), after the
/// hashes are recomputed with SQL without the key, and (SQLite) with an older copy of the
/// database put back; ids of deleted entries are never handed out again; exports and printed
/// reports are audited.
#[tokio::test]
async fn audit_verify_expect_head_detects_truncation_recompute_and_an_older_copy() {
    let h = Harness::start().await;
    let at = h.data_dir();
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let officer = Console::sign_in(&h, "olivia").await;
    let mut agent = h.enrolled_agent().await;
    let event = agent.event(EventKind::Duress);
    let ack: EventAck = h.post("/v1/events", agent.sign_event(&event)).await.json();
    let id = ack.incident_id.unwrap();
    // Exports and printed reports leave their entries.
    assert_eq!(officer.get("/reports/incidents.csv").await.status, 200);
    assert_eq!(
        officer.get(&format!("/incidents/{id}/print")).await.status,
        200
    );
    assert!(
        duress_receiver::admin::export_events(at.clone())
            .await
            .unwrap()
            .len()
            == 1
    );
    // user.add, login.success, token.create, device.enroll, report.export, report.print,
    // events.export
    let older_copy = (!h.on_postgres()).then(|| {
        let copy = h.dir.path().join("older.sqlite3");
        rusqlite::Connection::open(at.data_dir.join("receiver.sqlite3"))
            .unwrap()
            .execute(&format!("VACUUM INTO '{}'", copy.display()), [])
            .unwrap();
        copy
    });
    for path in ["/claim", "/called-911"] {
        let a = officer
            .post_form(&format!("/incidents/{id}{path}"), &[])
            .await;
        assert_eq!(a.status, 303, "{path}: {}", a.text());
    }
    let h9 = head(&at);
    assert!(h9.starts_with("9:"), "{h9}");
    let actions: Vec<String> = duress_receiver::admin::with_store(at.clone(), async |store| {
        Ok(store
            .audit_log()
            .await?
            .into_iter()
            .map(|e| e.action)
            .collect())
    })
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            "user.add",
            "login.success",
            "token.create",
            "device.enroll",
            "report.export",
            "report.print",
            "events.export",
            "incident.claim",
            "incident.911"
        ]
    );
    let (ok, out) = verify_expecting(&at, &h9);
    assert!(ok, "intact: {out}");
    assert!(out.contains("audit chain ok: 9 entries"), "{out}");

    // An older copy of the database put back (SQLite: the file; the receiver is stopped).
    let location = at.clone();
    // Stop the receiver but keep its data directory.
    let Harness {
        receiver,
        dir: _dir,
        ..
    } = h;
    receiver.shutdown().await.unwrap();
    if let Some(copy) = older_copy {
        let live = location.data_dir.join("receiver.sqlite3");
        let newer = location.data_dir.join("newer.sqlite3");
        std::fs::rename(&live, &newer).unwrap();
        for ext in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(location.data_dir.join(format!("receiver.sqlite3{ext}")));
        }
        std::fs::copy(&copy, &live).unwrap();
        assert!(
            verify(location.clone()).status.success(),
            "the copy is a valid chain"
        );
        let (ok, out) = verify_expecting(&location, &h9);
        assert!(!ok && out.contains("older copy"), "older copy: {out}");
        std::fs::rename(&newer, &live).unwrap();
        assert!(verify_expecting(&location, &h9).0);
    }

    // The last two entries deleted, the stored head rewound with them: only the kept head
    // can tell.
    let h7 = {
        let out = head(&location);
        assert!(out.starts_with("9:"), "{out}");
        let log = duress_receiver::admin::with_store(location.clone(), async |store| {
            Ok(store.audit_log().await?)
        })
        .await
        .unwrap();
        format!("7:{}", log[6].hash)
    };
    tamper(&location, "DELETE FROM audit_log WHERE id > 7").await;
    let out = verify(location.clone());
    assert!(!out.status.success(), "the stored head still names entry 9");
    assert!(String::from_utf8_lossy(&out.stderr).contains("deleted"));
    let hash7 = h7.split_once(':').unwrap().1.to_owned();
    tamper(
        &location,
        &format!("UPDATE audit_head SET id = 7, hash = '{hash7}'"),
    )
    .await;
    assert!(
        verify(location.clone()).status.success(),
        "a careful truncation"
    );
    let (ok, out) = verify_expecting(&location, &h9);
    assert!(!ok, "truncated: {out}");
    assert!(out.contains("entry 8") && out.contains("deleted"), "{out}");

    // Entry 5 altered and every later hash recomputed with SQL, as plain SHA-256 (what SQL can
    // compute without the key), keyed or marked legacy: both fail.
    let log = duress_receiver::admin::with_store(location.clone(), async |store| {
        Ok(store.audit_log().await?)
    })
    .await
    .unwrap();
    for keyed in [true, false] {
        let mut prev = log[3].hash.clone();
        for e in &log[4..] {
            let detail = if e.id == 5 {
                "nothing to see"
            } else {
                e.detail.as_str()
            };
            let hash = duress_receiver::store::audit_chain::entry_hash(
                &prev, e.id, &e.at, &e.actor, &e.action, &e.subject, detail,
            );
            let keyed_value = if location.database.is_some() {
                keyed.to_string()
            } else {
                u8::from(keyed).to_string()
            };
            tamper(
                &location,
                &format!(
                    "UPDATE audit_log SET detail = '{}', prev_hash = '{prev}', hash = '{hash}', \
                     keyed = {keyed_value} WHERE id = {}",
                    detail.replace('\'', "''"),
                    e.id
                ),
            )
            .await;
            prev = hash;
        }
        tamper(
            &location,
            &format!("UPDATE audit_head SET id = 7, hash = '{prev}'"),
        )
        .await;
        let out = verify(location.clone());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "recomputed (keyed {keyed}): {stderr}"
        );
        assert!(stderr.contains("entry 5"), "{stderr}");
        assert!(!verify_expecting(&location, &h7).0);
    }

    // Ids are never reused: with entries 8 and 9 gone (and the head rewound by SQL, so the
    // store continues from 7), ... the stored head decides: restore it to 9 and the next
    // entry is 10, and verification names the gap.
    tamper(&location, "DELETE FROM audit_log WHERE id > 4").await;
    tamper(
        &location,
        &format!(
            "UPDATE audit_head SET id = 9, hash = '{}'",
            h9.split_once(':').unwrap().1
        ),
    )
    .await;
    duress_receiver::admin::add_user(
        location.clone(),
        "after",
        Role::Officer,
        "a long enough password",
    )
    .await
    .unwrap();
    let ids: Vec<i64> = duress_receiver::admin::with_store(location.clone(), async |store| {
        Ok(store.audit_log().await?.into_iter().map(|e| e.id).collect())
    })
    .await
    .unwrap();
    assert_eq!(
        ids,
        [1, 2, 3, 4, 10],
        "the next entry follows the deleted ones"
    );
    let out = verify(location.clone());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected entry 5"));
}

/// Proves the CSV export neutralises spreadsheet formulas in untrusted fields and quotes
/// separators.
#[tokio::test]
async fn the_csv_export_escapes_formulas() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let officer = Console::sign_in(&h, "olivia").await;
    let mut agent = h.enrolled_agent().await;
    let mut event = agent.event(EventKind::Duress);
    event.location.label = Some("=HYPERLINK(\"https://evil.example\",\"Room 1\")".into());
    event.host.hostname = "+cmd|' /C calc'!A0".into();
    event.host.user = "@SUM(1,2)".into();
    let ack: EventAck = h.post("/v1/events", agent.sign_event(&event)).await.json();
    assert!(ack.incident_id.is_some());
    let (csv, headers) = officer.get_response("/reports/incidents.csv").await;
    assert_eq!(csv.status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text();
    assert!(
        text.contains("\"'=HYPERLINK(\"\"https://evil.example\"\",\"\"Room 1\"\")\""),
        "{text}"
    );
    assert!(text.contains(",'+cmd|' /C calc'!A0,"), "{text}");
    assert!(text.contains(",\"'@SUM(1,2)\","), "{text}");
    for line in text.lines().skip(1) {
        for cell in line.split(',') {
            assert!(!cell.starts_with(['=', '+', '@']), "{cell} in {line}");
        }
    }
    h.shutdown().await;
}

/// Proves location labels, host names, user names and notes are rendered as text on every
/// page that shows them (escaped), never as markup.
#[tokio::test]
async fn untrusted_text_is_escaped_everywhere() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "ada", Role::Admin).await;
    let admin = Console::sign_in(&h, "ada").await;
    let mut agent = h.enrolled_agent().await;
    let xss = "<img src=x onerror=alert(1)>";
    let mut event = agent.event(EventKind::Duress);
    event.location.label = Some(xss.into());
    event.host.hostname = "<script>alert(2)</script>".into();
    event.host.user = "\"><svg onload=alert(3)>".into();
    let ack: EventAck = h.post("/v1/events", agent.sign_event(&event)).await.json();
    let id = ack.incident_id.unwrap();
    let note = admin
        .post_form(
            &format!("/incidents/{id}/notes"),
            &[("text", "<b onmouseover=alert(4)>hi</b>")],
        )
        .await;
    assert_eq!(note.status, 303);
    for path in [
        "/".to_owned(),
        "/api/board".to_owned(),
        format!("/incidents/{id}"),
        format!("/api/incidents/{id}/live"),
        format!("/incidents/{id}/print"),
        "/reports".to_owned(),
        "/stations".to_owned(),
        "/audit".to_owned(),
    ] {
        let page = admin.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        let html = page.text();
        for raw in [
            "<img src=x",
            "<script>alert",
            "<svg onload",
            "<b onmouseover",
        ] {
            assert!(!html.contains(raw), "{path} renders {raw:?} as markup");
        }
    }
    let board = admin.get("/").await.text();
    assert!(
        board.contains("&#60;img src=x onerror=alert(1)&#62;")
            || board.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{board}"
    );
    h.shutdown().await;
}

/// Issue 18: the Stations page and `devices list --json` flag active stations that never sent
/// a test event, or whose latest one is older than the self-test period plus a day; a station
/// tested within it is not flagged, and the "self-test overdue" filter lists exactly the others.
#[tokio::test]
async fn stations_never_or_not_recently_self_tested_are_flagged() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let officer = Console::sign_in(&h, "olivia").await;
    let never = h.enrolled_agent().await;
    let mut tested = h.enrolled_agent().await;
    let mut stale = h.enrolled_agent().await;
    for agent in [&mut tested, &mut stale] {
        let mut claims = agent.event(EventKind::Test);
        claims.source = duress_core::Source::Schedule;
        let answer = h.post("/v1/events", agent.sign_event(&claims)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    // Its last test was long ago (written directly: the receiver's clock cannot be moved).
    tamper(
        &h.data_dir(),
        &format!(
            "UPDATE devices SET last_self_test_at = '2020-01-06T10:00:00.000Z' WHERE device_id = '{}'",
            stale.device_id
        ),
    )
    .await;

    let page = officer.get("/stations").await;
    assert_eq!(page.status, 200);
    let html = page.text();
    let row = |id: &str| -> String {
        let start = html
            .find(&format!("data-device-id=\"{id}\""))
            .unwrap_or_else(|| panic!("no row for {id}"));
        let end = html[start..].find("</tr>").unwrap() + start;
        html[start..end].to_owned()
    };
    let r = row(&never.device_id);
    assert!(r.contains("data-self-test=\"never\""), "{r}");
    assert!(r.contains("Never self-tested"), "{r}");
    let r = row(&tested.device_id);
    assert!(r.contains("data-self-test=\"ok\""), "{r}");
    assert!(!r.contains("badge-selftest-due"), "{r}");
    let r = row(&stale.device_id);
    assert!(r.contains("data-self-test=\"overdue\""), "{r}");
    assert!(r.contains("Self-test overdue"), "{r}");
    assert!(html.contains("2 not self-tested within 7 days"), "{html}");

    let filtered = officer
        .get("/stations?state=self-test+overdue")
        .await
        .text();
    assert!(filtered.contains(&never.device_id));
    assert!(filtered.contains(&stale.device_id));
    assert!(
        !filtered.contains(&format!("data-device-id=\"{}\"", tested.device_id)),
        "{filtered}"
    );

    let at = h.data_dir();
    let listing = |period: &str| -> serde_json::Value {
        let mut cmd = Command::new(BIN);
        cmd.args(["devices", "list", "--json", "--self-test-period", period])
            .arg("--data-dir")
            .arg(&at.data_dir);
        if let Some(url) = &at.database {
            cmd.env("DURESS_DATABASE_URL", url.expose());
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let flags = |v: &serde_json::Value| -> Vec<(String, serde_json::Value, bool)> {
        let mut all: Vec<_> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let id = d["device_id"].as_str().unwrap().to_owned();
                let name = if id == never.device_id {
                    "never"
                } else if id == tested.device_id {
                    "tested"
                } else {
                    "stale"
                };
                (
                    name.to_owned(),
                    d["self_test"].clone(),
                    d["self_test_overdue"].as_bool().unwrap(),
                )
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    };
    assert_eq!(
        flags(&listing("7d")),
        [
            ("never".to_owned(), serde_json::json!("never"), true),
            ("stale".to_owned(), serde_json::json!("overdue"), true),
            ("tested".to_owned(), serde_json::json!("ok"), false),
        ]
    );
    // A period longer than the stale station's age clears its flag (the CLI takes the period).
    let long = listing("36500d");
    assert_eq!(flags(&long)[1].1, serde_json::json!("ok"));
    h.shutdown().await;
}

/// Proves the policy report of heartbeats reaches the Stations page: three stations report
/// the fleet's policy hash, one another; only that one is flagged "policy differs from the
/// fleet", and each shows its policy's short hash.
#[tokio::test]
async fn the_stations_page_flags_a_policy_that_differs_from_the_fleets() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "ada", Role::Officer).await;
    let officer = Console::sign_in(&h, "ada").await;
    let fleet = "a1".repeat(32);
    let odd = "b2".repeat(32);
    for (i, hash) in [&fleet, &fleet, &fleet, &odd].into_iter().enumerate() {
        let agent = h.enrolled_agent().await;
        let mut hb = agent.heartbeat();
        hb.host.hostname = format!("ws-policy-{i}");
        hb.policy = Some(duress_core::PolicyFacts {
            source: "os:/etc/duress/agent.toml".into(),
            sha256: hash.clone(),
        });
        let answer = h.post("/v1/heartbeats", agent.sign_heartbeat(&hb)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let devices = duress_receiver::admin::list_devices(h.data_dir())
        .await
        .unwrap();
    assert_eq!(
        devices
            .iter()
            .filter(|d| d.policy_sha256.as_deref() == Some(odd.as_str()))
            .count(),
        1
    );
    let html = officer.get("/stations").await.text();
    assert_eq!(
        html.matches("policy differs from the fleet").count(),
        1,
        "{html}"
    );
    assert!(html.contains(&format!("policy {}", &odd[..12])));
    assert!(html.contains(&format!("policy {}", &fleet[..12])));
}
