//! Desk phones as stations (issue 14, item 1; docs/integrations.md, "Desk phones").
//!
//! - `GET|POST /v1/phones/cisco/duress?device=#DEVICENAME#&key=SECRET`: a Cisco line key's
//!   Service URL, or a Desk Phone 9800 Action button's "HTTP Post". Answers CiscoIPPhone XML.
//! - `POST /v1/phones/spectralink/alarm?key=SECRET` and `POST /v1/phones/cisco/event?key=SECRET`:
//!   the Spectralink 84-series `AlarmNotificationEvent` push, which Cisco Wireless 840/860
//!   phones (same lineage) send for the emergency button's trigger and cancel. Refusals are
//!   problem+json (a push is read by no screen); acceptance is a `CiscoIPPhoneResponse`.
//!
//! Phones sign nothing, so identity is the inventory's device name, plus the per-phone secret
//! (argon2id-hashed in the store, compared by the argon2 verifier in constant time) and the
//! phone's allowed source network. Every refusal is audited (`phone.refused`) and counted
//! against the source address; a press goes through the agents' ingest path as a `duress`
//! event with `source: phone`, so it groups, escalates and notifies like any alarm. A cancel
//! from the phone annotates the open incident ("phone cancel") and never closes it.

pub mod admin;
pub mod alarm_event;
pub mod inventory;
pub mod xml;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use duress_core::{EventKind, HostFacts, Location, ProblemType, Source};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::api::{AppState, receiver_now};
use crate::problem::ApiProblem;
use crate::store::{
    IncidentAction, IngestOutcome, NewEvent, PhoneCredential, PhoneRecord, StoreError,
};
use crate::subnets::ClientAddr;

/// Presses of one phone within this long are one press (a double tap, a phone's HTTP retry):
/// they get one event id, so the repeat is answered without a second event. A press after
/// it is a new press, which the incident's grouping window folds into the same incident.
pub const SAME_PRESS: Duration = Duration::from_secs(2);

/// The phone routes (public: the checks are the inventory's, not a session's). Served with
/// the agent API (`console::routes` adds them to its table beside `api::routes`).
pub fn routes<S>() -> Vec<(Method, &'static str, MethodRouter<S>)>
where
    AppState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    vec![
        (Method::GET, CISCO_DURESS, get(cisco_duress_get)),
        (Method::POST, CISCO_DURESS, post(cisco_duress_post)),
        (Method::POST, "/v1/phones/cisco/event", post(cisco_event)),
        (
            Method::POST,
            "/v1/phones/spectralink/alarm",
            post(spectralink_alarm),
        ),
    ]
}

const CISCO_DURESS: &str = "/v1/phones/cisco/duress";

/// Why a phone request was refused: the audit entry's reason, the XML or problem answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Malformed,
    Unknown,
    WrongNetwork,
    BadKey,
    Removed,
}

impl Refusal {
    fn code(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed-request",
            Refusal::Unknown => "phone-unknown",
            Refusal::WrongNetwork => "phone-wrong-network",
            Refusal::BadKey => "phone-bad-key",
            Refusal::Removed => "phone-removed",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Refusal::Malformed => StatusCode::BAD_REQUEST,
            _ => StatusCode::FORBIDDEN,
        }
    }

    fn problem(self, detail: String) -> ApiProblem {
        let kind = match self {
            Refusal::Malformed => ProblemType::MalformedXml,
            Refusal::Unknown | Refusal::Removed => ProblemType::PhoneUnknown,
            Refusal::WrongNetwork => ProblemType::PhoneWrongNetwork,
            Refusal::BadKey => ProblemType::PhoneBadKey,
        };
        ApiProblem::new(kind, detail)
    }
}

/// A refused request: audited (best effort: a failing audit write must not turn a refusal
/// into an acceptance) and counted against the address.
async fn refuse(
    state: &AppState,
    ip: IpAddr,
    why: Refusal,
    subject: &str,
    detail: &str,
) -> (Refusal, String) {
    state.phones.failures.record_failure(ip, Instant::now());
    let subject: String = subject
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let detail = format!("{}: {detail}", why.code());
    tracing::info!(%ip, device = %subject, reason = why.code(), "phone request refused");
    if let Err(e) = state
        .store
        .record_audit(&format!("phone@{ip}"), "phone.refused", &subject, &detail)
        .await
    {
        tracing::warn!(error = %e, "could not audit a refused phone request");
    }
    (why, detail)
}

