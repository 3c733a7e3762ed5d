//! Password change and reset, TOTP and sign-in steps on PostgreSQL (`AccountSecurityStore`).

use sqlx::Row as _;
use time::OffsetDateTime;

use super::{PostgresStore, log, ms};
use crate::store::account_security::{
    PASSWORD_CHANGE_ACTION, PASSWORD_RESET_ACTION, TOTP_DISABLE_ACTION, TOTP_ENABLE_ACTION,
    TOTP_REMOVE_ACTION,
};
use crate::store::{
    AccountSecurityStore, NewSignInStep, SignInStage, SignInStep, StoreError, StoreFuture,
    StoreResult, TotpRecord,
};

impl PostgresStore {
    async fn change_password_impl(
        &self,
        username: &str,
        password_hash: String,
        keep_session: Option<&str>,
    ) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE username = $2")
            .bind(&password_hash)
            .bind(username)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Refused(format!("no user {username:?}")));
        }
        sqlx::query("DELETE FROM password_resets WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sign_in_steps WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        let ended =
            sqlx::query("DELETE FROM sessions WHERE username = $1 AND id_hash IS DISTINCT FROM $2")
                .bind(username)
                .bind(keep_session)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        log::audit(
            &mut tx,
            &self.audit_key,
            crate::clock::receiver_now(),
            username,
            PASSWORD_CHANGE_ACTION,
            username,
            &format!("{ended} other session(s) ended"),
        )
        .await?;
        tx.commit().await?;
        Ok(ended)
    }

    async fn reset_password_impl(
        &self,
        username: &str,
        password_hash: String,
        actor: &str,
    ) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE username = $2")
            .bind(&password_hash)
            .bind(username)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Refused(format!("no user {username:?}")));
        }
        let now = crate::clock::receiver_now();
        sqlx::query(
            "INSERT INTO password_resets (username, reset_by, reset_at) VALUES ($1, $2, $3)
             ON CONFLICT (username) DO UPDATE SET reset_by = excluded.reset_by, reset_at = excluded.reset_at",
        )
        .bind(username)
        .bind(actor)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM sign_in_steps WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        let ended = sqlx::query("DELETE FROM sessions WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        log::audit(
            &mut tx,
            &self.audit_key,
            now,
            actor,
            PASSWORD_RESET_ACTION,
            username,
            &format!("temporary password issued by {actor}; {ended} session(s) ended"),
        )
        .await?;
        tx.commit().await?;
        Ok(ended)
    }

    async fn totp_impl(&self, username: &str) -> StoreResult<Option<TotpRecord>> {
        let row = sqlx::query(
            "SELECT sealed_secret, enabled, last_step FROM user_totp WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(TotpRecord {
                sealed_secret: r.try_get("sealed_secret")?,
                enabled: r.try_get("enabled")?,
                last_step: r.try_get("last_step")?,
            })
        })
        .transpose()
    }

    async fn begin_totp_impl(
        &self,
        username: &str,
        sealed_secret: Vec<u8>,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let user: Option<String> =
            sqlx::query_scalar("SELECT username FROM users WHERE username = $1")
                .bind(username)
                .fetch_optional(&mut *tx)
                .await?;
        if user.is_none() {
            return Err(StoreError::Refused(format!("no user {username:?}")));
        }
        // Replaces a pending row only: an enabled factor is switched off first, with a code.
        let done = sqlx::query(
            "INSERT INTO user_totp (username, sealed_secret, enabled, last_step, created_at)
             VALUES ($1, $2, false, NULL, $3)
             ON CONFLICT (username) DO UPDATE SET sealed_secret = excluded.sealed_secret,
                 created_at = excluded.created_at
             WHERE user_totp.enabled = false",
        )
        .bind(username)
        .bind(&sealed_secret)
        .bind(ms(at))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Refused(
                "two-step sign-in is already on for this account".into(),
            ));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn enable_totp_impl(&self, username: &str, step: i64) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE user_totp SET enabled = true, last_step = $1 WHERE username = $2 AND enabled = false",
        )
        .bind(step)
        .bind(username)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        log::audit(
            &mut tx,
            &self.audit_key,
            crate::clock::receiver_now(),
            username,
            TOTP_ENABLE_ACTION,
            username,
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn use_totp_step_impl(&self, username: &str, step: i64) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE user_totp SET last_step = $1
             WHERE username = $2 AND enabled = true AND (last_step IS NULL OR last_step < $3)",
        )
        .bind(step)
        .bind(username)
        .bind(step)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_totp_impl(&self, username: &str, actor: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let was_enabled: Option<bool> =
            sqlx::query_scalar("DELETE FROM user_totp WHERE username = $1 RETURNING enabled")
                .bind(username)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(was_enabled) = was_enabled else {
            return Ok(false);
        };
        // Removing a pending enrolment changes nothing anyone relies on: not audited.
        if was_enabled {
            let action = if actor == username {
                TOTP_DISABLE_ACTION
            } else {
                TOTP_REMOVE_ACTION
            };
            log::audit(
                &mut tx,
                &self.audit_key,
                crate::clock::receiver_now(),
                actor,
                action,
                username,
                "",
            )
            .await?;
        }
        tx.commit().await?;
        Ok(was_enabled)
    }

    async fn create_sign_in_step_impl(&self, step: NewSignInStep) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM sign_in_steps WHERE expires_at <= $1")
            .bind(ms(step.created_at))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sign_in_steps (id_hash, username, stage, failures, created_at, expires_at)
             VALUES ($1, $2, $3, 0, $4, $5)",
        )
        .bind(&step.id_hash)
        .bind(&step.username)
        .bind(step.stage.as_str())
        .bind(ms(step.created_at))
        .bind(ms(step.expires_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn sign_in_step_impl(&self, id_hash: &str) -> StoreResult<Option<SignInStep>> {
        let row = sqlx::query(
            "SELECT username, stage, failures, expires_at FROM sign_in_steps WHERE id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SignInStep {
                username: r.try_get("username")?,
                stage: SignInStage::parse(&r.try_get::<String, _>("stage")?),
                failures: u32::try_from(r.try_get::<i32, _>("failures")?).unwrap_or(u32::MAX),
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    async fn fail_sign_in_step_impl(&self, id_hash: &str) -> StoreResult<u32> {
        let mut tx = self.begin().await?;
        let failures: Option<i32> = sqlx::query_scalar(
            "UPDATE sign_in_steps SET failures = failures + 1 WHERE id_hash = $1 RETURNING failures",
        )
        .bind(id_hash)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(failures.map_or(0, |f| u32::try_from(f).unwrap_or(u32::MAX)))
    }

    async fn advance_sign_in_step_impl(
        &self,
        id_hash: &str,
        stage: SignInStage,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done =
            sqlx::query("UPDATE sign_in_steps SET stage = $1, failures = 0 WHERE id_hash = $2")
                .bind(stage.as_str())
                .bind(id_hash)
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn end_sign_in_step_impl(&self, id_hash: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM sign_in_steps WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}

impl AccountSecurityStore for PostgresStore {
    fn password_reset_at<'a>(
        &'a self,
        username: &'a str,
    ) -> StoreFuture<'a, Option<OffsetDateTime>> {
        Box::pin(async move {
            Ok(
                sqlx::query_scalar("SELECT reset_at FROM password_resets WHERE username = $1")
                    .bind(username)
                    .fetch_optional(&self.pool)
                    .await?,
            )
        })
    }

    fn change_password<'a>(
        &'a self,
        username: &'a str,
        password_hash: String,
        keep_session: Option<&'a str>,
    ) -> StoreFuture<'a, u64> {
        Box::pin(self.change_password_impl(username, password_hash, keep_session))
    }

    fn reset_password<'a>(
        &'a self,
        username: &'a str,
        password_hash: String,
        actor: &'a str,
    ) -> StoreFuture<'a, u64> {
        Box::pin(self.reset_password_impl(username, password_hash, actor))
    }

    fn totp<'a>(&'a self, username: &'a str) -> StoreFuture<'a, Option<TotpRecord>> {
        Box::pin(self.totp_impl(username))
    }

    fn begin_totp<'a>(
        &'a self,
        username: &'a str,
        sealed_secret: Vec<u8>,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.begin_totp_impl(username, sealed_secret, at))
    }

    fn enable_totp<'a>(&'a self, username: &'a str, step: i64) -> StoreFuture<'a, bool> {
        Box::pin(self.enable_totp_impl(username, step))
    }

    fn use_totp_step<'a>(&'a self, username: &'a str, step: i64) -> StoreFuture<'a, bool> {
        Box::pin(self.use_totp_step_impl(username, step))
    }

    fn remove_totp<'a>(&'a self, username: &'a str, actor: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.remove_totp_impl(username, actor))
    }

    fn totp_users(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            Ok(sqlx::query_scalar(
                "SELECT username FROM user_totp WHERE enabled = true ORDER BY username COLLATE \"C\"",
            )
            .fetch_all(&self.pool)
            .await?)
        })
    }

    fn create_sign_in_step(&self, step: NewSignInStep) -> StoreFuture<'_, ()> {
        Box::pin(self.create_sign_in_step_impl(step))
    }

    fn sign_in_step<'a>(&'a self, id_hash: &'a str) -> StoreFuture<'a, Option<SignInStep>> {
        Box::pin(self.sign_in_step_impl(id_hash))
    }

    fn fail_sign_in_step<'a>(&'a self, id_hash: &'a str) -> StoreFuture<'a, u32> {
        Box::pin(self.fail_sign_in_step_impl(id_hash))
    }

    fn advance_sign_in_step<'a>(
        &'a self,
        id_hash: &'a str,
        stage: SignInStage,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.advance_sign_in_step_impl(id_hash, stage))
    }

    fn end_sign_in_step<'a>(&'a self, id_hash: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.end_sign_in_step_impl(id_hash))
    }
}
