//! `POST /v1/heartbeats`: liveness, hotkey state and queue depth of a device.
//!
//! Unlike events, a heartbeat from a pending, disabled or revoked device is answered 200 with
//! its `device_status`, so the agent can tell its user "disabled by Security" instead of
//! retrying forever. Pending and disabled devices still have their liveness recorded (an admin
//! about to approve or re-enable one wants to see it alive), but not their location: only an
//! active device moves its station (the store decides, under its lock). A revoked device is
//! distrusted for good, so its heartbeat writes nothing; a retired one (revoked on purpose,
//! docs/protocol.md §5.6) is also told `retired: true`, so its tray says it is not enrolled.

use axum::Json;
use axum::extract::State;
use duress_core::{HeartbeatAnswer, HeartbeatClaims, Location, Typ};

use super::{
    AppState, SignedBody, check_clock, invalid_claims, parse_claims, receiver_now, storage_problem,
    to_i64, verify_device_token,
};
use crate::problem::ApiProblem;
use crate::store::HeartbeatUpdate;

/// Records a device's liveness.
#[utoipa::path(
    post,
    operation_id = "post_heartbeat",
    path = "/v1/heartbeats",
    tag = "agent",
    request_body(content = String, content_type = "application/jose",
        description = "A compact JWS (typ duress-heartbeat) signed by the device key (docs/protocol.md)"),
    responses(
        (status = 200, description = "Recorded: the device's status and its claimed incidents", body = serde_json::Value),
        crate::openapi::DeviceProblems,
    )
)]
pub async fn post(
    State(state): State<AppState>,
    client: crate::subnets::ClientAddr,
    SignedBody(body): SignedBody,
) -> Result<Json<HeartbeatAnswer>, ApiProblem> {
    let result = record(&state, &client, &body).await;
    if let Err(p) = &result {
        tracing::info!(problem = %p.0.type_uri, "heartbeat refused");
    }
    result
}

async fn record(
    state: &AppState,
    client: &crate::subnets::ClientAddr,
    body: &str,
) -> Result<Json<HeartbeatAnswer>, ApiProblem> {
    let verified = verify_device_token(state, client.ip(), body, Typ::Heartbeat).await?;
    if let Some(low) = state.disk.low() {
        return Err(super::low_disk_problem(low, "heartbeats"));
    }
    let client_addr = client.text();
    let claims: HeartbeatClaims = parse_claims(&verified.payload)?;
    claims.validate().map_err(invalid_claims)?;
    let queued = to_i64("queued", claims.queued)?;
    let reported_last_seq = to_i64("last_seq", claims.last_seq)?;
    let now = receiver_now();
    check_clock(claims.sent_at, now)?;

    let update_device = verified.device_id.clone();
    let update = HeartbeatUpdate {
        device_id: verified.device_id,
        received_at: now,
        hotkey: claims.hotkey,
        queued,
        reported_last_seq,
        // An agent that sends no host facts or location keeps the stored ones.
        host: (!claims.host.hostname.is_empty()).then_some(claims.host),
        location: (claims.location != Location::default()).then_some(claims.location),
        policy: claims.policy,
        client_addr,
        alarm_refused: claims.alarm_refused,
    };
    // The store reads the status under its write lock and writes nothing for a revoked device.
    let recorded = state
        .store
        .record_heartbeat(update)
        .await
        .map_err(storage_problem)?;
    // Only a revoked device can be retired: the extra read is on that path alone.
    let retired = recorded.status == duress_core::DeviceStatus::Revoked
        && state
            .store
            .device_credential(&update_device)
            .await
            .map_err(storage_problem)?
            .is_some_and(|d| d.retired);
    Ok(Json(HeartbeatAnswer {
        server_time: now,
        device_status: recorded.status,
        interval_s: state.heartbeat_interval_s,
        claimed_incidents: recorded.claimed_incidents,
        retired,
    }))
}
