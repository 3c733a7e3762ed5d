//! What a receiver needs to know to run: where its data lives, which certificate it serves,
//! how it groups presses and what heartbeat interval it expects.

use std::path::PathBuf;
use std::time::Duration;

/// Default grouping window: presses of one device this close together are one incident.
pub const DEFAULT_GROUPING_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Default heartbeat interval echoed to agents (ARCHITECTURE.md "Supervision").
pub const DEFAULT_HEARTBEAT_INTERVAL_S: u64 = 60;
/// Failed enrollments one client address may make per minute before it gets 429: enough for
/// a technician's typos, far too few to guess a 256-bit token (or even to probe the endpoint).
pub const DEFAULT_ENROLLMENT_FAILURES_PER_MINUTE: u32 = 10;
/// Events and heartbeats with a `kid` no device has, per client address per minute, before
/// that address gets 429 for every kid not already verified (issue 15). A real agent never
/// sends an unknown kid (device ids are never deleted), except against a store restored from
/// an older backup: a handful, far below this.
pub const DEFAULT_UNKNOWN_KIDS_PER_MINUTE: u32 = 20;

/// Default time an incident may stay unclaimed before it is escalated: 90 s, the NFPA 72
/// operator-handling time for alarm signals.
pub const DEFAULT_ESCALATE_AFTER: Duration = Duration::from_secs(90);
/// Default response levels officers choose from (the seed: "Security will determine the
/// appropriate response level").
pub const DEFAULT_RESPONSE_LEVELS: &[&str] = &["observe", "patrol", "patrol + 911"];

/// Default self-test period: a station with no test event for longer than this (plus
/// [`SELF_TEST_GRACE`]) is flagged on the Stations page and in `devices list --json`. A week,
/// as the staff guide's weekly self-test and the example `[self_test] every_days = 7`.
pub const DEFAULT_SELF_TEST_PERIOD: Duration = Duration::from_secs(7 * 86_400);
pub use crate::records::SELF_TEST_GRACE;

/// Console settings: escalation, response levels, sessions, station thresholds, login limits.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// An open incident nobody claimed for this long is escalated.
    pub escalate_after: Duration,
    /// The response levels offered on the incident page, in order.
    pub response_levels: Vec<String>,
    /// A session unused this long is over (an unattended console signs itself out).
    pub session_idle: Duration,
    /// A session is over this long after sign-in (or after its latest extension), whatever
    /// its use.
    pub session_lifetime: Duration,
    /// No extension ("Stay signed in") carries a session past sign-in plus this.
    pub session_max: Duration,
    /// The page warns this long before its session ends, with a button to extend it.
    pub session_warning: Duration,
    /// A station is stale after one heartbeat interval plus this grace, offline after two
    /// intervals (plus the same grace).
    pub station_grace: Duration,
    /// Failed sign-ins allowed per client address per window (then 429).
    pub login_failures_per_address: u32,
    /// Failed sign-ins allowed per username per window (then 429), so one account cannot be
    /// guessed from many addresses.
    pub login_failures_per_username: u32,
    pub login_failure_window: Duration,
    /// The live stream sends a keep-alive this often, and checks then that its session is
    /// still valid: it ends within this interval of a sign-out, expiry or disabled account.
    pub live_keep_alive: Duration,
    /// An active station whose latest test event is older than this (plus
    /// [`SELF_TEST_GRACE`]), or that never sent one, is flagged on the Stations page. Set it
    /// to the agents' `[self_test] every_days`.
    pub self_test_period: Duration,
    /// The notification channels and ladders of the configuration file, secrets already
    /// redacted (the admin page `/admin/channels`); empty without `--config`.
    pub channels: Vec<ChannelSummary>,
    pub ladders: Vec<String>,
    /// The free-disk watermark, for the board's trouble note (set by the receiver at start).
    pub disk: Option<std::sync::Arc<crate::diskspace::DiskGuard>>,
    /// Client networks allowed to reach the console (pages, static files, live stream,
    /// sign-in); others get 403 before any work. Empty: every address. The agent API is never
    /// restricted by it.
    pub allow: Vec<ipnet::IpNet>,
    /// Send `Strict-Transport-Security` on console answers: set when a real certificate is
    /// configured (`--tls-cert`), never with the self-signed one (a browser that pinned HSTS to
    /// a host would refuse the click-through an evaluation install relies on).
    pub hsts: bool,
}

