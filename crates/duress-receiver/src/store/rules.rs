//! Decisions and caches both backends share, so each backend only says how its database reads
//! and writes: the device-key cache, what an enrollment of a known key answers, and the rule
//! that revocation is final.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use duress_core::{DeviceStatus, VerifyingKey};

use super::{DeviceCredential, EnrollOutcome, EnrollRefusal, StoreError, StoreResult};

/// More distinct devices than this and the key cache starts again from empty (a bound on
/// memory against a flood of distinct kids; ≈ 200 bytes an entry).
const MAX_CACHED_KEYS: usize = 250_000;

/// How long a kid no device has is remembered as unknown: a flood of events with made-up kids
/// costs one database read per distinct kid per this long, not one per request. Short, because
/// a kid becomes known when its device enrolls (here that clears it at once; on another
/// receiver sharing a PostgreSQL database, a kid guessed before its enrollment would be
/// refused at most this long — device ids are random UUIDs, so that means nothing real).
pub(crate) const UNKNOWN_KID_TTL: Duration = Duration::from_secs(30);

/// At most this many unknown kids remembered (≈ 100 bytes an entry); beyond it, expired ones
/// are swept, and if none expired the memory starts again from empty (the flood then costs
/// database reads again, never unbounded memory).
const MAX_UNKNOWN_KIDS: usize = 50_000;

/// Verified devices' public keys, parsed once. A device's key never changes (a new key is a new
/// enrollment, a new device id) and devices are never deleted, so entries never go stale; the
/// status, which does change, is never cached (see `IngestStore::verifying_key`). Kids that no
/// device has are remembered briefly too ([`UNKNOWN_KID_TTL`]).
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    known: Mutex<HashMap<String, VerifyingKey>>,
    unknown: Mutex<HashMap<String, Instant>>,
}

impl KeyCache {
    /// The cached key of `device_id`, without touching the database.
    pub(crate) fn get(&self, device_id: &str) -> Option<VerifyingKey> {
        let keys = self
            .known
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        keys.get(device_id).copied()
    }

    fn insert(&self, device_id: &str, key: VerifyingKey) {
        let mut keys = self
            .known
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if keys.len() >= MAX_CACHED_KEYS {
            keys.clear();
        }
        keys.insert(device_id.to_owned(), key);
    }

    fn known_unknown(&self, device_id: &str, now: Instant) -> bool {
        let unknown = self
            .unknown
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        unknown
            .get(device_id)
            .is_some_and(|since| now.duration_since(*since) < UNKNOWN_KID_TTL)
    }

    fn remember_unknown(&self, device_id: &str, now: Instant) {
        let mut unknown = self
            .unknown
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if unknown.len() >= MAX_UNKNOWN_KIDS {
            unknown.retain(|_, since| now.duration_since(*since) < UNKNOWN_KID_TTL);
            if unknown.len() >= MAX_UNKNOWN_KIDS {
                unknown.clear();
            }
        }
        unknown.insert(device_id.to_owned(), now);
    }

    /// Forgets that `device_id` was unknown (it just enrolled here).
    pub(crate) fn enrolled(&self, device_id: &str) {
        let mut unknown = self
            .unknown
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        unknown.remove(device_id);
    }

    /// The cached key, else `None` for a kid found unknown within [`UNKNOWN_KID_TTL`], else
    /// the stored one (`fetch`), parsed and cached (or remembered as unknown).
    pub(crate) async fn verifying_key(
        &self,
        device_id: &str,
        fetch: impl Future<Output = StoreResult<Option<DeviceCredential>>>,
    ) -> StoreResult<Option<VerifyingKey>> {
        if let Some(key) = self.get(device_id) {
            return Ok(Some(key));
        }
        if self.known_unknown(device_id, Instant::now()) {
            return Ok(None);
        }
        let Some(device) = fetch.await? else {
            self.remember_unknown(device_id, Instant::now());
            return Ok(None);
        };
        // A desk phone's `devices` row (`phones::PHONE_JWK`) holds no agent key: nothing can
        // speak as it on the agent API, which answers such a kid like one no device has (401
        // unknown-device), not as a corrupt store (500).
        if device.public_jwk.kty == super::phones::PHONE_JWK_KTY {
            self.remember_unknown(device_id, Instant::now());
            return Ok(None);
        }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_kids_are_remembered_and_enrollment_forgets_them() {
        let cache = KeyCache::default();
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let fetch = || async {
            reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(None)
        };
        for _ in 0..3 {
            assert!(
                cache
                    .verifying_key("nobody", fetch())
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        assert_eq!(
            reads.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one read"
        );
        cache.enrolled("nobody");
        assert!(
            cache
                .verifying_key("nobody", fetch())
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
