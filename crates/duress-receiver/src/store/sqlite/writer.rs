//! Group commit on a dedicated thread. One writer thread owns one SQLite connection (rusqlite,
//! cached prepared statements) and is the only one that ingests events and records heartbeats.
//! It takes every request waiting in its queue (up to [`MAX_BATCH`]), runs each in its own
//! SAVEPOINT inside ONE `BEGIN IMMEDIATE` transaction, and COMMITs once — one fsync for the whole
//! batch — before it answers any of them. Batches form by themselves: while one commit is on its
//! way to the disk, the next requests queue up. Under no load a batch is one request, so a lone
//! alarm waits for nobody.
//!
//! Why a thread of its own and rusqlite rather than sqlx: an event is about ten statements, and
//! with sqlx each one is a hand-off to sqlx's worker thread and back (measured: ≈ 250 µs of CPU
//! per event, and a scheduler wake-up per statement on a busy 2-core machine). Here the statements
//! run back to back on one thread, prepared once; the only hand-offs left are the job coming in
//! and the answer going out.
//!
//! What each request is promised: its answer comes only after the COMMIT that holds its rows
//! (the raw token, the incident change, the console_events row); a failed COMMIT fails every
//! request of the batch (503: the agents keep their alarms and retry); a request whose own
//! statements fail is rolled back to its savepoint alone, so it cannot poison the others.
//! Deduplication and the device-status check happen under the write lock, inside the batch's
//! transaction, so a second copy of an event — in the same batch or a later one — finds the
//! first one's row and gets the same stored answer, and a device disabled a moment ago cannot
//! slip an event past its new status.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use duress_core::{DeviceStatus, EventKind};
use rusqlite::{Connection, OptionalExtension as _, params};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use super::super::{
    HeartbeatRecorded, HeartbeatUpdate, IngestOutcome, NewEvent, NotificationFacts,
    PlannedNotification, PlannerSlot, StoreError, StoreResult, StoredEvent, format_ts, parse_ts,
};
use super::rows::{self, parse_uuid, to_json};
use crate::incidents::{self, Grouping, OpenIncident, Placement, RoomIncident};

/// At most this many requests share one transaction (bounds one commit's latency).
pub(super) const MAX_BATCH: usize = 256;
/// Requests waiting for the writer before senders wait for room.
const QUEUE: usize = 8192;

/// One unit of work for the writer.
pub(super) enum Job {
    Ingest {
        event: Box<NewEvent>,
        grouping: Grouping,
        answer: oneshot::Sender<StoreResult<IngestOutcome>>,
    },
    Heartbeat {
        update: Box<HeartbeatUpdate>,
        answer: oneshot::Sender<StoreResult<HeartbeatRecorded>>,
    },
    /// Finish what is queued, close the connection, then say so.
    Close { done: oneshot::Sender<()> },
}

/// The handle requests are sent through.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Job>,
}

fn closed() -> StoreError {
    StoreError::Unavailable("the store is closed".into())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(e.to_string()),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// Opens a writer connection with the store's settings: WAL (already set by the pool), a commit
/// on disk before it returns (`synchronous=FULL`), foreign keys, the same busy timeout.
fn open(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
    )?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

impl Writer {
    /// Opens the writer's own connection and starts its thread.
    pub(super) fn start(
        path: PathBuf,
        busy_timeout: Duration,
        wake: Arc<Notify>,
        planner: Arc<PlannerSlot>,
    ) -> StoreResult<Self> {
        let conn = open(&path, busy_timeout)?;
        let (queue, jobs) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("duress-store-writer".into())
            .spawn(move || {
                let mut thread = WriterThread {
                    conn,
                    path,
                    busy_timeout,
                    wake,
                    planner,
                };
                thread.run(jobs);
            })
            .map_err(|e| StoreError::Unavailable(format!("starting the writer thread: {e}")))?;
        Ok(Writer { queue })
    }

    pub(super) async fn ingest(
        &self,
        event: NewEvent,
        grouping: Grouping,
    ) -> StoreResult<IngestOutcome> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Job::Ingest {
                event: Box::new(event),
                grouping,
                answer,
            })
            .await
            .map_err(|_| closed())?;
        answered.await.map_err(|_| closed())?
    }

    pub(super) async fn heartbeat(
        &self,
        update: HeartbeatUpdate,
    ) -> StoreResult<HeartbeatRecorded> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Job::Heartbeat {
                update: Box::new(update),
                answer,
            })
            .await
            .map_err(|_| closed())?;
        answered.await.map_err(|_| closed())?
    }

    /// Lets the writer finish its queue and close its connection.
    pub(super) async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.queue.send(Job::Close { done }).await.is_ok() {
            let _ = finished.await;
        }
    }
}

