//! Admin pages: console users and camera mappings. Every change is audited in its transaction.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::accounts::{self, Role, UserRecord};
use super::cameras::{self, CameraMapping, MATCH_FIELDS};
use super::pages::{Layout, error_page, render, server_error};
use super::{Console, CurrentUser, audit};
use crate::api::receiver_now;
use crate::store::format_ts;

#[derive(Debug, Template)]
#[template(path = "users.html")]
struct UsersPage {
    layout: Layout,
    users: Vec<UserRecord>,
    /// A generated password, shown in this answer only.
    created: Option<(String, String)>,
    error: Option<String>,
}

async fn users_page(
    console: &Console,
    user: &CurrentUser,
    created: Option<(String, String)>,
    error: Option<String>,
) -> Response {
    match accounts::list(&console.pool).await {
        Ok(users) => render(&UsersPage {
            layout: Layout::new(user, "users", "Users"),
            users,
            created,
            error,
        }),
        Err(e) => server_error(e),
    }
}

pub async fn users(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> Response {
    users_page(&console, &user, None, None).await
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    role: String,
}

/// `POST /admin/users`: adds a user with a generated password, shown once.
pub async fn add_user(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Form(form): Form<UserForm>,
) -> Response {
    let role = Role::parse(&form.role).unwrap_or(Role::Officer);
    let password = accounts::generate_password();
    let username = form.username.trim().to_owned();
    match accounts::add(&console.pool, &username, role, &password, &user.username).await {
        Ok(()) => users_page(&console, &user, Some((username, password)), None).await,
        Err(e) => users_page(&console, &user, None, Some(e.to_string())).await,
    }
}

pub async fn disable_user(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(username): Path<String>,
) -> Response {
    if username == user.username {
        return error_page(
            StatusCode::CONFLICT,
            "Not done",
            "You cannot disable your own account.",
        );
    }
    match accounts::disable(&console.pool, &username, &user.username).await {
        Ok(()) => Redirect::to("/admin/users").into_response(),
        Err(e) => error_page(StatusCode::NOT_FOUND, "Not done", &e.to_string()),
    }
}

#[derive(Debug, Template)]
#[template(path = "cameras.html")]
struct CamerasPage {
    layout: Layout,
    mappings: Vec<CameraMapping>,
    fields: &'static [&'static str],
    error: Option<String>,
}

async fn cameras_page(console: &Console, user: &CurrentUser, error: Option<String>) -> Response {
    match cameras::list(&console.pool).await {
        Ok(mappings) => render(&CamerasPage {
            layout: Layout::new(user, "cameras", "Camera mappings"),
            mappings,
            fields: MATCH_FIELDS,
            error,
        }),
        Err(e) => server_error(e),
    }
}

pub async fn cameras(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> Response {
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
) -> Response {
    if !MATCH_FIELDS.contains(&form.match_field.as_str()) {
        return cameras_page(&console, &user, Some("Choose what to match.".into())).await;
    }
    if let Err(e) = cameras::check_template(&form.url_template) {
        return cameras_page(&console, &user, Some(e)).await;
    }
    if form.name.trim().is_empty() {
        return cameras_page(&console, &user, Some("Give the camera link a name.".into())).await;
    }
    let result = async {
        let now = receiver_now();
        let mut tx = console.pool.begin_with("BEGIN IMMEDIATE").await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO camera_mappings (match_field, match_value, name, url_template, created_at)
             VALUES (?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&form.match_field)
        .bind(form.match_value.trim())
        .bind(form.name.trim())
        .bind(form.url_template.trim())
        .bind(format_ts(now))
        .fetch_one(&mut *tx)
        .await?;
        let detail = format!(
            "{}={} → {} {}",
            form.match_field,
            form.match_value.trim(),
            form.name.trim(),
            form.url_template.trim()
        );
        audit::append(
            &mut tx,
            now,
            &user.username,
            "camera.add",
            &id.to_string(),
            &detail,
        )
        .await?;
        tx.commit().await
    }
    .await;
    match result {
        Ok(()) => Redirect::to("/admin/cameras").into_response(),
        Err(e) => server_error(e),
    }
}

pub async fn delete_camera(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<i64>,
) -> Response {
    let result = async {
        let mut tx = console.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query("DELETE FROM camera_mappings WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            audit::append(
                &mut tx,
                receiver_now(),
                &user.username,
                "camera.delete",
                &id.to_string(),
                "",
            )
            .await?;
        }
        tx.commit().await
    }
    .await;
    match result {
        Ok(()) => Redirect::to("/admin/cameras").into_response(),
        Err(e) => server_error(e),
    }
}
