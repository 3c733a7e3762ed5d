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
//! - same-room grouping (policy `[incidents] group_same_room`, off by default): a `duress`
//!   press that would open a new incident joins instead the open incident of ANOTHER station in
//!   the same room (same building, floor and room: [`room_key`]) whose last press is within the
//!   grouping window, so two panic buttons pressed in one room page officers once. The
//!   incident keeps its first station and lists every station that pressed. A station whose
//!   location has no building, floor or room never groups.

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

/// How events find their incident: the window, and whether presses of different stations in
/// one room share an incident (`[incidents] group_same_room`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    pub window: Duration,
    pub same_room: bool,
}

impl From<Duration> for Grouping {
    /// The window alone: each station groups only its own presses (the default).
    fn from(window: Duration) -> Self {
        Grouping {
            window,
            same_room: false,
        }
    }
}

/// The room an incident is in, as grouping compares it: building, floor and room, each trimmed
/// and case-folded, joined with a separator no field contains. `None` when any of the three is
/// missing or blank (such a station never groups with another).
pub fn room_key(location: &duress_core::Location) -> Option<String> {
    let part = |v: &Option<String>| {
        v.as_deref()
            .map(|t| t.trim().to_lowercase())
            .filter(|t| !t.is_empty())
    };
    let (bld, flr, room) = (
        part(&location.bld)?,
        part(&location.flr)?,
        part(&location.room)?,
    );
    Some(format!("{bld}\u{1f}{flr}\u{1f}{room}"))
}

/// The location that decides a station's room: the one an administrator registered for it,
/// else the one its agent reported with the event (as the console labels the incident).
pub fn room_of(
    registered: Option<&duress_core::Location>,
    reported: &duress_core::Location,
) -> Option<String> {
    match registered {
        Some(r) => room_key(r),
        None => room_key(reported),
    }
}

/// The room's most recent open incident (of any station), as same-room grouping cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomIncident {
    pub incident_id: Uuid,
    pub last_press_at: OffsetDateTime,
}

/// Same-room grouping: a press [`place`] would open a new incident for joins the room's open
/// incident instead when that incident's last press is within the window. Anything else is
/// left as `place` decided.
pub fn place_in_room(
    placement: Placement,
    room_open: Option<RoomIncident>,
    occurred_at: OffsetDateTime,
    window: Duration,
) -> Placement {
    match (placement, room_open) {
        (Placement::Open, Some(room))
            if (occurred_at - room.last_press_at).unsigned_abs() <= window =>
        {
            Placement::JoinPress(room.incident_id)
        }
        (placement, _) => placement,
    }
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
    fn same_room_joins_only_within_the_window_and_only_new_incidents() {
        let room = RoomIncident {
            incident_id: Uuid::now_v7(),
            last_press_at: datetime!(2026-11-26 12:00:00 UTC),
        };
        let t = room.last_press_at;
        assert_eq!(
            place_in_room(
                Placement::Open,
                Some(room),
                t + time::Duration::minutes(4),
                WINDOW
            ),
            Placement::JoinPress(room.incident_id)
        );
        assert_eq!(
            place_in_room(
                Placement::Open,
                Some(room),
                t + time::Duration::minutes(6),
                WINDOW
            ),
            Placement::Open
        );
        assert_eq!(
            place_in_room(Placement::Open, None, t, WINDOW),
            Placement::Open
        );
        let own = Uuid::now_v7();
        assert_eq!(
            place_in_room(Placement::JoinPress(own), Some(room), t, WINDOW),
            Placement::JoinPress(own)
        );
        assert_eq!(
            place_in_room(Placement::Apart, Some(room), t, WINDOW),
            Placement::Apart
        );
    }

    #[test]
    fn a_room_needs_building_floor_and_room_and_ignores_case_and_blanks() {
        let loc = |b: Option<&str>, f: Option<&str>, r: Option<&str>| duress_core::Location {
            bld: b.map(str::to_owned),
            flr: f.map(str::to_owned),
            room: r.map(str::to_owned),
            ..Default::default()
        };
        assert_eq!(
            room_key(&loc(Some("Bldg A"), Some("2"), Some("214"))),
            room_key(&loc(Some(" bldg a "), Some("2"), Some("214")))
        );
        assert_ne!(
            room_key(&loc(Some("A"), Some("2"), Some("214"))),
            room_key(&loc(Some("A"), Some("2"), Some("215")))
        );
        assert_eq!(room_key(&loc(Some("A"), Some("2"), None)), None);
        assert_eq!(room_key(&loc(Some("A"), Some(" "), Some("1"))), None);
        // The registered location decides when there is one.
        let registered = loc(Some("A"), Some("1"), Some("9"));
        assert_eq!(
            room_of(Some(&registered), &loc(None, None, None)),
            room_key(&registered)
        );
        assert_eq!(room_of(Some(&loc(None, None, None)), &registered), None);
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
