//! Issue 12: two receiver nodes on ONE PostgreSQL database (a real PostgreSQL 15 cluster this
//! test starts, `duress-testpg`), both `duress-receiver serve --database URL`; 20 stations —
//! real agent engines (`duress_agent_core::Engine`: real outbox, real keystore, their own
//! delivery loop `Engine::run`) whose policy lists both nodes; a console officer signed in on
//! node 2 with its live stream (SSE) open.
//!
//! Node 1 is killed with SIGKILL in the middle of a burst of 200 alarms. Proves:
//! - every alarm is committed exactly once (`events export` of the shared database);
//! - the stations carry on through node 2 within the alarm retry bound: every alarm is
//!   acknowledged within 5 s of its press, those in flight at the kill included;
//! - the console on node 2 received every incident live (the incidents of alarms node 1
//!   ingested reach it through the shared database: LISTEN/NOTIFY or the periodic re-read).

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duress_agent_core::duress_core::{EventKind, HotkeyState, Source};
use duress_agent_core::{Engine, EnrollOptions, Policy};
use duress_testpg::TestPg;
use duress_tests::faults::figure;
use duress_tests::{bin, free_port, require_secret_service, wait_until};

const STATIONS: usize = 20;
const ROUNDS: usize = 10; // 20 × 10 = 200 alarms
const PASSWORD: &str = "correct horse battery staple";

