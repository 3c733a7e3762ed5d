//! Retention purges on SQLite: one `BEGIN IMMEDIATE` transaction (SQLite's single write lock,
//! so no other writer — nor another receiver process on the same file — runs between the
//! check of `sweep_runs` and the deletes), every category deleted children first (foreign keys
//! are on), the audit entry last.

use sqlx::Row as _;
use sqlx::SqliteConnection;

use super::{SqliteStore, log};
use crate::store::retention::{
    self, PurgeCounts, PurgeOutcome, PurgeRequest, RetentionStore, SWEEP_NAME,
};
use crate::store::{StoreFuture, StoreResult, format_ts, parse_ts};

/// Resolved incidents resolved before ?1 whose notifications all settled.
const OLD_INCIDENTS: &str = "SELECT i.incident_id FROM incidents i
    WHERE i.status = 'closed' AND COALESCE(i.resolved_at, i.opened_at) < ?1
      AND NOT EXISTS (SELECT 1 FROM notifications n
                      WHERE n.incident_id = i.incident_id AND n.status = 'pending')";

/// Test events received before ?1 (a test never belongs to an incident).
const OLD_TESTS: &str =
    "SELECT id FROM events WHERE kind = 'test' AND incident_id IS NULL AND received_at < ?1";

/// Settled notifications of `reason` (no incident) created before ?1.
fn settled(reason: &str) -> String {
    format!(
        "SELECT id FROM notifications WHERE reason = '{reason}' AND incident_id IS NULL
           AND status <> 'pending' AND created_at < ?1"
    )
}

