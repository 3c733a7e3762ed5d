//! The console's API keys page (admins): list, create (the key is shown once, on the answer
//! to the POST, never again), revoke. Every change audited as the signed-in admin.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use serde::Deserialize;

use crate::console::error::ConsoleResult;
use crate::console::pages::{Layout, Ts, error_page, render};
use crate::console::{Console, CurrentUser};
use crate::store::{ApiKeyRecord, ApiKeyScope, StoreError};

/// One key as the page lists it.
#[derive(Debug)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub scope: &'static str,
    pub created: Ts,
    pub created_by: String,
    pub revoked: Option<Ts>,
}

impl From<ApiKeyRecord> for KeyRow {
    fn from(k: ApiKeyRecord) -> Self {
        KeyRow {
            id: k.id,
            name: k.name,
            scope: k.scope.as_str(),
            created: Ts::new(k.created_at),
            created_by: k.created_by,
            revoked: k.revoked_at.map(Ts::new),
        }
    }
}

#[derive(Debug, Template)]
#[template(path = "apikeys.html")]
struct ApiKeysPage {
    layout: Layout,
    keys: Vec<KeyRow>,
    error: Option<String>,
    /// The key just created (id, key): shown this once.
    created: Option<(String, String)>,
}

async fn page(
    console: &Console,
    user: &CurrentUser,
    status: StatusCode,
    error: Option<String>,
    created: Option<(String, String)>,
) -> ConsoleResult {
    let keys = console
        .store
        .list_api_keys()
        .await?
        .into_iter()
        .rev()
        .map(KeyRow::from)
        .collect();
    let mut answer = render(&ApiKeysPage {
        layout: Layout::new(user, "apikeys", "API keys"),
        keys,
        error,
        created,
    });
    *answer.status_mut() = status;
    // The answer that shows a key must not be kept by any cache.
    answer.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(answer)
}

/// `GET /admin/apikeys`.
pub async fn list(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> ConsoleResult {
    page(&console, &user, StatusCode::OK, None, None).await
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    scope: String,
}

/// `POST /admin/apikeys`: creates a key, audited; the answer shows it once.
pub async fn create(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Form(form): Form<CreateForm>,
) -> ConsoleResult {
    let Some(scope) = ApiKeyScope::parse(&form.scope) else {
        let e = "Choose the scope: read or read-write.".to_owned();
        return page(
            &console,
            &user,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(e),
            None,
        )
        .await;
    };
    let (new, key) = match super::keys::prepare(scope, &form.name) {
        Ok(prepared) => prepared,
        Err(e) => {
            return page(
                &console,
                &user,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(e),
                None,
            )
            .await;
        }
    };
    let id = new.id.clone();
    match console.store.create_api_key(new, &user.username).await {
        Ok(()) => {}
        Err(StoreError::Refused(e)) => {
            return page(&console, &user, StatusCode::CONFLICT, Some(e), None).await;
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(id, scope = scope.as_str(), by = %user.username, "API key created");
    page(&console, &user, StatusCode::OK, None, Some((id, key))).await
}

/// `POST /admin/apikeys/{id}/revoke`: revokes the key for good, audited.
pub async fn revoke(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> ConsoleResult {
    if console.store.revoke_api_key(&id, &user.username).await? {
        tracing::info!(id, by = %user.username, "API key revoked");
        Ok(Redirect::to("/admin/apikeys").into_response())
    } else {
        Ok(error_page(
            StatusCode::NOT_FOUND,
            "No such key",
            "There is no API key with this id that is not revoked already.",
        ))
    }
}
