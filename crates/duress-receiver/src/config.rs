//! The receiver's configuration file (`serve --config FILE`, TOML; documented in full in
//! `docs/integrations.md`): notification channels, escalation ladders and the rules that choose
//! them, supervision and `[retention]`. One top-level struct: later tables (`[oidc]`) are added beside
//! `channels` and `ladders`.
//!
//! Every table refuses unknown keys (`deny_unknown_fields`), so a misspelt key is an error that
//! names it (and the file, line and column) instead of a silently ignored setting; a ladder
//! naming an unknown channel, or a rule naming an unknown ladder, is refused the same way.
//! Secrets (webhook URLs that carry keys, HMAC secrets, SMTP passwords, SMS tokens) are held as
//! [`Secret`], whose `Debug` shows `[redacted]`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

/// A secret value from the file: `Debug` never shows it; only channel code calls `expose`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// The console's address as officers reach it (`https://duress.example.edu`): the incident
    /// link in notifications. Without it notifications carry no link.
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
    #[serde(default)]
    pub ladders: Vec<LadderConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Supervision notifications: a station going offline notifies these channels once.
    #[serde(default)]
    pub supervision: Option<SupervisionConfig>,
    /// Protection schedules: when a station is expected to be protected (supervised). Entries
    /// with the same name form one schedule (the union of their windows).
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
    /// `[[siem]]`: where the audit log and incident state changes are fed (`notify::siem`).
    #[serde(default)]
    pub siem: Vec<SiemConfig>,
    /// `[console]`: where the console listens and who may reach it (the command line's
    /// `--console-listen` / `--console-allow` take precedence).
    #[serde(default)]
    pub console: ConsoleConfig,
    /// What the daily purge deletes, and after how long (default: keep everything).
    #[serde(default)]
    pub retention: Option<RetentionConfig>,
    /// `[oidc]`: console single sign-on with an OpenID Connect provider (`console::oidc`).
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// `[incidents]`: how presses are grouped into incidents beyond the `--grouping-window`.
    #[serde(default)]
    pub incidents: IncidentsConfig,
}

/// `[incidents]`: grouping policy (docs/console.md, "Response work").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsConfig {
    /// `group_same_room = true`: presses from DIFFERENT stations in the same room (building,
    /// floor and room, as the station's registered location, else its reported one, names
    /// them) within the grouping window join the room's open incident instead of opening
    /// another; the incident lists every station that pressed. Stations without a room never
    /// group. Off by default: two stations mean two incidents.
    #[serde(default)]
    pub group_same_room: bool,
}

/// `[[schedules]]`: one weekly window of a named protection schedule, in a time zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub name: String,
    /// `mon` … `sun` (or `daily`, `weekdays`, `weekend`): the days the window starts on.
    pub days: Vec<String>,
    /// `HH:MM`, local time in `timezone`. A window with `to` before `from` runs past midnight
    /// into the next day; `to = "24:00"` is the end of the day.
    pub from: String,
    pub to: String,
    /// An IANA time zone (`America/Chicago`); the local times follow its daylight saving.
    pub timezone: String,
}

/// `[[supervision.rules]]`: which schedule protects a station. The first rule whose every
/// given key matches wins; without a match, `supervision.schedule`, else always.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectionRule {
    /// A schedule name, or `always`.
    pub schedule: String,
    /// The station's device id.
    #[serde(default)]
    pub station: Option<String>,
    /// The location's building (`BLD`).
    #[serde(default)]
    pub building: Option<String>,
    /// The location's site (`NAM`).
    #[serde(default)]
    pub site: Option<String>,
}

/// One SIEM sink (docs/operations.md, "SIEM feed"): `kind` chooses the table's shape.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SiemConfig {
    /// RFC 5424 messages over TCP with octet-counting framing (RFC 6587), or over TLS (RFC 5425).
    Syslog(SyslogSink),
    /// One JSON object per line, appended to a file.
    Jsonl(JsonlSink),
}

impl SiemConfig {
    pub fn name(&self) -> &str {
        match self {
            SiemConfig::Syslog(s) => &s.name,
            SiemConfig::Jsonl(j) => &j.name,
        }
    }
}

/// `kind = "syslog"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSink {
    pub name: String,
    /// The collector, `host:port` (RFC 5425's port is 6514).
    pub address: String,
    /// TLS (RFC 5425), checked against the OS trust store plus `ca_cert`. Without it (plain
    /// TCP, RFC 6587) only to a loopback relay: the records name locations and officers.
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// The name the certificate must carry (default: `address`'s host).
    #[serde(default)]
    pub server_name: Option<String>,
}

impl SyslogSink {
    /// The host part of `address` (brackets of an IPv6 literal removed).
    pub fn host(&self) -> &str {
        let host = self
            .address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// `kind = "jsonl"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlSink {
    pub name: String,
    /// The file records are appended to (created 0600 if missing).
    pub path: PathBuf,
}

/// `[console]`: the console's own listener and its network allow-list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console (pages, static files, live stream, sign-in) only on this address;
    /// the agent API stays on `--listen`.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// Networks (CIDR, or a single address) allowed to reach the console; empty: all.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Session lengths (durations such as `"90s"`, `"15m"`, `"12h"`; docs/console.md,
    /// "Sessions"). Left out: the console's defaults.
    /// `session_idle`: a session unused this long is over.
    #[serde(default)]
    pub session_idle: Option<String>,
    /// `session_lifetime`: a sign-in (or an extension) lasts this long.
    #[serde(default)]
    pub session_lifetime: Option<String>,
    /// `session_max`: no extension goes past sign-in plus this.
    #[serde(default)]
    pub session_max: Option<String>,
    /// `session_warning`: the page warns this long before its session ends.
    #[serde(default)]
    pub session_warning: Option<String>,
    /// `keep_alive`: the live stream's keep-alive (and session check) interval; a page that
    /// hears nothing for longer says its stream is down.
    #[serde(default)]
    pub keep_alive: Option<String>,
}

/// The session lengths and keep-alive of `[console]`, parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsoleTimes {
    pub session_idle: Option<std::time::Duration>,
    pub session_lifetime: Option<std::time::Duration>,
    pub session_max: Option<std::time::Duration>,
    pub session_warning: Option<std::time::Duration>,
    pub keep_alive: Option<std::time::Duration>,
}

