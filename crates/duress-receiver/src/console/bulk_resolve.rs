//! Bulk resolve: an officer picks several open incidents (all of one station, or ticked one by
//! one) and resolves them with one disposition and one follow-up note, in one request.
//!
//! Each incident goes through the single resolve's own rules in a transaction of its own
//! (`IncidentStore::resolve_incidents`): its timeline entry, `incident.resolve` audit entry,
//! live-log row and resolve notifications (DC-09 restore, CAP cancel, the channels' resolve
//! messages) are exactly a single resolve's. What a bulk resolve never does is force: an
//! incident already resolved, or claimed by another officer, is skipped and listed as such on
//! the answer page. At most [`MAX_BULK_RESOLVE`] incidents per request. Officers and admins
//! only (a duty display's credential cannot reach these routes); CSRF-checked by the guard.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;
use uuid::Uuid;

use super::error::ConsoleResult;
use super::incident_actions::{DISPOSITIONS, MAX_TEXT};
use super::incident_view::{IncidentView, open_incidents};
use super::pages::{Layout, error_page, render, render_status};
use super::{Console, CurrentUser};
use crate::store::{BulkResolveOutcome, MAX_BULK_RESOLVE};

#[derive(Debug, Deserialize)]
pub struct PickQuery {
    /// Pre-ticks the open incidents this station pressed in (`/stations` links here).
    #[serde(default)]
    device: Option<String>,
}

/// One open incident on the pick page.
#[derive(Debug)]
struct Pick {
    incident: IncidentView,
    ticked: bool,
}

#[derive(Debug, Template)]
#[template(path = "bulk_resolve.html")]
struct PickPage {
    layout: Layout,
    picks: Vec<Pick>,
    dispositions: &'static [&'static str],
    device: Option<String>,
    max: usize,
}

/// `GET /incidents/resolve-several[?device=ID]`: the open incidents, each with a checkbox.
pub async fn page(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Query(query): Query<PickQuery>,
) -> ConsoleResult {
    let device = query.device.filter(|d| !d.trim().is_empty());
    let picks = open_incidents(console.store.as_ref())
        .await?
        .into_iter()
        .map(|incident| Pick {
            ticked: device
                .as_ref()
                .is_some_and(|d| incident.stations.contains(d)),
            incident,
        })
        .collect();
    Ok(render(&PickPage {
        layout: Layout::new(&user, "board", "Resolve several incidents"),
        picks,
        dispositions: DISPOSITIONS,
        device,
        max: MAX_BULK_RESOLVE,
    }))
}

/// One incident of the answer page.
#[derive(Debug)]
struct Done {
    id: String,
    label: String,
    /// `resolved`, `claimed`, `resolved-already`, `not-found`, `failed`: a class for the page
    /// and its tests.
    class: &'static str,
    text: String,
}

#[derive(Debug, Template)]
#[template(path = "bulk_resolved.html")]
struct DonePage {
    layout: Layout,
    resolved: usize,
    skipped: usize,
    disposition: String,
    rows: Vec<Done>,
}

/// What the form sends, read from its pairs (`incident` repeats once per ticked box).
#[derive(Debug, Default, PartialEq, Eq)]
struct BulkForm {
    incidents: Vec<String>,
    disposition: String,
    follow_up: String,
}

impl BulkForm {
    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut form = BulkForm::default();
        for (key, value) in pairs {
            match key.as_str() {
                "incident" => form.incidents.push(value),
                "disposition" => form.disposition = value,
                "follow_up" => form.follow_up = value,
                _ => {}
            }
        }
        form
    }

    /// The checked request: distinct incident ids in the order given, the disposition and the
    /// note; or what the officer must change.
    fn check(&self) -> Result<Vec<Uuid>, String> {
        if !DISPOSITIONS.contains(&self.disposition.as_str()) {
            return Err("Choose a disposition.".into());
        }
        if self.follow_up.chars().count() > MAX_TEXT {
            return Err("The follow-up note is limited to 4000 characters.".into());
        }
        let mut ids: Vec<Uuid> = Vec::with_capacity(self.incidents.len());
        for text in &self.incidents {
            let id = Uuid::parse_str(text.trim())
                .map_err(|_| "The selection names something that is not an incident.".to_owned())?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Err("Tick at least one incident to resolve.".into());
        }
        if ids.len() > MAX_BULK_RESOLVE {
            return Err(format!(
                "At most {MAX_BULK_RESOLVE} incidents can be resolved at once; {} were ticked.",
                ids.len()
            ));
        }
        Ok(ids)
    }
}

