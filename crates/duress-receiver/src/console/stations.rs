//! The stations page: every enrolled device with its label, location, liveness (online /
//! stale / offline from its last heartbeat), chord state, agent version and last self-test;
//! filters by state and text; enrollment tokens; approve (registering the station's location),
//! disable, revoke, retire and edit the registered location (admins only, officers see the page
//! read-only). Each station shows its registered location first, the claimed one when it
//! differs, and a "location drift" flag when its latest address is in a subnet mapped elsewhere.
//! Retired stations are left out of the list and the counts unless the `retired` filter asks
//! for them: a station taken out of service is neither offline nor part of the fleet.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use duress_core::{DeviceStatus, HotkeyState, Location};
use serde::Deserialize;
use time::OffsetDateTime;

use super::error::{ConsoleError, ConsoleResult};
use super::incident_view::shown;
use super::pages::{Layout, Ts, error_page, human_duration, render};
use super::{Console, CurrentUser};
use crate::api::receiver_now;
use crate::records::{DeviceRecord, SelfTestState};
use crate::store::{Approve, NewToken, StoreError, Subnet};
use crate::subnets::{Drift, locations_differ};

/// Liveness from heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Online,
    Stale,
    Offline,
    /// Never sent a heartbeat.
    Never,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Online => "online",
            Liveness::Stale => "stale",
            Liveness::Offline => "offline",
            Liveness::Never => "never seen",
        }
    }
}

/// Stale after one interval + grace without a heartbeat, offline after two intervals + grace.
pub fn liveness(
    last: Option<OffsetDateTime>,
    now: OffsetDateTime,
    interval: Duration,
    grace: Duration,
) -> Liveness {
    let Some(last) = last else {
        return Liveness::Never;
    };
    let age = (now - last).unsigned_abs();
    if age <= interval + grace {
        Liveness::Online
    } else if age <= interval * 2 + grace {
        Liveness::Stale
    } else {
        Liveness::Offline
    }
}

/// "7 days", "1 day", or the usual duration text for a period that is not whole days.
fn period_text(period: Duration) -> String {
    match period.as_secs() {
        86_400 => "1 day".to_owned(),
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        _ => human_duration(i64::try_from(period.as_millis()).unwrap_or(i64::MAX)),
    }
}

/// The state filter (and status) of retired stations, which no other view lists.
const RETIRED: &str = "retired";

/// The state filter that lists the stations flagged for their self-test.
const SELF_TEST_FILTER: &str = "self-test overdue";

#[derive(Debug, Clone)]
pub struct StationView {
    pub device_id: String,
    pub label: String,
    pub civic: String,
    pub hostname: String,
    pub user: String,
    /// `retired` for a retired station, else the device status.
    pub status: String,
    pub retired: bool,
    pub liveness: &'static str,
    pub last_heartbeat: Option<Ts>,
    pub last_heartbeat_age: String,
    pub chord_ok: bool,
    pub chord: String,
    pub agent_version: String,
    pub last_self_test: Option<Ts>,
    /// `ok`, `overdue`, `never`, or empty for a station that is not active.
    pub self_test: &'static str,
    /// Not tested within the self-test period: flagged.
    pub self_test_flagged: bool,
    pub queued: u64,
    /// Why the station's queued alarm is being refused, as its latest heartbeat says (empty:
    /// nothing refused). Shown as "alert not accepted by the receiver: …" (issue 12).
    pub alarm_refused: String,
    /// The first 12 hex digits of the station's policy SHA-256, and where it came from
    /// (empty before a heartbeat reported them).
    pub policy_short: String,
    pub policy_source: String,
    /// The station's policy hash differs from the fleet's majority.
    pub policy_differs: bool,
    /// The registered location's label ("" when not registered) and whether the claimed one
    /// differs from it.
    pub registered: String,
    pub claimed_differs: bool,
    /// What the location forms start from: the registered location, else the claimed one.
    pub form: LocationFields,
    /// The latest heartbeat's or event's address is in a subnet mapped elsewhere.
    pub drift: Option<Drift>,
    pub last_addr: String,
    /// RFC 7638 thumbprint of the device key: what an approver compares with the one
    /// `duress-agent status` shows on the workstation.
    pub thumbprint: String,
}

/// The four fields the approval and edit forms show.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LocationFields {
    #[serde(default)]
    pub label: String,
    #[serde(default, rename = "BLD")]
    pub bld: String,
    #[serde(default, rename = "FLR")]
    pub flr: String,
    #[serde(default, rename = "ROOM")]
    pub room: String,
}

