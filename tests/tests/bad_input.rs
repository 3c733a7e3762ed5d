//! Bad input against the real receiver (in process, TLS on 127.0.0.1), beyond the per-type
//! refusals of `crates/duress-receiver/tests/refusals.rs` (forged signature, unknown/missing
//! kid, `none`, HS256 keyed with the public key, `crit`, wrong typ, media type, oversize,
//! device status) and `enrollment.rs` (token refusals, proof of possession): replays,
//! truncation at every position, non-UTF-8, deeply nested JSON, Unicode edge cases, XSS and SQL
//! payloads in every string field, and token guessing — each a clear 4xx with problem+json,
//! and nothing half-written (rows counted before and after).

use duress_core::{
    EventAck, EventClaims, EventKind, HostFacts, Location, Problem, ProblemType, Typ,
};
use duress_loadgen::SimStation;
use duress_loadgen::client::{Answer, https_client, post, post_jose};
use duress_receiver::{Approve, RunningReceiver, Settings, admin};
use std::time::{Duration, Instant};

struct World {
    _tmp: tempfile::TempDir,
    receiver: RunningReceiver,
    data_dir: std::path::PathBuf,
    client: reqwest::Client,
}

async fn world() -> World {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("receiver");
    let receiver = duress_receiver::start(Settings::new(&data_dir))
        .await
        .expect("receiver starts");
    let client = https_client(&receiver.cert_pem_path, 4).expect("client");
    World {
        _tmp: tmp,
        receiver,
        data_dir,
        client,
    }
}

impl World {
    async fn station(&self) -> SimStation {
        let token = admin::create_token(
            &self.data_dir,
            1,
            Some(Duration::from_secs(3600)),
            Approve::Auto,
        )
        .await
        .expect("token");
        let mut s = SimStation::new(0);
        s.enroll(
            &self.client,
            &self.receiver.url,
            &token,
            Instant::now() + Duration::from_secs(10),
        )
        .await
        .expect("enrolls");
        s
    }

    async fn post(&self, path: &str, body: &str) -> Answer {
        post_jose(&self.client, &self.receiver.url, path, body)
            .await
            .expect("an answer")
    }

    async fn post_bytes(&self, path: &str, body: Vec<u8>) -> Answer {
        post(
            &self.client,
            &self.receiver.url,
            path,
            "application/jose",
            body,
        )
        .await
        .expect("an answer")
    }

    /// Rows of every table a refusal must not touch, and the tokens' remaining uses.
    fn rows(&self) -> Vec<(String, i64)> {
        let conn = rusqlite::Connection::open(self.data_dir.join("receiver.sqlite3")).expect("db");
        let mut out = Vec::new();
        for (name, sql) in [
            ("devices", "SELECT COUNT(*) FROM devices"),
            ("events", "SELECT COUNT(*) FROM events"),
            ("incidents", "SELECT COUNT(*) FROM incidents"),
            (
                "token_uses_left",
                "SELECT COALESCE(SUM(uses_left), 0) FROM enrollment_tokens",
            ),
            (
                "heartbeats",
                "SELECT COUNT(*) FROM devices WHERE last_heartbeat_at IS NOT NULL",
            ),
        ] {
            out.push((
                name.to_owned(),
                conn.query_row(sql, [], |r| r.get(0)).expect(sql),
            ));
        }
        out
    }
}

