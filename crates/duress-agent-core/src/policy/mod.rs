//! The agent's policy: one typed schema, read from a TOML file (`--policy`, dev and tests) or
//! from the OS's managed sources ([`sources`]: files on Linux, the registry on Windows, managed
//! preferences on macOS).
//!
//! ```toml
//! [[receivers]]                    # ordered; the first reachable one wins
//! url = "https://127.0.0.1:8443"
//! ca_cert = "/path/to/ca.pem"      # optional extra trust anchor (PEM), relative to this file
//! ack_key = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"  # acknowledgement key (JWK or thumbprint)
//! [enrollment]
//! token = "…"                      # used once, at the first start that finds no device key
//! [location]                       # RFC 5139 names: label country A1..A6 RD HNO PC BLD FLR ...
//! label = "Bldg A, Floor 2, Room 214"
//! [hotkey]
//! chords = ["Ctrl+Alt+Shift+D"]    # F13–F24 allowed (USB panic buttons, foot pedals)
//! repeat = 1                       # accidental-press guard: presses needed within window_ms
//! window_ms = 1500
//! hold_ms = 0                      # or: the chord must be held this long (0 = off)
//! [heartbeat]
//! interval_s = 60                  # 10..=3600
//! [tray]
//! hidden_button_label = "Request assistance"
//! hotspot = "off"                  # off | top-left | top-right | bottom-left | bottom-right
//! covert_ack = false
//! allow_user_location = false
//! allow_quit = false
//! [help]
//! emergency_number = "911"
//! security_phone = "651-793-1717"
//! security_email = "security@example.edu"
//! teams_url = "https://teams.microsoft.com/l/channel/…"
//! text = "…"                       # extra guidance shown in Help
//! [cancel]                        # "I'm OK — cancel": annotates the open incident, never closes it
//! label = "I'm OK — cancel"
//! chords = []                      # optional cancel chord(s), e.g. ["Ctrl+Alt+Shift+O"]
//! pin_sha256 = ""                  # SHA-256 (hex) of the cancel PIN; empty = no PIN asked
//! duress_pin_sha256 = ""           # SHA-256 (hex) of the duress PIN: the cancel is flagged
//! [self_test]                     # silent scheduled self-test (kind test, never an incident)
//! every_days = 0                   # 0 = off; e.g. 7 = weekly
//! window = "09:00-17:00"           # local time; each station picks its own random minute in it
//! [network]
//! proxy = "http://proxy.example.edu:8080"   # explicit proxy (PAC/WPAD is not read)
//! ```
//!
//! Unknown keys are an error that names the key (a typo such as `ROOOM` must not silently drop
//! the room from every alarm). [`Location`] itself tolerates unknown fields on the wire, so the
//! check is done here with `serde_ignored`.
//!
//! Path resolution: `--policy`, else `DURESS_AGENT_POLICY`, else the OS sources, merged
//! ([`sources::load_os`]; [`os_default::os_default_path`] names the primary one).

mod os_default;
pub mod sources;

use std::path::{Path, PathBuf};

use duress_core::Location;
use reqwest::Url;
use serde::{Deserialize, Deserializer};

use crate::{Error, Result};

pub use os_default::os_default_path;

/// Environment variable naming the policy file.
pub const ENV_POLICY: &str = "DURESS_AGENT_POLICY";
/// The chord used when the policy names none.
pub const DEFAULT_CHORD: &str = "Ctrl+Alt+Shift+D";
/// Heartbeat interval when the policy names none, in seconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_S: u64 = 60;
/// Shortest heartbeat interval a policy may set, in seconds.
pub const MIN_HEARTBEAT_INTERVAL_S: u64 = 10;
/// Longest heartbeat interval a policy may set, in seconds.
pub const MAX_HEARTBEAT_INTERVAL_S: u64 = 3600;

