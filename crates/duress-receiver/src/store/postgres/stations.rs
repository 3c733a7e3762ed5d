//! Stations: enrollment tokens and device status (audited), and their listings.

use duress_core::{DeviceStatus, Location};
use sqlx::types::Json;
use sqlx::{PgConnection, Row as _};

use super::{PostgresStore, json, log, ms, opt_json, opt_unsigned, status};
use crate::records::DeviceRecord;
use crate::store::audit_chain::AuditKey;
use crate::store::{
    Approve, NewToken, StationStore, StoreError, StoreFuture, StoreResult, TokenRecord,
    location_summary,
};

/// Sets the registered location of `device_id` inside the caller's transaction (taking the
/// device's row lock) and audits the change (old and new); `NoSuchDevice` when unknown.
async fn write_registered(
    conn: &mut PgConnection,
    key: &AuditKey,
    device_id: &str,
    location: Option<&Location>,
    actor: &str,
) -> StoreResult<()> {
    let old: Option<Option<Json<Location>>> = sqlx::query_scalar(
        "SELECT registered_location_json FROM devices WHERE device_id = $1 FOR UPDATE",
    )
    .bind(device_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(old) = old else {
        return Err(StoreError::NoSuchDevice(device_id.to_owned()));
    };
    sqlx::query("UPDATE devices SET registered_location_json = $1 WHERE device_id = $2")
        .bind(location.map(Json))
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
            location_summary(old.as_ref().map(|j| &j.0)),
            location_summary(location)
        ),
    )
    .await?;
    Ok(())
}

