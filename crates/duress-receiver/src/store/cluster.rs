//! The cluster's own bookkeeping: which receiver nodes are alive (each registers itself every
//! few seconds, `cluster_nodes`) and what the database says about its replication, for the
//! console's Cluster view (`console::cluster`) and the "receiver redundancy degraded" banner
//! (`notify::watch`).
//!
//! Neither may ever wait for the alarm path or block on it: with `synchronous_commit = on` and
//! the synchronous standby gone, PostgreSQL holds every ordinary commit until a standby
//! confirms it. So on PostgreSQL both run on a connection of their own (never a pooled one,
//! which may all be stuck in such commits), under a short `statement_timeout`, and the node's
//! upsert commits with `synchronous_commit = local` (it describes a process, not an alarm; a
//! lost row is rewritten 10 s later).

use time::OffsetDateTime;

use super::StoreFuture;

/// One node's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBeat {
    /// Hostname and process id (`host-1234`), or the configured name.
    pub node_id: String,
    /// The receiver's version.
    pub version: String,
    pub started_at: OffsetDateTime,
    /// Receiver time of this registration.
    pub now: OffsetDateTime,
}

/// A node as the Cluster view lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub node_id: String,
    pub version: String,
    pub started_at: OffsetDateTime,
    pub last_seen: OffsetDateTime,
}

/// What the database server is to the receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseRole {
    /// SQLite: one file on this node's disk, no replication.
    SingleFile,
    /// A PostgreSQL primary (accepts writes).
    Primary,
    /// A PostgreSQL standby in recovery (read-only; receivers cannot store alarms there).
    Standby,
}

impl DatabaseRole {
    pub fn label(self) -> &'static str {
        match self {
            DatabaseRole::SingleFile => "single file (SQLite)",
            DatabaseRole::Primary => "primary",
            DatabaseRole::Standby => "standby (read-only)",
        }
    }
}

/// One standby as the primary sees it (`pg_stat_replication`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Its `application_name` (the name `synchronous_standby_names` lists).
    pub name: String,
    /// `streaming`, `catchup`, …
    pub state: String,
    /// `sync`, `async`, `potential`, `quorum`.
    pub sync_state: String,
    /// How long the standby took to flush (`flush_lag`) and to replay (`replay_lag`) the latest
    /// WAL, in milliseconds; `None` when PostgreSQL has no recent measurement (an idle server).
    pub flush_lag_ms: Option<i64>,
    pub replay_lag_ms: Option<i64>,
}

/// The database's replication state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseStatus {
    pub role: DatabaseRole,
    /// `synchronous_standby_names` (empty: commits wait for no standby).
    pub synchronous_standby_names: String,
    /// The connected standbys (on a primary).
    pub replicas: Vec<Replica>,
}

impl DatabaseStatus {
    /// Whether an acknowledged alarm is on two disks now: a primary with at least one standby
    /// in `sync` state and a non-empty `synchronous_standby_names`.
    pub fn synchronous(&self) -> bool {
        self.role == DatabaseRole::Primary
            && !self.synchronous_standby_names.trim().is_empty()
            && self.replicas.iter().any(|r| r.sync_state == "sync")
    }
}

/// Node registration and replication state.
pub trait ClusterStore: Send + Sync {
    /// Inserts or refreshes this node's row.
    fn register_node(&self, beat: NodeBeat) -> StoreFuture<'_, ()>;
    /// The nodes whose `last_seen` is at or after `since`, by node id.
    fn cluster_nodes(&self, since: OffsetDateTime) -> StoreFuture<'_, Vec<ClusterNode>>;
    /// The database's role and replication, read without waiting on anything.
    fn database_status(&self) -> StoreFuture<'_, DatabaseStatus>;
}
