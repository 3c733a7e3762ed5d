//! The incident page (`/incidents/{id}`): where to go and what to read to 911 on the left; the
//! claim, response level, 911 call, notes, resolution and timeline on the right. The "live"
//! part (state, claim, level, 911, timeline) is re-fetched from `/api/incidents/{id}/live` when
//! the stream reports a change, so every console shows the same claim within a second; the note
//! and resolution forms are never replaced under an officer's typing.

use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use uuid::Uuid;

use super::cameras::{CameraLink, links_for};
use super::error::{ConsoleError, ConsoleResult};
use super::floor_plan_marks::{FloorPlanMark, FloorPlanMarks};
use super::incident_actions::DISPOSITIONS;
use super::incident_view::{IncidentView, TimelineEntry, incident};
use super::pages::{Layout, render};
use super::{Console, CurrentUser};

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
    notifications: Vec<NotificationView>,
    /// The room on its floor plan (or why not).
    floor_plan: FloorPlanMark,
}

impl IncidentPage {
    fn floor_plan_mark(&self) -> &FloorPlanMark {
        &self.floor_plan
    }
}

/// One outbox row of the incident, with its attempts (what was sent where, and how it went).
#[derive(Debug)]
struct NotificationView {
    channel: String,
    step_text: String,
    status: String,
    due: String,
    attempts: Vec<AttemptView>,
}

#[derive(Debug)]
struct AttemptView {
    at: String,
    outcome: String,
    http_status: Option<u16>,
    error: Option<String>,
}

fn hms(t: time::OffsetDateTime) -> String {
    crate::store::format_ts(t)
}

fn notification_views(rows: Vec<crate::store::NotificationRecord>) -> Vec<NotificationView> {
    rows.into_iter()
        .map(|n| NotificationView {
            step_text: format!(
                "{} step {}{}",
                n.ladder.as_deref().unwrap_or("-"),
                n.step + 1,
                if n.repeat_index > 0 {
                    format!(", repeat {}", n.repeat_index)
                } else {
                    String::new()
                }
            ),
            channel: n.channel,
            status: n.status,
            due: hms(n.due_at),
            attempts: n
                .attempts
                .into_iter()
                .map(|a| AttemptView {
                    at: hms(a.at),
                    outcome: a.outcome,
                    http_status: a.http_status,
                    error: a.error,
                })
                .collect(),
        })
        .collect()
}

async fn load(console: &Console, user: &CurrentUser, id: &str) -> ConsoleResult<IncidentLive> {
    let id =
        Uuid::parse_str(id).map_err(|_| ConsoleError::NotFound("There is no such incident."))?;
    let (incident, timeline) = incident(console.store.as_ref(), id)
        .await?
        .ok_or(ConsoleError::NotFound("There is no such incident."))?;
    Ok(IncidentLive {
        csrf: user.csrf.clone(),
        me: user.username.clone(),
        incident,
        timeline,
        levels: console.settings.response_levels.clone(),
    })
}

pub async fn page(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> ConsoleResult {
    // The id first: anything committed after it reaches the page through the stream.
    let last = console.store.live_latest_id().await?;
    let live = load(&console, &user, &id).await?;
    let cameras = links_for(
        console.store.as_ref(),
        console.config.as_deref(),
        &live.incident.location,
    )
    .await?;
    let title = live.incident.label.clone();
    let floor_plan = FloorPlanMarks::load(console.store.as_ref())
        .await?
        .mark_for(&live.incident);
    let notifications = notification_views(
        console
            .store
            .incident_notifications(
                Uuid::parse_str(&live.incident.id)
                    .map_err(|_| ConsoleError::NotFound("There is no such incident."))?,
            )
            .await?,
    );
    Ok(render(&IncidentPage {
        notifications,
        floor_plan,
        layout: Layout::new(&user, "board", title).with_last_event_id(last),
        live,
        cameras,
        dispositions: DISPOSITIONS,
    }))
}

/// `GET /api/incidents/{id}/live`: the live part alone.
pub async fn live_fragment(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> ConsoleResult {
    Ok(render(&load(&console, &user, &id).await?))
}
