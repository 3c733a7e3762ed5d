//! `POST /v1/events`: verify the signature → claims, send-time window → one transaction in the
//! store's writer (repeat? → device status → raw token + incident) → 200. A request that would
//! be refused for its claims or clock is first checked for being a repeat of a committed event,
//! which gets its stored answer instead of the refusal, then for its device's status, so the
//! refusal is the one the protocol's order of checks names.

use axum::Json;
use axum::extract::State;
use duress_core::{EventAck, EventClaims, ProblemType, Typ};
use time::OffsetDateTime;

use super::{
    AppState, SignedBody, Verified, check_clock, invalid_claims, parse_claims, receiver_now,
    status_refusal, storage_problem, to_i64, verify_device_token,
};
use crate::metrics::IngestOutcome as Outcome;
use crate::problem::ApiProblem;
use crate::store::{IngestOutcome, NewEvent};

/// Accepts a duress, test or cancel event. The 200 answer is sent only after the commit and is
/// the same, byte for byte, for every repeat of the same event id.
#[utoipa::path(
    post,
    operation_id = "post_event",
    path = "/v1/events",
    tag = "agent",
    request_body(content = String, content_type = "application/jose",
        description = "A compact JWS (typ duress-event) signed by the device key (docs/protocol.md)"),
    responses(
        (status = 200, description = "Committed (or a repeat of a committed event): the signed acknowledgement", body = serde_json::Value),
        crate::openapi::EventProblems,
    )
)]
pub async fn post(
    State(state): State<AppState>,
    client: crate::subnets::ClientAddr,
    SignedBody(body): SignedBody,
) -> Result<Json<EventAck>, ApiProblem> {
    let started = std::time::Instant::now();
    let mut tally = Tally {
        kind: None,
        outcome: Outcome::Refused,
    };
    let result = ingest(&state, &client, body, &mut tally).await;
    if let Err(p) = &result {
        tracing::info!(problem = %p.0.type_uri, "event refused");
    }
    crate::metrics::global().event_ingested(tally.kind, tally.outcome, started.elapsed());
    result
}

/// What `/metrics` counts of one request: its kind once the claims parsed, and how it ended
/// (refused unless a later step says otherwise).
struct Tally {
    kind: Option<duress_core::EventKind>,
    outcome: Outcome,
}

async fn ingest(
    state: &AppState,
    client: &crate::subnets::ClientAddr,
    body: String,
    tally: &mut Tally,
) -> Result<Json<EventAck>, ApiProblem> {
    let verified = verify_device_token(state, client.ip(), &body, Typ::Event).await?;
    let client_addr = client.text();
    // Claims and send-time window are checked here (pure); duplicate and device status are
    // checked by the store under its write lock, duplicate first. A refused request is first
    // checked for being a repeat of a committed event (see `repeat_or`).
    let (claims, seq, now) = match check_claims(&verified.payload) {
        Ok(checked) => checked,
        Err(refusal) => return repeat_or(state, &verified, refusal, tally).await,
    };
    tally.kind = Some(claims.kind);

    // Below the free-disk watermark the space left is for alarms and cancels.
    if claims.kind == duress_core::EventKind::Test
        && let Some(low) = state.disk.low()
    {
        return Err(super::low_disk_problem(low, "test events"));
    }
    let device_id = verified.device_id;
    // Per-device token bucket, after the signature (nobody can spend another device's tokens).
    if let Err(wait) = state
        .device_events
        .take(&device_id, std::time::Instant::now())
    {
        tally.outcome = Outcome::RateLimited;
        return Err(ApiProblem::too_many_requests(
            "this device sent too many events; the rest stay queued on the agent: resend later",
            wait.as_secs_f64().ceil() as u64,
        ));
    }
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
        ack_signer: Some(state.ack_keys.clone()),
        client_addr,
    };
    let outcome = state
        .store
        .ingest_grouped(event, state.grouping())
        .await
        .map_err(|e| {
            tally.outcome = Outcome::Error;
            storage_problem(e)
        })?;
    match outcome {
        IngestOutcome::Committed(stored) => {
            tally.outcome = Outcome::Committed;
            tracing::warn!(
                event_id = %stored.id,
                device_id = %device_id,
                kind = claims.kind.as_str(),
                incident_id = ?stored.incident_id,
                delay_ms = stored.delay_ms,
                "event committed"
            );
            signed_answer(state, stored).await
        }
        IngestOutcome::Duplicate(stored) => {
            tally.outcome = Outcome::Duplicate;
            tracing::debug!(event_id = %stored.id, "repeat of a committed event");
            signed_answer(state, stored).await
        }
        IngestOutcome::IdConflict => Err(ApiProblem::new(
            ProblemType::IdConflict,
            "this event id was already used by another device",
        )),
        IngestOutcome::DeviceNotActive(status) => {
            Err(status_refusal(status).unwrap_or_else(|| {
                ApiProblem::new(ProblemType::Internal, "device status changed; retry")
            }))
        }
    }
}

/// The answer for a committed event, signed by the current acknowledgement key. A new event's
/// signature was made and stored in its commit; a repeat gets the stored one — the same bytes
/// as the first answer — unless it was made by an earlier key (a rotation since) or before
/// acknowledgement keys existed: then the current key signs afresh and that signature is
/// stored before it is sent (persist before send), so `events export` holds every signature
/// an agent was ever given.
async fn signed_answer(
    state: &AppState,
    mut stored: crate::store::StoredEvent,
) -> Result<Json<EventAck>, ApiProblem> {
    let current = state.ack_keys.current();
    if stored.ack.as_ref().is_none_or(|a| a.kid != current.kid()) {
        let ack = current.sign(stored.id, stored.received_at, stored.incident_id);
        state
            .store
            .record_ack(stored.id, &ack, receiver_now())
            .await
            .map_err(storage_problem)?;
        stored.ack = Some(ack);
    }
    Ok(Json(stored.ack()))
}

/// The claims, their seq as stored, and the receiver time, when the claims are valid and were
/// sent within the clock window.
fn check_claims(payload: &[u8]) -> Result<(EventClaims, i64, OffsetDateTime), ApiProblem> {
    let claims: EventClaims = parse_claims(payload)?;
    claims.validate().map_err(invalid_claims)?;
    super::refuse_padding(payload, &claims)?;
    let seq = to_i64("seq", claims.seq)?;
    let now = receiver_now();
    check_clock(claims.sent_at, now)?;
    Ok((claims, seq, now))
}

/// On the way to a refusal of invalid claims or a skewed clock, in the documented order
/// (docs/protocol.md §5.2): the stored answer when this device already committed this event id
/// (whatever its status and clock are now); else the device-status refusal when it may not
/// raise alarms; else `refusal`. Nothing is written on this path, and only refused requests
/// take it, so its reads cost the normal path nothing.
async fn repeat_or(
    state: &AppState,
    verified: &Verified,
    refusal: ApiProblem,
    tally: &mut Tally,
) -> Result<Json<EventAck>, ApiProblem> {
    if let Some(id) = claimed_event_id(&verified.payload)
        && let Some(stored) = state.store.find_event(id).await.map_err(|e| {
            tally.outcome = Outcome::Error;
            storage_problem(e)
        })?
        && stored.device_id == verified.device_id
    {
        tally.outcome = Outcome::Duplicate;
        tracing::debug!(event_id = %stored.id, "repeat of a committed event");
        return signed_answer(state, stored).await;
    }
    let device = state
        .store
        .device_credential(&verified.device_id)
        .await
        .map_err(storage_problem)?;
    if let Some(status_refused) = device.and_then(|d| status_refusal(d.status)) {
        return Err(status_refused);
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
