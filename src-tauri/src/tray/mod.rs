//! The tray icon and its menu.
//!
//! - [`model`]: the menu as plain data from the engine status (pure, unit-tested).
//! - [`menu`]: the Tauri menu built from the model, generic over the runtime (mock-tested).
//!
//! The icon is a neutral grey ring, drawn here, and never changes; no tooltip is set (Linux
//! trays have none, and one that changed would betray a press). A refresher thread recomputes
//! the model every [`REFRESH`] and pushes only the texts that changed. Menu clicks arrive on the
//! UI thread and only hand work on: alarms to the alarm thread, windows to a helper thread.

pub mod menu;
pub mod model;

use std::sync::Arc;
use std::time::Duration;

use duress_agent_core::duress_core::{EventKind, Source};
use tauri::image::Image;
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager, Runtime};

pub use menu::TrayMenu;
pub use model::{MenuModel, ids};

use crate::app_state::AppState;
use crate::windows::WindowKind;

/// How often the menu is recomputed from the engine status.
/// Every recomputation reads the engine's status from the outbox; the texts only change with
/// the state (times shown are absolute), and windows kick a refresh at once, so a slow period
/// costs an idle agent little and staff nothing.
pub const REFRESH: Duration = Duration::from_secs(3);

/// The tray icon's id.
pub const TRAY_ID: &str = "duress";

/// Builds the menu and the tray icon. A failure (no tray support) is logged and noted; the
/// agent keeps running (the chord does not need a tray).
pub fn install<R: Runtime, M: Manager<R>>(app: &M, model: &MenuModel) -> Option<Arc<TrayMenu<R>>> {
    let menu = match TrayMenu::build(app, model) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            note(app, format!("tray menu could not be built: {e}"));
            return None;
        }
    };
    let built = TrayIconBuilder::with_id(TRAY_ID)
        .icon(neutral_icon())
        .menu(&menu.menu)
        .show_menu_on_left_click(true)
        .on_menu_event(|app, event| on_menu_event(app, event.id().as_ref()))
        .build(app);
    match built {
        Ok(tray) => {
            // Kept alive by the app's tray registry; nothing to hold here.
            let _ = tray;
            Some(menu)
        }
        Err(e) => {
            note(app, format!("tray icon could not be created: {e}"));
            None
        }
    }
}

fn note<R: Runtime, M: Manager<R>>(app: &M, message: String) {
    tracing::warn!("{message}");
    if let Some(state) = app.try_state::<AppState>() {
        state.note(message);
    }
}

/// A menu item was activated (UI thread): hand the work on, never wait here.
pub fn on_menu_event<R: Runtime>(app: &AppHandle<R>, id: &str) {
    let Some(state) = app.try_state::<AppState>() else {
        return;
    };
    match id {
        ids::HIDDEN_BUTTON => state.alarm.raise(EventKind::Duress, Source::Tray),
        ids::SELF_TEST => state.alarm.raise(EventKind::Test, Source::Tray),
        // With a PIN to ask, the PIN window (what the person clicked for); else at once.
        ids::CANCEL if state.engine.policy().cancel.requires_pin() => {
            crate::windows::open(app, WindowKind::Cancel);
        }
        ids::CANCEL => state.alarm.cancel(Source::Tray, None),
        ids::HELP => crate::windows::open(app, WindowKind::Help),
        ids::ABOUT => crate::windows::open(app, WindowKind::Status),
        ids::CHANGE_LOCATION => crate::windows::open(app, WindowKind::Location),
        ids::QUIT if state.engine.policy().tray.allow_quit => {
            tracing::info!("quit from the tray menu");
            state.request_shutdown();
            app.exit(0);
        }
        _ => {}
    }
}

/// Recomputes the menu every [`REFRESH`] on its own thread, and at once when `kick` is
/// notified (after a location change).
pub fn spawn_refresher<R: Runtime>(
    app: AppHandle<R>,
    menu: Arc<TrayMenu<R>>,
    kick: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
) {
    let spawned = std::thread::Builder::new()
        .name("duress-menu".into())
        .spawn(move || {
            loop {
                if let Some(state) = app.try_state::<AppState>()
                    && let Some(model) = state.menu_model()
                    && let Err(e) = menu.apply(&model)
                {
                    tracing::warn!("tray menu update failed: {e}");
                }
                let (lock, cvar) = &*kick;
                let guard = lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let (mut guard, _) = cvar
                    .wait_timeout_while(guard, REFRESH, |kicked| !*kicked)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *guard = false;
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the menu refresher: {e}");
    }
}

/// A 32×32 grey ring: says nothing about what the agent is for, and never changes.
pub fn neutral_icon() -> Image<'static> {
    const N: usize = 32;
    let mut rgba = vec![0u8; N * N * 4];
    let c = (N as f32 - 1.0) / 2.0;
    for y in 0..N {
        for x in 0..N {
            let d = ((x as f32 - c).powi(2) + (y as f32 - c).powi(2)).sqrt();
            // Anti-aliased ring between radius 9.5 and 13.5, and a dot of radius 3.5.
            let ring = (1.0 - (d - 11.5).abs() + 1.5).clamp(0.0, 1.0);
            let dot = (3.5 - d + 0.5).clamp(0.0, 1.0);
            let a = ring.max(dot);
            let i = (y * N + x) * 4;
            rgba[i..i + 4].copy_from_slice(&[112, 118, 128, (a * 255.0) as u8]);
        }
    }
    Image::new_owned(rgba, N as u32, N as u32)
}
