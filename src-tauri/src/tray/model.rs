//! The tray menu as plain data, computed from the engine status and the policy. Pure: the menu
//! code only turns a [`MenuModel`] into items and pushes the texts that changed.
//!
//! Silence: no field may change because of a press while the station works. The status line
//! follows [`duress_agent_core::status_line`]; "last contact" is the last *heartbeat*
//! acknowledgement (an alarm's delivery does not move it); the queue length appears only in the
//! unreachable status line; the icon and the tooltip are never touched.

use duress_agent_core::duress_core::HotkeyState;
use duress_agent_core::policy::Policy;
use duress_agent_core::status_line::{Protection, status_line, time_of_day_opt};
use duress_agent_core::{AGENT_VERSION, StatusSnapshot};
use time::{OffsetDateTime, UtcOffset};

/// Menu item ids (also what the tests click through D-Bus by label).
pub mod ids {
    pub const STATUS: &str = "status";
    pub const LOCATION: &str = "location";
    pub const CHANGE_LOCATION: &str = "change-location";
    pub const CHORD: &str = "chord";
    pub const LAST_CONTACT: &str = "last-contact";
    pub const LAST_SELF_TEST: &str = "last-self-test";
    pub const SELF_TEST: &str = "self-test";
    pub const HIDDEN_BUTTON: &str = "hidden-button";
    pub const CANCEL: &str = "cancel";
    pub const HELP: &str = "help";
    pub const ABOUT: &str = "about";
    pub const QUIT: &str = "quit";
}

/// Fixed labels.
pub mod labels {
    pub const CHANGE_LOCATION: &str = "Change location…";
    pub const SELF_TEST: &str = "Send a test alert";
    pub const HELP: &str = "Help and other ways to get help";
    pub const QUIT: &str = "Quit";
}

/// Everything the menu shows. Items whose presence depends on policy (`change_location`,
/// `quit`) are fixed for the life of the process (policy is read at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuModel {
    /// `Duress: on`, or why not.
    pub status: String,
    pub protection: Protection,
    /// `Location: Bldg A, Floor 2, Room 214`.
    pub location: String,
    pub change_location: bool,
    /// `Chord: Ctrl+Alt+Shift+D`.
    pub chord: String,
    /// `Last contact with Security: 14:02`.
    pub last_contact: String,
    /// `Last self-test: 14:05` (the receiver confirmed it).
    pub last_self_test: String,
    /// The policy's label of the item that silently raises an alarm.
    pub hidden_button: String,
    /// The policy's label of the duress-safe cancel ("I'm OK — cancel").
    pub cancel: String,
    /// `About Duress 0.1.0 — device …`.
    pub about: String,
    pub quit: bool,
}

impl MenuModel {
    /// The menu for this status. `now` is the engine's corrected clock, `local` the local offset.
    pub fn new(s: &StatusSnapshot, policy: &Policy, now: OffsetDateTime, local: UtcOffset) -> Self {
        let line = status_line(s, policy, now, local);
        let location = if s.location_label.trim().is_empty() {
            "Location: not set".to_owned()
        } else {
            format!("Location: {}", s.location_label)
        };
        MenuModel {
            status: line.text,
            protection: line.protection,
            location,
            change_location: policy.tray.allow_user_location,
            chord: chord_text(&s.hotkey, policy),
            last_contact: format!(
                "Last contact with Security: {}",
                time_of_day_opt(s.last_heartbeat_at, now, local)
            ),
            last_self_test: format!(
                "Last self-test: {}",
                time_of_day_opt(s.last_self_test.as_ref().map(|t| t.at), now, local)
            ),
            hidden_button: policy.tray.hidden_button_label.clone(),
            cancel: policy.cancel.label.clone(),
            about: match &s.device_id {
                Some(id) => format!("About Duress {AGENT_VERSION} — device {id}"),
                None => format!("About Duress {AGENT_VERSION} — not enrolled"),
            },
            quit: policy.tray.allow_quit,
        }
    }
}

/// `Chord: Ctrl+Alt+Shift+D`, with the guard when one is set (`press 3 times`, `hold 2 s`).
pub fn chord_text(state: &HotkeyState, policy: &Policy) -> String {
    match state {
        HotkeyState::Registered { chords } => {
            let mut t = format!("Chord: {}", chords.join(" or "));
            let hk = &policy.hotkey;
            let mut guard = Vec::new();
            if hk.repeat > 1 {
                guard.push(format!(
                    "press {} times within {}",
                    hk.repeat,
                    seconds(hk.window_ms)
                ));
            }
            if hk.hold_ms > 0 {
                guard.push(format!("hold {}", seconds(hk.hold_ms)));
            }
            if !guard.is_empty() {
                t.push_str(&format!(" ({})", guard.join(", ")));
            }
            t
        }
        HotkeyState::Unavailable { .. } => "Chord: unavailable (see Help)".to_owned(),
        HotkeyState::NotApplicable if policy.hotkey.chords.is_empty() => {
            "Chord: none (use this menu)".to_owned()
        }
        HotkeyState::NotApplicable => "Chord: starting…".to_owned(),
    }
}

fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use duress_agent_core::duress_core::DeviceStatus;
    use duress_agent_core::engine::SelfTest;
    use time::macros::{datetime, offset};

    pub(crate) fn snapshot() -> StatusSnapshot {
        StatusSnapshot {
            enrolled: true,
            device_id: Some("dev-7".into()),
            device_status: Some(DeviceStatus::Active),
            receivers: vec!["https://r/".into()],
            last_receiver: Some("https://r/".into()),
            last_contact_at: Some(datetime!(2026-03-02 14:04 UTC)),
            unreachable_since: None,
            queued: 0,
            last_seq: 3,
            last_error: None,
            location_label: "Bldg A, Floor 2, Room 214".into(),
            last_self_test: None,
            clock_offset_ms: 0,
            hotkey: HotkeyState::Registered {
                chords: vec!["Ctrl+Alt+Shift+D".into()],
            },
            last_heartbeat_at: Some(datetime!(2026-03-02 14:02 UTC)),
            claimed_incidents: vec![],
            acknowledgements: "verified".into(),
            ack_unverified_since: None,
            ack_unverified_reason: None,
            alarm_refused_since: None,
            alarm_refused_reason: None,
            policy_source: "os:none".into(),
            policy_sha256: "0".repeat(64),
            policy_ignored: None,
            keystore_problem: None,
            install_id: "i".into(),
            state_dir: "/s".into(),
        }
    }

    pub(crate) const NOW: OffsetDateTime = datetime!(2026-03-02 14:05 UTC);

    #[test]
    fn every_line_of_a_working_station() {
        let m = MenuModel::new(&snapshot(), &Policy::default(), NOW, offset!(UTC));
        assert_eq!(m.status, "Duress: on");
        assert_eq!(m.location, "Location: Bldg A, Floor 2, Room 214");
        assert_eq!(m.chord, "Chord: Ctrl+Alt+Shift+D");
        assert_eq!(m.last_contact, "Last contact with Security: 14:02");
        assert_eq!(m.last_self_test, "Last self-test: never");
        assert_eq!(m.hidden_button, "Request assistance");
        assert_eq!(m.cancel, "I'm OK — cancel");
        assert!(m.about.starts_with("About Duress "));
        assert!(m.about.ends_with("— device dev-7"));
        assert!(!m.change_location && !m.quit, "both off by default");
    }

    /// A press (queued for a moment, then delivered: seq, queue and last contact move) leaves
    /// every menu text as it was.
    #[test]
    fn a_press_changes_no_menu_text() {
        let p = Policy::default();
        let before = snapshot();
        let mut queued = before.clone();
        queued.queued = 1;
        queued.last_seq += 1;
        let mut delivered = queued.clone();
        delivered.queued = 0;
        delivered.last_contact_at = Some(NOW);
        let m = |s: &StatusSnapshot| MenuModel::new(s, &p, NOW, offset!(UTC));
        assert_eq!(m(&before), m(&queued));
        assert_eq!(m(&before), m(&delivered));
    }

    #[test]
    fn guard_policy_shows_in_the_chord_line() {
        let mut p = Policy::default();
        p.hotkey.repeat = 3;
        p.hotkey.window_ms = 1500;
        let s = snapshot();
        assert_eq!(
            chord_text(&s.hotkey, &p),
            "Chord: Ctrl+Alt+Shift+D (press 3 times within 1.5 s)"
        );
        p.hotkey.repeat = 1;
        p.hotkey.hold_ms = 2000;
        assert_eq!(
            chord_text(&s.hotkey, &p),
            "Chord: Ctrl+Alt+Shift+D (hold 2 s)"
        );
        assert_eq!(
            chord_text(&HotkeyState::Unavailable { reason: "x".into() }, &p),
            "Chord: unavailable (see Help)"
        );
        p.hotkey.chords.clear();
        assert_eq!(
            chord_text(&HotkeyState::NotApplicable, &p),
            "Chord: none (use this menu)"
        );
    }

    #[test]
    fn self_test_time_and_policy_items() {
        let mut p = Policy::default();
        p.tray.allow_quit = true;
        p.tray.allow_user_location = true;
        p.tray.hidden_button_label = "Print queue".into();
        let mut s = snapshot();
        s.last_self_test = Some(SelfTest {
            id: uuid::Uuid::nil(),
            at: datetime!(2026-03-02 14:03:30 UTC),
        });
        let m = MenuModel::new(&s, &p, NOW, offset!(+1));
        assert_eq!(m.last_self_test, "Last self-test: 15:03");
        assert_eq!(m.hidden_button, "Print queue");
        assert!(m.quit && m.change_location);
    }
}
