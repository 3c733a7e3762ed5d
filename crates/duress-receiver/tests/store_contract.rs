//! The store's behaviour, one suite for both backends: every test below is a function over
//! `Arc<dyn Store>`, instantiated by [`contract!`] once for SQLite (in a temporary directory)
//! and once for PostgreSQL (a fresh database in a throw-away PostgreSQL 15 cluster started by
//! `duress-testpg`, shared by this test binary). Tests that only PostgreSQL can have (two
//! stores on one database, as two receivers) are at the end.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use duress_core::{
    AckSignature, AckSigningKey, DeviceKey, DeviceStatus, EventKind, HostFacts, HotkeyState,
    Location, Source, TrustedAckKey,
};
use duress_receiver::store::audit_chain;
use duress_receiver::store::{
    ActionOutcome, Approve, EnrollOutcome, EnrollRefusal, EnrollRequest, HeartbeatUpdate,
    IncidentAction, IncidentFilter, IngestOutcome, NewCameraMapping, NewEvent, NewSession,
    NewToken, NewUser, PostgresStore, Role, SqliteStore, Store, StoreError,
};
use duress_receiver::store::{
    AttemptOutcome, NewAttempt, NotificationFacts, NotifyPlanner, PlannedNotification,
};
use duress_receiver::store::{DisplayState, NewDisplay};
use duress_receiver::store::{
    PurgeCounts, PurgeCutoffs, PurgeOutcome, PurgeRequest, RetireOutcome,
};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

const WINDOW: Duration = Duration::from_secs(300);

/// A store under test and what keeps it alive.
struct Backend {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        Backend {
            store: Arc::new(store),
            _dir: Some(dir),
        }
    }

    async fn postgres() -> Backend {
        let url = pg_url();
        // The data directory holds the audit key.
        let dir = tempfile::tempdir().unwrap();
        let store = PostgresStore::connect(&url, dir.path()).await.unwrap();
        Backend {
            store: Arc::new(store),
            _dir: Some(dir),
        }
    }
}

/// A fresh database in this binary's cluster.
fn pg_url() -> String {
    duress_testpg::TestPg::shared()
        .and_then(|pg| pg.fresh_url())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Instantiates `async fn name(store: Arc<dyn Store>)` for both backends.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let b = super::Backend::sqlite().await;
                super::$name(b.store.clone()).await;
                b.store.close().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let b = super::Backend::postgres().await;
                super::$name(b.store.clone()).await;
                b.store.close().await;
            }
        }
    )*};
}

contract!(
    ingest_dedupes_by_id_and_refuses_another_devices_id,
    presses_group_by_window_cancels_join_and_tests_stay_apart,
    concurrent_presses_of_one_device_open_one_incident,
    device_status_decides_and_revocation_is_final,
    heartbeats_update_the_device_and_return_claimed_incidents,
    concurrent_heartbeats_each_get_their_own_answer_and_a_bad_one_fails_alone,
    a_cluster_lease_has_one_holder_and_passes_on_when_its_session_ends,
    a_one_use_token_enrolls_exactly_one_of_many_concurrent_devices,
    token_refusals_and_listing,
    accounts_add_refuse_duplicates_and_disable_ends_sessions,
    sessions_are_created_read_touched_expired_and_ended,
    sessions_extend_forward_only_and_audited,
    displays_wait_pair_once_revoke_for_good_all_audited,
    incident_actions_follow_the_incident_state,
    of_concurrent_claims_exactly_one_wins,
    escalation_happens_once,
    audit_chain_verifies_after_many_and_concurrent_writes,
    audit_entries_are_keyed_and_the_head_is_anchored,
    camera_mappings_are_added_listed_and_deleted,
    live_log_replays_in_id_order_and_misses_nothing,
    a_closed_store_is_unavailable,
    a_cancel_with_the_duress_pin_is_flagged_and_keeps_the_incident_open,
    the_self_test_flag_follows_the_latest_test_event,
    acknowledgements_are_signed_in_the_commit_stored_and_exported,
    heartbeats_store_the_policy_report_and_keep_it,
    heartbeats_store_and_clear_alarm_refused,
    outbox_rows_come_with_the_incident_are_taken_once_and_settle_for_good,
    outbox_a_claim_stops_the_ladder,
    supervision_notifies_each_outage_once_and_never_for_revoked,
    supervision_notifies_only_within_the_protection_schedule,
    siem_reads_after_a_position_that_only_moves_forward,
    only_an_active_device_moves_its_station,
    resolving_a_stations_open_incidents_resolves_each_audited,
    registered_locations_are_set_at_approval_and_by_an_admin_audited,
    subnets_are_put_replaced_removed_audited_and_addresses_recorded,
    a_registered_locations_batch_is_all_or_nothing,
    retention_purges_old_resolved_incidents_never_open_ones_and_audits_the_counts,
    retention_keeps_a_resolved_incident_whose_notification_is_pending,
    a_retired_station_is_revoked_marked_never_supervised_and_audited,
    cluster_nodes_register_refresh_and_age_out,
    outbox_a_resolve_enqueues_the_restore_once,
    api_keys_are_created_hashed_listed_revoked_for_good_and_audited,
    phones_are_put_changed_removed_audited_and_raise_phone_incidents,
);

/// The acknowledgement key as the receiver hands it to the store.
#[derive(Debug)]
struct TestSigner(AckSigningKey);

impl duress_receiver::store::AckSigner for TestSigner {
    fn sign_ack(
        &self,
        id: Uuid,
        received_at: OffsetDateTime,
        incident_id: Option<Uuid>,
    ) -> AckSignature {
        self.0.sign(id, received_at, incident_id)
    }
}

// ---------------------------------------------------------------------------------------------
// Building requests.

fn now() -> OffsetDateTime {
    duress_core::clock::truncate_to_millis(OffsetDateTime::now_utc())
}

fn random_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).unwrap();
    b
}

fn location(label: &str) -> Location {
    Location {
        label: Some(label.to_owned()),
        ..Default::default()
    }
}

fn host(name: &str) -> HostFacts {
    HostFacts {
        hostname: name.to_owned(),
        user: "jdoe".into(),
        agent_version: "0.1.0".into(),
        ..Default::default()
    }
}

async fn token(store: &Arc<dyn Store>, uses: u32, approve: Approve) -> String {
    let token_hash = hex::encode(Sha256::digest(random_bytes()));
    store
        .create_token(
            NewToken {
                token_hash: token_hash.clone(),
                uses,
                expires_at: None,
                approve,
                created_at: now(),
            },
            "admin",
        )
        .await
        .unwrap();
    token_hash
}

fn enroll_request(token_hash: &str, key: &DeviceKey) -> EnrollRequest {
    let jwk = key.public_jwk();
    EnrollRequest {
        token_hash: token_hash.to_owned(),
        new_device_id: Uuid::now_v7().to_string(),
        key_thumbprint: jwk.thumbprint(),
        public_jwk: jwk,
        host: host("ws-1"),
        location: location("Bldg A, Room 214"),
        now: now(),
    }
}

/// An active device.
async fn device(store: &Arc<dyn Store>) -> String {
    let token_hash = token(store, 1, Approve::Auto).await;
    let key = DeviceKey::from_seed(&random_bytes());
    match store
        .enroll(enroll_request(&token_hash, &key))
        .await
        .unwrap()
    {
        EnrollOutcome::Enrolled { device_id, status } => {
            assert_eq!(status, DeviceStatus::Active);
            device_id
        }
        other => panic!("{other:?}"),
    }
}

fn event(device_id: &str, seq: i64, kind: EventKind, occurred_at: OffsetDateTime) -> NewEvent {
    let received = now();
    NewEvent {
        id: Uuid::now_v7(),
        device_id: device_id.to_owned(),
        seq,
        kind,
        source: Source::Hotkey,
        occurred_at,
        sent_at: received,
        received_at: received,
        jws: jws(&serde_json::json!({ "seq": seq })),
        location: location("Bldg A, Room 214"),
        host: host("ws-1"),
        ack_signer: None,
        client_addr: None,
    }
}

/// A compact JWS shape around `claims` (the store never checks the signature: the API did).
fn jws(claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    format!(
        "{}.{}.{}",
        b64(br#"{"alg":"Ed25519","typ":"duress-event"}"#),
        b64(claims.to_string().as_bytes()),
        b64(b"signature")
    )
}

/// A cancel whose signed claims say how the PIN was answered (`None`: no PIN asked).
fn cancel(device_id: &str, seq: i64, pin: Option<&str>) -> NewEvent {
    let mut ev = event(device_id, seq, EventKind::Cancel, now());
    ev.jws = jws(&serde_json::json!({ "seq": seq, "kind": "cancel", "cancel_pin": pin }));
    ev
}

async fn committed(store: &Arc<dyn Store>, ev: NewEvent) -> Option<Uuid> {
    match store.ingest_event(ev, WINDOW).await.unwrap() {
        IngestOutcome::Committed(s) => s.incident_id,
        other => panic!("{other:?}"),
    }
}

/// A new incident of a new device.
async fn incident(store: &Arc<dyn Store>) -> Uuid {
    let d = device(store).await;
    committed(store, event(&d, 1, EventKind::Duress, now()))
        .await
        .unwrap()
}

fn user(name: &str, role: Role) -> NewUser {
    NewUser {
        username: name.to_owned(),
        role,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
        created_at: now(),
    }
}

fn session(id_hash: &str, username: &str) -> NewSession {
    let created = now();
    NewSession {
        id_hash: id_hash.to_owned(),
        username: username.to_owned(),
        csrf_token: format!("csrf-{id_hash}"),
        created_at: created,
        expires_at: created + time::Duration::hours(12),
    }
}

async fn verified_chain(store: &Arc<dyn Store>) -> usize {
    duress_receiver::store::verify_audit(store.as_ref(), None)
        .await
        .unwrap()
        .unwrap_or_else(|b| panic!("{b}"))
}

// ---------------------------------------------------------------------------------------------
// The contract.

async fn ingest_dedupes_by_id_and_refuses_another_devices_id(store: Arc<dyn Store>) {
    let a = device(&store).await;
    let b = device(&store).await;
    let ev = event(
        &a,
        1,
        EventKind::Duress,
        now() - time::Duration::seconds(30),
    );
    let first = match store.ingest_event(ev.clone(), WINDOW).await.unwrap() {
        IngestOutcome::Committed(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.id, ev.id);
    assert_eq!(first.device_id, a);
    assert!(first.incident_id.is_some());
    assert!(first.delayed, "30 s late is delayed");
    assert!(first.delay_ms >= 30_000, "{}", first.delay_ms);
    assert_eq!(store.find_event(ev.id).await.unwrap(), Some(first.clone()));

    // A repeat (a fresh send attempt) is answered from the stored columns, identically.
    let mut resend = ev.clone();
    resend.sent_at = now() + time::Duration::seconds(5);
    resend.received_at = now() + time::Duration::seconds(5);
    assert_eq!(
        store.ingest_event(resend.clone(), WINDOW).await.unwrap(),
        IngestOutcome::Duplicate(first.clone())
    );
    // Another device's copy of the id is not a repeat.
    let mut stolen = ev.clone();
    stolen.device_id = b.clone();
    assert_eq!(
        store.ingest_event(stolen.clone(), WINDOW).await.unwrap(),
        IngestOutcome::IdConflict
    );

    // Disabled since: the repeat still gets its answer; a new event is refused; another
    // device's id hears about the status first.
    store
        .set_device_status(&a, DeviceStatus::Disabled, "admin")
        .await
        .unwrap();
    assert_eq!(
        store.ingest_event(resend, WINDOW).await.unwrap(),
        IngestOutcome::Duplicate(first.clone())
    );
    assert_eq!(
        store
            .ingest_event(event(&a, 2, EventKind::Duress, now()), WINDOW)
            .await
            .unwrap(),
        IngestOutcome::DeviceNotActive(DeviceStatus::Disabled)
    );
    store
        .set_device_status(&b, DeviceStatus::Disabled, "admin")
        .await
        .unwrap();
    assert_eq!(
        store.ingest_event(stolen, WINDOW).await.unwrap(),
        IngestOutcome::DeviceNotActive(DeviceStatus::Disabled)
    );

    let unknown = event("no-such-device", 1, EventKind::Duress, now());
    assert!(matches!(
        store.ingest_event(unknown, WINDOW).await,
        Err(StoreError::NoSuchDevice(_))
    ));

    let events = store.list_events().await.unwrap();
    assert_eq!(events.len(), 1, "repeats and refusals write nothing");
    assert_eq!(events[0].id, ev.id);
    assert_eq!(events[0].occurred_at, ev.occurred_at);
    assert_eq!(events[0].host, ev.host);
    assert_eq!(events[0].location, ev.location);
    let exported = store.export_events().await.unwrap();
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0].jws, ev.jws, "the raw token exactly as received");
    assert!(exported[0].public_jwk.to_verifying_key().is_ok());
    // Concurrent copies of one new event: one commit, the rest are repeats of it.
    let c = device(&store).await;
    let ev = event(&c, 1, EventKind::Duress, now());
    let copies =
        futures::future::join_all((0..8).map(|_| store.ingest_event(ev.clone(), WINDOW))).await;
    let committed = copies
        .iter()
        .filter(|o| matches!(o, Ok(IngestOutcome::Committed(_))))
        .count();
    let repeats = copies
        .iter()
        .filter(|o| matches!(o, Ok(IngestOutcome::Duplicate(_))))
        .count();
    assert_eq!((committed, repeats), (1, 7), "{copies:?}");
}

async fn presses_group_by_window_cancels_join_and_tests_stay_apart(store: Arc<dyn Store>) {
    let d = device(&store).await;
    let t0 = now() - time::Duration::minutes(30);
    let first = committed(&store, event(&d, 1, EventKind::Duress, t0))
        .await
        .unwrap();
    let joined = committed(
        &store,
        event(&d, 2, EventKind::Duress, t0 + time::Duration::minutes(4)),
    )
    .await;
    assert_eq!(joined, Some(first), "within the window of the last press");
    // The window counts from the latest press: 8 minutes after the first, 4 after the second.
    let chained = committed(
        &store,
        event(&d, 3, EventKind::Duress, t0 + time::Duration::minutes(8)),
    )
    .await;
    assert_eq!(chained, Some(first));
    let second = committed(
        &store,
        event(&d, 4, EventKind::Duress, t0 + time::Duration::minutes(20)),
    )
    .await
    .unwrap();
    assert_ne!(second, first, "outside the window: a new incident");

    let test = committed(&store, event(&d, 5, EventKind::Test, now())).await;
    assert_eq!(test, None, "a self-test never opens or joins an incident");
    let cancel = committed(&store, event(&d, 6, EventKind::Cancel, now())).await;
    assert_eq!(
        cancel,
        Some(second),
        "a cancel joins the latest open incident"
    );

    let incidents = store.list_incidents(IncidentFilter::All).await.unwrap();
    assert_eq!(incidents.len(), 2, "tests are never incidents");
    let (i1, i2) = (&incidents[0], &incidents[1]);
    assert_eq!(i1.incident_id, first, "oldest first");
    assert_eq!(i1.press_count, 3);
    assert_eq!(i1.first_occurred_at, t0);
    assert_eq!(i1.last_press_at, t0 + time::Duration::minutes(8));
    assert_eq!(i1.events.len(), 3);
    assert!(i1.events.iter().all(|e| e.kind == EventKind::Duress));
    assert_eq!(i1.cancelled_at, None);
    assert_eq!(i2.press_count, 1, "a cancel does not count as a press");
    assert!(i2.is_open(), "a cancel does not close it");
    assert!(i2.cancelled_at.is_some());
    assert_eq!(
        i2.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::Duress, EventKind::Cancel]
    );
    assert_eq!(i2.location, location("Bldg A, Room 214"));
    assert_eq!(i2.host, host("ws-1"));

    let tests = store
        .recent_self_tests(now() - time::Duration::hours(1), 10)
        .await
        .unwrap();
    assert_eq!(tests.len(), 1);
    let devices = store.list_devices().await.unwrap();
    let dev = devices.iter().find(|x| x.device_id == d).unwrap();
    assert_eq!(dev.last_seq, Some(6));
    assert!(dev.last_self_test_at.is_some());

    // A lone cancel (nothing open) is stored apart. Resolve both first.
    for id in [first, second] {
        let done = store
            .apply_action(
                id,
                "alice",
                IncidentAction::Resolve {
                    disposition: "accidental".into(),
                    follow_up: String::new(),
                },
            )
            .await
            .unwrap();
        assert_eq!(done, ActionOutcome::Changed);
    }
    assert_eq!(
        committed(&store, event(&d, 7, EventKind::Cancel, now())).await,
        None
    );
    // A press after the resolution opens a new incident even within the window.
    let third = committed(
        &store,
        event(&d, 8, EventKind::Duress, t0 + time::Duration::minutes(21)),
    )
    .await
    .unwrap();
    assert!(![first, second].contains(&third));
    assert_eq!(
        store
            .list_incidents(IncidentFilter::Open)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn concurrent_presses_of_one_device_open_one_incident(store: Arc<dyn Store>) {
    let d = device(&store).await;
    let t = now();
    let presses = futures::future::join_all((1..=8).map(|seq| {
        let store = store.clone();
        let ev = event(&d, seq, EventKind::Duress, t);
        tokio::spawn(async move { store.ingest_event(ev, WINDOW).await })
    }))
    .await;
    let mut incident_ids = Vec::new();
    for p in presses {
        match p.unwrap().unwrap() {
            IngestOutcome::Committed(s) => incident_ids.push(s.incident_id.unwrap()),
            other => panic!("{other:?}"),
        }
    }
    incident_ids.dedup();
    assert_eq!(incident_ids.len(), 1, "{incident_ids:?}");
    let incidents = store.list_incidents(IncidentFilter::Open).await.unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].press_count, 8);
    assert_eq!(incidents[0].events.len(), 8);
}

async fn device_status_decides_and_revocation_is_final(store: Arc<dyn Store>) {
    let manual = token(&store, 5, Approve::Manual).await;
    let key = DeviceKey::from_seed(&random_bytes());
    let d = match store.enroll(enroll_request(&manual, &key)).await.unwrap() {
        EnrollOutcome::Enrolled { device_id, status } => {
            assert_eq!(status, DeviceStatus::Pending);
            device_id
        }
        other => panic!("{other:?}"),
    };
    let dk = store.device_credential(&d).await.unwrap().unwrap();
    assert_eq!(dk.status, DeviceStatus::Pending);
    assert_eq!(dk.public_jwk, key.public_jwk());
    assert_eq!(
        store.verifying_key(&d).await.unwrap(),
        Some(key.verifying_key())
    );
    assert_eq!(store.verifying_key("nobody").await.unwrap(), None);
    assert_eq!(
        store
            .ingest_event(event(&d, 1, EventKind::Duress, now()), WINDOW)
            .await
            .unwrap(),
        IngestOutcome::DeviceNotActive(DeviceStatus::Pending)
    );
    store
        .set_device_status(&d, DeviceStatus::Active, "admin")
        .await
        .unwrap();
    assert!(
        committed(&store, event(&d, 2, EventKind::Duress, now()))
            .await
            .is_some()
    );
    store
        .set_device_status(&d, DeviceStatus::Revoked, "admin")
        .await
        .unwrap();
    assert_eq!(
        store
            .ingest_event(event(&d, 3, EventKind::Duress, now()), WINDOW)
            .await
            .unwrap(),
        IngestOutcome::DeviceNotActive(DeviceStatus::Revoked)
    );
    for lift in [
        DeviceStatus::Active,
        DeviceStatus::Pending,
        DeviceStatus::Disabled,
    ] {
        assert!(matches!(
            store.set_device_status(&d, lift, "admin").await,
            Err(StoreError::Refused(_))
        ));
    }
    assert_eq!(
        store.device_credential(&d).await.unwrap().unwrap().status,
        DeviceStatus::Revoked
    );
    // The revoked key cannot come back through enrollment either.
    assert_eq!(
        store.enroll(enroll_request(&manual, &key)).await.unwrap(),
        EnrollOutcome::Refused(EnrollRefusal::KeyAlreadyEnrolled)
    );
    assert!(matches!(
        store
            .set_device_status("nobody", DeviceStatus::Active, "admin")
            .await,
        Err(StoreError::NoSuchDevice(_))
    ));
    // Each change is audited with its before and after.
    let details: Vec<String> = store
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "device.status")
        .map(|e| e.detail)
        .collect();
    assert_eq!(details, ["pending -> active", "active -> revoked"]);
}

