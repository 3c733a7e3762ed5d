//! The live board (`/`): open incidents, newest first, each with its location label large, the
//! civic address ready to read to 911, who pressed where, and who is handling it. Recent
//! self-tests are listed apart, greyed and silent. The page script re-fetches
//! `/api/board` (the same list, server-rendered and escaped) whenever the live stream says
//! something changed, and `/api/alarm` to decide the sound and the title.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::{Extension, Json};

use super::error::ConsoleResult;
use super::floor_plan_marks::FloorPlanMarks;
use super::incident_view::{IncidentView, SelfTestView, open_incidents, recent_self_tests};
use super::pages::{Layout, render};
use super::{Console, CurrentUser};

#[derive(Debug, Template)]
#[template(path = "board_list.html")]
pub struct BoardList {
    pub csrf: String,
    pub incidents: Vec<IncidentView>,
    pub self_tests: Vec<SelfTestView>,
    /// A receiver problem officers should know of (the free-disk watermark): shown above the
    /// incidents, on every refresh of the list.
    pub trouble: Option<String>,
    /// Each incident's room on its floor plan (shown once any plan was uploaded).
    pub floor_plans: FloorPlanMarks,
}

#[derive(Debug, Template)]
#[template(path = "board.html")]
struct BoardPage {
    layout: Layout,
    list: BoardList,
}

async fn load_list(console: &Console, user: &CurrentUser) -> ConsoleResult<BoardList> {
    Ok(BoardList {
        csrf: user.csrf.clone(),
        incidents: open_incidents(console.store.as_ref()).await?,
        self_tests: recent_self_tests(console.store.as_ref(), 5).await?,
        floor_plans: FloorPlanMarks::load(console.store.as_ref()).await?,
        trouble: console
            .settings
            .disk
            .as_ref()
            .and_then(|d| d.low())
            .map(|low| {
                format!(
                    "{}. Test events and heartbeats are refused until an administrator frees space \
                 (stations may show as stale); alarms are still accepted.",
                    low.describe()
                )
            }),
    })
}

pub async fn page(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> ConsoleResult {
    // The id first: anything committed after it reaches the page through the stream.
    let last = console.store.live_latest_id().await?;
    let list = load_list(&console, &user).await?;
    Ok(render(&BoardPage {
        layout: Layout::new(&user, "board", "Board").with_last_event_id(last),
        list,
    }))
}

/// `GET /api/board`: the list alone, for the page script.
pub async fn list_fragment(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> ConsoleResult {
    Ok(render(&load_list(&console, &user).await?))
}

#[derive(Debug, serde::Serialize)]
pub struct AlarmState {
    /// Open incidents nobody has claimed: the alarm sounds while this is above zero.
    pub unclaimed: usize,
    /// Of those, escalated ones: the sound changes.
    pub escalated: usize,
    pub open: usize,
    /// The newest unclaimed incident, for the flashing title.
    pub label: Option<String>,
    pub incident_id: Option<String>,
    pub last_event_id: i64,
}

/// `GET /api/alarm`: what every console page needs to decide its sound and title.
pub async fn alarm_state(State(console): State<Arc<Console>>) -> ConsoleResult {
    let last_event_id = console.store.live_latest_id().await?;
    let open = open_incidents(console.store.as_ref()).await?;
    let unclaimed: Vec<&IncidentView> = open.iter().filter(|i| i.needs_claim()).collect();
    Ok(Json(AlarmState {
        unclaimed: unclaimed.len(),
        escalated: unclaimed.iter().filter(|i| i.is_escalated()).count(),
        open: open.len(),
        label: unclaimed.first().map(|i| i.label.clone()),
        incident_id: unclaimed.first().map(|i| i.id.clone()),
        last_event_id,
    })
    .into_response())
}
