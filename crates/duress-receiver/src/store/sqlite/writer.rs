//! Group commit. One writer task owns one SQLite connection and is the only one that ingests
//! events and records heartbeats. It takes every request waiting in its queue (up to
//! [`MAX_BATCH`]), runs each in its own SAVEPOINT inside ONE `BEGIN IMMEDIATE` transaction, and
//! COMMITs once — one fsync for the whole batch — before it answers any of them. Batches form by
//! themselves: while one commit is on its way to the disk, the next requests queue up. Under no
//! load a batch is one request, so a lone alarm waits for nobody.
//!
//! What each request is promised is unchanged: its answer comes only after the COMMIT that
//! holds its rows (the raw token, the incident change, the console_events row); a failed COMMIT
//! fails every request of the batch (503: the agents keep their alarms and retry); a request
//! whose own statements fail is rolled back to its savepoint alone, so it cannot poison the
//! others. Deduplication happens under the write lock, inside the batch's transaction, so a
//! second copy of an event — in the same batch or a later one — finds the first one's row and
//! gets the same stored answer.

use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{Notify, mpsc, oneshot};

use super::super::{HeartbeatUpdate, IngestOutcome, NewEvent, StoreError, StoreResult};

/// At most this many requests share one transaction (bounds one commit's latency).
pub(super) const MAX_BATCH: usize = 256;
/// Requests waiting for the writer before senders wait for room.
const QUEUE: usize = 8192;

/// One unit of work for the writer.
pub(super) enum Job {
    Ingest {
        event: NewEvent,
        window: Duration,
        answer: oneshot::Sender<StoreResult<IngestOutcome>>,
    },
    Heartbeat {
        update: HeartbeatUpdate,
        answer: oneshot::Sender<StoreResult<()>>,
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

impl Writer {
    /// Opens the writer's own connection and starts its task.
    pub(super) async fn start(
        options: SqliteConnectOptions,
        wake: Arc<Notify>,
    ) -> StoreResult<Self> {
        let conn = options.connect().await?;
        let (queue, jobs) = mpsc::channel(QUEUE);
        tokio::spawn(run(conn, jobs, wake, options));
        Ok(Writer { queue })
    }

    pub(super) async fn ingest(
        &self,
        event: NewEvent,
        window: Duration,
    ) -> StoreResult<IngestOutcome> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Job::Ingest {
                event,
                window,
                answer,
            })
            .await
            .map_err(|_| closed())?;
        answered.await.map_err(|_| closed())?
    }

    pub(super) async fn heartbeat(&self, update: HeartbeatUpdate) -> StoreResult<()> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Job::Heartbeat { update, answer })
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
    Heartbeat(oneshot::Sender<StoreResult<()>>, StoreResult<()>),
}

impl Outcome {
    /// Sends the result as it is, or `error` in place of a success (the COMMIT failed).
    fn send(self, error: Option<&StoreError>) {
        let fail = |e: &StoreError| StoreError::Unavailable(e.to_string());
        match self {
            Outcome::Ingest(tx, r) => {
                let _ = tx.send(match (r, error) {
                    (Ok(_), Some(e)) => Err(fail(e)),
                    (r, _) => r,
                });
            }
            Outcome::Heartbeat(tx, r) => {
                let _ = tx.send(match (r, error) {
                    (Ok(()), Some(e)) => Err(fail(e)),
                    (r, _) => r,
                });
            }
        }
    }
}