async fn heartbeats_update_the_device_and_return_claimed_incidents(store: Arc<dyn Store>) {
    let d = device(&store).await;
    let first = committed(&store, event(&d, 1, EventKind::Duress, now()))
        .await
        .unwrap();
    let hb = |seq: i64, host: Option<HostFacts>| HeartbeatUpdate {
        device_id: d.clone(),
        received_at: now(),
        hotkey: HotkeyState::Registered {
            chords: vec!["Ctrl+Alt+F12".into()],
        },
        queued: 2,
        reported_last_seq: seq,
        host,
        location: None,
        policy: None,
        client_addr: None,
        alarm_refused: None,
    };
    let recorded = store.record_heartbeat(hb(3, None)).await.unwrap();
    assert_eq!(recorded.status, DeviceStatus::Active);
    assert!(
        recorded.claimed_incidents.is_empty(),
        "nobody claimed it yet"
    );

    assert_eq!(
        store
            .apply_action(first, "alice", IncidentAction::Claim { takeover: false })
            .await
            .unwrap(),
        ActionOutcome::Changed
    );
    let update = hb(4, Some(host("ws-renamed")));
    let at = update.received_at;
    let recorded = store.record_heartbeat(update).await.unwrap();
    assert_eq!(recorded.claimed_incidents, [first]);

    let dev = store
        .list_devices()
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.device_id == d)
        .unwrap();
    assert_eq!(dev.last_heartbeat_at, Some(at));
    assert_eq!(dev.queued, Some(2));
    assert_eq!(dev.reported_last_seq, Some(4));
    assert_eq!(dev.last_seq, Some(1));
    assert_eq!(dev.hostname, "ws-renamed");
    assert_eq!(dev.host, host("ws-renamed"));
    assert_eq!(
        dev.location,
        location("Bldg A, Room 214"),
        "kept: none was sent"
    );
    assert!(matches!(dev.hotkey, Some(HotkeyState::Registered { .. })));

    // Resolved incidents are not "claimed" any more.
    resolve(&store, first).await;
    assert!(
        store
            .record_heartbeat(hb(5, None))
            .await
            .unwrap()
            .claimed_incidents
            .is_empty()
    );

    // A revoked device's heartbeat writes nothing and learns nothing.
    let second = committed(&store, event(&d, 6, EventKind::Duress, now()))
        .await
        .unwrap();
    store
        .apply_action(second, "alice", IncidentAction::Claim { takeover: false })
        .await
        .unwrap();
    store
        .set_device_status(&d, DeviceStatus::Revoked, "admin")
        .await
        .unwrap();
    let recorded = store.record_heartbeat(hb(99, None)).await.unwrap();
    assert_eq!(recorded.status, DeviceStatus::Revoked);
    assert!(recorded.claimed_incidents.is_empty());
    let dev = store
        .list_devices()
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.device_id == d)
        .unwrap();
    assert_eq!(dev.reported_last_seq, Some(5), "nothing written");
    assert!(matches!(
        store
            .record_heartbeat(HeartbeatUpdate {
                device_id: "nobody".into(),
                ..hb(1, None)
            })
            .await,
        Err(StoreError::NoSuchDevice(_))
    ));
}

/// Many heartbeats at once — on PostgreSQL coalesced into batches of one statement each
/// (`store/postgres/heartbeats.rs`), on SQLite through the group-commit writer: each is answered
/// from its own device (status, claimed incidents), every device keeps one of the values it
/// sent, a revoked device's heartbeat writes nothing, an unknown device is `NoSuchDevice`, and a
/// heartbeat the database refuses (a NUL byte in text) fails alone, never its batch.
async fn concurrent_heartbeats_each_get_their_own_answer_and_a_bad_one_fails_alone(
    store: Arc<dyn Store>,
) {
    let mut devices = Vec::new();
    for _ in 0..12 {
        devices.push(device(&store).await);
    }
    let claimed = committed(&store, event(&devices[0], 1, EventKind::Duress, now()))
        .await
        .unwrap();
    store
        .apply_action(claimed, "alice", IncidentAction::Claim { takeover: false })
        .await
        .unwrap();
    let revoked = devices[1].clone();
    store
        .set_device_status(&revoked, DeviceStatus::Revoked, "admin")
        .await
        .unwrap();
    let hb = |d: &str, seq: i64, hostname: &str| HeartbeatUpdate {
        device_id: d.to_owned(),
        received_at: now(),
        hotkey: HotkeyState::Registered {
            chords: vec!["Ctrl+Alt+F12".into()],
        },
        queued: 0,
        reported_last_seq: seq,
        host: Some(host(hostname)),
        location: None,
        policy: None,
        client_addr: None,
        alarm_refused: None,
    };
    let mut tasks = Vec::new();
    for round in 0..3 {
        for d in &devices {
            let (store, update) = (store.clone(), hb(d, 10 + round, "ws-ok"));
            tasks.push(tokio::spawn(async move {
                (
                    update.device_id.clone(),
                    store.record_heartbeat(update).await,
                )
            }));
        }
    }
    let hostile = devices[2].clone();
    let bad = {
        let (store, update) = (store.clone(), hb(&hostile, 99, "ws-\0-nul"));
        tokio::spawn(async move { store.record_heartbeat(update).await })
    };
    let unknown = {
        let (store, update) = (store.clone(), hb("nobody", 1, "ws-ok"));
        tokio::spawn(async move { store.record_heartbeat(update).await })
    };
    for task in tasks {
        let (d, answer) = task.await.unwrap();
        let answer = answer.unwrap_or_else(|e| panic!("{d}: {e}"));
        if d == revoked {
            assert_eq!(answer.status, DeviceStatus::Revoked);
            assert!(answer.claimed_incidents.is_empty());
        } else {
            assert_eq!(answer.status, DeviceStatus::Active, "{d}");
            let expect: Vec<Uuid> = if d == devices[0] {
                vec![claimed]
            } else {
                vec![]
            };
            assert_eq!(answer.claimed_incidents, expect, "{d}");
        }
    }
    // SQLite stores the NUL; PostgreSQL text cannot hold one: refused, alone.
    let _ = bad.await.unwrap();
    assert!(matches!(
        unknown.await.unwrap(),
        Err(StoreError::NoSuchDevice(_))
    ));
    let listed = store.list_devices().await.unwrap();
    for d in &devices {
        let dev = listed.iter().find(|x| &x.device_id == d).unwrap();
        if d == &revoked {
            assert_eq!(
                dev.reported_last_seq, None,
                "a revoked device's heartbeat writes nothing"
            );
        } else if d != &hostile {
            assert!(
                matches!(dev.reported_last_seq, Some(10..=12)),
                "{d}: {:?}",
                dev.reported_last_seq
            );
            assert_eq!(dev.hostname, "ws-ok");
        }
    }
}

/// A cluster lease (`Store::cluster_lease`): on PostgreSQL one holder at a time per name, kept
/// while its session lives, taken by another as soon as the holder's session ends (the lease
/// dropped: its connection closed); leases of other names are independent. SQLite is one node:
/// always held.
async fn a_cluster_lease_has_one_holder_and_passes_on_when_its_session_ends(store: Arc<dyn Store>) {
    let mut first = store.cluster_lease("supervision");
    let mut second = store.cluster_lease("supervision");
    let mut other = store.cluster_lease("siem:archive");
    assert!(first.hold().await.unwrap());
    assert!(other.hold().await.unwrap(), "another name is another lease");
    if store.backend() == "sqlite" {
        assert!(second.hold().await.unwrap(), "one node: always held");
        return;
    }
    assert!(!second.hold().await.unwrap(), "held by the first");
    assert!(first.hold().await.unwrap(), "still held: its session lives");
    assert!(!second.hold().await.unwrap());
    drop(first);
    // The server ends the session when it sees the connection closed: bounded wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !second.hold().await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease did not pass on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(second.hold().await.unwrap(), "and the new holder keeps it");
}

async fn a_one_use_token_enrolls_exactly_one_of_many_concurrent_devices(store: Arc<dyn Store>) {
    let token_hash = token(&store, 1, Approve::Auto).await;
    let keys: Vec<DeviceKey> = (0..8)
        .map(|_| DeviceKey::from_seed(&random_bytes()))
        .collect();
    let outcomes = futures::future::join_all(keys.iter().map(|key| {
        let store = store.clone();
        let req = enroll_request(&token_hash, key);
        tokio::spawn(async move { store.enroll(req).await })
    }))
    .await;
    let outcomes: Vec<EnrollOutcome> = outcomes.into_iter().map(|o| o.unwrap().unwrap()).collect();
    let winners: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, EnrollOutcome::Enrolled { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let used_up = outcomes
        .iter()
        .filter(|o| **o == EnrollOutcome::Refused(EnrollRefusal::TokenUsedUp))
        .count();
    assert_eq!(used_up, 7, "{outcomes:?}");
    let tokens = store.list_tokens(10).await.unwrap();
    let t = tokens.iter().find(|t| t.token_hash == token_hash).unwrap();
    assert_eq!(t.uses_left, 0);
    assert_eq!(store.list_devices().await.unwrap().len(), 1);

    // The winner retrying (it lost the answer) gets its device again; no use is consumed.
    let winner = &keys[winners[0]];
    let EnrollOutcome::Enrolled { device_id, .. } = &outcomes[winners[0]] else {
        unreachable!()
    };
    assert_eq!(
        store
            .enroll(enroll_request(&token_hash, winner))
            .await
            .unwrap(),
        EnrollOutcome::AlreadyEnrolled {
            device_id: device_id.clone(),
            status: DeviceStatus::Active
        }
    );
}

async fn token_refusals_and_listing(store: Arc<dyn Store>) {
    let key = DeviceKey::from_seed(&random_bytes());
    assert_eq!(
        store
            .enroll(enroll_request(&"0".repeat(64), &key))
            .await
            .unwrap(),
        EnrollOutcome::Refused(EnrollRefusal::TokenInvalid)
    );
    let revoked = token(&store, 3, Approve::Auto).await;
    assert!(store.revoke_token(&revoked, "admin").await.unwrap());
    assert!(!store.revoke_token(&"f".repeat(64), "admin").await.unwrap());
    assert_eq!(
        store.enroll(enroll_request(&revoked, &key)).await.unwrap(),
        EnrollOutcome::Refused(EnrollRefusal::TokenRevoked)
    );
    let expired = hex::encode(Sha256::digest(random_bytes()));
    let created = now() - time::Duration::hours(2);
    store
        .create_token(
            NewToken {
                token_hash: expired.clone(),
                uses: 3,
                expires_at: Some(created + time::Duration::hours(1)),
                approve: Approve::Manual,
                created_at: created,
            },
            "admin",
        )
        .await
        .unwrap();
    assert_eq!(
        store.enroll(enroll_request(&expired, &key)).await.unwrap(),
        EnrollOutcome::Refused(EnrollRefusal::TokenExpired)
    );
    let tokens = store.list_tokens(10).await.unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0].token_hash, revoked, "newest first");
    assert!(tokens[0].revoked);
    assert_eq!(
        tokens[1].expires_at,
        Some(created + time::Duration::hours(1))
    );
    assert_eq!(tokens[1].created_at, created);
    assert_eq!(tokens[1].approve, Approve::Manual);
    assert_eq!(store.list_tokens(1).await.unwrap().len(), 1);
    // Audited by the hash's first 8 characters, never the token.
    let log = store.audit_log().await.unwrap();
    let created_entries: Vec<_> = log.iter().filter(|e| e.action == "token.create").collect();
    assert_eq!(created_entries.len(), 2);
    assert_eq!(created_entries[0].subject, revoked[..8]);
    assert!(
        log.iter()
            .any(|e| e.action == "token.revoke" && e.subject == revoked[..8])
    );
}

async fn accounts_add_refuse_duplicates_and_disable_ends_sessions(store: Arc<dyn Store>) {
    store
        .add_user(user("bob", Role::Officer), "admin")
        .await
        .unwrap();
    store
        .add_user(user("alice", Role::Admin), "admin")
        .await
        .unwrap();
    assert!(matches!(
        store.add_user(user("alice", Role::Officer), "admin").await,
        Err(StoreError::Refused(_))
    ));
    let users = store.list_users().await.unwrap();
    assert_eq!(
        users
            .iter()
            .map(|u| (u.username.as_str(), u.role))
            .collect::<Vec<_>>(),
        [("alice", Role::Admin), ("bob", Role::Officer)]
    );
    let creds = store.credentials("bob").await.unwrap().unwrap();
    assert!(creds.password_hash.starts_with("$argon2id$"));
    assert!(!creds.disabled);
    assert!(store.credentials("carol").await.unwrap().is_none());

    store
        .create_session(session("s1", "bob"), "ip:10.0.0.1")
        .await
        .unwrap();
    store
        .create_session(session("s2", "bob"), "ip:10.0.0.2")
        .await
        .unwrap();
    store
        .create_session(session("s3", "alice"), "ip:10.0.0.3")
        .await
        .unwrap();
    store.disable_user("bob", "alice").await.unwrap();
    assert!(store.session("s1").await.unwrap().is_none());
    assert!(store.session("s2").await.unwrap().is_none());
    assert!(
        store.session("s3").await.unwrap().is_some(),
        "other users keep theirs"
    );
    assert!(store.credentials("bob").await.unwrap().unwrap().disabled);
    assert!(matches!(
        store.disable_user("carol", "alice").await,
        Err(StoreError::Refused(_))
    ));
    store
        .record_login_failure("bob", "ip:10.9.9.9")
        .await
        .unwrap();
    store
        .record_login_lockout("bob", "ip:10.9.9.9", "5 sign-ins in 300 s; 195 refused")
        .await
        .unwrap();
    let lockout = store.audit_log().await.unwrap().pop().unwrap();
    assert_eq!(lockout.detail, "5 sign-ins in 300 s; 195 refused");
    let actions: Vec<(String, String, String)> = store
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.action, e.subject))
        .collect();
    let expect = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        actions,
        [
            expect("admin", "user.add", "bob"),
            expect("admin", "user.add", "alice"),
            expect("bob", "login.success", "bob"),
            expect("bob", "login.success", "bob"),
            expect("alice", "login.success", "alice"),
            expect("alice", "user.disable", "bob"),
            expect("ip:10.9.9.9", "login.failure", "bob"),
            expect("ip:10.9.9.9", "login.lockout", "bob"),
        ]
    );
    verified_chain(&store).await;
}

async fn sessions_are_created_read_touched_expired_and_ended(store: Arc<dyn Store>) {
    store
        .add_user(user("alice", Role::Officer), "admin")
        .await
        .unwrap();
    let s = session("hash-a", "alice");
    store
        .create_session(s.clone(), "ip:127.0.0.1")
        .await
        .unwrap();
    let read = store.session("hash-a").await.unwrap().unwrap();
    assert_eq!(read.username, "alice");
    assert_eq!(read.csrf_token, s.csrf_token);
    assert_eq!(read.last_seen_at, s.created_at);
    assert_eq!(read.expires_at, s.expires_at);
    assert_eq!(read.role, Some(Role::Officer));
    assert!(!read.user_disabled);
    assert!(store.session("hash-unknown").await.unwrap().is_none());

    let later = s.created_at + time::Duration::minutes(5);
    store.touch_session("hash-a", later).await.unwrap();
    assert_eq!(
        store.session("hash-a").await.unwrap().unwrap().last_seen_at,
        later
    );

    let audit_before = store.audit_log().await.unwrap().len();
    store.expire_session("hash-a").await.unwrap();
    assert!(store.session("hash-a").await.unwrap().is_none());
    assert_eq!(
        store.audit_log().await.unwrap().len(),
        audit_before,
        "expiry is nobody's act: not audited"
    );

    store
        .create_session(session("hash-b", "alice"), "ip:127.0.0.1")
        .await
        .unwrap();
    store.end_session("hash-b", "alice").await.unwrap();
    assert!(store.session("hash-b").await.unwrap().is_none());
    let last = store.recent_audit(1).await.unwrap().remove(0);
    assert_eq!(
        (last.actor.as_str(), last.action.as_str()),
        ("alice", "logout")
    );
    let login = store
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.action == "login.success")
        .unwrap();
    assert_eq!(login.detail, "ip:127.0.0.1");
}

async fn sessions_extend_forward_only_and_audited(store: Arc<dyn Store>) {
    store
        .add_user(user("erin", Role::Officer), "admin")
        .await
        .unwrap();
    let s = session("hash-e", "erin");
    store
        .create_session(s.clone(), "ip:127.0.0.1")
        .await
        .unwrap();
    assert_eq!(
        store.session("hash-e").await.unwrap().unwrap().created_at,
        s.created_at
    );
    let at = s.created_at + time::Duration::minutes(30);
    let until = s.expires_at + time::Duration::hours(2);
    assert!(store.extend_session("hash-e", until, at).await.unwrap());
    let read = store.session("hash-e").await.unwrap().unwrap();
    assert_eq!(read.expires_at, until);
    assert_eq!(read.last_seen_at, at, "an extension counts as use");
    assert_eq!(read.created_at, s.created_at, "sign-in time is kept");
    let last = store.recent_audit(1).await.unwrap().remove(0);
    assert_eq!(
        (
            last.actor.as_str(),
            last.action.as_str(),
            last.subject.as_str()
        ),
        ("erin", "session.extend", "erin")
    );
    // An earlier end (a second tab extending with an older view) never shortens it.
    assert!(
        store
            .extend_session("hash-e", s.expires_at, at)
            .await
            .unwrap()
    );
    assert_eq!(
        store.session("hash-e").await.unwrap().unwrap().expires_at,
        until
    );
    assert!(
        !store
            .extend_session("hash-unknown", until, at)
            .await
            .unwrap(),
        "no such session"
    );
    verified_chain(&store).await;
}

fn pending_display(token: &str, code: &str, at: OffsetDateTime) -> NewDisplay {
    NewDisplay {
        token_hash: format!("token-{token}"),
        code_hash: format!("code-{code}"),
        created_at: at,
        code_expires_at: at + time::Duration::minutes(10),
    }
}

async fn displays_wait_pair_once_revoke_for_good_all_audited(store: Arc<dyn Store>) {
    let t0 = now();
    assert!(
        store
            .create_pending_display(pending_display("a", "a", t0), 2)
            .await
            .unwrap()
    );
    let pending = store.display_by_token("token-a").await.unwrap().unwrap();
    assert_eq!(pending.state, DisplayState::Pending);
    assert!(
        store.displays().await.unwrap().is_empty(),
        "pending ones are not listed"
    );
    assert!(
        store
            .create_pending_display(pending_display("b", "b", t0), 2)
            .await
            .unwrap()
    );
    assert!(
        !store
            .create_pending_display(pending_display("c", "c", t0), 2)
            .await
            .unwrap(),
        "at most max_pending wait at once"
    );
    assert!(store.display_by_token("token-c").await.unwrap().is_none());

    let audit_before = store.audit_log().await.unwrap().len();
    let at = t0 + time::Duration::minutes(1);
    assert_eq!(
        store
            .pair_display("code-unknown", "Wall", "ada", at)
            .await
            .unwrap(),
        None
    );
    let id = store
        .pair_display("code-a", "Security office wall", "ada", at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, pending.id);
    assert_eq!(
        store
            .pair_display("code-a", "Again", "ada", at)
            .await
            .unwrap(),
        None,
        "a code pairs once"
    );
    let d = store.display_by_token("token-a").await.unwrap().unwrap();
    assert_eq!(d.state, DisplayState::Active);
    assert_eq!(d.name, "Security office wall");
    assert_eq!(d.paired_by.as_deref(), Some("ada"));
    assert_eq!(d.paired_at, Some(at));
    let log = store.audit_log().await.unwrap();
    assert_eq!(log.len(), audit_before + 1);
    let e = log.last().unwrap();
    assert_eq!(
        (
            e.actor.as_str(),
            e.action.as_str(),
            e.subject.clone(),
            e.detail.as_str()
        ),
        (
            "ada",
            "display.pair",
            format!("display {id}"),
            "Security office wall"
        )
    );

    // An expired code pairs nothing, and the next request clears it.
    let late = t0 + time::Duration::minutes(11);
    assert_eq!(
        store
            .pair_display("code-b", "Late", "ada", late)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .create_pending_display(pending_display("d", "d", late), 2)
            .await
            .unwrap()
    );
    assert!(store.display_by_token("token-b").await.unwrap().is_none());

    let seen = at + time::Duration::minutes(5);
    store.touch_display(id, seen).await.unwrap();
    assert_eq!(
        store.display(id).await.unwrap().unwrap().last_seen_at,
        Some(seen)
    );

    assert!(store.revoke_display(id, "ada", seen).await.unwrap());
    assert!(
        !store.revoke_display(id, "ada", seen).await.unwrap(),
        "revoked once"
    );
    let d = store.display(id).await.unwrap().unwrap();
    assert_eq!(d.state, DisplayState::Revoked);
    assert_eq!(d.revoked_by.as_deref(), Some("ada"));
    assert_eq!(d.revoked_at, Some(seen));
    let listed = store.displays().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    let last = store.recent_audit(1).await.unwrap().remove(0);
    assert_eq!(
        (last.actor.as_str(), last.action.as_str()),
        ("ada", "display.revoke")
    );
    verified_chain(&store).await;
}

