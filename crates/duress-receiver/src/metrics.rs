//! `GET /metrics` for the campus monitoring system (docs/operations.md, "Monitoring"): the
//! OpenMetrics 1.0 text format to a scraper that asks for it (`Accept:
//! application/openmetrics-text`, as Prometheus does), else the Prometheus text format 0.0.4
//! (what other scrapers and `curl` get).
//!
//! Served only on its own plain-HTTP listener, `serve --metrics-listen ADDR`, never on the
//! agents' and officers' HTTPS listener: nothing is public by default, and the operator binds it
//! to loopback or the management network. It shows counts only: no device id, location, user
//! name, address or secret ever becomes a label (label values come from fixed lists below, so
//! a hostile client cannot grow the series either).
//!
//! Two kinds of values:
//! - **Counters and the latency histogram** are counted where things happen (ingest, store
//!   failures, TLS handshakes, notification attempts). They are this process's, as with every
//!   Prometheus client: a receiver process is one receiver; after a restart they start at 0,
//!   which `rate()`/`increase()` handle.
//! - **Gauges of the state** (open and unclaimed incidents, the oldest unclaimed incident's
//!   age, stations by state, notifications by status) are read from the store at each scrape,
//!   so on PostgreSQL every receiver of a cluster reports the cluster's state, and they are
//!   right after a restart. A store that cannot be read leaves them at their last values and
//!   sets `duress_store_up` to 0 (and counts a database error); counters are still served.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use time::OffsetDateTime;

use crate::store::{IncidentFilter, Store};

/// The `Content-Type` of an OpenMetrics answer.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The `Content-Type` of a Prometheus text answer.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which text format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Prometheus,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it (with any non-zero quality), else the
    /// Prometheus text format.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let wants = accept.is_some_and(|a| {
            a.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                parts
                    .next()
                    .is_some_and(|m| m.eq_ignore_ascii_case("application/openmetrics-text"))
                    && !parts.any(|p| {
                        p.strip_prefix("q=")
                            .and_then(|q| q.parse::<f64>().ok())
                            .is_some_and(|q| q <= 0.0)
                    })
            })
        });
        if wants {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
        }
    }
}

/// The Prometheus text format 0.0.4 from prometheus-client's OpenMetrics text (the crate
/// encodes only OpenMetrics). Written here because the two formats differ, for the families
/// this module registers (counters, gauges, classic histograms, no exemplars), only in three
/// lines: a counter's `# HELP`/`# TYPE` name the family with its `_total` suffix (OpenMetrics
/// names it without: a Prometheus text parser would otherwise read the samples as an untyped
/// family), and `# UNIT` and `# EOF` do not exist (they would be read as comments, but are
/// left out to be exact). Sample lines are the same in both.
fn to_prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Station states, as `duress_stations{state}`: an active station's liveness from its
/// heartbeats (the Stations page's thresholds), else its status.
pub const STATION_STATES: &[&str] = &[
    "ok",
    "stale",
    "offline",
    "never_seen",
    "pending",
    "disabled",
    "revoked",
];

/// Notification statuses (the outbox's `status` column), as `duress_notifications{status}`.
pub const NOTIFICATION_STATUSES: &[&str] =
    &["pending", "delivered", "accepted", "failed", "stopped"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IngestLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabel {
    component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// How one `POST /v1/events` ended, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// A new event committed (and acknowledged).
    Committed,
    /// A repeat of a committed event, answered with its stored acknowledgement.
    Duplicate,
    /// Refused (bad signature, claims, clock, device status, id conflict): 4xx.
    Refused,
    /// The device's token bucket was empty: 429, the agent resends.
    RateLimited,
    /// The store could not commit: 503, the agent keeps the alarm and resends.
    Error,
}

impl IngestOutcome {
    fn as_str(self) -> &'static str {
        match self {
            IngestOutcome::Committed => "committed",
            IngestOutcome::Duplicate => "duplicate",
            IngestOutcome::Refused => "refused",
            IngestOutcome::RateLimited => "rate_limited",
            IngestOutcome::Error => "error",
        }
    }
}

/// Why a TLS handshake was refused (`duress_tls_handshakes_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRefusal {
    /// The handshake failed (no shared version or cipher suite, not TLS, a bad record).
    Failed,
    /// Not done within the handshake timeout.
    Timeout,
}

