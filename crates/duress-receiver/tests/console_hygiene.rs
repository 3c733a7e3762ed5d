//! Console hygiene (issue 15, item 5): the console on its own listener and behind a network
//! allow-list, the `__Host-` session cookie and two-cookie refusal, HSTS with a real
//! certificate only, CSV cells neutralised after NFKC, bidirectional controls refused from
//! admins and escaped from devices, heartbeat chord lists bounded.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;

use common::Harness;
use common::console::{Console, PASSWORD, add_user, form, raw_client};
use duress_core::{EventAck, EventKind, HotkeyState, ProblemType};
use duress_receiver::store::Role;

/// Proves that with `console_listen` the console (sign-in, static files, pages, live stream)
/// answers on its own port and 404s on the agent port, while the agent API (`/healthz`,
/// `/v1/…`) answers on the agent port and 404s on the console port; an alarm commits and an
/// officer sees it on the console port.
#[tokio::test]
async fn the_console_listens_apart_from_the_agent_api() {
    let h = Harness::start_with(|s| s.console_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let console_addr = h.receiver.console_addr.expect("a console listener");
    assert_ne!(console_addr, h.receiver.addr);
    assert_eq!(h.receiver.console_url, format!("https://{console_addr}"));
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let raw = raw_client(&h.receiver.cert_pem_path);
    let status = |base: String, path: &'static str| {
        let raw = raw.clone();
        async move {
            raw.get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let agent_port = h.receiver.url.clone();
    let console_port = h.receiver.console_url.clone();
    for path in [
        "/login",
        "/",
        "/static/console.css",
        "/events",
        "/api/board",
        "/reports",
    ] {
        assert_eq!(
            status(agent_port.clone(), path).await,
            404,
            "{path} on the agent port"
        );
    }
    assert_eq!(status(console_port.clone(), "/login").await, 200);
    assert_eq!(
        status(console_port.clone(), "/").await,
        303,
        "to the sign-in page"
    );
    assert_eq!(status(agent_port.clone(), "/healthz").await, 200);
    for path in ["/healthz", "/v1/ping", "/v1/events"] {
        assert_eq!(
            status(console_port.clone(), path).await,
            404,
            "{path} on the console port"
        );
    }
    let agent_on_console = raw
        .post(format!("{console_port}/v1/events"))
        .header("content-type", "application/jose")
        .body("x.y.z")
        .send()
        .await
        .unwrap();
    assert_eq!(agent_on_console.status(), 404);

    // The alarm path on the agent port, the officer on the console port.
    let mut agent = h.enrolled_agent().await;
    let press = agent.event(EventKind::Duress);
    let answer = h.post("/v1/events", agent.sign_event(&press)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let officer = Console::sign_in(&h, "olivia").await;
    assert!(officer.base.ends_with(&console_addr.port().to_string()));
    let board = officer.get("/api/board").await;
    assert_eq!(board.status, 200);
    assert!(board.text().contains("Room 214"), "{}", board.text());
    // The session cookie is worthless on the agent port: no console route there.
    let mut elsewhere = Console::anonymous(&h);
    elsewhere.base = agent_port;
    elsewhere.cookie = officer.cookie.clone();
    assert_eq!(elsewhere.get("/api/board").await.status, 404);
    h.shutdown().await;
}

/// Proves an allow-list that excludes 127.0.0.1 refuses every console route with 403 before
/// any work (no password checked, a problem for `/api/…`, a page otherwise), and still accepts
/// an alarm and answers `/healthz`; one that includes it lets the console in.
#[tokio::test]
async fn the_allow_list_refuses_the_console_and_never_the_agent_api() {
    let h = Harness::start_with(|s| {
        s.console.allow = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    })
    .await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let raw = raw_client(&h.receiver.cert_pem_path);
    let base = &h.receiver.url;
    let checked_before = h.receiver.login_limiter.checked.load(Ordering::SeqCst);
    let login = raw
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("username", "olivia"), ("password", PASSWORD)]))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 403);
    assert!(login.headers().get("set-cookie").is_none());
    let page = login.text().await.unwrap();
    assert!(page.contains("not reachable from this network"), "{page}");
    assert_eq!(
        h.receiver.login_limiter.checked.load(Ordering::SeqCst),
        checked_before,
        "refused before the password was checked"
    );
    for path in [
        "/login",
        "/",
        "/static/console.css",
        "/reports/incidents.csv",
    ] {
        let r = raw.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    let api = raw.get(format!("{base}/api/board")).send().await.unwrap();
    assert_eq!(api.status(), 403);
    assert_eq!(
        api.headers()["content-type"],
        duress_core::PROBLEM_CONTENT_TYPE
    );
    let problem: serde_json::Value = api.json().await.unwrap();
    assert_eq!(problem["type"], "urn:duress:problem:console-not-allowed");

    // The agent API is never restricted.
    assert_eq!(h.get("/healthz").await.status, 200);
    let mut agent = h.enrolled_agent().await;
    let press = agent.event(EventKind::Duress);
    let answer = h.post("/v1/events", agent.sign_event(&press)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let ack: EventAck = answer.json();
    assert!(ack.incident_id.is_some());
    h.shutdown().await;

    let allowed =
        Harness::start_with(|s| s.console.allow = vec!["127.0.0.0/8".parse().unwrap()]).await;
    add_user(allowed.data_dir(), "olivia", Role::Officer).await;
    let officer = Console::sign_in(&allowed, "olivia").await;
    assert_eq!(officer.get("/api/board").await.status, 200);
    allowed.shutdown().await;
}

/// Proves the session cookie is `__Host-` prefixed (Secure, Path=/, no Domain) and that a
/// request carrying two session cookies is refused with a clear 400 (and the cookie cleared),
/// for pages and for the API, even when one of the two is valid.
#[tokio::test]
async fn the_host_cookie_and_two_session_cookies_refused() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let mut officer = Console::sign_in(&h, "olivia").await;
    let cookie = officer.cookie.clone().unwrap();
    assert!(cookie.starts_with("__Host-duress_session="), "{cookie}");
    let mut anon = Console::anonymous(&h);
    let set = anon
        .client
        .post(format!("{}/login", anon.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("username", "olivia"), ("password", PASSWORD)]))
        .send()
        .await
        .unwrap();
    let set_cookie = set.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set_cookie.starts_with("__Host-duress_session="),
        "{set_cookie}"
    );
    for attr in ["; Secure", "; Path=/", "; HttpOnly", "; SameSite=Strict"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    assert!(
        !set_cookie.to_ascii_lowercase().contains("domain"),
        "{set_cookie}"
    );
    let second = set_cookie.split(';').next().unwrap().to_owned();
    anon.cookie = Some(second.clone());
    assert_eq!(
        anon.get("/api/board").await.status,
        200,
        "each alone is valid"
    );

    officer.cookie = Some(format!("{cookie}; {second}"));
    let (page, headers) = officer.get_response("/").await;
    assert_eq!(page.status, 400);
    assert!(
        page.text().contains("two session cookies"),
        "{}",
        page.text()
    );
    assert!(
        headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("__Host-duress_session=; ")
    );
    let api = officer.get("/api/board").await;
    assert_eq!(api.status, 400);
    assert_eq!(api.content_type, duress_core::PROBLEM_CONTENT_TYPE);
    assert!(api.text().contains("two session cookies"), "{}", api.text());
    // The same cookie twice is still two.
    officer.cookie = Some(format!("{cookie}; {cookie}"));
    assert_eq!(officer.get("/api/board").await.status, 400);
    // Each alone still works: nothing was ended by the refusal.
    officer.cookie = Some(cookie);
    assert_eq!(officer.get("/api/board").await.status, 200);
    h.shutdown().await;
}