async fn incident_actions_follow_the_incident_state(store: Arc<dyn Store>) {
    let id = incident(&store).await;
    let act = |actor: &'static str, action: IncidentAction| {
        let store = store.clone();
        async move { store.apply_action(id, actor, action).await.unwrap() }
    };
    let claim = IncidentAction::Claim { takeover: false };
    assert_eq!(act("alice", claim.clone()).await, ActionOutcome::Changed);
    assert_eq!(act("alice", claim.clone()).await, ActionOutcome::Unchanged);
    let claimed = store.incident(id).await.unwrap().unwrap().incident;
    let alice_at = claimed.claimed_at.unwrap();
    assert_eq!(claimed.claimed_by.as_deref(), Some("alice"));
    assert_eq!(claimed.first_claimed_at, Some(alice_at));
    assert_eq!(
        act("bob", claim.clone()).await,
        ActionOutcome::ClaimedBy {
            username: "alice".into(),
            at: Some(alice_at)
        }
    );
    assert_eq!(
        act("bob", IncidentAction::Claim { takeover: true }).await,
        ActionOutcome::Changed
    );
    assert_eq!(
        act("bob", IncidentAction::Note("  on my way  ".into())).await,
        ActionOutcome::Changed
    );
    assert_eq!(
        act("bob", IncidentAction::Level("lockdown".into())).await,
        ActionOutcome::Changed
    );
    assert_eq!(
        act("bob", IncidentAction::Called911).await,
        ActionOutcome::Changed
    );
    let resolve = IncidentAction::Resolve {
        disposition: "no emergency found".into(),
        follow_up: " call back tomorrow ".into(),
    };
    assert_eq!(act("bob", resolve.clone()).await, ActionOutcome::Changed);

    let resolved = store.incident(id).await.unwrap().unwrap().incident;
    assert!(!resolved.is_open());
    assert_eq!(resolved.claimed_by.as_deref(), Some("bob"));
    assert_eq!(
        resolved.first_claimed_at,
        Some(alice_at),
        "kept across take-overs"
    );
    assert_eq!(resolved.response_level.as_deref(), Some("lockdown"));
    assert!(resolved.called_911_at.is_some());
    assert!(resolved.resolved_at.is_some());
    assert_eq!(resolved.resolved_by.as_deref(), Some("bob"));
    assert_eq!(resolved.disposition.as_deref(), Some("no emergency found"));
    assert_eq!(resolved.follow_up.as_deref(), Some("call back tomorrow"));

    // Actions a resolved incident refuses.
    assert!(matches!(
        act("carol", claim.clone()).await,
        ActionOutcome::Refused(_)
    ));
    assert!(matches!(
        act("bob", resolve).await,
        ActionOutcome::Refused(_)
    ));
    assert_eq!(
        act("bob", IncidentAction::Reopen).await,
        ActionOutcome::Changed
    );
    assert_eq!(
        act("bob", IncidentAction::Reopen).await,
        ActionOutcome::Unchanged
    );
    let reopened = store.incident(id).await.unwrap().unwrap();
    assert!(reopened.incident.is_open());
    assert_eq!(reopened.incident.resolved_at, None);
    assert_eq!(reopened.incident.disposition, None);
    assert_eq!(reopened.incident.events.len(), 1, "the press");

    let timeline: Vec<(&str, &str)> = reopened
        .timeline
        .iter()
        .map(|t| (t.actor.as_str(), t.kind.as_str()))
        .collect();
    assert_eq!(
        timeline,
        [
            ("alice", "claim"),
            ("bob", "takeover"),
            ("bob", "note"),
            ("bob", "level"),
            ("bob", "911"),
            ("bob", "resolve"),
            ("bob", "reopen"),
        ]
    );
    assert_eq!(reopened.timeline[1].text, "bob took over from alice");
    assert_eq!(reopened.timeline[2].text, "on my way");
    assert_eq!(
        reopened.timeline[4].text,
        duress_receiver::store::called_911_text(reopened.incident.called_911_at.unwrap())
    );
    assert_eq!(
        reopened.timeline[5].text,
        "Disposition: no emergency found. Follow-up: call back tomorrow"
    );
    // Each change has its audit entry and live row; refusals and no-ops have none.
    let audited: Vec<String> = store
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.subject == id.to_string())
        .map(|e| e.action)
        .collect();
    assert_eq!(
        audited,
        [
            "incident.claim",
            "incident.claim",
            "incident.note",
            "incident.level",
            "incident.911",
            "incident.resolve",
            "incident.reopen"
        ]
    );
    let live: Vec<String> = store
        .live_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.incident_id == Some(id))
        .map(|r| r.kind)
        .collect();
    assert_eq!(
        live,
        [
            "incident.press",
            "incident.claim",
            "incident.takeover",
            "incident.note",
            "incident.level",
            "incident.911",
            "incident.resolve",
            "incident.reopen"
        ]
    );
    assert_eq!(
        store
            .apply_action(Uuid::now_v7(), "bob", IncidentAction::Called911)
            .await
            .unwrap(),
        ActionOutcome::NotFound
    );
    verified_chain(&store).await;
}

async fn of_concurrent_claims_exactly_one_wins(store: Arc<dyn Store>) {
    for _round in 0..3 {
        let id = incident(&store).await;
        let officers = ["alice", "bob", "carol", "dave", "erin", "frank"];
        let results = futures::future::join_all(officers.into_iter().map(|who| {
            let store = store.clone();
            tokio::spawn(async move {
                let r = store
                    .apply_action(id, who, IncidentAction::Claim { takeover: false })
                    .await
                    .unwrap();
                (who, r)
            })
        }))
        .await;
        let results: Vec<(&str, ActionOutcome)> = results.into_iter().map(|r| r.unwrap()).collect();
        let winners: Vec<&str> = results
            .iter()
            .filter(|(_, r)| *r == ActionOutcome::Changed)
            .map(|(who, _)| *who)
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        let winner = winners[0];
        for (who, r) in &results {
            if *who != winner {
                assert!(
                    matches!(r, ActionOutcome::ClaimedBy { username, at: Some(_) } if username == winner),
                    "{who}: {r:?}"
                );
            }
        }
        let detail = store.incident(id).await.unwrap().unwrap();
        assert_eq!(detail.incident.claimed_by.as_deref(), Some(winner));
        assert_eq!(detail.timeline.len(), 1, "one claim entry");
    }
    verified_chain(&store).await;
}

async fn escalation_happens_once(store: Arc<dyn Store>) {
    let due = incident(&store).await;
    let claimed = incident(&store).await;
    store
        .apply_action(claimed, "alice", IncidentAction::Claim { takeover: false })
        .await
        .unwrap();
    // Not due yet with a long delay.
    assert_eq!(
        store
            .escalate_unclaimed(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let counts = futures::future::join_all(
        (0..4).map(|_| store.escalate_unclaimed(Duration::from_millis(1))),
    )
    .await;
    let total: usize = counts.into_iter().map(|c| c.unwrap()).sum();
    assert_eq!(total, 1, "escalated once, however many callers race");
    assert_eq!(
        store
            .escalate_unclaimed(Duration::from_millis(1))
            .await
            .unwrap(),
        0
    );
    let detail = store.incident(due).await.unwrap().unwrap();
    assert!(detail.incident.escalated_at.is_some());
    assert_eq!(detail.timeline.len(), 1);
    assert_eq!(detail.timeline[0].actor, "system");
    assert_eq!(detail.timeline[0].kind, "escalation");
    assert_eq!(
        detail.timeline[0].text,
        duress_receiver::store::escalation_text(Duration::from_millis(1))
    );
    assert!(
        store
            .incident(claimed)
            .await
            .unwrap()
            .unwrap()
            .incident
            .escalated_at
            .is_none()
    );
    let log = store.audit_log().await.unwrap();
    assert_eq!(
        log.iter()
            .filter(|e| e.action == "incident.escalate")
            .count(),
        1
    );
    let live = store.live_after(0, 100).await.unwrap();
    let escalation: Vec<_> = live
        .iter()
        .filter(|r| r.kind == "incident.escalation")
        .collect();
    assert_eq!(escalation.len(), 1);
    assert_eq!(escalation[0].incident_id, Some(due));
    let payload: serde_json::Value = serde_json::from_str(&escalation[0].payload).unwrap();
    assert_eq!(payload["label"], "Bldg A, Room 214");
}

async fn audit_chain_verifies_after_many_and_concurrent_writes(store: Arc<dyn Store>) {
    for i in 0..10 {
        store
            .add_user(user(&format!("user{i}"), Role::Officer), "admin")
            .await
            .unwrap();
    }
    let writers = futures::future::join_all((0..24).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            match i % 3 {
                0 => {
                    token(&store, 1, Approve::Auto).await;
                }
                1 => {
                    store
                        .record_login_failure(&format!("user{i}"), "ip:192.0.2.1")
                        .await
                        .unwrap();
                }
                _ => {
                    let id = incident(&store).await;
                    store
                        .apply_action(id, "alice", IncidentAction::Note(format!("note {i}")))
                        .await
                        .unwrap();
                }
            }
        })
    }))
    .await;
    for w in writers {
        w.unwrap();
    }
    // 10 users; per third of 24: a token (1 entry), a failure (1), a device's token, its
    // enrollment and a note (3).
    let expected = 10 + 8 + 8 + 8 * 3;
    assert_eq!(verified_chain(&store).await, expected);
    let log = store.audit_log().await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.id).collect::<Vec<_>>(),
        (1..=expected as i64).collect::<Vec<_>>()
    );
    let recent = store.recent_audit(3).await.unwrap();
    assert_eq!(
        recent.iter().map(|e| e.id).collect::<Vec<_>>(),
        [expected as i64, expected as i64 - 1, expected as i64 - 2]
    );
    assert_eq!(recent[0], log[expected - 1]);
    // The stored time is the hashed text: the format every backend shares.
    assert_eq!(log[0].at.len(), "2026-12-01T00:00:00.000Z".len());
    assert!(log[0].at.ends_with('Z'));
}

/// Every new entry is keyed (HMAC under the store's key), the stored head follows the newest
/// entry, `record_audit` appends, a head kept earlier still verifies while one from another
/// chain or newer than the log does not, and the chain does not verify under another key.
async fn audit_entries_are_keyed_and_the_head_is_anchored(store: Arc<dyn Store>) {
    use audit_chain::{AuditHead, AuditKey};
    assert_eq!(store.audit_head().await.unwrap(), AuditHead::empty());
    store
        .add_user(user("ann", Role::Officer), "admin")
        .await
        .unwrap();
    store
        .record_audit(
            "cli",
            "events.export",
            "events",
            "events export (JSON Lines)",
        )
        .await
        .unwrap();
    let kept = store.audit_head().await.unwrap();
    store
        .add_user(user("bob", Role::Officer), "admin")
        .await
        .unwrap();
    let log = store.audit_log().await.unwrap();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|e| e.keyed), "every new entry is keyed");
    assert_eq!(log[1].action, "events.export");
    let head = store.audit_head().await.unwrap();
    assert_eq!((head.id, head.hash.as_str()), (3, log[2].hash.as_str()));
    assert_eq!((kept.id, kept.hash.as_str()), (2, log[1].hash.as_str()));
    // Not the legacy SHA-256: that would be recomputable without the key.
    let e = &log[0];
    assert_ne!(
        e.hash,
        audit_chain::entry_hash(
            &e.prev_hash,
            e.id,
            &e.at,
            &e.actor,
            &e.action,
            &e.subject,
            &e.detail
        )
    );
    let verify = |expect: Option<AuditHead>| {
        let store = store.clone();
        async move {
            duress_receiver::store::verify_audit(store.as_ref(), expect.as_ref())
                .await
                .unwrap()
        }
    };
    assert_eq!(verify(Some(kept.clone())).await, Ok(3));
    assert_eq!(verify(Some(head.clone())).await, Ok(3));
    let newer = AuditHead {
        id: 4,
        hash: head.hash.clone(),
    };
    assert!(
        verify(Some(newer))
            .await
            .unwrap_err()
            .reason
            .contains("older copy")
    );
    let other = AuditHead {
        id: 2,
        hash: "ab".repeat(32),
    };
    assert_eq!(verify(Some(other)).await.unwrap_err().id, 2);
    let wrong_key = AuditKey::from_bytes([9; 32], 1);
    let broken = audit_chain::verify(&log, &wrong_key, Some(&head), None).unwrap_err();
    assert_eq!(broken.id, 1);
    assert!(broken.reason.contains("HMAC"), "{broken}");
}

async fn camera_mappings_are_added_listed_and_deleted(store: Arc<dyn Store>) {
    let mapping = |value: &str| NewCameraMapping {
        match_field: "BLD".into(),
        match_value: value.into(),
        name: format!("Lobby {value}"),
        url_template: "https://cams.example/{BLD}".into(),
        created_at: now(),
    };
    let a = store
        .add_camera_mapping(mapping("A"), "admin")
        .await
        .unwrap();
    let b = store
        .add_camera_mapping(mapping("B"), "admin")
        .await
        .unwrap();
    assert!(b > a);
    let listed = store.camera_mappings().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|m| (m.id, m.match_value.as_str()))
            .collect::<Vec<_>>(),
        [(a, "A"), (b, "B")]
    );
    assert_eq!(listed[0].name, "Lobby A");
    assert!(store.delete_camera_mapping(a, "admin").await.unwrap());
    assert!(!store.delete_camera_mapping(a, "admin").await.unwrap());
    assert_eq!(store.camera_mappings().await.unwrap().len(), 1);
    let actions: Vec<(String, String)> = store
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.subject))
        .collect();
    assert_eq!(
        actions,
        [
            ("camera.add".to_owned(), a.to_string()),
            ("camera.add".to_owned(), b.to_string()),
            ("camera.delete".to_owned(), a.to_string()),
        ]
    );
}

/// Writers and events per writer of the live-log test.
const LIVE_DEVICES: i64 = 8;
const LIVE_EVENTS: i64 = 9;

async fn live_log_replays_in_id_order_and_misses_nothing(store: Arc<dyn Store>) {
    assert_eq!(store.live_latest_id().await.unwrap(), 0);
    let wake = store.live_wake();
    let woken = wake.notified();
    let devices: Vec<String> =
        futures::future::join_all((0..LIVE_DEVICES).map(|_| device(&store))).await;
    // A reader tails the log while writers write, the way the console's pump does.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tail = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut last = 0;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let rows = store.live_after(last, 7).await.unwrap();
                for r in &rows {
                    assert!(r.id > last, "in id order");
                    last = r.id;
                    seen.push(r.id);
                }
                if finished && rows.is_empty() {
                    return seen;
                }
            }
        })
    };
    let writers = futures::future::join_all(devices.iter().enumerate().map(|(n, d)| {
        let store = store.clone();
        let d = d.clone();
        tokio::spawn(async move {
            for seq in 1..=LIVE_EVENTS {
                let kind = if seq % 3 == 0 {
                    EventKind::Test
                } else {
                    EventKind::Duress
                };
                let id = committed(&store, event(&d, seq, kind, now())).await;
                if let Some(id) = id
                    && n % 2 == 0
                {
                    store
                        .apply_action(id, "alice", IncidentAction::Note(format!("{d} {seq}")))
                        .await
                        .unwrap();
                }
            }
        })
    }))
    .await;
    for w in writers {
        w.unwrap();
    }
    // The first commit poked the wake-up.
    tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let tailed = tail.await.unwrap();

    let all = store.live_after(0, 1000).await.unwrap();
    // Every event has its row; every third is a self-test; each duress event of an even
    // device also has a note.
    let (tests, presses) = (
        LIVE_DEVICES * (LIVE_EVENTS / 3),
        LIVE_DEVICES * (LIVE_EVENTS - LIVE_EVENTS / 3),
    );
    let notes = presses / 2;
    assert_eq!(all.len() as i64, tests + presses + notes);
    let ids: Vec<i64> = all.iter().map(|r| r.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(tailed, ids, "the tailing reader missed nothing");
    assert_eq!(store.live_latest_id().await.unwrap(), *ids.last().unwrap());
    // Paging through gives the same rows.
    let mut paged = Vec::new();
    let mut last = 0;
    loop {
        let page = store.live_after(last, 5).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 5);
        last = page.last().unwrap().id;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    let kinds = |k: &str| all.iter().filter(|r| r.kind == k).count();
    assert_eq!(kinds("selftest") as i64, tests);
    assert_eq!(kinds("incident.press") as i64, presses);
    assert_eq!(kinds("incident.note") as i64, notes);
    let press = all.iter().find(|r| r.kind == "incident.press").unwrap();
    assert!(press.incident_id.is_some());
    let payload: serde_json::Value = serde_json::from_str(&press.payload).unwrap();
    assert_eq!(payload["label"], "Bldg A, Room 214");
    assert!(devices.contains(&payload["device_id"].as_str().unwrap().to_owned()));
}

/// A new event's acknowledgement is signed inside its commit (over the incident the commit
/// chose), stored, returned by every repeat and by `find_event`; a second key's signature
/// (after a rotation) is stored beside it, the newest one answers; `export_events` carries every
/// signature with the facts that verify it.
async fn acknowledgements_are_signed_in_the_commit_stored_and_exported(store: Arc<dyn Store>) {
    let old = AckSigningKey::from_seed(&[31u8; 32]);
    let new = AckSigningKey::from_seed(&[32u8; 32]);
    let signer: Arc<dyn duress_receiver::store::AckSigner> =
        Arc::new(TestSigner(AckSigningKey::from_seed(&[31u8; 32])));
    let d = device(&store).await;
    let mut ev = event(&d, 1, EventKind::Duress, now());
    ev.ack_signer = Some(signer.clone());
    let first = match store.ingest_event(ev.clone(), WINDOW).await.unwrap() {
        IngestOutcome::Committed(s) => s,
        other => panic!("{other:?}"),
    };
    let trusted = [TrustedAckKey::parse(old.kid()).unwrap()];
    first.ack().verify_signature(&trusted).unwrap();
    assert!(first.incident_id.is_some());
    assert_eq!(store.find_event(ev.id).await.unwrap(), Some(first.clone()));
    match store.ingest_event(ev.clone(), WINDOW).await.unwrap() {
        IngestOutcome::Duplicate(s) => assert_eq!(s, first, "the stored signature answers"),
        other => panic!("{other:?}"),
    }

    // After a rotation the receiver stores the new key's signature too; storing it twice is
    // one row.
    let fresh = new.sign(first.id, first.received_at, first.incident_id);
    store.record_ack(ev.id, &fresh, now()).await.unwrap();
    store.record_ack(ev.id, &fresh, now()).await.unwrap();
    let found = store.find_event(ev.id).await.unwrap().unwrap();
    assert_eq!(
        found.ack.as_ref(),
        Some(&fresh),
        "the newest signature answers"
    );

    // A test event (no incident) is signed over an empty incident id.
    let mut test = event(&d, 2, EventKind::Test, now());
    test.ack_signer = Some(signer);
    let t = match store.ingest_event(test.clone(), WINDOW).await.unwrap() {
        IngestOutcome::Committed(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(t.incident_id, None);
    t.ack().verify_signature(&trusted).unwrap();

    let exported = store.export_events().await.unwrap();
    let e = exported.iter().find(|e| e.id == ev.id).unwrap();
    assert_eq!(e.incident_id, first.incident_id);
    assert_eq!(e.acks.len(), 2);
    assert_eq!(e.acks[0].kid, old.kid());
    assert_eq!(e.acks[1].kid, new.kid());
    let both = [
        TrustedAckKey::parse(old.kid()).unwrap(),
        TrustedAckKey::parse(new.kid()).unwrap(),
    ];
    for a in &e.acks {
        duress_core::ack::verify(
            &both,
            Some(&a.signature()),
            e.id,
            e.received_at,
            e.incident_id,
        )
        .unwrap();
    }
    let te = exported.iter().find(|e| e.id == test.id).unwrap();
    assert_eq!(te.acks.len(), 1);
    // An event stored without a signer has none.
    let plain = event(&d, 3, EventKind::Duress, now());
    committed(&store, plain.clone()).await;
    assert_eq!(store.find_event(plain.id).await.unwrap().unwrap().ack, None);
}

/// A heartbeat's policy report (source, SHA-256) is stored on the device; a heartbeat without
/// one keeps it.
async fn heartbeats_store_the_policy_report_and_keep_it(store: Arc<dyn Store>) {
    let d = device(&store).await;
    let hb = |policy: Option<duress_core::PolicyFacts>| HeartbeatUpdate {
        device_id: d.clone(),
        received_at: now(),
        hotkey: HotkeyState::NotApplicable,
        queued: 0,
        reported_last_seq: 0,
        host: None,
        location: None,
        policy,
        client_addr: None,
        alarm_refused: None,
    };
    let dev = |list: Vec<duress_receiver::DeviceRecord>| {
        list.into_iter().find(|x| x.device_id == d).unwrap()
    };
    assert_eq!(dev(store.list_devices().await.unwrap()).policy_sha256, None);
    let facts = duress_core::PolicyFacts {
        source: "os:/etc/duress/agent.toml".into(),
        sha256: "ab".repeat(32),
    };
    store
        .record_heartbeat(hb(Some(facts.clone())))
        .await
        .unwrap();
    store.record_heartbeat(hb(None)).await.unwrap();
    let got = dev(store.list_devices().await.unwrap());
    assert_eq!(got.policy_source.as_deref(), Some(facts.source.as_str()));
    assert_eq!(got.policy_sha256.as_deref(), Some(facts.sha256.as_str()));
}

/// Issue 12: a heartbeat's `alarm_refused` (why a queued alarm of the station is refused) is
/// stored on the device, and the next heartbeat without it clears it.
async fn heartbeats_store_and_clear_alarm_refused(store: Arc<dyn Store>) {
    let d = device(&store).await;
    let hb = |alarm_refused: Option<&str>| HeartbeatUpdate {
        device_id: d.clone(),
        received_at: now(),
        hotkey: HotkeyState::NotApplicable,
        queued: 1,
        reported_last_seq: 1,
        host: None,
        location: None,
        policy: None,
        client_addr: None,
        alarm_refused: alarm_refused.map(str::to_owned),
    };
    let dev = |list: Vec<duress_receiver::DeviceRecord>| {
        list.into_iter().find(|x| x.device_id == d).unwrap()
    };
    assert_eq!(dev(store.list_devices().await.unwrap()).alarm_refused, None);
    store
        .record_heartbeat(hb(Some("storage-unavailable (HTTP 503)")))
        .await
        .unwrap();
    assert_eq!(
        dev(store.list_devices().await.unwrap())
            .alarm_refused
            .as_deref(),
        Some("storage-unavailable (HTTP 503)")
    );
    store.record_heartbeat(hb(None)).await.unwrap();
    assert_eq!(dev(store.list_devices().await.unwrap()).alarm_refused, None);
}

async fn a_closed_store_is_unavailable(store: Arc<dyn Store>) {
    let d = device(&store).await;
    store.health().await.unwrap();
    store.close().await;
    assert!(matches!(
        store.health().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store
            .ingest_event(event(&d, 1, EventKind::Duress, now()), WINDOW)
            .await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.record_login_failure("x", "ip:192.0.2.9").await,
        Err(StoreError::Unavailable(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: several receivers on one database.

/// Two stores (two receivers, two pools) appending to the audit chain at once still build one
/// valid chain; and they both started at once on an empty database (the migration lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_receivers_write_one_valid_audit_chain() {
    let url = pg_url();
    // Receivers sharing a database share the audit key (the same file in each data dir).
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = tokio::join!(
        PostgresStore::connect(&url, dir.path()),
        PostgresStore::connect(&url, dir.path())
    );
    let stores: [Arc<dyn Store>; 2] = [Arc::new(a.unwrap()), Arc::new(b.unwrap())];
    let writers = futures::future::join_all((0..40).map(|i| {
        let store = stores[i % 2].clone();
        tokio::spawn(async move {
            store
                .record_login_failure(&format!("user{i}"), "ip:198.51.100.7")
                .await
                .unwrap();
        })
    }))
    .await;
    for w in writers {
        w.unwrap();
    }
    let by_a = stores[0].audit_log().await.unwrap();
    assert_eq!(
        duress_receiver::store::verify_audit(stores[0].as_ref(), None)
            .await
            .unwrap(),
        Ok(40)
    );
    assert_eq!(stores[1].audit_log().await.unwrap(), by_a);
    let mut subjects: Vec<String> = by_a.into_iter().map(|e| e.subject).collect();
    subjects.sort();
    let mut expected: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
    expected.sort();
    assert_eq!(subjects, expected, "every write has its entry");
    for s in stores {
        s.close().await;
    }
}

/// Two receivers take presses of one device at the same moment: one incident, and claims
/// through different receivers still have exactly one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_receivers_group_and_claim_as_one() {
    let url = pg_url();
    let dir = tempfile::tempdir().unwrap();
    let a: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, dir.path()).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, dir.path()).await.unwrap());
    let d = device(&a).await;
    let t = now();
    let presses = futures::future::join_all((1..=10).map(|seq| {
        let store = if seq % 2 == 0 { a.clone() } else { b.clone() };
        let ev = event(&d, seq, EventKind::Duress, t);
        tokio::spawn(async move { store.ingest_event(ev, WINDOW).await.unwrap() })
    }))
    .await;
    assert!(
        presses
            .into_iter()
            .all(|p| matches!(p.unwrap(), IngestOutcome::Committed(_)))
    );
    let incidents = b.list_incidents(IncidentFilter::Open).await.unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].press_count, 10);
    let id = incidents[0].incident_id;
    let (ra, rb) = tokio::join!(
        a.apply_action(id, "alice", IncidentAction::Claim { takeover: false }),
        b.apply_action(id, "bob", IncidentAction::Claim { takeover: false }),
    );
    let outcomes = [ra.unwrap(), rb.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == ActionOutcome::Changed)
            .count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, ActionOutcome::ClaimedBy { .. }))
    );
    // The key a receiver cached is the device's key for every receiver.
    assert_eq!(
        a.verifying_key(&d).await.unwrap(),
        b.verifying_key(&d).await.unwrap()
    );
    a.close().await;
    b.close().await;
}

