//! The TOTP second factor's pages: the user's own (`/account/totp`: enrol, confirm, switch off)
//! and the admin's removal from the users page (a lost phone).
//!
//! Enrolment: the receiver draws a 160-bit secret, stores it sealed as *pending*
//! ([`super::totp_key`]), and shows it as an `otpauth://` URI, as base32 text and as a QR code
//! (SVG made here by the `qrcode` crate, inlined: no image service). It is switched on only
//! when the user types a current code, which is also the first code used. From then on no page
//! shows the secret again. Switching off takes a current code (counted by the sign-in limiter
//! like a password, and refused on replay).

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::error::ConsoleResult;
use super::pages::{Layout, error_page, render_status};
use super::sign_in_steps::{CodeVerdict, check_code, open_secret};
use super::{Console, CurrentUser, totp};
use crate::api::receiver_now;
use crate::store::StoreError;

/// What an enrolment in progress shows (only while it is pending).
struct Enrolment {
    /// The QR code of the URI, SVG (generated here from our own data: safe to inline).
    qr_svg: String,
    uri: Zeroizing<String>,
    base32: Zeroizing<String>,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrolment(..)")
    }
}

#[derive(Debug, Template)]
#[template(path = "account_totp.html")]
struct TotpPage {
    layout: Layout,
    /// Two-step sign-in is on.
    enabled: bool,
    enrolment: Option<Enrolment>,
    error: Option<String>,
    done: Option<String>,
}

struct Shown<'a> {
    status: StatusCode,
    error: Option<&'a str>,
    done: Option<&'a str>,
}

async fn show(console: &Console, user: &CurrentUser, shown: Shown<'_>) -> ConsoleResult {
    let record = console.store.totp(&user.username).await?;
    let enabled = record.as_ref().is_some_and(|r| r.enabled);
    let enrolment = match record.filter(|r| !r.enabled) {
        Some(pending) => match open_secret(console, &user.username, &pending.sealed_secret) {
            Some(secret) => Some(enrolment_of(&secret, &user.username)?),
            None => None,
        },
        None => None,
    };
    Ok(render_status(
        shown.status,
        &TotpPage {
            layout: Layout::new(user, "account", "Two-step sign-in"),
            enabled,
            enrolment,
            error: shown.error.map(str::to_owned),
            done: shown.done.map(str::to_owned),
        },
    ))
}

fn enrolment_of(secret: &totp::TotpSecret, username: &str) -> ConsoleResult<Enrolment> {
    let internal = |e: anyhow::Error| super::error::ConsoleError::Internal(e.to_string());
    let uri = secret.otpauth_uri(username).map_err(internal)?;
    Ok(Enrolment {
        qr_svg: totp::qr_svg(&uri).map_err(internal)?,
        base32: secret.base32(username).map_err(internal)?,
        uri,
    })
}

