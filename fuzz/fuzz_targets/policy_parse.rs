//! Policy parsing (`duress_agent_core::Policy::from_toml_str`): an administrator's file, or a
//! hostile one — any text must be accepted or refused with an error, never a panic; what is
//! accepted must validate.
#![no_main]

use duress_agent_core::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = Policy::from_toml_str(text, "fuzz") {
        assert!(policy.validate().is_ok(), "an accepted policy validates");
    }
});
