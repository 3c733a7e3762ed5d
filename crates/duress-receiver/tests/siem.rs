//! The SIEM feed end to end: a real receiver (SQLite, or PostgreSQL with
//! `DURESS_TEST_DATABASE=postgres`) with a `[[siem]]` syslog sink to a collector on 127.0.0.1
//! (a small TCP listener here that splits RFC 6587 octet-counted frames) and a JSON-lines sink;
//! every message is parsed by an independent RFC 5424 parser (`tests/siem/parse_syslog.py`,
//! syslog-rfc5424-parser from PyPI in the project venv made by `scripts/install-deps`).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Harness;
use duress_core::EventKind;
use duress_receiver::config::ReceiverConfig;
use duress_receiver::store::{DatabaseUrl, IncidentAction};
use duress_receiver::{Approve, Settings};
use serde_json::Value;
use tokio::io::AsyncReadExt as _;

/// A collector: every connection read to its end, split into octet-counted frames, then
/// closed (which tells the receiver the batch was taken).
struct Collector {
    messages: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start(port: u16) -> Self {
        Self::start_with(port, None).await
    }

    /// Over TLS (RFC 5425) when `tls` is given.
    async fn start_with(port: u16, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        // The port was this test's before (a collector stopped and started again): bind
        // again, retrying briefly (bounded) while the kernel lets go of it.
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("binding the collector's port {port}: {e}"),
            }
        };
        let messages = Arc::new(Mutex::new(Vec::new()));
        let seen = messages.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let mut bytes = Vec::new();
                    match tls {
                        Some(acceptor) => {
                            let Ok(mut stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            if stream.read_to_end(&mut bytes).await.is_err() {
                                return;
                            }
                            let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                        }
                        None => {
                            if tcp.read_to_end(&mut bytes).await.is_err() {
                                return;
                            }
                        }
                    }
                    let frames = split_frames(&bytes);
                    seen.lock().unwrap().extend(frames);
                });
            }
        });
        Collector { messages, task }
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Stops listening (the listener is closed when this returns).
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// RFC 6587 octet counting: `LEN SP MSG`, repeated; a malformed stream fails the test.
fn split_frames(mut bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let sp = bytes
            .iter()
            .position(|b| *b == b' ')
            .expect("a frame length");
        let len: usize = std::str::from_utf8(&bytes[..sp]).unwrap().parse().unwrap();
        let msg = &bytes[sp + 1..sp + 1 + len];
        out.push(String::from_utf8(msg.to_vec()).unwrap());
        bytes = &bytes[sp + 1 + len..];
    }
    out
}

