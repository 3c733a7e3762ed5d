//! Duty displays: the security office's wall screen, paired by an admin, that stays signed in
//! across days, shows the board and sounds, and can view and hear but never act.
//!
//! Pairing: the screen opens `/display` and asks for a code (`POST /display/pair`). The
//! receiver makes a random 32-byte token, puts it in the screen's `__Host-duress_display`
//! cookie (HttpOnly, Secure, SameSite=Strict: bound to that browser), and shows an 8-character
//! code once. An admin enters the code and a name on `/admin/displays` (audited
//! `display.pair`); from then on the cookie is the display's credential. Only SHA-256 hashes of
//! token and code are stored. A code is good for [`super::display_pages::CODE_TTL`]; at most
//! [`super::display_pages::MAX_PENDING`] screens
//! may wait at once (the pairing request needs no sign-in). Revoking (audited `display.revoke`)
//! refuses the cookie from the next request on, and ends the display's open live stream at once
//! ([`super::Console::display_revoked`]).
//!
//! What a display may use is the routes marked [`super::guard::Access::View`] (board, alarm
//! state, live stream, incident pages), and only with GET: every other route answers it 403.
//!
//! This module is the credential (read by the guard and the live stream); the pairing pages
//! and the admin page are [`super::display_pages`].

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::pages::error_page;
use super::sessions;
use crate::api::receiver_now;
use crate::store::{DisplayRecord, DisplayState, Store, StoreResult};

/// `__Host-`: only with `Secure`, `Path=/` and no `Domain` (see [`sessions::COOKIE_NAME`]).
pub const COOKIE_NAME: &str = "__Host-duress_display";
/// `last_seen_at` is written at most this often.
const TOUCH_EVERY: time::Duration = time::Duration::seconds(60);
fn token_hash(headers: &HeaderMap) -> Option<String> {
    sessions::cookie_value(headers, COOKIE_NAME).map(|t| sessions::hash_id(&t))
}

/// The request's display, whatever its state.
pub async fn by_cookie(
    store: &dyn Store,
    headers: &HeaderMap,
) -> StoreResult<Option<DisplayRecord>> {
    match token_hash(headers) {
        Some(h) => store.display_by_token(&h).await,
        None => Ok(None),
    }
}

/// The request's display if it is active (paired, not revoked); marks it seen.
pub async fn load(store: &dyn Store, headers: &HeaderMap) -> StoreResult<Option<DisplayRecord>> {
    let Some(d) = by_cookie(store, headers).await? else {
        return Ok(None);
    };
    if d.state != DisplayState::Active {
        return Ok(None);
    }
    let now = receiver_now();
    if d.last_seen_at.is_none_or(|t| now - t >= TOUCH_EVERY) {
        store.touch_display(d.id, now).await?;
    }
    Ok(Some(d))
}

/// Whether display `id` is still active (the live stream asks at every keep-alive).
pub async fn still_active(store: &dyn Store, id: i64) -> StoreResult<bool> {
    Ok(store
        .display(id)
        .await?
        .is_some_and(|d| d.state == DisplayState::Active))
}

/// A redirect-or-refusal for a display on a route it may not use.
pub fn refused() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "Refused",
        "A duty display can view and hear the board, but not act.",
    )
}
