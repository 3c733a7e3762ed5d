//! The notifier outbox on PostgreSQL, shared by every receiver of a cluster. Rows are written
//! by ingest with the event that causes them ([`enqueue`]); a worker takes due rows with
//! `FOR UPDATE SKIP LOCKED` and leases them (`lease_owner`, `lease_until`) in the same
//! transaction, so while one receiver delivers a row no other takes it, and a row whose
//! receiver died is taken again once its lease ran out. Settling an attempt is conditional on
//! still holding the lease and on the row being pending: a recorded success is final.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row as _};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{PostgresStore, json, ms};
use crate::store::{
    AttemptOutcome, AttemptRecord, NewAttempt, NotificationFacts, NotificationRecord,
    NotifyPlanner, OutboxItem, OutboxStore, PlannedNotification, StoreError, StoreFuture,
    StoreResult,
};

/// Writes one outbox row per planned notification, in the caller's transaction.
pub(super) async fn enqueue(
    conn: &mut PgConnection,
    facts: &NotificationFacts,
    planned: &[PlannedNotification],
) -> StoreResult<()> {
    for p in planned {
        let due = ms(crate::store::outbox::due_at(facts.at, p.delay));
        sqlx::query(
            "INSERT INTO notifications (id, incident_id, device_id, reason, channel, ladder, step,
                                        repeat_index, stop_on_claim, payload_json, created_at,
                                        due_at, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
        )
        .bind(Uuid::now_v7())
        .bind(facts.incident_id)
        .bind(&facts.device_id)
        .bind(&facts.reason)
        .bind(&p.channel)
        .bind(&p.ladder)
        .bind(i32::try_from(p.step).unwrap_or(i32::MAX))
        .bind(i32::try_from(p.repeat_index).unwrap_or(i32::MAX))
        .bind(p.stop_on_claim)
        .bind(Json(facts))
        .bind(ms(facts.at))
        .bind(due)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// On resolve, in the resolve's transaction: what the planner plans for the incident's
/// `resolved` change (a DC-09 channel's restore), from the facts its alarm notified with.
/// Nothing for an incident that notified nothing.
pub(super) async fn enqueue_resolved(
    conn: &mut PgConnection,
    planner: &crate::store::PlannerSlot,
    incident: Uuid,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let row = sqlx::query(
        "SELECT payload_json FROM notifications WHERE incident_id = $1 AND reason = 'incident'
         ORDER BY created_at, id LIMIT 1",
    )
    .bind(incident)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let facts = crate::store::outbox::resolved_facts(json(&row, "payload_json")?, now);
    let channels = |reason: &'static str| {
        sqlx::query_scalar::<_, String>(
            "SELECT DISTINCT channel FROM notifications WHERE incident_id = $1 AND reason = $2",
        )
        .bind(incident)
        .bind(reason)
    };
    let alarmed = channels("incident").fetch_all(&mut *conn).await?;
    let restored = channels("resolved").fetch_all(&mut *conn).await?;
    let planned =
        crate::store::outbox::restores_to_enqueue(planner.plan(&facts), &alarmed, &restored);
    enqueue(conn, &facts, &planned).await
}

fn u32_of(row: &PgRow, column: &str) -> StoreResult<u32> {
    let v: i32 = row.try_get(column)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{column} out of range")))
}

impl PostgresStore {
    async fn take_due_impl(
        &self,
        owner: &str,
        now: OffsetDateTime,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<OutboxItem>> {
        let now = ms(now);
        let until = ms(crate::store::outbox::due_at(now, lease));
        let mut tx = self.begin().await?;
        // Ladder rows a claim or resolve ended. SKIP LOCKED: a row another receiver is taking
        // right now is left to it (it stops it in its own transaction).
        sqlx::query(
            "UPDATE notifications SET status = 'stopped', done_at = $1, lease_owner = NULL,
                    lease_until = NULL
             WHERE id IN (SELECT n.id FROM notifications n JOIN incidents i
                            ON i.incident_id = n.incident_id
                          WHERE n.status = 'pending' AND n.stop_on_claim
                            AND (i.claimed_by IS NOT NULL OR i.status <> 'open')
                          FOR UPDATE OF n SKIP LOCKED)",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "WITH due AS (
                SELECT id FROM notifications
                WHERE status = 'pending' AND next_attempt_at <= $1
                  AND (lease_until IS NULL OR lease_until <= $1)
                ORDER BY next_attempt_at, id LIMIT $2
                FOR UPDATE SKIP LOCKED)
             UPDATE notifications n SET lease_owner = $3, lease_until = $4
             FROM due WHERE n.id = due.id
             RETURNING n.id, n.channel, n.ladder, n.step, n.repeat_index, n.attempts,
                       n.payload_json, n.next_attempt_at,
                       (SELECT press_count FROM incidents i WHERE i.incident_id = n.incident_id)
                         AS press_count",
        )
        .bind(now)
        .bind(i64::from(limit))
        .bind(owner)
        .bind(until)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            items.push((
                row.try_get::<OffsetDateTime, _>("next_attempt_at")?,
                OutboxItem {
                    id: row.try_get("id")?,
                    channel: row.try_get("channel")?,
                    ladder: row.try_get("ladder")?,
                    step: u32_of(row, "step")?,
                    repeat_index: u32_of(row, "repeat_index")?,
                    attempts: u32_of(row, "attempts")?,
                    facts: json(row, "payload_json")?,
                    press_count: row.try_get("press_count")?,
                },
            ));
        }
        // RETURNING has no order of its own.
        items.sort_by_key(|(at, item)| (*at, item.id));
        Ok(items.into_iter().map(|(_, i)| i).collect())
    }

    async fn record_attempt_impl(
        &self,
        id: Uuid,
        owner: &str,
        attempt: NewAttempt,
    ) -> StoreResult<bool> {
        let at = ms(attempt.at);
        let outcome = match attempt.outcome {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Accepted => "accepted",
            AttemptOutcome::Error { .. } => "error",
        };
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO notification_attempts (notification_id, at, outcome, http_status, error)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(at)
        .bind(outcome)
        .bind(attempt.http_status.map(i32::from))
        .bind(&attempt.error)
        .execute(&mut *tx)
        .await?;
        let (status, next, done_at) = match attempt.outcome {
            AttemptOutcome::Delivered | AttemptOutcome::Accepted => (outcome, None, Some(at)),
            AttemptOutcome::Error {
                retry_at: Some(retry),
            } => ("pending", Some(ms(retry)), None),
            AttemptOutcome::Error { retry_at: None } => ("failed", None, Some(at)),
        };
        let done = sqlx::query(
            "UPDATE notifications SET status = $1,
                    next_attempt_at = COALESCE($2, next_attempt_at), done_at = $3,
                    attempts = attempts + 1, lease_owner = NULL, lease_until = NULL
             WHERE id = $4 AND lease_owner = $5 AND status = 'pending'",
        )
        .bind(status)
        .bind(next)
        .bind(done_at)
        .bind(id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn notifications_impl(
        &self,
        incident: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<NotificationRecord>> {
        // One snapshot for the rows and their attempts.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "SELECT id, channel, ladder, step, repeat_index, status, due_at FROM notifications
             WHERE ($1::uuid IS NULL OR incident_id = $1)
             ORDER BY created_at, due_at, id LIMIT $2",
        )
        .bind(incident)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: Uuid = row.try_get("id")?;
            let attempts = sqlx::query(
                "SELECT at, outcome, http_status, error FROM notification_attempts
                 WHERE notification_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|a| {
                Ok(AttemptRecord {
                    at: a.try_get("at")?,
                    outcome: a.try_get("outcome")?,
                    http_status: a
                        .try_get::<Option<i32>, _>("http_status")?
                        .and_then(|s| u16::try_from(s).ok()),
                    error: a.try_get("error")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
            out.push(NotificationRecord {
                id,
                channel: row.try_get("channel")?,
                ladder: row.try_get("ladder")?,
                step: u32_of(row, "step")?,
                repeat_index: u32_of(row, "repeat_index")?,
                status: row.try_get("status")?,
                due_at: row.try_get("due_at")?,
                attempts,
            });
        }
        tx.commit().await?;
        Ok(out)
    }
}

impl PostgresStore {
    async fn sweep_impl(
        &self,
        now: OffsetDateTime,
        offline_after: Duration,
    ) -> StoreResult<Vec<String>> {
        let now = ms(now);
        let cutoff = now - time::Duration::try_from(offline_after).unwrap_or_default();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO sweep_runs (name, last_run_at) VALUES ('offline', $1)
             ON CONFLICT (name) DO UPDATE SET last_run_at = GREATEST(sweep_runs.last_run_at,
                                                                      excluded.last_run_at)",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM supervision_state s USING devices d
             WHERE s.device_id = d.device_id
               AND (d.status <> 'active' OR d.last_heartbeat_at > s.offline_since)",
        )
        .execute(&mut *tx)
        .await?;
        // Two receivers sweeping at once: the supervision_state primary key lets one insert per
        // outage (ON CONFLICT DO NOTHING RETURNING), and only the inserter enqueues.
        let rows = sqlx::query(
            "SELECT device_id, last_heartbeat_at, location_json, host_json FROM devices
             WHERE status = 'active' AND last_heartbeat_at IS NOT NULL
               AND last_heartbeat_at <= $1
               AND device_id NOT IN (SELECT device_id FROM supervision_state)
             ORDER BY device_id",
        )
        .bind(cutoff)
        .fetch_all(&mut *tx)
        .await?;
        let mut offline = Vec::with_capacity(rows.len());
        for row in &rows {
            let device_id: String = row.try_get("device_id")?;
            let since: OffsetDateTime = row.try_get("last_heartbeat_at")?;
            let facts = crate::store::outbox::offline_facts(
                &device_id,
                json(row, "location_json")?,
                json(row, "host_json")?,
                now,
            );
            // Outside its protection schedule: no outage yet (a later sweep inside the
            // schedule records and notifies it if the station is still silent).
            if !self.planner.supervised(&facts) {
                continue;
            }
            let won: Option<String> = sqlx::query_scalar(
                "INSERT INTO supervision_state (device_id, offline_since, notified_at)
                 VALUES ($1, $2, $3) ON CONFLICT (device_id) DO NOTHING RETURNING device_id",
            )
            .bind(&device_id)
            .bind(since)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if won.is_none() {
                continue;
            }
            enqueue(&mut tx, &facts, &self.planner.plan(&facts)).await?;
            offline.push(device_id);
        }
        tx.commit().await?;
        Ok(offline)
    }

    async fn last_sweep_impl(&self) -> StoreResult<Option<OffsetDateTime>> {
        Ok(
            sqlx::query_scalar("SELECT last_run_at FROM sweep_runs WHERE name = 'offline'")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn siem_position_impl(&self, sink: &str) -> StoreResult<(i64, i64)> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT audit_id, live_id FROM siem_cursors WHERE sink = $1")
                .bind(sink)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.unwrap_or((0, 0)))
    }

    async fn siem_advance_impl(
        &self,
        sink: &str,
        audit_id: i64,
        live_id: i64,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO siem_cursors (sink, audit_id, live_id, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (sink) DO UPDATE SET
                audit_id = GREATEST(siem_cursors.audit_id, excluded.audit_id),
                live_id = GREATEST(siem_cursors.live_id, excluded.live_id),
                updated_at = excluded.updated_at",
        )
        .bind(sink)
        .bind(audit_id)
        .bind(live_id)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn notification_counts_impl(&self) -> StoreResult<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, COUNT(*) FROM notifications GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(s, n)| (s, u64::try_from(n).unwrap_or(0)))
            .collect())
    }
}

impl OutboxStore for PostgresStore {
    fn sweep_offline(
        &self,
        now: OffsetDateTime,
        offline_after: Duration,
    ) -> StoreFuture<'_, Vec<String>> {
        Box::pin(self.sweep_impl(now, offline_after))
    }

    fn last_sweep(&self) -> StoreFuture<'_, Option<OffsetDateTime>> {
        Box::pin(self.last_sweep_impl())
    }

    fn notification_counts(&self) -> StoreFuture<'_, Vec<(String, u64)>> {
        Box::pin(self.notification_counts_impl())
    }

    fn audit_after(
        &self,
        after: i64,
        limit: u32,
    ) -> StoreFuture<'_, Vec<crate::store::AuditEntry>> {
        Box::pin(self.audit_after_impl(after, limit))
    }

    fn siem_position<'a>(&'a self, sink: &'a str) -> StoreFuture<'a, (i64, i64)> {
        Box::pin(self.siem_position_impl(sink))
    }

    fn siem_advance<'a>(
        &'a self,
        sink: &'a str,
        audit_id: i64,
        live_id: i64,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.siem_advance_impl(sink, audit_id, live_id, at))
    }

    fn set_planner(&self, planner: Option<Arc<dyn NotifyPlanner>>) {
        self.planner.set(planner);
    }

    fn take_due<'a>(
        &'a self,
        owner: &'a str,
        now: OffsetDateTime,
        lease: Duration,
        limit: u32,
    ) -> StoreFuture<'a, Vec<OutboxItem>> {
        Box::pin(self.take_due_impl(owner, now, lease, limit))
    }

    fn record_attempt<'a>(
        &'a self,
        id: Uuid,
        owner: &'a str,
        attempt: NewAttempt,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.record_attempt_impl(id, owner, attempt))
    }

    fn incident_notifications(
        &self,
        incident_id: Uuid,
    ) -> StoreFuture<'_, Vec<NotificationRecord>> {
        Box::pin(self.notifications_impl(Some(incident_id), 1000))
    }

    fn recent_notifications(&self, limit: u32) -> StoreFuture<'_, Vec<NotificationRecord>> {
        Box::pin(self.notifications_impl(None, limit))
    }
}
