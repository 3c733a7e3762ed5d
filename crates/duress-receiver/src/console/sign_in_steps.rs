//! What a sign-in may still owe after its right password: the account's TOTP code, and (after an
//! admin's reset) a new password. No session exists until everything is given, so no page can
//! be reached by skipping a step.
//!
//! The right password gives a *sign-in step*: a random id in its own cookie
//! (`__Host-duress_sign_in`, HttpOnly, Secure, SameSite=Strict, five minutes), of which the
//! database keeps only the SHA-256 ([`crate::store::AccountSecurityStore`]). Each code typed is
//! counted by the sign-in limiter exactly like a password (per address and per username, before
//! the check), and a step takes at most [`MAX_CODE_FAILURES`] wrong codes, after which the
//! password must be given again. A code is accepted once: the store keeps the time step of the
//! last code used and refuses it or any earlier one (replay).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::error::ConsoleResult;
use super::pages::render_status;
use super::{Console, accounts, guard, passwords, sessions, totp};
use crate::api::receiver_now;
use crate::store::{NewSignInStep, SignInStage, SignInStep};

pub const COOKIE_NAME: &str = "__Host-duress_sign_in";
/// How long the steps after the password may take.
pub const STEP_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Wrong codes one step takes before the password must be given again.
pub const MAX_CODE_FAILURES: u32 = 5;

fn set_cookie(id: &str) -> HeaderValue {
    let value = format!(
        "{COOKIE_NAME}={id}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        STEP_LIFETIME.as_secs()
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-duress_sign_in=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0",
    )
}

fn path_of(stage: SignInStage) -> &'static str {
    match stage {
        SignInStage::Code => "/login/code",
        SignInStage::NewPassword => "/login/new-password",
    }
}

/// Called by sign-in once the password was right: the redirect to the next step when one is
/// owed (TOTP enabled, or the password was reset), else `None` (sign-in creates the session).
pub async fn after_password(console: &Console, username: &str) -> ConsoleResult<Option<Response>> {
    let stage = if console
        .store
        .totp(username)
        .await?
        .is_some_and(|t| t.enabled)
    {
        SignInStage::Code
    } else if console.store.password_reset_at(username).await?.is_some() {
        SignInStage::NewPassword
    } else {
        return Ok(None);
    };
    let id = sessions::random_secret();
    let now = receiver_now();
    console
        .store
        .create_sign_in_step(NewSignInStep {
            id_hash: sessions::hash_id(&id),
            username: username.to_owned(),
            stage,
            created_at: now,
            expires_at: now + STEP_LIFETIME,
        })
        .await?;
    let mut response = Redirect::to(path_of(stage)).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&id));
    Ok(Some(response))
}

#[derive(Debug, Template)]
#[template(path = "sign_in_step.html")]
struct StepPage {
    /// `code`, `new-password`, or `over` (no step: sign in again).
    stage: &'static str,
    username: String,
    error: Option<String>,
}

fn page_of(
    status: StatusCode,
    stage: &'static str,
    username: &str,
    error: Option<&str>,
) -> Response {
    render_status(
        status,
        &StepPage {
            stage,
            username: username.to_owned(),
            error: error.map(str::to_owned),
        },
    )
}

/// No step (none, expired, or used up): sign in again; the cookie is cleared.
fn over(message: &str) -> Response {
    let mut r = page_of(StatusCode::UNAUTHORIZED, "over", "", Some(message));
    r.headers_mut().insert(header::SET_COOKIE, clear_cookie());
    r
}

const EXPIRED: &str = "This sign-in has expired. Sign in again.";

/// The request's step, if it is still open and at `stage`.
async fn current(
    console: &Console,
    headers: &HeaderMap,
    stage: SignInStage,
) -> ConsoleResult<Result<(String, SignInStep), Response>> {
    let Some(id) = sessions::cookie_value(headers, COOKIE_NAME) else {
        return Ok(Err(over(EXPIRED)));
    };
    let id_hash = sessions::hash_id(&id);
    let Some(step) = console.store.sign_in_step(&id_hash).await? else {
        return Ok(Err(over(EXPIRED)));
    };
    if receiver_now() >= step.expires_at {
        console.store.end_sign_in_step(&id_hash).await?;
        return Ok(Err(over(EXPIRED)));
    }
    match step.stage {
        Some(s) if s == stage => Ok(Ok((id_hash, step))),
        // Another step is owed: go there (never past it).
        Some(s) => Ok(Err(Redirect::to(path_of(s)).into_response())),
        None => {
            console.store.end_sign_in_step(&id_hash).await?;
            Ok(Err(over(EXPIRED)))
        }
    }
}

