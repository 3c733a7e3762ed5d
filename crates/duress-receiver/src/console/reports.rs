//! Reports: incidents as CSV, each incident as a printable page with its whole timeline, a
//! server-rendered SVG chart of incidents per week with the median time to claim, and the
//! time-to-claim and time-to-resolve distributions (`response_charts`), on the page and in its
//! print view (`/reports/print`).

use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::error::ConsoleError;
use super::incident_view::{IncidentView, TimelineEntry, all_incidents, incident};
use super::pages::{Layout, not_found_page, render};
use super::response_charts::Distribution;
use super::{Console, CurrentUser};
use crate::api::receiver_now;
use crate::store::parse_ts;

/// Weeks the chart covers.
const WEEKS: usize = 12;

/// One CSV cell. A cell a spreadsheet would read as a formula is prefixed with `'` (OWASP "CSV
/// injection"): its first non-blank character, after Unicode NFKC normalisation, is `=`, `+`,
/// `-`, `@`, tab or CR. Spreadsheets skip leading blanks and fold compatibility forms (a
/// full-width `＝` is an `=` to them), so the check must too. Cells with separators or quotes
/// are quoted.
pub fn csv_cell(value: &str) -> String {
    let mut v = String::with_capacity(value.len() + 2);
    if looks_like_formula(value) {
        v.push('\'');
    }
    v.push_str(value);
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

/// See [`csv_cell`]. Tab and CR count as triggers, not as blanks.
fn looks_like_formula(value: &str) -> bool {
    use unicode_normalization::UnicodeNormalization as _;
    value
        .nfkc()
        .find(|c| !c.is_whitespace() || matches!(c, '\t' | '\r'))
        .is_some_and(|c| matches!(c, '=' | '+' | '-' | '@' | '\t' | '\r'))
}

fn csv_line(cells: &[String]) -> String {
    let mut line = cells
        .iter()
        .map(|c| csv_cell(c))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

pub fn incidents_csv(incidents: &[IncidentView]) -> String {
    let mut out = csv_line(
        &[
            "incident_id",
            "status",
            "opened_at",
            "first_press_at",
            "location",
            "civic_address",
            "device_id",
            "hostname",
            "login_user",
            "source",
            "press_count",
            "delayed",
            "claimed_by",
            "time_to_claim_s",
            "escalated_at",
            "response_level",
            "called_911_at",
            "resolved_at",
            "resolved_by",
            "disposition",
            "follow_up",
        ]
        .map(String::from),
    );
    let opt = |t: &Option<super::pages::Ts>| t.as_ref().map(|t| t.iso.clone()).unwrap_or_default();
    for i in incidents {
        out.push_str(&csv_line(&[
            i.id.clone(),
            i.status.clone(),
            i.opened_at.iso.clone(),
            i.first_press.iso.clone(),
            i.label.clone(),
            i.civic.clone(),
            i.device_id.clone(),
            i.host.hostname.clone(),
            i.host.user.clone(),
            i.source.clone(),
            i.press_count.to_string(),
            i.delayed.to_string(),
            i.claimed_by.clone().unwrap_or_default(),
            i.time_to_claim_s.map(|s| s.to_string()).unwrap_or_default(),
            opt(&i.escalated_at),
            i.response_level.clone().unwrap_or_default(),
            opt(&i.called_911_at),
            opt(&i.resolved_at),
            i.resolved_by.clone().unwrap_or_default(),
            i.disposition.clone().unwrap_or_default(),
            i.follow_up.clone().unwrap_or_default(),
        ]));
    }
    out
}

/// `GET /reports/incidents.csv` (audited before it is read: no export without its entry).
pub async fn csv(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> Response {
    if let Err(e) = console
        .store
        .record_audit(
            &user.username,
            "report.export",
            "incidents.csv",
            "incidents CSV export",
        )
        .await
    {
        return ConsoleError::from(e).into_response();
    }
    match all_incidents(console.store.as_ref()).await {
        Ok(incidents) => {
            let mut r = incidents_csv(&incidents).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"duress-incidents.csv\""),
            );
            r
        }
        Err(e) => ConsoleError::from(e).into_response(),
    }
}

/// One week of the chart.
#[derive(Debug, Clone)]
pub struct WeekStat {
    /// Monday, `YYYY-MM-DD`.
    pub week: String,
    pub incidents: usize,
    /// Median seconds from opening to first claim, over the week's claimed incidents.
    pub median_claim_s: Option<i64>,
}

fn median(mut v: Vec<i64>) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    })
}

