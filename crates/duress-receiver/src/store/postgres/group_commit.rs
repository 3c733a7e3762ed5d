//! Group commit for event ingest on PostgreSQL, the counterpart of the SQLite writer thread.
//!
//! Why: every transaction that appends a live-log (console) row holds the log lock
//! ([`super::log::LOG_LOCK`]) until its COMMIT, so consoles read live rows in id order without
//! skipping one still in flight. With one transaction per event, that lock serialised every
//! alarm behind the previous alarm's commit fsync: measured ≈ 530–600 events/s whatever the
//! concurrency (docs/PERFORMANCE.md, "Storage backends"). Here a writer task takes every event
//! waiting in the queue (up to [`MAX_BATCH`]), runs each in its own SAVEPOINT inside ONE
//! transaction, appends the batch's live rows last, and COMMITs once — one WAL flush (and, with a
//! synchronous standby, one round trip to it) for the whole batch — before it answers any of
//! them. Under no load a batch is one event, so a lone alarm waits for nobody.
//!
//! What each event is promised (the same as on SQLite): its answer comes only after the COMMIT
//! that holds its rows; a failed COMMIT fails every event of the batch (503: agents keep their
//! alarms and retry); an event whose own statements fail is rolled back to its savepoint alone.
//! A second copy of an event in the same batch finds the first one's row (same transaction) and
//! gets the same stored answer.
//!
//! Lock order, which keeps concurrent batches (of this receiver's [`WRITERS`] or of other
//! receivers) from deadlocking: with same-room grouping on, the rooms of the batch's stations
//! first (transaction advisory locks in ascending key order, `ingest::lock_rooms`; only
//! batches take them), then device rows in
//! ascending device id (the batch is sorted), then each device's open incident (or its room's),
//! and the log lock last, once, for all the batch's live rows — the order every other writer
//! also keeps (the log lock is always taken last).

use std::collections::BTreeSet;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

use super::{ingest, log};
use crate::incidents::Grouping;
use crate::store::{IngestOutcome, NewEvent, PlannerSlot, StoreError, StoreResult};

/// At most this many events share one transaction (bounds one commit's latency).
const MAX_BATCH: usize = 128;
/// Events waiting for the writer before senders wait for room.
const QUEUE: usize = 8192;
/// Batches in flight at once. One writer alone was bound by its statements' round trips
/// (measured: ≈ 800 events/s with both the receiver and PostgreSQL well under a core each);
/// several overlap their per-event statements, and only the short tail of each batch — its live
/// rows and COMMIT — is serialised by the log lock. Each takes one of the alarm pool's
/// connections.
const WRITERS: usize = 4;

struct Job {
    event: Box<NewEvent>,
    grouping: Grouping,
    answer: oneshot::Sender<StoreResult<IngestOutcome>>,
}

/// The handle events are sent through; the writer task ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub(super) struct IngestWriter {
    jobs: mpsc::Sender<Job>,
}

impl IngestWriter {
    /// Starts the writer task on the current tokio runtime.
    pub(super) fn start(
        pool: PgPool,
        planner: Arc<PlannerSlot>,
        wake: Arc<Notify>,
        bell: Arc<log::Doorbell>,
    ) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(run(
                rx.clone(),
                pool.clone(),
                planner.clone(),
                wake.clone(),
                bell.clone(),
            ));
        }
        IngestWriter { jobs }
    }

    /// Ingests one event; answers after the COMMIT that holds it.
    pub(super) async fn ingest(
        &self,
        event: NewEvent,
        grouping: Grouping,
    ) -> StoreResult<IngestOutcome> {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            event: Box::new(event),
            grouping,
            answer,
        };
        let gone = || StoreError::Unavailable("the ingest writer has stopped".into());
        self.jobs.send(job).await.map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }
}

/// One writer: takes what is waiting (the queue is held only while taking), commits it, answers.
async fn run(
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    pool: PgPool,
    planner: Arc<PlannerSlot>,
    wake: Arc<Notify>,
    bell: Arc<log::Doorbell>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut queue = jobs.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        // Stable: two copies of one event keep their arrival order.
        batch.sort_by(|a, b| a.event.device_id.cmp(&b.event.device_id));
        let jobs_now = std::mem::take(&mut batch);
        let results = commit_batch(&pool, &planner, &bell, &jobs_now).await;
        // After COMMIT: a console told earlier could read a state without the event.
        wake.notify_one();
        for (job, result) in jobs_now.into_iter().zip(results) {
            let _ = job.answer.send(result);
        }
    }
}

/// Runs the batch in one transaction; one result per job, in the jobs' order.
async fn commit_batch(
    pool: &PgPool,
    planner: &PlannerSlot,
    bell: &log::Doorbell,
    jobs: &[Job],
) -> Vec<StoreResult<IngestOutcome>> {
    match try_batch(pool, planner, bell, jobs).await {
        Ok(results) => results,
        Err(e) => {
            tracing::warn!(error = %e, events = jobs.len(), "ingest batch failed; agents will resend");
            jobs.iter()
                .map(|_| Err(StoreError::Unavailable(e.to_string())))
                .collect()
        }
    }
}

async fn try_batch(
    pool: &PgPool,
    planner: &PlannerSlot,
    bell: &log::Doorbell,
    jobs: &[Job],
) -> StoreResult<Vec<StoreResult<IngestOutcome>>> {
    let mut tx = pool.begin().await?;
    let mut results = Vec::with_capacity(jobs.len());
    let mut live_rows = Vec::new();
    // Rooms before any device row (see the lock order above).
    let grouped: Vec<&NewEvent> = jobs
        .iter()
        .filter(|j| j.grouping.same_room)
        .map(|j| j.event.as_ref())
        .collect();
    let locked_rooms = if grouped.is_empty() {
        BTreeSet::new()
    } else {
        ingest::lock_rooms(&mut tx, &grouped).await?
    };
    for job in jobs {
        sqlx::query("SAVEPOINT ingest_event")
            .execute(&mut *tx)
            .await?;
        match ingest::ingest_in(&mut tx, &job.event, job.grouping, &locked_rooms, planner).await {
            Ok((outcome, live)) => {
                sqlx::query("RELEASE SAVEPOINT ingest_event")
                    .execute(&mut *tx)
                    .await?;
                live_rows.extend(live);
                results.push(Ok(outcome));
            }
            Err(e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT ingest_event")
                    .execute(&mut *tx)
                    .await?;
                results.push(Err(e));
            }
        }
    }
    // Last, under the log lock: a console can never see an incident without being told, nor be
    // told of one that was rolled back.
    for row in &live_rows {
        log::live(
            bell,
            &mut tx,
            row.at,
            row.kind,
            row.incident_id,
            &row.payload,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(results)
}
