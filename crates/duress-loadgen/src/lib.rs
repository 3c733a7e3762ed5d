//! # duress-loadgen — load and end-to-end checks against a Duress receiver
//!
//! Simulated stations put on the wire exactly what the real agent sends (JWS Ed25519 signed by
//! `duress-core`), but keep their keys in memory: they do **not** use the OS keystore.
//!
//! - [`client`]: reqwest + rustls (ring) trusting one CA file; keep-alive connection pool.
//! - [`station`]: a simulated station — enroll, heartbeat, and deliver an event until a 2xx
//!   names its id (the agent's acknowledgement rule and retry schedule).
//! - [`console_feed`]: an officer's live stream (`GET /events`), for console delivery latency.
//! - [`scenario`]: one load run and its [`scenario::Report`] (`name=value` lines).
//! - [`stats`] — percentiles of measured latencies.
#![forbid(unsafe_code)]

pub mod client;
pub mod console_feed;
pub mod scenario;
pub mod station;
pub mod stats;

pub use scenario::{LoadConfig, Report, run};
pub use station::SimStation;
