//! "Resolve every open incident of this station" (issue 15 item 3), the admin's answer to a
//! broken or hostile workstation that filled the board: from the console's Stations page
//! (admins only, a required note and a confirmation) and from the command line
//! (`duress-receiver stations resolve-open`), each incident audited. Runs on either backend
//! (`DURESS_TEST_DATABASE`).
#![allow(clippy::unwrap_used)]

mod common;

use common::console::{Console, add_user};
use common::{Agent, Harness};
use duress_core::EventKind;
use duress_receiver::admin;
use duress_receiver::store::Role;

const BIN: &str = env!("CARGO_BIN_EXE_duress-receiver");

/// Opens `n` incidents of `agent` (presses an hour apart: each outside the grouping window).
async fn open_incidents(h: &Harness, agent: &mut Agent, n: i64) {
    for i in 0..n {
        let mut claims = agent.event(EventKind::Duress);
        claims.occurred_at = common::now() - time::Duration::hours(n - i);
        let a = h.post("/v1/events", agent.sign_event(&claims)).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
}

async fn open_of(h: &Harness, device_id: &str) -> usize {
    admin::list_incidents(h.data_dir())
        .await
        .unwrap()
        .iter()
        .filter(|i| i.device_id == device_id && i.is_open())
        .count()
}

async fn resolve_audits(h: &Harness, actor: &str) -> Vec<String> {
    admin::with_store(h.data_dir(), async |store| Ok(store.audit_log().await?))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "incident.resolve" && e.actor == actor)
        .map(|e| e.subject)
        .collect()
}

/// Proves the console action: an officer may not (403); an admin without the confirmation or
/// the note is refused (422, nothing changed); with both, every open incident of that station
/// — and only that station — is resolved, one audit entry each, and the Stations page offers
/// the action to admins only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_resolves_a_stations_open_incidents_from_the_console() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "officer", Role::Officer).await;
    add_user(h.data_dir(), "boss", Role::Admin).await;
    let officer = Console::sign_in(&h, "officer").await;
    let boss = Console::sign_in(&h, "boss").await;
    let mut noisy = h.enrolled_agent().await;
    let mut other = h.enrolled_agent().await;
    open_incidents(&h, &mut noisy, 4).await;
    open_incidents(&h, &mut other, 1).await;
    assert_eq!(open_of(&h, &noisy.device_id).await, 4);

    let page = boss.get("/stations").await.text();
    assert!(page.contains(&format!("/stations/{}/resolve-open", noisy.device_id)));
    assert!(
        !officer
            .get("/stations")
            .await
            .text()
            .contains("resolve-open"),
        "offered to an officer"
    );

    let path = format!("/stations/{}/resolve-open", noisy.device_id);
    let a = officer
        .post_form(&path, &[("note", "x"), ("confirm", "yes")])
        .await;
    assert_eq!(a.status, 403, "an officer resolved a station's incidents");
    let a = boss.post_form(&path, &[("note", "broken keyboard")]).await;
    assert_eq!(a.status, 422, "no confirmation: {}", a.text());
    let a = boss
        .post_form(&path, &[("note", "   "), ("confirm", "yes")])
        .await;
    assert_eq!(a.status, 422, "no note: {}", a.text());
    assert!(a.text().contains("note is required"), "{}", a.text());
    assert_eq!(
        open_of(&h, &noisy.device_id).await,
        4,
        "a refusal changed something"
    );

    let a = boss
        .post_form(
            &path,
            &[("note", "broken keyboard, replaced"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.text().contains("4 open incident(s)"), "{}", a.text());
    assert_eq!(open_of(&h, &noisy.device_id).await, 0);
    assert_eq!(open_of(&h, &other.device_id).await, 1, "another station's");
    assert_eq!(resolve_audits(&h, "boss").await.len(), 4, "one entry each");

    let a = boss
        .post_form(
            "/stations/nobody/resolve-open",
            &[("note", "x"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(a.status, 404);
    h.shutdown().await;
}

/// Proves the command line: `stations resolve-open --station ID --note …` beside a running
/// receiver resolves that station's open incidents (audited as `cli`, one entry each) and
/// prints them; without a note it fails and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_resolves_a_stations_open_incidents() {
    let h = Harness::start().await;
    let mut noisy = h.enrolled_agent().await;
    open_incidents(&h, &mut noisy, 3).await;
    let location = h.data_dir();
    let mut args = vec![
        "stations".to_owned(),
        "resolve-open".to_owned(),
        "--data-dir".to_owned(),
        location.data_dir.to_str().unwrap().to_owned(),
        "--station".to_owned(),
        noisy.device_id.clone(),
    ];
    if let Some(url) = &location.database {
        args.extend(["--database".to_owned(), url.expose().to_owned()]);
    }
    let run = |extra: &[&str]| {
        let mut all = args.clone();
        all.extend(extra.iter().map(|s| (*s).to_owned()));
        std::process::Command::new(BIN).args(&all).output().unwrap()
    };

    let out = run(&["--note", " "]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("note is required"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(open_of(&h, &noisy.device_id).await, 3);

    let out = run(&["--note", "stuck hotkey, agent reinstalled"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("resolved 3 open incident(s)"), "{stdout}");
    assert_eq!(open_of(&h, &noisy.device_id).await, 0);
    let audited = resolve_audits(&h, "cli").await;
    assert_eq!(audited.len(), 3);
    for id in &audited {
        assert!(stdout.contains(id.as_str()), "{id} not printed");
    }
    h.shutdown().await;
}
