//! `duress-loadgen`: see the library docs. Prints `name=value` lines; exits 1 when anything
//! was lost, duplicated or left unacknowledged.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Load generator for a Duress receiver (loopback or a test namespace only; other addresses are
/// refused).
#[derive(Debug, Parser)]
#[command(name = "duress-loadgen", version, about)]
struct Cli {
    /// Receiver base URL, e.g. https://127.0.0.1:8443.
    #[arg(long)]
    url: String,
    /// The CA (or self-signed certificate) the receiver's certificate chains to.
    #[arg(long, value_name = "FILE")]
    ca_cert: PathBuf,
    /// The receiver's data dir: creates the token and an officer account, checks the store.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// An existing enrollment token (else one is created in --data-dir).
    #[arg(long)]
    token: Option<String>,
    /// Uses of the token created in --data-dir (default: --stations).
    #[arg(long)]
    token_uses: Option<u32>,
    #[arg(long, default_value_t = 100)]
    stations: usize,
    /// Seconds between two heartbeats of one station.
    #[arg(long, default_value_t = 10.0)]
    heartbeat_interval: f64,
    /// Alarms in the burst.
    #[arg(long, default_value_t = 100)]
    alarms: usize,
    /// The burst's alarms are pressed evenly within this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    burst_within_ms: u64,
    /// Seconds of heartbeating; the burst starts halfway.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Concurrent heartbeat/enrollment connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measure delivery to the security console's live stream (needs --data-dir).
    #[arg(long)]
    console: bool,
}

/// A load generator is aimed only at this machine: loopback, or the test network namespaces'
/// 10.231.0.0/16 (see tests/src/netns.rs). Anything else is refused.
fn allowed_target(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("https://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if host == "localhost" {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            v4.is_loopback() || (v4.octets()[0] == 10 && v4.octets()[1] == 231)
        }
        Ok(std::net::IpAddr::V6(v6)) => v6.is_loopback(),
        Err(_) => false,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !allowed_target(&cli.url) {
        eprintln!(
            "duress-loadgen: {} is not this machine: only https://127.0.0.1, [::1], localhost or a \
             test namespace address (10.231.x.x) may be loaded",
            cli.url
        );
        return ExitCode::from(2);
    }
    let cfg = duress_loadgen::LoadConfig {
        url: cli.url,
        ca_cert: cli.ca_cert,
        data_dir: cli.data_dir,
        token: cli.token,
        token_uses: cli.token_uses,
        stations: cli.stations,
        heartbeat_interval: Duration::from_secs_f64(cli.heartbeat_interval.max(0.01)),
        alarms: cli.alarms,
        burst_within: Duration::from_millis(cli.burst_within_ms),
        duration: Duration::from_secs_f64(cli.duration.max(0.0)),
        connections: cli.connections,
        console: cli.console,
        alarm_deadline: Duration::from_secs(120),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("duress-loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(duress_loadgen::run(cfg)) {
        Ok(report) => {
            for line in report.lines() {
                println!("{line}");
            }
            if report.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("duress-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