/// One `duress-receiver serve --database URL` node.
struct Node {
    data_dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Node {
    fn start(data_dir: &Path, database: &str) -> Node {
        let port = free_port();
        let log = std::fs::File::create(data_dir.with_extension("log")).expect("log");
        std::fs::create_dir_all(data_dir).expect("data dir");
        let child = Command::new(bin("duress-receiver"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--database", database])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn duress-receiver serve");
        let node = Node {
            data_dir: data_dir.to_owned(),
            port,
            child: Some(child),
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        assert!(
            wait_until(Duration::from_secs(30), || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                    && node.ca().exists()
            }),
            "node did not come up; see {}",
            data_dir.with_extension("log").display()
        );
        node
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn ca(&self) -> PathBuf {
        self.data_dir.join("tls").join("cert.pem")
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `duress-receiver ARGS --data-dir DIR --database URL`, asserting success; stdout.
fn cli(data_dir: &Path, database: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(bin("duress-receiver"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--database", database])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run duress-receiver");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("duress-receiver");
    assert!(
        out.status.success(),
        "duress-receiver {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Copies node 1's identity (TLS certificate, acknowledgement and audit keys) to node 2, as
/// nodes behind one name share it.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn policy(nodes: &[&Node], token: &str, i: usize) -> Policy {
    let mut text = String::new();
    for n in nodes {
        text.push_str(&format!(
            "[[receivers]]\nurl = \"{}\"\nca_cert = \"{}\"\n\n",
            n.url(),
            n.ca().display()
        ));
    }
    text.push_str(&format!(
        "[enrollment]\ntoken = \"{token}\"\n\n[location]\nlabel = \"Cluster desk {i}\"\n\
         country = \"US\"\nA1 = \"MN\"\nA3 = \"Saint Paul\"\nRD = \"University Ave\"\n\
         HNO = \"100\"\nPC = \"55101\"\nBLD = \"A\"\nFLR = \"2\"\nROOM = \"{}\"\n\n\
         [heartbeat]\ninterval_s = 10\n",
        200 + i
    ));
    Policy::from_toml_str(&text, "cluster test").expect("policy")
}

/// Signs in on `node` and collects the incident ids of every live frame into `seen`.
async fn console_on(node: &Node, seen: Arc<Mutex<HashSet<String>>>) {
    // The agent's own TLS configuration (ring provider), trusting the node's certificate.
    let tls = duress_agent_core::sender::tls_config(Some(&node.ca())).expect("tls");
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let login = client
        .post(format!("{}/login", node.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "username=officer&password={}",
            PASSWORD.replace(' ', "+")
        ))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 303, "signed in");
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_owned();
    let mut resp = client
        .get(format!("{}/events", node.url()))
        .header("cookie", cookie)
        .send()
        .await
        .expect("GET /events");
    assert_eq!(resp.status(), 200);
    tokio::spawn(async move {
        let mut buf = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                    continue;
                };
                if let Some(id) = v["incident_id"].as_str() {
                    seen.lock().expect("seen").insert(id.to_owned());
                }
            }
        }
    });
}

#[test]
fn node_1_killed_during_a_burst_every_alarm_once_and_live_on_node_2() {
    require_secret_service();
    let pg = TestPg::start().unwrap_or_else(|e| {
        panic!("THIS TEST NEEDS POSTGRESQL 15 (scripts/install-deps installs it): {e}")
    });
    let database = pg.fresh_url().expect("database");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut node1 = Node::start(&tmp.path().join("node1"), &database);
    copy_dir(&node1.data_dir, &tmp.path().join("node2"));
    let node2 = Node::start(&tmp.path().join("node2"), &database);
    cli(
        &node1.data_dir,
        &database,
        &[
            "user",
            "add",
            "--username",
            "officer",
            "--role",
            "officer",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    let token = cli(
        &node1.data_dir,
        &database,
        &[
            "token",
            "create",
            "--uses",
            &STATIONS.to_string(),
            "--expires",
            "1h",
            "--approve",
            "auto",
        ],
        None,
    )
    .lines()
    .last()
    .expect("token")
    .trim()
    .to_owned();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let seen_live = Arc::new(Mutex::new(HashSet::new()));
    rt.block_on(console_on(&node2, seen_live.clone()));

    // 20 stations, enrolled (through node 1, the policy's first receiver), each running its
    // own delivery loop.
    let engines: Vec<Engine> = (0..STATIONS)
        .map(|i| {
            let e = Engine::open(
                policy(&[&node1, &node2], &token, i),
                tmp.path().join(format!("station{i}")),
            )
            .expect("engine");
            rt.block_on(e.enroll(&EnrollOptions::default()))
                .unwrap_or_else(|err| panic!("enroll station {i}: {err}"));
            e
        })
        .collect();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (_hk_tx, hk_rx) = tokio::sync::watch::channel(HotkeyState::NotApplicable);
    let runs: Vec<_> = engines
        .iter()
        .map(|e| {
            let e = e.clone();
            let mut stop = stop_rx.clone();
            let hk = hk_rx.clone();
            rt.spawn(async move {
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                e.run(shutdown, hk).await
            })
        })
        .collect();

    // The burst: every station presses once per round, 10 rounds 100 ms apart; node 1 dies
    // with SIGKILL after round 5.
    let mut pressed: Vec<(usize, uuid::Uuid)> = Vec::new();
    let mut killed_at = None;
    for round in 0..ROUNDS {
        if round == ROUNDS / 2 {
            node1.kill9();
            killed_at = Some(Instant::now());
        }
        for (i, e) in engines.iter().enumerate() {
            let claims = e.record(EventKind::Duress, Source::Cli).expect("durable");
            pressed.push((i, claims.id));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let burst_end = Instant::now();
    let killed_at = killed_at.expect("killed");
    let all_delivered = wait_until(Duration::from_secs(30), || {
        engines
            .iter()
            .all(|e| e.pending().map(|p| p.is_empty()).unwrap_or(false))
    });
    let drained = burst_end.elapsed();
    figure("cluster_node_kill", "alarms", pressed.len());
    figure(
        "cluster_node_kill",
        "burst_after_kill_ms",
        (burst_end - killed_at).as_millis(),
    );
    figure(
        "cluster_node_kill",
        "drained_after_burst_ms",
        drained.as_millis(),
    );
    assert!(
        all_delivered,
        "not every alarm was acknowledged within 30 s"
    );

    // Every alarm within 5 s of its press (the agent's alarm retry bound), kill or not.
    let mut worst = time::Duration::ZERO;
    for (i, id) in &pressed {
        let ev = engines[*i].event(*id).expect("outbox").expect("event");
        let took = ev.delivered_at.expect("delivered") - ev.created_at;
        worst = worst.max(took);
    }
    figure(
        "cluster_node_kill",
        "worst_press_to_ack_ms",
        worst.whole_milliseconds(),
    );
    assert!(
        worst <= time::Duration::seconds(5),
        "an alarm took {worst} from press to acknowledgement (bound: 5 s)"
    );

    let _ = stop_tx.send(true);
    for r in runs {
        let _ = rt.block_on(r);
    }

    // Exactly once, in the shared database (node 2's CLI, node 1 is dead).
    let mut counts: HashMap<String, usize> = HashMap::new();
    for line in cli(&node2.data_dir, &database, &["events", "export"], None).lines() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        *counts
            .entry(v["id"].as_str().expect("id").to_owned())
            .or_default() += 1;
    }
    let lost: Vec<_> = pressed
        .iter()
        .filter(|(_, id)| !counts.contains_key(&id.to_string()))
        .collect();
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    figure("cluster_node_kill", "stored", counts.len());
    figure("cluster_node_kill", "lost", lost.len());
    figure("cluster_node_kill", "duplicated", duplicated.len());
    assert!(
        lost.is_empty() && duplicated.is_empty() && counts.len() == pressed.len(),
        "lost {lost:?} duplicated {duplicated:?}, stored {}",
        counts.len()
    );

    // The console on node 2 saw every incident live (within the safety-net interval).
    let incidents: Vec<serde_json::Value> = serde_json::from_str(&cli(
        &node2.data_dir,
        &database,
        &["incidents", "list", "--json"],
        None,
    ))
    .expect("incidents JSON");
    let expected: HashSet<String> = incidents
        .iter()
        .map(|i| i["incident_id"].as_str().expect("incident_id").to_owned())
        .collect();
    assert!(!expected.is_empty());
    let live = wait_until(Duration::from_secs(10), || {
        expected.is_subset(&seen_live.lock().expect("seen"))
    });
    let missing: Vec<_> = expected
        .difference(&seen_live.lock().expect("seen"))
        .cloned()
        .collect();
    figure("cluster_node_kill", "incidents", expected.len());
    assert!(live, "incidents never shown live on node 2: {missing:?}");
    for e in &engines {
        let _ = e.keystore().delete();
    }
}
