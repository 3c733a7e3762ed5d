//! # duress-core — the Duress wire protocol
//!
//! Everything both halves of Duress must agree on, and nothing else: no I/O, no clocks read,
//! no randomness drawn (callers pass those in), so the protocol can be tested exhaustively.
//!
//! - [`jws`]: JWS compact serialization signed with Ed25519 (RFC 7515, RFC 8037, RFC 9864).
//!   Signing emits `alg: "Ed25519"`; verification also accepts legacy `EdDSA` and rejects
//!   every other algorithm and any `crit` extension.
//! - [`messages`]: the claims of the three signed messages (`duress-event`,
//!   `duress-heartbeat`, `duress-enrollment`) and the receiver's JSON answers.
//! - [`ack`]: the receiver's signed acknowledgements (detached Ed25519 over fixed text).
//! - [`location`]: a dispatchable location in RFC 5139 civic-address names plus a label.
//! - [`problem`]: RFC 9457 problem details with the stable `type` of every refusal.
//! - [`clock`]: the send-time window (the second of "the two clocks").
//!
//! The normative description is `docs/protocol.md`.
#![forbid(unsafe_code)]

pub mod ack;
pub mod clock;
pub mod jws;
pub mod location;
pub mod messages;
pub mod problem;
pub mod text;

pub use ack::{AckError, AckSignature, AckSigningKey, TrustedAckKey};
pub use ed25519_dalek::VerifyingKey;
pub use jws::{DeviceKey, Jwk, JwsError, ParsedJws, Typ};
pub use location::Location;
pub use messages::{
    DeviceStatus, EnrollmentAnswer, EnrollmentClaims, EventAck, EventClaims, EventKind,
    HeartbeatAnswer, HeartbeatClaims, HostFacts, HotkeyState, PinCheck, PolicyFacts,
    RetirementAnswer, RetirementClaims, Source,
};
pub use problem::{Problem, ProblemType};

/// Media type of every signed request body (RFC 7515 §9.2.1).
pub const JOSE_CONTENT_TYPE: &str = "application/jose";
/// Media type of every error answer (RFC 9457).
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
/// Largest request body a receiver accepts; anything bigger is refused unread.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
