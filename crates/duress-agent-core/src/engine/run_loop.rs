//! The long-running loop: heartbeats and outbox delivery until shutdown.

use std::future::Future;
use std::time::Duration;

use duress_core::HotkeyState;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until};

use super::delivery::interval_from_secs;
use super::{Engine, EnrollOptions, lock};
use crate::retry::{REFUSED_RETRY, alarm_retry_delay, heartbeat_retry_delay, random_jitter};
use crate::{Error, Result};

/// How often `run` looks for events committed by another process (a CLI `trigger`, which also
/// delivers its event itself: this is the running agent taking over when that could not).
/// Every poll is a wake-up of an otherwise idle agent; 500 ms keeps the tray's idle CPU
/// within its budget (docs/PERFORMANCE.md, P2).
pub const OUTBOX_POLL: Duration = Duration::from_millis(500);

/// How often `run` checks whether a scheduled self-test is due.
pub const SELF_TEST_CHECK: Duration = Duration::from_secs(60);

/// After a press, heartbeats go this often so the covert acknowledgement (an officer's claim,
/// listed in the heartbeat answer) reaches the tray within seconds rather than at the next
/// regular heartbeat (up to `interval_s`, 60 s by default).
pub const ACK_POLL: Duration = Duration::from_secs(5);
/// How long after the last press heartbeats stay at [`ACK_POLL`].
pub const ACK_POLL_FOR: Duration = Duration::from_secs(600);

impl Engine {
    /// Runs until `shutdown` completes: a heartbeat at once and then every `interval_s` (with
    /// backoff on failure), and delivery of pending events — woken by `record` in this process,
    /// by commits of other processes (`PRAGMA data_version`, polled every `OUTBOX_POLL`), and retried
    /// on the alarm schedule. If the station is not enrolled and the policy carries a token,
    /// enrollment is attempted in place of the heartbeat.
    ///
    /// Never returns early on a network, keystore or receiver failure: those are logged, kept in
    /// the status, and retried. Cancelling an in-flight send at shutdown is safe: the event stays
    /// in the outbox and the receiver is idempotent.
    pub async fn run<F>(&self, shutdown: F, mut hotkey: watch::Receiver<HotkeyState>) -> Result<()>
    where
        F: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let policy_interval = interval_from_secs(self.inner.policy.heartbeat.interval_s);
        let mut hb_interval = policy_interval;
        let mut hb_failures: u32 = 0;
        let mut next_hb = Instant::now();
        let mut next_delivery = Some(Instant::now());
        let mut delivery_attempt: u32 = 0;
        let mut hotkey_open = true;
        // Until when heartbeats go every ACK_POLL (a press was seen: the acknowledgement).
        let mut ack_poll_until: Option<Instant> = None;
        let mut data_version = self.db(|o| o.data_version()).await.ok();
        // The scheduled self-test is looked at once a minute (only when the policy has one).
        let mut self_test_tick = interval(SELF_TEST_CHECK);
        self_test_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let self_tests = self.inner.policy.self_test.every_days > 0;
        let mut poll = interval(OUTBOX_POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        *lock(&self.inner.hotkey) = hotkey.borrow().clone();
        // Ask the keystore once at start, off the async workers: it caches the device key for
        // fast presses and shows a locked or missing keystore in the status at once.
        {
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.check_keystore()).await;
        }
        tracing::info!(
            receivers = ?self.effective_receivers().unwrap_or_default().iter()
                .map(|r| r.url.to_string()).collect::<Vec<_>>(),
            interval_s = hb_interval.as_secs(),
            "engine running"
        );

