//! Types shared by every store trait and backend: what the console, the CLI and the API read
//! and what they ask to be written. Plain data; no backend names appear here.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

pub use crate::records::IncidentRecord;

/// An enrollment token as the Stations page lists it (the hash, never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_hash: String,
    pub approve: super::Approve,
    pub uses_left: i64,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked: bool,
    pub created_at: OffsetDateTime,
}

/// Which incidents a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentFilter {
    Open,
    All,
}

/// One officers' timeline entry (presses come from the incident's events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `username`, or `system` for escalation.
    pub actor: String,
    /// `claim`, `takeover`, `note`, `level`, `911`, `resolve`, `reopen`, `escalation`.
    pub kind: String,
    pub text: String,
}

/// One incident with its presses (in [`IncidentRecord::events`]) and the officers' entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentDetail {
    pub incident: IncidentRecord,
    pub timeline: Vec<TimelineRecord>,
}

/// What an officer does to an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentAction {
    /// Claim it; `takeover` takes it from the officer who holds it.
    Claim {
        takeover: bool,
    },
    Note(String),
    Level(String),
    Called911,
    Resolve {
        disposition: String,
        follow_up: String,
    },
    Reopen,
}

impl IncidentAction {
    /// The audit log's action name.
    pub const fn audit_name(&self) -> &'static str {
        match self {
            IncidentAction::Claim { .. } => "incident.claim",
            IncidentAction::Note(_) => "incident.note",
            IncidentAction::Level(_) => "incident.level",
            IncidentAction::Called911 => "incident.911",
            IncidentAction::Resolve { .. } => "incident.resolve",
            IncidentAction::Reopen => "incident.reopen",
        }
    }
}

/// How an action ended. Only `Changed` wrote anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionOutcome {
    /// Written with its timeline, audit and live rows.
    Changed,
    /// Nothing to do (claiming what one already holds, reopening an open incident).
    Unchanged,
    NotFound,
    /// Someone else holds it; the officer must take over explicitly.
    ClaimedBy {
        username: String,
        at: Option<OffsetDateTime>,
    },
    /// The incident's state forbids it (e.g. claiming a resolved incident).
    Refused(String),
}

/// The text of a 911-call timeline entry, the same in every backend.
pub fn called_911_text(at: OffsetDateTime) -> String {
    let iso = super::format_ts(at);
    format!("911 called at {} {} UTC", &iso[..10], &iso[11..19])
}

/// A self-test as the board lists it (never an incident).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfTestRecord {
    pub location: duress_core::Location,
    pub host: duress_core::HostFacts,
    pub received_at: OffsetDateTime,
}

/// Officers handle incidents; admins also manage stations, tokens, users and camera mappings.
/// (`clap::ValueEnum`: `user add --role officer|admin` parses this very type.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Officer,
    Admin,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "officer" => Some(Role::Officer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A user to add; the password is already an argon2id PHC string.
#[derive(Clone)]
pub struct NewUser {
    pub username: String,
    pub role: Role,
    pub password_hash: String,
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Signs in with single sign-on only (`[oidc]`): it has no password to change or reset.
    pub sso: bool,
}

/// What sign-in checks a password against.
#[derive(Clone)]
pub struct Credentials {
    pub password_hash: String,
    pub disabled: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A session to store: only the SHA-256 of the cookie value.
#[derive(Clone)]
pub struct NewSession {
    pub id_hash: String,
    pub username: String,
    pub csrf_token: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("username", &self.username)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A stored session with its user's current role and state.
#[derive(Clone)]
pub struct SessionRecord {
    pub username: String,
    pub csrf_token: String,
    /// Sign-in time: extensions never go past it plus `session_max`.
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// `None` when the stored role is unknown (treated as no session).
    pub role: Option<Role>,
    pub user_disabled: bool,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("username", &self.username)
            .field("last_seen_at", &self.last_seen_at)
            .field("expires_at", &self.expires_at)
            .field("role", &self.role)
            .field("user_disabled", &self.user_disabled)
            .finish_non_exhaustive()
    }
}

/// One audit log entry, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    /// The stored text of the time (`YYYY-MM-DDTHH:MM:SS.mmmZ`): hashed as it is.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
    /// HMAC-SHA256 under the audit key (`false`: a legacy SHA-256 entry written before the
    /// key existed; see [`super::audit_chain`]).
    pub keyed: bool,
}

/// One live-log row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRow {
    pub id: i64,
    pub at: OffsetDateTime,
    pub kind: String,
    pub incident_id: Option<Uuid>,
    /// A JSON object.
    pub payload: String,
}

