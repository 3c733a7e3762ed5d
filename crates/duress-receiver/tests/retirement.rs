//! Retiring a station at the receiver, on the backend `DURESS_TEST_DATABASE` names: the signed
//! `POST /v1/retirements` (and its resend), the console's admin-only Retire with its confirm
//! step and the `retired` filter, and `duress-receiver stations retire` as the real binary.
#![allow(clippy::unwrap_used)]

mod common;

use common::Harness;
use common::console::{Console, add_user};
use duress_core::{EventKind, ProblemType, RetirementAnswer, RetirementClaims, Typ};
use duress_receiver::store::{Role, Store};

const BIN: &str = env!("CARGO_BIN_EXE_duress-receiver");

fn retirement(agent: &common::Agent) -> String {
    let claims = RetirementClaims {
        sent_at: common::now(),
        queued: 0,
    };
    agent.key.sign(
        Typ::Retirement,
        Some(&agent.device_id),
        &serde_json::to_vec(&claims).unwrap(),
    )
}

async fn store(h: &Harness) -> std::sync::Arc<dyn Store> {
    duress_receiver::store::open(&h.data_dir()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_retires_itself_and_its_key_is_refused_after() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let answer = h.post("/v1/retirements", retirement(&agent)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let a: RetirementAnswer = answer.json();
    assert_eq!(a.device_id, agent.device_id);
    assert!(a.retired_now);
    // A resend (the first answer lost) is answered the same way and changes nothing.
    let again: RetirementAnswer = h.post("/v1/retirements", retirement(&agent)).await.json();
    assert!(!again.retired_now);
    // An event signed with its key is refused, clearly.
    let ev = agent.event(EventKind::Duress);
    let refused = h.post("/v1/events", agent.sign_event(&ev)).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    refused.problem(ProblemType::DeviceRevoked);
    assert_eq!(h.event_count().await, 0);
    // Its heartbeat says so: revoked and retired (the agent then shows "not enrolled").
    let beat = h
        .post("/v1/heartbeats", agent.sign_heartbeat(&agent.heartbeat()))
        .await;
    assert_eq!(beat.status, 200, "{}", beat.text());
    let beat: duress_core::HeartbeatAnswer = beat.json();
    assert_eq!(beat.device_status, duress_core::DeviceStatus::Revoked);
    assert!(beat.retired);
    // A retirement signed as another type, or by no enrolled key, is refused.
    let wrong = agent
        .key
        .sign(Typ::Heartbeat, Some(&agent.device_id), b"{}");
    let answer = h.post("/v1/retirements", wrong).await;
    assert!(
        answer.status >= 400 && answer.status < 500,
        "{}",
        answer.text()
    );
    let stranger = common::Agent::new();
    let mut ghost = stranger;
    ghost.device_id = "0193aaaa-0000-7000-8000-000000000000".into();
    let answer = h.post("/v1/retirements", retirement(&ghost)).await;
    answer.problem(ProblemType::UnknownDevice);

    let s = store(&h).await;
    let log = s.audit_log().await.unwrap();
    let retired: Vec<_> = log.iter().filter(|e| e.action == "device.retire").collect();
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].actor, format!("device:{}", agent.device_id));
    s.close().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_retire_from_the_console_with_a_confirm_step_and_the_cli() {
    let h = Harness::start().await;
    let a = h.enrolled_agent().await;
    let b = h.enrolled_agent().await;
    add_user(h.data_dir(), "boss", Role::Admin).await;
    add_user(h.data_dir(), "olga", Role::Officer).await;
    let admin = Console::sign_in(&h, "boss").await;
    let officer = Console::sign_in(&h, "olga").await;
    let path = format!("/stations/{}/retire", a.device_id);
    // Before: an active station's heartbeat carries no `retired`.
    let beat = h
        .post("/v1/heartbeats", a.sign_heartbeat(&a.heartbeat()))
        .await;
    assert!(!beat.text().contains("retired"), "{}", beat.text());

    // Officers may not; admins must tick the confirmation.
    let answer = officer.post_form(&path, &[("confirm", "yes")]).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    let answer = admin.post_form(&path, &[]).await;
    assert_eq!(answer.status, 422, "{}", answer.text());
    assert!(admin.get("/stations").await.text().contains(&a.device_id));
    let answer = admin.post_form(&path, &[("confirm", "yes")]).await;
    assert_eq!(answer.status, 303, "{}", answer.text());

    // Gone from the default view and its counts; listed under "retired".
    let page = admin.get("/stations").await.text();
    assert!(!page.contains(&a.device_id), "a retired station is hidden");
    assert!(page.contains(&b.device_id));
    assert!(page.contains("1 enrolled"), "only the other station counts");
    assert!(page.contains("1 retired"));
    let retired = admin.get("/stations?state=retired").await.text();
    assert!(retired.contains(&a.device_id));
    assert!(!retired.contains(&b.device_id));

    // The CLI retires the other one; a second run says so; an unknown id is an error.
    let mut args = vec![
        "stations".to_owned(),
        "retire".to_owned(),
        "--data-dir".to_owned(),
        h.data_dir().data_dir.display().to_string(),
    ];
    if let Some(url) = &h.data_dir().database {
        args.extend(["--database".to_owned(), url.expose().to_owned()]);
    }
    let run = |extra: &str| {
        let out = std::process::Command::new(BIN)
            .args(&args)
            .args(["--station", extra])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = run(&b.device_id);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), format!("station {} retired", b.device_id));
    let (ok, stdout, _) = run(&b.device_id);
    assert!(ok);
    assert!(stdout.contains("already retired"), "{stdout}");
    let (ok, _, stderr) = run("no-such-station");
    assert!(!ok);
    assert!(
        stderr.contains("no station \"no-such-station\""),
        "{stderr}"
    );

    let s = store(&h).await;
    let actors: Vec<String> = s
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "device.retire")
        .map(|e| e.actor)
        .collect();
    assert_eq!(actors, ["boss", "cli"]);
    duress_receiver::store::verify_audit(s.as_ref(), None)
        .await
        .unwrap()
        .unwrap();
    s.close().await;
    h.shutdown().await;
}
