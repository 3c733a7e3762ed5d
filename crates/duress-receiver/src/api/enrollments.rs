//! `POST /v1/enrollments`: a new agent proves it holds the key it enrolls and spends a token.
//!
//! Re-enrollment: when the key is already enrolled and its device is active or pending, the
//! answer is 201 with the *existing* device id and no token use is consumed (an agent that lost
//! the first answer just retries). The token must still be the one that enrolled it or another
//! currently valid one. A key whose device is disabled or revoked gets 409
//! key-already-enrolled: enrolling again must not revive it.
//!
//! Every 4xx counts as a failed attempt of the client address; past the limit the client gets
//! 429 before its body is even read, so tokens cannot be guessed.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequest as _, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use duress_core::{EnrollmentAnswer, EnrollmentClaims, JwsError, ParsedJws, ProblemType, Typ};
use uuid::Uuid;

use super::{AppState, SignedBody, check_clock, invalid_claims, receiver_now, storage_problem};
use crate::problem::ApiProblem;
use crate::store::{EnrollOutcome, EnrollRefusal, EnrollRequest};
use crate::tokens;

/// Enrolls a device with an enrollment token (proof of possession of its key).
#[utoipa::path(
    post,
    operation_id = "post_enrollment",
    path = "/v1/enrollments",
    tag = "agent",
    request_body(content = String, content_type = "application/jose",
        description = "A compact JWS (typ duress-enrollment) signed by the key it enrolls (docs/protocol.md)"),
    responses(
        (status = 201, description = "Enrolled (or the key was enrolled already): the device id and status", body = serde_json::Value),
        crate::openapi::EnrollmentProblems,
    )
)]
pub async fn post(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let ip = client.ip();
    if state.enrollment_failures.check(ip, Instant::now()).is_err() {
        tracing::warn!(client = %ip, "enrollment refused: too many failed attempts");
        return ApiProblem::new(
            ProblemType::TooManyRequests,
            "too many failed enrollment attempts from this address; retry in a minute",
        )
        .into_response();
    }
    let result = match SignedBody::from_request(request, &state).await {
        Ok(SignedBody(body)) => enroll(&state, &body).await,
        Err(p) => Err(p),
    };
    match result {
        Ok(answer) => (StatusCode::CREATED, Json(answer)).into_response(),
        Err(p) => {
            if p.status().is_client_error() {
                state.enrollment_failures.record_failure(ip, Instant::now());
            }
            tracing::info!(client = %ip, problem = %p.0.type_uri, "enrollment refused");
            p.into_response()
        }
    }
}

async fn enroll(state: &AppState, body: &str) -> Result<EnrollmentAnswer, ApiProblem> {
    let parsed = ParsedJws::parse(body)?;
    parsed.expect_typ(Typ::Enrollment)?;
    let (payload, jwk) = parsed.verify_with_embedded_jwk().map_err(|e| {
        let detail = match e {
            JwsError::BadSignature => {
                "the signature does not verify with the jwk in the header".into()
            }
            other => other.to_string(),
        };
        ApiProblem::new(ProblemType::ProofOfPossession, detail)
    })?;
    // Not `parse_claims`: a serde message could quote the token.
    let claims: EnrollmentClaims = serde_json::from_slice(payload)
        .map_err(|_| invalid_claims("claims do not match the duress-enrollment schema"))?;
    claims.validate().map_err(invalid_claims)?;
    let now = receiver_now();
    check_clock(claims.sent_at, now)?;

    let token_hash = tokens::hash(&claims.token);
    let token_ref = tokens::log_ref(&token_hash).to_owned();
    let request = EnrollRequest {
        token_hash,
        new_device_id: Uuid::now_v7().to_string(),
        key_thumbprint: jwk.thumbprint(),
        public_jwk: jwk,
        host: claims.host,
        location: claims.location,
        now,
    };
    let outcome = state.store.enroll(request).await.map_err(storage_problem)?;
    let (device_id, status) = match outcome {
        EnrollOutcome::Enrolled { device_id, status } => {
            tracing::info!(%device_id, status = status.as_str(), token = %token_ref, "device enrolled");
            (device_id, status)
        }
        EnrollOutcome::AlreadyEnrolled { device_id, status } => {
            tracing::info!(%device_id, token = %token_ref, "known key enrolled again; existing device returned");
            (device_id, status)
        }
        EnrollOutcome::Refused(refusal) => {
            tracing::info!(token = %token_ref, ?refusal, "enrollment token refused");
            return Err(refusal_problem(refusal));
        }
    };
    Ok(EnrollmentAnswer {
        device_id,
        status,
        server_time: now,
    })
}

fn refusal_problem(refusal: EnrollRefusal) -> ApiProblem {
    let (kind, detail) = match refusal {
        EnrollRefusal::TokenInvalid => (ProblemType::TokenInvalid, "unknown enrollment token"),
        EnrollRefusal::TokenExpired => (
            ProblemType::TokenExpired,
            "the enrollment token has expired",
        ),
        EnrollRefusal::TokenUsedUp => (
            ProblemType::TokenUsedUp,
            "the enrollment token has no uses left",
        ),
        EnrollRefusal::TokenRevoked => (
            ProblemType::TokenRevoked,
            "the enrollment token was revoked",
        ),
        EnrollRefusal::KeyAlreadyEnrolled => (
            ProblemType::KeyAlreadyEnrolled,
            "this key belongs to a disabled or revoked device",
        ),
    };
    ApiProblem::new(kind, detail)
}