fn monday(t: OffsetDateTime) -> time::Date {
    let d = t.date();
    d - Duration::days(i64::from(d.weekday().number_days_from_monday()))
}

pub fn weekly(incidents: &[IncidentView], now: OffsetDateTime) -> Vec<WeekStat> {
    let this = monday(now);
    (0..WEEKS)
        .rev()
        .map(|back| {
            let start = this - Duration::weeks(back as i64);
            let in_week: Vec<&IncidentView> = incidents
                .iter()
                .filter(|i| parse_ts(&i.opened_at.iso).is_ok_and(|t| monday(t) == start))
                .collect();
            WeekStat {
                week: start.to_string(),
                incidents: in_week.len(),
                median_claim_s: median(in_week.iter().filter_map(|i| i.time_to_claim_s).collect()),
            }
        })
        .collect()
}

/// The bar chart, drawn here so the page needs no script or library.
pub fn chart_svg(weeks: &[WeekStat]) -> String {
    let (w, h, left, bottom, top) = (760.0_f64, 260.0_f64, 40.0_f64, 40.0_f64, 20.0_f64);
    let max = weeks.iter().map(|s| s.incidents).max().unwrap_or(0).max(1) as f64;
    let slot = (w - left - 10.0) / weeks.len().max(1) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"Incidents per week\">\
         <rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>\
         <line x1=\"{left}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#5b6470\"/>\
         <text x=\"{left}\" y=\"14\" font-family=\"sans-serif\" font-size=\"12\" fill=\"#1f2933\">max {maxi}</text>",
        y0 = h - bottom,
        x1 = w - 10.0,
        maxi = max as usize
    );
    for (i, s) in weeks.iter().enumerate() {
        let bar_h = (h - bottom - top) * s.incidents as f64 / max;
        let x = left + slot * i as f64 + slot * 0.15;
        let y = h - bottom - bar_h;
        svg.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{bar_h:.1}\" fill=\"#b42318\"><title>week of {week}: {n} incident(s)</title></rect>\
             <text x=\"{tx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"11\" fill=\"#1f2933\">{n}</text>\
             <text x=\"{tx:.1}\" y=\"{dy:.1}\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"10\" fill=\"#5b6470\">{short}</text>",
            bw = slot * 0.7,
            week = s.week,
            n = s.incidents,
            tx = x + slot * 0.35,
            ly = (y - 4.0).max(12.0),
            dy = h - bottom + 16.0,
            short = &s.week[5..],
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// `GET /reports/chart.svg`
pub async fn chart(State(console): State<Arc<Console>>) -> Response {
    match all_incidents(console.store.as_ref()).await {
        Ok(incidents) => {
            let mut r = chart_svg(&weekly(&incidents, receiver_now())).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            );
            r
        }
        Err(e) => ConsoleError::from(e).into_response(),
    }
}

#[derive(Debug, Template)]
#[template(path = "reports.html")]
struct ReportsPage {
    layout: Layout,
    weeks: Vec<WeekStat>,
    median_all: Option<i64>,
    distributions: Vec<Distribution>,
    incidents: Vec<IncidentView>,
}

/// Time to claim, then time to resolve, over `incidents`.
fn distributions(incidents: &[IncidentView]) -> Vec<Distribution> {
    vec![
        Distribution::time_to_claim(incidents),
        Distribution::time_to_resolve(incidents),
    ]
}

