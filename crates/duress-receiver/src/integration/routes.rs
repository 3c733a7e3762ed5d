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
        (Method::GET, "/openapi.json", get(crate::openapi::serve)),
    ]
}

type Answer<T> = Result<T, IntegrationProblem>;

fn store_error(e: crate::store::StoreError) -> IntegrationProblem {
    IntegrationProblem(storage_problem(e))
}

/// `GET /v1/incidents` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentList {
    /// Incident records, oldest first (the fields of `duress-receiver incidents list --json`).
    #[schema(value_type = Vec<Object>)]
    pub incidents: Vec<IncidentRecord>,
}

/// `GET /v1/incidents/{id}` answer (and the answer of every action): the incident with the
/// officers' timeline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentBody {
    /// The incident record (the fields of `duress-receiver incidents list --json`).
    #[schema(value_type = Object)]
    pub incident: IncidentRecord,
    /// Officers' entries in order: at, actor, kind, text.
    #[schema(value_type = Vec<Object>)]
    pub timeline: Vec<TimelineRecord>,
}

/// `GET /v1/stations` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StationList {
    /// Station records in order of enrollment (the fields of `duress-receiver devices list`).
    #[schema(value_type = Vec<Object>)]
    pub stations: Vec<DeviceRecord>,
}

/// The values of `GET /v1/incidents?status=` (parsed by hand, so that another value is a clear
/// 422 `invalid-request` rather than axum's bare 400).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub enum StatusFilter {
    #[schema(rename = "open")]
    Open,
    #[schema(rename = "all")]
    All,
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

/// Incidents: the open ones, or all with `status=all`.
#[utoipa::path(get, path = "/v1/incidents", tag = "integration", security(("api_key" = [])),
    params(("status" = Option<StatusFilter>, Query, description = "open (the default) or all")),
    responses(
        (status = 200, description = "The incidents", body = IncidentList),
        crate::openapi::ReadProblems,
    ))]
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

/// One incident with the officers' timeline.
#[utoipa::path(get, path = "/v1/incidents/{id}", tag = "integration", security(("api_key" = [])),
    params(("id" = String, Path, description = "The incident id (a UUID)")),
    responses(
        (status = 200, description = "The incident", body = IncidentBody),
        crate::openapi::ReadOneProblems,
    ))]
pub async fn incident(
    _key: ApiKey,
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
) -> Answer<Json<IncidentBody>> {
    let id = incident_id(&id)?;
    Ok(body(detail(&console, id).await?))
}

/// The incident's current state as an OASIS CAP 1.2 alert (docs/integrations.md, CAP 1.2).
#[utoipa::path(get, path = "/v1/incidents/{id}/cap", tag = "integration", security(("api_key" = [])),
    params(("id" = String, Path, description = "The incident id (a UUID)")),
    responses(
        (status = 200, description = "A CAP 1.2 alert (Alert, Update or Cancel)", body = String, content_type = "application/cap+xml"),
        crate::openapi::ReadOneProblems,
    ))]
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Take the incident over from whoever holds it.
    #[serde(default)]
    pub takeover: bool,
}

/// `POST /v1/incidents/{id}/notes` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    pub text: String,
}

/// `POST /v1/incidents/{id}/resolve` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// One of the console's dispositions (`emergency`, `no emergency found`, `accidental`,
    /// `test`, `duplicate`).
    pub disposition: String,
    #[serde(default)]
    pub follow_up: String,
}

/// Claims the incident as this API key (read-write scope), as an officer would.
#[utoipa::path(post, path = "/v1/incidents/{id}/claim", tag = "integration", security(("api_key" = [])),
    params(("id" = String, Path, description = "The incident id (a UUID)")),
    request_body(content = Option<ClaimRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "Claimed (or held already by this key): the incident", body = IncidentBody),
        crate::openapi::ActionProblems,
    ))]
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

/// Adds a note to the incident's timeline (read-write scope).
#[utoipa::path(post, path = "/v1/incidents/{id}/notes", tag = "integration", security(("api_key" = [])),
    params(("id" = String, Path, description = "The incident id (a UUID)")),
    request_body(content = NoteRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Noted: the incident", body = IncidentBody),
        crate::openapi::ActionProblems,
    ))]
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

/// Resolves the incident with a disposition and a follow-up note (read-write scope).
#[utoipa::path(post, path = "/v1/incidents/{id}/resolve", tag = "integration", security(("api_key" = [])),
    params(("id" = String, Path, description = "The incident id (a UUID)")),
    request_body(content = ResolveRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Resolved: the incident", body = IncidentBody),
        crate::openapi::ActionProblems,
    ))]
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

/// Every station (enrolled device).
#[utoipa::path(get, path = "/v1/stations", tag = "integration", security(("api_key" = [])),
    responses(
        (status = 200, description = "The stations", body = StationList),
        crate::openapi::StationsProblems,
    ))]
pub async fn list_stations(
    _key: ApiKey,
    State(console): State<Arc<Console>>,
) -> Answer<Json<StationList>> {
    let stations = console.store.list_devices().await.map_err(store_error)?;
    Ok(Json(StationList { stations }))
}

/// One station.
#[utoipa::path(get, path = "/v1/stations/{id}", tag = "integration", security(("api_key" = [])),
    params(("id" = String, Path, description = "The station's device id")),
    responses(
        (status = 200, description = "The station record", body = Object),
        crate::openapi::ReadOneProblems,
    ))]
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