impl LocationFields {
    fn of(l: &Location) -> Self {
        let f = |v: &Option<String>| v.clone().unwrap_or_default();
        LocationFields {
            label: f(&l.label),
            bld: f(&l.bld),
            flr: f(&l.flr),
            room: f(&l.room),
        }
    }

    fn is_empty(&self) -> bool {
        [&self.label, &self.bld, &self.flr, &self.room]
            .iter()
            .all(|v| v.trim().is_empty())
    }

    /// `base` (the station's registered, else claimed, location: its civic address is kept)
    /// with these four fields, an empty one removed.
    fn apply(&self, base: &Location) -> Result<Location, String> {
        crate::subnets::with_fields(base, &self.label, &self.bld, &self.flr, &self.room)
    }
}

/// The policy hash most stations report (`None` when none report one, or when two hashes tie
/// for first: then no station is flagged, since no policy is the fleet's).
pub fn fleet_policy(devices: &[DeviceRecord]) -> Option<String> {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for h in devices.iter().filter_map(|d| d.policy_sha256.as_deref()) {
        *counts.entry(h).or_default() += 1;
    }
    let best = counts.values().copied().max()?;
    let mut top = counts.iter().filter(|(_, n)| **n == best);
    let (hash, _) = top.next()?;
    if top.next().is_some() {
        return None;
    }
    Some((*hash).to_owned())
}

impl StationView {
    fn new(
        d: &DeviceRecord,
        now: OffsetDateTime,
        console: &Console,
        fleet_policy: Option<&str>,
        subnets: &[Subnet],
    ) -> Self {
        let interval = Duration::from_secs(console.heartbeat_interval_s);
        let live = liveness(
            d.last_heartbeat_at,
            now,
            interval,
            console.settings.station_grace,
        );
        let (chord_ok, chord) = match &d.hotkey {
            Some(HotkeyState::Registered { chords }) => {
                (true, format!("registered: {}", shown(&chords.join(", "))))
            }
            Some(HotkeyState::Unavailable { reason }) => {
                (false, format!("unavailable: {}", shown(reason)))
            }
            Some(HotkeyState::NotApplicable) => (true, "no chord (headless engine)".into()),
            None => (false, "unknown (no heartbeat yet)".into()),
        };
        let self_test = d.self_test_state(now, console.settings.self_test_period);
        let expected = d.registered_location.as_ref().unwrap_or(&d.location);
        StationView {
            registered: d
                .registered_location
                .as_ref()
                .map(Location::display_label)
                .unwrap_or_default(),
            claimed_differs: d
                .registered_location
                .as_ref()
                .is_some_and(|r| locations_differ(r, &d.location)),
            form: LocationFields::of(expected),
            drift: crate::subnets::drift(subnets, d.last_addr.as_deref(), expected),
            last_addr: d.last_addr.clone().unwrap_or_default(),
            thumbprint: d.key_thumbprint.clone(),
            device_id: d.device_id.clone(),
            label: d.location.display_label(),
            civic: d.location.civic_address(),
            hostname: shown(&d.hostname),
            user: shown(&d.host.user),
            status: if d.retired_at.is_some() {
                RETIRED.to_owned()
            } else {
                d.status.as_str().to_owned()
            },
            retired: d.retired_at.is_some(),
            liveness: live.as_str(),
            last_heartbeat: d.last_heartbeat_at.map(Ts::new),
            last_heartbeat_age: d
                .last_heartbeat_at
                .map(|t| {
                    format!(
                        "{} ago",
                        human_duration((now - t).whole_milliseconds() as i64)
                    )
                })
                .unwrap_or_default(),
            chord_ok,
            chord,
            agent_version: shown(&d.agent_version),
            last_self_test: d.last_self_test_at.map(Ts::new),
            self_test: self_test.map_or("", SelfTestState::as_str),
            self_test_flagged: self_test.is_some_and(SelfTestState::is_flagged),
            queued: d.queued.unwrap_or(0),
            alarm_refused: shown(d.alarm_refused.as_deref().unwrap_or_default()),
            policy_short: d
                .policy_sha256
                .as_deref()
                .map(|h| h.chars().take(12).collect())
                .unwrap_or_default(),
            policy_source: shown(d.policy_source.as_deref().unwrap_or_default()),
            policy_differs: matches!(
                (fleet_policy, d.policy_sha256.as_deref()),
                (Some(fleet), Some(own)) if fleet != own
            ),
        }
    }

