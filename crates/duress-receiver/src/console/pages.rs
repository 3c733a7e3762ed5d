//! What every page shares: the layout's data, timestamps, rendering and error pages.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use super::CurrentUser;
use crate::store::{format_ts, parse_ts};

/// The header and navigation of every signed-in page.
#[derive(Debug, Clone)]
pub struct Layout {
    pub username: String,
    pub admin: bool,
    pub csrf: String,
    /// Which navigation entry is current.
    pub nav: &'static str,
    pub title: String,
    /// The newest console event when the page was rendered: the stream resumes after it.
    pub last_event_id: i64,
    /// The trouble banner (`notify::watch`): shown on every page while not empty.
    pub trouble: Vec<String>,
    /// A duty display's page: board only, nothing to act with.
    pub display: bool,
}

impl Layout {
    pub fn new(user: &CurrentUser, nav: &'static str, title: impl Into<String>) -> Self {
        Layout {
            username: user.username.clone(),
            admin: user.is_admin(),
            csrf: user.csrf.clone(),
            nav,
            title: title.into(),
            last_event_id: 0,
            trouble: user.trouble.clone(),
            display: user.display.is_some(),
        }
    }

    pub fn with_last_event_id(mut self, id: i64) -> Self {
        self.last_event_id = id;
        self
    }
}

/// A timestamp as pages show it: the stored UTC text in `datetime` (the page script shows it
/// in the officer's local time) and a readable UTC fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ts {
    pub iso: String,
    pub text: String,
}

impl Ts {
    pub fn new(t: OffsetDateTime) -> Self {
        let iso = format_ts(t);
        let text = format!("{} {} UTC", &iso[..10], &iso[11..19]);
        Ts { iso, text }
    }

    /// From stored text; unparsable text is shown as it is.
    pub fn from_text(text: &str) -> Self {
        match parse_ts(text) {
            Ok(t) => Ts::new(t),
            Err(_) => Ts {
                iso: text.to_owned(),
                text: text.to_owned(),
            },
        }
    }

    pub fn opt(text: Option<&str>) -> Option<Ts> {
        text.map(Ts::from_text)
    }
}

/// "4 s", "3 min 05 s", "2 h 10 min".
pub fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => {
            if ms < 100 {
                "< 0.1 s".to_owned()
            } else if ms < 10_000 {
                format!("{:.1} s", ms.max(0) as f64 / 1000.0)
            } else {
                format!("{s} s")
            }
        }
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

pub fn render(template: &impl Template) -> Response {
    render_status(StatusCode::OK, template)
}

pub fn render_status(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => {
            let mut r = (status, html).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        Err(e) => server_error(e),
    }
}

#[derive(Debug, Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

/// A plain page explaining a refusal or a failure.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    render_status(status, &ErrorPage { title, message })
}

/// A failure on our side: logged in full, shown without detail.
pub fn server_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console request failed");
    match (ErrorPage { title: "Something went wrong", message: "The console could not do this. Try again; if it persists, check the receiver's log." }).render() {
        Ok(html) => {
            let mut r = (StatusCode::INTERNAL_SERVER_ERROR, html).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            r
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

pub fn not_found_page() -> Response {
    error_page(StatusCode::NOT_FOUND, "Not found", "There is nothing here.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(1234), "1.2 s");
        assert_eq!(human_duration(42_000), "42 s");
        assert_eq!(human_duration(185_000), "3 min 05 s");
        assert_eq!(human_duration(7_800_000), "2 h 10 min");
    }
}