impl ConsoleConfig {
    /// The allow-list, parsed (checked when the file is loaded, so this only fails on a
    /// config built by hand).
    pub fn allow_nets(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.allow.iter().map(|c| parse_cidr(c)).collect()
    }

    /// The session lengths, each parsed (checked when the file is loaded; how they fit
    /// together is checked by `ConsoleSettings::apply_times`, which knows the defaults).
    pub fn times(&self) -> Result<ConsoleTimes, String> {
        let one = |key: &str, v: &Option<String>| -> Result<Option<std::time::Duration>, String> {
            v.as_deref()
                .map(|t| {
                    crate::duration::parse_duration(t)
                        .map_err(|e| format!("console.{key}: {e}"))
                        .and_then(|d| {
                            if d.is_zero() {
                                Err(format!("console.{key} must be longer than 0s"))
                            } else {
                                Ok(d)
                            }
                        })
                })
                .transpose()
        };
        let times = ConsoleTimes {
            session_idle: one("session_idle", &self.session_idle)?,
            session_lifetime: one("session_lifetime", &self.session_lifetime)?,
            session_max: one("session_max", &self.session_max)?,
            session_warning: one("session_warning", &self.session_warning)?,
            keep_alive: one("keep_alive", &self.keep_alive)?,
        };
        Ok(times)
    }
}

/// A network for an allow-list: `10.1.0.0/16`, `2001:db8::/32`, or one address (`10.1.2.3`,
/// as `/32` or `/128`).
pub fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("{text:?} is not a network (CIDR such as 10.1.0.0/16) or an address"))
}

/// `[retention]`: how many days each category is kept (`crate::retention`; docs/operations.md,
/// "Retention"). A key left out keeps that category for ever. Open incidents are never purged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Resolved incidents (with their events, timeline and notifications), counted from their
    /// resolution. At least [`MIN_INCIDENT_DAYS`].
    #[serde(default)]
    pub resolved_incidents_days: Option<u32>,
    /// Test events and their notifications, counted from receipt. At least 1.
    #[serde(default)]
    pub test_events_days: Option<u32>,
    /// Settled offline (supervision) notifications and live-log rows of no incident. At least 1.
    #[serde(default)]
    pub heartbeat_history_days: Option<u32>,
    /// Console sessions, counted from the end of their lifetime (0: as soon as they expired).
    #[serde(default)]
    pub sessions_days: Option<u32>,
}

/// The shortest `resolved_incidents_days` accepted.
pub const MIN_INCIDENT_DAYS: u32 = 30;

impl RetentionConfig {
    /// Refuses values that would delete too soon.
    pub fn check(&self) -> Result<(), String> {
        if let Some(d) = self.resolved_incidents_days
            && d < MIN_INCIDENT_DAYS
        {
            return Err(format!(
                "[retention] resolved_incidents_days = {d}: keep resolved incidents at least \
                 {MIN_INCIDENT_DAYS} days (an agent that lost an answer may resend an event that \
                 long after)"
            ));
        }
        for (name, value) in [
            ("test_events_days", self.test_events_days),
            ("heartbeat_history_days", self.heartbeat_history_days),
        ] {
            if value == Some(0) {
                return Err(format!("[retention] {name} = 0: use at least 1 day"));
            }
        }
        Ok(())
    }
}

/// `[supervision]`: the trouble channel(s) a station going offline notifies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionConfig {
    pub channels: Vec<String>,
    /// A station is offline after this long without a heartbeat (default: two heartbeat
    /// intervals plus 30 s, the stations page's "offline").
    #[serde(default)]
    pub offline_after_s: Option<u64>,
    /// How often the sweep runs (default 30 s).
    #[serde(default)]
    pub interval_s: Option<u64>,
    /// The schedule of stations no rule names (default `always`).
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub rules: Vec<ProtectionRule>,
}

/// One channel: `kind` chooses the table's shape.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChannelConfig {
    Teams(TeamsChannel),
    Webhook(WebhookChannel),
    Sms(SmsChannel),
    Email(EmailChannel),
    Vms(VmsChannel),
    /// SIA DC-09 to an alarm central station (`notify::dc09`).
    Dc09(Dc09Channel),
    /// OASIS CAP 1.2 over HTTP POST (issue 14; docs/integrations.md, CAP 1.2).
    Cap(CapChannel),
}

impl ChannelConfig {
    pub fn name(&self) -> &str {
        match self {
            ChannelConfig::Teams(c) => &c.name,
            ChannelConfig::Webhook(c) => &c.name,
            ChannelConfig::Sms(c) => &c.name,
            ChannelConfig::Email(c) => &c.name,
            ChannelConfig::Vms(c) => &c.name,
            ChannelConfig::Dc09(c) => &c.name,
            ChannelConfig::Cap(c) => &c.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Teams(_) => "teams",
            ChannelConfig::Webhook(_) => "webhook",
            ChannelConfig::Sms(_) => "sms",
            ChannelConfig::Email(_) => "email",
            ChannelConfig::Vms(_) => "vms",
            ChannelConfig::Dc09(_) => "dc09",
            ChannelConfig::Cap(_) => "cap",
        }
    }

    /// What an admin sees of the channel: kind, target without secrets.
    pub fn redacted_target(&self) -> String {
        match self {
            ChannelConfig::Teams(c) => redact_url(c.url.expose()),
            ChannelConfig::Webhook(c) => {
                format!("{} (signed, secret redacted)", redact_url(c.url.expose()))
            }
            ChannelConfig::Sms(c) => format!(
                "{} from {} to {} number(s)",
                redact_url(c.url.expose()),
                c.from,
                c.to.len()
            ),
            ChannelConfig::Email(c) => format!(
                "smtp {}:{} ({}) from {} to {}",
                c.smtp_host,
                c.smtp_port,
                c.tls.as_str(),
                c.from,
                c.to.join(", ")
            ),
            ChannelConfig::Vms(c) => format!("{} location template(s)", c.requests.len()),
            ChannelConfig::Dc09(c) => c.redacted_target(),
            ChannelConfig::Cap(c) => format!(
                "{} (CAP 1.2, scope {})",
                redact_url(c.url.expose()),
                if c.addresses.is_empty() {
                    "Restricted"
                } else {
                    "Private"
                }
            ),
        }
    }
}

