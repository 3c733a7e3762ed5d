//! Console users and server-side sessions; also the audit log and live-log reads.

use sqlx::Row as _;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::Notify;

use super::listings::ts;
use super::{SqliteStore, log};
use crate::store::{
    AccountStore, AuditEntry, AuditStore, Credentials, LiveRow, LiveStore, NewSession, NewUser,
    Role, SessionRecord, StoreError, StoreFuture, StoreResult, UserRecord, format_ts,
};

impl SqliteStore {
    async fn add_user_impl(&self, user: NewUser, actor: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT username FROM users WHERE username = ?")
                .bind(&user.username)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_some() {
            return Err(StoreError::Refused(format!(
                "user {:?} already exists",
                user.username
            )));
        }
        sqlx::query(
            "INSERT INTO users (username, password_hash, role, disabled, created_at) VALUES (?, ?, ?, 0, ?)",
        )
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(format_ts(user.created_at))
        .execute(&mut *tx)
        .await?;
        log::audit(
            &mut tx,
            &self.audit_key,
            user.created_at,
            actor,
            "user.add",
            &user.username,
            user.role.as_str(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn disable_user_impl(&self, username: &str, actor: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE users SET disabled = 1 WHERE username = ?")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Refused(format!("no user {username:?}")));
        }
        sqlx::query("DELETE FROM sessions WHERE username = ?")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        log::audit(
            &mut tx,
            &self.audit_key,
            crate::clock::receiver_now(),
            actor,
            "user.disable",
            username,
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_users_impl(&self) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query(
            "SELECT username, role, disabled, created_at, auth FROM users ORDER BY username",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get("role")?;
                Ok(UserRecord {
                    username: r.try_get("username")?,
                    role: Role::parse(&role)
                        .ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
                    disabled: r.try_get("disabled")?,
                    created_at: ts(r, "created_at")?,
                    sso: r.try_get::<String, _>("auth")? == "oidc",
                })
            })
            .collect()
    }

    async fn credentials_impl(&self, username: &str) -> StoreResult<Option<Credentials>> {
        // An SSO account never signs in with a password (`store::sso`): refused as disabled.
        let row = sqlx::query(
            "SELECT password_hash, (disabled = 1 OR auth <> 'password') AS disabled FROM users WHERE username = ?",
        )
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Credentials {
                password_hash: r.try_get("password_hash")?,
                disabled: r.try_get("disabled")?,
            })
        })
        .transpose()
    }

    async fn audit_only(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        log::audit(
            &mut tx,
            &self.audit_key,
            crate::clock::receiver_now(),
            actor,
            action,
            subject,
            detail,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_session_impl(&self, s: NewSession, detail: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, username, csrf_token, created_at, last_seen_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id_hash)
        .bind(&s.username)
        .bind(&s.csrf_token)
        .bind(format_ts(s.created_at))
        .bind(format_ts(s.created_at))
        .bind(format_ts(s.expires_at))
        .execute(&mut *tx)
        .await?;
        log::audit(
            &mut tx,
            &self.audit_key,
            s.created_at,
            &s.username,
            "login.success",
            &s.username,
            detail,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session_impl(&self, id_hash: &str) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT s.username, s.csrf_token, s.created_at, s.last_seen_at, s.expires_at, u.role, u.disabled
             FROM sessions s JOIN users u ON u.username = s.username WHERE s.id_hash = ?",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SessionRecord {
                username: r.try_get("username")?,
                csrf_token: r.try_get("csrf_token")?,
                created_at: ts(&r, "created_at")?,
                last_seen_at: ts(&r, "last_seen_at")?,
                expires_at: ts(&r, "expires_at")?,
                role: Role::parse(&r.try_get::<String, _>("role")?),
                user_disabled: r.try_get("disabled")?,
            })
        })
        .transpose()
    }

    async fn extend_session_impl(
        &self,
        id_hash: &str,
        expires_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        // MAX: an extension never shortens a session (two tabs extending at once).
        let row = sqlx::query(
            "UPDATE sessions SET expires_at = MAX(expires_at, ?), last_seen_at = ?
             WHERE id_hash = ? RETURNING username, expires_at",
        )
        .bind(format_ts(expires_at))
        .bind(format_ts(at))
        .bind(id_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let username: String = row.try_get("username")?;
        let until: String = row.try_get("expires_at")?;
        log::audit(
            &mut tx,
            &self.audit_key,
            at,
            &username,
            "session.extend",
            &username,
            &format!("until {until}"),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_session(&self, id_hash: &str, audit_actor: Option<&str>) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&mut *tx)
            .await?;
        if let Some(actor) = audit_actor {
            log::audit(
                &mut tx,
                &self.audit_key,
                crate::clock::receiver_now(),
                actor,
                "logout",
                actor,
                "",
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn audit_after_impl(
        &self,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    subject: r.try_get("subject")?,
                    detail: r.try_get("detail")?,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                    keyed: r.try_get("keyed")?,
                })
            })
            .collect()
    }

    async fn audit_rows(&self, newest_first_limit: Option<u32>) -> StoreResult<Vec<AuditEntry>> {
        let rows = match newest_first_limit {
            Some(limit) => {
                sqlx::query("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?")
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM audit_log ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    subject: r.try_get("subject")?,
                    detail: r.try_get("detail")?,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                    keyed: r.try_get("keyed")?,
                })
            })
            .collect()
    }

    async fn live_after_impl(&self, after: i64, limit: u32) -> StoreResult<Vec<LiveRow>> {
        let rows = sqlx::query(
            "SELECT id, at, kind, incident_id, payload FROM console_events WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LiveRow {
                    id: r.try_get("id")?,
                    at: ts(r, "at")?,
                    kind: r.try_get("kind")?,
                    incident_id: r
                        .try_get::<Option<String>, _>("incident_id")?
                        .map(|t| super::rows::parse_uuid(&t))
                        .transpose()?,
                    payload: r.try_get("payload")?,
                })
            })
            .collect()
    }
}

