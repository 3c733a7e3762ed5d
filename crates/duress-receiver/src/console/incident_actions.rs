//! What officers do to an incident: claim (or take over), add a note, set the response level,
//! record the 911 call, resolve with a disposition and a follow-up note, reopen.
//!
//! Each action is one `BEGIN IMMEDIATE` transaction that checks the incident's current state,
//! changes it, and writes the timeline entry, the audit entry and the console event together;
//! only after COMMIT is the live feed poked. Two officers claiming at once therefore cannot both
//! win: the second sees the first's claim and must choose "take over" explicitly.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use sqlx::{Row as _, SqliteConnection};
use uuid::Uuid;

use super::pages::{Layout, Ts, error_page, render_status, server_error};
use super::{Console, CurrentUser, audit, live};
use crate::api::receiver_now;
use crate::store::format_ts;

/// Dispositions an incident is resolved with.
pub const DISPOSITIONS: &[&str] = &[
    "emergency",
    "no emergency found",
    "accidental",
    "test",
    "duplicate",
];
const MAX_TEXT: usize = 4000;

#[derive(Debug, Clone)]
pub enum Action {
    Claim {
        takeover: bool,
    },
    Note(String),
    Level(String),
    Called911,
    Resolve {
        disposition: String,
        follow_up: String,
    },
    Reopen,
}

impl Action {
    fn audit_name(&self) -> &'static str {
        match self {
            Action::Claim { .. } => "incident.claim",
            Action::Note(_) => "incident.note",
            Action::Level(_) => "incident.level",
            Action::Called911 => "incident.911",
            Action::Resolve { .. } => "incident.resolve",
            Action::Reopen => "incident.reopen",
        }
    }
}

/// Why an action was not applied.
#[derive(Debug)]
pub enum Refusal {
    NotFound,
    /// Someone else holds it; the officer must take over explicitly.
    ClaimedBy {
        username: String,
        at: Option<String>,
    },
    Invalid(String),
    Store(sqlx::Error),
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Self {
        Refusal::Store(e)
    }
}

/// Applies `action` by `actor` to incident `id` in one transaction, then wakes the live feed.
pub async fn apply(
    console: &Console,
    id: Uuid,
    actor: &str,
    action: Action,
) -> Result<(), Refusal> {
    validate(console, &action)?;
    let mut tx = console.pool.begin_with("BEGIN IMMEDIATE").await?;
    let changed = change(&mut tx, id, actor, &action).await?;
    if let Some((kind, text)) = changed {
        let now = receiver_now();
        sqlx::query("INSERT INTO incident_timeline (incident_id, at, actor, kind, text) VALUES (?, ?, ?, ?, ?)")
            .bind(id.to_string())
            .bind(format_ts(now))
            .bind(actor)
            .bind(kind)
            .bind(&text)
            .execute(&mut *tx)
            .await?;
        audit::append(
            &mut tx,
            now,
            actor,
            action.audit_name(),
            &id.to_string(),
            &text,
        )
        .await?;
        live::record(
            &mut tx,
            now,
            &format!("incident.{kind}"),
            Some(id),
            &serde_json::json!({ "actor": actor }),
        )
        .await?;
        tx.commit().await?;
        console.wake.notify_one();
    }
    Ok(())
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

/// The state change itself; `Some((timeline kind, text))` when something changed.
async fn change(
    conn: &mut SqliteConnection,
    id: Uuid,
    actor: &str,
    action: &Action,
) -> Result<Option<(&'static str, String)>, Refusal> {
    let row =
        sqlx::query("SELECT status, claimed_by, claimed_at FROM incidents WHERE incident_id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(Refusal::NotFound)?;
    let status: String = row.try_get("status")?;
    let claimed_by: Option<String> = row.try_get("claimed_by")?;
    let now = format_ts(receiver_now());
    let id = id.to_string();
    let open = status == "open";
    let closed_refusal = || Refusal::Invalid("This incident is resolved. Reopen it first.".into());
    match action {
        Action::Claim { takeover } => {
            if !open {
                return Err(closed_refusal());
            }
            let kind = match claimed_by.as_deref() {
                Some(who) if who == actor => return Ok(None),
                Some(who) if !takeover => {
                    return Err(Refusal::ClaimedBy {
                        username: who.to_owned(),
                        at: row.try_get("claimed_at")?,
                    });
                }
                Some(_) => "takeover",
                None => "claim",
            };
            sqlx::query(
                "UPDATE incidents SET claimed_by = ?, claimed_at = ?, first_claimed_at = COALESCE(first_claimed_at, ?)
                 WHERE incident_id = ?",
            )
            .bind(actor)
            .bind(&now)
            .bind(&now)
            .bind(&id)
            .execute(&mut *conn)
            .await?;
            let text = match claimed_by {
                Some(previous) => format!("{actor} took over from {previous}"),
                None => format!("{actor} is handling this incident"),
            };
            Ok(Some((kind, text)))
        }
        Action::Note(text) => Ok(Some(("note", text.trim().to_owned()))),
        Action::Level(level) => {
            sqlx::query("UPDATE incidents SET response_level = ? WHERE incident_id = ?")
                .bind(level)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            Ok(Some(("level", level.clone())))
        }
        Action::Called911 => {
            sqlx::query("UPDATE incidents SET called_911_at = ? WHERE incident_id = ?")
                .bind(&now)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            Ok(Some((
                "911",
                format!("911 called at {}", Ts::from_text(&now).text),
            )))
        }
        Action::Resolve {
            disposition,
            follow_up,
        } => {
            if !open {
                return Err(Refusal::Invalid(
                    "This incident is already resolved.".into(),
                ));
            }
            sqlx::query(
                "UPDATE incidents SET status = 'closed', resolved_at = ?, resolved_by = ?, disposition = ?, follow_up = ?
                 WHERE incident_id = ?",
            )
            .bind(&now)
            .bind(actor)
            .bind(disposition)
            .bind(follow_up.trim())
            .bind(&id)
            .execute(&mut *conn)
            .await?;
            let mut text = format!("Disposition: {disposition}");
            if !follow_up.trim().is_empty() {
                text.push_str(&format!(". Follow-up: {}", follow_up.trim()));
            }
            Ok(Some(("resolve", text)))
        }
        Action::Reopen => {
            if open {
                return Ok(None);
            }
            sqlx::query(
                "UPDATE incidents SET status = 'open', resolved_at = NULL, resolved_by = NULL, disposition = NULL,
                        follow_up = NULL WHERE incident_id = ?",
            )
            .bind(&id)
            .execute(&mut *conn)
            .await?;
            Ok(Some(("reopen", format!("{actor} reopened the incident"))))
        }
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
                at: Ts::opt(at.as_deref()),
            },
        ),
        Err(Refusal::Invalid(message)) => {
            error_page(StatusCode::UNPROCESSABLE_ENTITY, "Not done", &message)
        }
        Err(Refusal::Store(e)) => server_error(e),
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