/// The checks every phone request passes, in this order: the address's limits, the device
/// name in the inventory, the source network (cheap, before the secret's argon2), the secret.
async fn authenticate(
    state: &AppState,
    ip: IpAddr,
    device_names: &[String],
    key: Option<&str>,
) -> Result<Result<PhoneRecord, (Refusal, String)>, Gate> {
    let mut cred: Option<PhoneCredential> = None;
    for name in device_names {
        cred = state
            .store
            .phone_credential(name)
            .await
            .map_err(Gate::Store)?;
        if cred.is_some() {
            break;
        }
    }
    let shown = device_names.first().cloned().unwrap_or_default();
    let Some(cred) = cred else {
        return Ok(Err(refuse(
            state,
            ip,
            Refusal::Unknown,
            &shown,
            "no phone of the inventory has this device name",
        )
        .await));
    };
    let name = cred.phone.device_name.clone();
    if !network_holds(&cred.phone.allowed_network, ip) {
        let detail = format!(
            "source {ip} is outside the phone's network {}",
            cred.phone.allowed_network
        );
        return Ok(Err(refuse(
            state,
            ip,
            Refusal::WrongNetwork,
            &name,
            &detail,
        )
        .await));
    }
    let key = key.unwrap_or_default().to_owned();
    let phc = cred.secret_hash.0.clone();
    let ok = tokio::task::spawn_blocking(move || {
        !key.is_empty() && crate::console::accounts::verify_password(&key, &phc)
    })
    .await
    .unwrap_or(false);
    if !ok {
        return Ok(Err(refuse(
            state,
            ip,
            Refusal::BadKey,
            &name,
            "the key is missing or wrong",
        )
        .await));
    }
    Ok(Ok(cred.phone))
}

/// Whether `ip` is in `net`; an IPv4 address also matches an IPv4-mapped IPv6 network
/// (`::ffff:10.1.0.0/112`), as a dual-stack listener may report it either way.
fn network_holds(net: &ipnet::IpNet, ip: IpAddr) -> bool {
    match (net, ip) {
        (ipnet::IpNet::V6(n), IpAddr::V4(v4)) => n.contains(&v4.to_ipv6_mapped()),
        (ipnet::IpNet::V4(n), IpAddr::V6(v6)) => {
            v6.to_ipv4_mapped().is_some_and(|v4| n.contains(&v4))
        }
        (n, ip) => n.contains(&ip),
    }
}

/// Why no answer about the phone could be given.
enum Gate {
    /// 429 with this retry-after.
    Limited(Duration),
    Store(StoreError),
}

fn gate(state: &AppState, ip: IpAddr) -> Result<(), Gate> {
    let now = Instant::now();
    state
        .phones
        .failures
        .check(ip, now)
        .map_err(Gate::Limited)?;
    state
        .phones
        .per_source
        .take(&ip.to_string(), now)
        .map_err(Gate::Limited)
}

