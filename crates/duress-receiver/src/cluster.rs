//! This node in the receiver cluster: it registers itself in the store every
//! [`REGISTER_EVERY`] (the console's Cluster view lists the nodes seen in the last
//! [`NODE_SEEN_WITHIN`]) and checks the database's replication every [`CHECK_EVERY`], turning
//! a lost synchronous standby into the console's "receiver redundancy degraded" banner
//! (`notify::watch`). Apart from the alarm path: nothing here is awaited by ingest, and the
//! store runs these calls on connections of their own, bounded in time (`store::cluster`).

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::notify::watch::Watchdog;
use crate::store::cluster::{DatabaseRole, DatabaseStatus, NodeBeat};
use crate::store::{Store, StoreResult};

/// How often a node refreshes its `cluster_nodes` row.
pub const REGISTER_EVERY: Duration = Duration::from_secs(10);
/// A node is listed while its row is younger than this (six missed refreshes).
pub const NODE_SEEN_WITHIN: Duration = Duration::from_secs(60);
/// How often the replication state is read (a lost standby is on the console within this
/// plus the banner's 1 s re-evaluation).
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Who this node is.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub node_id: String,
    pub started_at: OffsetDateTime,
}

impl NodeIdentity {
    /// `name` when configured, else `HOSTNAME-PID` (unique per process on one machine, and
    /// says where to look).
    pub fn new(name: Option<&str>) -> Self {
        let node_id = match name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) => n.to_owned(),
            None => format!(
                "{}-{}",
                gethostname::gethostname().to_string_lossy(),
                std::process::id()
            ),
        };
        NodeIdentity {
            node_id,
            started_at: crate::clock::receiver_now(),
        }
    }
}

/// The banner line for the database's replication state, `None` when all is well.
///
/// `seen_sync` remembers that this receiver has seen a synchronous standby since it started:
/// a primary whose `synchronous_standby_names` is empty is a single server *by design* unless a
/// standby was synchronous before (then someone or something dropped it from the set, e.g. the
/// operator's documented way out of blocked commits, or a failover to a standby of its own).
pub fn redundancy_trouble(
    status: &StoreResult<DatabaseStatus>,
    seen_sync: &mut bool,
) -> Option<String> {
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            return Some(format!(
                "Receiver redundancy degraded: the database's replication cannot be checked \
                 ({e}). Alarms may not be acknowledged until the database answers."
            ));
        }
    };
    match status.role {
        DatabaseRole::SingleFile => None,
        DatabaseRole::Standby => Some(
            "Receiver redundancy degraded: this receiver's database is a read-only standby; \
             alarms cannot be stored until it is promoted or the database name points at the \
             primary (docs/scale-out.md)."
                .to_owned(),
        ),
        DatabaseRole::Primary if status.synchronous() => {
            *seen_sync = true;
            None
        }
        DatabaseRole::Primary if !status.synchronous_standby_names.trim().is_empty() => {
            Some(format!(
                "Receiver redundancy degraded: the synchronous standby ({}) is not connected. \
                 The database holds every alarm's commit until a standby confirms it, so alarms \
                 are waiting and not acknowledged. Restore the standby, or run on one disk \
                 consciously (docs/scale-out.md).",
                status.synchronous_standby_names.trim()
            ))
        }
        DatabaseRole::Primary if *seen_sync => Some(
            "Receiver redundancy degraded: commits no longer wait for a standby \
             (synchronous_standby_names is empty): an alarm acknowledged now is on one disk \
             only. Attach a synchronous standby again (docs/scale-out.md)."
                .to_owned(),
        ),
        DatabaseRole::Primary => None,
    }
}

/// Registers this node and watches redundancy until aborted. Failures are logged (once per
/// change, by the watchdog) and retried at the next tick.
pub async fn run(store: Arc<dyn Store>, node: NodeIdentity, watchdog: Arc<Watchdog>) {
    let version = env!("CARGO_PKG_VERSION").to_owned();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen_sync = false;
    let mut last_registered: Option<tokio::time::Instant> = None;
    let mut register_failed = false;
    loop {
        tick.tick().await;
        if last_registered.is_none_or(|t| t.elapsed() >= REGISTER_EVERY) {
            let beat = NodeBeat {
                node_id: node.node_id.clone(),
                version: version.clone(),
                started_at: node.started_at,
                now: crate::clock::receiver_now(),
            };
            match store.register_node(beat).await {
                Ok(()) => {
                    last_registered = Some(tokio::time::Instant::now());
                    if register_failed {
                        tracing::info!(node = %node.node_id, "cluster: node registered again");
                    }
                    register_failed = false;
                }
                Err(e) => {
                    if !register_failed {
                        tracing::warn!(node = %node.node_id, error = %e, "cluster: registering this node failed");
                    }
                    register_failed = true;
                }
            }
        }
        let status = store.database_status().await;
        watchdog.set_redundancy(redundancy_trouble(&status, &mut seen_sync));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use crate::store::cluster::Replica;

    fn primary(names: &str, sync_state: Option<&str>) -> StoreResult<DatabaseStatus> {
        Ok(DatabaseStatus {
            role: DatabaseRole::Primary,
            synchronous_standby_names: names.into(),
            replicas: sync_state
                .map(|s| Replica {
                    name: "b".into(),
                    state: "streaming".into(),
                    sync_state: s.into(),
                    flush_lag_ms: None,
                    replay_lag_ms: None,
                })
                .into_iter()
                .collect(),
        })
    }

    #[test]
    fn redundancy_is_judged_from_the_replication_state() {
        let mut seen = false;
        // A single PostgreSQL server by design: nothing to say.
        assert_eq!(redundancy_trouble(&primary("", None), &mut seen), None);
        assert_eq!(
            redundancy_trouble(&primary("b", Some("sync")), &mut seen),
            None
        );
        assert!(seen);
        let blocked = redundancy_trouble(&primary("b", None), &mut seen).unwrap();
        assert!(
            blocked.starts_with("Receiver redundancy degraded"),
            "{blocked}"
        );
        assert!(blocked.contains("not acknowledged"), "{blocked}");
        let asynchronous = redundancy_trouble(&primary("b", Some("async")), &mut seen);
        assert!(asynchronous.is_some());
        // Dropped from the set after being synchronous: one disk.
        let one_disk = redundancy_trouble(&primary("", None), &mut seen).unwrap();
        assert!(one_disk.contains("one disk"), "{one_disk}");
        let down = redundancy_trouble(&Err(StoreError::Unavailable("x".into())), &mut seen);
        assert!(down.unwrap().contains("cannot be checked"));
        let sqlite = Ok(DatabaseStatus {
            role: DatabaseRole::SingleFile,
            synchronous_standby_names: String::new(),
            replicas: Vec::new(),
        });
        assert_eq!(redundancy_trouble(&sqlite, &mut seen), None);
    }
}
