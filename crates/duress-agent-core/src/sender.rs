//! HTTPS to the receivers.
//!
//! One reqwest client per receiver (connections are kept alive and reused), over rustls with the
//! ring provider. Trust = the OS trust store (rustls-platform-verifier: corporate CAs, TLS
//! inspection) plus the receiver's own `ca_cert` from the policy, if any — a CA given for one
//! receiver is not trusted for another.
//!
//! A receiver may also carry a pin (`ca_sha256`): the SHA-256 of its own certificate or of one
//! certificate of the chain it presents. With a pin, the connection is accepted only if a
//! presented certificate matches it ([`PinnedVerifier`]): a pinned end-entity certificate
//! replaces the chain (the receiver's self-signed certificate needs nothing else) but must be
//! within its validity period and name the host; a pinned CA or intermediate becomes the *only*
//! trust anchor of the path — the end-entity certificate must chain to it through the
//! certificates presented before it, and name the host. The OS store and `ca_cert` are not
//! consulted for a pinned receiver: otherwise a chain `[forged leaf, CA the OS trusts, pinned CA]`
//! would pass. A TLS-inspecting proxy therefore cannot stand in for a pinned receiver. `[network] proxy` sends every
//! connection through that HTTP proxy (CONNECT); without it reqwest's defaults apply
//! (`HTTPS_PROXY` and friends).
//!
//! Receivers are tried in order. For events and heartbeats ([`Failover::AllMustAgree`]) every
//! answer short of an acknowledgement moves on to the next receiver in the same attempt: a
//! network, TLS or pin error, a 5xx, a 2xx that is not the expected answer, and any refusal —
//! `unknown-device`, 408 and 429 are specific to that receiver (it does not know the device,
//! the request did not arrive whole, it limits the rate), and even a refusal about the device
//! itself (revoked, disabled) is only final once *every* receiver has said so. A 429 or 503 with
//! `Retry-After` keeps that receiver (only that one) out of the next attempts until then
//! (capped at [`MAX_RETRY_AFTER`]). Enrollments and retirements ([`Failover::FirstVerdict`])
//! keep the older rule: any 4xx is the receivers' verdict and is returned. Answers are
//! classified as [`SendOutcome`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use duress_core::{
    EnrollmentAnswer, EventAck, HeartbeatAnswer, JOSE_CONTENT_TYPE, Problem, ProblemType,
};
use reqwest::Url;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::policy::ReceiverConfig;
use crate::{Error, Result};

/// TCP + TLS connect timeout per receiver.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Whole-request timeout per receiver.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Endpoint paths (relative to a receiver's base URL).
pub const PATH_EVENTS: &str = "v1/events";
pub const PATH_HEARTBEATS: &str = "v1/heartbeats";
pub const PATH_RETIREMENTS: &str = "v1/retirements";
pub const PATH_ENROLLMENTS: &str = "v1/enrollments";

/// Part of every failure message of an answer whose acknowledgement signature did not verify
/// (the engine recognises it to keep the status saying so until a verified acknowledgement).
pub const ACK_NOT_VERIFIED: &str = "acknowledgement not verified";

/// How one send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome<T> {
    /// A 2xx carrying the expected answer (for an event: an [`EventAck`] naming its id).
    Acked(T),
    /// 422 `clock-skew`: re-sign with a corrected clock and send again.
    ClockSkew { server_time: OffsetDateTime },
    /// A refusal that is final for this attempt: keep the event, retry slowly. For events and
    /// heartbeats every receiver refused with an answer about the device or the request
    /// itself (revoked, disabled, bad signature…); for enrollments and retirements the first
    /// 4xx.
    Refused(Problem),
    /// At least one receiver answered with an HTTP status and none accepted, and not every
    /// receiver gave a final refusal (one did not know the device, limited the rate, failed
    /// with a 5xx or 408, or was not reachable at all): retried on the fast schedule.
    /// `problem` is the first refusal, shown to the person ("alert not accepted by the
    /// receiver: …"); `detail` lists every receiver's answer.
    NotAccepted { problem: Problem, detail: String },
    /// No receiver gave an HTTP answer (network, TLS or pin errors, 2xx without the expected
    /// body).
    Unreachable(String),
}

/// How far [`Sender`] goes through the receiver list (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failover {
    /// Events and heartbeats: only a refusal every receiver agrees on is final.
    AllMustAgree,
    /// Enrollments and retirements: the first 4xx is the verdict.
    FirstVerdict,
}

