//! The OpenAPI 3.1 document of the receiver's HTTP API (issue 14, item 4), generated from the
//! handlers' `#[utoipa::path]` annotations, served at `GET /openapi.json` and committed as
//! `docs/openapi.json` (`tests/openapi.rs` fails when they differ: regenerate with
//! `DURESS_WRITE_OPENAPI=1 cargo test -p duress-receiver --test openapi`).
//!
//! **Adding a path is one line**: annotate the handler with `#[utoipa::path(…)]` (its refusals as
//! one of the problem sets below, or a new one made with [`problems`]) and name it in
//! `paths(…)` of [`ApiDoc`].
//!
//! Every refusal is documented per status with the problem types that status carries, from the
//! same [`ProblemType`] table the server answers with, so the document cannot name a status the
//! type does not have.

use std::collections::BTreeMap;

use axum::http::header;
use axum::response::IntoResponse;
use duress_core::{PROBLEM_CONTENT_TYPE, ProblemType};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// An RFC 9457 problem document as the receiver sends it (`duress_core::Problem`).
#[derive(Debug, serde::Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDoc {
    /// `urn:duress:problem:SLUG`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: Option<String>,
    /// Only on `clock-skew`: the receiver's clock (RFC 3339).
    pub server_time: Option<String>,
}

/// The responses of these problem types, one per status, each listing its types.
pub fn problems(kinds: &[ProblemType]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<&'static str>> = BTreeMap::new();
    for kind in kinds {
        by_status
            .entry(kind.status())
            .or_default()
            .push(kind.slug());
    }
    by_status
        .into_iter()
        .map(|(status, slugs)| {
            let content = ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "Problem",
                ))))
                .build();
            let response = ResponseBuilder::new()
                .description(format!("Problem types: {}", slugs.join(", ")))
                .content(PROBLEM_CONTENT_TYPE, content)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// What every signed-body (`application/jose`) request may be refused with before its handler
/// looks at it, and the store's answers.
const SIGNED_BODY: &[ProblemType] = &[
    ProblemType::UnsupportedMediaType,
    ProblemType::BodyTooLarge,
    ProblemType::RequestTimeout,
    ProblemType::MalformedJws,
    ProblemType::UnsupportedAlgorithm,
    ProblemType::UnsupportedCrit,
    ProblemType::WrongTyp,
    ProblemType::InvalidClaims,
    ProblemType::ClockSkew,
    ProblemType::StorageUnavailable,
];

/// A device-signed request: the signed-body refusals and the device's.
const DEVICE_SIGNED: &[ProblemType] = &[
    ProblemType::MissingKid,
    ProblemType::UnknownDevice,
    ProblemType::BadSignature,
    ProblemType::DevicePending,
    ProblemType::DeviceDisabled,
    ProblemType::DeviceRevoked,
    ProblemType::TooManyRequests,
];

fn joined(sets: &[&[ProblemType]]) -> BTreeMap<String, RefOr<Response>> {
    let all: Vec<ProblemType> = sets.iter().flat_map(|s| s.iter().copied()).collect();
    problems(&all)
}

/// `POST /v1/events` refusals.
#[derive(Debug)]
pub struct EventProblems;
impl IntoResponses for EventProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        joined(&[
            SIGNED_BODY,
            DEVICE_SIGNED,
            &[ProblemType::IdConflict, ProblemType::Internal],
        ])
    }
}

/// `POST /v1/heartbeats` and `POST /v1/retirements` refusals.
#[derive(Debug)]
pub struct DeviceProblems;
impl IntoResponses for DeviceProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        joined(&[SIGNED_BODY, DEVICE_SIGNED])
    }
}

/// `POST /v1/enrollments` refusals.
#[derive(Debug)]
pub struct EnrollmentProblems;
impl IntoResponses for EnrollmentProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        joined(&[
            SIGNED_BODY,
            &[
                ProblemType::TokenInvalid,
                ProblemType::TokenExpired,
                ProblemType::TokenUsedUp,
                ProblemType::TokenRevoked,
                ProblemType::ProofOfPossession,
                ProblemType::KeyAlreadyEnrolled,
                ProblemType::TooManyRequests,
            ],
        ])
    }
}

/// `POST /v1/phones/spectralink/alarm` and `POST /v1/phones/cisco/event` refusals (problem+json).
#[derive(Debug)]
pub struct PhonePushProblems;
impl IntoResponses for PhonePushProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = joined(&[&[
            ProblemType::MalformedXml,
            ProblemType::PhoneUnknown,
            ProblemType::PhoneWrongNetwork,
            ProblemType::PhoneBadKey,
            ProblemType::TooManyRequests,
            ProblemType::BodyTooLarge,
            ProblemType::StorageUnavailable,
        ]]);
        all.insert(
            "200".into(),
            xml_answer("Accepted: a CiscoIPPhoneResponse (nothing shown on the handset)"),
        );
        all
    }
}