/// A secret string (the enrollment token). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself: only for putting it where it must go (the signed enrollment).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// One receiver, in policy order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReceiverConfig {
    /// Base URL; must be https.
    #[serde(deserialize_with = "de_https_url")]
    pub url: Url,
    /// Optional extra trust anchor (PEM) for this receiver, on top of the OS trust store.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Optional pin: SHA-256 of the receiver's certificate or of one certificate of its chain
    /// (hex, colons optional), as the MSI property `RECEIVER_CA_SHA256` writes it.
    #[serde(default)]
    pub ca_sha256: Option<String>,
    /// The receiver's acknowledgement key: its public JWK as JSON, or its RFC 7638
    /// thumbprint (`duress-receiver ack-key show` prints both); several separated by `;`
    /// during a key rotation. With a key, an event is marked delivered only when the answer's
    /// signature verifies against it (docs/protocol.md §5.4); without, acknowledgements are
    /// not verified (and the status says so). MSI property `RECEIVER_ACK_KEY`.
    #[serde(default)]
    pub ack_key: Option<String>,
}

impl ReceiverConfig {
    /// A receiver from a URL string, refusing anything but https.
    pub fn new(url: &str, ca_cert: Option<PathBuf>) -> Result<Self> {
        let url = parse_https_url(url).map_err(|message| Error::Policy {
            origin: "receiver".into(),
            message,
        })?;
        Ok(ReceiverConfig {
            url,
            ca_cert,
            ca_sha256: None,
            ack_key: None,
        })
    }

    /// The acknowledgement keys the policy names (empty: acknowledgements are not verified).
    /// Already checked by [`Policy::validate`]; a policy built in code that names a bad key
    /// gets an error here.
    pub fn trusted_ack_keys(&self) -> std::result::Result<Vec<duress_core::TrustedAckKey>, String> {
        match self.ack_key.as_deref() {
            None => Ok(Vec::new()),
            Some(text) => duress_core::TrustedAckKey::parse_list(text),
        }
    }
}

/// `[enrollment]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct EnrollmentPolicy {
    /// The enrollment token IT handed out; used once.
    #[serde(default)]
    pub token: Option<Secret>,
}

/// `[hotkey]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HotkeyPolicy {
    /// Chords that trigger a duress event (parsed by the tray, not here).
    #[serde(default = "default_chords")]
    pub chords: Vec<String>,
    /// Accidental-press guard: this many presses within `window_ms` trigger (1 = every press).
    #[serde(default = "default_repeat")]
    pub repeat: u32,
    /// The window for `repeat`, in milliseconds.
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    /// Accidental-press guard: the chord must be held this long, in milliseconds (0 = off).
    #[serde(default)]
    pub hold_ms: u64,
}

impl Default for HotkeyPolicy {
    fn default() -> Self {
        HotkeyPolicy {
            chords: default_chords(),
            repeat: default_repeat(),
            window_ms: default_window_ms(),
            hold_ms: 0,
        }
    }
}

fn default_repeat() -> u32 {
    1
}

fn default_window_ms() -> u64 {
    1500
}

/// Where the optional hotspot window sits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hotspot {
    #[default]
    Off,
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
}

/// `[tray]`: what staff see and may do in the tray menu.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TrayPolicy {
    /// Label of the menu item that silently raises an alarm.
    #[serde(default = "default_hidden_button_label")]
    pub hidden_button_label: String,
    /// A tiny invisible corner window that raises an alarm on double-click (off by default).
    #[serde(default)]
    pub hotspot: Hotspot,
    /// Once an officer claims the incident, one agreed detail of the status line changes.
    #[serde(default)]
    pub covert_ack: bool,
    /// Hot desks: staff may set their own location.
    #[serde(default)]
    pub allow_user_location: bool,
    /// Show "Quit" in the menu.
    #[serde(default)]
    pub allow_quit: bool,
}

impl Default for TrayPolicy {
    fn default() -> Self {
        TrayPolicy {
            hidden_button_label: default_hidden_button_label(),
            hotspot: Hotspot::Off,
            covert_ack: false,
            allow_user_location: false,
            allow_quit: false,
        }
    }
}

fn default_hidden_button_label() -> String {
    "Request assistance".to_owned()
}

/// `[help]`: the other ways to get help, shown in the Help window and the status line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HelpPolicy {
    #[serde(default = "default_emergency_number")]
    pub emergency_number: String,
    #[serde(default)]
    pub security_phone: Option<String>,
    #[serde(default)]
    pub security_email: Option<String>,
    /// Link to the security Teams channel.
    #[serde(default)]
    pub teams_url: Option<String>,
    /// Extra guidance in IT's words.
    #[serde(default)]
    pub text: Option<String>,
}

