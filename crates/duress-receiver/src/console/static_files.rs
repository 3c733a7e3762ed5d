//! The console's CSS and JS, embedded at compile time: the console works with no network
//! beyond the receiver itself, and a deployed binary cannot serve a stale or altered asset.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const FILES: &[(&str, &str, &[u8])] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("static/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/console.js"),
    ),
    (
        "floor_plans.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/floor_plans.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("static/favicon.svg"),
    ),
];

pub async fn serve(Path(file): Path<String>) -> Response {
    let Some((_, content_type, bytes)) = FILES.iter().find(|(name, _, _)| *name == file) else {
        return super::pages::not_found_page();
    };
    let mut r = bytes.to_vec().into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated on every load: a receiver upgrade takes effect at the next page load.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