/// A clear refusal: 4xx, problem+json whose `status` matches, with a known type.
fn refused(a: &Answer) -> ProblemType {
    assert!(
        (400..500).contains(&a.status),
        "expected a 4xx, got {} {}",
        a.status,
        a.text()
    );
    assert_eq!(
        a.content_type,
        "application/problem+json",
        "{} {}",
        a.status,
        a.text()
    );
    let p: Problem = serde_json::from_slice(&a.body).expect("problem json");
    assert_eq!(p.status, a.status);
    p.kind()
        .unwrap_or_else(|| panic!("unknown problem type {}", p.type_uri))
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Proves replays are harmless: the exact same event token five times is one row and five
/// byte-identical answers; the exact same enrollment token again is the same device and spends
/// no token use; the same event id re-signed by another device is 409 and changes nothing.
#[tokio::test]
async fn replays_store_nothing_new() {
    let w = world().await;
    let s = w.station().await;
    let token = s.sign_event(&s.new_event(EventKind::Duress));
    let first = w.post("/v1/events", &token).await;
    assert_eq!(first.status, 200, "{}", first.text());
    for _ in 0..5 {
        let again = w.post("/v1/events", &token).await;
        assert_eq!((again.status, &again.body), (200, &first.body));
    }
    let other = w.station().await;
    let claims: EventClaims = {
        let parsed = duress_core::ParsedJws::parse(&token).expect("parse");
        let key = s.key.verifying_key();
        serde_json::from_slice(parsed.verify(&key).expect("verify")).expect("claims")
    };
    let before = w.rows();
    assert_eq!(
        refused(&w.post("/v1/events", &other.sign_event(&claims)).await),
        ProblemType::IdConflict
    );

    let enroll_token = admin::create_token(
        &w.data_dir,
        2,
        Some(Duration::from_secs(3600)),
        Approve::Auto,
    )
    .await
    .expect("token");
    let third = SimStation::new(3);
    let enrollment = third.enrollment(&enroll_token);
    let a = w.post("/v1/enrollments", &enrollment).await;
    assert_eq!(a.status, 201, "{}", a.text());
    let before_replay = w.rows();
    let b = w.post("/v1/enrollments", &enrollment).await;
    assert_eq!(b.status, 201, "{}", b.text());
    let id = |a: &Answer| {
        serde_json::from_slice::<serde_json::Value>(&a.body).expect("json")["device_id"].clone()
    };
    assert_eq!(id(&a), id(&b), "an enrollment replay names the same device");
    assert_eq!(
        w.rows(),
        before_replay,
        "an enrollment replay writes nothing"
    );
    let _ = before;
    assert_eq!(
        admin::list_events(&w.data_dir).await.expect("list").len(),
        1
    );
    w.receiver.shutdown().await.expect("shutdown");
}

/// Proves a token cut at any point, or with any one character deleted or replaced (every
/// position of a real event token), is refused with a clear 4xx — malformed, or a signature that no longer verifies
/// — and nothing is stored; the same for heartbeats and enrollments cut at a sample of positions.
#[tokio::test]
async fn truncated_tokens_are_refused_at_every_position() {
    let w = world().await;
    let s = w.station().await;
    let before = w.rows();
    let event = s.sign_event(&s.new_event(EventKind::Duress));
    let mut kinds = std::collections::BTreeMap::<&'static str, usize>::new();
    for cut in 0..event.len() {
        let k = refused(&w.post("/v1/events", &event[..cut]).await);
        *kinds.entry(k.slug()).or_default() += 1;
    }
    // One character deleted anywhere (the signature kept whole where it can be): malformed,
    // or a signature that no longer verifies.
    for at in 0..event.len() {
        let mut cut = event.clone();
        cut.remove(at);
        let k = refused(&w.post("/v1/events", &cut).await);
        *kinds.entry(k.slug()).or_default() += 1;
    }
    // One character replaced by another base64url character: mostly a signature that no
    // longer verifies (the dots and canonical base64 catch the rest).
    for at in 0..event.len() {
        let mut bytes = event.clone().into_bytes();
        bytes[at] = match bytes[at] {
            b'.' => continue,
            b'A' => b'B',
            _ => b'A',
        };
        let flipped = String::from_utf8(bytes).expect("ascii");
        let k = refused(&w.post("/v1/events", &flipped).await);
        *kinds.entry(k.slug()).or_default() += 1;
    }
    let hb = s.sign_heartbeat(&s.heartbeat());
    let enrollment = SimStation::new(9).enrollment("det_not_a_real_token");
    for cut in (0..hb.len()).step_by(13) {
        refused(&w.post("/v1/heartbeats", &hb[..cut]).await);
    }
    for cut in (0..enrollment.len()).step_by(29) {
        // Every 4xx counts as a failed attempt of this address: 429 after ten is right too.
        refused(&w.post("/v1/enrollments", &enrollment[..cut]).await);
    }
    eprintln!(
        "FIGURE truncated event_positions={} kinds={kinds:?}",
        event.len()
    );
    assert_eq!(w.rows(), before, "a truncated token wrote something");
    w.receiver.shutdown().await.expect("shutdown");
}

/// Proves bodies that are not UTF-8, or whose signed header or claims are not UTF-8 JSON, are
/// refused (400 malformed-jws / 422 invalid-claims) and store nothing.
#[tokio::test]
async fn non_utf8_bodies_and_claims_are_refused() {
    let w = world().await;
    let s = w.station().await;
    let before = w.rows();
    let event = s.sign_event(&s.new_event(EventKind::Duress));
    let mut bytes = event.clone().into_bytes();
    bytes.insert(10, 0xff);
    assert_eq!(
        refused(&w.post_bytes("/v1/events", bytes).await),
        ProblemType::MalformedJws
    );
    assert_eq!(
        refused(
            &w.post_bytes("/v1/events", vec![0xc3, 0x28, b'.', b'a', b'.', b'b'])
                .await
        ),
        ProblemType::MalformedJws
    );
    // A valid signature over claims that are not UTF-8.
    let bad_claims = s
        .key
        .sign(Typ::Event, Some(&s.device_id), b"{\"id\":\"\xff\xfe\"}");
    assert_eq!(
        refused(&w.post("/v1/events", &bad_claims).await),
        ProblemType::InvalidClaims
    );
    // A header that is not UTF-8.
    let bad_header = format!(
        "{}.{}.{}",
        b64(b"{\"alg\":\"Ed25519\xff\"}"),
        b64(b"{}"),
        b64(&[0u8; 64])
    );
    assert_eq!(
        refused(&w.post("/v1/events", &bad_header).await),
        ProblemType::MalformedJws
    );
    assert_eq!(w.rows(), before);
    w.receiver.shutdown().await.expect("shutdown");
}

/// Proves deeply nested JSON neither crashes nor stalls the receiver: 100,000 `[` is refused
/// as too large (413); the deepest nesting that fits in 64 KiB, signed validly, in the claims of
/// each endpoint is 422 invalid-claims (or 401 for an enrollment, whose key must verify first),
/// in the header 400 malformed-jws; the receiver still answers afterwards.
#[tokio::test]
async fn deeply_nested_json_is_refused_without_harm() {
    let w = world().await;
    let s = w.station().await;
    let before = w.rows();
    let huge = "[".repeat(100_000);
    assert_eq!(
        refused(
            &w.post(
                "/v1/events",
                &s.key.sign(Typ::Event, Some(&s.device_id), huge.as_bytes())
            )
            .await
        ),
        ProblemType::BodyTooLarge
    );
    let deep = "[".repeat(45_000); // ~60 KB once base64url-encoded and signed
    let deep_obj = format!("{}{}", "{\"a\":".repeat(9_000), "1");
    for payload in [&deep, &deep_obj] {
        let ev = s
            .key
            .sign(Typ::Event, Some(&s.device_id), payload.as_bytes());
        assert!(ev.len() < 64 * 1024);
        assert_eq!(
            refused(&w.post("/v1/events", &ev).await),
            ProblemType::InvalidClaims
        );
        let hb = s
            .key
            .sign(Typ::Heartbeat, Some(&s.device_id), payload.as_bytes());
        assert_eq!(
            refused(&w.post("/v1/heartbeats", &hb).await),
            ProblemType::InvalidClaims
        );
        let en = SimStation::new(5).key.sign_enrollment(payload.as_bytes());
        refused(&w.post("/v1/enrollments", &en).await);
    }
    let header = format!(
        "{}.{}.{}",
        b64(&deep.as_bytes()[..30_000]),
        b64(b"{}"),
        b64(&[0u8; 64])
    );
    assert_eq!(
        refused(&w.post("/v1/events", &header).await),
        ProblemType::MalformedJws
    );
    assert_eq!(w.rows(), before);
    // Still alive and accepting.
    let ok = w
        .post("/v1/events", &s.sign_event(&s.new_event(EventKind::Duress)))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    w.receiver.shutdown().await.expect("shutdown");
}

/// Every RFC 5139 name of a location, with `value(i)` in field `i`.
fn location_with(value: impl Fn(usize) -> String) -> Location {
    let names = [
        "label", "country", "A1", "A2", "A3", "A4", "A5", "A6", "RD", "PRD", "POD", "STS", "HNO",
        "HNS", "LMK", "LOC", "NAM", "PC", "BLD", "FLR", "UNIT", "ROOM", "SEAT", "PLC",
    ];
    let obj: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| ((*n).to_owned(), serde_json::Value::String(value(i))))
        .collect();
    let loc: Location = serde_json::from_value(obj.into()).expect("location");
    assert_eq!(loc.fields().len(), names.len(), "every field set");
    loc
}

