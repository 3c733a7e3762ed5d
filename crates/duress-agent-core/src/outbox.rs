//! The outbox: the agent's SQLite database (WAL, `synchronous=FULL`).
//!
//! An event is inserted and committed — fsynced, by `synchronous=FULL` — before anything tries to
//! send it; [`Outbox::append`] returns only after COMMIT. A row is marked delivered only with an
//! [`EventAck`] whose `id` is the row's id; nothing is ever deleted. Several processes may open
//! the same outbox (a CLI `trigger` next to `run --headless`): writes take the write lock up
//! front (`BEGIN IMMEDIATE`) and wait for each other through a busy timeout; a double send is
//! harmless because the receiver is idempotent on the event id.
//!
//! The schema evolves through [`MIGRATIONS`], applied in order and recorded in `user_version`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use duress_core::{EventAck, EventClaims, EventKind};
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::{Error, Result};

/// The outbox file inside the state directory.
pub const FILE_NAME: &str = "outbox.sqlite3";

/// How long a write waits for another process holding the write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Schema migrations, in order. Entry `i` moves the database from `user_version` `i` to `i + 1`.
/// Append only: never edit or reorder an entry that has shipped.
pub const MIGRATIONS: &[&str] = &[
    // 1: key/value facts about this installation, and the events.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) STRICT;
    CREATE TABLE events (
        id              TEXT PRIMARY KEY NOT NULL,   -- UUIDv7, the idempotency key
        seq             INTEGER NOT NULL UNIQUE,     -- per-device counter, fixed at the press
        kind            TEXT NOT NULL,               -- duress | test | cancel
        claims          TEXT NOT NULL,               -- EventClaims JSON as at the press
        first_token     TEXT NOT NULL,               -- the JWS signed at the press
        created_at      TEXT NOT NULL,               -- RFC 3339, corrected clock
        delivered_at    TEXT,                        -- NULL until a 2xx naming id
        attempts        INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        last_attempt_at TEXT,
        ack             TEXT                         -- EventAck JSON
    ) STRICT;
    CREATE INDEX events_pending ON events (seq) WHERE delivered_at IS NULL;
    "#,
    // 2: a press is stored even when it cannot be signed yet (not enrolled, keystore locked):
    // `first_token` becomes optional. Every send signs afresh, so nothing needs it to deliver.
    r#"
    CREATE TABLE events_v2 (
        id              TEXT PRIMARY KEY NOT NULL,
        seq             INTEGER NOT NULL UNIQUE,
        kind            TEXT NOT NULL,
        claims          TEXT NOT NULL,
        first_token     TEXT,                        -- the JWS signed at the press, if it could be
        created_at      TEXT NOT NULL,
        delivered_at    TEXT,
        attempts        INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        last_attempt_at TEXT,
        ack             TEXT
    ) STRICT;
    INSERT INTO events_v2 (id, seq, kind, claims, first_token, created_at, delivered_at,
                           attempts, last_error, last_attempt_at, ack)
        SELECT id, seq, kind, claims, first_token, created_at, delivered_at,
               attempts, last_error, last_attempt_at, ack FROM events;
    DROP TABLE events;
    ALTER TABLE events_v2 RENAME TO events;
    CREATE INDEX events_pending ON events (seq) WHERE delivered_at IS NULL;
    "#,
];

