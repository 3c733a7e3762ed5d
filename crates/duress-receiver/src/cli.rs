//! The `duress-receiver` command line: its arguments (clap) and what each command prints.
//! `main.rs` only parses and launches; every command goes through the [`admin`] façade (or
//! [`crate::launch`] for `serve`), so the CLI, the console and the tests share one
//! implementation of each action.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use duress_core::DeviceStatus;

use crate::console::accounts;
use crate::logging::LogFormat;
use crate::settings::parse_duration;
use crate::store::audit_chain::AuditHead;
use crate::store::{DatabaseUrl, Role, StoreLocation};
use crate::{Approve, Settings, TlsSource, admin};

/// The receiver's data directory: TLS material, the acknowledgement and audit keys and, without
/// `--database`, the SQLite store.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArg {
    /// Holds the TLS material, the acknowledgement and audit keys and, without --database,
    /// the SQLite store.
    #[arg(long, env = "DURESS_RECEIVER_DATA_DIR")]
    pub data_dir: PathBuf,
}

/// Where the store is: every command that opens it takes these two.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// A PostgreSQL URL (postgres://USER:PASSWORD@HOST/DB, or postgres://USER@/DB?host=/socket/dir)
    /// instead of SQLite in DATA_DIR.
    #[arg(long, env = "DURESS_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
}