/// Longest `Retry-After` honoured. A receiver asking for more (a misconfiguration, or an
/// hour-long HTTP-date) is tried again after this: an alarm must never be parked for long on
/// one receiver's say-so — the others are tried meanwhile anyway.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Whether a refusal concerns only the receiver that gave it (another receiver may accept):
/// it does not know the device (`unknown-device`: a backup that never saw the enrollment), the
/// request did not reach it whole in time (408), or it limits the rate (429). 5xx are handled
/// before this (always receiver-specific).
pub fn receiver_specific(problem: &Problem) -> bool {
    matches!(problem.status, 408 | 429)
        || problem.kind() == Some(ProblemType::UnknownDevice)
        || problem.status >= 500
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, capped at
/// [`MAX_RETRY_AFTER`]; `None` when absent or unreadable.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(s) => Duration::from_secs(s),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The ring-based rustls configuration: OS trust store plus `extra_ca` (PEM, one or more
/// certificates).
pub fn tls_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig> {
    tls_config_pinned(extra_ca, None)
}

/// [`tls_config`] with an optional certificate pin (`ca_sha256`: 64 hex digits, colons allowed).
pub fn tls_config_pinned(
    extra_ca: Option<&Path>,
    pin: Option<&str>,
) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut extra = Vec::new();
    if let Some(path) = extra_ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| Error::Tls {
                url: path.display().to_string(),
                message: format!("cannot read CA certificate {}: {e}", path.display()),
            })?;
        if certs.is_empty() {
            return Err(Error::Tls {
                url: path.display().to_string(),
                message: format!("{} holds no PEM certificate", path.display()),
            });
        }
        extra = certs;
    }
    let tls_err = |e: rustls::Error| Error::Tls {
        url: "(tls)".into(),
        message: e.to_string(),
    };
    // No extra root: the plain OS verifier. (With extra roots, Windows builds an exclusive-root
    // chain engine whose Windows 8+ config size Wine 8's crypt32 rejects with E_INVALIDARG.)
    let platform: Arc<dyn ServerCertVerifier> = if extra.is_empty() {
        Arc::new(rustls_platform_verifier::Verifier::new(provider.clone()).map_err(tls_err)?)
    } else {
        Arc::new(
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
                .map_err(tls_err)?,
        )
    };
    let verifier: Arc<dyn ServerCertVerifier> = match pin {
        Some(pin) => Arc::new(PinnedVerifier {
            pin: parse_pin(pin).map_err(|message| Error::Tls {
                url: "(tls)".into(),
                message,
            })?,
            inner: platform,
            provider: provider.clone(),
        }),
        None => platform,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// `AB:CD:…` or `abcd…` (64 hex digits) → the 32 bytes.
pub fn parse_pin(pin: &str) -> std::result::Result<[u8; 32], String> {
    let hex: String = pin
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    let bad = || format!("certificate pin {pin:?} is not 64 hex digits (colons optional)");
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Wraps the normal verifier with a certificate pin (see the module docs).
#[derive(Debug)]
pub struct PinnedVerifier {
    pin: [u8; 32],
    inner: Arc<dyn ServerCertVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<&CertificateDer<'_>> =
            std::iter::once(end_entity).chain(intermediates).collect();
        let Some(at) = chain
            .iter()
            .position(|c| Sha256::digest(c.as_ref()).as_slice() == self.pin)
        else {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch))),
            ));
        };
        if at == 0 {
            // The receiver's own certificate, exactly as IT pinned it: the pin replaces the
            // chain, but the certificate must still be in its validity period and name the host.
            check_pinned_leaf(end_entity, server_name, now)?;
            return Ok(ServerCertVerified::assertion());
        }
        // A pinned CA or intermediate is the *only* trust anchor for this path. Validating
        // through the OS store as well would let anyone whose CA the workstation trusts (a TLS
        // inspection proxy, a mis-issued certificate) append the public pinned CA to their own
        // chain and pass: a pin match at some position proves nothing about the path. Only the
        // certificates between the leaf and the pinned one may serve as intermediates.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(chain[at].clone().into_owned())?;
        let anchored = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        anchored.verify_server_cert(
            end_entity,
            &intermediates[..at - 1],
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A pinned end-entity certificate: within its validity period at `now` and valid for
/// `server_name` (webpki's name rules: SAN DNS names and IP addresses only).
fn check_pinned_leaf(
    end_entity: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> std::result::Result<(), rustls::Error> {
    use rustls::CertificateError;
    let (_, parsed) = x509_parser::parse_x509_certificate(end_entity.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let validity = parsed.validity();
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now_secs < validity.not_before.timestamp() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if now_secs > validity.not_after.timestamp() {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    let cert = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    cert.verify_is_valid_for_subject_name(server_name)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
}

/// The pin matched no presented certificate. rustls shows this error with `Debug`, so `Debug`
/// prints the sentence a person should read.
struct PinMismatch;

impl std::fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "certificate pin mismatch: no certificate of the receiver's chain has the pinned \
             SHA-256 (ca_sha256)",
        )
    }
}

impl std::error::Error for PinMismatch {}

#[derive(Debug)]
struct Endpoint {
    url: Url,
    client: reqwest::Client,
    /// The policy's `ack_key` for this receiver: empty = acknowledgements not verified.
    ack_keys: Vec<duress_core::TrustedAckKey>,
    /// Until when this receiver asked (429/503 `Retry-After`) not to be sent to, and the
    /// refusal that said so (reported while it is skipped).
    backoff: Mutex<Option<(Instant, Problem)>>,
}

impl Endpoint {
    /// The refusal of a `Retry-After` still running, if any.
    fn backing_off(&self, now: Instant) -> Option<(Duration, Problem)> {
        let slot = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        slot.as_ref()
            .filter(|(until, _)| *until > now)
            .map(|(until, p)| (*until - now, p.clone()))
    }

    fn set_backoff(&self, until: Option<(Instant, Problem)>) {
        *self.backoff.lock().unwrap_or_else(PoisonError::into_inner) = until;
    }
}

/// The client side of every receiver in the policy.
#[derive(Debug)]
pub struct Sender {
    endpoints: Vec<Endpoint>,
    /// Index of the receiver that answered last; events start there.
    preferred: AtomicUsize,
}

impl Sender {
    /// Builds one client per receiver. Reads the CA files; opens no connection.
    pub fn new(receivers: &[ReceiverConfig]) -> Result<Sender> {
        Sender::with_proxy(receivers, None)
    }

    /// [`Sender::new`] through an explicit HTTP(S) proxy (`[network] proxy`), if any.
    pub fn with_proxy(receivers: &[ReceiverConfig], proxy: Option<&str>) -> Result<Sender> {
        if receivers.is_empty() {
            return Err(Error::NoReceiver);
        }
        let endpoints = receivers
            .iter()
            .map(|r| {
                let tls = tls_config_pinned(r.ca_cert.as_deref(), r.ca_sha256.as_deref()).map_err(
                    |e| match e {
                        Error::Tls { message, .. } => Error::Tls {
                            url: r.url.to_string(),
                            message,
                        },
                        other => other,
                    },
                )?;
                let mut builder = reqwest::Client::builder();
                if let Some(proxy) = proxy {
                    let p = reqwest::Proxy::all(proxy).map_err(|e| Error::Tls {
                        url: r.url.to_string(),
                        message: format!("proxy {proxy:?}: {}", error_chain(&e)),
                    })?;
                    builder = builder.proxy(p);
                }
                let client = builder
                    .tls_backend_preconfigured(tls)
                    .https_only(true)
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(REQUEST_TIMEOUT)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .tcp_keepalive(Duration::from_secs(30))
                    // An alarm is one small request: never let Nagle hold it for an ACK.
                    .tcp_nodelay(true)
                    .user_agent(concat!("duress-agent/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| Error::Tls {
                        url: r.url.to_string(),
                        message: error_chain(&e),
                    })?;
                let ack_keys = r.trusted_ack_keys().map_err(|e| Error::Policy {
                    origin: r.url.to_string(),
                    message: format!("ack_key: {e}"),
                })?;
                Ok(Endpoint {
                    url: with_trailing_slash(r.url.clone()),
                    client,
                    ack_keys,
                    backoff: Mutex::new(None),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Sender {
            endpoints,
            preferred: AtomicUsize::new(0),
        })
    }

    /// The receivers, in policy order.
    pub fn receivers(&self) -> Vec<Url> {
        self.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    /// The receiver that answered last (the first one before any answer).
    pub fn preferred(&self) -> Url {
        let i = self.preferred.load(Ordering::Relaxed);
        self.endpoints[i.min(self.endpoints.len() - 1)].url.clone()
    }

    /// Whether every receiver's acknowledgements are verified (each has an `ack_key`).
    pub fn acks_verified(&self) -> bool {
        self.endpoints.iter().all(|e| !e.ack_keys.is_empty())
    }

    /// Posts an event token. Starts at the receiver that answered last (so a dead first receiver
    /// does not cost every alarm a connect timeout), then the others in policy order. Only an
    /// [`EventAck`] naming `event_id` counts as [`SendOutcome::Acked`] — and, for a receiver
    /// whose policy names an `ack_key`, only one whose signature verifies against it: anything
    /// else (a proxy or a forged certificate answering in the receiver's name) is not an
    /// acknowledgement, the event stays queued and the next receiver is tried.
    pub async fn post_event(&self, token: &str, event_id: Uuid) -> SendOutcome<EventAck> {
        let start = self.preferred.load(Ordering::Relaxed);
        self.post(
            PATH_EVENTS,
            token,
            start,
            Failover::AllMustAgree,
            |ep: &Endpoint, ack: &EventAck| {
                if ack.id != event_id {
                    return Err(format!(
                        "2xx acknowledges event {}, not {event_id}: not an ack",
                        ack.id
                    ));
                }
                if ep.ack_keys.is_empty() {
                    return Ok(());
                }
                ack.verify_signature(&ep.ack_keys)
                    .map_err(|e| format!("{ACK_NOT_VERIFIED} ({e}): the alarm stays queued"))
            },
        )
        .await
    }

    /// Posts a heartbeat. Always starts at the first receiver, so the agent returns to the
    /// primary once it is back.
    pub async fn post_heartbeat(&self, token: &str) -> SendOutcome<HeartbeatAnswer> {
        self.post(
            PATH_HEARTBEATS,
            token,
            0,
            Failover::AllMustAgree,
            |_: &Endpoint, _: &HeartbeatAnswer| Ok(()),
        )
        .await
    }

    /// Posts a retirement (`duress-agent decommission`), policy order.
    pub async fn post_retirement(&self, token: &str) -> SendOutcome<duress_core::RetirementAnswer> {
        self.post(
            PATH_RETIREMENTS,
            token,
            0,
            Failover::FirstVerdict,
            |_: &Endpoint, _: &duress_core::RetirementAnswer| Ok(()),
        )
        .await
    }

    /// Posts an enrollment (policy order).
    pub async fn post_enrollment(&self, token: &str) -> SendOutcome<EnrollmentAnswer> {
        self.post(
            PATH_ENROLLMENTS,
            token,
            0,
            Failover::FirstVerdict,
            |_: &Endpoint, _: &EnrollmentAnswer| Ok(()),
        )
        .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
        start: usize,
        failover: Failover,
        accept: impl Fn(&Endpoint, &T) -> std::result::Result<(), String>,
    ) -> SendOutcome<T> {
        let n = self.endpoints.len();
        let start = start.min(n - 1);
        let order = std::iter::once(start).chain((0..n).filter(move |&i| i != start));
        let mut errors = Vec::new();
        // Refusals seen in this attempt, in the order tried, and whether any of them (or an
        // unreachable receiver) keeps the attempt from being final.
        let mut refusals: Vec<Problem> = Vec::new();
        let mut all_final = true;
        for i in order {
            let ep = &self.endpoints[i];
            let url = match ep.url.join(path) {
                Ok(u) => u,
                Err(e) => {
                    errors.push(format!("{}: {e}", ep.url));
                    all_final = false;
                    continue;
                }
            };
            if failover == Failover::AllMustAgree
                && let Some((left, problem)) = ep.backing_off(Instant::now())
            {
                // Honour its Retry-After: this receiver is skipped, the others are tried.
                errors.push(format!(
                    "{url}: not tried for another {} s (Retry-After of: {})",
                    left.as_secs().max(1),
                    crate::error::problem_summary(&problem)
                ));
                refusals.push(problem);
                all_final = false;
                continue;
            }
            let resp = ep
                .client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, JOSE_CONTENT_TYPE)
                .header(
                    reqwest::header::ACCEPT,
                    "application/json, application/problem+json",
                )
                .body(token.to_owned())
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("{url}: {}", error_chain(&e)));
                    all_final = false;
                    continue;
                }
            };
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let body = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    errors.push(format!("{url}: HTTP {status}, body: {}", error_chain(&e)));
                    all_final = false;
                    continue;
                }
            };
            if status.is_success() {
                match serde_json::from_slice::<T>(&body) {
                    Ok(answer) => match accept(ep, &answer) {
                        Ok(()) => {
                            self.preferred.store(i, Ordering::Relaxed);
                            ep.set_backoff(None);
                            return SendOutcome::Acked(answer);
                        }
                        Err(why) => errors.push(format!("{url}: {why}")),
                    },
                    Err(e) => errors.push(format!(
                        "{url}: HTTP {status} with an unexpected body ({e}): not an ack"
                    )),
                }
                all_final = false;
                continue;
            }
            let problem = parse_problem(status.as_u16(), &body);
            if problem.kind() == Some(ProblemType::ClockSkew)
                && let Some(server_time) = problem.server_time
            {
                // Our clock, not the receiver: the caller re-signs and sends again.
                self.preferred.store(i, Ordering::Relaxed);
                return SendOutcome::ClockSkew { server_time };
            }
            if matches!(status.as_u16(), 429 | 503)
                && let Some(delay) = retry_after
                && failover == Failover::AllMustAgree
            {
                ep.set_backoff(Some((Instant::now() + delay, problem.clone())));
            }
            errors.push(format!(
                "{url}: {}",
                crate::error::problem_summary(&problem)
            ));
            match failover {
                Failover::FirstVerdict => {
                    // 408/429/5xx: nothing was refused; retried like a network error.
                    let transient = matches!(status.as_u16(), 408 | 429);
                    if status.is_client_error() && !transient {
                        self.preferred.store(i, Ordering::Relaxed);
                        return SendOutcome::Refused(problem);
                    }
                    refusals.push(problem);
                }
                Failover::AllMustAgree => {
                    if receiver_specific(&problem) {
                        all_final = false;
                    }
                    refusals.push(problem);
                }
            }
        }
        let detail = errors.join("; ");
        if refusals.is_empty() {
            return SendOutcome::Unreachable(detail);
        }
        if failover == Failover::AllMustAgree && all_final {
            // Every receiver refused, each with a verdict about the device or the request.
            return SendOutcome::Refused(refusals.swap_remove(0));
        }
        if failover == Failover::FirstVerdict {
            // Only 408/429/5xx answers: as before, like a network error.
            return SendOutcome::Unreachable(detail);
        }
        SendOutcome::NotAccepted {
            problem: refusals.swap_remove(0),
            detail,
        }
    }
}