/// What an admin may see of a channel: never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSummary {
    pub name: String,
    pub kind: &'static str,
    /// Scheme, host and port (or SMTP host, port, TLS and addresses); no path, key or password.
    pub target: String,
}

impl ConsoleSettings {
    /// Sets the lengths `[console]` gives (the others keep their values), then checks that
    /// they fit together: a lifetime no longer than the maximum, a warning shorter than the
    /// lifetime.
    pub fn apply_times(&mut self, t: &crate::config::ConsoleTimes) -> Result<(), String> {
        if let Some(d) = t.session_idle {
            self.session_idle = d;
        }
        if let Some(d) = t.session_lifetime {
            self.session_lifetime = d;
        }
        if let Some(d) = t.session_max {
            self.session_max = d;
        }
        if let Some(d) = t.session_warning {
            self.session_warning = d;
        }
        if let Some(d) = t.keep_alive {
            self.live_keep_alive = d;
        }
        if self.session_lifetime > self.session_max {
            return Err("console.session_lifetime is longer than console.session_max".into());
        }
        if self.session_warning >= self.session_lifetime {
            return Err(
                "console.session_warning must be shorter than console.session_lifetime".into(),
            );
        }
        Ok(())
    }
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            escalate_after: DEFAULT_ESCALATE_AFTER,
            response_levels: DEFAULT_RESPONSE_LEVELS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            session_idle: Duration::from_secs(12 * 3600),
            // A shift; one click before it ends extends it, up to a day after sign-in (the
            // earlier fixed lifetime).
            session_lifetime: Duration::from_secs(12 * 3600),
            session_max: Duration::from_secs(24 * 3600),
            session_warning: Duration::from_secs(10 * 60),
            station_grace: Duration::from_secs(30),
            login_failures_per_address: 20,
            login_failures_per_username: 5,
            login_failure_window: Duration::from_secs(5 * 60),
            self_test_period: DEFAULT_SELF_TEST_PERIOD,
            channels: Vec::new(),
            ladders: Vec::new(),
            disk: None,
            allow: Vec::new(),
            hsts: false,
            live_keep_alive: Duration::from_secs(15),
        }
    }
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Development/first-run mode: `DATA_DIR/tls/cert.pem` and `DATA_DIR/tls/key.pem` are
    /// created on the first run and reused afterwards. `cert.pem` is a single self-signed
    /// certificate that agents add as a trust anchor (see [`crate::tls`]).
    SelfSigned,
    /// A certificate chain (leaf first) and its private key, both PEM, e.g. from the campus CA.
    Files { cert: PathBuf, key: PathBuf },
}

/// See [`Settings::body_read_timeout`].
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How the receiver treats connections (see [`crate::server`] for the design).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A new connection must complete its TLS handshake within this time.
    pub tls_handshake_timeout: Duration,
    /// A new connection must have sent its first complete request head (TLS handshake
    /// included) within this time of being accepted, else it is closed: a half-sent request
    /// holds nothing for longer.
    pub header_timeout: Duration,
    /// A kept-alive connection with no request in flight is closed after this long. Longer than
    /// the heartbeat interval, so an agent's connection stays warm from one heartbeat to the
    /// next (no handshake per heartbeat).
    pub idle_timeout: Duration,
    /// Connections held at once. `None`: the open-files limit (after raising the soft limit to
    /// the hard one) less [`FD_RESERVE`], which the store, logs and certificate need.
    pub max_connections: Option<usize>,
    /// Connections one client address may hold before it has proven itself (a signed device
    /// request or a console session); past it that address's oldest idle one is closed.
    pub max_per_address: usize,
    /// HTTP/2 streams one connection may have open at once.
    pub h2_max_concurrent_streams: u32,
}

/// File descriptors kept back from connections for the store (SQLite: 4 pooled connections
/// and the writer, each with the database, WAL and shared-memory files; PostgreSQL: its pool's
/// sockets), the certificate files, logs and the runtime's own (epoll, eventfd, signal pipe).
pub const FD_RESERVE: usize = 128;

