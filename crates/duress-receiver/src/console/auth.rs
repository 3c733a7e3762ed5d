//! Sign-in and sign-out.
//!
//! Failed sign-ins are limited per client address (IPv6 per /64) and per username, in memory:
//! past either limit the answer is 429 before the password is even checked, so neither one
//! address nor a botnet can guess an officer's password. Success does not count. An unknown
//! username costs the same argon2 work as a known one, so timing does not reveal accounts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
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
/// cost the same argon2 work as known ones.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    accounts::hash_password(&sessions::random_secret()).unwrap_or_default()
});

#[derive(Debug)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Failure counts per key (`ip:…`, `user:…`) in fixed windows.
#[derive(Debug)]
pub struct LoginLimiter {
    per_address: u32,
    per_username: u32,
    window: Duration,
    counts: Mutex<HashMap<String, Window>>,
}

impl LoginLimiter {
    pub fn new(settings: &ConsoleSettings) -> Self {
        LoginLimiter {
            per_address: settings.login_failures_per_address,
            per_username: settings.login_failures_per_username,
            window: settings.login_failure_window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn keys(ip: IpAddr, username: &str) -> [(String, bool); 2] {
        let ip = match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        [
            (format!("ip:{ip}"), true),
            (format!("user:{}", username.to_lowercase()), false),
        ]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `false` when this address or this username has used up its failures.
    pub fn allowed(&self, ip: IpAddr, username: &str) -> bool {
        let now = Instant::now();
        let counts = self.lock();
        Self::keys(ip, username).iter().all(|(key, is_ip)| {
            let limit = if *is_ip {
                self.per_address
            } else {
                self.per_username
            };
            counts
                .get(key)
                .is_none_or(|w| now.duration_since(w.started) >= self.window || w.failures < limit)
        })
    }

    pub fn record_failure(&self, ip: IpAddr, username: &str) {
        let now = Instant::now();
        let mut counts = self.lock();
        if counts.len() > 10_000 {
            let window = self.window;
            counts.retain(|_, w| now.duration_since(w.started) < window);
        }
        for (key, _) in Self::keys(ip, username) {
            let w = counts.entry(key).or_insert(Window {
                started: now,
                failures: 0,
            });
            if now.duration_since(w.started) >= self.window {
                *w = Window {
                    started: now,
                    failures: 0,
                };
            }
            w.failures = w.failures.saturating_add(1);
        }
    }
}

#[derive(Debug, Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
    username: String,
}

pub async fn login_page() -> Response {
    render_status(
        StatusCode::OK,
        &LoginPage {
            error: None,
            username: String::new(),
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
                username: username.clone(),
            },
        )
    };
    if !console.login_limiter.allowed(ip, &username) {
        tracing::warn!(client = %ip, "sign-in refused: too many failed attempts");
        let mut r = failed(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins. Wait a few minutes and try again.",
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("300"),
        );
        return Ok(r);
    }
    let credentials = console.store.credentials(&username).await?;
    let (phc, disabled) = match credentials {
        Some(c) => (c.password_hash, c.disabled),
        None => (DUMMY_HASH.clone(), true),
    };
    let password = form.password;
    let ok = tokio::task::spawn_blocking(move || accounts::verify_password(&password, &phc))
        .await
        .unwrap_or(false)
        && !disabled;

    if !ok {
        console.login_limiter.record_failure(ip, &username);
        let subject: String = username.chars().take(64).collect();
        console
            .store
            .record_login_failure(&subject, &format!("ip:{ip}"))
            .await?;
        return Ok(failed(
            StatusCode::UNAUTHORIZED,
            "Wrong username or password.",
        ));
    }
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
    if let Some(id) = sessions::cookie_value(&headers, sessions::COOKIE_NAME) {
        let id_hash = sessions::hash_id(&id);
        console.store.end_session(&id_hash, &user.username).await?;
    }
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, sessions::clear_cookie());
    Ok(response)
}
