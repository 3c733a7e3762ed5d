//! What a chord press does: the accidental-press guard, then `Engine::record` on the calling
//! thread (the hotkey back end's own thread — never the UI thread).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use duress_agent_core::Engine;
use duress_agent_core::duress_core::{EventKind, Source};
use duress_agent_core::hotkey_guard::{HotkeyGuard, PressOutcome};
use duress_agent_core::policy::HotkeyPolicy;

/// Turns chord presses and releases into alarms. Shared by every back end.
#[derive(Debug)]
pub struct ChordHandler {
    engine: Engine,
    guard: Mutex<HotkeyGuard>,
}

impl ChordHandler {
    pub fn new(engine: Engine, policy: &HotkeyPolicy) -> Arc<Self> {
        Arc::new(ChordHandler {
            engine,
            guard: Mutex::new(HotkeyGuard::from_policy(policy)),
        })
    }

    /// The chord went down. With no guard configured this records at once, on this thread.
    pub fn pressed(self: &Arc<Self>) {
        let outcome = self.guard().press(Instant::now());
        match outcome {
            PressOutcome::Trigger => self.fire(),
            PressOutcome::Counted { presses, needed } => {
                // Debug only, like every trace of a press (a log can be shown to anyone).
                tracing::debug!(presses, needed, "chord press counted (guard)");
            }
            PressOutcome::HoldStarted { generation, hold } => {
                let this = self.clone();
                let spawned = std::thread::Builder::new()
                    .name("duress-hold".into())
                    .spawn(move || {
                        std::thread::sleep(hold);
                        let fire = this.guard().hold_elapsed(generation, Instant::now());
                        if fire {
                            this.fire();
                        }
                    });
                if let Err(e) = spawned {
                    // Without a timer the hold cannot be measured: a press beats no press.
                    tracing::error!("cannot time the chord hold ({e}); recording the press");
                    self.fire();
                }
            }
        }
    }

    /// The chord went up.
    pub fn released(&self) {
        self.guard().release();
    }

    /// The policy's cancel chords (`[cancel] chords`; grabbed next to the alarm chords by the
    /// global-hotkey back ends).
    pub fn cancel_chords(&self) -> &[String] {
        &self.engine.policy().cancel.chords
    }

    /// Whether `chord` is one of the cancel chords.
    pub fn is_cancel(&self, chord: &str) -> bool {
        self.cancel_chords().iter().any(|c| c == chord)
    }

    /// A cancel chord went down: the duress-safe cancel, recorded on this thread like an
    /// alarm (no guard; policy allows cancel chords only where no PIN is asked).
    pub fn cancel_pressed(&self) {
        crate::alarm::record_cancel(&self.engine, Source::Hotkey, None);
    }

    fn fire(&self) {
        crate::alarm::record(&self.engine, EventKind::Duress, Source::Hotkey);
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, HotkeyGuard> {
        self.guard.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
