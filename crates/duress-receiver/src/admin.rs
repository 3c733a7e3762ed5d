//! What the admin subcommands do (and whole-system tests call). Each function opens the store
//! in `data_dir` (creating and migrating it if needed), does one thing and closes it again, so
//! it works beside a running receiver (SQLite WAL allows one writer and many readers).
//!
//! Test events (`kind: test`) never belong to an incident: they are not in
//! [`list_incidents`]; [`list_test_events`] lists them, and [`list_events`] lists every event
//! with its `incident_id` (none for tests and for a cancel that found no open incident).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use duress_core::{DeviceStatus, EventKind};

use crate::records::{DeviceRecord, EventRecord, ExportedEvent, IncidentRecord};
use crate::store::{NewToken, SqliteStore, Store as _};
use crate::tokens;

pub use crate::store::Approve;

async fn with_store<T>(
    data_dir: &Path,
    f: impl AsyncFnOnce(&SqliteStore) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let store = SqliteStore::open(data_dir)
        .await
        .with_context(|| format!("opening the receiver store in {}", data_dir.display()))?;
    let result = f(&store).await;
    store.close().await;
    result
}

/// Creates an enrollment token good for `uses` enrollments until `expires` from now (`None`:
/// never). Returns the plaintext token; only its hash is stored.
pub async fn create_token(
    data_dir: &Path,
    uses: u32,
    expires: Option<Duration>,
    approve: Approve,
) -> anyhow::Result<String> {
    anyhow::ensure!(uses >= 1, "a token needs at least one use");
    let now = crate::api::receiver_now();
    let expires_at = match expires {
        Some(d) => Some(
            time::Duration::try_from(d)
                .ok()
                .and_then(|d| now.checked_add(d))
                .context("the expiry is too far in the future")?,
        ),
        None => None,
    };
    let token = tokens::generate().map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token_hash = tokens::hash(&token);
    with_store(data_dir, async |store| {
        store
            .create_token(NewToken {
                token_hash: token_hash.clone(),
                uses,
                expires_at,
                approve,
                created_at: now,
            })
            .await?;
        Ok(())
    })
    .await?;
    tracing::info!(
        token = tokens::log_ref(&token_hash),
        uses,
        approve = approve.as_str(),
        "enrollment token created"
    );
    Ok(token)
}

/// Revokes an enrollment token: no further device can enroll with it (devices already
/// enrolled with it are not affected).
pub async fn revoke_token(data_dir: &Path, token: &str) -> anyhow::Result<()> {
    let token_hash = tokens::hash(token.trim());
    let found = with_store(data_dir, async |store| {
        Ok(store.revoke_token(&token_hash).await?)
    })
    .await?;
    anyhow::ensure!(found, "no such enrollment token");
    tracing::info!(
        token = tokens::log_ref(&token_hash),
        "enrollment token revoked"
    );
    Ok(())
}

/// Every enrolled device, oldest first.
pub async fn list_devices(data_dir: &Path) -> anyhow::Result<Vec<DeviceRecord>> {
    with_store(data_dir, async |store| Ok(store.list_devices().await?)).await
}

/// Every real incident, oldest first, each with its events (tests are never here).
pub async fn list_incidents(data_dir: &Path) -> anyhow::Result<Vec<IncidentRecord>> {
    with_store(data_dir, async |store| Ok(store.list_incidents().await?)).await
}

/// Every stored event, in order of arrival, with its incident (if any).
pub async fn list_events(data_dir: &Path) -> anyhow::Result<Vec<EventRecord>> {
    with_store(data_dir, async |store| Ok(store.list_events().await?)).await
}

/// The self-tests (`kind: test`), in order of arrival.
pub async fn list_test_events(data_dir: &Path) -> anyhow::Result<Vec<EventRecord>> {
    let mut events = list_events(data_dir).await?;
    events.retain(|e| e.kind == EventKind::Test);
    Ok(events)
}

/// Every event with its raw JWS and the public key that verifies it.
pub async fn export_events(data_dir: &Path) -> anyhow::Result<Vec<ExportedEvent>> {
    with_store(data_dir, async |store| Ok(store.export_events().await?)).await
}

/// Approves (`active`), disables or revokes a device. Revocation is final.
pub async fn set_device_status(
    data_dir: &Path,
    device_id: &str,
    status: DeviceStatus,
) -> anyhow::Result<()> {
    with_store(data_dir, async |store| {
        Ok(store.set_device_status(device_id, status).await?)
    })
    .await
}
