//! Integration API keys (issue 14, item 4): what the store keeps of a key an admin created for a
//! PSIM or another integration, and the trait both backends implement.
//!
//! Only the key's SHA-256 is stored. Why a plain hash and not a password hash (argon2, as for
//! console passwords): the key is 32 bytes from the operating system's CSPRNG, so there is
//! nothing to guess and no dictionary to slow down; a fast hash lets every API request look its
//! key up by an indexed equality, with no per-request argon2 cost a caller could turn into a
//! denial of service.

use time::OffsetDateTime;

use super::StoreFuture;

/// What an API key may do: `read` lists and reads incidents and stations; `read-write` also
/// claims, notes and resolves incidents. (`clap::ValueEnum`: `apikey create --scope` parses
/// this very type.)
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
pub enum ApiKeyScope {
    #[serde(rename = "read")]
    #[value(name = "read")]
    Read,
    #[serde(rename = "read-write")]
    #[value(name = "read-write")]
    ReadWrite,
}

impl ApiKeyScope {
    pub const fn as_str(self) -> &'static str {
        match self {
            ApiKeyScope::Read => "read",
            ApiKeyScope::ReadWrite => "read-write",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(ApiKeyScope::Read),
            "read-write" => Some(ApiKeyScope::ReadWrite),
            _ => None,
        }
    }

    /// Whether this scope may change incidents.
    pub const fn can_write(self) -> bool {
        matches!(self, ApiKeyScope::ReadWrite)
    }
}

/// A key to store: its hash only (the key itself is shown once to the admin).
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// The key's public id (what lists and audit entries show).
    pub id: String,
    /// SHA-256 of the key, lower-case hex.
    pub key_hash: String,
    pub name: String,
    pub scope: ApiKeyScope,
    pub created_at: OffsetDateTime,
}

impl NewApiKey {
    /// What the audit log records of a new key (never the key or its hash).
    pub fn audit_detail(&self) -> String {
        format!("name {:?}, scope {}", self.name, self.scope.as_str())
    }
}

/// A stored key as the admin page and `apikey list` show it (never the key; the hash stays in
/// the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub scope: ApiKeyScope,
    pub created_at: OffsetDateTime,
    pub created_by: String,
    pub revoked_at: Option<OffsetDateTime>,
    pub revoked_by: Option<String>,
}

impl ApiKeyRecord {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// The actor an API request with this key acts as, in timelines and the audit log.
    pub fn actor(&self) -> String {
        format!("apikey:{}", self.id)
    }
}

/// The audit actions of API keys.
pub const APIKEY_CREATE_ACTION: &str = "apikey.create";
pub const APIKEY_REVOKE_ACTION: &str = "apikey.revoke";

/// Integration API keys.
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new key (its hash), audited (`apikey.create`) as done by `actor`. `Refused`
    /// when the id or the hash is taken.
    fn create_api_key<'a>(&'a self, key: NewApiKey, actor: &'a str) -> StoreFuture<'a, ()>;
    /// Every key, revoked ones included, oldest first.
    fn list_api_keys(&self) -> StoreFuture<'_, Vec<ApiKeyRecord>>;
    /// The key with this hash, revoked or not (the caller refuses a revoked one).
    fn api_key_by_hash<'a>(&'a self, key_hash: &'a str) -> StoreFuture<'a, Option<ApiKeyRecord>>;
    /// Revokes the key with this id for good, audited (`apikey.revoke`); `false` when there is
    /// no such key or it was already revoked (nothing written).
    fn revoke_api_key<'a>(&'a self, id: &'a str, actor: &'a str) -> StoreFuture<'a, bool>;
}
