//! P3: durable ingest throughput against concurrency. Simulated stations (duress-loadgen:
//! in-memory keys, exactly the agent's wire format) each send signed duress events back to
//! back, one request in flight per connection; a 200 answer means the event was committed.
//! In the same run, at the same concurrency, the same server's no-op endpoint
//! (`GET /v1/ping`): the ratio says how much of the server's request capacity ingest keeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duress_core::EventKind;
use duress_loadgen::SimStation;
use duress_loadgen::client::{https_client, post_jose};
use futures::StreamExt as _;

use crate::receiver::ReceiverChild;
use crate::stats::Sample;
use crate::{Figures, Options};

/// Requests finished in the first part of a window are not counted (connections, caches).
const WARMUP: Duration = Duration::from_millis(300);

/// One concurrency level's figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Level {
    pub concurrency: usize,
    pub events_per_s: f64,
    pub noop_per_s: f64,
    pub event_p99_ms: f64,
    pub receiver_cpu_pct: f64,
}

/// Enrolls `n` simulated stations, `parallel` at a time.
pub async fn enroll_stations(
    receiver: &ReceiverChild,
    n: usize,
    parallel: usize,
) -> anyhow::Result<Vec<Arc<SimStation>>> {
    let token = crate::receiver::token(receiver, u32::try_from(n)?).await?;
    let client = https_client(&receiver.ca, parallel)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let enrolled: Vec<anyhow::Result<SimStation>> = futures::stream::iter(0..n)
        .map(|i| {
            let (client, url, token) = (client.clone(), receiver.url.clone(), token.clone());
            async move {
                let mut s = SimStation::new(i);
                s.enroll(&client, &url, &token, deadline).await?;
                Ok(s)
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    enrolled.into_iter().map(|r| r.map(Arc::new)).collect()
}

/// Events signed before a level's window starts. In the field each event is signed by its own
/// workstation's CPU; here the simulated stations share the receiver's 2 cores, and signing in
/// the window (≈ 20–35 µs an event) would measure the simulator as much as the receiver. Every
/// token still carries a `sent_at` well inside the receiver's window (−40 s): it is signed at
/// most a few seconds before it is sent.
struct Presigned {
    tokens: std::sync::Mutex<Vec<String>>,
    fallbacks: AtomicU64,
}

impl Presigned {
    /// A pre-signed token, or `None` (counted) when the pool ran dry and the caller must sign.
    fn take(&self) -> Option<String> {
        let token = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if token.is_none() {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        token
    }

    fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }
}

/// Enough tokens for a window (and its warm-up) at 15,000 events/s.
fn presign_count(span: Duration) -> usize {
    ((span + WARMUP).as_secs_f64() * 15_000.0) as usize
}

/// Signs `n` duress events from the stations in turn, on two blocking threads.
async fn presign(stations: &Arc<Vec<Arc<SimStation>>>, n: usize) -> anyhow::Result<Arc<Presigned>> {
    let halves = [0, 1].map(|half| {
        let stations = stations.clone();
        tokio::task::spawn_blocking(move || {
            (0..n)
                .filter(|i| i % 2 == half)
                .map(|i| {
                    let s = &stations[i % stations.len()];
                    s.sign_event(&s.new_event(EventKind::Duress))
                })
                .collect::<Vec<_>>()
        })
    });
    let mut tokens = Vec::with_capacity(n);
    for half in halves {
        tokens.extend(half.await?);
    }
    Ok(Arc::new(Presigned {
        tokens: std::sync::Mutex::new(tokens),
        fallbacks: AtomicU64::new(0),
    }))
}

/// What a window counted.
struct Counted {
    ok: u64,
    failed: u64,
    per_s: f64,
    latencies: Vec<Duration>,
}

/// Runs `concurrency` workers for `window` (plus warm-up); `job(worker)` makes one request and
/// says whether it succeeded.
async fn window<F, Fut>(concurrency: usize, window: Duration, job: F) -> Counted
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let job = Arc::new(job);
    let start = Instant::now();
    let count_from = start + WARMUP;
    let end = count_from + window;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let (job, ok, failed) = (job.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let good = job(w).await;
                let done = Instant::now();
                if done >= count_from && done < end {
                    if good {
                        ok.fetch_add(1, Ordering::Relaxed);
                        latencies.push(done - t);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if !good {
                    // A refusal or a dead connection: do not spin.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        if let Ok(l) = t.await {
            latencies.extend(l);
        }
    }
    let ok = ok.load(Ordering::Relaxed);
    Counted {
        ok,
        failed: failed.load(Ordering::Relaxed),
        per_s: ok as f64 / window.as_secs_f64(),
        latencies,
    }
}

/// Runs P3 at each concurrency level; returns the levels (for the plot).
pub async fn run(opts: &Options, figures: &mut Figures) -> anyhow::Result<Vec<Level>> {
    let levels: Vec<usize> = opts.pick(vec![1, 16, 64], vec![1, 4, 16, 64, 256]);
    let span = Duration::from_millis(opts.pick(1500, 5000));
    let max_c = levels.iter().copied().max().unwrap_or(1);
    let dir = tempfile::tempdir_in(&opts.work_dir)?;
    let mut receiver =
        ReceiverChild::start(&dir.path().join("receiver"), opts.database.for_receiver()?)?;
    let t = Instant::now();
    let stations = Arc::new(enroll_stations(&receiver, max_c, 16).await?);
    eprintln!(
        "p3: {} stations enrolled in {:.1} s",
        stations.len(),
        t.elapsed().as_secs_f64()
    );
    let url = Arc::new(receiver.url.clone());
    let mut out = Vec::new();
    let mut fallback_signed = 0;
    for &c in &levels {
        let client = https_client(&receiver.ca, c)?;
        let presigned = presign(&stations, presign_count(span)).await?;
        let cpu0 = receiver.cpu_time();
        let db_cpu0 = opts.database.cpu_time();
        let t0 = Instant::now();
        let events = {
            let (client, url, stations) = (client.clone(), url.clone(), stations.clone());
            let presigned = presigned.clone();
            window(c, span, move |w| {
                let (client, url, stations) = (client.clone(), url.clone(), stations.clone());
                let presigned = presigned.clone();
                async move {
                    let token = presigned.take().unwrap_or_else(|| {
                        let s = &stations[w % stations.len()];
                        s.sign_event(&s.new_event(EventKind::Duress))
                    });
                    matches!(post_jose(&client, &url, "/v1/events", &token).await,
                        Ok(a) if a.status == 200)
                }
            })
            .await
        };
        fallback_signed += presigned.fallbacks();
        let wall = t0.elapsed();
        let cpu = match (cpu0, receiver.cpu_time()) {
            (Some(a), Some(b)) => (b - a).as_secs_f64() / wall.as_secs_f64() * 100.0,
            _ => f64::NAN,
        };
        let db_cpu = crate::cpu_pct(db_cpu0, opts.database.cpu_time(), wall);
        let noop = {
            let (client, url) = (client.clone(), url.clone());
            window(c, span, move |_| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    match client.get(format!("{url}/v1/ping")).send().await {
                        Ok(r) => r.status().as_u16() == 204 && r.bytes().await.is_ok(),
                        Err(_) => false,
                    }
                }
            })
            .await
        };
        let lat = Sample::new(&events.latencies);
        let level = Level {
            concurrency: c,
            events_per_s: events.per_s,
            noop_per_s: noop.per_s,
            event_p99_ms: lat.p99(),
            receiver_cpu_pct: cpu,
        };
        figures.num(&format!("p3_c{c}_events_per_s"), level.events_per_s, 0);
        figures.num(&format!("p3_c{c}_noop_per_s"), level.noop_per_s, 0);
        figures.num(&format!("p3_c{c}_event_p50_ms"), lat.p50(), 2);
        figures.num(&format!("p3_c{c}_event_p99_ms"), level.event_p99_ms, 2);
        figures.num(&format!("p3_c{c}_receiver_cpu_pct"), cpu, 0);
        if !db_cpu.is_nan() {
            figures.num(&format!("p3_c{c}_database_cpu_pct"), db_cpu, 0);
        }
        if events.failed + noop.failed > 0 {
            figures.put(&format!("p3_c{c}_failed"), events.failed + noop.failed);
        }
        figures.put(&format!("p3_c{c}_events_committed"), events.ok);
        out.push(level);
    }
    // Non-zero only if a level outran its pre-signed tokens (then it also measured signing).
    figures.put("p3_signed_during_window", fallback_signed);
    // The headline: the best level of each (each at its own best concurrency).
    let best_events = out.iter().map(|l| l.events_per_s).fold(0.0, f64::max);
    let best_noop = out.iter().map(|l| l.noop_per_s).fold(0.0, f64::max);
    figures.num("p3_events_per_s", best_events, 0);
    figures.num("p3_noop_per_s", best_noop, 0);
    figures.num(
        "p3_ratio",
        if best_noop > 0.0 {
            best_events / best_noop
        } else {
            0.0
        },
        2,
    );
    receiver.stop();
    Ok(out)
}
