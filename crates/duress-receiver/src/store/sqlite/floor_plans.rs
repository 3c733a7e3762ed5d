//! Floor plans on SQLite (see [`crate::store::floor_plans`]): the re-encoded PNG in a BLOB,
//! every change audited in its own transaction.

use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use super::listings::ts;
use super::{SqliteStore, log};
use crate::store::floor_plans::audit_subject as subject;
use crate::store::{
    FLOOR_PLAN_DELETE_ACTION, FLOOR_PLAN_PLACE_ACTION, FLOOR_PLAN_REPLACE_ACTION,
    FLOOR_PLAN_UNPLACE_ACTION, FLOOR_PLAN_UPLOAD_ACTION, FloorPlanPut, FloorPlanRecord,
    FloorPlanStore, NewFloorPlan, RoomPlacement, StoreError, StoreFuture, StoreResult, format_ts,
};

/// The columns `record` reads (a macro: sqlx takes only literal SQL).
macro_rules! columns {
    () => {
        "id, building, floor, width, height, sha256, length(png) AS png_bytes, uploaded_at, uploaded_by"
    };
}

fn dimension(r: &SqliteRow, column: &str) -> StoreResult<u32> {
    let v: i64 = r.try_get(column)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("floor plan {column} {v}")))
}

fn record(r: &SqliteRow) -> StoreResult<FloorPlanRecord> {
    let bytes: i64 = r.try_get("png_bytes")?;
    Ok(FloorPlanRecord {
        id: r.try_get("id")?,
        building: r.try_get("building")?,
        floor: r.try_get("floor")?,
        width: dimension(r, "width")?,
        height: dimension(r, "height")?,
        sha256: r.try_get("sha256")?,
        png_bytes: u64::try_from(bytes)
            .map_err(|_| StoreError::Corrupt(format!("floor plan size {bytes}")))?,
        uploaded_at: ts(r, "uploaded_at")?,
        uploaded_by: r.try_get("uploaded_by")?,
    })
}

fn placement(r: &SqliteRow) -> StoreResult<RoomPlacement> {
    Ok(RoomPlacement {
        plan_id: r.try_get("plan_id")?,
        room: r.try_get("room")?,
        x: r.try_get("x")?,
        y: r.try_get("y")?,
        placed_at: ts(r, "placed_at")?,
        placed_by: r.try_get("placed_by")?,
    })
}