/// A wrong or unreachable URL is `Unavailable`, and the message names it without its password.
#[tokio::test]
async fn postgres_unreachable_url_is_unavailable_and_never_shows_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://duress:hunter2-secret@/duress?host={}",
        dir.path().display()
    );
    let e = PostgresStore::connect(&url, dir.path()).await.unwrap_err();
    let message = e.to_string();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(!message.contains("hunter2-secret"), "{message}");
    assert!(
        message.contains("postgres://duress:***@/duress"),
        "{message}"
    );

    // The right server, a wrong database: also named without the password.
    let pg = duress_testpg::TestPg::shared().unwrap();
    let url = format!(
        "postgres://postgres:hunter2-secret@/no_such_db?host={}",
        pg.socket_dir().display()
    );
    let e = PostgresStore::connect(&url, dir.path()).await.unwrap_err();
    assert!(!e.to_string().contains("hunter2-secret"), "{e}");
    assert!(e.to_string().contains("no_such_db"), "{e}");
}

/// Issue 18: the `cancel_pin` of a cancel's signed claims reaches the one incident read model
/// (each event's `cancel_pin`, the incident's `cancel_with_duress_pin`), the event listing and
/// the live-log row; a wrong PIN counts as the duress PIN, a correct PIN or none does not; an
/// undecodable stored body is flagged rather than hidden. No cancel closes, claims or
/// un-escalates the incident.
async fn a_cancel_with_the_duress_pin_is_flagged_and_keeps_the_incident_open(
    store: Arc<dyn Store>,
) {
    use duress_core::PinCheck;
    let mut cases = Vec::new();
    for (pin, flagged) in [
        (None, false),
        (Some("ok"), false),
        (Some("wrong"), true),
        (Some("duress"), true),
    ] {
        let d = device(&store).await;
        let id = committed(&store, event(&d, 1, EventKind::Duress, now()))
            .await
            .unwrap();
        let before = store.incident(id).await.unwrap().unwrap().incident;
        assert!(!before.cancel_with_duress_pin);
        assert_eq!(committed(&store, cancel(&d, 2, pin)).await, Some(id));
        cases.push((id, pin, flagged));
    }
    // A second cancel with the right PIN does not clear an earlier duress flag.
    let (forced, _, _) = cases[3];
    let forced_device = store
        .incident(forced)
        .await
        .unwrap()
        .unwrap()
        .incident
        .device_id;
    assert_eq!(
        committed(&store, cancel(&forced_device, 3, Some("ok"))).await,
        Some(forced)
    );
    // A stored body that no longer decodes: flagged, not hidden, and the read model still works.
    let d = device(&store).await;
    let garbled_id = committed(&store, event(&d, 1, EventKind::Duress, now()))
        .await
        .unwrap();
    let mut garbled = cancel(&d, 2, Some("ok"));
    garbled.jws = "not.a-jws-payload!.x".into();
    committed(&store, garbled).await;

    let open = store.list_incidents(IncidentFilter::Open).await.unwrap();
    for (id, pin, flagged) in &cases {
        let listed = open
            .iter()
            .find(|i| i.incident_id == *id)
            .expect("still open");
        let detail = store.incident(*id).await.unwrap().unwrap().incident;
        for i in [listed, &detail] {
            assert!(i.is_open(), "a cancel never closes: {i:#?}");
            assert_eq!(i.claimed_by, None, "nor claims");
            assert!(i.cancelled_at.is_some());
            assert_eq!(i.press_count, 1);
            assert_eq!(i.cancel_with_duress_pin, *flagged, "{pin:?}");
            assert_eq!(i.events[0].cancel_pin, None, "a press has no PIN");
            assert_eq!(i.events[1].kind, EventKind::Cancel);
            assert_eq!(
                i.events[1].cancel_pin.map(PinCheck::as_str),
                *pin,
                "{pin:?}"
            );
        }
    }
    let garbled = open.iter().find(|i| i.incident_id == garbled_id).unwrap();
    assert!(garbled.cancel_with_duress_pin, "undecodable: flagged");
    assert_eq!(garbled.events[1].cancel_pin, Some(PinCheck::Wrong));

    let events = store.list_events().await.unwrap();
    let pins: Vec<Option<&str>> = events
        .iter()
        .filter(|e| e.kind == EventKind::Cancel)
        .map(|e| e.cancel_pin.map(PinCheck::as_str))
        .collect();
    assert_eq!(
        pins,
        [
            None,
            Some("ok"),
            Some("wrong"),
            Some("duress"),
            Some("ok"),
            Some("wrong")
        ]
    );
    assert!(
        events
            .iter()
            .filter(|e| e.kind != EventKind::Cancel)
            .all(|e| e.cancel_pin.is_none())
    );

    // The live rows of the cancels say it too, so a console's stream flags it at once.
    let live = store.live_after(0, 1000).await.unwrap();
    let cancels: Vec<serde_json::Value> = live
        .iter()
        .filter(|r| r.kind == "incident.cancel")
        .map(|r| serde_json::from_str(&r.payload).unwrap())
        .collect();
    assert_eq!(cancels.len(), 6);
    let flags: Vec<bool> = cancels
        .iter()
        .map(|p| p["cancel_with_duress_pin"].as_bool().unwrap())
        .collect();
    assert_eq!(flags, [false, false, true, true, false, true]);
    assert_eq!(cancels[3]["cancel_pin"], "duress");
    assert!(cancels[0]["cancel_pin"].is_null());

    // Escalation still sees the cancelled incidents as unclaimed: a cancel silences nothing.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let escalated = store
        .escalate_unclaimed(Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(
        escalated,
        cases.len() + 1,
        "every cancelled incident escalates"
    );
}

/// Issue 18: a station's self-test flag (Stations page, `devices list --json`) follows the
/// latest `kind: test` event the store recorded for it, scheduled or by hand: never tested,
/// tested, then overdue once older than the period plus a day; only active stations are flagged.
async fn the_self_test_flag_follows_the_latest_test_event(store: Arc<dyn Store>) {
    use duress_receiver::SelfTestState;
    const WEEK: Duration = Duration::from_secs(7 * 86_400);
    let d = device(&store).await;
    let listed = |devices: &[duress_receiver::DeviceRecord]| {
        devices.iter().find(|x| x.device_id == d).unwrap().clone()
    };
    let fresh = listed(&store.list_devices().await.unwrap());
    assert_eq!(
        fresh.self_test_state(now(), WEEK),
        Some(SelfTestState::Never)
    );

    let mut scheduled = event(&d, 1, EventKind::Test, now());
    scheduled.source = Source::Schedule;
    committed(&store, scheduled.clone()).await;
    let tested = listed(&store.list_devices().await.unwrap());
    assert_eq!(tested.last_self_test_at, Some(scheduled.received_at));
    assert_eq!(tested.last_self_test_id, Some(scheduled.id));
    let at = scheduled.received_at;
    assert_eq!(tested.self_test_state(at, WEEK), Some(SelfTestState::Ok));
    let day = time::Duration::days(1);
    assert_eq!(
        tested.self_test_state(at + day * 8, WEEK),
        Some(SelfTestState::Ok),
        "a day of grace"
    );
    assert_eq!(
        tested.self_test_state(at + day * 8 + time::Duration::seconds(1), WEEK),
        Some(SelfTestState::Overdue)
    );
    // A press or a cancel proves nothing about the test path's schedule.
    committed(&store, event(&d, 2, EventKind::Duress, now())).await;
    let after_press = listed(&store.list_devices().await.unwrap());
    assert_eq!(after_press.last_self_test_at, Some(at));
    // A test by hand counts too, and moves the date.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let by_hand = event(&d, 3, EventKind::Test, now());
    committed(&store, by_hand.clone()).await;
    let again = listed(&store.list_devices().await.unwrap());
    assert_eq!(again.last_self_test_at, Some(by_hand.received_at));
    assert_eq!(again.last_self_test_id, Some(by_hand.id));

    store
        .set_device_status(&d, DeviceStatus::Disabled, "admin")
        .await
        .unwrap();
    let disabled = listed(&store.list_devices().await.unwrap());
    assert_eq!(
        disabled.self_test_state(at + day * 30, WEEK),
        None,
        "only active stations are flagged"
    );
}

// ---------------------------------------------------------------------------------------------
// The notifier outbox.

/// Real incidents: channel "now" at once and "later" after 60 s (stopped by a claim); tests:
/// nothing.
#[derive(Debug)]
struct TwoSteps;

impl NotifyPlanner for TwoSteps {
    fn plan(&self, facts: &NotificationFacts) -> Vec<PlannedNotification> {
        if facts.reason == "offline" {
            return vec![PlannedNotification {
                channel: "trouble".into(),
                ladder: None,
                step: 0,
                repeat_index: 0,
                delay: Duration::ZERO,
                stop_on_claim: false,
            }];
        }
        if facts.reason != "incident" {
            return Vec::new();
        }
        let row = |channel: &str, step, secs, stop_on_claim| PlannedNotification {
            channel: channel.into(),
            ladder: Some("default".into()),
            step,
            repeat_index: 0,
            delay: Duration::from_secs(secs),
            stop_on_claim,
        };
        vec![row("now", 0, 0, false), row("later", 1, 60, true)]
    }
}

const LEASE: Duration = Duration::from_secs(60);

fn attempt(outcome: AttemptOutcome, at: OffsetDateTime) -> NewAttempt {
    NewAttempt {
        at,
        outcome,
        http_status: Some(500),
        error: matches!(outcome, AttemptOutcome::Error { .. }).then(|| "HTTP 500".to_owned()),
    }
}

async fn outbox_rows_come_with_the_incident_are_taken_once_and_settle_for_good(
    store: Arc<dyn Store>,
) {
    // Without a planner nothing is enqueued (console only).
    let before = incident(&store).await;
    assert!(
        store
            .incident_notifications(before)
            .await
            .unwrap()
            .is_empty()
    );

    store.set_planner(Some(Arc::new(TwoSteps)));
    let d = device(&store).await;
    // A self-test: the planner says nothing, so nothing is written.
    committed(&store, event(&d, 1, EventKind::Test, now())).await;
    assert!(store.recent_notifications(100).await.unwrap().is_empty());
    let id = committed(&store, event(&d, 2, EventKind::Duress, now()))
        .await
        .unwrap();
    // A joining press enqueues nothing more.
    committed(&store, event(&d, 3, EventKind::Duress, now())).await;
    let rows = store.incident_notifications(id).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.status == "pending"));

    // Only the immediate row is due; it is leased to the first taker alone.
    let t = now();
    let taken = store.take_due("w1", t, LEASE, 10).await.unwrap();
    assert_eq!(taken.len(), 1, "{taken:?}");
    let item = &taken[0];
    assert_eq!(item.channel, "now");
    assert_eq!(item.facts.incident_id, Some(id));
    assert_eq!(
        item.facts.location.label.as_deref(),
        Some("Bldg A, Room 214")
    );
    assert_eq!(item.press_count, Some(2));
    assert!(store.take_due("w2", t, LEASE, 10).await.unwrap().is_empty());

    // A failure is recorded and retried at its time, not before.
    let retry = t + time::Duration::seconds(5);
    let failed = attempt(
        AttemptOutcome::Error {
            retry_at: Some(retry),
        },
        t,
    );
    assert!(store.record_attempt(item.id, "w1", failed).await.unwrap());
    assert!(store.take_due("w2", t, LEASE, 10).await.unwrap().is_empty());
    let again = store.take_due("w2", retry, LEASE, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    // The old owner cannot settle it any more; the new one can, for good.
    assert!(
        !store
            .record_attempt(item.id, "w1", attempt(AttemptOutcome::Delivered, retry))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_attempt(item.id, "w2", attempt(AttemptOutcome::Delivered, retry))
            .await
            .unwrap()
    );
    // Never taken again, even long after every lease ran out.
    let much_later = t + time::Duration::seconds(30);
    assert!(
        store
            .take_due("w3", much_later, LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A row whose worker died (no attempt recorded) is taken again once its lease ran out.
    let due = t + time::Duration::seconds(61);
    let later = store.take_due("w4", due, LEASE, 10).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].channel, "later");
    assert!(
        store
            .take_due("w5", due, LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let after_lease = due + LEASE + time::Duration::seconds(1);
    let retaken = store.take_due("w5", after_lease, LEASE, 10).await.unwrap();
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].id, later[0].id);
    assert!(
        store
            .record_attempt(
                retaken[0].id,
                "w5",
                attempt(AttemptOutcome::Accepted, after_lease)
            )
            .await
            .unwrap()
    );

    let rows = store.incident_notifications(id).await.unwrap();
    let now_row = rows.iter().find(|r| r.channel == "now").unwrap();
    assert_eq!(now_row.status, "delivered");
    let outcomes: Vec<_> = now_row
        .attempts
        .iter()
        .map(|a| a.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["error", "delivered", "delivered"]);
    assert_eq!(now_row.attempts[0].http_status, Some(500));
    assert_eq!(now_row.attempts[0].error.as_deref(), Some("HTTP 500"));
    let later_row = rows.iter().find(|r| r.channel == "later").unwrap();
    assert_eq!(later_row.status, "accepted");
    // What /metrics reads: rows by status, absent statuses left out.
    assert_eq!(
        store.notification_counts().await.unwrap(),
        [("accepted".to_owned(), 1), ("delivered".to_owned(), 1)]
    );
}

async fn outbox_a_claim_stops_the_ladder(store: Arc<dyn Store>) {
    assert!(store.notification_counts().await.unwrap().is_empty());
    store.set_planner(Some(Arc::new(TwoSteps)));
    let claimed = incident(&store).await;
    let unclaimed = incident(&store).await;
    assert_eq!(
        store
            .apply_action(claimed, "alice", IncidentAction::Claim { takeover: false })
            .await
            .unwrap(),
        ActionOutcome::Changed
    );
    let t = now() + time::Duration::seconds(61);
    let taken = store.take_due("w1", t, LEASE, 10).await.unwrap();
    // Both immediate rows, and the second step of the unclaimed incident only.
    let mut got: Vec<_> = taken
        .iter()
        .map(|i| (i.facts.incident_id.unwrap() == claimed, i.channel.as_str()))
        .collect();
    got.sort();
    assert_eq!(got, [(false, "later"), (false, "now"), (true, "now")]);
    let rows = store.incident_notifications(claimed).await.unwrap();
    let later = rows.iter().find(|r| r.channel == "later").unwrap();
    assert_eq!(later.status, "stopped");
    assert!(later.attempts.is_empty());
    let _ = unclaimed;
    // Taken (leased) rows are still pending: the queue depth /metrics shows.
    assert_eq!(
        store.notification_counts().await.unwrap(),
        [("pending".to_owned(), 3), ("stopped".to_owned(), 1)]
    );
}

/// Two receivers' workers on one database: every due row goes to exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_workers_take_each_row_once() {
    let url = pg_url();
    let dir = tempfile::tempdir().unwrap();
    let a: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, dir.path()).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, dir.path()).await.unwrap());
    a.set_planner(Some(Arc::new(TwoSteps)));
    for _ in 0..20 {
        incident(&a).await;
    }
    let t = now();
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for _ in 0..10 {
        let (ra, rb) = tokio::join!(a.take_due("a", t, LEASE, 3), b.take_due("b", t, LEASE, 3));
        for item in ra.unwrap().into_iter().chain(rb.unwrap()) {
            assert!(seen.insert(item.id), "taken twice: {}", item.id);
            total += 1;
        }
    }
    assert_eq!(total, 20);
    a.close().await;
    b.close().await;
}

async fn supervision_notifies_each_outage_once_and_never_for_revoked(store: Arc<dyn Store>) {
    store.set_planner(Some(Arc::new(TwoSteps)));
    assert_eq!(store.last_sweep().await.unwrap(), None);
    let beat = |d: &str, at: OffsetDateTime| HeartbeatUpdate {
        device_id: d.to_owned(),
        received_at: at,
        hotkey: HotkeyState::Registered {
            chords: vec!["Ctrl+Alt+Shift+D".into()],
        },
        queued: 0,
        reported_last_seq: 0,
        host: None,
        location: None,
        policy: None,
        client_addr: None,
        alarm_refused: None,
    };
    let long_ago = now() - time::Duration::minutes(10);
    let quiet = device(&store).await;
    let revoked = device(&store).await;
    let alive = device(&store).await;
    let _never_seen = device(&store).await;
    store
        .record_heartbeat(beat(&quiet, long_ago))
        .await
        .unwrap();
    store
        .record_heartbeat(beat(&revoked, long_ago))
        .await
        .unwrap();
    store.record_heartbeat(beat(&alive, now())).await.unwrap();
    store
        .set_device_status(&revoked, DeviceStatus::Revoked, "admin")
        .await
        .unwrap();
    let after = Duration::from_secs(150);
    let t = now();
    assert_eq!(
        store.sweep_offline(t, after).await.unwrap(),
        vec![quiet.clone()]
    );
    assert!(store.last_sweep().await.unwrap().is_some());
    // The same outage notifies once.
    assert!(store.sweep_offline(now(), after).await.unwrap().is_empty());
    let rows = store.recent_notifications(100).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].channel, "trouble");
    let taken = store
        .take_due("w", now(), Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].facts.reason, "offline");
    assert_eq!(taken[0].facts.device_id, quiet);
    assert_eq!(
        taken[0].facts.location.label.as_deref(),
        Some("Bldg A, Room 214")
    );
    // Back online, then silent again: a new outage, a new notification.
    store.record_heartbeat(beat(&quiet, now())).await.unwrap();
    assert!(store.sweep_offline(now(), after).await.unwrap().is_empty());
    let later = now() + time::Duration::minutes(5);
    let mut again = store.sweep_offline(later, after).await.unwrap();
    again.sort();
    let mut expected = vec![quiet.clone(), alive.clone()];
    expected.sort();
    assert_eq!(again, expected);
    assert_eq!(store.recent_notifications(100).await.unwrap().len(), 3);
}

/// The real planner of a configuration with protection schedules: a station offline outside
/// its schedule is not an outage (no notification); still offline when the schedule begins, it
/// notifies then, once. The sweep's clock is the injected `now`.
async fn supervision_notifies_only_within_the_protection_schedule(store: Arc<dyn Store>) {
    use time::macros::datetime;
    let config = duress_receiver::config::ReceiverConfig::parse(
        r#"
[[channels]]
name = "trouble"
kind = "webhook"
url = "http://127.0.0.1:9/trouble"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[[schedules]]
name = "office"
days = ["weekdays"]
from = "07:00"
to = "19:00"
timezone = "America/Chicago"
[[schedules]]
name = "clinic"
days = ["sat"]
from = "08:00"
to = "12:00"
timezone = "America/Chicago"
[supervision]
channels = ["trouble"]
schedule = "office"
[[supervision.rules]]
schedule = "clinic"
site = "Clinic"
"#,
    )
    .unwrap();
    let plan = duress_receiver::notify::Plan::new(Arc::new(config));
    store.set_planner(Some(Arc::new(plan)));
    let beat = |d: &str, location: Option<Location>| HeartbeatUpdate {
        device_id: d.to_owned(),
        received_at: now() - time::Duration::minutes(10),
        hotkey: HotkeyState::Registered {
            chords: vec!["Ctrl+Alt+Shift+D".into()],
        },
        queued: 0,
        reported_last_seq: 0,
        host: None,
        location,
        policy: None,
        client_addr: None,
        alarm_refused: None,
    };
    let office = device(&store).await;
    let clinic = device(&store).await;
    store.record_heartbeat(beat(&office, None)).await.unwrap();
    store
        .record_heartbeat(beat(
            &clinic,
            Some(Location {
                label: Some("Clinic, Room 1".into()),
                nam: Some("Clinic".into()),
                ..Default::default()
            }),
        ))
        .await
        .unwrap();
    let after = Duration::from_secs(150);
    // Saturday 2026-12-12 13:00 UTC = 07:00 in Chicago: neither schedule protects.
    let sat_early = datetime!(2026-12-12 13:00 UTC);
    assert!(
        store
            .sweep_offline(sat_early, after)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.recent_notifications(100).await.unwrap().is_empty());
    // 14:30 UTC = 08:30: the clinic (site rule) is protected; the office (default) is not.
    let sat_clinic = datetime!(2026-12-12 14:30 UTC);
    assert_eq!(
        store.sweep_offline(sat_clinic, after).await.unwrap(),
        vec![clinic.clone()]
    );
    // Monday 2026-12-14 13:30 UTC = 07:30: the office, still silent, notifies now; the clinic
    // (an outage already notified) does not again.
    let monday = datetime!(2026-12-14 13:30 UTC);
    assert_eq!(
        store.sweep_offline(monday, after).await.unwrap(),
        vec![office.clone()]
    );
    assert!(store.sweep_offline(monday, after).await.unwrap().is_empty());
    let rows = store.recent_notifications(100).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.channel == "trouble"));
}

