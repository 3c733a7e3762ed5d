//! A simulated station: its own Ed25519 key drawn from fresh random seed bytes and kept in
//! memory. Simulated stations do **not** use the OS keystore (10,000 keyring entries would
//! measure gnome-keyring, not the receiver); everything they put on the wire is exactly what
//! the real agent sends, signed by `duress-core`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use duress_core::clock::truncate_to_millis;
use duress_core::{
    DeviceKey, EnrollmentAnswer, EnrollmentClaims, EventAck, EventClaims, EventKind,
    HeartbeatAnswer, HeartbeatClaims, HostFacts, HotkeyState, Location, ProblemType, Source, Typ,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::client::{Answer, post_jose};

/// One station: key, device id once enrolled, its seq counter and its learned clock offset.
/// Shared by reference between its heartbeat and alarm tasks (counters are atomics).
#[derive(Debug)]
pub struct SimStation {
    pub key: DeviceKey,
    pub device_id: String,
    pub index: usize,
    seq: AtomicU64,
    /// `server_time − local now` in ms, learned from a clock-skew answer.
    offset_ms: AtomicI64,
}

/// A fresh key from the OS random source.
pub fn random_key() -> DeviceKey {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).expect("OS random source");
    DeviceKey::from_seed(&seed)
}

/// Where simulated station `index` is.
pub fn location(index: usize) -> Location {
    Location {
        label: Some(format!(
            "Loadgen campus, Bldg {}, Room {}",
            index / 100,
            index % 100
        )),
        country: Some("US".into()),
        bld: Some(format!("{}", index / 100)),
        room: Some(format!("{}", index % 100)),
        ..Default::default()
    }
}

pub fn host(index: usize) -> HostFacts {
    HostFacts {
        hostname: format!("loadgen-{index:05}"),
        user: "loadgen".into(),
        ips: vec![],
        macs: vec![],
        os: "simulated".into(),
        agent_version: concat!("duress-loadgen ", env!("CARGO_PKG_VERSION")).into(),
    }
}

