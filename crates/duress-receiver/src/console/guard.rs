//! What stands in front of every protected route, and the headers every answer carries.
//!
//! [`guard`] (a `from_fn` middleware, one per route, configured with the route's [`Access`]):
//! 1. a valid session, else: pages → `303 /login`; `/api/…` and `/events` → `401`
//!    problem+json (scripts cannot follow a redirect to a form);
//! 2. the route's role (admin pages answer officers 403);
//! 3. for every method other than GET/HEAD: the request comes from our own origin (`Origin`,
//!    `Sec-Fetch-Site` where the browser sends them) and carries the session's CSRF token,
//!    in the `X-CSRF-Token` header or the form field `csrf` (compared in constant time).
//!
//! The signed-in user is then put in the request's extensions as [`CurrentUser`].

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{FromRequest as _, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq as _;

use super::pages::error_page;
use super::{CurrentUser, WebState, sessions};

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The agent API, `/healthz`, the sign-in page and static assets.
    Public,
    /// Any signed-in officer or admin, or a paired duty display with GET/HEAD (viewing the
    /// board, the alarm state, the live stream and incidents: `console::displays`).
    View,
    /// Any signed-in officer or admin.
    Officer,
    /// Admins only (officers get 403).
    Admin,
}

/// Form bodies the guard reads to find the CSRF field.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Paths answered as an API (401 problem+json) rather than as a page (redirect to sign-in).
pub fn is_api_path(path: &str) -> bool {
    path == "/events" || path.starts_with("/api/")
}

pub fn unauthorized() -> Response {
    let body = serde_json::json!({
        "type": "urn:duress:problem:unauthorized",
        "title": "Sign-in required",
        "status": 401,
        "detail": "this console route needs a valid session",
    });
    let mut r = (StatusCode::UNAUTHORIZED, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(duress_core::PROBLEM_CONTENT_TYPE),
    );
    r
}

/// Two session cookies in one request: refused before any lookup (which one would count is
/// exactly what a planted cookie wants to decide). The answer also clears the cookie, so a
/// browser that somehow holds two recovers by signing in again.
fn two_session_cookies(path: &str) -> Response {
    const DETAIL: &str = "this request carried two session cookies; sign in again";
    let mut r = if is_api_path(path) {
        let body = serde_json::json!({
            "type": "urn:duress:problem:two-session-cookies",
            "title": "Two session cookies",
            "status": 400,
            "detail": DETAIL,
        });
        let mut r = (StatusCode::BAD_REQUEST, body.to_string()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(duress_core::PROBLEM_CONTENT_TYPE),
        );
        r
    } else {
        error_page(
            StatusCode::BAD_REQUEST,
            "Two session cookies",
            "This request carried two session cookies. Sign in again.",
        )
    };
    r.headers_mut()
        .insert(header::SET_COOKIE, sessions::clear_cookie());
    r
}

fn forbidden(message: &str) -> Response {
    error_page(StatusCode::FORBIDDEN, "Refused", message)
}

/// Refuses a request another site made the browser send (`Origin` of another host,
/// `Sec-Fetch-Site: cross-site`/`same-site`, or an opaque `Origin: null` without
/// `Sec-Fetch-Site: same-origin`). Absent headers pass: non-browser clients do not send them,
/// and they still need the CSRF token.
pub fn check_same_origin(headers: &HeaderMap, uri: &Uri) -> Result<(), Box<Response>> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(Box::new(forbidden("This request came from another site.")));
    }
    let fetch_site_same = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"same-origin");
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        // Our `Referrer-Policy: no-referrer` makes browsers send `Origin: null` on form posts;
        // then `Sec-Fetch-Site: same-origin` (checked above when present) must vouch instead.
        if origin == "null" {
            return if fetch_site_same {
                Ok(())
            } else {
                Err(Box::new(forbidden(
                    "This request came from an unknown origin.",
                )))
            };
        }
        // HTTP/1.1 names the host in `Host`; HTTP/2 in the `:authority` of the URI.
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        if origin != format!("https://{host}") {
            tracing::warn!(%origin, %host, %uri, "refused: cross-origin request");
            return Err(Box::new(forbidden(
                "This request came from another origin.",
            )));
        }
    }
    Ok(())
}

