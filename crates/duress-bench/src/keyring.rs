//! The agent engine keeps its device key in the OS keystore (the real Secret Service, never a
//! mock). The bench therefore always runs inside `scripts/with-keyring`: a private session bus
//! with a throw-away unlocked gnome-keyring, so it never touches a user's own login keyring.

use std::process::Command;

use anyhow::Context as _;

/// Set by `scripts/with-keyring` inside its session.
const IN_SESSION: &str = "DURESS_IN_KEYRING_SESSION";

/// Returns when already inside a keyring session; otherwise runs this very command again
/// inside one and exits with its status.
pub fn ensure_session() -> anyhow::Result<()> {
    if std::env::var_os(IN_SESSION).is_some() {
        return Ok(());
    }
    let script = crate::workspace_root().join("scripts").join("with-keyring");
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let status = Command::new(&script)
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}
