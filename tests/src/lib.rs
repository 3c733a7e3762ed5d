//! Shared harness of the whole-system tests (`tests/tests/*.rs`).
//!
//! - [`require_secret_service`]: the agent's keystore is the real Secret Service; a test that
//!   needs it fails loudly when it is not there (run the suite through `scripts/test`, which
//!   starts a private session bus with an unlocked gnome-keyring).
//! - [`bin`]: the path of a workspace binary (`duress-receiver`, `duress-agent`), built by
//!   `scripts/test` before the tests run.
//! - [`ReceiverProcess`]: the real receiver binary on a fixed loopback port, which a test can
//!   stop, `kill -9` and start again on the same data directory.
//! - [`write_policy`]: an agent policy file pointing at a receiver.
#![forbid(unsafe_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Fails the test, loudly, when no Secret Service answers on the session bus.
pub fn require_secret_service() {
    let bus = std::env::var("DBUS_SESSION_BUS_ADDRESS").unwrap_or_default();
    assert!(
        !bus.is_empty(),
        "\n\nTHIS TEST NEEDS THE REAL SECRET SERVICE (the agent's keystore) AND NONE IS RUNNING.\n\
         Run the tests through `scripts/test` (or `scripts/with-keyring cargo test ...`), which\n\
         starts a private D-Bus session with an unlocked gnome-keyring.\n"
    );
}

/// Path of a binary of this workspace, built into the shared target dir.
pub fn bin(name: &str) -> PathBuf {
    // The test executable is target/<profile>/deps/<test>-<hash>; binaries are in target/<profile>.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Waits until `check` holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The real `duress-receiver serve` process on a fixed port and data dir.
#[derive(Debug)]
pub struct ReceiverProcess {
    pub data_dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl ReceiverProcess {
    /// Starts the receiver and waits until it accepts TCP connections (and its CA exists).
    pub fn start(data_dir: &Path, port: u16) -> Self {
        let mut me = ReceiverProcess {
            data_dir: data_dir.to_owned(),
            port,
            child: None,
        };
        me.restart();
        me
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The trust anchor an agent pins.
    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("cert.pem")
    }

    /// Starts it again (after [`Self::stop`] or [`Self::kill9`]) on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "receiver already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))
            .expect("receiver log");
        let child = Command::new(bin("duress-receiver"))
            .args(["serve", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn duress-receiver");
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let up = wait_until(Duration::from_secs(20), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && self.ca_path().exists()
        });
        assert!(
            up,
            "receiver did not come up on {addr}; see {}",
            self.data_dir.with_extension("log").display()
        );
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Graceful stop (SIGTERM), waiting for the process to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let ended = wait_until(Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if !ended {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Runs a `duress-receiver` admin subcommand on this data dir and returns its stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        receiver_cli(&self.data_dir, args)
    }

    /// A fresh enrollment token with `uses` uses and a 1 h lifetime, from `token create`.
    pub fn token(&self, uses: u32) -> String {
        self.admin(&[
            "token",
            "create",
            "--uses",
            &uses.to_string(),
            "--expires",
            "1h",
            // Stations of a test start active (a multi-use token is manual by default).
            "--approve",
            "auto",
        ])
        .lines()
        .last()
        .expect("token on the last line")
        .trim()
        .to_owned()
    }
}

impl Drop for ReceiverProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `duress-receiver <args> --data-dir DIR`, asserting success; returns stdout.
pub fn receiver_cli(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(bin("duress-receiver"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run duress-receiver");
    assert!(
        out.status.success(),
        "duress-receiver {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Writes an agent policy pointing at one receiver.
pub fn write_policy(path: &Path, receiver_url: &str, ca: &Path, token: &str, label: &str) {
    let policy = format!(
        r#"[[receivers]]
url = "{receiver_url}"
ca_cert = "{ca}"

[enrollment]
token = "{token}"

[location]
label = "{label}"
country = "US"
A1 = "MN"
A3 = "Saint Paul"
RD = "University Ave"
HNO = "100"
PC = "55101"
BLD = "A"
FLR = "2"
ROOM = "214"

[heartbeat]
interval_s = 10
"#,
        ca = ca.display()
    );
    std::fs::write(path, policy).expect("write policy");
}

/// One agent installation: its own state dir and policy, driven through the real binary.
#[derive(Debug)]
pub struct AgentCli {
    pub state_dir: PathBuf,
    pub policy: PathBuf,
}

impl AgentCli {
    /// An agent installation (state dir and policy file) pointing at `receiver`, with the
    /// standard test policy for `label` plus `policy_extra` (e.g. `[tray]` keys), enrolled with
    /// a fresh one-use token through the real binary. Needs the Secret Service (the keystore).
    pub fn enroll(
        receiver: &ReceiverProcess,
        state_dir: PathBuf,
        policy: PathBuf,
        label: &str,
        policy_extra: &str,
    ) -> AgentCli {
        require_secret_service();
        let token = receiver.token(1);
        write_policy(&policy, &receiver.url(), &receiver.ca_path(), &token, label);
        if !policy_extra.is_empty() {
            let mut text = std::fs::read_to_string(&policy).expect("policy");
            text.push('\n');
            text.push_str(policy_extra);
            std::fs::write(&policy, text).expect("policy");
        }
        let agent = AgentCli { state_dir, policy };
        let out = agent.run(&["enroll"]);
        assert!(
            out.status.success(),
            "enroll failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        agent
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("duress-agent"));
        cmd.args(args)
            .arg("--policy")
            .arg(&self.policy)
            .env("DURESS_AGENT_STATE_DIR", &self.state_dir);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run duress-agent")
    }

    /// `duress-agent status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// Starts `duress-agent run --headless` in the background.
    pub fn spawn_headless(&self) -> Child {
        self.command(&["run", "--headless"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.state_dir.with_extension("log"))
                    .expect("agent log"),
            ))
            .spawn()
            .expect("spawn duress-agent run --headless")
    }
}

/// Every event id the receiver has stored, from `events export` (JSON Lines).
pub fn stored_event_ids(data_dir: &Path) -> Vec<String> {
    receiver_cli(data_dir, &["events", "export"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("export line is JSON");
            v["id"].as_str().expect("id").to_owned()
        })
        .collect()
}

// Issue 6: fault, load and bad-input suites.
pub mod faults;
pub mod netns;
pub mod stores;
pub mod tmpfs;
