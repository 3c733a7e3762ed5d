//! Integration API keys (see [`crate::store::apikeys`]): stored hashed, revoked for good,
//! every change audited in its own transaction.

use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;

use super::{SqliteStore, log};
use crate::store::{
    APIKEY_CREATE_ACTION, APIKEY_REVOKE_ACTION, ApiKeyRecord, ApiKeyScope, ApiKeyStore, NewApiKey,
    StoreError, StoreFuture, StoreResult, format_ts, parse_ts,
};

fn record(r: &SqliteRow) -> StoreResult<ApiKeyRecord> {
    let scope: String = r.try_get("scope")?;
    Ok(ApiKeyRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        scope: ApiKeyScope::parse(&scope)
            .ok_or_else(|| StoreError::Corrupt(format!("api key scope {scope:?}")))?,
        created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
        created_by: r.try_get("created_by")?,
        revoked_at: r
            .try_get::<Option<String>, _>("revoked_at")?
            .map(|t| parse_ts(&t))
            .transpose()?,
        revoked_by: r.try_get("revoked_by")?,
    })
}

impl SqliteStore {
    async fn create_api_key_impl(&self, key: NewApiKey, actor: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO api_keys (id, key_hash, name, scope, created_at, created_by)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&key.id)
        .bind(&key.key_hash)
        .bind(&key.name)
        .bind(key.scope.as_str())
        .bind(format_ts(key.created_at))
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Refused(format!(
                "API key {:?} already exists",
                key.id
            )));
        }
        log::audit(
            &mut tx,
            &self.audit_key,
            key.created_at,
            actor,
            APIKEY_CREATE_ACTION,
            &key.id,
            &key.audit_detail(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn revoke_api_key_impl(&self, id: &str, actor: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let now = crate::clock::receiver_now();
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(format_ts(now))
        .bind(actor)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        log::audit(
            &mut tx,
            &self.audit_key,
            now,
            actor,
            APIKEY_REVOKE_ACTION,
            id,
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl ApiKeyStore for SqliteStore {
    fn create_api_key<'a>(&'a self, key: NewApiKey, actor: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.create_api_key_impl(key, actor))
    }

    fn list_api_keys(&self) -> StoreFuture<'_, Vec<ApiKeyRecord>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT id, name, scope, created_at, created_by, revoked_at, revoked_by FROM api_keys ORDER BY created_at, id",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(record).collect()
        })
    }

    fn api_key_by_hash<'a>(&'a self, key_hash: &'a str) -> StoreFuture<'a, Option<ApiKeyRecord>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT id, name, scope, created_at, created_by, revoked_at, revoked_by FROM api_keys WHERE key_hash = ?",
            )
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
            row.as_ref().map(record).transpose()
        })
    }

    fn revoke_api_key<'a>(&'a self, id: &'a str, actor: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.revoke_api_key_impl(id, actor))
    }
}
