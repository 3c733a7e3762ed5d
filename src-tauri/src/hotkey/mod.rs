//! The chord: registration per OS, the accidental-press guard, and the reported state.
//!
//! | OS / session | Back end | Where the press handler runs |
//! |---|---|---|
//! | Linux X11 | global-hotkey (`XGrabKey`) after checking an X server answers | global-hotkey's own X thread |
//! | Linux X11, F13–F24 (pedals) | the agent's own `XGrabKey` by key name and keysym (`linux.rs`: global-hotkey finds no key under evdev keymaps) | the agent's X thread `duress-x11-fkeys` |
//! | Linux Wayland | xdg-desktop-portal GlobalShortcuts (ashpd), where the desktop has it | the engine thread's runtime (blocking pool) |
//! | Linux Wayland without the portal | none: state `unavailable`, Help explains binding `duress-agent trigger` | — |
//! | Windows | global-hotkey (`RegisterHotKey`, exclusive system-wide) | the main thread's message loop (a Win32 constraint) |
//! | macOS | global-hotkey (Carbon hot keys); chords need Ctrl or Cmd | the main run loop (a Carbon constraint) |
//!
//! On Linux X11 the handler calls [`Engine::record`](duress_agent_core::Engine::record)
//! directly on global-hotkey's thread (or the F13–F24 thread): the alarm path never touches the UI thread, the tray or
//! a webview. global-hotkey under a Wayland session would *succeed* and then receive keys only
//! while an XWayland window has focus — a silently dead chord — so it is never used there.
//!
//! A registration failure (chord taken, Wayland without the portal, no display, a chord that
//! cannot be parsed) never aborts start-up: it becomes [`HotkeyState::Unavailable`] with a
//! reason, shown in the tray status line and reported in every heartbeat.

mod chord;
mod handler;

#[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
mod grab;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "linux")]
mod portal;
#[cfg(not(any(target_os = "linux", target_os = "windows", target_os = "macos")))]
mod unsupported;
#[cfg(target_os = "windows")]
mod windows;

use std::sync::Arc;

use duress_agent_core::duress_core::HotkeyState;
use tokio::sync::watch;

pub use chord::{Session, portal_trigger};
pub use handler::ChordHandler;

/// Keeps the OS registrations alive for as long as it lives (keep it on the main thread:
/// global-hotkey's manager is not `Send` on Windows).
pub struct Registration {
    _keep: Option<Box<dyn std::any::Any>>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("active", &self._keep.is_some())
            .finish()
    }
}

impl Registration {
    pub(crate) fn none() -> Self {
        Registration { _keep: None }
    }

    pub(crate) fn keep(value: impl std::any::Any) -> Self {
        Registration {
            _keep: Some(Box::new(value)),
        }
    }
}

/// Registers the policy's chords and publishes the outcome on `state`. Call on the main thread
/// after the Tauri app is built. `rt` runs asynchronous back ends (the Wayland portal).
/// Never fails: every failure ends up in `state` as [`HotkeyState::Unavailable`].
pub fn start(
    chords: &[String],
    handler: Arc<ChordHandler>,
    state: watch::Sender<HotkeyState>,
    rt: &tokio::runtime::Handle,
) -> Registration {
    if chords.is_empty() {
        // The policy wants no chord (tray item only): nothing to report as broken.
        state.send_replace(HotkeyState::NotApplicable);
        return Registration::none();
    }
    #[cfg(target_os = "linux")]
    let registration = linux::start(chords, handler, &state, rt);
    #[cfg(target_os = "windows")]
    let registration = {
        let _ = rt;
        windows::start(chords, handler, &state)
    };
    #[cfg(target_os = "macos")]
    let registration = {
        let _ = rt;
        macos::start(chords, handler, &state)
    };
    #[cfg(not(any(target_os = "linux", target_os = "windows", target_os = "macos")))]
    let registration = {
        let _ = (rt, handler);
        unsupported::start(&state)
    };
    match &*state.borrow() {
        HotkeyState::Registered { chords } => tracing::info!(?chords, "hotkey registered"),
        HotkeyState::Unavailable { reason } => tracing::warn!("hotkey unavailable: {reason}"),
        HotkeyState::NotApplicable => {}
    }
    registration
}

/// What Help says about binding the chord by hand, when the desktop offers no way for the agent
/// to do it (Wayland without the portal). `None` when the chord works.
pub fn manual_binding_hint(state: &HotkeyState, session: Session) -> Option<String> {
    match (state, session) {
        #[cfg(target_os = "linux")]
        (HotkeyState::Unavailable { reason }, Session::Wayland)
            if reason == portal::NO_KEY_ASSIGNED =>
        {
            Some(
                "The desktop accepted Duress's shortcut but assigned it no key. Open the \
                 desktop's Settings → Keyboard → Shortcuts (global shortcuts of applications) \
                 and give \"Duress: request assistance silently\" a key."
                    .to_owned(),
            )
        }
        (HotkeyState::Unavailable { .. }, Session::Wayland) => Some(
            "This desktop does not let applications register a keyboard shortcut. Add one \
             yourself in the desktop's keyboard settings (Settings → Keyboard → Custom \
             Shortcuts) that runs the command: duress-agent trigger"
                .to_owned(),
        ),
        (HotkeyState::Unavailable { .. }, _) => Some(
            "The keyboard chord could not be registered. The menu item still works; you can \
             also bind the command duress-agent trigger to a key in your desktop's keyboard \
             settings."
                .to_owned(),
        ),
        _ => None,
    }
}
