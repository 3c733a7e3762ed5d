//! Shared test harness: an in-process receiver over real TLS and a minimal signing "agent"
//! built on duress-core (the real agent client is tested in the whole-system tests).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use duress_core::jws::Header;
use duress_core::{
    DeviceKey, EnrollmentAnswer, EnrollmentClaims, EventClaims, EventKind, HeartbeatClaims,
    HostFacts, HotkeyState, Location, Problem, ProblemType, Source, Typ,
};
use duress_receiver::store::{DatabaseUrl, StoreLocation};
use duress_receiver::{Approve, RunningReceiver, Settings, admin};
use time::OffsetDateTime;
use uuid::Uuid;

/// A receiver in a temporary data dir, and a client that trusts its certificate.
pub struct Harness {
    pub receiver: RunningReceiver,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A receiver on the backend `DURESS_TEST_DATABASE` names: unset or `sqlite`, SQLite in the
    /// data dir; `postgres`, a fresh database in this test binary's throw-away PostgreSQL
    /// cluster (duress-testpg), so the whole suite runs on either.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::new(dir.path());
        settings.database = test_database();
        adjust(&mut settings);
        let receiver = duress_receiver::start(settings).await.unwrap();
        let client = webpki_client(&receiver.cert_pem_path);
        Harness {
            receiver,
            client,
            dir,
        }
    }

    /// Where this receiver's store is (what the admin functions take).
    pub fn data_dir(&self) -> StoreLocation {
        self.receiver.store.clone()
    }

    /// Whether this run is on PostgreSQL (tests of SQLite's own file skip their file checks).
    pub fn on_postgres(&self) -> bool {
        self.receiver.store.database.is_some()
    }

    pub async fn token(&self, uses: u32, approve: Approve) -> String {
        admin::create_token(
            self.data_dir(),
            uses,
            Some(Duration::from_secs(3600)),
            approve,
        )
        .await
        .unwrap()
    }

    /// POSTs `body` as `application/jose`.
    pub async fn post(&self, path: &str, body: impl Into<String>) -> Answer {
        self.post_as(path, "application/jose", body.into().into_bytes())
            .await
    }

    pub async fn post_as(&self, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        let resp = self
            .client
            .post(format!("{}{path}", self.receiver.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        Answer::read(resp).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        let resp = self
            .client
            .get(format!("{}{path}", self.receiver.url))
            .send()
            .await
            .unwrap();
        Answer::read(resp).await
    }

    /// A new agent enrolled with a fresh auto-approve token.
    pub async fn enrolled_agent(&self) -> Agent {
        let token = self.token(1, Approve::Auto).await;
        self.enrolled_agent_with(&token).await
    }

    pub async fn enrolled_agent_with(&self, token: &str) -> Agent {
        let mut agent = Agent::new();
        let answer = self.post("/v1/enrollments", agent.enrollment(token)).await;
        assert_eq!(answer.status, 201, "{}", answer.text());
        let enrolled: EnrollmentAnswer = answer.json();
        agent.device_id = enrolled.device_id;
        agent
    }

    pub async fn event_count(&self) -> usize {
        admin::list_events(self.data_dir()).await.unwrap().len()
    }

    pub async fn shutdown(self) {
        self.receiver.shutdown().await.unwrap();
    }
}

/// The database the receivers of this test run use (see [`Harness::start_with`]).
pub fn test_database() -> Option<DatabaseUrl> {
    match std::env::var("DURESS_TEST_DATABASE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => None,
        Ok("postgres") => Some(DatabaseUrl::new(
            duress_testpg::TestPg::shared()
                .and_then(|pg| pg.fresh_url())
                .unwrap_or_else(|e| panic!("DURESS_TEST_DATABASE=postgres: {e}")),
        )),
        Ok(other) => panic!("DURESS_TEST_DATABASE={other:?}: use sqlite or postgres"),
    }
}

/// A reqwest client whose only trust anchor is the PEM file at `path`, verified by webpki.
/// A client builder that trusts only the receiver's certificate (`cert`, PEM): every test
/// client starts here and adds its own timeouts, redirects and local address.
pub fn trusting_builder(cert: &Path) -> reqwest::ClientBuilder {
    let pem = std::fs::read(cert).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_certs(&pem) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder().tls_backend_preconfigured(config)
}

pub fn webpki_client(path: &Path) -> reqwest::Client {
    trusting_builder(path)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub fn rustls_pki_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub async fn read(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.bytes().await.unwrap().to_vec();
        Answer {
            status,
            content_type,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text()))
    }

    /// Asserts this is the problem `kind` with its status, and returns it.
    pub fn problem(&self, kind: ProblemType) -> Problem {
        assert_eq!(
            self.content_type,
            "application/problem+json",
            "{} {}",
            self.status,
            self.text()
        );
        let p: Problem = self.json();
        assert_eq!(p.kind(), Some(kind), "{}", self.text());
        assert_eq!(self.status, kind.status(), "{}", self.text());
        assert_eq!(p.status, kind.status());
        p
    }
}

