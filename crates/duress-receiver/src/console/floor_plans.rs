//! `/admin/floorplans` (and `?plan=ID`, one plan's editor): admins upload a floor-plan image per building and floor, replace or
//! delete it, and place rooms on it (docs/console.md, "Floor plans"); and `GET
//! /floorplans/{id}/image`, the stored image for every signed-in console user.
//!
//! The upload is the one console request whose body is not a form: the page script sends the
//! file's bytes as they are (`POST /api/admin/floorplans?building=…&floor=…`, the CSRF token in
//! `X-CSRF-Token`), so the guard never buffers it to look for a form field, and this handler
//! stops reading at [`MAX_UPLOAD_BYTES`]. It answers JSON (201) or problem+json, which the page
//! shows. Checking and re-encoding is [`crate::floor_plan_image`]; one upload is decoded at a
//! time (a decode may take hundreds of megabytes), on a blocking thread. Every change is audited
//! by the store in its transaction. What officers see of the plans is
//! [`super::floor_plan_marks`].

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use futures::StreamExt as _;
use serde::Deserialize;
use sha2::Digest as _;
use tokio::sync::Semaphore;

use super::error::{ConsoleError, ConsoleResult};
use super::floor_plan_marks::{FloorPlanMarks, Marker, PlanImage, plan_label, same_key};
use super::pages::{Layout, error_page, render_status};
use super::{Console, CurrentUser};
use crate::api::receiver_now;
use crate::floor_plan_image::{MAX_UPLOAD_BYTES, PlanRefusal, check_and_reencode};
use crate::store::{FloorPlanRecord, NewFloorPlan, RoomPlacement};

/// One decode at a time: an accepted 8000 × 8000 plan needs a few hundred megabytes.
static DECODING: Semaphore = Semaphore::const_new(1);

/// A building, floor or room key as admins type it: trimmed, not empty, the location fields'
/// own limits (`duress_core::Location::validate`).
fn key(name: &str, value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("Give the {name}."));
    }
    if value.chars().count() > duress_core::location::MAX_FIELD_CHARS {
        return Err(format!(
            "The {name} is longer than {} characters.",
            duress_core::location::MAX_FIELD_CHARS
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("The {name} contains a control character."));
    }
    Ok(value.to_owned())
}

fn problem(status: StatusCode, kind: &str, title: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": format!("urn:duress:problem:floor-plan-{kind}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(duress_core::PROBLEM_CONTENT_TYPE),
    );
    r
}

fn refused(refusal: &PlanRefusal) -> Response {
    let status = match refusal {
        PlanRefusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        PlanRefusal::Markup | PlanRefusal::WrongType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    problem(
        status,
        refusal.code(),
        "Floor plan refused",
        &refusal.to_string(),
    )
}

/// Reads at most [`MAX_UPLOAD_BYTES`]: a longer body is refused when its `Content-Length`
/// says so, or as soon as the bytes read pass the limit (a chunked body), never buffered whole.
async fn read_limited(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Response> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_UPLOAD_BYTES as u64) {
        return Err(refused(&PlanRefusal::TooLarge));
    }
    let mut bytes = Vec::with_capacity(
        declared
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
            .min(MAX_UPLOAD_BYTES),
    );
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            problem(
                StatusCode::BAD_REQUEST,
                "interrupted",
                "Upload interrupted",
                "The upload did not arrive whole. Try again.",
            )
        })?;
        if bytes.len() + chunk.len() > MAX_UPLOAD_BYTES {
            return Err(refused(&PlanRefusal::TooLarge));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    #[serde(default)]
    building: String,
    #[serde(default)]
    floor: String,
}

