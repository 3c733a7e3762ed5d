//! Decommissioning (`duress-agent decommission`, run by the uninstallers): the station tells
//! every receiver it is retiring, signed with its device key (`POST /v1/retirements`,
//! docs/protocol.md §5.6), then forgets its enrollment — the device key leaves the keystore and
//! the device id the state database.
//!
//! **An undelivered alarm is never dropped: deliver first, then refuse.** Events still in the
//! outbox are sent first (for up to the caller's window); if any is still undelivered after
//! that, nothing is sent and nothing forgotten, and the error says how many wait. The outbox
//! file itself is always kept (it is the station's record of what it sent).
//!
//! **Every receiver must confirm before anything is forgotten.** Receivers of one cluster share
//! a database (the second answers "already retired"); independent receivers each supervise the
//! station, and one that did not hear of the retirement would report it offline for ever. So
//! when any receiver cannot be reached or refuses, the station stays enrolled and the command
//! can simply be run again (a resent retirement is harmless). A receiver that does not know the
//! device (`unknown-device`) has nothing to retire and counts as confirmed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duress_core::clock::truncate_to_millis;
use duress_core::{DeviceKey, ProblemType, RetirementClaims, Typ};

use super::enroll::MAX_SKEW_RESENDS;
use super::{Engine, lock};
use crate::error::problem_summary;
use crate::outbox::keys;
use crate::sender::{SendOutcome, Sender};
use crate::{Error, Result};

/// What one receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetireAnswer {
    /// This request retired the station there.
    Retired,
    /// It was retired there already (a resend, or another receiver of the same cluster).
    AlreadyRetired,
    /// The receiver does not know this device: nothing to retire there.
    UnknownDevice,
    /// Unreachable or refused: the station stays enrolled.
    Failed(String),
}

impl RetireAnswer {
    pub fn confirmed(&self) -> bool {
        !matches!(self, RetireAnswer::Failed(_))
    }

    pub fn describe(&self) -> String {
        match self {
            RetireAnswer::Retired => "retired".into(),
            RetireAnswer::AlreadyRetired => "already retired".into(),
            RetireAnswer::UnknownDevice => "does not know this device".into(),
            RetireAnswer::Failed(e) => format!("not confirmed: {e}"),
        }
    }
}

/// What [`Engine::decommission`] did.
#[derive(Debug, Clone)]
pub struct DecommissionReport {
    pub device_id: String,
    /// Events delivered first.
    pub delivered_first: usize,
    /// Each receiver (URL) and its answer.
    pub receivers: Vec<(String, RetireAnswer)>,
}

/// The meta rows an enrollment wrote: cleared when the station is decommissioned.
const ENROLLMENT_KEYS: &[&str] = &[
    keys::DEVICE_ID,
    keys::DEVICE_STATUS,
    keys::STATION_RETIRED,
    keys::ENROLLED_AT,
    keys::ENROLLED_RECEIVER,
    keys::FLAG_RECEIVER,
    keys::FLAG_LOCATION,
    keys::CLAIMED_INCIDENTS,
];

impl Engine {
    /// Retires this station (see the module docs): delivers what is queued (for up to
    /// `delivery_window`), refuses if anything is still undelivered, tells every receiver, and
    /// only when all confirmed removes the device key and the enrollment. On an error nothing
    /// was forgotten.
    pub async fn decommission(&self, delivery_window: Duration) -> Result<DecommissionReport> {
        let device_id = self.device_id()?.ok_or(Error::NotEnrolled)?;
        let mut delivered_first = 0;
        if self.pending_count()? > 0 {
            let report = self
                .deliver_pending(Some(Instant::now() + delivery_window))
                .await;
            delivered_first = report.delivered.len();
            let left = self.pending_count()?;
            if left > 0 {
                return Err(Error::Invalid(format!(
                    "{left} event(s) in the outbox are not delivered yet{}: not decommissioning \
                     (an alarm is never dropped). Bring the receiver back, or let `duress-agent \
                     run` deliver them, then run `duress-agent decommission` again",
                    report
                        .last_error
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                )));
            }
        }
        let key = self.device_key_async(&device_id).await?;
        let receivers = self.effective_receivers()?;
        if receivers.is_empty() {
            return Err(Error::NoReceiver);
        }
        let proxy = self.inner.policy.network.proxy.as_deref();
        let mut answers = Vec::with_capacity(receivers.len());
        for r in &receivers {
            let answer = match Sender::with_proxy(std::slice::from_ref(r), proxy) {
                Ok(sender) => self.retire_at(&sender, &key, &device_id).await?,
                Err(e) => RetireAnswer::Failed(e.to_string()),
            };
            answers.push((r.url.to_string(), answer));
        }
        if let Some((url, a)) = answers.iter().find(|(_, a)| !a.confirmed()) {
            return Err(Error::Unreachable(format!(
                "receiver {url} {}; this station stays enrolled: run `duress-agent \
                 decommission` again when it answers (or retire the station from its console)",
                a.describe()
            )));
        }
        // Every receiver confirmed: forget the enrollment. The key first — a station without
        // its key cannot sign anything again, whatever happens next.
        let keystore = self.inner.keystore.clone();
        tokio::task::spawn_blocking(move || keystore.delete())
            .await
            .map_err(|e| Error::Task(e.to_string()))?
            .map_err(Error::Keystore)?;
        *lock(&self.inner.key) = None;
        *lock(&self.inner.sender) = None;
        self.db(|o| {
            let rows: Vec<(&str, Option<&str>)> =
                ENROLLMENT_KEYS.iter().map(|k| (*k, None)).collect();
            o.meta_set_many(&rows)
        })
        .await?;
        tracing::info!(device = %device_id, "decommissioned: retired at every receiver, key removed");
        Ok(DecommissionReport {
            device_id,
            delivered_first,
            receivers: answers,
        })
    }

    /// Posts the signed retirement to one receiver, re-signing after a clock-skew answer.
    async fn retire_at(
        &self,
        sender: &Sender,
        key: &Arc<DeviceKey>,
        device_id: &str,
    ) -> Result<RetireAnswer> {
        let mut resends = 0;
        loop {
            let claims = RetirementClaims {
                sent_at: truncate_to_millis(self.now()),
                queued: 0,
            };
            let payload = serde_json::to_vec(&claims).map_err(|e| Error::Invalid(e.to_string()))?;
            let token = key.sign(Typ::Retirement, Some(device_id), &payload);
            return Ok(match sender.post_retirement(&token).await {
                SendOutcome::Acked(a) if a.device_id == device_id => {
                    if a.retired_now {
                        RetireAnswer::Retired
                    } else {
                        RetireAnswer::AlreadyRetired
                    }
                }
                SendOutcome::Acked(a) => RetireAnswer::Failed(format!(
                    "answered for device {}, not this one",
                    a.device_id
                )),
                SendOutcome::ClockSkew { server_time } if resends < MAX_SKEW_RESENDS => {
                    resends += 1;
                    self.learn_offset(server_time).await?;
                    continue;
                }
                SendOutcome::ClockSkew { server_time } => {
                    RetireAnswer::Failed(format!("clock skew persists (server time {server_time})"))
                }
                SendOutcome::Refused(p) if p.kind() == Some(ProblemType::UnknownDevice) => {
                    RetireAnswer::UnknownDevice
                }
                SendOutcome::Refused(p) => RetireAnswer::Failed(problem_summary(&p)),
                SendOutcome::NotAccepted { detail, .. } => RetireAnswer::Failed(detail),
                SendOutcome::Unreachable(e) => RetireAnswer::Failed(e),
            });
        }
    }
}