impl ConnectionLimits {
    /// Defaults for a heartbeat interval of `heartbeat_interval_s`.
    pub fn for_heartbeat(heartbeat_interval_s: u64) -> Self {
        ConnectionLimits {
            tls_handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            // Two intervals and a half-minute: a late heartbeat still finds its connection.
            idle_timeout: Duration::from_secs(heartbeat_interval_s.saturating_mul(2) + 30),
            max_connections: None,
            // Room for a building behind one NAT address reconnecting at once (each agent's
            // connection leaves this count at its first signed request); far below the
            // untrusted cap, so one hostile workstation still holds only a fraction.
            max_per_address: 256,
            h2_max_concurrent_streams: 32,
        }
    }
}

/// Everything [`crate::launch`] needs. Build with [`Settings::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Holds `receiver.sqlite3` (unless [`Settings::database`] names another store) and,
    /// with [`TlsSource::SelfSigned`], `tls/`.
    pub data_dir: PathBuf,
    /// The database URL (`postgres://…`); `None`: SQLite in `data_dir`. It may carry a
    /// password, so it is only ever shown through [`crate::store::StoreLocation::describe`].
    pub database: Option<crate::store::DatabaseUrl>,
    pub tls: TlsSource,
    /// A duress press joins the same device's open incident when it occurred within this
    /// window of that incident's last press (agent clock on both sides, so skew cancels out).
    pub grouping_window: Duration,
    /// `[incidents] group_same_room`: a press that would open an incident joins instead the
    /// open incident of another station in the same room (building, floor and room) pressed
    /// within the grouping window (`crate::incidents`). Off by default.
    pub group_same_room: bool,
    /// Echoed in every heartbeat answer as `interval_s`.
    pub heartbeat_interval_s: u64,
    /// Failed enrollment attempts allowed per client address per minute (then 429).
    pub enrollment_failures_per_minute: u32,
    /// Requests with an unknown `kid` allowed per client address per minute (then 429).
    pub unknown_kids_per_minute: u32,
    /// The security console served beside the API.
    pub console: ConsoleSettings,
    /// How long a signed request's body may take to arrive once its headers have (then 408
    /// `request-timeout`): a client trickling a body must not hold a connection and a task for
    /// ever. A real agent's body is about 2 KB.
    pub body_read_timeout: Duration,
    /// Timeouts and caps on connections.
    pub connections: ConnectionLimits,
    /// The configuration file's contents (`serve --config FILE`): notification channels and
    /// escalation ladders. `None`: console only (no notifications).
    pub config: Option<std::sync::Arc<crate::config::ReceiverConfig>>,
    /// The notifier's first retry delay (doubling with jitter, capped at 5 min); tests shorten it.
    pub notify_retry_base: Duration,
    /// Events one device may send at once (its token bucket's size)…
    pub device_event_burst: u32,
    /// …and per second after that (429 with `Retry-After` beyond; the agent resends).
    pub device_events_per_second: f64,
    /// The notifier worker is trouble (console banner) after three of these without a loop
    /// (`notify::watch`); tests shorten it.
    pub notify_worker_watch: Duration,
    /// Test hook: while set, the supervision sweep and the notifier worker skip their work, as
    /// if stalled (`notify::watch`). Never set in production.
    pub notify_stall: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Test switch: this receiver's writes ring no doorbell (PostgreSQL `NOTIFY`), standing for
    /// lost notifications, so the other nodes' consoles only see them at their safety-net poll
    /// (`store::LiveStore::mute_doorbell`). Never set in production.
    pub mute_doorbell: bool,
    /// This node's name in the cluster (`cluster_nodes`, the console's Cluster view); `None`:
    /// `HOSTNAME-PID`.
    pub node_name: Option<String>,
    /// `serve --metrics-listen ADDR`: where `GET /metrics` is served (plain HTTP, its own
    /// listener; bind it to loopback or the management network). `None`: no metrics listener.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Below this much free space on the data directory's filesystem, test events and
    /// heartbeats are refused (503) and alarms still accepted (`crate::diskspace`).
    pub disk_watermark: crate::diskspace::Watermark,
    /// Where free space is read; `None`: the data directory's filesystem (tests inject
    /// readings here instead of filling a disk).
    pub free_space: Option<std::sync::Arc<dyn crate::diskspace::FreeSpace>>,
    /// Serve the console on its own address (`serve --console-listen`); the listener passed
    /// to [`crate::launch`] then carries the agent API only. `None`: both on that listener.
    pub console_listen: Option<std::net::SocketAddr>,
}

