//! Decisions and caches both backends share, so each backend only says how its database reads
//! and writes: the device-key cache, what an enrollment of a known key answers, and the rule
//! that revocation is final.

use std::collections::HashMap;
use std::sync::Mutex;

use duress_core::{DeviceStatus, VerifyingKey};

use super::{DeviceKey, EnrollOutcome, EnrollRefusal, StoreError, StoreResult};

/// More distinct devices than this and the key cache starts again from empty (a bound on
/// memory against a flood of distinct kids; ≈ 200 bytes an entry).
const MAX_CACHED_KEYS: usize = 250_000;

/// Verified devices' public keys, parsed once. A device's key never changes (a new key is a new
/// enrollment, a new device id) and devices are never deleted, so entries never go stale; the
/// status, which does change, is never cached (see `IngestStore::verifying_key`).
#[derive(Debug, Default)]
pub(crate) struct KeyCache(Mutex<HashMap<String, VerifyingKey>>);

impl KeyCache {
    fn get(&self, device_id: &str) -> Option<VerifyingKey> {
        let keys = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        keys.get(device_id).copied()
    }

    fn insert(&self, device_id: &str, key: VerifyingKey) {
        let mut keys = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        if keys.len() >= MAX_CACHED_KEYS {
            keys.clear();
        }
        keys.insert(device_id.to_owned(), key);
    }

    /// The cached key, else the stored one (`fetch`), parsed and cached.
    pub(crate) async fn verifying_key(
        &self,
        device_id: &str,
        fetch: impl Future<Output = StoreResult<Option<DeviceKey>>>,
    ) -> StoreResult<Option<VerifyingKey>> {
        if let Some(key) = self.get(device_id) {
            return Ok(Some(key));
        }
        let Some(device) = fetch.await? else {
            return Ok(None);
        };
        let key = device.public_jwk.to_verifying_key().map_err(|e| {
            StoreError::Corrupt(format!("device {device_id}: stored key is unusable: {e}"))
        })?;
        self.insert(device_id, key);
        Ok(Some(key))
    }
}

/// The answer to an enrollment whose key is already enrolled (nothing is written):
/// a disabled or revoked device is not revived; a retry with the token that enrolled it is
/// answered again even if that token is used up by now (this very enrollment used it);
/// otherwise the token must still be good.
pub(crate) fn known_key_outcome(
    device_id: String,
    status: DeviceStatus,
    enrolled_with_this_token: bool,
    token_problem: Option<EnrollRefusal>,
) -> EnrollOutcome {
    match status {
        DeviceStatus::Disabled | DeviceStatus::Revoked => {
            EnrollOutcome::Refused(EnrollRefusal::KeyAlreadyEnrolled)
        }
        _ if enrolled_with_this_token => EnrollOutcome::AlreadyEnrolled { device_id, status },
        _ => match token_problem {
            Some(refusal) => EnrollOutcome::Refused(refusal),
            None => EnrollOutcome::AlreadyEnrolled { device_id, status },
        },
    }
}

/// Revocation is final: a revoked device can only be re-enrolled with a new key.
pub(crate) fn check_status_change(
    device_id: &str,
    current: DeviceStatus,
    new: DeviceStatus,
) -> StoreResult<()> {
    if current == DeviceStatus::Revoked && new != DeviceStatus::Revoked {
        return Err(StoreError::Refused(format!(
            "device {device_id} is revoked; revocation is final (enroll it again with a new key)"
        )));
    }
    Ok(())
}
