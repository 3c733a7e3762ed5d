//! The notifier outbox on SQLite. Rows are written by the group-commit writer with the event
//! that causes them (`writer::enqueue`); here the delivery worker takes and settles them. Every
//! write takes SQLite's one write lock (`BEGIN IMMEDIATE`), so of two takers (two worker
//! tasks) each row goes to one.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;
use uuid::Uuid;

use super::SqliteStore;
use super::rows::{from_json, parse_uuid};
use crate::store::{
    AttemptOutcome, AttemptRecord, NewAttempt, NotificationFacts, NotificationRecord,
    NotifyPlanner, OutboxItem, OutboxStore, PlannedNotification, StoreError, StoreFuture,
    StoreResult, format_ts, parse_ts,
};

/// Pending rows whose ladder a claim or resolve has ended.
const STOP_CLAIMED: &str = "UPDATE notifications SET status = 'stopped', done_at = ?1,
        lease_owner = NULL, lease_until = NULL
     WHERE status = 'pending' AND stop_on_claim = 1 AND incident_id IN
        (SELECT incident_id FROM incidents WHERE claimed_by IS NOT NULL OR status <> 'open')";

fn u32_of(row: &SqliteRow, column: &str) -> StoreResult<u32> {
    let v: i64 = row.try_get(column)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{column} out of range")))
}

