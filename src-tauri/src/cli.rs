//! The command-line interface. These names are a contract (scripts, docs and later issues use
//! them):
//!
//! ```text
//! duress-agent enroll [--policy F] [--receiver URL --token-file F|- --ca-cert F] [--label TEXT --building B --floor F --room R]
//! duress-agent trigger [--policy F] [--test | --cancel [--pin-stdin]]
//! duress-agent status [--policy F] [--json]
//! duress-agent run --headless [--policy F]
//! duress-agent diagnose [--policy F] [--json]
//! duress-agent decommission [--policy F] [--deliver-within SECONDS]
//! ```
//!
//! Policy versus flags: the policy (`--policy`, else `DURESS_AGENT_POLICY`, else
//! `/etc/duress/agent.toml`) is authoritative. `enroll --receiver/--ca-cert` is for a first
//! setup when the policy lists no receiver: the receiver is then stored in the state database
//! and used by later commands; when the policy lists receivers, `--receiver` must be one of them
//! and `--ca-cert` is refused. `--token` replaces the policy's token. Location flags are used
//! (and stored) only when the policy sets no location. State lives in `DURESS_AGENT_STATE_DIR`,
//! else the per-user data directory.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use duress_agent_core::duress_core::{EventKind, HotkeyState, Location, Source};
use duress_agent_core::{EnrollOptions, ReceiverConfig, Secret};
use time_fmt::fmt_opt;

pub(crate) use crate::engine_setup::{open_engine, runtime};

/// How long `decommission` tries to deliver queued events before refusing.
pub const DECOMMISSION_DELIVERY_WINDOW: Duration = Duration::from_secs(30);

/// How long `trigger` tries to deliver its event before leaving it queued.
pub const TRIGGER_DELIVERY_WINDOW: Duration = Duration::from_secs(5);

static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} (tauri {})",
        duress_agent_core::AGENT_VERSION,
        crate::TAURI_VERSION
    )
});

/// Duress agent: a silent panic button's workstation half.
#[derive(Debug, Parser)]
#[command(name = "duress-agent", version = VERSION.as_str(), about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The policy file option shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct PolicyArg {
    /// Policy file (default: $DURESS_AGENT_POLICY, else /etc/duress/agent.toml).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the device key in the OS keystore and enroll this station with a receiver.
    Enroll(EnrollArgs),
    /// Record a duress event (durable before anything is sent), then try to deliver it.
    Trigger {
        #[command(flatten)]
        policy: PolicyArg,
        /// A self-test: travels the whole path, shown as a test, opens no incident.
        #[arg(long, conflicts_with = "cancel")]
        test: bool,
        /// A duress-safe cancel ("I'm OK"): annotates the open incident, never closes it.
        #[arg(long)]
        cancel: bool,
        /// Read the cancel PIN (policy `[cancel] pin_sha256`) from the first line of stdin.
        /// Whatever PIN is given, the cancel is sent and the output is the same.
        #[arg(long, requires = "cancel")]
        pin_stdin: bool,
    },
    /// Show enrollment, receivers, last contact, queued events and location.
    Status {
        #[command(flatten)]
        policy: PolicyArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Everything a help desk needs: status, policy sources, keystore, chord, each receiver's
    /// answer and TLS identity, clock offset, queue. Exit code 1 when the station is not protected.
    Diagnose {
        #[command(flatten)]
        policy: PolicyArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Retire this station for good (the uninstallers run it): deliver queued events first
    /// (refusing while any is undelivered), tell every receiver with a signed retirement, then
    /// remove the device key from the keystore and forget the enrollment. Exit code 1 when
    /// anything stopped it; then nothing was forgotten and it can be run again.
    Decommission {
        #[command(flatten)]
        policy: PolicyArg,
        /// How long to try delivering queued events before refusing (seconds).
        #[arg(long, value_name = "SECONDS", default_value_t = DECOMMISSION_DELIVERY_WINDOW.as_secs())]
        deliver_within: u64,
    },
    /// Run the engine (heartbeats and outbox delivery) until SIGTERM or SIGINT.
    Run {
        /// Without the tray (servers, kiosks, tests). The tray app is `duress-agent` with no
        /// subcommand.
        #[arg(long)]
        headless: bool,
        #[command(flatten)]
        policy: PolicyArg,
    },
}

#[derive(Debug, Clone, Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub policy: PolicyArg,
    /// Receiver URL (https) when the policy lists none (a local dev setup).
    #[arg(long, value_name = "URL")]
    pub receiver: Option<String>,
    /// Enrollment token (replaces the policy's). Kept as a `Secret` so `Debug` never shows it.
    /// Visible to other users of this machine (process list, shell history): prefer
    /// --token-file.
    #[arg(long, value_name = "T", value_parser = parse_secret, conflicts_with = "token_file")]
    pub token: Option<Secret>,
    /// Read the enrollment token from this file (its first line), or from stdin with `-`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) for --receiver.
    #[arg(long, value_name = "F", requires = "receiver")]
    pub ca_cert: Option<PathBuf>,
    /// Location label, e.g. "Bldg A, Floor 2, Room 214" (when the policy sets no location).
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Building (RFC 5139 BLD).
    #[arg(long, value_name = "B")]
    pub building: Option<String>,
    /// Floor (RFC 5139 FLR).
    #[arg(long, value_name = "F")]
    pub floor: Option<String>,
    /// Room (RFC 5139 ROOM).
    #[arg(long, value_name = "R")]
    pub room: Option<String>,
}