/// Proves HSTS is sent on console answers with a configured certificate (`TlsSource::Files`)
/// and never with the self-signed default, and never on the agent API.
#[tokio::test]
async fn hsts_only_with_a_real_certificate() {
    let self_signed = Harness::start().await;
    let anon = Console::anonymous(&self_signed);
    let (page, headers) = anon.get_response("/login").await;
    assert_eq!(page.status, 200);
    assert!(headers.get("strict-transport-security").is_none());
    self_signed.shutdown().await;

    let files = tempfile::tempdir().unwrap();
    let (cert, key) =
        duress_receiver::tls::generate_self_signed(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
    let cert_path = files.path().join("campus.pem");
    let key_path = files.path().join("campus.key");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let h = Harness::start_with(|s| {
        s.tls = duress_receiver::TlsSource::Files {
            cert: cert_path.clone(),
            key: key_path.clone(),
        };
    })
    .await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let anon = Console::anonymous(&h);
    let (page, headers) = anon.get_response("/login").await;
    assert_eq!(page.status, 200);
    assert_eq!(headers["strict-transport-security"], "max-age=31536000");
    let officer = Console::sign_in(&h, "olivia").await;
    let (_, headers) = officer.get_response("/api/board").await;
    assert_eq!(headers["strict-transport-security"], "max-age=31536000");
    let healthz = h
        .client
        .get(format!("{}/healthz", h.receiver.url))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    assert!(healthz.headers().get("strict-transport-security").is_none());
    h.shutdown().await;
}

/// Proves the CSV export through HTTP neutralises cells whose first non-blank character after
/// NFKC is a formula trigger (`" =1+1"`, full-width `＝1+1`, `@SUM(…)`, `-2+3`), and shows a
/// device's bidirectional controls escaped, on the board and in the CSV.
#[tokio::test]
async fn csv_cells_are_neutralised_and_device_bidi_is_escaped() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let officer = Console::sign_in(&h, "olivia").await;
    let mut agent = h.enrolled_agent().await;
    let mut event = agent.event(EventKind::Duress);
    event.location.label = Some(" =1+1".into());
    event.location.room = Some("＝1+1".into());
    event.host.hostname = "-2+3".into();
    event.host.user = "@SUM(A1:A9)".into();
    let ack: EventAck = h.post("/v1/events", agent.sign_event(&event)).await.json();
    assert!(ack.incident_id.is_some());
    // A second station whose policy carries a right-to-left override: accepted (an alarm is
    // never refused), shown escaped.
    let mut other = h.enrolled_agent().await;
    let mut bidi = other.event(EventKind::Duress);
    bidi.location.label = Some("Room \u{202E}412".into());
    bidi.host.hostname = "ws\u{2066}-9".into();
    let answer = h.post("/v1/events", other.sign_event(&bidi)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    let csv = officer.get("/reports/incidents.csv").await;
    assert_eq!(csv.status, 200);
    let text = csv.text();
    assert!(text.contains(",' =1+1,"), "{text}");
    assert!(text.contains(",'-2+3,"), "{text}");
    assert!(text.contains(",'@SUM(A1:A9),"), "{text}");
    // The civic address column starts with the room here ("Room ＝1+1"): not a formula; the
    // full-width case is in the label of the next incident.
    assert!(text.contains("Room [U+202E]412"), "{text}");
    assert!(
        !text.contains('\u{202E}') && !text.contains('\u{2066}'),
        "{text}"
    );
    let mut full_width = agent.event(EventKind::Duress);
    full_width.location.label = Some("＝1+1".into());
    full_width.occurred_at += time::Duration::hours(1);
    let ack: EventAck = h
        .post("/v1/events", agent.sign_event(&full_width))
        .await
        .json();
    assert!(ack.incident_id.is_some());
    let text = officer.get("/reports/incidents.csv").await.text();
    assert!(text.contains(",'＝1+1,"), "{text}");
    for line in text.lines().skip(1) {
        for cell in line.split(',') {
            let first = cell.trim_start_matches('"').trim_start();
            assert!(
                !first.starts_with(['=', '+', '-', '@', '＝']),
                "{cell} in {line}"
            );
        }
    }

    let board = officer.get("/api/board").await.text();
    assert!(board.contains("Room [U+202E]412"), "{board}");
    assert!(board.contains("ws[U+2066]-9"), "{board}");
    assert!(
        !board.contains('\u{202E}') && !board.contains('\u{2066}'),
        "{board}"
    );
    h.shutdown().await;
}

/// Proves admin-typed names refuse bidirectional controls with a clear message (camera links;
/// account names through the username syntax), and nothing is stored.
#[tokio::test]
async fn admin_names_refuse_bidi_controls() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "ada", Role::Admin).await;
    let admin = Console::sign_in(&h, "ada").await;
    let refused = admin
        .post_form(
            "/admin/cameras",
            &[
                ("match_field", "ROOM"),
                ("match_value", "214"),
                ("name", "Hall \u{202E}A"),
                ("url_template", "https://vms.example/{ROOM}"),
            ],
        )
        .await;
    assert_eq!(refused.status, 200, "the form again, with the error");
    assert!(
        refused.text().contains("bidirectional control"),
        "{}",
        refused.text()
    );
    let page = admin.get("/admin/cameras").await.text();
    assert!(!page.contains("Hall"), "nothing stored: {page}");

    let add = admin
        .post_form(
            "/admin/users",
            &[("username", "eve\u{202E}"), ("role", "officer")],
        )
        .await;
    assert!(
        add.text().contains("a username is 1-64 characters"),
        "{}",
        add.text()
    );
    assert!(
        duress_receiver::admin::add_user(h.data_dir(), "mal\u{2067}lory", Role::Officer, PASSWORD)
            .await
            .is_err()
    );
    h.shutdown().await;
}