/// A location → camera link template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraMapping {
    pub id: i64,
    /// `BLD`, `FLR`, `ROOM`, `label_prefix` or `any`.
    pub match_field: String,
    pub match_value: String,
    pub name: String,
    pub url_template: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCameraMapping {
    pub match_field: String,
    pub match_value: String,
    pub name: String,
    pub url_template: String,
    pub created_at: OffsetDateTime,
}

/// The live-log row of a committed event: its kind and JSON payload, the same in every
/// backend. A cancel's row carries its `cancel_pin`, so a console's stream says at once that
/// a cancel was made with the duress PIN. A press's row says whether it `opened` its
/// incident (`true`) or joined an open one (`false`): the console's browser notification is
/// shown once per new incident, never for a repeat press (docs/console.md, "Phones on patrol").
pub fn event_live_row(
    ev: &super::NewEvent,
    incident_id: Option<Uuid>,
    opened: bool,
) -> (&'static str, String) {
    use duress_core::EventKind;
    let kind = match (ev.kind, incident_id) {
        (EventKind::Test, _) => "selftest",
        (EventKind::Cancel, Some(_)) => "incident.cancel",
        (EventKind::Cancel, None) => "cancel",
        (EventKind::Duress, _) => "incident.press",
    };
    let mut payload = serde_json::json!({
        "event_id": ev.id,
        "device_id": ev.device_id,
        "label": ev.location.display_label(),
    });
    if ev.kind == EventKind::Duress {
        payload["opened"] = serde_json::json!(opened);
    }
    if ev.kind == EventKind::Cancel {
        let pin = cancel_pin_of(ev.kind, &ev.jws);
        payload["cancel_pin"] = serde_json::json!(pin);
        payload["cancel_with_duress_pin"] =
            serde_json::json!(pin.is_some_and(duress_core::PinCheck::is_duress));
    }
    (kind, payload.to_string())
}

/// The `cancel_pin` claim of a stored event, read from its signed body (the compact JWS kept
/// exactly as received and verified at ingest). The signed claims are the one record of how
/// the PIN was answered, so no column copies them (and no migration or ingest change was
/// needed); only `cancel` events are decoded.
///
/// A cancel whose stored body no longer decodes (outside tampering, a bug) is reported as
/// [`PinCheck::Wrong`](duress_core::PinCheck::Wrong), i.e. flagged "cancel with duress PIN",
/// with a warning: of the two mistakes, officers following up a genuine cancel is the
/// harmless one, and failing the whole read model would blank the board.
pub fn cancel_pin_of(kind: duress_core::EventKind, jws: &str) -> Option<duress_core::PinCheck> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct PinOnly {
        #[serde(default)]
        cancel_pin: Option<duress_core::PinCheck>,
    }
    if kind != duress_core::EventKind::Cancel {
        return None;
    }
    let claims = jws
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<PinOnly>(&bytes).ok());
    match claims {
        Some(c) => c.cancel_pin,
        None => {
            tracing::warn!(
                "a stored cancel event's signed body does not decode: flagged as a cancel with duress PIN"
            );
            Some(duress_core::PinCheck::Wrong)
        }
    }
}

/// The timeline text of an escalation, the same in every backend.
pub fn escalation_text(after: std::time::Duration) -> String {
    format!("Not claimed within {} s: escalated", after.as_secs())
}

/// At most this many incidents in one bulk resolve (a bound on one request's work).
pub const MAX_BULK_RESOLVE: usize = 200;

/// How one incident of a bulk resolve ([`crate::store::IncidentStore::resolve_incidents`])
/// ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkResolveOutcome {
    /// Resolved like a single resolve: timeline, audit, live row and notifications.
    Resolved,
    NotFound,
    /// Resolved already (by someone else, or earlier): left as it is.
    AlreadyResolved,
    /// Another officer is handling it: never resolved over their head in bulk (they resolve
    /// it, or it is opened and resolved alone).
    ClaimedBy {
        username: String,
    },
    /// Storage trouble for this one (logged); the others were still tried.
    Failed,
}

/// Whether a bulk resolve skips an incident in this state, the same rule in every backend:
/// a resolved one, and one another officer claimed. Everything else goes through the single
/// resolve's own rules ([`decide_action`]).
pub fn bulk_resolve_skip(
    open: bool,
    claimed_by: Option<&str>,
    actor: &str,
) -> Option<BulkResolveOutcome> {
    if !open {
        return Some(BulkResolveOutcome::AlreadyResolved);
    }
    match claimed_by {
        Some(who) if who != actor => Some(BulkResolveOutcome::ClaimedBy {
            username: who.to_owned(),
        }),
        _ => None,
    }
}

