//! The desk-phone inventory and the access-point table (see `store::phones`).

use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::rows::{parse_uuid, to_json};
use super::{SqliteStore, log};
use crate::store::phones::{PHONE_JWK, PHONE_TOKEN_HASH};
use crate::store::{
    AccessPoint, NewPhone, PhoneCredential, PhonePutRefusal, PhoneRecord, PhoneStore, SecretHash,
    StoreError, StoreFuture, StoreResult, format_ts,
};

fn phone_row(r: &SqliteRow) -> StoreResult<PhoneRecord> {
    let net: String = r.try_get("allowed_network")?;
    Ok(PhoneRecord {
        device_name: r.try_get("device_name")?,
        device_id: r.try_get("device_id")?,
        extension: r.try_get("extension")?,
        label: r.try_get("label")?,
        building: r.try_get("building")?,
        floor: r.try_get("floor")?,
        room: r.try_get("room")?,
        allowed_network: net
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("phone network {net:?}")))?,
    })
}

fn ap_row(r: &SqliteRow) -> StoreResult<AccessPoint> {
    Ok(AccessPoint {
        bssid: r.try_get("bssid")?,
        label: r.try_get("label")?,
        building: r.try_get("building")?,
        floor: r.try_get("floor")?,
        room: r.try_get("room")?,
    })
}

