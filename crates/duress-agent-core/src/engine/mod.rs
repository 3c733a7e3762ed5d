//! The engine: policy + state directory + outbox + device key + sender, driven by triggers
//! (`record`), the delivery loop and heartbeats (`run`).
//!
//! [`Engine`] is a cheap handle (`Clone`, `Send`, `Sync`): a tray can call [`Engine::record`]
//! from a hotkey thread (it is synchronous on purpose and needs no runtime) while
//! [`Engine::run`] runs on another thread with its own tokio runtime. Opening an engine touches
//! neither the network nor the keystore.

mod decommission;
mod delivery;
mod diagnose;
mod enroll;
mod run_loop;
pub mod self_test;
mod status;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use duress_core::clock::truncate_to_millis;
use duress_core::{
    DeviceKey, EventClaims, EventKind, HotkeyState, Location, PinCheck, Source, Typ,
};
use time::{Duration, OffsetDateTime};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::clock::{Clock, raw_clock_from_env};
use crate::keystore::Keystore;
use crate::outbox::{Outbox, StoredEvent, keys};
use crate::policy::{Policy, ReceiverConfig};
use crate::sender::Sender;
use crate::{Error, Result};

pub use decommission::{DecommissionReport, RetireAnswer};
pub use delivery::DeliveryReport;
pub use diagnose::{ReceiverProbe, tls_identity};
pub use enroll::EnrollOptions;
pub use status::{SelfTest, StatusSnapshot};

/// The agent engine. See the module docs.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    policy: Policy,
    state_dir: PathBuf,
    raw_clock: Arc<dyn Clock>,
    outbox: Mutex<Outbox>,
    install_id: String,
    keystore: Keystore,
    /// The device key once loaded from the keystore (loaded lazily, then kept for fast presses).
    key: Mutex<Option<Arc<DeviceKey>>>,
    /// Built lazily from the effective receivers; reset when they change (enrollment).
    sender: Mutex<Option<Arc<Sender>>>,
    /// Learned `server_time − raw_now`, in milliseconds (mirrors meta `clock_offset_ms`).
    offset_ms: AtomicI64,
    /// Poked by `record` so an in-process `run` sends at once.
    new_event: Notify,
    /// The local UTC offset in seconds, as the front end last gave it (the engine cannot read
    /// it safely in a multi-threaded process); used for the self-test window.
    local_offset_s: std::sync::atomic::AtomicI32,
    /// Set by a recorded alarm or cancel (not a self-test): `run` then polls the
    /// acknowledgement quickly.
    ack_wanted: std::sync::atomic::AtomicBool,
    /// Events a receiver refused, and when they may be tried again.
    refused_until: Mutex<HashMap<Uuid, Instant>>,
    /// The hotkey state as last given to `run` / `send_heartbeat`.
    hotkey: Mutex<HotkeyState>,
    /// Why the keystore could not give the device key, as last seen (`None`: it worked, or it
    /// has not been asked yet). Drives "not protected: no keystore".
    keystore_problem: Mutex<Option<String>>,
    /// Where the policy came from (set by the front end that loaded it).
    policy_report: Mutex<Option<crate::policy::PolicyReport>>,
}

