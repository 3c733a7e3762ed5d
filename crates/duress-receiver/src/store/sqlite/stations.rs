//! Stations: enrollment tokens and device status (audited), and their listings.

use duress_core::{DeviceStatus, Location};
use sqlx::Row as _;
use sqlx::SqliteConnection;

use super::rows::{from_json, to_json};
use super::{SqliteStore, listings, log};
use crate::records::DeviceRecord;
use crate::store::audit_chain::AuditKey;
use crate::store::{
    Approve, NewToken, StationStore, StoreError, StoreFuture, StoreResult, TokenRecord, format_ts,
    location_summary, parse_ts,
};

/// Sets the registered location of `device_id` inside the caller's transaction and audits the
/// change (old and new); `NoSuchDevice` when unknown.
pub(super) async fn write_registered(
    conn: &mut SqliteConnection,
    key: &AuditKey,
    device_id: &str,
    location: Option<&Location>,
    actor: &str,
) -> StoreResult<()> {
    let old: Option<Option<String>> =
        sqlx::query_scalar("SELECT registered_location_json FROM devices WHERE device_id = ?")
            .bind(device_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(old) = old else {
        return Err(StoreError::NoSuchDevice(device_id.to_owned()));
    };
    let old: Option<Location> = old
        .map(|t| from_json("registered_location_json", &t))
        .transpose()?;
    sqlx::query("UPDATE devices SET registered_location_json = ? WHERE device_id = ?")
        .bind(location.map(to_json))
        .bind(device_id)
        .execute(&mut *conn)
        .await?;
    log::audit(
        conn,
        key,
        crate::clock::receiver_now(),
        actor,
        "device.location",
        device_id,
        &format!(
            "registered: {} -> {}",
            location_summary(old.as_ref()),
            location_summary(location)
        ),
    )
    .await?;
    Ok(())
}

impl SqliteStore {
    async fn create_token_impl(&self, token: NewToken, actor: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO enrollment_tokens (token_hash, approve, uses_left, expires_at, revoked, created_at)
             VALUES (?, ?, ?, ?, 0, ?)",
        )
        .bind(&token.token_hash)
        .bind(token.approve.as_str())
        .bind(i64::from(token.uses))
        .bind(token.expires_at.map(format_ts))
        .bind(format_ts(token.created_at))
        .execute(&mut *tx)
        .await?;
        log::audit(
            &mut tx,
            &self.audit_key,
            token.created_at,
            actor,
            "token.create",
            crate::tokens::log_ref(&token.token_hash),
            &token.audit_detail(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn revoke_token_impl(&self, token_hash: &str, actor: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE enrollment_tokens SET revoked = 1 WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        log::audit(
            &mut tx,
            &self.audit_key,
            crate::clock::receiver_now(),
            actor,
            "token.revoke",
            crate::tokens::log_ref(token_hash),
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn list_tokens_impl(&self, limit: u32) -> StoreResult<Vec<TokenRecord>> {
        let rows = sqlx::query(
            // The desk phones' internal token (store::phones) is no enrollment token to list.
            "SELECT * FROM enrollment_tokens WHERE token_hash <> 'phone-inventory'
             ORDER BY created_at DESC, token_hash LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let approve: String = r.try_get("approve")?;
                Ok(TokenRecord {
                    token_hash: r.try_get("token_hash")?,
                    approve: Approve::parse(&approve)
                        .ok_or_else(|| StoreError::Corrupt(format!("approve {approve:?}")))?,
                    uses_left: r.try_get("uses_left")?,
                    expires_at: r
                        .try_get::<Option<String>, _>("expires_at")?
                        .map(|t| parse_ts(&t))
                        .transpose()?,
                    revoked: r.try_get("revoked")?,
                    created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
                })
            })
            .collect()
    }
}

impl SqliteStore {
    async fn set_registered_impl(
        &self,
        device_id: &str,
        location: Option<Location>,
        actor: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        write_registered(
            &mut tx,
            &self.audit_key,
            device_id,
            location.as_ref(),
            actor,
        )
        .await?;
        log::live(
            &mut tx,
            crate::clock::receiver_now(),
            "device",
            None,
            &serde_json::json!({"device_id": device_id, "registered_location": location}),
        )
        .await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok(())
    }
}

impl StationStore for SqliteStore {
    fn create_token<'a>(&'a self, token: NewToken, actor: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.create_token_impl(token, actor))
    }

    fn revoke_token<'a>(&'a self, token_hash: &'a str, actor: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.revoke_token_impl(token_hash, actor))
    }

    fn list_tokens(&self, limit: u32) -> StoreFuture<'_, Vec<TokenRecord>> {
        Box::pin(self.list_tokens_impl(limit))
    }

    fn set_device_status<'a>(
        &'a self,
        device_id: &'a str,
        status: DeviceStatus,
        actor: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.set_status_impl(device_id, status, None, actor))
    }

    fn set_registered_location<'a>(
        &'a self,
        device_id: &'a str,
        location: Option<Location>,
        actor: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.set_registered_impl(device_id, location, actor))
    }

    fn set_registered_locations<'a>(
        &'a self,
        changes: Vec<(String, Option<Location>)>,
        actor: &'a str,
    ) -> StoreFuture<'a, usize> {
        Box::pin(async move {
            let mut tx = self.begin_write().await?;
            for (device_id, location) in &changes {
                write_registered(
                    &mut tx,
                    &self.audit_key,
                    device_id,
                    location.as_ref(),
                    actor,
                )
                .await?;
            }
            tx.commit().await?;
            Ok(changes.len())
        })
    }

    fn approve_device<'a>(
        &'a self,
        device_id: &'a str,
        location: Option<Location>,
        actor: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.set_status_impl(device_id, DeviceStatus::Active, location.as_ref(), actor)
                .await
        })
    }

    fn list_devices(&self) -> StoreFuture<'_, Vec<DeviceRecord>> {
        Box::pin(listings::devices(&self.pool))
    }

    fn retire_device<'a>(
        &'a self,
        device_id: &'a str,
        actor: &'a str,
    ) -> StoreFuture<'a, crate::store::RetireOutcome> {
        Box::pin(self.retire_impl(device_id, actor))
    }
}