/// The SIEM feed's store side: audit entries after an id in order, and per-sink positions
/// that start at (0, 0) and never move back.
async fn siem_reads_after_a_position_that_only_moves_forward(store: Arc<dyn Store>) {
    assert_eq!(store.siem_position("soc").await.unwrap(), (0, 0));
    let _ = incident(&store).await;
    let _ = token(&store, 1, Approve::Auto).await;
    let _ = token(&store, 1, Approve::Auto).await;
    let all = store.audit_log().await.unwrap();
    assert!(all.len() >= 2, "{all:?}");
    let after_first = store.audit_after(all[0].id, 1000).await.unwrap();
    assert_eq!(after_first, all[1..].to_vec());
    assert_eq!(
        store.audit_after(all[0].id, 1).await.unwrap(),
        all[1..2].to_vec()
    );
    assert!(
        store
            .audit_after(all.last().unwrap().id, 10)
            .await
            .unwrap()
            .is_empty()
    );

    store.siem_advance("soc", 2, 5, now()).await.unwrap();
    assert_eq!(store.siem_position("soc").await.unwrap(), (2, 5));
    // An older position (another receiver's late write) does not move it back.
    store.siem_advance("soc", 1, 3, now()).await.unwrap();
    assert_eq!(store.siem_position("soc").await.unwrap(), (2, 5));
    store.siem_advance("soc", 3, 5, now()).await.unwrap();
    assert_eq!(store.siem_position("soc").await.unwrap(), (3, 5));
    // Each sink its own.
    assert_eq!(store.siem_position("file").await.unwrap(), (0, 0));
}

/// Issue 15: a pending or disabled device's heartbeats and events never change its station's
/// stored location (its liveness is still recorded); once active, a heartbeat moves it.
async fn only_an_active_device_moves_its_station(store: Arc<dyn Store>) {
    let manual = token(&store, 1, Approve::Manual).await;
    let key = DeviceKey::from_seed(&random_bytes());
    let d = match store.enroll(enroll_request(&manual, &key)).await.unwrap() {
        EnrollOutcome::Enrolled { device_id, .. } => device_id,
        other => panic!("{other:?}"),
    };
    let hb = |label: &str| HeartbeatUpdate {
        device_id: d.clone(),
        received_at: now(),
        hotkey: HotkeyState::Registered {
            chords: vec!["Ctrl+Alt+F12".into()],
        },
        queued: 0,
        reported_last_seq: 0,
        host: None,
        location: Some(location(label)),
        policy: None,
        client_addr: None,
        alarm_refused: None,
    };
    let stored = |store: Arc<dyn Store>, d: String| async move {
        store
            .list_devices()
            .await
            .unwrap()
            .into_iter()
            .find(|x| x.device_id == d)
            .unwrap()
    };
    let enrolled_at = location("Bldg A, Room 214");

    // Pending: liveness recorded, location kept.
    let update = hb("Somewhere else (pending)");
    let at = update.received_at;
    assert_eq!(
        store.record_heartbeat(update).await.unwrap().status,
        DeviceStatus::Pending
    );
    let dev = stored(store.clone(), d.clone()).await;
    assert_eq!(dev.last_heartbeat_at, Some(at), "liveness still recorded");
    assert_eq!(
        dev.location, enrolled_at,
        "a pending device moved its station"
    );

    // Active: a heartbeat moves it.
    store
        .set_device_status(&d, DeviceStatus::Active, "admin")
        .await
        .unwrap();
    store.record_heartbeat(hb("Bldg B, Room 9")).await.unwrap();
    assert_eq!(
        stored(store.clone(), d.clone()).await.location,
        location("Bldg B, Room 9")
    );

    // Disabled: neither heartbeats nor events move it.
    store
        .set_device_status(&d, DeviceStatus::Disabled, "admin")
        .await
        .unwrap();
    store
        .record_heartbeat(hb("Somewhere else (disabled)"))
        .await
        .unwrap();
    let mut ev = event(&d, 1, EventKind::Duress, now());
    ev.location = location("Somewhere else (disabled event)");
    assert_eq!(
        store.ingest_event(ev, WINDOW).await.unwrap(),
        IngestOutcome::DeviceNotActive(DeviceStatus::Disabled)
    );
    assert_eq!(
        stored(store.clone(), d.clone()).await.location,
        location("Bldg B, Room 9"),
        "a disabled device moved its station"
    );
}

/// Issue 15: "resolve every open incident of this station" resolves exactly that station's
/// open incidents (not its resolved ones, not another station's), each with its disposition,
/// note, timeline entry, one audit entry and one live row; a second run finds nothing; an
/// unknown station is `NoSuchDevice`.
async fn resolving_a_stations_open_incidents_resolves_each_audited(store: Arc<dyn Store>) {
    let a = device(&store).await;
    let b = device(&store).await;
    let mut opened = Vec::new();
    for (seq, minutes_ago) in [(1, 90), (2, 60), (3, 30), (4, 0)] {
        let at = now() - time::Duration::minutes(minutes_ago);
        opened.push(
            committed(&store, event(&a, seq, EventKind::Duress, at))
                .await
                .unwrap(),
        );
    }
    let others = committed(&store, event(&b, 1, EventKind::Duress, now()))
        .await
        .unwrap();
    // One of a's incidents was already handled.
    store
        .apply_action(
            opened[0],
            "alice",
            IncidentAction::Resolve {
                disposition: "test".into(),
                follow_up: String::new(),
            },
        )
        .await
        .unwrap();
    let live_before = store.live_latest_id().await.unwrap();
    let audit_before = store.audit_log().await.unwrap().len();

    let resolved = store
        .resolve_open_of_device(&a, "admin", "no emergency found", "broken keyboard")
        .await
        .unwrap();
    assert_eq!(resolved, opened[1..], "the open ones, oldest first");

    let all = store.list_incidents(IncidentFilter::All).await.unwrap();
    for id in &resolved {
        let i = all.iter().find(|i| i.incident_id == *id).unwrap();
        assert_eq!(i.status, "closed");
        assert_eq!(i.resolved_by.as_deref(), Some("admin"));
        assert_eq!(i.disposition.as_deref(), Some("no emergency found"));
        assert_eq!(i.follow_up.as_deref(), Some("broken keyboard"));
        let detail = store.incident(*id).await.unwrap().unwrap();
        assert!(detail.timeline.iter().any(|t| t.actor == "admin"));
    }
    let first = all.iter().find(|i| i.incident_id == opened[0]).unwrap();
    assert_eq!(first.disposition.as_deref(), Some("test"), "left as it was");
    let theirs = all.iter().find(|i| i.incident_id == others).unwrap();
    assert_eq!(
        theirs.status, "open",
        "another station's incident was resolved"
    );

    let audit = store.audit_log().await.unwrap();
    let new: Vec<_> = audit[audit_before..].iter().collect();
    assert_eq!(new.len(), 3, "one audit entry per incident");
    for (entry, id) in new.iter().zip(&resolved) {
        assert_eq!(entry.action, "incident.resolve");
        assert_eq!(entry.actor, "admin");
        assert_eq!(entry.subject, id.to_string());
        assert!(entry.detail.contains("broken keyboard"), "{}", entry.detail);
    }
    let live = store.live_after(live_before, 100).await.unwrap();
    assert_eq!(live.len(), 3, "one live row per incident");
    for (row, id) in live.iter().zip(&resolved) {
        assert_eq!(row.kind, "incident.resolve");
        assert_eq!(row.incident_id, Some(*id));
    }
    verified_chain(&store).await;

    assert!(
        store
            .resolve_open_of_device(&a, "admin", "no emergency found", "again")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.audit_log().await.unwrap().len(), audit.len());
    assert!(matches!(
        store
            .resolve_open_of_device("nobody", "admin", "no emergency found", "x")
            .await,
        Err(StoreError::NoSuchDevice(_))
    ));
}

fn registered(bld: &str, flr: &str, room: &str) -> Location {
    Location {
        label: Some(format!("Bldg {bld}, Room {room}")),
        bld: Some(bld.into()),
        flr: Some(flr.into()),
        room: Some(room.into()),
        ..Default::default()
    }
}

fn registered_of(devices: &[duress_receiver::DeviceRecord], d: &str) -> Option<Location> {
    devices
        .iter()
        .find(|x| x.device_id == d)
        .unwrap()
        .registered_location
        .clone()
}

/// Issue 16 item 3: approval registers the approver's location with the status change (one
/// transaction, both audited); an admin changes or clears it later (audited with old and new);
/// the agent's claimed location is never touched; unknown and revoked devices are refused.
async fn registered_locations_are_set_at_approval_and_by_an_admin_audited(store: Arc<dyn Store>) {
    let manual = token(&store, 5, Approve::Manual).await;
    let key = DeviceKey::from_seed(&random_bytes());
    let d = match store.enroll(enroll_request(&manual, &key)).await.unwrap() {
        EnrollOutcome::Enrolled { device_id, .. } => device_id,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        registered_of(&store.list_devices().await.unwrap(), &d),
        None
    );
    // Every enrollment is audited, with the key thumbprint approvers compare.
    let enrolled = store.recent_audit(1).await.unwrap().remove(0);
    assert_eq!(
        (enrolled.action.as_str(), enrolled.actor.as_str()),
        ("device.enroll", "enrollment")
    );
    assert_eq!(enrolled.subject, d);
    assert!(
        enrolled.detail.contains("status pending")
            && enrolled.detail.contains(&key.public_jwk().thumbprint()),
        "{}",
        enrolled.detail
    );

    let room_101 = registered("A", "1", "101");
    store
        .approve_device(&d, Some(room_101.clone()), "approver")
        .await
        .unwrap();
    let devices = store.list_devices().await.unwrap();
    let dev = devices.iter().find(|x| x.device_id == d).unwrap();
    assert_eq!(dev.status, DeviceStatus::Active);
    assert_eq!(dev.registered_location.as_ref(), Some(&room_101));
    // The claim stays what the agent said.
    assert_eq!(dev.location, location("Bldg A, Room 214"));
    let recent = store.recent_audit(2).await.unwrap();
    assert_eq!(recent[0].action, "device.location");
    assert_eq!(recent[0].actor, "approver");
    assert_eq!(recent[0].subject, d);
    assert!(
        recent[0].detail.contains("(none) ->"),
        "{}",
        recent[0].detail
    );
    assert!(
        recent[0].detail.contains("ROOM \"101\""),
        "{}",
        recent[0].detail
    );
    assert_eq!(recent[1].action, "device.status");

    // An admin moves it, then clears it.
    let room_7 = registered("B", "2", "7");
    store
        .set_registered_location(&d, Some(room_7.clone()), "admin")
        .await
        .unwrap();
    assert_eq!(
        registered_of(&store.list_devices().await.unwrap(), &d),
        Some(room_7)
    );
    let last = store.recent_audit(1).await.unwrap().remove(0);
    assert_eq!(
        (last.action.as_str(), last.actor.as_str()),
        ("device.location", "admin")
    );
    assert!(
        last.detail.contains("\"101\"") && last.detail.contains("\"7\""),
        "old and new: {}",
        last.detail
    );
    store
        .set_registered_location(&d, None, "admin")
        .await
        .unwrap();
    assert_eq!(
        registered_of(&store.list_devices().await.unwrap(), &d),
        None
    );

    // A heartbeat with a new claim leaves the registration alone.
    store
        .set_registered_location(&d, Some(room_101.clone()), "admin")
        .await
        .unwrap();
    store
        .record_heartbeat(HeartbeatUpdate {
            device_id: d.clone(),
            received_at: now(),
            hotkey: HotkeyState::NotApplicable,
            queued: 0,
            reported_last_seq: 0,
            host: None,
            location: Some(location("Room 214 (moved)")),
            policy: None,
            client_addr: None,
            alarm_refused: None,
        })
        .await
        .unwrap();
    let devices = store.list_devices().await.unwrap();
    let dev = devices.iter().find(|x| x.device_id == d).unwrap();
    assert_eq!(dev.registered_location.as_ref(), Some(&room_101));
    assert_eq!(dev.location, location("Room 214 (moved)"));

    // Unknown device; revoked device cannot be approved back, and nothing is half-written.
    assert!(matches!(
        store.set_registered_location("nobody", None, "admin").await,
        Err(StoreError::NoSuchDevice(_))
    ));
    store
        .set_device_status(&d, DeviceStatus::Revoked, "admin")
        .await
        .unwrap();
    let before = store.audit_log().await.unwrap().len();
    assert!(matches!(
        store
            .approve_device(&d, Some(registered("C", "3", "3")), "admin")
            .await,
        Err(StoreError::Refused(_))
    ));
    assert_eq!(store.audit_log().await.unwrap().len(), before);
    assert_eq!(
        registered_of(&store.list_devices().await.unwrap(), &d),
        Some(room_101)
    );
    assert!(verified_chain(&store).await > 0);
}

/// Issue 16 item 3 (location drift): the subnet map is put (a listed network remapped, not
/// doubled), listed in order, removed, each change audited; heartbeats and events record the
/// client address (the device's latest, and each event's).
async fn subnets_are_put_replaced_removed_audited_and_addresses_recorded(store: Arc<dyn Store>) {
    use duress_receiver::subnets::new_subnet;
    assert!(store.subnets().await.unwrap().is_empty());
    let n = store
        .put_subnets(
            vec![
                new_subnet("10.2.0.0/16", "B", "").unwrap(),
                new_subnet("10.1.0.0/16", "A", "2").unwrap(),
            ],
            "admin",
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    // Remapping a listed network (given with host bits) replaces it.
    store
        .put_subnets(vec![new_subnet("10.2.3.4/16", "C", "").unwrap()], "cli")
        .await
        .unwrap();
    let listed = store.subnets().await.unwrap();
    let rows: Vec<(String, &str, Option<&str>)> = listed
        .iter()
        .map(|s| (s.cidr(), s.building.as_str(), s.floor.as_deref()))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("10.1.0.0/16".to_owned(), "A", Some("2")),
            ("10.2.0.0/16".to_owned(), "C", None),
        ]
    );
    let last = store.recent_audit(1).await.unwrap().remove(0);
    assert_eq!(
        (
            last.action.as_str(),
            last.subject.as_str(),
            last.actor.as_str()
        ),
        ("subnet.put", "10.2.0.0/16", "cli")
    );
    assert!(store.remove_subnet("10.2.0.0/16", "admin").await.unwrap());
    assert!(!store.remove_subnet("10.2.0.0/16", "admin").await.unwrap());
    assert_eq!(store.subnets().await.unwrap().len(), 1);
    let last = store.recent_audit(1).await.unwrap().remove(0);
    assert_eq!(last.action, "subnet.remove");

    // Addresses: an event's is kept with it and as the device's latest; a heartbeat's
    // replaces it; one without an address keeps the stored one.
    let d = device(&store).await;
    let addr_of = |list: Vec<duress_receiver::DeviceRecord>| {
        list.into_iter()
            .find(|x| x.device_id == d)
            .unwrap()
            .last_addr
    };
    assert_eq!(addr_of(store.list_devices().await.unwrap()), None);
    let mut ev = event(&d, 1, EventKind::Duress, now());
    ev.client_addr = Some("10.1.0.7".into());
    committed(&store, ev).await.unwrap();
    assert_eq!(
        addr_of(store.list_devices().await.unwrap()).as_deref(),
        Some("10.1.0.7")
    );
    let hb = |addr: Option<&str>| HeartbeatUpdate {
        device_id: d.clone(),
        received_at: now(),
        hotkey: HotkeyState::NotApplicable,
        queued: 0,
        reported_last_seq: 1,
        host: None,
        location: None,
        policy: None,
        client_addr: addr.map(str::to_owned),
        alarm_refused: None,
    };
    store
        .record_heartbeat(hb(Some("2001:db8::9")))
        .await
        .unwrap();
    assert_eq!(
        addr_of(store.list_devices().await.unwrap()).as_deref(),
        Some("2001:db8::9")
    );
    store.record_heartbeat(hb(None)).await.unwrap();
    assert_eq!(
        addr_of(store.list_devices().await.unwrap()).as_deref(),
        Some("2001:db8::9")
    );
    assert!(verified_chain(&store).await > 0);
}

