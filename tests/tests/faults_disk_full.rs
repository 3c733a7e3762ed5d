//! Fault: the receiver's data directory is on a small filesystem (an 8 MiB tmpfs the test
//! mounts itself) that fills up.
//!
//! Proves: once the disk is full the receiver answers 503 problem+json `storage-unavailable`
//! (never a 2xx: no alarm is acknowledged without its commit); it does not crash; the real
//! agent keeps the alarm queued; once space returns (the filler is deleted) the queue drains
//! without a restart; every acknowledged and every queued alarm is stored exactly once, and the
//! database passes `PRAGMA integrity_check` both live and after a clean restart (WAL and
//! checkpoints did not corrupt anything).

use std::time::{Duration, Instant};

use duress_core::{EventKind, ProblemType};
use duress_loadgen::SimStation;
use duress_loadgen::client::{https_client, post_jose};
use duress_tests::faults::{KillOnDrop, enrolled_agent, figure, queued};
use duress_tests::stores::{
    lost_and_duplicated, outbox_events, receiver_event_counts, receiver_integrity,
    receiver_press_balance,
};
use duress_tests::tmpfs::SmallFs;
use duress_tests::{ReceiverProcess, free_port, wait_until};

#[test]
fn a_full_disk_answers_503_keeps_the_alarm_and_recovers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The data dir *is* the small filesystem; the receiver's log (a sibling file) is not on it.
    let fs = SmallFs::mount(&tmp.path().join("receiver"), 8);
    let mut receiver = ReceiverProcess::start(&fs.path, free_port());
    let agent = enrolled_agent(tmp.path(), "disk-desk", &receiver);
    let station_token = receiver.token(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = https_client(&receiver.ca_path(), 2).expect("client");
    let url = receiver.url();
    let mut station = SimStation::new(1);
    runtime
        .block_on(station.enroll(
            &client,
            &url,
            &station_token,
            Instant::now() + Duration::from_secs(10),
        ))
        .expect("station enrolls");

    let (filler, filler_bytes) = fs.fill();
    figure("disk-full", "filler_bytes", filler_bytes);

    // Post until the receiver cannot commit (the WAL may still have room for a few).
    let mut acked = Vec::new();
    let mut first_503 = None;
    let mut refused = None;
    for i in 0..2_000 {
        let claims = station.new_event(EventKind::Duress);
        let a = runtime
            .block_on(post_jose(
                &client,
                &url,
                "/v1/events",
                &station.sign_event(&claims),
            ))
            .expect("the receiver answers (it must not crash)");
        match a.status {
            200 => acked.push(claims.id.to_string()),
            503 => {
                assert_eq!(a.content_type, "application/problem+json", "{}", a.text());
                let p = a.problem().expect("problem");
                assert_eq!(
                    p.kind(),
                    Some(ProblemType::StorageUnavailable),
                    "{}",
                    a.text()
                );
                first_503 = Some(i);
                refused = Some(claims);
                break;
            }
            other => panic!("disk full must be 503, got {other}: {}", a.text()),
        }
    }
    let first_503 = first_503.expect("the receiver never reported the full disk");
    figure("disk-full", "accepted_after_fill", first_503);

    // The real agent: its alarm stays queued while the disk is full.
    let out = agent.run(&["trigger"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains("queued"),
        "the alarm must stay queued: {stdout}"
    );
    let _headless = KillOnDrop(agent.spawn_headless());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        queued(&agent),
        1,
        "nothing acknowledged while the disk is full"
    );
    // Health says so too.
    let health = runtime
        .block_on(async { client.get(format!("{url}/healthz")).send().await })
        .expect("healthz");
    figure("disk-full", "healthz_while_full", health.status().as_u16());

    std::fs::remove_file(&filler).expect("free the space");
    let freed = Instant::now();
    let drained = wait_until(Duration::from_secs(30), || queued(&agent) == 0);
    if !drained {
        let log =
            std::fs::read_to_string(receiver.data_dir.with_extension("log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!(
            "receiver log (last lines, newest first):\n{}",
            tail.join("\n")
        );
        eprintln!("agent status: {}", agent.status());
    }
    assert!(
        drained,
        "the queue did not drain within 30 s of space returning"
    );
    figure(
        "disk-full",
        "drain_after_space_returned_ms",
        freed.elapsed().as_millis(),
    );
    // The station that saw 503 resends that same alarm (the agent's rule): accepted now.
    let retry = refused.expect("the refused alarm");
    let d = runtime.block_on(station.deliver(
        &client,
        &url,
        &retry,
        Instant::now() + Duration::from_secs(20),
    ));
    assert!(
        d.ack.is_some(),
        "not accepted after space returned: {:?}",
        d.last_error
    );
    acked.push(retry.id.to_string());

    assert_eq!(receiver_integrity(&receiver.data_dir), "ok");
    let mut expected = acked.clone();
    expected.extend(outbox_events(&agent.state_dir).into_iter().map(|e| e.id));
    let counts = receiver_event_counts(&receiver.data_dir);
    let (lost, duplicated) = lost_and_duplicated(&counts, &expected);
    figure("disk-full", "sent", expected.len());
    figure("disk-full", "stored", counts.len());
    figure("disk-full", "lost", lost.len());
    figure("disk-full", "duplicated", duplicated.len());
    assert!(
        lost.is_empty(),
        "acknowledged or queued alarms missing: {lost:?}"
    );
    assert!(duplicated.is_empty());
    // Nothing was stored that was not acknowledged or queued: the 503 committed nothing, and
    // its resend is stored once.
    assert_eq!(
        counts.len(),
        expected.len(),
        "a refused (503) event was stored"
    );
    let (presses, events) = receiver_press_balance(&receiver.data_dir);
    assert_eq!(presses, events);

    // A clean stop checkpoints the WAL; the database is intact and complete afterwards.
    receiver.stop();
    assert_eq!(receiver_integrity(&receiver.data_dir), "ok");
    assert_eq!(receiver_event_counts(&receiver.data_dir), counts);
    drop(receiver);
    drop(fs);
}
