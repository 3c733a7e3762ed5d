//! The notifier's background work is watched: if the station sweep or the delivery worker has
//! not run for three of its intervals, every signed-in console page shows a trouble banner
//! (and open pages get it over the live stream), because a stopped sweep means offline
//! stations go unnoticed and a stopped worker means nobody away from the console hears of an
//! alarm.
//!
//! Where each run is recorded:
//! - the **sweep**: in the store (`sweep_runs`, written in the sweep's own transaction; see
//!   `OutboxStore::last_sweep`). Every receiver of a cluster sweeps, so the banner shows when
//!   *no* receiver has swept for three intervals, on every receiver's console.
//! - the **worker**: in memory, per receiver ([`Watchdog::worker_ran`]). Each receiver runs its
//!   own worker (rows are leased, so any live worker delivers); a receiver whose own worker
//!   stalled says so on its own console. Kept out of the store because it runs every 250 ms.
//!
//! - **database redundancy**: set by the cluster task (`crate::cluster`) from the database's
//!   replication state ([`Watchdog::set_redundancy`]): "receiver redundancy degraded" while no
//!   synchronous standby confirms commits (docs/scale-out.md).
//!
//! [`run`] re-evaluates every second and publishes the banner text on a `watch` channel the
//! console reads (pages at render, the live stream on change). A test stalls both loops
//! through `Watchdog::stall` (the same switch a debugger pause would be).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::store::Store;

/// A loop is in trouble after this many of its intervals without a run.
pub const MISSED_INTERVALS: u32 = 3;
/// How often the worker is expected to have completed a loop at least once. Its tick is
/// 250 ms, but a loop may wait for a free delivery slot or a busy database; 5 s (so 15 s before
/// the banner) is far above that and still quick for a human.
pub const DEFAULT_WORKER_INTERVAL: Duration = Duration::from_secs(5);
/// How often the state is re-evaluated.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What is watched, and the published trouble (empty: all well).
#[derive(Debug)]
pub struct Watchdog {
    /// The sweep's interval; `None`: no `[supervision]`, nothing to watch.
    sweep_interval: Option<Duration>,
    /// The worker's watch interval; `None`: no worker (no configuration file).
    worker_interval: Option<Duration>,
    /// Unix milliseconds of the worker's last completed loop (0: not yet).
    worker_last_ms: AtomicI64,
    /// When watching began: a loop that never ran is judged from here (a fresh start is not
    /// trouble before three intervals have passed).
    started: OffsetDateTime,
    /// Test hook: while set, the sweep and the worker skip their work (a stalled loop).
    stall: Arc<AtomicBool>,
    trouble: watch::Sender<Vec<String>>,
    /// The redundancy line (`None`: redundant, or nothing to say), see [`Watchdog::set_redundancy`].
    redundancy: std::sync::Mutex<Option<String>>,
}

impl Watchdog {
    pub fn new(
        sweep_interval: Option<Duration>,
        worker_interval: Option<Duration>,
        stall: Arc<AtomicBool>,
    ) -> Self {
        Watchdog {
            sweep_interval,
            worker_interval,
            worker_last_ms: AtomicI64::new(0),
            started: crate::clock::receiver_now(),
            stall,
            trouble: watch::Sender::new(Vec::new()),
            redundancy: std::sync::Mutex::new(None),
        }
    }

    /// Nothing watched (a receiver without a configuration file; unit tests).
    pub fn idle() -> Self {
        Self::new(None, None, Arc::new(AtomicBool::new(false)))
    }

    /// Whether the loops must skip their work (test hook).
    pub fn stalled(&self) -> bool {
        self.stall.load(Ordering::SeqCst)
    }

    /// The worker completed a loop at `at`.
    pub fn worker_ran(&self, at: OffsetDateTime) {
        let ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        self.worker_last_ms.store(ms, Ordering::SeqCst);
    }

    fn worker_last(&self) -> Option<OffsetDateTime> {
        match self.worker_last_ms.load(Ordering::SeqCst) {
            0 => None,
            ms => OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok(),
        }
    }

    /// Sets the database redundancy trouble (`None`: all well); logs once per change (a warning
    /// when it appears or changes, an info line when it clears). Shown from the next
    /// evaluation (≤ 1 s).
    pub fn set_redundancy(&self, trouble: Option<String>) {
        let mut current = self
            .redundancy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current == trouble {
            return;
        }
        match &trouble {
            Some(t) => tracing::warn!(trouble = %t, "receiver redundancy degraded"),
            None => tracing::info!(
                "receiver redundancy restored: a synchronous standby confirms commits"
            ),
        }
        *current = trouble;
    }

