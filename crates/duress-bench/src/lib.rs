//! # duress-bench — Duress measured against the physical floor
//!
//! Whole-system figures of issue 7, each printed as a `name=value` line so runs can be compared
//! (`cargo run --release -p duress-bench -- all [--quick]`; see docs/PERFORMANCE.md):
//!
//! - [`floor`]: what no implementation can beat on this machine: two fsyncs of 512 B on the
//!   disk of the state directories, plus one TLS round trip to the receiver's no-op endpoint
//!   (`GET /v1/ping`) over a kept-alive connection.
//! - [`p1`]: the agent engine's `record` (fsync) → `deliver_pending` (TLS) → receiver commit
//!   (fsync) → a signed-in console's live stream (`GET /events`).
//! - [`p1b`]: the real chord (`xdotool` under Xvfb) on the release tray agent → the console.
//! - [`p2`]: the tray agent's idle footprint (delegates to `scripts/bench-footprint`).
//! - [`p3`]: durable ingest of signed events per second against concurrency, beside the same
//!   server's no-op rate.
//! - [`p4`]: the heartbeats of 100,000 stations (1,667/s) with alarms in between: receiver CPU
//!   and ingest p99.
//! - [`p5`]: 1,000 alarms queued in one outbox while the receiver is down: time from its return
//!   to the last acknowledgement.
//!
//! `--database URL` runs every scenario's receiver on that PostgreSQL database instead of
//! SQLite; `--database testpg` starts a throw-away PostgreSQL 15 for the run (see
//! [`pg`]).
//!
//! Support: [`receiver`] (the release receiver binary as a child process, so its CPU is its
//! own), [`console`] (an officer's signed-in live stream), [`stats`], [`svg`] (the plots),
//! [`keyring`] (the agent's real keystore in a private session bus).
//!
//! Everything runs on loopback, every loop is bounded in count and in time.
#![forbid(unsafe_code)]

pub mod console;
pub mod floor;
pub mod keyring;
pub mod p1;
pub mod p1b;
pub mod p2;
pub mod p3;
pub mod p4;
pub mod p5;
pub mod pg;
pub mod receiver;
pub mod stats;
pub mod svg;

use std::path::PathBuf;

/// How a run is sized and where its files go.
#[derive(Debug, Clone)]
pub struct Options {
    /// Fewer samples and shorter windows: the whole `all` run in under a minute.
    pub quick: bool,
    /// Where the SVG plots are written (none when `None`).
    pub plots: Option<PathBuf>,
    /// Parent of the receiver's and agents' state directories: a real disk (never tmpfs),
    /// since fsync is half of what is measured.
    pub work_dir: PathBuf,
    /// The receiver's store in every scenario that starts one.
    pub database: Database,
}

/// Which store the receivers under test use (`--database`).
#[derive(Debug, Clone, Default)]
pub enum Database {
    /// SQLite in each receiver's own (temporary) data directory: the embedded default.
    #[default]
    Sqlite,
    /// The database this URL names (`postgres://…`), shared by every scenario of the run: each
    /// scenario's receiver migrates it (once) and adds its own devices and events to it.
    Url(String),
    /// `--database testpg`: a throw-away PostgreSQL 15 cluster started for this run
    /// (`duress-testpg`), restarted with `fsync=on` so that its commits are as durable as
    /// SQLite's; every scenario gets a fresh database in it.
    TestPg(std::sync::Arc<duress_testpg::TestPg>),
}

impl Database {
    /// The backend's name, for the figures: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Database::Sqlite => "sqlite",
            Database::Url(_) | Database::TestPg(_) => "postgres",
        }
    }

    /// The `--database` URL for a new scenario's receiver (`None`: SQLite in its data dir).
    pub fn for_receiver(&self) -> anyhow::Result<Option<String>> {
        match self {
            Database::Sqlite => Ok(None),
            Database::Url(url) => Ok(Some(url.clone())),
            Database::TestPg(pg) => Ok(Some(pg.fresh_url().map_err(anyhow::Error::msg)?)),
        }
    }

    /// CPU time of the database server so far, when the bench knows its processes (the
    /// `testpg` cluster; SQLite runs inside the receiver, a `--database URL` server is not ours).
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        match self {
            Database::TestPg(pg) => pg::cpu_time(pg),
            Database::Sqlite | Database::Url(_) => None,
        }
    }
}

/// `(b - a)` over `wall`, in % of one core; NaN when either is unknown.
pub fn cpu_pct(
    a: Option<std::time::Duration>,
    b: Option<std::time::Duration>,
    wall: std::time::Duration,
) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64() / wall.as_secs_f64() * 100.0,
        _ => f64::NAN,
    }
}

impl Options {
    /// `quick` when the run is quick, else `full`.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// The figures of a run, in the order they were measured.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    lines: Vec<(String, String)>,
}

impl Figures {
    /// Adds `name=value` and prints it at once (a long run shows progress).
    pub fn put(&mut self, name: &str, value: impl std::fmt::Display) {
        let value = value.to_string();
        println!("{name}={value}");
        self.lines.push((name.to_owned(), value));
    }

    /// A number with a fixed number of decimals.
    pub fn num(&mut self, name: &str, value: f64, decimals: usize) {
        self.put(name, format!("{value:.decimals$}"));
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.lines
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn lines(&self) -> &[(String, String)] {
        &self.lines
    }
}

/// The workspace root (the bench lives in `crates/duress-bench`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The filesystem type and device of `path`, from /proc/self/mounts (longest mount prefix).
pub fn filesystem_of(path: &std::path::Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        if path.starts_with(f[1]) && best.as_ref().is_none_or(|(len, _)| f[1].len() > *len) {
            best = Some((f[1].len(), format!("{}({} on {})", f[2], f[0], f[1])));
        }
    }
    best.map_or_else(|| "unknown".to_owned(), |(_, s)| s)
}
