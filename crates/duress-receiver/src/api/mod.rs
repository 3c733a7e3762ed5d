//! The HTTP API: routes, the signed-body extractor and the verification steps that events and
//! heartbeats share. Every refusal is an [`ApiProblem`]; the order of the checks is part of the
//! protocol (docs/protocol.md): nothing is written before the signature has verified.

pub mod enrollments;
pub mod events;
pub mod heartbeats;
pub mod retirements;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRef, FromRequest, Request, State};
use axum::http::{Method, header};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use duress_core::{DeviceStatus, JOSE_CONTENT_TYPE, MAX_BODY_BYTES, ParsedJws, ProblemType, Typ};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::problem::{ApiProblem, not_found, panic_response, problem_for_bare_errors};
use crate::ratelimit::FailureLimiter;
use crate::store::{Store, StoreError};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub grouping_window: Duration,
    /// Presses of different stations in one room share an incident (`Settings::group_same_room`).
    pub group_same_room: bool,
    pub heartbeat_interval_s: u64,
    pub enrollment_failures: Arc<FailureLimiter>,
    /// Events and heartbeats whose `kid` no device has, per client address.
    pub unknown_kids: Arc<FailureLimiter>,
    /// Events per device (a token bucket), checked after the signature, before the store.
    pub device_events: Arc<crate::ratelimit::DeviceBuckets>,
    /// See `Settings::body_read_timeout`.
    pub body_read_timeout: Duration,
    /// Signs every acknowledgement (docs/protocol.md §5.4).
    pub ack_keys: Arc<crate::ack_key::AckKeys>,
    /// The free-disk watermark: below it test events and heartbeats are refused.
    pub disk: Arc<crate::diskspace::DiskGuard>,
    /// The desk-phone endpoints' per-address limits (`crate::phones`).
    pub phones: Arc<crate::ratelimit::PhoneLimits>,
}

impl AppState {
    /// How events find their incident (`incidents::Grouping`).
    pub fn grouping(&self) -> crate::incidents::Grouping {
        crate::incidents::Grouping {
            window: self.grouping_window,
            same_room: self.group_same_room,
        }
    }
}

/// The agent-facing routes, for any router state the API state can be taken from (the
/// receiver's full router is built from these plus the console's, in `console::routes`).
pub fn routes<S>() -> Vec<(Method, &'static str, MethodRouter<S>)>
where
    AppState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    vec![
        (Method::GET, "/healthz", get(healthz)),
        (Method::GET, "/v1/ping", get(ping)),
        (Method::POST, "/v1/enrollments", post(enrollments::post)),
        (Method::POST, "/v1/events", post(events::post)),
        (Method::POST, "/v1/heartbeats", post(heartbeats::post)),
        (Method::POST, "/v1/retirements", post(retirements::post)),
    ]
}

/// The API routes alone, with the shared layers (tests drive it without TLS).
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in routes::<AppState>() {
        router = router.route(path, handler);
    }
    with_layers(router).with_state(state)
}

/// The body limit and the problem+json safety net around every route.
pub fn with_layers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(problem_for_bare_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        // The span names the path, never the query: a desk phone's Service URL carries its
        // secret there (`?key=`, docs/integrations.md), and secrets never reach a log.
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<axum::body::Body>| {
                    tracing::debug_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        version = ?req.version(),
                    )
                },
            ),
        )
}

/// `GET /v1/ping`: 204, touching nothing (no database, no body). The cheapest request the
/// server answers: the benchmarks' no-op, against which ingest is measured.
#[utoipa::path(get, path = "/v1/ping", tag = "operations",
    responses((status = 204, description = "The server answers")))]
pub async fn ping() -> axum::http::StatusCode {
    axum::http::StatusCode::NO_CONTENT
}

/// `GET /healthz`: 200 only when the database answers; `{"status":"ok"}`, or, while the data
/// directory is below the free-disk watermark, `"status":"degraded"` with the `disk` reading
/// (still 200: alarms are still accepted, so a load balancer must keep sending them here).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "The database answers: status ok, or degraded (low disk)", body = serde_json::Value),
        crate::openapi::HealthProblems,
    ))]
pub async fn healthz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiProblem> {
    state.store.health().await.map_err(storage_problem)?;
    Ok(Json(match state.disk.low() {
        None => serde_json::json!({ "status": "ok" }),
        Some(low) => serde_json::json!({
            "status": "degraded",
            "disk": {
                "low": true,
                "available_bytes": low.available,
                "watermark_bytes": low.threshold,
                "detail": format!("{}; test events and heartbeats are refused, alarms accepted", low.describe()),
            }
        }),
    }))
}