/// `stations import`'s store call: several stations in one transaction, an unknown one
/// anywhere writes nothing.
async fn a_registered_locations_batch_is_all_or_nothing(store: Arc<dyn Store>) {
    let a = device(&store).await;
    let b = device(&store).await;
    let before = store.audit_log().await.unwrap().len();
    let refused = store
        .set_registered_locations(
            vec![
                (a.clone(), Some(registered("A", "1", "101"))),
                ("nobody".into(), Some(registered("B", "1", "1"))),
            ],
            "cli",
        )
        .await;
    assert!(matches!(refused, Err(StoreError::NoSuchDevice(_))));
    assert_eq!(
        registered_of(&store.list_devices().await.unwrap(), &a),
        None
    );
    assert_eq!(store.audit_log().await.unwrap().len(), before);
    let n = store
        .set_registered_locations(
            vec![
                (b.clone(), Some(registered("B", "2", "7"))),
                (a.clone(), Some(registered("A", "1", "101"))),
            ],
            "cli",
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    let devices = store.list_devices().await.unwrap();
    assert_eq!(
        registered_of(&devices, &a),
        Some(registered("A", "1", "101"))
    );
    assert_eq!(registered_of(&devices, &b), Some(registered("B", "2", "7")));
    assert_eq!(store.audit_log().await.unwrap().len(), before + 2);
    assert!(verified_chain(&store).await > 0);
}

// ---------------------------------------------------------------------------------------------
// Retention.

fn purge_request(
    cutoff: OffsetDateTime,
    min_interval: Option<Duration>,
    dry_run: bool,
) -> PurgeRequest {
    PurgeRequest {
        now: now(),
        cutoffs: PurgeCutoffs {
            resolved_incidents: Some(cutoff),
            test_events: Some(cutoff),
            heartbeat_history: Some(cutoff),
            sessions: Some(cutoff),
        },
        min_interval,
        dry_run,
        actor: "system:retention".into(),
    }
}

async fn resolve(store: &Arc<dyn Store>, id: Uuid) {
    let resolve = IncidentAction::Resolve {
        disposition: "drill".into(),
        follow_up: String::new(),
    };
    assert_eq!(
        store.apply_action(id, "bob", resolve).await.unwrap(),
        ActionOutcome::Changed
    );
}

async fn retention_purges_old_resolved_incidents_never_open_ones_and_audits_the_counts(
    store: Arc<dyn Store>,
) {
    store.set_planner(Some(Arc::new(TwoSteps)));
    // Two resolved incidents whose notifications settled: purged. An open one: never purged
    // (the pending-notification case is the next test).
    let resolved = incident(&store).await;
    let resolved2 = incident(&store).await;
    let open = incident(&store).await;
    let d = device(&store).await;
    let test_event = event(&d, 1, EventKind::Test, now());
    let test_id = test_event.id;
    assert_eq!(committed(&store, test_event).await, None);
    let t = now();
    // Deliver every notification due now (the "now" steps), leaving each "later" step pending.
    for item in store.take_due("w", t, LEASE, 100).await.unwrap() {
        assert!(
            store
                .record_attempt(item.id, "w", attempt(AttemptOutcome::Delivered, t))
                .await
                .unwrap()
        );
    }
    resolve(&store, resolved).await;
    resolve(&store, resolved2).await;
    // The worker's next take stops the resolved incidents' "later" steps (a resolve ends a
    // ladder); the open incident's stays pending.
    store.take_due("w", t, LEASE, 100).await.unwrap();
    store
        .add_user(user("alice", Role::Officer), "admin")
        .await
        .unwrap();
    let mut stale = session("stale", "alice");
    stale.created_at = now() - time::Duration::days(2);
    stale.expires_at = now() - time::Duration::days(1);
    store.create_session(stale, "ip:127.0.0.1").await.unwrap();
    store
        .create_session(session("live", "alice"), "ip:127.0.0.1")
        .await
        .unwrap();
    let before_events = store.list_events().await.unwrap().len();
    let audit_before = verified_chain(&store).await;

    // Everything before "now + 1 s" is old enough; sessions are cut by their expiry.
    let cutoff = now() + time::Duration::seconds(1);
    let dry = match store
        .purge(purge_request(cutoff, None, true))
        .await
        .unwrap()
    {
        PurgeOutcome::DryRun(c) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        store.list_events().await.unwrap().len(),
        before_events,
        "a dry run deletes nothing"
    );
    assert_eq!(verified_chain(&store).await, audit_before, "nor audits");
    assert!(store.incident(resolved).await.unwrap().is_some());

    let (counts, audit_id) = match store
        .purge(purge_request(cutoff, None, false))
        .await
        .unwrap()
    {
        PurgeOutcome::Purged { counts, audit_id } => (counts, audit_id),
        other => panic!("{other:?}"),
    };
    assert_eq!(counts, dry, "the dry run counted what the purge deleted");
    assert_eq!(counts.incidents, 2, "{counts:?}");
    assert_eq!(counts.incident_events, 2);
    assert_eq!(counts.test_events, 1);
    assert_eq!(counts.sessions, 1, "only the expired session");
    assert!(counts.timeline_entries >= 2, "{counts:?}");
    assert!(counts.notifications >= 4, "{counts:?}");
    assert!(counts.notification_attempts >= 2, "{counts:?}");
    assert!(counts.live_rows >= 3, "{counts:?}");
    assert!(store.incident(resolved).await.unwrap().is_none());
    assert!(store.incident(resolved2).await.unwrap().is_none());
    let kept = store.incident(open).await.unwrap().unwrap().incident;
    assert!(kept.is_open(), "an open incident is never purged");
    let events = store.list_events().await.unwrap();
    assert_eq!(events.len(), before_events - 3);
    assert!(events.iter().all(|e| e.id != test_id));
    assert!(store.incident_notifications(open).await.unwrap().len() == 2);
    assert!(store.session("stale").await.unwrap().is_none());
    assert!(store.session("live").await.unwrap().is_some());

    // One audit entry with the counts, and the chain still verifies from its first entry.
    let entry = store.recent_audit(1).await.unwrap().remove(0);
    assert_eq!(entry.id, audit_id);
    assert_eq!(entry.action, "retention.purge");
    assert_eq!(entry.actor, "system:retention");
    assert!(
        entry.detail.starts_with(&counts.detail()),
        "{}",
        entry.detail
    );
    assert!(entry.detail.contains("incidents 2,"), "{}", entry.detail);
    assert_eq!(verified_chain(&store).await, audit_before + 1);

    // Within the interval nothing runs again; without it a second run finds nothing.
    assert!(matches!(
        store
            .purge(purge_request(
                cutoff,
                Some(Duration::from_secs(3600)),
                false
            ))
            .await
            .unwrap(),
        PurgeOutcome::NotDue { .. }
    ));
    match store
        .purge(purge_request(cutoff, None, false))
        .await
        .unwrap()
    {
        PurgeOutcome::Purged { counts, .. } => assert_eq!(counts, PurgeCounts::default()),
        other => panic!("{other:?}"),
    }
    assert_eq!(verified_chain(&store).await, audit_before + 2);
}

async fn retention_keeps_a_resolved_incident_whose_notification_is_pending(store: Arc<dyn Store>) {
    store.set_planner(Some(Arc::new(TwoSteps)));
    let id = incident(&store).await;
    resolve(&store, id).await;
    // No take ran: its notifications are still pending (the worker has not stopped them yet).
    let cutoff = now() + time::Duration::seconds(1);
    match store
        .purge(purge_request(cutoff, None, false))
        .await
        .unwrap()
    {
        PurgeOutcome::Purged { counts, .. } => assert_eq!(counts.incidents, 0, "{counts:?}"),
        other => panic!("{other:?}"),
    }
    assert!(store.incident(id).await.unwrap().is_some());
    // Once the worker settled them, the next purge takes it.
    let t = now();
    for item in store.take_due("w", t, LEASE, 100).await.unwrap() {
        store
            .record_attempt(item.id, "w", attempt(AttemptOutcome::Delivered, t))
            .await
            .unwrap();
    }
    match store
        .purge(purge_request(cutoff, None, false))
        .await
        .unwrap()
    {
        PurgeOutcome::Purged { counts, .. } => assert_eq!(counts.incidents, 1, "{counts:?}"),
        other => panic!("{other:?}"),
    }
    assert!(store.incident(id).await.unwrap().is_none());
    verified_chain(&store).await;
}

/// Two receivers on one database purging at the same moment: one purges, the other finds it
/// done (one audit entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_receivers_purge_once() {
    let url = pg_url();
    let dir = tempfile::tempdir().unwrap();
    let a: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, dir.path()).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, dir.path()).await.unwrap());
    let id = incident(&a).await;
    resolve(&a, id).await;
    let cutoff = now() + time::Duration::seconds(1);
    let day = Some(Duration::from_secs(23 * 3600));
    let (ra, rb) = tokio::join!(
        a.purge(purge_request(cutoff, day, false)),
        b.purge(purge_request(cutoff, day, false))
    );
    let outcomes = [ra.unwrap(), rb.unwrap()];
    let purged: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            PurgeOutcome::Purged { counts, .. } => Some(*counts),
            _ => None,
        })
        .collect();
    assert_eq!(purged.len(), 1, "{outcomes:?}");
    assert_eq!(purged[0].incidents, 1);
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, PurgeOutcome::NotDue { .. }))
    );
    let purges = a
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "retention.purge")
        .count();
    assert_eq!(purges, 1);
    verified_chain(&a).await;
    a.close().await;
    b.close().await;
}

// ---------------------------------------------------------------------------------------------
// Retiring a station.

async fn a_retired_station_is_revoked_marked_never_supervised_and_audited(store: Arc<dyn Store>) {
    store.set_planner(Some(Arc::new(TwoSteps)));
    let beat = |d: &str, at: OffsetDateTime| HeartbeatUpdate {
        device_id: d.to_owned(),
        received_at: at,
        hotkey: HotkeyState::NotApplicable,
        queued: 0,
        reported_last_seq: 0,
        host: None,
        location: None,
        policy: None,
        client_addr: None,
        alarm_refused: None,
    };
    let d = device(&store).await;
    let other = device(&store).await;
    let long_ago = now() - time::Duration::minutes(10);
    store.record_heartbeat(beat(&d, long_ago)).await.unwrap();
    store
        .record_heartbeat(beat(&other, long_ago))
        .await
        .unwrap();
    let after = Duration::from_secs(150);
    let mut offline = store.sweep_offline(now(), after).await.unwrap();
    offline.sort();
    let mut both = vec![d.clone(), other.clone()];
    both.sort();
    assert_eq!(offline, both);
    // Both outage notices are pending when `d` is retired.
    let before = verified_chain(&store).await;
    let actor = format!("device:{d}");
    assert_eq!(
        store.retire_device(&d, &actor).await.unwrap(),
        RetireOutcome::Retired
    );
    assert_eq!(
        store.retire_device(&d, "admin").await.unwrap(),
        RetireOutcome::AlreadyRetired,
        "a resend changes nothing"
    );
    assert!(matches!(
        store.retire_device("no-such-device", "admin").await,
        Err(StoreError::NoSuchDevice(_))
    ));
    let devices = store.list_devices().await.unwrap();
    let rec = devices.iter().find(|r| r.device_id == d).unwrap();
    assert_eq!(rec.status, DeviceStatus::Revoked);
    assert!(rec.retired_at.is_some());
    assert_eq!(rec.retired_by.as_deref(), Some(actor.as_str()));
    let kept = devices.iter().find(|r| r.device_id == other).unwrap();
    assert!(kept.retired_at.is_none());
    assert_eq!(kept.status, DeviceStatus::Active);

    // Its pending outage notice is stopped; the other station's still goes out.
    let taken = store
        .take_due("w", now(), Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].facts.device_id, other);
    // Never supervised again, whatever the sweep's time.
    let later = now() + time::Duration::hours(1);
    assert!(
        !store
            .sweep_offline(later, after)
            .await
            .unwrap()
            .contains(&d)
    );
    // Its key can no longer raise an alarm; its heartbeats write nothing.
    assert_eq!(
        store
            .ingest_event(event(&d, 1, EventKind::Duress, now()), WINDOW)
            .await
            .unwrap(),
        IngestOutcome::DeviceNotActive(DeviceStatus::Revoked)
    );
    let answer = store.record_heartbeat(beat(&d, now())).await.unwrap();
    assert_eq!(answer.status, DeviceStatus::Revoked);
    // Nor can an admin bring it back.
    assert!(matches!(
        store
            .set_device_status(&d, DeviceStatus::Active, "admin")
            .await,
        Err(StoreError::Refused(_))
    ));

    // One audit entry, by the station itself.
    let entries: Vec<_> = store
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "device.retire")
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].actor, actor);
    assert_eq!(entries[0].subject, d);
    assert_eq!(entries[0].detail, "active -> retired");
    assert!(verified_chain(&store).await > before);
}

// ---------------------------------------------------------------------------------------------
// Cluster bookkeeping (store::cluster).

async fn cluster_nodes_register_refresh_and_age_out(store: Arc<dyn Store>) {
    use duress_receiver::store::cluster::{DatabaseRole, NodeBeat};
    let t0 = duress_core::clock::truncate_to_millis(now());
    let s = time::Duration::seconds;
    let beat = |node: &str, started: OffsetDateTime, at: OffsetDateTime| NodeBeat {
        node_id: node.into(),
        version: "0.1.0".into(),
        started_at: started,
        now: at,
    };
    store.register_node(beat("node-a", t0, t0)).await.unwrap();
    store
        .register_node(beat("node-b", t0, t0 + s(1)))
        .await
        .unwrap();
    // node-a refreshes (and was restarted: a new start time replaces the old).
    store
        .register_node(beat("node-a", t0 + s(30), t0 + s(70)))
        .await
        .unwrap();
    let all = store.cluster_nodes(t0 - s(1)).await.unwrap();
    assert_eq!(
        all.iter().map(|n| n.node_id.as_str()).collect::<Vec<_>>(),
        ["node-a", "node-b"]
    );
    assert_eq!(all[0].started_at, t0 + s(30));
    assert_eq!(all[0].last_seen, t0 + s(70));
    assert_eq!(all[1].last_seen, t0 + s(1));
    // Seen in the last minute at t0 + 70 s: node-b (last seen t0 + 1 s) is gone.
    let recent = store.cluster_nodes(t0 + s(10)).await.unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].node_id, "node-a");

    let status = store.database_status().await.unwrap();
    match store.backend() {
        "sqlite" => assert_eq!(status.role, DatabaseRole::SingleFile),
        _ => {
            // This binary's throw-away server: a primary without standbys.
            assert_eq!(status.role, DatabaseRole::Primary);
            assert!(status.replicas.is_empty(), "{status:?}");
            assert_eq!(status.synchronous_standby_names, "");
        }
    }
    assert!(!status.synchronous());
}

/// Real incidents notify "cs" and "other"; a resolve plans "cs" (twice) and "never" (which
/// carried no alarm): the DC-09 restore's shape.
#[derive(Debug)]
struct Restores;

impl NotifyPlanner for Restores {
    fn plan(&self, facts: &NotificationFacts) -> Vec<PlannedNotification> {
        let row = |channel: &str| PlannedNotification {
            channel: channel.into(),
            ladder: Some("default".into()),
            step: 0,
            repeat_index: 0,
            delay: Duration::ZERO,
            stop_on_claim: false,
        };
        match facts.reason.as_str() {
            "incident" => vec![row("cs"), row("other")],
            "resolved" => vec![row("cs"), row("never"), row("cs")],
            _ => Vec::new(),
        }
    }
}

/// Resolving an incident enqueues, in the same transaction, what the planner plans for its
/// `resolved` change, with the alarm's facts: only on channels that carried the alarm, once
/// per channel however often it is reopened and resolved; also when a station's incidents are
/// resolved together.
async fn outbox_a_resolve_enqueues_the_restore_once(store: Arc<dyn Store>) {
    store.set_planner(Some(Arc::new(Restores)));
    let id = incident(&store).await;
    let t = now();
    let alarm: Vec<_> = store.take_due("w", t, LEASE, 100).await.unwrap();
    assert_eq!(alarm.len(), 2);
    for item in &alarm {
        store
            .record_attempt(item.id, "w", attempt(AttemptOutcome::Delivered, t))
            .await
            .unwrap();
    }
    resolve(&store, id).await;
    let rows = store.incident_notifications(id).await.unwrap();
    let channels: Vec<_> = rows.iter().map(|r| r.channel.as_str()).collect();
    assert_eq!(channels, ["cs", "other", "cs"], "{rows:#?}");
    let taken = store
        .take_due("w", now() + time::Duration::seconds(1), LEASE, 100)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1, "{taken:#?}");
    let restore = &taken[0];
    assert_eq!(restore.channel, "cs");
    assert_eq!(restore.facts.reason, "resolved");
    assert_eq!(restore.facts.incident_id, Some(id));
    assert_eq!(restore.facts.kind, alarm[0].facts.kind);
    assert_eq!(restore.facts.location, alarm[0].facts.location);
    assert_eq!(restore.facts.device_id, alarm[0].facts.device_id);
    assert!(restore.facts.at >= alarm[0].facts.at);
    // Reopened and resolved again: no second restore.
    assert_eq!(
        store
            .apply_action(id, "bob", IncidentAction::Reopen)
            .await
            .unwrap(),
        ActionOutcome::Changed
    );
    resolve(&store, id).await;
    assert_eq!(store.incident_notifications(id).await.unwrap().len(), 3);
    // A station's open incidents resolved together: each gets its restore.
    let d = device(&store).await;
    let other = committed(&store, event(&d, 1, EventKind::Duress, now()))
        .await
        .unwrap();
    let done = store
        .resolve_open_of_device(&d, "admin", "false-alarm", "")
        .await
        .unwrap();
    assert_eq!(done, [other]);
    let rows = store.incident_notifications(other).await.unwrap();
    let channels: Vec<_> = rows.iter().map(|r| r.channel.as_str()).collect();
    assert_eq!(channels, ["cs", "other", "cs"], "{rows:#?}");
}

async fn api_keys_are_created_hashed_listed_revoked_for_good_and_audited(store: Arc<dyn Store>) {
    use duress_receiver::store::{ApiKeyScope, NewApiKey};
    let key = |id: &str, hash: &str, scope| NewApiKey {
        id: id.into(),
        key_hash: hash.into(),
        name: format!("PSIM {id}"),
        scope,
        created_at: now(),
    };
    let ha = hex::encode(Sha256::digest(b"key a"));
    let hb = hex::encode(Sha256::digest(b"key b"));
    store
        .create_api_key(key("a", &ha, ApiKeyScope::Read), "admin")
        .await
        .unwrap();
    store
        .create_api_key(key("b", &hb, ApiKeyScope::ReadWrite), "cli")
        .await
        .unwrap();
    // The same id or the same hash again: refused, nothing written.
    for dup in [
        key("a", "other", ApiKeyScope::Read),
        key("c", &hb, ApiKeyScope::Read),
    ] {
        assert!(matches!(
            store.create_api_key(dup, "admin").await,
            Err(StoreError::Refused(_))
        ));
    }
    let listed = store.list_api_keys().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|k| (
                k.id.as_str(),
                k.scope,
                k.created_by.as_str(),
                k.is_revoked()
            ))
            .collect::<Vec<_>>(),
        [
            ("a", ApiKeyScope::Read, "admin", false),
            ("b", ApiKeyScope::ReadWrite, "cli", false)
        ]
    );
    assert_eq!(listed[0].name, "PSIM a");
    let found = store.api_key_by_hash(&hb).await.unwrap().unwrap();
    assert_eq!(
        (found.id.as_str(), found.scope),
        ("b", ApiKeyScope::ReadWrite)
    );
    assert!(store.api_key_by_hash("nope").await.unwrap().is_none());

    assert!(store.revoke_api_key("b", "admin").await.unwrap());
    // Revocation is final: again, or an unknown id, changes nothing.
    assert!(!store.revoke_api_key("b", "admin").await.unwrap());
    assert!(!store.revoke_api_key("zzz", "admin").await.unwrap());
    let revoked = store.api_key_by_hash(&hb).await.unwrap().unwrap();
    assert!(revoked.is_revoked());
    assert_eq!(revoked.revoked_by.as_deref(), Some("admin"));
    assert!(
        !store
            .api_key_by_hash(&ha)
            .await
            .unwrap()
            .unwrap()
            .is_revoked()
    );

    let log = store.audit_log().await.unwrap();
    let actions: Vec<(&str, &str)> = log
        .iter()
        .map(|e| (e.action.as_str(), e.subject.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("apikey.create", "a"),
            ("apikey.create", "b"),
            ("apikey.revoke", "b")
        ]
    );
    // The audit log never holds a key's hash.
    assert!(
        log.iter()
            .all(|e| !e.detail.contains(&ha) && !e.detail.contains(&hb))
    );
    assert_eq!(verified_chain(&store).await, 3);
}

// ---------------------------------------------------------------------------------------------
// Desk phones (issue 14, item 1)

fn phone(name: &str, secret: Option<&str>, net: &str) -> duress_receiver::store::NewPhone {
    duress_receiver::store::NewPhone {
        device_name: name.to_owned(),
        extension: "2140".into(),
        label: "Bldg A, Floor 2, Room 214".into(),
        building: Some("A".into()),
        floor: Some("2".into()),
        room: Some("214".into()),
        secret_hash: secret.map(|s| duress_receiver::store::SecretHash(s.to_owned())),
        allowed_network: net.parse().unwrap(),
    }
}

async fn phones_are_put_changed_removed_audited_and_raise_phone_incidents(store: Arc<dyn Store>) {
    use duress_receiver::store::{AccessPoint, PhonePutRefusal};
    let before = verified_chain(&store).await;
    // All or nothing: a new phone without a secret refuses the whole batch.
    let refused = store
        .put_phones(
            vec![
                phone("SEP001122334455", Some("$argon2id$hash-a"), "10.1.2.0/24"),
                phone("SEP00AABBCCDDEE", None, "10.1.2.7/32"),
            ],
            "admin",
        )
        .await
        .unwrap();
    assert_eq!(
        refused,
        Err(PhonePutRefusal::SecretRequired("SEP00AABBCCDDEE".into()))
    );
    assert!(store.phones().await.unwrap().is_empty());
    assert!(store.list_devices().await.unwrap().is_empty());

    let n = store
        .put_phones(
            vec![phone(
                "SEP001122334455",
                Some("$argon2id$hash-a"),
                "10.1.2.0/24",
            )],
            "admin",
        )
        .await
        .unwrap();
    assert_eq!(n, Ok(1));
    // The stations' internal token is no enrollment token an admin could list or use.
    assert!(
        store
            .list_tokens(100)
            .await
            .unwrap()
            .iter()
            .all(|t| t.token_hash != "phone-inventory")
    );
    let cred = store
        .phone_credential("SEP001122334455")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cred.secret_hash.0, "$argon2id$hash-a");
    assert_eq!(cred.phone.allowed_network.to_string(), "10.1.2.0/24");
    let device_id = cred.phone.device_id.clone();
    // Its station is an active device with no heartbeat and no usable key.
    let devices = store.list_devices().await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].device_id, device_id);
    assert_eq!(devices[0].status, DeviceStatus::Active);
    // No key to verify with: the agent API answers its id as an unknown device (401).
    assert!(store.verifying_key(&device_id).await.unwrap().is_none());

    // A change without a secret keeps the stored one and the station.
    let mut changed = phone("SEP001122334455", None, "10.1.3.0/24");
    changed.room = Some("216".into());
    assert_eq!(
        store.put_phones(vec![changed], "admin").await.unwrap(),
        Ok(1)
    );
    let cred = store
        .phone_credential("SEP001122334455")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cred.secret_hash.0, "$argon2id$hash-a");
    assert_eq!(cred.phone.room.as_deref(), Some("216"));
    assert_eq!(cred.phone.device_id, device_id);
    assert!(store.phone_credential("SEP0000").await.unwrap().is_none());

    // A press through the ingest path opens a phone incident; open_incident_of finds it.
    assert!(store.open_incident_of(&device_id).await.unwrap().is_none());
    let mut press = event(&device_id, 1, EventKind::Duress, now());
    press.source = Source::Phone;
    press.jws = r#"{"phone":"cisco"}"#.into();
    press.location = cred.phone.location();
    let incident = committed(&store, press).await.unwrap();
    assert_eq!(
        store.open_incident_of(&device_id).await.unwrap(),
        Some(incident)
    );
    let listed = store.list_incidents(IncidentFilter::Open).await.unwrap();
    assert_eq!(listed[0].source, Source::Phone);
    assert_eq!(listed[0].location.room.as_deref(), Some("216"));

    // Access points: put, replaced, read back by BSSID.
    let ap = |room: &str| AccessPoint {
        bssid: "00:23:eb:e4:eb:af".into(),
        label: format!("Bldg B, Room {room}"),
        building: Some("B".into()),
        floor: None,
        room: Some(room.into()),
    };
    assert_eq!(
        store
            .put_access_points(vec![ap("101")], "admin")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .put_access_points(vec![ap("102")], "admin")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.access_point("00:23:eb:e4:eb:af").await.unwrap(),
        Some(ap("102"))
    );
    assert_eq!(store.access_points().await.unwrap(), vec![ap("102")]);
    assert!(
        store
            .access_point("00:00:00:00:00:00")
            .await
            .unwrap()
            .is_none()
    );

    // Removal revokes the station (no more presses) and keeps its incident.
    assert!(
        store
            .remove_phone("SEP001122334455", "admin")
            .await
            .unwrap()
    );
    assert!(
        !store
            .remove_phone("SEP001122334455", "admin")
            .await
            .unwrap()
    );
    assert!(store.phones().await.unwrap().is_empty());
    assert_eq!(
        store
            .ingest_event(event(&device_id, 2, EventKind::Duress, now()), WINDOW)
            .await
            .unwrap(),
        IngestOutcome::DeviceNotActive(DeviceStatus::Revoked)
    );
    assert!(store.incident(incident).await.unwrap().is_some());

    let actions: Vec<String> = store
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action.starts_with("phone"))
        .map(|e| format!("{} {}", e.action, e.subject))
        .collect();
    assert_eq!(
        actions,
        [
            "phone.put SEP001122334455",
            "phone.put SEP001122334455",
            "phone_ap.put 00:23:eb:e4:eb:af",
            "phone_ap.put 00:23:eb:e4:eb:af",
            "phone.remove SEP001122334455",
        ]
    );
    // No secret hash in any audit detail.
    assert!(
        store
            .audit_log()
            .await
            .unwrap()
            .iter()
            .all(|e| !e.detail.contains("argon2"))
    );
    assert!(verified_chain(&store).await > before);
}