impl SqliteStore {
    async fn put_phones_impl(
        &self,
        phones: Vec<NewPhone>,
        actor: &str,
    ) -> StoreResult<Result<usize, PhonePutRefusal>> {
        let mut tx = self.begin_write().await?;
        let now = crate::clock::receiver_now();
        let ts = format_ts(now);
        // The token the phones' stations hang off (see store::phones::PHONE_TOKEN_HASH).
        sqlx::query(
            "INSERT INTO enrollment_tokens (token_hash, approve, uses_left, expires_at, revoked,
                                            created_at)
             VALUES (?, 'manual', 0, NULL, 1, ?) ON CONFLICT (token_hash) DO NOTHING",
        )
        .bind(PHONE_TOKEN_HASH)
        .bind(&ts)
        .execute(&mut *tx)
        .await?;
        for p in &phones {
            let location_json = to_json(&p.location());
            let existing: Option<String> =
                sqlx::query_scalar("SELECT device_id FROM phones WHERE device_name = ?")
                    .bind(&p.device_name)
                    .fetch_optional(&mut *tx)
                    .await?;
            match existing {
                Some(device_id) => {
                    sqlx::query(
                        "UPDATE phones SET extension = ?, label = ?, building = ?, floor = ?,
                                room = ?, allowed_network = ?, updated_at = ?,
                                secret_hash = COALESCE(?, secret_hash)
                         WHERE device_name = ?",
                    )
                    .bind(&p.extension)
                    .bind(&p.label)
                    .bind(&p.building)
                    .bind(&p.floor)
                    .bind(&p.room)
                    .bind(p.allowed_network.to_string())
                    .bind(&ts)
                    .bind(p.secret_hash.as_ref().map(|h| h.0.clone()))
                    .bind(&p.device_name)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE devices SET location_json = ? WHERE device_id = ?")
                        .bind(&location_json)
                        .bind(&device_id)
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    let Some(secret) = &p.secret_hash else {
                        return Ok(Err(PhonePutRefusal::SecretRequired(p.device_name.clone())));
                    };
                    let device_id = Uuid::now_v7().to_string();
                    let host = duress_core::HostFacts {
                        hostname: p.device_name.clone(),
                        user: format!("ext {}", p.extension),
                        os: "desk phone".into(),
                        ..Default::default()
                    };
                    sqlx::query(
                        "INSERT INTO devices (device_id, status, public_jwk, key_thumbprint,
                                              token_hash, hostname, host_json, location_json,
                                              agent_version, enrolled_at)
                         VALUES (?, 'active', ?, ?, ?, ?, ?, ?, 'phone', ?)",
                    )
                    .bind(&device_id)
                    .bind(PHONE_JWK)
                    .bind(format!("phone:{}", p.device_name))
                    .bind(PHONE_TOKEN_HASH)
                    .bind(&p.device_name)
                    .bind(to_json(&host))
                    .bind(&location_json)
                    .bind(&ts)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO phones (device_name, device_id, extension, label, building,
                                             floor, room, secret_hash, allowed_network,
                                             created_at, updated_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&p.device_name)
                    .bind(&device_id)
                    .bind(&p.extension)
                    .bind(&p.label)
                    .bind(&p.building)
                    .bind(&p.floor)
                    .bind(&p.room)
                    .bind(&secret.0)
                    .bind(p.allowed_network.to_string())
                    .bind(&ts)
                    .bind(&ts)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            log::audit(
                &mut tx,
                &self.audit_key,
                now,
                actor,
                "phone.put",
                &p.device_name,
                &p.audit_detail(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(phones.len()))
    }

    async fn remove_phone_impl(&self, device_name: &str, actor: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let Some(device_id): Option<String> =
            sqlx::query_scalar("DELETE FROM phones WHERE device_name = ? RETURNING device_id")
                .bind(device_name)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(false);
        };
        let now = crate::clock::receiver_now();
        // Revoked, so no press can be ingested for it any more; its incidents keep naming it.
        sqlx::query(
            "UPDATE devices SET status = 'revoked', retired_at = COALESCE(retired_at, ?),
                    retired_by = COALESCE(retired_by, ?)
             WHERE device_id = ?",
        )
        .bind(format_ts(now))
        .bind(actor)
        .bind(&device_id)
        .execute(&mut *tx)
        .await?;
        log::audit(
            &mut tx,
            &self.audit_key,
            now,
            actor,
            "phone.remove",
            device_name,
            &format!("device_id={device_id}"),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn put_access_points_impl(
        &self,
        aps: Vec<AccessPoint>,
        actor: &str,
    ) -> StoreResult<usize> {
        let mut tx = self.begin_write().await?;
        let now = crate::clock::receiver_now();
        for ap in &aps {
            sqlx::query(
                "INSERT INTO phone_access_points (bssid, label, building, floor, room, created_at)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (bssid) DO UPDATE SET label = excluded.label,
                     building = excluded.building, floor = excluded.floor, room = excluded.room",
            )
            .bind(&ap.bssid)
            .bind(&ap.label)
            .bind(&ap.building)
            .bind(&ap.floor)
            .bind(&ap.room)
            .bind(format_ts(now))
            .execute(&mut *tx)
            .await?;
            log::audit(
                &mut tx,
                &self.audit_key,
                now,
                actor,
                "phone_ap.put",
                &ap.bssid,
                &ap.audit_detail(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(aps.len())
    }
}

impl PhoneStore for SqliteStore {
    fn put_phones<'a>(
        &'a self,
        phones: Vec<NewPhone>,
        actor: &'a str,
    ) -> StoreFuture<'a, Result<usize, PhonePutRefusal>> {
        Box::pin(self.put_phones_impl(phones, actor))
    }

    fn phones(&self) -> StoreFuture<'_, Vec<PhoneRecord>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT * FROM phones ORDER BY device_name")
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(phone_row).collect()
        })
    }

    fn phone_credential<'a>(
        &'a self,
        device_name: &'a str,
    ) -> StoreFuture<'a, Option<PhoneCredential>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT * FROM phones WHERE device_name = ?")
                .bind(device_name)
                .fetch_optional(&self.pool)
                .await?;
            row.map(|r| {
                Ok(PhoneCredential {
                    phone: phone_row(&r)?,
                    secret_hash: SecretHash(r.try_get("secret_hash")?),
                })
            })
            .transpose()
        })
    }

    fn remove_phone<'a>(&'a self, device_name: &'a str, actor: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.remove_phone_impl(device_name, actor))
    }

    fn put_access_points<'a>(
        &'a self,
        access_points: Vec<AccessPoint>,
        actor: &'a str,
    ) -> StoreFuture<'a, usize> {
        Box::pin(self.put_access_points_impl(access_points, actor))
    }

    fn access_points(&self) -> StoreFuture<'_, Vec<AccessPoint>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT * FROM phone_access_points ORDER BY bssid")
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(ap_row).collect()
        })
    }

    fn access_point<'a>(&'a self, bssid: &'a str) -> StoreFuture<'a, Option<AccessPoint>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT * FROM phone_access_points WHERE bssid = ?")
                .bind(bssid)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(ap_row).transpose()
        })
    }

    fn open_incident_of<'a>(&'a self, device_id: &'a str) -> StoreFuture<'a, Option<Uuid>> {
        Box::pin(async move {
            let id: Option<String> = sqlx::query_scalar(
                "SELECT incident_id FROM incidents WHERE device_id = ? AND status = 'open'
                 ORDER BY last_press_at DESC LIMIT 1",
            )
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?;
            id.map(|s| parse_uuid(&s)).transpose()
        })
    }
}
