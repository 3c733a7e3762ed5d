//! # duress-agent-core — the Duress agent engine, without a GUI
//!
//! Everything a workstation needs to turn a press into an alarm that is never lost, built so
//! that a tray app, a CLI and a test can all drive it without a display:
//!
//! - [`policy`]: the typed policy (TOML); unknown keys are refused by name.
//! - [`state`]: where the agent keeps its state (outbox, device id): a 0700 directory.
//! - [`keystore`]: the device's Ed25519 seed in the OS keystore (Secret Service, Credential
//!   Manager, Keychain) — never a file, never an in-memory fallback.
//! - [`outbox`]: SQLite (WAL, `synchronous=FULL`): an event is committed before any send and
//!   marked delivered only on an acknowledgement naming its id.
//! - [`sender`]: HTTPS over rustls (OS trust store plus an optional CA per receiver), ordered
//!   receivers with failover, answers classified (acked, clock skew, refused, unreachable).
//! - [`retry`]: the retry schedules (alarms fast, heartbeats with backoff).
//! - [`host`]: facts about the workstation (never fails).
//! - [`clock`]: the raw clock (and its test skew) under the learned server offset.
//! - [`engine`]: [`Engine`] ties them together: `enroll`, `record`, `deliver_pending`,
//!   `send_heartbeat`, `run`, `status`.
//! - [`status_line`]: the one line (tray menu, status window) saying whether the station is
//!   protected, from a [`StatusSnapshot`] — pure, with the covert-acknowledgement detail.
//! - [`hotkey_guard`]: the chord's accidental-press guard (`repeat`/`window_ms`/`hold_ms`).
//!
//! The invariant the whole crate serves: [`Engine::record`] returns only once the signed event is
//! durable on disk, touches no network, and nothing is ever removed from the outbox without a 2xx
//! answer whose body names the event's id.
#![forbid(unsafe_code)]
// Tests may unwrap: a panic is exactly how a test should fail.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod clock;
pub mod engine;
mod error;
pub mod host;
pub mod hotkey_guard;
pub mod keystore;
pub mod outbox;
pub mod policy;
pub mod retry;
pub mod sender;
pub mod state;
pub mod status_line;

/// The protocol crate, re-exported so front ends (tray, CLI) use the very same types.
pub use duress_core;
pub use engine::{
    DecommissionReport, DeliveryReport, Engine, EnrollOptions, RetireAnswer, StatusSnapshot,
};
pub use error::{Error, Result};
pub use keystore::KeystoreError;
pub use policy::{Policy, ReceiverConfig, Secret};

/// The agent's version, reported in host facts and `--version`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
