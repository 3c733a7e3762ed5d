//! The console's CSS, JS, icons and web-app manifest, embedded at compile time: the console
//! works with no network beyond the receiver itself, and a deployed binary cannot serve a
//! stale or altered asset. The PNG icons are rendered from `favicon.svg` by
//! `tests/console/render-icons.js` (committed, so they can be regenerated).

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
    (
        "icon-192.png",
        "image/png",
        include_bytes!("static/icon-192.png"),
    ),
    (
        "icon-512.png",
        "image/png",
        include_bytes!("static/icon-512.png"),
    ),
    (
        "icon-maskable-512.png",
        "image/png",
        include_bytes!("static/icon-maskable-512.png"),
    ),
    (
        "apple-touch-icon.png",
        "image/png",
        include_bytes!("static/apple-touch-icon.png"),
    ),
];

/// The web-app manifest (installable console, docs/console.md "Phones on patrol"). Served at
/// `/manifest.webmanifest`, outside `/static`, because a manifest's default scope is its own
/// directory's and the app's scope is the whole console.
const MANIFEST: &[u8] = include_bytes!("static/manifest.webmanifest");

fn embedded(content_type: &'static str, bytes: &'static [u8]) -> Response {
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated on every load: a receiver upgrade takes effect at the next page load.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub async fn serve(Path(file): Path<String>) -> Response {
    let Some((_, content_type, bytes)) = FILES.iter().find(|(name, _, _)| *name == file) else {
        return super::pages::not_found_page();
    };
    embedded(content_type, bytes)
}

/// `GET /manifest.webmanifest`. Public like the static files: browsers fetch a manifest
/// without cookies (credentials mode "omit"), and it holds nothing but names and colours.
pub async fn manifest() -> Response {
    embedded("application/manifest+json", MANIFEST)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Proves the manifest parses, names what installing needs (name, standalone, scope,
    /// start URL, colours), and that every icon it lists is one of the embedded files, with
    /// the content type the manifest claims and (for PNGs) the size it claims.
    #[test]
    fn the_manifest_lists_only_embedded_icons_of_the_right_type_and_size() {
        let m: serde_json::Value = serde_json::from_slice(MANIFEST).unwrap();
        assert_eq!(m["name"], "Duress console");
        assert_eq!(m["display"], "standalone");
        assert_eq!(m["start_url"], "/");
        assert_eq!(m["scope"], "/");
        assert!(m["short_name"].as_str().is_some_and(|s| s.len() <= 12));
        assert!(
            m["theme_color"]
                .as_str()
                .is_some_and(|c| c.starts_with('#'))
        );
        assert!(m["background_color"].as_str().is_some());
        let icons = m["icons"].as_array().unwrap();
        let mut purposes = Vec::new();
        for icon in icons {
            let src = icon["src"].as_str().unwrap();
            let name = src.strip_prefix("/static/").unwrap();
            let (_, content_type, bytes) = FILES
                .iter()
                .find(|(n, _, _)| *n == name)
                .unwrap_or_else(|| panic!("{src} is not embedded"));
            assert_eq!(icon["type"], *content_type, "{src}");
            if *content_type == "image/png" {
                // PNG: signature, then the IHDR chunk with width and height (big-endian).
                assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{src}");
                let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
                let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
                assert_eq!(icon["sizes"], format!("{width}x{height}"), "{src}");
            }
            purposes.push(format!(
                "{} {}",
                icon["sizes"].as_str().unwrap(),
                icon["purpose"].as_str().unwrap()
            ));
        }
        for wanted in ["192x192 any", "512x512 any", "512x512 maskable", "any any"] {
            assert!(
                purposes.iter().any(|p| p == wanted),
                "{wanted}: {purposes:?}"
            );
        }
    }
}
