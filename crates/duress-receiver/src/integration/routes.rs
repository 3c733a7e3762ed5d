//! The integration API's routes. Every refusal is problem+json; a store failure is 503 (retry)
//! like everywhere else.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use duress_core::ProblemType;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{ApiKey, IntegrationProblem, problem};
use crate::api::storage_problem;
use crate::console::incident_actions::{self, Action, Refusal};
use crate::console::{Console, WebState};
use crate::records::{DeviceRecord, IncidentRecord};
use crate::store::{IncidentDetail, IncidentFilter, TimelineRecord};

/// The integration routes, for the receiver's route table (`console::routes`): served on the
/// API listener, each guarded by [`ApiKey`] itself.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<WebState>)> {
    vec![
        (Method::GET, "/v1/incidents", get(list_incidents)),
        (Method::GET, "/v1/incidents/{id}", get(incident)),
        (Method::GET, "/v1/incidents/{id}/cap", get(incident_cap)),
        (Method::POST, "/v1/incidents/{id}/claim", post(claim)),
        (Method::POST, "/v1/incidents/{id}/notes", post(note)),
        (Method::POST, "/v1/incidents/{id}/resolve", post(resolve)),
        (Method::GET, "/v1/stations", get(list_stations)),
        (Method::GET, "/v1/stations/{id}", get(station)),
    ]
}

type Answer<T> = Result<T, IntegrationProblem>;

fn store_error(e: crate::store::StoreError) -> IntegrationProblem {
    IntegrationProblem(storage_problem(e))
}

/// `GET /v1/incidents` answer.
#[derive(Debug, Serialize)]
pub struct IncidentList {
    pub incidents: Vec<IncidentRecord>,
}

/// `GET /v1/incidents/{id}` answer (and the answer of every action): the incident with the
/// officers' timeline.
#[derive(Debug, Serialize)]
pub struct IncidentBody {
    pub incident: IncidentRecord,
    pub timeline: Vec<TimelineRecord>,
}

/// `GET /v1/stations` answer.
#[derive(Debug, Serialize)]
pub struct StationList {
    pub stations: Vec<DeviceRecord>,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// `open` (the default) or `all`.
    #[serde(default)]
    pub status: Option<String>,
}

fn no_incident() -> IntegrationProblem {
    problem(ProblemType::NotFound, "no such incident")
}

fn incident_id(id: &str) -> Answer<Uuid> {
    Uuid::parse_str(id).map_err(|_| no_incident())
}

pub async fn list_incidents(
    key: ApiKey,
    State(console): State<Arc<Console>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<Json<IncidentList>> {
    let _ = key;
    let status = query.ok().and_then(|q| q.0.status);
    let filter = match status.as_deref() {
        None | Some("open") => IncidentFilter::Open,
        Some("all") => IncidentFilter::All,
        Some(other) => {
            return Err(problem(
                ProblemType::InvalidRequest,
                format!("status must be open or all, not {other:?}"),
            ));
        }
    };
    let mut incidents = console
        .store
        .list_incidents(filter)
        .await
        .map_err(store_error)?;
    crate::subnets::annotate_from(console.store.as_ref(), &mut incidents)
        .await
        .map_err(store_error)?;
    Ok(Json(IncidentList { incidents }))
}

async fn detail(console: &Console, id: Uuid) -> Answer<IncidentDetail> {
    let mut detail = console
        .store
        .incident(id)
        .await
        .map_err(store_error)?
        .ok_or_else(no_incident)?;
    crate::subnets::annotate_from(
        console.store.as_ref(),
        std::slice::from_mut(&mut detail.incident),
    )
    .await
    .map_err(store_error)?;
    Ok(detail)
}

fn body(detail: IncidentDetail) -> Json<IncidentBody> {
    Json(IncidentBody {
        incident: detail.incident,
        timeline: detail.timeline,
    })
}

pub async fn incident(
    _key: ApiKey,
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
) -> Answer<Json<IncidentBody>> {
    let id = incident_id(&id)?;
    Ok(body(detail(&console, id).await?))
}

pub async fn incident_cap(
    _key: ApiKey,
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
) -> Answer<Response> {
    let id = incident_id(&id)?;
    let detail = detail(&console, id).await?;
    let xml = crate::cap::alert_xml(&detail, &crate::cap::CapOptions::default());
    Ok((
        [
            (header::CONTENT_TYPE, crate::cap::CAP_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        xml,
    )
        .into_response())
}

/// A JSON request body (any or no `Content-Type`: integrations differ); an empty body is `{}`.
fn json_body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Answer<T> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        problem(
            ProblemType::InvalidRequest,
            format!("the body is not the expected JSON object: {e}"),
        )
    })
}

async fn act(
    console: &Console,
    key: &ApiKey,
    id: &str,
    action: Action,
) -> Answer<Json<IncidentBody>> {
    key.require_write()?;
    let id = incident_id(id)?;
    match incident_actions::apply(console, id, &key.0.actor(), action).await {
        Ok(()) => Ok(body(detail(console, id).await?)),
        Err(Refusal::NotFound) => Err(no_incident()),
        Err(Refusal::ClaimedBy { username, .. }) => Err(problem(
            ProblemType::IncidentClaimed,
            format!(
                "{username} holds this incident; claim with \"takeover\": true to take it over"
            ),
        )),
        Err(Refusal::Invalid(message)) => Err(problem(ProblemType::InvalidRequest, message)),
        Err(Refusal::Store(e)) => Err(store_error(e)),
    }
}

/// `POST /v1/incidents/{id}/claim` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Take the incident over from whoever holds it.
    #[serde(default)]
    pub takeover: bool,
}

/// `POST /v1/incidents/{id}/notes` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    pub text: String,
}

/// `POST /v1/incidents/{id}/resolve` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// One of the console's dispositions (`emergency`, `no emergency found`, `accidental`,
    /// `test`, `duplicate`).
    pub disposition: String,
    #[serde(default)]
    pub follow_up: String,
}

pub async fn claim(
    key: ApiKey,
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer<Json<IncidentBody>> {
    key.require_write()?;
    let request: ClaimRequest = json_body(&bytes)?;
    act(
        &console,
        &key,
        &id,
        Action::Claim {
            takeover: request.takeover,
        },
    )
    .await
}

pub async fn note(
    key: ApiKey,
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer<Json<IncidentBody>> {
    key.require_write()?;
    let request: NoteRequest = json_body(&bytes)?;
    act(&console, &key, &id, Action::Note(request.text)).await
}

pub async fn resolve(
    key: ApiKey,
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer<Json<IncidentBody>> {
    key.require_write()?;
    let request: ResolveRequest = json_body(&bytes)?;
    act(
        &console,
        &key,
        &id,
        Action::Resolve {
            disposition: request.disposition,
            follow_up: request.follow_up,
        },
    )
    .await
}

pub async fn list_stations(
    _key: ApiKey,
    State(console): State<Arc<Console>>,
) -> Answer<Json<StationList>> {
    let stations = console.store.list_devices().await.map_err(store_error)?;
    Ok(Json(StationList { stations }))
}

pub async fn station(
    _key: ApiKey,
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
) -> Answer<Json<DeviceRecord>> {
    let stations = console.store.list_devices().await.map_err(store_error)?;
    stations
        .into_iter()
        .find(|d| d.device_id == id)
        .map(Json)
        .ok_or_else(|| problem(ProblemType::NotFound, "no such station"))
}
