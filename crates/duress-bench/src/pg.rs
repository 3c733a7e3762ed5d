//! `--database testpg`: a throw-away PostgreSQL 15 cluster for one bench run, so a PostgreSQL
//! figure is reproduced with one command.
//!
//! The cluster is `duress-testpg`'s (Debian `postgresql-15`, private Unix socket, no TCP,
//! stopped and removed on drop), with one change: `duress-testpg` starts its clusters with
//! `fsync=off` (right for tests, wrong for a benchmark that compares against SQLite at
//! `synchronous=FULL`), so the bench restarts it once with `fsync=on`. Everything else is
//! PostgreSQL's default (`synchronous_commit=on`, `wal_sync_method=fdatasync`,
//! `shared_buffers=128MB`): a commit is on disk before the receiver answers, as with SQLite.
//! The cluster lives under the system temporary directory; [`start`] checks it is not tmpfs.
//!
//! The server's CPU is read from `/proc` too ([`cpu_time`]): with PostgreSQL a share of the
//! receiver's work moves into the database's processes, and a figure of the receiver alone
//! would flatter it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use duress_testpg::TestPg;

/// Starts the run's cluster with `fsync=on`.
pub fn start() -> anyhow::Result<Arc<TestPg>> {
    let pg = TestPg::start().map_err(anyhow::Error::msg)?;
    let root = root_of(&pg)?;
    let fs = crate::filesystem_of(&root);
    anyhow::ensure!(
        !fs.starts_with("tmpfs"),
        "the test cluster's directory {} is on {fs}: set TMPDIR to a directory on a real disk",
        root.display()
    );
    let bin = duress_testpg::bin_dir().map_err(anyhow::Error::msg)?;
    let options = format!(
        "-k {} -c listen_addresses='' -c fsync=on -c max_connections=200",
        pg.socket_dir().display()
    );
    let data = root.join("data");
    let log = root.join("log").join("postgres.log");
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", duress_testpg::SUPERUSER, "--"])
            .arg(bin.join("pg_ctl"));
        c
    } else {
        Command::new(bin.join("pg_ctl"))
    };
    let out = cmd
        .arg("-D")
        .arg(&data)
        .arg("-o")
        .arg(&options)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "60", "-m", "fast", "restart"])
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .context("running pg_ctl restart")?;
    anyhow::ensure!(
        out.status.success(),
        "restarting the test cluster with fsync=on failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let fsync = pg.psql("SHOW fsync").map_err(anyhow::Error::msg)?;
    let sync_commit = pg
        .psql("SHOW synchronous_commit")
        .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        fsync == "on" && sync_commit == "on",
        "the test cluster runs with fsync={fsync}, synchronous_commit={sync_commit}"
    );
    eprintln!(
        "duress-bench: PostgreSQL test cluster at {} (fsync=on, on {fs})",
        pg.socket_dir().display()
    );
    Ok(Arc::new(pg))
}

/// What the figures say about the database (`database=`).
pub fn describe(pg: &TestPg) -> String {
    let version = pg
        .psql("SHOW server_version")
        .unwrap_or_else(|_| "?".into());
    let fs = root_of(pg)
        .map(|r| crate::filesystem_of(&r))
        .unwrap_or_default();
    format!("duress-testpg PostgreSQL {version}, fsync=on, synchronous_commit=on, {fs}")
}

/// The cluster's directory: the parent of its socket directory (`duress-testpg`'s layout:
/// `ROOT/{data,socket,log}`).
fn root_of(pg: &TestPg) -> anyhow::Result<PathBuf> {
    pg.socket_dir()
        .parent()
        .map(Path::to_owned)
        .context("the test cluster's socket directory has no parent")
}

/// User + system CPU of the whole server so far: the postmaster, its live children
/// (backends, WAL writer, checkpointer …) and the children it has reaped.
pub fn cpu_time(pg: &TestPg) -> Option<Duration> {
    let root = root_of(pg).ok()?;
    let pid_file = std::fs::read_to_string(root.join("data").join("postmaster.pid")).ok()?;
    let postmaster: u32 = pid_file.lines().next()?.trim().parse().ok()?;
    let mut total = crate::receiver::cpu_time_with_children(postmaster)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if crate::receiver::parent_of(pid) == Some(postmaster) {
            total += crate::receiver::cpu_time(pid).unwrap_or_default();
        }
    }
    Some(total)
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
