//! Admin pages: console users and camera mappings. Every change is audited in its transaction.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use serde::Deserialize;

use super::accounts::{self, Role, UserRecord};
use super::cameras::{self, CameraMapping, MATCH_FIELDS};
use super::error::{ConsoleError, ConsoleResult};
use super::pages::{Layout, error_page, render};
use super::{Console, CurrentUser};
use crate::api::receiver_now;
use crate::store::{NewCameraMapping, StoreError};

/// A refusal the admin can act on (shown on the page), or a failure of ours (an error page).
fn shown_or_failed(e: anyhow::Error) -> Result<String, ConsoleError> {
    match e.downcast::<StoreError>() {
        Ok(StoreError::Refused(message)) => Ok(message),
        Ok(other) => Err(other.into()),
        Err(e) => Ok(e.to_string()),
    }
}

/// An account just added on the users page.
enum Created {
    /// Name and generated password (shown once).
    Password(String, String),
    /// A single sign-on account's name: it has no password.
    Sso(String),
}

/// The password never appears in `Debug` output.
impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Created::Password(name, _) => write!(f, "Password({name:?}, ..)"),
            Created::Sso(name) => write!(f, "Sso({name:?})"),
        }
    }
}

#[derive(Debug, Template)]
#[template(path = "users.html")]
struct UsersPage {
    layout: Layout,
    users: Vec<UserRecord>,
    /// The account just added: its generated password is shown in this answer only.
    created: Option<Created>,
    error: Option<String>,
    /// Users whose TOTP second factor is on (`console::totp_pages`).
    totp_users: std::collections::BTreeSet<String>,
    /// `[oidc]` is set: the form offers single sign-on accounts.
    sso_enabled: bool,
}

async fn users_page(
    console: &Console,
    user: &CurrentUser,
    created: Option<Created>,
    error: Option<String>,
) -> ConsoleResult {
    let users = console.store.list_users().await?;
    let totp_users = console.store.totp_users().await?.into_iter().collect();
    Ok(render(&UsersPage {
        layout: Layout::new(user, "users", "Users"),
        users,
        created,
        error,
        totp_users,
        sso_enabled: console.sso.is_some(),
    }))
}

pub async fn users(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> ConsoleResult {
    users_page(&console, &user, None, None).await
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    role: String,
    /// `password` (the default) or `sso`: an account for single sign-on, made before its
    /// first sign-in (what `provision = false` needs).
    #[serde(default)]
    sign_in: String,
}

/// `POST /admin/users`: adds a user with a generated password, shown once, or a single sign-on
/// account (no password).
pub async fn add_user(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Form(form): Form<UserForm>,
) -> ConsoleResult {
    let role = Role::parse(&form.role).unwrap_or(Role::Officer);
    if !matches!(form.sign_in.as_str(), "" | "password" | "sso") {
        let message = "Sign-in must be password or single sign-on.";
        return users_page(&console, &user, None, Some(message.to_owned())).await;
    }
    if form.sign_in == "sso" {
        let username = form.username.trim().to_owned();
        if console.sso.is_none() {
            let message = "Single sign-on is not set up ([oidc] in the configuration file).";
            return users_page(&console, &user, None, Some(message.to_owned())).await;
        }
        return match super::oidc::add_sso_account(
            console.store.as_ref(),
            &username,
            role,
            &user.username,
        )
        .await
        {
            Ok(()) => users_page(&console, &user, Some(Created::Sso(username)), None).await,
            Err(e) => users_page(&console, &user, None, Some(shown_or_failed(e)?)).await,
        };
    }
    let password = accounts::generate_password();
    let username = form.username.trim().to_owned();
    match accounts::add(
        console.store.as_ref(),
        &username,
        role,
        &password,
        &user.username,
    )
    .await
    {
        Ok(()) => {
            users_page(
                &console,
                &user,
                Some(Created::Password(username, password)),
                None,
            )
            .await
        }
        Err(e) => users_page(&console, &user, None, Some(shown_or_failed(e)?)).await,
    }
}

pub async fn disable_user(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(username): Path<String>,
) -> ConsoleResult {
    if username == user.username {
        return Ok(error_page(
            StatusCode::CONFLICT,
            "Not done",
            "You cannot disable your own account.",
        ));
    }
    match accounts::disable(console.store.as_ref(), &username, &user.username).await {
        Ok(()) => Ok(Redirect::to("/admin/users").into_response()),
        Err(e) => Ok(error_page(
            StatusCode::NOT_FOUND,
            "Not done",
            &shown_or_failed(e)?,
        )),
    }
}

#[derive(Debug, Template)]
#[template(path = "cameras.html")]
struct CamerasPage {
    layout: Layout,
    mappings: Vec<CameraMapping>,
    fields: &'static [&'static str],
    error: Option<String>,
    /// The configuration file's `vms` mapping is the source of links: these are not used.
    from_config: bool,
}

async fn cameras_page(
    console: &Console,
    user: &CurrentUser,
    error: Option<String>,
) -> ConsoleResult {
    let mappings = console.store.camera_mappings().await?;
    Ok(render(&CamerasPage {
        layout: Layout::new(user, "cameras", "Camera mappings"),
        mappings,
        fields: MATCH_FIELDS,
        error,
        from_config: cameras::config_is_source(console.config.as_deref()),
    }))
}

