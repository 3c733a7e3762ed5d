//! A primary with one synchronous streaming-replication standby, for failover tests.
//!
//! The primary is a [`TestPg`] with `wal_level=replica` and `synchronous_commit=on` in its
//! `postgresql.conf`, and `synchronous_standby_names = 'STANDBY_NAME'` set by `ALTER SYSTEM`
//! once the standby exists (not on the command line: command-line settings beat `ALTER
//! SYSTEM`, and the operator's documented way out of a blocked primary is `ALTER SYSTEM SET
//! synchronous_standby_names = ''`). The standby is made
//! with `pg_basebackup -R -X stream` from the primary's socket, runs as the same user on its own
//! private socket directory, and connects with `cluster_name = STANDBY_NAME`, which the WAL
//! receiver sends as its `application_name` (PostgreSQL ≥ 12), so the primary counts it as its
//! synchronous standby: a commit returns only after the standby flushed it.
//!
//! **How clients find the primary.** sqlx 0.9 takes one host per URL (no libpq multi-host
//! lists, no `target_session_attrs`; checked in sqlx-postgres 0.9 `options/parse.rs`), so
//! receivers follow a *name* that is moved to the new primary, as a virtual IP or a DNS record
//! is in production (docs/scale-out.md). Here the name is a socket directory path,
//! [`ReplicatedPg::url`]'s `host=`: a symbolic link re-pointed (atomically, by `rename`) from the
//! primary's socket directory to the standby's when [`ReplicatedPg::promote_standby`] runs.
//! Connections opened after that reach the new primary; connections to the stopped primary
//! fail, and the receiver's pool replaces them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Result, SUPERUSER, TestPg, err, path_str};

/// The standby's `application_name`, as the primary's `synchronous_standby_names` lists it.
pub const STANDBY_NAME: &str = "duress_standby";

/// How long the standby may take to become the primary's synchronous standby.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// A primary and its synchronous standby, and the moving name clients connect through.
#[derive(Debug)]
pub struct ReplicatedPg {
    /// The first primary (stopped by a test to fail over).
    pub primary: TestPg,
    /// The synchronous standby; after [`ReplicatedPg::promote_standby`], the primary.
    pub standby: TestPg,
    /// Holds `current`, the symbolic link clients connect through.
    service: tempfile::TempDir,
}

impl ReplicatedPg {
    /// Starts the primary with one empty database, clones it into a standby, starts that and
    /// waits until the primary reports it as `sync` in `pg_stat_replication`.
    pub fn start() -> Result<Self> {
        let mut primary = TestPg::init("duress-testpg-primary-")?;
        let conf = primary.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .map_err(|e| err(format!("reading {}: {e}", conf.display())))?;
        text.push_str(
            "\n# duress-testpg: primary with one synchronous standby\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             wal_keep_size = '256MB'\n\
             synchronous_commit = on\n",
        );
        std::fs::write(&conf, text).map_err(|e| err(format!("writing {}: {e}", conf.display())))?;
        primary.launch("")?;
        primary.database = primary.create_database()?;

        let mut standby = TestPg::prepare("duress-testpg-standby-")?;
        // initdb's `-A trust` configuration lets the local superuser replicate over the socket.
        standby.run(
            "pg_basebackup",
            &[
                "-h",
                &path_str(&primary.socket_dir)?,
                "-U",
                SUPERUSER,
                "-D",
                &path_str(&standby.data)?,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        )?;
        standby.database = primary.database.clone();
        standby.launch(&format!("-c cluster_name={STANDBY_NAME} -c hot_standby=on"))?;

        let service = tempfile::Builder::new()
            .prefix("duress-testpg-service-")
            .tempdir()
            .map_err(|e| err(format!("creating a temporary directory: {e}")))?;
        std::os::unix::fs::symlink(&primary.socket_dir, service.path().join("current"))
            .map_err(|e| err(format!("linking the service name: {e}")))?;
        let pair = ReplicatedPg {
            primary,
            standby,
            service,
        };
        // Only now: while no standby is connected, every commit (CREATE DATABASE above
        // included) would wait for one. After the base backup, so the standby's copy of the
        // configuration names no standby of its own (once promoted it runs alone).
        pair.primary.psql(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"
        ))?;
        pair.primary.psql("SELECT pg_reload_conf()")?;
        pair.wait_sync()?;
        Ok(pair)
    }

