//! What the admin subcommands do (and whole-system tests call). Each function opens the store
//! at its [`StoreLocation`] (SQLite in the data directory, or `--database URL`; creating and
//! migrating it if needed), does one thing and closes it again, so it works beside a running
//! receiver (SQLite WAL allows one writer and many readers; PostgreSQL many of both). A
//! `&Path` is taken as "SQLite in this data directory".
//!
//! Test events (`kind: test`) never belong to an incident: they are not in
//! [`list_incidents`]; [`list_test_events`] lists them, and [`list_events`] lists every event
//! with its `incident_id` (none for tests and for a cancel that found no open incident).

use std::time::Duration;

use anyhow::Context as _;
use duress_core::{DeviceStatus, EventKind};

use crate::console::accounts;
use crate::records::{DeviceRecord, EventRecord, ExportedEvent, IncidentRecord};
use crate::store::audit_chain::{self, AuditHead, ChainBreak};
use crate::store::{IncidentFilter, NewToken, Role, Store, StoreLocation, UserRecord};
use crate::tokens;

pub use crate::store::Approve;

/// The actor the audit log records for the command line.
const CLI: &str = "cli";

/// Opens the store at `at`, runs `f`, closes it.
pub async fn with_store<T>(
    at: impl Into<StoreLocation>,
    f: impl AsyncFnOnce(&dyn Store) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let at = at.into();
    let store = crate::store::open(&at)
        .await
        .with_context(|| at.opening())?;
    let result = f(store.as_ref()).await;
    store.close().await;
    result
}