impl Settings {
    /// Defaults: self-signed TLS in `data_dir/tls`, 5 min grouping, 60 s heartbeats.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Settings {
            data_dir: data_dir.into(),
            database: None,
            tls: TlsSource::SelfSigned,
            grouping_window: DEFAULT_GROUPING_WINDOW,
            group_same_room: false,
            heartbeat_interval_s: DEFAULT_HEARTBEAT_INTERVAL_S,
            enrollment_failures_per_minute: DEFAULT_ENROLLMENT_FAILURES_PER_MINUTE,
            unknown_kids_per_minute: DEFAULT_UNKNOWN_KIDS_PER_MINUTE,
            console: ConsoleSettings::default(),
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            connections: ConnectionLimits::for_heartbeat(DEFAULT_HEARTBEAT_INTERVAL_S),
            config: None,
            notify_retry_base: Duration::from_secs(2),
            // A panicking user presses a few times; an agent back from an outage drains its
            // queue at once: 30 at once, then one a second, is far above both.
            device_event_burst: 30,
            device_events_per_second: 1.0,
            notify_worker_watch: crate::notify::watch::DEFAULT_WORKER_INTERVAL,
            notify_stall: Default::default(),
            mute_doorbell: false,
            node_name: None,
            metrics_listen: None,
            disk_watermark: crate::diskspace::Watermark::default(),
            free_space: None,
            console_listen: None,
        }
    }

    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        database_path(&self.data_dir)
    }

    /// Where the store is.
    pub fn store_location(&self) -> crate::store::StoreLocation {
        crate::store::StoreLocation::new(self.data_dir.clone(), self.database.clone())
    }
}

pub use crate::store::sqlite::database_path;

pub use crate::duration::parse_duration;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn console_session_lengths_parse_and_are_checked() {
        let c = crate::config::ReceiverConfig::parse(
            "[console]\nsession_idle = \"30m\"\nsession_lifetime = \"8h\"\nsession_max = \"1d\"\nsession_warning = \"5m\"\nkeep_alive = \"10s\"\n",
        )
        .unwrap();
        let mut s = ConsoleSettings::default();
        s.apply_times(&c.console.times().unwrap()).unwrap();
        assert_eq!(s.session_idle, std::time::Duration::from_secs(1800));
        assert_eq!(s.session_lifetime, std::time::Duration::from_secs(8 * 3600));
        assert_eq!(s.session_max, std::time::Duration::from_secs(86_400));
        assert_eq!(s.session_warning, std::time::Duration::from_secs(300));
        assert_eq!(s.live_keep_alive, std::time::Duration::from_secs(10));
        // Left out: the defaults stay.
        let mut d = ConsoleSettings::default();
        d.apply_times(
            &crate::config::ReceiverConfig::parse("")
                .unwrap()
                .console
                .times()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            d.session_max,
            crate::settings::ConsoleSettings::default().session_max
        );
        for (bad, needle) in [
            ("session_lifetime = \"2d\"", "session_max"),
            ("session_warning = \"12h\"", "session_warning"),
        ] {
            let c = crate::config::ReceiverConfig::parse(&format!("[console]\n{bad}\n")).unwrap();
            let e = ConsoleSettings::default()
                .apply_times(&c.console.times().unwrap())
                .unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        for (bad, needle) in [
            ("keep_alive = \"0s\"", "keep_alive"),
            ("session_idle = \"soon\"", "session_idle"),
        ] {
            let e =
                crate::config::ReceiverConfig::parse(&format!("[console]\n{bad}\n")).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "5", "m", "5x", "-5m", "5 m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults() {
        let s = Settings::new("/tmp/x");
        assert_eq!(s.tls, TlsSource::SelfSigned);
        assert_eq!(s.grouping_window, Duration::from_secs(300));
        assert_eq!(s.heartbeat_interval_s, 60);
        assert_eq!(s.database_path(), PathBuf::from("/tmp/x/receiver.sqlite3"));
    }
}
