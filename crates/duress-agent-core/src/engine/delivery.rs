//! Sending: pending events (re-signed with a fresh `sent_at` on every attempt) and heartbeats.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duress_core::clock::truncate_to_millis;
use duress_core::{
    DeviceKey, DeviceStatus, EventAck, EventKind, HeartbeatAnswer, HeartbeatClaims, HotkeyState,
    ProblemType, Typ,
};
use serde::Serialize;
use uuid::Uuid;

use super::enroll::MAX_SKEW_RESENDS;
use super::{Engine, lock, sign_event};
use crate::error::problem_summary;
use crate::outbox::{StoredEvent, fmt_time, keys};
use crate::retry::{REFUSED_RETRY, alarm_retry_delay, random_jitter};
use crate::sender::{SendOutcome, Sender};
use crate::status_line::refusal_reason;
use crate::{Error, Result};

/// Events sent at once while draining a queue (each on its own kept-alive connection; the
/// receiver group-commits them). Bounded so a workstation back from a long outage does not open
/// hundreds of connections.
pub(super) const IN_FLIGHT: usize = 16;

/// A heartbeat answer whose server time differs from our corrected clock by more than this
/// re-learns the offset (smaller differences are network delay, not a wrong clock).
pub(super) const OFFSET_RELEARN_THRESHOLD: time::Duration = time::Duration::seconds(5);

/// What [`Engine::deliver_pending`] achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    /// Events acknowledged during this call.
    pub delivered: Vec<Uuid>,
    /// Events a receiver refused (4xx) during this call; they stay queued and are retried slowly.
    pub refused: Vec<Uuid>,
    /// Events still waiting for an acknowledgement when the call returned.
    pub queued: u64,
    /// The last error seen, if any.
    pub last_error: Option<String>,
    /// How many passes over the outbox were made.
    pub passes: u32,
}

/// One pass over the pending events.
#[derive(Debug, Default)]
pub(super) struct Pass {
    pub delivered: Vec<Uuid>,
    /// Events that should be retried on the fast alarm schedule.
    pub failed: usize,
    /// Events refused by a receiver (slow retry).
    pub refused: Vec<Uuid>,
    pub last_error: Option<String>,
}

