//! Console accounts: officers handle incidents; admins also manage stations, tokens, users and
//! camera mappings. Passwords are argon2id (PHC strings); hashing runs on the blocking pool.

use std::path::Path;

use anyhow::Context as _;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use serde::Serialize;
use sqlx::{Row as _, SqlitePool};

use crate::api::receiver_now;
use crate::store::format_ts;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Officer,
    Admin,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "officer" => Some(Role::Officer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UserRecord {
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: String,
}

/// argon2id with the crate's defaults (19 MiB, 2 passes: OWASP's recommendation).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?
        .to_string())
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A password for a new account: 20 characters from a 64-symbol alphabet (120 bits).
pub fn generate_password() -> String {
    super::sessions::random_secret().chars().take(20).collect()
}

/// Checks a username: 1–64 characters, letters, digits, `.`, `_`, `-`, `@`.
pub fn check_username(username: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !username.is_empty()
            && username.len() <= 64
            && username
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')),
        "a username is 1-64 characters: letters, digits, . _ - @"
    );
    Ok(())
}

/// Adds a user (audited as done by `actor`). Fails when the name is taken.
pub async fn add(
    pool: &SqlitePool,
    username: &str,
    role: Role,
    password: &str,
    actor: &str,
) -> anyhow::Result<()> {
    check_username(username)?;
    anyhow::ensure!(
        password.chars().count() >= 12,
        "a password needs at least 12 characters"
    );
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password)).await??;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let exists: Option<String> =
        sqlx::query_scalar("SELECT username FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?;
    anyhow::ensure!(exists.is_none(), "user {username:?} already exists");
    let now = receiver_now();
    sqlx::query("INSERT INTO users (username, password_hash, role, disabled, created_at) VALUES (?, ?, ?, 0, ?)")
        .bind(username)
        .bind(&hash)
        .bind(role.as_str())
        .bind(format_ts(now))
        .execute(&mut *tx)
        .await?;
    super::audit::append(&mut tx, now, actor, "user.add", username, role.as_str()).await?;
    tx.commit().await?;
    Ok(())
}

/// Disables a user and ends their sessions (audited).
pub async fn disable(pool: &SqlitePool, username: &str, actor: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let done = sqlx::query("UPDATE users SET disabled = 1 WHERE username = ?")
        .bind(username)
        .execute(&mut *tx)
        .await?;
    anyhow::ensure!(done.rows_affected() == 1, "no user {username:?}");
    super::sessions::delete_for_user(&mut tx, username).await?;
    super::audit::append(&mut tx, receiver_now(), actor, "user.disable", username, "").await?;
    tx.commit().await?;
    Ok(())
}

pub async fn list(pool: &SqlitePool) -> anyhow::Result<Vec<UserRecord>> {
    let rows =
        sqlx::query("SELECT username, role, disabled, created_at FROM users ORDER BY username")
            .fetch_all(pool)
            .await?;
    rows.iter()
        .map(|r| {
            Ok(UserRecord {
                username: r.try_get("username")?,
                role: Role::parse(&r.try_get::<String, _>("role")?).context("stored role")?,
                disabled: r.try_get("disabled")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

/// For the command line: opens the store in `data_dir`, runs `f`, closes it.
pub async fn with_pool<T>(
    data_dir: &Path,
    f: impl AsyncFnOnce(&SqlitePool) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let store = crate::store::SqliteStore::open(data_dir)
        .await
        .with_context(|| format!("opening the receiver store in {}", data_dir.display()))?;
    let result = f(store.pool()).await;
    crate::store::Store::close(&store).await;
    result
}
