//! Console settings kept in the database: camera mappings (audited).

use sqlx::Row as _;

use super::{SqliteStore, log};
use crate::store::{
    CameraMapping, NewCameraMapping, SettingsStore, StoreError, StoreFuture, StoreResult, Subnet,
    format_ts,
};

impl SqliteStore {
    async fn add_mapping_impl(&self, m: NewCameraMapping, actor: &str) -> StoreResult<i64> {
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO camera_mappings (match_field, match_value, name, url_template, created_at)
             VALUES (?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&m.match_field)
        .bind(&m.match_value)
        .bind(&m.name)
        .bind(&m.url_template)
        .bind(format_ts(m.created_at))
        .fetch_one(&mut *tx)
        .await?;
        log::audit(
            &mut tx,
            &self.audit_key,
            m.created_at,
            actor,
            "camera.add",
            &id.to_string(),
            &m.audit_detail(),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn delete_mapping_impl(&self, id: i64, actor: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM camera_mappings WHERE id = ?")
            .bind(id)
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
            "camera.delete",
            &id.to_string(),
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl SqliteStore {
    async fn subnets_impl(&self) -> StoreResult<Vec<Subnet>> {
        let rows = sqlx::query("SELECT cidr, building, floor FROM subnets ORDER BY cidr")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let cidr: String = r.try_get("cidr")?;
                Ok(Subnet {
                    net: cidr
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("subnet {cidr:?}")))?,
                    building: r.try_get("building")?,
                    floor: r.try_get("floor")?,
                })
            })
            .collect()
    }

    async fn put_subnets_impl(&self, subnets: Vec<Subnet>, actor: &str) -> StoreResult<usize> {
        let mut tx = self.begin_write().await?;
        let now = crate::clock::receiver_now();
        for subnet in &subnets {
            sqlx::query(
                "INSERT INTO subnets (cidr, building, floor, created_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (cidr) DO UPDATE SET building = excluded.building,
                                                  floor = excluded.floor",
            )
            .bind(subnet.cidr())
            .bind(&subnet.building)
            .bind(&subnet.floor)
            .bind(format_ts(now))
            .execute(&mut *tx)
            .await?;
            log::audit(
                &mut tx,
                &self.audit_key,
                now,
                actor,
                "subnet.put",
                &subnet.cidr(),
                &subnet.audit_detail(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(subnets.len())
    }

    async fn remove_subnet_impl(&self, cidr: &str, actor: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM subnets WHERE cidr = ?")
            .bind(cidr)
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
            "subnet.remove",
            cidr,
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl SettingsStore for SqliteStore {
    fn camera_mappings(&self) -> StoreFuture<'_, Vec<CameraMapping>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT * FROM camera_mappings ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(CameraMapping {
                        id: r.try_get("id")?,
                        match_field: r.try_get("match_field")?,
                        match_value: r.try_get("match_value")?,
                        name: r.try_get("name")?,
                        url_template: r.try_get("url_template")?,
                    })
                })
                .collect()
        })
    }

    fn add_camera_mapping<'a>(
        &'a self,
        mapping: NewCameraMapping,
        actor: &'a str,
    ) -> StoreFuture<'a, i64> {
        Box::pin(self.add_mapping_impl(mapping, actor))
    }

    fn delete_camera_mapping<'a>(&'a self, id: i64, actor: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.delete_mapping_impl(id, actor))
    }

    fn subnets(&self) -> StoreFuture<'_, Vec<Subnet>> {
        Box::pin(self.subnets_impl())
    }

    fn put_subnets<'a>(&'a self, subnets: Vec<Subnet>, actor: &'a str) -> StoreFuture<'a, usize> {
        Box::pin(self.put_subnets_impl(subnets, actor))
    }

    fn remove_subnet<'a>(&'a self, cidr: &'a str, actor: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.remove_subnet_impl(cidr, actor))
    }
}
