//! `POST /v1/retirements`: a station retiring itself (`duress-agent decommission`,
//! docs/protocol.md §5.6). Signed by the device key like a heartbeat; the store marks the
//! station retired (and revoked: its key can never raise an alarm again), stops supervising it
//! and audits it as done by `device:ID`. A resend — the agent lost the first answer — is
//! answered 200 again and changes nothing.

use axum::Json;
use axum::extract::State;
use duress_core::{RetirementAnswer, RetirementClaims, Typ};

use super::{
    AppState, SignedBody, check_clock, parse_claims, receiver_now, storage_problem,
    verify_device_token,
};
use crate::problem::ApiProblem;
use crate::store::RetireOutcome;

/// A station retiring itself for good.
#[utoipa::path(
    post,
    operation_id = "post_retirement",
    path = "/v1/retirements",
    tag = "agent",
    request_body(content = String, content_type = "application/jose",
        description = "A compact JWS (typ duress-retirement) signed by the device key (docs/protocol.md)"),
    responses(
        (status = 200, description = "Retired (now, or already)", body = serde_json::Value),
        crate::openapi::DeviceProblems,
    )
)]
pub async fn post(
    State(state): State<AppState>,
    client: crate::subnets::ClientAddr,
    SignedBody(body): SignedBody,
) -> Result<Json<RetirementAnswer>, ApiProblem> {
    let verified = verify_device_token(&state, client.ip(), &body, Typ::Retirement).await?;
    let claims: RetirementClaims = parse_claims(&verified.payload)?;
    check_clock(claims.sent_at, receiver_now())?;
    let actor = format!("device:{}", verified.device_id);
    let outcome = state
        .store
        .retire_device(&verified.device_id, &actor)
        .await
        .map_err(storage_problem)?;
    tracing::info!(device_id = %verified.device_id, queued = claims.queued, ?outcome, "station retired itself");
    Ok(Json(RetirementAnswer {
        device_id: verified.device_id,
        retired_now: outcome == RetireOutcome::Retired,
    }))
}
