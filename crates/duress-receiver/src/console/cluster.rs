//! `GET /admin/cluster` (admins): the receiver nodes seen in the last minute (each registers
//! itself, `crate::cluster`), the database's role, its standbys (synchronous or not) and their
//! replication lag. The page reads only, on the store's own bounded connections, so it loads
//! while a lost synchronous standby blocks commits: that is when an admin needs it.

use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::State;

use super::error::ConsoleResult;
use super::pages::{Layout, Ts, human_duration, render};
use super::{Console, CurrentUser};
use crate::store::cluster::{DatabaseRole, DatabaseStatus};

#[derive(Debug)]
struct NodeRow {
    node_id: String,
    version: String,
    started_at: Ts,
    last_seen: Ts,
    this_node: bool,
}

#[derive(Debug)]
struct ReplicaRow {
    name: String,
    state: String,
    sync_state: String,
    flush_lag: String,
    replay_lag: String,
}

#[derive(Debug, Template)]
#[template(path = "cluster.html")]
struct ClusterPage {
    layout: Layout,
    /// The nodes, or why they could not be read.
    nodes: Result<Vec<NodeRow>, String>,
    /// The database's role (`primary`, …), or why it could not be read.
    role: Result<String, String>,
    synchronous_standby_names: String,
    /// `yes` / `no` / empty (SQLite: not applicable).
    synchronous: String,
    replicas: Vec<ReplicaRow>,
    sqlite: bool,
}

fn lag(ms: Option<i64>) -> String {
    ms.map_or_else(|| "—".to_owned(), human_duration)
}

/// `GET /admin/cluster`.
pub async fn page(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> ConsoleResult {
    let now = crate::clock::receiver_now();
    let since = now
        - time::Duration::try_from(crate::cluster::NODE_SEEN_WITHIN)
            .unwrap_or(time::Duration::MINUTE);
    let nodes = console
        .store
        .cluster_nodes(since)
        .await
        .map(|nodes| {
            nodes
                .into_iter()
                .map(|n| NodeRow {
                    this_node: n.node_id == console.node.node_id,
                    node_id: n.node_id,
                    version: n.version,
                    started_at: Ts::new(n.started_at),
                    last_seen: Ts::new(n.last_seen),
                })
                .collect()
        })
        .map_err(|e| e.to_string());
    let status: Result<DatabaseStatus, String> = console
        .store
        .database_status()
        .await
        .map_err(|e| e.to_string());
    let (role, names, synchronous, replicas, sqlite) = match status {
        Ok(s) => (
            Ok(s.role.label().to_owned()),
            s.synchronous_standby_names.clone(),
            match s.role {
                DatabaseRole::SingleFile => String::new(),
                _ if s.synchronous() => "yes".to_owned(),
                _ => "no".to_owned(),
            },
            s.replicas
                .iter()
                .map(|r| ReplicaRow {
                    name: r.name.clone(),
                    state: r.state.clone(),
                    sync_state: r.sync_state.clone(),
                    flush_lag: lag(r.flush_lag_ms),
                    replay_lag: lag(r.replay_lag_ms),
                })
                .collect(),
            s.role == DatabaseRole::SingleFile,
        ),
        Err(e) => (Err(e), String::new(), String::new(), Vec::new(), false),
    };
    Ok(render(&ClusterPage {
        layout: Layout::new(&user, "cluster", "Cluster"),
        nodes,
        role,
        synchronous_standby_names: names,
        synchronous,
        replicas,
        sqlite,
    }))
}
