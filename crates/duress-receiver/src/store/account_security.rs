//! Local accounts' security (issue 17): password change and admin reset, the TOTP second factor,
//! and the sign-in steps between a right password and a session. The trait both backends
//! implement, and its types.
//!
//! - A **reset** stores a new password hash (of a temporary password shown once to the admin)
//!   and marks the account: at its next sign-in the user must choose a new password before any
//!   session exists. A change clears the mark.
//! - A **TOTP secret** is stored sealed (AES-256-GCM under a key file outside the database,
//!   `console::totp_key`); the store never sees it in clear. A row is pending until the user
//!   confirms a code, then enabled; `last_step` (the RFC 6238 time step of the last accepted
//!   code) refuses a replayed code, and is moved only forwards, atomically, so two receivers of
//!   one cluster cannot both accept the same code.
//! - A **sign-in step** is the part of a sign-in after its password: the cookie's SHA-256, whose
//!   account, and what is still owed (a code, a new password). It expires after five minutes.

use time::OffsetDateTime;

use super::StoreFuture;

/// Audit actions of this area (the names `docs/console.md` lists).
pub const PASSWORD_CHANGE_ACTION: &str = "password.change";
pub const PASSWORD_RESET_ACTION: &str = "password.reset";
pub const TOTP_ENABLE_ACTION: &str = "totp.enable";
/// The user switched their own second factor off (with a current code).
pub const TOTP_DISABLE_ACTION: &str = "totp.disable";
/// An admin removed a user's second factor (a lost phone).
pub const TOTP_REMOVE_ACTION: &str = "totp.remove";

/// A user's TOTP second factor as stored.
#[derive(Clone)]
pub struct TotpRecord {
    /// nonce ‖ AES-256-GCM ciphertext of the 20-byte secret (`console::totp_key`).
    pub sealed_secret: Vec<u8>,
    /// Confirmed with a code: sign-in asks for one. A pending row is an enrolment in progress.
    pub enabled: bool,
    /// The time step of the last code accepted (`None` before the first).
    pub last_step: Option<i64>,
}

impl std::fmt::Debug for TotpRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpRecord")
            .field("enabled", &self.enabled)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// What a sign-in still owes after its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInStage {
    /// The 6-digit code of the account's authenticator.
    Code,
    /// A new password (the account was reset by an admin).
    NewPassword,
}

impl SignInStage {
    pub const fn as_str(self) -> &'static str {
        match self {
            SignInStage::Code => "code",
            SignInStage::NewPassword => "new-password",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "code" => Some(SignInStage::Code),
            "new-password" => Some(SignInStage::NewPassword),
            _ => None,
        }
    }
}

/// A sign-in step to store: only the SHA-256 of its cookie.
#[derive(Clone)]
pub struct NewSignInStep {
    pub id_hash: String,
    pub username: String,
    pub stage: SignInStage,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for NewSignInStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSignInStep")
            .field("username", &self.username)
            .field("stage", &self.stage)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A stored sign-in step.
#[derive(Debug, Clone)]
pub struct SignInStep {
    pub username: String,
    /// `None` when the stored stage is unknown (treated as no step).
    pub stage: Option<SignInStage>,
    /// Wrong answers given to this step so far.
    pub failures: u32,
    pub expires_at: OffsetDateTime,
}

/// Password change and reset, TOTP, sign-in steps.
pub trait AccountSecurityStore: Send + Sync {
    /// When an admin reset this account's password, if the user has not chosen a new one since
    /// (`None`: no reset pending). The temporary password is good for
    /// `console::passwords::TEMPORARY_PASSWORD_LIFETIME` from then.
    fn password_reset_at<'a>(
        &'a self,
        username: &'a str,
    ) -> StoreFuture<'a, Option<OffsetDateTime>>;
    /// The user's own change: stores the new hash, clears the reset mark, ends every session of
    /// the account except `keep_session` (an id hash; `None`: all) and every sign-in step,
    /// audited as `password.change` by the user, in one transaction. Returns the sessions
    /// ended; `Refused` when there is no such user.
    fn change_password<'a>(
        &'a self,
        username: &'a str,
        password_hash: String,
        keep_session: Option<&'a str>,
    ) -> StoreFuture<'a, u64>;
    /// An admin's reset: stores the hash of a temporary password, marks the account as having
    /// to choose a new one, ends all its sessions and sign-in steps, audited as
    /// `password.reset` by `actor` with the user as subject. Returns the sessions ended;
    /// `Refused` when there is no such user.
    fn reset_password<'a>(
        &'a self,
        username: &'a str,
        password_hash: String,
        actor: &'a str,
    ) -> StoreFuture<'a, u64>;

    /// The user's TOTP row (pending or enabled), if any.
    fn totp<'a>(&'a self, username: &'a str) -> StoreFuture<'a, Option<TotpRecord>>;
    /// Starts (or restarts) an enrolment: a pending row with this sealed secret, replacing a
    /// pending one. `Refused` when TOTP is already enabled or there is no such user.
    fn begin_totp<'a>(
        &'a self,
        username: &'a str,
        sealed_secret: Vec<u8>,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()>;
    /// Confirms the pending enrolment whose code of time step `step` the user typed: enabled,
    /// that step used, audited as `totp.enable`. `false` when there was no pending row.
    fn enable_totp<'a>(&'a self, username: &'a str, step: i64) -> StoreFuture<'a, bool>;
    /// Uses the enabled factor's time step `step`: `true` only when it is later than the last
    /// one used (then it becomes the last one), atomically: a replayed code gets `false`.
    fn use_totp_step<'a>(&'a self, username: &'a str, step: i64) -> StoreFuture<'a, bool>;
    /// Removes the user's TOTP row, audited as `totp.disable` when `actor` is the user, else
    /// `totp.remove`. `false` when there was none.
    fn remove_totp<'a>(&'a self, username: &'a str, actor: &'a str) -> StoreFuture<'a, bool>;
    /// The users whose TOTP is enabled, by name.
    fn totp_users(&self) -> StoreFuture<'_, Vec<String>>;

    /// Stores a sign-in step (and deletes expired ones).
    fn create_sign_in_step(&self, step: NewSignInStep) -> StoreFuture<'_, ()>;
    /// The step with this id hash, if it was not ended (expiry is the caller's to check).
    fn sign_in_step<'a>(&'a self, id_hash: &'a str) -> StoreFuture<'a, Option<SignInStep>>;
    /// Counts a wrong answer to the step; returns its failures so far (0: no such step).
    fn fail_sign_in_step<'a>(&'a self, id_hash: &'a str) -> StoreFuture<'a, u32>;
    /// Moves the step on to `stage` (its failures start again from 0); `false` if it is gone.
    fn advance_sign_in_step<'a>(
        &'a self,
        id_hash: &'a str,
        stage: SignInStage,
    ) -> StoreFuture<'a, bool>;
    /// Deletes the step (done, expired or given up); `true` when this call deleted it, so of
    /// two requests finishing one step at once only one goes on to a session.
    fn end_sign_in_step<'a>(&'a self, id_hash: &'a str) -> StoreFuture<'a, bool>;
}
