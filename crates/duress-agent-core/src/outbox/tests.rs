use duress_core::{Location, Source};
use time::macros::datetime;

use super::*;

fn claims(seq: u64) -> EventClaims {
    EventClaims {
        id: Uuid::now_v7(),
        seq,
        kind: EventKind::Duress,
        occurred_at: datetime!(2026-11-26 12:00:00 UTC),
        sent_at: datetime!(2026-11-26 12:00:00 UTC),
        source: Source::Cli,
        location: Location::default(),
        host: Default::default(),
        cancel_pin: None,
    }
}

fn add(o: &mut Outbox) -> StoredEvent {
    o.append(datetime!(2026-11-26 12:00:00 UTC), |seq| {
        Ok((claims(seq), Some(format!("token-{seq}"))))
    })
    .unwrap()
}

fn ack(id: Uuid) -> EventAck {
    EventAck {
        id,
        incident_id: None,
        received_at: datetime!(2026-11-26 12:00:01 UTC),
        delay_ms: 1000,
        delayed: false,
        ack: None,
    }
}

/// The migrations apply from scratch, reach the last version, and a second run changes nothing.
#[test]
fn migrations_apply_from_scratch_and_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("m.sqlite3")).unwrap();
    migrate(&mut conn).unwrap();
    let v: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v as usize, MIGRATIONS.len());
    let schema = |c: &Connection| -> Vec<String> {
        let mut s = c
            .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    let before = schema(&conn);
    migrate(&mut conn).unwrap();
    assert_eq!(schema(&conn), before);
    // Opening through Outbox twice is fine as well.
    drop(conn);
    Outbox::open(&dir.path().join("m.sqlite3")).unwrap();
    Outbox::open(&dir.path().join("m.sqlite3")).unwrap();
}

/// Each migration applied alone moves `user_version` by exactly one (strictly ordered, no gaps),
/// and every migration is non-empty SQL.
#[test]
fn migrations_are_strictly_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("m.sqlite3")).unwrap();
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        assert!(!sql.trim().is_empty(), "migration {i} is empty");
        let tx = conn.transaction().unwrap();
        tx.execute_batch(sql).unwrap();
        tx.pragma_update(None, "user_version", (i + 1) as u32)
            .unwrap();
        tx.commit().unwrap();
        let v: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, i + 1);
    }
    // migrate() on a fully hand-migrated db is a no-op.
    migrate(&mut conn).unwrap();
}

/// A database from a newer agent is refused instead of being half-understood.
#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("m.sqlite3")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    assert!(migrate(&mut conn).is_err());
}

/// The outbox runs in WAL mode with synchronous=FULL.
#[test]
fn pragmas_are_wal_and_full() {
    let dir = tempfile::tempdir().unwrap();
    let o = Outbox::open_in(dir.path()).unwrap();
    assert_eq!(o.synchronous().unwrap(), 2);
    let mode: String = o
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(o.install_id().unwrap().len(), 32);
}

/// When `append` returns, a brand-new connection (as after a crash) already sees the event.
#[test]
fn append_is_committed_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open_in(dir.path()).unwrap();
    let e = add(&mut o);
    let other = Outbox::open_in(dir.path()).unwrap();
    let seen = other
        .get(e.id)
        .unwrap()
        .expect("visible to another connection");
    assert_eq!(seen.first_token.as_deref(), Some("token-1"));
    assert_eq!(seen.claims, e.claims);
    // Even without closing the first connection cleanly.
    std::mem::forget(o);
    let raw = Connection::open(dir.path().join(FILE_NAME)).unwrap();
    let n: i64 = raw
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

/// A failing `build` leaves nothing behind and consumes no seq.
#[test]
fn failed_build_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open_in(dir.path()).unwrap();
    let r = o.append(datetime!(2026-11-26 12:00 UTC), |_| {
        Err(Error::Invalid("no".into()))
    });
    assert!(r.is_err());
    assert_eq!(o.pending_count().unwrap(), 0);
    assert_eq!(add(&mut o).seq, 1);
}

/// `seq` increases strictly, across reopening the database, and is never reused.
#[test]
fn seq_is_strictly_increasing_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let mut o = Outbox::open_in(dir.path()).unwrap();
        seqs.push(add(&mut o).seq);
        seqs.push(add(&mut o).seq);
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    let o = Outbox::open_in(dir.path()).unwrap();
    assert_eq!(o.last_seq().unwrap(), 6);
}

/// An acknowledgement naming another event marks nothing; the right one marks exactly one row.
#[test]
fn mark_delivered_refuses_an_ack_for_another_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open_in(dir.path()).unwrap();
    let a = add(&mut o);
    let b = add(&mut o);
    let err = o
        .mark_delivered(a.id, &ack(b.id), datetime!(2026-11-26 12:00 UTC))
        .unwrap_err();
    assert!(matches!(err, Error::AckMismatch { .. }), "{err}");
    assert_eq!(o.pending_count().unwrap(), 2);
    assert!(
        o.mark_delivered(a.id, &ack(a.id), datetime!(2026-11-26 12:00 UTC))
            .unwrap()
    );
    // A second ack for the same event is harmless.
    assert!(
        !o.mark_delivered(a.id, &ack(a.id), datetime!(2026-11-26 12:00 UTC))
            .unwrap()
    );
    let pending: Vec<Uuid> = o.pending().unwrap().iter().map(|e| e.id).collect();
    assert_eq!(pending, vec![b.id]);
    let stored = o.get(a.id).unwrap().unwrap();
    assert_eq!(stored.ack, Some(ack(a.id)));
    assert!(stored.delivered_at.is_some());
    // An ack for an id the outbox never had is an error, not a silent success.
    let ghost = Uuid::now_v7();
    assert!(
        o.mark_delivered(ghost, &ack(ghost), datetime!(2026-11-26 12:00 UTC))
            .is_err()
    );
}

