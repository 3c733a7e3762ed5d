//! Shared pieces of the fault suites (`tests/tests/faults_*.rs`): an enrolled agent
//! installation beside a real receiver, the long-variant switch, and figure lines.

use std::path::Path;

use crate::{AgentCli, ReceiverProcess, require_secret_service, write_policy};

/// `DURESS_LONG=1` selects the long variants (minutes-long outages, more iterations); their
/// figures are recorded in docs/RELIABILITY.md. CI runs the short ones.
pub fn long_mode() -> bool {
    std::env::var("DURESS_LONG").is_ok_and(|v| v == "1")
}

/// Prints one `name=value` figure line (copied into docs/RELIABILITY.md).
pub fn figure(scenario: &str, name: &str, value: impl std::fmt::Display) {
    eprintln!("FIGURE {scenario} {name}={value}");
}

/// A fresh enrollment token with `uses` uses, from the receiver's admin command.
pub fn token(receiver: &ReceiverProcess, uses: u32) -> String {
    receiver
        .admin(&[
            "token",
            "create",
            "--uses",
            &uses.to_string(),
            "--expires",
            "1h",
        ])
        .lines()
        .last()
        .expect("token on the last line")
        .trim()
        .to_owned()
}

/// An agent installation in `dir/name` pointing at `receiver`, enrolled with the real binary.
pub fn enrolled_agent(dir: &Path, name: &str, receiver: &ReceiverProcess) -> AgentCli {
    require_secret_service();
    let agent = AgentCli {
        state_dir: dir.join(name),
        policy: dir.join(format!("{name}.toml")),
    };
    let token = token(receiver, 1);
    write_policy(
        &agent.policy,
        &receiver.url(),
        &receiver.ca_path(),
        &token,
        name,
    );
    let out = agent.run(&["enroll"]);
    assert!(
        out.status.success(),
        "enroll failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    agent
}

/// `status --json`'s `queued`.
pub fn queued(agent: &AgentCli) -> u64 {
    agent.status()["queued"]
        .as_u64()
        .expect("status has queued")
}

/// Kills a child with SIGKILL and reaps it (ignores one that already ended).
pub fn kill9(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A child process killed (SIGKILL) when dropped: a failing test leaves nothing running.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill9(&mut self.0);
    }
}

/// Runs a command and asserts it succeeded; returns stdout.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
