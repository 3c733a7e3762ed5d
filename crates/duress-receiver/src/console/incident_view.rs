//! What the console shows of an incident: the row, its presses and the officers' timeline,
//! read in one snapshot.

use duress_core::{EventKind, HostFacts, Location, PinCheck};
use uuid::Uuid;

use super::pages::{Ts, human_duration};
use crate::records::IncidentRecord;
use crate::store::{IncidentFilter, SelfTestRecord, Store, StoreResult};

/// One incident as pages and the CSV show it.
#[derive(Debug, Clone)]
pub struct IncidentView {
    pub id: String,
    pub device_id: String,
    /// `open` or `closed`.
    pub status: String,
    pub label: String,
    /// Ready to read to a 911 call-taker.
    pub civic: String,
    pub location: Location,
    /// Where officers go: the registered location, else the claimed one (the floor plan's
    /// building, floor and room: `floor_plan_marks`).
    pub effective_location: Location,
    pub host: HostFacts,
    pub ips: String,
    pub source: String,
    pub opened_at: Ts,
    pub first_press: Ts,
    /// "0.2 s", or "3 min 05 s" when the press reached us late.
    pub delay_text: String,
    pub delayed: bool,
    pub press_count: i64,
    pub cancelled_at: Option<Ts>,
    /// A cancel was made with the duress PIN (or a wrong PIN): shown as "Cancel with duress
    /// PIN", never as a reassuring "staff pressed cancel".
    pub cancel_with_duress_pin: bool,
    pub claimed_by: Option<String>,
    pub claimed_at: Option<Ts>,
    /// Seconds from opening to the first claim.
    pub time_to_claim_s: Option<i64>,
    /// Seconds from opening to resolution (resolved incidents only).
    pub time_to_resolve_s: Option<i64>,
    /// Every station that pressed, the incident's own first: more than one only with
    /// same-room grouping (`[incidents] group_same_room`).
    pub stations: Vec<String>,
    pub escalated_at: Option<Ts>,
    pub response_level: Option<String>,
    pub called_911_at: Option<Ts>,
    pub resolved_at: Option<Ts>,
    pub resolved_by: Option<String>,
    pub disposition: Option<String>,
    pub follow_up: Option<String>,
    /// The station's registered location ("" when not registered). When there is one,
    /// `label` and `civic` are the registered location's (shown first, read to 911) and
    /// `claimed_label` is what the press claimed.
    pub registered: String,
    pub claimed_label: String,
    /// The claimed location differs from the registered one.
    pub location_mismatch: bool,
    /// A press came from an address mapped elsewhere: the evidence in one line.
    pub drift: Option<String>,
}

impl IncidentView {
    pub fn is_open(&self) -> bool {
        self.status == "open"
    }

    /// Open, nobody on it: the board sounds.
    pub fn needs_claim(&self) -> bool {
        self.is_open() && self.claimed_by.is_none()
    }

    pub fn is_escalated(&self) -> bool {
        self.needs_claim() && self.escalated_at.is_some()
    }

    pub fn claimed_by_text(&self) -> &str {
        self.claimed_by.as_deref().unwrap_or("")
    }

    pub fn host_line(&self) -> String {
        if self.ips.is_empty() {
            self.host.hostname.clone()
        } else {
            format!("{} · {}", self.host.hostname, self.ips)
        }
    }

    /// The console's view of the store's one incident read model.
    pub fn from_record(r: &IncidentRecord) -> Self {
        let time_to_claim_s = r
            .first_claimed_at
            .map(|c| (c - r.opened_at).whole_seconds().max(0));
        let mut stations = vec![r.device_id.clone()];
        for e in r.events.iter().filter(|e| e.kind == EventKind::Duress) {
            if !e.device_id.is_empty() && !stations.contains(&e.device_id) {
                stations.push(e.device_id.clone());
            }
        }
        IncidentView {
            stations,
            time_to_resolve_s: r
                .resolved_at
                .map(|t| (t - r.opened_at).whole_seconds().max(0)),
            id: r.incident_id.to_string(),
            device_id: r.device_id.clone(),
            status: r.status.clone(),
            label: r
                .registered_location
                .as_ref()
                .unwrap_or(&r.location)
                .display_label(),
            civic: r
                .registered_location
                .as_ref()
                .unwrap_or(&r.location)
                .civic_address(),
            ips: shown(&r.host.ips.join(", ")),
            location: r.location.clone(),
            effective_location: r
                .registered_location
                .as_ref()
                .unwrap_or(&r.location)
                .clone(),
            host: shown_host(&r.host),
            source: r.source.as_str().to_owned(),
            opened_at: Ts::new(r.opened_at),
            first_press: Ts::new(r.first_occurred_at),
            delay_text: human_duration(r.delay_ms),
            delayed: r.delayed,
            press_count: i64::try_from(r.press_count).unwrap_or(i64::MAX),
            cancelled_at: r.cancelled_at.map(Ts::new),
            cancel_with_duress_pin: r.cancel_with_duress_pin,
            claimed_by: r.claimed_by.clone(),
            claimed_at: r.claimed_at.map(Ts::new),
            time_to_claim_s,
            escalated_at: r.escalated_at.map(Ts::new),
            response_level: r.response_level.clone(),
            called_911_at: r.called_911_at.map(Ts::new),
            resolved_at: r.resolved_at.map(Ts::new),
            resolved_by: r.resolved_by.clone(),
            disposition: r.disposition.clone(),
            follow_up: r.follow_up.clone(),
            registered: r
                .registered_location
                .as_ref()
                .map(Location::display_label)
                .unwrap_or_default(),
            claimed_label: r.location.display_label(),
            location_mismatch: r.location_mismatch,
            drift: r.location_drift.as_ref().map(crate::subnets::Drift::text),
        }
    }
}

