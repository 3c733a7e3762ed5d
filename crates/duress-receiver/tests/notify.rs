//! The notifier end to end: a real receiver (SQLite, or PostgreSQL with
//! `DURESS_TEST_DATABASE=postgres`) with a configuration file, real agents' signed alarms, and
//! capture servers on 127.0.0.1 (one over HTTPS with a test CA, trusted through `ca_cert`).
//! What the channels sent is checked by independent verifiers (`tests/notify/verify.js`: the
//! Standard Webhooks TypeScript library, Microsoft's Adaptive Card schema with ajv), installed by
//! `scripts/install-deps` (`npm ci` in tests/notify); without them these tests fail, naming the
//! command to run.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use common::Harness;
use duress_core::EventKind;
use duress_receiver::config::ReceiverConfig;
use duress_receiver::store::{IncidentAction, NotificationRecord};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TEAMS_SIG: &str = "sig=TEAMSFLOWSIGNATURE0123456789";
const SMS_TOKEN: &str = "smsauthtoken-5f2c9a";

#[derive(Debug, Clone)]
struct Captured {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A capture server: records every request; answers by path (`/ok` 200, `/teams` 202, `/sms`
/// 201, `/fail` 500, `/hang` never within the attempt timeout, `/flaky` 500 while `failing`).
#[derive(Clone, Default)]
struct Capture {
    seen: Arc<Mutex<Vec<Captured>>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl Capture {
    fn requests(&self, path: &str) -> Vec<Captured> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }
}

async fn capture(
    State(cap): State<Capture>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().to_owned();
    cap.seen.lock().unwrap().push(Captured {
        path: path.clone(),
        headers,
        body,
    });
    match path.as_str() {
        "/teams" => StatusCode::ACCEPTED,
        "/sms" => StatusCode::CREATED,
        "/fail" => StatusCode::INTERNAL_SERVER_ERROR,
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK
        }
        "/flaky" if cap.failing.load(std::sync::atomic::Ordering::SeqCst) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::OK,
    }
}

fn app(cap: &Capture) -> Router {
    Router::new().fallback(capture).with_state(cap.clone())
}

/// Plain HTTP on 127.0.0.1 (allowed by the URL rule: loopback).
async fn serve_http(cap: &Capture) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, app(cap)).into_future());
    format!("http://{addr}")
}

/// A fresh test CA (rcgen) and a leaf for 127.0.0.1 it signed: the CA's PEM file, the leaf's
/// certificate and key (DER), and the leaf's certificate and key as PEM files.
struct TestCa {
    ca_path: PathBuf,
    leaf: rustls::pki_types::CertificateDer<'static>,
    leaf_key: Vec<u8>,
    leaf_pem: PathBuf,
    key_pem: PathBuf,
}

fn test_ca(dir: &Path, name: &str) -> TestCa {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("notify test CA {name}"));
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let ca_path = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let leaf_pem = dir.join(format!("{name}-leaf.pem"));
    std::fs::write(&leaf_pem, leaf.pem()).unwrap();
    let key_pem = dir.join(format!("{name}-leaf-key.pem"));
    std::fs::write(&key_pem, leaf_key.serialize_pem()).unwrap();
    TestCa {
        ca_path,
        leaf: leaf.der().clone(),
        leaf_key: leaf_key.serialize_der(),
        leaf_pem,
        key_pem,
    }
}

/// HTTPS on 127.0.0.1 with a leaf of a fresh test CA; returns the URL and the CA's PEM file.
async fn serve_https(cap: &Capture, dir: &Path) -> (String, PathBuf) {
    serve_https_named(cap, dir, "notify").await
}

async fn serve_https_named(cap: &Capture, dir: &Path, name: &str) -> (String, PathBuf) {
    let ca = test_ca(dir, name);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![ca.leaf.clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(ca.leaf_key.clone().into()),
        )
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config)),
    )
    .unwrap();
    tokio::spawn(server.serve(app(cap).into_make_service()));
    (format!("https://127.0.0.1:{}", addr.port()), ca.ca_path)
}

/// A port nothing listens on (bound, then closed).
fn refused_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/refused")
}

fn config(text: &str) -> Arc<ReceiverConfig> {
    Arc::new(ReceiverConfig::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}")))
}

async fn start(text: &str) -> Harness {
    let cfg = config(text);
    Harness::start_with(move |s| {
        s.config = Some(cfg);
        s.notify_retry_base = Duration::from_millis(200);
    })
    .await
}

/// Sends one duress alarm; returns its incident and how long the acknowledgement took.
async fn alarm(h: &Harness, agent: &mut common::Agent) -> (uuid::Uuid, Duration) {
    let claims = agent.event(EventKind::Duress);
    let t = Instant::now();
    let answer = h.post("/v1/events", agent.sign_event(&claims)).await;
    let took = t.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let ack: duress_core::EventAck = answer.json();
    (ack.incident_id.unwrap(), took)
}

/// Polls (bounded) until `done` holds for the incident's notifications.
async fn wait_rows(
    h: &Harness,
    incident: uuid::Uuid,
    what: &str,
    done: impl Fn(&[NotificationRecord]) -> bool,
) -> Vec<NotificationRecord> {
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = store.incident_notifications(incident).await.unwrap();
        if done(&rows) {
            store.close().await;
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn row<'a>(rows: &'a [NotificationRecord], channel: &str) -> &'a NotificationRecord {
    rows.iter().find(|r| r.channel == channel).unwrap()
}

