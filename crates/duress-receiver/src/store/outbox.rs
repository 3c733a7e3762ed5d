//! The notifier outbox's shared types (both backends implement [`OutboxStore`]).
//!
//! A notification is a row written in the same transaction as the change that causes it (the
//! ingest of an event that opens an incident); what rows a change writes is decided by a
//! [`NotifyPlanner`] the receiver installs at start from its configuration file (none
//! installed: no rows, the console-only behaviour of a receiver without `--config`). The rows
//! are then delivered by `notify::worker`, which runs apart from the alarm path: ingest never
//! waits for a channel.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use duress_core::{EventKind, HostFacts, Location};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::StoreFuture;

/// What a change enqueues: one row per (step, repeat, channel) of the chosen ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedNotification {
    pub channel: String,
    pub ladder: Option<String>,
    pub step: u32,
    pub repeat_index: u32,
    /// From the change's time.
    pub delay: Duration,
    /// A claim or resolve of the incident before it is due stops it (every ladder step after
    /// the immediate ones).
    pub stop_on_claim: bool,
}

/// The facts of a change, as the planner and the channels see them (stored as the row's
/// payload, so a delivery after a restart says what the change said).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationFacts {
    /// `incident` (a new real incident), `test` (a self-test, only if a rule asks), `offline`
    /// (a supervised station stopped reporting), `resolved` (the incident was resolved: only a
    /// DC-09 channel that carried its alarm sends this, as the restore, and a CAP channel, as
    /// the `Cancel`).
    pub reason: String,
    pub incident_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    pub device_id: String,
    pub kind: String,
    pub location: Location,
    pub host: HostFacts,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// On `resolved` facts: the `at` of the alarm's notification, which a CAP `Cancel`
    /// references as the first alert's `sent` (`at` is then the resolve's time). Absent in
    /// payloads written before it existed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub alarm_at: Option<OffsetDateTime>,
}

impl NotificationFacts {
    pub fn event_kind(&self) -> Option<EventKind> {
        match self.kind.as_str() {
            "duress" => Some(EventKind::Duress),
            "test" => Some(EventKind::Test),
            "cancel" => Some(EventKind::Cancel),
            _ => None,
        }
    }
}

/// Decides which notifications a change enqueues (implemented by `notify::Plan`, from the
/// configuration file). Called inside the store's write transaction: it must be quick and must
/// not block (it only reads the parsed configuration).
pub trait NotifyPlanner: Send + Sync + std::fmt::Debug {
    fn plan(&self, facts: &NotificationFacts) -> Vec<PlannedNotification>;
    /// Whether the station of an `offline` change is expected to be protected at `facts.at`
    /// (its protection schedule). The sweep records an outage, and notifies, only when it is:
    /// a station that went offline outside its schedule and is still offline when the
    /// schedule begins notifies then.
    fn supervised(&self, _facts: &NotificationFacts) -> bool {
        true
    }
}

/// Where a store keeps its planner: installed once at start, read by every ingest.
#[derive(Debug, Default)]
pub struct PlannerSlot(RwLock<Option<Arc<dyn NotifyPlanner>>>);

impl PlannerSlot {
    pub fn set(&self, planner: Option<Arc<dyn NotifyPlanner>>) {
        // A poisoned lock only means a planner panicked mid-read; the value is still whole.
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = planner;
    }

    /// The rows `facts` enqueues (none without a planner).
    pub fn plan(&self, facts: &NotificationFacts) -> Vec<PlannedNotification> {
        let planner = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        planner.map(|p| p.plan(facts)).unwrap_or_default()
    }

    /// [`NotifyPlanner::supervised`] (always without a planner).
    pub fn supervised(&self, facts: &NotificationFacts) -> bool {
        let planner = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        planner.is_none_or(|p| p.supervised(facts))
    }
}

/// A row the worker took (leased) for delivery.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    /// The idempotency key sent downstream.
    pub id: Uuid,
    pub channel: String,
    pub ladder: Option<String>,
    pub step: u32,
    pub repeat_index: u32,
    pub attempts: u32,
    pub facts: NotificationFacts,
    /// The incident's press count now (facts can be older).
    pub press_count: Option<i64>,
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The channel confirmed delivery (2xx, SMTP accepted).
    Delivered,
    /// The channel took it for later processing without confirming delivery (Teams
    /// Workflows' 202): recorded as "accepted", never as acknowledged.
    Accepted,
    /// Failed; retried at `retry_at`, or given up when `None`.
    Error { retry_at: Option<OffsetDateTime> },
}

/// One attempt to record.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub at: OffsetDateTime,
    pub outcome: AttemptOutcome,
    pub http_status: Option<u16>,
    /// Never a secret: the channel's error text, as the channel code built it.
    pub error: Option<String>,
}

/// A notification as the incident page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationRecord {
    pub id: Uuid,
    pub channel: String,
    pub ladder: Option<String>,
    pub step: u32,
    pub repeat_index: u32,
    pub status: String,
    pub due_at: OffsetDateTime,
    pub attempts: Vec<AttemptRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    pub at: OffsetDateTime,
    pub outcome: String,
    pub http_status: Option<u16>,
    pub error: Option<String>,
}