impl Default for HelpPolicy {
    fn default() -> Self {
        HelpPolicy {
            emergency_number: default_emergency_number(),
            security_phone: None,
            security_email: None,
            teams_url: None,
            text: None,
        }
    }
}

fn default_emergency_number() -> String {
    "911".to_owned()
}

/// `[cancel]`: the duress-safe cancel. A cancel is an event of kind `cancel` that annotates the
/// open incident ("staff pressed cancel"); it never closes or silences it — officers still
/// respond and follow up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CancelPolicy {
    /// Label of the tray item that sends a cancel.
    #[serde(default = "default_cancel_label")]
    pub label: String,
    /// Optional chords that send a cancel (none by default; X11, Windows and macOS grabs —
    /// not the Wayland portal). A chord cannot take a PIN: with a PIN policy its cancel is sent
    /// as one with a wrong PIN (flagged on the console).
    #[serde(default)]
    pub chords: Vec<String>,
    /// SHA-256 (hex) of the cancel PIN. Set: a cancel asks for a PIN. Empty or absent: no PIN.
    #[serde(default)]
    pub pin_sha256: Option<String>,
    /// SHA-256 (hex) of the duress PIN: a cancel with it (or with any wrong PIN) is sent like any
    /// other and flagged on the console as "cancel with duress PIN".
    #[serde(default)]
    pub duress_pin_sha256: Option<String>,
}

impl Default for CancelPolicy {
    fn default() -> Self {
        CancelPolicy {
            label: default_cancel_label(),
            chords: Vec::new(),
            pin_sha256: None,
            duress_pin_sha256: None,
        }
    }
}

fn default_cancel_label() -> String {
    "I'm OK — cancel".to_owned()
}

impl CancelPolicy {
    /// True when a cancel must ask for a PIN.
    pub fn requires_pin(&self) -> bool {
        self.pin_sha256
            .as_deref()
            .is_some_and(|h| !h.trim().is_empty())
    }

    /// How `pin` answers the policy: `None` when no PIN is asked; otherwise `Ok`, `Duress`, or
    /// `Wrong` (anything else, an empty PIN included). Never an error: a cancel is always sent.
    pub fn check_pin(&self, pin: &str) -> Option<duress_core::PinCheck> {
        use duress_core::PinCheck;
        use sha2::Digest as _;
        if !self.requires_pin() {
            return None;
        }
        let digest: String = sha2::Sha256::digest(pin.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let same = |h: &Option<String>| h.as_deref().is_some_and(|h| normalise_sha256(h) == digest);
        Some(if same(&self.pin_sha256) {
            PinCheck::Ok
        } else if same(&self.duress_pin_sha256) {
            PinCheck::Duress
        } else {
            PinCheck::Wrong
        })
    }
}

/// Lower-case hex without colons or spaces.
fn normalise_sha256(h: &str) -> String {
    h.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// `[self_test]`: a silent self-test the agent sends on its own, so every station is proven
/// end to end regularly without anyone pressing anything.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SelfTestPolicy {
    /// Days between scheduled self-tests; 0 = none (the default).
    #[serde(default)]
    pub every_days: u32,
    /// `HH:MM-HH:MM`, local time: each station picks a random minute in it (so a campus does
    /// not test all at once) and tests at that minute.
    #[serde(default = "default_self_test_window")]
    pub window: String,
}

impl Default for SelfTestPolicy {
    fn default() -> Self {
        SelfTestPolicy {
            every_days: 0,
            window: default_self_test_window(),
        }
    }
}

fn default_self_test_window() -> String {
    "09:00-17:00".to_owned()
}

impl SelfTestPolicy {
    /// The window as minutes after local midnight, `[start, end)`.
    pub fn window_minutes(&self) -> std::result::Result<(u32, u32), String> {
        let bad = || {
            format!(
                "self_test.window must be HH:MM-HH:MM, got {:?}",
                self.window
            )
        };
        let (a, b) = self.window.split_once('-').ok_or_else(bad)?;
        let minutes = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if end <= start {
            return Err(format!(
                "self_test.window must end after it starts, got {:?}",
                self.window
            ));
        }
        Ok((start, end))
    }
}

/// `[network]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NetworkPolicy {
    /// Explicit HTTP(S) proxy for reaching receivers (PAC/WPAD is not read).
    #[serde(default)]
    pub proxy: Option<String>,
}

