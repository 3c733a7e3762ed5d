//! Duty displays on SQLite (`DisplayStore`): pending, paired (audited) and revoked (audited).

use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use super::listings::{opt_ts, ts};
use super::{SqliteStore, log};
use crate::store::{
    DisplayRecord, DisplayState, DisplayStore, NewDisplay, StoreError, StoreFuture, StoreResult,
    format_ts,
};

/// The columns `record` reads (a macro: sqlx takes only literal SQL).
macro_rules! columns {
    () => {
        "id, name, state, created_at, paired_at, paired_by, last_seen_at, revoked_at, revoked_by"
    };
}

fn record(r: &SqliteRow) -> StoreResult<DisplayRecord> {
    let state: String = r.try_get("state")?;
    Ok(DisplayRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        state: DisplayState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("display state {state:?}")))?,
        created_at: ts(r, "created_at")?,
        paired_at: opt_ts(r, "paired_at")?,
        paired_by: r.try_get("paired_by")?,
        last_seen_at: opt_ts(r, "last_seen_at")?,
        revoked_at: opt_ts(r, "revoked_at")?,
        revoked_by: r.try_get("revoked_by")?,
    })
}

impl SqliteStore {
    async fn create_pending_display_impl(&self, d: NewDisplay, max: u32) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM console_displays WHERE state = 'pending' AND code_expires_at <= ?",
        )
        .bind(format_ts(d.created_at))
        .execute(&mut *tx)
        .await?;
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM console_displays WHERE state = 'pending'")
                .fetch_one(&mut *tx)
                .await?;
        if pending >= i64::from(max) {
            tx.commit().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO console_displays (token_hash, code_hash, code_expires_at, state, created_at)
             VALUES (?, ?, ?, 'pending', ?)",
        )
        .bind(&d.token_hash)
        .bind(&d.code_hash)
        .bind(format_ts(d.code_expires_at))
        .bind(format_ts(d.created_at))
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
        let mut tx = self.begin_write().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE console_displays
             SET state = 'active', name = ?, paired_at = ?, paired_by = ?, last_seen_at = ?,
                 code_hash = NULL, code_expires_at = NULL
             WHERE code_hash = ? AND state = 'pending' AND code_expires_at > ? RETURNING id",
        )
        .bind(name)
        .bind(format_ts(at))
        .bind(actor)
        .bind(format_ts(at))
        .bind(code_hash)
        .bind(format_ts(at))
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
        let mut tx = self.begin_write().await?;
        let name: Option<String> = sqlx::query_scalar(
            "UPDATE console_displays SET state = 'revoked', revoked_at = ?, revoked_by = ?
             WHERE id = ? AND state = 'active' RETURNING name",
        )
        .bind(format_ts(at))
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

impl DisplayStore for SqliteStore {
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
                " FROM console_displays WHERE token_hash = ?"
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
            let sql = concat!("SELECT ", columns!(), " FROM console_displays WHERE id = ?");
            let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
            row.as_ref().map(record).transpose()
        })
    }

    fn touch_display(&self, id: i64, at: OffsetDateTime) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("UPDATE console_displays SET last_seen_at = ? WHERE id = ?")
                .bind(format_ts(at))
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
