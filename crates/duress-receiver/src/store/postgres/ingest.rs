//! The alarm path: enrollment, event ingest and heartbeats.

use std::collections::BTreeSet;

use duress_core::{DeviceStatus, EventKind};
use sqlx::types::Json;
use sqlx::{PgConnection, Row as _};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{PostgresStore, find_event, log, ms, status};
use crate::incidents::{self, Grouping, OpenIncident, Placement, RoomIncident};
use crate::store::{
    Approve, EnrollOutcome, EnrollRefusal, EnrollRequest, HeartbeatRecorded, HeartbeatUpdate,
    IngestOutcome, NewEvent, StoreError, StoreResult, StoredEvent,
};

/// PostgreSQL's SQLSTATE for a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

fn is_unique_violation(source: &sqlx::Error) -> bool {
    matches!(source, sqlx::Error::Database(db) if db.code().as_deref() == Some(UNIQUE_VIOLATION))
}

impl PostgresStore {
    pub(super) async fn enroll_impl(&self, req: EnrollRequest) -> StoreResult<EnrollOutcome> {
        // The same key enrolling with two different tokens at once: the loser's insert hits the
        // key's unique constraint; run again, it finds the winner's device.
        match self.enroll_once(&req).await {
            Err(Attempt::KeyRace) => self.enroll_once(&req).await.map_err(Attempt::into_error),
            other => other.map_err(Attempt::into_error),
        }
    }

