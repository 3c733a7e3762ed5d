//! Floor plans (issue 17, item 4) through the real console routes, on the backend the harness
//! runs (`DURESS_TEST_DATABASE`): the upload's checks (type by content, size before the body
//! is read whole, dimensions from the header before decoding, SVG refused), the re-encoding
//! that drops every chunk and metadata block, who may upload and see plans, and the room
//! marked on the board and the incident page.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Cursor;

use common::Harness;
use common::console::{Console, add_user, form};
use duress_core::{EventAck, EventKind, Location};
use duress_receiver::store::Role;

/// A plan image: a white `w`×`h` RGB picture with a dark wall, encoded by the `image` crate.
fn plan_image(w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
    let pixels = image::RgbImage::from_fn(w, h, |x, _| {
        if x == w / 2 {
            image::Rgb([20, 20, 20])
        } else {
            image::Rgb([250, 250, 250])
        }
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(pixels)
        .write_to(&mut Cursor::new(&mut out), format)
        .unwrap();
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(bytes)
}

/// A PNG chunk: length, type, data, CRC of type and data.
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(data.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut covered = kind.to_vec();
    covered.extend_from_slice(data);
    out.extend_from_slice(&crc32(&covered).to_be_bytes());
    out
}

/// `png` with `extra` chunks inserted right after IHDR (hostile text, fake EXIF).
fn with_chunks(png: &[u8], extra: &[Vec<u8>]) -> Vec<u8> {
    let after_ihdr = 8 + 8 + 13 + 4;
    let mut out = png[..after_ihdr].to_vec();
    for c in extra {
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&png[after_ihdr..]);
    out
}

/// A small, well-formed PNG whose header claims `w`×`h` pixels (a decompression bomb's
/// shape: a few hundred bytes that would need tens of gigabytes decoded).
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(chunk(b"IHDR", &ihdr));
    // A zlib stream of zeros: what a bomb carries (here short: the header is what is judged).
    out.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    ));
    out.extend(chunk(b"IEND", &[]));
    out
}

/// A JPEG carrying an EXIF block with a GPS position (APP1 right after SOI).
fn jpeg_with_gps() -> Vec<u8> {
    let jpeg = plan_image(120, 80, image::ImageFormat::Jpeg);
    let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
    exif.extend_from_slice(b"GPSLatitude 44.9537 N GPSLongitude 93.0900 W secret-gps-marker");
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&u16::try_from(exif.len() + 2).unwrap().to_be_bytes());
    app1.extend_from_slice(&exif);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A 1×1 GIF (GIF89a), as a browser would send one.
const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

const SVG: &[u8] = br#"<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><script>fetch('/admin/users')</script><rect width="100" height="100"/></svg>"#;

/// An answer of the upload route.
struct Upload {
    status: u16,
    content_type: String,
    json: serde_json::Value,
}