/// Runs `node tests/notify/verify.js MODE CAPTURE [ARG]`; panics with its reason unless "ok".
fn verify(mode: &str, c: &Captured, arg: Option<&str>, dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/notify");
    assert!(
        root.join("node_modules/standardwebhooks").is_dir()
            && root.join("node_modules/ajv").is_dir()
            && root.join("node_modules/adaptivecards-designer").is_dir(),
        "the notifier's verifiers are not installed: run scripts/install-deps \
         (or `npm ci` in tests/notify)"
    );
    let headers: serde_json::Map<String, serde_json::Value> = c
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().into()))
        .collect();
    let file = dir.join(format!("capture-{mode}.json"));
    let text = String::from_utf8(c.body.to_vec()).unwrap();
    std::fs::write(
        &file,
        serde_json::to_vec(&serde_json::json!({"headers": headers, "body": text})).unwrap(),
    )
    .unwrap();
    let mut cmd = std::process::Command::new("node");
    cmd.arg(root.join("verify.js")).arg(mode).arg(&file);
    if let Some(a) = arg {
        cmd.arg(a);
    }
    let out = cmd
        .output()
        .expect("running node (Node.js must be installed)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{mode} verifier: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every HTTP channel's payload against a capture server, checked by independent verifiers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channels_send_verifiable_payloads() {
    let cap = Capture::default();
    let dir = tempfile::tempdir().unwrap();
    let http = serve_http(&cap).await;
    let (https, ca) = serve_https(&cap, dir.path()).await;
    let h = start(&format!(
        r#"
public_url = "https://duress.example.edu"
[[channels]]
name = "ops-webhook"
kind = "webhook"
url = "{https}/webhook"
secret = "{SECRET}"
ca_cert = "{ca}"
[[channels]]
name = "security-teams"
kind = "teams"
url = "{http}/teams?{TEAMS_SIG}"
[[channels]]
name = "duty-sms"
kind = "sms"
url = "{http}/sms"
username = "AC0123"
password = "{SMS_TOKEN}"
from = "+15550100"
to = ["+15550111"]
[[channels]]
name = "cameras"
kind = "vms"
[[channels.requests]]
building = "A"
url = "{http}/vms?room={{ROOM}}&label={{label}}"
headers = {{ "content-type" = "application/json" }}
body = '{{"event": "duress", "where": "{{label}}", "incident": "{{incident_id}}"}}'
[[ladders]]
name = "default"
steps = [ {{ after_s = 0, channels = ["ops-webhook", "security-teams", "duty-sms", "cameras"] }} ]
"#,
        ca = ca.display()
    ))
    .await;
    let mut agent = h.enrolled_agent().await;
    let (incident, _) = alarm(&h, &mut agent).await;
    let rows = wait_rows(&h, incident, "four settled rows", |rows| {
        rows.len() == 4 && rows.iter().all(|r| r.status != "pending")
    })
    .await;
    assert_eq!(row(&rows, "ops-webhook").status, "delivered");
    assert_eq!(row(&rows, "cameras").status, "delivered");
    // Teams Workflows' 202 and the SMS gateway's 201 "queued" are accepted, not delivered.
    assert_eq!(row(&rows, "security-teams").status, "accepted");
    assert_eq!(row(&rows, "duty-sms").status, "accepted");

    let hook = cap.requests("/webhook");
    assert_eq!(hook.len(), 1);
    let hook = &hook[0];
    assert_eq!(
        hook.headers["webhook-id"].to_str().unwrap(),
        row(&rows, "ops-webhook").id.to_string()
    );
    verify("webhook", hook, Some(SECRET), dir.path());
    let body: serde_json::Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(body["type"], "incident.opened");
    assert_eq!(body["data"]["location_label"], "Bldg A, Floor 2, Room 214");
    assert_eq!(body["data"]["incident_id"], incident.to_string());
    assert_eq!(body["data"]["hostname"], "ws-214");
    assert_eq!(
        body["data"]["incident_url"],
        format!("https://duress.example.edu/incidents/{incident}")
    );

    let teams = &cap.requests("/teams")[0];
    verify("teams", teams, None, dir.path());
    let card: serde_json::Value = serde_json::from_slice(&teams.body).unwrap();
    let content = &card["attachments"][0]["content"];
    assert_eq!(content["body"][0]["text"], "Bldg A, Floor 2, Room 214");
    let facts = content["body"][2]["facts"].to_string();
    for fact in ["Saint Paul", "ws-214", "alice", "Presses"] {
        assert!(facts.contains(fact), "{fact} in {facts}");
    }

    let sms = &cap.requests("/sms")[0];
    let form: Vec<(String, String)> = form_urlencoded::parse(&sms.body).into_owned().collect();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(field("To"), "+15550111");
    assert_eq!(field("From"), "+15550100");
    let text = field("Body");
    assert!(text.starts_with("Bldg A, Floor 2, Room 214"), "{text}");
    assert!(text.chars().count() <= 320);
    let auth = sms.headers["authorization"].to_str().unwrap();
    use base64::Engine as _;
    assert_eq!(
        auth,
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("AC0123:{SMS_TOKEN}"))
        )
    );

    let vms = &cap.requests("/vms")[0];
    let vms_body: serde_json::Value = serde_json::from_slice(&vms.body).unwrap();
    assert_eq!(vms_body["where"], "Bldg A, Floor 2, Room 214");
    assert_eq!(vms_body["incident"], incident.to_string());
    h.shutdown().await;
}