/// A request's result, kept until the batch's COMMIT decides whether it may be sent.
enum Outcome {
    Ingest(
        oneshot::Sender<StoreResult<IngestOutcome>>,
        StoreResult<IngestOutcome>,
    ),
    Heartbeat(
        oneshot::Sender<StoreResult<HeartbeatRecorded>>,
        StoreResult<HeartbeatRecorded>,
    ),
}

impl Outcome {
    /// Sends the result as it is, or `error` in place of a success (the COMMIT failed).
    fn send(self, error: Option<&StoreError>) {
        fn decide<T>(r: StoreResult<T>, error: Option<&StoreError>) -> StoreResult<T> {
            match (r, error) {
                (Ok(_), Some(e)) => Err(StoreError::Unavailable(e.to_string())),
                (r, _) => r,
            }
        }
        match self {
            Outcome::Ingest(tx, r) => {
                let _ = tx.send(decide(r, error));
            }
            Outcome::Heartbeat(tx, r) => {
                let _ = tx.send(decide(r, error));
            }
        }
    }

    fn is_ok(&self) -> bool {
        match self {
            Outcome::Ingest(_, r) => r.is_ok(),
            Outcome::Heartbeat(_, r) => r.is_ok(),
        }
    }

    /// Whether this request wrote a `console_events` row (the console must be woken).
    fn wrote_console_row(&self) -> bool {
        matches!(self, Outcome::Ingest(_, Ok(IngestOutcome::Committed(_))))
    }

    /// The same request answered with `e` instead (its statements were not run or not kept).
    fn failed(self, e: StoreError) -> Self {
        match self {
            Outcome::Ingest(tx, _) => Outcome::Ingest(tx, Err(e)),
            Outcome::Heartbeat(tx, _) => Outcome::Heartbeat(tx, Err(e)),
        }
    }
}

struct WriterThread {
    conn: Connection,
    path: PathBuf,
    busy_timeout: Duration,
    wake: Arc<Notify>,
    planner: Arc<PlannerSlot>,
}

