//! Fault: a long receiver outage. The receiver is stopped, alarms are pressed and queue up in
//! the outbox while the headless agent keeps retrying, and the receiver comes back much later
//! (CI: 30 s; `DURESS_LONG=1`: 5 minutes).
//!
//! Proves: nothing is lost or duplicated, and the whole queue drains within 5 s of the
//! receiver's return (the functional bound; the agent's alarm retry cap is what makes
//! it hold, see `duress_agent_core::retry::ALARM_MAX_RETRY`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use duress_tests::faults::{KillOnDrop, enrolled_agent, figure, long_mode, queued};
use duress_tests::stores::{lost_and_duplicated, outbox_events, receiver_event_counts};
use duress_tests::{ReceiverProcess, free_port, wait_until};

const ALARMS: usize = 10;

#[test]
fn a_long_outage_drains_within_5_s_of_the_receivers_return() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut receiver = ReceiverProcess::start(&tmp.path().join("receiver"), free_port());
    let agent = enrolled_agent(tmp.path(), "outage-desk", &receiver);
    receiver.stop();
    let down = Instant::now();
    let outage = if long_mode() {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(30)
    };

    let _headless = KillOnDrop(agent.spawn_headless());
    // Presses during the outage: real `trigger` processes, all at once.
    let triggers: Vec<KillOnDrop> = (0..ALARMS)
        .map(|_| {
            KillOnDrop(
                agent
                    .command(&["trigger"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn trigger"),
            )
        })
        .collect();
    for mut t in triggers {
        let status = t.0.wait().expect("trigger ends");
        assert!(
            status.success(),
            "trigger must exit 0 with the event queued"
        );
    }
    assert_eq!(
        queued(&agent),
        ALARMS as u64,
        "every press waits in the outbox"
    );

    std::thread::sleep(outage.saturating_sub(down.elapsed()));
    assert_eq!(queued(&agent), ALARMS as u64);
    receiver.restart();
    let back = Instant::now();
    let drained = wait_until(Duration::from_secs(30), || {
        outbox_events(&agent.state_dir).iter().all(|e| e.delivered)
    });
    let drain = back.elapsed();
    assert!(
        drained,
        "the queue did not drain within 30 s of the restart"
    );

    let ids: Vec<String> = outbox_events(&agent.state_dir)
        .into_iter()
        .map(|e| e.id)
        .collect();
    let counts = receiver_event_counts(&receiver.data_dir);
    let (lost, duplicated) = lost_and_duplicated(&counts, &ids);
    figure(
        "outage",
        "outage_s",
        down.elapsed().as_secs() - drain.as_secs(),
    );
    figure("outage", "sent", ids.len());
    figure("outage", "stored", counts.len());
    figure("outage", "lost", lost.len());
    figure("outage", "duplicated", duplicated.len());
    figure("outage", "drain_after_restart_ms", drain.as_millis());
    assert!(
        lost.is_empty() && duplicated.is_empty(),
        "lost {lost:?} dup {duplicated:?}"
    );
    assert!(
        drain <= Duration::from_secs(5),
        "the queue took {drain:?} to drain after the receiver's return (bound: 5 s)"
    );
}
