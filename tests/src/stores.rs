//! Reading the two databases directly, for the fault suites' bookkeeping: the agent's outbox
//! (which events became durable, which were acknowledged) and the receiver's store (which ids
//! it committed, how many presses its incidents counted, whether the file is intact).
//! Read-only queries on fresh connections, so they work beside a running agent or receiver
//! (WAL) and after one was killed (the connection recovers the WAL).

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

/// One event row of an agent outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub id: String,
    pub seq: i64,
    pub delivered: bool,
    /// The claims JSON fixed at the press.
    pub claims: serde_json::Value,
}

fn open(path: &Path) -> Connection {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .expect("busy timeout");
    conn
}

/// Every event in the outbox of the agent whose state dir is `state_dir`, in seq order.
pub fn outbox_events(state_dir: &Path) -> Vec<OutboxEvent> {
    let path = state_dir.join("outbox.sqlite3");
    if !path.exists() {
        return Vec::new();
    }
    let conn = open(&path);
    let mut stmt = conn
        .prepare("SELECT id, seq, delivered_at IS NOT NULL, claims FROM events ORDER BY seq")
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok(OutboxEvent {
            id: r.get(0)?,
            seq: r.get(1)?,
            delivered: r.get(2)?,
            claims: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
        })
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

/// Number of events in an agent outbox (cheap: for polling).
pub fn outbox_len(state_dir: &Path) -> usize {
    let path = state_dir.join("outbox.sqlite3");
    if !path.exists() {
        return 0;
    }
    open(&path)
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))
        .map_or(0, |n| n as usize)
}

fn receiver_db(data_dir: &Path) -> Connection {
    open(&data_dir.join("receiver.sqlite3"))
}

/// How many times each event id is stored by the receiver in `data_dir`.
pub fn receiver_event_counts(data_dir: &Path) -> HashMap<String, usize> {
    let conn = receiver_db(data_dir);
    let mut stmt = conn
        .prepare("SELECT id, COUNT(*) FROM events GROUP BY id")
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize))
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

/// Number of stored events.
pub fn receiver_event_total(data_dir: &Path) -> usize {
    receiver_db(data_dir)
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))
        .expect("count") as usize
}

/// (sum of incident press counts, number of stored `duress` events): equal unless an event
/// was counted twice (a duplicate incident press) or a press got lost from its incident.
pub fn receiver_press_balance(data_dir: &Path) -> (i64, i64) {
    let conn = receiver_db(data_dir);
    let presses = conn
        .query_row(
            "SELECT COALESCE(SUM(press_count), 0) FROM incidents",
            [],
            |r| r.get(0),
        )
        .expect("presses");
    let events = conn
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'duress'",
            [],
            |r| r.get(0),
        )
        .expect("events");
    (presses, events)
}

/// `PRAGMA integrity_check` of the receiver database: "ok" when intact.
pub fn receiver_integrity(data_dir: &Path) -> String {
    receiver_db(data_dir)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

/// Ids stored more than once, and ids of `expected` stored zero times.
pub fn lost_and_duplicated<'a>(
    counts: &HashMap<String, usize>,
    expected: impl IntoIterator<Item = &'a String>,
) -> (Vec<String>, Vec<String>) {
    let mut lost = Vec::new();
    let mut dup = Vec::new();
    for id in expected {
        match counts.get(id).copied().unwrap_or(0) {
            0 => lost.push(id.clone()),
            1 => {}
            _ => dup.push(id.clone()),
        }
    }
    let more: Vec<String> = counts
        .iter()
        .filter(|(id, n)| **n > 1 && !dup.contains(id))
        .map(|(id, _)| id.clone())
        .collect();
    dup.extend(more);
    (lost, dup)
}
