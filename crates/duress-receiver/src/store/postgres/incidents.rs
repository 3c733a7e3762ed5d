//! Incidents: the read model, officers' actions, escalation, and the event listings.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{PostgresStore, json, kind, log, source, unsigned};
use crate::records::{EventRecord, ExportedAck, ExportedEvent, IncidentEvent, IncidentRecord};
use crate::store::{
    ActionOutcome, BulkResolveOutcome, IncidentAction, IncidentDetail, IncidentFilter,
    IncidentStore, SelfTestRecord, StoreFuture, StoreResult, TimelineRecord,
};

pub(super) fn event_record(row: &PgRow) -> StoreResult<EventRecord> {
    let event_kind = kind(&row.try_get::<String, _>("kind")?)?;
    Ok(EventRecord {
        id: row.try_get("id")?,
        device_id: row.try_get("device_id")?,
        incident_id: row.try_get("incident_id")?,
        seq: unsigned("seq", row.try_get("seq")?)?,
        kind: event_kind,
        source: source(&row.try_get::<String, _>("source")?)?,
        occurred_at: row.try_get("occurred_at")?,
        sent_at: row.try_get("sent_at")?,
        received_at: row.try_get("received_at")?,
        delayed: row.try_get("delayed")?,
        delay_ms: row.try_get("delay_ms")?,
        location: json(row, "location_json")?,
        host: json(row, "host_json")?,
        cancel_pin: crate::store::cancel_pin_of(event_kind, &row.try_get::<String, _>("jws")?),
        client_addr: row.try_get("client_addr")?,
    })
}

/// An incident row without its events.
fn incident_record(row: &PgRow) -> StoreResult<IncidentRecord> {
    Ok(IncidentRecord {
        incident_id: row.try_get("incident_id")?,
        device_id: row.try_get("device_id")?,
        status: row.try_get("status")?,
        opened_at: row.try_get("opened_at")?,
        first_occurred_at: row.try_get("first_occurred_at")?,
        last_press_at: row.try_get("last_press_at")?,
        press_count: unsigned("press_count", row.try_get("press_count")?)?,
        kind: kind(&row.try_get::<String, _>("kind")?)?,
        source: source(&row.try_get::<String, _>("source")?)?,
        location: json(row, "location_json")?,
        host: json(row, "host_json")?,
        delayed: row.try_get("delayed")?,
        delay_ms: row.try_get("delay_ms")?,
        cancelled_at: row.try_get("cancelled_at")?,
        claimed_by: row.try_get("claimed_by")?,
        claimed_at: row.try_get("claimed_at")?,
        first_claimed_at: row.try_get("first_claimed_at")?,
        escalated_at: row.try_get("escalated_at")?,
        response_level: row.try_get("response_level")?,
        called_911_at: row.try_get("called_911_at")?,
        resolved_at: row.try_get("resolved_at")?,
        resolved_by: row.try_get("resolved_by")?,
        disposition: row.try_get("disposition")?,
        follow_up: row.try_get("follow_up")?,
        cancel_with_duress_pin: false,
        events: Vec::new(),
        registered_location: None,
        location_mismatch: false,
        location_drift: None,
    })
}

impl PostgresStore {
    async fn list_incidents_impl(
        &self,
        filter: IncidentFilter,
    ) -> StoreResult<Vec<IncidentRecord>> {
        let (incidents_sql, events_sql) = match filter {
            IncidentFilter::All => (
                "SELECT * FROM incidents ORDER BY opened_at, incident_id",
                "SELECT * FROM events WHERE incident_id IS NOT NULL ORDER BY received_at, arrival",
            ),
            IncidentFilter::Open => (
                "SELECT * FROM incidents WHERE status = 'open' ORDER BY opened_at, incident_id",
                "SELECT e.* FROM events e JOIN incidents i ON i.incident_id = e.incident_id
                 WHERE i.status = 'open' ORDER BY e.received_at, e.arrival",
            ),
        };
        // Two reads in one snapshot, so no event appears without its incident or vice versa.
        let mut tx = self.begin_snapshot().await?;
        let incident_rows = sqlx::query(incidents_sql).fetch_all(&mut *tx).await?;
        let event_rows = sqlx::query(events_sql).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut presses: HashMap<Uuid, Vec<IncidentEvent>> = HashMap::new();
        for row in &event_rows {
            let e = event_record(row)?;
            if let Some(id) = e.incident_id {
                presses.entry(id).or_default().push(IncidentEvent::from(e));
            }
        }
        incident_rows
            .iter()
            .map(|row| {
                let mut incident = incident_record(row)?;
                incident.set_events(presses.remove(&incident.incident_id).unwrap_or_default());
                Ok(incident)
            })
            .collect()
    }

