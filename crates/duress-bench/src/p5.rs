//! P5: alarms queued while the receiver is down. The engine's run loop (as in the tray) keeps
//! retrying on the alarm schedule; `n` presses are recorded into its outbox; then the receiver
//! comes back on the same port and data. Measured from the moment it accepts connections to
//! the last acknowledgement (the outbox has nothing pending).

use std::time::{Duration, Instant};

use duress_core::HotkeyState;
use tokio::sync::watch;

use crate::receiver::ReceiverChild;
use crate::{Figures, Options};

/// The whole drain must end within this, or the run is declared broken.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run(opts: &Options, figures: &mut Figures) -> anyhow::Result<()> {
    let n = opts.pick(300, 1000);
    let dir = tempfile::tempdir_in(&opts.work_dir)?;
    let data = dir.path().join("receiver");
    let mut receiver = ReceiverChild::start(&data, opts.database.for_receiver()?)?;
    let port = receiver.port;
    let engine = crate::p1::enrolled_engine(dir.path(), &receiver).await?;
    receiver.stop();

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let (_hotkey_tx, hotkey_rx) = watch::channel(HotkeyState::NotApplicable);
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            };
            engine.run(shutdown, hotkey_rx).await
        })
    };

    let t = Instant::now();
    for _ in 0..n {
        crate::p1::press(&engine).await?;
    }
    let record_s = t.elapsed().as_secs_f64();
    // Let the loop fail against the dead port at least once, as a real agent would have.
    tokio::time::sleep(Duration::from_millis(opts.pick(1500, 3000))).await;
    let queued = engine.pending()?.len();

    let mut receiver = ReceiverChild::start_on(&data, port, receiver.database.clone())?;
    let back = Instant::now();
    let mut first_ack = None;
    let mut pending = queued;
    while pending > 0 && back.elapsed() < DRAIN_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let e = engine.clone();
        // A count, not the list: polling must not load the machine it measures.
        pending = usize::try_from(tokio::task::spawn_blocking(move || e.pending_count()).await??)?;
        if first_ack.is_none() && pending < queued {
            first_ack = Some(back.elapsed());
        }
    }
    let total = back.elapsed();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), runner).await;
    receiver.stop();
    anyhow::ensure!(
        pending == 0,
        "{pending} alarms still queued after {DRAIN_TIMEOUT:?}"
    );

    figures.put("p5_alarms", queued);
    figures.num("p5_record_s", record_s, 2);
    let first = first_ack.unwrap_or(total).as_secs_f64();
    figures.num("p5_first_ack_s", first, 3);
    figures.num("p5_seconds", total.as_secs_f64(), 3);
    let drain = total.as_secs_f64() - first;
    figures.num(
        "p5_drain_per_s",
        if drain > 0.0 {
            queued as f64 / drain
        } else {
            0.0
        },
        0,
    );
    Ok(())
}