/// The body as a problem document, or a synthetic one naming the status.
fn parse_problem(status: u16, body: &[u8]) -> Problem {
    serde_json::from_slice::<Problem>(body).unwrap_or_else(|_| {
        let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
        Problem {
            type_uri: "about:blank".into(),
            title: format!("HTTP {status}"),
            status,
            detail: (!text.trim().is_empty()).then_some(text),
            server_time: None,
        }
    })
}

/// An error with its causes: reqwest's own message alone is "error sending request".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// `https://h/base` → `https://h/base/`, so `join("v1/events")` keeps the base path.
fn with_trailing_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Endpoint URLs keep a base path.
    #[test]
    fn endpoint_urls_keep_the_base_path() {
        let u = with_trailing_slash(Url::parse("https://r.example:8443/duress").unwrap());
        assert_eq!(
            u.join(PATH_EVENTS).unwrap().as_str(),
            "https://r.example:8443/duress/v1/events"
        );
        let u = with_trailing_slash(Url::parse("https://r.example:8443").unwrap());
        assert_eq!(
            u.join(PATH_EVENTS).unwrap().as_str(),
            "https://r.example:8443/v1/events"
        );
    }

    /// A non-problem error body still yields a problem with the status.
    #[test]
    fn problem_fallback() {
        let p = parse_problem(418, b"teapot");
        assert_eq!(p.status, 418);
        assert_eq!(p.detail.as_deref(), Some("teapot"));
        let p = parse_problem(
            422,
            br#"{"type":"urn:duress:problem:clock-skew","title":"t","status":422,"server_time":"2026-01-01T00:00:00Z"}"#,
        );
        assert_eq!(p.kind(), Some(ProblemType::ClockSkew));
        assert!(p.server_time.is_some());
    }

    /// A CA file that does not exist or holds no certificate is a clear TLS error; none at all
    /// builds a client on the OS trust store.
    #[test]
    fn ca_file_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let e = tls_config(Some(&dir.path().join("nope.pem"))).unwrap_err();
        assert!(e.to_string().contains("cannot read CA certificate"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = tls_config(Some(&empty)).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        tls_config(None).unwrap();
        assert!(matches!(Sender::new(&[]), Err(Error::NoReceiver)));
    }
}