/// Locks a mutex even if a panicking thread poisoned it: the data (a connection, a cache) is
/// still usable, and the alarm path must not die of someone else's panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Engine {
    /// Opens the engine on `state_dir` (created 0700) with the raw clock from the environment
    /// (see [`crate::clock::ENV_TEST_CLOCK_SKEW_S`]). No network, no keystore.
    pub fn open(policy: Policy, state_dir: PathBuf) -> Result<Engine> {
        Engine::open_with_clock(policy, state_dir, raw_clock_from_env())
    }

    /// [`Engine::open`] with an explicit raw clock (tests).
    pub fn open_with_clock(
        policy: Policy,
        state_dir: PathBuf,
        raw_clock: Arc<dyn Clock>,
    ) -> Result<Engine> {
        policy.validate().map_err(|message| Error::Policy {
            origin: "(in code)".into(),
            message,
        })?;
        crate::state::ensure_state_dir(&state_dir)?;
        let outbox = Outbox::open_in(&state_dir)?;
        let install_id = outbox.install_id()?;
        let offset_ms = outbox
            .meta_get(keys::CLOCK_OFFSET_MS)?
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        Ok(Engine {
            inner: Arc::new(Inner {
                policy,
                state_dir,
                raw_clock,
                outbox: Mutex::new(outbox),
                keystore: Keystore::for_install(&install_id),
                install_id,
                key: Mutex::new(None),
                sender: Mutex::new(None),
                offset_ms: AtomicI64::new(offset_ms),
                new_event: Notify::new(),
                refused_until: Mutex::new(HashMap::new()),
                local_offset_s: std::sync::atomic::AtomicI32::new(0),
                ack_wanted: std::sync::atomic::AtomicBool::new(false),
                hotkey: Mutex::new(HotkeyState::NotApplicable),
                keystore_problem: Mutex::new(None),
                policy_report: Mutex::new(None),
            }),
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Records where the policy came from (and whether a named file was ignored), for the
    /// status and every heartbeat. Without it the source reads `(in code)`.
    pub fn set_policy_report(&self, report: crate::policy::PolicyReport) {
        *lock(&self.inner.policy_report) = Some(report);
    }

    /// Where the policy came from and its hash.
    pub fn policy_report(&self) -> crate::policy::PolicyReport {
        lock(&self.inner.policy_report)
            .clone()
            .unwrap_or_else(|| crate::policy::PolicyReport {
                source: "(in code)".into(),
                sha256: crate::policy::policy_sha256(&self.inner.policy),
                ignored: None,
            })
    }

    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// The random id of this installation (names the keystore slot).
    pub fn install_id(&self) -> &str {
        &self.inner.install_id
    }

    /// The keystore slot of this installation's device key.
    pub fn keystore(&self) -> &Keystore {
        &self.inner.keystore
    }

    /// Sets the local UTC offset (the tray and the CLI read it with chrono; see
    /// [`Engine::local_offset`]).
    pub fn set_local_offset(&self, offset: time::UtcOffset) {
        self.inner
            .local_offset_s
            .store(offset.whole_seconds(), Ordering::Relaxed);
    }

    /// The local UTC offset last set with [`Engine::set_local_offset`] (UTC until then).
    pub fn local_offset(&self) -> time::UtcOffset {
        time::UtcOffset::from_whole_seconds(self.inner.local_offset_s.load(Ordering::Relaxed))
            .unwrap_or(time::UtcOffset::UTC)
    }

    /// Now, by the raw clock corrected with the learned server offset.
    pub fn now(&self) -> OffsetDateTime {
        self.inner.raw_clock.now() + self.clock_offset()
    }

    /// The learned offset `server_time − raw_now`.
    pub fn clock_offset(&self) -> Duration {
        Duration::milliseconds(self.inner.offset_ms.load(Ordering::Relaxed))
    }

    /// The device id, once enrolled.
    pub fn device_id(&self) -> Result<Option<String>> {
        self.with_outbox(|o| o.meta_get(keys::DEVICE_ID))
    }

    /// Where alarms go: the policy's receivers when it lists any (the policy is authoritative),
    /// else the receiver `enroll --receiver` stored when the policy had none.
    pub fn effective_receivers(&self) -> Result<Vec<ReceiverConfig>> {
        if !self.inner.policy.receivers.is_empty() {
            return Ok(self.inner.policy.receivers.clone());
        }
        let stored = self.with_outbox(|o| o.meta_get(keys::FLAG_RECEIVER))?;
        match stored {
            Some(json) => {
                let r: enroll::StoredReceiver = serde_json::from_str(&json)
                    .map_err(|e| Error::OutboxCorrupt(format!("stored receiver: {e}")))?;
                Ok(vec![r.into_config()?])
            }
            None => Ok(Vec::new()),
        }
    }

    /// The location put in events and heartbeats: the policy's when it sets any field, else the
    /// one given at `enroll` (kept in the state database).
    pub fn effective_location(&self) -> Result<Location> {
        let policy = &self.inner.policy;
        // Hot desks: a location the user chose wins, but only where policy allows it.
        if policy.tray.allow_user_location
            && let Some(user) = self.user_location()?
        {
            return Ok(user);
        }
        if policy.location != Location::default() {
            return Ok(policy.location.clone());
        }
        let stored = self.with_outbox(|o| o.meta_get(keys::FLAG_LOCATION))?;
        Ok(stored
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default())
    }

    /// The location the user set ("Change location…"), whether or not policy honours it now.
    pub fn user_location(&self) -> Result<Option<Location>> {
        let stored = self.with_outbox(|o| o.meta_get(keys::USER_LOCATION))?;
        Ok(stored.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Sets (or with `None` clears) the user's own location for hot desks. Refused unless the
    /// policy has `[tray] allow_user_location = true`; the location is validated like policy's.
    pub fn set_user_location(&self, location: Option<&Location>) -> Result<()> {
        if !self.inner.policy.tray.allow_user_location {
            return Err(Error::Policy {
                origin: "user setting".into(),
                message: "this station's policy does not allow users to change the location".into(),
            });
        }
        match location {
            Some(loc) => {
                loc.validate().map_err(|message| Error::Policy {
                    origin: "user setting".into(),
                    message,
                })?;
                let json =
                    serde_json::to_string(loc).map_err(|e| Error::OutboxCorrupt(e.to_string()))?;
                self.with_outbox(|o| o.meta_set(keys::USER_LOCATION, &json))
            }
            None => self.with_outbox(|o| o.meta_set_many(&[(keys::USER_LOCATION, None)])),
        }
    }

    /// Records a press: builds the event (UUIDv7 id, next seq, `occurred_at` = corrected now,
    /// the location, host facts), signs it once (`first_token`) when the device is enrolled and
    /// its key at hand, and commits it to the outbox. Returns once the event is durable.
    ///
    /// A press is never refused for want of enrollment or a keystore: the event is stored
    /// unsigned and signed when it is sent (every send signs afresh anyway), so an alarm raised
    /// before enrollment finished, or while the keyring is locked, is delivered as soon as both
    /// work. Only a failure to write the outbox is an error. Never touches the network;
    /// synchronous on purpose, so a hotkey thread can call it without a runtime.
    pub fn record(&self, kind: EventKind, source: Source) -> Result<EventClaims> {
        self.record_at(kind, source, self.now())
    }

    /// Records a duress-safe cancel (kind `cancel`): it annotates the open incident and never
    /// closes it. `pin` is what the person typed when the policy asks for a PIN (`None` when it
    /// asks none, or nothing was typed); a wrong or duress PIN still records the cancel — the
    /// same way, with the same answer — and only the signed `cancel_pin` claim tells the
    /// console. Durable on return, like [`Engine::record`].
    pub fn record_cancel(&self, source: Source, pin: Option<&str>) -> Result<EventClaims> {
        let check = if self.inner.policy.cancel.requires_pin() {
            self.inner.policy.cancel.check_pin(pin.unwrap_or(""))
        } else {
            None
        };
        self.record_full(EventKind::Cancel, source, self.now(), check)
    }

    /// [`Engine::record`] with an explicit press time (tests of late alarms).
    pub fn record_at(
        &self,
        kind: EventKind,
        source: Source,
        occurred_at: OffsetDateTime,
    ) -> Result<EventClaims> {
        self.record_full(kind, source, occurred_at, None)
    }

    fn record_full(
        &self,
        kind: EventKind,
        source: Source,
        occurred_at: OffsetDateTime,
        cancel_pin: Option<PinCheck>,
    ) -> Result<EventClaims> {
        let signer = match self.device_id() {
            Ok(Some(device_id)) => match self.device_key(&device_id) {
                Ok(key) => Some((device_id, key)),
                Err(e) => {
                    tracing::error!(error = %e, "press stored unsigned: the device key is unavailable");
                    self.note_error_sync(&e.to_string());
                    None
                }
            },
            Ok(None) => {
                tracing::warn!("press stored unsigned: this station is not enrolled yet");
                None
            }
            Err(e) => return Err(e),
        };
        let location = self.effective_location()?;
        let host = crate::host::collect_for_press();
        let id = Uuid::now_v7();
        let occurred_at = truncate_to_millis(occurred_at);
        let now = self.now();
        let stored = self.with_outbox(|o| {
            o.append(now, |seq| {
                let claims = EventClaims {
                    id,
                    seq,
                    kind,
                    occurred_at,
                    sent_at: truncate_to_millis(now),
                    source,
                    location,
                    host,
                    cancel_pin,
                };
                let token = match &signer {
                    Some((device_id, key)) => Some(sign_event(key, device_id, &claims)?),
                    None => None,
                };
                Ok((claims, token))
            })
        })?;
        // The PIN's outcome is never logged: a log is something an aggressor could be shown.
        // For the same reason the press itself is logged at debug level only.
        tracing::debug!(event = %stored.id, seq = stored.seq, kind = kind.as_str(),
            source = source.as_str(), signed = stored.first_token.is_some(),
            "event recorded (durable)");
        if kind != EventKind::Test {
            self.inner.ack_wanted.store(true, Ordering::Relaxed);
        }
        self.inner.new_event.notify_one();
        Ok(stored.claims)
    }

    /// One stored event (e.g. to see whether a trigger was delivered).
    pub fn event(&self, id: Uuid) -> Result<Option<StoredEvent>> {
        self.with_outbox(|o| o.get(id))
    }

    /// Undelivered events, oldest first.
    pub fn pending(&self) -> Result<Vec<StoredEvent>> {
        self.with_outbox(|o| o.pending())
    }

    /// How many events are undelivered (a count; nothing is read or parsed).
    pub fn pending_count(&self) -> Result<u64> {
        self.with_outbox(|o| o.pending_count())
    }

    /// The device key from the cache or the keystore; enrolled but missing is an error.
    fn device_key(&self, device_id: &str) -> Result<Arc<DeviceKey>> {
        if let Some(k) = lock(&self.inner.key).as_ref() {
            return Ok(k.clone());
        }
        let loaded = match self.inner.keystore.load() {
            Ok(Some(k)) => {
                let k = Arc::new(k);
                *lock(&self.inner.key) = Some(k.clone());
                Ok(k)
            }
            Ok(None) => Err(Error::KeyMissing {
                device_id: device_id.to_owned(),
                user: self.inner.keystore.user().to_owned(),
            }),
            Err(e) => Err(Error::Keystore(e)),
        };
        self.note_keystore(loaded.as_ref().err());
        loaded
    }

    /// Keeps (or clears) the keystore problem the status line shows.
    pub(crate) fn note_keystore(&self, error: Option<&Error>) {
        let problem = match error {
            None => None,
            Some(e @ (Error::Keystore(_) | Error::KeyMissing { .. })) => Some(e.to_string()),
            // Other errors say nothing about the keystore.
            Some(_) => return,
        };
        *lock(&self.inner.keystore_problem) = problem;
    }

    /// Asks the keystore once, off any UI thread: loads (and caches) the device key when
    /// enrolled, else checks that the keystore answers at all. The outcome shows in
    /// [`StatusSnapshot::keystore_problem`]. Blocking (D-Bus on Linux).
    pub fn check_keystore(&self) {
        match self.device_id() {
            Ok(Some(id)) => {
                if let Err(e) = self.device_key(&id) {
                    tracing::warn!("keystore check: {e}");
                }
            }
            Ok(None) => {
                let r = self.inner.keystore.load().map_err(Error::Keystore);
                if let Err(e) = &r {
                    tracing::warn!("keystore check: {e}");
                }
                self.note_keystore(r.as_ref().err());
            }
            Err(e) => tracing::warn!("keystore check: {e}"),
        }
    }

    /// Runs `f` on the outbox, synchronously (tiny calls, or callers off the runtime).
    fn with_outbox<T>(&self, f: impl FnOnce(&mut Outbox) -> Result<T>) -> Result<T> {
        f(&mut lock(&self.inner.outbox))
    }

    /// Records the last error for the status line, from a thread without a runtime.
    fn note_error_sync(&self, error: &str) {
        if let Err(e) = self.with_outbox(|o| o.meta_set(keys::LAST_ERROR, error)) {
            tracing::warn!("cannot record error: {e}");
        }
    }

    /// Runs `f` on the outbox on tokio's blocking pool, so an fsync never stalls a worker.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Outbox) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&inner.outbox)))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    /// The sender for the effective receivers (built on first use).
    fn sender(&self) -> Result<Arc<Sender>> {
        let mut slot = lock(&self.inner.sender);
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let receivers = self.effective_receivers()?;
        let s = Arc::new(Sender::with_proxy(
            &receivers,
            self.inner.policy.network.proxy.as_deref(),
        )?);
        *slot = Some(s.clone());
        Ok(s)
    }

    /// Learns `server_time − raw_now` and keeps it.
    async fn learn_offset(&self, server_time: OffsetDateTime) -> Result<()> {
        let offset = server_time - self.inner.raw_clock.now();
        let ms = offset
            .whole_milliseconds()
            .clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        let old = self.inner.offset_ms.swap(ms, Ordering::Relaxed);
        if old != ms {
            tracing::info!(offset_ms = ms, "clock offset learned from the receiver");
        }
        self.db(move |o| o.meta_set(keys::CLOCK_OFFSET_MS, &ms.to_string()))
            .await
    }
}

/// Signs event claims as a `duress-event` JWS with `kid` = device id.
fn sign_event(key: &DeviceKey, device_id: &str, claims: &EventClaims) -> Result<String> {
    let payload = serde_json::to_vec(claims).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(key.sign(Typ::Event, Some(device_id), &payload))
}

#[cfg(test)]
mod tests;