/// A Microsoft Teams Workflows webhook ("Post to a channel when a webhook request is
/// received"). Its URL carries the flow's signature: a secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsChannel {
    pub name: String,
    pub url: Secret,
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

/// JSON signed per Standard Webhooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannel {
    pub name: String,
    pub url: Secret,
    /// `whsec_<base64>`.
    pub secret: Secret,
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

/// OASIS CAP 1.2 alerts POSTed as `application/cap+xml` to a PSIM, an EOC or a mass-notification
/// system. `scope` is Private when `addresses` are given, else Restricted (never Public).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapChannel {
    pub name: String,
    pub url: Secret,
    /// CAP `sender` (default `duress@HOSTNAME`).
    #[serde(default)]
    pub sender: Option<String>,
    /// CAP `addresses`: with them the scope is Private.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// CAP `restriction` of a Restricted alert (default: security staff only).
    #[serde(default)]
    pub restriction: Option<String>,
    /// Extra request headers (e.g. `Authorization`), secrets.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Secret>,
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

impl CapChannel {
    /// The CAP options of this channel's documents.
    pub fn cap_options(&self) -> crate::cap::CapOptions {
        crate::cap::CapOptions {
            sender: self
                .sender
                .clone()
                .unwrap_or_else(crate::cap::default_sender),
            scope: if self.addresses.is_empty() {
                crate::cap::CapScope::Restricted(
                    self.restriction
                        .clone()
                        .unwrap_or_else(|| crate::cap::DEFAULT_RESTRICTION.to_owned()),
                )
            } else {
                crate::cap::CapScope::Private(self.addresses.clone())
            },
        }
    }
}

/// An SMS gateway with the Twilio Messages API shape.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsChannel {
    pub name: String,
    /// `https://api.twilio.com/2010-04-01/Accounts/AC…/Messages.json` or a gateway's equivalent.
    pub url: Secret,
    /// Basic-auth user (Twilio: the Account SID).
    pub username: String,
    /// Basic-auth password (Twilio: the Auth Token).
    pub password: Secret,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP: only to a loopback relay.
    None,
    Starttls,
    /// Implicit TLS (SMTPS, port 465).
    Tls,
}

impl SmtpTls {
    pub const fn as_str(self) -> &'static str {
        match self {
            SmtpTls::None => "none",
            SmtpTls::Starttls => "starttls",
            SmtpTls::Tls => "tls",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailChannel {
    pub name: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub tls: SmtpTls,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

/// Per location, one HTTP request to a video management system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmsChannel {
    pub name: String,
    pub requests: Vec<VmsRequest>,
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmsRequest {
    /// Matches the location's building (`BLD`); absent: any building.
    #[serde(default)]
    pub building: Option<String>,
    /// Matches the location's room (`ROOM`); absent: any room.
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default = "default_method")]
    pub method: String,
    /// Placeholders are percent-encoded here.
    pub url: Secret,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Secret>,
    /// Placeholders are encoded per `encoding`.
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub encoding: VmsEncoding,
    /// The link the console's incident page shows for this location (the VMS web client's
    /// view of these cameras): the same per-location mapping as the request, one source of
    /// truth. `{BLD}`, `{FLR}`, `{ROOM}` are percent-encoded; `http(s)://` only.
    #[serde(default)]
    pub camera_url: Option<String>,
    /// The link's text (default: "Cameras").
    #[serde(default)]
    pub camera_name: Option<String>,
}

fn default_method() -> String {
    "POST".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmsEncoding {
    /// Each placeholder becomes a JSON string's contents (quotes, backslashes, controls escaped).
    #[default]
    Json,
    /// Each placeholder is percent-encoded (a form body).
    Percent,
}

/// One central station (`[[channels]] kind = "dc09"`); what is sent is `notify::dc09`'s.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dc09Channel {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// 3 to 16 hexadecimal digits (uppercase), as the central station assigned it.
    pub account: String,
    /// `R` and 1–6 hex digits; absent: no receiver field.
    #[serde(default)]
    pub receiver_prefix: Option<String>,
    /// `L` and 1–6 hex digits (`L0` when the station uses none).
    #[serde(default = "dc09_default_line")]
    pub line_prefix: String,
    /// 16, 24 or 32 characters, used as the key bytes (AES-128/192/256), the convention of
    /// pysiaalarm and several panels. Absent: frames are sent unencrypted.
    #[serde(default)]
    pub aes_key: Option<Secret>,
    /// `true`: Contact ID 121 (duress) instead of 122 (silent panic).
    #[serde(default)]
    pub duress_code: bool,
    /// Seconds between NULL supervision messages; 0: none.
    #[serde(default = "dc09_default_null_interval")]
    pub null_interval_s: u64,
    /// The Contact ID group (partition, `GG`, 0–99) where no zone entry says otherwise.
    #[serde(default = "dc09_default_group")]
    pub group: u8,
    /// The Contact ID zone (`CCC`, 0–999) where no zone entry matches (0: none).
    #[serde(default)]
    pub zone: u16,
    /// Location → group and zone: the first entry whose every given key matches.
    #[serde(default)]
    pub zones: Vec<Dc09Zone>,
}

/// `[[channels.zones]]`: a location (building, floor, room; each optional) and its zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dc09Zone {
    #[serde(default)]
    pub building: Option<String>,
    #[serde(default)]
    pub floor: Option<String>,
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default)]
    pub group: Option<u8>,
    pub zone: u16,
}

fn dc09_default_line() -> String {
    "L0".into()
}
fn dc09_default_null_interval() -> u64 {
    60
}
fn dc09_default_group() -> u8 {
    1
}

