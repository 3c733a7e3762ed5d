//! Durability of the alarm path with the real binaries: `duress-receiver serve` and
//! `duress-agent` (trigger, status, run --headless), each with its own state, talking TLS on
//! loopback. These prove the "never lost" rules:
//! an event is durable before any send, survives the receiver being down and the agent being
//! killed with SIGKILL, and leaves the queue only on the receiver's acknowledgement.

use std::time::{Duration, Instant};

use duress_tests::faults::queued;
use duress_tests::{AgentCli, ReceiverProcess, free_port, stored_event_ids, wait_until};

/// A receiver and one enrolled agent installation, in one temp dir.
struct Setup {
    _tmp: tempfile::TempDir,
    receiver: ReceiverProcess,
    agent: AgentCli,
}

fn setup(label: &str) -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let receiver = ReceiverProcess::start(&tmp.path().join("receiver"), free_port());
    let agent = AgentCli::enroll(
        &receiver,
        tmp.path().join("agent"),
        tmp.path().join("agent.toml"),
        label,
        "",
    );
    Setup {
        _tmp: tmp,
        receiver,
        agent,
    }
}

/// Runs `trigger`, asserts exit 0 and returns the event id it printed on its first line.
fn trigger(agent: &AgentCli) -> String {
    let out = agent.run(&["trigger"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "trigger must exit 0 once the event is durable; stdout: {stdout} stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = stdout
        .lines()
        .next()
        .expect("event id line")
        .trim()
        .to_owned();
    uuid::Uuid::parse_str(&id)
        .unwrap_or_else(|_| panic!("first line is not an event id: {stdout}"));
    id
}

fn count(ids: &[String], id: &str) -> usize {
    ids.iter().filter(|x| *x == id).count()
}

/// Receiver down: `trigger` still exits 0 with the event queued; once the receiver is back,
/// the running headless agent delivers it within 5 s, and it is stored exactly once.
#[test]
fn queued_while_receiver_down_then_delivered_within_5s_of_its_return() {
    let mut s = setup("Durability desk 1");
    s.receiver.stop();

    let id = trigger(&s.agent);
    assert_eq!(queued(&s.agent), 1, "the event must wait in the outbox");

    let mut headless = s.agent.spawn_headless();
    std::thread::sleep(Duration::from_secs(3)); // it retries against a dead receiver meanwhile
    assert_eq!(queued(&s.agent), 1);

    s.receiver.restart();
    let back = Instant::now();
    let delivered = wait_until(Duration::from_secs(5), || {
        count(&stored_event_ids(&s.receiver.data_dir), &id) == 1
    });
    let took = back.elapsed();
    let _ = headless.kill();
    let _ = headless.wait();
    assert!(
        delivered,
        "not delivered within 5 s of the receiver's return"
    );
    eprintln!("delivered {took:?} after the receiver came back");
    assert!(wait_until(Duration::from_secs(5), || queued(&s.agent) == 0));
    assert_eq!(count(&stored_event_ids(&s.receiver.data_dir), &id), 1);
}

/// `kill -9` of the agent after `trigger` and before delivery: the event survives in the
/// outbox and is delivered after the agent restarts, exactly once.
#[test]
fn survives_kill_9_of_the_agent_before_delivery() {
    let mut s = setup("Durability desk 2");
    s.receiver.stop();

    let id = trigger(&s.agent);
    let mut first = s.agent.spawn_headless();
    std::thread::sleep(Duration::from_millis(500));
    first.kill().expect("SIGKILL the agent");
    let _ = first.wait();

    s.receiver.restart();
    let mut second = s.agent.spawn_headless();
    let delivered = wait_until(Duration::from_secs(10), || {
        count(&stored_event_ids(&s.receiver.data_dir), &id) == 1
    });
    let _ = second.kill();
    let _ = second.wait();
    assert!(delivered, "event lost after kill -9 of the agent");
    assert_eq!(count(&stored_event_ids(&s.receiver.data_dir), &id), 1);
}

/// Nothing is deleted without a 2xx: a disabled device's alarm is refused (403) and stays
/// queued however often it is retried; once Security re-enables the device it is delivered.
#[test]
fn refused_alarm_stays_queued_until_acknowledged() {
    let s = setup("Durability desk 3");
    let devices: serde_json::Value =
        serde_json::from_str(&s.receiver.admin(&["devices", "list", "--json"])).expect("json");
    let device_id = devices[0]["device_id"]
        .as_str()
        .expect("device_id")
        .to_owned();
    s.receiver.admin(&[
        "devices",
        "set-status",
        "--device",
        &device_id,
        "--status",
        "disabled",
    ]);

    let out = s.agent.run(&["trigger"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let id = stdout.lines().next().expect("id").trim().to_owned();
    assert!(
        stdout.to_lowercase().contains("queued"),
        "trigger must say the refused event stays queued: {stdout}"
    );

    let mut headless = s.agent.spawn_headless();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        queued(&s.agent),
        1,
        "a refused event must never leave the queue"
    );
    assert_eq!(count(&stored_event_ids(&s.receiver.data_dir), &id), 0);
    let _ = headless.kill();
    let _ = headless.wait();

    s.receiver.admin(&[
        "devices",
        "set-status",
        "--device",
        &device_id,
        "--status",
        "active",
    ]);
    // A restarted engine sends everything queued at once, the refused event included.
    let id2 = trigger(&s.agent);
    let mut headless = s.agent.spawn_headless();
    let delivered = wait_until(Duration::from_secs(10), || {
        let ids = stored_event_ids(&s.receiver.data_dir);
        count(&ids, &id) == 1 && count(&ids, &id2) == 1
    });
    let _ = headless.kill();
    let _ = headless.wait();
    assert!(
        delivered,
        "queued events were not delivered after re-enabling"
    );
}
