//! How an event finds its incident. Pure rules; the store applies them inside the event's
//! transaction so the decision and the write cannot be separated by another request.
//!
//! - `duress`: joins the device's most recent open incident when it occurred within the
//!   grouping window of that incident's last press (press count + 1); otherwise opens a new
//!   incident. Both times are the agent's `occurred_at`, so a press that sat in an outbox for
//!   hours still joins the incident of the presses made next to it, and agent clock skew cancels.
//! - `test`: never opens or joins a real incident (a self-test must never page anyone).
//! - `cancel`: joins the device's most recent open incident whatever its age (it is part of
//!   that story; officers still follow up) without raising the press count or closing it;
//!   with no open incident it is stored alone.
//! - at most [`MAX_OPEN_PER_DEVICE`] open incidents per device: past it a press joins the
//!   device's latest open incident whatever the window, so one device (a hostile one, or one
//!   whose queued presses carry `occurred_at` spread over days) cannot flood the board with
//!   incidents. The press is still stored and counted; officers see the incident's press
//!   count grow.

use std::time::Duration;

use duress_core::EventKind;
use time::OffsetDateTime;
use uuid::Uuid;

/// Open incidents one device may have at once (see the module documentation).
pub const MAX_OPEN_PER_DEVICE: u64 = 5;

/// The device's most recent open incident, as far as grouping cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenIncident {
    pub incident_id: Uuid,
    /// `occurred_at` of its latest duress press.
    pub last_press_at: OffsetDateTime,
    /// How many incidents of this device are open (this one included).
    pub open_count: u64,
}

/// Where an event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Stored without an incident (a test, or a cancel with nothing to cancel).
    Apart,
    /// Opens a new incident.
    Open,
    /// A further press of an open incident: press count + 1.
    JoinPress(Uuid),
    /// A cancel added to an open incident's timeline.
    JoinCancel(Uuid),
}

/// Decides where an event of `kind` that occurred at `occurred_at` goes.
pub fn place(
    kind: EventKind,
    latest_open: Option<OpenIncident>,
    occurred_at: OffsetDateTime,
    window: Duration,
) -> Placement {
    match kind {
        EventKind::Test => Placement::Apart,
        EventKind::Cancel => match latest_open {
            Some(open) => Placement::JoinCancel(open.incident_id),
            None => Placement::Apart,
        },
        EventKind::Duress => match latest_open {
            // Absolute distance: a resent press may arrive after a later one.
            Some(open)
                if (occurred_at - open.last_press_at).unsigned_abs() <= window
                    || open.open_count >= MAX_OPEN_PER_DEVICE =>
            {
                Placement::JoinPress(open.incident_id)
            }
            _ => Placement::Open,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const WINDOW: Duration = Duration::from_secs(300);

    fn open() -> OpenIncident {
        OpenIncident {
            incident_id: Uuid::now_v7(),
            last_press_at: datetime!(2026-11-26 12:00:00 UTC),
            open_count: 1,
        }
    }

    #[test]
    fn presses_within_the_window_join_and_later_ones_open() {
        let o = open();
        let t = o.last_press_at;
        assert_eq!(
            place(
                EventKind::Duress,
                Some(o),
                t + time::Duration::minutes(5),
                WINDOW
            ),
            Placement::JoinPress(o.incident_id)
        );
        assert_eq!(
            place(
                EventKind::Duress,
                Some(o),
                t - time::Duration::minutes(4),
                WINDOW
            ),
            Placement::JoinPress(o.incident_id)
        );
        assert_eq!(
            place(
                EventKind::Duress,
                Some(o),
                t + time::Duration::seconds(301),
                WINDOW
            ),
            Placement::Open
        );
        assert_eq!(place(EventKind::Duress, None, t, WINDOW), Placement::Open);
    }

    #[test]
    fn past_the_cap_a_press_joins_the_latest_open_incident_whatever_its_age() {
        let mut o = open();
        o.open_count = MAX_OPEN_PER_DEVICE;
        let days_later = o.last_press_at + time::Duration::days(3);
        assert_eq!(
            place(EventKind::Duress, Some(o), days_later, WINDOW),
            Placement::JoinPress(o.incident_id)
        );
        o.open_count = MAX_OPEN_PER_DEVICE - 1;
        assert_eq!(
            place(EventKind::Duress, Some(o), days_later, WINDOW),
            Placement::Open
        );
    }

    #[test]
    fn tests_stay_apart_and_cancels_join_whatever_their_age() {
        let o = open();
        let much_later = o.last_press_at + time::Duration::hours(3);
        assert_eq!(
            place(EventKind::Test, Some(o), much_later, WINDOW),
            Placement::Apart
        );
        assert_eq!(
            place(EventKind::Cancel, Some(o), much_later, WINDOW),
            Placement::JoinCancel(o.incident_id)
        );
        assert_eq!(
            place(EventKind::Cancel, None, much_later, WINDOW),
            Placement::Apart
        );
    }
}
