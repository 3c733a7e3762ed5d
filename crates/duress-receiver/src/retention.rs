//! Retention: the `[retention]` table of the configuration file turned into cutoffs, the
//! daily purge `serve` runs, and what `duress-receiver purge` runs (docs/operations.md,
//! "Retention"). What is deleted, and how, is the store's (`store::retention`).
//!
//! **Why incidents are kept at least 30 days.** An event's id is the receiver's only memory
//! that it was received (the dedupe key), and an agent keeps an unacknowledged event for as
//! long as it takes: an agent whose acknowledgement was lost and that then stayed away longer
//! than the purge window would, on return, raise an already resolved alarm again. A floor of a
//! month makes that need a station gone for a month with an answer lost on the way; such a
//! repeat arrives flagged delayed (its occurrence time is weeks old), never lost.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::config::RetentionConfig;
use crate::store::{PurgeCutoffs, PurgeOutcome, PurgeRequest, Store};

pub use crate::config::MIN_INCIDENT_DAYS;

/// The actor of the daily purge in the audit log.
pub const SYSTEM_ACTOR: &str = "system:retention";

/// How often `serve` looks whether a purge is due.
pub const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// A purge runs when none ran (on any receiver of the store) for this long: with hourly
/// checks, once a day.
pub const RUN_EVERY: Duration = Duration::from_secs(23 * 3600);

/// The cutoffs of `r` at `now`: each category older than its days (`None`: kept).
pub fn cutoffs(r: &RetentionConfig, now: OffsetDateTime) -> PurgeCutoffs {
    let before =
        |days: Option<u32>| days.and_then(|d| now.checked_sub(time::Duration::days(i64::from(d))));
    PurgeCutoffs {
        resolved_incidents: before(r.resolved_incidents_days),
        test_events: before(r.test_events_days),
        heartbeat_history: before(r.heartbeat_history_days),
        sessions: before(r.sessions_days),
    }
}

/// One purge of `store` under `r` now.
pub async fn purge_once(
    store: &dyn Store,
    r: &RetentionConfig,
    actor: &str,
    min_interval: Option<Duration>,
    dry_run: bool,
) -> crate::store::StoreResult<PurgeOutcome> {
    let now = crate::clock::receiver_now();
    store
        .purge(PurgeRequest {
            now,
            cutoffs: cutoffs(r, now),
            min_interval,
            dry_run,
            actor: actor.to_owned(),
        })
        .await
}

/// The daily purge of `serve`: runs until aborted. Checks hourly (the first check at start)
/// and purges when no receiver of this store purged within [`RUN_EVERY`]. A failed purge
/// changed nothing (one transaction) and is retried at the next check.
pub async fn run(store: Arc<dyn Store>, config: RetentionConfig) {
    if cutoffs(&config, crate::clock::receiver_now()).is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match purge_once(
            store.as_ref(),
            &config,
            SYSTEM_ACTOR,
            Some(RUN_EVERY),
            false,
        )
        .await
        {
            Ok(PurgeOutcome::Purged { counts, audit_id }) => {
                tracing::info!(audit_id, counts = %counts.detail(), "retention purge done");
            }
            Ok(PurgeOutcome::NotDue { last_run_at }) => {
                tracing::debug!(%last_run_at, "retention purge not due");
            }
            Ok(PurgeOutcome::DryRun(_)) => {}
            Err(e) => tracing::warn!(error = %e, "retention purge failed; retrying in an hour"),
        }
    }
}