/// The 503 for a test event or heartbeat while the disk is below the watermark: the agent
/// keeps it and retries (docs/protocol.md §7).
pub(crate) fn low_disk_problem(low: crate::diskspace::LowDisk, what: &str) -> ApiProblem {
    ApiProblem::new(
        ProblemType::StorageUnavailable,
        format!(
            "{}: {what} are refused until space is freed (alarms are still accepted); retry later",
            low.describe()
        ),
    )
}

/// A request body that is a compact JWS: `Content-Type: application/jose` (415 otherwise),
/// at most 64 KiB (413, refused from `Content-Length` before reading when it is declared),
/// arriving within `body_read_timeout` (408 otherwise), UTF-8 text. Holds the body exactly as
/// received.
pub struct SignedBody(pub String);

impl std::fmt::Debug for SignedBody {
    // An enrollment body carries the token: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignedBody(<{} bytes>)", self.0.len())
    }
}

impl<S> FromRequest<S> for SignedBody
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiProblem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let media_type_ok = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(JOSE_CONTENT_TYPE));
        if !media_type_ok {
            return Err(ApiProblem::new(
                ProblemType::UnsupportedMediaType,
                format!("Content-Type must be {JOSE_CONTENT_TYPE}"),
            ));
        }
        // One limit for every signed request. A smaller one for events was tried (16 KiB) and
        // refused a valid event whose fields, each within its character limit, were long
        // multi-byte grapheme clusters (tests/tests/bad_input.rs): an alarm must never be
        // refused for its size while its fields are valid.
        let limit = MAX_BODY_BYTES;
        let too_large = || {
            ApiProblem::new(
                ProblemType::BodyTooLarge,
                format!("request bodies here are limited to {limit} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(too_large());
        }
        // Bounded by DefaultBodyLimit: a chunked body stops being read at the limit.
        let timeout = AppState::from_ref(state).body_read_timeout;
        let read = tokio::time::timeout(timeout, Bytes::from_request(req, state))
            .await
            .map_err(|_| {
                ApiProblem::new(
                    ProblemType::RequestTimeout,
                    format!("the body did not arrive within {} s", timeout.as_secs_f32()),
                )
            })?;
        let bytes = read.map_err(|rejection| {
            if rejection.status().as_u16() == 413 {
                too_large()
            } else {
                ApiProblem::new(ProblemType::MalformedJws, rejection.body_text())
            }
        })?;
        if bytes.len() > limit {
            return Err(too_large());
        }
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiProblem::new(ProblemType::MalformedJws, "body is not UTF-8 text"))?;
        Ok(SignedBody(text))
    }
}

pub(crate) use crate::clock::receiver_now;

/// A token whose signature verified with the key of an enrolled device. Says nothing about the
/// device's status: the store checks that under its write lock.
pub(crate) struct Verified {
    pub device_id: String,
    pub payload: Vec<u8>,
}

/// Parse → `typ` → `kid` → device's key → signature. Reads the store (a cached key, usually),
/// never writes it.
///
/// A client address that sent more than `unknown_kids` allows of kids no device has gets 429
/// for any kid whose key is not cached already, without a database read: a kid scan cannot
/// load the store, while the enrolled devices behind that address (whose keys are cached from
/// their first event or heartbeat) go on as before. Unknown kids are also remembered by the
/// store for a while (`rules::UNKNOWN_KID_TTL`), so a repeated one costs no read either.
pub(crate) async fn verify_device_token(
    state: &AppState,
    client: std::net::IpAddr,
    body: &str,
    typ: Typ,
) -> Result<Verified, ApiProblem> {
    let parsed = ParsedJws::parse(body)?;
    parsed.expect_typ(typ)?;
    let kid = parsed
        .header()
        .kid
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiProblem::new(ProblemType::MissingKid, "the JWS header needs a kid"))?;
    let key = match state.store.cached_verifying_key(kid) {
        Some(key) => key,
        None => {
            if let Err(wait) = state.unknown_kids.check(client, std::time::Instant::now()) {
                tracing::warn!(%client, "unknown kids: too many from this address");
                return Err(ApiProblem::too_many_requests(
                    "too many requests with unknown kids from this address; retry later",
                    wait.as_secs().max(1),
                ));
            }
            match state
                .store
                .verifying_key(kid)
                .await
                .map_err(storage_problem)?
            {
                Some(key) => key,
                None => {
                    state
                        .unknown_kids
                        .record_failure(client, std::time::Instant::now());
                    return Err(ApiProblem::new(
                        ProblemType::UnknownDevice,
                        "no enrolled device has this kid",
                    ));
                }
            }
        }
    };
    let payload = parsed.verify(&key)?.to_vec();
    Ok(Verified {
        device_id: kid.to_owned(),
        payload,
    })
}

