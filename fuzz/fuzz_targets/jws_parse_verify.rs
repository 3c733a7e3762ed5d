//! Compact JWS decoding and verification (`duress_core::ParsedJws`), two ways:
//! 1. the input as a token: parse, check every `typ`, verify with a fixed key and with the
//!    embedded `jwk` — whatever it is, nothing may panic, and only `Ed25519`/`EdDSA` may parse;
//! 2. the input as a payload (one input in eight): signed by the fixed key, it must parse and
//!    verify back to the very same bytes, and any single flipped byte of the token must fail
//!    verification.
#![no_main]

use duress_core::jws::{ALG_ED25519, ALG_EDDSA_LEGACY};
use duress_core::{DeviceKey, ParsedJws, Typ};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = DeviceKey::from_seed(&[7u8; 32]);
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(parsed) = ParsedJws::parse(text)
    {
        let alg = parsed.header().alg.as_str();
        assert!(alg == ALG_ED25519 || alg == ALG_EDDSA_LEGACY, "parsed alg {alg:?}");
        assert!(parsed.header().crit.is_none(), "crit must be refused");
        for typ in [Typ::Event, Typ::Heartbeat, Typ::Enrollment] {
            let _ = parsed.expect_typ(typ);
        }
        let _ = parsed.verify(&key.verifying_key());
        let _ = parsed.verify_with_embedded_jwk();
    }

    // Signing and verifying cost far more than parsing: the round trip runs on one input in
    // eight (chosen by the input), so the parser sees many more inputs per second.
    if data.first().is_none_or(|b| b % 8 != 0) {
        return;
    }
    let token = key.sign(Typ::Event, Some("fuzz-device"), data);
    let parsed = ParsedJws::parse(&token).expect("our own token parses");
    assert_eq!(parsed.verify(&key.verifying_key()).expect("and verifies"), data);
    if !data.is_empty() {
        // Tamper with one character of the signing input: the signature must no longer hold.
        let i = usize::from(data[0]) % token.rfind('.').unwrap_or(1).max(1);
        let mut bytes = token.into_bytes();
        let c = bytes[i];
        bytes[i] = if c == b'A' { b'B' } else { b'A' };
        if let Ok(t) = String::from_utf8(bytes)
            && t.as_bytes()[i] != c
            && let Ok(p) = ParsedJws::parse(&t)
        {
            assert!(p.verify(&key.verifying_key()).is_err(), "tampered token verified");
        }
    }
});
