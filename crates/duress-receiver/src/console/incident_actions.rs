//! What officers do to an incident: claim (or take over), add a note, set the response level,
//! record the 911 call, resolve with a disposition and a follow-up note, reopen.
//!
//! Each action is one store transaction that checks the incident's current state, changes it,
//! and writes the timeline entry, the audit entry and the live-log row together; only after
//! COMMIT is the live feed poked. Two officers claiming at once therefore cannot both win: the
//! second sees the first's claim and must choose "take over" explicitly.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use uuid::Uuid;

use super::error::ConsoleError;
use super::pages::{Layout, Ts, error_page, render_status};
use super::{Console, CurrentUser};
use crate::store::{ActionOutcome, StoreError};

/// Dispositions an incident is resolved with.
pub const DISPOSITIONS: &[&str] = &[
    "emergency",
    "no emergency found",
    "accidental",
    "test",
    "duplicate",
];
/// The longest note or follow-up an officer may write (characters).
pub const MAX_TEXT: usize = 4000;

pub use crate::store::IncidentAction as Action;

/// Why an action was not applied.
#[derive(Debug)]
pub enum Refusal {
    NotFound,
    /// Someone else holds it; the officer must take over explicitly.
    ClaimedBy {
        username: String,
        at: Option<time::OffsetDateTime>,
    },
    Invalid(String),
    Store(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

/// Applies `action` by `actor` to incident `id`: checks the input here, then the store checks
/// the incident's state and writes the change with its timeline, audit and live rows in one
/// transaction.
pub async fn apply(
    console: &Console,
    id: Uuid,
    actor: &str,
    action: Action,
) -> Result<(), Refusal> {
    validate(console, &action)?;
    match console.store.apply_action(id, actor, action).await? {
        ActionOutcome::Changed | ActionOutcome::Unchanged => Ok(()),
        ActionOutcome::NotFound => Err(Refusal::NotFound),
        ActionOutcome::ClaimedBy { username, at } => Err(Refusal::ClaimedBy { username, at }),
        ActionOutcome::Refused(message) => Err(Refusal::Invalid(message)),
    }
}

fn validate(console: &Console, action: &Action) -> Result<(), Refusal> {
    let too_long = |t: &str| t.chars().count() > MAX_TEXT;
    match action {
        Action::Note(t) if t.trim().is_empty() => {
            Err(Refusal::Invalid("A note cannot be empty.".into()))
        }
        Action::Note(t) if too_long(t) => Err(Refusal::Invalid(
            "A note is limited to 4000 characters.".into(),
        )),
        Action::Level(l) if !console.settings.response_levels.iter().any(|x| x == l) => {
            Err(Refusal::Invalid("Unknown response level.".into()))
        }
        Action::Resolve { disposition, .. } if !DISPOSITIONS.contains(&disposition.as_str()) => {
            Err(Refusal::Invalid("Choose a disposition.".into()))
        }
        Action::Resolve { follow_up, .. } if too_long(follow_up) => Err(Refusal::Invalid(
            "The follow-up note is limited to 4000 characters.".into(),
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, Template)]
#[template(path = "claim_conflict.html")]
struct ClaimConflict {
    layout: Layout,
    id: String,
    username: String,
    at: Option<Ts>,
}

fn answer(
    console: &Console,
    user: &CurrentUser,
    id: Uuid,
    result: Result<(), Refusal>,
    back_to_board: bool,
) -> Response {
    let _ = console;
    match result {
        Ok(()) if back_to_board => Redirect::to("/").into_response(),
        Ok(()) => Redirect::to(&format!("/incidents/{id}")).into_response(),
        Err(Refusal::NotFound) => error_page(
            StatusCode::NOT_FOUND,
            "No such incident",
            "This incident does not exist.",
        ),
        Err(Refusal::ClaimedBy { username, at }) => render_status(
            StatusCode::CONFLICT,
            &ClaimConflict {
                layout: Layout::new(user, "board", "Already claimed"),
                id: id.to_string(),
                username,
                at: at.map(Ts::new),
            },
        ),
        Err(Refusal::Invalid(message)) => {
            error_page(StatusCode::UNPROCESSABLE_ENTITY, "Not done", &message)
        }
        Err(Refusal::Store(e)) => ConsoleError::from(e).into_response(),
    }
}

fn parse_id(id: &str) -> Option<Uuid> {
    Uuid::parse_str(id).ok()
}

macro_rules! incident_id_or_404 {
    ($id:expr) => {
        match parse_id(&$id) {
            Some(id) => id,
            None => {
                return error_page(
                    StatusCode::NOT_FOUND,
                    "No such incident",
                    "This incident does not exist.",
                )
            }
        }
    };
}

#[derive(Debug, Deserialize)]
pub struct ClaimForm {
    #[serde(default)]
    takeover: Option<String>,
    /// `board`: go back to the board afterwards.
    #[serde(default)]
    from: Option<String>,
}

pub async fn claim(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
    Form(form): Form<ClaimForm>,
) -> Response {
    let id = incident_id_or_404!(id);
    let takeover = form.takeover.as_deref() == Some("1");
    let result = apply(&console, id, &user.username, Action::Claim { takeover }).await;
    answer(
        &console,
        &user,
        id,
        result,
        form.from.as_deref() == Some("board"),
    )
}

#[derive(Debug, Deserialize)]
pub struct NoteForm {
    #[serde(default)]
    text: String,
}

pub async fn note(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
    Form(form): Form<NoteForm>,
) -> Response {
    let id = incident_id_or_404!(id);
    let result = apply(&console, id, &user.username, Action::Note(form.text)).await;
    answer(&console, &user, id, result, false)
}

#[derive(Debug, Deserialize)]
pub struct LevelForm {
    #[serde(default)]
    level: String,
}

pub async fn level(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
    Form(form): Form<LevelForm>,
) -> Response {
    let id = incident_id_or_404!(id);
    let result = apply(&console, id, &user.username, Action::Level(form.level)).await;
    answer(&console, &user, id, result, false)
}

pub async fn called_911(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> Response {
    let id = incident_id_or_404!(id);
    let result = apply(&console, id, &user.username, Action::Called911).await;
    answer(&console, &user, id, result, false)
}

#[derive(Debug, Deserialize)]
pub struct ResolveForm {
    #[serde(default)]
    disposition: String,
    #[serde(default)]
    follow_up: String,
}

pub async fn resolve(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
    Form(form): Form<ResolveForm>,
) -> Response {
    let id = incident_id_or_404!(id);
    let action = Action::Resolve {
        disposition: form.disposition,
        follow_up: form.follow_up,
    };
    let result = apply(&console, id, &user.username, action).await;
    answer(&console, &user, id, result, false)
}

pub async fn reopen(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> Response {
    let id = incident_id_or_404!(id);
    let result = apply(&console, id, &user.username, Action::Reopen).await;
    answer(&console, &user, id, result, false)
}
