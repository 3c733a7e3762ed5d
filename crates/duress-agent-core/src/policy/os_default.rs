//! The OS default policy location, one function per OS: the machine policy the OS sources
//! ([`super::sources`]) read first, named in messages.

use std::path::PathBuf;

use crate::Result;

/// Linux and the BSDs: the machine policy file IT deploys (drop-ins in `/etc/duress/agent.d/`).
#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd"))]
pub fn os_default_path() -> Result<PathBuf> {
    Ok(PathBuf::from("/etc/duress/agent.toml"))
}

/// Windows: the GPO/Intune policy key (a registry path, not a file).
#[cfg(windows)]
pub fn os_default_path() -> Result<PathBuf> {
    Ok(PathBuf::from(format!(
        r"HKLM\{}",
        super::sources::windows::POLICY_KEY
    )))
}

/// macOS: the managed preferences an MDM profile installs.
#[cfg(target_os = "macos")]
pub fn os_default_path() -> Result<PathBuf> {
    Ok(PathBuf::from(
        "/Library/Managed Preferences/org.duress.agent.plist",
    ))
}

/// Other OSes have no managed policy source: a file must be named explicitly.
#[cfg(not(any(
    target_os = "linux",
    target_os = "freebsd",
    target_os = "openbsd",
    windows,
    target_os = "macos"
)))]
pub fn os_default_path() -> Result<PathBuf> {
    Err(crate::Error::Policy {
        origin: "(OS default)".into(),
        message: format!(
            "this OS has no managed policy source (unsupported); pass --policy FILE or set {}",
            super::ENV_POLICY
        ),
    })
}