/// The event id of a press: derived from what identifies it, so a repeat of the same press
/// gets the same id (and the store answers it as a duplicate, writing nothing).
fn press_id(parts: &[&str]) -> Uuid {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Commits a press of `phone` as a `duress` event (`source: phone`) with this location.
async fn raise(
    state: &AppState,
    phone: &PhoneRecord,
    id: Uuid,
    location: Location,
    record: String,
    ip: IpAddr,
    os: &str,
) -> Result<IngestOutcome, StoreError> {
    let now = receiver_now();
    let mac = phone
        .device_name
        .strip_prefix("SEP")
        .and_then(alarm_event::normalize_mac)
        .map(|m| alarm_event::colon_mac(&m));
    let event = NewEvent {
        id,
        device_id: phone.device_id.clone(),
        // Phones number nothing: the receive time in milliseconds orders a phone's events.
        seq: i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
        kind: EventKind::Duress,
        source: Source::Phone,
        occurred_at: now,
        sent_at: now,
        received_at: now,
        jws: record,
        location,
        host: HostFacts {
            hostname: phone.device_name.clone(),
            user: format!("ext {}", phone.extension),
            ips: vec![ip.to_string()],
            macs: mac.into_iter().collect(),
            os: os.to_owned(),
            agent_version: String::new(),
        },
        ack_signer: None,
        client_addr: Some(ip.to_string()),
    };
    let outcome = state.store.ingest_grouped(event, state.grouping()).await?;
    if let IngestOutcome::Committed(stored) = &outcome {
        tracing::warn!(
            event_id = %stored.id,
            device_id = %phone.device_id,
            phone = %phone.device_name,
            incident_id = ?stored.incident_id,
            "phone press committed"
        );
    }
    Ok(outcome)
}

/// The query's (and a form body's) `device` and `key`; the query wins.
fn params(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> (Option<String>, Option<String>) {
    let mut device = None;
    let mut key = None;
    let mut take = |bytes: &[u8]| {
        for (k, v) in form_urlencoded::parse(bytes) {
            match k.as_ref() {
                "device" if device.is_none() => device = Some(v.into_owned()),
                "key" if key.is_none() => key = Some(v.into_owned()),
                _ => {}
            }
        }
    };
    take(uri.query().unwrap_or_default().as_bytes());
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        take(body);
    }
    (device, key)
}

/// The request as stored with the event (the `jws` column: what was received), without the
/// key.
fn request_record(method: &Method, device: &str, ip: IpAddr) -> String {
    serde_json::json!({
        "phone": "cisco",
        "request": format!("{method} {CISCO_DURESS}?device={device}"),
        "source": ip.to_string(),
    })
    .to_string()
}

fn xml_refusal(why: Refusal, detail: &str) -> Response {
    xml::response(why.status(), xml::refusal_text(why.code(), detail))
}

fn xml_gate(g: Gate) -> Response {
    match g {
        Gate::Limited(wait) => {
            let mut r = xml::response(
                StatusCode::TOO_MANY_REQUESTS,
                xml::refusal_text("too-many-requests", "Too many requests; try again later."),
            );
            if let Ok(v) = wait.as_secs().max(1).to_string().parse() {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Gate::Store(e) => {
            let _ = crate::api::storage_problem(e);
            xml::response(
                StatusCode::SERVICE_UNAVAILABLE,
                xml::refusal_text("unavailable", "Service busy; try again."),
            )
        }
    }
}

/// `GET /v1/phones/cisco/duress`: a line key's Service URL.
#[utoipa::path(
    get,
    operation_id = "cisco_duress_get",
    path = "/v1/phones/cisco/duress",
    tag = "phones",
    params(
        ("device" = Option<String>, Query, description = "The phone's device name (#DEVICENAME#, e.g. SEP001122334455)"),
        ("key" = Option<String>, Query, description = "The phone's secret from the inventory"),
    ),
    responses(crate::openapi::CiscoDuressAnswers)
)]
pub async fn cisco_duress_get(
    state: State<AppState>,
    client: ClientAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    cisco_duress(state, client, method, uri, headers, body).await
}

/// `POST /v1/phones/cisco/duress`: the Desk Phone 9800 Action button's "HTTP Post"; `device`
/// and `key` in the query or a form-encoded body (the query wins).
#[utoipa::path(
    post,
    operation_id = "cisco_duress_post",
    path = "/v1/phones/cisco/duress",
    tag = "phones",
    params(
        ("device" = Option<String>, Query, description = "The phone's device name (#DEVICENAME#, e.g. SEP001122334455); also accepted in a form-encoded body"),
        ("key" = Option<String>, Query, description = "The phone's secret from the inventory; also accepted in a form-encoded body"),
    ),
    responses(crate::openapi::CiscoDuressAnswers)
)]
pub async fn cisco_duress_post(
    state: State<AppState>,
    client: ClientAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    cisco_duress(state, client, method, uri, headers, body).await
}