/// A device: a key, and once enrolled its id and a seq counter.
pub struct Agent {
    pub key: DeviceKey,
    pub device_id: String,
    pub seq: u64,
}

pub fn random_key() -> DeviceKey {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).unwrap();
    DeviceKey::from_seed(&seed)
}

/// The test agent's clock: the receiver's, so requests stay inside the clock window when a
/// test moves it (`tests/clock_thresholds.rs`).
pub fn now() -> OffsetDateTime {
    duress_receiver::clock::receiver_now()
}

pub fn location() -> Location {
    Location {
        label: Some("Bldg A, Floor 2, Room 214".into()),
        country: Some("US".into()),
        a1: Some("MN".into()),
        a3: Some("Saint Paul".into()),
        bld: Some("A".into()),
        flr: Some("2".into()),
        room: Some("214".into()),
        ..Default::default()
    }
}

pub fn host() -> HostFacts {
    HostFacts {
        hostname: "ws-214".into(),
        user: "alice".into(),
        ips: vec!["10.0.2.14".into()],
        macs: vec!["02:00:00:00:02:14".into()],
        os: "Debian GNU/Linux 12 (bookworm)".into(),
        agent_version: "0.1.0".into(),
    }
}

impl Agent {
    pub fn new() -> Self {
        Agent {
            key: random_key(),
            device_id: String::new(),
            seq: 0,
        }
    }

    pub fn enrollment(&self, token: &str) -> String {
        let claims = EnrollmentClaims {
            token: token.into(),
            sent_at: now(),
            location: location(),
            host: host(),
        };
        self.key
            .sign_enrollment(&serde_json::to_vec(&claims).unwrap())
    }

    /// A new event's claims (fresh id, next seq), occurred and sent now.
    pub fn event(&mut self, kind: EventKind) -> EventClaims {
        self.seq += 1;
        let t = now();
        EventClaims {
            id: Uuid::now_v7(),
            seq: self.seq,
            kind,
            occurred_at: t,
            sent_at: t,
            source: Source::Hotkey,
            location: location(),
            host: host(),
            cancel_pin: None,
        }
    }

    pub fn sign_event(&self, claims: &EventClaims) -> String {
        self.key.sign(
            Typ::Event,
            Some(&self.device_id),
            &serde_json::to_vec(claims).unwrap(),
        )
    }

    pub fn heartbeat(&self) -> HeartbeatClaims {
        HeartbeatClaims {
            sent_at: now(),
            hotkey: HotkeyState::Registered {
                chords: vec!["Ctrl+Alt+Shift+D".into()],
            },
            queued: 2,
            last_seq: self.seq + 2,
            last_self_test: None,
            location: location(),
            host: host(),
            policy: None,
            alarm_refused: None,
        }
    }

    pub fn sign_heartbeat(&self, claims: &HeartbeatClaims) -> String {
        self.key.sign(
            Typ::Heartbeat,
            Some(&self.device_id),
            &serde_json::to_vec(claims).unwrap(),
        )
    }
}

/// A token with an arbitrary header and a raw signature (for hostile inputs).
pub fn token_with(header_json: &str, payload: &[u8], signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// HMAC-SHA256 (RFC 2104), for the "HS256 keyed with the public key" confusion attack.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::digest([&ipad[..], message].concat());
    Sha256::digest([&opad[..], &inner[..]].concat()).to_vec()
}

/// Signs `payload` under an arbitrary header with `key` (valid signature, hostile header).
pub fn sign_with_header(key: &DeviceKey, header: Header, payload: &[u8]) -> String {
    key.sign_with_header(&header, payload)
}

pub mod console;
pub mod sign_in;
