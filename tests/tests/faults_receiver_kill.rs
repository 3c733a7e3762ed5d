//! Fault: `kill -9` of the receiver during a 1,000-alarm burst from 50 stations, then restart.
//!
//! The receiver is the real binary (`ReceiverProcess`); the 50 stations are real agent engines
//! in this process (`duress_agent_core::Engine`: real outbox with fsync, real keystore, real
//! sender, real `run` loop with its retry schedule), each pressing 20 alarms within about a
//! second. The receiver is SIGKILLed once about 300 alarms are committed and restarted 2 s later.
//!
//! Proves: at the moment of the kill, every event an agent had marked delivered is stored
//! (acknowledgement after commit); after the restart every one of the 1,000 alarms is stored
//! exactly once and every incident's press count matches its events (no duplicate presses).

use std::time::{Duration, Instant};

use duress_agent_core::{Engine, EnrollOptions, Policy};
use duress_core::{EventKind, HotkeyState, Source};
use duress_tests::faults::{figure, long_mode};
use duress_tests::stores::{
    lost_and_duplicated, outbox_events, receiver_event_counts, receiver_event_total,
    receiver_press_balance,
};
use duress_tests::{ReceiverProcess, free_port, require_secret_service, wait_until};
use rand::Rng as _;

const STATIONS: usize = 50;
const ALARMS_PER_STATION: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_receiver_during_a_burst_loses_and_duplicates_nothing() {
    require_secret_service();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut receiver = ReceiverProcess::start(&tmp.path().join("receiver"), free_port());
    let token = receiver.token(STATIONS as u32);
    let policy = Policy::from_toml_str(
        &format!(
            "[[receivers]]\nurl = \"{}\"\nca_cert = \"{}\"\n[enrollment]\ntoken = \"{token}\"\n\
             [location]\nlabel = \"Burst hall\"\n[heartbeat]\ninterval_s = 60\n",
            receiver.url(),
            receiver.ca_path().display()
        ),
        "burst policy",
    )
    .expect("policy");

    let mut engines = Vec::new();
    for i in 0..STATIONS {
        let engine = Engine::open(policy.clone(), tmp.path().join(format!("station-{i:02}")))
            .expect("engine opens");
        engine
            .enroll(&EnrollOptions::default())
            .await
            .expect("enrolls");
        engines.push(engine);
    }

    // Every engine runs its real loop until the test says stop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (_hk_tx, hk_rx) = tokio::sync::watch::channel(HotkeyState::NotApplicable);
    let mut loops = Vec::new();
    for e in &engines {
        let (e, mut stop, hk) = (e.clone(), stop_rx.clone(), hk_rx.clone());
        loops.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            e.run(shutdown, hk).await
        }));
    }

    // The burst: each station presses 20 times within ~1 s, from its own thread (record is
    // synchronous and fsyncs, as on a hotkey thread).
    let burst_start = Instant::now();
    let mut presses = Vec::new();
    for e in &engines {
        let e = e.clone();
        presses.push(std::thread::spawn(move || {
            let mut rng = rand::thread_rng();
            for _ in 0..ALARMS_PER_STATION {
                std::thread::sleep(Duration::from_millis(rng.gen_range(0..50)));
                e.record(EventKind::Duress, Source::Hotkey)
                    .expect("durable");
            }
        }));
    }

    // Kill once ~30 % is committed.
    let data_dir = receiver.data_dir.clone();
    let kill_at = (STATIONS * ALARMS_PER_STATION * 3) / 10;
    let reached = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(60), || {
            receiver_event_total(&data_dir) >= kill_at
        })
    })
    .await
    .expect("join");
    assert!(reached, "the receiver never committed {kill_at} alarms");
    receiver.kill9();
    let killed_after = burst_start.elapsed();
    for p in presses {
        p.join().expect("presses");
    }

    // Acknowledged ⇒ committed: check while the receiver is down.
    let stored_at_kill = receiver_event_counts(&receiver.data_dir);
    let mut acked_at_kill = 0;
    for e in &engines {
        for ev in outbox_events(e.state_dir())
            .iter()
            .filter(|ev| ev.delivered)
        {
            acked_at_kill += 1;
            assert_eq!(
                stored_at_kill.get(&ev.id).copied(),
                Some(1),
                "event {} acknowledged but not stored exactly once",
                ev.id
            );
        }
    }

    let outage = if long_mode() { 30 } else { 2 };
    tokio::time::sleep(Duration::from_secs(outage)).await;
    let r = tokio::task::spawn_blocking(move || {
        receiver.restart();
        receiver
    });
    let receiver = r.await.expect("restart");
    let restarted = Instant::now();
    let engines2 = engines.clone();
    let drained = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(60), || {
            engines2
                .iter()
                .all(|e| e.status().map(|s| s.queued == 0).unwrap_or(false))
        })
    })
    .await
    .expect("join");
    let drain_time = restarted.elapsed();
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = tokio::time::timeout(Duration::from_secs(15), l).await;
    }
    assert!(
        drained,
        "the burst did not drain within 60 s of the restart"
    );

    let mut sent = Vec::new();
    for e in &engines {
        sent.extend(outbox_events(e.state_dir()).into_iter().map(|ev| ev.id));
    }
    assert_eq!(sent.len(), STATIONS * ALARMS_PER_STATION);
    let counts = receiver_event_counts(&receiver.data_dir);
    let (lost, duplicated) = lost_and_duplicated(&counts, &sent);
    let (presses, duress_events) = receiver_press_balance(&receiver.data_dir);
    let sc = "receiver-kill";
    figure(sc, "stations", STATIONS);
    figure(sc, "sent", sent.len());
    figure(sc, "stored_at_kill", stored_at_kill.len());
    figure(sc, "acked_at_kill", acked_at_kill);
    figure(sc, "killed_after_ms", killed_after.as_millis());
    figure(sc, "outage_s", outage);
    figure(sc, "stored", counts.len());
    figure(sc, "lost", lost.len());
    figure(sc, "duplicated", duplicated.len());
    figure(sc, "press_count_sum", presses);
    figure(sc, "drain_after_restart_ms", drain_time.as_millis());
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(duplicated.is_empty(), "duplicated: {duplicated:?}");
    assert_eq!(counts.len(), sent.len(), "the store holds ids nobody sent");
    assert_eq!(presses, duress_events);
}