fn default_chords() -> Vec<String> {
    vec![DEFAULT_CHORD.to_owned()]
}

/// `[heartbeat]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct HeartbeatPolicy {
    /// Seconds between heartbeats (10..=3600).
    #[serde(default = "default_interval")]
    pub interval_s: u64,
}

impl Default for HeartbeatPolicy {
    fn default() -> Self {
        HeartbeatPolicy {
            interval_s: DEFAULT_HEARTBEAT_INTERVAL_S,
        }
    }
}

fn default_interval() -> u64 {
    DEFAULT_HEARTBEAT_INTERVAL_S
}

/// The whole policy. Build one in code with `Policy { receivers: vec![..], ..Default::default() }`
/// (tests) or load it with [`Policy::load`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Policy {
    /// Ordered receivers: the first reachable one wins.
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
    #[serde(default)]
    pub enrollment: EnrollmentPolicy,
    /// The station's location, put in every event and heartbeat.
    #[serde(default)]
    pub location: Location,
    #[serde(default)]
    pub hotkey: HotkeyPolicy,
    #[serde(default)]
    pub heartbeat: HeartbeatPolicy,
    #[serde(default)]
    pub tray: TrayPolicy,
    #[serde(default)]
    pub help: HelpPolicy,
    #[serde(default)]
    pub cancel: CancelPolicy,
    #[serde(default)]
    pub self_test: SelfTestPolicy,
    #[serde(default)]
    pub network: NetworkPolicy,
}

