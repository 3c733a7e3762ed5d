//! The `dc09` channel against real central-station receivers: pysiaalarm (PyPI, an independent
//! DC-09 implementation, in the project venv made by scripts/install-deps) decodes our frames,
//! plain and AES-encrypted; NAK and DUH handling against a scripted receiver in this test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Harness;
use duress_core::EventKind;
use duress_receiver::config::ReceiverConfig;
use duress_receiver::notify::dc09::frame;
use duress_receiver::store::NotificationRecord;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn channel_config(port: u16, extra: &str) -> String {
    format!(
        r#"
[[channels]]
name = "central-station"
kind = "dc09"
host = "127.0.0.1"
port = {port}
account = "1234"
receiver_prefix = "R0"
line_prefix = "L0"
duress_code = false
{extra}
[[channels.zones]]
building = "A"
room = "214"
group = 1
zone = 214

[[ladders]]
name = "default"
steps = [ {{ after_s = 0, channels = ["central-station"] }} ]

[[rules]]
ladder = "default"
kind = "test"
"#
    )
}

fn parse(text: &str) -> Arc<ReceiverConfig> {
    Arc::new(ReceiverConfig::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}")))
}

async fn start(text: &str) -> Harness {
    let cfg = parse(text);
    Harness::start_with(move |s| {
        s.config = Some(cfg);
        s.notify_retry_base = Duration::from_millis(500);
    })
    .await
}

/// Resolves an incident as the console does, through the store with the configuration's
/// real planner (which enqueues the restore in the resolve's transaction).
async fn resolve(h: &Harness, text: &str, incident: uuid::Uuid) {
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    store.set_planner(Some(Arc::new(duress_receiver::notify::Plan::new(parse(
        text,
    )))));
    let action = duress_receiver::store::IncidentAction::Resolve {
        disposition: "false-alarm".into(),
        follow_up: String::new(),
    };
    assert_eq!(
        store.apply_action(incident, "alice", action).await.unwrap(),
        duress_receiver::store::ActionOutcome::Changed
    );
    store.close().await;
}

