//! The free-disk watermark (issue 15): below it the receiver refuses test events and heartbeats
//! (503 `storage-unavailable`: the agent keeps them and retries) so that the space left goes to
//! real alarms and cancels, which are still accepted. The state is logged when it changes and
//! shown by `/healthz` and on the console's board.
//!
//! The reading is the filesystem of the data directory (`statvfs`). With SQLite that is the
//! store itself; with PostgreSQL it is only the receiver's own files (TLS, keys) — the
//! database server's disk is its own to watch. The source is a trait so tests inject readings
//! instead of filling a disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a filesystem has free, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Free to an unprivileged process (`f_bavail`).
    pub available: u64,
    pub total: u64,
}

/// Where the free space is read from.
pub trait FreeSpace: Send + Sync + std::fmt::Debug {
    fn read(&self) -> std::io::Result<Space>;
}

/// The filesystem holding `path`.
#[derive(Debug, Clone)]
pub struct Statvfs(pub PathBuf);

impl FreeSpace for Statvfs {
    #[cfg(unix)]
    fn read(&self) -> std::io::Result<Space> {
        let s = rustix::fs::statvfs(&self.0)?;
        Ok(Space {
            available: s.f_bavail.saturating_mul(s.f_frsize),
            total: s.f_blocks.saturating_mul(s.f_frsize),
        })
    }

    #[cfg(not(unix))]
    fn read(&self) -> std::io::Result<Space> {
        Err(std::io::Error::other(
            "free space is not read on this platform",
        ))
    }
}

/// Default: low below 512 MiB free…
pub const DEFAULT_MIN_FREE_BYTES: u64 = 512 * 1024 * 1024;
/// …or below 1 % of the filesystem, whichever is smaller (so a large disk is not called low
/// with gigabytes free, and a small one still keeps a useful reserve).
pub const DEFAULT_MIN_FREE_PERCENT: f64 = 1.0;

/// The watermark: low when free space is below both `min_free_bytes` and `min_free_percent`
/// of the filesystem (that is, below the smaller of the two). 0 in either turns it off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watermark {
    pub min_free_bytes: u64,
    pub min_free_percent: f64,
}

impl Default for Watermark {
    fn default() -> Self {
        Watermark {
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            min_free_percent: DEFAULT_MIN_FREE_PERCENT,
        }
    }
}

impl Watermark {
    /// The free bytes below which `total` is low (0: never).
    pub fn threshold(&self, total: u64) -> u64 {
        let percent = (total as f64 * self.min_free_percent.max(0.0) / 100.0) as u64;
        self.min_free_bytes.min(percent)
    }
}

/// The data directory is low on space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowDisk {
    pub available: u64,
    pub threshold: u64,
}

impl LowDisk {
    /// For answers, logs and the board.
    pub fn describe(&self) -> String {
        format!(
            "the receiver's data directory has {} MiB free, below its watermark of {} MiB",
            self.available / (1024 * 1024),
            self.threshold / (1024 * 1024)
        )
    }
}

/// Reads the free space on every check (one `statvfs`, a few microseconds: cheaper than the
/// signature check before it) and logs when the state changes.
#[derive(Debug)]
pub struct DiskGuard {
    source: Arc<dyn FreeSpace>,
    watermark: Watermark,
    was_low: AtomicBool,
}

impl DiskGuard {
    pub fn new(source: Arc<dyn FreeSpace>, watermark: Watermark) -> Self {
        DiskGuard {
            source,
            watermark,
            was_low: AtomicBool::new(false),
        }
    }

    /// `Some` while the data directory is below the watermark. A failed reading counts as not
    /// low: the watermark must never refuse traffic for a reason it cannot see (a full disk
    /// still fails the commit, which answers 503 by itself).
    pub fn low(&self) -> Option<LowDisk> {
        let low = match self.source.read() {
            Ok(space) => {
                let threshold = self.watermark.threshold(space.total);
                (space.available < threshold).then_some(LowDisk {
                    available: space.available,
                    threshold,
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, "free disk space could not be read");
                None
            }
        };
        let was = self.was_low.swap(low.is_some(), Ordering::Relaxed);
        match (&low, was) {
            (Some(l), false) => tracing::error!(
                available = l.available,
                threshold = l.threshold,
                "{}: test events and heartbeats are refused until space is freed; alarms are \
                 still accepted",
                l.describe()
            ),
            (None, true) => tracing::warn!(
                "free disk space is above the watermark again: test events and heartbeats are \
                 accepted"
            ),
            _ => {}
        }
        low
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_the_smaller_of_bytes_and_percent() {
        let w = Watermark::default();
        let gib = 1024 * 1024 * 1024;
        // 10 GiB: 1 % is 102 MiB, below 512 MiB.
        assert_eq!(w.threshold(10 * gib), 10 * gib / 100);
        // 1 TiB: 512 MiB, below 1 %.
        assert_eq!(w.threshold(1024 * gib), 512 * 1024 * 1024);
        let off = Watermark {
            min_free_bytes: 0,
            ..w
        };
        assert_eq!(off.threshold(gib), 0);
    }

    #[test]
    fn the_real_data_directory_can_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let space = Statvfs(dir.path().to_owned()).read().unwrap();
        assert!(space.total > 0 && space.available <= space.total);
    }
}
