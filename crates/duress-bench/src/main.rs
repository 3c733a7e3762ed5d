//! `duress-bench`: the whole-system figures of issue 7 as `name=value` lines.
//!
//! ```text
//! cargo run --release -p duress-bench -- all            # the full run (docs/PERFORMANCE.md)
//! cargo run --release -p duress-bench -- all --quick    # under a minute once built
//! cargo run --release -p duress-bench -- p3 --plots docs/perf
//! cargo run --release -p duress-bench -- p1 --database testpg   # on a throw-away PostgreSQL
//! cargo run --release -p duress-bench -- p3 --database postgres://u@/db?host=/run/postgresql
//! ```
//!
//! A benchmark, never a pass/fail test: it exits non-zero only when a measurement could not be
//! made (a crash, an alarm that never arrived), not when a goal is missed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use duress_bench::{Database, Figures, Options, svg};

#[derive(Debug, Parser)]
#[command(
    name = "duress-bench",
    version,
    about = "Duress measured against the physical floor"
)]
struct Cli {
    #[command(subcommand)]
    what: What,
    /// Fewer samples and shorter windows (the whole `all` run in under a minute).
    #[arg(long, global = true)]
    quick: bool,
    /// Write the SVG plots (P1 latency distribution, P3 throughput) into this directory.
    #[arg(long, global = true, value_name = "DIR")]
    plots: Option<PathBuf>,
    /// Parent of the state directories (must be a real disk, not tmpfs). Default: a
    /// `bench-work` directory beside the bench binary, in the cargo target directory.
    #[arg(long, global = true, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// The receivers' store in every scenario: a `postgres://…` URL (shared by the scenarios
    /// of the run), or `testpg` to start a throw-away PostgreSQL 15 (`duress-testpg`, with
    /// fsync on) for this run, a fresh database per scenario. Default: SQLite in each
    /// receiver's data directory.
    #[arg(long, global = true, value_name = "URL|testpg")]
    database: Option<String>,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Everything below, in this order: P1, P3, P4, P5, P1b, P2.
    All,
    /// Engine press → receiver commit → console stream, with the floor.
    P1,
    /// The real chord under Xvfb (release tray agent) → console stream.
    P1b,
    /// The tray agent's idle footprint (scripts/bench-footprint).
    P2,
    /// Durable ingest per second against concurrency, beside the no-op endpoint.
    P3,
    /// 100,000 stations' heartbeats with alarms in between.
    P4,
    /// 1,000 queued alarms: receiver back → last acknowledgement.
    P5,
    /// Internal: serves a receiver from this binary (`duress-receiver serve`'s code path: the
    /// library's `launch`, default settings, the same log set-up); the bench's receiver child.
    #[command(hide = true)]
    ServeReceiver {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
}

/// `--database`: none (SQLite), `testpg` (a cluster for this run) or a URL.
fn database(arg: Option<&str>) -> anyhow::Result<Database> {
    match arg.map(str::trim) {
        None | Some("") | Some("sqlite") => Ok(Database::Sqlite),
        Some("testpg") => Ok(Database::TestPg(duress_bench::pg::start()?)),
        Some(url) => Ok(Database::Url(url.to_owned())),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let What::ServeReceiver { data_dir, listen } = cli.what {
        return serve_receiver(data_dir, listen, cli.database);
    }
    // The agent engine's key lives in the real Secret Service: run inside a private one.
    if let Err(e) = duress_bench::keyring::ensure_session() {
        eprintln!("duress-bench: {e:#}");
        return ExitCode::FAILURE;
    }
    let work_dir = cli.work_dir.clone().unwrap_or_else(|| {
        duress_bench::p2::release_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("bench-work")
    });
    if let Err(e) = std::fs::create_dir_all(&work_dir) {
        eprintln!("duress-bench: creating {}: {e}", work_dir.display());
        return ExitCode::FAILURE;
    }
    let database = match database(cli.database.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("duress-bench: --database: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let opts = Options {
        quick: cli.quick,
        plots: cli.plots.clone(),
        work_dir,
        database,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("duress-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.what, &opts)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duress-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(what: What, opts: &Options) -> anyhow::Result<Figures> {
    let mut f = Figures::default();
    let started = std::time::Instant::now();
    machine(&mut f, opts);
    let all = matches!(what, What::All);
    if all || matches!(what, What::P1) {
        let e2e = duress_bench::p1::run(opts, &mut f).await?;
        if let Some(dir) = &opts.plots {
            let marks = [
                (
                    "floor",
                    f.get("p1_floor_ms")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0.0),
                ),
                ("p50", e2e.p50()),
                ("p99", e2e.p99()),
            ];
            let title = format!(
                "P1 press → console, {} alarms ({})",
                e2e.len(),
                if opts.quick { "quick" } else { "full run" }
            );
            write_plot(
                dir,
                "p1-latency.svg",
                &svg::latency_histogram(&title, e2e.sorted_ms(), &marks),
            )?;
        }
    }
    if all || matches!(what, What::P3) {
        let levels = duress_bench::p3::run(opts, &mut f).await?;
        if let Some(dir) = &opts.plots {
            let xs: Vec<usize> = levels.iter().map(|l| l.concurrency).collect();
            let series = [
                svg::Series {
                    name: "durable ingest (POST /v1/events, 200 after COMMIT)",
                    color: "#4a7ebb",
                    values: levels.iter().map(|l| l.events_per_s).collect(),
                },
                svg::Series {
                    name: "no-op (GET /v1/ping, same server)",
                    color: "#7f8c8d",
                    values: levels.iter().map(|l| l.noop_per_s).collect(),
                },
            ];
            let chart = svg::throughput_chart(
                "P3 throughput against concurrency (TLS, loopback, 2 cores shared with the client)",
                &xs,
                &series,
                Some(("goal: 10,000 events/s", 10_000.0)),
            );
            write_plot(dir, "p3-throughput.svg", &chart)?;
        }
    }
    if all || matches!(what, What::P4) {
        duress_bench::p4::run(opts, &mut f).await?;
    }
    if all || matches!(what, What::P5) {
        duress_bench::p5::run(opts, &mut f).await?;
    }
    if all || matches!(what, What::P1b) {
        duress_bench::p1b::run(opts, &mut f).await;
    }
    if all || matches!(what, What::P2) {
        duress_bench::p2::run(opts, &mut f);
    }
    goals(&mut f);
    f.num("bench_seconds", started.elapsed().as_secs_f64(), 1);
    Ok(f)
}

fn write_plot(dir: &std::path::Path, name: &str, svg: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    std::fs::write(&path, svg)?;
    eprintln!("duress-bench: wrote {}", path.display());
    Ok(())
}

/// Date, machine and filesystem, so every run's figures say where they come from.
fn machine(f: &mut Figures, opts: &Options) {
    let out = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    f.put("date", out("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]));
    f.put("nproc", out("nproc", &[]));
    f.put("kernel", out("uname", &["-r"]));
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    f.put("cpu", cpu);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    f.put("loadavg_1m", load.split_whitespace().next().unwrap_or("?"));
    f.put("work_dir_fs", duress_bench::filesystem_of(&opts.work_dir));
    f.put("receiver", duress_bench::receiver::receiver_label());
    f.put("mode", if opts.quick { "quick" } else { "full" });
    f.put("backend", opts.database.backend());
    f.put(
        "database",
        match &opts.database {
            Database::Sqlite => "SQLite in each receiver's data directory".to_owned(),
            Database::Url(url) => duress_receiver::store::DatabaseUrl::new(url.clone()).to_string(),
            Database::TestPg(pg) => duress_bench::pg::describe(pg),
        },
    );
}

/// `goal_*=met|not met|n/a` from the issue's goals.
fn goals(f: &mut Figures) {
    let get = |f: &Figures, k: &str| f.get(k).and_then(|v| v.parse::<f64>().ok());
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "not met",
        None => "n/a",
    };
    let checks: Vec<(&str, Option<bool>)> = vec![
        (
            "goal_p1_p50_le_10ms",
            get(f, "p1_p50_ms").map(|v| v <= 10.0),
        ),
        (
            "goal_p1_p99_le_30ms",
            get(f, "p1_p99_ms").map(|v| v <= 30.0),
        ),
        (
            "goal_p1_p50_le_5x_floor",
            get(f, "p1_p50_over_floor").map(|v| v <= 5.0),
        ),
        (
            "goal_p1b_le_250ms",
            get(f, "p1b_max_ms").map(|v| v <= 250.0),
        ),
        (
            "goal_p3_ge_10000_per_s",
            get(f, "p3_events_per_s").map(|v| v >= 10_000.0),
        ),
        ("goal_p3_ge_half_noop", get(f, "p3_ratio").map(|v| v >= 0.5)),
        (
            "goal_p4_ingest_p99_le_20ms",
            get(f, "p4_ingest_p99_ms").map(|v| v <= 20.0),
        ),
        ("goal_p5_le_5s", get(f, "p5_seconds").map(|v| v <= 5.0)),
        (
            "goal_p2_anon_rss_le_30mb",
            get(f, "p2_anon_rss_mb").map(|v| v <= 30.0),
        ),
        (
            "goal_p2_cpu_le_0.2pct",
            get(f, "p2_cpu_pct").map(|v| v <= 0.2),
        ),
        (
            "goal_p2_le_1kb_per_min",
            get(f, "p2_bytes_per_min").map(|v| v <= 1024.0),
        ),
    ];
    for (name, ok) in checks {
        f.put(name, verdict(ok));
    }
}

/// `duress-receiver serve --data-dir D --listen A [--database URL]`, from this binary (same library call, same
/// log setup); stops on SIGTERM or SIGINT.
fn serve_receiver(
    data_dir: PathBuf,
    listen: std::net::SocketAddr,
    database: Option<String>,
) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("serve-receiver: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listener = std::net::TcpListener::bind(listen)?;
        let shutdown = duress_shutdown::shutdown_signal();
        let mut settings = duress_receiver::Settings::new(data_dir);
        // All simulated stations share 127.0.0.1 (see receiver.rs).
        settings.connections.max_per_address = usize::MAX;
        // P3 measures the store's throughput: each simulated station sends events back to
        // back, far past the per-device token bucket (30, then 1/s) that protects a real
        // receiver from one hostile workstation; without this P3 measures the bucket.
        settings.device_event_burst = u32::MAX;
        settings.device_events_per_second = f64::MAX;
        settings.database = database
            .filter(|d| !d.trim().is_empty())
            .map(duress_receiver::store::DatabaseUrl::new);
        duress_receiver::launch(settings, listener, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve-receiver: {e:#}");
            ExitCode::FAILURE
        }
    }
}
