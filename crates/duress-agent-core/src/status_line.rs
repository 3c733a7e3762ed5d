//! The one line that tells a person whether this station is protected, computed from a
//! [`StatusSnapshot`] and the policy. Pure (the clock and the local UTC offset are arguments), so
//! every state is tested here; the tray menu, the status window and tests all use it.
//!
//! | State (first that applies)                 | Line                                                      |
//! |--------------------------------------------|-----------------------------------------------------------|
//! | the keystore failed                        | `Duress: not protected: no keystore`                      |
//! | not enrolled                               | `Duress: not enrolled — contact security@example.edu`     |
//! | disabled or revoked by an admin            | `Duress: disabled by Security`                            |
//! | enrolled with a manual-approval token      | `Duress: waiting for approval by Security`                |
//! | a queued alert is being refused            | `Duress: alert not accepted by the receiver: unknown-device (HTTP 401) — 1 alert queued` |
//! | answers fail the `ack_key` check for ≥ 30 s | `Duress: receiver answer not verified since 14:02 — 1 alert queued` |
//! | no receiver answered for ≥ 30 s            | `Duress: receiver unreachable since 14:02 — 1 alert queued` |
//! | the chord could not be registered          | `Duress: chord unavailable: <reason>`                     |
//! | otherwise                                  | `Duress: on`                                              |
//!
//! **Silence.** Nothing here may change because of a press while the station works: the line
//! never shows the queue length or a delivery while a receiver answers. The queue length shows
//! only once no receiver has answered for [`UNREACHABLE_GRACE`]: then the person must learn
//! that their alarm has *not* reached Security (and use another way to get help) — that
//! outweighs the small risk of someone else reading an opened tray menu. Stated neutrally.
//! A queued alert that the receivers answering it refuse (a backup that does not know this
//! device, a rate limit, a receiver that cannot commit) is shown at once, without a grace: it
//! is a definite answer that the alarm has not reached Security, and the line must never say
//! "on" meanwhile.
//!
//! **Covert acknowledgement** (`[tray] covert_ack = true`, off by default): while an officer
//! has claimed an open incident of this device (the receiver lists it in its heartbeat
//! answer), the line gains a trailing period — `Duress: on` becomes `Duress: on.` — and nothing
//! else changes. It disappears when the incident is closed.

use duress_core::{DeviceStatus, HotkeyState};
use time::{Duration, OffsetDateTime, UtcOffset};

use crate::StatusSnapshot;
use crate::policy::Policy;

/// How long no receiver must have answered before the line says so (and shows the queue).
pub const UNREACHABLE_GRACE: Duration = Duration::seconds(30);

/// What the line is about (for tests and for windows that style it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    On,
    NoKeystore,
    NotEnrolled,
    Disabled,
    Pending,
    /// A queued alert is being refused by the receivers that answer it.
    NotAccepted,
    /// Answers naming our alarms do not carry a valid acknowledgement signature: as far as
    /// this station can tell, they have not reached Security.
    AckUnverified,
    Unreachable,
    ChordUnavailable,
}

/// The status line and what it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    pub protection: Protection,
    pub text: String,
}

/// Computes the status line. `now` is the engine's corrected clock; `local` the offset used to
/// show times of day.
pub fn status_line(
    s: &StatusSnapshot,
    policy: &Policy,
    now: OffsetDateTime,
    local: UtcOffset,
) -> StatusLine {
    let (protection, mut text) = if s.keystore_problem.is_some() {
        (
            Protection::NoKeystore,
            "not protected: no keystore".to_owned(),
        )
    } else if !s.enrolled {
        (
            Protection::NotEnrolled,
            format!("not enrolled — contact {}", contact(policy)),
        )
    } else if matches!(
        s.device_status,
        Some(DeviceStatus::Disabled | DeviceStatus::Revoked)
    ) {
        (Protection::Disabled, "disabled by Security".to_owned())
    } else if s.device_status == Some(DeviceStatus::Pending) {
        (
            Protection::Pending,
            "waiting for approval by Security".to_owned(),
        )
    } else if let Some(reason) = s.alarm_refused_reason.as_deref().filter(|_| s.queued > 0) {
        let mut t = format!("alert not accepted by the receiver: {reason}");
        push_queued(&mut t, s.queued);
        (Protection::NotAccepted, t)
    } else if let Some(since) = s
        .ack_unverified_since
        .filter(|t| now - *t >= UNREACHABLE_GRACE)
    {
        // Shown like "unreachable" (and after the same grace): a heartbeat answer, unsigned,
        // does not clear it, only a verified acknowledgement does.
        let mut t = format!(
            "receiver answer not verified since {}",
            time_of_day(since, now, local)
        );
        if s.queued > 0 {
            let plural = if s.queued == 1 { "" } else { "s" };
            t.push_str(&format!(" — {} alert{plural} queued", s.queued));
        }
        (Protection::AckUnverified, t)
    } else if let Some(since) = s
        .unreachable_since
        .filter(|t| now - *t >= UNREACHABLE_GRACE)
    {
        let mut t = format!(
            "receiver unreachable since {}",
            time_of_day(since, now, local)
        );
        if s.queued > 0 {
            let plural = if s.queued == 1 { "" } else { "s" };
            t.push_str(&format!(" — {} alert{plural} queued", s.queued));
        }
        (Protection::Unreachable, t)
    } else if let HotkeyState::Unavailable { reason } = &s.hotkey {
        (
            Protection::ChordUnavailable,
            format!("chord unavailable: {reason}"),
        )
    } else {
        (Protection::On, "on".to_owned())
    };
    text.insert_str(0, "Duress: ");
    // The covert acknowledgement: see the module docs. One character, nothing else.
    if policy.tray.covert_ack && !s.claimed_incidents.is_empty() {
        text.push('.');
    }
    StatusLine { protection, text }
}