/// Proves heartbeat chord lists are bounded: too many, too long, empty or control-character
/// chords are refused with a clear `invalid-claims` problem and nothing is stored; a chord
/// with a bidirectional mark (a right-to-left desktop's description) is kept, shown escaped.
#[tokio::test]
async fn heartbeat_chord_lists_are_validated() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let officer = Console::sign_in(&h, "olivia").await;
    let agent = h.enrolled_agent().await;
    let good = agent.heartbeat();
    assert_eq!(
        h.post("/v1/heartbeats", agent.sign_heartbeat(&good))
            .await
            .status,
        200
    );
    for (chords, says) in [
        (vec!["Ctrl+Alt+D".to_owned(); 17], "more than 16 chords"),
        (vec!["K".repeat(129)], "longer than 128"),
        (vec!["Ctrl+\u{1b}[2J".to_owned()], "control character"),
        (vec!["  ".to_owned()], "empty chord"),
    ] {
        let mut claims = agent.heartbeat();
        claims.hotkey = HotkeyState::Registered { chords };
        let answer = h
            .post("/v1/heartbeats", agent.sign_heartbeat(&claims))
            .await;
        assert_eq!(answer.status, 422, "{}", answer.text());
        let problem = answer.problem(ProblemType::InvalidClaims);
        let detail = problem.detail.unwrap_or_default();
        assert!(detail.contains(says), "{detail}");
    }
    let stations = officer.get("/stations").await.text();
    assert!(
        stations.contains("registered: Ctrl+Alt+Shift+D"),
        "{stations}"
    );
    assert!(
        !stations.contains("KKKK") && !stations.contains("[2J"),
        "{stations}"
    );

    let mut rtl = agent.heartbeat();
    rtl.hotkey = HotkeyState::Registered {
        chords: vec!["\u{200F}Ctrl+Alt+D".into()],
    };
    assert_eq!(
        h.post("/v1/heartbeats", agent.sign_heartbeat(&rtl))
            .await
            .status,
        200
    );
    let stations = officer.get("/stations").await.text();
    assert!(
        stations.contains("registered: [U+200F]Ctrl+Alt+D"),
        "{stations}"
    );
    assert!(!stations.contains('\u{200F}'), "{stations}");
    h.shutdown().await;
}