/// `GET|POST /v1/phones/cisco/duress?device=SEP001122334455&key=SECRET`.
async fn cisco_duress(
    State(state): State<AppState>,
    client: ClientAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ip = client.ip();
    if let Err(g) = gate(&state, ip) {
        return xml_gate(g);
    }
    let (device, key) = params(&uri, &headers, &body);
    let device = match device.as_deref().map(inventory::device_name) {
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            let (why, detail) = refuse(
                &state,
                ip,
                Refusal::Malformed,
                device.as_deref().unwrap_or_default(),
                &e,
            )
            .await;
            return xml_refusal(why, &detail);
        }
        None => {
            let (why, detail) = refuse(
                &state,
                ip,
                Refusal::Malformed,
                "",
                "the URL has no device= parameter (#DEVICENAME#)",
            )
            .await;
            return xml_refusal(why, &detail);
        }
    };
    let phone = match authenticate(&state, ip, std::slice::from_ref(&device), key.as_deref()).await
    {
        Err(g) => return xml_gate(g),
        Ok(Err((why, detail))) => return xml_refusal(why, &detail),
        Ok(Ok(phone)) => phone,
    };
    let now_ms = receiver_now().unix_timestamp_nanos() / 1_000_000;
    let bucket = (now_ms / SAME_PRESS.as_millis() as i128).to_string();
    let id = press_id(&["cisco-duress", &phone.device_name, &bucket]);
    let record = request_record(&method, &phone.device_name, ip);
    match raise(
        &state,
        &phone,
        id,
        phone.location(),
        record,
        ip,
        "Cisco IP phone",
    )
    .await
    {
        Ok(IngestOutcome::Committed(_) | IngestOutcome::Duplicate(_)) => {
            xml::response(StatusCode::OK, xml::silent_ok())
        }
        Ok(IngestOutcome::DeviceNotActive(_) | IngestOutcome::IdConflict) => {
            let (why, detail) = refuse(
                &state,
                ip,
                Refusal::Removed,
                &phone.device_name,
                "the phone was removed from the inventory",
            )
            .await;
            xml_refusal(why, &detail)
        }
        Err(e) => xml_gate(Gate::Store(e)),
    }
}

/// `POST /v1/phones/spectralink/alarm?key=SECRET` and `POST /v1/phones/cisco/event?key=SECRET`:
/// an `AlarmNotificationEvent`. A detector in alarm raises a press located by the BSSID's
/// access point (the inventory's location when the access point is not in the table); all
/// detectors clear annotates the phone's open incident and closes nothing.
#[utoipa::path(
    post,
    operation_id = "spectralink_alarm",
    path = "/v1/phones/spectralink/alarm",
    tag = "phones",
    params(("key" = Option<String>, Query, description = "The handset's secret from the inventory")),
    request_body(content = String, content_type = "text/xml",
        description = "A Spectralink 84-series AlarmNotificationEvent (at most 8 KiB, no DOCTYPE)"),
    responses(crate::openapi::PhonePushProblems)
)]
pub async fn spectralink_alarm(
    state: State<AppState>,
    client: ClientAddr,
    uri: Uri,
    body: Bytes,
) -> Response {
    alarm_push(state, client, uri, body).await
}

/// `POST /v1/phones/cisco/event?key=SECRET`: the Cisco 840/860 emergency button's trigger and
/// cancel notifications, the same `AlarmNotificationEvent` as [`spectralink_alarm`].
#[utoipa::path(
    post,
    operation_id = "cisco_event",
    path = "/v1/phones/cisco/event",
    tag = "phones",
    params(("key" = Option<String>, Query, description = "The handset's secret from the inventory")),
    request_body(content = String, content_type = "text/xml",
        description = "An AlarmNotificationEvent (at most 8 KiB, no DOCTYPE)"),
    responses(crate::openapi::PhonePushProblems)
)]
pub async fn cisco_event(
    state: State<AppState>,
    client: ClientAddr,
    uri: Uri,
    body: Bytes,
) -> Response {
    alarm_push(state, client, uri, body).await
}