fn push_queued(t: &mut String, queued: u64) {
    let plural = if queued == 1 { "" } else { "s" };
    t.push_str(&format!(" — {queued} alert{plural} queued"));
}

/// The short reason of a refusal as the status line and the heartbeat show it: the problem's
/// slug (or title, for a body that is no problem document) and the HTTP status, e.g.
/// `unknown-device (HTTP 401)`; a body that was no problem document shows as `HTTP 503`.
pub fn refusal_reason(p: &duress_core::Problem) -> String {
    match p.kind() {
        Some(kind) => format!("{} (HTTP {})", kind.slug(), p.status),
        None if p.title == format!("HTTP {}", p.status) => p.title.clone(),
        None => format!(
            "{} (HTTP {})",
            p.title.chars().take(80).collect::<String>(),
            p.status
        ),
    }
}

/// The line when not even the status can be read (a broken state database): the tray shows it
/// rather than build a text of its own.
pub fn unreadable_state_line() -> StatusLine {
    StatusLine {
        protection: Protection::NoKeystore,
        text: "Duress: not protected: the agent state cannot be read".to_owned(),
    }
}

/// Whom to contact about enrollment: the security e-mail, else phone, else "Security".
pub fn contact(policy: &Policy) -> String {
    policy
        .help
        .security_email
        .clone()
        .or_else(|| policy.help.security_phone.clone())
        .unwrap_or_else(|| "Security".to_owned())
}

/// `14:02` when `t` is today (local time), else `2026-03-01 14:02`; `never` for `None`.
pub fn time_of_day_opt(t: Option<OffsetDateTime>, now: OffsetDateTime, local: UtcOffset) -> String {
    t.map_or_else(|| "never".to_owned(), |t| time_of_day(t, now, local))
}

