//! Server-side sessions. The cookie holds 32 random bytes (base64url); the database holds only
//! their SHA-256, so reading the database does not let anyone sign in. A session ends when it
//! is idle longer than `session_idle`, when it is older than `session_lifetime`, when its user
//! is disabled, or at sign-out (the row is deleted).

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use sqlx::{Row as _, SqlitePool};
use time::OffsetDateTime;

use super::accounts::Role;
use crate::api::receiver_now;
use crate::settings::ConsoleSettings;
use crate::store::{format_ts, parse_ts};

pub const COOKIE_NAME: &str = "duress_session";
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

/// Creates a session for `username`; returns the cookie value (shown to nobody else).
pub async fn create(
    conn: &mut sqlx::SqliteConnection,
    username: &str,
    settings: &ConsoleSettings,
) -> Result<String, sqlx::Error> {
    let id = random_secret();
    let now = receiver_now();
    let expires = now + settings.session_lifetime;
    sqlx::query(
        "INSERT INTO sessions (id_hash, username, csrf_token, created_at, last_seen_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(hash_id(&id))
    .bind(username)
    .bind(random_secret())
    .bind(format_ts(now))
    .bind(format_ts(now))
    .bind(format_ts(expires))
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// The session named by the request's cookie, if it is still valid.
pub async fn load(
    pool: &SqlitePool,
    headers: &HeaderMap,
    settings: &ConsoleSettings,
) -> Result<Option<Session>, sqlx::Error> {
    let Some(id) = cookie_value(headers, COOKIE_NAME) else {
        return Ok(None);
    };
    let id_hash = hash_id(&id);
    let row = sqlx::query(
        "SELECT s.username, s.csrf_token, s.last_seen_at, s.expires_at, u.role, u.disabled
         FROM sessions s JOIN users u ON u.username = s.username WHERE s.id_hash = ?",
    )
    .bind(&id_hash)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let now = receiver_now();
    let last_seen = parse_ts(&row.try_get::<String, _>("last_seen_at")?).unwrap_or(now);
    let expires = parse_ts(&row.try_get::<String, _>("expires_at")?).unwrap_or(now);
    let disabled: bool = row.try_get("disabled")?;
    let Some(role) = Role::parse(&row.try_get::<String, _>("role")?) else {
        return Ok(None);
    };
    if disabled || now >= expires || now - last_seen >= settings.session_idle {
        delete(pool, &id_hash).await?;
        return Ok(None);
    }
    if now - last_seen >= TOUCH_EVERY {
        sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE id_hash = ?")
            .bind(format_ts(now))
            .bind(&id_hash)
            .execute(pool)
            .await?;
    }
    Ok(Some(Session {
        id_hash,
        username: row.try_get("username")?,
        role,
        csrf: row.try_get("csrf_token")?,
    }))
}

pub async fn delete(pool: &SqlitePool, id_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
        .bind(id_hash)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes every session of `username` (the account was disabled).
pub async fn delete_for_user(
    conn: &mut sqlx::SqliteConnection,
    username: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE username = ?")
        .bind(username)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The `Set-Cookie` value that installs a session: HttpOnly (no script reads it), Secure
/// (never sent in clear), SameSite=Strict (never sent on a cross-site request).
pub fn set_cookie(id: &str, settings: &ConsoleSettings) -> HeaderValue {
    let value = format!(
        "{COOKIE_NAME}={id}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        settings.session_lifetime.as_secs()
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "duress_session=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0",
    )
}

/// The value of cookie `name`, from any `Cookie` header.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// `now` in the session clock, for callers that need it (tests).
pub fn now() -> OffsetDateTime {
    receiver_now()
}
