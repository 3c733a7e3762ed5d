//! Pending OpenID Connect sign-ins and SSO accounts (see [`crate::store::sso`]). The same
//! decisions as the SQLite backend's, in one transaction each.

use sqlx::PgConnection;
use sqlx::Row as _;
use time::OffsetDateTime;

use super::{PostgresStore, log, ms};
use crate::store::{
    NewOidcFlow, NewSession, OidcFlow, Role, SsoOutcome, SsoSignIn, SsoStore, StoreError,
    StoreFuture, StoreResult,
};

fn role_of(text: &str) -> StoreResult<Role> {
    Role::parse(text).ok_or_else(|| StoreError::Corrupt(format!("role {text:?}")))
}

/// The session row and its `login.success` entry, as a password sign-in writes them.
async fn insert_session(
    conn: &mut PgConnection,
    store: &PostgresStore,
    s: &NewSession,
    detail: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sessions (id_hash, username, csrf_token, created_at, last_seen_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&s.id_hash)
    .bind(&s.username)
    .bind(&s.csrf_token)
    .bind(ms(s.created_at))
    .bind(ms(s.created_at))
    .bind(ms(s.expires_at))
    .execute(&mut *conn)
    .await?;
    log::audit(
        conn,
        &store.audit_key,
        s.created_at,
        &s.username,
        "login.success",
        &s.username,
        detail,
    )
    .await?;
    Ok(())
}