impl Policy {
    /// Reads, parses and validates a policy file. Relative `ca_cert` paths are resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Policy> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Policy {
            origin: origin.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let mut policy = Policy::from_toml_str(&text, &origin)?;
        if let Some(dir) = path.parent() {
            for r in &mut policy.receivers {
                if let Some(ca) = &r.ca_cert
                    && ca.is_relative()
                {
                    r.ca_cert = Some(dir.join(ca));
                }
            }
        }
        Ok(policy)
    }

    /// Parses and validates policy text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Policy> {
        let err = |message: String| Error::Policy {
            origin: origin.to_owned(),
            message,
        };
        let de = toml::Deserializer::parse(text).map_err(|e| err(e.to_string()))?;
        let mut unknown = Vec::new();
        let policy: Policy = serde_ignored::deserialize(de, |path| {
            unknown.push(path.to_string());
        })
        .map_err(|e| err(e.to_string()))?;
        if !unknown.is_empty() {
            let names: Vec<String> = unknown.iter().map(|k| format!("`{k}`")).collect();
            return Err(err(format!(
                "unknown key{} {}",
                if names.len() > 1 { "s" } else { "" },
                names.join(", ")
            )));
        }
        policy.validate().map_err(err)?;
        Ok(policy)
    }

    /// Checks what serde cannot: https only, interval bounds, location limits, chords.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (i, r) in self.receivers.iter().enumerate() {
            if r.url.scheme() != "https" {
                return Err(format!("receivers[{i}].url must be https, got {}", r.url));
            }
        }
        let iv = self.heartbeat.interval_s;
        if !(MIN_HEARTBEAT_INTERVAL_S..=MAX_HEARTBEAT_INTERVAL_S).contains(&iv) {
            return Err(format!(
                "heartbeat.interval_s must be between {MIN_HEARTBEAT_INTERVAL_S} and \
                 {MAX_HEARTBEAT_INTERVAL_S}, got {iv}"
            ));
        }
        if self.hotkey.chords.is_empty() {
            return Err("hotkey.chords is empty: a station needs at least one chord".into());
        }
        if self.hotkey.chords.iter().any(|c| c.trim().is_empty()) {
            return Err("hotkey.chords contains an empty chord".into());
        }
        // Heartbeats report the registered chords, and the receiver refuses a list longer
        // than this: refused here, at deployment, rather than as a station that looks offline.
        if self.hotkey.chords.len() > duress_core::messages::MAX_CHORDS {
            return Err(format!(
                "hotkey.chords lists more than {} chords",
                duress_core::messages::MAX_CHORDS
            ));
        }
        if !(1..=10).contains(&self.hotkey.repeat) {
            return Err(format!(
                "hotkey.repeat must be 1..=10, got {}",
                self.hotkey.repeat
            ));
        }
        if !(100..=10_000).contains(&self.hotkey.window_ms) {
            return Err(format!(
                "hotkey.window_ms must be 100..=10000, got {}",
                self.hotkey.window_ms
            ));
        }
        if self.hotkey.hold_ms > 10_000 {
            return Err(format!(
                "hotkey.hold_ms must be at most 10000, got {}",
                self.hotkey.hold_ms
            ));
        }
        if self.self_test.every_days > 366 {
            return Err(format!(
                "self_test.every_days must be 0..=366, got {}",
                self.self_test.every_days
            ));
        }
        self.self_test.window_minutes()?;
        let cancel = self.cancel.label.trim();
        if cancel.is_empty() || cancel.chars().count() > 64 || cancel.chars().any(char::is_control)
        {
            return Err("cancel.label must be 1..=64 printable characters".into());
        }
        if self.cancel.chords.iter().any(|c| c.trim().is_empty()) {
            return Err("cancel.chords contains an empty chord".into());
        }
        if let Some(c) = self
            .cancel
            .chords
            .iter()
            .find(|c| self.hotkey.chords.contains(c))
        {
            return Err(format!("cancel.chords repeats the alarm chord {c}"));
        }
        for (name, h) in [
            ("pin_sha256", &self.cancel.pin_sha256),
            ("duress_pin_sha256", &self.cancel.duress_pin_sha256),
        ] {
            if let Some(h) = h.as_deref().filter(|h| !h.trim().is_empty())
                && normalise_sha256(h).len() != 64
            {
                return Err(format!(
                    "cancel.{name} must be a SHA-256 in hex (64 digits)"
                ));
            }
        }
        if self
            .cancel
            .duress_pin_sha256
            .as_deref()
            .is_some_and(|h| !h.trim().is_empty())
            && !self.cancel.requires_pin()
        {
            return Err("cancel.duress_pin_sha256 needs cancel.pin_sha256".into());
        }
        let label = self.tray.hidden_button_label.trim();
        if label.is_empty() || label.chars().count() > 64 || label.chars().any(char::is_control) {
            return Err("tray.hidden_button_label must be 1..=64 printable characters".into());
        }
        for (i, r) in self.receivers.iter().enumerate() {
            if let Some(pin) = &r.ca_sha256 {
                let hex: String = pin.chars().filter(|c| *c != ':').collect();
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!(
                        "receivers[{i}].ca_sha256 must be 64 hex digits (colons optional)"
                    ));
                }
            }
        }
        for (i, r) in self.receivers.iter().enumerate() {
            r.trusted_ack_keys()
                .map_err(|e| format!("receivers[{i}].ack_key: {e}"))?;
        }
        if let Some(url) = &self.help.teams_url
            && !url.starts_with("https://")
        {
            return Err("help.teams_url must be an https:// link".into());
        }
        if let Some(proxy) = &self.network.proxy
            && Url::parse(proxy).is_err()
        {
            return Err(format!("network.proxy {proxy:?} is not a URL"));
        }
        self.location.validate()
    }

    /// The receivers, or [`Error::NoReceiver`] for operations that send.
    pub fn require_receivers(&self) -> Result<&[ReceiverConfig]> {
        if self.receivers.is_empty() {
            Err(Error::NoReceiver)
        } else {
            Ok(&self.receivers)
        }
    }
}

/// Where a policy path came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// `--policy F`.
    Flag(PathBuf),
    /// `DURESS_AGENT_POLICY`.
    Env(PathBuf),
    /// The OS default location.
    OsDefault(PathBuf),
    /// The OS policy sources, merged ([`sources`]): `primary` is the machine policy location,
    /// `layers` every layer that was found, lowest precedence first.
    OsSources {
        primary: PathBuf,
        layers: Vec<String>,
    },
}