    async fn enroll_once(&self, req: &EnrollRequest) -> Result<EnrollOutcome, Attempt> {
        // An unknown token is refused on a plain read on the console pool, before taking an
        // alarm connection or any row lock: a flood of made-up tokens never competes with
        // alarms (issue 15). The token is read again under its row lock below.
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM enrollment_tokens WHERE token_hash = $1")
                .bind(&req.token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::from)?;
        if exists.is_none() {
            return Ok(EnrollOutcome::Refused(EnrollRefusal::TokenInvalid));
        }
        let mut tx = self.begin_alarm().await?;
        // The token's row lock serialises enrollments with this token: the use count read
        // here is the one the decrement below changes.
        let token = sqlx::query(
            "SELECT approve, uses_left, expires_at, revoked FROM enrollment_tokens
             WHERE token_hash = $1 FOR UPDATE",
        )
        .bind(&req.token_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let Some(token) = token else {
            return Ok(EnrollOutcome::Refused(EnrollRefusal::TokenInvalid));
        };
        let token_problem = token_refusal(&token, req.now)?;

        let known = sqlx::query(
            "SELECT device_id, status, token_hash FROM devices WHERE key_thumbprint = $1",
        )
        .bind(&req.key_thumbprint)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if let Some(device) = known {
            let device_id: String = device.try_get("device_id").map_err(StoreError::from)?;
            let status = status(
                &device
                    .try_get::<String, _>("status")
                    .map_err(StoreError::from)?,
            )?;
            let enrolled_with: String = device.try_get("token_hash").map_err(StoreError::from)?;
            // Nothing is written on this path; dropping `tx` rolls back.
            return Ok(crate::store::rules::known_key_outcome(
                device_id,
                status,
                enrolled_with == req.token_hash,
                token_problem,
            ));
        }
        if let Some(refusal) = token_problem {
            return Ok(EnrollOutcome::Refused(refusal));
        }
        let approve: String = token.try_get("approve").map_err(StoreError::from)?;
        let status = match Approve::parse(&approve) {
            Some(Approve::Manual) => DeviceStatus::Pending,
            _ => DeviceStatus::Active,
        };
        // Consumed exactly once: under the row lock, and refused by the database itself
        // should the count already be 0.
        let left: Option<i64> = sqlx::query_scalar(
            "UPDATE enrollment_tokens SET uses_left = uses_left - 1
             WHERE token_hash = $1 AND uses_left > 0 RETURNING uses_left",
        )
        .bind(&req.token_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if left.is_none() {
            return Ok(EnrollOutcome::Refused(EnrollRefusal::TokenUsedUp));
        }
        let inserted = sqlx::query(
            "INSERT INTO devices (device_id, status, public_jwk, key_thumbprint, token_hash, hostname,
                                  host_json, location_json, agent_version, enrolled_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&req.new_device_id)
        .bind(status.as_str())
        .bind(Json(&req.public_jwk))
        .bind(&req.key_thumbprint)
        .bind(&req.token_hash)
        .bind(&req.host.hostname)
        .bind(Json(&req.host))
        .bind(Json(&req.location))
        .bind(&req.host.agent_version)
        .bind(ms(req.now))
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            if is_unique_violation(&e) {
                return Err(Attempt::KeyRace);
            }
            return Err(StoreError::from(e).into());
        }
        // Last: the log lock is the last lock a transaction takes.
        log::audit(
            &mut tx,
            &self.audit_key,
            req.now,
            "enrollment",
            "device.enroll",
            &req.new_device_id,
            &req.audit_detail(status),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.keys.enrolled(&req.new_device_id);
        Ok(EnrollOutcome::Enrolled {
            device_id: req.new_device_id.clone(),
            status,
        })
    }

    /// Dedupes by id, checks the device may raise alarms, refuses another device's id, and
    /// writes the event — in that order (docs/protocol.md §5.2), all under the device's row
    /// lock. Batched with other events into one transaction by the ingest writer
    /// ([`super::group_commit`]); answered after that transaction's COMMIT.
    pub(super) async fn ingest_impl(
        &self,
        ev: NewEvent,
        grouping: Grouping,
    ) -> StoreResult<IngestOutcome> {
        self.ingest_writer.ingest(ev, grouping).await
    }

    /// Records a heartbeat (unless the device is revoked) and reads what its answer needs:
    /// queued with the other heartbeats of this node and written with them in one statement
    /// on the heartbeat pool (`synchronous_commit = off`, see [`PostgresStore`]); returns
    /// after that statement committed (`heartbeats.rs`).
    pub(super) async fn heartbeat_impl(
        &self,
        hb: HeartbeatUpdate,
    ) -> StoreResult<HeartbeatRecorded> {
        self.heartbeats.record(hb).await
    }
}

/// One heartbeat in one statement: what a batch falls back to when its statement failed
/// (`heartbeats.rs`), so only the bad heartbeat fails.
///
/// Records a heartbeat (unless the device is revoked) and reads what its answer needs, under
/// the device's row lock so the status answered is the one that decided the write. The
/// `current` CTE's `FOR UPDATE` waits for a concurrent status change and yields the row as that
/// change left it (READ COMMITTED re-reads a row it had to wait for); the UPDATE and the
/// claimed-incident read then decide on that status. A data-modifying CTE runs exactly once
/// whether or not the outer query reads it.
pub(super) async fn record_one(
    pool: &sqlx::PgPool,
    hb: HeartbeatUpdate,
) -> StoreResult<HeartbeatRecorded> {
    let row = sqlx::query(
        "WITH current AS (
             SELECT status FROM devices WHERE device_id = $9 FOR UPDATE
         ), recorded AS (
             UPDATE devices SET last_heartbeat_at = $1, hotkey_json = $2, queued = $3,
                    reported_last_seq = $4,
                    host_json = COALESCE($5, host_json), hostname = COALESCE($6, hostname),
                    agent_version = COALESCE($7, agent_version),
                    -- Only an active device may move its station (issue 15): a pending
                    -- or disabled one cannot send officers elsewhere.
                    location_json = CASE WHEN (SELECT status FROM current) = 'active'
                                         THEN COALESCE($8, location_json)
                                         ELSE location_json END,
                    policy_source = COALESCE($10, policy_source),
                    policy_sha256 = COALESCE($11, policy_sha256),
                    last_addr = COALESCE($12, last_addr), alarm_refused = $13
              WHERE device_id = $9 AND (SELECT status FROM current) <> 'revoked'
              RETURNING device_id
         )
         SELECT (SELECT status FROM current) AS status,
                ARRAY(SELECT o.incident_id FROM (
                         SELECT incident_id, opened_at FROM incidents
                          WHERE device_id = $9 AND status = 'open' AND claimed_by IS NOT NULL
                         UNION
                         SELECT n.incident_id, n.opened_at FROM incident_joins j
                           JOIN incidents n ON n.incident_id = j.incident_id
                          WHERE j.device_id = $9 AND n.status = 'open'
                            AND n.claimed_by IS NOT NULL
                       ) o
                       WHERE (SELECT status FROM current) <> 'revoked'
                       ORDER BY o.opened_at, o.incident_id) AS claimed",
    )
    .bind(ms(hb.received_at))
    .bind(Json(&hb.hotkey))
    .bind(hb.queued)
    .bind(hb.reported_last_seq)
    .bind(hb.host.as_ref().map(Json))
    .bind(hb.host.as_ref().map(|h| h.hostname.as_str()))
    .bind(hb.host.as_ref().map(|h| h.agent_version.as_str()))
    .bind(hb.location.as_ref().map(Json))
    .bind(&hb.device_id)
    .bind(hb.policy.as_ref().map(|p| p.source.as_str()))
    .bind(hb.policy.as_ref().map(|p| p.sha256.as_str()))
    .bind(hb.client_addr.as_deref())
    .bind(hb.alarm_refused.as_deref())
    .fetch_one(pool)
    .await?;
    let current: Option<String> = row.try_get("status")?;
    let status = status(&current.ok_or_else(|| StoreError::NoSuchDevice(hb.device_id.clone()))?)?;
    // Revoked: distrusted for good; nothing was written and it is told nothing (the
    // query's conditions already saw to both).
    let claimed_incidents: Vec<Uuid> = row.try_get("claimed")?;
    Ok(HeartbeatRecorded {
        status,
        claimed_incidents,
    })
}

/// Why one enrollment attempt did not answer.
enum Attempt {
    /// Lost a race for the key's unique constraint; worth one more attempt.
    KeyRace,
    Failed(StoreError),
}

impl From<StoreError> for Attempt {
    fn from(e: StoreError) -> Self {
        Attempt::Failed(e)
    }
}

impl From<sqlx::Error> for Attempt {
    fn from(e: sqlx::Error) -> Self {
        Attempt::Failed(e.into())
    }
}

impl Attempt {
    fn into_error(self) -> StoreError {
        match self {
            Attempt::KeyRace => {
                StoreError::Unavailable("the same key is being enrolled concurrently".into())
            }
            Attempt::Failed(e) => e,
        }
    }
}

/// `Some(refusal)` when the token cannot enroll a new device now.
fn token_refusal(
    token: &sqlx::postgres::PgRow,
    now: OffsetDateTime,
) -> StoreResult<Option<EnrollRefusal>> {
    if token.try_get::<bool, _>("revoked")? {
        return Ok(Some(EnrollRefusal::TokenRevoked));
    }
    if let Some(expires) = token.try_get::<Option<OffsetDateTime>, _>("expires_at")?
        && expires <= now
    {
        return Ok(Some(EnrollRefusal::TokenExpired));
    }
    if token.try_get::<i64, _>("uses_left")? <= 0 {
        return Ok(Some(EnrollRefusal::TokenUsedUp));
    }
    Ok(None)
}

/// A live-log row an ingested event appends; written by the batch, last, under the log lock.
pub(super) struct LiveRow {
    pub(super) at: OffsetDateTime,
    pub(super) kind: &'static str,
    pub(super) incident_id: Option<Uuid>,
    pub(super) payload: String,
}

/// One event's part of an ingest batch (see [`PostgresStore::ingest_impl`] for the order of
/// the checks), inside the batch's transaction; the live row is returned, not written.
pub(super) async fn ingest_in(
    conn: &mut PgConnection,
    ev: &NewEvent,
    grouping: Grouping,
    locked_rooms: &BTreeSet<String>,
    planner: &crate::store::PlannerSlot,
) -> StoreResult<(IngestOutcome, Option<LiveRow>)> {
    // Serialises this device's events (grouping decides on what the previous one wrote)
    // and fixes its status until commit.
    let current: Option<String> =
        sqlx::query_scalar("SELECT status FROM devices WHERE device_id = $1 FOR UPDATE")
            .bind(&ev.device_id)
            .fetch_optional(&mut *conn)
            .await?;
    let found = find_event(&mut *conn, ev.id).await?;
    if let Some(found) = found.as_ref().filter(|f| f.device_id == ev.device_id) {
        return Ok((IngestOutcome::Duplicate(found.clone()), None));
    }
    match current.as_deref().map(status).transpose()? {
        Some(DeviceStatus::Active) => {}
        Some(other) => return Ok((IngestOutcome::DeviceNotActive(other), None)),
        None => return Err(StoreError::NoSuchDevice(ev.device_id.clone())),
    }
    // Another device's id: refused after the status (a disabled device hears "disabled").
    if found.is_some() {
        return Ok((IngestOutcome::IdConflict, None));
    }
    match insert_event(conn, ev, grouping, locked_rooms, planner).await? {
        Some((stored, live)) => Ok((IngestOutcome::Committed(stored), Some(live))),
        // Another device committed this id after our read (its own device lock does not
        // exclude us): nothing of ours was written yet.
        None => {
            let theirs = find_event(&mut *conn, ev.id).await?;
            Ok((
                match theirs {
                    Some(t) if t.device_id == ev.device_id => IngestOutcome::Duplicate(t),
                    _ => IngestOutcome::IdConflict,
                },
                None,
            ))
        }
    }
}

/// Writes the event first (`ON CONFLICT (id) DO NOTHING`: `None` when the id exists, with
/// nothing written), then its incident, the device's counters and its live-log row.
async fn insert_event(
    conn: &mut PgConnection,
    ev: &NewEvent,
    grouping: Grouping,
    locked_rooms: &BTreeSet<String>,
    planner: &crate::store::PlannerSlot,
) -> StoreResult<Option<(StoredEvent, LiveRow)>> {
    let window = grouping.window;
    // Computed from the stored (millisecond) values, so the answer is a function of columns.
    let received_at = ms(ev.received_at);
    let occurred_at = ms(ev.occurred_at);
    let delay_ms = crate::store::delay_ms(occurred_at, received_at);
    let delayed = delay_ms > duress_core::clock::DELAYED_AFTER.whole_milliseconds() as i64;

    let latest_open = if ev.kind == EventKind::Test {
        None
    } else {
        // Locked: an officer resolving it now either finishes first (and it is not open any
        // more) or waits for this event to join it.
        let row = sqlx::query(
            "SELECT incident_id, last_press_at,
                    (SELECT COUNT(*) FROM incidents
                     WHERE device_id = $1 AND status = 'open') AS open_count
             FROM incidents
             WHERE device_id = $1 AND status = 'open'
             ORDER BY last_press_at DESC, incident_id DESC LIMIT 1 FOR UPDATE",
        )
        .bind(&ev.device_id)
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            Some(row) => Some(OpenIncident {
                incident_id: row.try_get("incident_id")?,
                last_press_at: row.try_get("last_press_at")?,
                open_count: u64::try_from(row.try_get::<i64, _>("open_count")?).unwrap_or(0),
            }),
            None => None,
        }
    };
    let mut placement = incidents::place(ev.kind, latest_open, occurred_at, window);
    let room = if placement == Placement::Open {
        room_of_device(&mut *conn, &ev.device_id, &ev.location).await?
    } else {
        None
    };
    // Only under the room's transaction lock (taken by the batch before any device lock), so
    // two stations of one room pressing at once, in two batches or on two receivers, cannot
    // both open an incident. A room not locked (its station's registered location changed
    // since the batch read it) is not grouped this time: the press opens its own incident.
    if let Some(room) = room
        .as_deref()
        .filter(|r| grouping.same_room && locked_rooms.contains(*r))
    {
        let row = sqlx::query(
            "SELECT incident_id, last_press_at FROM incidents
             WHERE room_key = $1 AND status = 'open'
             ORDER BY last_press_at DESC, incident_id DESC LIMIT 1 FOR UPDATE",
        )
        .bind(room)
        .fetch_optional(&mut *conn)
        .await?;
        let room_open = match row {
            Some(row) => Some(RoomIncident {
                incident_id: row.try_get("incident_id")?,
                last_press_at: row.try_get("last_press_at")?,
            }),
            None => None,
        };
        placement = incidents::place_in_room(placement, room_open, occurred_at, window);
        // Joined another station's incident: remembered for this station's covert
        // acknowledgement (its heartbeats list the incident once it is claimed).
        if let Placement::JoinPress(id) = placement {
            sqlx::query(
                "INSERT INTO incident_joins (device_id, incident_id) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&ev.device_id)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        }
    }
    let incident_id = match placement {
        Placement::Apart => None,
        Placement::Open => Some(Uuid::now_v7()),
        Placement::JoinPress(id) | Placement::JoinCancel(id) => Some(id),
    };

    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO events (id, device_id, incident_id, seq, kind, source, occurred_at, sent_at,
                             received_at, delay_ms, delayed, location_json, host_json, jws,
                             client_addr)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (id) DO NOTHING RETURNING id",
    )
    .bind(ev.id)
    .bind(&ev.device_id)
    .bind(incident_id)
    .bind(ev.seq)
    .bind(ev.kind.as_str())
    .bind(ev.source.as_str())
    .bind(occurred_at)
    .bind(ms(ev.sent_at))
    .bind(received_at)
    .bind(delay_ms)
    .bind(delayed)
    .bind(Json(&ev.location))
    .bind(Json(&ev.host))
    .bind(&ev.jws)
    .bind(ev.client_addr.as_deref())
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_none() {
        return Ok(None);
    }

    match placement {
        Placement::Apart => {}
        Placement::Open => {
            sqlx::query(
                "INSERT INTO incidents (incident_id, device_id, status, opened_at, first_occurred_at,
                                        last_press_at, press_count, kind, source, location_json,
                                        host_json, delayed, delay_ms, room_key)
                 VALUES ($1, $2, 'open', $3, $4, $4, 1, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(incident_id)
            .bind(&ev.device_id)
            .bind(received_at)
            .bind(occurred_at)
            .bind(ev.kind.as_str())
            .bind(ev.source.as_str())
            .bind(Json(&ev.location))
            .bind(Json(&ev.host))
            .bind(delayed)
            .bind(delay_ms)
            .bind(room.as_deref())
            .execute(&mut *conn)
            .await?;
        }
        Placement::JoinPress(id) => {
            sqlx::query(
                "UPDATE incidents SET press_count = press_count + 1,
                        last_press_at = GREATEST(last_press_at, $1) WHERE incident_id = $2",
            )
            .bind(occurred_at)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        }
        Placement::JoinCancel(id) => {
            sqlx::query(
                "UPDATE incidents SET cancelled_at = COALESCE(cancelled_at, $1)
                 WHERE incident_id = $2",
            )
            .bind(received_at)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        }
    }

    let is_test = ev.kind == EventKind::Test;
    sqlx::query(
        "UPDATE devices SET last_seq = GREATEST(COALESCE(last_seq, $1), $1), last_event_at = $2,
                last_self_test_at = CASE WHEN $3 THEN $2 ELSE last_self_test_at END,
                last_self_test_id = CASE WHEN $3 THEN $4 ELSE last_self_test_id END,
                last_addr = COALESCE($6, last_addr)
         WHERE device_id = $5",
    )
    .bind(ev.seq)
    .bind(received_at)
    .bind(is_test)
    .bind(ev.id)
    .bind(&ev.device_id)
    .bind(ev.client_addr.as_deref())
    .execute(&mut *conn)
    .await?;

    // The outbox rows, in this transaction: an acknowledged alarm has its notifications
    // queued, a rolled-back one has none.
    let opened = match placement {
        Placement::Open => incident_id,
        _ => None,
    };
    if let Some(facts) = crate::store::outbox::event_facts(ev, opened) {
        super::outbox::enqueue(conn, &facts, &planner.plan(&facts)).await?;
    }

    // Written by the batch, last, under the log lock: a console can never see the incident
    // without being told, nor be told of one that was rolled back.
    let (kind, payload) = crate::store::event_live_row(ev, incident_id, opened.is_some());
    let live = LiveRow {
        at: ev.received_at,
        kind,
        incident_id,
        payload,
    };

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
        super::insert_ack(conn, ev.id, ack, received_at).await?;
    }
    Ok(Some((stored, live)))
}

/// The first key of the two-key advisory locks on rooms (same-room grouping; "Rm"), apart
/// from the cluster leases' class. The second key is a 32-bit hash of the room key: two rooms
/// hashing alike share a lock, which only serialises their presses, never groups them.
const ROOM_LOCK_CLASS: i32 = 0x526d;

/// The second key of a room's advisory lock: the first four bytes of SHA-256 of its key.
pub(super) fn room_lock_key(room: &str) -> i32 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(room.as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The rooms of the stations of `events` (read without locks), locked for the rest of the
/// transaction in ascending lock-key order. Called by the batch BEFORE any device row lock, so
/// every batch takes room locks first, in one order, then device rows in ascending device id,
/// then incidents: batches cannot deadlock on them, and no other writer takes room locks.
/// Every event's room is locked, not only presses': a room's incident is row-locked by its
/// first station's events (a cancel, a further press) as well as by presses grouped into it,
/// and a batch holding that row must not wait for a device row held by a batch that waits for
/// the row. (A station whose registered location changed after its incident opened can still
/// meet such a cycle; PostgreSQL then aborts one batch and its agents resend.) Returns the
/// rooms locked.
pub(super) async fn lock_rooms(
    conn: &mut PgConnection,
    events: &[&NewEvent],
) -> StoreResult<BTreeSet<String>> {
    let mut rooms = BTreeSet::new();
    for ev in events {
        if let Some(room) = room_of_device(&mut *conn, &ev.device_id, &ev.location).await? {
            rooms.insert(room);
        }
    }
    let keys: BTreeSet<i32> = rooms.iter().map(|r| room_lock_key(r)).collect();
    for key in keys {
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(ROOM_LOCK_CLASS)
            .bind(key)
            .execute(&mut *conn)
            .await?;
    }
    Ok(rooms)
}

/// The room of `device_id` for grouping ([`incidents::room_of`]): its registered location,
/// else the one its event reported.
async fn room_of_device(
    conn: &mut PgConnection,
    device_id: &str,
    reported: &duress_core::Location,
) -> StoreResult<Option<String>> {
    let registered: Option<Option<Json<duress_core::Location>>> =
        sqlx::query_scalar("SELECT registered_location_json FROM devices WHERE device_id = $1")
            .bind(device_id)
            .fetch_optional(&mut *conn)
            .await?;
    let registered = registered.flatten().map(|Json(l)| l);
    Ok(incidents::room_of(registered.as_ref(), reported))
}