impl SqliteStore {
    async fn take_due_impl(
        &self,
        owner: &str,
        now: OffsetDateTime,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<OutboxItem>> {
        let at = format_ts(now);
        // A plain read first, so the common case (nothing to do) takes no write lock.
        let work: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notifications n WHERE n.status = 'pending' AND (
                (n.next_attempt_at <= ?1 AND (n.lease_until IS NULL OR n.lease_until <= ?1))
                OR (n.stop_on_claim = 1 AND n.incident_id IN (SELECT incident_id FROM incidents
                    WHERE claimed_by IS NOT NULL OR status <> 'open')))",
        )
        .bind(&at)
        .fetch_one(&self.pool)
        .await?;
        if work == 0 {
            return Ok(Vec::new());
        }
        let until = format_ts(crate::store::outbox::due_at(now, lease));
        let mut tx = self.begin_write().await?;
        sqlx::query(STOP_CLAIMED)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "SELECT n.id, n.channel, n.ladder, n.step, n.repeat_index, n.attempts, n.payload_json,
                    i.press_count
             FROM notifications n LEFT JOIN incidents i ON i.incident_id = n.incident_id
             WHERE n.status = 'pending' AND n.next_attempt_at <= ?1
               AND (n.lease_until IS NULL OR n.lease_until <= ?1)
             ORDER BY n.next_attempt_at, n.id LIMIT ?2",
        )
        .bind(&at)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            sqlx::query(
                "UPDATE notifications SET lease_owner = ?1, lease_until = ?2 WHERE id = ?3",
            )
            .bind(owner)
            .bind(&until)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            items.push(OutboxItem {
                id: parse_uuid(&id)?,
                channel: row.try_get("channel")?,
                ladder: row.try_get("ladder")?,
                step: u32_of(row, "step")?,
                repeat_index: u32_of(row, "repeat_index")?,
                attempts: u32_of(row, "attempts")?,
                facts: from_json("payload_json", &row.try_get::<String, _>("payload_json")?)?,
                press_count: row.try_get("press_count")?,
            });
        }
        tx.commit().await?;
        Ok(items)
    }

    async fn record_attempt_impl(
        &self,
        id: Uuid,
        owner: &str,
        attempt: NewAttempt,
    ) -> StoreResult<bool> {
        let at = format_ts(attempt.at);
        let id = id.to_string();
        let mut tx = self.begin_write().await?;
        let outcome = match attempt.outcome {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Accepted => "accepted",
            AttemptOutcome::Error { .. } => "error",
        };
        sqlx::query(
            "INSERT INTO notification_attempts (notification_id, at, outcome, http_status, error)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&at)
        .bind(outcome)
        .bind(attempt.http_status.map(i64::from))
        .bind(&attempt.error)
        .execute(&mut *tx)
        .await?;
        let done =
            match attempt.outcome {
                AttemptOutcome::Delivered | AttemptOutcome::Accepted => sqlx::query(
                    "UPDATE notifications SET status = ?1, done_at = ?2, attempts = attempts + 1,
                            lease_owner = NULL, lease_until = NULL
                     WHERE id = ?3 AND lease_owner = ?4 AND status = 'pending'",
                )
                .bind(outcome)
                .bind(&at)
                .bind(&id)
                .bind(owner)
                .execute(&mut *tx)
                .await?,
                AttemptOutcome::Error {
                    retry_at: Some(retry),
                } => {
                    sqlx::query(
                        "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = ?1,
                            lease_owner = NULL, lease_until = NULL
                     WHERE id = ?2 AND lease_owner = ?3 AND status = 'pending'",
                    )
                    .bind(format_ts(retry))
                    .bind(&id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?
                }
                AttemptOutcome::Error { retry_at: None } => {
                    sqlx::query(
                        "UPDATE notifications SET status = 'failed', done_at = ?1,
                            attempts = attempts + 1, lease_owner = NULL, lease_until = NULL
                     WHERE id = ?2 AND lease_owner = ?3 AND status = 'pending'",
                    )
                    .bind(&at)
                    .bind(&id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?
                }
            };
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn notifications_impl(
        &self,
        incident: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<NotificationRecord>> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id, channel, ladder, step, repeat_index, status, due_at FROM notifications
             WHERE (?1 IS NULL OR incident_id = ?1) ORDER BY created_at, due_at, id LIMIT ?2",
        )
        .bind(incident.map(|i| i.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let attempts = sqlx::query(
                "SELECT at, outcome, http_status, error FROM notification_attempts
                 WHERE notification_id = ? ORDER BY id",
            )
            .bind(&id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|a| {
                Ok(AttemptRecord {
                    at: parse_ts(&a.try_get::<String, _>("at")?)?,
                    outcome: a.try_get("outcome")?,
                    http_status: a
                        .try_get::<Option<i64>, _>("http_status")?
                        .and_then(|s| u16::try_from(s).ok()),
                    error: a.try_get("error")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
            out.push(NotificationRecord {
                id: parse_uuid(&id)?,
                channel: row.try_get("channel")?,
                ladder: row.try_get("ladder")?,
                step: u32_of(row, "step")?,
                repeat_index: u32_of(row, "repeat_index")?,
                status: row.try_get("status")?,
                due_at: parse_ts(&row.try_get::<String, _>("due_at")?)?,
                attempts,
            });
        }
        Ok(out)
    }
}

/// Writes one outbox row per planned notification, in a pool transaction (the writer thread
/// has its own rusqlite copy, `writer::enqueue`).
async fn enqueue(
    tx: &mut sqlx::SqliteConnection,
    facts: &NotificationFacts,
    planned: &[PlannedNotification],
) -> StoreResult<()> {
    let payload = super::rows::to_json(facts);
    for p in planned {
        sqlx::query(
            "INSERT INTO notifications (id, incident_id, device_id, reason, channel, ladder, step,
                                        repeat_index, stop_on_claim, payload_json, created_at,
                                        due_at, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(facts.incident_id.map(|i| i.to_string()))
        .bind(&facts.device_id)
        .bind(&facts.reason)
        .bind(&p.channel)
        .bind(&p.ladder)
        .bind(i64::from(p.step))
        .bind(i64::from(p.repeat_index))
        .bind(p.stop_on_claim)
        .bind(&payload)
        .bind(format_ts(facts.at))
        .bind(format_ts(crate::store::outbox::due_at(facts.at, p.delay)))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// On resolve, in the resolve's transaction: what the planner plans for the incident's
/// `resolved` change (a DC-09 channel's restore), from the facts its alarm notified with.
/// Nothing for an incident that notified nothing.
pub(super) async fn enqueue_resolved(
    tx: &mut sqlx::SqliteConnection,
    planner: &crate::store::PlannerSlot,
    incident: Uuid,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let key = incident.to_string();
    let payload: Option<String> = sqlx::query_scalar(
        "SELECT payload_json FROM notifications WHERE incident_id = ? AND reason = 'incident'
         ORDER BY created_at, id LIMIT 1",
    )
    .bind(&key)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(payload) = payload else {
        return Ok(());
    };
    let facts = crate::store::outbox::resolved_facts(from_json("payload_json", &payload)?, now);
    let channels = |reason: &'static str| {
        sqlx::query_scalar::<_, String>(
            "SELECT DISTINCT channel FROM notifications WHERE incident_id = ? AND reason = ?",
        )
        .bind(key.clone())
        .bind(reason)
    };
    let alarmed = channels("incident").fetch_all(&mut *tx).await?;
    let restored = channels("resolved").fetch_all(&mut *tx).await?;
    let planned =
        crate::store::outbox::restores_to_enqueue(planner.plan(&facts), &alarmed, &restored);
    enqueue(tx, &facts, &planned).await
}

impl SqliteStore {
    async fn sweep_impl(
        &self,
        now: OffsetDateTime,
        offline_after: Duration,
    ) -> StoreResult<Vec<String>> {
        let at = format_ts(now);
        let cutoff = format_ts(now - time::Duration::try_from(offline_after).unwrap_or_default());
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sweep_runs (name, last_run_at) VALUES ('offline', ?1)
             ON CONFLICT (name) DO UPDATE SET last_run_at = excluded.last_run_at",
        )
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM supervision_state WHERE device_id IN (SELECT d.device_id FROM devices d
               JOIN supervision_state s ON s.device_id = d.device_id
               WHERE d.status <> 'active' OR d.last_heartbeat_at > s.offline_since)",
        )
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "SELECT device_id, last_heartbeat_at, location_json, host_json FROM devices
             WHERE status = 'active' AND last_heartbeat_at IS NOT NULL
               AND last_heartbeat_at <= ?1
               AND device_id NOT IN (SELECT device_id FROM supervision_state)
             ORDER BY device_id",
        )
        .bind(&cutoff)
        .fetch_all(&mut *tx)
        .await?;
        let mut offline = Vec::with_capacity(rows.len());
        for row in &rows {
            let device_id: String = row.try_get("device_id")?;
            let since: String = row.try_get("last_heartbeat_at")?;
            let facts = crate::store::outbox::offline_facts(
                &device_id,
                from_json("location_json", &row.try_get::<String, _>("location_json")?)?,
                from_json("host_json", &row.try_get::<String, _>("host_json")?)?,
                now,
            );
            // Outside its protection schedule: no outage yet (a later sweep inside the
            // schedule records and notifies it if the station is still silent).
            if !self.planner.supervised(&facts) {
                continue;
            }
            sqlx::query(
                "INSERT INTO supervision_state (device_id, offline_since, notified_at)
                 VALUES (?1, ?2, ?3)",
            )
            .bind(&device_id)
            .bind(&since)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
            enqueue(&mut tx, &facts, &self.planner.plan(&facts)).await?;
            offline.push(device_id);
        }
        tx.commit().await?;
        Ok(offline)
    }

    async fn last_sweep_impl(&self) -> StoreResult<Option<OffsetDateTime>> {
        let at: Option<String> =
            sqlx::query_scalar("SELECT last_run_at FROM sweep_runs WHERE name = 'offline'")
                .fetch_optional(&self.pool)
                .await?;
        at.map(|t| parse_ts(&t)).transpose()
    }

    async fn siem_position_impl(&self, sink: &str) -> StoreResult<(i64, i64)> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT audit_id, live_id FROM siem_cursors WHERE sink = ?1")
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
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (sink) DO UPDATE SET
                audit_id = MAX(siem_cursors.audit_id, excluded.audit_id),
                live_id = MAX(siem_cursors.live_id, excluded.live_id),
                updated_at = excluded.updated_at",
        )
        .bind(sink)
        .bind(audit_id)
        .bind(live_id)
        .bind(format_ts(at))
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

impl OutboxStore for SqliteStore {
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