impl StoreArgs {
    pub fn location(&self) -> StoreLocation {
        StoreLocation::new(
            self.dir.data_dir.clone(),
            self.database.clone().map(DatabaseUrl::new),
        )
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "duress-receiver",
    version,
    about = "Receives, verifies and stores Duress alarms"
)]
pub struct Cli {
    /// Log lines as human text or one JSON object per line (for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start and moved out at once: the size of `Serve` costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTPS API until SIGTERM or SIGINT.
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// PEM certificate chain (leaf first); without it a self-signed one is made in DATA_DIR/tls.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Presses of one device this close together form one incident (s, m, h, d).
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        grouping_window: Duration,
        /// An incident nobody claimed for this long is escalated on every console (s, m, h, d).
        #[arg(long, default_value = "90s", value_parser = parse_duration)]
        escalate_after: Duration,
        /// Response levels officers choose from, comma-separated, in order.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "observe,patrol,patrol + 911"
        )]
        response_levels: Vec<String>,
        /// Connections held at once (default: the open-files limit less 128).
        #[arg(long)]
        max_connections: Option<usize>,
        /// Connections one address may hold before a request on them proved its sender.
        #[arg(long, default_value_t = 256)]
        max_connections_per_address: usize,
        /// A connection must send its first request head within this time (s, m, h, d).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        header_timeout: Duration,
        /// A station with no test event for longer than this (plus a day) is flagged on the
        /// Stations page: the agents' `[self_test] every_days` (s, m, h, d).
        #[arg(long, default_value = "7d", value_parser = parse_duration)]
        self_test_period: Duration,
        /// The configuration file (TOML): notification channels, escalation ladders, rules
        /// (docs/integrations.md). Without it: console only.
        #[arg(long, env = "DURESS_RECEIVER_CONFIG")]
        config: Option<PathBuf>,
        /// Serve `GET /metrics` (Prometheus/OpenMetrics text, plain HTTP) on this address; bind
        /// it to loopback or the management network (docs/operations.md, "Monitoring").
        /// The packaged service reads it from /etc/duress/receiver.env.
        #[arg(long, env = "DURESS_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        /// Serve the console (pages, sign-in, static files, live stream) only on this address;
        /// --listen then carries the agent API alone (`/v1/…`, `/healthz`). Default: both on
        /// --listen (or `[console] listen` in --config).
        #[arg(long)]
        console_listen: Option<SocketAddr>,
        /// This node's name in the console's Cluster view (several receivers on one
        /// PostgreSQL, docs/scale-out.md). Default: HOSTNAME-PID.
        #[arg(long, env = "DURESS_NODE_NAME")]
        node_name: Option<String>,
        /// A network (CIDR such as 10.20.0.0/16, or one address) allowed to reach the console;
        /// repeat for several. Others get 403; the agent API is never restricted. Default: all
        /// (or `[console] allow` in --config).
        #[arg(long, value_parser = crate::config::parse_cidr)]
        console_allow: Vec<ipnet::IpNet>,
        /// Free-disk watermark on the data directory's filesystem, in MiB: below it and below
        /// --min-free-disk-percent, test events and heartbeats are refused (503), alarms
        /// accepted. 0 turns the watermark off.
        #[arg(long, default_value_t = 512)]
        min_free_disk_mb: u64,
        /// The watermark as a share of the filesystem, in percent (the smaller of the two
        /// applies).
        #[arg(long, default_value_t = crate::diskspace::DEFAULT_MIN_FREE_PERCENT)]
        min_free_disk_percent: f64,
    },
    /// Console accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// The hash-chained audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Enrollment tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Integration API keys (Authorization: Bearer KEY on /v1/incidents, /v1/stations).
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Enrolled devices.
    Devices {
        #[command(subcommand)]
        command: DevicesCommand,
    },
    /// Incidents.
    Incidents {
        #[command(subcommand)]
        command: IncidentsCommand,
    },
    /// Stations (an enrolled device and where it is).
    Stations {
        #[command(subcommand)]
        command: StationsCommand,
    },
    /// The subnet → building/floor map behind the "location drift" flag.
    Subnets {
        #[command(subcommand)]
        command: SubnetsCommand,
    },
    /// Delete what the `[retention]` table of the configuration file no longer keeps, now (the
    /// daily purge of `serve`, run by hand); one audit entry with the counts.
    Purge {
        #[command(flatten)]
        store: StoreArgs,
        /// The configuration file whose `[retention]` table says what to keep.
        #[arg(long, env = "DURESS_RECEIVER_CONFIG")]
        config: PathBuf,
        /// Print what would be deleted; delete nothing, audit nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stored events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Write a consistent online backup of the store and the data directory to one file.
    Backup {
        #[command(flatten)]
        store: StoreArgs,
        /// The backup file to create (must not exist); it holds secrets: keep it like DATA_DIR.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into an empty store (or any, with --force), then verify the audit chain.
    Restore {
        /// The backup file (`duress-receiver backup --out`).
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Replace a store that holds data, and data-directory files that differ.
        #[arg(long)]
        force: bool,
    },
    /// The acknowledgement key (DATA_DIR/ack-keys.json), which signs every event answer.
    AckKey {
        #[command(subcommand)]
        command: AckKeyCommand,
    },
    /// Desk phones as stations (docs/integrations.md, "Desk phones"): the phone inventory and
    /// the access-point table that locates wireless phones.
    Phones {
        #[command(subcommand)]
        command: PhonesCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PhonesCommand {
    /// Import the inventory from a CSV with the header
    /// device_name,extension,label,BLD,FLR,ROOM,secret,allowed_network; all lines or none
    /// (a listed phone is changed and its secret replaced).
    Import {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        csv: PathBuf,
    },
    /// List the inventory (never the secrets).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON (an array of phones).
        #[arg(long)]
        json: bool,
    },
    /// Remove a phone: it can no longer raise alarms; its incidents stay.
    Remove {
        #[command(flatten)]
        store: StoreArgs,
        /// The device name, e.g. SEP001122334455.
        device_name: String,
    },
    /// The access-point table: BSSID -> location, for wireless phones' pushes.
    AccessPoints {
        #[command(subcommand)]
        command: AccessPointsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccessPointsCommand {
    /// Import a CSV with the header bssid,label,BLD,FLR,ROOM; all lines or none (a listed
    /// BSSID is remapped).
    Import {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        csv: PathBuf,
    },
    /// List the table.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AckKeyCommand {
    /// Print the current public key as a JWK (JSON), then its thumbprint alone on the last line
    /// (creates the key when there is none yet).
    Show {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Every key: current (signs) and listed (kept during a rotation), one JSON line each.
    List {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Make a new current key; the old one stays listed until `retire`. Restart `serve` after.
    Rotate {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Remove the listed (non-current) keys, or only the one with this thumbprint.
    Retire {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        kid: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an enrollment token; prints it alone on the last line.
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// How many devices may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Lifetime (s, m, h, d).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        expires: Duration,
        /// auto: devices start active; manual: they wait for an admin's approval (console or
        /// `devices set-status --status active`). Default: auto for one use, manual for more.
        #[arg(long, value_enum)]
        approve: Option<Approve>,
    },
    /// Revoke a token: no further device can enroll with it.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        /// The token as printed by `token create`. Visible to other users of this machine
        /// (process list, shell history): prefer --token-file.
        #[arg(
            long,
            required_unless_present = "token_file",
            conflicts_with = "token_file"
        )]
        token: Option<String>,
        /// Read the token from this file (first line), or from standard input with `-`.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create an API key; prints it alone on the last line (shown once, stored only hashed).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// read: list and read incidents and stations; read-write: also claim, note, resolve.
        #[arg(long, value_enum)]
        scope: crate::store::ApiKeyScope,
        /// What the key is for (shown in lists and the audit log).
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List API keys (id, scope, name, created, revoked; never the key).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke an API key for good: requests with it are refused from now on.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        /// The key's id (from `apikey create` or `apikey list`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// List enrolled devices.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON (an array of devices).
        #[arg(long)]
        json: bool,
        /// Flag stations with no test event for longer than this (plus a day), as `serve
        /// --self-test-period` does (s, m, h, d).
        #[arg(long, default_value = "7d", value_parser = parse_duration)]
        self_test_period: Duration,
    },
    /// Approve (active), disable or revoke a device. Revocation is final.
    SetStatus {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        device: String,
        #[arg(long, value_parser = settable_status)]
        status: DeviceStatus,
    },
}

#[derive(Debug, Subcommand)]
pub enum StationsCommand {
    /// Retire a station for good: hidden from the Stations page, never supervised again, its
    /// key refused (what `duress-agent decommission` asks for itself); audited.
    Retire {
        #[command(flatten)]
        store: StoreArgs,
        /// The station's device id (`devices list`).
        #[arg(long)]
        station: String,
    },
    /// Register locations from a CSV with the header station,label,BLD,FLR,ROOM (station = a
    /// device id or a hostname); all rows or none.
    Import {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        csv: PathBuf,
    },
    /// Register one station's location (all fields empty: not registered).
    Set {
        #[command(flatten)]
        store: StoreArgs,
        /// A device id, or a hostname (every station enrolled from that host).
        #[arg(long)]
        station: String,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long = "bld", default_value = "")]
        bld: String,
        #[arg(long = "flr", default_value = "")]
        flr: String,
        #[arg(long = "room", default_value = "")]
        room: String,
    },
    /// Resolve every open incident of one station (a broken or hostile workstation that filled
    /// the board), each audited, with a required note.
    ResolveOpen {
        #[command(flatten)]
        store: StoreArgs,
        /// The station's device id.
        #[arg(long)]
        station: String,
        /// Why (required; recorded as each incident's follow-up and in the audit log).
        #[arg(long)]
        note: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SubnetsCommand {
    /// Map a subnet to a building (and optionally a floor); a listed subnet is remapped.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// The network in CIDR form, e.g. 10.1.0.0/16 or 2001:db8:1::/48.
        cidr: String,
        /// The building (RFC 5139 BLD) the subnet is in.
        #[arg(long = "bld")]
        building: String,
        /// The floor (FLR), when the subnet serves one floor only.
        #[arg(long = "flr")]
        floor: Option<String>,
    },
    /// Remove a subnet from the map.
    Remove {
        #[command(flatten)]
        store: StoreArgs,
        cidr: String,
    },
    /// List the map.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON (an array of {cidr, BLD, FLR}).
        #[arg(long)]
        json: bool,
    },
    /// Import a CSV with the header cidr,BLD,FLR (FLR may be empty); all rows or none.
    Import {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        csv: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum IncidentsCommand {
    /// List incidents, each with its events (test events are never part of an incident).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON (an array of incidents).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Every event as JSON Lines: id, device_id, jws, public_jwk, received_at, …
    Export {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a console user; without --password-stdin a password is generated and printed once.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        username: String,
        #[arg(long, value_enum)]
        role: Role,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// A single sign-on account (`[oidc]`): no password; it signs in only through the
        /// provider, and is linked to the provider's identity at its first sign-in (for
        /// `provision = false`, where only such pre-created accounts may sign in).
        #[arg(long, conflicts_with = "password_stdin")]
        sso: bool,
    },
    /// List console users.
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Disable a console user and end their sessions.
    Disable {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        username: String,
    },
    /// Reset a console user's password: a temporary one is generated and printed once, their
    /// sessions end, and they must choose a new password at their next sign-in.
    ResetPassword {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        username: String,
    },
    /// Remove a console user's TOTP second factor (a lost phone); they sign in with the
    /// password alone until they set it up again.
    RemoveTotp {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        username: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the keyed hash chain; exit non-zero naming the first bad entry, or when
    /// --expect-head is no longer in the chain (newest entries deleted, older copy in place).
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// A head printed earlier by `audit head` (ID:HASH).
        #[arg(long)]
        expect_head: Option<String>,
    },
    /// Print the head of the verified chain (ID:HASH) alone on the last line, to keep outside
    /// the receiver for `audit verify --expect-head`.
    Head {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Runs one parsed command line. `shutdown` is called only by `serve` (so other commands keep
/// the default Ctrl-C), before it binds and announces itself.
pub async fn run<S, F>(cli: Cli, shutdown: S) -> anyhow::Result<()>
where
    S: FnOnce() -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match cli.command {
        Command::Serve {
            store,
            listen,
            tls_cert,
            tls_key,
            grouping_window,
            escalate_after,
            response_levels,
            max_connections,
            max_connections_per_address,
            header_timeout,
            self_test_period,
            config,
            metrics_listen,
            console_listen,
            node_name,
            console_allow,
            min_free_disk_mb,
            min_free_disk_percent,
        } => {
            let mut settings = Settings::new(store.dir.data_dir.clone());
            settings.database = store.location().database;
            settings.node_name = node_name;
            settings.grouping_window = grouping_window;
            settings.console.escalate_after = escalate_after;
            settings.console.self_test_period = self_test_period;
            let levels: Vec<String> = response_levels
                .iter()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect();
            anyhow::ensure!(
                !levels.is_empty(),
                "--response-levels needs at least one level"
            );
            anyhow::ensure!(
                !levels
                    .iter()
                    .any(|l| duress_core::text::has_bidi_control(l)),
                "--response-levels: a level contains a bidirectional control character"
            );
            settings.console.response_levels = levels;
            settings.connections.max_connections = max_connections;
            settings.connections.max_per_address = max_connections_per_address;
            settings.connections.header_timeout = header_timeout;
            settings.metrics_listen = metrics_listen;
            anyhow::ensure!(
                (0.0..=100.0).contains(&min_free_disk_percent),
                "--min-free-disk-percent must be between 0 and 100"
            );
            settings.disk_watermark = crate::diskspace::Watermark {
                min_free_bytes: min_free_disk_mb.saturating_mul(1024 * 1024),
                min_free_percent: min_free_disk_percent,
            };
            if let Some(path) = config {
                let config = crate::config::ReceiverConfig::load(&path)?;
                settings.console_listen = config.console.listen;
                settings.group_same_room = config.incidents.group_same_room;
                settings.console.allow = config
                    .console
                    .allow_nets()
                    .map_err(|e| anyhow::anyhow!("{}: console.allow: {e}", path.display()))?;
                let times = config
                    .console
                    .times()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                settings
                    .console
                    .apply_times(&times)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                settings.config = Some(std::sync::Arc::new(config));
            }
            // The command line wins over the file.
            if console_listen.is_some() {
                settings.console_listen = console_listen;
            }
            if !console_allow.is_empty() {
                settings.console.allow = console_allow;
            }
            if let (Some(cert), Some(key)) = (tls_cert, tls_key) {
                settings.tls = TlsSource::Files { cert, key };
            }
            let listener =
                std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
            crate::launch(settings, listener, shutdown()).await
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    store,
                    uses,
                    expires,
                    approve,
                },
        } => {
            let approve = approve.unwrap_or(Approve::default_for_uses(uses));
            let token = admin::create_token(store.location(), uses, Some(expires), approve).await?;
            println!(
                "Enrollment token ({uses} use(s), expires in {}, approve {}); shown once, stored only hashed:",
                humanize(expires),
                approve.as_str()
            );
            println!("{token}");
            Ok(())
        }
        Command::Token {
            command:
                TokenCommand::Revoke {
                    store,
                    token,
                    token_file,
                },
        } => {
            let token = match (token, token_file) {
                (Some(t), _) => t,
                (None, Some(file)) => crate::tokens::read_token_file(&file)?,
                (None, None) => anyhow::bail!("give --token-file FILE (or --token)"),
            };
            admin::revoke_token(store.location(), &token).await?;
            println!("token revoked");
            Ok(())
        }
        Command::Apikey { command } => run_apikey(command).await,
        Command::Devices {
            command:
                DevicesCommand::List {
                    store,
                    json,
                    self_test_period,
                },
        } => {
            if json {
                let listed = admin::device_listings(store.location(), self_test_period).await?;
                return print_json(&listed);
            }
            let devices = admin::list_devices(store.location()).await?;
            for d in &devices {
                println!(
                    "{}  {:8}  {:20}  {}  last heartbeat {}",
                    d.device_id,
                    d.status.as_str(),
                    d.hostname,
                    d.location.label.as_deref().unwrap_or("-"),
                    d.last_heartbeat_at
                        .map_or("never".into(), |t| t.to_string())
                );
            }
            Ok(())
        }
        Command::Devices {
            command:
                DevicesCommand::SetStatus {
                    store,
                    device,
                    status,
                },
        } => {
            admin::set_device_status(store.location(), &device, status).await?;
            println!("device {device} is now {}", status.as_str());
            Ok(())
        }
        Command::Subnets { command } => subnets_command(command).await,
        Command::Phones { command } => phones_command(command).await,
        Command::Stations {
            command: StationsCommand::Retire { store, station },
        } => {
            if admin::retire_station(store.location(), &station).await? {
                println!("station {station} retired");
            } else {
                println!("station {station} was already retired");
            }
            Ok(())
        }
        Command::Purge {
            store,
            config,
            dry_run,
        } => {
            let config = crate::config::ReceiverConfig::load(&config)?;
            println!(
                "{}",
                admin::purge(store.location(), &config, dry_run).await?
            );
            Ok(())
        }
        Command::Stations {
            command: StationsCommand::Import { store, csv },
        } => {
            let text = std::fs::read_to_string(&csv)
                .with_context(|| format!("reading {}", csv.display()))?;
            let ids = admin::import_stations(store.location(), &text).await?;
            println!(
                "registered the location of {} station(s) from {}",
                ids.len(),
                csv.display()
            );
            Ok(())
        }
        Command::Stations {
            command:
                StationsCommand::Set {
                    store,
                    station,
                    label,
                    bld,
                    flr,
                    room,
                },
        } => {
            let ids = admin::set_station_location(
                store.location(),
                &station,
                [&label, &bld, &flr, &room],
            )
            .await?;
            for id in ids {
                println!("station {id}: registered location set");
            }
            Ok(())
        }
        Command::Stations {
            command:
                StationsCommand::ResolveOpen {
                    store,
                    station,
                    note,
                },
        } => {
            let resolved = admin::resolve_open_incidents(store.location(), &station, &note).await?;
            for id in &resolved {
                println!("{id}");
            }
            println!(
                "resolved {} open incident(s) of station {station}",
                resolved.len()
            );
            Ok(())
        }
        Command::Incidents {
            command: IncidentsCommand::List { store, json },
        } => {
            let incidents = admin::list_incidents(store.location()).await?;
            if json {
                return print_json(&incidents);
            }
            for i in &incidents {
                println!(
                    "{}  {}  device {}  presses {}  {}{}",
                    i.incident_id,
                    i.opened_at,
                    i.device_id,
                    i.press_count,
                    i.location.label.as_deref().unwrap_or("-"),
                    if i.delayed { "  (delayed)" } else { "" }
                );
            }
            Ok(())
        }
        Command::User { command } => run_user(command).await,
        Command::Audit {
            command: AuditCommand::Verify { store, expect_head },
        } => {
            let expect = expect_head
                .map(|h| h.parse::<AuditHead>())
                .transpose()
                .map_err(|e| anyhow::anyhow!("--expect-head: {e}"))?;
            match admin::verify_audit(store.location(), expect.as_ref()).await? {
                Ok(n) => {
                    println!("audit chain ok: {n} entries");
                    Ok(())
                }
                Err(broken) => anyhow::bail!("{broken}"),
            }
        }
        Command::Audit {
            command: AuditCommand::Head { store },
        } => {
            let head = admin::audit_head(store.location()).await?;
            println!("audit chain ok: head of {} entries:", head.id);
            println!("{head}");
            Ok(())
        }
        Command::Backup { store, out } => {
            let report = admin::backup(&store.location(), &out).await?;
            println!(
                "backup written: {} ({} store, {} entries, {} bytes)",
                out.display(),
                report.backend,
                report.entries,
                report.bytes
            );
            Ok(())
        }
        Command::Restore { from, store, force } => {
            let report = admin::restore(&store.location(), &from, force).await?;
            println!(
                "restored the {} backup of {} ({} data files); audit chain ok: {} entries",
                report.backend, report.created_at, report.data_files, report.audit_entries
            );
            Ok(())
        }
        Command::Events {
            command: EventsCommand::Export { store },
        } => {
            let events = admin::export_events(store.location()).await?;
            let mut out = std::io::stdout().lock();
            for e in &events {
                serde_json::to_writer(&mut out, e)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Ok(())
        }
        Command::AckKey { command } => {
            match command {
                AckKeyCommand::Show { dir } => print!("{}", admin::ack_key_show(&dir.data_dir)?),
                AckKeyCommand::List { dir } => print!("{}", admin::ack_key_list(&dir.data_dir)?),
                AckKeyCommand::Rotate { dir } => {
                    let shown = admin::ack_key_rotate(&dir.data_dir)?;
                    eprintln!(
                        "new current key; the previous one stays listed until `ack-key retire` \
                         (restart serve to sign with it)"
                    );
                    print!("{shown}");
                }
                AckKeyCommand::Retire { dir, kid } => {
                    let n = admin::ack_key_retire(&dir.data_dir, kid.as_deref())?;
                    println!("{n} key(s) retired");
                }
            }
            Ok(())
        }
    }
}

async fn run_user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            store,
            username,
            role,
            password_stdin,
            sso,
        } => {
            if sso {
                admin::add_sso_user(store.location(), &username, role).await?;
                println!(
                    "user {username} added ({}, single sign-on: no password)",
                    role.as_str()
                );
                return Ok(());
            }
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_owned(), false)
            } else {
                (accounts::generate_password(), true)
            };
            admin::add_user(store.location(), &username, role, &password).await?;
            println!("user {username} added ({})", role.as_str());
            if generated {
                println!("password (shown once): {password}");
            }
            Ok(())
        }
        UserCommand::List { store, json } => {
            let users = admin::list_users(store.location()).await?;
            if json {
                return print_json(&users);
            }
            for u in &users {
                println!(
                    "{:24} {:8} {:8} {}",
                    u.username,
                    u.role.as_str(),
                    if u.disabled { "disabled" } else { "active" },
                    if u.sso { "sso" } else { "password" }
                );
            }
            Ok(())
        }
        UserCommand::Disable { store, username } => {
            admin::disable_user(store.location(), &username).await?;
            println!("user {username} disabled");
            Ok(())
        }
        UserCommand::ResetPassword { store, username } => {
            let (temporary, ended) = admin::reset_password(store.location(), &username).await?;
            println!("password of {username} reset; {ended} session(s) ended");
            println!("temporary password (shown once): {}", temporary.as_str());
            Ok(())
        }
        UserCommand::RemoveTotp { store, username } => {
            if admin::remove_totp(store.location(), &username).await? {
                println!("two-step sign-in of {username} removed");
                Ok(())
            } else {
                anyhow::bail!("{username} has no two-step sign-in")
            }
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

async fn phones_command(command: PhonesCommand) -> anyhow::Result<()> {
    use crate::phones::admin as phones;
    match command {
        PhonesCommand::Import { store, csv } => {
            let text = std::fs::read_to_string(&csv)
                .with_context(|| format!("reading {}", csv.display()))?;
            let n = phones::import_phones(store.location(), &text).await?;
            println!("imported {n} phones from {}", csv.display());
        }
        PhonesCommand::List { store, json } => {
            let list = phones::list_phones(store.location()).await?;
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "device_name": p.device_name,
                            "device_id": p.device_id,
                            "extension": p.extension,
                            "label": p.label,
                            "BLD": p.building,
                            "FLR": p.floor,
                            "ROOM": p.room,
                            "allowed_network": p.allowed_network.to_string(),
                        })
                    })
                    .collect();
                return print_json(&rows);
            }
            for p in &list {
                println!(
                    "{:20}  ext {:8}  {:18}  {}",
                    p.device_name, p.extension, p.allowed_network, p.label
                );
            }
        }
        PhonesCommand::Remove { store, device_name } => {
            phones::remove_phone(store.location(), &device_name).await?;
            println!("phone {device_name} removed");
        }
        PhonesCommand::AccessPoints {
            command: AccessPointsCommand::Import { store, csv },
        } => {
            let text = std::fs::read_to_string(&csv)
                .with_context(|| format!("reading {}", csv.display()))?;
            let n = phones::import_access_points(store.location(), &text).await?;
            println!("imported {n} access points from {}", csv.display());
        }
        PhonesCommand::AccessPoints {
            command: AccessPointsCommand::List { store },
        } => {
            for ap in phones::list_access_points(store.location()).await? {
                println!("{}  {}", ap.bssid, ap.label);
            }
        }
    }
    Ok(())
}

