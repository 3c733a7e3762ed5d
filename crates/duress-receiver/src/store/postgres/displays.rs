//! Duty displays on PostgreSQL (`DisplayStore`): pending, paired (audited) and revoked (audited).

use sqlx::Row as _;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;

use super::{PostgresStore, log, ms};
use crate::store::{
    DisplayRecord, DisplayState, DisplayStore, NewDisplay, StoreError, StoreFuture, StoreResult,
};

/// The columns `record` reads (a macro: sqlx takes only literal SQL).
macro_rules! columns {
    () => {
        "id, name, state, created_at, paired_at, paired_by, last_seen_at, revoked_at, revoked_by"
    };
}

fn record(r: &PgRow) -> StoreResult<DisplayRecord> {
    let state: String = r.try_get("state")?;
    Ok(DisplayRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        state: DisplayState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("display state {state:?}")))?,
        created_at: r.try_get("created_at")?,
        paired_at: r.try_get("paired_at")?,
        paired_by: r.try_get("paired_by")?,
        last_seen_at: r.try_get("last_seen_at")?,
        revoked_at: r.try_get("revoked_at")?,
        revoked_by: r.try_get("revoked_by")?,
    })
}

impl PostgresStore {
    async fn create_pending_display_impl(&self, d: NewDisplay, max: u32) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM console_displays WHERE state = 'pending' AND code_expires_at <= $1",
        )
        .bind(ms(d.created_at))
        .execute(&mut *tx)
        .await?;
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*)::bigint FROM console_displays WHERE state = 'pending'",
        )
        .fetch_one(&mut *tx)
        .await?;
        if pending >= i64::from(max) {
            tx.commit().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO console_displays (token_hash, code_hash, code_expires_at, state, created_at)
             VALUES ($1, $2, $3, 'pending', $4)",
        )
        .bind(&d.token_hash)
        .bind(&d.code_hash)
        .bind(ms(d.code_expires_at))
        .bind(ms(d.created_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn pair_display_impl(
        &self,
        code_hash: &str,
        name: &str,
        actor: &str,
        at: OffsetDateTime,
    ) -> StoreResult<Option<i64>> {
        let mut tx = self.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE console_displays
             SET state = 'active', name = $1, paired_at = $2, paired_by = $3, last_seen_at = $4,
                 code_hash = NULL, code_expires_at = NULL
             WHERE code_hash = $5 AND state = 'pending' AND code_expires_at > $6 RETURNING id",
        )
        .bind(name)
        .bind(ms(at))
        .bind(actor)
        .bind(ms(at))
        .bind(code_hash)
        .bind(ms(at))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        log::audit(
            &mut tx,
            &self.audit_key,
            at,
            actor,
            "display.pair",
            &format!("display {id}"),
            name,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    async fn revoke_display_impl(
        &self,
        id: i64,
        actor: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let name: Option<String> = sqlx::query_scalar(
            "UPDATE console_displays SET state = 'revoked', revoked_at = $1, revoked_by = $2
             WHERE id = $3 AND state = 'active' RETURNING name",
        )
        .bind(ms(at))
        .bind(actor)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(name) = name else {
            return Ok(false);
        };
        log::audit(
            &mut tx,
            &self.audit_key,
            at,
            actor,
            "display.revoke",
            &format!("display {id}"),
            &name,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl DisplayStore for PostgresStore {
    fn create_pending_display<'a>(
        &'a self,
        display: NewDisplay,
        max_pending: u32,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.create_pending_display_impl(display, max_pending))
    }

    fn pair_display<'a>(
        &'a self,
        code_hash: &'a str,
        name: &'a str,
        actor: &'a str,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Option<i64>> {
        Box::pin(self.pair_display_impl(code_hash, name, actor, at))
    }

    fn display_by_token<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> StoreFuture<'a, Option<DisplayRecord>> {
        Box::pin(async move {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM console_displays WHERE token_hash = $1"
            );
            let row = sqlx::query(sql)
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(record).transpose()
        })
    }

    fn display<'a>(&'a self, id: i64) -> StoreFuture<'a, Option<DisplayRecord>> {
        Box::pin(async move {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM console_displays WHERE id = $1"
            );
            let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
            row.as_ref().map(record).transpose()
        })
    }

    fn touch_display(&self, id: i64, at: OffsetDateTime) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("UPDATE console_displays SET last_seen_at = $1 WHERE id = $2")
                .bind(ms(at))
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn revoke_display<'a>(
        &'a self,
        id: i64,
        actor: &'a str,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.revoke_display_impl(id, actor, at))
    }

    fn displays(&self) -> StoreFuture<'_, Vec<DisplayRecord>> {
        Box::pin(async move {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM console_displays WHERE state <> 'pending' ORDER BY id DESC"
            );
            let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
            rows.iter().map(record).collect()
        })
    }
}
