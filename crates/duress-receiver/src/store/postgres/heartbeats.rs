//! Heartbeats coalesced per receiver node (issue 12, docs/scale-out.md "How the nodes share
//! work"): at fleet size heartbeats are most of the traffic (300,000 stations at 60 s are 5,000
//! a second), and one statement and one commit each would make the database's commit rate, not
//! its work, the limit. So a node queues the heartbeats it verified, and a flusher writes
//! them group-commit style: as soon as one of its [`FLUSHES`] statements is free, whatever
//! queued meanwhile (at most [`MAX_BATCH`]) goes into **one statement**: an
//! `UPDATE … FROM unnest(…)` that locks the batch's device rows in id order, decides on each
//! device's status as the row lock left it (exactly as the one-heartbeat statement did) and
//! returns what each answer needs — the status and the claimed incidents — read in the same
//! statement.
//!
//! **The answer still follows the commit**: each request waits for its batch, so a 200 means the
//! heartbeat is written (on the heartbeat pool's `synchronous_commit = off` sessions, as before)
//! and what it answers was read with it. There is no timed window: an idle node writes a
//! heartbeat at once, a busy one batches by itself (what arrived while the statements in flight
//! ran), so coalescing never adds more than one statement's time to an answer and changes
//! nothing an agent or a console can see. Two heartbeats of one device in a batch go
//! into two statements, in order: each gets its own answer.
//!
//! **One bad heartbeat cannot fail the others**: when a batch's statement fails for anything but
//! the connection, its heartbeats are written one by one (the single-heartbeat statement), so
//! only the bad one fails — the same rule as the SQLite writer's savepoints.
//!
//! **No index churn**: the columns a heartbeat writes are in no index (`devices` has only its
//! primary key and the key thumbprint), and the table keeps free space in every page
//! (`fillfactor`, migration `20261204100000`), so the update is HOT: no index entry is
//! written and no new page is dirtied for it. State transitions (online, stale, offline) are
//! not written by heartbeats at all: they are derived at read time from `last_heartbeat_at`,
//! and the only stored transition — an outage — is recorded by the supervision sweep, which
//! one node runs for the cluster (`notify::supervision`).

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgPool;
use sqlx::Row as _;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::{ms, status};
use crate::store::{HeartbeatRecorded, HeartbeatUpdate, StoreError, StoreResult};

/// Heartbeats per statement at most (a full batch is flushed at once).
pub(super) const MAX_BATCH: usize = 500;
/// Batches in flight at once: a batch waiting for a row lock (a device in the middle of an
/// alarm) does not hold up the other. Each takes one heartbeat-pool connection; while both
/// run, the next batch forms. Measured (store level, 256 in flight, 2,000 devices, debug build,
/// testpg on 2 shared cores): 13,081 heartbeats/s, p50 14 ms, 399 commits for 20,000
/// heartbeats, against 3,729/s, p50 68 ms and 18,933 commits one statement each; a 100 ms
/// timed window instead gave 1,878/s at p50 125 ms (docs/scale-out.md, "Heartbeats at scale").
const FLUSHES: usize = 2;
/// Heartbeats queued at most; beyond, a heartbeat is answered 503 at once (the agent sends the
/// next one on schedule) rather than queueing without bound.
const QUEUE: usize = 20_000;

type Reply = oneshot::Sender<StoreResult<HeartbeatRecorded>>;

/// The node's heartbeat queue; its flusher runs while a `Coalescer` (a store clone) lives.
#[derive(Debug, Clone)]
pub(super) struct Coalescer {
    queue: mpsc::Sender<(HeartbeatUpdate, Reply)>,
}

impl Coalescer {
    pub(super) fn start(pool: PgPool) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(flusher(pool, rx));
        Coalescer { queue }
    }

    /// Queues `hb` and waits for its batch's commit.
    pub(super) async fn record(&self, hb: HeartbeatUpdate) -> StoreResult<HeartbeatRecorded> {
        let (reply, answer) = oneshot::channel();
        self.queue.try_send((hb, reply)).map_err(|e| {
            StoreError::Unavailable(match e {
                mpsc::error::TrySendError::Full(_) => "too many heartbeats queued".to_owned(),
                mpsc::error::TrySendError::Closed(_) => "the heartbeat writer stopped".to_owned(),
            })
        })?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the heartbeat writer stopped".to_owned()))?
    }
}

