//! Incidents: the read model, officers' actions and escalation.

use sqlx::{Row as _, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use super::listings::{self, event_record, incident_record, json, ts};
use super::{SqliteStore, log};
use crate::records::{EventRecord, ExportedEvent, IncidentEvent, IncidentRecord};
use crate::store::{
    ActionOutcome, BulkResolveOutcome, IncidentAction, IncidentDetail, IncidentFilter,
    IncidentStore, SelfTestRecord, StoreFuture, StoreResult, TimelineRecord, format_ts, parse_ts,
};

impl SqliteStore {
    async fn incident_impl(&self, id: Uuid) -> StoreResult<Option<IncidentDetail>> {
        let key = id.to_string();
        // One snapshot: the row, its events and its timeline agree.
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query("SELECT * FROM incidents WHERE incident_id = ?")
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let mut incident = incident_record(&row)?;
        let events =
            sqlx::query("SELECT * FROM events WHERE incident_id = ? ORDER BY received_at, rowid")
                .bind(&key)
                .fetch_all(&mut *tx)
                .await?;
        let entries = sqlx::query(
            "SELECT at, actor, kind, text FROM incident_timeline WHERE incident_id = ? ORDER BY id",
        )
        .bind(&key)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let events = events
            .iter()
            .map(|row| event_record(row).map(IncidentEvent::from))
            .collect::<StoreResult<Vec<_>>>()?;
        incident.set_events(events);
        let timeline = entries
            .iter()
            .map(|r| {
                Ok(TimelineRecord {
                    at: ts(r, "at")?,
                    actor: r.try_get("actor")?,
                    kind: r.try_get("kind")?,
                    text: r.try_get("text")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(IncidentDetail { incident, timeline }))
    }

    async fn apply_impl(
        &self,
        id: Uuid,
        actor: &str,
        action: IncidentAction,
    ) -> StoreResult<ActionOutcome> {
        let mut tx = self.begin_write().await?;
        let now = crate::clock::receiver_now();
        let outcome = apply_in(&mut tx, &self.audit_key, id, actor, &action, now).await?;
        if outcome == ActionOutcome::Changed {
            if matches!(action, IncidentAction::Resolve { .. }) {
                super::outbox::enqueue_resolved(&mut tx, &self.planner, id, now).await?;
            }
            tx.commit().await?;
            self.wake.notify_one();
        }
        Ok(outcome)
    }

    async fn resolve_incidents_impl(
        &self,
        ids: &[Uuid],
        actor: &str,
        disposition: &str,
        note: &str,
    ) -> StoreResult<Vec<(Uuid, BulkResolveOutcome)>> {
        let action = IncidentAction::Resolve {
            disposition: disposition.to_owned(),
            follow_up: note.to_owned(),
        };
        let mut outcomes: Vec<(Uuid, BulkResolveOutcome)> = Vec::with_capacity(ids.len());
        for &id in ids.iter().take(crate::store::MAX_BULK_RESOLVE) {
            if outcomes.iter().any(|(done, _)| *done == id) {
                continue;
            }
            let outcome = match self.resolve_one_of_bulk(id, actor, &action).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    tracing::warn!(incident = %id, error = %e, "bulk resolve: one incident failed");
                    BulkResolveOutcome::Failed
                }
            };
            outcomes.push((id, outcome));
        }
        Ok(outcomes)
    }

    /// One incident of a bulk resolve: its own write transaction, a single resolve unless
    /// [`crate::store::bulk_resolve_skip`] says otherwise.
    async fn resolve_one_of_bulk(
        &self,
        id: Uuid,
        actor: &str,
        action: &IncidentAction,
    ) -> StoreResult<BulkResolveOutcome> {
        let mut tx = self.begin_write().await?;
        let Some(row) =
            sqlx::query("SELECT status, claimed_by FROM incidents WHERE incident_id = ?")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(BulkResolveOutcome::NotFound);
        };
        let open = row.try_get::<String, _>("status")? == "open";
        let claimed_by: Option<String> = row.try_get("claimed_by")?;
        if let Some(skip) = crate::store::bulk_resolve_skip(open, claimed_by.as_deref(), actor) {
            return Ok(skip);
        }
        let now = crate::clock::receiver_now();
        Ok(
            match apply_in(&mut tx, &self.audit_key, id, actor, action, now).await? {
                ActionOutcome::Changed => {
                    super::outbox::enqueue_resolved(&mut tx, &self.planner, id, now).await?;
                    tx.commit().await?;
                    self.wake.notify_one();
                    BulkResolveOutcome::Resolved
                }
                ActionOutcome::NotFound => BulkResolveOutcome::NotFound,
                _ => BulkResolveOutcome::AlreadyResolved,
            },
        )
    }

    async fn resolve_open_impl(
        &self,
        device_id: &str,
        actor: &str,
        disposition: &str,
        note: &str,
    ) -> StoreResult<Vec<Uuid>> {
        let mut tx = self.begin_write().await?;
        let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM devices WHERE device_id = ?")
            .bind(device_id)
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            return Err(crate::store::StoreError::NoSuchDevice(device_id.to_owned()));
        }
        let open: Vec<String> = sqlx::query_scalar(
            "SELECT incident_id FROM incidents WHERE device_id = ? AND status = 'open'
             ORDER BY opened_at, incident_id",
        )
        .bind(device_id)
        .fetch_all(&mut *tx)
        .await?;
        let now = crate::clock::receiver_now();
        let action = IncidentAction::Resolve {
            disposition: disposition.to_owned(),
            follow_up: note.to_owned(),
        };
        let mut resolved = Vec::with_capacity(open.len());
        for id in open {
            let id = super::rows::parse_uuid(&id)?;
            // Under the write lock nothing changed since the read: each is still open.
            if apply_in(&mut tx, &self.audit_key, id, actor, &action, now).await?
                == ActionOutcome::Changed
            {
                super::outbox::enqueue_resolved(&mut tx, &self.planner, id, now).await?;
                resolved.push(id);
            }
        }
        if !resolved.is_empty() {
            tx.commit().await?;
            self.wake.notify_one();
        }
        Ok(resolved)
    }
}

