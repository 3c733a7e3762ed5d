//! Shared pieces of the fault suites (`tests/tests/faults_*.rs`): an enrolled agent
//! installation beside a real receiver, the long-variant switch, and figure lines.

use std::path::Path;

use crate::{AgentCli, ReceiverProcess};

/// `DURESS_LONG=1` selects the long variants (minutes-long outages, more iterations); their
/// figures are recorded in docs/RELIABILITY.md. CI runs the short ones.
pub fn long_mode() -> bool {
    std::env::var("DURESS_LONG").is_ok_and(|v| v == "1")
}

/// Prints one `name=value` figure line (copied into docs/RELIABILITY.md).
pub fn figure(scenario: &str, name: &str, value: impl std::fmt::Display) {
    eprintln!("FIGURE {scenario} {name}={value}");
}

/// An agent installation in `dir/name` pointing at `receiver`, enrolled with the real binary.
pub fn enrolled_agent(dir: &Path, name: &str, receiver: &ReceiverProcess) -> AgentCli {
    AgentCli::enroll(
        receiver,
        dir.join(name),
        dir.join(format!("{name}.toml")),
        name,
        "",
    )
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