/// What an officer's action does to an incident in its current state, the same rule in every
/// backend: `Ok((timeline kind, timeline text))` when it changes something (the backend then
/// writes the change), `Err(outcome)` when nothing is written.
pub fn decide_action(
    open: bool,
    claimed_by: Option<&str>,
    claimed_at: Option<OffsetDateTime>,
    actor: &str,
    action: &IncidentAction,
    now: OffsetDateTime,
) -> Result<(&'static str, String), ActionOutcome> {
    let resolved = || ActionOutcome::Refused("This incident is resolved. Reopen it first.".into());
    match action {
        IncidentAction::Claim { takeover } => {
            if !open {
                return Err(resolved());
            }
            match claimed_by {
                Some(who) if who == actor => Err(ActionOutcome::Unchanged),
                Some(who) if !takeover => Err(ActionOutcome::ClaimedBy {
                    username: who.to_owned(),
                    at: claimed_at,
                }),
                Some(previous) => Ok(("takeover", format!("{actor} took over from {previous}"))),
                None => Ok(("claim", format!("{actor} is handling this incident"))),
            }
        }
        IncidentAction::Note(text) => Ok(("note", text.trim().to_owned())),
        IncidentAction::Level(level) => Ok(("level", level.clone())),
        IncidentAction::Called911 => Ok(("911", called_911_text(now))),
        IncidentAction::Resolve {
            disposition,
            follow_up,
        } => {
            if !open {
                return Err(ActionOutcome::Refused(
                    "This incident is already resolved.".into(),
                ));
            }
            let mut text = format!("Disposition: {disposition}");
            if !follow_up.trim().is_empty() {
                text.push_str(&format!(". Follow-up: {}", follow_up.trim()));
            }
            Ok(("resolve", text))
        }
        IncidentAction::Reopen if open => Err(ActionOutcome::Unchanged),
        IncidentAction::Reopen => Ok(("reopen", format!("{actor} reopened the incident"))),
    }
}

impl NewCameraMapping {
    /// What the audit log records of a new mapping.
    pub fn audit_detail(&self) -> String {
        format!(
            "{}={} → {} {}",
            self.match_field, self.match_value, self.name, self.url_template
        )
    }
}

/// What the audit log records of a location: the fields an officer reads first.
pub fn location_summary(location: Option<&duress_core::Location>) -> String {
    let Some(l) = location else {
        return "(none)".to_owned();
    };
    let fields: Vec<String> = [
        ("label", &l.label),
        ("BLD", &l.bld),
        ("FLR", &l.flr),
        ("ROOM", &l.room),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_deref().map(|v| format!("{k} {v:?}")))
    .collect();
    if fields.is_empty() {
        "(empty)".to_owned()
    } else {
        fields.join(", ")
    }
}

pub use crate::location_evidence::Subnet;

/// A display waiting to be paired: hashes only.
#[derive(Clone)]
pub struct NewDisplay {
    pub token_hash: String,
    pub code_hash: String,
    pub created_at: OffsetDateTime,
    pub code_expires_at: OffsetDateTime,
}

impl std::fmt::Debug for NewDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewDisplay")
            .field("created_at", &self.created_at)
            .field("code_expires_at", &self.code_expires_at)
            .finish_non_exhaustive()
    }
}

/// Where a display is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayState {
    /// Showing its pairing code; no access yet.
    Pending,
    /// Paired: may view the board and hear it.
    Active,
    /// Revoked by an admin: no access, ever again.
    Revoked,
}

impl DisplayState {
    pub fn as_str(self) -> &'static str {
        match self {
            DisplayState::Pending => "pending",
            DisplayState::Active => "active",
            DisplayState::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(DisplayState::Pending),
            "active" => Some(DisplayState::Active),
            "revoked" => Some(DisplayState::Revoked),
            _ => None,
        }
    }
}

/// A stored display (no token or code hash: callers look up by them, never read them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayRecord {
    pub id: i64,
    pub name: String,
    pub state: DisplayState,
    pub created_at: OffsetDateTime,
    pub paired_at: Option<OffsetDateTime>,
    pub paired_by: Option<String>,
    pub last_seen_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub revoked_by: Option<String>,
}
