//! `duress-receiver`: parses the command line and calls the library (see `lib.rs`).

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use duress_core::DeviceStatus;
use duress_receiver::console::accounts;
use duress_receiver::logging::LogFormat;
use duress_receiver::settings::parse_duration;
use duress_receiver::store::audit_chain::AuditHead;
use duress_receiver::store::{DatabaseUrl, Role, StoreLocation};
use duress_receiver::{Approve, Settings, TlsSource, admin};

/// Where the store is: every command that opens it takes these two.
#[derive(Debug, Clone, clap::Args)]
struct StoreArgs {
    /// Holds the TLS material and, without --database, the SQLite store.
    #[arg(long, env = "DURESS_RECEIVER_DATA_DIR")]
    data_dir: PathBuf,
    /// A PostgreSQL URL (postgres://USER:PASSWORD@HOST/DB, or postgres://USER@/DB?host=/socket/dir)
    /// instead of SQLite in DATA_DIR.
    #[arg(long, env = "DURESS_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
}

impl StoreArgs {
    fn location(&self) -> StoreLocation {
        StoreLocation::new(
            self.data_dir.clone(),
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
struct Cli {
    /// Log lines as human text or one JSON object per line (for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// Enrolled devices.
    Devices {
        #[command(subcommand)]
        command: DevicesCommand,
    },
    /// Stations (enrolled devices) taken out of service.
    Stations {
        #[command(subcommand)]
        command: StationsCommand,
    },
    /// Incidents.
    Incidents {
        #[command(subcommand)]
        command: IncidentsCommand,
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
    /// The acknowledgement key (DATA_DIR/ack-keys.json), which signs every event answer.
    AckKey {
        #[command(subcommand)]
        command: AckKeyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum StationsCommand {
    /// Retire a station for good: hidden from the Stations page, never supervised again, its
    /// key refused (what `duress-agent decommission` asks for itself); audited.
    Retire {
        #[command(flatten)]
        store: StoreArgs,
        /// The station's device id (`devices list`).
        #[arg(long)]
        station: String,
    },
}

#[derive(Debug, Subcommand)]
enum AckKeyCommand {
    /// Print the current public key as a JWK (JSON), then its thumbprint alone on the last line
    /// (creates the key when there is none yet).
    Show {
        #[arg(long, env = "DURESS_RECEIVER_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Every key: current (signs) and listed (kept during a rotation), one JSON line each.
    List {
        #[arg(long, env = "DURESS_RECEIVER_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Make a new current key; the old one stays listed until `retire`. Restart `serve` after.
    Rotate {
        #[arg(long, env = "DURESS_RECEIVER_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Remove the listed (non-current) keys, or only the one with this thumbprint.
    Retire {
        #[arg(long, env = "DURESS_RECEIVER_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long)]
        kid: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
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
        /// auto: devices start active; manual: they wait for `devices set-status --status active`.
        #[arg(long, value_enum, default_value_t = ApproveArg::Auto)]
        approve: ApproveArg,
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
enum DevicesCommand {
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
        #[arg(long, value_enum)]
        status: StatusArg,
    },
}

#[derive(Debug, Subcommand)]
enum IncidentsCommand {
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
enum EventsCommand {
    /// Every event as JSON Lines: id, device_id, jws, public_jwk, received_at, …
    Export {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a console user; without --password-stdin a password is generated and printed once.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        username: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
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
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    Officer,
    Admin,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ApproveArg {
    Auto,
    Manual,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatusArg {
    Active,
    Disabled,
    Revoked,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    duress_receiver::logging::init(cli.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duress-receiver: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
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
        } => {
            let mut settings = Settings::new(store.data_dir.clone());
            settings.database = store.location().database;
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
            settings.console.response_levels = levels;
            settings.connections.max_connections = max_connections;
            settings.connections.max_per_address = max_connections_per_address;
            settings.connections.header_timeout = header_timeout;
            if let Some(path) = config {
                settings.config = Some(std::sync::Arc::new(
                    duress_receiver::config::ReceiverConfig::load(&path)?,
                ));
            }
            if let (Some(cert), Some(key)) = (tls_cert, tls_key) {
                settings.tls = TlsSource::Files { cert, key };
            }
            let listener =
                std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
            duress_receiver::launch(settings, listener, shutdown_signal()).await
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
            let approve = match approve {
                ApproveArg::Auto => Approve::Auto,
                ApproveArg::Manual => Approve::Manual,
            };
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
                (None, Some(file)) => duress_receiver::tokens::read_token_file(&file)?,
                (None, None) => anyhow::bail!("give --token-file FILE (or --token)"),
            };
            admin::revoke_token(store.location(), &token).await?;
            println!("token revoked");
            Ok(())
        }
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
            let status = match status {
                StatusArg::Active => DeviceStatus::Active,
                StatusArg::Disabled => DeviceStatus::Disabled,
                StatusArg::Revoked => DeviceStatus::Revoked,
            };
            admin::set_device_status(store.location(), &device, status).await?;
            println!("device {device} is now {}", status.as_str());
            Ok(())
        }
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
            let report = duress_receiver::backup::backup(&store.location(), &out).await?;
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
            let report = duress_receiver::backup::restore(&store.location(), &from, force).await?;
            println!(
                "restored the {} backup of {} ({} data files); audit chain ok: {} entries",
                report.backend, report.created_at, report.data_files, report.audit_entries
            );
            Ok(())
        }
        Command::Purge {
            store,
            config,
            dry_run,
        } => {
            let config = duress_receiver::config::ReceiverConfig::load(&config)?;
            println!(
                "{}",
                admin::purge(store.location(), &config, dry_run).await?
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
            use duress_receiver::ack_key;
            match command {
                AckKeyCommand::Show { data_dir } => {
                    print!(
                        "{}",
                        ack_key::AckKeys::load_or_create(&data_dir)?.show_text()
                    );
                }
                AckKeyCommand::List { data_dir } => {
                    print!("{}", ack_key::AckKeys::load(&data_dir)?.list_text());
                }
                AckKeyCommand::Rotate { data_dir } => {
                    let keys = ack_key::rotate(&data_dir)?;
                    eprintln!(
                        "new current key; the previous one stays listed until `ack-key retire` \
                         (restart serve to sign with it)"
                    );
                    print!("{}", keys.show_text());
                }
                AckKeyCommand::Retire { data_dir, kid } => {
                    let n = ack_key::retire(&data_dir, kid.as_deref())?;
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
        } => {
            let role = match role {
                RoleArg::Officer => Role::Officer,
                RoleArg::Admin => Role::Admin,
            };
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
                    "{:24} {:8} {}",
                    u.username,
                    u.role.as_str(),
                    if u.disabled { "disabled" } else { "active" }
                );
            }
            Ok(())
        }
        UserCommand::Disable { store, username } => {
            admin::disable_user(store.location(), &username).await?;
            println!("user {username} disabled");
            Ok(())
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

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM. The Unix handlers are registered here,
/// before `serve` prints its URL, so a supervisor that signals as soon as it reads that line
/// gets a graceful stop rather than the default action (death by the signal).
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => {},
                () = wait(int) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
