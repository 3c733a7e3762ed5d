//! The tray app: what `duress-agent` with no subcommand runs.
//!
//! Threads, and why:
//!
//! - **main (UI)**: Tauri/GTK event loop, tray menu, on-demand windows. Never on the alarm path.
//! - **duress-engine**: its own tokio runtime running [`Engine::run`] (delivery, heartbeats,
//!   enrollment retries) and, on Wayland, the GlobalShortcuts portal session.
//! - **global-hotkey's X thread** (Linux X11): receives the chord and calls `Engine::record`
//!   itself — see [`crate::hotkey`].
//! - **duress-alarm**: records tray-menu and hotspot activations handed over by the UI thread.
//! - **duress-menu**: recomputes the menu from the engine status every 3 s (`tray::REFRESH`).
//!
//! Start-up never fails for an OS facility: a missing tray host, a taken chord, a locked
//! keystore, an autostart entry that cannot be written or a missing D-Bus are logged, shown in
//! the status and (for the chord) reported in heartbeats. Nothing here uses Tauri's `setup`
//! hook: everything is wired after `build()`, where an error is a value, not a panic.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use duress_agent_core::Engine;
use duress_agent_core::duress_core::HotkeyState;
use duress_agent_core::policy::{self, Hotspot};
use tauri::{Manager as _, RunEvent};
use tokio::sync::watch;

use crate::alarm::Alarm;
use crate::hotkey::{self, ChordHandler, Session};
use crate::tray::{self, MenuModel};

/// Test hook: block the UI thread this many milliseconds right after start-up, to prove that
/// a chord is recorded while the UI thread cannot run (`tests/tests/tray_silence.rs`).
pub const ENV_TEST_BLOCK_UI_MS: &str = "DURESS_AGENT_TEST_BLOCK_UI_MS";

/// Set to `1` by the systemd user service: when another agent already runs for this state
/// directory, wait for it to end and take over, instead of exiting (which `Restart=always`
/// would turn into a restart loop).
pub const ENV_WAIT_FOR_LOCK: &str = "DURESS_AGENT_WAIT_FOR_LOCK";

pub use crate::app_state::AppState;

