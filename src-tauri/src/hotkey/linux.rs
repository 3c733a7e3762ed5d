//! Linux: X11 grabs through global-hotkey, or the GlobalShortcuts portal under Wayland.

use std::sync::Arc;

use duress_agent_core::duress_core::HotkeyState;
use tokio::sync::watch;

use super::{ChordHandler, Registration, Session};

pub(super) fn start(
    chords: &[String],
    handler: Arc<ChordHandler>,
    state: &watch::Sender<HotkeyState>,
    rt: &tokio::runtime::Handle,
) -> Registration {
    match Session::from_env() {
        Session::Wayland => {
            super::portal::start(chords, handler, state.clone(), rt);
            Registration::none()
        }
        Session::None => {
            state.send_replace(HotkeyState::Unavailable {
                reason: "no graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set)".into(),
            });
            Registration::none()
        }
        Session::X11 => {
            // global-hotkey's `register` answers Ok when its X thread has already died (for
            // want of a display): check first that an X server answers, or the chord would be
            // silently dead.
            if let Err(e) = x11rb::connect(None) {
                state.send_replace(HotkeyState::Unavailable {
                    reason: format!("cannot reach the X server: {e}"),
                });
                return Registration::none();
            }
            let (manager, outcome) = super::grab::register(chords, handler, |_, _| Ok(()));
            state.send_replace(outcome);
            match manager {
                Some(m) => Registration::keep(m),
                None => Registration::none(),
            }
        }
    }
}