/// `14:02` when `t` is today (local time), else `2026-03-01 14:02`.
pub fn time_of_day(t: OffsetDateTime, now: OffsetDateTime, local: UtcOffset) -> String {
    let (t, now) = (t.to_offset(local), now.to_offset(local));
    if t.date() == now.date() {
        format!("{:02}:{:02}", t.hour(), t.minute())
    } else {
        format!(
            "{}-{:02}-{:02} {:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, offset};
    use uuid::Uuid;

    fn snapshot() -> StatusSnapshot {
        StatusSnapshot {
            enrolled: true,
            device_id: Some("dev-1".into()),
            device_status: Some(DeviceStatus::Active),
            receivers: vec!["https://r/".into()],
            last_receiver: Some("https://r/".into()),
            last_contact_at: Some(datetime!(2026-03-02 14:00 UTC)),
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
            last_heartbeat_at: Some(datetime!(2026-03-02 14:00 UTC)),
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

    const NOW: OffsetDateTime = datetime!(2026-03-02 14:05 UTC);

    fn line(s: &StatusSnapshot, p: &Policy) -> String {
        status_line(s, p, NOW, offset!(UTC)).text
    }

    #[test]
    fn on() {
        let l = status_line(&snapshot(), &Policy::default(), NOW, offset!(UTC));
        assert_eq!(l.text, "Duress: on");
        assert_eq!(l.protection, Protection::On);
    }

    #[test]
    fn unverified_acknowledgements_say_so_after_the_grace() {
        let mut s = snapshot();
        s.queued = 1;
        s.ack_unverified_since = Some(NOW - Duration::seconds(10));
        assert_eq!(line(&s, &Policy::default()), "Duress: on");
        s.ack_unverified_since = Some(datetime!(2026-03-02 14:02 UTC));
        let l = status_line(&s, &Policy::default(), NOW, offset!(UTC));
        assert_eq!(
            l.text,
            "Duress: receiver answer not verified since 14:02 — 1 alert queued"
        );
        assert_eq!(l.protection, Protection::AckUnverified);
    }

    /// A refused queued alert is shown at once with its reason, before "unreachable" and
    /// "not verified"; with nothing queued (delivered meanwhile) the line is back to "on".
    #[test]
    fn a_refused_alert_is_shown_at_once() {
        let p = Policy::default();
        let mut s = snapshot();
        s.alarm_refused_since = Some(NOW);
        s.alarm_refused_reason = Some("unknown-device (HTTP 401)".into());
        assert_eq!(line(&s, &p), "Duress: on", "nothing queued");
        s.queued = 1;
        s.unreachable_since = Some(NOW - Duration::minutes(5));
        let l = status_line(&s, &p, NOW, offset!(UTC));
        assert_eq!(
            l.text,
            "Duress: alert not accepted by the receiver: unknown-device (HTTP 401) — 1 alert queued"
        );
        assert_eq!(l.protection, Protection::NotAccepted);
        s.device_status = Some(DeviceStatus::Revoked);
        assert_eq!(line(&s, &p), "Duress: disabled by Security");
    }

    #[test]
    fn refusal_reasons_are_short() {
        use duress_core::{Problem, ProblemType};
        let p = Problem::new(ProblemType::TooManyRequests, "slow down");
        assert_eq!(refusal_reason(&p), "too-many-requests (HTTP 429)");
        let bare = Problem {
            type_uri: "about:blank".into(),
            title: "HTTP 503".into(),
            status: 503,
            detail: None,
            server_time: None,
        };
        assert_eq!(refusal_reason(&bare), "HTTP 503");
    }

    #[test]
    fn not_enrolled_names_the_contact() {
        let mut s = snapshot();
        s.enrolled = false;
        s.device_id = None;
        s.device_status = None;
        let mut p = Policy::default();
        assert_eq!(line(&s, &p), "Duress: not enrolled — contact Security");
        p.help.security_email = Some("security@metrostate.edu".into());
        assert_eq!(
            line(&s, &p),
            "Duress: not enrolled — contact security@metrostate.edu"
        );
    }

    #[test]
    fn device_status_from_security() {
        let p = Policy::default();
        let mut s = snapshot();
        s.device_status = Some(DeviceStatus::Disabled);
        assert_eq!(line(&s, &p), "Duress: disabled by Security");
        s.device_status = Some(DeviceStatus::Revoked);
        assert_eq!(line(&s, &p), "Duress: disabled by Security");
        s.device_status = Some(DeviceStatus::Pending);
        assert_eq!(line(&s, &p), "Duress: waiting for approval by Security");
    }

    #[test]
    fn no_keystore_wins() {
        let mut s = snapshot();
        s.keystore_problem = Some("no keystore: locked collection".into());
        s.enrolled = false;
        assert_eq!(
            line(&s, &Policy::default()),
            "Duress: not protected: no keystore"
        );
    }

    /// Unreachable shows only after the grace period, with the queue length, in local time;
    /// before that the line stays "on" so a press (queued for a moment) changes nothing.
    #[test]
    fn unreachable_after_grace_with_queue() {
        let p = Policy::default();
        let mut s = snapshot();
        s.unreachable_since = Some(NOW - Duration::seconds(29));
        s.queued = 1;
        assert_eq!(line(&s, &p), "Duress: on", "within the grace period");
        s.unreachable_since = Some(datetime!(2026-03-02 14:02 UTC));
        assert_eq!(
            line(&s, &p),
            "Duress: receiver unreachable since 14:02 — 1 alert queued"
        );
        s.queued = 3;
        assert_eq!(
            status_line(&s, &p, NOW, offset!(-6)).text,
            "Duress: receiver unreachable since 08:02 — 3 alerts queued"
        );
        s.queued = 0;
        assert_eq!(line(&s, &p), "Duress: receiver unreachable since 14:02");
        s.unreachable_since = Some(datetime!(2026-03-01 23:50 UTC));
        assert_eq!(
            line(&s, &p),
            "Duress: receiver unreachable since 2026-03-01 23:50"
        );
    }

    #[test]
    fn chord_unavailable() {
        let mut s = snapshot();
        s.hotkey = HotkeyState::Unavailable {
            reason: "Ctrl+Alt+Shift+D is taken by another application".into(),
        };
        assert_eq!(
            line(&s, &Policy::default()),
            "Duress: chord unavailable: Ctrl+Alt+Shift+D is taken by another application"
        );
        // No chord configured is not a failure.
        s.hotkey = HotkeyState::NotApplicable;
        assert_eq!(line(&s, &Policy::default()), "Duress: on");
    }

    /// The covert acknowledgement is one trailing period, only with the policy switch and only
    /// while a claimed incident is open.
    #[test]
    fn covert_ack_is_a_trailing_period() {
        let mut p = Policy::default();
        let mut s = snapshot();
        s.claimed_incidents = vec![Uuid::nil()];
        assert_eq!(line(&s, &p), "Duress: on", "off by default");
        p.tray.covert_ack = true;
        assert_eq!(line(&s, &p), "Duress: on.");
        s.claimed_incidents.clear();
        assert_eq!(line(&s, &p), "Duress: on");
    }

    /// A press while everything works changes neither the queue shown nor the line: the line
    /// is the same with 0 or 1 event queued while the receiver answers.
    #[test]
    fn a_press_changes_nothing() {
        let p = Policy::default();
        let before = snapshot();
        let mut after = before.clone();
        after.queued = 1;
        after.last_seq += 1;
        after.last_contact_at = Some(NOW);
        assert_eq!(line(&before, &p), line(&after, &p));
    }
}