/// One officer's action inside the caller's write transaction: the state change, its timeline
/// entry, audit entry and live-log row (`Changed`), or nothing written and the answer.
async fn apply_in(
    tx: &mut SqliteConnection,
    audit_key: &crate::store::audit_chain::AuditKey,
    id: Uuid,
    actor: &str,
    action: &IncidentAction,
    now: OffsetDateTime,
) -> StoreResult<ActionOutcome> {
    {
        let (kind, text) = match change(&mut *tx, id, actor, action, now).await? {
            Change::Done(kind, text) => (kind, text),
            Change::Outcome(outcome) => return Ok(outcome),
        };
        sqlx::query(
            "INSERT INTO incident_timeline (incident_id, at, actor, kind, text) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(format_ts(now))
        .bind(actor)
        .bind(kind)
        .bind(&text)
        .execute(&mut *tx)
        .await?;
        log::audit(
            &mut *tx,
            audit_key,
            now,
            actor,
            action.audit_name(),
            &id.to_string(),
            &text,
        )
        .await?;
        log::live(
            &mut *tx,
            now,
            &format!("incident.{kind}"),
            Some(id),
            &serde_json::json!({ "actor": actor }),
        )
        .await?;
        Ok(ActionOutcome::Changed)
    }
}

impl SqliteStore {
    async fn escalate_impl(&self, after: std::time::Duration) -> StoreResult<usize> {
        let now = crate::clock::receiver_now();
        let after_t = time::Duration::try_from(after).unwrap_or(time::Duration::seconds(90));
        let cutoff = format_ts(now - after_t);
        // A plain read first, so the common case (nothing due) takes no write lock.
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT incident_id FROM incidents WHERE status = 'open' AND claimed_by IS NULL
             AND escalated_at IS NULL AND opened_at <= ?",
        )
        .bind(&cutoff)
        .fetch_all(&self.pool)
        .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let at = format_ts(now);
        let text = crate::store::escalation_text(after);
        let mut escalated = 0;
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
            let row = sqlx::query("SELECT location_json FROM incidents WHERE incident_id = ?")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            let location: duress_core::Location = json(&row, "location_json")?;
            let label = location.display_label();
            sqlx::query(
                "INSERT INTO incident_timeline (incident_id, at, actor, kind, text)
                 VALUES (?, ?, 'system', 'escalation', ?)",
            )
            .bind(id)
            .bind(&at)
            .bind(&text)
            .execute(&mut *tx)
            .await?;
            log::audit(
                &mut tx,
                &self.audit_key,
                now,
                "system",
                "incident.escalate",
                id,
                &text,
            )
            .await?;
            log::live(
                &mut tx,
                now,
                "incident.escalation",
                Uuid::parse_str(id).ok(),
                &serde_json::json!({ "label": label }),
            )
            .await?;
            escalated += 1;
        }
        tx.commit().await?;
        if escalated > 0 {
            self.wake.notify_one();
        }
        Ok(escalated)
    }

    async fn self_tests_impl(
        &self,
        since: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<SelfTestRecord>> {
        let rows = sqlx::query(
            "SELECT location_json, host_json, received_at FROM events WHERE kind = 'test'
             AND received_at >= ? ORDER BY received_at DESC LIMIT ?",
        )
        .bind(format_ts(since))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SelfTestRecord {
                    location: json(r, "location_json")?,
                    host: json(r, "host_json")?,
                    received_at: ts(r, "received_at")?,
                })
            })
            .collect()
    }
}

