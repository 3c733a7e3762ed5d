//! Server-side sessions. The cookie holds 32 random bytes (base64url); the database holds only
//! their SHA-256, so reading the database does not let anyone sign in. A session ends when it
//! is idle longer than `session_idle`, when it is older than `session_lifetime`, when its user
//! is disabled, or at sign-out (the row is deleted). Before it ends the page warns
//! (`session_warning`) and one click extends it ([`extend`]): by another `session_lifetime`, but
//! never past sign-in plus `session_max`.

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

use crate::api::receiver_now;
use crate::settings::ConsoleSettings;
use crate::store::{NewSession, Role, SessionRecord, Store, StoreResult};

/// `__Host-`: browsers accept it only with `Secure`, `Path=/` and no `Domain`, so no sibling
/// host on the campus domain (nor a plain-HTTP page) can plant or shadow the session cookie.
pub const COOKIE_NAME: &str = "__Host-duress_session";
/// `last_seen_at` is written at most this often, not on every request.
const TOUCH_EVERY: time::Duration = time::Duration::seconds(60);

/// 32 random bytes, base64url.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    // The OS generator failing is not something a console can recover from.
    getrandom::getrandom(&mut bytes).expect("the OS random generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash_id(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id_hash: String,
    pub username: String,
    pub role: Role,
    pub csrf: String,
}

/// Creates a session for `username` and audits the sign-in (`detail`: where from) in one
/// transaction; returns the cookie value (shown to nobody else).
pub async fn create(
    store: &dyn Store,
    username: &str,
    settings: &ConsoleSettings,
    detail: &str,
) -> StoreResult<String> {
    let id = random_secret();
    let now = receiver_now();
    let session = NewSession {
        id_hash: hash_id(&id),
        username: username.to_owned(),
        csrf_token: random_secret(),
        created_at: now,
        expires_at: now + settings.session_lifetime.min(settings.session_max),
    };
    store.create_session(session, detail).await?;
    Ok(id)
}

/// A new session for `username` as [`create`] makes it, not stored yet (single sign-on stores
/// it in the transaction that decides the account): the cookie value and the row.
pub fn new_session(username: &str, settings: &ConsoleSettings) -> (String, NewSession) {
    let id = random_secret();
    let now = receiver_now();
    let session = NewSession {
        id_hash: hash_id(&id),
        username: username.to_owned(),
        csrf_token: random_secret(),
        created_at: now,
        expires_at: now + settings.session_lifetime.min(settings.session_max),
    };
    (id, session)
}

/// The session named by the request's cookie, if it is still valid. An expired or idle
/// session, or one whose user is disabled, is deleted.
pub async fn load(
    store: &dyn Store,
    headers: &HeaderMap,
    settings: &ConsoleSettings,
) -> StoreResult<Option<Session>> {
    let Some(id) = session_cookie(headers).ok().flatten() else {
        return Ok(None);
    };
    let id_hash = hash_id(&id);
    let Some(row) = store.session(&id_hash).await? else {
        return Ok(None);
    };
    let now = receiver_now();
    let Some(role) = row.role else {
        return Ok(None);
    };
    if row.user_disabled || now >= row.expires_at || now - row.last_seen_at >= settings.session_idle
    {
        store.expire_session(&id_hash).await?;
        return Ok(None);
    }
    if now - row.last_seen_at >= TOUCH_EVERY {
        store.touch_session(&id_hash, now).await?;
    }
    Ok(Some(Session {
        id_hash,
        username: row.username,
        role,
        csrf: row.csrf_token,
    }))
}

/// Whether the session with `id_hash` is still valid (not ended, expired, idle or of a
/// disabled user), without touching it: a live stream asks this at every keep-alive, and an
/// open board alone must not keep an unattended console signed in.
pub async fn still_valid(
    store: &dyn Store,
    id_hash: &str,
    settings: &ConsoleSettings,
) -> StoreResult<bool> {
    Ok(remaining(store, id_hash, settings).await?.is_some())
}

/// What a page is told of its session: seconds until it ends, and whether "Stay signed in"
/// can still move that end.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Remaining {
    /// Seconds, to the millisecond: the page's countdown must not run out before the server's.
    pub expires_in: f64,
    pub extendable: bool,
    /// How long before the end the page warns.
    pub warn: u64,
}

