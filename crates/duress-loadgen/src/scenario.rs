//! One load run: enroll N stations, heartbeat them at an interval for a duration, fire an alarm
//! burst in the middle, then check every sent id against the receiver's store.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use duress_core::EventKind;
use futures::StreamExt as _;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::client::https_client;
use crate::console_feed;
use crate::station::{Delivery, SimStation};
use crate::stats::Percentiles;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    pub ca_cert: PathBuf,
    /// The receiver's data dir: lets the run create its token and officer account and check
    /// the store at the end. Without it, `token` is needed and only acknowledgements count.
    pub data_dir: Option<PathBuf>,
    pub token: Option<String>,
    /// Uses of the token the run creates (default: one per station).
    pub token_uses: Option<u32>,
    pub stations: usize,
    pub heartbeat_interval: Duration,
    pub alarms: usize,
    /// The alarms are pressed evenly spread over this span.
    pub burst_within: Duration,
    /// How long stations heartbeat; the burst starts in the middle.
    pub duration: Duration,
    /// Concurrent requests (keep-alive connections) for heartbeats and enrollment; alarms get
    /// their own connections (one per alarm in flight), as each workstation has its own.
    pub connections: usize,
    /// Subscribe to the console's live stream and measure delivery to it (needs `data_dir`).
    pub console: bool,
    /// How long an alarm may take to be acknowledged before it counts as not acknowledged.
    pub alarm_deadline: Duration,
}

/// The figures of a run, printed as `name=value` lines.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub stations: usize,
    pub enroll_s: f64,
    pub heartbeats_sent: u64,
    pub heartbeats_failed: u64,
    pub heartbeats_per_s: f64,
    pub heartbeat_latency: Percentiles,
    pub sent: usize,
    pub acknowledged: usize,
    /// `None` without a data dir.
    pub stored: Option<usize>,
    pub lost: Option<usize>,
    pub duplicated: Option<usize>,
    pub burst_span_s: f64,
    pub events_per_s: f64,
    pub ack_latency: Percentiles,
    /// `None` when the console stream was not measured.
    pub console_delivered: Option<usize>,
    pub console_latency: Percentiles,
    pub console_note: String,
}

impl Report {
    pub fn lines(&self) -> Vec<String> {
        let opt = |v: Option<usize>| v.map_or("n/a".to_owned(), |v| v.to_string());
        let mut l = vec![
            format!("stations={}", self.stations),
            format!("enroll_s={:.1}", self.enroll_s),
            format!("heartbeats_sent={}", self.heartbeats_sent),
            format!("heartbeats_failed={}", self.heartbeats_failed),
            format!("heartbeats_per_s={:.1}", self.heartbeats_per_s),
        ];
        l.extend(self.heartbeat_latency.lines("heartbeat_latency"));
        l.extend([
            format!("sent={}", self.sent),
            format!("acknowledged={}", self.acknowledged),
            format!("stored={}", opt(self.stored)),
            format!("lost={}", opt(self.lost)),
            format!("duplicated={}", opt(self.duplicated)),
            format!("burst_span_s={:.3}", self.burst_span_s),
            format!("events_per_s={:.1}", self.events_per_s),
        ]);
        l.extend(self.ack_latency.lines("ack_latency"));
        match self.console_delivered {
            Some(n) => {
                l.push(format!("console_delivered={n}"));
                l.extend(self.console_latency.lines("console_latency"));
            }
            None => l.push(format!("console=not measured ({})", self.console_note)),
        }
        l
    }

    /// Nothing lost, nothing duplicated, everything acknowledged.
    pub fn clean(&self) -> bool {
        self.acknowledged == self.sent
            && self.lost.unwrap_or(0) == 0
            && self.duplicated.unwrap_or(0) == 0
    }
}