async fn run(
    mut conn: SqliteConnection,
    mut jobs: mpsc::Receiver<Job>,
    wake: Arc<Notify>,
    options: SqliteConnectOptions,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut close = None;
    while close.is_none() {
        let Some(first) = jobs.recv().await else {
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
            super::replace_if_stuck(&mut conn, &options).await;
            commit_batch(&mut conn, &mut batch, &wake).await;
        }
    }
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        refuse(job);
    }
    let _ = conn.close().await;
    if let Some(done) = close {
        let _ = done.send(());
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

/// Runs `batch` in one transaction and answers every request after the COMMIT.
async fn commit_batch(conn: &mut SqliteConnection, batch: &mut Vec<Job>, wake: &Notify) {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut console_rows = false;
    let failure = match conn.begin_with("BEGIN IMMEDIATE").await {
        Err(e) => {
            // Nothing ran: every request gets the error.
            for job in batch.drain(..) {
                outcomes.push(pending(job));
            }
            Some(StoreError::from(e))
        }
        Ok(mut tx) => {
            let mut broken = None;
            for job in batch.drain(..) {
                if broken.is_some() {
                    outcomes.push(pending(job));
                    continue;
                }
                let (outcome, savepoint_lost) = run_one(&mut tx, job).await;
                if let Outcome::Ingest(_, Ok(IngestOutcome::Committed(_))) = &outcome {
                    console_rows = true;
                }
                outcomes.push(outcome);
                if let Some(e) = savepoint_lost {
                    broken = Some(e);
                }
            }
            match broken {
                // The transaction cannot be trusted any more: nothing of it is kept.
                Some(e) => {
                    let _ = tx.rollback().await;
                    Some(e)
                }
                None => tx.commit().await.err().map(StoreError::from),
            }
        }
    };
    if let Some(e) = &failure {
        tracing::error!(error = %e, requests = outcomes.len(), "group commit failed");
    } else if console_rows {
        // After COMMIT: a console told earlier could read a state without the event.
        wake.notify_one();
    }
    for o in outcomes {
        o.send(failure.as_ref());
    }
}

/// A request that was not run (its batch failed before reaching it): it gets the batch's error.
fn pending(job: Job) -> Outcome {
    match job {
        Job::Ingest { answer, .. } => Outcome::Ingest(answer, Ok(IngestOutcome::IdConflict)),
        Job::Heartbeat { answer, .. } => Outcome::Heartbeat(answer, Ok(())),
        // Close requests are taken out of the batch before it runs.
        Job::Close { done } => {
            let _ = done.send(());
            Outcome::Heartbeat(oneshot::channel().0, Ok(()))
        }
    }
}

/// Runs one request in its own savepoint. The second value is set when the savepoint could not
/// be rolled back (the whole transaction is then unusable).
async fn run_one(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    job: Job,
) -> (Outcome, Option<StoreError>) {
    let mut savepoint = match sqlx::Connection::begin(&mut **tx).await {
        Ok(s) => s,
        Err(e) => {
            let e = StoreError::from(e);
            let lost = Some(StoreError::Unavailable(e.to_string()));
            return (fail(job, e), lost);
        }
    };
    let result = match job {
        Job::Ingest {
            event,
            window,
            answer,
        } => {
            let r = super::ingest_in(&mut savepoint, &event, window).await;
            (Outcome::Ingest(answer, r), None::<()>)
        }
        Job::Heartbeat { update, answer } => {
            let r = super::heartbeat_in(&mut savepoint, &update).await;
            (Outcome::Heartbeat(answer, r), None)
        }
        Job::Close { done } => {
            let _ = done.send(());
            (Outcome::Heartbeat(oneshot::channel().0, Ok(())), None)
        }
    };
    let ok = match &result.0 {
        Outcome::Ingest(_, r) => r.is_ok(),
        Outcome::Heartbeat(_, r) => r.is_ok(),
    };
    let lost = if ok {
        savepoint
            .commit()
            .await
            .err()
            .map(|e| StoreError::Unavailable(e.to_string()))
    } else {
        savepoint
            .rollback()
            .await
            .err()
            .map(|e| StoreError::Unavailable(e.to_string()))
    };
    (result.0, lost)
}

fn fail(job: Job, e: StoreError) -> Outcome {
    match job {
        Job::Ingest { answer, .. } => Outcome::Ingest(answer, Err(e)),
        Job::Heartbeat { answer, .. } => Outcome::Heartbeat(answer, Err(e)),
        Job::Close { done } => {
            let _ = done.send(());
            Outcome::Heartbeat(oneshot::channel().0, Err(e))
        }
    }
}
