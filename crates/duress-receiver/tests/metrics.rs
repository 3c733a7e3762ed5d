//! `GET /metrics` end to end: a real receiver (SQLite, or PostgreSQL with
//! `DURESS_TEST_DATABASE=postgres`) with `metrics_listen`, real signed alarms, heartbeats, a
//! refused TLS handshake and a notification that cannot be delivered; the answer is parsed by
//! the Prometheus project's own Python parsers (`tests/metrics/parse_exposition.py`,
//! prometheus-client from PyPI in the project venv made by `scripts/install-deps`): both the
//! Prometheus text format and the strict OpenMetrics one.
//!
//! One test function: the counters are the process's, so another test in this binary would
//! add to them.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Harness;
use duress_core::EventKind;
use duress_receiver::Approve;
use duress_receiver::config::ReceiverConfig;
use duress_receiver::store::IncidentAction;
use serde_json::Value;

/// Runs the independent parser; its families by name.
fn parse(format: &str, text: &str) -> BTreeMap<String, Value> {
    use std::io::Write as _;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "the project venv is missing: run scripts/install-deps (it installs prometheus-client)"
    );
    let mut child = std::process::Command::new(&python)
        .arg(root.join("tests/metrics/parse_exposition.py"))
        .arg(format)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the {format} parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(
    families: &BTreeMap<String, Value>,
    family: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let f = families
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"));
    let hits: Vec<f64> = f["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
        .collect();
    assert_eq!(hits.len(), 1, "{name}{labels:?} in {f}");
    hits[0]
}

fn kind(families: &BTreeMap<String, Value>, family: &str) -> String {
    families
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"))["type"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A plain-HTTP client (reqwest is built without a default TLS provider).
fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn scrape(url: &str, accept: Option<&str>) -> (String, String) {
    let client = http_client();
    let mut req = client.get(url);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (ct, resp.text().await.unwrap())
}

/// What Prometheus 2.x sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_what_happened_and_parse_with_prometheus_parsers() {
    let started = Instant::now();
    // A webhook to a closed port: its notification stays pending and its attempts fail.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = Arc::new(
        ReceiverConfig::parse(&format!(
            r#"
[[channels]]
name = "ops-webhook"
kind = "webhook"
url = "http://127.0.0.1:{closed}/hook"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[[ladders]]
name = "default"
steps = [ {{ after_s = 0, channels = ["ops-webhook"] }} ]
"#
        ))
        .unwrap(),
    );
    let h = Harness::start_with(move |s| {
        s.config = Some(cfg);
        s.notify_retry_base = Duration::from_millis(100);
        s.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let metrics_url = format!("http://{}/metrics", h.receiver.metrics_addr.unwrap());

    // Stations: one reporting (ok), one never seen, one waiting for approval.
    let mut agent = h.enrolled_agent().await;
    let hb = h
        .post("/v1/heartbeats", agent.sign_heartbeat(&agent.heartbeat()))
        .await;
    assert_eq!(hb.status, 200, "{}", hb.text());
    let _silent = h.enrolled_agent().await;
    let manual = h.token(1, Approve::Manual).await;
    let pending = common::Agent::new();
    let answer = h.post("/v1/enrollments", pending.enrollment(&manual)).await;
    assert_eq!(answer.status, 201, "{}", answer.text());

    // One alarm, sent twice (the agent's resend): committed once, a duplicate once.
    let claims = agent.event(EventKind::Duress);
    let jws = agent.sign_event(&claims);
    for _ in 0..2 {
        let a = h.post("/v1/events", jws.clone()).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let incident = {
        let a = h.post("/v1/events", jws.clone()).await;
        a.json::<duress_core::EventAck>().incident_id.unwrap()
    };
    // A refused event: a garbage body.
    let refused = h.post("/v1/events", "not.a.jws").await;
    assert!(refused.status >= 400);

    // A refused TLS handshake: plain text on the TLS port.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(h.receiver.addr)
            .await
            .unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    }

    // The webhook's attempts fail and are retried (bounded wait for the first two).
    let deadline = Instant::now() + Duration::from_secs(20);
    let fams = loop {
        let (ct, text) = scrape(&metrics_url, None).await;
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
        let fams = parse("prometheus", &text);
        let retries = value(
            &fams,
            "duress_notification_attempts",
            "duress_notification_attempts_total",
            &[("outcome", "retry")],
        );
        let refused_tls = value(
            &fams,
            "duress_tls_handshakes_refused",
            "duress_tls_handshakes_refused_total",
            &[("reason", "failed")],
        );
        if retries >= 2.0 && refused_tls >= 1.0 {
            break fams;
        }
        assert!(
            Instant::now() < deadline,
            "no two failed attempts / refused handshake counted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Types, as the Prometheus text parser read them.
    for (family, t) in [
        ("duress_events_ingested", "counter"),
        ("duress_ingest_duration_seconds", "histogram"),
        ("duress_database_errors", "counter"),
        ("duress_tls_handshakes_refused", "counter"),
        ("duress_notification_attempts", "counter"),
        ("duress_store_up", "gauge"),
        ("duress_incidents_open", "gauge"),
        ("duress_incidents_unclaimed", "gauge"),
        ("duress_oldest_unclaimed_incident_age_seconds", "gauge"),
        ("duress_stations", "gauge"),
        ("duress_notifications", "gauge"),
    ] {
        assert_eq!(kind(&fams, family), t, "{family}");
    }
    let ingested = |kind: &str, outcome: &str| {
        value(
            &fams,
            "duress_events_ingested",
            "duress_events_ingested_total",
            &[("kind", kind), ("outcome", outcome)],
        )
    };
    // The alarm counted once; its two resends as duplicates; the garbage as refused.
    assert_eq!(ingested("duress", "committed"), 1.0);
    assert_eq!(ingested("duress", "duplicate"), 2.0);
    assert_eq!(ingested("unknown", "refused"), 1.0);
    assert_eq!(ingested("test", "committed"), 0.0);
    assert_eq!(ingested("duress", "error"), 0.0);
    assert_eq!(
        value(
            &fams,
            "duress_ingest_duration_seconds",
            "duress_ingest_duration_seconds_count",
            &[]
        ),
        4.0
    );
    assert_eq!(
        value(
            &fams,
            "duress_ingest_duration_seconds",
            "duress_ingest_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        4.0
    );
    assert_eq!(value(&fams, "duress_store_up", "duress_store_up", &[]), 1.0);
    assert_eq!(
        value(&fams, "duress_incidents_open", "duress_incidents_open", &[]),
        1.0
    );
    assert_eq!(
        value(
            &fams,
            "duress_incidents_unclaimed",
            "duress_incidents_unclaimed",
            &[]
        ),
        1.0
    );
    let age = value(
        &fams,
        "duress_oldest_unclaimed_incident_age_seconds",
        "duress_oldest_unclaimed_incident_age_seconds",
        &[],
    );
    assert!(
        age > 0.0 && age < started.elapsed().as_secs_f64() + 1.0,
        "age {age}"
    );
    let stations = |state: &str| {
        value(
            &fams,
            "duress_stations",
            "duress_stations",
            &[("state", state)],
        )
    };
    assert_eq!(stations("ok"), 1.0);
    assert_eq!(stations("never_seen"), 1.0);
    assert_eq!(stations("pending"), 1.0);
    assert_eq!(stations("offline"), 0.0);
    assert_eq!(stations("disabled"), 0.0);
    let notifications = |status: &str| {
        value(
            &fams,
            "duress_notifications",
            "duress_notifications",
            &[("status", status)],
        )
    };
    assert_eq!(notifications("pending"), 1.0, "the queue depth");
    assert_eq!(notifications("delivered"), 0.0);
    for component in ["api", "console", "notifier", "metrics"] {
        assert_eq!(
            value(
                &fams,
                "duress_database_errors",
                "duress_database_errors_total",
                &[("component", component)]
            ),
            0.0,
            "{component}"
        );
    }

    // Claimed: nothing unclaimed any more; read through the strict OpenMetrics parser, which
    // is what Prometheus negotiates.
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    store
        .apply_action(
            incident,
            "officer",
            IncidentAction::Claim { takeover: false },
        )
        .await
        .unwrap();
    store.close().await;
    let (ct, text) = scrape(&metrics_url, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"));
    let om = parse("openmetrics", &text);
    assert_eq!(kind(&om, "duress_events_ingested"), "counter");
    assert_eq!(kind(&om, "duress_ingest_duration_seconds"), "histogram");
    assert_eq!(om["duress_ingest_duration_seconds"]["unit"], "seconds");
    assert_eq!(
        value(
            &om,
            "duress_events_ingested",
            "duress_events_ingested_total",
            &[("kind", "duress"), ("outcome", "committed")]
        ),
        1.0
    );
    assert_eq!(
        value(&om, "duress_incidents_open", "duress_incidents_open", &[]),
        1.0
    );
    assert_eq!(
        value(
            &om,
            "duress_incidents_unclaimed",
            "duress_incidents_unclaimed",
            &[]
        ),
        0.0
    );
    assert_eq!(
        value(
            &om,
            "duress_oldest_unclaimed_incident_age_seconds",
            "duress_oldest_unclaimed_incident_age_seconds",
            &[]
        ),
        0.0
    );

    // Counts only: no device id, location or secret in the answer; nothing but /metrics.
    for secret in [
        agent.device_id.as_str(),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "hook",
    ] {
        assert!(!text.contains(secret), "{secret} in /metrics");
    }
    let other = reqwest::get(format!(
        "http://{}/healthz",
        h.receiver.metrics_addr.unwrap()
    ))
    .await
    .unwrap();
    assert_eq!(other.status(), 404);
    h.shutdown().await;
}