async fn flusher(pool: PgPool, mut rx: mpsc::Receiver<(HeartbeatUpdate, Reply)>) {
    let flushes = Arc::new(Semaphore::new(FLUSHES));
    // Ends when every store clone (every sender) is gone.
    while let Some(first) = rx.recv().await {
        // Group commit: wait for a free flush first, then take whatever queued meanwhile. An
        // idle node writes a heartbeat at once (no added latency); a busy one batches by
        // itself, as many heartbeats per statement as arrived while the flushes in flight ran.
        let Ok(permit) = flushes.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            flush(&pool, batch).await;
            drop(permit);
        });
    }
}

/// Writes one batch and answers each of its heartbeats.
async fn flush(pool: &PgPool, batch: Vec<(HeartbeatUpdate, Reply)>) {
    // One row per device and statement: a device's second heartbeat in the batch goes into a
    // second statement after the first (and so on), so each keeps its own answer, the later
    // one is written last, and a bad one shares its fate with no other.
    let mut layers: Vec<Vec<(HeartbeatUpdate, Reply)>> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(batch.len());
    for item in batch {
        let k = seen.entry(item.0.device_id.clone()).or_insert(0);
        if layers.len() <= *k {
            layers.push(Vec::new());
        }
        layers[*k].push(item);
        *k += 1;
    }
    for layer in layers {
        write_layer(pool, layer).await;
    }
}

/// Writes heartbeats of distinct devices in one statement and answers each.
async fn write_layer(pool: &PgPool, layer: Vec<(HeartbeatUpdate, Reply)>) {
    match write_batch(pool, &layer).await {
        Ok(mut answers) => {
            for (hb, reply) in layer {
                let answer = answers
                    .remove(&hb.device_id)
                    .unwrap_or_else(|| Err(StoreError::NoSuchDevice(hb.device_id.clone())));
                // A request that went away (its client disconnected) needs no answer.
                let _ = reply.send(answer);
            }
        }
        Err(e) if is_connection(&e) => {
            let message = format!("recording heartbeats: {e}");
            for (_, reply) in layer {
                let _ = reply.send(Err(StoreError::Unavailable(message.clone())));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, heartbeats = layer.len(),
                "a heartbeat batch failed; writing its heartbeats one by one");
            for (hb, reply) in layer {
                let _ = reply.send(super::ingest::record_one(pool, hb).await);
            }
        }
    }
}

fn is_connection(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    )
}

