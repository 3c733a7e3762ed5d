//! A throw-away PostgreSQL 15 cluster for tests, started by the test itself.
//!
//! Debian's `postgresql-15` (`/usr/lib/postgresql/15/bin`): `initdb` into a temporary directory,
//! then `pg_ctl start` with `listen_addresses=''` (no TCP at all) and a private Unix socket
//! directory, so clusters of parallel tests never meet and nothing outside the machine can
//! connect. Authentication is `trust` for the `postgres` role: the socket directory is the only
//! way in and it lives in a directory only root and `postgres` can traverse.
//!
//! `initdb` refuses to run as root, so when the test runs as root the server is initialised and
//! run as the `postgres` user (`runuser -u postgres --`), in directories owned by it inside a
//! temporary directory root keeps traversable (`o+x`).
//!
//! [`TestPg`] stops the server on drop (`pg_ctl stop -m immediate`: the data is thrown away
//! anyway). A watchdog shell started with the server also stops it and removes the directory
//! when the test process is gone without dropping it (a panic that aborts, a `SIGKILL`, or the
//! process-wide cluster of [`TestPg::shared`], which statics never drop).
//!
//! `fsync=off`: a crash of the test machine loses a test database, nothing else; every commit
//! still goes through PostgreSQL's full transaction machinery, which is what tests exercise.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where Debian installs PostgreSQL 15's server binaries.
pub const DEBIAN_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// The superuser role the cluster is created with.
pub const SUPERUSER: &str = "postgres";
/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong starting a cluster; the message says what to do.
#[derive(Debug)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn err(message: impl Into<String>) -> Error {
    Error(message.into())
}

/// A running throw-away cluster. Stopped (and its files removed) on drop.
#[derive(Debug)]
pub struct TestPg {
    bin: PathBuf,
    /// Removed on drop, after the server stopped.
    root: tempfile::TempDir,
    data: PathBuf,
    socket_dir: PathBuf,
    /// `Some(postgres)` when the server runs as another user than this process (root).
    run_as: Option<String>,
    database: String,
    stopped: bool,
}

/// The PostgreSQL server binaries: `DURESS_PG_BIN` when set, else Debian's directory.
pub fn bin_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("DURESS_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEBIAN_BIN_DIR));
    for tool in ["initdb", "pg_ctl", "postgres", "psql"] {
        if !dir.join(tool).is_file() {
            return Err(err(format!(
                "PostgreSQL 15 is not installed: {} not found. Install it with \
                 `apt-get install postgresql-15` (scripts/install-deps does), or point \
                 DURESS_PG_BIN at a directory holding initdb, pg_ctl, postgres and psql.",
                dir.join(tool).display()
            )));
        }
    }
    Ok(dir)
}

fn running_as_root() -> bool {
    // The owner of /proc/self is this process's effective uid.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn id_of(user: &str, flag: &str) -> Result<u32> {
    let out = Command::new("id")
        .args([flag, user])
        .output()
        .map_err(|e| err(format!("running `id {flag} {user}`: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "there is no `{user}` user to run PostgreSQL as (running as root, and initdb refuses \
             root). `apt-get install postgresql-15` creates it."
        )));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| err(format!("`id {flag} {user}` printed no number: {e}")))
}

/// Adds `o+x` to `dir` and every ancestor that lacks it, so the `postgres` user can reach
/// directories below it.
fn make_traversable(dir: &Path) -> Result<()> {
    for d in dir.ancestors() {
        let meta = std::fs::metadata(d).map_err(|e| err(format!("{}: {e}", d.display())))?;
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o001))
                .map_err(|e| err(format!("chmod o+x {}: {e}", d.display())))?;
        }
    }
    Ok(())
}

