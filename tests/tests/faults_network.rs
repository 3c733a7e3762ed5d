//! Fault: the network between agent and receiver fails. Agent and receiver run in two network
//! namespaces the test creates (`ip netns`), joined by a veth pair (10.231.X.1 ↔ 10.231.X.2).
//!
//! 1. Link cut: the link goes down, alarms are pressed (real `trigger` processes, queued), the
//!    link comes back → all delivered.
//! 2. Random loss: an nftables rule in each test namespace drops 1 packet in 10 on the veth
//!    (`numgen random mod 10 0 drop`) while 20 alarms are pressed concurrently → all delivered.
//! 3. Delay + loss: a second agent talks through a userspace proxy in its namespace that delays
//!    every chunk by 150 ms each way (no netem on this kernel), with the loss still on.
//!
//! Proves: every durable alarm of both agents is stored exactly once, press counts add up, and
//! reports the time to drain after the link came back. Fails, saying why, where namespaces
//! cannot be made.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use duress_tests::faults::{KillOnDrop, figure, run_ok};
use duress_tests::netns::TestNet;
use duress_tests::stores::{
    lost_and_duplicated, outbox_events, receiver_event_counts, receiver_press_balance,
};
use duress_tests::{bin, receiver_cli, require_secret_service, wait_until, write_policy};

const PORT: u16 = 8443;

struct NsAgent {
    state_dir: std::path::PathBuf,
    policy: std::path::PathBuf,
}

impl NsAgent {
    fn command(&self, net: &TestNet, args: &[&str]) -> Command {
        let mut c = net.command(&net.agent_ns, &bin("duress-agent"));
        c.args(args)
            .arg("--policy")
            .arg(&self.policy)
            .env("DURESS_AGENT_STATE_DIR", &self.state_dir);
        c
    }

    /// `n` concurrent `trigger`s; waits for them (each exits once its event is durable and its
    /// 5 s delivery window ended).
    fn press(&self, net: &TestNet, n: usize) {
        let children: Vec<KillOnDrop> = (0..n)
            .map(|_| {
                KillOnDrop(
                    self.command(net, &["trigger"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("trigger"),
                )
            })
            .collect();
        for mut c in children {
            assert!(c.0.wait().expect("wait").success(), "trigger must exit 0");
        }
    }

    fn headless(&self, net: &TestNet, log: &Path) -> KillOnDrop {
        KillOnDrop(
            self.command(net, &["run", "--headless"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).expect("log"))
                .spawn()
                .expect("headless"),
        )
    }

    fn all_delivered(&self) -> bool {
        outbox_events(&self.state_dir).iter().all(|e| e.delivered)
    }
}

#[test]
fn network_cut_loss_and_delay_lose_and_duplicate_nothing() {
    require_secret_service();
    let net = TestNet::create();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("receiver");
    std::fs::create_dir_all(&data_dir).expect("data dir");

    // A certificate for the receiver's namespace address (and 127.0.0.1 for the proxy path).
    let (cert, key) = duress_receiver::tls::generate_self_signed(&[
        net.receiver_addr.clone(),
        "127.0.0.1".into(),
    ])
    .expect("certificate");
    let (cert_path, key_path) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert_path, cert).expect("cert");
    std::fs::write(&key_path, key).expect("key");

    let listen = format!("{}:{PORT}", net.receiver_addr);
    let rx_log = tmp.path().join("receiver.log");
    let _receiver = KillOnDrop(
        net.command(&net.receiver_ns, &bin("duress-receiver"))
            .args(["serve", "--data-dir"])
            .arg(&data_dir)
            .args(["--listen", &listen, "--tls-cert"])
            .arg(&cert_path)
            .arg("--tls-key")
            .arg(&key_path)
            .stdout(std::fs::File::create(&rx_log).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("receiver"),
    );
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_to_string(&rx_log)
            .is_ok_and(|l| l.contains("listening"))),
        "the receiver did not start in its namespace"
    );

    let make_agent = |name: &str, url: &str| {
        let a = NsAgent {
            state_dir: tmp.path().join(name),
            policy: tmp.path().join(format!("{name}.toml")),
        };
        let t = receiver_cli(
            &data_dir,
            &["token", "create", "--uses", "1", "--expires", "1h"],
        )
        .lines()
        .last()
        .expect("token on the last line")
        .trim()
        .to_owned();
        write_policy(&a.policy, url, &cert_path, &t, name);
        run_ok(&mut a.command(&net, &["enroll"]));
        a
    };
    let direct = make_agent("ns-direct", &format!("https://{listen}"));

    let proxy_port = 9443;
    let _proxy = KillOnDrop(
        net.command(&net.agent_ns, &bin("duress-delay-proxy"))
            .args([&format!("127.0.0.1:{proxy_port}"), &listen, "150", "900"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("proxy"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let proxied = make_agent("ns-proxied", &format!("https://127.0.0.1:{proxy_port}"));

    let _h1 = direct.headless(&net, &tmp.path().join("direct.log"));
    let _h2 = proxied.headless(&net, &tmp.path().join("proxied.log"));

    // 1. Link cut.
    net.set_link(false);
    direct.press(&net, 5);
    assert_eq!(outbox_events(&direct.state_dir).len(), 5);
    assert!(
        !direct.all_delivered(),
        "nothing can be delivered over a cut link"
    );
    std::thread::sleep(Duration::from_secs(3));
    net.set_link(true);
    let up = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || direct.all_delivered()),
        "not delivered within 30 s of the link coming back"
    );
    figure("net-cut", "sent", 5);
    figure(
        "net-cut",
        "drain_after_link_up_ms",
        up.elapsed().as_millis(),
    );

    // 2. Random loss, 1 packet in 10 each way.
    net.set_loss(Some(10));
    let t = Instant::now();
    direct.press(&net, 20);
    assert!(
        wait_until(Duration::from_secs(60), || direct.all_delivered()),
        "not delivered within 60 s under 10 % loss"
    );
    figure("net-loss", "sent", 20);
    figure("net-loss", "delivered_all_ms", t.elapsed().as_millis());

    // 3. 150 ms each way through the proxy, loss still on.
    let t = Instant::now();
    proxied.press(&net, 10);
    assert!(
        wait_until(Duration::from_secs(60), || proxied.all_delivered()),
        "not delivered within 60 s through the delaying proxy"
    );
    figure("net-delay", "sent", 10);
    figure("net-delay", "delivered_all_ms", t.elapsed().as_millis());
    let dropped = net.dropped_packets();
    figure("net-loss", "packets_dropped_by_nft", dropped);
    assert!(
        dropped > 0,
        "the loss rule dropped nothing: the loss phase proved nothing"
    );
    net.set_loss(None);

    let mut ids: Vec<String> = outbox_events(&direct.state_dir)
        .into_iter()
        .map(|e| e.id)
        .collect();
    ids.extend(outbox_events(&proxied.state_dir).into_iter().map(|e| e.id));
    assert_eq!(ids.len(), 35);
    let counts = receiver_event_counts(&data_dir);
    let (lost, duplicated) = lost_and_duplicated(&counts, &ids);
    let (presses, events) = receiver_press_balance(&data_dir);
    figure("network", "sent", ids.len());
    figure("network", "stored", counts.len());
    figure("network", "lost", lost.len());
    figure("network", "duplicated", duplicated.len());
    assert!(lost.is_empty(), "lost {lost:?}");
    assert!(duplicated.is_empty(), "duplicated {duplicated:?}");
    assert_eq!(counts.len(), ids.len());
    assert_eq!(presses, events);
}
