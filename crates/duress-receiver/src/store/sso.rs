//! Console single sign-on (issue 17, `console::oidc`): what the store keeps of a pending
//! OpenID Connect sign-in, and of which account belongs to which provider subject.
//!
//! The pending flow lives in the store, not in memory, so that any node of a cluster can take
//! the provider's callback. It is keyed by the SHA-256 of its `state` and bound to the browser
//! that started it by the SHA-256 of a short-lived cookie; taking it deletes it (single use).
//!
//! Accounts are local (a password; `user add`) or SSO (`auth = 'oidc'`, bound to the
//! provider's `iss` + `sub` at their first sign-in). An SSO sign-in never lands in a local
//! account of the same name, and an SSO account never signs in with a password.

use time::OffsetDateTime;

use super::{NewSession, Role, StoreFuture};

/// The audit action of an SSO sign-in refused (no group, a local account of the same name, a
/// disabled account, not provisioned, a failed check of the provider's answer).
pub const SSO_REFUSED_ACTION: &str = "login.sso-refused";

/// A pending sign-in to store.
#[derive(Clone)]
pub struct NewOidcFlow {
    /// SHA-256 (hex) of the `state` sent to the provider.
    pub state_hash: String,
    /// SHA-256 (hex) of the browser-binding cookie's value.
    pub browser_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for NewOidcFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewOidcFlow")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A pending sign-in, taken (deleted) from the store.
#[derive(Clone, PartialEq, Eq)]
pub struct OidcFlow {
    pub browser_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for OidcFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcFlow")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A verified SSO sign-in: who the provider says this is, the role its claims map to, and the
/// session to create if the account may sign in.
#[derive(Clone)]
pub struct SsoSignIn {
    /// The account name (from the configured username claim).
    pub username: String,
    /// The ID token's `iss` and `sub`: the account's identity at the provider.
    pub issuer: String,
    pub subject: String,
    pub role: Role,
    /// Create the account when neither the subject nor the name is known.
    pub provision: bool,
    /// The password hash a provisioned account is stored with: a hash of a random password
    /// nobody knows (the account is refused at password sign-in anyway; this keeps its cost
    /// the same as any other account's).
    pub placeholder_hash: String,
    pub session: NewSession,
    /// The sign-in's audit detail (`ip:ADDR method=oidc`).
    pub detail: String,
}

impl std::fmt::Debug for SsoSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoSignIn")
            .field("username", &self.username)
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("role", &self.role)
            .field("provision", &self.provision)
            .finish_non_exhaustive()
    }
}

/// What [`SsoStore::sso_sign_in`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoOutcome {
    /// Signed in to `username` (the session was created and `login.success` audited);
    /// `created`: provisioned just now; `role_changed`: the role the account had before.
    SignedIn {
        username: String,
        created: bool,
        role_changed: Option<Role>,
    },
    /// The account (bound to this subject, or pre-created under this name) is disabled.
    Disabled { username: String },
    /// A local (password) account has this name: never taken over by SSO.
    LocalAccount { username: String },
    /// An SSO account of this name belongs to another provider subject.
    OtherSubject { username: String },
    /// No such account, and `provision` is off.
    NotProvisioned { username: String },
}

/// Pending OpenID Connect sign-ins and SSO accounts, both backends.
pub trait SsoStore: Send + Sync {
    /// Stores a pending sign-in, after deleting expired ones (nothing audited: nobody has
    /// signed in yet).
    fn put_oidc_flow(&self, flow: NewOidcFlow) -> StoreFuture<'_, ()>;
    /// Takes (deletes) the pending sign-in with this state hash: `None` when there is none, or
    /// it expired before `now` (deleted too). A second take of the same state finds nothing.
    fn take_oidc_flow<'a>(
        &'a self,
        state_hash: &'a str,
        now: OffsetDateTime,
    ) -> StoreFuture<'a, Option<OidcFlow>>;
    /// Signs in with a verified SSO identity, in one transaction: the account bound to
    /// `issuer` + `subject` (its role updated from the claims, audited `user.role`), else an
    /// SSO account an admin created under `username` (bound now, audited `user.sso-bind`), else
    /// a new account when `provision` (audited `user.add` by `oidc`). Refusals create nothing
    /// and audit nothing here (the caller audits them with its own detail).
    fn sso_sign_in(&self, sign_in: SsoSignIn) -> StoreFuture<'_, SsoOutcome>;
    /// An admin creates an SSO account before its first sign-in (for `provision = false`),
    /// audited `user.add`. `Refused` when the name is taken.
    fn add_sso_user<'a>(
        &'a self,
        username: &'a str,
        role: Role,
        placeholder_hash: &'a str,
        created_at: OffsetDateTime,
        actor: &'a str,
    ) -> StoreFuture<'a, ()>;
    /// Whether `username` is an SSO account (`None`: no such account).
    fn is_sso_account<'a>(&'a self, username: &'a str) -> StoreFuture<'a, Option<bool>>;
}
