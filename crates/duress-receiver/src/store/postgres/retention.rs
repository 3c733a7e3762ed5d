//! Retention purges on PostgreSQL, one transaction. **Running once in a cluster**: the run's
//! row in `sweep_runs` is claimed first with an upsert that updates it only when the last run
//! is older than `min_interval`; a second receiver purging at the same moment waits on that
//! row lock, then re-reads the committed row (READ COMMITTED re-checks an upsert's `WHERE`
//! against the newest version) and finds the purge done — the same row-claim style as the
//! supervision sweep's, with no lease to expire. The incidents to delete are locked
//! `FOR UPDATE SKIP LOCKED`, so one an officer is reopening at that instant is simply kept for
//! the next run. Lock order: the run's row, incident rows, then the deletes, and the audit log
//! lock last (`log.rs`).

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{PostgresStore, log, ms};
use crate::store::retention::{
    self, PurgeCounts, PurgeOutcome, PurgeRequest, RetentionStore, SWEEP_NAME,
};
use crate::store::{StoreFuture, StoreResult};

/// Settled notifications of `reason` (no incident) created before $1.
fn settled(reason: &str) -> String {
    format!(
        "SELECT id FROM notifications WHERE reason = '{reason}' AND incident_id IS NULL
           AND status <> 'pending' AND created_at < $1"
    )
}

async fn delete(conn: &mut PgConnection, sql: &str, cutoff: OffsetDateTime) -> StoreResult<u64> {
    // Only this module's own constant SQL (with literal reasons) reaches here, never input.
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(cutoff)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

async fn delete_ids(conn: &mut PgConnection, sql: &str, ids: &[Uuid]) -> StoreResult<u64> {
    // Only this module's own constant SQL (with literal reasons) reaches here, never input.
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(ids)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

async fn delete_all(conn: &mut PgConnection, request: &PurgeRequest) -> StoreResult<PurgeCounts> {
    let mut n = PurgeCounts::default();
    let c = &request.cutoffs;
    if let Some(cutoff) = c.resolved_incidents.map(ms) {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT i.incident_id FROM incidents i
             WHERE i.status = 'closed' AND COALESCE(i.resolved_at, i.opened_at) < $1
               AND NOT EXISTS (SELECT 1 FROM notifications n
                               WHERE n.incident_id = i.incident_id AND n.status = 'pending')
             ORDER BY i.incident_id
             FOR UPDATE OF i SKIP LOCKED",
        )
        .bind(cutoff)
        .fetch_all(&mut *conn)
        .await?;
        if !ids.is_empty() {
            n.acks += delete_ids(
                conn,
                "DELETE FROM event_acks WHERE event_id IN
                   (SELECT id FROM events WHERE incident_id = ANY($1))",
                &ids,
            )
            .await?;
            n.incident_events +=
                delete_ids(conn, "DELETE FROM events WHERE incident_id = ANY($1)", &ids).await?;
            n.timeline_entries += delete_ids(
                conn,
                "DELETE FROM incident_timeline WHERE incident_id = ANY($1)",
                &ids,
            )
            .await?;
            n.notification_attempts += delete_ids(
                conn,
                "DELETE FROM notification_attempts WHERE notification_id IN
                   (SELECT id FROM notifications WHERE incident_id = ANY($1))",
                &ids,
            )
            .await?;
            n.notifications += delete_ids(
                conn,
                "DELETE FROM notifications WHERE incident_id = ANY($1)",
                &ids,
            )
            .await?;
            n.live_rows += delete_ids(
                conn,
                "DELETE FROM console_events WHERE incident_id = ANY($1)",
                &ids,
            )
            .await?;
            // The joins go with their incidents (ON DELETE CASCADE says so too).
            delete_ids(
                conn,
                "DELETE FROM incident_joins WHERE incident_id = ANY($1)",
                &ids,
            )
            .await?;
            n.incidents += delete_ids(
                conn,
                "DELETE FROM incidents WHERE incident_id = ANY($1)",
                &ids,
            )
            .await?;
        }
    }
    if let Some(cutoff) = c.test_events.map(ms) {
        let tests = "SELECT id FROM events
                     WHERE kind = 'test' AND incident_id IS NULL AND received_at < $1";
        n.acks += delete(
            conn,
            &format!("DELETE FROM event_acks WHERE event_id IN ({tests})"),
            cutoff,
        )
        .await?;
        n.test_events += delete(
            conn,
            &format!("DELETE FROM events WHERE id IN ({tests})"),
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
    if let Some(cutoff) = c.heartbeat_history.map(ms) {
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
            "DELETE FROM console_events WHERE incident_id IS NULL AND at < $1",
            cutoff,
        )
        .await?;
    }
    if let Some(cutoff) = c.sessions.map(ms) {
        n.sessions += delete(conn, "DELETE FROM sessions WHERE expires_at < $1", cutoff).await?;
    }
    Ok(n)
}

impl PostgresStore {
    async fn purge_impl(&self, request: PurgeRequest) -> StoreResult<PurgeOutcome> {
        let now = ms(request.now);
        let mut tx = self.begin().await?;
        // Claim the run: updates (and locks) the row only when the last run is old enough.
        let not_after = request.min_interval.map(|i| {
            now.checked_sub(time::Duration::try_from(i).unwrap_or(time::Duration::MAX))
                .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        });
        let claimed: Option<OffsetDateTime> = sqlx::query_scalar(
            "INSERT INTO sweep_runs (name, last_run_at) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET last_run_at = excluded.last_run_at
               WHERE $3::timestamptz IS NULL OR sweep_runs.last_run_at <= $3
             RETURNING last_run_at",
        )
        .bind(SWEEP_NAME)
        .bind(now)
        .bind(not_after)
        .fetch_optional(&mut *tx)
        .await?;
        if claimed.is_none() {
            let last: OffsetDateTime =
                sqlx::query_scalar("SELECT last_run_at FROM sweep_runs WHERE name = $1")
                    .bind(SWEEP_NAME)
                    .fetch_one(&mut *tx)
                    .await?;
            tx.rollback().await?;
            return Ok(PurgeOutcome::NotDue { last_run_at: last });
        }
        let counts = delete_all(&mut tx, &request).await?;
        if request.dry_run {
            tx.rollback().await?;
            return Ok(PurgeOutcome::DryRun(counts));
        }
        let detail = format!(
            "{}; {}",
            counts.detail(),
            retention::cutoffs_detail(&request.cutoffs)
        );
        let audit_id = log::audit(
            &mut tx,
            &self.audit_key,
            now,
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

impl RetentionStore for PostgresStore {
    fn purge(&self, request: PurgeRequest) -> StoreFuture<'_, PurgeOutcome> {
        Box::pin(self.purge_impl(request))
    }
}