/// Names of the `meta` rows.
pub mod keys {
    /// Random id of this installation; names the keystore slot.
    pub const INSTALL_ID: &str = "install_id";
    /// The device id the receiver assigned at enrollment (`kid`).
    pub const DEVICE_ID: &str = "device_id";
    /// The device's standing as last reported by a receiver.
    pub const DEVICE_STATUS: &str = "device_status";
    /// Set when a receiver said this station is retired (heartbeat `retired: true`): the
    /// station then counts as not enrolled.
    pub const STATION_RETIRED: &str = "station_retired";
    /// When enrollment succeeded.
    pub const ENROLLED_AT: &str = "enrolled_at";
    /// The receiver URL that answered the enrollment.
    pub const ENROLLED_RECEIVER: &str = "enrolled_receiver";
    /// Receiver given by `enroll --receiver` when the policy lists none (JSON `{url, ca_cert}`).
    pub const FLAG_RECEIVER: &str = "flag_receiver";
    /// Location given at `enroll` when the policy sets none (JSON `Location`).
    pub const FLAG_LOCATION: &str = "flag_location";
    /// Location the user chose at a hot desk (JSON `Location`); honoured only while policy has
    /// `[tray] allow_user_location = true`.
    pub const USER_LOCATION: &str = "user_location";
    /// Learned `server_time − raw_now`, in milliseconds.
    pub const CLOCK_OFFSET_MS: &str = "clock_offset_ms";
    /// The next `seq` to assign.
    pub const NEXT_SEQ: &str = "next_seq";
    /// Last time any receiver answered (RFC 3339).
    pub const LAST_CONTACT_AT: &str = "last_contact_at";
    /// The receiver URL that answered last.
    pub const LAST_RECEIVER: &str = "last_receiver";
    /// Since when no receiver answered (RFC 3339); absent while reachable.
    pub const UNREACHABLE_SINCE: &str = "unreachable_since";
    /// The last delivery or heartbeat error.
    pub const LAST_ERROR: &str = "last_error";
    /// Since when answers to events fail the acknowledgement-key check (RFC 3339) and why
    /// (`ACK_UNVERIFIED_REASON`); cleared by the next verified acknowledgement only — a
    /// heartbeat answer (unsigned) does not clear it.
    pub const ACK_UNVERIFIED_SINCE: &str = "ack_unverified_since";
    pub const ACK_UNVERIFIED_REASON: &str = "ack_unverified_reason";
    /// Since when queued alarms are being refused by the receivers that answer (RFC 3339) and
    /// the reason shown ("alert not accepted by the receiver: REASON"); cleared by the next
    /// acknowledgement.
    pub const ALARM_REFUSED_SINCE: &str = "alarm_refused_since";
    pub const ALARM_REFUSED_REASON: &str = "alarm_refused_reason";
    /// The last acknowledged self-test: id and acknowledgement time.
    pub const LAST_SELF_TEST_ID: &str = "last_self_test_id";
    pub const LAST_SELF_TEST_AT: &str = "last_self_test_at";
    /// The hotkey state reported in the last heartbeat (JSON `HotkeyState`).
    pub const HOTKEY_STATE: &str = "hotkey_state";
    /// When a receiver last acknowledged a heartbeat (RFC 3339). Unlike `last_contact_at` it
    /// does not move when an alarm is delivered, so the tray can show it without revealing a
    /// press.
    pub const LAST_HEARTBEAT_AT: &str = "last_heartbeat_at";
    /// This device's open incidents an officer has claimed, from the last heartbeat answer
    /// (JSON array of ids): the covert acknowledgement, readable by every process.
    pub const CLAIMED_INCIDENTS: &str = "claimed_incidents";
    /// The minute of the `[self_test] window` this station tests at (chosen once, at random).
    pub const SELF_TEST_MINUTE: &str = "self_test_minute";
    /// When the last scheduled self-test was recorded (RFC 3339), delivered or not.
    pub const LAST_SCHEDULED_TEST_AT: &str = "last_scheduled_test_at";
}

/// One row of `events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: Uuid,
    pub seq: u64,
    pub kind: EventKind,
    /// The content fixed at the press.
    pub claims: EventClaims,
    /// The JWS signed at the press, when the device was enrolled and its key at hand; later
    /// sends are re-signed with a fresh `sent_at` either way.
    pub first_token: Option<String>,
    pub created_at: OffsetDateTime,
    pub delivered_at: Option<OffsetDateTime>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<OffsetDateTime>,
    pub ack: Option<EventAck>,
}

/// An open outbox (one SQLite connection).
#[derive(Debug)]
pub struct Outbox {
    conn: Connection,
    path: PathBuf,
}

impl Outbox {
    /// Opens (creating if needed) `state_dir/outbox.sqlite3`.
    pub fn open_in(state_dir: &Path) -> Result<Outbox> {
        Outbox::open(&state_dir.join(FILE_NAME))
    }

