//! One tray agent per state directory: an exclusive lock on `tray.lock` there, held for the
//! life of the process (`std::fs::File::try_lock`: `flock` on Unix, `LockFileEx` on Windows).
//! Works without D-Bus on every OS (tauri-plugin-single-instance panics on Linux without a
//! session bus) and is released by the OS even when the process is killed.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "tray.lock";

/// Held while this process is the agent of its state directory.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

/// `Some` when this process now holds the lock, `None` when another process does.
pub fn acquire(state_dir: &Path) -> std::io::Result<Option<InstanceLock>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state_dir.join(LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(InstanceLock { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Blocks until this process holds the lock (the systemd user service: when another agent
/// already runs for this state directory — started by XDG autostart — this one waits and takes
/// over the moment that one ends, instead of exiting and being restarted in a loop).
pub fn wait(state_dir: &Path) -> std::io::Result<InstanceLock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state_dir.join(LOCK_FILE))?;
    file.lock()?;
    Ok(InstanceLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The second holder is refused while the first lives, and gets it once the first is gone.
    #[test]
    fn second_acquire_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        assert!(first.is_some());
        assert!(acquire(dir.path()).unwrap().is_none());
        drop(first);
        assert!(acquire(dir.path()).unwrap().is_some());
    }
}
