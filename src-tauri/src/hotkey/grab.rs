//! Chords through global-hotkey (X11 `XGrabKey`, Windows `RegisterHotKey`, macOS Carbon).

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::{Arc, OnceLock};

use duress_agent_core::duress_core::HotkeyState;
use global_hotkey::hotkey::HotKey;
use global_hotkey::{GlobalHotKeyEvent, GlobalHotKeyManager, HotKeyState};

use super::ChordHandler;

/// global-hotkey accepts one event handler per process: it is set once, to this.
static HANDLER: OnceLock<(Arc<ChordHandler>, HashMap<u32, String>)> = OnceLock::new();

/// Registers `chords` and the policy's cancel chords; returns the manager (keep it alive) and
/// the resulting state of the alarm chords. A chord another application holds is reported by
/// name; the others still work. (Linux X11 splits the chords between this and its own F13–F24
/// grab: `linux.rs`.)
#[cfg(any(target_os = "windows", target_os = "macos"))]
pub(super) fn register(
    chords: &[String],
    handler: Arc<ChordHandler>,
    check: impl Fn(&str, &HotKey) -> Result<(), String>,
) -> (Option<GlobalHotKeyManager>, HotkeyState) {
    let all = with_cancel_chords(chords, &handler);
    let (manager, registered, failures) = register_these(&all, handler.clone(), check);
    (manager, outcome(&handler, registered, failures))
}

/// The alarm chords, then the policy's cancel chords not already among them: every chord a
/// back end grabs.
pub(super) fn with_cancel_chords(chords: &[String], handler: &ChordHandler) -> Vec<String> {
    let mut all = chords.to_vec();
    for c in handler.cancel_chords() {
        if !all.contains(c) {
            all.push(c.clone());
        }
    }
    all
}

/// The state the alarm chords end in, from the chords (alarm and cancel) that were grabbed and
/// the reasons of those that were not; logs both.
pub(super) fn outcome(
    handler: &ChordHandler,
    registered: Vec<String>,
    failures: Vec<String>,
) -> HotkeyState {
    for f in &failures {
        tracing::warn!("chord not registered: {f}");
    }
    let (cancel, registered): (Vec<String>, Vec<String>) =
        registered.into_iter().partition(|c| handler.is_cancel(c));
    if !cancel.is_empty() {
        tracing::info!(chords = ?cancel, "cancel chord registered");
    }
    if registered.is_empty() {
        return unavailable(failures);
    }
    HotkeyState::Registered { chords: registered }
}

/// Grabs exactly `all` (alarm and cancel chords) through global-hotkey; returns the manager
/// (keep it alive), the chords grabbed and the reasons of those that were not.
pub(super) fn register_these(
    all: &[String],
    handler: Arc<ChordHandler>,
    check: impl Fn(&str, &HotKey) -> Result<(), String>,
) -> (Option<GlobalHotKeyManager>, Vec<String>, Vec<String>) {
    let mut failures = Vec::new();
    let mut parsed = Vec::new();
    for chord in all {
        match HotKey::from_str(chord) {
            Ok(hk) => match check(chord, &hk) {
                Ok(()) => parsed.push((chord.clone(), hk)),
                Err(reason) => failures.push(reason),
            },
            Err(e) => failures.push(format!("cannot read the chord \"{chord}\": {e}")),
        }
    }
    if parsed.is_empty() {
        return (None, Vec::new(), failures);
    }
    let manager = match GlobalHotKeyManager::new() {
        Ok(m) => m,
        Err(e) => {
            failures.push(format!("the hotkey service failed to start: {e}"));
            return (None, Vec::new(), failures);
        }
    };
    let ids: HashMap<u32, String> = parsed.iter().map(|(c, hk)| (hk.id(), c.clone())).collect();
    if HANDLER.set((handler, ids)).is_err() {
        tracing::warn!("hotkey handler already set in this process; keeping the first");
    }
    GlobalHotKeyEvent::set_event_handler(Some(|event: GlobalHotKeyEvent| {
        let Some((handler, ids)) = HANDLER.get() else {
            return;
        };
        let Some(chord) = ids.get(&event.id) else {
            return;
        };
        if handler.is_cancel(chord) {
            if event.state == HotKeyState::Pressed {
                handler.cancel_pressed();
            }
            return;
        }
        match event.state {
            HotKeyState::Pressed => handler.pressed(),
            HotKeyState::Released => handler.released(),
        }
    }));
    let mut registered = Vec::new();
    for (chord, hk) in parsed {
        match manager.register(hk) {
            Ok(()) => registered.push(chord),
            Err(global_hotkey::Error::AlreadyRegistered(_)) => {
                failures.push(format!("{chord} is taken by another application"));
            }
            Err(e) => failures.push(format!("{chord}: {e}")),
        }
    }
    (Some(manager), registered, failures)
}

fn unavailable(failures: Vec<String>) -> HotkeyState {
    HotkeyState::Unavailable {
        reason: if failures.is_empty() {
            "no chord could be registered".to_owned()
        } else {
            failures.join("; ")
        },
    }
}
