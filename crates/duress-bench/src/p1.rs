//! P1: press → console. The agent engine `record`s a duress press (signed, committed to its
//! outbox with fsync), `deliver_pending` sends it over kept-alive TLS, the receiver verifies and
//! commits it (fsync) and only then answers; the commit is published to a signed-in console's
//! live stream. Measured from before `record` to the arrival of the stream frame naming the
//! event. In the same run: the floor (see [`crate::floor`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use duress_agent_core::{Engine, EnrollOptions, Policy, ReceiverConfig, Secret};
use duress_core::{EventKind, Location, Source};

use crate::console::ConsoleStream;
use crate::receiver::ReceiverChild;
use crate::stats::Sample;
use crate::{Figures, Options, floor};

/// How long one alarm may take before the run is declared broken.
const PER_ALARM_TIMEOUT: Duration = Duration::from_secs(10);

/// An enrolled engine in `dir/agent` pointing at `receiver`.
pub async fn enrolled_engine(dir: &Path, receiver: &ReceiverChild) -> anyhow::Result<Engine> {
    let token = crate::receiver::token(receiver, 1).await?;
    let engine =
        Engine::open(Policy::default(), dir.join("agent")).context("opening the engine")?;
    engine
        .enroll(&EnrollOptions {
            receiver: Some(ReceiverConfig::new(
                &receiver.url,
                Some(receiver.ca.clone()),
            )?),
            token: Some(Secret::new(token)),
            location: Some(Location {
                label: Some("Bench, Bldg A, Room 214".into()),
                ..Default::default()
            }),
        })
        .await
        .context("enrolling the bench agent")?;
    Ok(engine)
}

/// Records one press on a blocking thread (it fsyncs) and returns its id.
pub async fn press(engine: &Engine) -> anyhow::Result<uuid::Uuid> {
    let e = engine.clone();
    let claims =
        tokio::task::spawn_blocking(move || e.record(EventKind::Duress, Source::Hotkey)).await??;
    Ok(claims.id)
}

/// Runs P1 and its floor; returns the end-to-end latencies (for the plot).
pub async fn run(opts: &Options, figures: &mut Figures) -> anyhow::Result<Sample> {
    let n = opts.pick(200, 1000);
    let dir = tempfile::tempdir_in(&opts.work_dir)?;
    let mut receiver =
        ReceiverChild::start(&dir.path().join("receiver"), opts.database.for_receiver()?)?;
    figures.put("p1_filesystem", crate::filesystem_of(dir.path()));
    let engine = enrolled_engine(dir.path(), &receiver).await?;
    let mut console =
        ConsoleStream::open(&receiver.location(), &receiver.url, &receiver.ca).await?;

    // The floor is sampled between the alarms, so both see the same disk and the same load
    // (the machine is shared: a separate floor phase would measure another moment).
    let mut probe = floor::FsyncProbe::new(&dir.path().join("agent"))?;
    let ping_client = floor::one_connection_client(&receiver.ca)?;
    let ping_url = format!("{}/v1/ping", receiver.url);
    let mut e2e = Vec::with_capacity(n);
    let mut recorded = Vec::with_capacity(n);
    let mut acked = Vec::with_capacity(n);
    let mut fsyncs = Vec::with_capacity(n);
    let mut pings = Vec::with_capacity(n);
    let warmup = 10;
    for i in 0..n + warmup {
        let t0 = Instant::now();
        let id = press(&engine).await?;
        let t_record = t0.elapsed();
        let report = engine
            .deliver_pending(Some(Instant::now() + PER_ALARM_TIMEOUT))
            .await;
        let t_ack = t0.elapsed();
        anyhow::ensure!(
            report.delivered.contains(&id),
            "alarm {i} was not acknowledged: {:?}",
            report.last_error
        );
        let at = console
            .wait_for(id, PER_ALARM_TIMEOUT)
            .await
            .with_context(|| format!("alarm {i} never reached the console stream"))?;
        let fsync = tokio::task::block_in_place(|| probe.pair())?;
        let ping = floor::ping_once(&ping_client, &ping_url).await?;
        if i >= warmup {
            e2e.push(at.saturating_duration_since(t0));
            recorded.push(t_record);
            acked.push(t_ack);
            fsyncs.push(fsync);
            pings.push(ping);
        }
    }
    let e2e = Sample::new(&e2e);
    figures.put("p1_alarms", e2e.len());
    e2e.put(figures, "p1");
    Sample::new(&recorded).put(figures, "p1_record");
    Sample::new(&acked).put(figures, "p1_ack");
    let fsync = Sample::new(&fsyncs);
    let ping = Sample::new(&pings);
    fsync.put(figures, "p1_floor_fsync2");
    ping.put(figures, "p1_floor_ping");
    let floor_ms = floor::floor_ms(&fsync, &ping);
    figures.num("p1_floor_ms", floor_ms, 3);
    figures.num("p1_p50_over_floor", e2e.p50() / floor_ms, 2);
    drop(console);
    receiver.stop();
    Ok(e2e)
}
