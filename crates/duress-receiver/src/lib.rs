//! # duress-receiver — verifies, commits and groups duress alarms
//!
//! The security-office half of Duress. An alarm is acknowledged only after it is committed,
//! never lost once acknowledged, never stored twice.
//!
//! - [`settings`]: [`Settings`] and [`TlsSource`], with defaults.
//! - [`tls`]: the rustls server configuration; the self-signed certificate made on first run.
//! - [`api`]: the axum routes (`/v1/enrollments`, `/v1/events`, `/v1/heartbeats`,
//!   `/v1/ping`, `/healthz`) and the verification chain they share.
//! - [`problem`]: RFC 9457 answers for every refusal, including axum's own.
//! - [`store`]: the storage boundary: traits by area, shared types, and one implementation per
//!   backend — SQLite (embedded default) and PostgreSQL (migrations in `migrations/<backend>/`).
//! - [`incidents`]: how an event opens or joins an incident.
//! - [`tokens`]: enrollment token generation and hashing.
//! - [`server`]: the HTTPS accept loop: timeouts, connection caps, the share kept for
//!   enrolled devices, the open-files limit.
//! - [`ratelimit`]: failed-enrollment limiting per client address; the per-device event bucket.
//! - [`records`]: what the admin commands show.
//! - [`ack_key`]: the Ed25519 key that signs acknowledgements (kept in the data directory).
//! - [`admin`]: the admin commands (token creation, listings, export, device status).
//! - [`config`]: the configuration file (`serve --config FILE`): channels, ladders, rules.
//! - [`notify`]: the notifier: ladders planned into the store's outbox, the delivery worker,
//!   the channels (Teams, webhook, SMS, e-mail, VMS).
//! - [`metrics`]: `GET /metrics` (Prometheus/OpenMetrics text) on `--metrics-listen`.
//! - [`console`]: the officers' security console (board, incidents, stations, reports, audit
//!   log, accounts), served beside the API by the same router.
//! - [`floor_plan_image`]: checking an uploaded floor-plan image and re-encoding it as PNG.
//!
//! The binary (`src/main.rs`) only parses the command line and calls [`launch`] or [`admin`].
//! The wire protocol is described in `docs/protocol.md`.
#![forbid(unsafe_code)]

pub mod ack_key;
pub mod admin;
pub mod api;
pub mod backup;
pub mod cap;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod console;
pub mod diskspace;
pub mod duration;
pub mod floor_plan_image;
pub mod incidents;
pub mod integration;
pub mod location_evidence;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod openapi;
pub mod phones;
pub mod problem;
pub mod ratelimit;
pub mod records;
pub mod retention;
pub mod server;
pub mod settings;
pub mod store;
pub mod subnets;
pub mod tls;
pub mod tokens;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;

pub use admin::Approve;
pub use records::{
    DeviceListing, DeviceRecord, EventRecord, ExportedEvent, IncidentEvent, IncidentRecord,
    SelfTestState,
};
pub use settings::{ConnectionLimits, Settings, TlsSource};

/// How long in-flight requests may finish after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves on `listener` (already bound) until `shutdown` resolves, then stops gracefully:
/// no new connections, in-flight requests (and their commits) finish. Opens the store in
/// `settings.data_dir` (migrating it) and loads or creates the TLS certificate first.
pub async fn launch(
    settings: Settings,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Prepared::new(settings)
        .await?
        .serve(listener, shutdown, None)
        .await
}

