//! The incident page (`/incidents/{id}`): where to go and what to read to 911 on the left; the
//! claim, response level, 911 call, notes, resolution and timeline on the right. The "live"
//! part (state, claim, level, 911, timeline) is re-fetched from `/api/incidents/{id}/live` when
//! the stream reports a change, so every console shows the same claim within a second; the note
//! and resolution forms are never replaced under an officer's typing.

use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use uuid::Uuid;

use super::cameras::{CameraLink, links_for};
use super::incident_actions::DISPOSITIONS;
use super::incident_view::{IncidentView, TimelineEntry, incident};
use super::pages::{Layout, not_found_page, render, server_error};
use super::{Console, CurrentUser, live};

#[derive(Debug, Template)]
#[template(path = "incident_live.html")]
pub struct IncidentLive {
    pub csrf: String,
    pub me: String,
    pub incident: IncidentView,
    pub timeline: Vec<TimelineEntry>,
    pub levels: Vec<String>,
}

impl IncidentLive {
    pub fn level_selected(&self, level: &str) -> bool {
        self.incident.response_level.as_deref() == Some(level)
    }
}

#[derive(Debug, Template)]
#[template(path = "incident.html")]
struct IncidentPage {
    layout: Layout,
    live: IncidentLive,
    cameras: Vec<CameraLink>,
    dispositions: &'static [&'static str],
}

async fn load(
    console: &Console,
    user: &CurrentUser,
    id: &str,
) -> Result<Option<IncidentLive>, sqlx::Error> {
    let Ok(id) = Uuid::parse_str(id) else {
        return Ok(None);
    };
    Ok(incident(&console.pool, id)
        .await?
        .map(|(incident, timeline)| IncidentLive {
            csrf: user.csrf.clone(),
            me: user.username.clone(),
            incident,
            timeline,
            levels: console.settings.response_levels.clone(),
        }))
}

pub async fn page(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> Response {
    let last = match live::latest_id(&console.pool).await {
        Ok(id) => id,
        Err(e) => return server_error(e),
    };
    let live = match load(&console, &user, &id).await {
        Ok(Some(l)) => l,
        Ok(None) => return not_found_page(),
        Err(e) => return server_error(e),
    };
    let cameras = match links_for(&console.pool, &live.incident.location).await {
        Ok(c) => c,
        Err(e) => return server_error(e),
    };
    let title = live.incident.label.clone();
    render(&IncidentPage {
        layout: Layout::new(&user, "board", title).with_last_event_id(last),
        live,
        cameras,
        dispositions: DISPOSITIONS,
    })
}

/// `GET /api/incidents/{id}/live`: the live part alone.
pub async fn live_fragment(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> Response {
    match load(&console, &user, &id).await {
        Ok(Some(l)) => render(&l),
        Ok(None) => not_found_page(),
        Err(e) => server_error(e),
    }
}