/// How one event's delivery ended.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: Uuid,
    /// The acknowledgement (a 2xx naming this id), if one came before the deadline.
    pub ack: Option<EventAck>,
    /// From the first send to the acknowledgement.
    pub ack_latency: Option<Duration>,
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl SimStation {
    pub fn new(index: usize) -> Self {
        SimStation {
            key: random_key(),
            device_id: String::new(),
            index,
            seq: AtomicU64::new(0),
            offset_ms: AtomicI64::new(0),
        }
    }

    /// Now by the local clock corrected with the learned offset.
    pub fn now(&self) -> OffsetDateTime {
        let offset = time::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed));
        truncate_to_millis(OffsetDateTime::now_utc() + offset)
    }

    /// The highest seq assigned so far.
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// The enrollment JWS for `token`.
    pub fn enrollment(&self, token: &str) -> String {
        let claims = EnrollmentClaims {
            token: token.into(),
            sent_at: self.now(),
            location: location(self.index),
            host: host(self.index),
        };
        self.key
            .sign_enrollment(&serde_json::to_vec(&claims).expect("claims serialise"))
    }

    /// Enrolls, retrying network errors and 5xx (re-enrollment of the same key is idempotent).
    pub async fn enroll(
        &mut self,
        client: &reqwest::Client,
        base: &str,
        token: &str,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let mut last = String::new();
        while Instant::now() < deadline {
            match post_jose(client, base, "/v1/enrollments", &self.enrollment(token)).await {
                Ok(a) if a.status == 201 => {
                    let answer: EnrollmentAnswer =
                        serde_json::from_slice(&a.body).context("enrollment answer")?;
                    self.device_id = answer.device_id;
                    return Ok(());
                }
                Ok(a) if a.status >= 500 || a.status == 429 => last = a.text(),
                Ok(a) => anyhow::bail!("enrollment refused: {} {}", a.status, a.text()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::bail!("enrollment not answered before the deadline: {last}")
    }

    /// A new event's claims (fresh UUIDv7, next seq), pressed now.
    pub fn new_event(&self, kind: EventKind) -> EventClaims {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let t = self.now();
        EventClaims {
            id: Uuid::now_v7(),
            seq,
            kind,
            occurred_at: t,
            sent_at: t,
            source: Source::Cli,
            location: location(self.index),
            host: host(self.index),
            cancel_pin: None,
        }
    }

    pub fn sign_event(&self, claims: &EventClaims) -> String {
        self.key.sign(
            Typ::Event,
            Some(&self.device_id),
            &serde_json::to_vec(claims).expect("claims serialise"),
        )
    }

    pub fn heartbeat(&self) -> HeartbeatClaims {
        HeartbeatClaims {
            sent_at: self.now(),
            hotkey: HotkeyState::NotApplicable,
            queued: 0,
            last_seq: self.last_seq(),
            last_self_test: None,
            location: location(self.index),
            host: host(self.index),
            policy: None,
            alarm_refused: None,
        }
    }

    pub fn sign_heartbeat(&self, claims: &HeartbeatClaims) -> String {
        self.key.sign(
            Typ::Heartbeat,
            Some(&self.device_id),
            &serde_json::to_vec(claims).expect("claims serialise"),
        )
    }

    /// One heartbeat; `Ok` on 200.
    pub async fn send_heartbeat(
        &self,
        client: &reqwest::Client,
        base: &str,
    ) -> anyhow::Result<HeartbeatAnswer> {
        let token = self.sign_heartbeat(&self.heartbeat());
        let a = post_jose(client, base, "/v1/heartbeats", &token).await?;
        anyhow::ensure!(a.status == 200, "heartbeat: {} {}", a.status, a.text());
        Ok(serde_json::from_slice(&a.body)?)
    }

    /// Sends `claims` until a 2xx names its id (the agent's acknowledgement rule) or `deadline`
    /// passes: re-signed with a fresh `sent_at` on every attempt, network errors and 5xx
    /// retried on the agent's alarm schedule (250 ms doubling to 4 s), a clock-skew answer
    /// corrects the offset and re-sends at once, any other 4xx retried every second.
    pub async fn deliver(
        &self,
        client: &reqwest::Client,
        base: &str,
        claims: &EventClaims,
        deadline: Instant,
    ) -> Delivery {
        let start = Instant::now();
        let mut d = Delivery {
            id: claims.id,
            ack: None,
            ack_latency: None,
            attempts: 0,
            last_error: None,
        };
        let mut backoff = Duration::from_millis(250);
        while Instant::now() < deadline {
            d.attempts += 1;
            let token = self.sign_event(&claims.resent_at(self.now()));
            let wait = match post_jose(client, base, "/v1/events", &token).await {
                Ok(a) if (200..300).contains(&a.status) => {
                    match serde_json::from_slice::<EventAck>(&a.body) {
                        Ok(ack) if ack.id == claims.id => {
                            d.ack_latency = Some(start.elapsed());
                            d.ack = Some(ack);
                            return d;
                        }
                        _ => {
                            d.last_error = Some(format!("2xx without this id: {}", a.text()));
                            backoff
                        }
                    }
                }
                Ok(a) => self.classify_refusal(&a, &mut d, backoff),
                Err(e) => {
                    d.last_error = Some(e.to_string());
                    backoff
                }
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                backoff = (backoff * 2).min(Duration::from_secs(4));
            }
        }
        d
    }

    /// How long to wait after a non-2xx answer (zero: re-send at once).
    fn classify_refusal(&self, a: &Answer, d: &mut Delivery, backoff: Duration) -> Duration {
        d.last_error = Some(format!("{} {}", a.status, a.text()));
        match a.problem() {
            Some(p) if p.kind() == Some(ProblemType::ClockSkew) => {
                if let Some(server) = p.server_time {
                    let ms = (server - OffsetDateTime::now_utc()).whole_milliseconds();
                    self.offset_ms.store(
                        ms.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
                        Ordering::Relaxed,
                    );
                }
                Duration::ZERO
            }
            _ if a.status >= 500 => backoff,
            _ => Duration::from_secs(1),
        }
    }
}