/// The 403 that goes with a device that may not raise alarms.
pub(crate) fn status_refusal(status: DeviceStatus) -> Option<ApiProblem> {
    let (kind, detail) = match status {
        DeviceStatus::Active => return None,
        DeviceStatus::Pending => (ProblemType::DevicePending, "device awaits approval"),
        DeviceStatus::Disabled => (ProblemType::DeviceDisabled, "device is disabled"),
        DeviceStatus::Revoked => (ProblemType::DeviceRevoked, "device is revoked"),
    };
    Some(ApiProblem::new(kind, detail))
}

/// Claims as JSON of type `T` (422 invalid-claims otherwise).
pub(crate) fn parse_claims<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ApiProblem> {
    serde_json::from_slice(payload).map_err(|e| invalid_claims(e.to_string()))
}

/// Bytes an event's claims may carry beyond the compact JSON of the claims this receiver knows:
/// room for claims a newer agent adds (the protocol lets a receiver ignore a claim it does not
/// know, as `cancel_pin` once was) and for another JSON writer's spacing, far too little to
/// pad the stored token with (issue 15). A real agent's event has none: it is written by the
/// same serde_json from the same types.
pub const MAX_UNKNOWN_CLAIM_BYTES: usize = 2048;

/// 422 when `payload` is more than [`MAX_UNKNOWN_CLAIM_BYTES`] longer than `claims` (what was
/// understood of it) written back as compact JSON: unknown claims, unknown fields nested in
/// known ones, or whitespace — padding, which the store would otherwise keep in the raw token.
pub(crate) fn refuse_padding<T: serde::Serialize>(
    payload: &[u8],
    claims: &T,
) -> Result<(), ApiProblem> {
    let known = serde_json::to_vec(claims).map_or(0, |v| v.len());
    let extra = payload.len().saturating_sub(known);
    if extra > MAX_UNKNOWN_CLAIM_BYTES {
        return Err(invalid_claims(format!(
            "the claims carry {extra} bytes beyond the known claims (unknown claims or \
             padding); at most {MAX_UNKNOWN_CLAIM_BYTES} are allowed"
        )));
    }
    Ok(())
}

pub(crate) fn invalid_claims(detail: impl Into<String>) -> ApiProblem {
    ApiProblem::new(ProblemType::InvalidClaims, detail)
}

/// The send-time window; a refusal carries the receiver's clock so the agent can correct its
/// offset and re-sign.
pub(crate) fn check_clock(sent_at: OffsetDateTime, now: OffsetDateTime) -> Result<(), ApiProblem> {
    duress_core::clock::check_sent_at(sent_at, now).map_err(|skew| {
        ApiProblem(
            duress_core::Problem::new(
                ProblemType::ClockSkew,
                format!(
                    "sent_at is {} ms off the receiver clock (window +{} s / -{} s)",
                    skew.whole_milliseconds(),
                    duress_core::clock::MAX_AHEAD.whole_seconds(),
                    duress_core::clock::MAX_BEHIND.whole_seconds()
                ),
            )
            .with_server_time(now),
            None,
        )
    })
}

/// A store failure: 503 (retry later), never a 2xx; the cause goes to the log, not the client.
pub(crate) fn storage_problem(e: StoreError) -> ApiProblem {
    tracing::error!(error = %e, "store failure");
    crate::metrics::global().database_error("api");
    match e {
        StoreError::Corrupt(_) => ApiProblem::new(ProblemType::Internal, "internal error; retry"),
        _ => ApiProblem::new(
            ProblemType::StorageUnavailable,
            "the receiver cannot commit right now; retry",
        ),
    }
}

/// Converts a `u64` claim into the store's signed integer (422 when it does not fit).
pub(crate) fn to_i64(name: &str, value: u64) -> Result<i64, ApiProblem> {
    i64::try_from(value).map_err(|_| invalid_claims(format!("{name} must be below 2^63")))
}
