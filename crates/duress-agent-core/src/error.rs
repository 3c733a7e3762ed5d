//! The crate's one error type.

use std::path::PathBuf;

use duress_core::Problem;
use uuid::Uuid;

use crate::keystore::KeystoreError;

/// Everything that can go wrong in the engine. Each variant's message is meant to be shown to a
/// person as is (CLI, tray status).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The policy file could not be read, parsed or validated.
    #[error("policy {origin}: {message}")]
    Policy { origin: String, message: String },
    /// The state directory could not be created or secured.
    #[error("state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The OS keystore failed; there is deliberately no fallback.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// The outbox database failed.
    #[error("outbox: {0}")]
    Outbox(#[from] rusqlite::Error),
    /// The outbox holds something it should not (a bug or a hand-edited file).
    #[error("outbox: {0}")]
    OutboxCorrupt(String),
    /// An operation that needs a device id ran before enrollment.
    #[error("not enrolled: run `duress-agent enroll` first")]
    NotEnrolled,
    /// `enroll` ran on an agent that already has a device id.
    #[error("already enrolled as device {0}")]
    AlreadyEnrolled(String),
    /// Enrolled, but the keystore no longer holds the device key.
    #[error(
        "enrolled as device {device_id} but the keystore holds no device key \
         (keystore entry {user} of service org.duress.agent); re-enroll this station"
    )]
    KeyMissing { device_id: String, user: String },
    /// Nothing to send to: neither the policy nor the enrollment names a receiver.
    #[error("no receiver configured: add [[receivers]] to the policy (or enroll with --receiver)")]
    NoReceiver,
    /// Enrollment needs a token and none was given.
    #[error("no enrollment token: set [enrollment] token in the policy or pass --token")]
    NoEnrollmentToken,
    /// The TLS client for a receiver could not be built (bad CA file, ...).
    #[error("TLS setup for {url}: {message}")]
    Tls { url: String, message: String },
    /// A receiver answered with a problem (4xx) that retrying unchanged will not fix soon.
    #[error("receiver refused: {}", problem_summary(.0))]
    Refused(Problem),
    /// No receiver could be reached (network errors, 5xx, answers that were not acks).
    #[error("no receiver reachable: {0}")]
    Unreachable(String),
    /// An acknowledgement named another event; nothing is marked delivered.
    #[error("acknowledgement names event {got}, not {expected}")]
    AckMismatch { expected: Uuid, got: Uuid },
    /// A request that contradicts the policy or is otherwise invalid.
    #[error("{0}")]
    Invalid(String),
    /// A background task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

/// One line for a problem: `type (status): detail`.
pub(crate) fn problem_summary(p: &Problem) -> String {
    match &p.detail {
        Some(d) => format!("{} ({}): {d}", p.type_uri, p.status),
        None => format!("{} ({}): {}", p.type_uri, p.status, p.title),
    }
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
