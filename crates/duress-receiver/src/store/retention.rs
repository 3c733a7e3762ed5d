//! Retention: what a purge deletes, and what it reports (the trait's two implementations are
//! `sqlite/retention.rs` and `postgres/retention.rs`; the schedule and the configuration are in
//! `crate::retention`).
//!
//! A purge is one transaction: it deletes every category whose cutoff is set, and appends one
//! audit entry (`retention.purge`) with the counts, or changes nothing. Open incidents are never
//! touched, nor a resolved one that still has a pending notification (its ladder has not
//! settled yet). The audit log itself is never purged: it is the record of who did what, it is
//! small (one short row per act), and keeping it whole keeps the chain verifiable from its
//! first entry, with no checkpoint to trust (docs/operations.md, "Retention").

use std::time::Duration;

use time::OffsetDateTime;

use super::StoreFuture;

/// The name of the purge's row in `sweep_runs`: when a purge last ran, on any receiver.
pub const SWEEP_NAME: &str = "retention";

/// The audit action a purge writes.
pub const AUDIT_ACTION: &str = "retention.purge";

/// What to delete: everything older than each cutoff (`None`: keep that category for ever).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeCutoffs {
    /// Resolved incidents resolved before this, with their events, acknowledgements, timeline,
    /// notifications and delivery attempts, and live-log rows.
    pub resolved_incidents: Option<OffsetDateTime>,
    /// Test events received before this (with their acknowledgements), and settled `test`
    /// notifications created before it.
    pub test_events: Option<OffsetDateTime>,
    /// The history of station liveness: settled `offline` (supervision) notifications with
    /// their attempts, and live-log rows that belong to no incident (self-tests, stray cancels,
    /// status changes), created before this. Heartbeats themselves keep no history (each
    /// overwrites its station's last one), so there is nothing else to delete.
    pub heartbeat_history: Option<OffsetDateTime>,
    /// Console sessions whose absolute lifetime ended before this (they can no longer sign
    /// anyone in; the console deletes them only when they are presented again).
    pub sessions: Option<OffsetDateTime>,
}

impl PurgeCutoffs {
    pub fn is_empty(&self) -> bool {
        *self == PurgeCutoffs::default()
    }
}

/// One purge run.
#[derive(Debug, Clone)]
pub struct PurgeRequest {
    pub now: OffsetDateTime,
    pub cutoffs: PurgeCutoffs,
    /// Run only when no purge (on any receiver sharing the store) ran within this long: the
    /// daily task passes a day less a margin, so a cluster purges once a day. `None` (the CLI):
    /// run regardless.
    pub min_interval: Option<Duration>,
    /// Count what would be deleted, then roll back: nothing is written, not even the audit
    /// entry or the run's time.
    pub dry_run: bool,
    /// Who is purging, for the audit entry (`system:retention`, `cli`).
    pub actor: String,
}

/// How many rows a purge deleted (or would delete), by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PurgeCounts {
    pub incidents: u64,
    /// Events of purged incidents.
    pub incident_events: u64,
    pub timeline_entries: u64,
    pub test_events: u64,
    /// Acknowledgement signatures of purged events.
    pub acks: u64,
    pub notifications: u64,
    pub notification_attempts: u64,
    pub live_rows: u64,
    pub sessions: u64,
}

impl PurgeCounts {
    /// The audit entry's detail (and the CLI's line): every count, by name.
    pub fn detail(&self) -> String {
        format!(
            "incidents {}, incident events {}, timeline entries {}, test events {}, acks {}, \
             notifications {}, notification attempts {}, live rows {}, sessions {}",
            self.incidents,
            self.incident_events,
            self.timeline_entries,
            self.test_events,
            self.acks,
            self.notifications,
            self.notification_attempts,
            self.live_rows,
            self.sessions
        )
    }
}

/// The cutoffs as the audit entry records them (so the entry says what the policy was).
pub fn cutoffs_detail(c: &PurgeCutoffs) -> String {
    let one = |t: Option<OffsetDateTime>| t.map_or("keep".to_owned(), super::format_ts);
    format!(
        "before: resolved incidents {}, test events {}, heartbeat history {}, sessions {}",
        one(c.resolved_incidents),
        one(c.test_events),
        one(c.heartbeat_history),
        one(c.sessions)
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeOutcome {
    /// Deleted and committed, with the audit entry's id.
    Purged { counts: PurgeCounts, audit_id: i64 },
    /// A dry run: what would have been deleted; nothing was written.
    DryRun(PurgeCounts),
    /// Another run (perhaps another receiver's) is within `min_interval`; nothing was written.
    NotDue { last_run_at: OffsetDateTime },
}

/// Deleting what the retention policy no longer keeps.
pub trait RetentionStore: Send + Sync {
    /// Deletes every category with a cutoff in one transaction and audits the counts in it.
    /// Two receivers calling at once with `min_interval` purge once: the run's row in
    /// `sweep_runs` is claimed in the same transaction.
    fn purge(&self, request: PurgeRequest) -> StoreFuture<'_, PurgeOutcome>;
}