pub async fn cameras(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> ConsoleResult {
    cameras_page(&console, &user, None).await
}

#[derive(Debug, Deserialize)]
pub struct CameraForm {
    #[serde(default)]
    match_field: String,
    #[serde(default)]
    match_value: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    url_template: String,
}

pub async fn add_camera(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Form(form): Form<CameraForm>,
) -> ConsoleResult {
    if !MATCH_FIELDS.contains(&form.match_field.as_str()) {
        return cameras_page(&console, &user, Some("Choose what to match.".into())).await;
    }
    if let Err(e) = cameras::check_template(&form.url_template) {
        return cameras_page(&console, &user, Some(e)).await;
    }
    if form.name.trim().is_empty() {
        return cameras_page(&console, &user, Some("Give the camera link a name.".into())).await;
    }
    // What an admin types is refused, not escaped: they can retype it.
    if [&form.name, &form.match_value, &form.url_template]
        .iter()
        .any(|v| duress_core::text::has_bidi_control(v))
    {
        return cameras_page(
            &console,
            &user,
            Some(
                "Remove the bidirectional control characters (U+202A–U+202E, U+2066–U+2069, \
                 U+200E, U+200F, U+061C): they make text display in another order than it reads."
                    .into(),
            ),
        )
        .await;
    }
    let mapping = NewCameraMapping {
        match_field: form.match_field,
        match_value: form.match_value.trim().to_owned(),
        name: form.name.trim().to_owned(),
        url_template: form.url_template.trim().to_owned(),
        created_at: receiver_now(),
    };
    console
        .store
        .add_camera_mapping(mapping, &user.username)
        .await?;
    Ok(Redirect::to("/admin/cameras").into_response())
}

pub async fn delete_camera(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<i64>,
) -> ConsoleResult {
    console
        .store
        .delete_camera_mapping(id, &user.username)
        .await?;
    Ok(Redirect::to("/admin/cameras").into_response())
}

#[derive(Debug, Template)]
#[template(path = "channels.html")]
struct ChannelsPage {
    layout: Layout,
    channels: Vec<crate::settings::ChannelSummary>,
    ladders: Vec<String>,
}

/// `GET /admin/channels`: the notification channels and ladders of the configuration file,
/// every secret redacted (they are read only from the file; nothing here changes them).
pub async fn channels(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> ConsoleResult {
    Ok(render(&ChannelsPage {
        layout: Layout::new(&user, "channels", "Notifications"),
        channels: console.settings.channels.clone(),
        ladders: console.settings.ladders.clone(),
    }))
}

#[derive(Debug, Template)]
#[template(path = "subnets.html")]
struct SubnetsPage {
    layout: Layout,
    subnets: Vec<crate::store::Subnet>,
    error: Option<String>,
}

async fn subnets_page(
    console: &Console,
    user: &CurrentUser,
    status: StatusCode,
    error: Option<String>,
) -> ConsoleResult {
    let subnets = console.store.subnets().await?;
    let mut answer = render(&SubnetsPage {
        layout: Layout::new(user, "subnets", "Subnets"),
        subnets,
        error,
    });
    *answer.status_mut() = status;
    Ok(answer)
}

/// `GET /admin/subnets`: the subnet → building/floor map behind the "location drift" flag.
pub async fn subnets(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> ConsoleResult {
    subnets_page(&console, &user, StatusCode::OK, None).await
}

#[derive(Debug, Deserialize)]
pub struct SubnetForm {
    #[serde(default)]
    cidr: String,
    #[serde(default, rename = "BLD")]
    building: String,
    #[serde(default, rename = "FLR")]
    floor: String,
}

/// `POST /admin/subnets`: adds a subnet (or changes where a listed one maps), audited.
pub async fn add_subnet(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Form(form): Form<SubnetForm>,
) -> ConsoleResult {
    let subnet = match crate::subnets::new_subnet(&form.cidr, &form.building, &form.floor) {
        Ok(s) => s,
        Err(e) => {
            return subnets_page(&console, &user, StatusCode::UNPROCESSABLE_ENTITY, Some(e)).await;
        }
    };
    console
        .store
        .put_subnets(vec![subnet], &user.username)
        .await?;
    Ok(Redirect::to("/admin/subnets").into_response())
}

#[derive(Debug, Deserialize)]
pub struct RemoveSubnetForm {
    #[serde(default)]
    cidr: String,
}

/// `POST /admin/subnets/remove` (the CIDR in the form: it has a `/`): removes it, audited.
pub async fn remove_subnet(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Form(form): Form<RemoveSubnetForm>,
) -> ConsoleResult {
    let Ok(net) = crate::subnets::parse_cidr(&form.cidr) else {
        return Ok(error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not done",
            "Not a network in CIDR form.",
        ));
    };
    if console
        .store
        .remove_subnet(&net.to_string(), &user.username)
        .await?
    {
        Ok(Redirect::to("/admin/subnets").into_response())
    } else {
        Ok(error_page(
            StatusCode::NOT_FOUND,
            "No such subnet",
            "This subnet is not in the map.",
        ))
    }
}
