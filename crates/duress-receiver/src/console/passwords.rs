//! Local passwords after an account exists: the signed-in user's own change, and an admin's reset.
//!
//! - **Change** (`/account/password`): current password, new one twice. The current password is
//!   checked through the sign-in limiter ([`super::auth::LoginLimiter`]): the attempt is counted
//!   per address and per username *before* argon2 runs, exactly like a sign-in, so this form is
//!   no way around the sign-in throttling to guess a password with a stolen session. A change
//!   ends every other session of the account (a stolen one among them), audited
//!   `password.change`.
//! - **Reset** (admin, users page; `user reset-password` in the CLI): the receiver draws a
//!   temporary password (120 bits), stores only its argon2 hash, shows it once in the answer to
//!   the admin (never again, never logged), ends all the user's sessions and marks the account:
//!   at the next sign-in the user chooses a new password before any session exists
//!   ([`super::sign_in_steps`]). Audited `password.reset` with who reset whom.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::error::{ConsoleError, ConsoleResult};
use super::pages::{Layout, error_page, render_status};
use super::{Console, CurrentUser, accounts, sessions};
use crate::api::receiver_now;
use crate::store::{Store, StoreError};

/// Audited when the current password given to the change form is wrong.
pub const PASSWORD_CHANGE_REFUSED_ACTION: &str = "password.change.refused";

/// Checks a new password against the rules of account creation, and that both copies match.
pub fn check_new_password(password: &str, again: &str) -> Result<(), &'static str> {
    if password != again {
        return Err("The two new passwords are not the same.");
    }
    accounts::check_password(password).map_err(|_| accounts::PASSWORD_RULE)
}

/// argon2id of `password`, on the blocking pool.
pub async fn hash_on_pool(password: &str) -> ConsoleResult<String> {
    let password = Zeroizing::new(password.to_owned());
    tokio::task::spawn_blocking(move || accounts::hash_password(&password))
        .await
        .map_err(|e| ConsoleError::Internal(format!("hashing task: {e}")))?
        .map_err(|e| ConsoleError::Internal(e.to_string()))
}

#[derive(Debug, Template)]
#[template(path = "account_password.html")]
struct ChangePage {
    layout: Layout,
    error: Option<String>,
    done: Option<String>,
    /// A single sign-on account: no password here, the page says where to change it instead.
    sso: bool,
}

fn change_page(
    user: &CurrentUser,
    status: StatusCode,
    error: Option<String>,
    done: Option<String>,
) -> Response {
    render_status(
        status,
        &ChangePage {
            layout: Layout::new(user, "account", "Change password"),
            error,
            done,
            sso: false,
        },
    )
}

/// What a single sign-on account sees instead of the form (`status`: 200 for the page, 409 for
/// a change posted anyway).
fn sso_page(user: &CurrentUser, status: StatusCode) -> Response {
    render_status(
        status,
        &ChangePage {
            layout: Layout::new(user, "account", "Change password"),
            error: None,
            done: None,
            sso: true,
        },
    )
}

/// `GET /account/password`.
pub async fn page(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> ConsoleResult {
    if console.store.is_sso_account(&user.username).await? == Some(true) {
        return Ok(sso_page(&user, StatusCode::OK));
    }
    Ok(change_page(&user, StatusCode::OK, None, None))
}

#[derive(Deserialize)]
pub struct ChangeForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    again: String,
}

impl std::fmt::Debug for ChangeForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeForm(..)")
    }
}