fn dc09_prefix_ok(value: &str, letter: char) -> bool {
    value.strip_prefix(letter).is_some_and(|hex| {
        (1..=6).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

impl Dc09Channel {
    /// The checks of the configuration file (each message names the key).
    pub fn check(&self) -> Result<(), String> {
        if self.host.trim().is_empty() {
            return Err("host: empty".into());
        }
        if self.port == 0 {
            return Err("port: must be 1-65535".into());
        }
        if !(3..=16).contains(&self.account.len())
            || !self
                .account
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        {
            return Err("account: 3 to 16 hexadecimal digits, uppercase (e.g. \"1234\")".into());
        }
        if let Some(r) = &self.receiver_prefix
            && !dc09_prefix_ok(r, 'R')
        {
            return Err("receiver_prefix: R and 1 to 6 hexadecimal digits (e.g. \"R0\")".into());
        }
        if !dc09_prefix_ok(&self.line_prefix, 'L') {
            return Err("line_prefix: L and 1 to 6 hexadecimal digits (e.g. \"L0\")".into());
        }
        if let Some(k) = &self.aes_key
            && !matches!(k.expose().len(), 16 | 24 | 32)
        {
            // The length only: the key itself is never in a message.
            return Err(format!(
                "aes_key: 16, 24 or 32 characters (AES-128/192/256), not {}",
                k.expose().len()
            ));
        }
        if self.null_interval_s > 0 && self.null_interval_s < 10 {
            return Err("null_interval_s: at least 10 (or 0: no NULL messages)".into());
        }
        for z in std::iter::once(self.group).chain(self.zones.iter().filter_map(|z| z.group)) {
            if z > 99 {
                return Err("group: 0 to 99".into());
            }
        }
        for z in std::iter::once(self.zone).chain(self.zones.iter().map(|z| z.zone)) {
            if z > 999 {
                return Err("zone: 0 to 999".into());
            }
        }
        Ok(())
    }

    /// What an admin sees: no key.
    pub fn redacted_target(&self) -> String {
        format!(
            "tcp {}:{} account {}{}",
            self.host,
            self.port,
            self.account,
            if self.aes_key.is_some() {
                " (AES, key redacted)"
            } else {
                " (unencrypted)"
            }
        )
    }
}

/// An escalation ladder: ordered steps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderConfig {
    pub name: String,
    pub steps: Vec<StepConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Seconds after the incident opened.
    pub after_s: u64,
    pub channels: Vec<String>,
    /// How many more times the step is sent, each `every_s` after the previous one.
    #[serde(default)]
    pub repeat: u32,
    /// Seconds between repeats (default: `after_s`, at least 30).
    #[serde(default)]
    pub every_s: Option<u64>,
}

impl StepConfig {
    pub fn repeat_interval_s(&self) -> u64 {
        self.every_s.unwrap_or(self.after_s.max(30))
    }
}

/// Chooses a ladder. Rules are tried in order; the first whose every given key matches wins.
/// Without a matching rule a real incident takes the ladder named `default` (if any); a
/// self-test pages nobody unless a rule with `kind = "test"` matches it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub ladder: String,
    /// The location's building (`BLD`).
    #[serde(default)]
    pub building: Option<String>,
    /// The location's site (`NAM`, the name of the place: campus, site).
    #[serde(default)]
    pub site: Option<String>,
    /// `duress` or `test`.
    #[serde(default)]
    pub kind: Option<RuleKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    Duress,
    Test,
}

/// Why a configuration file was refused; the message names the file and the offending key,
/// channel or ladder.
#[derive(Debug, thiserror::Error)]
#[error("configuration file {path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ReceiverConfig {
    /// Reads, parses and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let error = |message: String| ConfigError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let config = Self::parse(&text).map_err(error)?;
        Ok(config)
    }

    /// Parses and checks a file's text (the error is the message without the file name).
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: ReceiverConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    pub fn channel(&self, name: &str) -> Option<&ChannelConfig> {
        self.channels.iter().find(|c| c.name() == name)
    }

    pub fn ladder(&self, name: &str) -> Option<&LadderConfig> {
        self.ladders.iter().find(|l| l.name == name)
    }

    fn check(&self) -> Result<(), String> {
        self.console
            .allow_nets()
            .map_err(|e| format!("console.allow: {e}"))?;
        self.console.times()?;
        if let Some(r) = &self.retention {
            r.check()?;
        }
        if let Some(url) = &self.public_url {
            check_url("public_url", url)?;
        }
        if let Some(oidc) = &self.oidc {
            oidc.check(self.public_url.as_deref())?;
        }
        let mut names = BTreeSet::new();
        for c in &self.channels {
            let name = c.name();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                return Err(format!(
                    "channel name {name:?}: use letters, digits, '-' and '_'"
                ));
            }
            if !names.insert(name) {
                return Err(format!("channel {name:?} is defined twice"));
            }
            let at = |what: &str| format!("channel {name:?}: {what}");
            match c {
                ChannelConfig::Teams(t) => {
                    check_url(&at("url"), t.url.expose())?;
                    check_ca(&at("ca_cert"), t.ca_cert.as_deref())?;
                }
                ChannelConfig::Webhook(w) => {
                    check_url(&at("url"), w.url.expose())?;
                    webhook_key(w.secret.expose()).map_err(|e| at(&format!("secret: {e}")))?;
                    check_ca(&at("ca_cert"), w.ca_cert.as_deref())?;
                }
                ChannelConfig::Sms(s) => {
                    check_url(&at("url"), s.url.expose())?;
                    if s.to.is_empty() {
                        return Err(at("to: name at least one number"));
                    }
                    check_ca(&at("ca_cert"), s.ca_cert.as_deref())?;
                }
                ChannelConfig::Email(e) => {
                    if e.to.is_empty() {
                        return Err(at("to: name at least one address"));
                    }
                    if e.tls == SmtpTls::None && !is_loopback_host(&e.smtp_host) {
                        return Err(at(
                            "tls = \"none\" is only allowed to a loopback relay (127.0.0.1, ::1, \
                             localhost); use starttls or tls",
                        ));
                    }
                    if e.password.is_some() && e.username.is_none() {
                        return Err(at("password without username"));
                    }
                    check_ca(&at("ca_cert"), e.ca_cert.as_deref())?;
                }
                ChannelConfig::Vms(v) => {
                    if v.requests.is_empty() {
                        return Err(at("requests: name at least one request"));
                    }
                    for r in &v.requests {
                        check_url(&at("requests.url"), r.url.expose())?;
                        if let Some(link) = &r.camera_url {
                            crate::console::cameras::check_template(link)
                                .map_err(|e| at(&format!("requests.camera_url: {e}")))?;
                        }
                        if !matches!(r.method.as_str(), "GET" | "POST" | "PUT" | "PATCH") {
                            return Err(at(&format!(
                                "requests.method {:?}: use GET, POST, PUT or PATCH",
                                r.method
                            )));
                        }
                    }
                    check_ca(&at("ca_cert"), v.ca_cert.as_deref())?;
                }
                ChannelConfig::Dc09(d) => d.check().map_err(|e| at(&e))?,
                ChannelConfig::Cap(c) => {
                    check_url(&at("url"), c.url.expose())?;
                    if c.sender
                        .as_deref()
                        .is_some_and(|s| s.is_empty() || crate::cap::identifier_safe(s) != s)
                    {
                        return Err(at(
                            "sender: no spaces, commas, '<' or '&' (CAP 1.2), and not empty",
                        ));
                    }
                    if c.restriction.is_some() && !c.addresses.is_empty() {
                        return Err(at(
                            "restriction applies to a Restricted alert; with addresses the \
                             alert is Private: give one or the other",
                        ));
                    }
                    check_ca(&at("ca_cert"), c.ca_cert.as_deref())?;
                }
            }
        }
        let mut ladders = BTreeSet::new();
        for l in &self.ladders {
            if !ladders.insert(l.name.as_str()) {
                return Err(format!("ladder {:?} is defined twice", l.name));
            }
            if l.steps.is_empty() {
                return Err(format!("ladder {:?} has no steps", l.name));
            }
            for s in &l.steps {
                if s.channels.is_empty() {
                    return Err(format!("ladder {:?}: a step names no channel", l.name));
                }
                for ch in &s.channels {
                    // A central station treats every `1122` as a new alarm: a dc09 channel
                    // is sent once, at the incident's start.
                    if matches!(self.channel(ch), Some(ChannelConfig::Dc09(_)))
                        && (s.after_s > 0 || s.repeat > 0)
                    {
                        return Err(format!(
                            "ladder {:?}: dc09 channel {ch:?} belongs in a step with after_s = 0 \
                             and no repeat (a central station takes every frame as a new alarm)",
                            l.name
                        ));
                    }
                    if !names.contains(ch.as_str()) {
                        return Err(format!(
                            "ladder {:?} names unknown channel {ch:?} (defined: {})",
                            l.name,
                            list(&names)
                        ));
                    }
                }
                if s.repeat > 100 {
                    return Err(format!("ladder {:?}: repeat is at most 100", l.name));
                }
                if s.repeat > 0 && s.repeat_interval_s() == 0 {
                    return Err(format!("ladder {:?}: every_s must be > 0", l.name));
                }
            }
        }
        if let Some(sup) = &self.supervision {
            if sup.channels.is_empty() {
                return Err("supervision: name at least one channel".into());
            }
            for ch in &sup.channels {
                if matches!(self.channel(ch), Some(ChannelConfig::Dc09(_))) {
                    return Err(format!(
                        "supervision: {ch:?} is a dc09 channel, which carries incidents and \
                         self-tests only (the central station supervises the link with NULL \
                         messages)"
                    ));
                }
                if !names.contains(ch.as_str()) {
                    return Err(format!(
                        "supervision names unknown channel {ch:?} (defined: {})",
                        list(&names)
                    ));
                }
            }
            if sup.interval_s == Some(0) || sup.offline_after_s == Some(0) {
                return Err("supervision: interval_s and offline_after_s must be > 0".into());
            }
        }
        let schedules = crate::notify::schedule::Schedules::from_config(&self.schedules)?;
        if let Some(sup) = &self.supervision {
            let named = sup
                .schedule
                .iter()
                .chain(sup.rules.iter().map(|r| &r.schedule));
            for name in named {
                if !schedules.knows(name) {
                    return Err(format!(
                        "supervision names unknown schedule {name:?} (defined: {})",
                        schedules.names()
                    ));
                }
            }
        } else if !self.schedules.is_empty() {
            return Err("schedules are defined but there is no [supervision] to use them".into());
        }
        let mut sinks = BTreeSet::new();
        for sink in &self.siem {
            let name = sink.name();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                return Err(format!(
                    "siem name {name:?}: use letters, digits, '-' and '_'"
                ));
            }
            if !sinks.insert(name) {
                return Err(format!("siem {name:?} is defined twice"));
            }
            let at = |what: &str| format!("siem {name:?}: {what}");
            match sink {
                SiemConfig::Syslog(s) => {
                    let port = s.address.rsplit_once(':').map(|(_, p)| p);
                    if s.host().is_empty() || port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                        return Err(at("address: use host:port (e.g. siem.example.edu:6514)"));
                    }
                    if !s.tls && !is_loopback_host(s.host()) {
                        return Err(at(
                            "plain TCP (tls = false) is only allowed to a loopback relay \
                             (127.0.0.1, ::1, localhost); set tls = true",
                        ));
                    }
                    if !s.tls && (s.ca_cert.is_some() || s.server_name.is_some()) {
                        return Err(at("ca_cert and server_name need tls = true"));
                    }
                    check_ca(&at("ca_cert"), s.ca_cert.as_deref())?;
                }
                SiemConfig::Jsonl(j) => {
                    if j.path.as_os_str().is_empty() {
                        return Err(at("path is empty"));
                    }
                }
            }
        }
        for r in &self.rules {
            if !ladders.contains(r.ladder.as_str()) {
                return Err(format!(
                    "a rule names unknown ladder {:?} (defined: {})",
                    r.ladder,
                    list(&ladders)
                ));
            }
        }
        Ok(())
    }
}