impl WriterThread {
    fn run(&mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut close = None;
        while close.is_none() {
            let Some(first) = jobs.blocking_recv() else {
                break;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            // A close request ends the batch: what came before it is committed first.
            if let Some(i) = batch.iter().position(|j| matches!(j, Job::Close { .. })) {
                if let Job::Close { done } = batch.remove(i) {
                    close = Some(done);
                }
                for later in batch.drain(i..).collect::<Vec<_>>() {
                    refuse(later);
                }
            }
            if !batch.is_empty() {
                self.replace_if_stuck();
                self.commit_batch(&mut batch);
            }
        }
        jobs.close();
        while let Ok(job) = jobs.try_recv() {
            refuse(job);
        }
        // Dropping the connection closes it (and checkpoints the WAL when it is the last one).
        if let Some(done) = close {
            let _ = done.send(());
        }
    }

    /// A disk-full (or I/O) error can leave the connection inside a transaction SQLite has
    /// already given up on; every later BEGIN would then fail and the store would stay
    /// unavailable after space returns (found by `tests/tests/faults_disk_full.rs`). Roll it
    /// back, and when even that does not return the connection to autocommit, open a new one.
    fn replace_if_stuck(&mut self) {
        if self.conn.is_autocommit() {
            return;
        }
        let _ = self.conn.execute_batch("ROLLBACK");
        if self.conn.is_autocommit() {
            return;
        }
        match open(&self.path, self.busy_timeout) {
            Ok(fresh) => {
                tracing::warn!("replacing a writer connection left in a failed transaction");
                self.conn = fresh;
            }
            Err(e) => tracing::error!(error = %e, "cannot open a fresh writer connection"),
        }
    }

    /// Runs `batch` in one transaction and answers every request after the COMMIT.
    fn commit_batch(&mut self, batch: &mut Vec<Job>) {
        let mut outcomes = Vec::with_capacity(batch.len());
        let failure = match self.conn.execute_batch("BEGIN IMMEDIATE") {
            Err(e) => {
                // Nothing ran: every request gets the error.
                let e = StoreError::from(e);
                for job in batch.drain(..) {
                    outcomes.push(not_run(job, &e));
                }
                Some(e)
            }
            Ok(()) => {
                let mut broken: Option<StoreError> = None;
                for job in batch.drain(..) {
                    match &broken {
                        Some(e) => outcomes.push(not_run(job, e)),
                        None => {
                            let (outcome, lost) = self.run_one(job);
                            outcomes.push(outcome);
                            broken = lost;
                        }
                    }
                }
                match broken {
                    // The transaction cannot be trusted any more: nothing of it is kept.
                    Some(e) => {
                        let _ = self.conn.execute_batch("ROLLBACK");
                        Some(e)
                    }
                    None => self
                        .conn
                        .execute_batch("COMMIT")
                        .err()
                        .map(StoreError::from),
                }
            }
        };
        if let Some(e) = &failure {
            tracing::error!(error = %e, requests = outcomes.len(), "group commit failed");
        } else if outcomes.iter().any(Outcome::wrote_console_row) {
            // After COMMIT: a console told earlier could read a state without the event.
            self.wake.notify_one();
        }
        for o in outcomes {
            o.send(failure.as_ref());
        }
    }

    /// Runs one request in its own savepoint. The second value is set when the savepoint could
    /// not be released or rolled back (the whole transaction is then unusable).
    fn run_one(&mut self, job: Job) -> (Outcome, Option<StoreError>) {
        let lost = |e: rusqlite::Error| StoreError::Unavailable(e.to_string());
        if let Err(e) = self.conn.execute_batch("SAVEPOINT request") {
            let e = lost(e);
            return (not_run(job, &e), Some(e));
        }
        let outcome = match job {
            Job::Ingest {
                event,
                grouping,
                answer,
            } => Outcome::Ingest(answer, ingest(&self.conn, &event, grouping, &self.planner)),
            Job::Heartbeat { update, answer } => {
                Outcome::Heartbeat(answer, heartbeat(&self.conn, &update))
            }
            Job::Close { done } => {
                // Taken out of the batch before it runs; answered anyway.
                let _ = done.send(());
                let _ = self.conn.execute_batch("RELEASE request");
                return (
                    Outcome::Heartbeat(oneshot::channel().0, Err(closed())),
                    None,
                );
            }
        };
        let end = if outcome.is_ok() {
            "RELEASE request"
        } else {
            "ROLLBACK TO request; RELEASE request"
        };
        match self.conn.execute_batch(end) {
            Ok(()) => (outcome, None),
            Err(e) => {
                let e = lost(e);
                (
                    outcome.failed(StoreError::Unavailable(e.to_string())),
                    Some(e),
                )
            }
        }
    }
}

/// Answers a request that arrived after close.
fn refuse(job: Job) {
    match job {
        Job::Ingest { answer, .. } => {
            let _ = answer.send(Err(closed()));
        }
        Job::Heartbeat { answer, .. } => {
            let _ = answer.send(Err(closed()));
        }
        Job::Close { done } => {
            let _ = done.send(());
        }
    }
}

/// A request that was not run (its batch failed before reaching it): it gets the batch's error.
fn not_run(job: Job, e: &StoreError) -> Outcome {
    let e = StoreError::Unavailable(e.to_string());
    match job {
        Job::Ingest { answer, .. } => Outcome::Ingest(answer, Err(e)),
        Job::Heartbeat { answer, .. } => Outcome::Heartbeat(answer, Err(e)),
        Job::Close { done } => {
            let _ = done.send(());
            Outcome::Heartbeat(oneshot::channel().0, Err(e))
        }
    }
}

/// The device's stored status, under the write lock.
fn device_status(conn: &Connection, device_id: &str) -> StoreResult<Option<DeviceStatus>> {
    let text: Option<String> = conn
        .prepare_cached("SELECT status FROM devices WHERE device_id = ?1")?
        .query_row([device_id], |row| row.get(0))
        .optional()?;
    text.map(|t| rows::status(&t)).transpose()
}

/// The committed event with this id, read inside the writer's transaction.
fn find_event(conn: &Connection, id: Uuid) -> StoreResult<Option<StoredEvent>> {
    let row = conn
        .prepare_cached(
            "SELECT device_id, incident_id, received_at, delay_ms, delayed FROM events WHERE id = ?1",
        )?
        .query_row([id.to_string()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, Option<String>>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, bool>(4)?,
            ))
        })
        .optional()?;
    let Some((device_id, incident_id, received_at, delay_ms, delayed)) = row else {
        return Ok(None);
    };
    let ack = conn
        .prepare_cached(super::ACK_SELECT)?
        .query_row([id.to_string()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .optional()?
        .map(|(kid, jwk, sig)| rows::ack(kid, &jwk, sig))
        .transpose()?;
    Ok(Some(StoredEvent {
        id,
        device_id,
        incident_id: incident_id.map(|s| parse_uuid(&s)).transpose()?,
        received_at: parse_ts(&received_at)?,
        delay_ms,
        delayed,
        ack,
    }))
}

/// Dedupes by id, checks the device may raise alarms, refuses another device's id, and writes
/// the event — in that order (docs/protocol.md §5.2): a repeat of a committed event gets its
/// stored answer whatever the device's status is now.
fn ingest(
    conn: &Connection,
    ev: &NewEvent,
    grouping: Grouping,
    planner: &PlannerSlot,
) -> StoreResult<IngestOutcome> {
    let found = find_event(conn, ev.id)?;
    if let Some(found) = found.as_ref().filter(|f| f.device_id == ev.device_id) {
        return Ok(IngestOutcome::Duplicate(found.clone()));
    }
    match device_status(conn, &ev.device_id)? {
        Some(DeviceStatus::Active) => {}
        Some(other) => return Ok(IngestOutcome::DeviceNotActive(other)),
        None => return Err(StoreError::NoSuchDevice(ev.device_id.clone())),
    }
    // Another device's id: refused after the status (a disabled device hears "disabled").
    if found.is_some() {
        return Ok(IngestOutcome::IdConflict);
    }
    // With one writer and the check above, the primary key cannot be violated here; if it
    // were, the error answers 503 and the agent's retry finds the row and its stored answer.
    Ok(IngestOutcome::Committed(insert_event(
        conn, ev, grouping, planner,
    )?))
}

/// The room of `device_id` for grouping ([`incidents::room_of`]): its registered location, else
/// the one its event reported.
fn room_of_device(
    conn: &Connection,
    device_id: &str,
    reported: &duress_core::Location,
) -> StoreResult<Option<String>> {
    let registered: Option<String> = conn
        .prepare_cached("SELECT registered_location_json FROM devices WHERE device_id = ?1")?
        .query_row([device_id], |row| row.get(0))
        .optional()?
        .flatten();
    let registered = registered
        .map(|t| {
            serde_json::from_str::<duress_core::Location>(&t).map_err(|e| {
                StoreError::Corrupt(format!("device {device_id}: registered location: {e}"))
            })
        })
        .transpose()?;
    Ok(incidents::room_of(registered.as_ref(), reported))
}

/// The room's most recently pressed open incident, whichever station opened it.
fn room_open_incident(conn: &Connection, room: &str) -> StoreResult<Option<RoomIncident>> {
    let row = conn
        .prepare_cached(
            "SELECT incident_id, last_press_at FROM incidents
             WHERE room_key = ?1 AND status = 'open' ORDER BY last_press_at DESC LIMIT 1",
        )?
        .query_row([room], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .optional()?;
    row.map(|(id, last)| {
        Ok(RoomIncident {
            incident_id: parse_uuid(&id)?,
            last_press_at: parse_ts(&last)?,
        })
    })
    .transpose()
}

/// Writes the event, its incident, its console_events row and the device's counters.
fn insert_event(
    conn: &Connection,
    ev: &NewEvent,
    grouping: Grouping,
    planner: &PlannerSlot,
) -> StoreResult<StoredEvent> {
    let window = grouping.window;
    let received = format_ts(ev.received_at);
    let occurred = format_ts(ev.occurred_at);
    // Computed from the stored (millisecond) values, so the answer is a function of columns.
    let received_at = duress_core::clock::truncate_to_millis(ev.received_at);
    let occurred_at = duress_core::clock::truncate_to_millis(ev.occurred_at);
    let delay_ms = super::super::delay_ms(occurred_at, received_at);
    let delayed = delay_ms > duress_core::clock::DELAYED_AFTER.whole_milliseconds() as i64;
    let location_json = to_json(&ev.location);
    let host_json = to_json(&ev.host);

    let latest_open = if ev.kind == EventKind::Test {
        None
    } else {
        let row = conn
            .prepare_cached(
                "SELECT incident_id, last_press_at,
                        (SELECT COUNT(*) FROM incidents WHERE device_id = ?1 AND status = 'open')
                 FROM incidents
                 WHERE device_id = ?1 AND status = 'open' ORDER BY last_press_at DESC LIMIT 1",
            )?
            .query_row([&ev.device_id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .optional()?;
        match row {
            Some((id, last_press, open_count)) => Some(OpenIncident {
                incident_id: parse_uuid(&id)?,
                last_press_at: parse_ts(&last_press)?,
                open_count: u64::try_from(open_count).unwrap_or(0),
            }),
            None => None,
        }
    };

    let mut placement = incidents::place(ev.kind, latest_open, occurred_at, window);
    // The room is read only for a press that may open an incident (the one writer thread
    // serialises every event, so two stations of one room cannot both open one).
    let room = if placement == Placement::Open {
        room_of_device(conn, &ev.device_id, &ev.location)?
    } else {
        None
    };
    if let (true, Some(room)) = (grouping.same_room, room.as_deref()) {
        placement = incidents::place_in_room(
            placement,
            room_open_incident(conn, room)?,
            occurred_at,
            window,
        );
        // Joined another station's incident: remembered for this station's covert
        // acknowledgement (its heartbeats list the incident once it is claimed).
        if let Placement::JoinPress(id) = placement {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO incident_joins (device_id, incident_id) VALUES (?1, ?2)",
            )?
            .execute(params![ev.device_id, id.to_string()])?;
        }
    }
    let mut opened = None;
    let incident_id = match placement {
        Placement::Apart => None,
        Placement::Open => {
            let id = Uuid::now_v7();
            conn.prepare_cached(
                "INSERT INTO incidents (incident_id, device_id, status, opened_at, first_occurred_at,
                                        last_press_at, press_count, kind, source, location_json,
                                        host_json, delayed, delay_ms, room_key)
                 VALUES (?1, ?2, 'open', ?3, ?4, ?4, 1, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                id.to_string(),
                ev.device_id,
                received,
                occurred,
                ev.kind.as_str(),
                ev.source.as_str(),
                location_json,
                host_json,
                delayed,
                delay_ms,
                room,
            ])?;
            opened = Some(id);
            Some(id)
        }
        Placement::JoinPress(id) => {
            conn.prepare_cached(
                "UPDATE incidents SET press_count = press_count + 1,
                        last_press_at = MAX(last_press_at, ?1) WHERE incident_id = ?2",
            )?
            .execute(params![occurred, id.to_string()])?;
            Some(id)
        }
        Placement::JoinCancel(id) => {
            conn.prepare_cached(
                "UPDATE incidents SET cancelled_at = COALESCE(cancelled_at, ?1) WHERE incident_id = ?2",
            )?
            .execute(params![received, id.to_string()])?;
            Some(id)
        }
    };

    conn.prepare_cached(
        "INSERT INTO events (id, device_id, incident_id, seq, kind, source, occurred_at, sent_at,
                             received_at, delay_ms, delayed, location_json, host_json, jws,
                             client_addr)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        ev.id.to_string(),
        ev.device_id,
        incident_id.map(|id| id.to_string()),
        ev.seq,
        ev.kind.as_str(),
        ev.source.as_str(),
        occurred,
        format_ts(ev.sent_at),
        received,
        delay_ms,
        delayed,
        location_json,
        host_json,
        ev.jws,
        ev.client_addr,
    ])?;

    // The live-update row, in this transaction: a console can never see the incident without
    // being told, nor be told of one that was rolled back.
    let (live_kind, payload) = crate::store::event_live_row(ev, incident_id, opened.is_some());
    conn.prepare_cached(super::LIVE_INSERT)?.query_row(
        params![
            received,
            live_kind,
            incident_id.map(|i| i.to_string()),
            payload
        ],
        |row| row.get::<_, i64>(0),
    )?;

    // The outbox rows, in this transaction (after the event row: they name it): an alarm that
    // is acknowledged has its notifications queued, and a rolled-back one has none.
    if let Some(facts) = crate::store::outbox::event_facts(ev, opened) {
        enqueue(conn, &facts, &planner.plan(&facts))?;
    }

    let is_test = ev.kind == EventKind::Test;
    conn.prepare_cached(
        "UPDATE devices SET last_seq = MAX(COALESCE(last_seq, ?1), ?1), last_event_at = ?2,
                last_self_test_at = CASE WHEN ?3 THEN ?2 ELSE last_self_test_at END,
                last_self_test_id = CASE WHEN ?3 THEN ?4 ELSE last_self_test_id END,
                last_addr = COALESCE(?6, last_addr)
         WHERE device_id = ?5",
    )?
    .execute(params![
        ev.seq,
        received,
        is_test,
        ev.id.to_string(),
        ev.device_id,
        ev.client_addr,
    ])?;

    let stored = StoredEvent {
        id: ev.id,
        device_id: ev.device_id.clone(),
        incident_id,
        received_at,
        delay_ms,
        delayed,
        ack: None,
    }
    .signed_by(ev);
    // The signature the answer carries, committed with the event it acknowledges.
    if let Some(ack) = &stored.ack {
        conn.prepare_cached(super::ACK_INSERT)?.execute(params![
            ev.id.to_string(),
            ack.kid,
            to_json(&ack.jwk),
            ack.sig,
            received,
        ])?;
    }
    Ok(stored)
}

