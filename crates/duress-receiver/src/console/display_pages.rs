//! The duty display's pages: pairing on the screen (`/display`), and the admin's list, pairing
//! and revocation (`/admin/displays`). The credential itself is [`super::displays`].

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use serde::Deserialize;

use super::displays::{COOKIE_NAME, by_cookie};
use super::error::ConsoleResult;
use super::guard::check_same_origin;
use super::pages::{Layout, Ts, error_page, render, render_status};
use super::{Console, CurrentUser, sessions};
use crate::api::receiver_now;
use crate::store::{DisplayState, NewDisplay};

/// The cookie is kept as long as browsers allow (Chromium caps cookies at 400 days); the
/// credential ends when an admin revokes it, not when a timer runs out.
const COOKIE_MAX_AGE_S: u64 = 400 * 86_400;
/// How long a pairing code shown on a screen can be entered.
pub const CODE_TTL: time::Duration = time::Duration::minutes(10);
/// Screens waiting for pairing at once: the request needs no sign-in, so this bounds what an
/// anonymous client (already inside the console allow-list) can make the receiver store.
pub const MAX_PENDING: u32 = 20;
/// No 0/O or 1/I: read off a wall screen and typed by someone else.
const CODE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// A new pairing code, `ABCD-EFGH` (40 random bits: enough for a code that lives ten minutes
/// and is only accepted from a signed-in admin).
fn new_code() -> String {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).expect("the OS random generator failed");
    let chars: String = bytes
        .iter()
        .map(|b| CODE_ALPHABET[usize::from(b & 31)] as char)
        .collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

/// The code as typed, normalised (case, spaces and dashes do not matter), then hashed.
fn code_hash(typed: &str) -> String {
    let normal: String = typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    sessions::hash_id(&normal)
}

fn set_cookie(token: &str) -> HeaderValue {
    let value = format!(
        "{COOKIE_NAME}={token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={COOKIE_MAX_AGE_S}"
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[derive(Template)]
#[template(path = "display_pair.html")]
struct PairPage {
    /// The code to show (once), or none: the "get a code" form.
    code: Option<String>,
    minutes: i64,
    waiting: bool,
}

/// `GET /display`: a paired display goes to the board; any other browser gets the form that
/// asks for a pairing code.
pub async fn page(State(console): State<Arc<Console>>, headers: HeaderMap) -> ConsoleResult {
    let d = by_cookie(console.store.as_ref(), &headers).await?;
    if d.as_ref().is_some_and(|d| d.state == DisplayState::Active) {
        return Ok(Redirect::to("/").into_response());
    }
    Ok(render(&PairPage {
        code: None,
        minutes: CODE_TTL.whole_minutes(),
        waiting: d.is_some_and(|d| d.state == DisplayState::Pending),
    }))
}

/// `POST /display/pair`: a new token (in this browser's cookie) and a code shown once.
pub async fn start(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ConsoleResult {
    if let Err(refusal) = check_same_origin(&headers, &uri) {
        return Ok(*refusal);
    }
    let token = sessions::random_secret();
    let code = new_code();
    let now = receiver_now();
    let added = console
        .store
        .create_pending_display(
            NewDisplay {
                token_hash: sessions::hash_id(&token),
                code_hash: code_hash(&code),
                created_at: now,
                code_expires_at: now + CODE_TTL,
            },
            MAX_PENDING,
        )
        .await?;
    if !added {
        return Ok(error_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many screens waiting",
            "Too many screens are waiting to be paired. Try again in a few minutes.",
        ));
    }
    let mut r = render_status(
        StatusCode::OK,
        &PairPage {
            code: Some(code),
            minutes: CODE_TTL.whole_minutes(),
            waiting: true,
        },
    );
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&token));
    Ok(r)
}

/// `GET /display/status`: `{"state": "none" | "pending" | "active" | "revoked"}` for this
/// browser's display cookie (the pairing page polls it, then goes to the board).
pub async fn status(State(console): State<Arc<Console>>, headers: HeaderMap) -> ConsoleResult {
    let state = by_cookie(console.store.as_ref(), &headers)
        .await?
        .map_or("none", |d| d.state.as_str());
    Ok(axum::Json(serde_json::json!({ "state": state })).into_response())
}

/// One row of the admin page.
struct Row {
    id: i64,
    name: String,
    active: bool,
    paired: Option<Ts>,
    paired_by: String,
    last_seen: Option<Ts>,
    revoked: Option<Ts>,
    revoked_by: String,
}

#[derive(Template)]
#[template(path = "displays.html")]
struct DisplaysPage {
    layout: Layout,
    displays: Vec<Row>,
    error: Option<String>,
}

async fn admin_page(
    console: &Console,
    user: &CurrentUser,
    status: StatusCode,
    error: Option<String>,
) -> ConsoleResult {
    let displays = console
        .store
        .displays()
        .await?
        .into_iter()
        .map(|d| Row {
            id: d.id,
            name: d.name,
            active: d.state == DisplayState::Active,
            paired: d.paired_at.map(Ts::new),
            paired_by: d.paired_by.unwrap_or_default(),
            last_seen: d.last_seen_at.map(Ts::new),
            revoked: d.revoked_at.map(Ts::new),
            revoked_by: d.revoked_by.unwrap_or_default(),
        })
        .collect();
    Ok(render_status(
        status,
        &DisplaysPage {
            layout: Layout::new(user, "displays", "Duty displays"),
            displays,
            error,
        },
    ))
}

/// `GET /admin/displays`: paired displays, the pairing form, revoke buttons.
pub async fn admin(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> ConsoleResult {
    admin_page(&console, &user, StatusCode::OK, None).await
}

#[derive(Debug, Deserialize)]
pub struct PairForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    name: String,
}

/// `POST /admin/displays`: pairs the screen showing `code` under `name` (audited).
pub async fn pair(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Form(form): Form<PairForm>,
) -> ConsoleResult {
    let name = form.name.trim();
    if name.is_empty()
        || name.chars().count() > 80
        || name.chars().any(char::is_control)
        || duress_core::text::has_bidi_control(name)
    {
        return admin_page(
            &console,
            &user,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Name the display (up to 80 characters), e.g. \"Security office wall\".".into()),
        )
        .await;
    }
    let paired = console
        .store
        .pair_display(&code_hash(&form.code), name, &user.username, receiver_now())
        .await?;
    if paired.is_none() {
        return admin_page(
            &console,
            &user,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("No screen is waiting with this code (codes last ten minutes): get a new code on the screen.".into()),
        )
        .await;
    }
    Ok(Redirect::to("/admin/displays").into_response())
}

/// `POST /admin/displays/{id}/revoke`: the display loses access now, and its open stream ends.
pub async fn revoke(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<i64>,
) -> ConsoleResult {
    if console
        .store
        .revoke_display(id, &user.username, receiver_now())
        .await?
    {
        // No receiver listening (no open stream) is not an error.
        let _ = console.display_revoked.send(id);
    }
    Ok(Redirect::to("/admin/displays").into_response())
}
