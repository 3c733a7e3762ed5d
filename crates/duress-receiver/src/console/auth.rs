//! Sign-in and sign-out.
//!
//! Sign-in attempts are limited per client address (IPv6 per /64) and per username, in memory,
//! and every attempt is counted **before** its password is checked (a reservation, refunded on
//! success), so a burst of parallel guesses gets no more checks than the limit. Past the
//! address limit: 429 until the window ends (the address is the guesser's own). Past the
//! username limit there is no hard lockout of the right password: each further attempt for
//! that username waits a progressively longer delay (1 s, 2 s, 4 s … at most the window), and
//! an address where that user signed in successfully in the last [`USUAL_FOR`] is not held back
//! by the username limit at all, so others' failures cannot lock an officer out of their own
//! console. Argon2 verifications run at most [`LoginLimiter::verify_bound`] at a time (the
//! number of cores): beyond it the answer is an immediate 429, refunded. A username outside
//! the account syntax (`accounts::check_username`) is refused before any of this work.
//! Reaching a limit is audited once per window as `login.lockout`, with the count of attempts
//! refused since, instead of one row per refusal. An unknown username costs the same argon2
//! work as a known one, so timing does not reveal accounts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::ConsoleResult;
use super::pages::render_status;
use super::{Console, CurrentUser, accounts, guard, sessions};
use crate::settings::ConsoleSettings;
use askama::Template;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

/// A hash of a random password nobody knows, verified against for unknown users so that they
/// cost the same argon2 work as known ones (and the stored hash of an SSO account, `oidc`).
pub(super) static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    accounts::hash_password(&sessions::random_secret()).unwrap_or_default()
});

/// How long an address where a user signed in stays that user's usual address.
pub const USUAL_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Entries beyond this trigger a sweep of expired ones, bounding memory under a scan.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug)]
struct Window {
    started: Instant,
    /// Attempts reserved in this window (checked or being checked; refunded on success).
    attempts: u32,
    last_attempt: Instant,
    /// Attempts refused since the last audit entry for this key.
    refused: u32,
    /// The limit was reached and audited in this window.
    audited: bool,
}

/// Why a sign-in was not checked: a limit of this address or username; retry after this
/// long. `audit`: the summary to audit now (only the first refusal of a window has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Limited {
        retry_after: Duration,
        audit: Option<String>,
    },
}

impl Refusal {
    /// How long to wait, and the summary to audit now (only the window's first refusal has
    /// one): for the other forms that count against these limits (`passwords`,
    /// `sign_in_steps`, `totp_pages`) without naming this module.
    pub fn into_parts(self) -> (Duration, Option<String>) {
        match self {
            Refusal::Limited { retry_after, audit } => (retry_after, audit),
        }
    }
}

/// An attempt counted before its check; [`LoginLimiter::succeeded`] refunds it.
#[derive(Debug)]
pub struct Reservation {
    ip_key: String,
    user_key: String,
}

/// Sign-in counters (see the module documentation).
#[derive(Debug)]
pub struct LoginLimiter {
    per_address: u32,
    per_username: u32,
    window: Duration,
    counts: Mutex<HashMap<String, Window>>,
    /// (username, address key) → last successful sign-in.
    usual: Mutex<HashMap<(String, String), Instant>>,
    verify_slots: tokio::sync::Semaphore,
    verify_bound: usize,
    verifying: AtomicUsize,
    /// The most argon2 verifications ever running at once.
    pub verify_peak: AtomicUsize,
    /// Passwords checked (argon2 verifications run).
    pub checked: AtomicU64,
    /// Attempts answered 429 because every argon2 slot was busy.
    pub busy_refusals: AtomicU64,
}

fn address_key(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(seg.into())
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    format!("ip:{ip}")
}

