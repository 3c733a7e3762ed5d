//! Which floor plan shows an incident's place, and where its room is on it: the read side of
//! floor plans, for the board and the incident page (the admin pages are [`super::floor_plans`]).
//!
//! A location's building (BLD), floor (FLR) and room (ROOM) are matched to a plan's building and
//! floor and to its placed rooms as officers read them: case and surrounding spaces ignored
//! (`location_evidence` compares locations the same way). The plan is drawn as an inline SVG —
//! the image and a marker circle at the room's position — whose attributes (not inline
//! styles) place the marker, so the console's CSP needs no `unsafe-inline`, and a fragment
//! refreshed by the live stream carries its marker with it.

use duress_core::Location;

use super::incident_view::IncidentView;
use crate::store::{FloorPlanRecord, RoomPlacement, Store, StoreResult};

/// Two keys name the same building, floor or room.
pub fn same_key(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// "Room 114" for `114`; a room text that already says "Room …" is kept as it is.
pub fn room_label(room: &str) -> String {
    let room = room.trim();
    if room
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("room"))
    {
        room.to_owned()
    } else {
        format!("Room {room}")
    }
}

/// "Main Hall floor 1".
pub fn plan_label(plan: &FloorPlanRecord) -> String {
    format!("{} floor {}", plan.building, plan.floor)
}

/// The console URL of a plan's image; the version makes a replaced image a new URL, so the
/// browser's private cache never shows an old plan.
pub fn image_url(plan: &FloorPlanRecord) -> String {
    let version = plan.sha256.get(..16).unwrap_or(&plan.sha256);
    format!("/floorplans/{}/image?v={version}", plan.id)
}

/// The image of a plan as a page draws it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanImage {
    pub id: i64,
    pub url: String,
    pub width: u32,
    pub height: u32,
}

impl PlanImage {
    /// The radius of the editor's "you clicked here" dot, in image pixels.
    pub fn pending_radius(&self) -> u32 {
        (self.width.max(self.height) / 60).max(4)
    }

    pub fn of(plan: &FloorPlanRecord) -> Self {
        PlanImage {
            id: plan.id,
            url: image_url(plan),
            width: plan.width,
            height: plan.height,
        }
    }
}

/// The marker: centre and radius in image pixels (the SVG's user units), and the placement as
/// fractions (for tests and scripts: `data-x`, `data-y`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub cx: String,
    pub cy: String,
    pub r: String,
    pub ring: String,
    pub stroke: String,
    pub x: String,
    pub y: String,
}

impl Marker {
    pub fn at(plan: &FloorPlanRecord, x: f64, y: f64) -> Self {
        let w = f64::from(plan.width);
        let h = f64::from(plan.height);
        // Big enough to find at a glance on a board thumbnail, small enough not to hide a room.
        let r = (w.max(h) * 0.022).max(4.0);
        Marker {
            cx: format!("{:.1}", x * w),
            cy: format!("{:.1}", y * h),
            r: format!("{r:.1}"),
            ring: format!("{:.1}", r * 2.2),
            stroke: format!("{:.1}", r * 0.45),
            x: format!("{x:.4}"),
            y: format!("{y:.4}"),
        }
    }
}

/// What a page shows of one place on the floor plans: never a blank box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloorPlanMark {
    /// `placed`, `unplaced` (a plan of the floor, no position for the room), `no-plan` or
    /// `no-floor` (the location names no building and floor): `data-floor-plan`.
    pub state: &'static str,
    pub plan: Option<PlanImage>,
    pub marker: Option<Marker>,
    /// The image's accessible name: "Room 114 on floor plan of Main Hall floor 1".
    pub label: String,
    /// The line under it, in words.
    pub caption: String,
}

/// Every plan and placement, read once per page.
#[derive(Debug, Clone, Default)]
pub struct FloorPlanMarks {
    plans: Vec<FloorPlanRecord>,
    placements: Vec<RoomPlacement>,
}