/// "default: 0 s → a, b; 90 s → c (×3, every 90 s)", for the admin page.
pub fn describe_ladder(l: &LadderConfig) -> String {
    let steps: Vec<String> = l
        .steps
        .iter()
        .map(|s| {
            let repeat = if s.repeat > 0 {
                format!(" (×{}, every {} s)", s.repeat + 1, s.repeat_interval_s())
            } else {
                String::new()
            };
            format!("{} s → {}{repeat}", s.after_s, s.channels.join(", "))
        })
        .collect();
    format!("{}: {}", l.name, steps.join("; "))
}

fn list(names: &BTreeSet<&str>) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.iter().copied().collect::<Vec<_>>().join(", ")
    }
}

/// `whsec_<base64>` → the HMAC key.
pub fn webhook_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or("must start with whsec_")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "is not whsec_ followed by base64".to_string())?;
    if key.len() < 16 {
        return Err("the key must be at least 16 bytes".into());
    }
    Ok(key)
}

/// `[oidc]`: single sign-on to the console with an OpenID Connect provider (docs/console.md,
/// "Single sign-on"). The key names of the first six are the issue's contract.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL; discovery reads `ISSUER/.well-known/openid-configuration`.
    /// `https://`, or `http://` on a loopback address (a local test provider).
    pub issuer: String,
    pub client_id: String,
    /// The client secret, in the file itself …
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// … or in a file of its own (read when the receiver starts; surrounding whitespace
    /// ignored). Exactly one of the two.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The claim that carries the role: a string or an array of strings (e.g. `groups`).
    pub role_claim: String,
    /// A user with one of these values in `role_claim` is an officer …
    #[serde(default)]
    pub officer_values: Vec<String>,
    /// … and with one of these an admin (admin wins when both match).
    #[serde(default)]
    pub admin_values: Vec<String>,
    /// The claim that names the console account (default `preferred_username`).
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// `true` (the default): the first SSO sign-in creates the account. `false`: only accounts
    /// an admin created beforehand as SSO accounts (`user add --sso`) may sign in.
    #[serde(default = "default_provision")]
    pub provision: bool,
    /// Where the provider sends the browser back (register it at the provider). Default:
    /// `public_url` + `/login/oidc/callback`; one of the two is required.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// The scopes asked for (`openid` is always asked for). Default: `profile`, `email`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// A PEM file with the CA of a provider whose certificate is not in the OS trust store.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

