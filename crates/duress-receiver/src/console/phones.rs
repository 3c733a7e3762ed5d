//! `/admin/phones`: the desk-phone inventory (docs/integrations.md, "Desk phones"). Admins
//! list, add, edit and remove phones; a secret is written here (hashed at once) and never
//! shown again — the page lists no secret and no hash. Every change is audited in its
//! transaction by the store.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use serde::Deserialize;

use super::error::{ConsoleError, ConsoleResult};
use super::pages::{Layout, error_page, render};
use super::{Console, CurrentUser};
use crate::phones::inventory::{self, PhoneFields};
use crate::store::{PhonePutRefusal, PhoneRecord};

#[derive(Debug, Template)]
#[template(path = "phones.html")]
struct PhonesPage {
    layout: Layout,
    phones: Vec<PhoneRecord>,
    error: Option<String>,
}

async fn phones_page(
    console: &Console,
    user: &CurrentUser,
    status: StatusCode,
    error: Option<String>,
) -> ConsoleResult {
    let phones = console.store.phones().await?;
    let mut answer = render(&PhonesPage {
        layout: Layout::new(user, "phones", "Desk phones"),
        phones,
        error,
    });
    *answer.status_mut() = status;
    Ok(answer)
}

/// `GET /admin/phones`.
pub async fn page(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> ConsoleResult {
    phones_page(&console, &user, StatusCode::OK, None).await
}

#[derive(Debug, Deserialize)]
pub struct PhoneForm {
    #[serde(default)]
    device_name: String,
    #[serde(default)]
    extension: String,
    #[serde(default)]
    label: String,
    #[serde(default, rename = "BLD")]
    building: String,
    #[serde(default, rename = "FLR")]
    floor: String,
    #[serde(default, rename = "ROOM")]
    room: String,
    /// Empty: keep the stored secret (an edit); a new phone needs one.
    #[serde(default)]
    secret: String,
    #[serde(default)]
    allowed_network: String,
}

/// `POST /admin/phones`: adds a phone, or changes a listed one (its secret only when a new
/// one is given), audited.
pub async fn put(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Form(form): Form<PhoneForm>,
) -> ConsoleResult {
    let refused =
        |e: String| phones_page(&console, &user, StatusCode::UNPROCESSABLE_ENTITY, Some(e));
    let mut phone = match inventory::new_phone(&PhoneFields {
        device_name: &form.device_name,
        extension: &form.extension,
        label: &form.label,
        building: &form.building,
        floor: &form.floor,
        room: &form.room,
        allowed_network: &form.allowed_network,
    }) {
        Ok(p) => p,
        Err(e) => return refused(e).await,
    };
    let secret = form.secret.trim().to_owned();
    if !secret.is_empty() {
        if let Err(e) = inventory::check_secret(&secret) {
            return refused(e).await;
        }
        let hash = tokio::task::spawn_blocking(move || inventory::hash_secret(&secret))
            .await
            .map_err(|e| ConsoleError::Internal(e.to_string()))?
            .map_err(|e| ConsoleError::Internal(e.to_string()))?;
        phone.secret_hash = Some(hash);
    }
    match console
        .store
        .put_phones(vec![phone], &user.username)
        .await?
    {
        Ok(_) => Ok(Redirect::to("/admin/phones").into_response()),
        Err(PhonePutRefusal::SecretRequired(name)) => {
            refused(format!("{name} is a new phone: give it a secret")).await
        }
    }
}

/// `POST /admin/phones/{device_name}/remove`: removes the phone (its station is revoked; its
/// incidents stay), audited.
pub async fn remove(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(device_name): Path<String>,
) -> ConsoleResult {
    let Ok(name) = inventory::device_name(&device_name) else {
        return Ok(error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not done",
            "Not a phone's device name.",
        ));
    };
    if console.store.remove_phone(&name, &user.username).await? {
        Ok(Redirect::to("/admin/phones").into_response())
    } else {
        Ok(error_page(
            StatusCode::NOT_FOUND,
            "No such phone",
            "This phone is not in the inventory.",
        ))
    }
}
