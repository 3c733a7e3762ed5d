//! P4: the heartbeats of 100,000 stations at the default 60 s interval — 1,667 signed
//! heartbeats per second, sent open-loop on a fixed schedule (a late answer does not slow the
//! schedule, and latency counts from the scheduled instant) — with duress alarms sent in
//! between. Figures: the receiver's CPU (from /proc), heartbeat and alarm (ingest) latency.
//!
//! The heartbeats come from a smaller set of enrolled simulated stations in turn: what the
//! receiver does per heartbeat (verify, one indexed update, one indexed read) does not depend
//! on how many distinct stations send them beyond one more B-tree level.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duress_core::EventKind;
use duress_loadgen::client::{https_client, post_jose};
use tokio::sync::{Mutex, Semaphore};

use crate::receiver::ReceiverChild;
use crate::stats::Sample;
use crate::{Figures, Options};

/// 100,000 stations / 60 s.
pub const HEARTBEATS_PER_S: f64 = 100_000.0 / 60.0;
/// Alarms per second during the run (a busy campus is far below this).
const ALARMS_PER_S: f64 = 20.0;
/// Requests in flight at most; past it a scheduled request counts as missed.
const MAX_IN_FLIGHT: usize = 2048;

pub async fn run(opts: &Options, figures: &mut Figures) -> anyhow::Result<()> {
    let stations_n = opts.pick(200, 2000);
    let span = Duration::from_secs(opts.pick(10, 60));
    let dir = tempfile::tempdir_in(&opts.work_dir)?;
    let mut receiver =
        ReceiverChild::start(&dir.path().join("receiver"), opts.database.for_receiver()?)?;
    let stations = Arc::new(crate::p3::enroll_stations(&receiver, stations_n, 16).await?);
    let hb_client = https_client(&receiver.ca, 512)?;
    let alarm_client = https_client(&receiver.ca, 64)?;
    let url = Arc::new(receiver.url.clone());
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let hb_lat = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let alarm_lat = Arc::new(Mutex::new(Vec::<Duration>::new()));
    // The alarms' own request time (from the send, not the schedule): queueing in the bench
    // versus time in the receiver.
    let alarm_service = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let missed = Arc::new(AtomicU64::new(0));

    let start = Instant::now();
    let cpu0 = receiver.cpu_time();
    let db_cpu0 = opts.database.cpu_time();
    let hb_every = Duration::from_secs_f64(1.0 / HEARTBEATS_PER_S);
    let alarm_every = Duration::from_secs_f64(1.0 / ALARMS_PER_S);
    let (mut hb_sent, mut alarms_sent) = (0u64, 0u64);
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    while start.elapsed() < span {
        tick.tick().await;
        let now = start.elapsed();
        let hb_due = (now.as_secs_f64() / hb_every.as_secs_f64()) as u64;
        let alarms_due = (now.as_secs_f64() / alarm_every.as_secs_f64()) as u64;
        while hb_sent < hb_due || alarms_sent < alarms_due {
            let is_alarm = alarms_sent < alarms_due;
            let k = if is_alarm { alarms_sent } else { hb_sent };
            // Request k (from 0) falls due at (k + 1) intervals: that is when `*_due` first
            // counts it, so latency is measured from the instant it was due.
            let scheduled = start
                + if is_alarm {
                    alarm_every * (k as u32 + 1)
                } else {
                    hb_every * (k as u32 + 1)
                };
            if is_alarm {
                alarms_sent += 1;
            } else {
                hb_sent += 1;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                missed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let s = stations[(k as usize * 7919) % stations.len()].clone();
            let (url, failed) = (url.clone(), failed.clone());
            let (client, lat) = if is_alarm {
                (alarm_client.clone(), alarm_lat.clone())
            } else {
                (hb_client.clone(), hb_lat.clone())
            };
            let service = alarm_service.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                let (path, token, want) = if is_alarm {
                    (
                        "/v1/events",
                        s.sign_event(&s.new_event(EventKind::Duress)),
                        200,
                    )
                } else {
                    ("/v1/heartbeats", s.sign_heartbeat(&s.heartbeat()), 200)
                };
                let sent = Instant::now();
                match post_jose(&client, &url, path, &token).await {
                    Ok(a) if a.status == want => {
                        lat.lock().await.push(scheduled.elapsed());
                        if is_alarm {
                            service.lock().await.push(sent.elapsed());
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        tasks.retain(|t| !t.is_finished());
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let wall = start.elapsed();
    let cpu_pct = match (cpu0, receiver.cpu_time()) {
        (Some(a), Some(b)) => (b - a).as_secs_f64() / wall.as_secs_f64() * 100.0,
        _ => f64::NAN,
    };
    let hb = Sample::new(&hb_lat.lock().await);
    let alarms = Sample::new(&alarm_lat.lock().await);
    figures.put("p4_stations_enrolled", stations.len());
    figures.num("p4_seconds", wall.as_secs_f64(), 1);
    figures.num(
        "p4_heartbeats_per_s",
        hb.len() as f64 / wall.as_secs_f64(),
        0,
    );
    figures.num("p4_receiver_cpu_pct", cpu_pct, 1);
    let db_cpu = crate::cpu_pct(db_cpu0, opts.database.cpu_time(), wall);
    if !db_cpu.is_nan() {
        figures.num("p4_database_cpu_pct", db_cpu, 1);
    }
    hb.put(figures, "p4_heartbeat");
    alarms.put(figures, "p4_ingest");
    Sample::new(&alarm_service.lock().await).put(figures, "p4_ingest_request");
    figures.put("p4_failed", failed.load(Ordering::Relaxed));
    figures.put("p4_missed", missed.load(Ordering::Relaxed));
    receiver.stop();
    Ok(())
}
