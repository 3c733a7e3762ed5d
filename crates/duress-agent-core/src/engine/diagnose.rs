//! `duress-agent diagnose`: each receiver asked on its own, with a real signed heartbeat, so a
//! help desk learns which receiver answers, how its TLS identity was checked and how far the
//! clocks are apart — not only that "the first reachable one" did.

use duress_core::clock::truncate_to_millis;
use duress_core::{HeartbeatClaims, HotkeyState, Typ};
use serde::Serialize;
use uuid::Uuid;

use super::Engine;
use crate::error::problem_summary;
use crate::outbox::keys;
use crate::policy::ReceiverConfig;
use crate::sender::{SendOutcome, Sender};
use crate::{Error, Result};

/// What one receiver answered to a diagnosis heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceiverProbe {
    pub url: String,
    /// How the receiver's TLS identity is checked: `pin sha256 …`, `CA file …` or `OS trust store`.
    pub tls_identity: String,
    /// True when it accepted the heartbeat over a verified TLS connection.
    pub reachable: bool,
    /// `accepted (device active)`, `refused: …`, `unreachable: …`, `clock skew: …`.
    pub answer: String,
    /// The receiver's clock minus ours (corrected), in milliseconds, when it answered.
    pub clock_offset_ms: Option<i64>,
}

/// How `r`'s TLS identity is checked.
pub fn tls_identity(r: &ReceiverConfig) -> String {
    match (&r.ca_sha256, &r.ca_cert) {
        (Some(pin), _) if !pin.trim().is_empty() => format!("pinned certificate sha256 {pin}"),
        (_, Some(ca)) => format!("CA file {} (plus the OS trust store)", ca.display()),
        _ => "OS trust store".to_owned(),
    }
}

impl Engine {
    /// Sends one signed heartbeat to each effective receiver in turn (not only the first that
    /// answers) with `hotkey` as the chord state, and says what each answered. Needs the device
    /// key; an unenrolled station gets [`Error::NotEnrolled`].
    pub async fn probe_receivers(&self, hotkey: HotkeyState) -> Result<Vec<ReceiverProbe>> {
        let device_id = self.device_id()?.ok_or(Error::NotEnrolled)?;
        let key = self.device_key_async(&device_id).await?;
        let (queued, last_seq, last_self_test) = self
            .db(|o| {
                let t = o
                    .meta_get(keys::LAST_SELF_TEST_ID)?
                    .and_then(|s| Uuid::parse_str(&s).ok());
                Ok((o.pending_count()?, o.last_seq()?, t))
            })
            .await?;
        let location = self.effective_location()?;
        let host = tokio::task::spawn_blocking(crate::host::collect)
            .await
            .unwrap_or_default();
        let mut out = Vec::new();
        for r in self.effective_receivers()? {
            let mut probe = ReceiverProbe {
                url: r.url.to_string(),
                tls_identity: tls_identity(&r),
                reachable: false,
                answer: String::new(),
                clock_offset_ms: None,
            };
            let sender = match Sender::with_proxy(
                std::slice::from_ref(&r),
                self.inner.policy.network.proxy.as_deref(),
            ) {
                Ok(s) => s,
                Err(e) => {
                    probe.answer = format!("cannot set up TLS: {e}");
                    out.push(probe);
                    continue;
                }
            };
            let claims = HeartbeatClaims {
                sent_at: truncate_to_millis(self.now()),
                hotkey: hotkey.clone(),
                queued,
                last_seq,
                last_self_test,
                location: location.clone(),
                host: host.clone(),
                policy: None,
                alarm_refused: None,
            };
            let payload = serde_json::to_vec(&claims).map_err(|e| Error::Invalid(e.to_string()))?;
            let token = key.sign(Typ::Heartbeat, Some(&device_id), &payload);
            match sender.post_heartbeat(&token).await {
                SendOutcome::Acked(a) => {
                    probe.reachable = true;
                    probe.answer = format!("accepted (device {})", a.device_status.as_str());
                    probe.clock_offset_ms =
                        Some((a.server_time - self.now()).whole_milliseconds() as i64);
                }
                SendOutcome::ClockSkew { server_time } => {
                    probe.answer = format!("clock skew: the receiver's time is {server_time}");
                    probe.clock_offset_ms =
                        Some((server_time - self.now()).whole_milliseconds() as i64);
                }
                SendOutcome::Refused(p) => {
                    probe.answer = format!("refused: {}", problem_summary(&p))
                }
                SendOutcome::NotAccepted { detail, .. } => {
                    probe.answer = format!("not accepted: {detail}")
                }
                SendOutcome::Unreachable(e) => probe.answer = format!("unreachable: {e}"),
            }
            out.push(probe);
        }
        Ok(out)
    }
}
