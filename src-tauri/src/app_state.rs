//! The state the tray app shares with its menu handler, refresher, windows, autostart and
//! hotspot: a leaf module, so they all depend on it and none of them on `app`.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

use duress_agent_core::duress_core::HotkeyState;
use duress_agent_core::{Engine, StatusSnapshot};
use tokio::sync::watch;

use crate::alarm::Alarm;
use crate::hotkey::Session;
use crate::tray::model::MenuModel;

/// State shared with the menu handler, the refresher and the window commands.
#[derive(Debug)]
pub struct AppState {
    pub engine: Engine,
    pub alarm: Alarm,
    pub hotkey: watch::Receiver<HotkeyState>,
    pub session: Session,
    /// Degraded OS facilities (tray, autostart, hotspot...), shown in the status window.
    notes: Mutex<Vec<String>>,
    shutdown: watch::Sender<bool>,
    /// Set and notified to make the menu refresher run at once.
    pub refresh: Arc<(Mutex<bool>, Condvar)>,
}

impl AppState {
    /// The state of a tray app around `engine`. `shutdown` is set to `true` on Quit.
    pub fn new(
        engine: Engine,
        alarm: Alarm,
        hotkey: watch::Receiver<HotkeyState>,
        session: Session,
        shutdown: watch::Sender<bool>,
    ) -> Self {
        AppState {
            engine,
            alarm,
            hotkey,
            session,
            notes: Mutex::new(Vec::new()),
            shutdown,
            refresh: Arc::new((Mutex::new(false), Condvar::new())),
        }
    }

    /// Records a degraded facility (logged by the caller).
    pub fn note(&self, message: String) {
        let mut notes = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        if !notes.contains(&message) {
            notes.push(message);
        }
    }

    pub fn notes(&self) -> Vec<String> {
        self.notes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the engine loop (Quit).
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// The engine status with this process's own hotkey state.
    pub fn snapshot(&self) -> Option<StatusSnapshot> {
        match self.engine.status() {
            Ok(mut s) => {
                s.hotkey = self.hotkey.borrow().clone();
                Some(s)
            }
            Err(e) => {
                tracing::warn!("status unavailable: {e}");
                None
            }
        }
    }

    /// The menu for the current status. Also hands the engine the local offset (for the
    /// self-test window), which it cannot read itself in a multi-threaded process.
    pub fn menu_model(&self) -> Option<MenuModel> {
        let s = self.snapshot()?;
        let local = crate::local_time::offset_now();
        self.engine.set_local_offset(local);
        Some(MenuModel::new(
            &s,
            self.engine.policy(),
            self.engine.now(),
            local,
        ))
    }

    /// Makes the menu refresher run now.
    pub fn kick_refresh(&self) {
        let (lock, cvar) = &*self.refresh;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cvar.notify_all();
    }
}