fn default_username_claim() -> String {
    "preferred_username".to_owned()
}

const fn default_provision() -> bool {
    true
}

fn default_scopes() -> Vec<String> {
    vec!["profile".to_owned(), "email".to_owned()]
}

/// The path of the console's OIDC callback (`redirect_url` defaults to `public_url` + this).
pub const OIDC_CALLBACK_PATH: &str = "/login/oidc/callback";

impl OidcConfig {
    fn check(&self, public_url: Option<&str>) -> Result<(), String> {
        check_url("oidc.issuer", &self.issuer)?;
        if self.client_id.trim().is_empty() {
            return Err("oidc.client_id must not be empty".into());
        }
        match (&self.client_secret, &self.client_secret_file) {
            (Some(_), Some(_)) => {
                return Err("oidc: give client_secret or client_secret_file, not both".into());
            }
            (None, None) => {
                return Err("oidc: client_secret or client_secret_file is required".into());
            }
            (Some(s), None) if s.expose().trim().is_empty() => {
                return Err("oidc.client_secret must not be empty".into());
            }
            _ => {}
        }
        if self.role_claim.trim().is_empty() {
            return Err("oidc.role_claim must not be empty".into());
        }
        if self.username_claim.trim().is_empty() {
            return Err("oidc.username_claim must not be empty".into());
        }
        if self.officer_values.is_empty() && self.admin_values.is_empty() {
            return Err(
                "oidc: officer_values and admin_values are both empty: nobody could sign in".into(),
            );
        }
        if self.scopes.iter().any(|s| {
            s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
        }) {
            return Err("oidc.scopes: a scope is a non-empty word without spaces or quotes".into());
        }
        let redirect = self.redirect_url(public_url).ok_or_else(|| {
            "oidc: set redirect_url (or public_url, from which it is derived)".to_owned()
        })?;
        check_url("oidc.redirect_url", &redirect)?;
        check_ca("oidc.ca_cert", self.ca_cert.as_deref())?;
        Ok(())
    }

    /// The redirect URL: `redirect_url`, else `public_url` + [`OIDC_CALLBACK_PATH`].
    pub fn redirect_url(&self, public_url: Option<&str>) -> Option<String> {
        self.redirect_url.clone().or_else(|| {
            public_url.map(|u| format!("{}{OIDC_CALLBACK_PATH}", u.trim_end_matches('/')))
        })
    }

    /// The client secret: the file's (read now) or `client_secret`.
    pub fn secret(&self) -> Result<Secret, String> {
        match (&self.client_secret, &self.client_secret_file) {
            (Some(s), None) => Ok(s.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("oidc.client_secret_file {}: {e}", path.display()))?;
                let secret = text.trim();
                if secret.is_empty() {
                    return Err(format!(
                        "oidc.client_secret_file {} is empty",
                        path.display()
                    ));
                }
                Ok(Secret::new(secret))
            }
            _ => Err("oidc: give exactly one of client_secret and client_secret_file".into()),
        }
    }
}

/// `localhost`, or an IP literal (IPv6 in brackets or not) in 127.0.0.0/8 or ::1.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The URL rule: `https://`, or `http://` to a loopback address. The message never shows the
/// URL (it may carry a key).
pub fn check_url(what: &str, url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{what}: not a valid URL ({e})"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if parsed.host_str().is_some_and(is_loopback_host) => {}
        "http" => {
            return Err(format!(
                "{what}: http:// is only allowed to a loopback address; use https://"
            ));
        }
        other => return Err(format!("{what}: scheme {other}: use https://")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{what}: the URL has no host"));
    }
    Ok(())
}