impl Engine {
    /// Sends every pending event, oldest first, re-signed with a fresh `sent_at`, retrying on the
    /// alarm schedule (first retry ≤ 1 s, doubling, ≤ 4 s apart, jittered) until every event is
    /// acknowledged or refused, or `deadline` passes. An event is marked delivered only on a 2xx
    /// naming its id; nothing is ever deleted.
    pub async fn deliver_pending(&self, deadline: Option<Instant>) -> DeliveryReport {
        let mut report = DeliveryReport::default();
        let mut attempt = 0;
        loop {
            report.passes += 1;
            let pass = match deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), self.deliver_once()).await {
                    Ok(p) => p,
                    Err(_) => {
                        report.last_error = Some(format!(
                            "deadline reached while sending{}",
                            report
                                .last_error
                                .as_deref()
                                .map(|e| format!(" (before: {e})"))
                                .unwrap_or_default()
                        ));
                        break;
                    }
                },
                None => self.deliver_once().await,
            };
            match pass {
                Ok(p) => {
                    report.delivered.extend(p.delivered);
                    for id in p.refused {
                        if !report.refused.contains(&id) {
                            report.refused.push(id);
                        }
                    }
                    if p.last_error.is_some() {
                        report.last_error = p.last_error;
                    }
                    if p.failed == 0 {
                        break;
                    }
                }
                Err(e) => report.last_error = Some(e.to_string()),
            }
            let delay = alarm_retry_delay(attempt, random_jitter());
            attempt = attempt.saturating_add(1);
            if let Some(d) = deadline
                && Instant::now() + delay >= d
            {
                break;
            }
            tokio::time::sleep(delay).await;
        }
        report.queued = match self.db(|o| o.pending_count()).await {
            Ok(n) => n,
            Err(e) => {
                report.last_error = Some(e.to_string());
                u64::MAX
            }
        };
        report
    }

    /// One attempt at every pending event that is not waiting out a refusal. Stops at the first
    /// unreachable answer (the others would only wait for the same timeouts).
    pub(super) async fn deliver_once(&self) -> Result<Pass> {
        let pending = self.db(|o| o.pending()).await?;
        let mut pass = Pass::default();
        if pending.is_empty() {
            return Ok(pass);
        }
        let device_id = self.device_id()?.ok_or(Error::NotEnrolled)?;
        let prepared = async {
            let key = self.device_key_async(&device_id).await?;
            let sender = self.sender()?;
            Ok::<_, Error>((key, sender))
        };
        let (key, sender) = match prepared.await {
            Ok(ks) => ks,
            Err(e) => {
                let msg = e.to_string();
                self.note_error(&msg).await;
                pass.failed = pending.len();
                pass.last_error = Some(msg);
                return Ok(pass);
            }
        };
        let mut sendable = Vec::with_capacity(pending.len());
        for ev in &pending {
            let waiting = lock(&self.inner.refused_until)
                .get(&ev.id)
                .is_some_and(|until| *until > Instant::now());
            if waiting {
                pass.refused.push(ev.id);
            } else {
                sendable.push(ev);
            }
        }
        let mut sent = 0;
        for chunk in sendable.chunks(IN_FLIGHT) {
            // Oldest first, up to IN_FLIGHT at once over the sender's kept-alive connections:
            // the receiver answers each by id and is idempotent, so the order of the answers
            // does not matter, and a queue drains in round trips / IN_FLIGHT.
            let outcomes = futures::future::join_all(
                chunk
                    .iter()
                    .map(|ev| self.send_event(&sender, &key, &device_id, ev)),
            )
            .await;
            sent += chunk.len();
            let mut acked = Vec::new();
            let mut others = Vec::new();
            let mut failed_to_send = None;
            for (ev, outcome) in chunk.iter().zip(outcomes) {
                match outcome {
                    Ok(SendOutcome::Acked(ack)) => acked.push((*ev, ack)),
                    Ok(other) => others.push((*ev, other)),
                    Err(e) => failed_to_send = failed_to_send.or(Some(e)),
                }
            }
            // The acknowledgements first — even when another send of the chunk failed locally —
            // in one outbox transaction (one fsync), so that a refusal below stays the last
            // error shown and no acknowledged alarm is sent again for nothing.
            if !acked.is_empty() {
                self.on_acked(&acked, &sender).await?;
                pass.delivered.extend(acked.iter().map(|(ev, _)| ev.id));
            }
            if let Some(e) = failed_to_send {
                return Err(e);
            }
            let mut unreachable = false;
            let mut not_accepted = false;
            for (ev, outcome) in others {
                match outcome {
                    SendOutcome::Acked(_) => {}
                    SendOutcome::Refused(p) => {
                        // Every receiver refused it: final for this attempt.
                        let msg = format!("refused: {}", problem_summary(&p));
                        tracing::warn!(event = %ev.id, "{msg}; kept, retried in {REFUSED_RETRY:?}");
                        self.on_attempt_failed(ev.id, &msg).await?;
                        lock(&self.inner.refused_until)
                            .insert(ev.id, Instant::now() + REFUSED_RETRY);
                        self.note_contact(&sender, Some(&msg)).await;
                        self.note_alarm_refused(&refusal_reason(&p)).await;
                        pass.refused.push(ev.id);
                        pass.last_error = Some(msg);
                    }
                    SendOutcome::NotAccepted { problem, detail } => {
                        // A refusal specific to the receivers that answered (unknown device,
                        // rate limit, 5xx…), or others were unreachable: not final, so the
                        // alarm stays on the fast schedule — and the person is told.
                        let msg = format!("not accepted: {detail}");
                        tracing::warn!(event = %ev.id, "{msg}; kept, retried on the alarm schedule");
                        self.on_attempt_failed(ev.id, &msg).await?;
                        if detail.contains(crate::sender::ACK_NOT_VERIFIED) {
                            // Another receiver answered with an unverified acknowledgement.
                            self.note_ack_unverified(&detail).await;
                        }
                        if !not_accepted {
                            self.note_contact(&sender, Some(&msg)).await;
                            self.note_alarm_refused(&refusal_reason(&problem)).await;
                        }
                        not_accepted = true;
                        pass.failed += 1;
                        pass.last_error = Some(msg);
                    }
                    SendOutcome::ClockSkew { server_time } => {
                        let msg = format!(
                            "clock skew persists after {MAX_SKEW_RESENDS} corrections \
                             (server time {server_time})"
                        );
                        self.on_attempt_failed(ev.id, &msg).await?;
                        pass.failed += 1;
                        pass.last_error = Some(msg);
                    }
                    SendOutcome::Unreachable(e) => {
                        tracing::warn!(event = %ev.id, "not delivered: {e}");
                        self.on_attempt_failed(ev.id, &e).await?;
                        if e.contains(crate::sender::ACK_NOT_VERIFIED) {
                            self.note_ack_unverified(&e).await;
                        }
                        if !unreachable {
                            self.note_unreachable(&e).await;
                        }
                        unreachable = true;
                        pass.failed += 1;
                        pass.last_error = Some(e);
                    }
                }
            }
            // Stop at the first unreachable or not-accepted answer: the rest would only wait
            // for the same timeouts (or the same refusal, a rate limit counting them); they
            // count as failed and go on the alarm retry schedule.
            if unreachable || not_accepted {
                pass.failed += sendable.len() - sent;
                break;
            }
        }
        Ok(pass)
    }

    /// Sends one event, re-signing it with a corrected `sent_at` after a clock-skew answer
    /// (at most [`MAX_SKEW_RESENDS`] times).
    async fn send_event(
        &self,
        sender: &Sender,
        key: &DeviceKey,
        device_id: &str,
        ev: &StoredEvent,
    ) -> Result<SendOutcome<EventAck>> {
        let mut resends = 0;
        loop {
            let claims = ev.claims.resent_at(self.now());
            let token = sign_event(key, device_id, &claims)?;
            match sender.post_event(&token, ev.id).await {
                SendOutcome::ClockSkew { server_time } if resends < MAX_SKEW_RESENDS => {
                    resends += 1;
                    tracing::warn!(event = %ev.id, %server_time, "clock skew; re-signing");
                    self.learn_offset(server_time).await?;
                }
                other => return Ok(other),
            }
        }
    }

    /// Records acknowledgements: every event marked delivered, the last self-test, and the
    /// contact with the receiver, in one outbox transaction.
    async fn on_acked(&self, acked: &[(&StoredEvent, EventAck)], sender: &Sender) -> Result<()> {
        let at = self.now();
        let now = fmt_time(at);
        let url = sender.preferred().to_string();
        let pairs: Vec<(Uuid, EventAck)> = acked.iter().map(|(ev, a)| (ev.id, a.clone())).collect();
        let last_test = acked
            .iter()
            .rev()
            .find(|(ev, _)| ev.kind == EventKind::Test)
            .map(|(ev, _)| ev.id.to_string());
        self.db(move |o| {
            let acks: Vec<(Uuid, &EventAck)> = pairs.iter().map(|(id, a)| (*id, a)).collect();
            let mut meta = contact_rows(&now, &url, None);
            // A delivered event's answer passed the acknowledgement check (when one is set).
            meta.push((keys::ACK_UNVERIFIED_SINCE, None));
            meta.push((keys::ACK_UNVERIFIED_REASON, None));
            // An alarm got through: whatever refused the earlier ones no longer does.
            meta.push((keys::ALARM_REFUSED_SINCE, None));
            meta.push((keys::ALARM_REFUSED_REASON, None));
            if let Some(id) = &last_test {
                meta.push((keys::LAST_SELF_TEST_ID, Some(id.as_str())));
                meta.push((keys::LAST_SELF_TEST_AT, Some(now.as_str())));
            }
            o.mark_delivered_many(&acks, at, &meta)?;
            Ok(())
        })
        .await?;
        let mut refused_until = lock(&self.inner.refused_until);
        for (ev, ack) in acked {
            refused_until.remove(&ev.id);
            // Debug only: a delivery reveals a press (see `Engine::record`).
            tracing::debug!(event = %ev.id, delay_ms = ack.delay_ms, "delivered");
        }
        Ok(())
    }

    async fn on_attempt_failed(&self, id: Uuid, error: &str) -> Result<()> {
        let (error, at) = (error.to_owned(), self.now());
        self.db(move |o| o.record_attempt(id, &error, at)).await
    }

    /// Sends one heartbeat (hotkey state, queue length, last seq, last self-test, location,
    /// host facts), correcting the clock offset on a clock-skew answer.
    pub async fn send_heartbeat(&self, hotkey: HotkeyState) -> Result<HeartbeatAnswer> {
        *lock(&self.inner.hotkey) = hotkey.clone();
        let device_id = self.device_id()?.ok_or(Error::NotEnrolled)?;
        let key = self.device_key_async(&device_id).await?;
        let sender = match self.sender() {
            Ok(s) => s,
            Err(e) => {
                self.note_error(&e.to_string()).await;
                return Err(e);
            }
        };
        let (queued, last_seq, last_self_test, refused) = self
            .db(|o| {
                let t = o
                    .meta_get(keys::LAST_SELF_TEST_ID)?
                    .and_then(|s| Uuid::parse_str(&s).ok());
                Ok((
                    o.pending_count()?,
                    o.last_seq()?,
                    t,
                    o.meta_get(keys::ALARM_REFUSED_REASON)?,
                ))
            })
            .await?;
        // Officers see on the Stations page that this station's alarms are being refused
        // (only while one is queued, as the status line).
        let alarm_refused = refused
            .filter(|_| queued > 0)
            .map(|r| r.chars().take(200).collect::<String>());
        let location = self.effective_location()?;
        let report = self.policy_report();
        let policy = duress_core::PolicyFacts {
            source: match &report.ignored {
                // The receiver's text limit is 256 characters: the reason is in the status.
                Some(_) => format!("{} (a named policy file was ignored)", report.source),
                None => report.source.clone(),
            }
            .chars()
            .take(200)
            .collect(),
            sha256: report.sha256,
        };
        let host = tokio::task::spawn_blocking(crate::host::collect)
            .await
            .unwrap_or_default();
        let mut resends = 0;
        loop {
            let claims = HeartbeatClaims {
                sent_at: truncate_to_millis(self.now()),
                hotkey: hotkey.clone(),
                queued,
                last_seq,
                last_self_test,
                location: location.clone(),
                host: host.clone(),
                policy: Some(policy.clone()),
                alarm_refused: alarm_refused.clone(),
            };
            let payload = serde_json::to_vec(&claims).map_err(|e| Error::Invalid(e.to_string()))?;
            let token = key.sign(Typ::Heartbeat, Some(&device_id), &payload);
            match sender.post_heartbeat(&token).await {
                SendOutcome::Acked(answer) => {
                    if (answer.server_time - self.now()).abs() > OFFSET_RELEARN_THRESHOLD {
                        self.learn_offset(answer.server_time).await?;
                    }
                    let status = answer.device_status.as_str().to_owned();
                    let hk = serde_json::to_string(&hotkey).unwrap_or_default();
                    let at = fmt_time(self.now());
                    let claimed =
                        serde_json::to_string(&answer.claimed_incidents).unwrap_or_default();
                    let retired = answer.retired.then_some("1");
                    if answer.retired {
                        tracing::warn!(
                            "the receiver says this station is retired: not enrolled any more"
                        );
                    }
                    self.db(move |o| {
                        o.meta_set_many(&[
                            (keys::STATION_RETIRED, retired),
                            (keys::DEVICE_STATUS, Some(&status)),
                            (keys::HOTKEY_STATE, Some(&hk)),
                            (keys::LAST_HEARTBEAT_AT, Some(&at)),
                            (keys::CLAIMED_INCIDENTS, Some(&claimed)),
                        ])
                    })
                    .await?;
                    self.note_contact(&sender, None).await;
                    return Ok(answer);
                }
                SendOutcome::ClockSkew { server_time } if resends < MAX_SKEW_RESENDS => {
                    resends += 1;
                    self.learn_offset(server_time).await?;
                }
                SendOutcome::ClockSkew { server_time } => {
                    let e = format!("clock skew persists (server time {server_time})");
                    self.note_error(&e).await;
                    return Err(Error::Unreachable(e));
                }
                // A receiver's word on the device's standing is shown even when another
                // receiver could not be asked (it is not final for alarms, which keep trying).
                SendOutcome::Refused(p) | SendOutcome::NotAccepted { problem: p, .. } => {
                    let status = match p.kind() {
                        Some(ProblemType::DevicePending) => Some(DeviceStatus::Pending),
                        Some(ProblemType::DeviceDisabled) => Some(DeviceStatus::Disabled),
                        Some(ProblemType::DeviceRevoked) => Some(DeviceStatus::Revoked),
                        _ => None,
                    };
                    if let Some(s) = status {
                        let s = s.as_str();
                        self.db(move |o| o.meta_set(keys::DEVICE_STATUS, s)).await?;
                    }
                    let msg = format!("heartbeat refused: {}", problem_summary(&p));
                    self.note_contact(&sender, Some(&msg)).await;
                    return Err(Error::Refused(p));
                }
                SendOutcome::Unreachable(e) => {
                    self.note_unreachable(&e).await;
                    return Err(Error::Unreachable(e));
                }
            }
        }
    }

    /// The device key, loading it from the keystore off the async workers the first time.
    pub(super) async fn device_key_async(&self, device_id: &str) -> Result<Arc<DeviceKey>> {
        if let Some(k) = lock(&self.inner.key).as_ref() {
            return Ok(k.clone());
        }
        let this = self.clone();
        let device_id = device_id.to_owned();
        tokio::task::spawn_blocking(move || this.device_key(&device_id))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    /// A receiver answered: it is reachable. `error` is kept as the last error when the answer
    /// was a refusal.
    async fn note_contact(&self, sender: &Sender, error: Option<&str>) {
        let url = sender.preferred().to_string();
        let now = fmt_time(self.now());
        let error = error.map(str::to_owned);
        let r = self
            .db(move |o| o.meta_set_many(&contact_rows(&now, &url, error.as_deref())))
            .await;
        if let Err(e) = r {
            tracing::warn!("cannot record contact: {e}");
        }
    }

    /// No receiver answered.
    async fn note_unreachable(&self, error: &str) {
        let now = fmt_time(self.now());
        let error = error.to_owned();
        let r = self
            .db(move |o| {
                let since = o.meta_get(keys::UNREACHABLE_SINCE)?.unwrap_or(now);
                o.meta_set_many(&[
                    (keys::UNREACHABLE_SINCE, Some(&since)),
                    (keys::LAST_ERROR, Some(&error)),
                ])
            })
            .await;
        if let Err(e) = r {
            tracing::warn!("cannot record unreachable: {e}");
        }
    }

    /// Queued alarms are being refused: the status line says so ("alert not accepted by the
    /// receiver: REASON") until an acknowledgement.
    async fn note_alarm_refused(&self, reason: &str) {
        let now = fmt_time(self.now());
        let reason = reason.to_owned();
        let r = self
            .db(move |o| {
                let since = o.meta_get(keys::ALARM_REFUSED_SINCE)?.unwrap_or(now);
                o.meta_set_many(&[
                    (keys::ALARM_REFUSED_SINCE, Some(&since)),
                    (keys::ALARM_REFUSED_REASON, Some(&reason)),
                ])
            })
            .await;
        if let Err(e) = r {
            tracing::warn!("cannot record the refusal: {e}");
        }
    }

    async fn note_ack_unverified(&self, error: &str) {
        let now = fmt_time(self.now());
        let error = error.to_owned();
        let r = self
            .db(move |o| {
                let since = o.meta_get(keys::ACK_UNVERIFIED_SINCE)?.unwrap_or(now);
                o.meta_set_many(&[
                    (keys::ACK_UNVERIFIED_SINCE, Some(&since)),
                    (keys::ACK_UNVERIFIED_REASON, Some(&error)),
                ])
            })
            .await;
        if let Err(e) = r {
            tracing::warn!("cannot record the unverified acknowledgement: {e}");
        }
    }

    async fn note_error(&self, error: &str) {
        let error = error.to_owned();
        if let Err(e) = self.db(move |o| o.meta_set(keys::LAST_ERROR, &error)).await {
            tracing::warn!("cannot record error: {e}");
        }
    }
}

/// The meta rows that say a receiver answered at `now`: a clean answer (`error` = `None`) clears
/// the last error; a refusal becomes it.
fn contact_rows<'a>(
    now: &'a str,
    url: &'a str,
    error: Option<&'a str>,
) -> Vec<(&'static str, Option<&'a str>)> {
    vec![
        (keys::LAST_CONTACT_AT, Some(now)),
        (keys::LAST_RECEIVER, Some(url)),
        (keys::UNREACHABLE_SINCE, None),
        (keys::LAST_ERROR, error),
    ]
}

/// `Duration` of a heartbeat interval from seconds, clamped to the policy bounds.
pub(super) fn interval_from_secs(s: u64) -> Duration {
    Duration::from_secs(s.clamp(
        crate::policy::MIN_HEARTBEAT_INTERVAL_S,
        crate::policy::MAX_HEARTBEAT_INTERVAL_S,
    ))
}
