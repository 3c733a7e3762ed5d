//! `POST /v1/events`: verify the signature → device status, claims, send-time window → one
//! transaction (raw token + incident; a repeat gets its stored answer) → 200. A request that
//! would be refused is first checked for being a repeat of a committed event, which gets its
//! stored answer instead of the refusal.

use axum::Json;
use axum::extract::State;
use duress_core::{EventAck, EventClaims, ProblemType, Typ};
use time::OffsetDateTime;

use super::{
    AppState, SignedBody, Verified, check_clock, invalid_claims, parse_claims, receiver_now,
    status_refusal, storage_problem, to_i64, verify_device_token,
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
    // A resend of an event this device already committed gets its stored answer whatever the
    // device's status or the clock is now, so an alarm committed before the device was
    // disabled (or sent with a skewed clock) is not left queued forever on the workstation.
    // That lookup is made only on the way to a refusal: on the normal path the store dedupes
    // under its write lock anyway (one read less per event), with the same stored answer.
    let refusal = match status_refusal(verified.device.status) {
        Some(refusal) => Err(refusal),
        None => check_claims(&verified.payload),
    };
    let (claims, seq, now) = match refusal {
        Ok(checked) => checked,
        Err(refusal) => return repeat_or(state, &verified, refusal).await,
    };

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

/// The claims, their seq as stored, and the receiver time, when the claims are valid and were
/// sent within the clock window.
fn check_claims(payload: &[u8]) -> Result<(EventClaims, i64, OffsetDateTime), ApiProblem> {
    let claims: EventClaims = parse_claims(payload)?;
    claims.validate().map_err(invalid_claims)?;
    let seq = to_i64("seq", claims.seq)?;
    let now = receiver_now();
    check_clock(claims.sent_at, now)?;
    Ok((claims, seq, now))
}

/// The stored answer when this device already committed this event id; else `refusal`.
/// Nothing is written on this path.
async fn repeat_or(
    state: &AppState,
    verified: &Verified,
    refusal: ApiProblem,
) -> Result<Json<EventAck>, ApiProblem> {
    if let Some(id) = claimed_event_id(&verified.payload)
        && let Some(stored) = state.store.find_event(id).await.map_err(storage_problem)?
        && stored.device_id == verified.device.device_id
    {
        tracing::debug!(event_id = %stored.id, "repeat of a committed event");
        return Ok(Json(stored.ack()));
    }
    Err(refusal)
}

/// The `id` claim alone, when the payload has one that parses (the full claims are checked
/// later, for new events).
fn claimed_event_id(payload: &[u8]) -> Option<uuid::Uuid> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: uuid::Uuid,
    }
    serde_json::from_slice::<IdOnly>(payload).ok().map(|c| c.id)
}
