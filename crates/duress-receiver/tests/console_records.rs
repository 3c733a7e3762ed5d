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
    let mut cmd = Command::new(BIN);
    cmd.args([
        "audit",
        "verify",
        "--data-dir",
        at.data_dir.to_str().unwrap(),
    ]);
    if let Some(url) = &at.database {
        cmd.env("DURESS_DATABASE_URL", url.expose());
    }
    cmd.output().unwrap()
}

/// Runs `sql` on the store directly, as someone with access to the database would.
async fn tamper(at: &StoreLocation, sql: &'static str) {
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
            sqlx::query(sql).execute(&mut conn).await.unwrap();
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
    // user.add, login.success, token.create (the agent's enrollment token), 6 incident actions.
    assert_eq!(stdout.trim(), "audit chain ok: 9 entries");

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