// Local accounts' security (issue 17, part 17-acct): password change and reset, TOTP, sign-in
// steps. Their own `contract!` list, so these cases stay appended at the end.
contract!(
    password_change_and_reset_end_sessions_mark_the_account_and_are_audited,
    totp_is_pending_until_enabled_and_each_step_is_used_once,
    sign_in_steps_are_read_failed_advanced_and_taken_once,
);

async fn password_change_and_reset_end_sessions_mark_the_account_and_are_audited(
    store: Arc<dyn Store>,
) {
    let before = verified_chain(&store).await;
    store
        .add_user(user("olga", Role::Officer), "admin")
        .await
        .unwrap();
    store
        .add_user(user("petra", Role::Officer), "admin")
        .await
        .unwrap();
    for (id, u) in [
        ("o1", "olga"),
        ("o2", "olga"),
        ("o3", "olga"),
        ("p1", "petra"),
    ] {
        store
            .create_session(session(id, u), "ip:10.0.0.1")
            .await
            .unwrap();
    }
    assert!(store.password_reset_at("olga").await.unwrap().is_none());

    // A change keeps the named session and ends the account's others (not other accounts').
    let ended = store
        .change_password("olga", "$argon2id$new-one".into(), Some("o1"))
        .await
        .unwrap();
    assert_eq!(ended, 2);
    assert!(store.session("o1").await.unwrap().is_some());
    assert!(store.session("o2").await.unwrap().is_none());
    assert!(store.session("p1").await.unwrap().is_some());
    assert_eq!(
        store
            .credentials("olga")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "$argon2id$new-one"
    );
    assert!(matches!(
        store
            .change_password("nobody", "$argon2id$x".into(), None)
            .await,
        Err(StoreError::Refused(_))
    ));

    // A reset ends every session of the account and marks it; a change clears the mark.
    let ended = store
        .reset_password("olga", "$argon2id$temporary".into(), "ada")
        .await
        .unwrap();
    assert_eq!(ended, 1);
    assert!(store.session("o1").await.unwrap().is_none());
    let reset_at = store.password_reset_at("olga").await.unwrap().unwrap();
    assert!(
        (now() - reset_at).abs() < time::Duration::seconds(5),
        "the reset's time, for the temporary password's lifetime: {reset_at}"
    );
    assert!(store.password_reset_at("petra").await.unwrap().is_none());
    // Reset twice (the first temporary password lost): still one mark, the newest hash.
    store
        .reset_password("olga", "$argon2id$temporary-2".into(), "ada")
        .await
        .unwrap();
    assert_eq!(
        store
            .credentials("olga")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "$argon2id$temporary-2"
    );
    assert!(matches!(
        store
            .reset_password("nobody", "$argon2id$x".into(), "ada")
            .await,
        Err(StoreError::Refused(_))
    ));
    assert_eq!(
        store
            .change_password("olga", "$argon2id$chosen".into(), None)
            .await
            .unwrap(),
        0
    );
    assert!(store.password_reset_at("olga").await.unwrap().is_none());

    let entries: Vec<String> = store
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action.starts_with("password."))
        .map(|e| format!("{} {} {}", e.actor, e.action, e.subject))
        .collect();
    assert_eq!(
        entries,
        [
            "olga password.change olga",
            "ada password.reset olga",
            "ada password.reset olga",
            "olga password.change olga",
        ]
    );
    assert!(
        store
            .audit_log()
            .await
            .unwrap()
            .iter()
            .all(|e| !e.detail.contains("argon2"))
    );
    assert!(verified_chain(&store).await > before);
}

async fn totp_is_pending_until_enabled_and_each_step_is_used_once(store: Arc<dyn Store>) {
    store
        .add_user(user("tina", Role::Officer), "admin")
        .await
        .unwrap();
    assert!(store.totp("tina").await.unwrap().is_none());
    assert!(matches!(
        store.begin_totp("nobody", vec![1; 40], now()).await,
        Err(StoreError::Refused(_))
    ));
    store.begin_totp("tina", vec![1; 40], now()).await.unwrap();
    // A new enrolment replaces a pending one.
    store.begin_totp("tina", vec![2; 40], now()).await.unwrap();
    let pending = store.totp("tina").await.unwrap().unwrap();
    assert_eq!(pending.sealed_secret, vec![2; 40]);
    assert!(!pending.enabled);
    assert_eq!(pending.last_step, None);
    assert!(
        !format!("{pending:?}").contains("[2, 2"),
        "Debug shows no secret"
    );
    assert!(
        !store.use_totp_step("tina", 100).await.unwrap(),
        "a pending factor signs nobody in"
    );
    assert!(store.totp_users().await.unwrap().is_empty());

    assert!(store.enable_totp("tina", 100).await.unwrap());
    assert!(!store.enable_totp("tina", 101).await.unwrap(), "already on");
    assert!(matches!(
        store.begin_totp("tina", vec![3; 40], now()).await,
        Err(StoreError::Refused(_))
    ));
    let on = store.totp("tina").await.unwrap().unwrap();
    assert!(on.enabled);
    assert_eq!(on.last_step, Some(100));
    assert_eq!(on.sealed_secret, vec![2; 40]);
    assert_eq!(store.totp_users().await.unwrap(), ["tina"]);

    // Each step once, never one already passed.
    assert!(!store.use_totp_step("tina", 100).await.unwrap(), "replay");
    assert!(
        !store.use_totp_step("tina", 99).await.unwrap(),
        "earlier step"
    );
    assert!(store.use_totp_step("tina", 101).await.unwrap());
    // Two receivers racing with the same code: one wins.
    let (a, b) = tokio::join!(
        store.use_totp_step("tina", 102),
        store.use_totp_step("tina", 102)
    );
    assert!(a.unwrap() ^ b.unwrap(), "exactly one of two");

    assert!(store.remove_totp("tina", "ada").await.unwrap());
    assert!(!store.remove_totp("tina", "ada").await.unwrap());
    store.begin_totp("tina", vec![4; 40], now()).await.unwrap();
    assert!(
        store.enable_totp("tina", 5).await.unwrap(),
        "a new secret starts anew"
    );
    assert!(store.remove_totp("tina", "tina").await.unwrap());
    // A pending enrolment cancelled: nothing to audit.
    store.begin_totp("tina", vec![5; 40], now()).await.unwrap();
    assert!(!store.remove_totp("tina", "tina").await.unwrap());
    assert!(store.totp("tina").await.unwrap().is_none());

    let entries: Vec<String> = store
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action.starts_with("totp."))
        .map(|e| format!("{} {} {}", e.actor, e.action, e.subject))
        .collect();
    assert_eq!(
        entries,
        [
            "tina totp.enable tina",
            "ada totp.remove tina",
            "tina totp.enable tina",
            "tina totp.disable tina",
        ]
    );
    verified_chain(&store).await;
}

async fn sign_in_steps_are_read_failed_advanced_and_taken_once(store: Arc<dyn Store>) {
    use duress_receiver::store::{NewSignInStep, SignInStage};
    store
        .add_user(user("uma", Role::Officer), "admin")
        .await
        .unwrap();
    let step = |id: &str, created: OffsetDateTime| NewSignInStep {
        id_hash: id.to_owned(),
        username: "uma".into(),
        stage: SignInStage::Code,
        created_at: created,
        expires_at: created + time::Duration::minutes(5),
    };
    store
        .create_sign_in_step(step("old", now() - time::Duration::minutes(10)))
        .await
        .unwrap();
    store.create_sign_in_step(step("s1", now())).await.unwrap();
    assert!(
        store.sign_in_step("old").await.unwrap().is_none(),
        "an expired step is swept when another is made"
    );
    let s = store.sign_in_step("s1").await.unwrap().unwrap();
    assert_eq!(s.username, "uma");
    assert_eq!(s.stage, Some(SignInStage::Code));
    assert_eq!(s.failures, 0);
    assert!(s.expires_at > now());
    assert_eq!(store.fail_sign_in_step("s1").await.unwrap(), 1);
    assert_eq!(store.fail_sign_in_step("s1").await.unwrap(), 2);
    assert_eq!(store.fail_sign_in_step("none").await.unwrap(), 0);
    assert!(
        store
            .advance_sign_in_step("s1", SignInStage::NewPassword)
            .await
            .unwrap()
    );
    let s = store.sign_in_step("s1").await.unwrap().unwrap();
    assert_eq!((s.stage, s.failures), (Some(SignInStage::NewPassword), 0));
    assert!(
        !store
            .advance_sign_in_step("none", SignInStage::Code)
            .await
            .unwrap()
    );
    let (a, b) = tokio::join!(store.end_sign_in_step("s1"), store.end_sign_in_step("s1"));
    assert!(a.unwrap() ^ b.unwrap(), "taken once");
    assert!(store.sign_in_step("s1").await.unwrap().is_none());

    // A password change or reset ends every step of the account.
    store.create_sign_in_step(step("s2", now())).await.unwrap();
    store
        .reset_password("uma", "$argon2id$t".into(), "ada")
        .await
        .unwrap();
    assert!(store.sign_in_step("s2").await.unwrap().is_none());
    store.create_sign_in_step(step("s3", now())).await.unwrap();
    store
        .change_password("uma", "$argon2id$n".into(), None)
        .await
        .unwrap();
    assert!(store.sign_in_step("s3").await.unwrap().is_none());
}

// A second list, so this issue's cases do not edit the shared one above.
contract!(a_press_live_row_says_whether_it_opened_its_incident);

/// Proves the live row of a press says whether it opened its incident (`opened: true`) or
/// joined an open one (`false`), the same on both backends: the console's browser
/// notification is shown once per new incident from it, never for a repeat press. Cancels
/// and self-tests carry no `opened` (they never open an incident).
async fn a_press_live_row_says_whether_it_opened_its_incident(store: Arc<dyn Store>) {
    let d = device(&store).await;
    let t0 = now() - time::Duration::minutes(30);
    let first = committed(&store, event(&d, 1, EventKind::Duress, t0))
        .await
        .unwrap();
    let joined = committed(
        &store,
        event(&d, 2, EventKind::Duress, t0 + time::Duration::minutes(1)),
    )
    .await;
    assert_eq!(joined, Some(first));
    let second = committed(
        &store,
        event(&d, 3, EventKind::Duress, t0 + time::Duration::minutes(20)),
    )
    .await
    .unwrap();
    assert_ne!(second, first);
    committed(&store, event(&d, 4, EventKind::Test, now())).await;
    committed(&store, event(&d, 5, EventKind::Cancel, now())).await;

    let live = store.live_after(0, 1000).await.unwrap();
    let presses: Vec<(Option<Uuid>, serde_json::Value)> = live
        .iter()
        .filter(|r| r.kind == "incident.press")
        .map(|r| (r.incident_id, serde_json::from_str(&r.payload).unwrap()))
        .collect();
    let opened: Vec<(Option<Uuid>, Option<bool>)> = presses
        .iter()
        .map(|(id, p)| (*id, p["opened"].as_bool()))
        .collect();
    assert_eq!(
        opened,
        [
            (Some(first), Some(true)),
            (Some(first), Some(false)),
            (Some(second), Some(true)),
        ]
    );
    assert!(
        presses
            .iter()
            .all(|(_, p)| p["label"] == "Bldg A, Room 214")
    );
    for r in live.iter().filter(|r| r.kind != "incident.press") {
        let p: serde_json::Value = serde_json::from_str(&r.payload).unwrap();
        assert!(p.get("opened").is_none(), "{}: {p}", r.kind);
    }
}

// ---------------------------------------------------------------------------------------------
// Single sign-on (issue 17): pending OpenID Connect flows and SSO accounts.

contract!(
    oidc_flows_are_taken_once_expire_and_old_ones_are_swept,
    sso_sign_in_never_takes_a_local_account_provisions_binds_and_follows_the_claims,
);

fn oidc_flow(state: &str, created: OffsetDateTime) -> duress_receiver::store::NewOidcFlow {
    duress_receiver::store::NewOidcFlow {
        state_hash: hex::encode(Sha256::digest(state.as_bytes())),
        browser_hash: hex::encode(Sha256::digest(format!("browser-{state}").as_bytes())),
        nonce: format!("nonce-{state}"),
        pkce_verifier: format!("verifier-{state}-0123456789abcdefghijklmnopqrstuvwxyz"),
        created_at: created,
        expires_at: created + time::Duration::minutes(10),
    }
}

async fn oidc_flows_are_taken_once_expire_and_old_ones_are_swept(store: Arc<dyn Store>) {
    let t = now();
    let a = oidc_flow("state-a", t);
    store.put_oidc_flow(a.clone()).await.unwrap();
    assert!(
        store
            .take_oidc_flow(&oidc_flow("state-other", t).state_hash, t)
            .await
            .unwrap()
            .is_none(),
        "another state finds nothing"
    );
    let taken = store
        .take_oidc_flow(&a.state_hash, t + time::Duration::minutes(9))
        .await
        .unwrap()
        .expect("the flow is there");
    assert_eq!(taken.browser_hash, a.browser_hash);
    assert_eq!(taken.nonce, a.nonce);
    assert_eq!(taken.pkce_verifier, a.pkce_verifier);
    assert_eq!(taken.expires_at, a.expires_at);
    assert!(
        store
            .take_oidc_flow(&a.state_hash, t)
            .await
            .unwrap()
            .is_none(),
        "single use: a second take of the same state finds nothing"
    );

    // Past its expiry a flow is refused (and gone).
    let b = oidc_flow("state-b", t);
    store.put_oidc_flow(b.clone()).await.unwrap();
    assert!(
        store
            .take_oidc_flow(&b.state_hash, t + time::Duration::minutes(10))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .take_oidc_flow(&b.state_hash, t)
            .await
            .unwrap()
            .is_none()
    );

    // Expired flows nobody came back for are deleted when the next one is stored.
    let stale = oidc_flow("state-stale", t - time::Duration::minutes(30));
    store.put_oidc_flow(stale.clone()).await.unwrap();
    store.put_oidc_flow(oidc_flow("state-c", t)).await.unwrap();
    assert!(
        store
            .take_oidc_flow(&stale.state_hash, t - time::Duration::minutes(25))
            .await
            .unwrap()
            .is_none(),
        "swept"
    );

    // Two flows with the same state cannot both exist (the key is the state's hash).
    let d = oidc_flow("state-d", t);
    store.put_oidc_flow(d.clone()).await.unwrap();
    assert!(store.put_oidc_flow(d.clone()).await.is_err());

    // Many parallel takes of one flow: exactly one gets it.
    let e = oidc_flow("state-e", t);
    store.put_oidc_flow(e.clone()).await.unwrap();
    let takes: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let hash = e.state_hash.clone();
            tokio::spawn(async move { store.take_oidc_flow(&hash, t).await.unwrap() })
        })
        .collect();
    let mut got = 0;
    for take in takes {
        if take.await.unwrap().is_some() {
            got += 1;
        }
    }
    assert_eq!(got, 1);
    // Nothing about a pending flow is audited (nobody has signed in).
    assert!(
        store
            .audit_log()
            .await
            .unwrap()
            .iter()
            .all(|e| !e.detail.contains("nonce") && !e.detail.contains("verifier"))
    );
}

fn sso(
    username: &str,
    subject: &str,
    role: Role,
    provision: bool,
    id_hash: &str,
) -> duress_receiver::store::SsoSignIn {
    duress_receiver::store::SsoSignIn {
        username: username.to_owned(),
        issuer: "http://127.0.0.1:9999/oidc".to_owned(),
        subject: subject.to_owned(),
        role,
        provision,
        placeholder_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
        session: session(id_hash, username),
        detail: "ip:127.0.0.1 method=oidc".to_owned(),
    }
}

async fn sso_sign_in_never_takes_a_local_account_provisions_binds_and_follows_the_claims(
    store: Arc<dyn Store>,
) {
    use duress_receiver::store::SsoOutcome;
    let before = verified_chain(&store).await;
    store
        .add_user(user("olga", Role::Admin), "cli")
        .await
        .unwrap();

    // A local account of the same name is never signed in to through SSO.
    assert_eq!(
        store
            .sso_sign_in(sso("olga", "sub-olga", Role::Admin, true, "s-olga"))
            .await
            .unwrap(),
        SsoOutcome::LocalAccount {
            username: "olga".into()
        }
    );
    assert!(store.session("s-olga").await.unwrap().is_none());
    assert_eq!(store.is_sso_account("olga").await.unwrap(), Some(false));
    assert!(!store.credentials("olga").await.unwrap().unwrap().disabled);

    // provision = false: an unknown user is refused, nothing created.
    assert_eq!(
        store
            .sso_sign_in(sso("pavel", "sub-pavel", Role::Officer, false, "s-p0"))
            .await
            .unwrap(),
        SsoOutcome::NotProvisioned {
            username: "pavel".into()
        }
    );
    assert!(
        store
            .list_users()
            .await
            .unwrap()
            .iter()
            .all(|u| u.username != "pavel")
    );
    assert!(store.session("s-p0").await.unwrap().is_none());

    // provision = true: created at first sign-in, with a session like a password sign-in's.
    assert_eq!(
        store
            .sso_sign_in(sso("pavel", "sub-pavel", Role::Officer, true, "s-p1"))
            .await
            .unwrap(),
        SsoOutcome::SignedIn {
            username: "pavel".into(),
            created: true,
            role_changed: None
        }
    );
    let s = store.session("s-p1").await.unwrap().unwrap();
    assert_eq!(
        (s.username.as_str(), s.role),
        ("pavel", Some(Role::Officer))
    );
    assert_eq!(store.is_sso_account("pavel").await.unwrap(), Some(true));
    assert_eq!(store.is_sso_account("nobody").await.unwrap(), None);
    // An SSO account never signs in with a password.
    assert!(store.credentials("pavel").await.unwrap().unwrap().disabled);

    // The same subject again, now an admin and renamed at the provider: the bound account,
    // its role updated from the claims.
    assert_eq!(
        store
            .sso_sign_in(sso(
                "pavel.renamed",
                "sub-pavel",
                Role::Admin,
                false,
                "s-p2"
            ))
            .await
            .unwrap(),
        SsoOutcome::SignedIn {
            username: "pavel".into(),
            created: false,
            role_changed: Some(Role::Officer)
        }
    );
    let s = store.session("s-p2").await.unwrap().unwrap();
    assert_eq!((s.username.as_str(), s.role), ("pavel", Some(Role::Admin)));

    // Another subject with the same name does not get the account.
    assert_eq!(
        store
            .sso_sign_in(sso("pavel", "sub-intruder", Role::Admin, true, "s-x"))
            .await
            .unwrap(),
        SsoOutcome::OtherSubject {
            username: "pavel".into()
        }
    );
    assert!(store.session("s-x").await.unwrap().is_none());

    // Pre-created by an admin (provision = false): bound at the first sign-in.
    store
        .add_sso_user("quinn", Role::Admin, "x", now(), "admin")
        .await
        .unwrap();
    assert!(matches!(
        store
            .add_sso_user("olga", Role::Admin, "x", now(), "admin")
            .await,
        Err(StoreError::Refused(_))
    ));
    assert!(store.credentials("quinn").await.unwrap().unwrap().disabled);
    assert_eq!(
        store
            .sso_sign_in(sso("quinn", "sub-quinn", Role::Officer, false, "s-q"))
            .await
            .unwrap(),
        SsoOutcome::SignedIn {
            username: "quinn".into(),
            created: false,
            role_changed: None
        }
    );
    let s = store.session("s-q").await.unwrap().unwrap();
    assert_eq!(
        s.role,
        Some(Role::Officer),
        "the role comes from the claims"
    );
    assert_eq!(
        store
            .sso_sign_in(sso("quinn", "sub-other", Role::Officer, false, "s-q2"))
            .await
            .unwrap(),
        SsoOutcome::OtherSubject {
            username: "quinn".into()
        }
    );

    // A disabled account stays refused.
    store.disable_user("pavel", "admin").await.unwrap();
    assert_eq!(
        store
            .sso_sign_in(sso("pavel", "sub-pavel", Role::Admin, true, "s-p3"))
            .await
            .unwrap(),
        SsoOutcome::Disabled {
            username: "pavel".into()
        }
    );
    assert!(store.session("s-p3").await.unwrap().is_none());

    let log: Vec<String> = store
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.action != "user.disable" && ["olga", "pavel", "quinn"].contains(&e.subject.as_str())
        })
        .map(|e| format!("{} {} {}", e.actor, e.action, e.subject))
        .collect();
    assert_eq!(
        log,
        [
            "cli user.add olga",
            "oidc user.add pavel",
            "pavel login.success pavel",
            "oidc user.role pavel",
            "pavel login.success pavel",
            "admin user.add quinn",
            "oidc user.sso-bind quinn",
            "quinn login.success quinn",
        ]
    );
    let logins: Vec<String> = store
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "login.success")
        .map(|e| e.detail)
        .collect();
    assert!(
        logins.iter().all(|d| d == "ip:127.0.0.1 method=oidc"),
        "{logins:?}"
    );
    assert!(verified_chain(&store).await > before);
}

// ---------------------------------------------------------------------------------------------
// Response work (issue 17): bulk resolve and same-room grouping.

contract!(
    bulk_resolve_applies_the_single_resolves_rules_skips_and_audits_each,
    same_room_grouping_joins_other_stations_only_when_on_and_only_in_one_room,
    parallel_presses_of_two_stations_in_one_room_open_one_incident,
);