/// What [`change`] decided.
enum Change {
    /// Written: the timeline entry's kind and text.
    Done(&'static str, String),
    /// Nothing written; this is the answer.
    Outcome(ActionOutcome),
}

/// The state change itself, inside the action's write transaction.
async fn change(
    conn: &mut SqliteConnection,
    id: Uuid,
    actor: &str,
    action: &IncidentAction,
    now: OffsetDateTime,
) -> StoreResult<Change> {
    let Some(row) =
        sqlx::query("SELECT status, claimed_by, claimed_at FROM incidents WHERE incident_id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?
    else {
        return Ok(Change::Outcome(ActionOutcome::NotFound));
    };
    let open = row.try_get::<String, _>("status")? == "open";
    let claimed_by: Option<String> = row.try_get("claimed_by")?;
    let claimed_at = row
        .try_get::<Option<String>, _>("claimed_at")?
        .map(|t| parse_ts(&t))
        .transpose()?;
    let decision =
        crate::store::decide_action(open, claimed_by.as_deref(), claimed_at, actor, action, now);
    let (kind, text) = match decision {
        Err(outcome) => return Ok(Change::Outcome(outcome)),
        Ok(done) => done,
    };
    let at = format_ts(now);
    let key = id.to_string();
    match action {
        IncidentAction::Claim { .. } => {
            sqlx::query(
                "UPDATE incidents SET claimed_by = ?, claimed_at = ?,
                        first_claimed_at = COALESCE(first_claimed_at, ?) WHERE incident_id = ?",
            )
            .bind(actor)
            .bind(&at)
            .bind(&at)
            .bind(&key)
            .execute(&mut *conn)
            .await?;
        }
        IncidentAction::Note(_) => {}
        IncidentAction::Level(level) => {
            sqlx::query("UPDATE incidents SET response_level = ? WHERE incident_id = ?")
                .bind(level)
                .bind(&key)
                .execute(&mut *conn)
                .await?;
        }
        IncidentAction::Called911 => {
            sqlx::query("UPDATE incidents SET called_911_at = ? WHERE incident_id = ?")
                .bind(&at)
                .bind(&key)
                .execute(&mut *conn)
                .await?;
        }
        IncidentAction::Resolve {
            disposition,
            follow_up,
        } => {
            sqlx::query(
                "UPDATE incidents SET status = 'closed', resolved_at = ?, resolved_by = ?,
                        disposition = ?, follow_up = ? WHERE incident_id = ?",
            )
            .bind(&at)
            .bind(actor)
            .bind(disposition)
            .bind(follow_up.trim())
            .bind(&key)
            .execute(&mut *conn)
            .await?;
        }
        IncidentAction::Reopen => {
            sqlx::query(
                "UPDATE incidents SET status = 'open', resolved_at = NULL, resolved_by = NULL,
                        disposition = NULL, follow_up = NULL WHERE incident_id = ?",
            )
            .bind(&key)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(Change::Done(kind, text))
}

impl IncidentStore for SqliteStore {
    fn list_incidents(&self, filter: IncidentFilter) -> StoreFuture<'_, Vec<IncidentRecord>> {
        Box::pin(listings::incidents(&self.pool, filter))
    }

    fn incident(&self, id: Uuid) -> StoreFuture<'_, Option<IncidentDetail>> {
        Box::pin(self.incident_impl(id))
    }

    fn apply_action<'a>(
        &'a self,
        id: Uuid,
        actor: &'a str,
        action: IncidentAction,
    ) -> StoreFuture<'a, ActionOutcome> {
        Box::pin(self.apply_impl(id, actor, action))
    }

    fn resolve_open_of_device<'a>(
        &'a self,
        device_id: &'a str,
        actor: &'a str,
        disposition: &'a str,
        note: &'a str,
    ) -> StoreFuture<'a, Vec<Uuid>> {
        Box::pin(self.resolve_open_impl(device_id, actor, disposition, note))
    }

    fn resolve_incidents<'a>(
        &'a self,
        ids: &'a [Uuid],
        actor: &'a str,
        disposition: &'a str,
        note: &'a str,
    ) -> StoreFuture<'a, Vec<(Uuid, BulkResolveOutcome)>> {
        Box::pin(self.resolve_incidents_impl(ids, actor, disposition, note))
    }

    fn escalate_unclaimed(&self, after: std::time::Duration) -> StoreFuture<'_, usize> {
        Box::pin(self.escalate_impl(after))
    }

    fn recent_self_tests(
        &self,
        since: OffsetDateTime,
        limit: u32,
    ) -> StoreFuture<'_, Vec<SelfTestRecord>> {
        Box::pin(self.self_tests_impl(since, limit))
    }

    fn list_events(&self) -> StoreFuture<'_, Vec<EventRecord>> {
        Box::pin(listings::events(&self.pool))
    }

    fn export_events(&self) -> StoreFuture<'_, Vec<ExportedEvent>> {
        Box::pin(listings::export(&self.pool))
    }
}
