//! Enrollment token writes, each audited in its own transaction (console and command line).

use super::SqliteStore;
use crate::store::{NewToken, StoreResult, format_ts};

impl SqliteStore {
    /// Stores a new enrollment token, audited as done by `actor`.
    pub async fn create_token_by(&self, token: NewToken, actor: &str) -> StoreResult<()> {
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
        crate::console::audit::append(
            &mut tx,
            token.created_at,
            actor,
            "token.create",
            crate::tokens::log_ref(&token.token_hash),
            &format!(
                "uses {}, approve {}, expires {}",
                token.uses,
                token.approve.as_str(),
                token.expires_at.map_or("never".into(), format_ts)
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes the token with this hash, audited as done by `actor`; `false` when unknown.
    pub async fn revoke_token_by(&self, token_hash: &str, actor: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE enrollment_tokens SET revoked = 1 WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        crate::console::audit::append(
            &mut tx,
            crate::api::receiver_now(),
            actor,
            "token.revoke",
            crate::tokens::log_ref(token_hash),
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
