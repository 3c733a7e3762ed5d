//! The receiver under test, as a child process on a loopback port, so its CPU time can be read
//! from `/proc/<pid>/stat` apart from the clients'.
//!
//! By default the child is this very binary (`duress-bench serve-receiver`), which runs the
//! same code path as `duress-receiver serve` (the receiver library's `launch` with default
//! settings and the same log set-up) and is always built from the current sources: no nested
//! `cargo build` (which would deadlock on the target directory that `cargo run` holds) and no
//! stale binary. `DURESS_BENCH_RECEIVER=/path/to/duress-receiver` measures that binary instead
//! (e.g. a build of an older commit, for before/after figures).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// How long start-up may take before the bench gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The receiver binary named by `DURESS_BENCH_RECEIVER`, if any.
fn receiver_binary() -> Option<PathBuf> {
    std::env::var_os("DURESS_BENCH_RECEIVER")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// What serves as the receiver in this run, for the figures.
pub fn receiver_label() -> String {
    match receiver_binary() {
        Some(bin) => bin.display().to_string(),
        None => "duress-bench serve-receiver (the receiver library of this build)".into(),
    }
}

/// A running receiver.
#[derive(Debug)]
pub struct ReceiverChild {
    pub data_dir: PathBuf,
    pub port: u16,
    pub url: String,
    /// Its self-signed certificate (the agents' trust anchor).
    pub ca: PathBuf,
    /// `--database URL` (`None`: SQLite in `data_dir`).
    pub database: Option<String>,
    child: Option<Child>,
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl ReceiverChild {
    /// Starts a receiver on `data_dir` and a fresh port, its store at `database` (`None`:
    /// SQLite in `data_dir`); returns once it accepts connections.
    pub fn start(data_dir: &Path, database: Option<String>) -> anyhow::Result<Self> {
        Self::start_on(data_dir, free_port()?, database)
    }

    /// Starts a receiver on `data_dir` and `port` (a restart on the same port and store).
    pub fn start_on(data_dir: &Path, port: u16, database: Option<String>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .context("receiver log")?;
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = match receiver_binary() {
            Some(bin) => {
                let mut c = Command::new(bin);
                c.arg("serve");
                c
            }
            None => {
                let mut c = Command::new(std::env::current_exe()?);
                c.arg("serve-receiver");
                c
            }
        };
        cmd.arg("--data-dir").arg(data_dir);
        // Every simulated station connects from 127.0.0.1: lift the per-address cap on
        // connections not yet proven (64 by default), which is meant for one real workstation.
        if receiver_binary().is_some() {
            cmd.args(["--max-connections-per-address", "1000000"]);
        }
        if let Some(url) = &database {
            cmd.args(["--database", url]);
        }
        let child = cmd
            .args(["--listen", &listen])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawning the receiver")?;
        let me = ReceiverChild {
            data_dir: data_dir.to_owned(),
            port,
            url: format!("https://{listen}"),
            ca: data_dir.join("tls").join("cert.pem"),
            database,
            child: Some(child),
        };
        me.wait_listening()?;
        Ok(me)
    }

    /// Waits until the port accepts TCP connections and the certificate exists.
    fn wait_listening(&self) -> anyhow::Result<()> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.ca.exists()
                && TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        anyhow::bail!(
            "the receiver did not listen on {addr} within {START_TIMEOUT:?}; see {}",
            self.data_dir.with_extension("log").display()
        )
    }

    /// Where its store is, for the admin calls (tokens, officers, device lists).
    pub fn location(&self) -> duress_receiver::store::StoreLocation {
        duress_receiver::store::StoreLocation::new(
            &self.data_dir,
            self.database
                .clone()
                .map(duress_receiver::store::DatabaseUrl::new),
        )
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// User + system CPU time of the receiver so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        cpu_time(self.pid()?)
    }

    /// Graceful stop (SIGTERM), bounded; SIGKILL if it does not end.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ReceiverChild {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// utime + stime of a process, from `/proc/<pid>/stat` (fields 14 and 15, in clock ticks).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    stat_ticks(pid, &[11, 12])
}

/// utime + stime + cutime + cstime (fields 14–17): the process and its reaped children.
pub fn cpu_time_with_children(pid: u32) -> Option<Duration> {
    stat_ticks(pid, &[11, 12, 13, 14])
}

/// The parent pid of a process (field 4 of `/proc/<pid>/stat`: index 1 after the name).
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// The fields of `/proc/<pid>/stat` after the command name (index 0 is field 3, the state).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn stat_ticks(pid: u32, indexes: &[usize]) -> Option<Duration> {
    let f = stat_fields(pid)?;
    // After ")": field 3 is index 0, so utime (14) is index 11 and stime (15) index 12.
    let mut ticks = 0u64;
    for &i in indexes {
        ticks += f.get(i)?.parse::<u64>().ok()?;
    }
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

fn clock_ticks() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// A token for `uses` enrollments, auto-approved, written straight into the receiver's store
/// (as `duress-receiver token create [--database URL]` does).
pub async fn token(receiver: &ReceiverChild, uses: u32) -> anyhow::Result<String> {
    duress_receiver::admin::create_token(
        receiver.location(),
        uses,
        Some(Duration::from_secs(6 * 3600)),
        duress_receiver::Approve::Auto,
    )
    .await
    .context("creating an enrollment token")
}
