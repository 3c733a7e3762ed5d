//! Integration API keys: `dak_` + base64url of 32 random bytes; only their SHA-256 is stored
//! (why a plain hash suffices: [`crate::store::apikeys`]). What `apikey create|list|revoke`
//! and the console's API keys page do, one implementation for both.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

use crate::store::{ApiKeyRecord, ApiKeyScope, NewApiKey, Store, StoreLocation};

/// Prefix of every key, so a leaked one is recognisable by secret scanners.
pub const KEY_PREFIX: &str = "dak_";
/// The longest name a key may have.
pub const MAX_NAME_CHARS: usize = 100;

/// A fresh key (256 bits from the OS generator).
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// SHA-256 of the key text, lower-case hex: the stored form and the lookup key.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Checks a key's name: at most [`MAX_NAME_CHARS`], no control characters.
pub fn check_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "a key name is limited to {MAX_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("a key name cannot contain control characters".into());
    }
    Ok(name.to_owned())
}

/// A new key with `scope` and `name`: what to store, and the key itself (shown once). `Err`:
/// the name is refused, or the OS has no randomness.
pub fn prepare(scope: ApiKeyScope, name: &str) -> Result<(NewApiKey, String), String> {
    let name = check_name(name)?;
    let key = generate().map_err(|e| format!("no randomness: {e}"))?;
    let new = NewApiKey {
        id: uuid::Uuid::now_v7().to_string(),
        key_hash: hash(&key),
        name,
        scope,
        created_at: duress_core::clock::truncate_to_millis(crate::clock::receiver_now()),
    };
    Ok((new, key))
}

/// What the store holds of `new` once created by `actor`.
pub fn record_of(new: &NewApiKey, actor: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: new.id.clone(),
        name: new.name.clone(),
        scope: new.scope,
        created_at: new.created_at,
        created_by: actor.to_owned(),
        revoked_at: None,
        revoked_by: None,
    }
}

/// Creates a key with `scope` and `name` in `store`, audited as `actor`. Returns its record
/// and the key itself (shown once; only its hash is stored).
pub async fn create(
    store: &dyn Store,
    scope: ApiKeyScope,
    name: &str,
    actor: &str,
) -> anyhow::Result<(ApiKeyRecord, String)> {
    let (new, key) = prepare(scope, name).map_err(|e| anyhow::anyhow!(e))?;
    let record = record_of(&new, actor);
    store.create_api_key(new, actor).await?;
    tracing::info!(id = record.id, scope = scope.as_str(), "API key created");
    Ok((record, key))
}

/// The actor the command line's key changes are audited as.
const CLI: &str = "cli";

/// `apikey create`: a key in the store at `at`.
pub async fn create_at(
    at: impl Into<StoreLocation>,
    scope: ApiKeyScope,
    name: &str,
) -> anyhow::Result<(ApiKeyRecord, String)> {
    crate::admin::with_store(at, async |store| create(store, scope, name, CLI).await).await
}

/// `apikey list`.
pub async fn list_at(at: impl Into<StoreLocation>) -> anyhow::Result<Vec<ApiKeyRecord>> {
    crate::admin::with_store(at, async |store| Ok(store.list_api_keys().await?)).await
}

/// `apikey revoke ID`: an error when there is no such key or it is revoked already.
pub async fn revoke_at(at: impl Into<StoreLocation>, id: &str) -> anyhow::Result<()> {
    let done = crate::admin::with_store(at, async |store| {
        Ok(store.revoke_api_key(id.trim(), CLI).await?)
    })
    .await?;
    anyhow::ensure!(done, "no API key {id:?} that is not revoked already");
    tracing::info!(id, "API key revoked");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_hashed() {
        let a = generate().unwrap();
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), 4 + 43);
        assert_ne!(a, generate().unwrap());
        assert_eq!(hash(&a).len(), 64);
        assert!(check_name("psim\u{7}").is_err());
        assert_eq!(check_name("  PSIM ").unwrap(), "PSIM");
    }
}