/// Failing channels (500, hang, refused) never slow the alarm; their attempts are retried and
/// shown on the incident page.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_channels_do_not_delay_the_alarm_and_are_retried() {
    let cap = Capture::default();
    let http = serve_http(&cap).await;
    let refused = refused_url();
    let h = start(&format!(
        r#"
[[channels]]
name = "broken"
kind = "webhook"
url = "{http}/fail"
secret = "{SECRET}"
[[channels]]
name = "hanging"
kind = "webhook"
url = "{http}/hang"
secret = "{SECRET}"
[[channels]]
name = "nobody"
kind = "webhook"
url = "{refused}"
secret = "{SECRET}"
[[ladders]]
name = "default"
steps = [ {{ after_s = 0, channels = ["broken", "hanging", "nobody"] }} ]
"#
    ))
    .await;
    let mut agent = h.enrolled_agent().await;
    let (incident, first) = alarm(&h, &mut agent).await;
    // The first alarm's fan-out is running (and failing) while the second is acknowledged.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, second) = alarm(&h, &mut agent).await;
    assert!(first < Duration::from_secs(2), "{first:?}");
    assert!(second < Duration::from_secs(2), "{second:?}");
    let rows = wait_rows(&h, incident, "retries of the failing channels", |rows| {
        let n = |c: &str| {
            rows.iter()
                .find(|r| r.channel == c)
                .map_or(0, |r| r.attempts.len())
        };
        n("broken") >= 3 && n("nobody") >= 2
    })
    .await;
    assert!(rows.iter().all(|r| r.status == "pending"), "{rows:#?}");
    let broken = row(&rows, "broken");
    assert!(broken.attempts.iter().all(|a| a.http_status == Some(500)));
    assert!(
        row(&rows, "nobody").attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("connection failed")
    );
    // The incident page lists every channel and its attempts.
    common::console::add_user(
        h.data_dir(),
        "officer",
        duress_receiver::store::Role::Officer,
    )
    .await;
    let officer = common::console::Console::sign_in(&h, "officer").await;
    let page = officer.get(&format!("/incidents/{incident}")).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    for c in [
        "broken",
        "hanging",
        "nobody",
        "HTTP 500",
        "connection failed",
    ] {
        assert!(html.contains(c), "{c} on the incident page");
    }
    h.shutdown().await;
}

/// A receiver stopped with deliveries pending delivers each after its restart, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_deliveries_survive_a_restart_and_are_sent_once() {
    let cap = Capture::default();
    cap.failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let http = serve_http(&cap).await;
    let text = format!(
        r#"
[[channels]]
name = "hook"
kind = "webhook"
url = "{http}/flaky"
secret = "{SECRET}"
[[ladders]]
name = "default"
steps = [ {{ after_s = 0, channels = ["hook"] }} ]
"#
    );
    let h = start(&text).await;
    let mut agent = h.enrolled_agent().await;
    let mut incidents = Vec::new();
    for _ in 0..3 {
        // Three devices' alarms: three incidents, three rows.
        let mut a = h.enrolled_agent().await;
        incidents.push(alarm(&h, &mut a).await.0);
    }
    let _ = &mut agent;
    for i in &incidents {
        wait_rows(&h, *i, "a failed attempt", |rows| {
            rows.iter().all(|r| !r.attempts.is_empty())
        })
        .await;
    }
    // Stop the receiver (its worker with it) while every row is still pending.
    let dir = h.dir;
    let location = h.receiver.store.clone();
    h.receiver.shutdown().await.unwrap();
    cap.failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let failed_before = cap.requests("/flaky").len();

    let dir_path = dir.path().to_path_buf();
    let restart = || {
        let mut s = duress_receiver::Settings::new(&dir_path);
        s.database = location.database.clone();
        s.config = Some(config(&text));
        s.notify_retry_base = Duration::from_millis(200);
        s
    };
    let again = duress_receiver::start(restart()).await.unwrap();
    let h2 = Harness {
        client: common::webpki_client(&again.cert_pem_path),
        receiver: again,
        dir,
    };
    for i in &incidents {
        let rows = wait_rows(&h2, *i, "delivery after the restart", |rows| {
            rows.iter().all(|r| r.status == "delivered")
        })
        .await;
        assert_eq!(rows.len(), 1);
    }
    let dir = h2.dir;
    h2.receiver.shutdown().await.unwrap();
    let delivered = cap.requests("/flaky").len() - failed_before;
    assert_eq!(delivered, 3, "each pending row delivered once");
    // A further restart sends nothing recorded as delivered again.
    let third = duress_receiver::start(restart()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    third.shutdown().await.unwrap();
    assert_eq!(cap.requests("/flaky").len() - failed_before, 3);
    drop(dir);
}

/// The ladder's second step fires after its delay, only for the incident nobody claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_second_step_fires_only_for_unclaimed_incidents() {
    let cap = Capture::default();
    let http = serve_http(&cap).await;
    let h = start(&format!(
        r#"
[[channels]]
name = "first"
kind = "webhook"
url = "{http}/first"
secret = "{SECRET}"
[[channels]]
name = "second"
kind = "webhook"
url = "{http}/second"
secret = "{SECRET}"
[[ladders]]
name = "default"
steps = [ {{ after_s = 0, channels = ["first"] }},
          {{ after_s = 2, channels = ["second"] }} ]
"#
    ))
    .await;
    let mut a = h.enrolled_agent().await;
    let mut b = h.enrolled_agent().await;
    let (claimed, _) = alarm(&h, &mut a).await;
    let (unclaimed, _) = alarm(&h, &mut b).await;
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    store
        .apply_action(
            claimed,
            "officer",
            IncidentAction::Claim { takeover: false },
        )
        .await
        .unwrap();
    store.close().await;
    // Not before its delay.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(cap.requests("/second").is_empty());
    let rows = wait_rows(&h, unclaimed, "the second step", |rows| {
        rows.iter().all(|r| r.status == "delivered")
    })
    .await;
    assert_eq!(rows.len(), 2);
    let stopped = wait_rows(&h, claimed, "the stopped step", |rows| {
        rows.iter().any(|r| r.status == "stopped")
    })
    .await;
    assert_eq!(row(&stopped, "first").status, "delivered");
    assert_eq!(row(&stopped, "second").status, "stopped");
    assert_eq!(cap.requests("/first").len(), 2);
    let second = cap.requests("/second");
    assert_eq!(second.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&second[0].body).unwrap();
    assert_eq!(body["type"], "incident.escalated");
    assert_eq!(body["data"]["incident_id"], unclaimed.to_string());
    h.shutdown().await;
}

/// Without a configuration file nothing is enqueued: console only, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_config_nothing_is_sent() {
    let h = Harness::start().await;
    let mut agent = h.enrolled_agent().await;
    let (incident, _) = alarm(&h, &mut agent).await;
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    assert!(
        store
            .incident_notifications(incident)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
    h.shutdown().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_duress-receiver");

/// `serve --config` refuses a file with an unknown key, naming the key and the file, and
/// never starts.
#[test]
fn serve_refuses_a_config_with_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("receiver.toml");
    std::fs::write(
        &file,
        "[[channels]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"https://example.edu/\"\n\
         secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretries = 3\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("retries") && err.contains("receiver.toml"),
        "{err}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "it must not listen"
    );
}