    fn matches(&self, q: &str) -> bool {
        let q = q.to_lowercase();
        [
            &self.label,
            &self.civic,
            &self.hostname,
            &self.user,
            &self.device_id,
            &self.agent_version,
            &self.registered,
        ]
        .iter()
        .any(|f| f.to_lowercase().contains(&q))
    }
}

#[derive(Debug, Clone)]
pub struct TokenView {
    pub token_hash: String,
    pub short: String,
    pub approve: String,
    pub uses_left: i64,
    pub expires: String,
    pub state: &'static str,
    pub created: Ts,
}

#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub q: String,
}

#[derive(Debug, Template)]
#[template(path = "stations.html")]
struct StationsPage {
    layout: Layout,
    stations: Vec<StationView>,
    total: usize,
    filters: Filters,
    tokens: Vec<TokenView>,
    new_token: Option<String>,
    counts: [(&'static str, usize); 4],
    /// Retired stations (listed only under the `retired` filter).
    retired_count: usize,
    /// Active stations not tested within the period.
    self_test_flagged: usize,
    /// The period, for the page's explanation ("7 d").
    self_test_period: String,
    /// Stations flagged for location drift.
    drift_flagged: usize,
}

/// The state filter that lists the stations flagged for location drift.
const DRIFT_FILTER: &str = "location drift";

async fn tokens(console: &Console, now: OffsetDateTime) -> ConsoleResult<Vec<TokenView>> {
    Ok(console
        .store
        .list_tokens(100)
        .await?
        .into_iter()
        .map(|t| {
            let expired = t.expires_at.is_some_and(|e| e <= now);
            TokenView {
                short: t.token_hash.chars().take(8).collect(),
                approve: t.approve.as_str().to_owned(),
                uses_left: t.uses_left,
                expires: t
                    .expires_at
                    .map(|e| Ts::new(e).text)
                    .unwrap_or_else(|| "never".into()),
                state: if t.revoked {
                    "revoked"
                } else if expired {
                    "expired"
                } else if t.uses_left <= 0 {
                    "used up"
                } else {
                    "valid"
                },
                created: Ts::new(t.created_at),
                token_hash: t.token_hash,
            }
        })
        .collect())
}

async fn render_page(
    console: &Console,
    user: &CurrentUser,
    filters: Filters,
    new_token: Option<String>,
) -> ConsoleResult {
    let now = receiver_now();
    let devices = console.store.list_devices().await?;
    let fleet = fleet_policy(&devices);
    let subnets = console.store.subnets().await?;
    let (retired, all): (Vec<StationView>, Vec<StationView>) = devices
        .iter()
        .map(|d| StationView::new(d, now, console, fleet.as_deref(), &subnets))
        .partition(|v| v.retired);
    // Retired stations are never counted (nor "offline"), and listed only under their filter.
    let retired_count = retired.len();
    let count = |s: &str| all.iter().filter(|v| v.liveness == s).count();
    let counts = [
        ("online", count("online")),
        ("stale", count("stale")),
        ("offline", count("offline")),
        ("never seen", count("never seen")),
    ];
    let total = all.len();
    let self_test_flagged = all.iter().filter(|v| v.self_test_flagged).count();
    let drift_flagged = all.iter().filter(|v| v.drift.is_some()).count();
    let listed = if filters.state == RETIRED {
        retired
    } else {
        all
    };
    let stations = listed
        .into_iter()
        .filter(|s| {
            filters.state.is_empty()
                || filters.state == RETIRED
                || s.liveness == filters.state
                || s.status == filters.state
                || (filters.state == SELF_TEST_FILTER && s.self_test_flagged)
                || (filters.state == DRIFT_FILTER && s.drift.is_some())
        })
        .filter(|s| filters.q.trim().is_empty() || s.matches(filters.q.trim()))
        .collect();
    let tokens = if user.is_admin() {
        tokens(console, now).await?
    } else {
        Vec::new()
    };
    Ok(render(&StationsPage {
        layout: Layout::new(user, "stations", "Stations"),
        stations,
        total,
        filters,
        tokens,
        new_token,
        counts,
        retired_count,
        self_test_flagged,
        self_test_period: period_text(console.settings.self_test_period),
        drift_flagged,
    }))
}

pub async fn page(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Query(filters): Query<Filters>,
) -> ConsoleResult {
    render_page(&console, &user, filters, None).await
}

#[derive(Debug, Deserialize)]
pub struct StatusForm {
    #[serde(default)]
    status: String,
}

/// `POST /stations/{device_id}/status` (admin): approve (active), disable or revoke.
pub async fn set_status(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(device_id): Path<String>,
    Form(form): Form<StatusForm>,
) -> ConsoleResult {
    let Some(status) = DeviceStatus::parse(&form.status).filter(|s| *s != DeviceStatus::Pending)
    else {
        return Ok(error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not done",
            "Unknown device status.",
        ));
    };
    match console
        .store
        .set_device_status(&device_id, status, &user.username)
        .await
    {
        Ok(()) => Ok(Redirect::to("/stations").into_response()),
        Err(StoreError::NoSuchDevice(_)) => Ok(error_page(
            StatusCode::NOT_FOUND,
            "No such station",
            "This device is not enrolled.",
        )),
        Err(StoreError::Refused(m)) => Ok(error_page(StatusCode::CONFLICT, "Not done", &m)),
        Err(e) => Err(e.into()),
    }
}

/// A refused store call as the page an admin sees.
fn refusal_page(e: StoreError) -> ConsoleResult {
    match e {
        StoreError::NoSuchDevice(_) => Ok(error_page(
            StatusCode::NOT_FOUND,
            "No such station",
            "This device is not enrolled.",
        )),
        StoreError::Refused(m) => Ok(error_page(StatusCode::CONFLICT, "Not done", &m)),
        e => Err(e.into()),
    }
}

/// The station's stored record (for the base of its registered location).
async fn device(console: &Console, device_id: &str) -> ConsoleResult<Option<DeviceRecord>> {
    Ok(console
        .store
        .list_devices()
        .await?
        .into_iter()
        .find(|d| d.device_id == device_id))
}

/// `POST /stations/{device_id}/approve` (admin): approves a pending station and registers the
/// location the approver confirmed (label, BLD, FLR, ROOM; prefilled from the claimed one), in
/// one audited transaction.
pub async fn approve(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(device_id): Path<String>,
    Form(form): Form<LocationFields>,
) -> ConsoleResult {
    let Some(d) = device(&console, &device_id).await? else {
        return refusal_page(StoreError::NoSuchDevice(device_id));
    };
    // All four fields empty (a station that claims no location, and an approver who knows
    // none yet): approved without a registered location, which can be set later.
    let location = if form.is_empty() {
        None
    } else {
        match form.apply(&d.location) {
            Ok(l) => Some(l),
            Err(m) => return Ok(error_page(StatusCode::UNPROCESSABLE_ENTITY, "Not done", &m)),
        }
    };
    match console
        .store
        .approve_device(&device_id, location, &user.username)
        .await
    {
        Ok(()) => Ok(Redirect::to("/stations").into_response()),
        Err(e) => refusal_page(e),
    }
}

/// `POST /stations/{device_id}/location` (admin): sets the station's registered location;
/// all four fields empty clears it. Audited with the old and new values.
pub async fn set_location(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(device_id): Path<String>,
    Form(form): Form<LocationFields>,
) -> ConsoleResult {
    let Some(d) = device(&console, &device_id).await? else {
        return refusal_page(StoreError::NoSuchDevice(device_id));
    };
    let location = if form.is_empty() {
        None
    } else {
        let base = d.registered_location.as_ref().unwrap_or(&d.location);
        match form.apply(base) {
            Ok(l) => Some(l),
            Err(m) => return Ok(error_page(StatusCode::UNPROCESSABLE_ENTITY, "Not done", &m)),
        }
    };
    match console
        .store
        .set_registered_location(&device_id, location, &user.username)
        .await
    {
        Ok(()) => Ok(Redirect::to("/stations").into_response()),
        Err(e) => refusal_page(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct ResolveOpenForm {
    #[serde(default)]
    note: String,
    /// The confirm step's checkbox (`yes`): the action cannot be undone in one step.
    #[serde(default)]
    confirm: String,
}

/// `POST /stations/{device_id}/resolve-open` (admin): resolves every open incident of the
/// station, with a required note and a confirmation; one audit entry and live row per
/// incident (the store does it in one transaction). Answers with how many were resolved.
pub async fn resolve_open(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(device_id): Path<String>,
    Form(form): Form<ResolveOpenForm>,
) -> ConsoleResult {
    if form.confirm != "yes" {
        return Ok(error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not done",
            "Tick the confirmation to resolve every open incident of this station.",
        ));
    }
    let note = match crate::admin::resolve_open_note(&form.note) {
        Ok(note) => note,
        Err(m) => return Ok(error_page(StatusCode::UNPROCESSABLE_ENTITY, "Not done", &m)),
    };
    match console
        .store
        .resolve_open_of_device(
            &device_id,
            &user.username,
            crate::admin::RESOLVE_OPEN_DISPOSITION,
            note,
        )
        .await
    {
        Ok(resolved) => Ok(error_page(
            StatusCode::OK,
            "Done",
            &format!(
                "{} open incident(s) of this station resolved (disposition: {}), each recorded \
                 in the audit log.",
                resolved.len(),
                crate::admin::RESOLVE_OPEN_DISPOSITION
            ),
        )),
        Err(StoreError::NoSuchDevice(_)) => Ok(error_page(
            StatusCode::NOT_FOUND,
            "No such station",
            "This device is not enrolled.",
        )),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct RetireForm {
    #[serde(default)]
    confirm: String,
}

/// `POST /stations/{device_id}/retire` (admin): retires the station for good once the form's
/// confirmation box is ticked (`confirm=yes`; the button also asks). Without it nothing
/// changes.
pub async fn retire(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(device_id): Path<String>,
    Form(form): Form<RetireForm>,
) -> ConsoleResult {
    if form.confirm != "yes" {
        return Ok(error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not done",
            "Tick \"retire for good\" to confirm: a retired station can never raise an alarm \
             again and must enroll anew with a new key.",
        ));
    }
    match console
        .store
        .retire_device(&device_id, &user.username)
        .await
    {
        Ok(_) => Ok(Redirect::to("/stations").into_response()),
        Err(StoreError::NoSuchDevice(_)) => Ok(error_page(
            StatusCode::NOT_FOUND,
            "No such station",
            "This device is not enrolled.",
        )),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    uses: Option<u32>,
    #[serde(default)]
    expires_hours: Option<u32>,
    #[serde(default)]
    approve: String,
}

/// `POST /stations/tokens` (admin): creates a token and shows it once.
pub async fn create_token(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Form(form): Form<TokenForm>,
) -> ConsoleResult {
    let uses = form.uses.unwrap_or(1).clamp(1, 10_000);
    let hours = form.expires_hours.unwrap_or(24).clamp(1, 24 * 365);
    let approve = Approve::parse(&form.approve).unwrap_or(Approve::default_for_uses(uses));
    let token = crate::tokens::generate().map_err(|e| ConsoleError::Internal(e.to_string()))?;
    let now = receiver_now();
    let new = NewToken {
        token_hash: crate::tokens::hash(&token),
        uses,
        expires_at: Some(now + time::Duration::hours(i64::from(hours))),
        approve,
        created_at: now,
    };
    console.store.create_token(new, &user.username).await?;
    // Shown in this answer only; a reload shows the list without it.
    render_page(&console, &user, Filters::default(), Some(token)).await
}

/// `POST /stations/tokens/{token_hash}/revoke` (admin).
pub async fn revoke_token(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(token_hash): Path<String>,
) -> ConsoleResult {
    if console
        .store
        .revoke_token(&token_hash, &user.username)
        .await?
    {
        Ok(Redirect::to("/stations").into_response())
    } else {
        Ok(error_page(
            StatusCode::NOT_FOUND,
            "No such token",
            "This token does not exist.",
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod policy_tests {
    use super::*;

    fn device(hash: Option<&str>) -> DeviceRecord {
        DeviceRecord {
            device_id: "d".into(),
            status: duress_core::DeviceStatus::Active,
            public_jwk: duress_core::DeviceKey::from_seed(&[1u8; 32]).public_jwk(),
            key_thumbprint: String::new(),
            hostname: String::new(),
            host: Default::default(),
            location: Default::default(),
            agent_version: String::new(),
            enrolled_at: OffsetDateTime::UNIX_EPOCH,
            last_heartbeat_at: None,
            hotkey: None,
            queued: None,
            reported_last_seq: None,
            last_seq: None,
            last_event_at: None,
            last_self_test_at: None,
            last_self_test_id: None,
            policy_source: hash.map(|_| "os:/etc/duress/agent.toml".into()),
            policy_sha256: hash.map(str::to_owned),
            registered_location: None,
            last_addr: None,
            retired_at: None,
            retired_by: None,
            alarm_refused: None,
        }
    }

    #[test]
    fn the_fleet_policy_is_the_majority_hash() {
        let fleet = [
            device(Some("a")),
            device(Some("a")),
            device(Some("b")),
            device(None),
        ];
        assert_eq!(fleet_policy(&fleet).as_deref(), Some("a"));
        // A tie: no policy is the fleet's, nobody is flagged.
        assert_eq!(fleet_policy(&[device(Some("a")), device(Some("b"))]), None);
        assert_eq!(fleet_policy(&[device(None)]), None);
    }
}