/// The outbox.
pub trait OutboxStore: Send + Sync {
    /// Installs the planner every later ingest consults (`None`: nothing is enqueued).
    fn set_planner(&self, planner: Option<Arc<dyn NotifyPlanner>>);
    /// Stops (status `stopped`) due rows whose ladder a claim or resolve ended, then takes up
    /// to `limit` pending rows due by `now` that no live lease holds, leasing them to `owner`
    /// until `now + lease`. Each row is taken by one caller however many receivers race
    /// (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the write lock on SQLite).
    fn take_due<'a>(
        &'a self,
        owner: &'a str,
        now: OffsetDateTime,
        lease: Duration,
        limit: u32,
    ) -> StoreFuture<'a, Vec<OutboxItem>>;
    /// Records an attempt and moves the row on (delivered / accepted / retry at / failed), if
    /// `owner` still holds its lease; `false` when it does not (the attempt is recorded
    /// anyway). A row recorded delivered or accepted is never taken again.
    fn record_attempt<'a>(
        &'a self,
        id: Uuid,
        owner: &'a str,
        attempt: NewAttempt,
    ) -> StoreFuture<'a, bool>;
    /// The incident's notifications with their attempts, in order of creation.
    fn incident_notifications(&self, incident_id: Uuid)
    -> StoreFuture<'_, Vec<NotificationRecord>>;
    /// Every notification (both with and without an incident), oldest first, at most `limit`:
    /// for tests and the admin.
    fn recent_notifications(&self, limit: u32) -> StoreFuture<'_, Vec<NotificationRecord>>;
    /// The supervision sweep, one transaction: records that it ran (`sweep_runs`), forgets
    /// outages that ended (a heartbeat since, or the station is no longer active), and for every
    /// active station whose last heartbeat is older than `now - offline_after` and that is not
    /// already known offline and that its protection schedule protects at `now`
    /// (`NotifyPlanner::supervised`), records the outage and enqueues what the planner plans for
    /// an `offline` change — so each outage notifies once, however many receivers sweep. Pending,
    /// disabled, revoked and never-seen stations are not supervised. Returns the newly offline
    /// stations' ids.
    fn sweep_offline(
        &self,
        now: OffsetDateTime,
        offline_after: Duration,
    ) -> StoreFuture<'_, Vec<String>>;
    /// When the sweep last ran (any receiver), if ever.
    fn last_sweep(&self) -> StoreFuture<'_, Option<OffsetDateTime>>;
    /// How many notifications are in each status (`pending`, `delivered`, `accepted`,
    /// `failed`, `stopped`; a status with no row is absent), for `/metrics`: the queue depth
    /// and the given-up count, read at each scrape.
    fn notification_counts(&self) -> StoreFuture<'_, Vec<(String, u64)>>;
    /// The SIEM feed's source: audit entries after `after` (by id, which is commit order), at
    /// most `limit`.
    fn audit_after(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<super::AuditEntry>>;
    /// How far the SIEM sink `sink` has been sent: (last audit id, last live-log id); (0, 0)
    /// for a sink never sent to.
    fn siem_position<'a>(&'a self, sink: &'a str) -> StoreFuture<'a, (i64, i64)>;
    /// Records that `sink` has taken everything up to these ids. Never moves a position back
    /// (two receivers of a cluster may feed the same sink: the later write of an older
    /// position is ignored).
    fn siem_advance<'a>(
        &'a self,
        sink: &'a str,
        audit_id: i64,
        live_id: i64,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()>;
}

/// The facts of a station found offline.
pub(crate) fn offline_facts(
    device_id: &str,
    location: Location,
    host: HostFacts,
    now: OffsetDateTime,
) -> NotificationFacts {
    NotificationFacts {
        reason: "offline".to_owned(),
        incident_id: None,
        event_id: None,
        device_id: device_id.to_owned(),
        kind: "offline".to_owned(),
        location,
        host,
        at: duress_core::clock::truncate_to_millis(now),
        alarm_at: None,
    }
}

/// The facts of an event that may notify: one that opened a real incident (`incident`), or a
/// self-test (`test`, which a ladder rule must name explicitly). Joining presses and cancels
/// notify nothing new (the incident's ladder is already running).
pub(crate) fn event_facts(ev: &super::NewEvent, opened: Option<Uuid>) -> Option<NotificationFacts> {
    let reason = match (ev.kind, opened) {
        (EventKind::Test, _) => "test",
        (_, Some(_)) => "incident",
        (_, None) => return None,
    };
    Some(NotificationFacts {
        reason: reason.to_owned(),
        incident_id: opened,
        event_id: Some(ev.id),
        device_id: ev.device_id.clone(),
        kind: ev.kind.as_str().to_owned(),
        location: ev.location.clone(),
        host: ev.host.clone(),
        at: duress_core::clock::truncate_to_millis(ev.received_at),
        alarm_at: None,
    })
}

/// The facts of an incident's resolve (`resolved`, what a DC-09 channel sends as its restore):
/// the facts its alarm notified with, at `now`.
pub(crate) fn resolved_facts(
    mut alarm: NotificationFacts,
    now: OffsetDateTime,
) -> NotificationFacts {
    alarm.reason = "resolved".to_owned();
    alarm.alarm_at = Some(alarm.at);
    alarm.at = duress_core::clock::truncate_to_millis(now);
    alarm
}

/// Of the rows planned for a resolve, those on a channel that carried the incident's alarm
/// and has no restore row yet (a reopened and again resolved incident restores once).
pub(crate) fn restores_to_enqueue(
    planned: Vec<PlannedNotification>,
    alarmed: &[String],
    restored: &[String],
) -> Vec<PlannedNotification> {
    let mut out: Vec<PlannedNotification> = Vec::new();
    for p in planned {
        if alarmed.contains(&p.channel)
            && !restored.contains(&p.channel)
            && !out.iter().any(|o| o.channel == p.channel)
        {
            out.push(p);
        }
    }
    out
}

/// A planned row's due time: the change's time plus its delay (saturating).
pub(crate) fn due_at(at: OffsetDateTime, delay: Duration) -> OffsetDateTime {
    let d = time::Duration::try_from(delay).unwrap_or(time::Duration::days(365));
    at.checked_add(d).unwrap_or(at)
}