/// The batch in one statement; each device's answer (devices not found have none).
async fn write_batch(
    pool: &PgPool,
    batch: &[(HeartbeatUpdate, Reply)],
) -> Result<HashMap<String, StoreResult<HeartbeatRecorded>>, sqlx::Error> {
    let n = batch.len();
    let mut device_id = Vec::with_capacity(n);
    let mut at = Vec::with_capacity(n);
    let mut hotkey = Vec::with_capacity(n);
    let mut queued = Vec::with_capacity(n);
    let mut reported = Vec::with_capacity(n);
    let mut host: Vec<Option<String>> = Vec::with_capacity(n);
    let mut hostname: Vec<Option<String>> = Vec::with_capacity(n);
    let mut agent_version: Vec<Option<String>> = Vec::with_capacity(n);
    let mut location: Vec<Option<String>> = Vec::with_capacity(n);
    let mut policy_source: Vec<Option<String>> = Vec::with_capacity(n);
    let mut policy_sha256: Vec<Option<String>> = Vec::with_capacity(n);
    let mut addr: Vec<Option<String>> = Vec::with_capacity(n);
    let mut alarm_refused: Vec<Option<String>> = Vec::with_capacity(n);
    for (hb, _) in batch {
        device_id.push(hb.device_id.clone());
        at.push(ms(hb.received_at));
        hotkey.push(json(&hb.hotkey));
        queued.push(hb.queued);
        reported.push(hb.reported_last_seq);
        host.push(hb.host.as_ref().map(json));
        hostname.push(hb.host.as_ref().map(|h| h.hostname.clone()));
        agent_version.push(hb.host.as_ref().map(|h| h.agent_version.clone()));
        location.push(hb.location.as_ref().map(json));
        policy_source.push(hb.policy.as_ref().map(|p| p.source.clone()));
        policy_sha256.push(hb.policy.as_ref().map(|p| p.sha256.clone()));
        addr.push(hb.client_addr.clone());
        alarm_refused.push(hb.alarm_refused.clone());
    }
    // `current` locks the batch's device rows in id order (so two nodes' batches, and a batch
    // and an alarm, never deadlock) and yields each row as a concurrent status change left it;
    // `recorded` writes on that status (a revoked device: nothing; only an active one moves
    // its station, issue 15); the outer query answers every input row, from the same status.
    let rows = sqlx::query(
        "WITH input AS (
             SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::int8[],
                                  $5::int8[], $6::text[], $7::text[], $8::text[], $9::text[],
                                  $10::text[], $11::text[], $12::text[], $13::text[])
               AS i(device_id, at, hotkey, queued, reported_last_seq, host, hostname,
                    agent_version, location, policy_source, policy_sha256, addr, alarm_refused)
         ), current AS (
             SELECT d.device_id, d.status FROM devices d
              WHERE d.device_id IN (SELECT device_id FROM input)
              ORDER BY d.device_id FOR UPDATE
         ), recorded AS (
             UPDATE devices d SET last_heartbeat_at = i.at, hotkey_json = i.hotkey::jsonb,
                    queued = i.queued, reported_last_seq = i.reported_last_seq,
                    host_json = COALESCE(i.host::jsonb, d.host_json),
                    hostname = COALESCE(i.hostname, d.hostname),
                    agent_version = COALESCE(i.agent_version, d.agent_version),
                    location_json = CASE WHEN c.status = 'active'
                                         THEN COALESCE(i.location::jsonb, d.location_json)
                                         ELSE d.location_json END,
                    policy_source = COALESCE(i.policy_source, d.policy_source),
                    policy_sha256 = COALESCE(i.policy_sha256, d.policy_sha256),
                    last_addr = COALESCE(i.addr, d.last_addr), alarm_refused = i.alarm_refused
               FROM input i JOIN current c ON c.device_id = i.device_id
              WHERE d.device_id = i.device_id AND c.status <> 'revoked'
              RETURNING d.device_id
         )
         SELECT c.device_id, c.status,
                -- Its own open, claimed incidents and those its presses joined (same-room
                -- grouping): two indexed probes, never a scan of incidents.
                ARRAY(SELECT o.incident_id FROM (
                         SELECT n.incident_id, n.opened_at FROM incidents n
                          WHERE n.device_id = c.device_id AND n.status = 'open'
                            AND n.claimed_by IS NOT NULL
                         UNION
                         SELECT n.incident_id, n.opened_at FROM incident_joins j
                           JOIN incidents n ON n.incident_id = j.incident_id
                          WHERE j.device_id = c.device_id AND n.status = 'open'
                            AND n.claimed_by IS NOT NULL
                       ) o
                       WHERE c.status <> 'revoked'
                       ORDER BY o.opened_at, o.incident_id) AS claimed
           FROM current c",
    )
    .bind(&device_id)
    .bind(&at)
    .bind(&hotkey)
    .bind(&queued)
    .bind(&reported)
    .bind(&host)
    .bind(&hostname)
    .bind(&agent_version)
    .bind(&location)
    .bind(&policy_source)
    .bind(&policy_sha256)
    .bind(&addr)
    .bind(&alarm_refused)
    .fetch_all(pool)
    .await?;
    let mut answers = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: String = row.try_get("device_id")?;
        let text: String = row.try_get("status")?;
        let claimed: Vec<Uuid> = row.try_get("claimed")?;
        answers.insert(
            id,
            status(&text).map(|status| HeartbeatRecorded {
                status,
                claimed_incidents: claimed,
            }),
        );
    }
    Ok(answers)
}

/// A value stored as `jsonb`, as text (the batch binds them as `text[]`).
fn json<T: serde::Serialize>(v: &T) -> String {
    // Serialising our own claim types cannot fail (no maps with non-string keys).
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}