/// `POST /incidents/resolve-several`: resolves the ticked incidents; answers with what
/// happened to each.
pub async fn resolve(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> ConsoleResult {
    let form = BulkForm::from_pairs(pairs);
    let ids = match form.check() {
        Ok(ids) => ids,
        Err(message) => {
            return Ok(error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Not done",
                &message,
            ));
        }
    };
    // Labels as the officer saw them on the pick page (read before: resolved ones leave the
    // open list).
    let labels: HashMap<String, String> = open_incidents(console.store.as_ref())
        .await?
        .into_iter()
        .map(|i| (i.id, i.label))
        .collect();
    let outcomes = console
        .store
        .resolve_incidents(&ids, &user.username, &form.disposition, &form.follow_up)
        .await?;
    Ok(answer(&user, &form.disposition, &labels, outcomes))
}

fn answer(
    user: &CurrentUser,
    disposition: &str,
    labels: &HashMap<String, String>,
    outcomes: Vec<(Uuid, BulkResolveOutcome)>,
) -> Response {
    let rows: Vec<Done> = outcomes
        .into_iter()
        .map(|(id, outcome)| {
            let id = id.to_string();
            let (class, text) = match outcome {
                BulkResolveOutcome::Resolved => ("resolved", "Resolved.".to_owned()),
                BulkResolveOutcome::ClaimedBy { username } => (
                    "claimed",
                    format!(
                        "Skipped: {username} is handling it. Coordinate with them, or open it and \
                         resolve it alone."
                    ),
                ),
                BulkResolveOutcome::AlreadyResolved => {
                    ("resolved-already", "Skipped: already resolved.".to_owned())
                }
                BulkResolveOutcome::NotFound => {
                    ("not-found", "Skipped: no such incident.".to_owned())
                }
                BulkResolveOutcome::Failed => (
                    "failed",
                    "Not saved: the receiver's storage failed. Try again.".to_owned(),
                ),
            };
            Done {
                label: labels
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| format!("Incident {}", &id[..8])),
                id,
                class,
                text,
            }
        })
        .collect();
    let resolved = rows.iter().filter(|r| r.class == "resolved").count();
    let failed = rows.iter().any(|r| r.class == "failed");
    let page = DonePage {
        layout: Layout::new(user, "board", "Incidents resolved"),
        resolved,
        skipped: rows.len() - resolved,
        disposition: disposition.to_owned(),
        rows,
    };
    let status = if failed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    render_status(status, &page)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_form_is_checked_before_anything_is_resolved() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let good = BulkForm::from_pairs(pairs(&[
            ("csrf", "x"),
            ("incident", &a.to_string()),
            ("incident", &b.to_string()),
            ("incident", &a.to_string()),
            ("disposition", "accidental"),
            ("follow_up", "stuck key"),
        ]));
        assert_eq!(good.check().unwrap(), vec![a, b], "distinct, in order");
        let no_disposition = BulkForm::from_pairs(pairs(&[("incident", &a.to_string())]));
        assert!(no_disposition.check().is_err());
        let none = BulkForm::from_pairs(pairs(&[("disposition", "test")]));
        assert_eq!(
            none.check().unwrap_err(),
            "Tick at least one incident to resolve."
        );
        let junk = BulkForm::from_pairs(pairs(&[("incident", "../x"), ("disposition", "test")]));
        assert!(junk.check().is_err());
        let long = "x".repeat(MAX_TEXT + 1);
        let too_long = BulkForm::from_pairs(pairs(&[
            ("incident", &a.to_string()),
            ("disposition", "test"),
            ("follow_up", &long),
        ]));
        assert!(too_long.check().is_err());
        let many: Vec<(String, String)> = (0..=MAX_BULK_RESOLVE)
            .map(|_| ("incident".to_owned(), Uuid::now_v7().to_string()))
            .chain([("disposition".to_owned(), "test".to_owned())])
            .collect();
        assert!(
            BulkForm::from_pairs(many)
                .check()
                .unwrap_err()
                .starts_with("At most 200")
        );
    }
}
