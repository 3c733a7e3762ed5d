//! Supervision notifications: every `interval_s` the sweep (`OutboxStore::sweep_offline`) finds
//! active stations that stopped sending heartbeats and, in the same transaction, records each
//! outage and enqueues a notification to the `[supervision]` channels naming the station and
//! its location — once per outage (the store's own rule, `supervision_state`). With several
//! receiver nodes on one database only the holder of the `supervision` cluster lease sweeps. Pending, disabled, revoked
//! and never-seen stations are not supervised. Every run is recorded (`last_sweep`), so a
//! sweep that stopped running can be noticed.

use std::sync::Arc;
use std::time::Duration;

use crate::config::SupervisionConfig;
use crate::store::Store;

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// The cluster lease of the sweep ([`crate::store::ClusterLease`]).
pub const LEASE: &str = "supervision";

/// The offline threshold: the file's `offline_after_s`, or two heartbeat intervals plus 30 s.
pub fn offline_after(config: &SupervisionConfig, heartbeat_interval_s: u64) -> Duration {
    Duration::from_secs(
        config
            .offline_after_s
            .unwrap_or(heartbeat_interval_s.saturating_mul(2).saturating_add(30)),
    )
}

/// Runs until aborted.
/// The sweep's interval: the file's `interval_s`, or 30 s.
pub fn interval(config: &SupervisionConfig) -> Duration {
    config
        .interval_s
        .map_or(DEFAULT_INTERVAL, Duration::from_secs)
}

/// Runs until aborted. Each run is recorded in the store by the sweep itself (the watch,
/// `super::watch`, reads it).
pub async fn run(
    store: Arc<dyn Store>,
    config: SupervisionConfig,
    heartbeat_interval_s: u64,
    watchdog: Arc<super::watch::Watchdog>,
) {
    let every = interval(&config);
    let after = offline_after(&config, heartbeat_interval_s);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One node sweeps for the cluster (docs/scale-out.md): the others keep trying the lease
    // and take over within one interval of the holder's death.
    let mut lease = store.cluster_lease(LEASE);
    let mut held = false;
    loop {
        tick.tick().await;
        if watchdog.stalled() {
            continue;
        }
        if !crate::store::hold_lease(lease.as_mut(), &mut held, LEASE).await {
            continue;
        }
        match store.sweep_offline(crate::api::receiver_now(), after).await {
            Ok(offline) => {
                for station in offline {
                    tracing::warn!(%station, "station offline: trouble notification queued");
                }
            }
            Err(e) => tracing::warn!(error = %e, "supervision sweep failed; retrying"),
        }
    }
}
