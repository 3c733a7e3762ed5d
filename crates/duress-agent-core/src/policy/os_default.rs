//! The OS default policy location, one function per OS.

use std::path::PathBuf;

use crate::Result;

/// Linux and the BSDs: the machine policy file IT deploys.
#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd"))]
pub fn os_default_path() -> Result<PathBuf> {
    Ok(PathBuf::from("/etc/duress/agent.toml"))
}

/// Windows and macOS read managed policy (registry, managed preferences) from the deployment
/// issue on; until then a file must be named explicitly.
#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd")))]
pub fn os_default_path() -> Result<PathBuf> {
    Err(crate::Error::Policy {
        origin: "(OS default)".into(),
        message: format!(
            "OS policy sources come in the deployment issue; pass --policy FILE or set {}",
            super::ENV_POLICY
        ),
    })
}