/// Binds `127.0.0.1:0`, runs [`launch`] on the current tokio runtime and returns once the
/// receiver accepts connections. For tests and embedding.
pub async fn start(settings: Settings) -> anyhow::Result<RunningReceiver> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let data_dir = settings.data_dir.clone();
    let store = settings.store_location();
    let prepared = Prepared::new(settings).await?;
    let console_addr = prepared
        .console_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let cert_pem_path = prepared.tls.trust_path.clone();
    let cert_sha256 = prepared.tls.fingerprint.clone();
    let login_limiter = prepared.login_limiter.clone();
    let ack_jwk = prepared.ack_keys.current().public_jwk().clone();
    let ack_kid = prepared.ack_keys.current().kid().to_owned();
    let metrics_addr = prepared
        .metrics_listener
        .as_ref()
        .map(std::net::TcpListener::local_addr)
        .transpose()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let (ready_tx, ready) = oneshot::channel();
    // Dropping the RunningReceiver drops `stop`, which also shuts the server down.
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn(prepared.serve(listener, shutdown, Some(ready_tx)));
    if ready.await.is_err() {
        // The server ended before it listened: report why.
        return Err(match task.await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => anyhow::anyhow!("the receiver stopped before it listened"),
            Err(e) => anyhow::anyhow!("the receiver task failed: {e}"),
        });
    }
    Ok(RunningReceiver {
        addr,
        url: format!("https://{addr}"),
        console_addr,
        console_url: format!("https://{}", console_addr.unwrap_or(addr)),
        cert_pem_path,
        cert_sha256,
        ack_jwk,
        ack_kid,
        data_dir,
        store,
        login_limiter,
        metrics_addr,
        stop: Some(stop),
        task,
    })
}

/// A receiver started with [`start`].
#[derive(Debug)]
pub struct RunningReceiver {
    pub addr: SocketAddr,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The console's own listener ([`Settings::console_listen`]), if any.
    pub console_addr: Option<SocketAddr>,
    /// Where the console is: its own listener's URL, else [`RunningReceiver::url`].
    pub console_url: String,
    /// The PEM file an agent adds as a trust anchor.
    pub cert_pem_path: PathBuf,
    /// SHA-256 fingerprint of that certificate, `AB:CD:…`.
    pub cert_sha256: String,
    /// The current acknowledgement key (what an agent's `ack_key` names) and its thumbprint.
    pub ack_jwk: duress_core::Jwk,
    pub ack_kid: String,
    pub data_dir: PathBuf,
    /// Where its store is (what the admin functions take).
    pub store: store::StoreLocation,
    /// The console's sign-in limiter (its counters: passwords checked, argon2 peak).
    pub login_limiter: Arc<console::auth::LoginLimiter>,
    /// Where `GET /metrics` is served (plain HTTP), with [`Settings::metrics_listen`].
    pub metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningReceiver {
    /// Stops gracefully and waits until the store is closed.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| anyhow::anyhow!("the receiver task failed: {e}"))?
    }
}

/// Connections most a console listener holds: officers' browsers are tens, not thousands.
const CONSOLE_CONNECTIONS: usize = 256;

/// With a console listener beside the agent API, the connections the open-files limit allows
/// are shared between the two accept loops (each would otherwise claim all of them): the
/// console gets [`CONSOLE_CONNECTIONS`] (at most a quarter), the agent API the rest.
fn split_connection_limits(limits: &ConnectionLimits) -> (ConnectionLimits, ConnectionLimits) {
    let total = server::Caps::new(limits, server::raise_open_files_limit()).total;
    let console_share = CONSOLE_CONNECTIONS.min(total / 4).max(8);
    let mut api = limits.clone();
    api.max_connections = Some(total.saturating_sub(console_share).max(8));
    let mut console = limits.clone();
    console.max_connections = Some(console_share);
    (api, console)
}

/// Store opened and certificate loaded: everything that can fail before listening.
struct Prepared {
    settings: Settings,
    store: Arc<dyn store::Store>,
    tls: tls::TlsMaterial,
    login_limiter: Arc<console::auth::LoginLimiter>,
    ack_keys: Arc<ack_key::AckKeys>,
    /// `DATA_DIR/totp-secrets.key`: what TOTP secrets are sealed with (console::totp_key).
    totp_key: Arc<console::totp_key::TotpKey>,
    notifier: Option<Arc<notify::Notifier>>,
    /// Bound before serving, so a taken metrics address fails the start, not later.
    metrics_listener: Option<std::net::TcpListener>,
    /// Bound from [`Settings::console_listen`] before anything listens.
    console_listener: Option<std::net::TcpListener>,
}

