//! The integration API for PSIMs and other systems (issue 14, item 4): API keys created by an
//! admin ([`keys`]), sent as `Authorization: Bearer KEY` ([`auth`]), to list and read incidents
//! (also as CAP 1.2, [`crate::cap`]) and stations, and, with a read-write key, to claim, note
//! and resolve an incident through the same rules the console applies (the actor is
//! `apikey:ID`, audited). Documented in docs/integrations.md (## Integration API).

pub mod auth;
pub mod keys;
pub mod pages;
pub mod routes;

pub use routes::routes;