impl PolicySource {
    pub fn path(&self) -> &Path {
        match self {
            PolicySource::Flag(p) | PolicySource::Env(p) | PolicySource::OsDefault(p) => p,
            PolicySource::OsSources { primary, .. } => primary,
        }
    }
}

/// `--policy`, else `DURESS_AGENT_POLICY`, else the OS default.
pub fn resolve_path(flag: Option<&Path>) -> Result<PolicySource> {
    resolve_path_from(flag, std::env::var_os(ENV_POLICY))
}

/// [`resolve_path`] with the environment passed in (testable).
pub fn resolve_path_from(
    flag: Option<&Path>,
    env: Option<std::ffi::OsString>,
) -> Result<PolicySource> {
    if let Some(p) = flag {
        return Ok(PolicySource::Flag(p.to_owned()));
    }
    if let Some(p) = env.filter(|v| !v.is_empty()) {
        return Ok(PolicySource::Env(PathBuf::from(p)));
    }
    os_default_path().map(PolicySource::OsDefault)
}

/// Loads the policy from where [`resolve_path`] points. A file named explicitly (flag or env)
/// must exist and is the whole policy; otherwise the OS sources are merged
/// ([`sources::load_os`]). No OS source at all yields an empty policy (logged), so `status` and
/// a flag-driven local `enroll` work on a machine IT has not configured yet.
///
/// In a release build a named file is honoured only when a user cannot have written it
/// ([`check_policy_file`]); see [`load_resolved_report`] for why one was ignored.
pub fn load_resolved(flag: Option<&Path>) -> Result<(Policy, PolicySource)> {
    let loaded = load_resolved_report(flag)?;
    Ok((loaded.policy, loaded.source))
}

/// A secret (the enrollment token) from a file — its first line, trimmed — or, for `-`, from
/// standard input: what `--token-file` reads, so the token is never on a command line other
/// users can read.
pub fn read_secret_file(path: &Path) -> Result<Secret> {
    use std::io::Read as _;
    let err = |message: String| Error::Policy {
        origin: path.display().to_string(),
        message,
    };
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| err(format!("cannot read the token from stdin: {e}")))?;
    } else {
        text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    }
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(err("holds no token".into()));
    }
    Ok(Secret::new(token))
}

/// Whether this is a release build: then `--policy` and `DURESS_AGENT_POLICY` are honoured only
/// for a file the user cannot have written ([`check_policy_file`]). A `cfg` rather than a cargo
/// feature on purpose: what ships is a release build, and a feature could be left off by
/// mistake; debug builds (development, the test suites' user-owned temporary policies) keep
/// honouring any file.
pub const RELEASE_BUILD: bool = cfg!(not(debug_assertions));

/// A policy as loaded, with what the status and the heartbeat report about it.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    pub policy: Policy,
    pub source: PolicySource,
    /// Set when `--policy`/`DURESS_AGENT_POLICY` named a file that was ignored, and why.
    pub ignored: Option<String>,
}

/// Where the policy came from and a SHA-256 of it, as the status and each heartbeat report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyReport {
    /// `flag:PATH`, `env:PATH`, `os:LAYER < LAYER…` (or `os:none`).
    pub source: String,
    /// SHA-256 (hex) of the effective policy (see [`policy_sha256`]).
    pub sha256: String,
    /// Why a `--policy`/`DURESS_AGENT_POLICY` file was ignored, if one was.
    pub ignored: Option<String>,
}

impl LoadedPolicy {
    pub fn report(&self) -> PolicyReport {
        let source = match &self.source {
            PolicySource::Flag(p) => format!("flag:{}", p.display()),
            PolicySource::Env(p) => format!("env:{}", p.display()),
            PolicySource::OsDefault(p) => format!("os:{}", p.display()),
            PolicySource::OsSources { layers, .. } if layers.is_empty() => "os:none".to_owned(),
            PolicySource::OsSources { layers, .. } => format!("os:{}", layers.join(" < ")),
        };
        PolicyReport {
            source,
            sha256: policy_sha256(&self.policy),
            ignored: self.ignored.clone(),
        }
    }
}

