//! Floor plans (issue 17, item 4): what the store keeps of a plan an admin uploaded for one
//! building and floor, the rooms placed on it, and the trait both backends implement.
//!
//! The stored image is always the receiver's own PNG re-encoding of an upload that passed the
//! checks of [`crate::floor_plan_image`], never the uploaded bytes. It lives in the database
//! (not the data directory) so that every node of a cluster serves the same plan. Matching a
//! location's building, floor and room to a plan is the console's ([`crate::console::floor_plans`]):
//! the store keys plans by the exact text it was given.

use time::OffsetDateTime;

use super::StoreFuture;

/// Audit actions of floor-plan changes.
pub const FLOOR_PLAN_UPLOAD_ACTION: &str = "floorplan.upload";
pub const FLOOR_PLAN_REPLACE_ACTION: &str = "floorplan.replace";
pub const FLOOR_PLAN_DELETE_ACTION: &str = "floorplan.delete";
pub const FLOOR_PLAN_PLACE_ACTION: &str = "floorplan.place";
pub const FLOOR_PLAN_UNPLACE_ACTION: &str = "floorplan.unplace";

/// The audit subject of a plan: what an auditor reads (both backends write the same).
pub(crate) fn audit_subject(building: &str, floor: &str) -> String {
    format!("floor plan {building} / {floor}")
}

/// A checked, re-encoded plan to store for `building` and `floor`.
#[derive(Clone, PartialEq, Eq)]
pub struct NewFloorPlan {
    pub building: String,
    pub floor: String,
    /// The receiver's PNG encoding.
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// Hex SHA-256 of `png`: the image's version in its URL.
    pub sha256: String,
    pub at: OffsetDateTime,
}

/// The image bytes are left out: a log line or a test failure never prints megabytes.
impl std::fmt::Debug for NewFloorPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewFloorPlan")
            .field("building", &self.building)
            .field("floor", &self.floor)
            .field("png_bytes", &self.png.len())
            .field("width", &self.width)
            .field("height", &self.height)
            .field("sha256", &self.sha256)
            .field("at", &self.at)
            .finish()
    }
}

/// A stored plan without its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloorPlanRecord {
    pub id: i64,
    pub building: String,
    pub floor: String,
    pub width: u32,
    pub height: u32,
    pub sha256: String,
    pub png_bytes: u64,
    pub uploaded_at: OffsetDateTime,
    pub uploaded_by: String,
}

/// What a stored upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloorPlanPut {
    pub id: i64,
    /// A plan of that building and floor existed and was replaced (its rooms stay placed).
    pub replaced: bool,
}

/// A room's position on a plan, as fractions (0 to 1) of the image's width and height from its
/// top left corner.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomPlacement {
    pub plan_id: i64,
    pub room: String,
    pub x: f64,
    pub y: f64,
    pub placed_at: OffsetDateTime,
    pub placed_by: String,
}

/// Floor plans and their room placements. Every write is audited in its own transaction.
pub trait FloorPlanStore: Send + Sync {
    /// Every plan (without images), by building then floor.
    fn floor_plans(&self) -> StoreFuture<'_, Vec<FloorPlanRecord>>;
    /// The plan with this id (without its image).
    fn floor_plan(&self, id: i64) -> StoreFuture<'_, Option<FloorPlanRecord>>;
    /// The stored PNG of plan `id`.
    fn floor_plan_png(&self, id: i64) -> StoreFuture<'_, Option<Vec<u8>>>;
    /// Stores the plan of its building and floor, replacing the image of an existing one (its
    /// placements are kept), audited as `floorplan.upload` or `floorplan.replace`.
    fn put_floor_plan<'a>(
        &'a self,
        plan: NewFloorPlan,
        actor: &'a str,
    ) -> StoreFuture<'a, FloorPlanPut>;
    /// Deletes plan `id` and its placements, audited as `floorplan.delete`; `false` when there
    /// was none.
    fn delete_floor_plan<'a>(
        &'a self,
        id: i64,
        actor: &'a str,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, bool>;
    /// Every placement of every plan, by plan then room.
    fn room_placements(&self) -> StoreFuture<'_, Vec<RoomPlacement>>;
    /// Places (or moves) `room` on plan `placement.plan_id`, audited as `floorplan.place`;
    /// `false`, nothing written, when there is no such plan. `x` and `y` must be within 0..=1.
    fn place_room<'a>(&'a self, placement: RoomPlacement, actor: &'a str) -> StoreFuture<'a, bool>;
    /// Removes `room`'s placement from plan `plan_id`, audited as `floorplan.unplace`; `false`
    /// when it was not placed there.
    fn remove_room_placement<'a>(
        &'a self,
        plan_id: i64,
        room: &'a str,
        actor: &'a str,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, bool>;
}