async fn alarm(h: &Harness, agent: &mut common::Agent, kind: EventKind) -> Option<uuid::Uuid> {
    let claims = agent.event(kind);
    let answer = h.post("/v1/events", agent.sign_event(&claims)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let ack: duress_core::EventAck = answer.json();
    ack.incident_id
}

/// Polls (bounded) until `done` holds for every notification of the receiver.
async fn wait_rows(
    h: &Harness,
    what: &str,
    done: impl Fn(&[NotificationRecord]) -> bool,
) -> Vec<NotificationRecord> {
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = store.recent_notifications(100).await.unwrap();
        if done(&rows) {
            store.close().await;
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// pysiaalarm as the central station: its TCP server on a free port, one JSON line per event
/// it ACKed.
struct Pysia {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    port: u16,
}

impl Pysia {
    async fn start(key: Option<&str>) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "the project venv is missing: run scripts/install-deps (it installs pysiaalarm)"
        );
        let port = free_port();
        let mut cmd = tokio::process::Command::new(&python);
        cmd.arg(root.join("tests/dc09/pysia_receiver.py"))
            .arg(port.to_string())
            .arg("1234");
        if let Some(k) = key {
            cmd.arg(k);
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("pysiaalarm did not start")
            .unwrap();
        assert_eq!(
            ready.as_deref(),
            Some("ready"),
            "pysiaalarm must be installed in the venv (scripts/install-deps)"
        );
        Pysia { child, lines, port }
    }

    /// The next event pysiaalarm decoded and ACKed whose message type is `kind`.
    async fn next(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        // Bounded by the deadline.
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("pysiaalarm decoded no {kind} event"))
                .unwrap()
                .expect("pysiaalarm exited");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["message_type"] == kind {
                return v;
            }
        }
    }

    async fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

async fn pysiaalarm_round(key: Option<&str>) {
    let mut peer = Pysia::start(key).await;
    let extra = match key {
        Some(k) => format!("aes_key = \"{k}\"\nnull_interval_s = 60"),
        None => "null_interval_s = 60".to_owned(),
    };
    let text = channel_config(peer.port, &extra);
    let h = start(&text).await;
    // The NULL supervision message goes out at start.
    let null = peer.next("NULL").await;
    assert_eq!(null["account"], "1234");
    assert_eq!(null["code"], "RP", "{null}");
    assert_eq!(null["encrypted"], key.is_some(), "{null}");

    let mut agent = h.enrolled_agent().await;
    let incident = alarm(&h, &mut agent, EventKind::Duress).await.unwrap();
    let ev = peer.next("ADM-CID").await;
    assert_eq!(ev["encrypted"], key.is_some(), "{ev}");
    assert_eq!(ev["account"], "1234", "{ev}");
    assert_eq!(ev["event_qualifier"], "1", "{ev}");
    assert_eq!(ev["event_type"], "122", "{ev}");
    assert_eq!(ev["code"], "HA", "{ev}");
    assert_eq!(ev["partition"], "01", "{ev}");
    assert_eq!(ev["ri"], "214", "{ev}");
    assert_eq!(ev["x_data"], "LBldg A, Floor 2, Room 214", "{ev}");
    assert_eq!(ev["valid_message"], true, "{ev}");
    assert_eq!(ev["length_ok"], true, "{ev}");
    // Its ACK (echoing our sequence) is what made the row delivered.
    let rows = wait_rows(&h, "the dc09 delivery", |rows| {
        rows.iter().any(|r| r.status == "delivered")
    })
    .await;
    let row = rows
        .iter()
        .find(|r| r.channel == "central-station")
        .unwrap();
    assert_eq!(row.attempts.len(), 1, "{row:#?}");
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    let mine = store.incident_notifications(incident).await.unwrap();
    store.close().await;
    assert!(mine.iter().any(|r| r.status == "delivered"), "{mine:#?}");

    // Resolving it sends the restore: qualifier 3, pysiaalarm's HH "Holdup Restoral".
    resolve(&h, &text, incident).await;
    let restore = peer.next("ADM-CID").await;
    assert_eq!(restore["event_qualifier"], "3", "{restore}");
    assert_eq!(restore["event_type"], "122", "{restore}");
    assert_eq!(restore["code"], "HH", "{restore}");
    assert_eq!(restore["ri"], "214", "{restore}");
    let rows = wait_rows(&h, "the restore's delivery", |rows| {
        rows.iter().filter(|r| r.status == "delivered").count() == 2
    })
    .await;
    assert_eq!(rows.len(), 2, "one alarm, one restore: {rows:#?}");

    // A self-test: 601, pysiaalarm's RX "Manual Test".
    assert!(alarm(&h, &mut agent, EventKind::Test).await.is_none());
    let test = peer.next("ADM-CID").await;
    assert_eq!(test["event_type"], "601", "{test}");
    assert_eq!(test["code"], "RX", "{test}");
    h.shutdown().await;
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pysiaalarm_decodes_plain_frames() {
    pysiaalarm_round(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pysiaalarm_decrypts_aes128_frames() {
    pysiaalarm_round(Some("0123456789ABCDEF")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pysiaalarm_decrypts_aes192_frames() {
    pysiaalarm_round(Some("0123456789ABCDEF01234567")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pysiaalarm_decrypts_aes256_frames() {
    pysiaalarm_round(Some("0123456789ABCDEF0123456789ABCDEF")).await;
}

/// A scripted central station: each connection gets one frame, `answer(n, frame)` says what to
/// send back (n counts frames from 0). Every frame received is kept.
#[derive(Clone, Default)]
struct Scripted {
    frames: Arc<Mutex<Vec<(Instant, frame::Frame)>>>,
}

impl Scripted {
    async fn start(
        answer: impl Fn(usize, &frame::Frame) -> Vec<u8> + Send + Sync + 'static,
    ) -> (Self, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = Scripted::default();
        let frames = me.frames.clone();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (frames, answer) = (frames.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.contains(&b'\r') && buf.len() < 8192 {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let f = frame::parse(&buf).expect("our frame parses with a correct CRC");
                    let n = {
                        let mut all = frames.lock().unwrap();
                        all.push((Instant::now(), f.clone()));
                        all.len() - 1
                    };
                    let _ = sock.write_all(&answer(n, &f)).await;
                    let _ = sock.flush().await;
                });
            }
        });
        (me, port)
    }

    fn frames(&self) -> Vec<(Instant, frame::Frame)> {
        self.frames.lock().unwrap().clone()
    }
}

fn ack(f: &frame::Frame, l_first: bool) -> Vec<u8> {
    let seq = f.seq.clone().unwrap();
    let body = if l_first {
        format!("\"ACK\"{seq}L0R0#1234[]")
    } else {
        format!("\"ACK\"{seq}R0L0#1234[]")
    };
    frame::wrap(&body).unwrap()
}

/// A NAK with the central station's clock an hour ahead: the frame is sent again at once with
/// the corrected timestamp, and that one's ACK (L before R) delivers it. A bare `"NAK"` is
/// a failed attempt, retried later (here the retry is ACKed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nak_corrects_the_clock_and_resends() {
    let ahead = time::Duration::hours(1);
    let (peer, port) = Scripted::start(move |n, f| match n {
        0 => frame::wrap(&format!(
            "\"NAK\"0000R0L0A0[]{}",
            frame::timestamp(common::now() + ahead)
        ))
        .unwrap(),
        1 => ack(f, true),
        2 => b"\"NAK\"".to_vec(),
        _ => ack(f, false),
    })
    .await;
    let h = start(&channel_config(port, "null_interval_s = 0")).await;
    let mut agent = h.enrolled_agent().await;
    let sent_at = common::now();
    alarm(&h, &mut agent, EventKind::Duress).await.unwrap();
    let rows = wait_rows(&h, "the delivery after the NAK", |rows| {
        rows.iter().any(|r| r.status == "delivered")
    })
    .await;
    assert_eq!(rows[0].attempts.len(), 1, "{rows:#?}");
    let frames = peer.frames();
    assert_eq!(frames.len(), 2);
    let (first, second) = (&frames[0].1, &frames[1].1);
    assert_eq!(first.token, "ADM-CID");
    assert_eq!(first.seq, second.seq, "the same message, sent again");
    let t1 = first.timestamp().unwrap();
    let t2 = second.timestamp().unwrap();
    assert!((t1 - sent_at).abs() < time::Duration::seconds(10), "{t1}");
    assert!(
        (t2 - (sent_at + ahead)).abs() < time::Duration::seconds(10),
        "the resend carries the central station's time: {t2}"
    );

    // The next alarm keeps the learnt offset; its bare NAK fails the attempt; the retry is
    // ACKed.
    agent = h.enrolled_agent().await;
    alarm(&h, &mut agent, EventKind::Duress).await.unwrap();
    let rows = wait_rows(&h, "the retried delivery", |rows| {
        rows.iter().filter(|r| r.status == "delivered").count() == 2
    })
    .await;
    let second_row = rows
        .iter()
        .find(|r| r.attempts.len() == 2)
        .expect("{rows:#?}");
    let err = second_row.attempts[0].error.as_deref().unwrap();
    assert!(err.contains("NAK without a timestamp"), "{err}");
    let frames = peer.frames();
    assert_eq!(frames.len(), 4);
    let t3 = frames[2].1.timestamp().unwrap();
    assert!((t3 - (common::now() + ahead)).abs() < time::Duration::seconds(10));
    assert_ne!(
        frames[2].1.seq, frames[0].1.seq,
        "a new message, a new sequence"
    );
    h.shutdown().await;
}

/// DUH: recorded on the row as a failed attempt; each attempt is one frame (never resent at
/// once), and retries follow the worker's backoff (no storm).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duh_is_recorded_without_a_retry_storm() {
    let (peer, port) = Scripted::start(|_, f| {
        frame::wrap(&format!("\"DUH\"{}R0L0#1234[]", f.seq.clone().unwrap())).unwrap()
    })
    .await;
    let h = start(&channel_config(port, "null_interval_s = 0")).await;
    let mut agent = h.enrolled_agent().await;
    alarm(&h, &mut agent, EventKind::Duress).await.unwrap();
    let rows = wait_rows(&h, "a DUH recorded", |rows| {
        rows.iter().any(|r| !r.attempts.is_empty())
    })
    .await;
    let err = rows[0].attempts[0].error.clone().unwrap();
    assert!(err.starts_with("DUH"), "{err}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let frames = peer.frames();
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    let rows = store.recent_notifications(10).await.unwrap();
    store.close().await;
    let attempts = rows[0].attempts.len();
    assert_eq!(rows[0].status, "pending", "still retried later: {rows:#?}");
    // One frame per attempt (an attempt in flight may have sent its frame already).
    assert!(
        frames.len() == attempts || frames.len() == attempts + 1,
        "{} frames, {attempts} attempts",
        frames.len()
    );
    // Backoff from 0.5 s, doubling, with jitter: at most 4 attempts in ~3.5 s.
    assert!(frames.len() <= 4, "{} frames in 3.5 s", frames.len());
    for w in frames.windows(2) {
        assert!(
            w[1].0 - w[0].0 >= Duration::from_millis(200),
            "resent at once"
        );
    }
    h.shutdown().await;
}
