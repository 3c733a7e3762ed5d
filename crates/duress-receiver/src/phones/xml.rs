//! The CiscoIPPhone XML objects the phone endpoints answer with (Cisco "IP Phone Services
//! Application Development Notes", Appendix B; `tests/data/CiscoIPPhone-part.xsd` holds the
//! part of the schema these objects use, and the tests validate every answer against it).
//!
//! Written as text rather than through a serializer: three fixed objects whose only variable
//! parts are escaped here, and phones with firmware ≥ 8.3(2) enforce the schema strictly, so
//! each object's exact shape is easiest to see (and to test) as it is sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `text/xml`: what Cisco phones expect for XML objects.
pub const CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// The answer to a press: a `CiscoIPPhoneExecute` that runs `Init:Services`, which closes the
/// services window the Service URL opened and leaves the phone's idle screen as it was.
/// Nothing on the screen says an alarm was raised (silence applies to phones too).
pub fn silent_ok() -> String {
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
     <CiscoIPPhoneExecute><ExecuteItem Priority=\"0\" URL=\"Init:Services\"/></CiscoIPPhoneExecute>\n"
        .to_owned()
}

/// The answer to an accepted push (Spectralink / 840/860 event notification): a
/// `CiscoIPPhoneResponse` with status 0 (nothing is shown: a push is not rendered).
pub fn push_ok() -> String {
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
     <CiscoIPPhoneResponse><ResponseItem Status=\"0\" Data=\"accepted\" URL=\"\"/></CiscoIPPhoneResponse>\n"
        .to_owned()
}

/// A refusal as a phone renders it: a `CiscoIPPhoneText` naming what is wrong in installer's
/// words (never "alarm", "duress" or "panic": whoever stands at the phone may be the aggressor).
pub fn refusal_text(code: &str, text: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <CiscoIPPhoneText><Title>Service</Title><Prompt>{}</Prompt><Text>{}</Text></CiscoIPPhoneText>\n",
        escape(&truncate(code, 32)),
        escape(&truncate(text, 4000)),
    )
}

/// An XML object with its status and content type.
pub fn response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}

/// At most `max` characters (the schema's maxLength counts characters).
fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Escapes text for element content and attribute values; control characters (which XML 1.0
/// cannot carry) become spaces.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_escapes_and_bounds() {
        let t = refusal_text("a<b", &"x".repeat(5000));
        assert!(t.contains("<Prompt>a&lt;b</Prompt>"));
        assert!(t.len() < 4200);
    }
}
