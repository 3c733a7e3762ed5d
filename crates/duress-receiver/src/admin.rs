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
        let mut incidents = store.list_incidents(IncidentFilter::All).await?;
        crate::subnets::annotate_from(store, &mut incidents).await?;
        Ok(incidents)
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

/// The disposition "resolve every open incident of this station" records: the action is for
/// a broken or hostile workstation that filled the board, the note says what was found.
pub const RESOLVE_OPEN_DISPOSITION: &str = "no emergency found";
/// Longest note an officer's text field takes (as the incident page's).
const MAX_NOTE_CHARS: usize = 4000;

/// The note of "resolve every open incident of this station", trimmed: required (the audit
/// log must say why), at most 4,000 characters, no control characters but line breaks and tabs.
pub fn resolve_open_note(note: &str) -> Result<&str, String> {
    let note = note.trim();
    if note.is_empty() {
        return Err(
            "a note is required: say why every open incident of this station is resolved".into(),
        );
    }
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(format!(
            "the note is longer than {MAX_NOTE_CHARS} characters"
        ));
    }
    if note
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err("the note contains control characters".into());
    }
    Ok(note)
}

/// Resolves every open incident of station `device_id` with `note` (required), audited as done
/// by the command line: one audit entry and live row per incident. Returns the incidents.
pub async fn resolve_open_incidents(
    at: impl Into<StoreLocation>,
    device_id: &str,
    note: &str,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    let note = resolve_open_note(note).map_err(anyhow::Error::msg)?;
    with_store(at, async |store| {
        Ok(store
            .resolve_open_of_device(device_id, CLI, RESOLVE_OPEN_DISPOSITION, note)
            .await?)
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

/// Adds a single sign-on console user (no password; linked at its first SSO sign-in).
pub async fn add_sso_user(
    at: impl Into<StoreLocation>,
    username: &str,
    role: Role,
) -> anyhow::Result<()> {
    with_store(at, async |store| {
        crate::console::oidc::add_sso_account(store, username, role, CLI).await
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

/// Resets a console user's password (audited as done by the CLI): the temporary password, to
/// print once, and how many of their sessions ended.
pub async fn reset_password(
    at: impl Into<StoreLocation>,
    username: &str,
) -> anyhow::Result<(zeroize::Zeroizing<String>, u64)> {
    with_store(at, async |store| {
        crate::console::passwords::reset(store, username, CLI).await
    })
    .await
}

/// Removes a console user's TOTP second factor (audited as done by the CLI); `false` when
/// they had none.
pub async fn remove_totp(at: impl Into<StoreLocation>, username: &str) -> anyhow::Result<bool> {
    with_store(at, async |store| {
        Ok(store.remove_totp(username, CLI).await?)
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

/// A consistent online backup of the store and the data directory to `out` (see [`crate::backup`]).
pub async fn backup(
    at: &StoreLocation,
    out: &std::path::Path,
) -> anyhow::Result<crate::backup::BackupReport> {
    crate::backup::backup(at, out).await
}

/// Restores a backup into `at` (an empty store unless `force`), then verifies the audit chain.
pub async fn restore(
    at: &StoreLocation,
    from: &std::path::Path,
    force: bool,
) -> anyhow::Result<crate::backup::RestoreReport> {
    crate::backup::restore(at, from, force).await
}

/// The current acknowledgement key's public JWK, then its thumbprint on the last line
/// (creating the key when there is none yet).
pub fn ack_key_show(data_dir: &std::path::Path) -> anyhow::Result<String> {
    Ok(crate::ack_key::AckKeys::load_or_create(data_dir)?.show_text())
}

/// Every acknowledgement key, current and listed, one JSON line each.
pub fn ack_key_list(data_dir: &std::path::Path) -> anyhow::Result<String> {
    Ok(crate::ack_key::AckKeys::load(data_dir)?.list_text())
}

/// A new current acknowledgement key (the previous one stays listed); returns what
/// [`ack_key_show`] would print for it.
pub fn ack_key_rotate(data_dir: &std::path::Path) -> anyhow::Result<String> {
    Ok(crate::ack_key::rotate(data_dir)?.show_text())
}

/// Removes the listed (non-current) keys, or only the one `kid` names; returns how many.
pub fn ack_key_retire(data_dir: &std::path::Path, kid: Option<&str>) -> anyhow::Result<usize> {
    crate::ack_key::retire(data_dir, kid)
}

/// Adds a subnet to the subnet → building/floor map (or changes where a listed one maps),
/// audited; returns it as stored.
pub async fn add_subnet(
    at: impl Into<StoreLocation>,
    cidr: &str,
    building: &str,
    floor: Option<&str>,
) -> anyhow::Result<crate::store::Subnet> {
    let subnet = crate::subnets::new_subnet(cidr, building, floor.unwrap_or(""))
        .map_err(anyhow::Error::msg)?;
    let stored = subnet.clone();
    with_store(at, async |s| Ok(s.put_subnets(vec![subnet], CLI).await?)).await?;
    Ok(stored)
}

/// Removes a subnet from the map, audited; an unlisted one is an error.
pub async fn remove_subnet(at: impl Into<StoreLocation>, cidr: &str) -> anyhow::Result<String> {
    let net = crate::subnets::parse_cidr(cidr).map_err(anyhow::Error::msg)?;
    let cidr = net.to_string();
    let removed = with_store(at, async |s| Ok(s.remove_subnet(&cidr, CLI).await?)).await?;
    anyhow::ensure!(removed, "{cidr} is not in the subnet map");
    Ok(cidr)
}

/// The subnet → building/floor map, in network text order.
pub async fn list_subnets(
    at: impl Into<StoreLocation>,
) -> anyhow::Result<Vec<crate::store::Subnet>> {
    with_store(at, async |s| Ok(s.subnets().await?)).await
}

/// Imports a CSV (header `cidr,BLD,FLR`): every row is checked before anything is written,
/// and all rows are written in one transaction (a listed subnet's mapping is replaced).
/// Returns how many rows were imported.
pub async fn import_subnets(at: impl Into<StoreLocation>, csv: &str) -> anyhow::Result<usize> {
    let subnets = crate::subnets::parse_csv(csv).map_err(anyhow::Error::msg)?;
    with_store(at, async |s| Ok(s.put_subnets(subnets, CLI).await?)).await
}

/// Sets one station's registered location (label, BLD, FLR, ROOM over its claimed civic
/// address; all four empty clears it), audited. `station` is a device id or a hostname (every
/// non-revoked station of that host). Returns the device ids changed.
pub async fn set_station_location(
    at: impl Into<StoreLocation>,
    station: &str,
    fields: [&str; 4],
) -> anyhow::Result<Vec<String>> {
    let row = crate::subnets::StationRow {
        station: station.to_owned(),
        label: fields[0].to_owned(),
        bld: fields[1].to_owned(),
        flr: fields[2].to_owned(),
        room: fields[3].to_owned(),
    };
    register_rows(at, vec![row]).await
}

/// Imports registered locations from a CSV with the header `station,label,BLD,FLR,ROOM`
/// (station = device id or hostname). Every row is resolved and checked before anything is
/// written, and all are written in one transaction. Returns the device ids changed.
pub async fn import_stations(
    at: impl Into<StoreLocation>,
    csv: &str,
) -> anyhow::Result<Vec<String>> {
    let rows = crate::subnets::parse_stations_csv(csv).map_err(anyhow::Error::msg)?;
    register_rows(at, rows).await
}

async fn register_rows(
    at: impl Into<StoreLocation>,
    rows: Vec<crate::subnets::StationRow>,
) -> anyhow::Result<Vec<String>> {
    with_store(at, async |s| {
        let devices = s.list_devices().await?;
        let mut changes: Vec<(String, Option<duress_core::Location>)> = Vec::new();
        for (n, row) in rows.iter().enumerate() {
            let matched: Vec<&DeviceRecord> = devices
                .iter()
                .filter(|d| {
                    d.device_id == row.station
                        || (d.hostname.eq_ignore_ascii_case(&row.station)
                            && d.status != DeviceStatus::Revoked)
                })
                .collect();
            anyhow::ensure!(
                !matched.is_empty(),
                "row {}: no enrolled station {:?} (a device id or hostname)",
                n + 1,
                row.station
            );
            for d in matched {
                anyhow::ensure!(
                    !changes.iter().any(|(id, _)| *id == d.device_id),
                    "row {}: station {} is listed twice",
                    n + 1,
                    d.device_id
                );
                let empty = [&row.label, &row.bld, &row.flr, &row.room]
                    .iter()
                    .all(|v| v.trim().is_empty());
                let location = if empty {
                    None
                } else {
                    let base = d.registered_location.as_ref().unwrap_or(&d.location);
                    Some(
                        crate::subnets::with_fields(
                            base, &row.label, &row.bld, &row.flr, &row.room,
                        )
                        .map_err(|e| anyhow::anyhow!("row {}: {e}", n + 1))?,
                    )
                };
                changes.push((d.device_id.clone(), location));
            }
        }
        let ids = changes.iter().map(|(id, _)| id.clone()).collect();
        s.set_registered_locations(changes, CLI).await?;
        Ok(ids)
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