fn check_ca(what: &str, path: Option<&Path>) -> Result<(), String> {
    if let Some(p) = path {
        crate::notify::http::read_ca(p).map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(())
}

/// Scheme, host and port only: what may be shown of a channel URL (its path and query often
/// carry the key, e.g. a Teams Workflows `sig=`).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}{port}/… (path redacted)",
                u.scheme(),
                u.host_str().unwrap_or("")
            )
        }
        Err(_) => "(invalid URL)".into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn console_listen_and_allow() {
        let c = ReceiverConfig::parse(
            "[console]\nlisten = \"0.0.0.0:9443\"\nallow = [\"10.20.0.0/16\", \"10.1.2.3\", \"2001:db8::/32\"]\n",
        )
        .unwrap();
        assert_eq!(c.console.listen, Some("0.0.0.0:9443".parse().unwrap()));
        let nets = c.console.allow_nets().unwrap();
        assert_eq!(nets.len(), 3);
        assert!(nets[1].contains(&"10.1.2.3".parse::<IpAddr>().unwrap()));
        assert_eq!(nets[1].prefix_len(), 32);
        for bad in [
            "allow = [\"10.0.0.0/33\"]",
            "allow = [\"campus\"]",
            "listen = \"x\"",
            "allowed = []",
        ] {
            let e = ReceiverConfig::parse(&format!("[console]\n{bad}\n")).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        let e = ReceiverConfig::parse("[console]\nallow = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(
            e.contains("console.allow") && e.contains("10.0.0.0/33"),
            "{e}"
        );
        assert!(ReceiverConfig::parse("").unwrap().console.listen.is_none());
    }

    const EXAMPLE: &str = r#"
[[channels]]
name = "security-teams"
kind = "teams"
url = "https://prod.example.logic.azure.com/workflows/abc?sig=SECRETSIG"
[[channels]]
name = "ops-webhook"
kind = "webhook"
url = "https://ops.example.edu/hooks/duress"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[[channels]]
name = "duty-mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = 2525
tls = "none"
from = "duress@example.edu"
to = ["security@example.edu"]
[[ladders]]
name = "default"
steps = [ { after_s = 0, channels = ["security-teams", "ops-webhook", "duty-mail"] },
          { after_s = 90, channels = ["duty-mail"], repeat = 2 } ]
"#;

    #[test]
    fn siem_sinks_parse_and_plain_tcp_is_loopback_only() {
        let c = ReceiverConfig::parse(
            r#"
[[siem]]
name = "soc"
kind = "syslog"
address = "siem.example.edu:6514"
tls = true
[[siem]]
name = "relay"
kind = "syslog"
address = "[::1]:514"
[[siem]]
name = "file"
kind = "jsonl"
path = "/var/log/duress/siem.jsonl"
"#,
        )
        .unwrap();
        assert_eq!(c.siem.len(), 3);
        let SiemConfig::Syslog(relay) = &c.siem[1] else {
            panic!("{:?}", c.siem[1]);
        };
        assert_eq!(relay.host(), "::1");
        for (text, needle) in [
            (
                "[[siem]]\nname = \"x\"\nkind = \"syslog\"\naddress = \"siem.example.edu:514\"",
                "only allowed to a loopback relay",
            ),
            (
                "[[siem]]\nname = \"x\"\nkind = \"syslog\"\naddress = \"siem.example.edu\"\ntls = true",
                "host:port",
            ),
            (
                "[[siem]]\nname = \"x\"\nkind = \"jsonl\"\npath = \"/tmp/a\"\nformat = \"cef\"",
                "unknown field",
            ),
            (
                "[[siem]]\nname = \"x\"\nkind = \"jsonl\"\npath = \"/a\"\n[[siem]]\nname = \"x\"\nkind = \"jsonl\"\npath = \"/b\"",
                "defined twice",
            ),
        ] {
            let e = ReceiverConfig::parse(text).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn the_issue_example_parses() {
        let c = ReceiverConfig::parse(EXAMPLE).unwrap();
        assert_eq!(c.channels.len(), 3);
        assert_eq!(c.ladders[0].steps[1].repeat, 2);
        let debug = format!("{c:?}");
        assert!(!debug.contains("SECRETSIG"), "{debug}");
        assert!(!debug.contains("MfKQ9r8G"), "{debug}");
        assert!(!c.channels[0].redacted_target().contains("SECRETSIG"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = ReceiverConfig::parse(&format!("{EXAMPLE}\nbogus_key = 1\n")).unwrap_err();
        assert!(e.contains("bogus_key"), "{e}");
        let e = ReceiverConfig::parse(&EXAMPLE.replace("smtp_port", "smtp_prot")).unwrap_err();
        assert!(e.contains("smtp_prot"), "{e}");
        let e = ReceiverConfig::parse(&EXAMPLE.replace("after_s = 90", "after = 90")).unwrap_err();
        assert!(e.contains("after"), "{e}");
        let e = ReceiverConfig::parse(&EXAMPLE.replace("\"teams\"", "\"pager\"")).unwrap_err();
        assert!(e.contains("pager"), "{e}");
    }

    #[test]
    fn unknown_channels_and_ladders_are_refused() {
        let e = ReceiverConfig::parse(
            &EXAMPLE.replace("[\"duty-mail\"], repeat", "[\"nope\"], repeat"),
        )
        .unwrap_err();
        assert!(e.contains("unknown channel \"nope\""), "{e}");
        let e = ReceiverConfig::parse(&format!("{EXAMPLE}\n[[rules]]\nladder = \"night\"\n"))
            .unwrap_err();
        assert!(e.contains("unknown ladder \"night\""), "{e}");
    }

    #[test]
    fn the_url_rule() {
        assert!(check_url("u", "https://example.edu/x").is_ok());
        assert!(check_url("u", "http://127.0.0.1:9/x").is_ok());
        assert!(check_url("u", "http://[::1]:9/x").is_ok());
        assert!(check_url("u", "http://localhost/x").is_ok());
        let e = check_url("u", "http://example.edu/x?key=SECRET").unwrap_err();
        assert!(e.contains("loopback") && !e.contains("SECRET"), "{e}");
        assert!(check_url("u", "ftp://example.edu/").is_err());
        let e = ReceiverConfig::parse(
            &EXAMPLE.replace("https://ops.example.edu", "http://ops.example.edu"),
        )
        .unwrap_err();
        assert!(e.contains("ops-webhook") && e.contains("loopback"), "{e}");
        let e = ReceiverConfig::parse(&EXAMPLE.replace(
            "smtp_host = \"127.0.0.1\"",
            "smtp_host = \"mail.example.edu\"",
        ))
        .unwrap_err();
        assert!(e.contains("duty-mail"), "{e}");
    }

    #[test]
    fn supervision_names_only_known_schedules() {
        let base = format!(
            "{EXAMPLE}\n[[schedules]]\nname = \"office\"\ndays = [\"weekdays\"]\nfrom = \"07:00\"\n\
             to = \"19:00\"\ntimezone = \"America/Chicago\"\n[supervision]\n\
             channels = [\"duty-mail\"]\nschedule = \"office\"\n"
        );
        assert!(ReceiverConfig::parse(&base).is_ok());
        let e = ReceiverConfig::parse(&format!(
            "{base}[[supervision.rules]]\nschedule = \"nights\"\nbuilding = \"A\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("unknown schedule \"nights\""), "{e}");
        let e =
            ReceiverConfig::parse(&base.replace("America/Chicago", "America/Nowhere")).unwrap_err();
        assert!(e.contains("America/Nowhere"), "{e}");
        let e = ReceiverConfig::parse(&format!(
            "{base}[[supervision.rules]]\nschedule = \"office\"\nroom = \"1\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("room"), "{e}");
    }

    #[test]
    fn webhook_secrets_must_be_whsec() {
        assert!(webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(webhook_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(webhook_key("whsec_!!!").is_err());
    }

    const OIDC: &str = "[oidc]\nissuer = \"https://idp.example.edu/realms/campus\"\nclient_id = \"duress-console\"\nrole_claim = \"groups\"\nofficer_values = [\"security-officers\"]\nadmin_values = [\"security-admins\"]\n";

    fn oidc(extra: &str, public_url: bool) -> Result<ReceiverConfig, String> {
        let head = if public_url {
            "public_url = \"https://duress.example.edu\"\n"
        } else {
            ""
        };
        ReceiverConfig::parse(&format!("{head}{OIDC}{extra}"))
    }

    #[test]
    fn oidc_contract_keys_parse_with_defaults_and_a_derived_redirect() {
        let c = oidc("client_secret = \"s3cret-value\"\n", true).unwrap();
        let o = c.oidc.as_ref().unwrap();
        assert_eq!(o.client_id, "duress-console");
        assert_eq!(o.role_claim, "groups");
        assert_eq!(o.officer_values, ["security-officers"]);
        assert_eq!(o.admin_values, ["security-admins"]);
        assert_eq!(o.username_claim, "preferred_username");
        assert!(o.provision);
        assert_eq!(o.scopes, ["profile", "email"]);
        assert_eq!(
            o.redirect_url(c.public_url.as_deref()).as_deref(),
            Some("https://duress.example.edu/login/oidc/callback")
        );
        assert_eq!(o.secret().unwrap().expose(), "s3cret-value");
        // The secret never shows in Debug output (logs, panics).
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret-value"), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
        // Without public_url the redirect URL must be given.
        let err = oidc("client_secret = \"x\"\n", false).unwrap_err();
        assert!(err.contains("redirect_url"), "{err}");
        let c = oidc(
            "client_secret = \"x\"\nredirect_url = \"https://10.1.2.3:8443/login/oidc/callback\"\nprovision = false\nusername_claim = \"email\"\nscopes = [\"profile\"]\n",
            false,
        )
        .unwrap();
        let o = c.oidc.unwrap();
        assert!(!o.provision);
        assert_eq!(o.username_claim, "email");
        assert_eq!(o.scopes, ["profile"]);
    }

    #[test]
    fn oidc_issuer_must_be_https_except_http_on_loopback() {
        let with_issuer = |issuer: &str| {
            ReceiverConfig::parse(&format!(
                "public_url = \"https://duress.example.edu\"\n[oidc]\nissuer = \"{issuer}\"\nclient_id = \"c\"\nclient_secret = \"s\"\nrole_claim = \"groups\"\nofficer_values = [\"o\"]\n"
            ))
        };
        for ok in [
            "https://idp.example.edu/realms/campus",
            "http://127.0.0.1:9000",
            "http://[::1]:9000/oidc",
            "http://localhost:8080/realms/test",
        ] {
            assert!(with_issuer(ok).is_ok(), "{ok}: {:?}", with_issuer(ok).err());
        }
        for bad in [
            "http://idp.example.edu/realms/campus",
            "http://10.0.0.5:8080",
            "http://127.0.0.1.example.com",
            "ftp://idp.example.edu",
            "idp.example.edu",
        ] {
            let err = with_issuer(bad).unwrap_err();
            assert!(err.contains("oidc.issuer"), "{bad}: {err}");
        }
    }

    #[test]
    fn oidc_secret_or_secret_file_never_both_and_the_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("client-secret");
        std::fs::write(&file, "from-the-file\n").unwrap();
        let path = file.display().to_string().replace('\\', "/");
        let both = oidc(
            &format!("client_secret = \"a\"\nclient_secret_file = \"{path}\"\n"),
            true,
        )
        .unwrap_err();
        assert!(both.contains("not both"), "{both}");
        let neither = oidc("", true).unwrap_err();
        assert!(neither.contains("client_secret"), "{neither}");
        let c = oidc(&format!("client_secret_file = \"{path}\"\n"), true).unwrap();
        assert_eq!(c.oidc.unwrap().secret().unwrap().expose(), "from-the-file");
        let missing = dir.path().join("nope").display().to_string();
        let c = oidc(&format!("client_secret_file = \"{missing}\"\n"), true).unwrap();
        assert!(
            c.oidc
                .unwrap()
                .secret()
                .unwrap_err()
                .contains("client_secret_file")
        );
        std::fs::write(&file, "  \n").unwrap();
        let c = oidc(&format!("client_secret_file = \"{path}\"\n"), true).unwrap();
        assert!(c.oidc.unwrap().secret().unwrap_err().contains("empty"));
        // Unknown keys are refused like everywhere else in the file.
        let typo = oidc("client_secret = \"a\"\nrole_claims = \"groups\"\n", true).unwrap_err();
        assert!(typo.contains("role_claims"), "{typo}");
        let nobody = ReceiverConfig::parse(
            "public_url = \"https://d.example.edu\"\n[oidc]\nissuer = \"https://i.example.edu\"\nclient_id = \"c\"\nclient_secret = \"s\"\nrole_claim = \"groups\"\n",
        )
        .unwrap_err();
        assert!(nobody.contains("nobody"), "{nobody}");
    }
}
