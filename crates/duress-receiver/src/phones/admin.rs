//! The `phones` admin commands (CLI): import, list, remove, and the access-point table.

use crate::admin::with_store;
use crate::store::{AccessPoint, NewPhone, PhonePutRefusal, PhoneRecord, StoreLocation};

/// The audit actor of the CLI's changes.
const CLI: &str = "cli";

/// Imports an inventory CSV (`device_name,extension,label,BLD,FLR,ROOM,secret,allowed_network`):
/// every line is checked before any secret is hashed or anything written, and all phones are
/// written in one transaction (a listed phone is changed, its secret replaced). Returns how
/// many phones were imported.
pub async fn import_phones(at: impl Into<StoreLocation>, csv: &str) -> anyhow::Result<usize> {
    let parsed = super::inventory::parse_phones_csv(csv).map_err(anyhow::Error::msg)?;
    // Hashing is the slow part (argon2id, tens of ms each): off the runtime's threads.
    let phones: Vec<NewPhone> = tokio::task::spawn_blocking(move || {
        parsed
            .into_iter()
            .map(|(mut p, secret)| {
                p.secret_hash = Some(super::inventory::hash_secret(&secret)?);
                Ok(p)
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await??;
    with_store(at, async |s| match s.put_phones(phones, CLI).await? {
        Ok(n) => Ok(n),
        Err(PhonePutRefusal::SecretRequired(name)) => {
            anyhow::bail!("{name}: a new phone needs a secret")
        }
    })
    .await
}

pub async fn list_phones(at: impl Into<StoreLocation>) -> anyhow::Result<Vec<PhoneRecord>> {
    with_store(at, async |s| Ok(s.phones().await?)).await
}

/// Removes a phone (its station is revoked and retired; its incidents stay).
pub async fn remove_phone(at: impl Into<StoreLocation>, device_name: &str) -> anyhow::Result<()> {
    let name = super::inventory::device_name(device_name).map_err(anyhow::Error::msg)?;
    with_store(at, async |s| {
        if s.remove_phone(&name, CLI).await? {
            Ok(())
        } else {
            anyhow::bail!("no phone {name} in the inventory")
        }
    })
    .await
}

/// Imports an access-point CSV (`bssid,label,BLD,FLR,ROOM`), all lines or none.
pub async fn import_access_points(
    at: impl Into<StoreLocation>,
    csv: &str,
) -> anyhow::Result<usize> {
    let aps = super::inventory::parse_access_points_csv(csv).map_err(anyhow::Error::msg)?;
    with_store(at, async |s| Ok(s.put_access_points(aps, CLI).await?)).await
}

pub async fn list_access_points(at: impl Into<StoreLocation>) -> anyhow::Result<Vec<AccessPoint>> {
    with_store(at, async |s| Ok(s.access_points().await?)).await
}
