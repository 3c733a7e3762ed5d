//! macOS: Carbon hot keys through global-hotkey. macOS 15 ignores chords whose only modifiers
//! are Option/Shift, so a chord must contain Ctrl or Cmd; presses arrive on the main run loop.

use std::sync::Arc;

use duress_agent_core::duress_core::HotkeyState;
use global_hotkey::hotkey::Modifiers;
use tokio::sync::watch;

use super::{ChordHandler, Registration};

pub(super) fn start(
    chords: &[String],
    handler: Arc<ChordHandler>,
    state: &watch::Sender<HotkeyState>,
) -> Registration {
    let (manager, outcome) = super::grab::register(chords, handler, |chord, hk| {
        // global-hotkey reads Cmd/Super as META.
        let has_ctrl_or_cmd =
            hk.mods.contains(Modifiers::CONTROL) || hk.mods.contains(Modifiers::META);
        if hk.mods.is_empty() || has_ctrl_or_cmd {
            Ok(())
        } else {
            Err(format!("{chord}: macOS ignores chords without Ctrl or Cmd"))
        }
    });
    state.send_replace(outcome);
    match manager {
        Some(m) => Registration::keep(m),
        None => Registration::none(),
    }
}