/// Parses with the independent RFC 5424 parser.
fn parse(messages: &[String]) -> Vec<Value> {
    use std::io::Write as _;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "the project venv is missing: run scripts/install-deps (it installs syslog-rfc5424-parser)"
    );
    let mut child = std::process::Command::new(&python)
        .arg(root.join("tests/siem/parse_syslog.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(messages).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the RFC 5424 parser refused a message: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The records (the messages' JSON), first occurrence of each id, in arrival order.
fn records(parsed: &[Value]) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for m in parsed {
        let msg = m["msg"].as_str().unwrap();
        let json = msg
            .strip_prefix('\u{feff}')
            .expect("the UTF-8 BOM before the JSON");
        let r: Value = serde_json::from_str(json).unwrap();
        // The structured data names the same record.
        assert_eq!(m["sd"]["duress@32473"]["id"], r["id"], "{m}");
        assert_eq!(m["msgid"], r["kind"], "{m}");
        assert_eq!(m["facility"], "audit", "{m}");
        assert_eq!(m["appname"], "duress-receiver");
        assert_eq!(m["version"], 1);
        if seen.insert(r["id"].as_str().unwrap().to_owned()) {
            out.push(r);
        }
    }
    out
}

fn config(port: u16, jsonl: &Path) -> Arc<ReceiverConfig> {
    Arc::new(
        ReceiverConfig::parse(&format!(
            r#"
[[siem]]
name = "soc"
kind = "syslog"
address = "127.0.0.1:{port}"
[[siem]]
name = "file"
kind = "jsonl"
path = "{}"
"#,
            jsonl.display()
        ))
        .unwrap(),
    )
}

async fn start(
    dir: tempfile::TempDir,
    database: Option<DatabaseUrl>,
    cfg: Arc<ReceiverConfig>,
) -> Harness {
    let mut settings = Settings::new(dir.path());
    settings.database = database;
    settings.config = Some(cfg);
    settings.notify_retry_base = Duration::from_millis(100);
    let receiver = duress_receiver::start(settings).await.unwrap();
    let client = common::webpki_client(&receiver.cert_pem_path);
    Harness {
        receiver,
        client,
        dir,
    }
}

/// An alarm, a claim and a resolve; the incident and the alarm's signed body.
async fn alarm_claim_resolve(h: &Harness, agent: &mut common::Agent) -> (String, String) {
    let claims = agent.event(EventKind::Duress);
    let jws = agent.sign_event(&claims);
    let answer = h.post("/v1/events", jws.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let incident = answer.json::<duress_core::EventAck>().incident_id.unwrap();
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    store
        .apply_action(incident, "alice", IncidentAction::Claim { takeover: false })
        .await
        .unwrap();
    store
        .apply_action(
            incident,
            "alice",
            IncidentAction::Resolve {
                disposition: "false alarm".into(),
                follow_up: String::new(),
            },
        )
        .await
        .unwrap();
    store.close().await;
    (incident.to_string(), jws)
}

/// Waits (bounded) until the collector has the resolve of `incident`.
async fn wait_for_resolve(collector: &Collector, incident: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let msgs = collector.messages();
        let recs = records(&parse(&msgs));
        if recs
            .iter()
            .any(|r| r["kind"] == "incident.resolve" && r["incident_id"] == incident)
        {
            return recs;
        }
        assert!(
            Instant::now() < deadline,
            "no resolve of {incident} reached the collector: {recs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn kinds_of(recs: &[Value], incident: &str) -> Vec<String> {
    recs.iter()
        .filter(|r| r["source"] == "incident" && r["incident_id"] == incident)
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn jsonl_records(path: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_and_incident_changes_reach_syslog_and_a_file_in_order_and_survive_a_restart() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let jsonl = tempfile::tempdir().unwrap();
    let jsonl_path = jsonl.path().join("duress-siem.jsonl");
    let collector = Collector::start(port).await;
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir, common::test_database(), config(port, &jsonl_path)).await;
    let database = h.receiver.store.database.clone();

    // An enrollment token (audited), a station, an alarm, a claim and a resolve.
    let token = h.token(1, Approve::Auto).await;
    let mut agent = h.enrolled_agent_with(&token).await;
    let (first, first_jws) = alarm_claim_resolve(&h, &mut agent).await;
    let recs = wait_for_resolve(&collector, &first).await;

    // In order: the press, then the claim, then the resolve; the audit entries of the claim
    // and resolve after the press too.
    assert_eq!(
        kinds_of(&recs, &first),
        ["incident.press", "incident.claim", "incident.resolve"]
    );
    let pos = |kind: &str, source: &str| {
        recs.iter()
            .position(|r| r["kind"] == kind && r["source"] == source)
            .unwrap_or_else(|| panic!("no {source} {kind} in {recs:#?}"))
    };
    assert!(pos("incident.press", "incident") < pos("incident.claim", "audit"));
    assert!(pos("incident.claim", "audit") < pos("incident.resolve", "audit"));
    // The schema's fields.
    for r in &recs {
        assert_eq!(r["schema"], "duress.siem/1", "{r}");
        for field in ["id", "source", "seq", "at", "receiver", "kind"] {
            assert!(!r[field].is_null(), "{field} missing in {r}");
        }
        let id = r["id"].as_str().unwrap();
        assert_eq!(
            id,
            format!("{}-{}", r["source"].as_str().unwrap(), r["seq"])
        );
        time::OffsetDateTime::parse(
            r["at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
    }
    let claim = &recs[pos("incident.claim", "audit")];
    assert_eq!(claim["actor"], "alice");
    assert_eq!(claim["subject"], first.as_str());
    assert!(claim["hash"].as_str().unwrap().len() >= 64);
    let press = &recs[pos("incident.press", "incident")];
    assert_eq!(press["data"]["device_id"], agent.device_id.as_str());

    // Phase 2: the collector is down while a second incident happens; the receiver is then
    // stopped and started again, and the collector comes back: nothing is lost.
    collector.stop().await;
    let (second, second_jws) = alarm_claim_resolve(&h, &mut agent).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let Harness { receiver, dir, .. } = h;
    receiver.shutdown().await.unwrap();
    let collector = Collector::start(port).await;
    let h = start(dir, database, config(port, &jsonl_path)).await;
    let recs = wait_for_resolve(&collector, &second).await;
    assert_eq!(
        kinds_of(&recs, &second),
        ["incident.press", "incident.claim", "incident.resolve"]
    );

    // Every audit entry and every incident change, none missing: what the collector got over
    // both runs equals the store's logs.
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    let audit_ids: BTreeSet<i64> = store
        .audit_log()
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let live_ids: BTreeSet<i64> = store
        .live_after(0, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.kind.starts_with("incident."))
        .map(|r| r.id)
        .collect();
    store.close().await;
    // The first run's records (the first collector is gone; its messages were checked above)
    // plus this one's: the file sink got them all, in both runs.
    let file = jsonl_records(&jsonl_path);
    let file_ids: BTreeSet<String> = file
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = audit_ids
        .iter()
        .map(|i| format!("audit-{i}"))
        .chain(live_ids.iter().map(|i| format!("incident-{i}")))
        .collect();
    assert_eq!(
        file_ids, expected,
        "the JSON-lines file lost or invented records"
    );
    // The collector of the second run got at least everything the first one had not.
    let got: BTreeSet<String> = recs
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let second_records: Vec<&Value> = file
        .iter()
        .filter(|r| r["incident_id"] == second.as_str() || r["subject"] == second.as_str())
        .collect();
    assert!(!second_records.is_empty());
    for r in second_records {
        assert!(
            got.contains(r["id"].as_str().unwrap()),
            "{r} never reached syslog"
        );
    }
    // The same record, resent or not, says the same in both sinks.
    for r in &recs {
        let in_file = file.iter().find(|f| f["id"] == r["id"]).unwrap();
        let mut a = r.clone();
        let mut b = in_file.clone();
        a.as_object_mut().unwrap().remove("receiver");
        b.as_object_mut().unwrap().remove("receiver");
        assert_eq!(a, b);
    }

    // Secrets never in a record: the enrollment token, the alarms' signed bodies.
    let all = std::fs::read_to_string(&jsonl_path).unwrap() + &collector.messages().join("\n");
    for secret in [token.as_str(), first_jws.as_str(), second_jws.as_str()] {
        assert!(!all.contains(secret), "a secret in the SIEM feed");
    }
    collector.stop().await;
    h.shutdown().await;
}

/// A test CA and a collector certificate for 127.0.0.1 it signed: the acceptor and the CA's
/// PEM file.
fn tls_collector(dir: &Path) -> (tokio_rustls::TlsAcceptor, PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "siem test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let ca_path = dir.join("siem-ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca_path)
}

/// RFC 5425: the same records over TLS to a collector whose certificate a private CA
/// (`ca_cert`) signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_feed_goes_over_tls_to_a_collector_of_a_private_ca() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let certs = tempfile::tempdir().unwrap();
    let (acceptor, ca_path) = tls_collector(certs.path());
    let collector = Collector::start_with(port, Some(acceptor)).await;
    let cfg = Arc::new(
        ReceiverConfig::parse(&format!(
            r#"
[[siem]]
name = "soc"
kind = "syslog"
address = "127.0.0.1:{port}"
tls = true
ca_cert = "{}"
"#,
            ca_path.display()
        ))
        .unwrap(),
    );
    let h = start(tempfile::tempdir().unwrap(), common::test_database(), cfg).await;
    let mut agent = h.enrolled_agent().await;
    let (incident, _) = alarm_claim_resolve(&h, &mut agent).await;
    let recs = wait_for_resolve(&collector, &incident).await;
    assert_eq!(
        kinds_of(&recs, &incident),
        ["incident.press", "incident.claim", "incident.resolve"]
    );
    collector.stop().await;
    h.shutdown().await;
}

/// The real binary killed with SIGKILL while its collector is down: after a restart every
/// audit entry reaches the collector (and the file sink, which kept working meanwhile), none
/// lost. Also `serve --metrics-listen` from the command line.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_killed_with_records_unsent_sends_them_after_its_restart() {
    use std::io::BufRead as _;
    const BIN: &str = env!("CARGO_BIN_EXE_duress-receiver");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let jsonl_path = dir.path().join("siem.jsonl");
    let config_path = dir.path().join("receiver.toml");
    std::fs::write(
        &config_path,
        format!(
            "[[siem]]\nname = \"soc\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{port}\"\n\
             [[siem]]\nname = \"file\"\nkind = \"jsonl\"\npath = \"{}\"\n",
            jsonl_path.display()
        ),
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    let database = common::test_database();
    let location = duress_receiver::store::StoreLocation::new(data_dir.clone(), database.clone());
    let serve = || {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["serve", "--data-dir", data_dir.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if let Some(db) = &database {
            cmd.args(["--database", db.expose()]);
        }
        let mut child = cmd.spawn().unwrap();
        let mut metrics = None;
        for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(url) = line.strip_prefix("Metrics: ") {
                metrics = Some(url.to_owned());
            }
            if line.starts_with("Store: ") {
                break;
            }
        }
        (
            child,
            metrics.expect("the banner names the metrics address"),
        )
    };
    let (mut first, metrics_url) = serve();
    assert!(
        metrics_url.starts_with("http://127.0.0.1:"),
        "{metrics_url}"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let scraped = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(scraped.contains("\nduress_store_up 1\n"), "{scraped}");

    // Audited changes while the collector is down.
    for _ in 0..3 {
        duress_receiver::admin::create_token(
            location.clone(),
            1,
            Some(Duration::from_secs(3600)),
            Approve::Auto,
        )
        .await
        .unwrap();
    }
    // The file sink takes them meanwhile (one sink's outage does not hold back another).
    let deadline = Instant::now() + Duration::from_secs(20);
    while jsonl_records(&jsonl_path)
        .iter()
        .filter(|r| r["kind"] == "token.create")
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "the file sink got nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Killed: no shutdown, no chance to finish anything.
    first.kill().unwrap();
    first.wait().unwrap();

    let collector = Collector::start(port).await;
    let (mut second, _) = serve();
    let store = duress_receiver::store::open(&location).await.unwrap();
    let expected: BTreeSet<String> = store
        .audit_log()
        .await
        .unwrap()
        .iter()
        .map(|e| format!("audit-{}", e.id))
        .collect();
    store.close().await;
    assert!(expected.len() >= 3);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: BTreeSet<String> = records(&parse(&collector.messages()))
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        if expected.is_subset(&got) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart the collector has {got:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let in_file: BTreeSet<String> = jsonl_records(&jsonl_path)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(expected.is_subset(&in_file), "{in_file:?}");
    second.kill().unwrap();
    second.wait().unwrap();
    collector.stop().await;
}
