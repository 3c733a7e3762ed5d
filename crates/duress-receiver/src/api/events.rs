//! `POST /v1/events`: verify → dedupe → one transaction (raw token + incident) → 200.

use axum::Json;
use axum::extract::State;
use duress_core::{EventAck, EventClaims, ProblemType, Typ};

use super::{
    AppState, SignedBody, check_clock, invalid_claims, parse_claims, receiver_now, status_refusal,
    storage_problem, to_i64, verify_device_token,
};
use crate::problem::ApiProblem;
use crate::store::{IngestOutcome, NewEvent};

/// Accepts a duress, test or cancel event. The 200 answer is sent only after the commit and is
/// the same, byte for byte, for every repeat of the same event id.
pub async fn post(
    State(state): State<AppState>,
    SignedBody(body): SignedBody,
) -> Result<Json<EventAck>, ApiProblem> {
    let result = ingest(&state, body).await;
    if let Err(p) = &result {
        tracing::info!(problem = %p.0.type_uri, "event refused");
    }
    result
}

async fn ingest(state: &AppState, body: String) -> Result<Json<EventAck>, ApiProblem> {
    let verified = verify_device_token(state, &body, Typ::Event).await?;
    if let Some(refusal) = status_refusal(verified.device.status) {
        return Err(refusal);
    }
    let claims: EventClaims = parse_claims(&verified.payload)?;
    claims.validate().map_err(invalid_claims)?;
    let seq = to_i64("seq", claims.seq)?;
    let now = receiver_now();
    check_clock(claims.sent_at, now)?;

    let device_id = verified.device.device_id;
    let event = NewEvent {
        id: claims.id,
        device_id: device_id.clone(),
        seq,
        kind: claims.kind,
        source: claims.source,
        occurred_at: claims.occurred_at,
        sent_at: claims.sent_at,
        received_at: now,
        jws: body,
        location: claims.location,
        host: claims.host,
    };
    let outcome = state
        .store
        .ingest_event(event, state.grouping_window)
        .await
        .map_err(storage_problem)?;
    match outcome {
        IngestOutcome::Committed(stored) => {
            tracing::warn!(
                event_id = %stored.id,
                device_id = %device_id,
                kind = claims.kind.as_str(),
                incident_id = ?stored.incident_id,
                delay_ms = stored.delay_ms,
                "event committed"
            );
            Ok(Json(stored.ack()))
        }
        IngestOutcome::Duplicate(stored) => {
            tracing::debug!(event_id = %stored.id, "repeat of a committed event");
            Ok(Json(stored.ack()))
        }
        IngestOutcome::IdConflict => Err(ApiProblem::new(
            ProblemType::IdConflict,
            "this event id was already used by another device",
        )),
    }
}