/// The process's metrics (see the module documentation for why one per process).
pub struct Metrics {
    registry: Registry,
    events_ingested: Family<IngestLabels, Counter>,
    ingest_duration: Histogram,
    database_errors: Family<ComponentLabel, Counter>,
    tls_refused: Family<ReasonLabel, Counter>,
    notification_attempts: Family<OutcomeLabel, Counter>,
    store_up: Gauge,
    incidents_open: Gauge,
    incidents_unclaimed: Gauge,
    oldest_unclaimed: Gauge<f64, AtomicU64>,
    stations: Family<StateLabel, Gauge>,
    notifications: Family<StatusLabel, Gauge>,
    /// One scrape at a time: a scrape sets the gauges, then encodes them.
    scrape: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// This process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let events_ingested = Family::<IngestLabels, Counter>::default();
        registry.register(
            "duress_events_ingested",
            "Signed events (POST /v1/events) by kind (duress, test, cancel, unknown when the claims did not parse) and outcome (committed, duplicate, refused, rate_limited, error)",
            events_ingested.clone(),
        );
        // From 1 ms to ~16 s: a commit on SQLite takes a few ms, a slow disk or a PostgreSQL
        // fail-over seconds; an agent's request timeout is 10 s.
        let ingest_duration = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register_with_unit(
            "duress_ingest_duration",
            "Time from a signed event's body read to its answer (verification, commit, acknowledgement signature)",
            Unit::Seconds,
            ingest_duration.clone(),
        );
        let database_errors = Family::<ComponentLabel, Counter>::default();
        registry.register(
            "duress_database_errors",
            "Store operations that failed (the database unavailable or its data inconsistent), by component (api, console, notifier, metrics)",
            database_errors.clone(),
        );
        let tls_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "duress_tls_handshakes_refused",
            "TLS handshakes that did not complete, by reason (failed, timeout)",
            tls_refused.clone(),
        );
        let notification_attempts = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "duress_notification_attempts",
            "Notification delivery attempts by outcome (delivered, accepted, retry, failed: given up)",
            notification_attempts.clone(),
        );
        let store_up = Gauge::default();
        registry.register(
            "duress_store_up",
            "1 when the last scrape could read the store, else 0 (the state gauges then keep their previous values)",
            store_up.clone(),
        );
        let incidents_open = Gauge::default();
        registry.register(
            "duress_incidents_open",
            "Open incidents (not resolved)",
            incidents_open.clone(),
        );
        let incidents_unclaimed = Gauge::default();
        registry.register(
            "duress_incidents_unclaimed",
            "Open incidents no officer has claimed",
            incidents_unclaimed.clone(),
        );
        let oldest_unclaimed = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "duress_oldest_unclaimed_incident_age",
            "Age of the oldest open incident nobody claimed (0 when there is none)",
            Unit::Seconds,
            oldest_unclaimed.clone(),
        );
        let stations = Family::<StateLabel, Gauge>::default();
        registry.register(
            "duress_stations",
            "Enrolled stations by state: an active station's liveness from its heartbeats (ok, stale, offline, never_seen), else its status (pending, disabled, revoked)",
            stations.clone(),
        );
        let notifications = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "duress_notifications",
            "Notifications in the outbox by status: pending is the queue depth, failed the given-up ones",
            notifications.clone(),
        );
        // Every label value a dashboard or alert names exists from the start, at 0: an alert
        // on `increase(...)` or a missing series must not wait for the first occurrence.
        for kind in ["duress", "test", "cancel", "unknown"] {
            for outcome in [
                IngestOutcome::Committed,
                IngestOutcome::Duplicate,
                IngestOutcome::Refused,
                IngestOutcome::RateLimited,
                IngestOutcome::Error,
            ] {
                let _ = events_ingested.get_or_create(&IngestLabels {
                    kind,
                    outcome: outcome.as_str(),
                });
            }
        }
        for component in ["api", "console", "notifier", "metrics"] {
            let _ = database_errors.get_or_create(&ComponentLabel { component });
        }
        for reason in ["failed", "timeout"] {
            let _ = tls_refused.get_or_create(&ReasonLabel { reason });
        }
        for outcome in ["delivered", "accepted", "retry", "failed"] {
            let _ = notification_attempts.get_or_create(&OutcomeLabel { outcome });
        }
        for state in STATION_STATES {
            let _ = stations.get_or_create(&StateLabel { state });
        }
        for status in NOTIFICATION_STATUSES {
            let _ = notifications.get_or_create(&StatusLabel { status });
        }
        Metrics {
            registry,
            events_ingested,
            ingest_duration,
            database_errors,
            tls_refused,
            notification_attempts,
            store_up,
            incidents_open,
            incidents_unclaimed,
            oldest_unclaimed,
            stations,
            notifications,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// Counts one `POST /v1/events` and its time.
    pub fn event_ingested(
        &self,
        kind: Option<duress_core::EventKind>,
        outcome: IngestOutcome,
        took: Duration,
    ) {
        let kind = kind.map_or("unknown", |k| k.as_str());
        self.events_ingested
            .get_or_create(&IngestLabels {
                kind,
                outcome: outcome.as_str(),
            })
            .inc();
        self.ingest_duration.observe(took.as_secs_f64());
    }

    /// Counts a failed store operation of `component` (`api`, `console`, `notifier`).
    pub fn database_error(&self, component: &'static str) {
        self.database_errors
            .get_or_create(&ComponentLabel { component })
            .inc();
    }

    pub fn tls_refused(&self, reason: HandshakeRefusal) {
        let reason = match reason {
            HandshakeRefusal::Failed => "failed",
            HandshakeRefusal::Timeout => "timeout",
        };
        self.tls_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a notification attempt: `delivered`, `accepted`, `retry` (failed, will be
    /// retried) or `failed` (given up).
    pub fn notification_attempt(&self, outcome: &'static str) {
        self.notification_attempts
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Reads the state gauges from the store, then encodes everything in `format`.
    pub async fn render(&self, source: &ScrapeSource, format: Format) -> String {
        let _one = self.scrape.lock().await;
        match self.read_state(source).await {
            Ok(()) => {
                self.store_up.set(1);
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: reading the store failed");
                self.database_error("metrics");
                self.store_up.set(0);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        match format {
            Format::OpenMetrics => out,
            Format::Prometheus => to_prometheus_text(&out),
        }
    }

    async fn read_state(&self, source: &ScrapeSource) -> crate::store::StoreResult<()> {
        let now = crate::clock::receiver_now();
        let open = source.store.list_incidents(IncidentFilter::Open).await?;
        let devices = source.store.list_devices().await?;
        let counts = source.store.notification_counts().await?;

        let unclaimed: Vec<OffsetDateTime> = open
            .iter()
            .filter(|i| i.status == "open" && i.claimed_by.is_none())
            .map(|i| i.opened_at)
            .collect();
        let oldest = unclaimed
            .iter()
            .min()
            .map_or(0.0, |t| (now - *t).as_seconds_f64().max(0.0));
        self.incidents_open.set(
            i64::try_from(open.iter().filter(|i| i.status == "open").count()).unwrap_or(i64::MAX),
        );
        self.incidents_unclaimed
            .set(i64::try_from(unclaimed.len()).unwrap_or(i64::MAX));
        self.oldest_unclaimed.set(oldest);

        let mut by_state = [0i64; STATION_STATES.len()];
        for d in &devices {
            let state = (source.station_state)(d, now);
            if let Some(i) = STATION_STATES.iter().position(|s| *s == state) {
                by_state[i] += 1;
            }
        }
        for (state, n) in STATION_STATES.iter().zip(by_state) {
            self.stations.get_or_create(&StateLabel { state }).set(n);
        }
        for status in NOTIFICATION_STATUSES {
            let n = counts
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| i64::try_from(*n).unwrap_or(i64::MAX));
            self.notifications
                .get_or_create(&StatusLabel { status })
                .set(n);
        }
        Ok(())
    }
}

/// A station's `state` label (one of [`STATION_STATES`]) at a time.
pub type StationState = std::sync::Arc<
    dyn Fn(&crate::records::DeviceRecord, OffsetDateTime) -> &'static str + Send + Sync,
>;

/// What a scrape reads the state from. The station states come from the server (the Stations
/// page's liveness rule, `crate::station_state`), so this module depends on no other part of
/// the receiver but the store: the API, the console and the server all count into it.
#[derive(Clone)]
pub struct ScrapeSource {
    pub store: std::sync::Arc<dyn Store>,
    pub station_state: StationState,
}

impl std::fmt::Debug for ScrapeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeSource")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The metrics listener's router: `GET /metrics`, nothing else (404).
pub fn router(source: ScrapeSource) -> axum::Router {
    use axum::http::header;
    use axum::response::IntoResponse;
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |axum::extract::State(source): axum::extract::State<ScrapeSource>,
                 headers: axum::http::HeaderMap| async move {
                    let format = Format::from_accept(
                        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
                    );
                    let body = global().render(&source, format).await;
                    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
                },
            ),
        )
        .with_state(source)
}

/// Serves [`router`] on `listener` (plain HTTP) until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: ScrapeSource,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(source))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked_for() {
        // What Prometheus 2.x sends.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text;q=0, text/plain")),
            Format::Prometheus
        );
    }

    #[test]
    fn prometheus_text_names_counters_with_total() {
        let om = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total 3\n\
                  # HELP d_seconds D.\n# TYPE d_seconds histogram\n# UNIT d_seconds seconds\n\
                  d_seconds_sum 0.5\n# HELP g G.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\n\
             a_requests_total 3\n# HELP d_seconds D.\n# TYPE d_seconds histogram\n\
             d_seconds_sum 0.5\n# HELP g G.\n# TYPE g gauge\ng 1\n"
        );
    }
}