/// Runs the load and checks the store. Progress goes to stderr.
pub async fn run(cfg: LoadConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(cfg.stations >= 1, "at least one station");
    anyhow::ensure!(cfg.connections >= 1, "at least one connection");
    let mut report = Report {
        stations: cfg.stations,
        ..Default::default()
    };
    let token = match (&cfg.token, &cfg.data_dir) {
        (Some(t), _) => t.clone(),
        (None, Some(dir)) => {
            let uses = cfg
                .token_uses
                .unwrap_or(u32::try_from(cfg.stations).unwrap_or(u32::MAX));
            duress_receiver::admin::create_token(
                dir,
                uses,
                Some(Duration::from_secs(6 * 3600)),
                duress_receiver::Approve::Auto,
            )
            .await
            .context("creating the enrollment token")?
        }
        (None, None) => anyhow::bail!("give --token, or --data-dir to create one"),
    };
    let client = https_client(&cfg.ca_cert, cfg.connections)?;
    let alarm_client = https_client(&cfg.ca_cert, cfg.alarms.max(1))?;

    // 1. Enrollment, `connections` at a time.
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(600);
    let enrolled: Vec<anyhow::Result<SimStation>> = futures::stream::iter(0..cfg.stations)
        .map(|i| {
            let (client, url, token) = (client.clone(), cfg.url.clone(), token.clone());
            async move {
                let mut s = SimStation::new(i);
                s.enroll(&client, &url, &token, deadline).await?;
                Ok(s)
            }
        })
        .buffer_unordered(cfg.connections)
        .collect()
        .await;
    let stations: Vec<Arc<SimStation>> = enrolled
        .into_iter()
        .map(|r| r.map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    report.enroll_s = t0.elapsed().as_secs_f64();
    eprintln!(
        "loadgen: {} stations enrolled in {:.1} s",
        stations.len(),
        report.enroll_s
    );

    // 2. The console stream, if asked for.
    let mut feed = None;
    if cfg.console {
        match &cfg.data_dir {
            Some(dir) => {
                let r = async {
                    let (u, p) = console_feed::create_officer(dir).await?;
                    let cookie = console_feed::sign_in(&client, &cfg.url, &u, &p).await?;
                    console_feed::subscribe(&client, &cfg.url, &cookie).await
                }
                .await;
                match r {
                    Ok(f) => feed = Some(f),
                    Err(e) => report.console_note = format!("console stream unavailable: {e:#}"),
                }
            }
            None => report.console_note = "needs --data-dir to create an officer".into(),
        }
    } else {
        report.console_note = "not asked for (--console)".into();
    }

    // 3. Heartbeats: each station on its own phase of the interval, `connections` in flight.
    let start = Instant::now();
    let end = start + cfg.duration;
    let permits = Arc::new(Semaphore::new(cfg.connections));
    let hb_sent = Arc::new(AtomicU64::new(0));
    let hb_failed = Arc::new(AtomicU64::new(0));
    let hb_latency = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let n = stations.len() as u32;
    let mut hb_tasks = Vec::with_capacity(stations.len());
    for (i, s) in stations.iter().enumerate() {
        let (s, client, url) = (s.clone(), client.clone(), cfg.url.clone());
        let (permits, sent, failed, lat) = (
            permits.clone(),
            hb_sent.clone(),
            hb_failed.clone(),
            hb_latency.clone(),
        );
        let interval = cfg.heartbeat_interval;
        let phase = interval / n * i as u32;
        hb_tasks.push(tokio::spawn(async move {
            let mut next = start + phase;
            while next < end {
                tokio::time::sleep_until(next.into()).await;
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                let t = Instant::now();
                let ok = s.send_heartbeat(&client, &url).await.is_ok();
                sent.fetch_add(1, Ordering::Relaxed);
                if ok {
                    lat.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(t.elapsed());
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                next += interval;
            }
        }));
    }

    // 4. The burst, in the middle of the run: alarm j pressed at j/M of the burst span, each on
    //    its own station (cycling when there are more alarms than stations).
    let burst_at = start + cfg.duration / 2;
    let mut alarm_tasks = Vec::with_capacity(cfg.alarms);
    for j in 0..cfg.alarms {
        let s = stations[j % stations.len()].clone();
        let (client, url) = (alarm_client.clone(), cfg.url.clone());
        let offset = cfg
            .burst_within
            .mul_f64(j as f64 / cfg.alarms.max(1) as f64);
        let alarm_deadline = cfg.alarm_deadline;
        alarm_tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((burst_at + offset).into()).await;
            let pressed = Instant::now();
            let claims = s.new_event(EventKind::Duress);
            let d = s
                .deliver(&client, &url, &claims, pressed + alarm_deadline)
                .await;
            (pressed, d, Instant::now())
        }));
    }
    let mut deliveries: Vec<(Instant, Delivery, Instant)> = Vec::new();
    for t in alarm_tasks {
        deliveries.push(t.await?);
    }
    for t in hb_tasks {
        t.await?;
    }
    let hb_elapsed = start.elapsed().min(cfg.duration).as_secs_f64().max(0.001);
    report.heartbeats_sent = hb_sent.load(Ordering::Relaxed);
    report.heartbeats_failed = hb_failed.load(Ordering::Relaxed);
    report.heartbeats_per_s = report.heartbeats_sent as f64 / hb_elapsed;
    report.heartbeat_latency = Percentiles::of(
        &hb_latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );

    report.sent = deliveries.len();
    let acked: Vec<&(Instant, Delivery, Instant)> =
        deliveries.iter().filter(|d| d.1.ack.is_some()).collect();
    report.acknowledged = acked.len();
    let lat: Vec<Duration> = acked
        .iter()
        .map(|(pressed, _, done)| done.duration_since(*pressed))
        .collect();
    report.ack_latency = Percentiles::of(&lat);
    if let (Some(first), Some(last)) = (
        deliveries.iter().map(|d| d.0).min(),
        acked.iter().map(|d| d.2).max(),
    ) {
        report.burst_span_s = last.duration_since(first).as_secs_f64();
        report.events_per_s = report.acknowledged as f64 / report.burst_span_s.max(0.001);
    }
    for (_, d, _) in deliveries.iter().filter(|d| d.1.ack.is_none()).take(5) {
        eprintln!("loadgen: NOT acknowledged {}: {:?}", d.id, d.last_error);
    }

    // 5. Console delivery: press → the frame naming the event on the officer's stream.
    if let Some((arrivals, task)) = feed {
        let want: HashSet<Uuid> = acked.iter().map(|d| d.1.id).collect();
        let wait_until = Instant::now() + Duration::from_secs(10);
        loop {
            let have = {
                let a = arrivals
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                want.iter().filter(|id| a.contains_key(id)).count()
            };
            if have == want.len() || Instant::now() >= wait_until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let a = arrivals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        task.abort();
        let lat: Vec<Duration> = deliveries
            .iter()
            .filter_map(|(pressed, d, _)| {
                a.get(&d.id).map(|t| t.saturating_duration_since(*pressed))
            })
            .collect();
        report.console_delivered = Some(lat.len());
        report.console_latency = Percentiles::of(&lat);
    }

    // 6. Every sent id against the store: stored once, never twice; press counts add up.
    if let Some(dir) = &cfg.data_dir {
        let exported = duress_receiver::admin::export_events(dir)
            .await
            .context("reading the receiver store")?;
        let mut count: HashMap<Uuid, usize> = HashMap::new();
        for e in &exported {
            *count.entry(e.id).or_default() += 1;
        }
        let sent: HashSet<Uuid> = deliveries.iter().map(|d| d.1.id).collect();
        let stored = sent.iter().filter(|id| count.contains_key(id)).count();
        let mut duplicated: usize = sent
            .iter()
            .map(|id| count.get(id).copied().unwrap_or(0).saturating_sub(1))
            .sum();
        // An event processed twice would show as a press counted twice in its incident.
        let ours: HashSet<&str> = stations.iter().map(|s| s.device_id.as_str()).collect();
        let incidents = duress_receiver::admin::list_incidents(dir).await?;
        let presses: u64 = incidents
            .iter()
            .filter(|i| ours.contains(i.device_id.as_str()))
            .map(|i| i.press_count)
            .sum();
        let duress_events = exported
            .iter()
            .filter(|e| e.kind == EventKind::Duress && ours.contains(e.device_id.as_str()))
            .count() as u64;
        duplicated += usize::try_from(presses.saturating_sub(duress_events)).unwrap_or(usize::MAX);
        report.stored = Some(stored);
        report.lost = Some(sent.len() - stored);
        report.duplicated = Some(duplicated);
    }
    Ok(report)
}
