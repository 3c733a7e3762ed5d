//! Console users and server-side sessions; the audit and live-log reads; camera mappings.

use std::sync::Arc;

use sqlx::Row as _;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;
use tokio::sync::Notify;

use super::{PostgresStore, log, ms};
use crate::store::{
    AccountStore, AuditEntry, AuditStore, CameraMapping, Credentials, LiveRow, LiveStore,
    NewCameraMapping, NewSession, NewUser, Role, SessionRecord, SettingsStore, StoreError,
    StoreFuture, StoreResult, Subnet, UserRecord, format_ts,
};

impl PostgresStore {
    async fn add_user_impl(&self, user: NewUser, actor: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        // The primary key decides a race between two admins adding the same name.
        let done = sqlx::query(
            "INSERT INTO users (username, password_hash, role, disabled, created_at)
             VALUES ($1, $2, $3, false, $4) ON CONFLICT (username) DO NOTHING",
        )
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(ms(user.created_at))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Refused(format!(
                "user {:?} already exists",
                user.username
            )));
        }
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
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE users SET disabled = true WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Refused(format!("no user {username:?}")));
        }
        sqlx::query("DELETE FROM sessions WHERE username = $1")
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
            "SELECT username, role, disabled, created_at, auth FROM users ORDER BY username COLLATE \"C\"",
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
                    created_at: r.try_get("created_at")?,
                    sso: r.try_get::<String, _>("auth")? == "oidc",
                })
            })
            .collect()
    }

    async fn credentials_impl(&self, username: &str) -> StoreResult<Option<Credentials>> {
        // An SSO account never signs in with a password (`store::sso`): refused as disabled.
        let row = sqlx::query(
            "SELECT password_hash, (disabled OR auth <> 'password') AS disabled FROM users WHERE username = $1",
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
        let mut tx = self.begin().await?;
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
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, username, csrf_token, created_at, last_seen_at, expires_at)
             VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .bind(&s.id_hash)
        .bind(&s.username)
        .bind(&s.csrf_token)
        .bind(ms(s.created_at))
        .bind(ms(s.expires_at))
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
             FROM sessions s JOIN users u ON u.username = s.username WHERE s.id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SessionRecord {
                username: r.try_get("username")?,
                csrf_token: r.try_get("csrf_token")?,
                created_at: r.try_get("created_at")?,
                last_seen_at: r.try_get("last_seen_at")?,
                expires_at: r.try_get("expires_at")?,
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
        let mut tx = self.begin().await?;
        // GREATEST: an extension never shortens a session (two tabs extending at once).
        let row = sqlx::query(
            "UPDATE sessions SET expires_at = GREATEST(expires_at, $1), last_seen_at = $2
             WHERE id_hash = $3 RETURNING username, expires_at",
        )
        .bind(ms(expires_at))
        .bind(ms(at))
        .bind(id_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let username: String = row.try_get("username")?;
        let until: OffsetDateTime = row.try_get("expires_at")?;
        log::audit(
            &mut tx,
            &self.audit_key,
            at,
            &username,
            "session.extend",
            &username,
            &format!("until {}", format_ts(until)),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_session(&self, id_hash: &str, audit_actor: Option<&str>) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
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
        let rows = sqlx::query("SELECT * FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_entry).collect()
    }

    async fn audit_rows(&self, newest_first_limit: Option<u32>) -> StoreResult<Vec<AuditEntry>> {
        let rows = match newest_first_limit {
            Some(limit) => {
                sqlx::query("SELECT * FROM audit_log ORDER BY id DESC LIMIT $1")
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
        rows.iter().map(audit_entry).collect()
    }

    async fn live_after_impl(&self, after: i64, limit: u32) -> StoreResult<Vec<LiveRow>> {
        let rows = sqlx::query(
            "SELECT id, at, kind, incident_id, payload::text AS payload FROM console_events
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LiveRow {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    incident_id: r.try_get("incident_id")?,
                    payload: r.try_get("payload")?,
                })
            })
            .collect()
    }

    async fn add_mapping_impl(&self, m: NewCameraMapping, actor: &str) -> StoreResult<i64> {
        let mut tx = self.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO camera_mappings (match_field, match_value, name, url_template, created_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(&m.match_field)
        .bind(&m.match_value)
        .bind(&m.name)
        .bind(&m.url_template)
        .bind(ms(m.created_at))
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
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM camera_mappings WHERE id = $1")
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

fn audit_entry(r: &PgRow) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: r.try_get("id")?,
        // Stored truncated to milliseconds: formats back to the very text that was hashed.
        at: format_ts(r.try_get::<OffsetDateTime, _>("at")?),
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        subject: r.try_get("subject")?,
        detail: r.try_get("detail")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
        keyed: r.try_get("keyed")?,
    })
}

impl AccountStore for PostgresStore {
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
            sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2")
                .bind(ms(at))
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

impl AuditStore for PostgresStore {
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
            let mut tx = self.begin().await?;
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

impl LiveStore for PostgresStore {
    fn live_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<LiveRow>> {
        Box::pin(self.live_after_impl(after, limit))
    }

    fn live_latest_id(&self) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            Ok(
                sqlx::query_scalar("SELECT COALESCE(MAX(id), 0)::bigint FROM console_events")
                    .fetch_one(&self.pool)
                    .await?,
            )
        })
    }

    fn live_wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    fn live_doorbell(&self, wake: Arc<Notify>) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(super::log::listen(
            self.listen_options.clone(),
            self.name.clone(),
            wake,
        ))
    }

    fn live_safety_net(&self) -> std::time::Duration {
        super::LIVE_SAFETY_NET
    }

    fn mute_doorbell(&self, muted: bool) {
        self.doorbell.mute(muted);
    }
}

impl PostgresStore {
    async fn subnets_impl(&self) -> StoreResult<Vec<Subnet>> {
        let rows =
            sqlx::query("SELECT cidr, building, floor FROM subnets ORDER BY cidr COLLATE \"C\"")
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
        let mut tx = self.begin().await?;
        let now = crate::clock::receiver_now();
        for subnet in &subnets {
            sqlx::query(
                "INSERT INTO subnets (cidr, building, floor, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (cidr) DO UPDATE SET building = excluded.building,
                                                  floor = excluded.floor",
            )
            .bind(subnet.cidr())
            .bind(&subnet.building)
            .bind(&subnet.floor)
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
        }
        // The audit entries last: the log lock is the last lock a transaction takes.
        for subnet in &subnets {
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
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM subnets WHERE cidr = $1")
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

impl SettingsStore for PostgresStore {
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
