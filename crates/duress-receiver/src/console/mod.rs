//! The security console: the officers' live board, served by the receiver itself (no CDN,
//! works offline).
//!
//! - [`routes`]: every route of the receiver (API and console) in one table, with who may
//!   use it; the router is built from it, and a test walks it.
//! - [`guard`]: the middleware in front of every protected route: session, role, CSRF,
//!   `Origin`/`Sec-Fetch-Site`; and the security headers every answer carries.
//! - [`sessions`]: server-side sessions (only a hash of the cookie is stored).
//! - [`accounts`]: users, argon2id passwords (CLI and admin page).
//! - [`auth`]: sign-in (rate-limited per address and per username) and sign-out.
//! - [`sign_in_steps`]: what a sign-in owes after its password (a TOTP code; a new password
//!   after an admin's reset) before any session exists.
//! - [`passwords`]: the user's password change and the admin's reset.
//! - [`totp`], [`totp_key`], [`totp_pages`]: the RFC 6238 second factor, the key its secrets
//!   are sealed with at rest, and its enrolment and removal pages.
//! - [`oidc`]: single sign-on with an OpenID Connect provider (`[oidc]`).
//! - [`live`]: the `console_events` log written in the same transaction as each change, and
//!   the pump that fans new rows out to every console after COMMIT.
//! - [`sse`]: `GET /events`, replay after `Last-Event-ID`, then live frames.
//! - [`escalation`]: marks incidents nobody claimed in time.
//! - [`audit`]: the append-only, hash-chained audit log and its verification.
//! - [`incident_view`]: what pages show of an incident (read side).
//! - [`incident_actions`]: claim, notes, level, 911, resolve, reopen (write side).
//! - [`bulk_resolve`]: several incidents resolved with one disposition in one request.
//! - [`board`], [`incident_page`], [`stations`], [`reports`], [`admin_pages`]: the pages.
//! - [`cameras`]: location → camera link templates.
//! - [`displays`], [`display_pages`]: duty displays (paired wall screens that view and hear
//!   but never act): the credential, and the pairing and admin pages.
//! - [`floor_plans`], [`floor_plan_marks`]: floor-plan images per building and floor with
//!   rooms placed on them: the admin pages and the image route; what the board and the
//!   incident page show of an incident's room.
//! - [`pages`]: templates' shared layout data, time formatting, error pages.
//! - [`error`]: the console's one error type ([`error::ConsoleError`]), used with `?`.
//!
//! No module here names the database: everything goes through the [`crate::store`] traits.
//! - [`static_files`]: CSS and JS embedded at compile time.

pub mod accounts;
pub mod admin_pages;
pub mod audit;
pub mod auth;
pub mod board;
pub mod bulk_resolve;
pub mod cameras;
pub mod cluster;
pub mod display_pages;
pub mod displays;
pub mod error;
pub mod escalation;
pub mod floor_plan_marks;
pub mod floor_plans;
pub mod guard;
pub mod incident_actions;
pub mod incident_page;
pub mod incident_view;
pub mod live;
pub mod oidc;
pub mod pages;
pub mod passwords;
pub mod phones;
pub mod reports;
pub mod response_charts;
pub mod routes;
pub mod sessions;
pub mod sign_in_steps;
pub mod sse;
pub mod static_files;
pub mod stations;
pub mod totp;
pub mod totp_key;
pub mod totp_pages;

use std::sync::Arc;

use axum::extract::FromRef;

use crate::api::AppState;
use crate::settings::ConsoleSettings;
use crate::store::Store;

/// What console handlers share.
#[derive(Debug)]
pub struct Console {
    pub store: Arc<dyn Store>,
    pub feed: live::LiveFeed,
    pub settings: ConsoleSettings,
    /// Heartbeat interval the stations page judges liveness by.
    pub heartbeat_interval_s: u64,
    pub login_limiter: Arc<auth::LoginLimiter>,
    /// Set when the receiver shuts down: live streams end so shutdown does not wait on them.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// The notifier's background work, watched: its trouble is the banner of every page.
    pub watchdog: Arc<crate::notify::watch::Watchdog>,
    /// The configuration file (`serve --config`), if any: its `vms` mapping is the source of
    /// camera links when it has `camera_url`s ([`cameras`]).
    pub config: Option<Arc<crate::config::ReceiverConfig>>,
    /// This receiver in the cluster (the Cluster view marks its own row).
    pub node: crate::cluster::NodeIdentity,
    /// A duty display was revoked (its id): its open live streams end at once.
    pub display_revoked: tokio::sync::broadcast::Sender<i64>,
    /// The key TOTP secrets are sealed with (`DATA_DIR/totp-secrets.key`, loaded at start);
    /// `None`: two-step sign-in cannot be set up or checked here.
    pub totp_key: Option<Arc<totp_key::TotpKey>>,
    /// Single sign-on, when the configuration file has `[oidc]`.
    pub sso: Option<Arc<oidc::Sso>>,
}

impl Console {
    pub fn new(
        store: Arc<dyn Store>,
        settings: ConsoleSettings,
        heartbeat_interval_s: u64,
        login_limiter: Arc<auth::LoginLimiter>,
    ) -> Self {
        Console {
            store,
            feed: live::LiveFeed::new(),
            settings,
            heartbeat_interval_s,
            login_limiter,
            closing: tokio::sync::watch::Sender::new(false),
            watchdog: Arc::new(crate::notify::watch::Watchdog::idle()),
            config: None,
            node: crate::cluster::NodeIdentity::new(None),
            display_revoked: tokio::sync::broadcast::Sender::new(16),
            totp_key: None,
            sso: None,
        }
    }
}

/// The state of the whole router: the API's and the console's.
#[derive(Debug, Clone)]
pub struct WebState {
    pub api: AppState,
    pub console: Arc<Console>,
}

impl FromRef<WebState> for AppState {
    fn from_ref(state: &WebState) -> Self {
        state.api.clone()
    }
}

impl FromRef<WebState> for Arc<Console> {
    fn from_ref(state: &WebState) -> Self {
        state.console.clone()
    }
}

/// The signed-in user of a request, put in its extensions by [`guard`].
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub username: String,
    pub role: crate::store::Role,
    /// This session's CSRF token, for the forms the page renders.
    pub csrf: String,
    /// The trouble banner's lines when the request came in (`notify::watch`; empty: none).
    pub trouble: Vec<String>,
    /// A paired duty display (its id), not an officer: may only view ([`displays`]).
    pub display: Option<i64>,
}

impl CurrentUser {
    pub fn is_admin(&self) -> bool {
        self.role == crate::store::Role::Admin
    }
}