fn host_with(value: impl Fn(usize) -> String) -> HostFacts {
    HostFacts {
        hostname: value(100),
        user: value(101),
        ips: vec![value(102), value(103)],
        macs: vec![value(104)],
        os: value(105),
        agent_version: value(106),
    }
}

const HOSTILE: &[&str] = &[
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
    "'; DROP TABLE events; --",
    "\" OR 1=1 --",
    "Robert'); DELETE FROM devices WHERE ('1'='1",
    "{{7*7}}${7*7}<%= 7*7 %>",
    "javascript:alert(document.cookie)",
    "</textarea><svg onload=alert(1)>",
    "%00%27%22%3C",
    "\\u0000 \\n literal backslashes",
];

/// Posts an event whose location and host carry `loc`/`host`, and returns the stored record.
async fn store_event(
    w: &World,
    s: &SimStation,
    loc: Location,
    host: HostFacts,
) -> (Answer, EventClaims) {
    let mut claims = s.new_event(EventKind::Duress);
    claims.location = loc;
    claims.host = host;
    let body = s.sign_event(&claims);
    // Past the device's event bucket (30 at once, then 1 a second) the receiver answers 429 and
    // the agent resends later: so does this test (bounded).
    for _ in 0..120 {
        let a = w.post("/v1/events", &body).await;
        if a.status != 429 {
            return (a, claims);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("event still answered 429 after 60 s");
}

/// Proves XSS and SQL payloads in every string field (every location name, every host fact, the
/// enrollment's and the heartbeat's too) are stored verbatim — read back equal — break nothing
/// (the tables are intact), and come back HTML-escaped on the officers' console pages.
#[tokio::test]
async fn xss_and_sql_payloads_in_every_string_field_are_stored_verbatim() {
    let w = world().await;
    let pick = |i: usize| HOSTILE[i % HOSTILE.len()].to_owned();
    // Enrollment carrying payloads.
    let token = admin::create_token(
        &w.data_dir,
        1,
        Some(Duration::from_secs(3600)),
        Approve::Auto,
    )
    .await
    .expect("token");
    let mut s = SimStation::new(1);
    let claims = duress_core::EnrollmentClaims {
        token: token.clone(),
        sent_at: s.now(),
        location: location_with(pick),
        host: host_with(pick),
    };
    let a = w
        .post(
            "/v1/enrollments",
            &s.key
                .sign_enrollment(&serde_json::to_vec(&claims).expect("json")),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text());
    s.device_id = serde_json::from_slice::<serde_json::Value>(&a.body).expect("json")["device_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let devices = admin::list_devices(&w.data_dir).await.expect("devices");
    assert_eq!(
        devices[0].host,
        host_with(pick),
        "enrollment host stored verbatim"
    );

    let mut ids = Vec::new();
    for shift in 0..HOSTILE.len() {
        let f = |i: usize| HOSTILE[(i + shift) % HOSTILE.len()].to_owned();
        let (a, claims) = store_event(&w, &s, location_with(f), host_with(f)).await;
        assert_eq!(a.status, 200, "{}", a.text());
        ids.push(claims);
    }
    let stored = admin::list_events(&w.data_dir).await.expect("events");
    assert_eq!(stored.len(), ids.len());
    for c in &ids {
        let e = stored.iter().find(|e| e.id == c.id).expect("stored");
        assert_eq!(e.location, c.location, "location stored verbatim");
        assert_eq!(e.host, c.host, "host stored verbatim");
    }
    // The raw token is kept byte for byte too.
    let exported = admin::export_events(&w.data_dir).await.expect("export");
    assert_eq!(exported.len(), ids.len());
    let mut hb = s.heartbeat();
    hb.hotkey = duress_core::HotkeyState::Unavailable { reason: pick(2) };
    hb.location = location_with(pick);
    let a = w.post("/v1/heartbeats", &s.sign_heartbeat(&hb)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let conn = rusqlite::Connection::open(w.data_dir.join("receiver.sqlite3")).expect("db");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('events','devices','incidents')",
            [],
            |r| r.get(0),
        )
        .expect("tables");
    assert_eq!(tables, 3, "no table was dropped");

    // The console shows them escaped.
    let (user, password) = duress_loadgen::console_feed::create_officer(&w.data_dir)
        .await
        .expect("officer");
    let cookie =
        duress_loadgen::console_feed::sign_in(&w.client, &w.receiver.url, &user, &password)
            .await
            .expect("sign in");
    let incidents = admin::list_incidents(&w.data_dir).await.expect("incidents");
    for path in [
        "/".to_owned(),
        "/stations".to_owned(),
        format!("/incidents/{}", incidents[0].incident_id),
    ] {
        let page = w
            .client
            .get(format!("{}{path}", w.receiver.url))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("page");
        assert_eq!(page.status().as_u16(), 200, "{path}");
        let html = page.text().await.expect("html");
        for raw in [
            "<script>alert(1)</script>",
            "<img src=x onerror",
            "<svg onload",
        ] {
            assert!(!html.contains(raw), "{path} shows {raw:?} unescaped");
        }
    }
    w.receiver.shutdown().await.expect("shutdown");
}

/// Proves Unicode edge cases: RTL override, zero-width characters, BOM, a 255-character
/// grapheme cluster, astral characters are stored verbatim; NUL (and other controls), lone
/// surrogates in JSON escapes, and fields over 256 characters are 422 invalid-claims, stored
/// nowhere.
#[tokio::test]
async fn unicode_edge_cases_are_stored_verbatim_or_refused_cleanly() {
    let w = world().await;
    let s = w.station().await;
    let long_cluster = format!("e{}", "\u{301}".repeat(254));
    assert_eq!(long_cluster.chars().count(), 255);
    let accepted = [
        "Room \u{202E}412 mooR\u{202C}",
        "zero\u{200B}width\u{200D}joiner\u{2060}",
        "\u{FEFF}bom first",
        long_cluster.as_str(),
        "👩‍👩‍👧‍👦 🏳️‍🌈 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "ملاذ آمن — מקלט",
    ];
    for (i, v) in accepted.iter().enumerate() {
        let (a, claims) = store_event(
            &w,
            &s,
            location_with(|_| (*v).to_owned()),
            host_with(|_| (*v).to_owned()),
        )
        .await;
        assert_eq!(a.status, 200, "case {i}: {}", a.text());
        let ack: EventAck = serde_json::from_slice(&a.body).expect("ack");
        let e = admin::list_events(&w.data_dir)
            .await
            .expect("events")
            .into_iter()
            .find(|e| e.id == ack.id)
            .expect("stored");
        assert_eq!(e.location, claims.location, "case {i} stored verbatim");
        assert_eq!(e.host, claims.host);
    }
    let before = w.rows();
    let refused_values = [
        "nul\u{0}inside".to_owned(),
        "bell\u{7}".to_owned(),
        "next line\u{85}".to_owned(),
        "x".repeat(257),
        format!("e{}", "\u{301}".repeat(256)),
    ];
    for v in &refused_values {
        let (a, _) = store_event(&w, &s, location_with(|_| v.clone()), HostFacts::default()).await;
        assert_eq!(refused(&a), ProblemType::InvalidClaims, "{v:?}");
        let (a, _) = store_event(&w, &s, Location::default(), host_with(|_| v.clone())).await;
        assert_eq!(refused(&a), ProblemType::InvalidClaims, "{v:?}");
    }
    // Lone surrogates can only be written as JSON escapes: build the claims text by hand.
    for escape in ["\\ud800", "\\udfff", "\\ud800\\u0041"] {
        let claims = s.new_event(EventKind::Duress);
        let json = serde_json::to_string(&claims).expect("json").replacen(
            "\"location\":{",
            &format!("\"location\":{{\"LMK\":\"a{escape}b\","),
            1,
        );
        let token = s.key.sign(Typ::Event, Some(&s.device_id), json.as_bytes());
        assert_eq!(
            refused(&w.post("/v1/events", &token).await),
            ProblemType::InvalidClaims,
            "{escape}"
        );
    }
    assert_eq!(w.rows(), before);
    w.receiver.shutdown().await.expect("shutdown");
}

/// Proves enrollment-token guessing gets a clear 401 token-invalid for each wrong guess, then
/// 429 too-many-requests with Retry-After — even for a valid token — and that nothing is
/// half-written: no device, no token use spent, no other row.
#[tokio::test]
async fn enrollment_token_guessing_is_rate_limited_and_writes_nothing() {
    let w = world().await;
    let real = admin::create_token(
        &w.data_dir,
        3,
        Some(Duration::from_secs(3600)),
        Approve::Auto,
    )
    .await
    .expect("token");
    let before = w.rows();
    let mut statuses = Vec::new();
    for i in 0..25 {
        let guess = format!("det_{i:0>43}");
        let a = w
            .post("/v1/enrollments", &SimStation::new(i).enrollment(&guess))
            .await;
        statuses.push(refused(&a));
    }
    let limited = statuses
        .iter()
        .position(|k| *k == ProblemType::TooManyRequests)
        .expect("429 came");
    assert!(
        statuses[..limited]
            .iter()
            .all(|k| *k == ProblemType::TokenInvalid)
    );
    assert!(
        statuses[limited..]
            .iter()
            .all(|k| *k == ProblemType::TooManyRequests)
    );
    // The valid token is refused too while the address is limited (no oracle for guessers).
    let a = w
        .post("/v1/enrollments", &SimStation::new(99).enrollment(&real))
        .await;
    assert_eq!(refused(&a), ProblemType::TooManyRequests);
    assert_eq!(w.rows(), before, "guesses wrote something");
    eprintln!("FIGURE token-guessing refused_401_before_429={limited}");
    w.receiver.shutdown().await.expect("shutdown");
}