async fn alarm_push(
    State(state): State<AppState>,
    client: ClientAddr,
    uri: Uri,
    body: Bytes,
) -> Response {
    match push(&state, client.ip(), &uri, &body).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

async fn push(
    state: &AppState,
    ip: IpAddr,
    uri: &Uri,
    body: &[u8],
) -> Result<Response, ApiProblem> {
    gate(state, ip).map_err(problem_gate)?;
    let (_, key) = params(uri, &HeaderMap::new(), &[]);
    let event = match alarm_event::parse(body) {
        Ok(e) => e,
        Err(e) => {
            let (why, detail) = refuse(state, ip, Refusal::Malformed, "", &e.to_string()).await;
            return Err(why.problem(detail));
        }
    };
    let upper = event.mac.to_ascii_uppercase();
    let names = [format!("SEP{upper}"), upper];
    let phone = match authenticate(state, ip, &names, key.as_deref())
        .await
        .map_err(problem_gate)?
    {
        Err((why, detail)) => return Err(why.problem(detail)),
        Ok(phone) => phone,
    };
    let detectors = event.detectors();
    if !event.alarmed() {
        return cancel(state, &phone, &event).await;
    }
    let access_point = match &event.bssid {
        Some(b) => state
            .store
            .access_point(b)
            .await
            .map_err(crate::api::storage_problem)?,
        None => None,
    };
    let location = match (&access_point, &event.bssid) {
        (Some(ap), _) => Location {
            loc: Some(format!("access point {} (phone {})", ap.bssid, phone.label)),
            ..ap.location()
        },
        (None, Some(b)) => Location {
            loc: Some(format!(
                "access point {b} is not in the access-point table: desk location"
            )),
            ..phone.location()
        },
        (None, None) => phone.location(),
    };
    let id = press_id(&[
        "alarm-event",
        &phone.device_name,
        &event.timestamp,
        &detectors.join("+"),
    ]);
    let record = serde_json::json!({
        "phone": "alarm-notification",
        "detectors": detectors,
        "bssid": event.bssid,
        "phone_ip": event.phone_ip,
        "timestamp": event.timestamp,
        "body": String::from_utf8_lossy(body),
    })
    .to_string();
    match raise(state, &phone, id, location, record, ip, "wireless phone").await {
        Ok(IngestOutcome::Committed(_) | IngestOutcome::Duplicate(_)) => {
            Ok(xml::response(StatusCode::OK, xml::push_ok()))
        }
        Ok(IngestOutcome::DeviceNotActive(_) | IngestOutcome::IdConflict) => {
            let (why, detail) = refuse(
                state,
                ip,
                Refusal::Removed,
                &phone.device_name,
                "the phone was removed from the inventory",
            )
            .await;
            Err(why.problem(detail))
        }
        Err(e) => Err(crate::api::storage_problem(e)),
    }
}

/// The note a phone's cancel writes on its open incident.
pub const CANCEL_NOTE: &str = "phone cancel";

/// All detectors clear: the alarm was cancelled on the phone. The open incident (if any) gets
/// a "phone cancel" note; it stays open (an officer decides; a cancel may be coerced).
async fn cancel(
    state: &AppState,
    phone: &PhoneRecord,
    event: &alarm_event::AlarmEvent,
) -> Result<Response, ApiProblem> {
    let actor = format!("phone:{}", phone.device_name);
    let open = state
        .store
        .open_incident_of(&phone.device_id)
        .await
        .map_err(crate::api::storage_problem)?;
    match open {
        Some(incident) => {
            let note = format!(
                "{CANCEL_NOTE}: the alarm was cleared on the phone (its time {})",
                event.timestamp
            );
            state
                .store
                .apply_action(incident, &actor, IncidentAction::Note(note))
                .await
                .map_err(crate::api::storage_problem)?;
        }
        None => {
            state
                .store
                .record_audit(
                    &actor,
                    "phone.cancel",
                    &phone.device_name,
                    "the alarm was cleared on the phone; no open incident",
                )
                .await
                .map_err(crate::api::storage_problem)?;
        }
    }
    Ok(xml::response(StatusCode::OK, xml::push_ok()))
}

fn problem_gate(g: Gate) -> ApiProblem {
    match g {
        Gate::Limited(wait) => ApiProblem::too_many_requests(
            "too many phone requests from this address; retry later",
            wait.as_secs(),
        ),
        Gate::Store(e) => crate::api::storage_problem(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn networks_match_v4_v6_and_mapped_forms() {
        let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(network_holds(&net("127.0.0.0/8"), ip("127.0.0.1")));
        assert!(!network_holds(&net("127.0.0.2/32"), ip("127.0.0.1")));
        assert!(network_holds(&net("::1/128"), ip("::1")));
        assert!(!network_holds(&net("::1/128"), ip("127.0.0.1")));
        assert!(network_holds(&net("::ffff:10.1.0.0/112"), ip("10.1.2.3")));
        assert!(network_holds(&net("10.1.0.0/16"), ip("::ffff:10.1.2.3")));
        assert!(!network_holds(&net("10.1.0.0/16"), ip("::1")));
    }

    #[test]
    fn a_press_id_depends_on_everything_that_identifies_it() {
        let a = press_id(&["cisco-duress", "SEP001122334455", "1"]);
        assert_eq!(a, press_id(&["cisco-duress", "SEP001122334455", "1"]));
        assert_ne!(a, press_id(&["cisco-duress", "SEP001122334455", "2"]));
        // Field boundaries count: ("ab", "c") is not ("a", "bc").
        assert_ne!(press_id(&["ab", "c"]), press_id(&["a", "bc"]));
        assert_eq!(a.get_version_num(), 8);
    }
}