pub async fn page(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> Response {
    match all_incidents(console.store.as_ref()).await {
        Ok(incidents) => render(&ReportsPage {
            layout: Layout::new(&user, "reports", "Reports"),
            weeks: weekly(&incidents, receiver_now()),
            median_all: median(incidents.iter().filter_map(|i| i.time_to_claim_s).collect()),
            distributions: distributions(&incidents),
            incidents,
        }),
        Err(e) => ConsoleError::from(e).into_response(),
    }
}

#[derive(Debug, Template)]
#[template(path = "reports_print.html")]
struct ReportsPrintPage {
    distributions: Vec<Distribution>,
    incidents: usize,
    printed_by: String,
    printed_at: super::pages::Ts,
}

/// `GET /reports/print`: the response-time distributions on paper (charts and tables),
/// audited as `report.print` before the page leaves.
pub async fn print_report(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
) -> Response {
    let incidents = match all_incidents(console.store.as_ref()).await {
        Ok(incidents) => incidents,
        Err(e) => return ConsoleError::from(e).into_response(),
    };
    if let Err(e) = console
        .store
        .record_audit(
            &user.username,
            "report.print",
            "reports",
            "printed response-time report",
        )
        .await
    {
        return ConsoleError::from(e).into_response();
    }
    render(&ReportsPrintPage {
        distributions: distributions(&incidents),
        incidents: incidents.len(),
        printed_by: user.username.clone(),
        printed_at: super::pages::Ts::new(receiver_now()),
    })
}

#[derive(Debug, Template)]
#[template(path = "print.html")]
struct PrintPage {
    incident: IncidentView,
    timeline: Vec<TimelineEntry>,
    printed_by: String,
    printed_at: super::pages::Ts,
}

/// `GET /incidents/{id}/print`: the whole record on paper.
pub async fn print_incident(
    State(console): State<Arc<Console>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return not_found_page();
    };
    match incident(console.store.as_ref(), id).await {
        Ok(Some((incident, timeline))) => {
            // Audited only for an incident that exists, before the page leaves.
            if let Err(e) = console
                .store
                .record_audit(
                    &user.username,
                    "report.print",
                    &id.to_string(),
                    "printed incident record",
                )
                .await
            {
                return ConsoleError::from(e).into_response();
            }
            render(&PrintPage {
                incident,
                timeline,
                printed_by: user.username.clone(),
                printed_at: super::pages::Ts::new(receiver_now()),
            })
        }
        Ok(None) => not_found_page(),
        Err(e) => ConsoleError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised_and_separators_quoted() {
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("+1"), "'+1");
        assert_eq!(csv_cell("-2"), "'-2");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("Bldg A, Room 1"), "\"Bldg A, Room 1\"");
        assert_eq!(csv_cell("plain"), "plain");
        // The first non-blank character, after NFKC.
        assert_eq!(csv_cell(" =1+1"), "' =1+1");
        assert_eq!(csv_cell("\u{3000}=1+1"), "'\u{3000}=1+1");
        assert_eq!(csv_cell("＝1+1"), "'＝1+1");
        assert_eq!(csv_cell("＋1"), "'＋1");
        assert_eq!(csv_cell("﹫SUM(A1)"), "'﹫SUM(A1)");
        assert_eq!(csv_cell("@SUM(A1:A9)"), "'@SUM(A1:A9)");
        assert_eq!(csv_cell("-2+3"), "'-2+3");
        assert_eq!(csv_cell("\tx"), "'\tx");
        assert_eq!(csv_cell("\rx"), "\"'\rx\"");
        assert_eq!(csv_cell("Room 1 = lab"), "Room 1 = lab");
        assert_eq!(csv_cell("   "), "   ");
        assert_eq!(csv_cell(""), "");
        assert_eq!(median(vec![5, 1, 3]), Some(3));
        assert_eq!(median(vec![4, 2]), Some(3));
        assert_eq!(median(vec![]), None);
    }
}