fn tokens_match(given: &str, expected: &str) -> bool {
    !given.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

pub async fn guard(
    State((state, access)): State<(WebState, Access)>,
    request: Request,
    next: Next,
) -> Response {
    let console = &state.console;
    let path = request.uri().path().to_owned();
    if sessions::session_cookie(request.headers()).is_err() {
        return two_session_cookies(&path);
    }
    let session =
        match sessions::load(console.store.as_ref(), request.headers(), &console.settings).await {
            Ok(s) => s,
            Err(e) => return super::error::ConsoleError::from(e).into_response(),
        };
    let Some(session) = session else {
        // No officer's session: perhaps a paired duty display, which may only view.
        match super::displays::load(console.store.as_ref(), request.headers()).await {
            Ok(Some(display)) => {
                if access != Access::View
                    || !matches!(*request.method(), Method::GET | Method::HEAD)
                {
                    return super::displays::refused();
                }
                crate::server::trust_connection(request.extensions());
                let mut request = request;
                request.extensions_mut().insert(CurrentUser {
                    username: format!("display: {}", display.name),
                    role: crate::store::Role::Officer,
                    // No token: nothing a display renders may be posted.
                    csrf: String::new(),
                    trouble: state.console.watchdog.trouble(),
                    display: Some(display.id),
                });
                return next.run(request).await;
            }
            Ok(None) => {}
            Err(e) => return super::error::ConsoleError::from(e).into_response(),
        }
        return if is_api_path(&path) {
            unauthorized()
        } else {
            Redirect::to("/login").into_response()
        };
    };
    if access == Access::Admin && session.role != crate::store::Role::Admin {
        return forbidden("This page is for console administrators.");
    }
    let mut request = request;
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        if let Err(refusal) = check_same_origin(request.headers(), request.uri()) {
            return *refusal;
        }
        let header_token = request
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let ok = match header_token {
            Some(t) => tokens_match(&t, &session.csrf),
            None => {
                // Read the form body for its `csrf` field, then hand the same bytes on.
                let (parts, body) = request.into_parts();
                let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
                    Ok(b) => b,
                    Err(_) => {
                        return error_page(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "Too large",
                            "The form is too large.",
                        );
                    }
                };
                let probe = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
                let form = axum::Form::<HashMap<String, String>>::from_request(probe, &()).await;
                request = Request::from_parts(parts, Body::from(bytes));
                form.ok()
                    .and_then(|axum::Form(f)| f.get("csrf").cloned())
                    .is_some_and(|t| tokens_match(&t, &session.csrf))
            }
        };
        if !ok {
            tracing::warn!(path = %path, user = %session.username, "refused: missing or wrong CSRF token");
            return forbidden(
                "This form has expired or did not come from this console. Reload the page and try again.",
            );
        }
    }
    // A valid session proves the sender: its connection joins the share kept while hostile
    // connections fill the caps (crate::server), so the board still loads under attack.
    crate::server::trust_connection(request.extensions());
    request.extensions_mut().insert(CurrentUser {
        username: session.username,
        role: session.role,
        csrf: session.csrf,
        trouble: state.console.watchdog.trouble(),
        display: None,
    });
    next.run(request).await
}

/// The console's network allow-list ([`crate::settings::ConsoleSettings::allow`]), in front of
/// every console route (pages, sign-in, static files, live stream) and before anything else:
/// a refused address gets 403 without a session lookup, a form read or a password check. The
/// agent API never passes through it.
pub async fn allow_list(
    State(allow): State<std::sync::Arc<Vec<ipnet::IpNet>>>,
    request: Request,
    next: Next,
) -> Response {
    if !allow.is_empty() {
        let client = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            // An IPv4 client of a dual-stack listener arrives as ::ffff:a.b.c.d.
            .map(|c| c.0.ip().to_canonical());
        let allowed = client.is_some_and(|ip| allow.iter().any(|net| net.contains(&ip)));
        if !allowed {
            return not_allowed(request.uri().path());
        }
    }
    next.run(request).await
}

fn not_allowed(path: &str) -> Response {
    const DETAIL: &str = "the console is not reachable from this network";
    if is_api_path(path) {
        let body = serde_json::json!({
            "type": "urn:duress:problem:console-not-allowed",
            "title": "Console not reachable from here",
            "status": 403,
            "detail": DETAIL,
        });
        let mut r = (StatusCode::FORBIDDEN, body.to_string()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(duress_core::PROBLEM_CONTENT_TYPE),
        );
        r
    } else {
        error_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "The security console is not reachable from this network.",
        )
    }
}

/// `Strict-Transport-Security` on console answers, once a real certificate is configured
/// (see [`crate::settings::ConsoleSettings::hsts`]). A year, the value browsers' preload
/// lists ask for; no `includeSubDomains`: other hosts of the campus domain are not ours.
pub async fn hsts(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    response
}

/// Headers on every answer: a strict CSP (no inline script or style anywhere in the console),
/// no framing, no referrer, no MIME sniffing, and no caching unless the handler said otherwise.
pub async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