/// `POST /api/admin/floorplans` as the page script sends it: the file's bytes, the CSRF token
/// in `X-CSRF-Token`.
async fn upload(c: &Console, building: &str, floor: &str, bytes: Vec<u8>) -> Upload {
    let mut rb = c
        .client
        .post(format!(
            "{}/api/admin/floorplans?{}",
            c.base,
            form(&[("building", building), ("floor", floor)])
        ))
        .header("x-csrf-token", &c.csrf)
        .header("content-type", "application/octet-stream")
        .body(bytes);
    if let Some(cookie) = &c.cookie {
        rb = rb.header("cookie", cookie);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Upload {
        status,
        content_type,
        json,
    }
}

/// The image URL (`/floorplans/ID/image?v=…`) a page shows.
fn image_url(html: &str) -> String {
    let start = html
        .find("href=\"/floorplans/")
        .expect("a plan image on the page")
        + 6;
    html[start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&")
}

async fn floor_plan_audit(h: &Harness) -> Vec<String> {
    let store = duress_receiver::store::open(&h.data_dir()).await.unwrap();
    let entries = store.audit_log().await.unwrap();
    store.close().await;
    entries
        .into_iter()
        .filter(|e| e.action.starts_with("floorplan"))
        .map(|e| format!("{} {} {}", e.actor, e.action, e.subject))
        .collect()
}

/// Proves a valid PNG and a valid JPEG are accepted, stored as the receiver's own PNG of the
/// same size (the upload's text chunk and the JPEG's EXIF GPS block are gone), served only to
/// signed-in users as exactly `image/png` with the console's security headers and a private
/// cache, that a second upload for the same building and floor (in other case) replaces the
/// first, and that each is audited.
#[tokio::test]
async fn valid_png_and_jpeg_are_accepted_reencoded_and_served_with_the_consoles_headers() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "ada", Role::Admin).await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let admin = Console::sign_in(&h, "ada").await;

    let png = with_chunks(
        &plan_image(300, 200, image::ImageFormat::Png),
        &[
            chunk(b"tEXt", b"Comment\0hostile-text-chunk <script>"),
            chunk(b"eXIf", b"MM\0\x2a\0\0\0\x08 secret-gps-marker"),
        ],
    );
    let first = upload(&admin, "Main Hall", "1", png.clone()).await;
    assert_eq!(first.status, 201, "{:?}", first.json);
    assert_eq!(first.json["replaced"], false);
    let editor = admin.get(first.json["url"].as_str().unwrap()).await;
    assert_eq!(editor.status, 200);
    let url = image_url(&editor.text());

    let officer = Console::sign_in(&h, "olivia").await;
    let (served, headers) = officer.get_response(&url).await;
    assert_eq!(served.status, 200);
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'")
    );
    assert!(
        headers["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private")
    );
    assert_ne!(served.body, png, "re-encoded, not the uploaded bytes");
    let decoded =
        image::load_from_memory_with_format(&served.body, image::ImageFormat::Png).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (300, 200));
    let served_text = String::from_utf8_lossy(&served.body);
    assert!(!served_text.contains("hostile-text-chunk"));
    assert!(!served_text.contains("secret-gps-marker"));
    assert!(!served.body.windows(4).any(|w| w == b"tEXt" || w == b"eXIf"));

    // Signed out: no image (the console's sign-in redirect, nothing served).
    let anonymous = Console::anonymous(&h);
    let refused = anonymous.get(&url).await;
    assert_eq!(refused.status, 303);
    assert!(refused.body.is_empty());

    // A JPEG with EXIF GPS, for the same floor in other case: replaces the plan.
    let jpeg = jpeg_with_gps();
    assert!(String::from_utf8_lossy(&jpeg).contains("secret-gps-marker"));
    let second = upload(&admin, " main hall ", "1", jpeg).await;
    assert_eq!(second.status, 201, "{:?}", second.json);
    assert_eq!(second.json["replaced"], true);
    assert_eq!(second.json["id"], first.json["id"]);
    let editor = admin.get(second.json["url"].as_str().unwrap()).await.text();
    assert!(editor.contains("Floor plan: Main Hall floor 1"), "{editor}");
    let url = image_url(&editor);
    let served = officer.get(&url).await;
    assert_eq!(served.content_type, "image/png");
    assert!(served.body.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(!String::from_utf8_lossy(&served.body).contains("secret-gps-marker"));
    assert!(!served.body.windows(4).any(|w| w == b"Exif"));
    let decoded = image::load_from_memory(&served.body).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (120, 80));

    assert_eq!(
        floor_plan_audit(&h).await,
        [
            "ada floorplan.upload floor plan Main Hall / 1",
            "ada floorplan.replace floor plan Main Hall / 1",
        ]
    );
    h.shutdown().await;
}

