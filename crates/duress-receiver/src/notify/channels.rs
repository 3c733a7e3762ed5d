//! What each channel sends, and how its answer is read. The payloads are documented with
//! examples in `docs/integrations.md`. Errors returned here are shown on the incident page and
//! logged: they name the HTTP status or the kind of failure, never a URL (it may carry a key)
//! nor a secret.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{
    ChannelConfig, SmsChannel, TeamsChannel, VmsChannel, VmsEncoding, VmsRequest, WebhookChannel,
};
use crate::store::{NotificationFacts, OutboxItem};

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Delivered(Option<u16>),
    Accepted(Option<u16>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    pub http_status: Option<u16>,
    pub message: String,
}

impl SendError {
    fn new(message: impl Into<String>) -> Self {
        SendError {
            http_status: None,
            message: message.into(),
        }
    }
}

/// Everything a message says, built from the row's facts.
#[derive(Debug, Clone)]
pub struct Message {
    /// The idempotency key (the outbox row's id).
    pub id: String,
    pub facts: NotificationFacts,
    pub press_count: Option<i64>,
    /// `PUBLIC_URL/incidents/ID`, when the config names the console's address.
    pub incident_url: Option<String>,
    pub ladder: Option<String>,
    pub step: u32,
    pub repeat_index: u32,
}

impl Message {
    pub fn new(item: &OutboxItem, public_url: Option<&str>) -> Self {
        let incident_url = match (public_url, item.facts.incident_id) {
            (Some(base), Some(id)) => {
                Some(format!("{}/incidents/{id}", base.trim_end_matches('/')))
            }
            _ => None,
        };
        Message {
            id: item.id.to_string(),
            facts: item.facts.clone(),
            press_count: item.press_count,
            incident_url,
            ladder: item.ladder.clone(),
            step: item.step,
            repeat_index: item.repeat_index,
        }
    }

    pub fn label(&self) -> String {
        self.facts.location.display_label()
    }

    pub fn time(&self) -> String {
        self.facts.at.format(&Rfc3339).unwrap_or_default()
    }

    /// "DURESS ALARM", "SELF-TEST", "STATION OFFLINE".
    pub fn headline(&self) -> &'static str {
        match self.facts.reason.as_str() {
            "test" => "SELF-TEST (no emergency)",
            "offline" => "STATION OFFLINE",
            _ if self.step > 0 || self.repeat_index > 0 => "DURESS ALARM: STILL UNCLAIMED",
            _ => "DURESS ALARM",
        }
    }

    pub fn event_type(&self) -> &'static str {
        match self.facts.reason.as_str() {
            "test" => "test.received",
            "offline" => "station.offline",
            _ if self.step > 0 || self.repeat_index > 0 => "incident.escalated",
            _ => "incident.opened",
        }
    }

    /// Host name and user as people read them: bidirectional controls escaped (as the label
    /// and address already are, through `Location::display_label`).
    pub fn workstation(&self) -> String {
        let (hostname, user) = self.host_shown();
        if user.is_empty() {
            hostname
        } else {
            format!("{hostname} ({user})")
        }
    }

    fn host_shown(&self) -> (String, String) {
        let h = &self.facts.host;
        (
            duress_core::text::escape_bidi(&h.hostname).into_owned(),
            duress_core::text::escape_bidi(&h.user).into_owned(),
        )
    }

    /// The one-line text (SMS, e-mail, fallback): the location label first, then what happened.
    pub fn text(&self) -> String {
        let mut parts = vec![
            format!("{} — {}", self.label(), self.headline()),
            self.facts.location.civic_address(),
            self.workstation(),
            self.time(),
        ];
        if let Some(n) = self.press_count {
            parts.push(format!("presses {n}"));
        }
        if let Some(url) = &self.incident_url {
            parts.push(url.clone());
        }
        parts.retain(|p| !p.trim().is_empty());
        parts.join(" | ")
    }

    /// The JSON the webhook channel posts (Standard Webhooks' `type`/`timestamp`/`data`).
    pub fn webhook_json(&self) -> Value {
        let f = &self.facts;
        let (hostname, user) = self.host_shown();
        json!({
            "type": self.event_type(),
            "timestamp": self.time(),
            "data": {
                "notification_id": self.id,
                "incident_id": f.incident_id,
                "event_id": f.event_id,
                "device_id": f.device_id,
                "kind": f.kind,
                "location_label": self.label(),
                "civic_address": f.location.civic_address(),
                "location": f.location,
                "hostname": hostname,
                "user": user,
                "at": self.time(),
                "press_count": self.press_count,
                "incident_url": self.incident_url,
                "ladder": self.ladder,
                "step": self.step,
                "repeat": self.repeat_index,
            }
        })
    }

    /// The Adaptive Card 1.4 (location label first; enum values in the schema's lower case,
    /// which Teams reads case-insensitively), in the envelope Teams Workflows'
    /// "When a Teams webhook request is received" trigger takes.
    pub fn teams_json(&self) -> Value {
        let f = &self.facts;
        let (hostname, user) = self.host_shown();
        let mut facts = vec![
            json!({"title": "Address", "value": f.location.civic_address()}),
            json!({"title": "Workstation", "value": hostname}),
            json!({"title": "User", "value": user}),
            json!({"title": "Time", "value": self.time()}),
        ];
        if let Some(n) = self.press_count {
            facts.push(json!({"title": "Presses", "value": n.to_string()}));
        }
        facts.retain(|v| v["value"].as_str().is_some_and(|s| !s.trim().is_empty()));
        let mut card = json!({
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "fallbackText": self.text(),
            "body": [
                {"type": "TextBlock", "text": clip(&self.label(), 500), "size": "large",
                 "weight": "bolder", "color": "attention", "wrap": true},
                {"type": "TextBlock", "text": self.headline(), "weight": "bolder", "wrap": true},
                {"type": "FactSet", "facts": facts},
            ],
        });
        if let Some(url) = &self.incident_url {
            card["actions"] =
                json!([{"type": "Action.OpenUrl", "title": "Open the incident", "url": url}]);
        }
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": card,
            }]
        })
    }
}

