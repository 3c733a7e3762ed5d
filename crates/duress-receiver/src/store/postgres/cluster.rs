//! Node registration and replication state on PostgreSQL (see `store::cluster` for why each
//! call opens a connection of its own and what must never block).

use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Row as _};
use time::OffsetDateTime;

use super::PostgresStore;
use crate::store::cluster::{
    ClusterNode, ClusterStore, DatabaseRole, DatabaseStatus, NodeBeat, Replica,
};
use crate::store::{StoreError, StoreFuture, StoreResult};

/// How long one cluster call may take in all (connecting included) before it is reported as
/// failed; the `statement_timeout` of its statements is the same.
const CLUSTER_CALL_TIMEOUT: Duration = Duration::from_secs(3);

impl PostgresStore {
    /// A fresh connection (same server, same credentials as the pools) with a short
    /// `statement_timeout`, closed by the caller.
    async fn cluster_connection(&self) -> StoreResult<PgConnection> {
        let options = (*self.pool.connect_options()).clone();
        let timeout = format!("{}ms", CLUSTER_CALL_TIMEOUT.as_millis());
        let options = options.options([("statement_timeout", timeout.as_str())]);
        Ok(PgConnection::connect_with(&options).await?)
    }

    /// `call` bounded by [`CLUSTER_CALL_TIMEOUT`] (connecting included).
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        tokio::time::timeout(CLUSTER_CALL_TIMEOUT, call)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "{}: no answer within {} s",
                    self.name,
                    CLUSTER_CALL_TIMEOUT.as_secs()
                ))
            })?
    }

    async fn register_node_impl(&self, beat: NodeBeat) -> StoreResult<()> {
        self.bounded(async {
            let mut conn = self.cluster_connection().await?;
            let mut tx = conn.begin().await?;
            // Not alarm data: must not wait for a synchronous standby that may be gone.
            sqlx::query("SET LOCAL synchronous_commit = local")
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO cluster_nodes (node_id, version, started_at, last_seen)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (node_id) DO UPDATE SET
                     version = excluded.version, started_at = excluded.started_at,
                     last_seen = excluded.last_seen",
            )
            .bind(&beat.node_id)
            .bind(&beat.version)
            .bind(super::ms(beat.started_at))
            .bind(super::ms(beat.now))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            let _ = conn.close().await;
            Ok(())
        })
        .await
    }

    async fn cluster_nodes_impl(&self, since: OffsetDateTime) -> StoreResult<Vec<ClusterNode>> {
        self.bounded(async {
            let mut conn = self.cluster_connection().await?;
            let rows = sqlx::query(
                "SELECT node_id, version, started_at, last_seen FROM cluster_nodes
                 WHERE last_seen >= $1 ORDER BY node_id",
            )
            .bind(super::ms(since))
            .fetch_all(&mut conn)
            .await?;
            let _ = conn.close().await;
            rows.iter()
                .map(|r| {
                    Ok(ClusterNode {
                        node_id: r.try_get("node_id")?,
                        version: r.try_get("version")?,
                        started_at: r.try_get("started_at")?,
                        last_seen: r.try_get("last_seen")?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn database_status_impl(&self) -> StoreResult<DatabaseStatus> {
        self.bounded(async {
            let mut conn = self.cluster_connection().await?;
            // Reads only: a read-only transaction writes no commit record, so it never waits
            // for a synchronous standby.
            let (in_recovery, names): (bool, String) = sqlx::query_as(
                "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names')",
            )
            .fetch_one(&mut conn)
            .await?;
            // Every column needs superuser or pg_read_all_stats (docs/scale-out.md); without
            // them sync_state reads NULL and the standby counts as not synchronous.
            let rows = sqlx::query(
                "SELECT coalesce(application_name, '') AS name, coalesce(state, '') AS state,
                        coalesce(sync_state, '') AS sync_state,
                        (extract(epoch FROM flush_lag) * 1000)::bigint AS flush_lag_ms,
                        (extract(epoch FROM replay_lag) * 1000)::bigint AS replay_lag_ms
                 FROM pg_stat_replication ORDER BY application_name",
            )
            .fetch_all(&mut conn)
            .await?;
            let _ = conn.close().await;
            let replicas = rows
                .iter()
                .map(|r| {
                    Ok(Replica {
                        name: r.try_get("name")?,
                        state: r.try_get("state")?,
                        sync_state: r.try_get("sync_state")?,
                        flush_lag_ms: r.try_get("flush_lag_ms")?,
                        replay_lag_ms: r.try_get("replay_lag_ms")?,
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(DatabaseStatus {
                role: if in_recovery {
                    DatabaseRole::Standby
                } else {
                    DatabaseRole::Primary
                },
                synchronous_standby_names: names,
                replicas,
            })
        })
        .await
    }
}

impl ClusterStore for PostgresStore {
    fn register_node(&self, beat: NodeBeat) -> StoreFuture<'_, ()> {
        Box::pin(self.register_node_impl(beat))
    }

    fn cluster_nodes(&self, since: OffsetDateTime) -> StoreFuture<'_, Vec<ClusterNode>> {
        Box::pin(self.cluster_nodes_impl(since))
    }

    fn database_status(&self) -> StoreFuture<'_, DatabaseStatus> {
        Box::pin(self.database_status_impl())
    }
}