fn parse_secret(s: &str) -> std::result::Result<Secret, String> {
    Ok(Secret::new(s))
}

/// Runs one subcommand and turns its outcome into the exit code.
pub fn execute(command: Command) -> ExitCode {
    init_logging(matches!(command, Command::Run { .. }));
    let result = match command {
        Command::Enroll(args) => enroll(&args),
        Command::Trigger {
            policy,
            test,
            cancel,
            pin_stdin,
        } => {
            let what = match (test, cancel) {
                (true, _) => Press::Test,
                (false, true) => Press::Cancel { pin_stdin },
                (false, false) => Press::Duress,
            };
            trigger(policy.policy.as_deref(), what)
        }
        Command::Diagnose { policy, json } => crate::diagnose::run(policy.policy.as_deref(), json),
        Command::Status { policy, json } => status(policy.policy.as_deref(), json),
        Command::Run { headless, policy } => run_headless(headless, policy.policy.as_deref()),
        Command::Decommission {
            policy,
            deliver_within,
        } => decommission(
            policy.policy.as_deref(),
            Duration::from_secs(deliver_within),
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default (info for `run`, warn otherwise).
pub fn init_logging(long_running: bool) {
    let level = if long_running { "info" } else { "warn" };
    // netlink-packet-route warns about every newer-kernel attribute it does not know.
    let default = format!("{level},netlink_packet_route=error");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn enroll(args: &EnrollArgs) -> Result<ExitCode> {
    let engine = open_engine(args.policy.policy.as_deref())?;
    if let Some(id) = engine.device_id()? {
        let s = engine.status()?;
        println!("device_id: {id}");
        println!(
            "status: {}",
            s.device_status.map_or("unknown", |d| d.as_str())
        );
        println!("already enrolled (state in {})", s.state_dir);
        return Ok(ExitCode::SUCCESS);
    }
    let receiver = args
        .receiver
        .as_deref()
        .map(|u| ReceiverConfig::new(u, args.ca_cert.clone()))
        .transpose()?;
    let location = Location {
        label: args.label.clone(),
        bld: args.building.clone(),
        flr: args.floor.clone(),
        room: args.room.clone(),
        ..Default::default()
    };
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(file)) => Some(duress_agent_core::policy::read_secret_file(file)?),
        (None, None) => None,
    };
    let opts = EnrollOptions {
        receiver,
        token,
        location: (location != Location::default()).then_some(location),
    };
    let answer = runtime()?.block_on(engine.enroll(&opts))?;
    let s = engine.status()?;
    println!("device_id: {}", answer.device_id);
    println!("status: {}", answer.status.as_str());
    if let Some(r) = s.last_receiver {
        println!("receiver: {r}");
    }
    println!("location: {}", s.location_label);
    Ok(ExitCode::SUCCESS)
}

fn decommission(policy_flag: Option<&Path>, deliver_within: Duration) -> Result<ExitCode> {
    let engine = open_engine(policy_flag)?;
    if engine.device_id()?.is_none() {
        println!("not enrolled: nothing to decommission");
        return Ok(ExitCode::SUCCESS);
    }
    let report = runtime()?.block_on(engine.decommission(deliver_within))?;
    if report.delivered_first > 0 {
        println!(
            "delivered first: {} queued event(s)",
            report.delivered_first
        );
    }
    for (url, answer) in &report.receivers {
        println!("receiver {url}: {}", answer.describe());
    }
    println!(
        "decommissioned: device {} retired; device key removed from the keystore; outbox kept in {}",
        report.device_id,
        engine.state_dir().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What `trigger` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Press {
    Duress,
    Test,
    Cancel { pin_stdin: bool },
}

fn trigger(policy_flag: Option<&Path>, what: Press) -> Result<ExitCode> {
    let engine = open_engine(policy_flag)?;
    // Durable first: only a failure to write the outbox is an error, and the exit code says so.
    // A press before enrollment or with a locked keystore is stored unsigned (see Engine::record).
    let recorded = match what {
        Press::Duress => engine.record(EventKind::Duress, Source::Cli),
        Press::Test => engine.record(EventKind::Test, Source::Cli),
        Press::Cancel { pin_stdin } => {
            let pin = if pin_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("cannot read the PIN from stdin")?;
                Some(line.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                None
            };
            engine.record_cancel(Source::Cli, pin.as_deref())
        }
    };
    let claims = recorded.context("the event could not be made durable")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", claims.id)?;
    out.flush()?;
    drop(out);

    if engine.device_id()?.is_none() {
        // Stored, and sent by the running agent as soon as this station is enrolled.
        println!("queued: this station is not enrolled yet (run `duress-agent enroll`)");
        return Ok(ExitCode::SUCCESS);
    }
    let report =
        runtime()?.block_on(engine.deliver_pending(Some(Instant::now() + TRIGGER_DELIVERY_WINDOW)));
    match engine.event(claims.id)? {
        Some(ev) if ev.delivered_at.is_some() => println!("delivered"),
        Some(ev) => {
            let reason = ev
                .last_error
                .or(report.last_error)
                .unwrap_or_else(|| "not acknowledged yet".into());
            println!("queued: {reason}");
        }
        None => println!("queued: (event not found after recording; see `duress-agent status`)"),
    }
    Ok(ExitCode::SUCCESS)
}

fn status(policy_flag: Option<&Path>, json: bool) -> Result<ExitCode> {
    let engine = open_engine(policy_flag)?;
    let s = engine.status()?;
    // The tray's status line, from the engine's one status-line function: the first line of
    // the text output and `status_line` in the JSON (contract names).
    let line = duress_agent_core::status_line::status_line(
        &s,
        engine.policy(),
        engine.now(),
        crate::local_time::offset_now(),
    );
    if json {
        #[derive(serde::Serialize)]
        struct StatusJson<'a> {
            status_line: &'a str,
            #[serde(flatten)]
            snapshot: &'a duress_agent_core::StatusSnapshot,
        }
        let out = StatusJson {
            status_line: &line.text,
            snapshot: &s,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", line.text);
    match &s.device_id {
        Some(id) if !s.enrolled => println!(
            "enrolled: no (device {id} was retired by Security; run `duress-agent decommission`)"
        ),
        Some(id) => println!(
            "enrolled: yes (device {id}, {})",
            s.device_status.map_or("status unknown", |d| d.as_str())
        ),
        None => println!("enrolled: no"),
    }
    if s.receivers.is_empty() {
        println!("receivers: (none configured)");
    } else {
        println!("receivers: {}", s.receivers.join(", "));
    }
    println!(
        "last contact: {}{}",
        fmt_opt(s.last_contact_at),
        s.last_receiver
            .as_deref()
            .map(|r| format!(" via {r}"))
            .unwrap_or_default()
    );
    if s.unreachable_since.is_some() {
        println!("unreachable since: {}", fmt_opt(s.unreachable_since));
    }
    println!("policy: {} (sha256 {})", s.policy_source, s.policy_sha256);
    if let Some(why) = &s.policy_ignored {
        println!("policy file ignored: {why}");
    }
    println!("acknowledgements: {}", s.acknowledgements);
    if let (Some(since), Some(reason)) = (s.alarm_refused_since, &s.alarm_refused_reason) {
        println!("alerts refused since: {} ({reason})", fmt_opt(Some(since)));
    }
    if let Some(since) = s.ack_unverified_since {
        println!(
            "acknowledgement check failing since: {} ({})",
            fmt_opt(Some(since)),
            s.ack_unverified_reason
                .as_deref()
                .unwrap_or("no reason recorded")
        );
    }
    println!("queued events: {}", s.queued);
    println!("location: {}", s.location_label);
    match &s.last_self_test {
        Some(t) => println!("last self-test: {} ({})", fmt_opt(Some(t.at)), t.id),
        None => println!("last self-test: never"),
    }
    if s.clock_offset_ms != 0 {
        println!("clock offset: {} ms", s.clock_offset_ms);
    }
    if let Some(e) = &s.last_error {
        println!("last error: {e}");
    }
    Ok(ExitCode::SUCCESS)
}

fn run_headless(headless: bool, policy_flag: Option<&Path>) -> Result<ExitCode> {
    if !headless {
        // A subcommand never starts the GUI: the tray is `duress-agent` with no subcommand.
        eprintln!("`run` needs --headless; start the tray app with `duress-agent` alone");
        return Ok(ExitCode::from(2));
    }
    let engine = open_engine(policy_flag)?;
    engine.set_local_offset(crate::local_time::offset_now());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let (_hotkey_tx, hotkey_rx) = tokio::sync::watch::channel(HotkeyState::NotApplicable);
        engine
            .run(duress_shutdown::shutdown_signal(), hotkey_rx)
            .await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Human-readable times for `status`.
mod time_fmt {
    use duress_agent_core::duress_core::clock::truncate_to_millis;

    pub fn fmt_opt(t: Option<time::OffsetDateTime>) -> String {
        match t {
            Some(t) => truncate_to_millis(t)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| t.to_string()),
            None => "never".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// The command line is well-formed and has exactly the contract's subcommands and flags.
    #[test]
    fn cli_contract() {
        Cli::command().debug_assert();
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "enroll",
                "trigger",
                "status",
                "diagnose",
                "decommission",
                "run"
            ]
        );
        let parse = |args: &[&str]| Cli::try_parse_from(args);
        assert!(parse(&["duress-agent", "decommission", "--policy", "p.toml"]).is_ok());
        assert!(parse(&["duress-agent", "trigger", "--test", "--policy", "p.toml"]).is_ok());
        assert!(parse(&["duress-agent", "status", "--json"]).is_ok());
        assert!(parse(&["duress-agent", "trigger", "--cancel", "--pin-stdin"]).is_ok());
        assert!(parse(&["duress-agent", "trigger", "--pin-stdin"]).is_err());
        assert!(parse(&["duress-agent", "trigger", "--cancel", "--test"]).is_err());
        assert!(parse(&["duress-agent", "diagnose", "--json"]).is_ok());
        assert!(parse(&["duress-agent", "run", "--headless", "--policy", "p"]).is_ok());
        assert!(
            parse(&[
                "duress-agent",
                "enroll",
                "--receiver",
                "https://x",
                "--token",
                "t",
                "--ca-cert",
                "c.pem",
                "--label",
                "L",
                "--building",
                "B",
                "--floor",
                "2",
                "--room",
                "214"
            ])
            .is_ok()
        );
        // --ca-cert only makes sense with --receiver.
        assert!(parse(&["duress-agent", "enroll", "--ca-cert", "c.pem"]).is_err());
        assert!(parse(&["duress-agent"]).unwrap().command.is_none());
        // The token never shows in Debug output of the parsed command line.
        let parsed = parse(&["duress-agent", "enroll", "--token", "tok-SECRET"]).unwrap();
        assert!(!format!("{parsed:?}").contains("tok-SECRET"));
    }

    /// `--version` names the linked Tauri, proving the crate links it.
    #[test]
    fn version_mentions_tauri() {
        assert!(VERSION.contains("tauri 2."), "{}", *VERSION);
    }
}
