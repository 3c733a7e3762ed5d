//! Who may use which console route: anonymous requests, CSRF, roles, security headers.
#![allow(clippy::unwrap_used)]

mod common;

use common::Harness;
use common::console::{Console, add_user};
use duress_core::EventKind;
use duress_receiver::console::guard::is_api_path;
use duress_receiver::console::routes::{Access, specs};
use duress_receiver::store::Role;

fn fill(path: &str) -> String {
    path.replace("{id}", &uuid::Uuid::now_v7().to_string())
        .replace("{device_id}", "0193aaaa-0000-7000-8000-000000000000")
        .replace("{token_hash}", &"ab".repeat(32))
        .replace("{username}", "someone")
        .replace("{file}", "console.css")
}

/// Proves every protected route of the router's one route table refuses an anonymous
/// request: pages redirect to /login (303), `/api/…` and `/events` answer 401 problem+json,
/// and nothing is served. Public routes (agent API, sign-in page, static assets) stay public.
#[tokio::test]
async fn every_protected_route_refuses_anonymous_requests() {
    let h = Harness::start().await;
    let anon = Console::anonymous(&h);
    let routes = specs();
    let protected: Vec<_> = routes
        .iter()
        .filter(|r| r.access != Access::Public)
        .collect();
    assert!(
        protected.len() >= 25,
        "the table lists the console: {}",
        protected.len()
    );
    for r in &protected {
        let path = fill(r.path);
        let resp = anon.request(r.method.clone(), &path).await;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.text().await.unwrap();
        if is_api_path(r.path) {
            assert_eq!(status, 401, "{} {path}: {body}", r.method);
            assert_eq!(content_type.as_deref(), Some("application/problem+json"));
            assert!(body.contains("urn:duress:problem:unauthorized"), "{body}");
        } else {
            assert_eq!(status, 303, "{} {path}: {body}", r.method);
            assert_eq!(location.as_deref(), Some("/login"), "{} {path}", r.method);
            assert!(body.is_empty(), "nothing served to {} {path}", r.method);
        }
    }
    // The public ones answer without a session.
    assert_eq!(anon.get("/login").await.status, 200);
    assert_eq!(anon.get("/static/console.js").await.status, 200);
    assert_eq!(anon.get("/healthz").await.status, 200);
    assert_eq!(anon.get("/v1/ping").await.status, 204);
    h.shutdown().await;
}

/// Proves a state-changing POST is refused (403, nothing changes) without the session's CSRF
/// token, with a wrong one, and from another origin even with the right one; the same POST
/// with the token (form field or X-CSRF-Token header) works.
#[tokio::test]
async fn state_changes_need_the_csrf_token() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let officer = Console::sign_in(&h, "olivia").await;
    let mut agent = h.enrolled_agent().await;
    let event = agent.event(EventKind::Duress);
    let ack: duress_core::EventAck = h.post("/v1/events", agent.sign_event(&event)).await.json();
    let id = ack.incident_id.unwrap();
    let claim = format!("/incidents/{id}/claim");

    assert_eq!(officer.post_raw(&claim, "").await.status, 403, "no token");
    assert_eq!(
        officer.post_raw(&claim, "csrf=wrong").await.status,
        403,
        "wrong token"
    );
    let cross = officer
        .client
        .post(format!("{}{claim}", officer.base))
        .header("cookie", officer.cookie.clone().unwrap())
        .header("origin", "https://evil.example")
        .header("x-csrf-token", &officer.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403, "another origin");
    let cross_site = officer
        .client
        .post(format!("{}{claim}", officer.base))
        .header("cookie", officer.cookie.clone().unwrap())
        .header("sec-fetch-site", "cross-site")
        .header("x-csrf-token", &officer.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403, "cross-site fetch");
    assert_eq!(
        officer.post_raw("/logout", "").await.status,
        403,
        "logout too"
    );
    let incidents = duress_receiver::admin::list_incidents(h.data_dir())
        .await
        .unwrap();
    assert_eq!(incidents.len(), 1);
    let page = officer.get(&format!("/incidents/{id}")).await.text();
    assert!(page.contains("Nobody has claimed"), "still unclaimed");

    let ok = officer
        .client
        .post(format!("{}{claim}", officer.base))
        .header("cookie", officer.cookie.clone().unwrap())
        .header("x-csrf-token", &officer.csrf)
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    let page = officer.get(&format!("/incidents/{id}")).await.text();
    assert!(
        page.contains("Claimed by <strong class=\"claimer\">olivia</strong>"),
        "{page}"
    );
    h.shutdown().await;
}

/// Proves admin routes answer an officer 403, and that console answers carry the security
/// headers: a CSP without inline script, no framing, no referrer, no caching of pages.
#[tokio::test]
async fn admin_pages_refuse_officers_and_pages_carry_security_headers() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    add_user(h.data_dir(), "ada", Role::Admin).await;
    let officer = Console::sign_in(&h, "olivia").await;
    let admin = Console::sign_in(&h, "ada").await;
    for r in specs()
        .iter()
        .filter(|r| r.access == Access::Admin && r.method == "GET")
    {
        assert_eq!(officer.get(r.path).await.status, 403, "{}", r.path);
        assert_eq!(admin.get(r.path).await.status, 200, "{}", r.path);
    }
    let created = officer
        .post_form("/stations/tokens", &[("uses", "1")])
        .await;
    assert_eq!(created.status, 403, "officers cannot create tokens");

    let (page, headers) = officer.get_response("/").await;
    assert_eq!(page.status, 200);
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(!page.text().contains("<script>"), "no inline script");
    assert!(!page.text().contains(" style=\""), "no inline style");
    h.shutdown().await;
}

/// Proves the sign-in form (which has no session, hence no CSRF token yet) only accepts posts
/// from our own origin: another `Origin`, or an opaque `Origin: null` not vouched for by
/// `Sec-Fetch-Site: same-origin`, is refused before any password is checked.
#[tokio::test]
async fn sign_in_posts_must_come_from_our_origin() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let anon = Console::anonymous(&h);
    let body = common::console::form(&[
        ("username", "olivia"),
        ("password", common::console::PASSWORD),
    ]);
    let post = |headers: Vec<(&'static str, String)>| {
        let mut rb = anon
            .client
            .post(format!("{}/login", anon.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone());
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        rb.send()
    };
    let evil = post(vec![("origin", "https://evil.example".into())])
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);
    let opaque = post(vec![("origin", "null".into())]).await.unwrap();
    assert_eq!(opaque.status(), 403);
    let same_site = post(vec![("sec-fetch-site", "same-site".into())])
        .await
        .unwrap();
    assert_eq!(same_site.status(), 403);
    let browser = post(vec![
        ("origin", "null".into()),
        ("sec-fetch-site", "same-origin".into()),
    ])
    .await
    .unwrap();
    assert_eq!(
        browser.status(),
        303,
        "a same-origin form post under no-referrer"
    );
    let own = post(vec![("origin", h.receiver.url.clone())])
        .await
        .unwrap();
    assert_eq!(own.status(), 303);
    h.shutdown().await;
}
