//! The delivery worker: runs beside the API, never in the alarm path. Every [`TICK`] it takes
//! due rows from the outbox (leased to this process for [`LEASE`]: on PostgreSQL, any number
//! of receivers run a worker and each row goes to one), delivers each in its own task (a
//! hanging channel delays nothing else), and records the attempt. A failure is retried after
//! an exponential backoff with jitter; a row recorded delivered or accepted is never taken
//! again. A receiver killed mid-delivery leaves the row leased: it is taken again when the
//! lease runs out (possibly by another receiver) and sent again with the same idempotency key.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Notifier;
use super::channels::{self, Message, Sent};
use crate::store::{AttemptOutcome, NewAttempt, OutboxItem, Store};

/// How often due rows are looked for.
pub const TICK: Duration = Duration::from_millis(250);
/// How long a taken row is this process's: longer than any attempt can take
/// ([`super::http::ATTEMPT_TIMEOUT`], the SMTP timeout) plus recording it.
pub const LEASE: Duration = Duration::from_secs(60);
/// Deliveries in flight at once.
const IN_FLIGHT: usize = 32;

/// This process's lease name: host, process id and a random part (two receivers on one host,
/// or a restarted one, never share a lease).
pub fn owner_name() -> String {
    format!(
        "{}:{}:{}",
        gethostname::gethostname().to_string_lossy(),
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    )
}

/// Runs until aborted (in-flight deliveries are aborted with it; their rows are retried after
/// their lease).
pub async fn run(
    store: Arc<dyn Store>,
    notifier: Arc<Notifier>,
    watchdog: Arc<super::watch::Watchdog>,
) {
    let owner: Arc<str> = owner_name().into();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if watchdog.stalled() {
            continue;
        }
        while tasks.try_join_next().is_some() {}
        let free = slots.available_permits();
        if free == 0 {
            // Every slot busy delivering: the worker is running, not stalled.
            watchdog.worker_ran(crate::api::receiver_now());
            continue;
        }
        let now = crate::api::receiver_now();
        let items = match store.take_due(&owner, now, LEASE, free as u32).await {
            Ok(items) => {
                // A loop that read the outbox ran (the watch's "last run"); one that failed
                // did not, so a store that keeps failing shows as trouble too.
                watchdog.worker_ran(now);
                items
            }
            Err(e) => {
                crate::metrics::global().database_error("notifier");
                tracing::warn!(error = %e, "notifier: reading the outbox failed; retrying");
                continue;
            }
        };
        for item in items {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (store, notifier, owner) = (store.clone(), notifier.clone(), owner.clone());
            tasks.spawn(async move {
                deliver(&*store, &notifier, &owner, item).await;
                drop(permit);
            });
        }
    }
}

/// One attempt at one row, recorded.
pub async fn deliver(store: &dyn Store, notifier: &Notifier, owner: &str, item: OutboxItem) {
    let msg = Message::new(&item, notifier.config.public_url.as_deref());
    let result = match (
        notifier.config.channel(&item.channel),
        notifier.client(&item.channel),
    ) {
        // SMTP needs no HTTP client.
        (Some(crate::config::ChannelConfig::Email(email)), _) => {
            super::email::send(email, &msg).await
        }
        // TCP to a central station: no HTTP client either.
        (Some(crate::config::ChannelConfig::Dc09(dc09)), _) => {
            super::dc09::send(&notifier.dc09, dc09, &msg).await
        }
        (Some(channel), Some(client)) => {
            channels::send(client, channel, &msg, crate::api::receiver_now()).await
        }
        _ => Err(channels::SendError {
            http_status: None,
            message: "the channel is not in the configuration any more".into(),
        }),
    };
    let at = crate::api::receiver_now();
    let attempt = match result {
        Ok(sent) => {
            let (outcome, status) = match sent {
                Sent::Delivered(s) => (AttemptOutcome::Delivered, s),
                Sent::Accepted(s) => (AttemptOutcome::Accepted, s),
            };
            crate::metrics::global().notification_attempt(
                if outcome == AttemptOutcome::Delivered {
                    "delivered"
                } else {
                    "accepted"
                },
            );
            tracing::info!(
                notification = %item.id,
                channel = %item.channel,
                outcome = if outcome == AttemptOutcome::Delivered { "delivered" } else { "accepted" },
                "notification sent"
            );
            NewAttempt {
                at,
                outcome,
                http_status: status,
                error: None,
            }
        }
        Err(e) => {
            let attempts = item.attempts.saturating_add(1);
            let retry_at = (attempts < notifier.max_attempts).then(|| {
                crate::store::outbox::due_at(
                    at,
                    channels::backoff(notifier.retry_base, notifier.retry_cap, item.attempts),
                )
            });
            crate::metrics::global().notification_attempt(if retry_at.is_some() {
                "retry"
            } else {
                "failed"
            });
            if retry_at.is_some() {
                tracing::warn!(notification = %item.id, channel = %item.channel,
                    attempts, error = %e.message, "notification failed; will retry");
            } else {
                tracing::error!(notification = %item.id, channel = %item.channel,
                    attempts, error = %e.message, "notification failed; giving up");
            }
            NewAttempt {
                at,
                outcome: AttemptOutcome::Error { retry_at },
                http_status: e.http_status,
                error: Some(e.message),
            }
        }
    };
    match store.record_attempt(item.id, owner, attempt).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(notification = %item.id,
            "notification: the lease had passed to another worker when the attempt was recorded"),
        // The row stays leased; it is taken again after the lease (and sent again with the
        // same idempotency key).
        Err(e) => {
            crate::metrics::global().database_error("notifier");
            tracing::error!(notification = %item.id, error = %e,
                "notification: recording the attempt failed");
        }
    }
}