impl LoginLimiter {
    pub fn new(settings: &ConsoleSettings) -> Self {
        let verify_bound = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(1);
        LoginLimiter {
            per_address: settings.login_failures_per_address,
            per_username: settings.login_failures_per_username,
            window: settings.login_failure_window,
            counts: Mutex::new(HashMap::new()),
            usual: Mutex::new(HashMap::new()),
            verify_slots: tokio::sync::Semaphore::new(verify_bound),
            verify_bound,
            verifying: AtomicUsize::new(0),
            verify_peak: AtomicUsize::new(0),
            checked: AtomicU64::new(0),
            busy_refusals: AtomicU64::new(0),
        }
    }

    /// Argon2 verifications allowed at once.
    pub fn verify_bound(&self) -> usize {
        self.verify_bound
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_usual(&self, username: &str, ip_key: &str, now: Instant) -> bool {
        let usual = self
            .usual
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        usual
            .get(&(username.to_owned(), ip_key.to_owned()))
            .is_some_and(|at| now.duration_since(*at) < USUAL_FOR)
    }

    /// Progressive delay once the username limit is used up: 1 s, 2 s, 4 s … ≤ the window.
    fn delay(&self, over: u32) -> Duration {
        Duration::from_secs(1u64 << over.min(20)).min(self.window)
    }

    /// Counts an attempt by `ip` for `username`, or says why it may not be checked now.
    pub fn reserve(&self, ip: IpAddr, username: &str) -> Result<Reservation, Refusal> {
        let now = Instant::now();
        let ip_key = address_key(ip);
        let user = username.to_lowercase();
        let user_key = format!("user:{user}");
        let usual = self.is_usual(&user, &ip_key, now);
        let window = self.window;
        let mut counts = self.lock();
        if counts.len() > SWEEP_ABOVE {
            counts.retain(|_, w| now.duration_since(w.started) < window);
        }
        for key in [&ip_key, &user_key] {
            let w = counts.entry(key.clone()).or_insert(Window {
                started: now,
                attempts: 0,
                last_attempt: now,
                refused: 0,
                audited: false,
            });
            if now.duration_since(w.started) >= window {
                *w = Window {
                    started: now,
                    attempts: 0,
                    last_attempt: now,
                    refused: 0,
                    audited: false,
                };
            }
        }
        let refuse = |w: &mut Window, retry_after: Duration, what: &str| {
            w.refused = w.refused.saturating_add(1);
            let audit = (!w.audited).then(|| {
                w.audited = true;
                format!(
                    "{what}: {} sign-ins within {} s; further attempts held back",
                    w.attempts,
                    window.as_secs()
                )
            });
            Refusal::Limited { retry_after, audit }
        };
        let per_address = self.per_address;
        let per_username = self.per_username;
        if let Some(w) = counts.get_mut(&ip_key)
            && w.attempts >= per_address
        {
            let retry_after = window.saturating_sub(now.duration_since(w.started));
            return Err(refuse(w, retry_after, "address limit"));
        }
        if !usual
            && let Some(w) = counts.get_mut(&user_key)
            && w.attempts >= per_username
        {
            let wait = self.delay(w.attempts - per_username);
            let since = now.duration_since(w.last_attempt);
            if since < wait {
                return Err(refuse(w, wait - since, "username limit"));
            }
        }
        for key in [&ip_key, &user_key] {
            if let Some(w) = counts.get_mut(key) {
                w.attempts = w.attempts.saturating_add(1);
                w.last_attempt = now;
            }
        }
        Ok(Reservation { ip_key, user_key })
    }

    /// The summary of refusals for `username` since its last audit entry, taken (reset).
    fn take_refused(&self, key: &str) -> u32 {
        let mut counts = self.lock();
        counts
            .get_mut(key)
            .map(|w| std::mem::take(&mut w.refused))
            .unwrap_or(0)
    }

    /// The password was right: the attempt is refunded and this address becomes usual.
    pub fn succeeded(&self, reservation: Reservation, username: &str) {
        {
            let mut counts = self.lock();
            for key in [&reservation.ip_key, &reservation.user_key] {
                if let Some(w) = counts.get_mut(key) {
                    w.attempts = w.attempts.saturating_sub(1);
                }
            }
        }
        let mut usual = self
            .usual
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if usual.len() > SWEEP_ABOVE {
            let now = Instant::now();
            usual.retain(|_, at| now.duration_since(*at) < USUAL_FOR);
        }
        usual.insert(
            (username.to_lowercase(), reservation.ip_key),
            Instant::now(),
        );
    }

    /// Not checked after all (every argon2 slot busy), or right but another step follows: the
    /// attempt is refunded.
    pub fn refund(&self, reservation: Reservation) {
        let mut counts = self.lock();
        for key in [&reservation.ip_key, &reservation.user_key] {
            if let Some(w) = counts.get_mut(key) {
                w.attempts = w.attempts.saturating_sub(1);
            }
        }
    }

    /// Runs `check` (an argon2 verification) if a slot is free, else `None` at once.
    pub async fn verify(&self, check: impl FnOnce() -> bool + Send + 'static) -> Option<bool> {
        let Ok(_slot) = self.verify_slots.try_acquire() else {
            self.busy_refusals.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let now = self.verifying.fetch_add(1, Ordering::SeqCst) + 1;
        self.verify_peak.fetch_max(now, Ordering::SeqCst);
        self.checked.fetch_add(1, Ordering::Relaxed);
        let ok = tokio::task::spawn_blocking(check).await.unwrap_or(false);
        self.verifying.fetch_sub(1, Ordering::SeqCst);
        Some(ok)
    }
}

#[derive(Debug, Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
    username: String,
    /// `[oidc]` is set: the page offers "Sign in with single sign-on".
    sso: bool,
}

pub async fn login_page(State(console): State<Arc<Console>>) -> Response {
    render_status(
        StatusCode::OK,
        &LoginPage {
            error: None,
            username: String::new(),
            sso: console.sso.is_some(),
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// `POST /login`. There is no session yet, so no CSRF token: the request must come from our
/// own origin (`Origin` / `Sec-Fetch-Site`), and the cookie is SameSite=Strict anyway.
pub async fn login(
    State(console): State<Arc<Console>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> ConsoleResult {
    if let Err(refusal) = guard::check_same_origin(&headers, &uri) {
        return Ok(*refusal);
    }
    let ip = client.ip();
    let username = form.username.trim().to_owned();
    let failed = |status: StatusCode, message: &str| {
        render_status(
            status,
            &LoginPage {
                error: Some(message.to_owned()),
                username: username.chars().take(64).collect(),
                sso: console.sso.is_some(),
            },
        )
    };
    // Outside the account syntax no account can match: refused before any work (no lookup,
    // no argon2, no counting, nothing audited).
    if accounts::check_username(&username).is_err() {
        return Ok(failed(
            StatusCode::UNAUTHORIZED,
            "Wrong username or password.",
        ));
    }
    let limiter = &console.login_limiter;
    let too_many = |retry_after: Duration| {
        let mut r = failed(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts. Wait a little and try again.",
        );
        let secs = retry_after.as_secs().max(1).to_string();
        if let Ok(v) = axum::http::HeaderValue::from_str(&secs) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    };
    let reservation = match limiter.reserve(ip, &username) {
        Ok(reservation) => reservation,
        Err(Refusal::Limited { retry_after, audit }) => {
            if let Some(detail) = audit {
                tracing::warn!(client = %ip, user = %username, "sign-in limit reached: further attempts held back");
                console
                    .store
                    .record_login_lockout(&username, &format!("ip:{ip}"), &detail)
                    .await?;
            }
            return Ok(too_many(retry_after));
        }
    };
    let credentials = console.store.credentials(&username).await?;
    let (phc, disabled) = match credentials {
        Some(c) => (c.password_hash, c.disabled),
        None => (DUMMY_HASH.clone(), true),
    };
    let password = form.password;
    let Some(verified) = limiter
        .verify(move || accounts::verify_password(&password, &phc))
        .await
    else {
        limiter.refund(reservation);
        return Ok(too_many(Duration::from_secs(1)));
    };
    let ok = verified && !disabled;

    if !ok {
        let actor = format!("ip:{ip}");
        console
            .store
            .record_login_failure(&username, &actor)
            .await?;
        // The attempts refused since the last entry, summarised in one row.
        let refused = limiter.take_refused(&reservation.user_key);
        if refused > 0 {
            let detail = format!("{refused} attempts held back since the last entry");
            console
                .store
                .record_login_lockout(&username, &actor, &detail)
                .await?;
        }
        return Ok(failed(
            StatusCode::UNAUTHORIZED,
            "Wrong username or password.",
        ));
    }
    // A temporary password (an admin reset) is good for a limited time only: one handed out
    // and forgotten must not stay a way in.
    if super::passwords::temporary_password_expired(console.store.as_ref(), &username).await? {
        limiter.refund(reservation);
        console
            .store
            .record_audit(
                &format!("ip:{ip}"),
                "login.failure",
                &username,
                "temporary password expired",
            )
            .await?;
        return Ok(failed(
            StatusCode::UNAUTHORIZED,
            "This temporary password has expired. Ask an administrator to reset your password again.",
        ));
    }
    // A TOTP code or a new password still owed: no session yet (`sign_in_steps`). The
    // address becomes usual only when the whole sign-in succeeds.
    if let Some(next) = super::sign_in_steps::after_password(&console, &username).await? {
        limiter.refund(reservation);
        return Ok(next);
    }
    limiter.succeeded(reservation, &username);
    let id = sessions::create(
        console.store.as_ref(),
        &username,
        &console.settings,
        &format!("ip:{ip}"),
    )
    .await?;
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        sessions::set_cookie(&id, &console.settings),
    );
    Ok(response)
}

/// `POST /logout`: deletes the session row (the cookie alone is worthless afterwards).
pub async fn logout(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    headers: HeaderMap,
) -> ConsoleResult {
    if let Some(id) = sessions::session_cookie(&headers).ok().flatten() {
        let id_hash = sessions::hash_id(&id);
        console.store.end_session(&id_hash, &user.username).await?;
    }
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, sessions::clear_cookie());
    Ok(response)
}

/// `POST /session/extend` ("Stay signed in", from the page's warning; CSRF-checked by the
/// guard): the session's new [`sessions::Remaining`] as JSON, or 401 problem+json when it is
/// already over.
pub async fn extend(State(console): State<Arc<Console>>, headers: HeaderMap) -> ConsoleResult {
    let Some(id) = sessions::session_cookie(&headers).ok().flatten() else {
        return Ok(guard::unauthorized());
    };
    let id_hash = sessions::hash_id(&id);
    match sessions::extend(console.store.as_ref(), &id_hash, &console.settings).await? {
        Some(remaining) => Ok(axum::Json(remaining).into_response()),
        None => Ok(guard::unauthorized()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn attempts_count_before_the_check_and_the_usual_address_is_never_held_back() {
        let settings = ConsoleSettings::default(); // 5 per username, 20 per address
        let limiter = LoginLimiter::new(&settings);
        let usual: IpAddr = "10.0.0.1".parse().unwrap();
        let hostile: IpAddr = "10.0.0.2".parse().unwrap();
        let stranger: IpAddr = "10.0.0.3".parse().unwrap();
        let r = limiter.reserve(usual, "olga").unwrap();
        limiter.succeeded(r, "olga");
        // Reserved, not yet checked: the sixth is refused even though none has failed yet.
        let held: Vec<_> = (0..5)
            .map(|_| limiter.reserve(hostile, "Olga").unwrap())
            .collect();
        let refused = limiter.reserve(hostile, "olga").unwrap_err();
        let Refusal::Limited { retry_after, audit } = refused;
        assert!(retry_after <= Duration::from_secs(1));
        assert!(audit.is_some(), "the first refusal is audited");
        let Refusal::Limited { audit, .. } = limiter.reserve(stranger, "olga").unwrap_err();
        assert!(audit.is_none(), "summarised: one audit row per window");
        assert!(limiter.reserve(usual, "olga").is_ok(), "usual address");
        drop(held);
        assert_eq!(limiter.take_refused("user:olga"), 2);
    }
}
