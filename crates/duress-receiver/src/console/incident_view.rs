//! What the console shows of an incident: the row, its presses and the officers' timeline,
//! read in one snapshot.

use duress_core::{HostFacts, Location};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row as _, SqlitePool};
use uuid::Uuid;

use super::pages::{Ts, human_duration};
use crate::store::parse_ts;

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
    pub claimed_by: Option<String>,
    pub claimed_at: Option<Ts>,
    /// Seconds from opening to the first claim.
    pub time_to_claim_s: Option<i64>,
    pub escalated_at: Option<Ts>,
    pub response_level: Option<String>,
    pub called_911_at: Option<Ts>,
    pub resolved_at: Option<Ts>,
    pub resolved_by: Option<String>,
    pub disposition: Option<String>,
    pub follow_up: Option<String>,
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

    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        let text = |c: &str| row.try_get::<String, _>(c);
        let opt = |c: &str| row.try_get::<Option<String>, _>(c);
        let location: Location = serde_json::from_str(&text("location_json")?).unwrap_or_default();
        let host: HostFacts = serde_json::from_str(&text("host_json")?).unwrap_or_default();
        let opened = text("opened_at")?;
        let first_claim = opt("first_claimed_at")?;
        let time_to_claim_s = match (parse_ts(&opened), first_claim.as_deref().map(parse_ts)) {
            (Ok(o), Some(Ok(c))) => Some((c - o).whole_seconds().max(0)),
            _ => None,
        };
        let delay_ms: i64 = row.try_get("delay_ms")?;
        Ok(IncidentView {
            id: text("incident_id")?,
            device_id: text("device_id")?,
            status: text("status")?,
            label: location.display_label(),
            civic: location.civic_address(),
            ips: host.ips.join(", "),
            location,
            host,
            source: text("source")?,
            opened_at: Ts::from_text(&opened),
            first_press: Ts::from_text(&text("first_occurred_at")?),
            delay_text: human_duration(delay_ms),
            delayed: row.try_get("delayed")?,
            press_count: row.try_get("press_count")?,
            cancelled_at: Ts::opt(opt("cancelled_at")?.as_deref()),
            claimed_by: opt("claimed_by")?,
            claimed_at: Ts::opt(opt("claimed_at")?.as_deref()),
            time_to_claim_s,
            escalated_at: Ts::opt(opt("escalated_at")?.as_deref()),
            response_level: opt("response_level")?,
            called_911_at: Ts::opt(opt("called_911_at")?.as_deref()),
            resolved_at: Ts::opt(opt("resolved_at")?.as_deref()),
            resolved_by: opt("resolved_by")?,
            disposition: opt("disposition")?,
            follow_up: opt("follow_up")?,
        })
    }
}

/// One line of an incident's timeline.
#[derive(Debug, Clone)]
pub struct TimelineEntry {
    pub at: Ts,
    /// `press`, `cancel`, `claim`, `takeover`, `note`, `level`, `911`, `resolve`, `reopen`,
    /// `escalation`.
    pub kind: String,
    pub actor: String,
    pub text: String,
}

impl TimelineEntry {
    pub fn kind_label(&self) -> &'static str {
        match self.kind.as_str() {
            "press" => "Button pressed",
            "cancel" => "Cancelled by staff",
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

/// Open incidents, newest first.
pub async fn open_incidents(pool: &SqlitePool) -> Result<Vec<IncidentView>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT * FROM incidents WHERE status = 'open' ORDER BY opened_at DESC, incident_id DESC",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(IncidentView::from_row).collect()
}

/// Every incident, newest first (reports).
pub async fn all_incidents(pool: &SqlitePool) -> Result<Vec<IncidentView>, sqlx::Error> {
    let rows = sqlx::query("SELECT * FROM incidents ORDER BY opened_at DESC, incident_id DESC")
        .fetch_all(pool)
        .await?;
    rows.iter().map(IncidentView::from_row).collect()
}

/// One incident with its timeline (presses and officers' entries merged in time order).
pub async fn incident(
    pool: &SqlitePool,
    id: Uuid,
) -> Result<Option<(IncidentView, Vec<TimelineEntry>)>, sqlx::Error> {
    let id = id.to_string();
    let mut tx = pool.begin().await?;
    let Some(row) = sqlx::query("SELECT * FROM incidents WHERE incident_id = ?")
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(None);
    };
    let view = IncidentView::from_row(&row)?;
    let events = sqlx::query(
        "SELECT kind, source, occurred_at, received_at, delay_ms, host_json FROM events WHERE incident_id = ? ORDER BY received_at, rowid",
    )
    .bind(&id)
    .fetch_all(&mut *tx)
    .await?;
    let entries = sqlx::query(
        "SELECT at, actor, kind, text FROM incident_timeline WHERE incident_id = ? ORDER BY id",
    )
    .bind(&id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    let mut timeline: Vec<TimelineEntry> = Vec::new();
    for e in &events {
        let kind: String = e.try_get("kind")?;
        let host: HostFacts =
            serde_json::from_str(&e.try_get::<String, _>("host_json")?).unwrap_or_default();
        let occurred: String = e.try_get("occurred_at")?;
        let delay: i64 = e.try_get("delay_ms")?;
        timeline.push(TimelineEntry {
            at: Ts::from_text(&e.try_get::<String, _>("received_at")?),
            kind: if kind == "cancel" {
                "cancel".into()
            } else {
                "press".into()
            },
            actor: if host.user.is_empty() {
                host.hostname
            } else {
                format!("{} on {}", host.user, host.hostname)
            },
            text: format!(
                "via {}, pressed {} (received after {})",
                e.try_get::<String, _>("source")?,
                Ts::from_text(&occurred).text,
                human_duration(delay)
            ),
        });
    }
    for e in &entries {
        timeline.push(TimelineEntry {
            at: Ts::from_text(&e.try_get::<String, _>("at")?),
            kind: e.try_get("kind")?,
            actor: e.try_get("actor")?,
            text: e.try_get("text")?,
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

pub async fn recent_self_tests(
    pool: &SqlitePool,
    limit: i64,
) -> Result<Vec<SelfTestView>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT location_json, host_json, received_at FROM events WHERE kind = 'test'
         AND received_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day')
         ORDER BY received_at DESC LIMIT ?",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let location: Location =
                serde_json::from_str(&r.try_get::<String, _>("location_json")?).unwrap_or_default();
            let host: HostFacts =
                serde_json::from_str(&r.try_get::<String, _>("host_json")?).unwrap_or_default();
            Ok(SelfTestView {
                label: location.display_label(),
                hostname: host.hostname,
                user: host.user,
                received_at: Ts::from_text(&r.try_get::<String, _>("received_at")?),
            })
        })
        .collect()
}