/// `GET /account/totp`.
pub async fn page(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> ConsoleResult {
    show(
        &console,
        &user,
        Shown {
            status: StatusCode::OK,
            error: None,
            done: None,
        },
    )
    .await
}

/// `POST /account/totp/enrol`: a new pending secret (replacing a pending one), shown.
pub async fn enrol(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> ConsoleResult {
    let Some(key) = console.totp_key.as_deref() else {
        return Ok(error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not available",
            "This receiver has no TOTP key loaded: two-step sign-in cannot be set up.",
        ));
    };
    let internal = |e: anyhow::Error| super::error::ConsoleError::Internal(e.to_string());
    let secret = totp::TotpSecret::generate().map_err(internal)?;
    let sealed = key
        .seal(&user.username, secret.as_bytes())
        .map_err(internal)?;
    match console
        .store
        .begin_totp(&user.username, sealed, receiver_now())
        .await
    {
        Ok(()) => {}
        Err(StoreError::Refused(message)) => {
            return show(
                &console,
                &user,
                Shown {
                    status: StatusCode::CONFLICT,
                    error: Some(message.as_str()),
                    done: None,
                },
            )
            .await;
        }
        Err(e) => return Err(e.into()),
    }
    show(
        &console,
        &user,
        Shown {
            status: StatusCode::OK,
            error: None,
            done: None,
        },
    )
    .await
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

/// `POST /account/totp/confirm`: a current code of the pending secret switches it on.
pub async fn confirm(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Form(form): Form<CodeForm>,
) -> ConsoleResult {
    let code = Zeroizing::new(form.code);
    let refused = |message: &'static str| Shown {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        error: Some(message),
        done: None,
    };
    let Some(pending) = console
        .store
        .totp(&user.username)
        .await?
        .filter(|r| !r.enabled)
    else {
        return show(
            &console,
            &user,
            refused("There is no set-up in progress. Start again."),
        )
        .await;
    };
    let Some(secret) = open_secret(&console, &user.username, &pending.sealed_secret) else {
        return Ok(error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not available",
            "This receiver cannot open the secret being set up (its TOTP key file differs).",
        ));
    };
    let step = totp::matching_step(&secret, &user.username, &code, totp::unix_now())
        .map_err(|e| super::error::ConsoleError::Internal(e.to_string()))?;
    let Some(step) = step else {
        return show(
            &console,
            &user,
            refused("Wrong code. Type the code your app shows now for this account."),
        )
        .await;
    };
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    if !console.store.enable_totp(&user.username, step).await? {
        return show(
            &console,
            &user,
            refused("There is no set-up in progress. Start again."),
        )
        .await;
    }
    show(
        &console,
        &user,
        Shown {
            status: StatusCode::OK,
            error: None,
            done: Some("Two-step sign-in is on. Sign-in now asks for a code from your app."),
        },
    )
    .await
}

/// `POST /account/totp/disable`: a current code switches two-step sign-in off; an enrolment in
/// progress is cancelled without one.
pub async fn disable(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Form(form): Form<CodeForm>,
) -> ConsoleResult {
    let record = console.store.totp(&user.username).await?;
    match record {
        None => return Ok(Redirect::to("/account/totp").into_response()),
        Some(r) if !r.enabled => {
            console
                .store
                .remove_totp(&user.username, &user.username)
                .await?;
            return Ok(Redirect::to("/account/totp").into_response());
        }
        Some(_) => {}
    }
    let limiter = &console.login_limiter;
    let reservation = match limiter.reserve(client.ip(), &user.username) {
        Ok(r) => r,
        Err(refusal) => {
            let (_, audit) = refusal.into_parts();
            if let Some(detail) = audit {
                console
                    .store
                    .record_login_lockout(&user.username, &format!("ip:{}", client.ip()), &detail)
                    .await?;
            }
            return show(
                &console,
                &user,
                Shown {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    error: Some("Too many attempts. Wait a little and try again."),
                    done: None,
                },
            )
            .await;
        }
    };
    let code = Zeroizing::new(form.code);
    let message = match check_code(&console, &user.username, &code).await? {
        CodeVerdict::Accepted => None,
        CodeVerdict::Wrong => Some("Wrong code. Type the code your app shows now."),
        CodeVerdict::Replayed => {
            Some("This code was already used. Wait for the next one and type it.")
        }
        CodeVerdict::Unavailable => {
            limiter.refund(reservation);
            return Ok(error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Not available",
                "This receiver cannot check second-factor codes (its TOTP key file differs).",
            ));
        }
    };
    if let Some(message) = message {
        return show(
            &console,
            &user,
            Shown {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                error: Some(message),
                done: None,
            },
        )
        .await;
    }
    limiter.succeeded(reservation, &user.username);
    console
        .store
        .remove_totp(&user.username, &user.username)
        .await?;
    show(
        &console,
        &user,
        Shown {
            status: StatusCode::OK,
            error: None,
            done: Some("Two-step sign-in is off."),
        },
    )
    .await
}

/// `POST /admin/users/{username}/totp/remove` (a lost phone): audited `totp.remove`.
pub async fn admin_remove(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(username): Path<String>,
) -> ConsoleResult<Response> {
    if console.store.remove_totp(&username, &user.username).await? {
        Ok(Redirect::to("/admin/users").into_response())
    } else {
        Ok(error_page(
            StatusCode::NOT_FOUND,
            "Not done",
            "This user has no two-step sign-in.",
        ))
    }
}
