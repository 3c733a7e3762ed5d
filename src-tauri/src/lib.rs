//! # duress-agent — the Duress agent binary
//!
//! A thin front end over `duress-agent-core`. [`run`] dispatches: a CLI subcommand (`enroll`,
//! `trigger`, `status`, `run --headless`; see [`cli`]) runs without ever initialising Tauri or
//! GTK and needs no display; no subcommand starts the tray app ([`app`]).
//!
//! The tray app's modules:
//!
//! - [`app`]: wiring — single instance, engine thread, alarm thread, hotkey, tray, windows.
//! - [`alarm`]: the dedicated alarm thread that turns tray and hotspot activations into
//!   [`Engine::record`](duress_agent_core::Engine::record) calls, off the UI thread.
//! - [`hotkey`]: the chord — X11 grabs via global-hotkey, the Wayland GlobalShortcuts portal,
//!   Windows/macOS behind `cfg`; registration failures degrade to a reported state.
//! - [`tray`]: the menu, computed as a pure [`tray::MenuModel`] from the engine status.
//! - [`windows`]: the on-demand webview windows (status, help, change location) and their
//!   commands; no webview exists unless one is open (or the hotspot is enabled).
//! - [`hotspot`]: the optional invisible corner window (double-click raises an alarm).
//! - [`single_instance`]: a lock file in the state directory; a second start exits 0.
//! - [`autostart`]: the per-user login entry, refreshed at each launch.
//! - [`local_time`]: the local UTC offset for showing times of day.
#![forbid(unsafe_code)]
// Tests may unwrap: a panic is exactly how a test should fail.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod alarm;
pub mod app;
pub mod app_state;
pub mod autostart;
pub mod cli;
pub mod diagnose;
pub mod engine_setup;
pub mod hotkey;
pub mod hotspot;
pub mod local_time;
pub mod single_instance;
pub mod tray;
pub mod windows;

use std::process::ExitCode;

use clap::Parser as _;

/// The Tauri version linked into this binary (shown by `--version`).
pub const TAURI_VERSION: &str = tauri::VERSION;

/// Entry point of the `duress-agent` binary.
pub fn run() -> ExitCode {
    let args = cli::Cli::parse();
    match args.command {
        None => app::run_tray(),
        Some(command) => cli::execute(command),
    }
}