/// A fresh database name, unique in this process.
fn next_database_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("duress_test_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl TestPg {
    /// Initialises and starts a new cluster with one empty database.
    pub fn start() -> Result<Self> {
        let mut cluster = Self::init("duress-testpg-")?;
        cluster.launch("")?;
        cluster.database = cluster.create_database()?;
        Ok(cluster)
    }

    /// A fresh temporary root with empty `data`, `socket` and `log` directories, owned by the
    /// server's user; nothing started.
    fn prepare(prefix: &str) -> Result<Self> {
        let bin = bin_dir()?;
        let run_as = running_as_root().then(|| SUPERUSER.to_owned());
        let root = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(|e| err(format!("creating a temporary directory: {e}")))?;
        let data = root.path().join("data");
        let socket_dir = root.path().join("socket");
        let logs = root.path().join("log");
        for d in [&data, &socket_dir, &logs] {
            std::fs::create_dir(d).map_err(|e| err(format!("creating {}: {e}", d.display())))?;
        }
        if let Some(user) = &run_as {
            let (uid, gid) = (id_of(user, "-u")?, id_of(user, "-g")?);
            for d in [&data, &socket_dir, &logs] {
                std::os::unix::fs::chown(d, Some(uid), Some(gid))
                    .map_err(|e| err(format!("chown {user} {}: {e}", d.display())))?;
            }
            make_traversable(root.path())?;
        }
        // initdb and pg_basebackup want the data directory private.
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(format!("chmod 700 {}: {e}", data.display())))?;
        Ok(TestPg {
            bin,
            root,
            data,
            socket_dir,
            run_as,
            database: String::new(),
            stopped: true,
        })
    }

    /// [`Self::prepare`], then `initdb`.
    fn init(prefix: &str) -> Result<Self> {
        let cluster = Self::prepare(prefix)?;
        cluster.run(
            "initdb",
            &[
                "-D",
                &path_str(&cluster.data)?,
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        Ok(cluster)
    }

    /// Starts the server on its private socket (`extra`: more `-c` options), with its
    /// watchdog, and waits until it answers.
    fn launch(&mut self, extra: &str) -> Result<()> {
        let options = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c max_connections=200 {extra}",
            path_str(&self.socket_dir)?
        );
        self.stopped = false;
        self.run(
            "pg_ctl",
            &[
                "-D",
                &path_str(&self.data)?,
                "-o",
                &options,
                "-l",
                &path_str(&self.root.path().join("log/postgres.log"))?,
                "-w",
                "-t",
                &START_TIMEOUT.as_secs().to_string(),
                "start",
            ],
        )?;
        self.spawn_watchdog()?;
        self.wait_ready()
    }

    /// One cluster for the whole test process, started on first use (each test then takes its
    /// own database with [`TestPg::create_database`]). Stopped by the watchdog when the
    /// process exits.
    pub fn shared() -> Result<&'static TestPg> {
        static SHARED: OnceLock<std::result::Result<TestPg, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| TestPg::start().map_err(|e| e.0))
            .as_ref()
            .map_err(|e| err(e.clone()))
    }

    /// The cluster's database directory (for `pg_ctl` commands a test runs itself).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The name of the database [`TestPg::url`] points at.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Runs `pg_ctl ARGS -D DATA` as the server's user (`promote`, `reload`, …).
    pub fn pg_ctl(&self, args: &[&str]) -> Result<()> {
        let data = path_str(&self.data)?;
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    /// Runs one SQL command as the superuser in database `db`.
    pub fn psql_in(&self, db: &str, sql: &str) -> Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args(["-U", SUPERUSER, "-d", db, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("running psql: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "psql -c {sql:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Whether the server process is (believed) running: false after [`TestPg::stop`].
    pub fn is_running(&self) -> bool {
        !self.stopped
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The URL of the cluster's first database: `postgres://postgres@/DB?host=DIR`.
    pub fn url(&self) -> String {
        self.url_of(&self.database)
    }

    /// The URL of database `name` in this cluster.
    pub fn url_of(&self, name: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@/{name}?host={}",
            self.socket_dir.display()
        )
    }

    /// Creates a new empty database and returns its name.
    pub fn create_database(&self) -> Result<String> {
        let name = next_database_name();
        self.psql(&format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }

    /// Creates a new empty database and returns its URL.
    pub fn fresh_url(&self) -> Result<String> {
        Ok(self.url_of(&self.create_database()?))
    }

    /// Runs one SQL command as the superuser in the `postgres` database.
    pub fn psql(&self, sql: &str) -> Result<String> {
        self.psql_in("postgres", sql)
    }

    /// Stops the server now (drop does it otherwise).
    pub fn stop(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        self.run(
            "pg_ctl",
            &[
                "-D",
                &path_str(&self.data)?,
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.psql("SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(err(format!("the test PostgreSQL never became ready: {e}")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// A shell that waits for this process to end, then stops the server and removes its files
    /// (a no-op when drop already did).
    fn spawn_watchdog(&self) -> Result<()> {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {stop} >/dev/null 2>&1; rm -rf {root}",
            pid = std::process::id(),
            stop = self.shell_command(
                "pg_ctl",
                &["-D", &path_str(&self.data)?, "-m", "immediate", "stop"]
            )?,
            root = shell_quote(&path_str(self.root.path())?),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| err(format!("starting the cluster's watchdog: {e}")))?;
        Ok(())
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn shell_command(&self, tool: &str, args: &[&str]) -> Result<String> {
        let mut words = Vec::new();
        if let Some(user) = &self.run_as {
            words.extend(["runuser".to_owned(), "-u".into(), user.clone(), "--".into()]);
        }
        words.push(path_str(&self.bin.join(tool))?);
        words.extend(args.iter().map(|a| (*a).to_owned()));
        Ok(words
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" "))
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let out = self
            .command(tool)
            .args(args)
            // Started from a directory `postgres` may not read; it must not care.
            .current_dir(self.root.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("running {tool}: {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        let log =
            std::fs::read_to_string(self.root.path().join("log/postgres.log")).unwrap_or_default();
        Err(err(format!(
            "{tool} {} failed ({}): {}{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            if log.is_empty() {
                ""
            } else {
                "\nserver log:\n"
            },
            log.trim()
        )))
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("duress-testpg: stopping the test cluster: {e}");
        }
    }
}

mod replicated;
pub use replicated::{ReplicatedPg, STANDBY_NAME};

fn path_str(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| err(format!("{} is not UTF-8", p.display())))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_answers_on_its_private_socket_and_is_gone_after_drop() {
        let mut pg = TestPg::start().unwrap();
        let url = pg.url();
        assert!(
            url.starts_with("postgres://postgres@/duress_test_"),
            "{url}"
        );
        assert!(url.contains(&format!("?host={}", pg.socket_dir().display())));
        assert_eq!(pg.psql("SHOW listen_addresses").unwrap(), "");
        assert!(
            pg.psql("SELECT version()")
                .unwrap()
                .contains("PostgreSQL 15")
        );
        let other = pg.create_database().unwrap();
        assert_ne!(other, pg.database);
        let listed = pg
            .psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'duress_test_%'")
            .unwrap();
        assert_eq!(listed, "2");
        let socket = pg.socket_dir().join(".s.PGSQL.5432");
        assert!(socket.exists(), "{}", socket.display());
        let root = pg.root.path().to_owned();
        pg.stop().unwrap();
        assert!(!socket.exists(), "the server stopped");
        drop(pg);
        assert!(!root.exists(), "its files are removed");
    }

    #[test]
    fn two_clusters_run_side_by_side() {
        let a = TestPg::start().unwrap();
        let b = TestPg::start().unwrap();
        assert_ne!(a.socket_dir(), b.socket_dir());
        a.psql("CREATE TABLE only_in_a (x int)").unwrap();
        assert!(b.psql("SELECT * FROM only_in_a").is_err());
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
