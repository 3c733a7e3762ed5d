//! Windows: `RegisterHotKey` through global-hotkey. It is exclusive system-wide (a chord another
//! program holds answers `AlreadyRegistered`), Win+key chords are reserved by the shell, and
//! the press arrives through the main thread's message loop (the manager's hidden window lives
//! there) — Win32 offers no other way for `RegisterHotKey`.

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
        // global-hotkey reads Super/Cmd/Win as META.
        if hk.mods.contains(Modifiers::META) {
            return Err(format!(
                "{chord}: Windows reserves chords with the Windows key"
            ));
        }
        Ok(())
    });
    state.send_replace(outcome);
    match manager {
        Some(m) => Registration::keep(m),
        None => Registration::none(),
    }
}