/// The real binary with channels that fail (so errors are logged at every level), debug
/// logging on: no secret of the file appears in its logs, the console's pages or the API's
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_never_appear_in_logs_pages_or_api_answers() {
    use std::io::BufRead as _;
    let cap = Capture::default();
    let http = serve_http(&cap).await;
    let refused = refused_url();
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = refused
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/refused");
    let mail_password = "mailpassword-77a1";
    let vms_token = "Bearer vmstoken-93c2";
    let file = dir.path().join("receiver.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[channels]]
name = "hook"
kind = "webhook"
url = "{http}/fail?key=HOOKURLKEY"
secret = "{SECRET}"
[[channels]]
name = "teams"
kind = "teams"
url = "{http}/fail?{TEAMS_SIG}"
[[channels]]
name = "sms"
kind = "sms"
url = "{refused}"
username = "AC0123"
password = "{SMS_TOKEN}"
from = "+15550100"
to = ["+15550111"]
[[channels]]
name = "mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
tls = "none"
username = "duress"
password = "{mail_password}"
from = "duress@example.edu"
to = ["security@example.edu"]
[[channels]]
name = "cams"
kind = "vms"
[[channels.requests]]
url = "{http}/fail"
headers = {{ "authorization" = "{vms_token}" }}
[[ladders]]
name = "default"
steps = [ {{ after_s = 0, channels = ["hook", "teams", "sms", "mail", "cams"] }} ]
"#
        ),
    )
    .unwrap();
    let log_path = dir.path().join("receiver.log");
    let data = dir.path().join("data");
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&file)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .strip_prefix("Duress receiver listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let stdout_rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let cert = data.join("tls/cert.pem");
    let client = common::webpki_client(&cert);
    let location = duress_receiver::store::StoreLocation::new(&data, None);

    let mut answers = String::new();
    let token = duress_receiver::admin::create_token(
        location.clone(),
        1,
        Some(Duration::from_secs(600)),
        duress_receiver::Approve::Auto,
    )
    .await
    .unwrap();
    let mut agent = common::Agent::new();
    let enrolled = client
        .post(format!("{url}/v1/enrollments"))
        .header("content-type", "application/jose")
        .body(agent.enrollment(&token))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    answers.push_str(&enrolled);
    let enrolled: duress_core::EnrollmentAnswer = serde_json::from_str(&enrolled).unwrap();
    agent.device_id = enrolled.device_id;
    let claims = agent.event(EventKind::Duress);
    let ack = client
        .post(format!("{url}/v1/events"))
        .header("content-type", "application/jose")
        .body(agent.sign_event(&claims))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    answers.push_str(&ack);
    let ack: duress_core::EventAck = serde_json::from_str(&ack).unwrap();
    let incident = ack.incident_id.unwrap();

    // Every channel has failed at least twice (errors logged, attempts recorded).
    let store = duress_receiver::store::open(&location).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = store.incident_notifications(incident).await.unwrap();
        if rows.len() == 5 && rows.iter().all(|r| r.attempts.len() >= 2) {
            break;
        }
        assert!(Instant::now() < deadline, "{rows:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    store.close().await;

    common::console::add_user(location.clone(), "ada", duress_receiver::store::Role::Admin).await;
    let mut console = common::console::Console {
        client: common::console::raw_client(&cert),
        base: url.clone(),
        cookie: None,
        csrf: String::new(),
    };
    assert_eq!(
        console.login("ada", common::console::PASSWORD).await.status,
        303
    );
    let mut pages = String::new();
    for path in [
        "/".to_owned(),
        format!("/incidents/{incident}"),
        format!("/api/incidents/{incident}/live"),
        "/admin/channels".to_owned(),
        "/stations".to_owned(),
        "/audit".to_owned(),
    ] {
        let page = console.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        pages.push_str(&page.text());
    }
    // The pages do show the channels and their failures.
    for shown in [
        "hook",
        "teams",
        "sms",
        "mail",
        "cams",
        "HTTP 500",
        "127.0.0.1",
    ] {
        assert!(pages.contains(shown), "{shown} on the pages");
    }

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs =
        std::fs::read_to_string(&log_path).unwrap() + &stdout_rest.join().unwrap().join("\n");
    assert!(
        logs.contains("notification failed"),
        "the failures are logged: {logs}"
    );
    let whsec_key = SECRET.strip_prefix("whsec_").unwrap();
    for secret in [
        whsec_key,
        "HOOKURLKEY",
        "TEAMSFLOWSIGNATURE",
        SMS_TOKEN,
        mail_password,
        "vmstoken",
    ] {
        assert!(!logs.contains(secret), "{secret} in the logs");
        assert!(!pages.contains(secret), "{secret} on a page");
        assert!(!answers.contains(secret), "{secret} in an API answer");
    }
}

/// The e-mail channel against a local SMTP sink (aiosmtpd from PyPI, in the project venv made by
/// scripts/install-deps): plain-text and HTML parts, location first, Message-ID = the row's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn email_reaches_an_smtp_sink() {
    use tokio::io::AsyncBufReadExt as _;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "the project venv is missing: run scripts/install-deps (it installs aiosmtpd)"
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut sink = tokio::process::Command::new(&python)
        .arg(root.join("tests/notify/smtp_sink.py"))
        .arg(port.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(sink.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the SMTP sink did not start")
        .unwrap();
    assert_eq!(
        ready.as_deref(),
        Some("ready"),
        "aiosmtpd must be installed"
    );
    let h = start(&format!(
        r#"
public_url = "https://duress.example.edu"
[[channels]]
name = "duty-mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
tls = "none"
from = "duress@example.edu"
to = ["security@example.edu", "supervisor@example.edu"]
[[ladders]]
name = "default"
steps = [ {{ after_s = 0, channels = ["duty-mail"] }} ]
"#
    ))
    .await;
    let mut agent = h.enrolled_agent().await;
    let (incident, _) = alarm(&h, &mut agent).await;
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("no message reached the sink")
        .unwrap()
        .unwrap();
    let got: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(got["mail_from"], "duress@example.edu");
    assert_eq!(
        got["rcpt_tos"],
        serde_json::json!(["security@example.edu", "supervisor@example.edu"])
    );
    let rows = wait_rows(&h, incident, "the delivered e-mail", |rows| {
        rows.iter().all(|r| r.status == "delivered")
    })
    .await;
    let data = got["data"].as_str().unwrap();
    assert!(
        data.contains(&format!("Message-ID: <{}@duress>", rows[0].id)),
        "{data}"
    );
    assert!(
        data.contains("Subject: Bldg A, Floor 2, Room 214"),
        "{data}"
    );
    assert!(data.contains("multipart/alternative"), "{data}");
    assert!(
        data.contains("text/plain") && data.contains("text/html"),
        "{data}"
    );
    assert!(data.contains("ws-214"), "{data}");
    drop(sink.stdin.take());
    h.shutdown().await;
    assert_eq!(rows[0].attempts.len(), 1);
}

/// A station that stops sending heartbeats notifies the trouble channel once, naming it and its
/// location; a revoked station never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offline_station_notifies_the_trouble_channel_once() {
    let cap = Capture::default();
    let http = serve_http(&cap).await;
    let h = start(&format!(
        r#"
[[channels]]
name = "trouble"
kind = "webhook"
url = "{http}/trouble"
secret = "{SECRET}"
[supervision]
channels = ["trouble"]
interval_s = 1
offline_after_s = 2
"#
    ))
    .await;
    let quiet = h.enrolled_agent().await;
    let revoked = h.enrolled_agent().await;
    for a in [&quiet, &revoked] {
        let answer = h
            .post("/v1/heartbeats", a.sign_heartbeat(&a.heartbeat()))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    duress_receiver::admin::set_device_status(
        h.data_dir(),
        &revoked.device_id,
        duress_core::DeviceStatus::Revoked,
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while cap.requests("/trouble").is_empty() {
        assert!(Instant::now() < deadline, "no trouble notification");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several more sweeps: still one notification, for the quiet station only.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = cap.requests("/trouble");
    assert_eq!(sent.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(body["type"], "station.offline");
    assert_eq!(body["data"]["device_id"], quiet.device_id);
    assert_eq!(body["data"]["location_label"], "Bldg A, Floor 2, Room 214");
    assert_eq!(body["data"]["hostname"], "ws-214");
    h.shutdown().await;
}

/// Polls (bounded) until `done` holds for every notification of the receiver.
async fn wait_all(
    h: &Harness,
    what: &str,
    done: impl Fn(&[NotificationRecord]) -> bool,
) -> Vec<NotificationRecord> {
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = store.recent_notifications(100).await.unwrap();
        if done(&rows) {
            store.close().await;
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Failed at least once, every attempt refused at TLS for the server's certificate.
fn refused_at_tls(r: &NotificationRecord) -> bool {
    !r.attempts.is_empty()
        && r.attempts.iter().all(|a| {
            a.outcome == "error"
                && a.error
                    .as_deref()
                    .is_some_and(|e| e.contains("TLS") && e.contains("certificate"))
        })
}

/// Teams, SMS and webhook channels over HTTPS to a server whose certificate a test CA signed:
/// delivered when the channel names that CA as `ca_cert`; refused (nothing reaches the server,
/// the attempt says why) by the same channels without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_channels_trust_their_ca_cert_and_refuse_an_unknown_ca() {
    let trusted = Capture::default();
    let untrusted = Capture::default();
    let dir = tempfile::tempdir().unwrap();
    let (good, ca) = serve_https_named(&trusted, dir.path(), "trusted").await;
    // Another CA's server, which no channel names.
    let (bad, _) = serve_https_named(&untrusted, dir.path(), "unknown").await;
    let ca = ca.display();
    let h = start(&format!(
        r#"
public_url = "https://duress.example.edu"
[[channels]]
name = "teams-ok"
kind = "teams"
url = "{good}/teams?{TEAMS_SIG}"
ca_cert = "{ca}"
[[channels]]
name = "sms-ok"
kind = "sms"
url = "{good}/sms"
username = "AC0123"
password = "{SMS_TOKEN}"
from = "+15550100"
to = ["+15550111"]
ca_cert = "{ca}"
[[channels]]
name = "hook-ok"
kind = "webhook"
url = "{good}/webhook"
secret = "{SECRET}"
ca_cert = "{ca}"
[[channels]]
name = "teams-no-ca"
kind = "teams"
url = "{bad}/teams?{TEAMS_SIG}"
[[channels]]
name = "sms-no-ca"
kind = "sms"
url = "{bad}/sms"
username = "AC0123"
password = "{SMS_TOKEN}"
from = "+15550100"
to = ["+15550111"]
[[channels]]
name = "hook-no-ca"
kind = "webhook"
url = "{bad}/webhook"
secret = "{SECRET}"
[[channels]]
name = "hook-other-ca"
kind = "webhook"
url = "{bad}/webhook"
secret = "{SECRET}"
ca_cert = "{ca}"
[[ladders]]
name = "default"
steps = [ {{ after_s = 0, channels = ["teams-ok", "sms-ok", "hook-ok", "teams-no-ca",
                                    "sms-no-ca", "hook-no-ca", "hook-other-ca"] }} ]
"#
    ))
    .await;
    let mut agent = h.enrolled_agent().await;
    let (incident, took) = alarm(&h, &mut agent).await;
    assert!(took < Duration::from_secs(2), "the alarm took {took:?}");
    let rows = wait_rows(&h, incident, "three sent, four refused twice", |rows| {
        rows.len() == 7
            && ["teams-ok", "sms-ok", "hook-ok"].iter().all(|c| {
                rows.iter()
                    .any(|r| r.channel == *c && r.status != "pending")
            })
            && rows
                .iter()
                .filter(|r| r.channel.ends_with("-ca"))
                .all(|r| r.attempts.len() >= 2)
    })
    .await;
    assert_eq!(row(&rows, "teams-ok").status, "accepted");
    assert_eq!(row(&rows, "sms-ok").status, "accepted");
    assert_eq!(row(&rows, "hook-ok").status, "delivered");
    for c in ["teams-no-ca", "sms-no-ca", "hook-no-ca", "hook-other-ca"] {
        let r = row(&rows, c);
        assert_eq!(r.status, "pending", "{c}: retried, never sent: {r:#?}");
        assert!(refused_at_tls(r), "{c}: {r:#?}");
    }
    assert!(
        untrusted.seen.lock().unwrap().is_empty(),
        "no request may reach a server the channel does not trust"
    );
    // What reached the trusted server is whole.
    let card: serde_json::Value =
        serde_json::from_slice(&trusted.requests("/teams")[0].body).unwrap();
    assert_eq!(
        card["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let sms = &trusted.requests("/sms")[0];
    let form: Vec<(String, String)> = form_urlencoded::parse(&sms.body).into_owned().collect();
    assert!(form.contains(&("To".to_owned(), "+15550111".to_owned())));
    let hook = &trusted.requests("/webhook")[0];
    verify("webhook", hook, Some(SECRET), dir.path());
    h.shutdown().await;
}

/// A local SMTP sink (`tests/notify/smtp_sink.py`, aiosmtpd) in `mode` (`none`, `starttls`,
/// `tls`) with `ca`'s leaf; returns the process, its output lines and its port.
async fn smtp_sink(
    mode: &str,
    ca: Option<&TestCa>,
) -> (
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    u16,
) {
    use tokio::io::AsyncBufReadExt as _;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "the project venv is missing: run scripts/install-deps (it installs aiosmtpd)"
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(root.join("tests/notify/smtp_sink.py"))
        .arg(port.to_string())
        .arg(mode);
    if let Some(ca) = ca {
        cmd.arg(&ca.leaf_pem).arg(&ca.key_pem);
    }
    let mut sink = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(sink.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the SMTP sink did not start")
        .unwrap();
    assert_eq!(
        ready.as_deref(),
        Some("ready"),
        "aiosmtpd must be installed"
    );
    (sink, lines, port)
}

/// E-mail over STARTTLS (the sink requires it before MAIL) and over implicit TLS, each trusting
/// the sink's test CA through `ca_cert`; the same sinks refused by channels without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn email_over_starttls_and_implicit_tls_trusts_only_its_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path(), "smtp");
    let (mut starttls, mut starttls_lines, starttls_port) = smtp_sink("starttls", Some(&ca)).await;
    let (mut implicit, mut implicit_lines, implicit_port) = smtp_sink("tls", Some(&ca)).await;
    let mail = |name: &str, port: u16, tls: &str, with_ca: bool| {
        let ca_line = if with_ca {
            format!("ca_cert = \"{}\"\n", ca.ca_path.display())
        } else {
            String::new()
        };
        format!(
            "[[channels]]\nname = \"{name}\"\nkind = \"email\"\nsmtp_host = \"127.0.0.1\"\n\
             smtp_port = {port}\ntls = \"{tls}\"\nfrom = \"duress@example.edu\"\n\
             to = [\"{name}@example.edu\"]\n{ca_line}"
        )
    };
    let h = start(&format!(
        "{}{}{}{}[[ladders]]\nname = \"default\"\nsteps = [ {{ after_s = 0, channels = \
         [\"starttls-ok\", \"tls-ok\", \"starttls-no-ca\", \"tls-no-ca\"] }} ]\n",
        mail("starttls-ok", starttls_port, "starttls", true),
        mail("tls-ok", implicit_port, "tls", true),
        mail("starttls-no-ca", starttls_port, "starttls", false),
        mail("tls-no-ca", implicit_port, "tls", false),
    ))
    .await;
    let mut agent = h.enrolled_agent().await;
    let (incident, _) = alarm(&h, &mut agent).await;
    let rows = wait_rows(&h, incident, "two delivered, two refused twice", |rows| {
        rows.len() == 4
            && rows
                .iter()
                .filter(|r| r.channel.ends_with("-ok"))
                .all(|r| r.status == "delivered")
            && rows
                .iter()
                .filter(|r| r.channel.ends_with("-no-ca"))
                .all(|r| r.attempts.len() >= 2)
    })
    .await;
    for c in ["starttls-no-ca", "tls-no-ca"] {
        let r = row(&rows, c);
        assert_eq!(r.status, "pending", "{c}: {r:#?}");
        assert!(
            r.attempts
                .iter()
                .all(|a| a.outcome == "error"
                    && a.error.as_deref().is_some_and(|e| e.contains("SMTP"))),
            "{c}: {r:#?}"
        );
    }
    for (lines, to) in [
        (&mut starttls_lines, "starttls-ok@example.edu"),
        (&mut implicit_lines, "tls-ok@example.edu"),
    ] {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("no message reached the sink")
            .unwrap()
            .unwrap();
        let got: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(got["rcpt_tos"], serde_json::json!([to]));
        assert_eq!(got["tls"], true, "{to}: the session was not encrypted");
        assert!(
            got["data"]
                .as_str()
                .unwrap()
                .contains("Bldg A, Floor 2, Room 214")
        );
        // Nothing from the channels that do not trust the sink.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), lines.next_line())
                .await
                .is_err(),
            "a second message reached the sink"
        );
    }
    drop(starttls.stdin.take());
    drop(implicit.stdin.take());
    h.shutdown().await;
    let _ = starttls.wait().await;
    let _ = implicit.wait().await;
}

/// A self-test (kind `test`) with only the default ladder pages nobody; a rule with
/// `kind = "test"` delivers it on its ladder.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_incidents_page_nobody_unless_a_rule_says_so() {
    async fn self_test(h: &Harness, agent: &mut common::Agent) {
        let claims = agent.event(EventKind::Test);
        let answer = h.post("/v1/events", agent.sign_event(&claims)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let cap = Capture::default();
    let http = serve_http(&cap).await;
    let channels = format!(
        r#"
[[channels]]
name = "duty"
kind = "webhook"
url = "{http}/duty"
secret = "{SECRET}"
[[channels]]
name = "tests"
kind = "webhook"
url = "{http}/tests"
secret = "{SECRET}"
[[ladders]]
name = "default"
steps = [ {{ after_s = 0, channels = ["duty"] }} ]
"#
    );
    // The default ladder only: the self-test is committed, nothing is enqueued for it.
    let h = start(&channels).await;
    let mut agent = h.enrolled_agent().await;
    self_test(&h, &mut agent).await;
    // A real alarm after it, delivered: the worker has run past the self-test.
    let (incident, _) = alarm(&h, &mut agent).await;
    wait_rows(&h, incident, "the alarm's delivery", |rows| {
        rows.len() == 1 && rows[0].status == "delivered"
    })
    .await;
    let rows = wait_all(&h, "all rows", |_| true).await;
    assert_eq!(rows.len(), 1, "only the real alarm notifies: {rows:#?}");
    let duty = cap.requests("/duty");
    assert_eq!(duty.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&duty[0].body).unwrap();
    assert_eq!(body["type"], "incident.opened");
    assert!(cap.requests("/tests").is_empty());
    h.shutdown().await;

    // With a rule that selects self-tests: delivered on its ladder, not the default one.
    let h = start(&format!(
        "{channels}[[ladders]]\nname = \"self-tests\"\nsteps = [ {{ after_s = 0, channels = \
         [\"tests\"] }} ]\n[[rules]]\nladder = \"self-tests\"\nkind = \"test\"\n"
    ))
    .await;
    let mut agent = h.enrolled_agent().await;
    self_test(&h, &mut agent).await;
    let rows = wait_all(&h, "the self-test's delivery", |rows| {
        rows.len() == 1 && rows[0].status == "delivered"
    })
    .await;
    assert_eq!(rows[0].channel, "tests");
    assert_eq!(rows[0].ladder.as_deref(), Some("self-tests"));
    let sent = cap.requests("/tests");
    assert_eq!(sent.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(body["type"], "test.received");
    assert_eq!(body["data"]["device_id"], agent.device_id);
    assert_eq!(
        cap.requests("/duty").len(),
        1,
        "the default ladder stayed quiet"
    );
    h.shutdown().await;
}

/// Reads an SSE response until an `event: trouble` frame whose data satisfies `done`.
async fn trouble_frame(
    resp: &mut reqwest::Response,
    buf: &mut String,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if !frame.lines().any(|l| l == "event: trouble") {
                continue;
            }
            let data = frame
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap();
            let lines: Vec<String> = serde_json::from_str(data).unwrap();
            if done(&lines) {
                return lines;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no trouble frame with {what}: {buf}");
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => buf.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("no trouble frame with {what}: {other:?} {buf}"),
        }
    }
}

/// The sweep and the worker stalled (the test hook) for three intervals: a trouble banner on
/// every page of every signed-in officer, pushed to open pages over the live stream; gone again
/// once they run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_sweep_and_worker_show_a_trouble_banner_everywhere() {
    use common::console::{Console, add_user};
    use duress_receiver::store::Role;
    const SWEEP: &str = "Station supervision has not run since";
    const WORKER: &str = "The notifier has not run since";
    let stall = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cfg = config(&format!(
        r#"
[[channels]]
name = "trouble"
kind = "webhook"
url = "http://127.0.0.1:9/trouble"
secret = "{SECRET}"
[supervision]
channels = ["trouble"]
interval_s = 1
"#
    ));
    let hook = stall.clone();
    let h = Harness::start_with(move |s| {
        s.config = Some(cfg);
        s.notify_worker_watch = Duration::from_millis(400);
        s.notify_stall = hook;
    })
    .await;
    add_user(h.data_dir(), "olga", Role::Officer).await;
    add_user(h.data_dir(), "ada", Role::Admin).await;
    let olga = Console::sign_in(&h, "olga").await;
    let ada = Console::sign_in(&h, "ada").await;
    let pages = |c: &Console, admin: bool| {
        let mut paths = vec!["/", "/stations", "/reports"];
        if admin {
            paths.extend(["/admin/channels", "/audit"]);
        }
        let c = Console {
            client: c.client.clone(),
            base: c.base.clone(),
            cookie: c.cookie.clone(),
            csrf: c.csrf.clone(),
        };
        async move {
            let mut out = Vec::new();
            for p in paths {
                let page = c.get(p).await;
                assert_eq!(page.status, 200, "{p}");
                out.push((p, page.text()));
            }
            out
        }
    };
    let mut resp = olga
        .client
        .get(format!("{}/events", olga.base))
        .header("cookie", olga.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut buf = String::new();
    // Running: the stream says all is well, and no page shows a banner.
    trouble_frame(&mut resp, &mut buf, "all well", <[String]>::is_empty).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (p, text) in pages(&olga, false).await {
        assert!(!text.contains(SWEEP) && !text.contains(WORKER), "{p}");
    }

    stall.store(true, std::sync::atomic::Ordering::SeqCst);
    let t = Instant::now();
    let lines = trouble_frame(&mut resp, &mut buf, "both stalled", |l| {
        l.iter().any(|t| t.contains(SWEEP)) && l.iter().any(|t| t.contains(WORKER))
    })
    .await;
    // Three sweep intervals (3 s) at least; the check runs every second.
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (c, admin) in [(&olga, false), (&ada, true)] {
        for (p, text) in pages(c, admin).await {
            assert!(
                text.contains("id=\"trouble-banner\" class=\"trouble-banner\" role=\"alert\">"),
                "{p}: the banner is not shown"
            );
            assert!(text.contains(SWEEP) && text.contains(WORKER), "{p}");
        }
    }

    stall.store(false, std::sync::atomic::Ordering::SeqCst);
    trouble_frame(&mut resp, &mut buf, "running again", <[String]>::is_empty).await;
    for (p, text) in pages(&ada, true).await {
        assert!(!text.contains(SWEEP) && !text.contains(WORKER), "{p}");
    }
    drop(resp);
    h.shutdown().await;
}

/// The incident page's camera links come from the `vms` channel's per-location mapping (the
/// request that triggers the cameras names the link too); the console's own mappings are not
/// used then; a location the mapping does not cover gets neither a trigger nor a link.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn camera_links_come_from_the_vms_mapping() {
    use common::console::{Console, add_user};
    use duress_receiver::store::{NewCameraMapping, Role};
    let cap = Capture::default();
    let http = serve_http(&cap).await;
    let h = start(&format!(
        r#"
[[channels]]
name = "cameras"
kind = "vms"
[[channels.requests]]
building = "A"
url = "{http}/vms?room={{ROOM}}"
body = '{{"where": "{{label}}"}}'
camera_url = "https://vms.example.edu/view/{{BLD}}-{{ROOM}}"
camera_name = "Bldg A cameras"
[[ladders]]
name = "default"
steps = [ {{ after_s = 0, channels = ["cameras"] }} ]
"#
    ))
    .await;
    // A console mapping that would match anything: not used while the file is the source.
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    store
        .add_camera_mapping(
            NewCameraMapping {
                match_field: "any".into(),
                match_value: String::new(),
                name: "Legacy link".into(),
                url_template: "https://legacy.example.edu/all".into(),
                created_at: common::now(),
            },
            "admin",
        )
        .await
        .unwrap();
    store.close().await;
    add_user(h.data_dir(), "ada", Role::Admin).await;
    let ada = Console::sign_in(&h, "ada").await;

    let mut agent = h.enrolled_agent().await;
    let (in_a, _) = alarm(&h, &mut agent).await;
    let mut other = h.enrolled_agent().await;
    let mut claims = other.event(EventKind::Duress);
    claims.location.bld = Some("B".into());
    claims.location.label = Some("Bldg B, Room 9".into());
    claims.location.room = Some("9".into());
    let answer = h.post("/v1/events", other.sign_event(&claims)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let in_b = answer.json::<duress_core::EventAck>().incident_id.unwrap();

    let rows = wait_rows(&h, in_a, "the camera trigger", |rows| {
        rows.len() == 1 && rows[0].status == "delivered"
    })
    .await;
    assert_eq!(rows[0].channel, "cameras");
    let sent = cap.requests("/vms");
    assert_eq!(
        sent.len(),
        1,
        "only building A's incident triggers the cameras"
    );

    let page = ada.get(&format!("/incidents/{in_a}")).await;
    assert_eq!(page.status, 200);
    let page = page.text();
    assert!(
        page.contains("href=\"https://vms.example.edu/view/A-214\""),
        "the link from the vms mapping: {page}"
    );
    assert!(page.contains("Bldg A cameras"));
    assert!(
        !page.contains("legacy.example.edu"),
        "a console mapping was used"
    );

    let page = ada.get(&format!("/incidents/{in_b}")).await.text();
    assert!(
        page.contains("No camera is mapped to this location"),
        "{page}"
    );
    assert!(!page.contains("vms.example.edu") && !page.contains("legacy.example.edu"));
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    assert!(store.incident_notifications(in_b).await.unwrap().is_empty());
    store.close().await;

    let admin = ada.get("/admin/cameras").await.text();
    assert!(
        admin.contains("Camera links come from the receiver"),
        "{admin}"
    );
    h.shutdown().await;
}

/// A station whose protection schedule excludes now goes silent: shown offline on the Stations
/// page, and no trouble notification however many sweeps run (the default, always, is
/// `an_offline_station_notifies_the_trouble_channel_once`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_outside_the_protection_schedule_notifies_nobody() {
    use common::console::{Console, add_user};
    use duress_receiver::store::Role;
    let cap = Capture::default();
    let http = serve_http(&cap).await;
    // A daily window two to three hours from now (UTC): it excludes now.
    let hour = time::OffsetDateTime::now_utc().hour();
    let (from, to) = ((hour + 2) % 24, (hour + 3) % 24);
    let cfg = config(&format!(
        r#"
[[channels]]
name = "trouble"
kind = "webhook"
url = "{http}/trouble"
secret = "{SECRET}"
[[schedules]]
name = "later"
days = ["daily"]
from = "{from:02}:00"
to = "{to:02}:00"
timezone = "UTC"
[supervision]
channels = ["trouble"]
interval_s = 1
offline_after_s = 2
schedule = "later"
"#
    ));
    let h = Harness::start_with(move |s| {
        s.config = Some(cfg);
        s.notify_retry_base = Duration::from_millis(200);
        s.heartbeat_interval_s = 1;
        s.console.station_grace = Duration::from_millis(500);
    })
    .await;
    let quiet = h.enrolled_agent().await;
    let answer = h
        .post("/v1/heartbeats", quiet.sign_heartbeat(&quiet.heartbeat()))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    add_user(h.data_dir(), "olga", Role::Officer).await;
    let olga = Console::sign_in(&h, "olga").await;
    // Well past offline_after_s, several sweeps.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let page = olga.get("/stations").await.text();
    assert!(
        page.contains("state state-offline"),
        "the Stations page shows it offline: {page}"
    );
    assert!(
        cap.requests("/trouble").is_empty(),
        "notified outside its schedule"
    );
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    assert!(store.recent_notifications(10).await.unwrap().is_empty());
    assert!(store.last_sweep().await.unwrap().is_some(), "the sweep ran");
    store.close().await;
    h.shutdown().await;
}