    /// Opens (creating if needed) the outbox at `path`, migrates it and makes sure it has an
    /// install id.
    pub fn open(path: &Path) -> Result<Outbox> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::OutboxCorrupt(format!(
                "journal_mode is {mode}, WAL was requested"
            )));
        }
        // FULL: every COMMIT fsyncs the WAL, so a returned append survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut outbox = Outbox {
            conn,
            path: path.to_owned(),
        };
        migrate(&mut outbox.conn)?;
        outbox.ensure_install_id()?;
        Ok(outbox)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version (`user_version`).
    pub fn schema_version(&self) -> Result<u32> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// `PRAGMA synchronous` as a number (2 = FULL).
    pub fn synchronous(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))?)
    }

    /// Changes whenever *another* connection commits: lets a long-running engine notice events
    /// appended by a CLI process.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?)
    }

    fn ensure_install_id(&mut self) -> Result<()> {
        let mut raw = [0u8; 16];
        getrandom::getrandom(&mut raw)
            .map_err(|e| Error::OutboxCorrupt(format!("no randomness for the install id: {e}")))?;
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        self.conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
            params![keys::INSTALL_ID, id],
        )?;
        Ok(())
    }

    /// The random id of this installation.
    pub fn install_id(&self) -> Result<String> {
        self.meta_get(keys::INSTALL_ID)?
            .ok_or_else(|| Error::OutboxCorrupt("no install id".into()))
    }

    pub fn meta_get(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    /// Sets several meta rows (a `None` value deletes the row) in one transaction.
    pub fn meta_set_many(&mut self, rows: &[(&str, Option<&str>)]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        set_meta_rows(&tx, rows)?;
        tx.commit()?;
        Ok(())
    }

    pub fn meta_set(&mut self, key: &str, value: &str) -> Result<()> {
        self.meta_set_many(&[(key, Some(value))])
    }

    /// Appends an event: in ONE `BEGIN IMMEDIATE` transaction, takes the next `seq`, lets `build`
    /// make the claims and (when a key is at hand) the signed token for it, inserts the row and advances `next_seq`.
    /// Returns only after COMMIT, i.e. once the event is on disk.
    pub fn append<F>(&mut self, created_at: OffsetDateTime, build: F) -> Result<StoredEvent>
    where
        F: FnOnce(u64) -> Result<(EventClaims, Option<String>)>,
    {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored_next: Option<String> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [keys::NEXT_SEQ],
                |r| r.get(0),
            )
            .optional()?;
        let max_seq: Option<i64> = tx.query_row("SELECT max(seq) FROM events", [], |r| r.get(0))?;
        // Never reuse a seq, even if the meta row were lost.
        let seq = stored_next
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(1)
            .max(max_seq.map_or(1, |m| m as u64 + 1));
        let (claims, token) = build(seq)?;
        if claims.seq != seq {
            return Err(Error::OutboxCorrupt(format!(
                "claims carry seq {} but {seq} was assigned",
                claims.seq
            )));
        }
        let claims_json =
            serde_json::to_string(&claims).map_err(|e| Error::OutboxCorrupt(e.to_string()))?;
        tx.execute(
            "INSERT INTO events (id, seq, kind, claims, first_token, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                claims.id.to_string(),
                seq as i64,
                claims.kind.as_str(),
                claims_json,
                token,
                fmt_time(created_at),
            ],
        )?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![keys::NEXT_SEQ, (seq + 1).to_string()],
        )?;
        tx.commit()?;
        Ok(StoredEvent {
            id: claims.id,
            seq,
            kind: claims.kind,
            claims,
            first_token: token,
            created_at,
            delivered_at: None,
            attempts: 0,
            last_error: None,
            last_attempt_at: None,
            ack: None,
        })
    }

    /// Undelivered events, oldest (lowest `seq`) first.
    pub fn pending(&self) -> Result<Vec<StoredEvent>> {
        let mut stmt = self.conn.prepare(&format!(
            "{SELECT_EVENT} WHERE delivered_at IS NULL ORDER BY seq"
        ))?;
        let rows = stmt.query_map([], row_to_raw)?;
        rows.map(|r| r.map_err(Error::from).and_then(RawEvent::parse))
            .collect()
    }

    /// How many events wait for an acknowledgement.
    pub fn pending_count(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM events WHERE delivered_at IS NULL")?
            .query_row([], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// The highest `seq` assigned so far (0 before the first event).
    pub fn last_seq(&self) -> Result<u64> {
        let m: Option<i64> = self
            .conn
            .prepare_cached("SELECT max(seq) FROM events")?
            .query_row([], |r| r.get(0))?;
        Ok(m.unwrap_or(0) as u64)
    }

    /// One event by id.
    pub fn get(&self, id: Uuid) -> Result<Option<StoredEvent>> {
        let mut stmt = self
            .conn
            .prepare(&format!("{SELECT_EVENT} WHERE id = ?1"))?;
        stmt.query_row([id.to_string()], row_to_raw)
            .optional()?
            .map(RawEvent::parse)
            .transpose()
    }

    /// Marks `id` delivered, and only with an acknowledgement naming `id`. Returns `true` when
    /// this call marked it, `false` when it was already delivered (e.g. by another process).
    pub fn mark_delivered(&mut self, id: Uuid, ack: &EventAck, at: OffsetDateTime) -> Result<bool> {
        let marked = self.mark_delivered_many(&[(id, ack)], at, &[])?;
        Ok(marked.first().copied().unwrap_or(false))
    }

    /// Marks every `(id, ack)` delivered — each only with an acknowledgement naming its own id —
    /// and sets the `meta` rows (as [`Outbox::meta_set_many`]), all in ONE transaction: one
    /// fsync for a whole batch of acknowledgements (a queue draining after an outage). Checks
    /// every pair before writing anything: one mismatch or unknown id and nothing is written.
    /// Returns, per pair, whether this call marked it (`false`: it was already delivered).
    pub fn mark_delivered_many(
        &mut self,
        acks: &[(Uuid, &EventAck)],
        at: OffsetDateTime,
        meta: &[(&str, Option<&str>)],
    ) -> Result<Vec<bool>> {
        let mut rows = Vec::with_capacity(acks.len());
        for (id, ack) in acks {
            if ack.id != *id {
                return Err(Error::AckMismatch {
                    expected: *id,
                    got: ack.id,
                });
            }
            let json =
                serde_json::to_string(ack).map_err(|e| Error::OutboxCorrupt(e.to_string()))?;
            rows.push((id.to_string(), json));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut marked = Vec::with_capacity(rows.len());
        for (id, ack_json) in &rows {
            let exists: Option<Option<String>> = tx
                .prepare_cached("SELECT delivered_at FROM events WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            marked.push(match exists {
                // Dropping `tx` rolls back whatever this call wrote before.
                None => {
                    return Err(Error::OutboxCorrupt(format!(
                        "acknowledged event {id} is not in the outbox"
                    )));
                }
                Some(Some(_)) => false,
                Some(None) => {
                    tx.prepare_cached(
                        "UPDATE events SET delivered_at = ?2, ack = ?3, last_error = NULL
                         WHERE id = ?1 AND delivered_at IS NULL",
                    )?
                    .execute(params![id, fmt_time(at), ack_json])?;
                    true
                }
            });
        }
        set_meta_rows(&tx, meta)?;
        tx.commit()?;
        Ok(marked)
    }

    /// Records a send attempt that did not end in an acknowledgement.
    pub fn record_attempt(&mut self, id: Uuid, error: &str, at: OffsetDateTime) -> Result<()> {
        self.conn.execute(
            "UPDATE events SET attempts = attempts + 1, last_error = ?2, last_attempt_at = ?3
             WHERE id = ?1",
            params![id.to_string(), error, fmt_time(at)],
        )?;
        Ok(())
    }
}

/// Sets (`Some`) or deletes (`None`) meta rows inside the caller's transaction.
fn set_meta_rows(tx: &rusqlite::Transaction<'_>, rows: &[(&str, Option<&str>)]) -> Result<()> {
    for (key, value) in rows {
        match value {
            Some(v) => tx
                .prepare_cached(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![key, v])?,
            None => tx
                .prepare_cached("DELETE FROM meta WHERE key = ?1")?
                .execute([key])?,
        };
    }
    Ok(())
}

/// Applies the migrations `conn` has not seen yet, each in its own transaction with its
/// `user_version` bump. Idempotent.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current as usize > MIGRATIONS.len() {
        return Err(Error::OutboxCorrupt(format!(
            "schema version {current} is newer than this agent knows ({}); \
             was a newer agent installed and then removed?",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now as usize > i {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as u32)?;
        tx.commit()?;
    }
    Ok(())
}

const SELECT_EVENT: &str = "SELECT id, seq, kind, claims, first_token, created_at, delivered_at,
    attempts, last_error, last_attempt_at, ack FROM events";

struct RawEvent {
    id: String,
    seq: i64,
    claims: String,
    first_token: Option<String>,
    created_at: String,
    delivered_at: Option<String>,
    attempts: i64,
    last_error: Option<String>,
    last_attempt_at: Option<String>,
    ack: Option<String>,
}

fn row_to_raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok(RawEvent {
        id: r.get(0)?,
        seq: r.get(1)?,
        claims: r.get(3)?,
        first_token: r.get(4)?,
        created_at: r.get(5)?,
        delivered_at: r.get(6)?,
        attempts: r.get(7)?,
        last_error: r.get(8)?,
        last_attempt_at: r.get(9)?,
        ack: r.get(10)?,
    })
}

impl RawEvent {
    fn parse(self) -> Result<StoredEvent> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            Error::OutboxCorrupt(format!("event {}: {what}: {e}", self.id))
        };
        let id = Uuid::parse_str(&self.id).map_err(|e| bad("id", &e))?;
        let claims: EventClaims =
            serde_json::from_str(&self.claims).map_err(|e| bad("claims", &e))?;
        let ack = match &self.ack {
            Some(a) => Some(serde_json::from_str(a).map_err(|e| bad("ack", &e))?),
            None => None,
        };
        Ok(StoredEvent {
            id,
            seq: self.seq as u64,
            kind: claims.kind,
            claims,
            first_token: self.first_token.clone(),
            created_at: parse_time(&self.created_at).map_err(|e| bad("created_at", &e))?,
            delivered_at: self
                .delivered_at
                .as_deref()
                .map(parse_time)
                .transpose()
                .map_err(|e| bad("delivered_at", &e))?,
            attempts: self.attempts as u32,
            last_error: self.last_error.clone(),
            last_attempt_at: self
                .last_attempt_at
                .as_deref()
                .map(parse_time)
                .transpose()
                .map_err(|e| bad("last_attempt_at", &e))?,
            ack,
        })
    }
}

/// RFC 3339 text for the database.
pub(crate) fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub(crate) fn parse_time(s: &str) -> std::result::Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &Rfc3339)
}

#[cfg(test)]
mod tests;