        loop {
            let delivery_due = async {
                match next_delivery {
                    Some(t) => sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = self.inner.new_event.notified() => {
                    next_delivery = Some(Instant::now());
                    delivery_attempt = 0;
                    if self.inner.ack_wanted.swap(false, std::sync::atomic::Ordering::Relaxed) {
                        start_ack_poll(&mut ack_poll_until, &mut next_hb);
                    }
                }
                _ = poll.tick() => {
                    let v = self.db(|o| o.data_version()).await.ok();
                    if v.is_some() && v != data_version {
                        data_version = v;
                        next_delivery = Some(Instant::now());
                        delivery_attempt = 0;
                        // Another process committed: a `trigger` (or its delivery marks).
                        // Polling the acknowledgement a little more costs a few heartbeats.
                        if self.db(|o| o.pending_count()).await.unwrap_or(0) > 0 {
                            start_ack_poll(&mut ack_poll_until, &mut next_hb);
                        }
                    }
                }
                () = delivery_due => {
                    let pass = tokio::select! {
                        p = self.deliver_once() => p,
                        () = &mut shutdown => break,
                    };
                    next_delivery = match pass {
                        Ok(p) if p.failed > 0 => {
                            let d = alarm_retry_delay(delivery_attempt, random_jitter());
                            delivery_attempt = delivery_attempt.saturating_add(1);
                            Some(Instant::now() + d)
                        }
                        Ok(p) => {
                            delivery_attempt = 0;
                            (!p.refused.is_empty()).then(|| Instant::now() + REFUSED_RETRY)
                        }
                        Err(e) => {
                            tracing::warn!("delivery pass failed: {e}");
                            let d = alarm_retry_delay(delivery_attempt, random_jitter());
                            delivery_attempt = delivery_attempt.saturating_add(1);
                            Some(Instant::now() + d)
                        }
                    };
                }
                () = sleep_until(next_hb) => {
                    let hk = hotkey.borrow().clone();
                    let result = tokio::select! {
                        r = self.heartbeat_or_enroll(hk) => r,
                        () = &mut shutdown => break,
                    };
                    match result {
                        Ok(answer_interval) => {
                            hb_failures = 0;
                            hb_interval = answer_interval
                                .map(interval_from_secs)
                                .unwrap_or(policy_interval);
                            let now = Instant::now();
                            next_hb = match ack_poll_until {
                                Some(until) if now < until => now + ACK_POLL.min(hb_interval),
                                _ => {
                                    ack_poll_until = None;
                                    now + hb_interval
                                }
                            };
                            // A receiver is reachable and accepts this device: retry
                            // everything still queued now, refused events included (the
                            // refusal may have been the device's status, now lifted).
                            lock(&self.inner.refused_until).clear();
                            if next_delivery.is_some() {
                                next_delivery = Some(Instant::now());
                                delivery_attempt = 0;
                            }
                        }
                        Err(e) => {
                            hb_failures = hb_failures.saturating_add(1);
                            let d = heartbeat_retry_delay(hb_failures, hb_interval, random_jitter());
                            tracing::warn!("heartbeat failed ({hb_failures}x), next in {d:?}: {e}");
                            next_hb = Instant::now() + d;
                        }
                    }
                }
                _ = self_test_tick.tick(), if self_tests => {
                    let this = self.clone();
                    let local = self.local_offset();
                    let r = tokio::task::spawn_blocking(move || this.run_scheduled_self_test(local))
                        .await;
                    match r {
                        Ok(Ok(true)) => {
                            next_delivery = Some(Instant::now());
                            delivery_attempt = 0;
                        }
                        Ok(Ok(false)) => {}
                        Ok(Err(e)) => tracing::warn!("scheduled self-test failed: {e}"),
                        Err(e) => tracing::warn!("scheduled self-test failed: {e}"),
                    }
                }
                changed = hotkey.changed(), if hotkey_open => {
                    match changed {
                        // Officers should learn about a dead chord at once; the local status
                        // shows it even before (or without) a receiver answering.
                        Ok(()) => {
                            *lock(&self.inner.hotkey) = hotkey.borrow().clone();
                            next_hb = Instant::now();
                        }
                        Err(_) => hotkey_open = false,
                    }
                }
            }
        }
        tracing::info!("engine stopped");
        Ok(())
    }
}

/// A press was seen: heartbeats every [`ACK_POLL`] for [`ACK_POLL_FOR`], the first one
/// [`ACK_POLL`] from now (the receiver first needs the alarm; an officer then claims it).
fn start_ack_poll(until: &mut Option<Instant>, next_hb: &mut Instant) {
    let now = Instant::now();
    *until = Some(now + ACK_POLL_FOR);
    *next_hb = (*next_hb).min(now + ACK_POLL);
}

impl Engine {
    /// A heartbeat; or, before enrollment, an enrollment with the policy's token. Returns the
    /// interval the receiver asked for, if any.
    async fn heartbeat_or_enroll(&self, hotkey: HotkeyState) -> Result<Option<u64>> {
        if self.device_id()?.is_none() {
            if self.inner.policy.enrollment.token.is_none() {
                return Err(Error::NotEnrolled);
            }
            self.enroll(&EnrollOptions::default()).await?;
        }
        let answer = self.send_heartbeat(hotkey).await?;
        Ok(Some(answer.interval_s))
    }
}