impl SqliteStore {
    async fn put_floor_plan_impl(&self, p: NewFloorPlan, actor: &str) -> StoreResult<FloorPlanPut> {
        let mut tx = self.begin_write().await?;
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT id FROM floor_plans WHERE building = ? AND floor = ?")
                .bind(&p.building)
                .bind(&p.floor)
                .fetch_optional(&mut *tx)
                .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO floor_plans (building, floor, png, width, height, sha256, uploaded_at, uploaded_by)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (building, floor) DO UPDATE SET png = excluded.png,
                 width = excluded.width, height = excluded.height, sha256 = excluded.sha256,
                 uploaded_at = excluded.uploaded_at, uploaded_by = excluded.uploaded_by
             RETURNING id",
        )
        .bind(&p.building)
        .bind(&p.floor)
        .bind(&p.png)
        .bind(i64::from(p.width))
        .bind(i64::from(p.height))
        .bind(&p.sha256)
        .bind(format_ts(p.at))
        .bind(actor)
        .fetch_one(&mut *tx)
        .await?;
        let action = if existing.is_some() {
            FLOOR_PLAN_REPLACE_ACTION
        } else {
            FLOOR_PLAN_UPLOAD_ACTION
        };
        log::audit(
            &mut tx,
            &self.audit_key,
            p.at,
            actor,
            action,
            &subject(&p.building, &p.floor),
            &format!(
                "{}×{} px, {} bytes PNG, sha256 {}",
                p.width,
                p.height,
                p.png.len(),
                p.sha256
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(FloorPlanPut {
            id,
            replaced: existing.is_some(),
        })
    }

    async fn delete_floor_plan_impl(
        &self,
        id: i64,
        actor: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let placed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM floor_plan_places WHERE plan_id = ?")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM floor_plan_places WHERE plan_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM floor_plans WHERE id = ? RETURNING building, floor")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = deleted else {
            return Ok(false);
        };
        let building: String = row.try_get("building")?;
        let floor: String = row.try_get("floor")?;
        log::audit(
            &mut tx,
            &self.audit_key,
            at,
            actor,
            FLOOR_PLAN_DELETE_ACTION,
            &subject(&building, &floor),
            &format!("with {placed} placed room(s)"),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn place_room_impl(&self, p: RoomPlacement, actor: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let plan = sqlx::query("SELECT building, floor FROM floor_plans WHERE id = ?")
            .bind(p.plan_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(plan) = plan else {
            return Ok(false);
        };
        sqlx::query(
            "INSERT INTO floor_plan_places (plan_id, room, x, y, placed_at, placed_by)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (plan_id, room) DO UPDATE SET x = excluded.x, y = excluded.y,
                 placed_at = excluded.placed_at, placed_by = excluded.placed_by",
        )
        .bind(p.plan_id)
        .bind(&p.room)
        .bind(p.x)
        .bind(p.y)
        .bind(format_ts(p.placed_at))
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        let building: String = plan.try_get("building")?;
        let floor: String = plan.try_get("floor")?;
        log::audit(
            &mut tx,
            &self.audit_key,
            p.placed_at,
            actor,
            FLOOR_PLAN_PLACE_ACTION,
            &subject(&building, &floor),
            &format!("room {} at x {:.4}, y {:.4}", p.room, p.x, p.y),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn remove_room_placement_impl(
        &self,
        plan_id: i64,
        room: &str,
        actor: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let plan = sqlx::query("SELECT building, floor FROM floor_plans WHERE id = ?")
            .bind(plan_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(plan) = plan else {
            return Ok(false);
        };
        let removed = sqlx::query("DELETE FROM floor_plan_places WHERE plan_id = ? AND room = ?")
            .bind(plan_id)
            .bind(room)
            .execute(&mut *tx)
            .await?;
        if removed.rows_affected() == 0 {
            return Ok(false);
        }
        let building: String = plan.try_get("building")?;
        let floor: String = plan.try_get("floor")?;
        log::audit(
            &mut tx,
            &self.audit_key,
            at,
            actor,
            FLOOR_PLAN_UNPLACE_ACTION,
            &subject(&building, &floor),
            &format!("room {room}"),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl FloorPlanStore for SqliteStore {
    fn floor_plans(&self) -> StoreFuture<'_, Vec<FloorPlanRecord>> {
        Box::pin(async move {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM floor_plans ORDER BY building, floor"
            );
            let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
            rows.iter().map(record).collect()
        })
    }

    fn floor_plan(&self, id: i64) -> StoreFuture<'_, Option<FloorPlanRecord>> {
        Box::pin(async move {
            let sql = concat!("SELECT ", columns!(), " FROM floor_plans WHERE id = ?");
            let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
            row.as_ref().map(record).transpose()
        })
    }

    fn floor_plan_png(&self, id: i64) -> StoreFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            Ok(
                sqlx::query_scalar("SELECT png FROM floor_plans WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?,
            )
        })
    }

    fn put_floor_plan<'a>(
        &'a self,
        plan: NewFloorPlan,
        actor: &'a str,
    ) -> StoreFuture<'a, FloorPlanPut> {
        Box::pin(self.put_floor_plan_impl(plan, actor))
    }

    fn delete_floor_plan<'a>(
        &'a self,
        id: i64,
        actor: &'a str,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.delete_floor_plan_impl(id, actor, at))
    }

    fn room_placements(&self) -> StoreFuture<'_, Vec<RoomPlacement>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT plan_id, room, x, y, placed_at, placed_by FROM floor_plan_places
                 ORDER BY plan_id, room",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(placement).collect()
        })
    }

    fn place_room<'a>(&'a self, placement: RoomPlacement, actor: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.place_room_impl(placement, actor))
    }

    fn remove_room_placement<'a>(
        &'a self,
        plan_id: i64,
        room: &'a str,
        actor: &'a str,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.remove_room_placement_impl(plan_id, room, actor, at))
    }
}
