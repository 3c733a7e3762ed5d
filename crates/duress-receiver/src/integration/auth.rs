//! `Authorization: Bearer KEY` (RFC 6750) for the integration API: the key is looked up by its
//! hash; a missing, unknown or revoked key is 401 `api-key-invalid` with a `WWW-Authenticate`
//! challenge, a read key on a write route 403 `insufficient-scope`.
//!
//! No failure limiter: a key has 256 bits of entropy, so guessing is hopeless, and every
//! refusal costs one indexed read.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use duress_core::ProblemType;

use crate::api::AppState;
use crate::problem::ApiProblem;
use crate::store::ApiKeyRecord;

/// A refusal of the integration API: a problem, with the Bearer challenge on a 401.
#[derive(Debug)]
pub struct IntegrationProblem(pub ApiProblem);

impl From<ApiProblem> for IntegrationProblem {
    fn from(p: ApiProblem) -> Self {
        IntegrationProblem(p)
    }
}

impl IntoResponse for IntegrationProblem {
    fn into_response(self) -> Response {
        let challenge = self.0.kind() == Some(ProblemType::ApiKeyInvalid);
        let mut response = self.0.into_response();
        if challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"duress\""),
            );
        }
        response
    }
}

pub(crate) fn problem(kind: ProblemType, detail: impl Into<String>) -> IntegrationProblem {
    IntegrationProblem(ApiProblem::new(kind, detail))
}

/// The caller's API key (valid, not revoked).
#[derive(Debug, Clone)]
pub struct ApiKey(pub ApiKeyRecord);

impl ApiKey {
    /// 403 unless the key may change incidents.
    pub fn require_write(&self) -> Result<(), IntegrationProblem> {
        if self.0.scope.can_write() {
            Ok(())
        } else {
            Err(problem(
                ProblemType::InsufficientScope,
                "this API key is read-only; claiming, notes and resolving need a read-write key",
            ))
        }
    }
}

/// The key of `Authorization: Bearer KEY` (scheme case-insensitive), if the header has one.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(key.trim())
        .filter(|k| !k.is_empty())
}

impl<S> FromRequestParts<S> for ApiKey
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = IntegrationProblem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(key) = bearer(parts) else {
            return Err(problem(
                ProblemType::ApiKeyInvalid,
                "send an API key as Authorization: Bearer KEY (duress-receiver apikey create)",
            ));
        };
        let app = AppState::from_ref(state);
        let record = app
            .store
            .api_key_by_hash(&super::keys::hash(key))
            .await
            .map_err(|e| IntegrationProblem(crate::api::storage_problem(e)))?;
        match record {
            Some(record) if !record.is_revoked() => Ok(ApiKey(record)),
            Some(_) => Err(problem(
                ProblemType::ApiKeyInvalid,
                "this API key was revoked",
            )),
            None => Err(problem(ProblemType::ApiKeyInvalid, "unknown API key")),
        }
    }
}
