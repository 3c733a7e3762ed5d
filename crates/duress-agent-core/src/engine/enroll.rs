//! Enrollment: create the device key in the keystore (if none), prove possession by signing the
//! enrollment with it, and keep the device id the receiver assigns.
//!
//! Policy versus overrides (`duress-agent enroll --receiver/--token/--ca-cert/--label...`):
//! - **Receivers**: the policy is authoritative. When it lists receivers, an override receiver
//!   must be one of them (else an error: a user must not redirect alarms), and `--ca-cert` is
//!   refused (the policy's `ca_cert` applies). When the policy lists none, the override receiver
//!   (and its CA) is used and stored in the state database, and later sends use it.
//! - **Token**: an override token is used instead of the policy's (it redirects nothing).
//! - **Location**: when the policy sets any location field, it is authoritative and an override
//!   is an error; when it sets none, the override is sent and stored for later events.

use std::path::PathBuf;
use std::sync::Arc;

use duress_core::clock::truncate_to_millis;
use duress_core::{EnrollmentAnswer, EnrollmentClaims, Location};
use serde::{Deserialize, Serialize};

use super::{Engine, lock};
use crate::outbox::{fmt_time, keys};
use crate::policy::{ReceiverConfig, Secret};
use crate::sender::{SendOutcome, Sender};
use crate::{Error, Result};

/// How many times one operation re-signs after a clock-skew answer.
pub(crate) const MAX_SKEW_RESENDS: u32 = 3;

/// Overrides for [`Engine::enroll`] (all optional; see the module docs for the rules).
#[derive(Debug, Clone, Default)]
pub struct EnrollOptions {
    pub receiver: Option<ReceiverConfig>,
    pub token: Option<Secret>,
    pub location: Option<Location>,
}

/// A receiver stored in the state database (only when it came from `enroll --receiver`).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoredReceiver {
    url: String,
    ca_cert: Option<PathBuf>,
}

impl StoredReceiver {
    pub(super) fn into_config(self) -> Result<ReceiverConfig> {
        ReceiverConfig::new(&self.url, self.ca_cert)
    }
}