impl PostgresStore {
    async fn put_oidc_flow_impl(&self, flow: NewOidcFlow) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM oidc_flows WHERE expires_at <= $1")
            .bind(ms(flow.created_at))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO oidc_flows (state_hash, browser_hash, nonce, pkce_verifier, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&flow.state_hash)
        .bind(&flow.browser_hash)
        .bind(&flow.nonce)
        .bind(&flow.pkce_verifier)
        .bind(ms(flow.created_at))
        .bind(ms(flow.expires_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_oidc_flow_impl(
        &self,
        state_hash: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<OidcFlow>> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "DELETE FROM oidc_flows WHERE state_hash = $1
             RETURNING browser_hash, nonce, pkce_verifier, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(r) = row else { return Ok(None) };
        let flow = OidcFlow {
            browser_hash: r.try_get("browser_hash")?,
            nonce: r.try_get("nonce")?,
            pkce_verifier: r.try_get("pkce_verifier")?,
            expires_at: r.try_get("expires_at")?,
        };
        Ok((flow.expires_at > now).then_some(flow))
    }

    async fn sso_sign_in_impl(&self, s: SsoSignIn) -> StoreResult<SsoOutcome> {
        let at = s.session.created_at;
        let mut tx = self.begin().await?;
        let bound = sqlx::query(
            "SELECT username, role, disabled FROM users WHERE auth = 'oidc' AND sso_issuer = $1 AND sso_subject = $2 FOR UPDATE",
        )
        .bind(&s.issuer)
        .bind(&s.subject)
        .fetch_optional(&mut *tx)
        .await?;
        let mut created = false;
        let mut role_changed = None;
        let username = if let Some(r) = bound {
            let username: String = r.try_get("username")?;
            if r.try_get::<bool, _>("disabled")? {
                return Ok(SsoOutcome::Disabled { username });
            }
            let was = role_of(&r.try_get::<String, _>("role")?)?;
            if was != s.role {
                sqlx::query("UPDATE users SET role = $1 WHERE username = $2")
                    .bind(s.role.as_str())
                    .bind(&username)
                    .execute(&mut *tx)
                    .await?;
                let detail = format!(
                    "{} -> {} (from the provider's claims)",
                    was.as_str(),
                    s.role.as_str()
                );
                log::audit(
                    &mut tx,
                    &self.audit_key,
                    at,
                    "oidc",
                    "user.role",
                    &username,
                    &detail,
                )
                .await?;
                role_changed = Some(was);
            }
            username
        } else {
            let named = sqlx::query(
                "SELECT auth, sso_issuer, disabled FROM users WHERE username = $1 FOR UPDATE",
            )
            .bind(&s.username)
            .fetch_optional(&mut *tx)
            .await?;
            let username = s.username.clone();
            match named {
                Some(r) if r.try_get::<String, _>("auth")? != "oidc" => {
                    return Ok(SsoOutcome::LocalAccount { username });
                }
                Some(r) if r.try_get::<Option<String>, _>("sso_issuer")?.is_some() => {
                    return Ok(SsoOutcome::OtherSubject { username });
                }
                Some(r) if r.try_get::<bool, _>("disabled")? => {
                    return Ok(SsoOutcome::Disabled { username });
                }
                Some(_) => {
                    // Pre-created by an admin: bound to this subject now, role from the claims.
                    sqlx::query(
                        "UPDATE users SET sso_issuer = $1, sso_subject = $2, role = $3 WHERE username = $4",
                    )
                    .bind(&s.issuer)
                    .bind(&s.subject)
                    .bind(s.role.as_str())
                    .bind(&username)
                    .execute(&mut *tx)
                    .await?;
                    let detail = format!("{} sub={}", s.issuer, s.subject);
                    log::audit(
                        &mut tx,
                        &self.audit_key,
                        at,
                        "oidc",
                        "user.sso-bind",
                        &username,
                        &detail,
                    )
                    .await?;
                }
                None if !s.provision => return Ok(SsoOutcome::NotProvisioned { username }),
                None => {
                    let done = sqlx::query(
                        "INSERT INTO users (username, password_hash, role, disabled, created_at, auth, sso_issuer, sso_subject)
                         VALUES ($1, $2, $3, false, $4, 'oidc', $5, $6) ON CONFLICT DO NOTHING",
                    )
                    .bind(&username)
                    .bind(&s.placeholder_hash)
                    .bind(s.role.as_str())
                    .bind(ms(at))
                    .bind(&s.issuer)
                    .bind(&s.subject)
                    .execute(&mut *tx)
                    .await?;
                    // Two first sign-ins racing on two nodes: the other one created it.
                    if done.rows_affected() != 1 {
                        return Err(StoreError::Refused(format!(
                            "account {username:?} was created by a parallel sign-in; sign in again"
                        )));
                    }
                    let detail = format!("{} sso {} sub={}", s.role.as_str(), s.issuer, s.subject);
                    log::audit(
                        &mut tx,
                        &self.audit_key,
                        at,
                        "oidc",
                        "user.add",
                        &username,
                        &detail,
                    )
                    .await?;
                    created = true;
                }
            }
            username
        };
        let mut session = s.session;
        session.username.clone_from(&username);
        insert_session(&mut tx, self, &session, &s.detail).await?;
        tx.commit().await?;
        Ok(SsoOutcome::SignedIn {
            username,
            created,
            role_changed,
        })
    }

    async fn add_sso_user_impl(
        &self,
        username: &str,
        role: Role,
        placeholder_hash: &str,
        created_at: OffsetDateTime,
        actor: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "INSERT INTO users (username, password_hash, role, disabled, created_at, auth)
             VALUES ($1, $2, $3, false, $4, 'oidc') ON CONFLICT (username) DO NOTHING",
        )
        .bind(username)
        .bind(placeholder_hash)
        .bind(role.as_str())
        .bind(ms(created_at))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Refused(format!(
                "user {username:?} already exists"
            )));
        }
        let detail = format!("{} sso", role.as_str());
        log::audit(
            &mut tx,
            &self.audit_key,
            created_at,
            actor,
            "user.add",
            username,
            &detail,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn is_sso_account_impl(&self, username: &str) -> StoreResult<Option<bool>> {
        let auth: Option<String> = sqlx::query_scalar("SELECT auth FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(auth.map(|a| a == "oidc"))
    }
}

impl SsoStore for PostgresStore {
    fn put_oidc_flow(&self, flow: NewOidcFlow) -> StoreFuture<'_, ()> {
        Box::pin(self.put_oidc_flow_impl(flow))
    }

    fn take_oidc_flow<'a>(
        &'a self,
        state_hash: &'a str,
        now: OffsetDateTime,
    ) -> StoreFuture<'a, Option<OidcFlow>> {
        Box::pin(self.take_oidc_flow_impl(state_hash, now))
    }

    fn sso_sign_in(&self, sign_in: SsoSignIn) -> StoreFuture<'_, SsoOutcome> {
        Box::pin(self.sso_sign_in_impl(sign_in))
    }

    fn add_sso_user<'a>(
        &'a self,
        username: &'a str,
        role: Role,
        placeholder_hash: &'a str,
        created_at: OffsetDateTime,
        actor: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.add_sso_user_impl(username, role, placeholder_hash, created_at, actor))
    }

    fn is_sso_account<'a>(&'a self, username: &'a str) -> StoreFuture<'a, Option<bool>> {
        Box::pin(self.is_sso_account_impl(username))
    }
}
