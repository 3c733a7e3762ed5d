//! Claim parsing and validation (`EventClaims`, `HeartbeatClaims`, `EnrollmentClaims`,
//! `Location`): any bytes must parse or be refused without a panic, validation must not panic,
//! and what parses must survive a serialise → parse round trip unchanged.
#![no_main]

use duress_core::{EnrollmentClaims, EventClaims, HeartbeatClaims, Location};
use libfuzzer_sys::fuzz_target;

fn round_trip<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_vec(v).expect("parsed claims serialise");
    let back: T = serde_json::from_slice(&text).expect("serialised claims parse");
    assert_eq!(&back, v, "round trip changed the claims");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = serde_json::from_slice::<EventClaims>(data) {
        let _ = c.validate();
        let _ = c.location.display_label();
        let _ = c.location.civic_address();
        round_trip(&c);
    }
    if let Ok(c) = serde_json::from_slice::<HeartbeatClaims>(data) {
        let _ = c.validate();
        round_trip(&c);
    }
    if let Ok(c) = serde_json::from_slice::<EnrollmentClaims>(data) {
        let _ = c.validate();
        let _ = format!("{c:?}");
        round_trip(&c);
    }
    if let Ok(l) = serde_json::from_slice::<Location>(data) {
        let _ = l.validate();
        round_trip(&l);
    }
});