/// SHA-256 (lower-case hex) of the effective policy, so the receiver can flag stations whose
/// policy differs from the fleet's. Computed over the policy's `Debug` text, in which secrets
/// (the enrollment token) are redacted: stations that differ only in their token hash alike,
/// and nothing secret can be guessed from the hash. The text is the agent's own rendering, so
/// the hash compares stations of one agent version (an upgrade changes it fleet-wide).
pub fn policy_sha256(policy: &Policy) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(format!("{policy:?}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a policy file named by `--policy` or `DURESS_AGENT_POLICY` may be honoured in a
/// release build: on Unix the file (symlinks resolved) must be owned by root and not writable
/// by group or others, and every directory above it owned by root and not writable by group or
/// others (unless sticky, as /tmp: then nobody else may replace the file). So a user cannot have
/// written it, nor swap it. On Windows the check needs the file's security descriptor
/// (Administrators/SYSTEM ownership, no write for Users), which is not implemented yet: there a
/// release build refuses every such file (fail closed) and uses the machine policy.
pub fn check_policy_file(path: &Path) -> std::result::Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let real = std::fs::canonicalize(path).map_err(|e| format!("cannot read: {e}"))?;
        let meta = std::fs::metadata(&real).map_err(|e| format!("cannot read: {e}"))?;
        if meta.uid() != 0 {
            return Err(format!("owned by uid {}, not root", meta.uid()));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "writable by group or others (mode {:o})",
                meta.mode() & 0o7777
            ));
        }
        let mut dir = real.parent();
        while let Some(d) = dir {
            let m = std::fs::metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
            let sticky = m.mode() & 0o1000 != 0;
            if m.uid() != 0 || (m.mode() & 0o022 != 0 && !sticky) {
                return Err(format!(
                    "its directory {} can be changed by a user (uid {}, mode {:o})",
                    d.display(),
                    m.uid(),
                    m.mode() & 0o7777
                ));
            }
            dir = d.parent();
        }
        Ok(())
    }
    #[cfg(windows)]
    {
        let _ = path;
        Err("the ownership of a policy file is not verified on Windows yet".to_owned())
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = path;
        Err("the ownership of a policy file cannot be verified on this OS".to_owned())
    }
}

/// [`load_resolved`] with what the status reports: in a release build a `--policy` or
/// `DURESS_AGENT_POLICY` file that fails [`check_policy_file`] is ignored (the OS policy is
/// used instead) and `ignored` says why.
pub fn load_resolved_report(flag: Option<&Path>) -> Result<LoadedPolicy> {
    load_resolved_checked(flag, std::env::var_os(ENV_POLICY), RELEASE_BUILD)
}

/// [`load_resolved_report`] with the environment and the release switch passed in (tests).
pub fn load_resolved_checked(
    flag: Option<&Path>,
    env: Option<std::ffi::OsString>,
    release: bool,
) -> Result<LoadedPolicy> {
    let env = env.filter(|v| !v.is_empty());
    let mut ignored = None;
    if flag.is_some() || env.is_some() {
        let source = resolve_path_from(flag, env)?;
        let named = match &source {
            PolicySource::Flag(_) => "--policy",
            _ => ENV_POLICY,
        };
        let verdict = if release {
            check_policy_file(source.path())
        } else {
            Ok(())
        };
        match verdict {
            Ok(()) => {
                return Ok(LoadedPolicy {
                    policy: Policy::load(source.path())?,
                    source,
                    ignored: None,
                });
            }
            Err(why) => {
                let note = format!(
                    "{named} {} ignored: {why}; using the machine policy",
                    source.path().display()
                );
                tracing::warn!("{note}");
                ignored = Some(note);
            }
        }
    }
    let loaded = sources::load_os()?;
    Ok(LoadedPolicy {
        policy: loaded.policy,
        source: PolicySource::OsSources {
            primary: loaded.primary,
            layers: loaded.layers,
        },
        ignored,
    })
}

fn parse_https_url(s: &str) -> std::result::Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!("{s:?} must be an https:// URL"));
    }
    if url.host_str().is_none() {
        return Err(format!("{s:?} has no host"));
    }
    Ok(url)
}

fn de_https_url<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Url, D::Error> {
    let s = String::deserialize(d)?;
    parse_https_url(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests;