/// Creates an enrollment token good for `uses` enrollments until `expires` from now (`None`:
/// never). Returns the plaintext token; only its hash is stored.
pub async fn create_token(
    at: impl Into<StoreLocation>,
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
    with_store(at, async |store| {
        store
            .create_token(
                NewToken {
                    token_hash: token_hash.clone(),
                    uses,
                    expires_at,
                    approve,
                    created_at: now,
                },
                CLI,
            )
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
pub async fn revoke_token(at: impl Into<StoreLocation>, token: &str) -> anyhow::Result<()> {
    let token_hash = tokens::hash(token.trim());
    let found = with_store(at, async |store| {
        Ok(store.revoke_token(&token_hash, CLI).await?)
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
pub async fn list_devices(at: impl Into<StoreLocation>) -> anyhow::Result<Vec<DeviceRecord>> {
    with_store(at, async |store| Ok(store.list_devices().await?)).await
}

/// Every device with its self-test flag for `period` (what `devices list --json` prints).
pub async fn device_listings(
    at: impl Into<StoreLocation>,
    period: std::time::Duration,
) -> anyhow::Result<Vec<crate::records::DeviceListing>> {
    let now = crate::api::receiver_now();
    Ok(list_devices(at)
        .await?
        .into_iter()
        .map(|d| crate::records::DeviceListing::new(d, now, period))
        .collect())
}

/// Every real incident, oldest first, each with its events (tests are never here), open or
/// resolved, with the officers' handling (claim, level, 911, resolution).
pub async fn list_incidents(at: impl Into<StoreLocation>) -> anyhow::Result<Vec<IncidentRecord>> {
    with_store(at, async |store| {
        Ok(store.list_incidents(IncidentFilter::All).await?)
    })
    .await
}

/// Every stored event, in order of arrival, with its incident (if any).
pub async fn list_events(at: impl Into<StoreLocation>) -> anyhow::Result<Vec<EventRecord>> {
    with_store(at, async |store| Ok(store.list_events().await?)).await
}

/// The self-tests (`kind: test`), in order of arrival.
pub async fn list_test_events(at: impl Into<StoreLocation>) -> anyhow::Result<Vec<EventRecord>> {
    let mut events = list_events(at).await?;
    events.retain(|e| e.kind == EventKind::Test);
    Ok(events)
}

/// Every event with its raw JWS and the public key that verifies it. The export is audited
/// (before it is read, so no export leaves without its entry).
pub async fn export_events(at: impl Into<StoreLocation>) -> anyhow::Result<Vec<ExportedEvent>> {
    with_store(at, async |store| {
        store
            .record_audit(CLI, "events.export", "events", "events export (JSON Lines)")
            .await?;
        Ok(store.export_events().await?)
    })
    .await
}

/// Approves (`active`), disables or revokes a device. Revocation is final.
pub async fn set_device_status(
    at: impl Into<StoreLocation>,
    device_id: &str,
    status: DeviceStatus,
) -> anyhow::Result<()> {
    with_store(at, async |store| {
        Ok(store.set_device_status(device_id, status, CLI).await?)
    })
    .await
}

/// Adds a console user (audited as done by the command line).
pub async fn add_user(
    at: impl Into<StoreLocation>,
    username: &str,
    role: Role,
    password: &str,
) -> anyhow::Result<()> {
    with_store(at, async |store| {
        accounts::add(store, username, role, password, CLI).await
    })
    .await
}

/// Every console user.
pub async fn list_users(at: impl Into<StoreLocation>) -> anyhow::Result<Vec<UserRecord>> {
    with_store(at, async |store| Ok(store.list_users().await?)).await
}

/// Disables a console user and ends their sessions.
pub async fn disable_user(at: impl Into<StoreLocation>, username: &str) -> anyhow::Result<()> {
    with_store(at, async |store| {
        accounts::disable(store, username, CLI).await
    })
    .await
}

/// Recomputes the audit chain under the data directory's audit key, checks the stored head
/// and, when given, that `expect` (a head printed earlier by [`audit_head`]) is still in it:
/// `Ok(entries)` or where it breaks.
pub async fn verify_audit(
    at: impl Into<StoreLocation>,
    expect: Option<&AuditHead>,
) -> anyhow::Result<Result<usize, ChainBreak>> {
    with_store(at, async |store| {
        Ok(crate::store::verify_audit(store, expect).await?)
    })
    .await
}

/// The head of a chain that verifies (`ID:HASH` of the newest entry), for an auditor to keep
/// outside the receiver and later pass to `audit verify --expect-head`. An error when the
/// chain does not verify: a broken chain has no head worth anchoring.
pub async fn audit_head(at: impl Into<StoreLocation>) -> anyhow::Result<AuditHead> {
    with_store(at, async |store| {
        let head = store.audit_head().await?;
        let log = store.audit_log().await?;
        if let Err(broken) = audit_chain::verify(&log, store.audit_key(), Some(&head), None) {
            anyhow::bail!("{broken}");
        }
        Ok(log.last().map_or(AuditHead::empty(), |e| AuditHead {
            id: e.id,
            hash: e.hash.clone(),
        }))
    })
    .await
}

/// Purges what `config`'s `[retention]` no longer keeps (`duress-receiver purge`), whether or
/// not a daily purge ran lately; returns the line the command prints.
pub async fn purge(
    at: impl Into<StoreLocation>,
    config: &crate::config::ReceiverConfig,
    dry_run: bool,
) -> anyhow::Result<String> {
    let retention = config.retention.clone().unwrap_or_default();
    anyhow::ensure!(
        !crate::retention::cutoffs(&retention, crate::clock::receiver_now()).is_empty(),
        "the configuration file has no [retention] days: nothing would ever be purged"
    );
    with_store(at, async |store| {
        let outcome = crate::retention::purge_once(store, &retention, CLI, None, dry_run).await?;
        Ok(match outcome {
            crate::store::PurgeOutcome::Purged { counts, audit_id } => {
                format!("purged: {} (audit entry {audit_id})", counts.detail())
            }
            crate::store::PurgeOutcome::DryRun(counts) => {
                format!("dry run, nothing deleted; would purge: {}", counts.detail())
            }
            crate::store::PurgeOutcome::NotDue { last_run_at } => {
                format!("not due: a purge ran at {last_run_at}")
            }
        })
    })
    .await
}

/// Retires a station (`duress-receiver stations retire`): `true` when this call retired it,
/// `false` when it was retired already. An unknown id is an error that names it.
pub async fn retire_station(at: impl Into<StoreLocation>, device_id: &str) -> anyhow::Result<bool> {
    with_store(at, async |store| {
        match store.retire_device(device_id, CLI).await {
            Ok(outcome) => Ok(outcome == crate::store::RetireOutcome::Retired),
            Err(crate::store::StoreError::NoSuchDevice(_)) => {
                anyhow::bail!("no station {device_id:?} is enrolled (see `devices list`)")
            }
            Err(e) => Err(e.into()),
        }
    })
    .await
}
