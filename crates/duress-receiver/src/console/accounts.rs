//! Console accounts: officers handle incidents; admins also manage stations, tokens, users and
//! camera mappings. Passwords are argon2id (PHC strings); hashing runs on the blocking pool.

use crate::api::receiver_now;
use crate::store::{NewUser, Store};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};

pub use crate::store::{Role, UserRecord};

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

/// The password rule, as shown to whoever chooses one.
pub const PASSWORD_RULE: &str = "A password needs at least 12 characters.";

/// Checks a password someone chose (account creation, change, the new password after a
/// reset): at least 12 characters.
pub fn check_password(password: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        password.chars().count() >= 12,
        "a password needs at least 12 characters"
    );
    Ok(())
}

/// Adds a user (audited as done by `actor`). Fails when the name is taken.
pub async fn add(
    store: &dyn Store,
    username: &str,
    role: Role,
    password: &str,
    actor: &str,
) -> anyhow::Result<()> {
    check_username(username)?;
    check_password(password)?;
    let password = password.to_owned();
    let password_hash = tokio::task::spawn_blocking(move || hash_password(&password)).await??;
    let user = NewUser {
        username: username.to_owned(),
        role,
        password_hash,
        created_at: receiver_now(),
    };
    store.add_user(user, actor).await?;
    Ok(())
}

/// Disables a user and ends their sessions (audited).
pub async fn disable(store: &dyn Store, username: &str, actor: &str) -> anyhow::Result<()> {
    Ok(store.disable_user(username, actor).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_refuse_bidi_controls_and_other_non_ascii() {
        assert!(check_username("olga.p@campus").is_ok());
        for bad in [
            "adm\u{202E}nimda",
            "\u{2066}olga",
            "olga\u{200F}",
            "ol\u{061C}ga",
            "",
        ] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
    }
}
