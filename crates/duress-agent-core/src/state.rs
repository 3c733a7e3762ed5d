//! Where the agent keeps its state: `DURESS_AGENT_STATE_DIR` when set, else the OS per-user data
//! directory (`dirs::data_local_dir()/duress`). Several isolated agents can live on one machine
//! by giving each its own state directory (and policy).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Environment variable naming the state directory.
pub const ENV_STATE_DIR: &str = "DURESS_AGENT_STATE_DIR";

/// The state directory, without creating it.
pub fn resolve_state_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(ENV_STATE_DIR).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::data_local_dir()
        .map(|d| d.join("duress"))
        .ok_or_else(|| Error::StateDir {
            path: PathBuf::from("(per-user data directory)"),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("the OS reports no per-user data directory; set {ENV_STATE_DIR}"),
            ),
        })
}

/// Creates `dir` (and parents) and restricts it to its owner (0700 on Unix).
pub fn ensure_state_dir(dir: &Path) -> Result<()> {
    let err = |source| Error::StateDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state directory is created with parents and is private to its owner.
    #[test]
    fn state_dir_is_created_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/duress");
        ensure_state_dir(&dir).unwrap();
        assert!(dir.is_dir());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }
}