    /// The socket directory path clients use: a link to the current primary's.
    pub fn service_dir(&self) -> PathBuf {
        self.service.path().join("current")
    }

    /// The URL of the database through the moving name (what receivers are given).
    pub fn url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}@/{}?host={}",
            self.primary.database,
            self.service_dir().display()
        )
    }

    /// The state of the standby as the primary sees it: `pg_stat_replication.sync_state` of
    /// [`STANDBY_NAME`] (`sync`, `async`, `potential`, `quorum`), empty when not connected.
    pub fn sync_state(&self) -> Result<String> {
        self.primary.psql(&format!(
            "SELECT coalesce(max(sync_state), '') FROM pg_stat_replication \
             WHERE application_name = '{STANDBY_NAME}'"
        ))
    }

    /// Waits until the primary counts the standby as synchronous.
    pub fn wait_sync(&self) -> Result<()> {
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            let state = self.sync_state()?;
            if state == "sync" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(err(format!(
                    "the standby never became synchronous (sync_state {state:?})"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The manual failover of docs/scale-out.md: `pg_ctl promote` on the standby, then (its
    /// own standby, the old primary, being gone) `ALTER SYSTEM SET synchronous_standby_names =
    /// ''` and a reload, so its commits do not wait for a standby that is not there, and
    /// finally the name moves to it. Returns when the new primary accepts writes.
    pub fn promote_standby(&self) -> Result<()> {
        self.standby.pg_ctl(&["-w", "-t", "60", "promote"])?;
        self.standby
            .psql("ALTER SYSTEM SET synchronous_standby_names = ''")?;
        self.standby.psql("SELECT pg_reload_conf()")?;
        let deadline = Instant::now() + SYNC_TIMEOUT;
        while self.standby.psql("SELECT pg_is_in_recovery()")? != "f" {
            if Instant::now() >= deadline {
                return Err(err("the promoted standby is still in recovery"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.point_service_at(&self.standby.socket_dir.clone())
    }

    /// Re-points the name at `socket_dir` atomically (a new link renamed over the old).
    fn point_service_at(&self, socket_dir: &Path) -> Result<()> {
        let next = self.service.path().join("current.next");
        let _ = std::fs::remove_file(&next);
        std::os::unix::fs::symlink(socket_dir, &next)
            .map_err(|e| err(format!("linking the service name: {e}")))?;
        std::fs::rename(&next, self.service_dir())
            .map_err(|e| err(format!("moving the service name: {e}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_on_the_primary_is_on_the_standby_and_survives_promotion() {
        let mut pair = ReplicatedPg::start().unwrap();
        assert_eq!(pair.sync_state().unwrap(), "sync");
        let db = pair.primary.database().to_owned();
        pair.primary
            .psql_in(&db, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
            .unwrap();
        // Synchronous commit: the standby flushed it; replay follows within moments.
        let deadline = Instant::now() + Duration::from_secs(10);
        while pair
            .standby
            .psql_in(&db, "SELECT count(*) FROM t")
            .ok()
            .as_deref()
            != Some("1")
        {
            assert!(
                Instant::now() < deadline,
                "the row never reached the standby"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            pair.standby.psql("SELECT pg_is_in_recovery()").unwrap(),
            "t"
        );
        pair.primary.stop().unwrap();
        pair.promote_standby().unwrap();
        assert_eq!(
            pair.standby.psql("SELECT pg_is_in_recovery()").unwrap(),
            "f"
        );
        pair.standby
            .psql_in(&db, "INSERT INTO t VALUES (2)")
            .unwrap();
        assert_eq!(
            std::fs::read_link(pair.service_dir()).unwrap(),
            pair.standby.socket_dir()
        );
        assert_eq!(
            pair.standby.psql_in(&db, "SELECT sum(x) FROM t").unwrap(),
            "3"
        );
    }
}