/// Writes one outbox row per planned notification.
fn enqueue(
    conn: &Connection,
    facts: &NotificationFacts,
    planned: &[PlannedNotification],
) -> StoreResult<()> {
    if planned.is_empty() {
        return Ok(());
    }
    let payload = to_json(facts);
    let created = format_ts(facts.at);
    let mut insert = conn.prepare_cached(
        "INSERT INTO notifications (id, incident_id, device_id, reason, channel, ladder, step,
                                    repeat_index, stop_on_claim, payload_json, created_at,
                                    due_at, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)",
    )?;
    for p in planned {
        insert.execute(params![
            Uuid::now_v7().to_string(),
            facts.incident_id.map(|i| i.to_string()),
            facts.device_id,
            facts.reason,
            p.channel,
            p.ladder,
            p.step,
            p.repeat_index,
            p.stop_on_claim,
            payload,
            created,
            format_ts(crate::store::outbox::due_at(facts.at, p.delay)),
        ])?;
    }
    Ok(())
}

/// Records a heartbeat (unless the device is revoked: distrusted for good, nothing is written)
/// and reads what its answer needs, under the write lock so the status answered is the status
/// that decided the write.
fn heartbeat(conn: &Connection, hb: &HeartbeatUpdate) -> StoreResult<HeartbeatRecorded> {
    let status = device_status(conn, &hb.device_id)?
        .ok_or_else(|| StoreError::NoSuchDevice(hb.device_id.clone()))?;
    if status == DeviceStatus::Revoked {
        // A revoked device is told nothing about incidents.
        return Ok(HeartbeatRecorded {
            status,
            claimed_incidents: Vec::new(),
        });
    }
    conn.prepare_cached(
        "UPDATE devices SET last_heartbeat_at = ?1, hotkey_json = ?2, queued = ?3,
                reported_last_seq = ?4,
                host_json = COALESCE(?5, host_json), hostname = COALESCE(?6, hostname),
                agent_version = COALESCE(?7, agent_version),
                location_json = COALESCE(?8, location_json),
                last_addr = COALESCE(?10, last_addr), alarm_refused = ?11
         WHERE device_id = ?9",
    )?
    .execute(params![
        format_ts(hb.received_at),
        to_json(&hb.hotkey),
        hb.queued,
        hb.reported_last_seq,
        hb.host.as_ref().map(to_json),
        hb.host.as_ref().map(|h| h.hostname.as_str()),
        hb.host.as_ref().map(|h| h.agent_version.as_str()),
        // Only an active device may move its station: a pending device is not trusted yet
        // and a disabled one no longer is (issue 15), so neither can send officers elsewhere.
        hb.location
            .as_ref()
            .filter(|_| status == DeviceStatus::Active)
            .map(to_json),
        hb.device_id,
        hb.client_addr,
        hb.alarm_refused,
    ])?;
    if let Some(p) = &hb.policy {
        conn.prepare_cached(
            "UPDATE devices SET policy_source = ?1, policy_sha256 = ?2 WHERE device_id = ?3",
        )?
        .execute(params![p.source, p.sha256, hb.device_id])?;
    }
    let mut claimed = conn.prepare_cached(super::CLAIMED_INCIDENTS)?;
    let ids = claimed
        .query_map([&hb.device_id], |row| row.get::<_, String>(0))?
        .map(|id| parse_uuid(&id?))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(HeartbeatRecorded {
        status,
        claimed_incidents: ids,
    })
}