/// `POST /api/admin/floorplans?building=…&floor=…`: the body is the image file. Stores (or
/// replaces) the plan of that building and floor; 201 `{"id", "replaced", "url"}`.
pub async fn upload(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ConsoleResult {
    let fields = key("building", &q.building).and_then(|b| Ok((b, key("floor", &q.floor)?)));
    let (mut building, mut floor) = match fields {
        Ok(f) => f,
        Err(e) => {
            return Ok(problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "fields",
                "Floor plan refused",
                &e,
            ));
        }
    };
    let bytes = match read_limited(&headers, body).await {
        Ok(b) => b,
        Err(refusal) => return Ok(refusal),
    };
    let checked = {
        let _turn = DECODING
            .acquire()
            .await
            .map_err(|e| ConsoleError::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || check_and_reencode(&bytes))
            .await
            .map_err(|e| ConsoleError::Internal(format!("floor plan decoding: {e}")))?
    };
    let checked = match checked {
        Ok(c) => c,
        Err(refusal) => {
            tracing::warn!(user = %user.username, reason = refusal.code(), "refused: floor plan upload");
            return Ok(refused(&refusal));
        }
    };
    // The building and floor as first spelled: "main hall" replaces "Main Hall"'s plan.
    if let Some(existing) = console
        .store
        .floor_plans()
        .await?
        .into_iter()
        .find(|p| same_key(&p.building, &building) && same_key(&p.floor, &floor))
    {
        building = existing.building;
        floor = existing.floor;
    }
    let sha256 = hex::encode(sha2::Sha256::digest(&checked.png));
    let put = console
        .store
        .put_floor_plan(
            NewFloorPlan {
                building,
                floor,
                png: checked.png,
                width: checked.width,
                height: checked.height,
                sha256,
                at: receiver_now(),
            },
            &user.username,
        )
        .await?;
    let body = serde_json::json!({
        "id": put.id,
        "replaced": put.replaced,
        "url": format!("/admin/floorplans?plan={}", put.id),
    });
    let mut r = (StatusCode::CREATED, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// `GET /floorplans/{id}/image`: the stored PNG, for officers, admins and duty displays. The
/// router adds the console's security headers (CSP, `nosniff`); the URL carries the image's
/// version, so it may stay in the browser's private cache.
pub async fn image(State(console): State<Arc<Console>>, Path(id): Path<String>) -> ConsoleResult {
    let id: i64 = id
        .parse()
        .map_err(|_| ConsoleError::NotFound("There is no such floor plan."))?;
    let png = console
        .store
        .floor_plan_png(id)
        .await?
        .ok_or(ConsoleError::NotFound("There is no such floor plan."))?;
    let mut r = png.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("inline; filename=\"floor-plan.png\""),
    );
    Ok(r)
}

/// Buildings, floors and rooms the receiver knows from stations (registered, else reported
/// location) and desk phones: suggestions for the forms.
#[derive(Debug, Default)]
struct KnownPlaces {
    /// (building, floor, room), each possibly empty.
    places: Vec<(String, String, String)>,
}

impl KnownPlaces {
    async fn load(console: &Console) -> ConsoleResult<Self> {
        let mut places = Vec::new();
        let text = |v: &Option<String>| v.as_deref().unwrap_or("").trim().to_owned();
        for d in console.store.list_devices().await? {
            let l = d.registered_location.as_ref().unwrap_or(&d.location);
            places.push((text(&l.bld), text(&l.flr), text(&l.room)));
        }
        for p in console.store.phones().await? {
            places.push((text(&p.building), text(&p.floor), text(&p.room)));
        }
        Ok(KnownPlaces { places })
    }

    fn distinct(mut values: Vec<String>) -> Vec<String> {
        values.retain(|v| !v.is_empty());
        values.sort_by_key(|v| v.to_lowercase());
        values.dedup_by(|a, b| same_key(a, b));
        values
    }

    fn buildings(&self) -> Vec<String> {
        Self::distinct(self.places.iter().map(|p| p.0.clone()).collect())
    }

    fn floors(&self) -> Vec<String> {
        Self::distinct(self.places.iter().map(|p| p.1.clone()).collect())
    }

    fn rooms_of(&self, building: &str, floor: &str) -> Vec<String> {
        Self::distinct(
            self.places
                .iter()
                .filter(|p| same_key(&p.0, building) && same_key(&p.1, floor))
                .map(|p| p.2.clone())
                .collect(),
        )
    }
}

/// A plan in the list.
#[derive(Debug)]
struct PlanRow {
    plan: FloorPlanRecord,
    label: String,
    rooms_placed: usize,
    uploaded_at: super::pages::Ts,
}

#[derive(Debug, Template)]
#[template(path = "floor_plans.html")]
struct FloorPlansPage {
    layout: Layout,
    plans: Vec<PlanRow>,
    buildings: Vec<String>,
    floors: Vec<String>,
    /// The upload form's fixed building and floor (none here: a new plan).
    replace: Option<FloorPlanRecord>,
    max_mb: usize,
    max_side: u32,
}

#[derive(Debug, Deserialize)]
pub struct PlanQuery {
    /// A plan's id: its editor instead of the list.
    plan: Option<String>,
}

/// `GET /admin/floorplans`: the plans and the upload form; `?plan=ID`: that plan's editor
/// (the image, its placed rooms, the form to place one, replace and delete).
pub async fn list(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Query(q): Query<PlanQuery>,
) -> ConsoleResult {
    if let Some(id) = q.plan {
        return plan_page(&console, &user, plan_id(&id)?, StatusCode::OK, None).await;
    }
    let known = KnownPlaces::load(&console).await?;
    let placements = console.store.room_placements().await?;
    let plans = console
        .store
        .floor_plans()
        .await?
        .into_iter()
        .map(|plan| PlanRow {
            label: plan_label(&plan),
            rooms_placed: placements.iter().filter(|p| p.plan_id == plan.id).count(),
            uploaded_at: super::pages::Ts::new(plan.uploaded_at),
            plan,
        })
        .collect();
    Ok(render_status(
        StatusCode::OK,
        &FloorPlansPage {
            layout: Layout::new(&user, "floorplans", "Floor plans"),
            plans,
            buildings: known.buildings(),
            floors: known.floors(),
            replace: None,
            max_mb: MAX_UPLOAD_BYTES / (1024 * 1024),
            max_side: crate::floor_plan_image::MAX_SIDE,
        },
    ))
}

/// A placed room on the editor.
#[derive(Debug)]
struct PlacedRoom {
    room: String,
    marker: Marker,
    placed_by: String,
}

#[derive(Debug, Template)]
#[template(path = "floor_plan.html")]
struct FloorPlanPage {
    layout: Layout,
    plan: FloorPlanRecord,
    label: String,
    image: PlanImage,
    placed: Vec<PlacedRoom>,
    /// Known rooms of this building and floor not placed yet.
    unplaced: Vec<String>,
    error: Option<String>,
    /// The upload form replaces this plan's image.
    replace: Option<FloorPlanRecord>,
    max_mb: usize,
}

fn plan_id(id: &str) -> ConsoleResult<i64> {
    id.parse()
        .map_err(|_| ConsoleError::NotFound("There is no such floor plan."))
}

async fn plan_page(
    console: &Console,
    user: &CurrentUser,
    id: i64,
    status: StatusCode,
    error: Option<String>,
) -> ConsoleResult {
    let plan = console
        .store
        .floor_plan(id)
        .await?
        .ok_or(ConsoleError::NotFound("There is no such floor plan."))?;
    let marks = FloorPlanMarks::load(console.store.as_ref()).await?;
    let placements: Vec<RoomPlacement> = console
        .store
        .room_placements()
        .await?
        .into_iter()
        .filter(|p| p.plan_id == id)
        .collect();
    let known = KnownPlaces::load(console).await?;
    let unplaced = known
        .rooms_of(&plan.building, &plan.floor)
        .into_iter()
        .filter(|r| marks.placement(id, r).is_none())
        .collect();
    let placed = placements
        .into_iter()
        .map(|p| PlacedRoom {
            marker: Marker::at(&plan, p.x, p.y),
            room: p.room,
            placed_by: p.placed_by,
        })
        .collect();
    Ok(render_status(
        status,
        &FloorPlanPage {
            layout: Layout::new(
                user,
                "floorplans",
                format!("Floor plan {}", plan_label(&plan)),
            ),
            label: plan_label(&plan),
            image: PlanImage::of(&plan),
            replace: Some(plan.clone()),
            plan,
            placed,
            unplaced,
            error,
            max_mb: MAX_UPLOAD_BYTES / (1024 * 1024),
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct PlaceForm {
    #[serde(default)]
    room: String,
    #[serde(default)]
    x: String,
    #[serde(default)]
    y: String,
}

fn fraction(name: &str, value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "The room's {name} position must be a fraction from 0 to 1: click the plan where the room is."
        )),
    }
}

/// `POST /admin/floorplans/{id}/places`: places (or moves) a room, audited.
pub async fn place(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
    Form(form): Form<PlaceForm>,
) -> ConsoleResult {
    let id = plan_id(&id)?;
    let checked = key("room", &form.room)
        .and_then(|room| Ok((room, fraction("x", &form.x)?, fraction("y", &form.y)?)));
    let (mut room, x, y) = match checked {
        Ok(c) => c,
        Err(e) => {
            return plan_page(
                &console,
                &user,
                id,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(e),
            )
            .await;
        }
    };
    // Moving "room 114" moves the placed "114"'s row, not a second marker.
    if let Some(existing) = FloorPlanMarks::load(console.store.as_ref())
        .await?
        .placement(id, &room)
    {
        room = existing.room.clone();
    }
    let placed = console
        .store
        .place_room(
            RoomPlacement {
                plan_id: id,
                room,
                x,
                y,
                placed_at: receiver_now(),
                placed_by: user.username.clone(),
            },
            &user.username,
        )
        .await?;
    if !placed {
        return Err(ConsoleError::NotFound("There is no such floor plan."));
    }
    Ok(Redirect::to(&format!("/admin/floorplans?plan={id}")).into_response())
}

#[derive(Debug, Deserialize)]
pub struct RoomForm {
    #[serde(default)]
    room: String,
}

/// `POST /admin/floorplans/{id}/places/remove`: removes a room's placement, audited.
pub async fn unplace(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
    Form(form): Form<RoomForm>,
) -> ConsoleResult {
    let id = plan_id(&id)?;
    if console
        .store
        .remove_room_placement(id, form.room.trim(), &user.username, receiver_now())
        .await?
    {
        Ok(Redirect::to(&format!("/admin/floorplans?plan={id}")).into_response())
    } else {
        Ok(error_page(
            StatusCode::NOT_FOUND,
            "Not placed",
            "This room is not placed on this floor plan.",
        ))
    }
}

/// `POST /admin/floorplans/{id}/delete`: deletes the plan and its placements, audited.
pub async fn delete(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> ConsoleResult {
    let id = plan_id(&id)?;
    if console
        .store
        .delete_floor_plan(id, &user.username, receiver_now())
        .await?
    {
        Ok(Redirect::to("/admin/floorplans").into_response())
    } else {
        Err(ConsoleError::NotFound("There is no such floor plan."))
    }
}