/// Device text as officers see it: bidirectional controls escaped to a visible `[U+202E]`
/// (the device cannot be refused without losing its alarm; see `duress_core::text`).
pub fn shown(text: &str) -> String {
    duress_core::text::escape_bidi(text).into_owned()
}

/// A device's host facts with every shown field through [`shown`].
pub fn shown_host(h: &HostFacts) -> HostFacts {
    HostFacts {
        hostname: shown(&h.hostname),
        user: shown(&h.user),
        os: shown(&h.os),
        agent_version: shown(&h.agent_version),
        ips: h.ips.iter().map(|v| shown(v)).collect(),
        macs: h.macs.iter().map(|v| shown(v)).collect(),
    }
}

/// One line of an incident's timeline.
#[derive(Debug, Clone)]
pub struct TimelineEntry {
    pub at: Ts,
    /// `press`, `cancel`, `cancel-duress`, `claim`, `takeover`, `note`, `level`, `911`,
    /// `resolve`, `reopen`, `escalation`.
    pub kind: String,
    pub actor: String,
    pub text: String,
}

impl TimelineEntry {
    pub fn kind_label(&self) -> &'static str {
        match self.kind.as_str() {
            "press" => "Button pressed",
            "cancel" => "Cancelled by staff",
            "cancel-duress" => "Cancel with duress PIN",
            "claim" => "Claimed",
            "takeover" => "Taken over",
            "note" => "Note",
            "level" => "Response level",
            "911" => "911 called",
            "resolve" => "Resolved",
            "reopen" => "Reopened",
            "escalation" => "Escalated",
            _ => "Entry",
        }
    }
}

async fn incidents_newest_first(
    store: &dyn Store,
    filter: IncidentFilter,
) -> StoreResult<Vec<IncidentView>> {
    let mut records = store.list_incidents(filter).await?;
    crate::subnets::annotate_from(store, &mut records).await?;
    Ok(records
        .iter()
        .rev()
        .map(IncidentView::from_record)
        .collect())
}

/// Open incidents, newest first.
pub async fn open_incidents(store: &dyn Store) -> StoreResult<Vec<IncidentView>> {
    incidents_newest_first(store, IncidentFilter::Open).await
}

/// Every incident, newest first (reports).
pub async fn all_incidents(store: &dyn Store) -> StoreResult<Vec<IncidentView>> {
    incidents_newest_first(store, IncidentFilter::All).await
}

/// One incident with its timeline (presses and officers' entries merged in time order).
pub async fn incident(
    store: &dyn Store,
    id: Uuid,
) -> StoreResult<Option<(IncidentView, Vec<TimelineEntry>)>> {
    let Some(mut detail) = store.incident(id).await? else {
        return Ok(None);
    };
    crate::subnets::annotate_from(store, std::slice::from_mut(&mut detail.incident)).await?;
    let view = IncidentView::from_record(&detail.incident);
    let mut timeline: Vec<TimelineEntry> = Vec::new();
    for e in &detail.incident.events {
        let host = &e.host;
        timeline.push(TimelineEntry {
            at: Ts::new(e.received_at),
            kind: match (e.kind, e.cancel_pin) {
                (EventKind::Cancel, Some(pin)) if pin.is_duress() => "cancel-duress".into(),
                (EventKind::Cancel, _) => "cancel".into(),
                _ => "press".into(),
            },
            actor: if host.user.is_empty() {
                host.hostname.clone()
            } else {
                format!("{} on {}", host.user, host.hostname)
            },
            text: format!(
                "via {}, pressed {} (received after {}){}",
                e.source.as_str(),
                Ts::new(e.occurred_at).text,
                human_duration(e.delay_ms),
                match e.cancel_pin {
                    Some(PinCheck::Duress) =>
                        ". The duress PIN was typed: staff may be forced to cancel",
                    Some(PinCheck::Wrong) => ". A wrong PIN was typed (treated as the duress PIN)",
                    Some(PinCheck::Ok) => ". Cancel PIN correct",
                    None => "",
                }
            ),
        });
    }
    for e in detail.timeline {
        timeline.push(TimelineEntry {
            at: Ts::new(e.at),
            kind: e.kind,
            actor: e.actor,
            text: e.text,
        });
    }
    // Stable: presses before officers' entries of the same millisecond.
    timeline.sort_by(|a, b| a.at.iso.cmp(&b.at.iso));
    Ok(Some((view, timeline)))
}

/// Recent self-tests (never incidents): shown apart on the board, greyed, silent.
#[derive(Debug, Clone)]
pub struct SelfTestView {
    pub label: String,
    pub hostname: String,
    pub user: String,
    pub received_at: Ts,
}

impl From<SelfTestRecord> for SelfTestView {
    fn from(r: SelfTestRecord) -> Self {
        SelfTestView {
            label: r.location.display_label(),
            hostname: shown(&r.host.hostname),
            user: shown(&r.host.user),
            received_at: Ts::new(r.received_at),
        }
    }
}

/// Self-tests of the last day, newest first, at most `limit`.
pub async fn recent_self_tests(store: &dyn Store, limit: u32) -> StoreResult<Vec<SelfTestView>> {
    let since = crate::api::receiver_now() - time::Duration::days(1);
    Ok(store
        .recent_self_tests(since, limit)
        .await?
        .into_iter()
        .map(SelfTestView::from)
        .collect())
}