    fn redundancy(&self) -> Option<String> {
        self.redundancy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The banner lines now (empty: all well).
    pub fn trouble(&self) -> Vec<String> {
        self.trouble.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Vec<String>> {
        self.trouble.subscribe()
    }

    /// The trouble at `now`, given the sweep's last recorded run (or why it could not be read).
    pub fn evaluate(
        &self,
        now: OffsetDateTime,
        last_sweep: Result<Option<OffsetDateTime>, String>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let late = |last: Option<OffsetDateTime>, every: Duration| {
            let since = last.map_or(self.started, |l| l.max(self.started));
            let limit = every.saturating_mul(MISSED_INTERVALS);
            let limit = time::Duration::try_from(limit).unwrap_or(time::Duration::MAX);
            (now - since > limit).then_some(since)
        };
        if let Some(every) = self.sweep_interval {
            match last_sweep {
                Ok(last) => {
                    if let Some(since) = late(last, every) {
                        out.push(format!(
                            "Station supervision has not run since {}: stations that go \
                             offline are not being noticed. Check the receiver's log.",
                            stamp(since)
                        ));
                    }
                }
                Err(e) => out.push(format!(
                    "Station supervision cannot be checked ({e}): stations that go offline may \
                     not be noticed."
                )),
            }
        }
        if let Some(every) = self.worker_interval
            && let Some(since) = late(self.worker_last(), every)
        {
            out.push(format!(
                "The notifier has not run since {}: Teams, e-mail, SMS and other notifications \
                 are not being sent. Check the receiver's log.",
                stamp(since)
            ));
        }
        out.extend(self.redundancy());
        out
    }

    fn publish(&self, trouble: Vec<String>) {
        self.trouble.send_if_modified(|current| {
            if *current == trouble {
                return false;
            }
            if trouble.is_empty() {
                tracing::info!("notifier watch: background work running again");
            } else {
                for t in &trouble {
                    tracing::error!(trouble = %t, "notifier watch: trouble shown on the console");
                }
            }
            *current = trouble;
            true
        });
    }
}

fn stamp(t: OffsetDateTime) -> String {
    let iso = crate::store::format_ts(t);
    format!("{} {} UTC", &iso[..10], &iso[11..19])
}

/// Re-evaluates every second until aborted.
///
/// It runs even when no loop is watched: the redundancy line (set by the cluster task) is
/// published from here too.
pub async fn run(store: Arc<dyn Store>, watchdog: Arc<Watchdog>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let last_sweep = if watchdog.sweep_interval.is_some() {
            store.last_sweep().await.map_err(|e| e.to_string())
        } else {
            Ok(None)
        };
        watchdog.publish(watchdog.evaluate(crate::clock::receiver_now(), last_sweep));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn three_missed_intervals_are_trouble() {
        let w = Watchdog::new(
            Some(Duration::from_secs(30)),
            Some(Duration::from_secs(5)),
            Arc::new(AtomicBool::new(false)),
        );
        let t0 = w.started;
        let s = time::Duration::seconds;
        // Fresh start: nothing ran yet, but three intervals have not passed.
        assert!(w.evaluate(t0 + s(14), Ok(None)).is_empty());
        // The worker never ran in 16 s: trouble; the sweep (30 s interval) not yet.
        let t = w.evaluate(t0 + s(16), Ok(None));
        assert_eq!(t.len(), 1);
        assert!(t[0].contains("notifier"), "{t:?}");
        w.worker_ran(t0 + s(85));
        assert!(w.evaluate(t0 + s(89), Ok(Some(t0 + s(60)))).is_empty());
        w.worker_ran(t0 + s(150));
        // The sweep last ran 91 s ago: trouble, naming when.
        let t = w.evaluate(t0 + s(151), Ok(Some(t0 + s(60))));
        assert_eq!(t.len(), 1);
        assert!(t[0].contains("supervision"), "{t:?}");
        assert!(w.evaluate(t0 + s(89), Err("store down".into()))[0].contains("store down"));
        assert!(Watchdog::idle().evaluate(t0 + s(9999), Ok(None)).is_empty());
    }

    #[test]
    fn the_redundancy_line_is_shown_until_cleared() {
        let w = Watchdog::idle();
        let t0 = w.started;
        w.set_redundancy(Some("receiver redundancy degraded: x".into()));
        assert_eq!(
            w.evaluate(t0, Ok(None)),
            vec!["receiver redundancy degraded: x".to_owned()]
        );
        w.set_redundancy(None);
        assert!(w.evaluate(t0, Ok(None)).is_empty());
    }
}