/// Ends the step and creates the session: the sign-in is complete.
async fn complete(
    console: &Console,
    id_hash: &str,
    username: &str,
    ip: IpAddr,
    how: &str,
) -> ConsoleResult {
    // Of two requests finishing one step at once, only one goes on.
    if !console.store.end_sign_in_step(id_hash).await? {
        return Ok(over(EXPIRED));
    }
    let id = sessions::create(
        console.store.as_ref(),
        username,
        &console.settings,
        &format!("ip:{ip}, {how}"),
    )
    .await?;
    let mut response = Redirect::to("/").into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        sessions::set_cookie(&id, &console.settings),
    );
    h.append(header::SET_COOKIE, clear_cookie());
    Ok(response)
}

/// `GET /login/code`.
pub async fn code_page(State(console): State<Arc<Console>>, headers: HeaderMap) -> ConsoleResult {
    Ok(
        match current(&console, &headers, SignInStage::Code).await? {
            Ok((_, step)) => page_of(StatusCode::OK, "code", &step.username, None),
            Err(r) => r,
        },
    )
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

impl std::fmt::Debug for CodeForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeForm(..)")
    }
}

/// `POST /login/code`: the TOTP code of the account, counted like a password.
pub async fn code(
    State(console): State<Arc<Console>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    Form(form): Form<CodeForm>,
) -> ConsoleResult {
    if let Err(refusal) = guard::check_same_origin(&headers, &uri) {
        return Ok(*refusal);
    }
    let (id_hash, step) = match current(&console, &headers, SignInStage::Code).await? {
        Ok(found) => found,
        Err(r) => return Ok(r),
    };
    let username = step.username;
    let ip = client.ip();
    let limiter = &console.login_limiter;
    let reservation = match limiter.reserve(ip, &username) {
        Ok(r) => r,
        Err(refusal) => {
            let (retry_after, audit) = refusal.into_parts();
            if let Some(detail) = audit {
                console
                    .store
                    .record_login_lockout(&username, &format!("ip:{ip}"), &detail)
                    .await?;
            }
            let mut r = page_of(
                StatusCode::TOO_MANY_REQUESTS,
                "code",
                &username,
                Some("Too many sign-in attempts. Wait a little and try again."),
            );
            let secs = retry_after.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return Ok(r);
        }
    };
    let code = Zeroizing::new(form.code);
    let verdict = check_code(&console, &username, &code).await?;
    let refused = match verdict {
        CodeVerdict::Accepted => None,
        CodeVerdict::Wrong => Some((
            "wrong code",
            "Wrong code. Type the code your app shows now.",
        )),
        CodeVerdict::Replayed => Some((
            "code already used",
            "This code was already used. Wait for the next one and type it.",
        )),
        CodeVerdict::Unavailable => {
            // Not the user's fault: the password step stands, the attempt is refunded.
            limiter.refund(reservation);
            return Ok(page_of(
                StatusCode::SERVICE_UNAVAILABLE,
                "code",
                &username,
                Some(
                    "This receiver cannot check second-factor codes (its TOTP key file does not \
                     match). Tell a console administrator.",
                ),
            ));
        }
    };
    if let Some((why, message)) = refused {
        console
            .store
            .record_audit(&format!("ip:{ip}"), "login.failure", &username, why)
            .await?;
        let failures = console.store.fail_sign_in_step(&id_hash).await?;
        if failures >= MAX_CODE_FAILURES {
            console.store.end_sign_in_step(&id_hash).await?;
            return Ok(over("Too many wrong codes. Sign in again."));
        }
        return Ok(page_of(
            StatusCode::UNAUTHORIZED,
            "code",
            &username,
            Some(message),
        ));
    }
    limiter.succeeded(reservation, &username);
    if console.store.password_reset_at(&username).await?.is_some() {
        if !console
            .store
            .advance_sign_in_step(&id_hash, SignInStage::NewPassword)
            .await?
        {
            return Ok(over(EXPIRED));
        }
        return Ok(Redirect::to(path_of(SignInStage::NewPassword)).into_response());
    }
    complete(
        &console,
        &id_hash,
        &username,
        ip,
        "with a second-factor code",
    )
    .await
}

