//! Escalation: an open incident nobody claimed within `escalate_after` (default 90 s, the
//! NFPA 72 operator-handling time) is marked escalated, with a timeline entry, an audit entry
//! and a console event in one transaction. Every board then shows it escalated and changes its
//! sound. Paging people away from the console is the escalation ladders' work (`notify/`),
//! queued in the same transaction as the incident.

use std::sync::Arc;
use std::time::Duration;

use super::Console;
use crate::store::StoreResult;

/// How often due incidents are looked for.
const TICK: Duration = Duration::from_secs(1);

/// Runs until aborted.
pub async fn run(console: Arc<Console>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = escalate_due(&console).await {
            tracing::warn!(error = %e, "escalation check failed; retrying");
        }
    }
}

/// Escalates every incident that is due now; returns how many.
pub async fn escalate_due(console: &Console) -> StoreResult<usize> {
    let escalated = console
        .store
        .escalate_unclaimed(console.settings.escalate_after)
        .await?;
    if escalated > 0 {
        tracing::warn!(
            count = escalated,
            "incidents escalated: nobody claimed them in time"
        );
    }
    Ok(escalated)
}