fn with_retry_after(mut response: Response, retry_after: Duration) -> Response {
    let secs = retry_after.as_secs().max(1).to_string();
    if let Ok(v) = HeaderValue::from_str(&secs) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// `POST /account/password` (CSRF-checked by the guard).
pub async fn change(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<ChangeForm>,
) -> ConsoleResult {
    let current = Zeroizing::new(form.current);
    let password = Zeroizing::new(form.password);
    let again = Zeroizing::new(form.again);
    if console.store.is_sso_account(&user.username).await? == Some(true) {
        return Ok(sso_page(&user, StatusCode::CONFLICT));
    }
    let refuse = |status: StatusCode, message: &str| {
        Ok(change_page(&user, status, Some(message.to_owned()), None))
    };
    if let Err(message) = check_new_password(&password, &again) {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, message);
    }
    if *password == *current {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The new password must differ from the current one.",
        );
    }
    let limiter = &console.login_limiter;
    let reservation = match limiter.reserve(client.ip(), &user.username) {
        Ok(r) => r,
        Err(refusal) => {
            let (retry_after, audit) = refusal.into_parts();
            if let Some(detail) = audit {
                console
                    .store
                    .record_login_lockout(&user.username, &format!("ip:{}", client.ip()), &detail)
                    .await?;
            }
            let page = change_page(
                &user,
                StatusCode::TOO_MANY_REQUESTS,
                Some("Too many attempts. Wait a little and try again.".into()),
                None,
            );
            return Ok(with_retry_after(page, retry_after));
        }
    };
    let Some(credentials) = console.store.credentials(&user.username).await? else {
        return Err(ConsoleError::NotFound("There is no such account."));
    };
    let phc = credentials.password_hash;
    let typed = current.clone();
    let Some(verified) = limiter
        .verify(move || accounts::verify_password(&typed, &phc))
        .await
    else {
        limiter.refund(reservation);
        let page = change_page(
            &user,
            StatusCode::TOO_MANY_REQUESTS,
            Some("The receiver is busy checking passwords. Try again in a moment.".into()),
            None,
        );
        return Ok(with_retry_after(page, Duration::from_secs(1)));
    };
    if !verified {
        // Counted (the reservation stays), and audited.
        console
            .store
            .record_audit(
                &user.username,
                PASSWORD_CHANGE_REFUSED_ACTION,
                &user.username,
                &format!("wrong current password, from ip:{}", client.ip()),
            )
            .await?;
        return refuse(StatusCode::FORBIDDEN, "The current password is wrong.");
    }
    limiter.succeeded(reservation, &user.username);
    let hash = hash_on_pool(&password).await?;
    let keep = sessions::session_cookie(&headers)
        .ok()
        .flatten()
        .map(|id| sessions::hash_id(&id));
    let ended = console
        .store
        .change_password(&user.username, hash, keep.as_deref())
        .await?;
    let done = match ended {
        0 => "Password changed.".to_owned(),
        1 => "Password changed. Your one other session was ended.".to_owned(),
        n => format!("Password changed. Your {n} other sessions were ended."),
    };
    Ok(change_page(&user, StatusCode::OK, None, Some(done)))
}

#[derive(Template)]
#[template(path = "password_reset.html")]
struct ResetPage {
    layout: Layout,
    username: String,
    /// The temporary password: in this one answer only (`Cache-Control: no-store`).
    temporary: Zeroizing<String>,
    sessions_ended: u64,
}

impl std::fmt::Debug for ResetPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetPage")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Resets `username`'s password to a new temporary one (audited as done by `actor`); returns
/// the temporary password, to show once, and how many sessions ended.
pub async fn reset(
    store: &dyn Store,
    username: &str,
    actor: &str,
) -> anyhow::Result<(Zeroizing<String>, u64)> {
    accounts::check_username(username)?;
    // A single sign-on account has no password: a temporary one could never be used (password
    // sign-in refuses the account), and handing one out would only mislead.
    if store.is_sso_account(username).await? == Some(true) {
        return Err(StoreError::Refused(format!(
            "{username} signs in with single sign-on and has no password to reset"
        ))
        .into());
    }
    let temporary = Zeroizing::new(accounts::generate_password());
    let hash = {
        let temporary = temporary.clone();
        tokio::task::spawn_blocking(move || accounts::hash_password(&temporary)).await??
    };
    let ended = store.reset_password(username, hash, actor).await?;
    Ok((temporary, ended))
}

/// How long a temporary password (an admin reset) may be used to sign in; afterwards sign-in
/// refuses it and only a new reset helps.
pub const TEMPORARY_PASSWORD_LIFETIME: Duration = Duration::from_secs(3 * 24 * 3600);

/// Whether `username` holds a temporary password older than [`TEMPORARY_PASSWORD_LIFETIME`].
pub async fn temporary_password_expired(store: &dyn Store, username: &str) -> ConsoleResult<bool> {
    Ok(store
        .password_reset_at(username)
        .await?
        .is_some_and(|at| receiver_now() - at > TEMPORARY_PASSWORD_LIFETIME))
}

/// `POST /admin/users/{username}/reset-password`.
pub async fn admin_reset(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(username): Path<String>,
) -> ConsoleResult {
    if username == user.username {
        return Ok(error_page(
            StatusCode::CONFLICT,
            "Not done",
            "Use \"Change password\" for your own account.",
        ));
    }
    match reset(console.store.as_ref(), &username, &user.username).await {
        Ok((temporary, sessions_ended)) => Ok(render_status(
            StatusCode::OK,
            &ResetPage {
                layout: Layout::new(&user, "users", "Password reset"),
                username,
                temporary,
                sessions_ended,
            },
        )),
        Err(e) => match e.downcast::<StoreError>() {
            Ok(StoreError::Refused(message)) => {
                Ok(error_page(StatusCode::NOT_FOUND, "Not done", &message))
            }
            Ok(other) => Err(other.into()),
            Err(e) => Err(ConsoleError::Internal(e.to_string())),
        },
    }
}
