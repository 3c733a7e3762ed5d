//! `backup` and `restore` (issue 21): a backup taken while a burst of alarms keeps arriving holds
//! every alarm acknowledged before it started; it restores into a new store with the audit chain
//! intact and the same TLS identity; a store with data is not overwritten unless forced; a
//! damaged or truncated backup is refused before anything is written. Runs on the backend
//! `DURESS_TEST_DATABASE` names (scripts/test runs it on both).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::Harness;
use duress_core::{EventAck, EventKind};
use duress_receiver::admin;
use duress_receiver::backup;
use duress_receiver::store::StoreLocation;
use uuid::Uuid;

const STATIONS: usize = 10;
const ALARMS_PER_STATION: usize = 30;

/// A new, empty store of the same backend as `h`'s.
fn fresh_location(h: &Harness, dir: &std::path::Path) -> StoreLocation {
    StoreLocation::new(
        dir,
        if h.on_postgres() {
            common::test_database()
        } else {
            None
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_during_a_burst_restores_every_acknowledged_alarm() {
    let h = std::sync::Arc::new(Harness::start().await);
    let mut agents = Vec::new();
    for _ in 0..STATIONS {
        agents.push(h.enrolled_agent().await);
    }

    // The burst: each station sends its alarms one after another, noting each acknowledged id.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Uuid>::new()));
    let mut burst = Vec::new();
    for mut agent in agents {
        let (h, acked) = (h.clone(), acked.clone());
        burst.push(tokio::spawn(async move {
            for _ in 0..ALARMS_PER_STATION {
                let claims = agent.event(EventKind::Duress);
                let answer = h.post("/v1/events", agent.sign_event(&claims)).await;
                assert!(
                    answer.status == 200 || answer.status == 201,
                    "{}",
                    answer.text()
                );
                let ack: EventAck = answer.json();
                assert_eq!(ack.id, claims.id);
                acked.lock().unwrap().push(ack.id);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // Let part of the burst land, then back up while the rest keeps arriving.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < STATIONS * ALARMS_PER_STATION / 3 {
        assert!(std::time::Instant::now() < deadline, "the burst stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let acked_before: Vec<Uuid> = acked.lock().unwrap().clone();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("receiver.backup");
    let report = backup::backup(&h.data_dir(), &out).await.unwrap();
    let still_running = acked.lock().unwrap().len() < STATIONS * ALARMS_PER_STATION;
    for task in burst {
        task.await.unwrap();
    }
    println!(
        "backup: {} acknowledged before it started, {} bytes, burst still running when it ended: {still_running}",
        acked_before.len(),
        report.bytes
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a backup holds secrets");
    }
    assert!(
        backup::backup(&h.data_dir(), &out).await.is_err(),
        "an existing backup file is never overwritten"
    );

    // Restore into a new data directory and an empty store.
    let restored_dir = tempfile::tempdir().unwrap();
    let target = fresh_location(&h, &restored_dir.path().join("data"));
    let restored = backup::restore(&target, &out, false).await.unwrap();
    assert!(restored.audit_entries > 0, "{restored:?}");
    let events = admin::list_events(target.clone()).await.unwrap();
    let ids: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), events.len(), "no event twice");
    let missing: Vec<&Uuid> = acked_before.iter().filter(|id| !ids.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged alarms missing from the restore",
        missing.len()
    );
    assert!(matches!(
        admin::verify_audit(target.clone(), None).await.unwrap(),
        Ok(n) if n == restored.audit_entries
    ));
    // The same TLS identity, so agents that pin it keep trusting the restored receiver.
    assert_eq!(
        std::fs::read(h.dir.path().join("tls/cert.pem")).unwrap(),
        std::fs::read(target.data_dir.join("tls/cert.pem")).unwrap()
    );

    // A store with data is not replaced unless forced.
    let refused = backup::restore(&target, &out, false).await.unwrap_err();
    assert!(
        format!("{refused:#}").contains("already holds data"),
        "{refused:#}"
    );
    backup::restore(&target, &out, true).await.unwrap();
    assert_eq!(
        admin::list_events(target.clone()).await.unwrap().len(),
        events.len()
    );

    // A truncated backup is refused before anything is written.
    let bytes = std::fs::read(&out).unwrap();
    let truncated = out_dir.path().join("truncated.backup");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = fresh_location(&h, &other_dir.path().join("data"));
    assert!(backup::restore(&other, &truncated, false).await.is_err());
    assert!(
        !other.data_dir.join("tls/cert.pem").exists(),
        "nothing of a refused backup is written"
    );

    match std::sync::Arc::try_unwrap(h) {
        Ok(h) => h.shutdown().await,
        Err(_) => panic!("the burst tasks still hold the harness"),
    }
}