/// At most `max` characters (not bytes), with an ellipsis when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// SMS bodies: at most this many characters (two concatenated segments).
pub const SMS_MAX_CHARS: usize = 320;
/// Teams refuses posts of 28 KB and more.
pub const TEAMS_MAX_BYTES: usize = 28 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` (Standard Webhooks).
pub fn webhook_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length: new_from_slice cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// The TLS failure under a transport error, if it is one: rustls' error names the problem
/// (an untrusted issuer, a name mismatch) and never carries the URL. The rustls error sits in
/// an `io::Error` (itself in one), whose `source()` skips it: the walk looks inside each
/// `io::Error` too.
fn tls_cause(e: &reqwest::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    // Bounded: error chains are short; a cycle cannot keep us here.
    for _ in 0..16 {
        let c = cause?;
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        cause = match c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    None
}

fn transport_error(e: &reqwest::Error) -> SendError {
    if let Some(tls) = tls_cause(e) {
        return SendError::new(format!("TLS: {tls}"));
    }
    // reqwest's Display names the URL; only the kind of failure is kept.
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed (refused, unreachable or TLS)"
    } else if e.is_request() {
        "the request failed"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else {
        "failed"
    };
    SendError::new(what)
}

async fn answer(
    response: Result<reqwest::Response, reqwest::Error>,
    accepted_on_202: bool,
) -> Result<Sent, SendError> {
    let response = response.map_err(|e| transport_error(&e))?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        if accepted_on_202 || status == 202 {
            Ok(Sent::Accepted(Some(status)))
        } else {
            Ok(Sent::Delivered(Some(status)))
        }
    } else {
        Err(SendError {
            http_status: Some(status),
            message: format!("HTTP {status}"),
        })
    }
}

pub async fn send_webhook(
    client: &reqwest::Client,
    channel: &WebhookChannel,
    msg: &Message,
    now: OffsetDateTime,
) -> Result<Sent, SendError> {
    let key = crate::config::webhook_key(channel.secret.expose()).map_err(SendError::new)?;
    let body =
        serde_json::to_vec(&msg.webhook_json()).map_err(|e| SendError::new(e.to_string()))?;
    let timestamp = now.unix_timestamp();
    let signature = webhook_signature(&key, &msg.id, timestamp, &body);
    let response = client
        .post(channel.url.expose())
        .header("content-type", "application/json")
        .header("webhook-id", &msg.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    answer(response, false).await
}

pub async fn send_teams(
    client: &reqwest::Client,
    channel: &TeamsChannel,
    msg: &Message,
) -> Result<Sent, SendError> {
    let mut payload = msg.teams_json();
    let mut body = serde_json::to_vec(&payload).map_err(|e| SendError::new(e.to_string()))?;
    if body.len() >= TEAMS_MAX_BYTES {
        // Only a huge location can do this: keep the label and headline, drop the facts.
        payload["attachments"][0]["content"]["body"][2]["facts"] = json!([]);
        payload["attachments"][0]["content"]["fallbackText"] = json!(clip(&msg.text(), 1000));
        body = serde_json::to_vec(&payload).map_err(|e| SendError::new(e.to_string()))?;
    }
    let response = client
        .post(channel.url.expose())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    // Workflows answers 202 when the flow is queued, even if it fails later: "accepted".
    answer(response, true).await
}

/// The SMS body: location first, at most [`SMS_MAX_CHARS`].
pub fn sms_body(msg: &Message) -> String {
    clip(&msg.text(), SMS_MAX_CHARS)
}

pub async fn send_sms(
    client: &reqwest::Client,
    channel: &SmsChannel,
    msg: &Message,
) -> Result<Sent, SendError> {
    let body = sms_body(msg);
    let mut last = None;
    for to in &channel.to {
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("To", to)
            .append_pair("From", &channel.from)
            .append_pair("Body", &body)
            .finish();
        let response = client
            .post(channel.url.expose())
            .basic_auth(&channel.username, Some(channel.password.expose()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await;
        // The gateway queued it (Twilio answers 201 "queued"): accepted, not delivered.
        last = Some(answer(response, true).await?);
    }
    last.ok_or_else(|| SendError::new("no recipient"))
}

/// The request of a VMS channel that matches the location (the first one).
pub fn vms_request<'a>(
    channel: &'a VmsChannel,
    facts: &NotificationFacts,
) -> Option<&'a VmsRequest> {
    vms_request_at(channel, &facts.location)
}

/// The request of a VMS channel for a location (the first whose building and room match):
/// also what the console's camera links come from (`console::cameras`).
pub fn vms_request_at<'a>(
    channel: &'a VmsChannel,
    loc: &duress_core::Location,
) -> Option<&'a VmsRequest> {
    channel.requests.iter().find(|r| {
        r.building
            .as_deref()
            .is_none_or(|b| loc.bld.as_deref() == Some(b))
            && r.room
                .as_deref()
                .is_none_or(|room| loc.room.as_deref() == Some(room))
    })
}

/// The placeholders a VMS template may use.
fn placeholders(msg: &Message) -> Vec<(&'static str, String)> {
    let loc = &msg.facts.location;
    vec![
        ("{label}", msg.label()),
        ("{BLD}", loc.bld.clone().unwrap_or_default()),
        ("{FLR}", loc.flr.clone().unwrap_or_default()),
        ("{ROOM}", loc.room.clone().unwrap_or_default()),
        (
            "{incident_id}",
            msg.facts
                .incident_id
                .map(|i| i.to_string())
                .unwrap_or_default(),
        ),
        ("{notification_id}", msg.id.clone()),
        ("{hostname}", msg.facts.host.hostname.clone()),
        ("{user}", msg.facts.host.user.clone()),
        ("{time}", msg.time()),
        (
            "{incident_url}",
            msg.incident_url.clone().unwrap_or_default(),
        ),
    ]
}

/// Substitutes every placeholder, each value encoded by `encode` so a location text cannot
/// break out of the URL or the body.
pub fn render(template: &str, msg: &Message, encode: impl Fn(&str) -> String) -> String {
    let mut out = template.to_owned();
    for (key, value) in placeholders(msg) {
        out = out.replace(key, &encode(&value));
    }
    out
}

/// A JSON string's contents (without the quotes).
pub fn json_escape(value: &str) -> String {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    quoted[1..quoted.len().saturating_sub(1).max(1)].to_owned()
}

pub async fn send_vms(
    client: &reqwest::Client,
    channel: &VmsChannel,
    msg: &Message,
) -> Result<Sent, SendError> {
    let Some(request) = vms_request(channel, &msg.facts) else {
        return Err(SendError::new("no request template matches this location"));
    };
    let url = render(
        request.url.expose(),
        msg,
        crate::console::cameras::percent_encode,
    );
    // A rendered URL must still obey the URL rule (a placeholder cannot change the host:
    // values are percent-encoded, but the check is cheap).
    crate::config::check_url("vms url", &url).map_err(SendError::new)?;
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| SendError::new("bad method"))?;
    let mut builder = client
        .request(method, &url)
        .header("idempotency-key", &msg.id);
    for (k, v) in &request.headers {
        builder = builder.header(k, v.expose());
    }
    if let Some(body) = &request.body {
        let rendered = match request.encoding {
            VmsEncoding::Json => render(body, msg, json_escape),
            VmsEncoding::Percent => render(body, msg, crate::console::cameras::percent_encode),
        };
        builder = builder.body(rendered);
    }
    answer(builder.send().await, false).await
}

/// POSTs the notification's CAP 1.2 alert (`crate::cap::notification_xml`), with the outbox
/// row's id as `idempotency-key` (the CAP identifier also stays the same on a resend).
pub async fn send_cap(
    client: &reqwest::Client,
    channel: &crate::config::CapChannel,
    msg: &Message,
) -> Result<Sent, SendError> {
    let body = crate::cap::notification_xml(msg, &channel.cap_options());
    let mut builder = client
        .post(channel.url.expose())
        .header("content-type", crate::cap::CAP_CONTENT_TYPE)
        .header("idempotency-key", &msg.id);
    for (k, v) in &channel.headers {
        builder = builder.header(k, v.expose());
    }
    answer(builder.body(body).send().await, false).await
}

/// Sends one message on one channel (the client is unused for e-mail).
pub async fn send(
    client: &reqwest::Client,
    channel: &ChannelConfig,
    msg: &Message,
    now: OffsetDateTime,
) -> Result<Sent, SendError> {
    match channel {
        ChannelConfig::Webhook(c) => send_webhook(client, c, msg, now).await,
        ChannelConfig::Teams(c) => send_teams(client, c, msg).await,
        ChannelConfig::Sms(c) => send_sms(client, c, msg).await,
        ChannelConfig::Vms(c) => send_vms(client, c, msg).await,
        ChannelConfig::Email(c) => super::email::send(c, msg).await,
        // The worker sends dc09 itself (it holds the links' state); a fresh state here.
        ChannelConfig::Dc09(c) => super::dc09::send(&super::dc09::Links::default(), c, msg).await,
        ChannelConfig::Cap(c) => send_cap(client, c, msg).await,
    }
}

/// The delay before retry number `attempts` (0 = after the first failure): exponential from
/// `base`, capped at `cap`, with "equal jitter" (half fixed, half random) so a channel that
/// comes back is not hit by every receiver's retries at the same instant.
pub fn backoff(base: Duration, cap: Duration, attempts: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32.checked_shl(attempts.min(20)).unwrap_or(u32::MAX))
        .min(cap);
    let half = exp / 2;
    let jitter = rand::random::<f64>();
    half + half.mul_f64(jitter)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        // The specification's example (standard-webhooks/spec, libraries' shared test):
        // secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, id msg_p5jXN8AQM9LWM0D4loKWxJek,
        // timestamp 1614265330, body {"test": 2432232314}.
        let key = crate::config::webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = webhook_signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(300);
        for n in 0..30 {
            let d = backoff(base, cap, n);
            let exp = (base * 2u32.pow(n.min(20))).min(cap);
            assert!(d >= exp / 2 && d <= exp, "{n}: {d:?}");
        }
    }

    #[test]
    fn device_bidi_controls_are_shown_escaped_in_notifications() {
        let msg = Message {
            id: "n1".into(),
            facts: crate::store::NotificationFacts {
                reason: "incident".into(),
                incident_id: None,
                event_id: None,
                device_id: "d1".into(),
                kind: "duress".into(),
                location: duress_core::Location {
                    label: Some("Room \u{202E}412".into()),
                    ..Default::default()
                },
                host: duress_core::HostFacts {
                    hostname: "ws\u{2066}-9".into(),
                    user: "al\u{200F}ice".into(),
                    ..Default::default()
                },
                at: time::OffsetDateTime::UNIX_EPOCH,
                alarm_at: None,
            },
            press_count: Some(1),
            incident_url: None,
            ladder: None,
            step: 0,
            repeat_index: 0,
        };
        let text = msg.text();
        assert!(text.contains("Room [U+202E]412"), "{text}");
        assert!(text.contains("ws[U+2066]-9 (al[U+200F]ice)"), "{text}");
        let all = format!(
            "{text}{}{}",
            msg.teams_json(),
            msg.webhook_json()["data"]["hostname"]
        );
        for c in ['\u{202E}', '\u{2066}', '\u{200F}'] {
            assert!(!all.contains(c), "{all}");
        }
    }

    #[test]
    fn clip_counts_characters() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "ab…");
        assert_eq!(clip("ééééé", 3).chars().count(), 3);
    }
}
