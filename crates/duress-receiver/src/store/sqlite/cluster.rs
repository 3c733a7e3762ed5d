//! Node registration on SQLite (see `store::cluster`): one file, one node, no replication.

use sqlx::Row as _;
use time::OffsetDateTime;

use super::SqliteStore;
use crate::store::cluster::{ClusterNode, ClusterStore, DatabaseRole, DatabaseStatus, NodeBeat};
use crate::store::{StoreFuture, StoreResult, format_ts, parse_ts};

impl SqliteStore {
    async fn register_node_impl(&self, beat: NodeBeat) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO cluster_nodes (node_id, version, started_at, last_seen)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (node_id) DO UPDATE SET
                 version = excluded.version, started_at = excluded.started_at,
                 last_seen = excluded.last_seen",
        )
        .bind(&beat.node_id)
        .bind(&beat.version)
        .bind(format_ts(beat.started_at))
        .bind(format_ts(beat.now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn cluster_nodes_impl(&self, since: OffsetDateTime) -> StoreResult<Vec<ClusterNode>> {
        let rows = sqlx::query(
            "SELECT node_id, version, started_at, last_seen FROM cluster_nodes
             WHERE last_seen >= ?1 ORDER BY node_id",
        )
        .bind(format_ts(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ClusterNode {
                    node_id: r.try_get("node_id")?,
                    version: r.try_get("version")?,
                    started_at: parse_ts(&r.try_get::<String, _>("started_at")?)?,
                    last_seen: parse_ts(&r.try_get::<String, _>("last_seen")?)?,
                })
            })
            .collect()
    }
}

impl ClusterStore for SqliteStore {
    fn register_node(&self, beat: NodeBeat) -> StoreFuture<'_, ()> {
        Box::pin(self.register_node_impl(beat))
    }

    fn cluster_nodes(&self, since: OffsetDateTime) -> StoreFuture<'_, Vec<ClusterNode>> {
        Box::pin(self.cluster_nodes_impl(since))
    }

    fn database_status(&self) -> StoreFuture<'_, DatabaseStatus> {
        Box::pin(async {
            Ok(DatabaseStatus {
                role: DatabaseRole::SingleFile,
                synchronous_standby_names: String::new(),
                replicas: Vec::new(),
            })
        })
    }
}
