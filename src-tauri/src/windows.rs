//! The on-demand windows (`ui/`): status, help, change location. Created when the menu asks,
//! destroyed when closed — a WebKit window costs ~280 MB of web processes, an idle tray none.
//! Each window may call only its own commands (see `capabilities/`).
//!
//! Windows are built on a helper thread: building one from the UI thread's menu handler can
//! deadlock on some platforms, and the UI thread must never wait.

use duress_agent_core::duress_core::{HotkeyState, Location};
use serde::{Deserialize, Serialize};
use tauri::{AppHandle, Manager, Runtime, State, WebviewUrl, WebviewWindow, WebviewWindowBuilder};

use crate::app_state::AppState;
use crate::hotkey::manual_binding_hint;

/// Which window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Status,
    Help,
    Location,
    /// The cancel's PIN prompt (only when policy asks for a PIN).
    Cancel,
}

impl WindowKind {
    /// The window label (also what `capabilities/*.json` name).
    pub fn label(self) -> &'static str {
        match self {
            WindowKind::Status => "status",
            WindowKind::Help => "help",
            WindowKind::Location => "location",
            WindowKind::Cancel => "cancel",
        }
    }

    fn page(self) -> &'static str {
        match self {
            WindowKind::Status => "status.html",
            WindowKind::Help => "help.html",
            WindowKind::Location => "location.html",
            WindowKind::Cancel => "cancel.html",
        }
    }

    fn title(self) -> &'static str {
        match self {
            WindowKind::Status => "Duress — status",
            WindowKind::Help => "Duress — help",
            WindowKind::Location => "Duress — change location",
            WindowKind::Cancel => "Duress — cancel",
        }
    }

    fn size(self) -> (f64, f64) {
        match self {
            WindowKind::Status => (520.0, 520.0),
            WindowKind::Help => (600.0, 740.0),
            WindowKind::Location => (480.0, 460.0),
            WindowKind::Cancel => (420.0, 320.0),
        }
    }
}