/// The policy with same-room grouping on.
const ROOM_GROUPING: duress_receiver::incidents::Grouping = duress_receiver::incidents::Grouping {
    window: WINDOW,
    same_room: true,
};

/// A duress press reported from building `bld`, floor `flr`, room `room` (any may be absent).
fn press_in(
    device_id: &str,
    seq: i64,
    at: OffsetDateTime,
    bld: Option<&str>,
    flr: Option<&str>,
    room: Option<&str>,
) -> NewEvent {
    let mut ev = event(device_id, seq, EventKind::Duress, at);
    ev.location = Location {
        label: Some(format!("{bld:?} {flr:?} {room:?}")),
        bld: bld.map(str::to_owned),
        flr: flr.map(str::to_owned),
        room: room.map(str::to_owned),
        ..Default::default()
    };
    ev
}

async fn grouped(
    store: &Arc<dyn Store>,
    ev: NewEvent,
    grouping: duress_receiver::incidents::Grouping,
) -> Uuid {
    match store.ingest_grouped(ev, grouping).await.unwrap() {
        IngestOutcome::Committed(s) => s.incident_id.unwrap(),
        other => panic!("{other:?}"),
    }
}

/// Stations that pressed into `id`, in order of arrival, without repeats.
async fn pressing_stations(store: &Arc<dyn Store>, id: Uuid) -> Vec<String> {
    let detail = store.incident(id).await.unwrap().unwrap();
    let mut stations: Vec<String> = Vec::new();
    for e in detail.incident.events {
        if !stations.contains(&e.device_id) {
            stations.push(e.device_id);
        }
    }
    stations
}

/// A bulk resolve resolves each listed incident exactly as a single resolve would (timeline,
/// one `incident.resolve` audit entry, one live row and the resolve notifications each), and
/// never forces: one claimed by another officer, one already resolved and an unknown id are
/// skipped and reported; the resolving officer's own claim does not stop it; a repeated id
/// counts once.
async fn bulk_resolve_applies_the_single_resolves_rules_skips_and_audits_each(
    store: Arc<dyn Store>,
) {
    use duress_receiver::store::BulkResolveOutcome;
    store.set_planner(Some(Arc::new(Restores)));
    let d = device(&store).await;
    let mut ids = Vec::new();
    for (seq, minutes_ago) in [(1, 50), (2, 40), (3, 30), (4, 20)] {
        let at = now() - time::Duration::minutes(minutes_ago);
        ids.push(
            committed(&store, event(&d, seq, EventKind::Duress, at))
                .await
                .unwrap(),
        );
    }
    let (mine, plain, bobs, done) = (ids[0], ids[1], ids[2], ids[3]);
    let claim = IncidentAction::Claim { takeover: false };
    assert_eq!(
        store
            .apply_action(mine, "alice", claim.clone())
            .await
            .unwrap(),
        ActionOutcome::Changed
    );
    assert_eq!(
        store.apply_action(bobs, "bob", claim).await.unwrap(),
        ActionOutcome::Changed
    );
    resolve(&store, done).await;
    let done_before = store.incident(done).await.unwrap().unwrap().incident;
    let unknown = Uuid::now_v7();
    let live_before = store.live_latest_id().await.unwrap();
    let audit_before = store.audit_log().await.unwrap().len();

    let outcomes = store
        .resolve_incidents(
            &[mine, plain, bobs, done, unknown, mine],
            "alice",
            "accidental",
            "stuck key on the reception keyboard",
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            (mine, BulkResolveOutcome::Resolved),
            (plain, BulkResolveOutcome::Resolved),
            (
                bobs,
                BulkResolveOutcome::ClaimedBy {
                    username: "bob".into()
                }
            ),
            (done, BulkResolveOutcome::AlreadyResolved),
            (unknown, BulkResolveOutcome::NotFound),
        ]
    );

    for id in [mine, plain] {
        let detail = store.incident(id).await.unwrap().unwrap();
        let i = &detail.incident;
        assert_eq!(i.status, "closed");
        assert_eq!(i.resolved_by.as_deref(), Some("alice"));
        assert_eq!(i.disposition.as_deref(), Some("accidental"));
        assert_eq!(
            i.follow_up.as_deref(),
            Some("stuck key on the reception keyboard")
        );
        assert!(
            detail
                .timeline
                .iter()
                .any(|t| t.kind == "resolve" && t.actor == "alice")
        );
        // The resolve's notifications, as a single resolve queues them (the restore on "cs").
        let rows = store.incident_notifications(id).await.unwrap();
        let channels: Vec<_> = rows.iter().map(|r| r.channel.as_str()).collect();
        assert_eq!(channels, ["cs", "other", "cs"], "{rows:#?}");
    }
    let still_bobs = store.incident(bobs).await.unwrap().unwrap().incident;
    assert_eq!(still_bobs.status, "open", "never resolved over bob's head");
    assert_eq!(still_bobs.claimed_by.as_deref(), Some("bob"));
    assert_eq!(store.incident_notifications(bobs).await.unwrap().len(), 2);
    assert_eq!(
        store.incident(done).await.unwrap().unwrap().incident,
        done_before,
        "an already resolved incident is left exactly as it was"
    );

    let audit = store.audit_log().await.unwrap();
    let new: Vec<_> = audit[audit_before..].iter().collect();
    assert_eq!(
        new.len(),
        2,
        "one audit entry per resolved incident: {new:#?}"
    );
    for (entry, id) in new.iter().zip([mine, plain]) {
        assert_eq!(entry.action, "incident.resolve");
        assert_eq!(entry.actor, "alice");
        assert_eq!(entry.subject, id.to_string());
        assert!(entry.detail.contains("stuck key"), "{}", entry.detail);
    }
    let live = store.live_after(live_before, 100).await.unwrap();
    let kinds: Vec<_> = live
        .iter()
        .map(|r| (r.kind.as_str(), r.incident_id))
        .collect();
    assert_eq!(
        kinds,
        [
            ("incident.resolve", Some(mine)),
            ("incident.resolve", Some(plain))
        ]
    );
    verified_chain(&store).await;

    // At most MAX_BULK_RESOLVE are tried, whatever the caller passes.
    let many: Vec<Uuid> = (0..duress_receiver::store::MAX_BULK_RESOLVE + 5)
        .map(|_| Uuid::now_v7())
        .collect();
    assert_eq!(
        store
            .resolve_incidents(&many, "alice", "test", "")
            .await
            .unwrap()
            .len(),
        duress_receiver::store::MAX_BULK_RESOLVE
    );
}

/// With `same_room` on, a press from another station in the same room (building, floor and
/// room; case and blanks ignored; the registered location decides when there is one) within
/// the window joins the room's open incident, which then lists both stations; outside the
/// window, in another room, without a room, or with the policy off, it opens its own.
async fn same_room_grouping_joins_other_stations_only_when_on_and_only_in_one_room(
    store: Arc<dyn Store>,
) {
    let t = now();
    let (a, b) = (device(&store).await, device(&store).await);
    let first = grouped(
        &store,
        press_in(&a, 1, t, Some("Bldg A"), Some("2"), Some("214")),
        ROOM_GROUPING,
    )
    .await;
    let second = grouped(
        &store,
        press_in(
            &b,
            1,
            t + time::Duration::seconds(20),
            Some(" bldg a"),
            Some("2"),
            Some("214 "),
        ),
        ROOM_GROUPING,
    )
    .await;
    assert_eq!(second, first, "the same room joins");
    let incident = store.incident(first).await.unwrap().unwrap().incident;
    assert_eq!(incident.press_count, 2);
    assert_eq!(
        incident.device_id, a,
        "the incident keeps its first station"
    );
    assert_eq!(
        pressing_stations(&store, first).await,
        [a.clone(), b.clone()]
    );
    // b's further press joins the room's incident too (within the window of its last press).
    assert_eq!(
        grouped(
            &store,
            press_in(
                &b,
                2,
                t + time::Duration::seconds(40),
                Some("Bldg A"),
                Some("2"),
                Some("214")
            ),
            ROOM_GROUPING,
        )
        .await,
        first
    );

    // A station registered in room 214 whose agent reports elsewhere: the registration decides.
    let c = device(&store).await;
    store
        .set_registered_location(
            &c,
            Some(Location {
                label: Some("Room 214".into()),
                bld: Some("Bldg A".into()),
                flr: Some("2".into()),
                room: Some("214".into()),
                ..Default::default()
            }),
            "admin",
        )
        .await
        .unwrap();
    assert_eq!(
        grouped(
            &store,
            press_in(
                &c,
                1,
                t + time::Duration::seconds(60),
                Some("Z"),
                Some("9"),
                Some("999")
            ),
            ROOM_GROUPING,
        )
        .await,
        first
    );

    // Past the window of the room's last press: a new incident.
    let late = device(&store).await;
    let late_id = grouped(
        &store,
        press_in(
            &late,
            1,
            t + time::Duration::minutes(20),
            Some("Bldg A"),
            Some("2"),
            Some("214"),
        ),
        ROOM_GROUPING,
    )
    .await;
    assert_ne!(late_id, first);

    // Another room of the same floor: its own incident.
    let next_door = device(&store).await;
    let other_room = grouped(
        &store,
        press_in(&next_door, 1, t, Some("Bldg A"), Some("2"), Some("215")),
        ROOM_GROUPING,
    )
    .await;
    assert_ne!(other_room, first);

    // No room (or no floor): never grouped, whatever else matches.
    let (x, y) = (device(&store).await, device(&store).await);
    let nx = grouped(
        &store,
        press_in(&x, 1, t, Some("Bldg B"), Some("1"), None),
        ROOM_GROUPING,
    )
    .await;
    let ny = grouped(
        &store,
        press_in(&y, 1, t, Some("Bldg B"), Some("1"), None),
        ROOM_GROUPING,
    )
    .await;
    assert_ne!(nx, ny);
    let (u, v) = (device(&store).await, device(&store).await);
    let nu = grouped(
        &store,
        press_in(&u, 1, t, Some("Bldg B"), None, Some("7")),
        ROOM_GROUPING,
    )
    .await;
    let nv = grouped(
        &store,
        press_in(&v, 1, t, Some("Bldg B"), None, Some("7")),
        ROOM_GROUPING,
    )
    .await;
    assert_ne!(nu, nv);

    // Policy off (the default, and `ingest_event`): two stations of one room, two incidents.
    let (p, q) = (device(&store).await, device(&store).await);
    let off = duress_receiver::incidents::Grouping::from(WINDOW);
    let np = grouped(
        &store,
        press_in(&p, 1, t, Some("Bldg C"), Some("3"), Some("301")),
        off,
    )
    .await;
    let nq = grouped(
        &store,
        press_in(&q, 1, t, Some("Bldg C"), Some("3"), Some("301")),
        off,
    )
    .await;
    assert_ne!(np, nq);
    let nr = committed(
        &store,
        press_in(
            &device(&store).await,
            1,
            t,
            Some("Bldg C"),
            Some("3"),
            Some("301"),
        ),
    )
    .await
    .unwrap();
    assert!(nr != np && nr != nq);

    // Once the room's incident is resolved, the next press in the room opens a new one.
    resolve(&store, first).await;
    let after = grouped(
        &store,
        press_in(
            &a,
            2,
            t + time::Duration::seconds(90),
            Some("Bldg A"),
            Some("2"),
            Some("214"),
        ),
        ROOM_GROUPING,
    )
    .await;
    assert!(after != first && after != late_id);
}

/// Two stations of one room pressing at the same instant, in parallel requests (on
/// PostgreSQL: parallel ingest batches, each taking the room's lock), give ONE incident with
/// both presses; ten rooms in a row, so a lost race shows.
async fn parallel_presses_of_two_stations_in_one_room_open_one_incident(store: Arc<dyn Store>) {
    for round in 0..10 {
        let room = format!("R{round}");
        let (a, b) = (device(&store).await, device(&store).await);
        let t = now();
        let presses = [a.clone(), b.clone()].map(|d| {
            let store = store.clone();
            let ev = press_in(&d, 1, t, Some("Bldg P"), Some("1"), Some(room.as_str()));
            tokio::spawn(async move { grouped(&store, ev, ROOM_GROUPING).await })
        });
        let [pa, pb] = presses;
        let (ia, ib) = (pa.await.unwrap(), pb.await.unwrap());
        assert_eq!(ia, ib, "round {round}: two incidents for one room");
        let incident = store.incident(ia).await.unwrap().unwrap().incident;
        assert_eq!(incident.press_count, 2);
        let mut stations = pressing_stations(&store, ia).await;
        stations.sort();
        let mut both = vec![a, b];
        both.sort();
        assert_eq!(stations, both);
    }
}

/// Two receivers on one PostgreSQL database, each taking a press from a different station of
/// the same room at the same instant: one incident (the room's advisory lock is the
/// database's, not a process's).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_receivers_group_one_room_into_one_incident() {
    let url = pg_url();
    let dir = tempfile::tempdir().unwrap();
    let one: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, dir.path()).await.unwrap());
    let two: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, dir.path()).await.unwrap());
    for round in 0..10 {
        let room = format!("N{round}");
        let (a, b) = (device(&one).await, device(&one).await);
        let t = now();
        let ea = press_in(&a, 1, t, Some("Bldg N"), Some("1"), Some(room.as_str()));
        let eb = press_in(&b, 1, t, Some("Bldg N"), Some("1"), Some(room.as_str()));
        let (sa, sb) = (one.clone(), two.clone());
        let (ia, ib) = tokio::join!(
            tokio::spawn(async move { grouped(&sa, ea, ROOM_GROUPING).await }),
            tokio::spawn(async move { grouped(&sb, eb, ROOM_GROUPING).await }),
        );
        let (ia, ib) = (ia.unwrap(), ib.unwrap());
        assert_eq!(ia, ib, "round {round}: two incidents for one room");
        assert_eq!(
            one.incident(ia)
                .await
                .unwrap()
                .unwrap()
                .incident
                .press_count,
            2
        );
    }
    one.close().await;
    two.close().await;
}

// ---------------------------------------------------------------------------------------------
// Floor plans (issue 17, item 4).

contract!(floor_plans_are_put_replaced_placed_and_deleted_all_audited);

fn floor_plan(png: &[u8], at: OffsetDateTime) -> duress_receiver::store::NewFloorPlan {
    duress_receiver::store::NewFloorPlan {
        building: "Main Hall".into(),
        floor: "1".into(),
        png: png.to_vec(),
        width: 640,
        height: 480,
        sha256: hex::encode(Sha256::digest(png)),
        at,
    }
}

fn placement(plan_id: i64, room: &str, x: f64, y: f64) -> duress_receiver::store::RoomPlacement {
    duress_receiver::store::RoomPlacement {
        plan_id,
        room: room.into(),
        x,
        y,
        placed_at: now(),
        placed_by: "ada".into(),
    }
}

/// Proves a plan is stored whole (bytes, size, version) and served back, that a second upload
/// for the same building and floor replaces the image under the same id and keeps its rooms,
/// that a room is placed, moved and removed, that nothing is placed on a plan that does not
/// exist, that deleting a plan deletes its placements, and that every change is one audited
/// entry of an intact chain.
async fn floor_plans_are_put_replaced_placed_and_deleted_all_audited(store: Arc<dyn Store>) {
    let before = verified_chain(&store).await;
    assert!(store.floor_plans().await.unwrap().is_empty());
    let first = b"\x89PNG first image bytes".to_vec();
    let put = store
        .put_floor_plan(floor_plan(&first, now()), "ada")
        .await
        .unwrap();
    assert!(!put.replaced);
    let plan = store.floor_plan(put.id).await.unwrap().unwrap();
    assert_eq!(
        (
            plan.building.as_str(),
            plan.floor.as_str(),
            plan.width,
            plan.height
        ),
        ("Main Hall", "1", 640, 480)
    );
    assert_eq!(plan.png_bytes, first.len() as u64);
    assert_eq!(plan.uploaded_by, "ada");
    assert_eq!(plan.sha256, hex::encode(Sha256::digest(&first)));
    assert_eq!(store.floor_plan_png(put.id).await.unwrap().unwrap(), first);
    assert!(store.floor_plan_png(put.id + 1000).await.unwrap().is_none());

    assert!(
        store
            .place_room(placement(put.id, "114", 0.25, 0.75), "ada")
            .await
            .unwrap()
    );
    // Placing again moves the room.
    assert!(
        store
            .place_room(placement(put.id, "114", 0.5, 0.125), "ada")
            .await
            .unwrap()
    );
    assert!(
        !store
            .place_room(placement(put.id + 1000, "114", 0.5, 0.5), "ada")
            .await
            .unwrap(),
        "no plan, no placement"
    );
    let placed = store.room_placements().await.unwrap();
    assert_eq!(placed.len(), 1);
    assert_eq!(
        (
            placed[0].plan_id,
            placed[0].room.as_str(),
            placed[0].x,
            placed[0].y
        ),
        (put.id, "114", 0.5, 0.125)
    );

    // A replaced image keeps its id and its rooms.
    let second = b"\x89PNG second image, other bytes".to_vec();
    let mut replacement = floor_plan(&second, now());
    replacement.width = 800;
    let again = store.put_floor_plan(replacement, "bob").await.unwrap();
    assert_eq!((again.id, again.replaced), (put.id, true));
    assert_eq!(store.floor_plan_png(put.id).await.unwrap().unwrap(), second);
    let plans = store.floor_plans().await.unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(
        (plans[0].width, plans[0].uploaded_by.as_str()),
        (800, "bob")
    );
    assert_eq!(store.room_placements().await.unwrap().len(), 1);

    assert!(
        store
            .remove_room_placement(put.id, "114", "ada", now())
            .await
            .unwrap()
    );
    assert!(
        !store
            .remove_room_placement(put.id, "114", "ada", now())
            .await
            .unwrap()
    );
    assert!(store.room_placements().await.unwrap().is_empty());

    assert!(
        store
            .place_room(placement(put.id, "115", 0.0, 1.0), "ada")
            .await
            .unwrap()
    );
    assert!(store.delete_floor_plan(put.id, "ada", now()).await.unwrap());
    assert!(!store.delete_floor_plan(put.id, "ada", now()).await.unwrap());
    assert!(store.floor_plans().await.unwrap().is_empty());
    assert!(store.room_placements().await.unwrap().is_empty());
    assert!(store.floor_plan_png(put.id).await.unwrap().is_none());

    let actions: Vec<String> = store
        .audit_log()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action.starts_with("floorplan"))
        .map(|e| format!("{} {} {}", e.actor, e.action, e.subject))
        .collect();
    assert_eq!(
        actions,
        [
            "ada floorplan.upload floor plan Main Hall / 1",
            "ada floorplan.place floor plan Main Hall / 1",
            "ada floorplan.place floor plan Main Hall / 1",
            "bob floorplan.replace floor plan Main Hall / 1",
            "ada floorplan.unplace floor plan Main Hall / 1",
            "ada floorplan.place floor plan Main Hall / 1",
            "ada floorplan.delete floor plan Main Hall / 1",
        ]
    );
    assert!(verified_chain(&store).await >= before + 7);
}

// ---------------------------------------------------------------------------------------------
// Same-room grouping, the joining station's covert acknowledgement.

contract!(a_press_that_joined_a_room_incident_is_acknowledged_covertly_once_claimed);

/// Once the room's incident is claimed, the heartbeat answers of every station whose press
/// joined it list it (`claimed_incidents`, the covert acknowledgement), as the first station's
/// do; a station of that room that did not press learns nothing; once resolved it leaves every
/// list.
async fn a_press_that_joined_a_room_incident_is_acknowledged_covertly_once_claimed(
    store: Arc<dyn Store>,
) {
    let t = now();
    let (a, b, bystander) = (
        device(&store).await,
        device(&store).await,
        device(&store).await,
    );
    let in_214 = |d: &str, seq: i64, at: OffsetDateTime| {
        press_in(d, seq, at, Some("Bldg A"), Some("2"), Some("214"))
    };
    let room = grouped(&store, in_214(&a, 1, t), ROOM_GROUPING).await;
    assert_eq!(
        grouped(
            &store,
            in_214(&b, 1, t + time::Duration::seconds(10)),
            ROOM_GROUPING
        )
        .await,
        room,
        "b's press joined a's incident"
    );
    // b presses again: still one join.
    assert_eq!(
        grouped(
            &store,
            in_214(&b, 2, t + time::Duration::seconds(20)),
            ROOM_GROUPING
        )
        .await,
        room
    );
    let claimed = |d: String| {
        let store = store.clone();
        async move {
            store
                .record_heartbeat(HeartbeatUpdate {
                    device_id: d,
                    received_at: now(),
                    hotkey: HotkeyState::Registered {
                        chords: vec!["Ctrl+Alt+F12".into()],
                    },
                    queued: 0,
                    reported_last_seq: 2,
                    host: None,
                    location: None,
                    policy: None,
                    client_addr: None,
                    alarm_refused: None,
                })
                .await
                .unwrap()
                .claimed_incidents
        }
    };
    for d in [&a, &b, &bystander] {
        assert!(claimed(d.clone()).await.is_empty(), "not claimed yet: {d}");
    }
    store
        .apply_action(room, "alice", IncidentAction::Claim { takeover: false })
        .await
        .unwrap();
    assert_eq!(claimed(a.clone()).await, [room], "the first station");
    assert_eq!(claimed(b.clone()).await, [room], "the station that joined");
    assert!(
        claimed(bystander.clone()).await.is_empty(),
        "a station that did not press"
    );
    // Several heartbeats of both at once (the PostgreSQL backend batches them): the same.
    let answers =
        futures::future::join_all((0..4).flat_map(|_| [claimed(a.clone()), claimed(b.clone())]))
            .await;
    assert!(answers.iter().all(|c| c == &[room]), "{answers:?}");

    resolve(&store, room).await;
    for d in [&a, &b] {
        assert!(claimed(d.clone()).await.is_empty(), "resolved: {d}");
    }
}