impl PostgresStore {
    async fn create_token_impl(&self, token: NewToken, actor: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO enrollment_tokens (token_hash, approve, uses_left, expires_at, revoked, created_at)
             VALUES ($1, $2, $3, $4, false, $5)",
        )
        .bind(&token.token_hash)
        .bind(token.approve.as_str())
        .bind(i64::from(token.uses))
        .bind(token.expires_at.map(ms))
        .bind(ms(token.created_at))
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
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE enrollment_tokens SET revoked = true WHERE token_hash = $1")
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
             ORDER BY created_at DESC, token_hash COLLATE \"C\"
             LIMIT $1",
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
                    expires_at: r.try_get("expires_at")?,
                    revoked: r.try_get("revoked")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Changes the status and, when `registered` is given (approval with a location), the
    /// registered location, in one transaction.
    async fn set_status_impl(
        &self,
        device_id: &str,
        new: DeviceStatus,
        registered: Option<&duress_core::Location>,
        actor: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        // The device's row lock: an event being ingested for it commits before, or is
        // decided by the new status after.
        let current: Option<String> =
            sqlx::query_scalar("SELECT status FROM devices WHERE device_id = $1 FOR UPDATE")
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            return Err(StoreError::NoSuchDevice(device_id.to_owned()));
        };
        crate::store::rules::check_status_change(device_id, status(&current)?, new)?;
        sqlx::query("UPDATE devices SET status = $1 WHERE device_id = $2")
            .bind(new.as_str())
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        let now = crate::clock::receiver_now();
        log::audit(
            &mut tx,
            &self.audit_key,
            now,
            actor,
            "device.status",
            device_id,
            &format!("{current} -> {}", new.as_str()),
        )
        .await?;
        if let Some(location) = registered {
            write_registered(&mut tx, &self.audit_key, device_id, Some(location), actor).await?;
        }
        let payload =
            serde_json::json!({"device_id": device_id, "status": new.as_str()}).to_string();
        log::live(&self.doorbell, &mut tx, now, "device", None, &payload).await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok(())
    }

    async fn set_registered_impl(
        &self,
        device_id: &str,
        location: Option<Location>,
        actor: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        write_registered(
            &mut tx,
            &self.audit_key,
            device_id,
            location.as_ref(),
            actor,
        )
        .await?;
        let payload = serde_json::json!({"device_id": device_id, "registered_location": location})
            .to_string();
        log::live(
            &self.doorbell,
            &mut tx,
            crate::clock::receiver_now(),
            "device",
            None,
            &payload,
        )
        .await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok(())
    }

    async fn retire_impl(
        &self,
        device_id: &str,
        actor: &str,
    ) -> StoreResult<crate::store::RetireOutcome> {
        let mut tx = self.begin().await?;
        // The device's row lock, as for a status change: an event being ingested for it
        // commits before, or is refused after.
        let row =
            sqlx::query("SELECT status, retired_at FROM devices WHERE device_id = $1 FOR UPDATE")
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            return Err(StoreError::NoSuchDevice(device_id.to_owned()));
        };
        if row
            .try_get::<Option<time::OffsetDateTime>, _>("retired_at")?
            .is_some()
        {
            return Ok(crate::store::RetireOutcome::AlreadyRetired);
        }
        let current: String = row.try_get("status")?;
        let now = super::ms(crate::clock::receiver_now());
        sqlx::query(
            "UPDATE devices SET status = 'revoked', retired_at = $1, retired_by = $2
             WHERE device_id = $3",
        )
        .bind(now)
        .bind(actor)
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
        // Never supervised again: an outage notice not yet sent is stopped, the outage forgotten.
        sqlx::query(
            "UPDATE notifications SET status = 'stopped', done_at = $1, lease_owner = NULL,
                    lease_until = NULL
             WHERE device_id = $2 AND reason = 'offline' AND status = 'pending'",
        )
        .bind(now)
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM supervision_state WHERE device_id = $1")
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        log::audit(
            &mut tx,
            &self.audit_key,
            now,
            actor,
            crate::store::RETIRE_ACTION,
            device_id,
            &format!("{current} -> retired"),
        )
        .await?;
        let payload =
            serde_json::json!({"device_id": device_id, "status": "revoked", "retired": true})
                .to_string();
        log::live(&self.doorbell, &mut tx, now, "device", None, &payload).await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok(crate::store::RetireOutcome::Retired)
    }

    async fn devices_impl(&self) -> StoreResult<Vec<DeviceRecord>> {
        let rows =
            sqlx::query("SELECT * FROM devices ORDER BY enrolled_at, device_id COLLATE \"C\"")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(DeviceRecord {
                    device_id: row.try_get("device_id")?,
                    status: status(&row.try_get::<String, _>("status")?)?,
                    public_jwk: json(row, "public_jwk")?,
                    key_thumbprint: row.try_get("key_thumbprint")?,
                    hostname: row.try_get("hostname")?,
                    host: json(row, "host_json")?,
                    location: json(row, "location_json")?,
                    agent_version: row.try_get("agent_version")?,
                    enrolled_at: row.try_get("enrolled_at")?,
                    last_heartbeat_at: row.try_get("last_heartbeat_at")?,
                    hotkey: opt_json(row, "hotkey_json")?,
                    queued: opt_unsigned(row, "queued")?,
                    reported_last_seq: opt_unsigned(row, "reported_last_seq")?,
                    last_seq: opt_unsigned(row, "last_seq")?,
                    last_event_at: row.try_get("last_event_at")?,
                    last_self_test_at: row.try_get("last_self_test_at")?,
                    last_self_test_id: row.try_get("last_self_test_id")?,
                    policy_source: row.try_get("policy_source")?,
                    policy_sha256: row.try_get("policy_sha256")?,
                    registered_location: opt_json(row, "registered_location_json")?,
                    last_addr: row.try_get("last_addr")?,
                    retired_at: row.try_get("retired_at")?,
                    retired_by: row.try_get("retired_by")?,
                    alarm_refused: row.try_get("alarm_refused")?,
                })
            })
            .collect()
    }
}

impl StationStore for PostgresStore {
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
            let mut tx = self.begin().await?;
            // Every row lock first, in one order: the log lock (taken by each audit entry)
            // must stay the last lock this transaction takes.
            let ids: Vec<&str> = changes.iter().map(|(d, _)| d.as_str()).collect();
            sqlx::query(
                "SELECT device_id FROM devices WHERE device_id = ANY($1)
                 ORDER BY device_id COLLATE \"C\" FOR UPDATE",
            )
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
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
        Box::pin(self.devices_impl())
    }

    fn retire_device<'a>(
        &'a self,
        device_id: &'a str,
        actor: &'a str,
    ) -> StoreFuture<'a, crate::store::RetireOutcome> {
        Box::pin(self.retire_impl(device_id, actor))
    }
}