async fn subnets_command(command: SubnetsCommand) -> anyhow::Result<()> {
    match command {
        SubnetsCommand::Add {
            store,
            cidr,
            building,
            floor,
        } => {
            let s = admin::add_subnet(store.location(), &cidr, &building, floor.as_deref()).await?;
            println!("subnet {} maps to {}", s.cidr(), s.audit_detail());
        }
        SubnetsCommand::Remove { store, cidr } => {
            let cidr = admin::remove_subnet(store.location(), &cidr).await?;
            println!("subnet {cidr} removed");
        }
        SubnetsCommand::List { store, json } => {
            let subnets = admin::list_subnets(store.location()).await?;
            if json {
                return print_json(&subnets);
            }
            for s in &subnets {
                println!(
                    "{:43}  BLD {}  FLR {}",
                    s.cidr(),
                    s.building,
                    s.floor.as_deref().unwrap_or("-")
                );
            }
        }
        SubnetsCommand::Import { store, csv } => {
            let text = std::fs::read_to_string(&csv)
                .with_context(|| format!("reading {}", csv.display()))?;
            let n = admin::import_subnets(store.location(), &text).await?;
            println!("imported {n} subnets from {}", csv.display());
        }
    }
    Ok(())
}

/// `devices set-status --status`: a status an admin may set (not `pending`, which only an
/// enrollment gives), parsed by the library's own [`DeviceStatus`].
fn settable_status(text: &str) -> Result<DeviceStatus, String> {
    match DeviceStatus::parse(text) {
        Some(DeviceStatus::Pending) | None => Err(format!(
            "{text:?} is not a status to set (active, disabled or revoked)"
        )),
        Some(status) => Ok(status),
    }
}

async fn run_apikey(command: ApikeyCommand) -> anyhow::Result<()> {
    use crate::integration::keys;
    match command {
        ApikeyCommand::Create { store, scope, name } => {
            let (record, key) = keys::create_at(store.location(), scope, &name).await?;
            println!(
                "API key {} (scope {}, name {:?}); shown once, stored only hashed:",
                record.id,
                scope.as_str(),
                record.name
            );
            println!("{key}");
            Ok(())
        }
        ApikeyCommand::List { store } => {
            for k in keys::list_at(store.location()).await? {
                println!(
                    "{}  {:10}  {:8}  created {} by {}  {:?}",
                    k.id,
                    k.scope.as_str(),
                    if k.is_revoked() { "revoked" } else { "active" },
                    crate::cap::cap_time(k.created_at),
                    k.created_by,
                    k.name
                );
            }
            Ok(())
        }
        ApikeyCommand::Revoke { store, id } => {
            keys::revoke_at(store.location(), &id).await?;
            println!("API key {id} revoked");
            Ok(())
        }
    }
}