/// Proves hostile and wrong uploads are refused with a clear problem+json message and nothing
/// stored or audited: text, a GIF, a PDF, an SVG carrying a script, a PNG whose header claims
/// 100 000 × 100 000 px (refused from its header, before any decoding), a body over 10 MB
/// (refused from its `Content-Length`, before it is read), an empty file, and a missing floor.
#[tokio::test]
async fn hostile_uploads_are_refused_clearly_and_nothing_is_stored() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "ada", Role::Admin).await;
    let admin = Console::sign_in(&h, "ada").await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "text",
            b"Main Hall floor 1: rooms 101-120".to_vec(),
            415,
            "This file is text, not a PNG, JPEG or WebP image",
        ),
        (
            "GIF",
            GIF.to_vec(),
            415,
            "This file is a GIF image, not a PNG, JPEG or WebP image",
        ),
        (
            "PDF",
            b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF".to_vec(),
            415,
            "This file is a PDF document, not a PNG, JPEG or WebP image",
        ),
        (
            "SVG with script",
            SVG.to_vec(),
            415,
            "SVG and other markup files are not accepted (an SVG can carry script)",
        ),
        (
            "huge dimensions",
            png_claiming(100_000, 100_000),
            422,
            "The image is 100000 × 100000 px: a floor plan may be at most 8000 × 8000 px.",
        ),
        (
            "oversized body",
            vec![0u8; 10 * 1024 * 1024 + 1],
            413,
            "The file is larger than 10 MB",
        ),
        ("empty", Vec::new(), 422, "The file is empty"),
    ];
    for (what, bytes, status, message) in cases {
        let answer = upload(&admin, "Main Hall", "1", bytes).await;
        assert_eq!(answer.status, status, "{what}: {:?}", answer.json);
        assert_eq!(answer.content_type, "application/problem+json", "{what}");
        let detail = answer.json["detail"].as_str().unwrap();
        assert!(detail.contains(message), "{what}: {detail}");
        assert!(
            answer.json["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:duress:problem:floor-plan-"),
            "{what}"
        );
    }
    let no_floor = upload(
        &admin,
        "Main Hall",
        " ",
        plan_image(10, 10, image::ImageFormat::Png),
    )
    .await;
    assert_eq!(no_floor.status, 422);
    assert_eq!(no_floor.json["detail"], "Give the floor.");

    let list = admin.get("/admin/floorplans").await.text();
    assert!(list.contains("No floor plan yet"), "{list}");
    assert!(floor_plan_audit(&h).await.is_empty());
    h.shutdown().await;
}

/// Proves only admins upload, place and delete: an officer is refused (403) and a request
/// without a session gets 401 problem+json; a wrong CSRF token is refused; nothing is stored.
#[tokio::test]
async fn non_admins_cannot_upload_place_or_delete() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "ada", Role::Admin).await;
    add_user(h.data_dir(), "olivia", Role::Officer).await;
    let officer = Console::sign_in(&h, "olivia").await;
    let png = plan_image(40, 30, image::ImageFormat::Png);
    assert_eq!(upload(&officer, "A", "2", png.clone()).await.status, 403);
    let anonymous = Console::anonymous(&h);
    let answer = upload(&anonymous, "A", "2", png.clone()).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.content_type, "application/problem+json");
    let mut forged = Console::sign_in(&h, "ada").await;
    forged.csrf = "not-the-token".into();
    assert_eq!(upload(&forged, "A", "2", png.clone()).await.status, 403);
    assert!(floor_plan_audit(&h).await.is_empty());

    let admin = Console::sign_in(&h, "ada").await;
    let put = upload(&admin, "A", "2", png).await;
    assert_eq!(put.status, 201);
    let id = put.json["id"].as_i64().unwrap();
    let placed = officer
        .post_form(
            &format!("/admin/floorplans/{id}/places"),
            &[("room", "214"), ("x", "0.5"), ("y", "0.5")],
        )
        .await;
    assert_eq!(placed.status, 403);
    let deleted = officer
        .post_form(&format!("/admin/floorplans/{id}/delete"), &[])
        .await;
    assert_eq!(deleted.status, 403);
    assert_eq!(officer.get("/admin/floorplans").await.status, 403);
    assert_eq!(
        floor_plan_audit(&h).await,
        ["ada floorplan.upload floor plan A / 2"]
    );
    h.shutdown().await;
}

