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
//! - [`admin`]: the admin commands (token creation, listings, export, device status).
//! - [`console`]: the officers' security console (board, incidents, stations, reports, audit
//!   log, accounts), served beside the API by the same router.
//!
//! The binary (`src/main.rs`) only parses the command line and calls [`launch`] or [`admin`].
//! The wire protocol is described in `docs/protocol.md`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod console;
pub mod incidents;
pub mod problem;
pub mod ratelimit;
pub mod records;
pub mod server;
pub mod settings;
pub mod store;
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
pub use records::{DeviceRecord, EventRecord, ExportedEvent, IncidentEvent, IncidentRecord};
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
    let cert_pem_path = prepared.tls.trust_path.clone();
    let cert_sha256 = prepared.tls.fingerprint.clone();
    let login_limiter = prepared.login_limiter.clone();
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
        cert_pem_path,
        cert_sha256,
        data_dir,
        store,
        login_limiter,
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
    /// The PEM file an agent adds as a trust anchor.
    pub cert_pem_path: PathBuf,
    /// SHA-256 fingerprint of that certificate, `AB:CD:…`.
    pub cert_sha256: String,
    pub data_dir: PathBuf,
    /// Where its store is (what the admin functions take).
    pub store: store::StoreLocation,
    /// The console's sign-in limiter (its counters: passwords checked, argon2 peak).
    pub login_limiter: Arc<console::auth::LoginLimiter>,
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

/// Store opened and certificate loaded: everything that can fail before listening.
struct Prepared {
    settings: Settings,
    store: Arc<dyn store::Store>,
    tls: tls::TlsMaterial,
    login_limiter: Arc<console::auth::LoginLimiter>,
}

impl Prepared {
    async fn new(settings: Settings) -> anyhow::Result<Self> {
        let location = settings.store_location();
        let store = store::open(&location)
            .await
            .with_context(|| location.opening())?;
        let tls = match tls::load(&settings).context("loading the TLS certificate") {
            Ok(tls) => tls,
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        };
        let login_limiter = Arc::new(console::auth::LoginLimiter::new(&settings.console));
        Ok(Prepared {
            settings,
            store,
            tls,
            login_limiter,
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
        let state = api::AppState {
            store: self.store.clone(),
            grouping_window: self.settings.grouping_window,
            heartbeat_interval_s: self.settings.heartbeat_interval_s,
            enrollment_failures: Arc::new(ratelimit::FailureLimiter::new(
                self.settings.enrollment_failures_per_minute,
                Duration::from_secs(60),
            )),
            device_events: Arc::new(ratelimit::DeviceBuckets::new(
                self.settings.device_event_burst,
                self.settings.device_events_per_second,
            )),
            body_read_timeout: self.settings.body_read_timeout,
        };
        let console = Arc::new(console::Console::new(
            self.store.clone(),
            self.settings.console.clone(),
            self.settings.heartbeat_interval_s,
            self.login_limiter.clone(),
        ));
        // Background work of the console, stopped when serving ends.
        let pump = tokio::spawn(console::live::run_pump(
            self.store.clone(),
            console.feed.clone(),
        ));
        let escalation = tokio::spawn(console::escalation::run(console.clone()));
        let closing = console.closing.clone();
        let app = console::routes::router(console::WebState {
            api: state,
            console,
        });
        println!("Duress receiver listening on https://{addr}");
        println!("TLS certificate SHA-256: {}", self.tls.fingerprint);
        println!("Agents trust: {}", self.tls.trust_path.display());
        println!(
            "Store: {} ({})",
            self.settings.store_location().describe(),
            self.store.backend()
        );
        tracing::info!(%addr, data_dir = %self.settings.data_dir.display(), store = self.store.backend(), "receiver serving");

        let shutdown = async move {
            shutdown.await;
            // Live streams never finish by themselves: end them so shutdown need not wait.
            let _ = closing.send(true);
        };
        let served = server::serve(
            listener,
            self.tls.server_config.clone(),
            app,
            self.settings.connections.clone(),
            shutdown,
            SHUTDOWN_GRACE,
            ready,
        )
        .await;
        pump.abort();
        escalation.abort();
        // Only after the last request finished: closing checkpoints the WAL.
        self.store.close().await;
        served.context("serving HTTPS")
    }
}
