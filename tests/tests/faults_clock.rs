//! Fault: the workstation clock is 24 h off (either way), with the real agent binary
//! (`DURESS_AGENT_TEST_CLOCK_SKEW_S`).
//!
//! Proves: the receiver refuses the skewed `sent_at` with the server time, the agent learns the
//! offset from that answer, re-signs and is acknowledged within the same `trigger`; the first
//! event's `occurred_at` is stored exactly as pressed (never rewritten), later presses are
//! stamped with the corrected clock; an agent enrolled with the wrong clock is corrected at
//! enrollment. Nothing is lost or duplicated.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use duress_tests::faults::{enrolled_agent, figure};
use duress_tests::stores::outbox_events;
use duress_tests::{AgentCli, ReceiverProcess, free_port, write_policy};

const SKEW: &str = "DURESS_AGENT_TEST_CLOCK_SKEW_S";

fn trigger_skewed(agent: &AgentCli, skew_s: i64) -> String {
    let out = agent
        .command(&["trigger"])
        .env(SKEW, skew_s.to_string())
        .output()
        .expect("trigger");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().nth(1).map(str::trim),
        Some("delivered"),
        "a skewed clock must be corrected in the same trigger: {stdout}"
    );
    stdout.lines().next().expect("id").trim().to_owned()
}

/// (occurred_at, sent_at, received_at) as the receiver stored them.
fn stored_times(
    receiver: &ReceiverProcess,
    id: &str,
) -> (OffsetDateTime, OffsetDateTime, OffsetDateTime) {
    let conn = rusqlite::Connection::open(receiver.data_dir.join("receiver.sqlite3")).expect("db");
    let (o, s, r): (String, String, String) = conn
        .query_row(
            "SELECT occurred_at, sent_at, received_at FROM events WHERE id = ?",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("event stored");
    let p = |t: &str| OffsetDateTime::parse(t, &Rfc3339).expect("rfc3339");
    (p(&o), p(&s), p(&r))
}

fn pressed_at(agent: &AgentCli, id: &str) -> OffsetDateTime {
    let ev = outbox_events(&agent.state_dir)
        .into_iter()
        .find(|e| e.id == id)
        .expect("event in the outbox");
    OffsetDateTime::parse(
        ev.claims["occurred_at"].as_str().expect("occurred_at"),
        &Rfc3339,
    )
    .expect("rfc3339")
}

#[test]
fn a_clock_24_h_off_is_corrected_and_occurred_at_is_preserved() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let receiver = ReceiverProcess::start(&tmp.path().join("receiver"), free_port());
    for skew_s in [86_400_i64, -86_400] {
        let name = if skew_s > 0 {
            "clock-ahead"
        } else {
            "clock-behind"
        };
        let agent = enrolled_agent(tmp.path(), name, &receiver);

        // First press with the wrong clock: stamped 24 h off, corrected on the way.
        let first = trigger_skewed(&agent, skew_s);
        let pressed = pressed_at(&agent, &first);
        let (occurred, sent, received) = stored_times(&receiver, &first);
        assert_eq!(
            occurred, pressed,
            "occurred_at is stored exactly as pressed"
        );
        let off = (occurred - received).whole_seconds();
        assert!(
            (off - skew_s).abs() < 60,
            "the first press carries the wrong clock ({off} s)"
        );
        assert!(
            (sent - received).whole_seconds().abs() <= 40,
            "the accepted send was re-signed inside the window"
        );
        let offset_ms = agent.status()["clock_offset_ms"].as_i64().expect("offset");
        assert!(
            (offset_ms + skew_s * 1000).abs() < 60_000,
            "learned offset {offset_ms} ms for a {skew_s} s skew"
        );

        // Later presses use the corrected clock.
        let second = trigger_skewed(&agent, skew_s);
        let (occurred2, _, received2) = stored_times(&receiver, &second);
        let off2 = (received2 - occurred2).whole_milliseconds();
        assert!(
            off2.abs() < 10_000,
            "a later press is stamped in receiver time ({off2} ms)"
        );
        figure(name, "skew_s", skew_s);
        figure(name, "learned_offset_ms", offset_ms);
        figure(name, "first_occurred_minus_received_s", off);
        figure(name, "second_delay_ms", off2);
    }

    // Enrolled with the wrong clock: corrected at enrollment, the first press is already right.
    let agent = AgentCli {
        state_dir: tmp.path().join("enrolled-skewed"),
        policy: tmp.path().join("enrolled-skewed.toml"),
    };
    let token = receiver.token(1);
    write_policy(
        &agent.policy,
        &receiver.url(),
        &receiver.ca_path(),
        &token,
        "enrolled skewed",
    );
    let out = agent
        .command(&["enroll"])
        .env(SKEW, "86400")
        .output()
        .expect("enroll");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = trigger_skewed(&agent, 86_400);
    let (occurred, _, received) = stored_times(&receiver, &id);
    let off = (received - occurred).whole_milliseconds();
    assert!(
        off.abs() < 10_000,
        "enrollment corrected the clock ({off} ms)"
    );
    figure("clock-enroll", "first_delay_ms", off);
}
