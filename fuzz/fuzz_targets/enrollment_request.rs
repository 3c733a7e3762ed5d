//! The receiver's enrollment verification path up to the database, at the duress-core level
//! (the same calls, in the same order, as `duress-receiver/src/api/enrollments.rs`): parse →
//! `typ` → proof of possession with the embedded `jwk` → claims → validate → send-time window
//! → key thumbprint. Nothing may panic; what passes must carry a usable Ed25519 key.
#![no_main]

use duress_core::{EnrollmentClaims, ParsedJws, Typ};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = ParsedJws::parse(body) else {
        return;
    };
    if parsed.expect_typ(Typ::Enrollment).is_err() {
        return;
    }
    let Ok((payload, jwk)) = parsed.verify_with_embedded_jwk() else {
        return;
    };
    let key = jwk.to_verifying_key().expect("a jwk that verified is a usable key");
    assert!(!key.is_weak());
    assert_eq!(jwk.thumbprint().len(), 43);
    if let Ok(claims) = serde_json::from_slice::<EnrollmentClaims>(payload) {
        let _ = claims.validate();
        let _ = duress_core::clock::check_sent_at(claims.sent_at, time::OffsetDateTime::now_utc());
    }
});