fn field(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl FloorPlanMarks {
    pub async fn load(store: &dyn Store) -> StoreResult<Self> {
        Ok(FloorPlanMarks {
            plans: store.floor_plans().await?,
            placements: store.room_placements().await?,
        })
    }

    /// Whether any plan was uploaded (the board shows marks only then).
    pub fn any(&self) -> bool {
        !self.plans.is_empty()
    }

    /// The plan of a building and floor.
    pub fn plan_of(&self, building: &str, floor: &str) -> Option<&FloorPlanRecord> {
        self.plans
            .iter()
            .find(|p| same_key(&p.building, building) && same_key(&p.floor, floor))
    }

    /// Where `room` is placed on plan `plan_id`.
    pub fn placement(&self, plan_id: i64, room: &str) -> Option<&RoomPlacement> {
        self.placements
            .iter()
            .find(|p| p.plan_id == plan_id && same_key(&p.room, room))
    }

    pub fn mark(&self, location: &Location) -> FloorPlanMark {
        let (Some(building), Some(floor)) = (field(&location.bld), field(&location.flr)) else {
            return FloorPlanMark {
                state: "no-floor",
                plan: None,
                marker: None,
                label: String::new(),
                caption: "No floor plan: this location names no building and floor.".to_owned(),
            };
        };
        let Some(plan) = self.plan_of(building, floor) else {
            return FloorPlanMark {
                state: "no-plan",
                plan: None,
                marker: None,
                label: String::new(),
                caption: format!("No floor plan for this floor ({building} floor {floor})."),
            };
        };
        let placed = field(&location.room).and_then(|room| {
            self.placement(plan.id, room)
                .map(|placement| (room_label(room), placement))
        });
        match placed {
            Some((room, placement)) => {
                let label = format!("{room} on floor plan of {}", plan_label(plan));
                FloorPlanMark {
                    state: "placed",
                    plan: Some(PlanImage::of(plan)),
                    marker: Some(Marker::at(plan, placement.x, placement.y)),
                    caption: label.clone(),
                    label,
                }
            }
            None => FloorPlanMark {
                state: "unplaced",
                plan: Some(PlanImage::of(plan)),
                marker: None,
                label: format!("Floor plan of {}", plan_label(plan)),
                caption: match field(&location.room) {
                    Some(room) => format!(
                        "No floor plan position for this room ({}).",
                        room_label(room)
                    ),
                    None => "No floor plan position for this room (the location names no room)."
                        .to_owned(),
                },
            },
        }
    }

    /// The mark of an incident: its registered location, else the claimed one.
    pub fn mark_for(&self, incident: &IncidentView) -> FloorPlanMark {
        self.mark(&incident.effective_location)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> FloorPlanRecord {
        FloorPlanRecord {
            id: 7,
            building: "Main Hall".into(),
            floor: "1".into(),
            width: 1000,
            height: 500,
            sha256: "ab".repeat(32),
            png_bytes: 10,
            uploaded_at: time::OffsetDateTime::UNIX_EPOCH,
            uploaded_by: "admin".into(),
        }
    }

    fn at(bld: &str, flr: &str, room: &str) -> Location {
        let v = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        Location {
            bld: v(bld),
            flr: v(flr),
            room: v(room),
            ..Location::default()
        }
    }

    #[test]
    fn a_placed_room_is_marked_and_everything_else_says_why_not() {
        let marks = FloorPlanMarks {
            plans: vec![plan()],
            placements: vec![RoomPlacement {
                plan_id: 7,
                room: "114".into(),
                x: 0.25,
                y: 0.5,
                placed_at: time::OffsetDateTime::UNIX_EPOCH,
                placed_by: "admin".into(),
            }],
        };
        let m = marks.mark(&at(" main hall ", "1", "114"));
        assert_eq!(m.state, "placed");
        assert_eq!(m.label, "Room 114 on floor plan of Main Hall floor 1");
        let marker = m.marker.expect("a placed room has a marker");
        assert_eq!((marker.cx.as_str(), marker.cy.as_str()), ("250.0", "250.0"));
        let m = marks.mark(&at("Main Hall", "1", "115"));
        assert_eq!(m.state, "unplaced");
        assert!(
            m.caption
                .starts_with("No floor plan position for this room")
        );
        assert!(m.plan.is_some());
        let m = marks.mark(&at("Main Hall", "2", "114"));
        assert_eq!(m.state, "no-plan");
        assert!(m.caption.starts_with("No floor plan for this floor"));
        assert_eq!(marks.mark(&at("", "", "114")).state, "no-floor");
        assert_eq!(room_label("Room 5B"), "Room 5B");
    }
}
