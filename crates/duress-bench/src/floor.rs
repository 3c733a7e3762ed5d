//! The physical floor of press-to-console on this machine, measured in the same run as P1:
//! two durable writes of 512 B on the disk of the state directories (the agent's outbox commit
//! and the receiver's commit: each is one `fdatasync` of a write-ahead log page, as SQLite
//! does on Linux) plus one TLS round trip to the receiver's no-op endpoint (`GET /v1/ping`, no
//! database) over a kept-alive connection.

use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;

use crate::stats::Sample;

/// A preallocated file in the measured directory, like a write-ahead log that is reused: the
/// syncs flush data, not file growth.
#[derive(Debug)]
pub struct FsyncProbe {
    file: std::fs::File,
    path: std::path::PathBuf,
    round: u64,
}

impl FsyncProbe {
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("floor-fsync.bin");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.write_all_at(&[0u8; 8192], 0)?;
        file.sync_all()?;
        Ok(FsyncProbe {
            file,
            path,
            round: 0,
        })
    }

    /// One floor sample: (write 512 B + fdatasync) twice.
    pub fn pair(&mut self) -> anyhow::Result<std::time::Duration> {
        let page = [0x5au8; 512];
        let t = Instant::now();
        for _ in 0..2 {
            self.file.write_all_at(&page, (self.round % 16) * 512)?;
            self.file.sync_data()?;
            self.round += 1;
        }
        Ok(t.elapsed())
    }
}

impl Drop for FsyncProbe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `n` timings of (write 512 B + fdatasync) × 2 in a file in `dir`.
pub fn fsync_pairs(dir: &Path, n: usize) -> anyhow::Result<Sample> {
    let mut probe = FsyncProbe::new(dir)?;
    let times = (0..n)
        .map(|_| probe.pair())
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Sample::new(&times))
}

/// One round trip of `GET /v1/ping` (204 expected).
pub async fn ping_once(client: &reqwest::Client, url: &str) -> anyhow::Result<std::time::Duration> {
    let t = Instant::now();
    let resp = client.get(url).send().await?;
    let status = resp.status().as_u16();
    let _ = resp.bytes().await?;
    let d = t.elapsed();
    anyhow::ensure!(status == 204, "GET /v1/ping answered {status}");
    Ok(d)
}

/// The floor of one alarm: p50 of the fsync pair plus p50 of the ping round trip.
pub fn floor_ms(fsync_pair: &Sample, ping: &Sample) -> f64 {
    fsync_pair.p50() + ping.p50()
}

/// A client with exactly one connection to keep alive (HTTP/1.1, the receiver's certificate).
pub fn one_connection_client(ca: &Path) -> anyhow::Result<reqwest::Client> {
    duress_loadgen::client::https_client(ca, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fsync pair runs on a real directory and gives one timing per round.
    #[test]
    fn fsync_pairs_measure() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = fsync_pairs(dir.path(), 3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.len(), 3);
        assert!(s.p50() > 0.0);
    }
}
