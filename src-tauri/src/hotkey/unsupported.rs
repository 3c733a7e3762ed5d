//! Other OSes: no chord back end; the state says so (the menu item still works).

use duress_agent_core::duress_core::HotkeyState;
use tokio::sync::watch;

use super::Registration;

pub(super) fn start(state: &watch::Sender<HotkeyState>) -> Registration {
    state.send_replace(HotkeyState::Unavailable {
        reason: "no global chord support on this operating system".into(),
    });
    Registration::none()
}