impl Engine {
    /// Enrolls this station. Generates the device key in the keystore if there is none, signs
    /// the enrollment with it (the header carries the public JWK), posts it, and stores the
    /// device id (and, per the rules above, the receiver and location overrides).
    pub async fn enroll(&self, opts: &EnrollOptions) -> Result<EnrollmentAnswer> {
        if let Some(id) = self.device_id()? {
            return Err(Error::AlreadyEnrolled(id));
        }
        let policy = &self.inner.policy;

        // Receivers.
        let mut flag_receiver = None;
        let receivers = match &opts.receiver {
            Some(r) if !policy.receivers.is_empty() => {
                if r.ca_cert.is_some() {
                    return Err(Error::Invalid(
                        "the policy lists receivers: their ca_cert applies; drop --ca-cert".into(),
                    ));
                }
                if !policy.receivers.iter().any(|p| same_url(&p.url, &r.url)) {
                    return Err(Error::Invalid(format!(
                        "{} is not a receiver of the policy; the policy decides where alarms go",
                        r.url
                    )));
                }
                policy.receivers.clone()
            }
            Some(r) => {
                let mut r = r.clone();
                if let Some(ca) = &r.ca_cert {
                    r.ca_cert = Some(std::path::absolute(ca).unwrap_or_else(|_| ca.clone()));
                }
                flag_receiver = Some(r.clone());
                vec![r]
            }
            None => {
                let r = self.effective_receivers()?;
                if r.is_empty() {
                    return Err(Error::NoReceiver);
                }
                r
            }
        };

        // Token.
        let token = opts
            .token
            .clone()
            .or_else(|| policy.enrollment.token.clone())
            .filter(|t| !t.expose().is_empty())
            .ok_or(Error::NoEnrollmentToken)?;

        // Location.
        let flag_location = match &opts.location {
            Some(loc) if *loc != Location::default() => {
                if policy.location != Location::default() {
                    return Err(Error::Invalid(
                        "the policy sets this station's location; location flags are refused"
                            .into(),
                    ));
                }
                loc.validate().map_err(Error::Invalid)?;
                Some(loc.clone())
            }
            _ => None,
        };
        let location = match &flag_location {
            Some(l) => l.clone(),
            None => self.effective_location()?,
        };

        // Key: generated in (and read back from) the keystore, off the async workers.
        let keystore = self.inner.keystore.clone();
        let key = tokio::task::spawn_blocking(move || keystore.load_or_create())
            .await
            .map_err(|e| Error::Task(e.to_string()))?
            .map_err(Error::Keystore);
        self.note_keystore(key.as_ref().err());
        let key = Arc::new(key?);

        let sender = Sender::with_proxy(&receivers, self.inner.policy.network.proxy.as_deref())?;
        let host = crate::host::collect();
        let mut resends = 0;
        let answer = loop {
            let claims = EnrollmentClaims {
                token: token.expose().to_owned(),
                sent_at: truncate_to_millis(self.now()),
                location: location.clone(),
                host: host.clone(),
            };
            let payload = serde_json::to_vec(&claims).map_err(|e| Error::Invalid(e.to_string()))?;
            let jws = key.sign_enrollment(&payload);
            match sender.post_enrollment(&jws).await {
                SendOutcome::Acked(a) => break a,
                SendOutcome::ClockSkew { server_time } if resends < MAX_SKEW_RESENDS => {
                    resends += 1;
                    self.learn_offset(server_time).await?;
                }
                SendOutcome::ClockSkew { server_time } => {
                    return Err(Error::Unreachable(format!(
                        "clock skew persists after {MAX_SKEW_RESENDS} corrections \
                         (server time {server_time})"
                    )));
                }
                SendOutcome::Refused(p) | SendOutcome::NotAccepted { problem: p, .. } => {
                    return Err(Error::Refused(p));
                }
                SendOutcome::Unreachable(e) => return Err(Error::Unreachable(e)),
            }
        };

        // Learn the offset the receiver's clock implies when it is more than network delay,
        // then keep the enrollment itself.
        if (answer.server_time - self.now()).abs() > super::delivery::OFFSET_RELEARN_THRESHOLD {
            self.learn_offset(answer.server_time).await?;
        }
        let answered_by = sender.preferred().to_string();
        let stored_receiver = flag_receiver
            .map(|r| {
                serde_json::to_string(&StoredReceiver {
                    url: r.url.to_string(),
                    ca_cert: r.ca_cert,
                })
            })
            .transpose()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let stored_location = flag_location
            .map(|l| serde_json::to_string(&l))
            .transpose()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let device_id = answer.device_id.clone();
        let status = answer.status.as_str().to_owned();
        let now = fmt_time(self.now());
        self.db(move |o| {
            let mut rows: Vec<(&str, Option<&str>)> = vec![
                (keys::DEVICE_ID, Some(&device_id)),
                (keys::DEVICE_STATUS, Some(&status)),
                (keys::ENROLLED_AT, Some(&now)),
                (keys::ENROLLED_RECEIVER, Some(&answered_by)),
                (keys::LAST_CONTACT_AT, Some(&now)),
                (keys::LAST_RECEIVER, Some(&answered_by)),
                (keys::UNREACHABLE_SINCE, None),
                (keys::LAST_ERROR, None),
            ];
            if let Some(r) = &stored_receiver {
                rows.push((keys::FLAG_RECEIVER, Some(r)));
            }
            if let Some(l) = &stored_location {
                rows.push((keys::FLAG_LOCATION, Some(l)));
            }
            o.meta_set_many(&rows)
        })
        .await?;
        *lock(&self.inner.key) = Some(key);
        *lock(&self.inner.sender) = None;
        tracing::info!(device = %answer.device_id, status = answer.status.as_str(), "enrolled");
        Ok(answer)
    }
}

fn same_url(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.as_str().trim_end_matches('/') == b.as_str().trim_end_matches('/')
}