/// Runs one `DELETE` bound to `cutoff`; returns how many rows it deleted.
async fn delete(conn: &mut SqliteConnection, sql: &str, cutoff: &str) -> StoreResult<u64> {
    // Only this module's own constant SQL (with literal reasons) reaches here, never input.
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(cutoff)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

/// Deletes every category with a cutoff; the caller's transaction commits or rolls back.
pub(super) async fn delete_all(
    conn: &mut SqliteConnection,
    request: &PurgeRequest,
) -> StoreResult<PurgeCounts> {
    let mut n = PurgeCounts::default();
    let c = &request.cutoffs;
    if let Some(cutoff) = c.resolved_incidents.map(format_ts) {
        let cutoff = cutoff.as_str();
        n.acks += delete(
            conn,
            &format!(
                "DELETE FROM event_acks WHERE event_id IN
                   (SELECT id FROM events WHERE incident_id IN ({OLD_INCIDENTS}))"
            ),
            cutoff,
        )
        .await?;
        n.incident_events += delete(
            conn,
            &format!("DELETE FROM events WHERE incident_id IN ({OLD_INCIDENTS})"),
            cutoff,
        )
        .await?;
        n.timeline_entries += delete(
            conn,
            &format!("DELETE FROM incident_timeline WHERE incident_id IN ({OLD_INCIDENTS})"),
            cutoff,
        )
        .await?;
        n.notification_attempts += delete(
            conn,
            &format!(
                "DELETE FROM notification_attempts WHERE notification_id IN
                   (SELECT id FROM notifications WHERE incident_id IN ({OLD_INCIDENTS}))"
            ),
            cutoff,
        )
        .await?;
        n.notifications += delete(
            conn,
            &format!("DELETE FROM notifications WHERE incident_id IN ({OLD_INCIDENTS})"),
            cutoff,
        )
        .await?;
        n.live_rows += delete(
            conn,
            &format!("DELETE FROM console_events WHERE incident_id IN ({OLD_INCIDENTS})"),
            cutoff,
        )
        .await?;
        // The joins go with their incidents (ON DELETE CASCADE says so too; explicit here, as
        // for every other table, so the purge does not depend on the foreign-key pragma).
        delete(
            conn,
            &format!("DELETE FROM incident_joins WHERE incident_id IN ({OLD_INCIDENTS})"),
            cutoff,
        )
        .await?;
        n.incidents += delete(
            conn,
            &format!("DELETE FROM incidents WHERE incident_id IN ({OLD_INCIDENTS})"),
            cutoff,
        )
        .await?;
    }
    if let Some(cutoff) = c.test_events.map(format_ts) {
        let cutoff = cutoff.as_str();
        n.acks += delete(
            conn,
            &format!("DELETE FROM event_acks WHERE event_id IN ({OLD_TESTS})"),
            cutoff,
        )
        .await?;
        n.test_events += delete(
            conn,
            &format!("DELETE FROM events WHERE id IN ({OLD_TESTS})"),
            cutoff,
        )
        .await?;
        n.notification_attempts += delete(
            conn,
            &format!(
                "DELETE FROM notification_attempts WHERE notification_id IN ({})",
                settled("test")
            ),
            cutoff,
        )
        .await?;
        n.notifications += delete(
            conn,
            &format!(
                "DELETE FROM notifications WHERE id IN ({})",
                settled("test")
            ),
            cutoff,
        )
        .await?;
    }
    if let Some(cutoff) = c.heartbeat_history.map(format_ts) {
        let cutoff = cutoff.as_str();
        n.notification_attempts += delete(
            conn,
            &format!(
                "DELETE FROM notification_attempts WHERE notification_id IN ({})",
                settled("offline")
            ),
            cutoff,
        )
        .await?;
        n.notifications += delete(
            conn,
            &format!(
                "DELETE FROM notifications WHERE id IN ({})",
                settled("offline")
            ),
            cutoff,
        )
        .await?;
        n.live_rows += delete(
            conn,
            "DELETE FROM console_events WHERE incident_id IS NULL AND at < ?1",
            cutoff,
        )
        .await?;
    }
    if let Some(cutoff) = c.sessions.map(format_ts) {
        n.sessions += delete(conn, "DELETE FROM sessions WHERE expires_at < ?1", &cutoff).await?;
    }
    Ok(n)
}

impl SqliteStore {
    async fn purge_impl(&self, request: PurgeRequest) -> StoreResult<PurgeOutcome> {
        let mut tx = self.begin_write().await?;
        if let Some(interval) = request.min_interval {
            let last: Option<String> =
                sqlx::query("SELECT last_run_at FROM sweep_runs WHERE name = ?1")
                    .bind(SWEEP_NAME)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| row.try_get("last_run_at"))
                    .transpose()?;
            if let Some(last) = last.map(|t| parse_ts(&t)).transpose()? {
                let interval = time::Duration::try_from(interval).unwrap_or(time::Duration::MAX);
                if last > request.now.checked_sub(interval).unwrap_or(last) {
                    return Ok(PurgeOutcome::NotDue { last_run_at: last });
                }
            }
        }
        let counts = delete_all(&mut tx, &request).await?;
        if request.dry_run {
            tx.rollback().await?;
            return Ok(PurgeOutcome::DryRun(counts));
        }
        sqlx::query(
            "INSERT INTO sweep_runs (name, last_run_at) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET last_run_at = excluded.last_run_at",
        )
        .bind(SWEEP_NAME)
        .bind(format_ts(request.now))
        .execute(&mut *tx)
        .await?;
        let detail = format!(
            "{}; {}",
            counts.detail(),
            retention::cutoffs_detail(&request.cutoffs)
        );
        let audit_id = log::audit(
            &mut tx,
            &self.audit_key,
            request.now,
            &request.actor,
            retention::AUDIT_ACTION,
            SWEEP_NAME,
            &detail,
        )
        .await?;
        tx.commit().await?;
        Ok(PurgeOutcome::Purged { counts, audit_id })
    }
}

impl RetentionStore for SqliteStore {
    fn purge(&self, request: PurgeRequest) -> StoreFuture<'_, PurgeOutcome> {
        Box::pin(self.purge_impl(request))
    }
}
