//! Text that came from a device or an admin and is shown to officers: bidirectional controls.
//!
//! An override (U+202E RIGHT-TO-LEFT OVERRIDE …) makes "Room 214" render as another room, or
//! turns a label around so an officer reads it backwards (Trojan Source, CVE-2021-42574).
//! Names an admin types into the receiver refuse them ([`has_bidi_control`]); text from a
//! device, which cannot be refused without losing an alarm or a heartbeat, is shown with each
//! control replaced by a visible `[U+202E]` ([`escape_bidi`]): defused and flagged at once.

use std::borrow::Cow;

/// The embedding, override and isolate controls (U+202A–U+202E, U+2066–U+2069), the implicit
/// marks (U+200E LRM, U+200F RLM) and the Arabic letter mark (U+061C).
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    )
}

pub fn has_bidi_control(text: &str) -> bool {
    text.chars().any(is_bidi_control)
}

/// `text` with every bidirectional control replaced by a visible `[U+XXXX]`.
pub fn escape_bidi(text: &str) -> Cow<'_, str> {
    if !has_bidi_control(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_bidi_control(c) {
            out.push_str(&format!("[U+{:04X}]", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_control_is_found_and_escaped() {
        for c in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
        ] {
            assert!(is_bidi_control(c), "{c:?}");
        }
        assert!(!has_bidi_control("Bldg A, Room 214 — ＝ 中文 עברית"));
        assert_eq!(escape_bidi("Room 214"), "Room 214");
        assert_eq!(
            escape_bidi("Room \u{202E}412\u{202C}"),
            "Room [U+202E]412[U+202C]"
        );
        assert_eq!(escape_bidi("\u{061C}x\u{200F}"), "[U+061C]x[U+200F]");
    }
}