impl AccountStore for SqliteStore {
    fn add_user<'a>(&'a self, user: NewUser, actor: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.add_user_impl(user, actor))
    }

    fn disable_user<'a>(&'a self, username: &'a str, actor: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.disable_user_impl(username, actor))
    }

    fn list_users(&self) -> StoreFuture<'_, Vec<UserRecord>> {
        Box::pin(self.list_users_impl())
    }

    fn credentials<'a>(&'a self, username: &'a str) -> StoreFuture<'a, Option<Credentials>> {
        Box::pin(self.credentials_impl(username))
    }

    fn record_login_failure<'a>(
        &'a self,
        username: &'a str,
        actor: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.audit_only(actor, "login.failure", username, ""))
    }

    fn record_login_lockout<'a>(
        &'a self,
        username: &'a str,
        actor: &'a str,
        detail: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.audit_only(actor, "login.lockout", username, detail))
    }

    fn create_session<'a>(&'a self, session: NewSession, detail: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.create_session_impl(session, detail))
    }

    fn session<'a>(&'a self, id_hash: &'a str) -> StoreFuture<'a, Option<SessionRecord>> {
        Box::pin(self.session_impl(id_hash))
    }

    fn touch_session<'a>(&'a self, id_hash: &'a str, at: OffsetDateTime) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE id_hash = ?")
                .bind(format_ts(at))
                .bind(id_hash)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn extend_session<'a>(
        &'a self,
        id_hash: &'a str,
        expires_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.extend_session_impl(id_hash, expires_at, at))
    }

    fn expire_session<'a>(&'a self, id_hash: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.delete_session(id_hash, None))
    }

    fn end_session<'a>(&'a self, id_hash: &'a str, actor: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.delete_session(id_hash, Some(actor)))
    }
}

impl AuditStore for SqliteStore {
    fn recent_audit(&self, limit: u32) -> StoreFuture<'_, Vec<AuditEntry>> {
        Box::pin(self.audit_rows(Some(limit)))
    }

    fn audit_log(&self) -> StoreFuture<'_, Vec<AuditEntry>> {
        Box::pin(self.audit_rows(None))
    }

    fn audit_head(&self) -> StoreFuture<'_, crate::store::audit_chain::AuditHead> {
        Box::pin(async move {
            let row = sqlx::query("SELECT id, hash FROM audit_head")
                .fetch_one(&self.pool)
                .await?;
            Ok(crate::store::audit_chain::AuditHead {
                id: row.try_get("id")?,
                hash: row.try_get("hash")?,
            })
        })
    }

    fn audit_key(&self) -> &crate::store::audit_chain::AuditKey {
        &self.audit_key
    }

    fn record_audit<'a>(
        &'a self,
        actor: &'a str,
        action: &'a str,
        subject: &'a str,
        detail: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.begin_write().await?;
            log::audit(
                &mut tx,
                &self.audit_key,
                crate::clock::receiver_now(),
                actor,
                action,
                subject,
                detail,
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

impl LiveStore for SqliteStore {
    fn live_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<LiveRow>> {
        Box::pin(self.live_after_impl(after, limit))
    }

    fn live_latest_id(&self) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            Ok(
                sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM console_events")
                    .fetch_one(&self.pool)
                    .await?,
            )
        })
    }

    fn live_wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}
