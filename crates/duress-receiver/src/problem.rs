//! RFC 9457 answers: [`ApiProblem`] turns a `duress_core::Problem` into an HTTP response, and
//! [`problem_for_bare_errors`] rewrites any error response that is not yet problem+json (axum's
//! own 404/405/413 texts, a rejection we did not map) so that *every* refusal has a stable type.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use duress_core::{JwsError, PROBLEM_CONTENT_TYPE, Problem, ProblemType};

/// A refusal on its way to the client. The status always comes from the problem's type. The
/// second field: the `Retry-After` seconds of a 429 (`None`: 60).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiProblem(pub Problem, pub Option<u64>);

impl ApiProblem {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        ApiProblem(Problem::new(kind, detail), None)
    }

    /// 429 `too-many-requests` with `Retry-After: retry_after_s`.
    pub fn too_many_requests(detail: impl Into<String>, retry_after_s: u64) -> Self {
        ApiProblem(
            Problem::new(ProblemType::TooManyRequests, detail),
            Some(retry_after_s.max(1)),
        )
    }

    pub fn kind(&self) -> Option<ProblemType> {
        self.0.kind()
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<Problem> for ApiProblem {
    fn from(p: Problem) -> Self {
        ApiProblem(p, None)
    }
}

/// Each JWS refusal has its own type, so an agent (and a test) can tell them apart.
impl From<JwsError> for ApiProblem {
    fn from(e: JwsError) -> Self {
        let kind = match &e {
            JwsError::UnsupportedAlgorithm(_) => ProblemType::UnsupportedAlgorithm,
            JwsError::UnsupportedCrit(_) => ProblemType::UnsupportedCrit,
            JwsError::WrongTyp { .. } => ProblemType::WrongTyp,
            JwsError::BadSignature => ProblemType::BadSignature,
            // Malformed, BadKey and whatever a later duress-core adds: the token is unusable.
            _ => ProblemType::MalformedJws,
        };
        ApiProblem::new(kind, e.to_string())
    }
}

impl IntoResponse for ApiProblem {
    fn into_response(self) -> Response {
        let status = self.status();
        // Serialising a struct of strings and numbers cannot fail; fall back to a bare body.
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        let mut response = (status, body).into_response();
        set_problem_headers(&mut response);
        if self.0.kind() == Some(ProblemType::TooManyRequests) {
            let seconds = self.1.unwrap_or(60);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

fn set_problem_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    // A refusal is about this request only; no cache may replay it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The problem type that goes with a status produced outside our handlers.
fn kind_for_status(status: StatusCode) -> ProblemType {
    match status.as_u16() {
        404 => ProblemType::NotFound,
        405 => ProblemType::MethodNotAllowed,
        413 => ProblemType::BodyTooLarge,
        415 => ProblemType::UnsupportedMediaType,
        422 => ProblemType::InvalidClaims,
        429 => ProblemType::TooManyRequests,
        503 => ProblemType::StorageUnavailable,
        400..=499 => ProblemType::MalformedJws,
        _ => ProblemType::Internal,
    }
}

/// Router fallback: unknown paths.
pub async fn not_found() -> ApiProblem {
    ApiProblem::new(ProblemType::NotFound, "no such resource")
}

/// Middleware (`map_response`): any 4xx/5xx that is not problem+json becomes one, keeping its
/// headers (e.g. `Allow` on a 405) and, where the type allows, its status.
pub async fn problem_for_bare_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response.headers().get(header::CONTENT_TYPE);
    let is_problem =
        content_type.is_some_and(|v| v.as_bytes().starts_with(PROBLEM_CONTENT_TYPE.as_bytes()));
    // The console's own error pages are for people: leave them as they are.
    let is_page = content_type.is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    // A desk phone's refusal is a CiscoIPPhone object the phone renders (`crate::phones`).
    let is_phone_xml = content_type.is_some_and(|v| v.as_bytes().starts_with(b"text/xml"));
    if is_problem || is_page || is_phone_xml {
        return response;
    }
    let kind = kind_for_status(status);
    let problem = Problem::new(kind, status.canonical_reason().unwrap_or("request refused"));
    let (mut parts, _) = response.into_parts();
    parts.status = StatusCode::from_u16(kind.status()).unwrap_or(status);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut response = Response::from_parts(
        parts,
        Body::from(serde_json::to_vec(&problem).unwrap_or_default()),
    );
    set_problem_headers(&mut response);
    response
}

/// For `CatchPanicLayer`: a panic in a handler is a 500 problem, never a dropped connection.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiProblem::new(ProblemType::Internal, "internal error; retry").into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_jws_error_maps_to_its_own_type() {
        let cases = [
            (JwsError::Malformed("x"), ProblemType::MalformedJws),
            (
                JwsError::UnsupportedAlgorithm("none".into()),
                ProblemType::UnsupportedAlgorithm,
            ),
            (
                JwsError::UnsupportedCrit(vec!["b64".into()]),
                ProblemType::UnsupportedCrit,
            ),
            (
                JwsError::WrongTyp {
                    expected: "duress-event",
                    found: None,
                },
                ProblemType::WrongTyp,
            ),
            (JwsError::BadSignature, ProblemType::BadSignature),
        ];
        for (err, kind) in cases {
            let p = ApiProblem::from(err);
            assert_eq!(p.kind(), Some(kind));
            assert_eq!(p.status().as_u16(), kind.status());
        }
    }

    #[tokio::test]
    async fn bare_errors_become_problems() {
        let bare = (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST")],
            "nope",
        )
            .into_response();
        let fixed = problem_for_bare_errors(bare).await;
        assert_eq!(fixed.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(fixed.headers()[header::CONTENT_TYPE], PROBLEM_CONTENT_TYPE);
        assert_eq!(fixed.headers()[header::ALLOW], "POST");
    }
}
