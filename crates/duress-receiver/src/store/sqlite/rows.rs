//! Converting between stored columns and duress-core types.

use duress_core::{DeviceStatus, EventKind, Source};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::store::{StoreError, StoreResult};

pub(super) fn to_json<T: Serialize>(value: &T) -> String {
    // Our column types are plain data (strings, numbers, vectors): serialising cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

pub(super) fn from_json<T: DeserializeOwned>(column: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

pub(super) fn parse_uuid(text: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt(format!("uuid {text:?}: {e}")))
}

pub(super) fn status(text: &str) -> StoreResult<DeviceStatus> {
    DeviceStatus::parse(text).ok_or_else(|| StoreError::Corrupt(format!("device status {text:?}")))
}

pub(super) fn kind(text: &str) -> StoreResult<EventKind> {
    from_json("kind", &format!("\"{text}\""))
}

pub(super) fn source(text: &str) -> StoreResult<Source> {
    from_json("source", &format!("\"{text}\""))
}

/// A stored acknowledgement from its columns.
pub(super) fn ack(kid: String, jwk: &str, sig: String) -> StoreResult<duress_core::AckSignature> {
    Ok(duress_core::AckSignature {
        kid,
        jwk: from_json("event_acks.public_jwk", jwk)?,
        sig,
    })
}

pub(super) fn unsigned(column: &str, value: i64) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} is negative")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_sources_round_trip_through_their_column_text() {
        for k in [EventKind::Duress, EventKind::Test, EventKind::Cancel] {
            assert_eq!(kind(k.as_str()).unwrap(), k);
        }
        for s in [
            Source::Hotkey,
            Source::Tray,
            Source::Hotspot,
            Source::Cli,
            Source::Phone,
        ] {
            assert_eq!(source(s.as_str()).unwrap(), s);
        }
        assert!(kind("nope").is_err());
    }
}