/// `GET|POST /v1/phones/cisco/duress` answers: always a CiscoIPPhone XML object (a phone shows
/// what it gets, so a refusal is a plain CiscoIPPhoneText, never JSON).
#[derive(Debug)]
pub struct CiscoDuressAnswers;
impl IntoResponses for CiscoDuressAnswers {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [
            ("200", "Raised (or a repeat of the same press): CiscoIPPhoneExecute Init:Services, which shows nothing alarming"),
            ("400", "CiscoIPPhoneText: malformed-request (no or a malformed device= parameter)"),
            ("403", "CiscoIPPhoneText: phone-unknown, phone-wrong-network, phone-bad-key or phone-removed"),
            ("413", "The request body is too large"),
            ("429", "CiscoIPPhoneText: too-many-requests, with Retry-After"),
            ("503", "CiscoIPPhoneText: unavailable (the store); the phone may retry"),
        ]
        .into_iter()
        .map(|(status, description)| (status.to_owned(), xml_answer(description)))
        .collect()
    }
}

/// A `text/xml` answer (a CiscoIPPhone object).
fn xml_answer(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                crate::phones::xml::CONTENT_TYPE,
                ContentBuilder::new()
                    .schema(Some(RefOr::T(utoipa::openapi::schema::Schema::Object(
                        utoipa::openapi::schema::ObjectBuilder::new()
                            .schema_type(utoipa::openapi::schema::Type::String)
                            .build(),
                    ))))
                    .build(),
            )
            .build(),
    )
}

/// `GET /healthz` refusal.
#[derive(Debug)]
pub struct HealthProblems;
impl IntoResponses for HealthProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[ProblemType::StorageUnavailable])
    }
}

/// `GET /v1/incidents` refusals.
#[derive(Debug)]
pub struct ReadProblems;
impl IntoResponses for ReadProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[
            ProblemType::ApiKeyInvalid,
            ProblemType::InvalidRequest,
            ProblemType::StorageUnavailable,
        ])
    }
}

/// `GET /v1/stations` refusals.
#[derive(Debug)]
pub struct StationsProblems;
impl IntoResponses for StationsProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[ProblemType::ApiKeyInvalid, ProblemType::StorageUnavailable])
    }
}

/// Integration API reads of one incident or station.
#[derive(Debug)]
pub struct ReadOneProblems;
impl IntoResponses for ReadOneProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[
            ProblemType::ApiKeyInvalid,
            ProblemType::NotFound,
            ProblemType::StorageUnavailable,
        ])
    }
}

/// Integration API actions (claim, note, resolve).
#[derive(Debug)]
pub struct ActionProblems;
impl IntoResponses for ActionProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[
            ProblemType::ApiKeyInvalid,
            ProblemType::InsufficientScope,
            ProblemType::NotFound,
            ProblemType::IncidentClaimed,
            ProblemType::InvalidRequest,
            ProblemType::StorageUnavailable,
        ])
    }
}

/// The Bearer API key scheme of the integration API.
struct BearerKey;
impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An integration API key (`duress-receiver apikey create`), sent as \
                         Authorization: Bearer KEY",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document. Add a path: one line in `paths(…)`.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Duress receiver API",
        description = "The agent API (signed JWS bodies, docs/protocol.md) and the integration \
                       API for PSIMs (Bearer API keys, docs/integrations.md). Every refusal is \
                       RFC 9457 problem+json.",
        license(name = "See the repository's LICENSE"),
    ),
    paths(
        crate::api::healthz,
        crate::api::ping,
        crate::api::enrollments::post,
        crate::api::events::post,
        crate::api::heartbeats::post,
        crate::api::retirements::post,
        crate::phones::cisco_duress_get,
        crate::phones::cisco_duress_post,
        crate::phones::spectralink_alarm,
        crate::phones::cisco_event,
        crate::integration::routes::list_incidents,
        crate::integration::routes::incident,
        crate::integration::routes::incident_cap,
        crate::integration::routes::claim,
        crate::integration::routes::note,
        crate::integration::routes::resolve,
        crate::integration::routes::list_stations,
        crate::integration::routes::station,
    ),
    components(schemas(ProblemDoc, crate::integration::routes::StatusFilter)),
    modifiers(&BearerKey),
    tags(
        (name = "agent", description = "What the Duress agent sends (signed with its device key)"),
        (name = "integration", description = "For PSIMs and other systems (Bearer API key)"),
        (name = "phones", description = "Desk and wireless phones' duress keys (docs/integrations.md, Desk phones): identified by the inventory's device name, secret and allowed network"),
        (name = "operations", description = "Health checks"),
    )
)]
pub struct ApiDoc;

/// The document as committed in docs/openapi.json: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

/// `GET /openapi.json`.
pub async fn serve() -> axum::response::Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
        .into_response()
}
