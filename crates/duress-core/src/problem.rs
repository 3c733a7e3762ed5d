//! RFC 9457 problem details: every refusal has a stable `type` so agents and tests can tell
//! them apart without parsing prose.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Prefix of every problem `type` URI.
pub const TYPE_PREFIX: &str = "urn:duress:problem:";

macro_rules! problem_types {
    ($( $variant:ident => ($slug:literal, $status:literal, $title:literal) ),* $(,)?) => {
        /// Every refusal a receiver can answer with. The slug after [`TYPE_PREFIX`] is stable.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ProblemType { $( $variant ),* }

        impl ProblemType {
            pub const ALL: &'static [ProblemType] = &[ $( ProblemType::$variant ),* ];

            /// The stable slug, e.g. `bad-signature`.
            pub const fn slug(self) -> &'static str {
                match self { $( ProblemType::$variant => $slug ),* }
            }
            /// The HTTP status that goes with it.
            pub const fn status(self) -> u16 {
                match self { $( ProblemType::$variant => $status ),* }
            }
            /// A short, fixed summary (RFC 9457 `title`).
            pub const fn title(self) -> &'static str {
                match self { $( ProblemType::$variant => $title ),* }
            }
        }
    };
}

problem_types! {
    UnsupportedMediaType => ("unsupported-media-type", 415, "Content-Type must be application/jose"),
    BodyTooLarge => ("body-too-large", 413, "Request body exceeds 64 KiB"),
    RequestTimeout => ("request-timeout", 408, "The request body did not arrive in time; retry"),
    MalformedJws => ("malformed-jws", 400, "Body is not a JWS compact serialization"),
    UnsupportedAlgorithm => ("unsupported-algorithm", 400, "Only Ed25519 (or legacy EdDSA) signatures are accepted"),
    UnsupportedCrit => ("unsupported-crit", 400, "Critical header extensions are not supported"),
    WrongTyp => ("wrong-typ", 400, "JWS typ does not match this endpoint"),
    InvalidClaims => ("invalid-claims", 422, "Claims are missing, malformed or out of bounds"),
    MissingKid => ("missing-kid", 400, "JWS header has no kid"),
    UnknownDevice => ("unknown-device", 401, "No enrolled device has this kid"),
    BadSignature => ("bad-signature", 401, "Signature does not verify with the device's key"),
    DevicePending => ("device-pending", 403, "Device awaits approval by an administrator"),
    DeviceDisabled => ("device-disabled", 403, "Device is disabled"),
    DeviceRevoked => ("device-revoked", 403, "Device is revoked"),
    ClockSkew => ("clock-skew", 422, "sent_at is outside the receiver's window; see server_time"),
    IdConflict => ("id-conflict", 409, "This event id belongs to another device or event"),
    TokenInvalid => ("token-invalid", 401, "Enrollment token is not valid"),
    TokenExpired => ("token-expired", 401, "Enrollment token has expired"),
    TokenUsedUp => ("token-used-up", 401, "Enrollment token has no uses left"),
    TokenRevoked => ("token-revoked", 401, "Enrollment token was revoked"),
    ProofOfPossession => ("proof-of-possession", 401, "Enrollment is not signed by the key it enrolls"),
    KeyAlreadyEnrolled => ("key-already-enrolled", 409, "This public key is already enrolled"),
    TooManyRequests => ("too-many-requests", 429, "Too many failed attempts; retry later"),
    NotFound => ("not-found", 404, "No such resource"),
    // The integration API (issue 14): API keys, their scopes, officers' actions by a PSIM.
    ApiKeyInvalid => ("api-key-invalid", 401, "Missing, unknown or revoked API key"),
    InsufficientScope => ("insufficient-scope", 403, "This API key's scope does not allow this"),
    IncidentClaimed => ("incident-claimed", 409, "Someone else holds this incident; take it over explicitly"),
    InvalidRequest => ("invalid-request", 422, "The request is malformed or not allowed in the incident's state"),
    MethodNotAllowed => ("method-not-allowed", 405, "Method not allowed"),
    // Desk phones (docs/integrations.md, "Desk phones"): a push refused for its identity.
    PhoneUnknown => ("phone-unknown", 403, "No phone of the inventory has this device name"),
    PhoneBadKey => ("phone-bad-key", 403, "The phone's key is wrong"),
    PhoneWrongNetwork => ("phone-wrong-network", 403, "The request did not come from the phone's allowed network"),
    MalformedXml => ("malformed-xml", 400, "Body is not the expected XML document"),
    StorageUnavailable => ("storage-unavailable", 503, "The receiver cannot commit right now; retry"),
    Internal => ("internal", 500, "Internal error; retry"),
}

impl ProblemType {
    /// The full `type` URI, e.g. `urn:duress:problem:bad-signature`.
    pub fn uri(self) -> String {
        format!("{TYPE_PREFIX}{}", self.slug())
    }

    pub fn from_uri(uri: &str) -> Option<Self> {
        let slug = uri.strip_prefix(TYPE_PREFIX)?;
        Self::ALL.iter().copied().find(|t| t.slug() == slug)
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Only on `clock-skew` (and harmlessly on others): the receiver's clock, so the agent can
    /// correct its offset and re-sign.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub server_time: Option<OffsetDateTime>,
}

impl Problem {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Problem {
            type_uri: kind.uri(),
            title: kind.title().to_owned(),
            status: kind.status(),
            detail: Some(detail.into()),
            server_time: None,
        }
    }

    pub fn with_server_time(mut self, t: OffsetDateTime) -> Self {
        self.server_time = Some(t);
        self
    }

    pub fn kind(&self) -> Option<ProblemType> {
        ProblemType::from_uri(&self.type_uri)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for t in ProblemType::ALL {
            assert!(seen.insert(t.slug()), "duplicate slug {}", t.slug());
            assert_eq!(ProblemType::from_uri(&t.uri()), Some(*t));
            assert!((400..600).contains(&t.status()));
        }
    }

    #[test]
    fn wire_shape() {
        let p = Problem::new(ProblemType::BadSignature, "nope");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "urn:duress:problem:bad-signature");
        assert_eq!(v["status"], 401);
        assert!(v.get("server_time").is_none());
    }
}