impl Prepared {
    async fn new(settings: Settings) -> anyhow::Result<Self> {
        let location = settings.store_location();
        let store = store::open(&location)
            .await
            .with_context(|| location.opening())?;
        store.mute_doorbell(settings.mute_doorbell);
        let tls = match tls::load(&settings).context("loading the TLS certificate") {
            Ok(tls) => tls,
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        };
        let login_limiter = Arc::new(console::auth::LoginLimiter::new(&settings.console));
        let ack_keys = match ack_key::AckKeys::load_or_create(&settings.data_dir)
            .context("loading the acknowledgement key")
        {
            Ok(keys) => Arc::new(keys),
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        };
        let totp_key = match console::totp_key::TotpKey::load_or_create(&settings.data_dir)
            .context("loading the TOTP secret key")
        {
            Ok(key) => Arc::new(key),
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        };
        // Without a configuration file nothing is enqueued: console only.
        let notifier = match settings
            .config
            .clone()
            .map(notify::Notifier::new)
            .transpose()
        {
            Ok(n) => n.map(|mut n| {
                n.retry_base = settings.notify_retry_base;
                Arc::new(n)
            }),
            Err(e) => {
                store.close().await;
                anyhow::bail!("configuration: {e}");
            }
        };
        let metrics_listener = match settings.metrics_listen.map(|a| {
            std::net::TcpListener::bind(a).with_context(|| format!("binding --metrics-listen {a}"))
        }) {
            Some(Err(e)) => {
                store.close().await;
                return Err(e);
            }
            Some(Ok(l)) => Some(l),
            None => None,
        };
        let console_listener = match settings.console_listen.map(|addr| {
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("binding the console listener {addr}"))
        }) {
            None => None,
            Some(Ok(l)) => Some(l),
            Some(Err(e)) => {
                store.close().await;
                return Err(e);
            }
        };
        store.set_planner(notifier.as_ref().map(|n| n.planner()));
        Ok(Prepared {
            metrics_listener,
            console_listener,
            settings,
            store,
            tls,
            login_limiter,
            ack_keys,
            totp_key,
            notifier,
        })
    }

    async fn serve(
        self,
        listener: std::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        ready: Option<oneshot::Sender<()>>,
    ) -> anyhow::Result<()> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let disk = Arc::new(diskspace::DiskGuard::new(
            self.settings
                .free_space
                .clone()
                .unwrap_or_else(|| Arc::new(diskspace::Statvfs(self.settings.data_dir.clone()))),
            self.settings.disk_watermark,
        ));
        // Logs the state at start when it is low already.
        let _ = disk.low();
        let state = api::AppState {
            store: self.store.clone(),
            grouping_window: self.settings.grouping_window,
            group_same_room: self.settings.group_same_room,
            heartbeat_interval_s: self.settings.heartbeat_interval_s,
            enrollment_failures: Arc::new(ratelimit::FailureLimiter::new(
                self.settings.enrollment_failures_per_minute,
                Duration::from_secs(60),
            )),
            unknown_kids: Arc::new(ratelimit::FailureLimiter::new(
                self.settings.unknown_kids_per_minute,
                Duration::from_secs(60),
            )),
            device_events: Arc::new(ratelimit::DeviceBuckets::new(
                self.settings.device_event_burst,
                self.settings.device_events_per_second,
            )),
            body_read_timeout: self.settings.body_read_timeout,
            ack_keys: self.ack_keys.clone(),
            disk: disk.clone(),
            phones: Arc::default(),
        };
        let mut console_settings = self.settings.console.clone();
        console_settings.disk = Some(disk);
        // HSTS only with a real certificate: never pin browsers to a self-signed one.
        console_settings.hsts = matches!(self.settings.tls, TlsSource::Files { .. });
        if let Some(config) = &self.settings.config {
            console_settings.channels = config
                .channels
                .iter()
                .map(|c| settings::ChannelSummary {
                    name: c.name().to_owned(),
                    kind: c.kind(),
                    target: c.redacted_target(),
                })
                .collect();
            console_settings.ladders = config.ladders.iter().map(config::describe_ladder).collect();
        }
        let supervision_config = self
            .settings
            .config
            .as_ref()
            .and_then(|c| c.supervision.clone());
        // The sweep and the worker are watched: three missed intervals are a console banner.
        let watchdog = Arc::new(notify::watch::Watchdog::new(
            supervision_config
                .as_ref()
                .map(notify::supervision::interval),
            self.notifier
                .as_ref()
                .map(|_| self.settings.notify_worker_watch),
            self.settings.notify_stall.clone(),
        ));
        let mut console = console::Console::new(
            self.store.clone(),
            console_settings,
            self.settings.heartbeat_interval_s,
            self.login_limiter.clone(),
        );
        console.watchdog = watchdog.clone();
        console.config = self.settings.config.clone();
        // Single sign-on: the provider is discovered in the background (it may be down now).
        let sso = match self.settings.config.as_ref().and_then(|c| {
            c.oidc
                .as_ref()
                .map(|o| console::oidc::Sso::new(o, c.public_url.as_deref()))
        }) {
            Some(sso) => Some(sso.map_err(|e| anyhow::anyhow!("{e}"))?),
            None => None,
        };
        let sso_discovery = sso.clone().map(|s| tokio::spawn(s.run()));
        console.sso = sso;
        console.node = cluster::NodeIdentity::new(self.settings.node_name.as_deref());
        console.totp_key = Some(self.totp_key.clone());
        let console = Arc::new(console);
        // Background work of the console, stopped when serving ends.
        let pump = tokio::spawn(console::live::run_pump(
            self.store.clone(),
            console.feed.clone(),
        ));
        let escalation = tokio::spawn(console::escalation::run(console.clone()));
        let cert_watch = tokio::spawn(tls::watch_certificate(self.tls.cert.clone()));
        // The notifier's delivery worker: apart from the alarm path (ingest only writes rows).
        let notifier = self
            .notifier
            .clone()
            .map(|n| tokio::spawn(notify::worker::run(self.store.clone(), n, watchdog.clone())));
        // NULL supervision messages to the DC-09 central stations (none configured: no task).
        let dc09_null = self
            .notifier
            .clone()
            .map(|n| tokio::spawn(notify::dc09::supervise(n.config.clone(), n.dc09.clone())));
        let supervision = supervision_config.map(|s| {
            tokio::spawn(notify::supervision::run(
                self.store.clone(),
                s,
                self.settings.heartbeat_interval_s,
                watchdog.clone(),
            ))
        });
        // This node's registration and the database redundancy banner.
        let cluster_task = tokio::spawn(cluster::run(
            self.store.clone(),
            console.node.clone(),
            watchdog.clone(),
        ));
        let watch = tokio::spawn(notify::watch::run(self.store.clone(), watchdog));
        // The SIEM feed: one task per [[siem]] sink, apart from the alarm path.
        let siem: Vec<_> = self
            .settings
            .config
            .iter()
            .flat_map(|c| c.siem.iter().cloned())
            .map(|sink| {
                tokio::spawn(notify::siem::run(
                    self.store.clone(),
                    sink,
                    self.settings.notify_retry_base,
                ))
            })
            .collect();
        // GET /metrics on its own listener; stopped when serving ends.
        let metrics = match self.metrics_listener {
            Some(l) => {
                l.set_nonblocking(true)?;
                let addr = l.local_addr()?;
                let listener = tokio::net::TcpListener::from_std(l)?;
                let interval = Duration::from_secs(self.settings.heartbeat_interval_s);
                let grace = self.settings.console.station_grace;
                let source = metrics::ScrapeSource {
                    store: self.store.clone(),
                    station_state: Arc::new(move |d, now| station_state(d, now, interval, grace)),
                };
                Some((
                    addr,
                    tokio::spawn(metrics::serve(listener, source, std::future::pending())),
                ))
            }
            None => None,
        };
        // The daily purge (`[retention]`), apart from the alarm path like the sweep.
        let retention = self
            .settings
            .config
            .as_ref()
            .and_then(|c| c.retention.clone())
            .map(|r| tokio::spawn(retention::run(self.store.clone(), r)));
        let closing = console.closing.clone();
        let web = console::WebState {
            api: state,
            console,
        };
        let console_listener = self.console_listener;
        let console_addr = console_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        // What operators and scripts read on stdout. Written without `println!`, which panics
        // when stdout is closed (a parent that read the first line and went away): a receiver
        // must never die because nobody reads its banner.
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "Duress receiver listening on https://{addr}");
            let _ = writeln!(out, "TLS certificate SHA-256: {}", self.tls.fingerprint);
            let _ = writeln!(out, "Agents trust: {}", self.tls.trust_path.display());
            let _ = writeln!(
                out,
                "Acknowledgement key (policy ack_key): {}",
                self.ack_keys.current_jwk_json()
            );
            let _ = writeln!(
                out,
                "Acknowledgement key thumbprint: {}",
                self.ack_keys.current().kid()
            );
            if let Some((addr, _)) = &metrics {
                let _ = writeln!(out, "Metrics: http://{addr}/metrics");
            }
            let _ = writeln!(
                out,
                "Store: {} ({})",
                self.settings.store_location().describe(),
                self.store.backend()
            );
            // Last, so scripts that read the lines above by position are unaffected.
            if let Some(console_addr) = console_addr {
                let _ = writeln!(out, "Console listening on https://{console_addr}");
            }
            let _ = out.flush();
        }
        tracing::info!(%addr, data_dir = %self.settings.data_dir.display(), store = self.store.backend(), "receiver serving");

        // One shutdown for every listener, and the live streams ended with it.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let shutdown = tokio::spawn(async move {
            shutdown.await;
            // Live streams never finish by themselves: end them so shutdown need not wait.
            let _ = closing.send(true);
            let _ = stop.send(true);
        });
        let stop_signal = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        let served = match console_listener {
            None => {
                server::serve(
                    listener,
                    self.tls.server_config.clone(),
                    console::routes::router_for(web, console::routes::Serves::Both),
                    self.settings.connections.clone(),
                    stop_signal(),
                    SHUTDOWN_GRACE,
                    ready,
                )
                .await
            }
            Some(console_listener) => {
                let (api_limits, console_limits) =
                    split_connection_limits(&self.settings.connections);
                let (api_ready, api_listening) = oneshot::channel();
                let (console_ready, console_listening) = oneshot::channel();
                let both_listening = async move {
                    if api_listening.await.is_ok()
                        && console_listening.await.is_ok()
                        && let Some(ready) = ready
                    {
                        let _ = ready.send(());
                    }
                    Ok(())
                };
                // Each listener has its own accept loop (the same hardened one, with its own
                // caps); the first to fail ends both.
                tokio::try_join!(
                    server::serve(
                        listener,
                        self.tls.server_config.clone(),
                        console::routes::router_for(web.clone(), console::routes::Serves::Api),
                        api_limits,
                        stop_signal(),
                        SHUTDOWN_GRACE,
                        Some(api_ready),
                    ),
                    server::serve(
                        console_listener,
                        self.tls.server_config.clone(),
                        console::routes::router_for(web, console::routes::Serves::Console),
                        console_limits,
                        stop_signal(),
                        SHUTDOWN_GRACE,
                        Some(console_ready),
                    ),
                    both_listening,
                )
                .map(|_| ())
            }
        };
        shutdown.abort();
        pump.abort();
        if let Some(task) = sso_discovery {
            task.abort();
        }
        escalation.abort();
        cert_watch.abort();
        watch.abort();
        cluster_task.abort();
        for task in [notifier, dc09_null, supervision, retention]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        if let Some((_, task)) = metrics {
            task.abort();
        }
        for task in siem {
            task.abort();
        }
        // Only after the last request finished: closing checkpoints the WAL.
        self.store.close().await;
        served.context("serving HTTPS")
    }
}

/// A station's state on `/metrics` (`duress_stations{state}`): an active station's liveness by
/// the Stations page's rule (stale after one heartbeat interval + grace, offline after two),
/// else its status. Here, at the root, because it joins the console's rule to the metrics.
fn station_state(
    d: &records::DeviceRecord,
    now: time::OffsetDateTime,
    interval: Duration,
    grace: Duration,
) -> &'static str {
    use console::stations::{Liveness, liveness};
    if d.status != duress_core::DeviceStatus::Active {
        // pending, disabled, revoked (a status added later is counted only once it is listed
        // in metrics::STATION_STATES).
        return d.status.as_str();
    }
    match liveness(d.last_heartbeat_at, now, interval, grace) {
        Liveness::Online => "ok",
        Liveness::Stale => "stale",
        Liveness::Offline => "offline",
        Liveness::Never => "never_seen",
    }
}