/// Shows the window (focusing it if it is already open).
pub fn open<R: Runtime>(app: &AppHandle<R>, kind: WindowKind) {
    if kind == WindowKind::Location
        && !app
            .try_state::<AppState>()
            .is_some_and(|s| s.engine.policy().tray.allow_user_location)
    {
        return;
    }
    let app = app.clone();
    let spawned = std::thread::Builder::new()
        .name("duress-window".into())
        .spawn(move || {
            if let Some(w) = app.get_webview_window(kind.label()) {
                let _ = w.unminimize();
                let _ = w.set_focus();
                return;
            }
            let (w, h) = kind.size();
            let built =
                WebviewWindowBuilder::new(&app, kind.label(), WebviewUrl::App(kind.page().into()))
                    .title(kind.title())
                    .inner_size(w, h)
                    .min_inner_size(360.0, 300.0)
                    .center()
                    .build();
            if let Err(e) = built {
                tracing::warn!("cannot open the {} window: {e}", kind.label());
                if let Some(state) = app.try_state::<AppState>() {
                    state.note(format!(
                        "the {} window could not be opened: {e}",
                        kind.label()
                    ));
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot open the {} window: {e}", kind.label());
    }
}

/// What the status window shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub status: String,
    pub protected: bool,
    pub location: String,
    pub chord: String,
    pub chord_problem: Option<String>,
    pub last_contact: String,
    pub last_self_test: String,
    pub version: String,
    pub device_id: Option<String>,
    pub device_status: Option<String>,
    pub receivers: Vec<String>,
    pub keystore_problem: Option<String>,
    /// Degraded OS facilities (tray, autostart, hotspot...).
    pub notes: Vec<String>,
}

#[tauri::command(async)]
pub fn status_info(state: State<'_, AppState>) -> Result<StatusView, String> {
    let s = state.snapshot().ok_or("the agent state cannot be read")?;
    let m = state.menu_model().ok_or("the agent state cannot be read")?;
    Ok(StatusView {
        protected: m.protection == duress_agent_core::status_line::Protection::On,
        status: m.status,
        location: m.location,
        chord: m.chord,
        chord_problem: match &s.hotkey {
            HotkeyState::Unavailable { reason } => Some(reason.clone()),
            _ => None,
        },
        last_contact: m.last_contact,
        last_self_test: m.last_self_test,
        version: duress_agent_core::AGENT_VERSION.to_owned(),
        device_id: s.device_id,
        device_status: s.device_status.map(|d| d.as_str().to_owned()),
        receivers: s.receivers,
        keystore_problem: s.keystore_problem,
        notes: state.notes(),
    })
}

/// What the help window shows: policy `[help]` plus the chord and the hidden item's label.
#[derive(Debug, Clone, Serialize)]
pub struct HelpView {
    pub emergency_number: String,
    pub security_phone: Option<String>,
    pub security_email: Option<String>,
    pub teams_url: Option<String>,
    pub text: Option<String>,
    pub chord: String,
    pub hidden_button_label: String,
    /// How to bind `duress-agent trigger` by hand when the chord cannot be registered.
    pub binding_hint: Option<String>,
}

#[tauri::command(async)]
pub fn help_info(state: State<'_, AppState>) -> HelpView {
    let policy = state.engine.policy();
    let hotkey = state.hotkey.borrow().clone();
    HelpView {
        emergency_number: policy.help.emergency_number.clone(),
        security_phone: policy.help.security_phone.clone(),
        security_email: policy.help.security_email.clone(),
        teams_url: policy.help.teams_url.clone(),
        text: policy.help.text.clone(),
        chord: crate::tray::model::chord_text(&hotkey, policy),
        hidden_button_label: policy.tray.hidden_button_label.clone(),
        binding_hint: manual_binding_hint(&hotkey, state.session),
    }
}

/// The location form's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LocationForm {
    pub label: String,
    pub building: String,
    pub floor: String,
    pub room: String,
}

/// The current location, and whether the user may change it.
#[derive(Debug, Clone, Serialize)]
pub struct LocationView {
    pub allowed: bool,
    pub user_set: bool,
    pub current: LocationForm,
}

#[tauri::command(async)]
pub fn location_info(state: State<'_, AppState>) -> Result<LocationView, String> {
    let e = &state.engine;
    let loc = e.effective_location().map_err(|e| e.to_string())?;
    Ok(LocationView {
        allowed: e.policy().tray.allow_user_location,
        user_set: e.user_location().map_err(|e| e.to_string())?.is_some(),
        current: LocationForm {
            label: loc.label.unwrap_or_default(),
            building: loc.bld.unwrap_or_default(),
            floor: loc.flr.unwrap_or_default(),
            room: loc.room.unwrap_or_default(),
        },
    })
}

/// Sets the user's location (hot desks); `None` returns to the station's own location.
/// Refused by the engine unless policy allows it.
#[tauri::command(async)]
pub fn set_location(
    state: State<'_, AppState>,
    location: Option<LocationForm>,
) -> Result<(), String> {
    let opt = |s: String| {
        let s = s.trim().to_owned();
        (!s.is_empty()).then_some(s)
    };
    let loc = location.map(|f| {
        let mut base = state.engine.policy().location.clone();
        // Keep the street address IT set; the user states where on the campus they sit.
        base.label = opt(f.label);
        base.bld = opt(f.building).or(base.bld);
        base.flr = opt(f.floor).or(base.flr);
        base.room = opt(f.room);
        base
    });
    if let Some(l) = &loc
        && *l == Location::default()
    {
        return Err("enter at least a label or a room".into());
    }
    state
        .engine
        .set_user_location(loc.as_ref())
        .map_err(|e| e.to_string())?;
    state.kick_refresh();
    Ok(())
}

/// Closes the calling window (pages have a Close button; no window permission is granted).
#[tauri::command(async)]
pub fn close_window(window: WebviewWindow) {
    if let Err(e) = window.destroy() {
        tracing::warn!("cannot close the {} window: {e}", window.label());
    }
}

/// What the cancel window shows.
#[derive(Debug, Clone, Serialize)]
pub struct CancelView {
    pub label: String,
}

#[tauri::command(async)]
pub fn cancel_info(state: State<'_, AppState>) -> CancelView {
    CancelView {
        label: state.engine.policy().cancel.label.clone(),
    }
}

/// Sends the cancel with the PIN typed, whatever it is: a wrong or duress PIN sends the same
/// cancel and gets the same answer (the window closes), so whoever watches learns nothing.
#[tauri::command(async)]
pub fn cancel_submit(state: State<'_, AppState>, window: WebviewWindow, pin: String) {
    state
        .alarm
        .cancel(duress_agent_core::duress_core::Source::Tray, Some(pin));
    if let Err(e) = window.destroy() {
        tracing::warn!("cannot close the cancel window: {e}");
    }
}
