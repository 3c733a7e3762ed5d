//! The status snapshot the tray, `duress-agent status` and tests read.

use duress_core::{DeviceStatus, HotkeyState};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Engine, lock};
use crate::Result;
use crate::outbox::{keys, parse_time};

/// What the status says when a receiver's acknowledgements are not checked against a key.
pub const ACKS_NOT_VERIFIED: &str = "acknowledgements not verified";

/// The last self-test a receiver acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelfTest {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Everything a person needs to know about this station's protection, at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusSnapshot {
    /// Has a device id and no receiver said the station is retired.
    pub enrolled: bool,
    pub device_id: Option<String>,
    /// The device's standing as last reported by a receiver.
    pub device_status: Option<DeviceStatus>,
    /// Where alarms go, in order.
    pub receivers: Vec<String>,
    /// The receiver that answered last.
    pub last_receiver: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_contact_at: Option<OffsetDateTime>,
    /// Since when no receiver has answered (absent while reachable).
    #[serde(with = "time::serde::rfc3339::option")]
    pub unreachable_since: Option<OffsetDateTime>,
    /// Events durable in the outbox and not yet acknowledged.
    pub queued: u64,
    pub last_seq: u64,
    pub last_error: Option<String>,
    pub location_label: String,
    pub last_self_test: Option<SelfTest>,
    /// Learned `server_time − raw_now`, in milliseconds.
    pub clock_offset_ms: i64,
    /// This process's hotkey state, or the one the running agent last reported.
    pub hotkey: HotkeyState,
    /// When a receiver last acknowledged a heartbeat (alarms delivered do not move it).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_heartbeat_at: Option<OffsetDateTime>,
    /// This device's open incidents an officer has claimed, from the last heartbeat answer of
    /// whichever process sent it (kept in the state database).
    pub claimed_incidents: Vec<Uuid>,
    /// Whether event acknowledgements are checked against the policy's `ack_key`:
    /// `verified`, `acknowledgements not verified` (no receiver names a key), or
    /// `acknowledgements not verified for URL, …` (some receivers name none).
    pub acknowledgements: String,
    /// Since when answers to events fail the acknowledgement check, and why (cleared by the
    /// next verified acknowledgement).
    #[serde(with = "time::serde::rfc3339::option")]
    pub ack_unverified_since: Option<OffsetDateTime>,
    pub ack_unverified_reason: Option<String>,
    /// Since when queued alarms are being refused by the receivers that answer them, and why
    /// (cleared by the next acknowledgement). Shown while an alarm is queued.
    #[serde(with = "time::serde::rfc3339::option")]
    pub alarm_refused_since: Option<OffsetDateTime>,
    pub alarm_refused_reason: Option<String>,
    /// Where the policy came from (`flag:PATH`, `env:PATH`, `os:LAYERS`) and the SHA-256 of
    /// the effective policy, as every heartbeat reports them.
    pub policy_source: String,
    pub policy_sha256: String,
    /// Why a `--policy`/`DURESS_AGENT_POLICY` file was ignored (release builds honour only a
    /// file a user cannot have written), if one was.
    pub policy_ignored: Option<String>,
    /// Why the keystore cannot give the device key, when it was last asked and failed.
    pub keystore_problem: Option<String>,
    pub install_id: String,
    pub state_dir: String,
}

impl Engine {
    /// A snapshot of the station's state (reads the outbox; no network, no keystore).
    pub fn status(&self) -> Result<StatusSnapshot> {
        let (meta, queued, last_seq) = self.with_outbox(|o| {
            let get = |k: &str| o.meta_get(k);
            let meta = [
                keys::DEVICE_ID,
                keys::DEVICE_STATUS,
                keys::LAST_RECEIVER,
                keys::LAST_CONTACT_AT,
                keys::UNREACHABLE_SINCE,
                keys::LAST_ERROR,
                keys::LAST_SELF_TEST_ID,
                keys::LAST_SELF_TEST_AT,
                keys::HOTKEY_STATE,
                keys::LAST_HEARTBEAT_AT,
                keys::CLAIMED_INCIDENTS,
                keys::ACK_UNVERIFIED_SINCE,
                keys::ACK_UNVERIFIED_REASON,
                keys::STATION_RETIRED,
                keys::ALARM_REFUSED_SINCE,
                keys::ALARM_REFUSED_REASON,
            ]
            .map(get);
            let meta: Vec<Option<String>> = meta.into_iter().collect::<Result<_>>()?;
            Ok((meta, o.pending_count()?, o.last_seq()?))
        })?;
        let [
            device_id,
            device_status,
            last_receiver,
            last_contact_at,
            unreachable_since,
            last_error,
            self_test_id,
            self_test_at,
            hotkey_json,
            last_heartbeat_at,
            claimed_json,
            ack_unverified_since,
            ack_unverified_reason,
            retired,
            alarm_refused_since,
            alarm_refused_reason,
        ]: [Option<String>; 16] = meta.try_into().unwrap_or_default();
        let time = |s: Option<String>| s.and_then(|s| parse_time(&s).ok());
        let last_self_test = match (
            self_test_id.and_then(|s| Uuid::parse_str(&s).ok()),
            time(self_test_at),
        ) {
            (Some(id), Some(at)) => Some(SelfTest { id, at }),
            _ => None,
        };
        let local_hotkey = lock(&self.inner.hotkey).clone();
        let hotkey = match local_hotkey {
            HotkeyState::NotApplicable => hotkey_json
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or(HotkeyState::NotApplicable),
            h => h,
        };
        let receivers = self.effective_receivers()?;
        let unverified: Vec<String> = receivers
            .iter()
            .filter(|r| r.ack_key.as_deref().is_none_or(|k| k.trim().is_empty()))
            .map(|r| r.url.to_string())
            .collect();
        let acknowledgements = if unverified.is_empty() && !receivers.is_empty() {
            "verified".to_owned()
        } else if unverified.len() == receivers.len() {
            ACKS_NOT_VERIFIED.to_owned()
        } else {
            format!("{ACKS_NOT_VERIFIED} for {}", unverified.join(", "))
        };
        let report = self.policy_report();
        Ok(StatusSnapshot {
            policy_source: report.source,
            policy_sha256: report.sha256,
            policy_ignored: report.ignored,
            // A station a receiver says is retired is not enrolled any more (its tray says so),
            // even before `decommission` forgot its device id.
            enrolled: device_id.is_some() && retired.is_none(),
            device_id,
            device_status: device_status.as_deref().and_then(DeviceStatus::parse),
            receivers: receivers.iter().map(|r| r.url.to_string()).collect(),
            last_receiver,
            last_contact_at: time(last_contact_at),
            unreachable_since: time(unreachable_since),
            queued,
            last_seq,
            last_error,
            location_label: self.effective_location()?.display_label(),
            last_self_test,
            clock_offset_ms: self.clock_offset().whole_milliseconds() as i64,
            hotkey,
            last_heartbeat_at: time(last_heartbeat_at),
            claimed_incidents: claimed_json
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or_default(),
            acknowledgements,
            ack_unverified_since: time(ack_unverified_since),
            ack_unverified_reason,
            alarm_refused_since: time(alarm_refused_since),
            alarm_refused_reason,
            keystore_problem: lock(&self.inner.keystore_problem).clone(),
            install_id: self.inner.install_id.clone(),
            state_dir: self.inner.state_dir.display().to_string(),
        })
    }
}