/// When the session of `row` ends (its lifetime or its idle limit, whichever comes first).
fn ends_at(row: &SessionRecord, settings: &ConsoleSettings) -> time::OffsetDateTime {
    row.expires_at.min(row.last_seen_at + settings.session_idle)
}

fn limit_of(row: &SessionRecord, settings: &ConsoleSettings) -> time::OffsetDateTime {
    row.created_at + settings.session_max
}

/// The session's [`Remaining`], without touching it; `None` when it is over (ended, expired,
/// idle or of a disabled user).
pub async fn remaining(
    store: &dyn Store,
    id_hash: &str,
    settings: &ConsoleSettings,
) -> StoreResult<Option<Remaining>> {
    let Some(row) = store.session(id_hash).await? else {
        return Ok(None);
    };
    let now = receiver_now();
    let end = ends_at(&row, settings);
    if row.role.is_none() || row.user_disabled || now >= end {
        return Ok(None);
    }
    Ok(Some(Remaining {
        expires_in: (end - now).whole_milliseconds() as f64 / 1000.0,
        extendable: row.expires_at < limit_of(&row, settings),
        warn: settings.session_warning.as_secs(),
    }))
}

/// "Stay signed in": the session's end moves to now plus `session_lifetime`, capped at sign-in
/// plus `session_max` (audited). `None` when the session is already over.
pub async fn extend(
    store: &dyn Store,
    id_hash: &str,
    settings: &ConsoleSettings,
) -> StoreResult<Option<Remaining>> {
    let Some(row) = store.session(id_hash).await? else {
        return Ok(None);
    };
    let now = receiver_now();
    if row.role.is_none() || row.user_disabled || now >= ends_at(&row, settings) {
        return Ok(None);
    }
    let until = (now + settings.session_lifetime).min(limit_of(&row, settings));
    if until > row.expires_at && !store.extend_session(id_hash, until, now).await? {
        return Ok(None);
    }
    remaining(store, id_hash, settings).await
}

/// The `Set-Cookie` value that installs a session: HttpOnly (no script reads it), Secure
/// (never sent in clear), SameSite=Strict (never sent on a cross-site request).
pub fn set_cookie(id: &str, settings: &ConsoleSettings) -> HeaderValue {
    let value = format!(
        "{COOKIE_NAME}={id}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        // As long as the session could be extended: the server decides when it ends.
        settings.session_max.as_secs()
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-duress_session=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0",
    )
}

/// A request carried more than one session cookie: refused rather than guessing which one
/// counts (a planted second cookie is how session fixation picks the victim's session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwoSessionCookies;

/// The request's session cookie: `Ok(None)` without one, `Err` with two or more.
pub fn session_cookie(headers: &HeaderMap) -> Result<Option<String>, TwoSessionCookies> {
    let mut found = cookie_values(headers, COOKIE_NAME);
    let first = found.next();
    if found.next().is_some() {
        return Err(TwoSessionCookies);
    }
    Ok(first)
}

/// The value of cookie `name`, from any `Cookie` header.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    cookie_values(headers, name).next()
}

/// Every value of cookie `name`, from every `Cookie` header, in order.
fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_session_cookie_is_read_and_two_are_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(session_cookie(&h), Ok(None));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-duress_session=x"),
        );
        assert_eq!(session_cookie(&h), Ok(Some("x".to_owned())));
        // The old unprefixed name is not ours any more: ignored, not counted.
        h.append(header::COOKIE, HeaderValue::from_static("duress_session=y"));
        assert_eq!(session_cookie(&h), Ok(Some("x".to_owned())));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-duress_session=z"),
        );
        assert_eq!(session_cookie(&h), Err(TwoSessionCookies));
        let one_header = HeaderMap::from_iter([(
            header::COOKIE,
            HeaderValue::from_static("__Host-duress_session=x; __Host-duress_session=x"),
        )]);
        assert_eq!(session_cookie(&one_header), Err(TwoSessionCookies));
    }

    #[test]
    fn the_cookie_has_the_host_prefix_attributes() {
        let v = set_cookie("abc", &ConsoleSettings::default());
        let v = v.to_str().unwrap();
        assert!(v.starts_with("__Host-duress_session=abc;"), "{v}");
        for attr in ["; Secure", "; Path=/", "; HttpOnly", "; SameSite=Strict"] {
            assert!(v.contains(attr), "{v}");
        }
        assert!(!v.to_ascii_lowercase().contains("domain="), "{v}");
    }
}