/// A batch of acknowledgements is all or nothing: one mismatched or unknown id among them and
/// no event is marked and no meta row is set; a good batch marks every event and sets the
/// meta rows in the same transaction.
#[test]
fn mark_delivered_many_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open_in(dir.path()).unwrap();
    let ids: Vec<Uuid> = (0..4).map(|_| add(&mut o).id).collect();
    let at = datetime!(2026-11-26 12:00 UTC);
    let acks: Vec<EventAck> = ids.iter().map(|id| ack(*id)).collect();
    let meta = [("last_contact_at", Some("2026-11-26T12:00:00Z"))];

    let wrong = ack(ids[0]);
    let mismatched = [(ids[0], &acks[0]), (ids[1], &wrong)];
    assert!(matches!(
        o.mark_delivered_many(&mismatched, at, &meta).unwrap_err(),
        Error::AckMismatch { .. }
    ));
    let ghost = Uuid::now_v7();
    let ghost_ack = ack(ghost);
    let unknown = [(ids[0], &acks[0]), (ghost, &ghost_ack)];
    assert!(o.mark_delivered_many(&unknown, at, &meta).is_err());
    assert_eq!(
        o.pending_count().unwrap(),
        4,
        "a failed batch marked something"
    );
    assert_eq!(o.meta_get("last_contact_at").unwrap(), None);

    assert!(o.mark_delivered(ids[1], &acks[1], at).unwrap());
    let batch: Vec<(Uuid, &EventAck)> = ids[..3].iter().copied().zip(acks.iter()).collect();
    let marked = o.mark_delivered_many(&batch, at, &meta).unwrap();
    assert_eq!(
        marked,
        vec![true, false, true],
        "ids[1] was already delivered"
    );
    let pending: Vec<Uuid> = o.pending().unwrap().iter().map(|e| e.id).collect();
    assert_eq!(pending, vec![ids[3]]);
    assert_eq!(
        o.meta_get("last_contact_at").unwrap().as_deref(),
        Some("2026-11-26T12:00:00Z")
    );
}

/// `pending()` lists undelivered events oldest first; failed attempts are counted, not removed.
#[test]
fn pending_is_oldest_first_and_attempts_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open_in(dir.path()).unwrap();
    let ids: Vec<Uuid> = (0..5).map(|_| add(&mut o).id).collect();
    o.record_attempt(
        ids[0],
        "connection refused",
        datetime!(2026-11-26 12:00 UTC),
    )
    .unwrap();
    o.record_attempt(ids[0], "HTTP 503", datetime!(2026-11-26 12:00:01 UTC))
        .unwrap();
    o.mark_delivered(ids[2], &ack(ids[2]), datetime!(2026-11-26 12:00 UTC))
        .unwrap();
    let p = o.pending().unwrap();
    let order: Vec<Uuid> = p.iter().map(|e| e.id).collect();
    assert_eq!(order, vec![ids[0], ids[1], ids[3], ids[4]]);
    assert_eq!(p[0].attempts, 2);
    assert_eq!(p[0].last_error.as_deref(), Some("HTTP 503"));
}

/// Another connection's commit changes `data_version` (how `run` notices a CLI trigger).
#[test]
fn data_version_sees_other_connections() {
    let dir = tempfile::tempdir().unwrap();
    let watcher = Outbox::open_in(dir.path()).unwrap();
    let v0 = watcher.data_version().unwrap();
    let mut writer = Outbox::open_in(dir.path()).unwrap();
    add(&mut writer);
    assert_ne!(watcher.data_version().unwrap(), v0);
}

/// Meta rows can be set, overwritten and deleted in one transaction.
#[test]
fn meta_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open_in(dir.path()).unwrap();
    o.meta_set("a", "1").unwrap();
    o.meta_set_many(&[("a", Some("2")), ("b", Some("x"))])
        .unwrap();
    assert_eq!(o.meta_get("a").unwrap().as_deref(), Some("2"));
    o.meta_set_many(&[("b", None)]).unwrap();
    assert_eq!(o.meta_get("b").unwrap(), None);
}

/// Upgrading an outbox written by schema 1 (signed-only events) keeps every queued event,
/// its token and its delivery state, and lets unsigned presses be stored afterwards.
#[test]
fn upgrade_from_schema_1_keeps_queued_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let queued = claims(1);
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[0]).unwrap();
        tx.pragma_update(None, "user_version", 1u32).unwrap();
        tx.execute(
            "INSERT INTO events (id, seq, kind, claims, first_token, created_at)
             VALUES (?1, 1, 'duress', ?2, 'token-1', '2026-11-26T12:00:00Z')",
            params![
                queued.id.to_string(),
                serde_json::to_string(&queued).unwrap()
            ],
        )
        .unwrap();
        tx.execute("INSERT INTO meta (key, value) VALUES ('next_seq', '2')", [])
            .unwrap();
        tx.commit().unwrap();
    }
    let mut o = Outbox::open(&path).unwrap();
    assert_eq!(o.schema_version().unwrap() as usize, MIGRATIONS.len());
    let pending = o.pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].claims, queued);
    assert_eq!(pending[0].first_token.as_deref(), Some("token-1"));
    let unsigned = o
        .append(datetime!(2026-11-26 12:00:05 UTC), |seq| {
            Ok((claims(seq), None))
        })
        .unwrap();
    assert_eq!(unsigned.seq, 2);
    assert_eq!(o.get(unsigned.id).unwrap().unwrap().first_token, None);
}