fn at_room(room: &str) -> Location {
    Location {
        room: Some(room.into()),
        label: Some(format!("Bldg A, Floor 2, Room {room}")),
        ..common::location()
    }
}

/// Proves a room placed by an admin is marked on the board and the incident page of an alarm
/// from that room (at the placed fractions of the image, with the accessible text), that an
/// alarm from an unplaced room says "No floor plan position for this room", that a position
/// outside the image is refused, that removing the placement and deleting the plan are shown
/// in words, and that each change is audited.
#[tokio::test]
async fn a_placed_room_is_marked_on_the_board_and_the_incident_page() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "ada", Role::Admin).await;
    let admin = Console::sign_in(&h, "ada").await;
    let put = upload(
        &admin,
        "A",
        "2",
        plan_image(400, 200, image::ImageFormat::Png),
    )
    .await;
    assert_eq!(put.status, 201);
    let id = put.json["id"].as_i64().unwrap();
    let places = format!("/admin/floorplans/{id}/places");
    let outside = admin
        .post_form(&places, &[("room", "214"), ("x", "1.5"), ("y", "0.5")])
        .await;
    assert_eq!(outside.status, 422);
    assert!(outside.text().contains("must be a fraction from 0 to 1"));
    let placed = admin
        .post_form(&places, &[("room", "214"), ("x", "0.25"), ("y", "0.75")])
        .await;
    assert_eq!(placed.status, 303, "{}", placed.text());

    let mut agent = h.enrolled_agent().await;
    let mut event = agent.event(EventKind::Duress);
    event.location = at_room("214");
    let ack: EventAck = h.post("/v1/events", agent.sign_event(&event)).await.json();
    let incident = ack.incident_id.unwrap();
    let label = "aria-label=\"Room 214 on floor plan of A floor 2\"";
    // At the placed fractions of the 400 × 200 image: (100, 150) in its pixels.
    let marker = "class=\"floor-plan-marker\" cx=\"100.0\" cy=\"150.0\"";
    let board = admin.get("/api/board").await.text();
    assert!(board.contains(label), "{board}");
    assert!(board.contains(marker), "{board}");
    let page = admin.get(&format!("/incidents/{incident}")).await.text();
    assert!(page.contains(label), "{page}");
    assert!(page.contains(marker), "{page}");
    assert!(!page.contains(" style=\""), "no inline style");

    let other_agent_ack: EventAck = {
        let mut second = h.enrolled_agent().await;
        let mut e = second.event(EventKind::Duress);
        e.location = at_room("999");
        h.post("/v1/events", second.sign_event(&e)).await.json()
    };
    let unplaced = admin
        .get(&format!(
            "/incidents/{}",
            other_agent_ack.incident_id.unwrap()
        ))
        .await
        .text();
    assert!(
        unplaced.contains("No floor plan position for this room (Room 999)."),
        "{unplaced}"
    );
    assert!(unplaced.contains("data-floor-plan=\"unplaced\""));

    let removed = admin
        .post_form(&format!("{places}/remove"), &[("room", "214")])
        .await;
    assert_eq!(removed.status, 303);
    let page = admin.get(&format!("/incidents/{incident}")).await.text();
    assert!(page.contains("No floor plan position for this room (Room 214)."));

    let deleted = admin
        .post_form(&format!("/admin/floorplans/{id}/delete"), &[])
        .await;
    assert_eq!(deleted.status, 303);
    let page = admin.get(&format!("/incidents/{incident}")).await.text();
    assert!(
        page.contains("No floor plan for this floor (A floor 2)."),
        "{page}"
    );
    assert!(
        !admin.get("/api/board").await.text().contains("floor-plan"),
        "no plans at all: the board shows none"
    );
    assert_eq!(
        floor_plan_audit(&h).await,
        [
            "ada floorplan.upload floor plan A / 2",
            "ada floorplan.place floor plan A / 2",
            "ada floorplan.unplace floor plan A / 2",
            "ada floorplan.delete floor plan A / 2",
        ]
    );
    h.shutdown().await;
}
