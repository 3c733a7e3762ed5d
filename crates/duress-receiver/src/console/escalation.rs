//! Escalation: an open incident nobody claimed within `escalate_after` (default 90 s, the
//! NFPA 72 operator-handling time) is marked escalated, with a timeline entry, an audit entry
//! and a console event in one transaction. Every board then shows it escalated and changes its
//! sound. (Paging the next notification tier comes with the notifier outbox.)

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row as _;

use super::{Console, audit, live};
use crate::api::receiver_now;
use crate::store::format_ts;

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
pub async fn escalate_due(console: &Console) -> Result<usize, sqlx::Error> {
    let now = receiver_now();
    let after = time::Duration::try_from(console.settings.escalate_after)
        .unwrap_or(time::Duration::seconds(90));
    let cutoff = format_ts(now - after);
    // A plain read first, so the common case (nothing due) takes no write lock.
    let due: Vec<String> = sqlx::query_scalar(
        "SELECT incident_id FROM incidents WHERE status = 'open' AND claimed_by IS NULL
         AND escalated_at IS NULL AND opened_at <= ?",
    )
    .bind(&cutoff)
    .fetch_all(&console.pool)
    .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut tx = console.pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut escalated = 0;
    let at = format_ts(now);
    for id in &due {
        // Re-checked under the write lock: it may have been claimed meanwhile.
        let done = sqlx::query(
            "UPDATE incidents SET escalated_at = ? WHERE incident_id = ? AND status = 'open'
             AND claimed_by IS NULL AND escalated_at IS NULL",
        )
        .bind(&at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            continue;
        }
        let label: String =
            sqlx::query("SELECT location_json FROM incidents WHERE incident_id = ?")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?
                .try_get::<String, _>("location_json")
                .map(|j| {
                    serde_json::from_str::<duress_core::Location>(&j)
                        .unwrap_or_default()
                        .display_label()
                })?;
        let text = format!(
            "Not claimed within {} s: escalated",
            console.settings.escalate_after.as_secs()
        );
        sqlx::query("INSERT INTO incident_timeline (incident_id, at, actor, kind, text) VALUES (?, ?, 'system', 'escalation', ?)")
            .bind(id)
            .bind(&at)
            .bind(&text)
            .execute(&mut *tx)
            .await?;
        audit::append(&mut tx, now, "system", "incident.escalate", id, &text).await?;
        live::record(
            &mut tx,
            now,
            "incident.escalation",
            uuid::Uuid::parse_str(id).ok(),
            &serde_json::json!({ "label": label }),
        )
        .await?;
        escalated += 1;
    }
    tx.commit().await?;
    if escalated > 0 {
        tracing::warn!(
            count = escalated,
            "incidents escalated: nobody claimed them in time"
        );
        console.wake.notify_one();
    }
    Ok(escalated)
}