    async fn incident_impl(&self, id: Uuid) -> StoreResult<Option<IncidentDetail>> {
        let mut tx = self.begin_snapshot().await?;
        let Some(row) = sqlx::query("SELECT * FROM incidents WHERE incident_id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let mut incident = incident_record(&row)?;
        let events = sqlx::query(
            "SELECT * FROM events WHERE incident_id = $1 ORDER BY received_at, arrival",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let entries = sqlx::query(
            "SELECT at, actor, kind, text FROM incident_timeline WHERE incident_id = $1 ORDER BY id",
        )
        .bind(id)
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
                    at: r.try_get("at")?,
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
        let mut tx = self.begin().await?;
        let now = crate::clock::receiver_now();
        let outcome = apply_in(
            &mut tx,
            &self.audit_key,
            &self.doorbell,
            id,
            actor,
            &action,
            now,
        )
        .await?;
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

    /// One incident of a bulk resolve: a transaction of its own holding only that incident's
    /// row lock (then the log lock), exactly as a single resolve does, so a bulk resolve can
    /// never deadlock with ingest batches (which lock devices, then incidents) however many
    /// incidents it covers.
    async fn resolve_one_of_bulk(
        &self,
        id: Uuid,
        actor: &str,
        action: &IncidentAction,
    ) -> StoreResult<BulkResolveOutcome> {
        let mut tx = self.begin().await?;
        let Some(row) = sqlx::query(
            "SELECT status, claimed_by FROM incidents WHERE incident_id = $1 FOR UPDATE",
        )
        .bind(id)
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
            match apply_in(
                &mut tx,
                &self.audit_key,
                &self.doorbell,
                id,
                actor,
                action,
                now,
            )
            .await?
            {
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
        let mut tx = self.begin().await?;
        // The device's row lock first, as ingest takes it (device, then incident, then the
        // log lock): a press of this device waits for us instead of deadlocking with us.
        let known: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM devices WHERE device_id = $1 FOR UPDATE")
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?;
        if known.is_none() {
            return Err(crate::store::StoreError::NoSuchDevice(device_id.to_owned()));
        }
        // The open incidents' row locks, in one order (an officer's action on one of them
        // waits, then finds it resolved).
        let open: Vec<Uuid> = sqlx::query_scalar(
            "SELECT incident_id FROM incidents WHERE device_id = $1 AND status = 'open'
             ORDER BY opened_at, incident_id FOR UPDATE",
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
            if apply_in(
                &mut tx,
                &self.audit_key,
                &self.doorbell,
                id,
                actor,
                &action,
                now,
            )
            .await?
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

/// One officer's action inside the caller's transaction: the incident's row lock, the decision,
/// the state change, its timeline entry, audit entry and live-log row (`Changed`), or nothing
/// written and the answer.
async fn apply_in(
    tx: &mut PgConnection,
    audit_key: &crate::store::audit_chain::AuditKey,
    bell: &log::Doorbell,
    id: Uuid,
    actor: &str,
    action: &IncidentAction,
    now: OffsetDateTime,
) -> StoreResult<ActionOutcome> {
    {
        // The incident's row lock: a second officer's claim waits here and then reads the
        // first one's claim.
        let Some(row) = sqlx::query(
            "SELECT status, claimed_by, claimed_at FROM incidents WHERE incident_id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(ActionOutcome::NotFound);
        };
        let open = row.try_get::<String, _>("status")? == "open";
        let claimed_by: Option<String> = row.try_get("claimed_by")?;
        let claimed_at: Option<OffsetDateTime> = row.try_get("claimed_at")?;
        let (kind, text) = match crate::store::decide_action(
            open,
            claimed_by.as_deref(),
            claimed_at,
            actor,
            action,
            now,
        ) {
            Ok(done) => done,
            Err(outcome) => return Ok(outcome),
        };
        change(&mut *tx, id, actor, action, now).await?;
        sqlx::query(
            "INSERT INTO incident_timeline (incident_id, at, actor, kind, text)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(now)
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
        let payload = serde_json::json!({ "actor": actor }).to_string();
        log::live(
            bell,
            &mut *tx,
            now,
            &format!("incident.{kind}"),
            Some(id),
            &payload,
        )
        .await?;
        Ok(ActionOutcome::Changed)
    }
}

impl PostgresStore {
    async fn escalate_impl(&self, after: Duration) -> StoreResult<usize> {
        let now = crate::clock::receiver_now();
        let after_t = time::Duration::try_from(after).unwrap_or(time::Duration::seconds(90));
        let cutoff = now - after_t;
        // A plain read first, so the common case (nothing due) takes no lock.
        let due: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM incidents WHERE status = 'open' AND claimed_by IS NULL
             AND escalated_at IS NULL AND opened_at <= $1",
        )
        .bind(cutoff)
        .fetch_one(&self.pool)
        .await?;
        if due == 0 {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        // Work once for the cluster (docs/scale-out.md): locked in one statement, skipping rows
        // another transaction holds — another node escalating them right now, or an officer
        // claiming one. Each node's next tick (1 s) re-reads under the same conditions, so a
        // row escalated meanwhile is left out and one whose holder rolled back (or whose node
        // died: PostgreSQL releases its locks with the session) is taken then. Each incident is
        // escalated once however many receivers run this, and no node waits for another.
        let rows = sqlx::query(
            "SELECT incident_id, location_json FROM incidents WHERE status = 'open'
             AND claimed_by IS NULL AND escalated_at IS NULL AND opened_at <= $1
             ORDER BY incident_id FOR UPDATE SKIP LOCKED",
        )
        .bind(cutoff)
        .fetch_all(&mut *tx)
        .await?;
        let text = crate::store::escalation_text(after);
        for row in &rows {
            let id: Uuid = row.try_get("incident_id")?;
            sqlx::query("UPDATE incidents SET escalated_at = $1 WHERE incident_id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO incident_timeline (incident_id, at, actor, kind, text)
                 VALUES ($1, $2, 'system', 'escalation', $3)",
            )
            .bind(id)
            .bind(now)
            .bind(&text)
            .execute(&mut *tx)
            .await?;
        }
        // The log rows after every row change: the log lock stays the last lock taken.
        for row in &rows {
            let id: Uuid = row.try_get("incident_id")?;
            let location: duress_core::Location = json(row, "location_json")?;
            log::audit(
                &mut tx,
                &self.audit_key,
                now,
                "system",
                "incident.escalate",
                &id.to_string(),
                &text,
            )
            .await?;
            let payload = serde_json::json!({ "label": location.display_label() }).to_string();
            log::live(
                &self.doorbell,
                &mut tx,
                now,
                "incident.escalation",
                Some(id),
                &payload,
            )
            .await?;
        }
        tx.commit().await?;
        if !rows.is_empty() {
            self.wake.notify_one();
        }
        Ok(rows.len())
    }

    async fn self_tests_impl(
        &self,
        since: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<SelfTestRecord>> {
        let rows = sqlx::query(
            "SELECT location_json, host_json, received_at FROM events WHERE kind = 'test'
             AND received_at >= $1 ORDER BY received_at DESC, arrival DESC LIMIT $2",
        )
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SelfTestRecord {
                    location: json(r, "location_json")?,
                    host: json(r, "host_json")?,
                    received_at: r.try_get("received_at")?,
                })
            })
            .collect()
    }

    async fn events_impl(&self) -> StoreResult<Vec<EventRecord>> {
        let rows = sqlx::query("SELECT * FROM events ORDER BY received_at, arrival")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_record).collect()
    }

    async fn export_impl(&self) -> StoreResult<Vec<ExportedEvent>> {
        let rows = sqlx::query(
            "SELECT e.*, d.public_jwk FROM events e JOIN devices d ON d.device_id = e.device_id
             ORDER BY e.received_at, e.arrival",
        )
        .fetch_all(&self.pool)
        .await?;
        // Acknowledgements are only ever added, with or after their event: any that belongs
        // to an event listed above is read here.
        let ack_rows = sqlx::query(
            "SELECT event_id, kid, public_jwk, sig, signed_at FROM event_acks ORDER BY n",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut acks: std::collections::HashMap<Uuid, Vec<ExportedAck>> = Default::default();
        for a in &ack_rows {
            acks.entry(a.try_get("event_id")?)
                .or_default()
                .push(ExportedAck {
                    kid: a.try_get("kid")?,
                    jwk: serde_json::from_str(&a.try_get::<String, _>("public_jwk")?).map_err(
                        |e| {
                            crate::store::StoreError::Corrupt(format!("event_acks.public_jwk: {e}"))
                        },
                    )?,
                    sig: a.try_get("sig")?,
                    signed_at: a.try_get("signed_at")?,
                });
        }
        rows.iter()
            .map(|row| {
                let id: Uuid = row.try_get("id")?;
                Ok(ExportedEvent {
                    id,
                    incident_id: row.try_get("incident_id")?,
                    acks: acks.remove(&id).unwrap_or_default(),
                    device_id: row.try_get("device_id")?,
                    kind: kind(&row.try_get::<String, _>("kind")?)?,
                    seq: unsigned("seq", row.try_get("seq")?)?,
                    occurred_at: row.try_get("occurred_at")?,
                    received_at: row.try_get("received_at")?,
                    delayed: row.try_get("delayed")?,
                    delay_ms: row.try_get("delay_ms")?,
                    jws: row.try_get("jws")?,
                    public_jwk: json(row, "public_jwk")?,
                })
            })
            .collect()
    }
}

/// The incident's own columns an action changes (the row is locked by the caller).
async fn change(
    conn: &mut PgConnection,
    id: Uuid,
    actor: &str,
    action: &IncidentAction,
    now: OffsetDateTime,
) -> StoreResult<()> {
    match action {
        IncidentAction::Claim { .. } => {
            sqlx::query(
                "UPDATE incidents SET claimed_by = $1, claimed_at = $2,
                        first_claimed_at = COALESCE(first_claimed_at, $2) WHERE incident_id = $3",
            )
            .bind(actor)
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        }
        IncidentAction::Note(_) => {}
        IncidentAction::Level(level) => {
            sqlx::query("UPDATE incidents SET response_level = $1 WHERE incident_id = $2")
                .bind(level)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        IncidentAction::Called911 => {
            sqlx::query("UPDATE incidents SET called_911_at = $1 WHERE incident_id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        IncidentAction::Resolve {
            disposition,
            follow_up,
        } => {
            sqlx::query(
                "UPDATE incidents SET status = 'closed', resolved_at = $1, resolved_by = $2,
                        disposition = $3, follow_up = $4 WHERE incident_id = $5",
            )
            .bind(now)
            .bind(actor)
            .bind(disposition)
            .bind(follow_up.trim())
            .bind(id)
            .execute(&mut *conn)
            .await?;
        }
        IncidentAction::Reopen => {
            sqlx::query(
                "UPDATE incidents SET status = 'open', resolved_at = NULL, resolved_by = NULL,
                        disposition = NULL, follow_up = NULL WHERE incident_id = $1",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

impl IncidentStore for PostgresStore {
    fn list_incidents(&self, filter: IncidentFilter) -> StoreFuture<'_, Vec<IncidentRecord>> {
        Box::pin(self.list_incidents_impl(filter))
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

    fn escalate_unclaimed(&self, after: Duration) -> StoreFuture<'_, usize> {
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
        Box::pin(self.events_impl())
    }

    fn export_events(&self) -> StoreFuture<'_, Vec<ExportedEvent>> {
        Box::pin(self.export_impl())
    }
}