/// Runs the tray app until Quit (or the session ends). Exit code 0 when another instance
/// already runs for this state directory.
pub fn run_tray() -> ExitCode {
    crate::cli::init_logging(true);
    let loaded = match policy::load_resolved_report(None) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let state_dir: PathBuf = match duress_agent_core::state::resolve_state_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = duress_agent_core::state::ensure_state_dir(&state_dir) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }

    // One agent per state directory: a second start (login item + a user double-click) exits
    // quietly and leaves the first with its chord.
    let instance = match crate::single_instance::acquire(&state_dir) {
        Ok(Some(lock)) => Some(lock),
        Ok(None) if std::env::var_os(ENV_WAIT_FOR_LOCK).is_some_and(|v| v == "1") => {
            tracing::info!(
                "another Duress agent already runs for {}; waiting to take over",
                state_dir.display()
            );
            match crate::single_instance::wait(&state_dir) {
                Ok(lock) => Some(lock),
                Err(e) => {
                    tracing::warn!("single-instance lock unavailable ({e}); starting anyway");
                    None
                }
            }
        }
        Ok(None) => {
            tracing::info!(
                "another Duress agent already runs for {}; exiting",
                state_dir.display()
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Better two agents (deliveries are idempotent) than none.
            tracing::warn!("single-instance lock unavailable ({e}); starting anyway");
            None
        }
    };

    let report = loaded.report();
    let policy = loaded.policy;
    let engine = match Engine::open(policy, state_dir.clone()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!(
                "error: cannot open the agent state in {}: {e}",
                state_dir.display()
            );
            return ExitCode::FAILURE;
        }
    };

    engine.set_local_offset(crate::local_time::offset_now());
    engine.set_policy_report(report);
    let (hotkey_tx, hotkey_rx) = watch::channel(HotkeyState::NotApplicable);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("duress-engine-rt")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt_handle = rt.handle().clone();
    let engine_thread = spawn_engine(rt, engine.clone(), hotkey_rx.clone(), shutdown_rx);

    let alarm = Alarm::spawn(engine.clone());
    let handler = ChordHandler::new(engine.clone(), &engine.policy().hotkey);
    let session = Session::from_env();

    if session == Session::None {
        // GTK cannot start without a display (it would panic): keep the engine delivering and
        // say why there is no tray and no chord.
        tracing::warn!("no graphical session: running without tray and chord");
        hotkey_tx.send_replace(HotkeyState::Unavailable {
            reason: "no graphical session".into(),
        });
        let _keep = (instance, hotkey_tx);
        let _ = engine_thread.map(|t| t.join());
        return ExitCode::SUCCESS;
    }

    let state = AppState::new(engine.clone(), alarm, hotkey_rx, session, shutdown_tx);
    let refresh = state.refresh.clone();

    let app = match tauri::Builder::default()
        .manage(state)
        .invoke_handler(tauri::generate_handler![
            crate::windows::status_info,
            crate::windows::help_info,
            crate::windows::location_info,
            crate::windows::set_location,
            crate::windows::close_window,
            crate::windows::cancel_info,
            crate::windows::cancel_submit,
            crate::hotspot::hotspot_trigger,
        ])
        .build(tauri::generate_context!())
    {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("the tray cannot start ({e}); the engine keeps delivering");
            hotkey_tx.send_replace(HotkeyState::Unavailable {
                reason: format!("the desktop integration failed to start: {e}"),
            });
            let _keep = (instance, hotkey_tx);
            let _ = engine_thread.map(|t| t.join());
            return ExitCode::SUCCESS;
        }
    };

    // The chord first: it matters more than anything visible.
    let registration = hotkey::start(
        &engine.policy().hotkey.chords,
        handler,
        hotkey_tx,
        &rt_handle,
    );

    let state = app.state::<AppState>();
    let model = state
        .menu_model()
        .unwrap_or_else(|| fallback_model(&engine));
    match tray::install(&app, &model) {
        Some(menu) => tray::spawn_refresher(app.handle().clone(), menu, refresh),
        None => tracing::warn!("running without a tray menu; the chord still works"),
    }
    if engine.policy().tray.hotspot != Hotspot::Off {
        crate::hotspot::open(app.handle(), engine.policy().tray.hotspot);
    }
    crate::autostart::refresh_in_background(app.handle().clone());

    if let Some(ms) = std::env::var(ENV_TEST_BLOCK_UI_MS)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tracing::warn!("test hook: blocking the UI thread for {ms} ms");
        let _ = app.run_on_main_thread(move || std::thread::sleep(Duration::from_millis(ms)));
    }
    tracing::info!(hotkey = ?*app.state::<AppState>().hotkey.borrow(), "tray ready");

    let mut keep = Some((registration, instance));
    app.run(move |handle, event| match event {
        RunEvent::ExitRequested {
            code: None, api, ..
        } => {
            // Closing the last window must not end a tray app; Quit passes a code.
            api.prevent_exit();
        }
        RunEvent::Exit => {
            if let Some(state) = handle.try_state::<AppState>() {
                state.request_shutdown();
            }
            keep.take();
        }
        _ => {}
    });
    ExitCode::SUCCESS
}

/// The engine loop on its own thread and runtime. `None` if the thread cannot start (then
/// presses are still recorded; `duress-agent run --headless` or the next start delivers them).
fn spawn_engine(
    rt: tokio::runtime::Runtime,
    engine: Engine,
    hotkey: watch::Receiver<HotkeyState>,
    mut shutdown: watch::Receiver<bool>,
) -> Option<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("duress-engine".into())
        .spawn(move || {
            let stop = async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            };
            if let Err(e) = rt.block_on(engine.run(stop, hotkey)) {
                tracing::error!("engine stopped: {e}");
            }
        })
        .map_err(|e| tracing::error!("cannot start the engine thread: {e}"))
        .ok()
}

/// A menu when even the status cannot be read (a broken state database): it says so.
fn fallback_model(engine: &Engine) -> MenuModel {
    let policy = engine.policy();
    let line = duress_agent_core::status_line::unreadable_state_line();
    MenuModel {
        status: line.text,
        protection: line.protection,
        location: "Location: unknown".into(),
        change_location: policy.tray.allow_user_location,
        chord: "Chord: starting…".into(),
        last_contact: "Last contact with Security: never".into(),
        last_self_test: "Last self-test: never".into(),
        hidden_button: policy.tray.hidden_button_label.clone(),
        cancel: policy.cancel.label.clone(),
        about: format!("About Duress {}", duress_agent_core::AGENT_VERSION),
        quit: policy.tray.allow_quit,
    }
}