/// What a typed code is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeVerdict {
    /// Right, and its time step was not used before (now it is).
    Accepted,
    Wrong,
    /// Right, but its time step (or a later one) was already used.
    Replayed,
    /// The secret does not open here (another key file): nobody's code can be checked.
    Unavailable,
}

/// Checks `code` against `username`'s enabled TOTP and uses its time step (replay refused).
pub async fn check_code(
    console: &Console,
    username: &str,
    code: &str,
) -> ConsoleResult<CodeVerdict> {
    let Some(record) = console.store.totp(username).await?.filter(|t| t.enabled) else {
        return Ok(CodeVerdict::Wrong);
    };
    let Some(secret) = open_secret(console, username, &record.sealed_secret) else {
        return Ok(CodeVerdict::Unavailable);
    };
    let step = match totp::matching_step(&secret, username, code, totp::unix_now()) {
        Ok(Some(step)) => step,
        Ok(None) => return Ok(CodeVerdict::Wrong),
        Err(e) => {
            tracing::error!(user = %username, error = %e, "checking a TOTP code");
            return Ok(CodeVerdict::Unavailable);
        }
    };
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    Ok(if console.store.use_totp_step(username, step).await? {
        CodeVerdict::Accepted
    } else {
        CodeVerdict::Replayed
    })
}

/// The user's TOTP secret in clear, or `None` (logged) when it does not open here.
pub fn open_secret(console: &Console, username: &str, sealed: &[u8]) -> Option<totp::TotpSecret> {
    let Some(key) = console.totp_key.as_deref() else {
        tracing::error!(user = %username, "no TOTP key loaded: second-factor codes cannot be checked");
        return None;
    };
    match key.open(username, sealed) {
        Ok(bytes) => Some(totp::TotpSecret::from_bytes(bytes)),
        Err(e) => {
            tracing::error!(user = %username, error = %e, "a TOTP secret does not open");
            None
        }
    }
}

/// `GET /login/new-password`.
pub async fn new_password_page(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> ConsoleResult {
    Ok(
        match current(&console, &headers, SignInStage::NewPassword).await? {
            Ok((_, step)) => page_of(StatusCode::OK, "new-password", &step.username, None),
            Err(r) => r,
        },
    )
}

#[derive(Deserialize)]
pub struct NewPasswordForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    again: String,
}

impl std::fmt::Debug for NewPasswordForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPasswordForm(..)")
    }
}

/// `POST /login/new-password`: the password an admin's reset asks for, then the session.
pub async fn new_password(
    State(console): State<Arc<Console>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    Form(form): Form<NewPasswordForm>,
) -> ConsoleResult {
    if let Err(refusal) = guard::check_same_origin(&headers, &uri) {
        return Ok(*refusal);
    }
    let (id_hash, step) = match current(&console, &headers, SignInStage::NewPassword).await? {
        Ok(found) => found,
        Err(r) => return Ok(r),
    };
    let username = step.username;
    let password = Zeroizing::new(form.password);
    let again = Zeroizing::new(form.again);
    let refuse = |message: &str| {
        Ok(page_of(
            StatusCode::UNPROCESSABLE_ENTITY,
            "new-password",
            &username,
            Some(message),
        ))
    };
    if let Err(message) = passwords::check_new_password(&password, &again) {
        return refuse(message);
    }
    // Not the temporary password again (the admin has seen it).
    if let Some(credentials) = console.store.credentials(&username).await? {
        let phc = credentials.password_hash;
        let typed = password.clone();
        match console
            .login_limiter
            .verify(move || accounts::verify_password(&typed, &phc))
            .await
        {
            Some(true) => {
                return refuse("Choose a new password, not the temporary one.");
            }
            Some(false) => {}
            None => {
                let mut r = page_of(
                    StatusCode::TOO_MANY_REQUESTS,
                    "new-password",
                    &username,
                    Some("The receiver is busy checking passwords. Try again in a moment."),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Ok(r);
            }
        }
    }
    let hash = passwords::hash_on_pool(&password).await?;
    // The step is taken first: of two requests at once only one changes the password.
    if !console.store.end_sign_in_step(&id_hash).await? {
        return Ok(over(EXPIRED));
    }
    console.store.change_password(&username, hash, None).await?;
    let id = sessions::create(
        console.store.as_ref(),
        &username,
        &console.settings,
        &format!("ip:{}, new password after a reset", client.ip()),
    )
    .await?;
    let mut response = Redirect::to("/").into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        sessions::set_cookie(&id, &console.settings),
    );
    h.append(header::SET_COOKIE, clear_cookie());
    Ok(response)
}
