//! RFC 6238 time-based one-time codes (the `totp-rs` crate): SHA-1, 6 digits, 30-second steps
//! (what every authenticator app reads from an `otpauth://` URI), a 160-bit random secret
//! (RFC 4226 §4's recommended length), and ±1 step of tolerance for clocks and typing.
//!
//! [`matching_step`] says *which* step a code belongs to, so the store can refuse a code whose
//! step was already used (replay) — `totp-rs`'s own `check` only says yes or no.

use subtle::ConstantTimeEq as _;
use totp_rs::{Algorithm, TOTP};
use zeroize::Zeroizing;

/// Seconds per time step.
pub const STEP_SECONDS: u64 = 30;
/// Digits of a code.
pub const DIGITS: usize = 6;
/// 160 bits.
pub const SECRET_BYTES: usize = 20;
/// What authenticator apps show as the account's issuer.
pub const ISSUER: &str = "Duress console";

/// A TOTP secret in clear: only ever in memory, wiped on drop, never printed.
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

impl TotpSecret {
    /// 160 random bits from the operating system.
    pub fn generate() -> anyhow::Result<TotpSecret> {
        let mut bytes = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        getrandom::getrandom(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        Ok(TotpSecret(bytes))
    }

    pub fn from_bytes(bytes: Zeroizing<Vec<u8>>) -> TotpSecret {
        TotpSecret(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// (`totp-rs` is built with `zeroize`: its copy of the secret is wiped when dropped.)
    fn totp(&self, account: &str) -> anyhow::Result<TOTP> {
        let totp = TOTP::new(
            Algorithm::SHA1,
            DIGITS,
            0,
            STEP_SECONDS,
            self.0.to_vec(),
            Some(ISSUER.to_owned()),
            account.to_owned(),
        )
        .map_err(|e| anyhow::anyhow!("TOTP parameters: {e}"))?;
        Ok(totp)
    }

    /// The `otpauth://totp/…` URI an authenticator app scans.
    pub fn otpauth_uri(&self, account: &str) -> anyhow::Result<Zeroizing<String>> {
        Ok(Zeroizing::new(self.totp(account)?.get_url()))
    }

    /// The secret as RFC 4648 base32 (no padding), for typing it in by hand.
    pub fn base32(&self, account: &str) -> anyhow::Result<Zeroizing<String>> {
        Ok(Zeroizing::new(self.totp(account)?.get_secret_base32()))
    }

    /// The code of time step `step`.
    fn code_at(&self, totp: &TOTP, step: u64) -> Zeroizing<String> {
        Zeroizing::new(totp.generate(step.saturating_mul(STEP_SECONDS)))
    }
}

/// The time step of `unix_seconds`.
pub fn step_of(unix_seconds: u64) -> u64 {
    unix_seconds / STEP_SECONDS
}

/// A code as typed: 6 digits, spaces ignored (apps show "123 456"); `None` otherwise.
pub fn parse_code(typed: &str) -> Option<String> {
    let code: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    (code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// The time step (the current one, or one either side) whose code is `code`, compared in
/// constant time; `None` when no step of the window has it.
pub fn matching_step(
    secret: &TotpSecret,
    account: &str,
    code: &str,
    unix_seconds: u64,
) -> anyhow::Result<Option<u64>> {
    let Some(code) = parse_code(code) else {
        return Ok(None);
    };
    let totp = secret.totp(account)?;
    let now = step_of(unix_seconds);
    let mut found = None;
    for step in [now.saturating_sub(1), now, now + 1] {
        let expected = secret.code_at(&totp, step);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && found.is_none() {
            found = Some(step);
        }
    }
    Ok(found)
}

/// The receiver's clock as Unix seconds.
pub fn unix_now() -> u64 {
    u64::try_from(crate::api::receiver_now().unix_timestamp()).unwrap_or(0)
}

/// `data` as a QR code in SVG (the `qrcode` crate), to inline in the enrolment page: no image
/// service, nothing leaves the receiver.
pub fn qr_svg(data: &str) -> anyhow::Result<String> {
    let code = qrcode::QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| anyhow::anyhow!("QR code: {e}"))?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build();
    // Inlined in HTML: the XML declaration has no place there.
    Ok(match svg.find("<svg") {
        Some(at) => svg[at..].to_owned(),
        None => svg,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 (8 digits there; our 6 are its last six).
    #[test]
    fn codes_follow_rfc_6238_and_the_window_is_one_step_each_side() {
        let secret = TotpSecret::from_bytes(Zeroizing::new(b"12345678901234567890".to_vec()));
        // T = 59 s: 94287082; T = 1111111109: 07081804; T = 2000000000: 69279037.
        for (t, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(
                matching_step(&secret, "olga", code, t).unwrap(),
                Some(step_of(t)),
                "{t}"
            );
        }
        assert_eq!(
            matching_step(&secret, "olga", "287 082", 59 + 30).unwrap(),
            Some(1),
            "the previous step, spaces ignored"
        );
        assert_eq!(
            matching_step(&secret, "olga", "287082", 59 + 90).unwrap(),
            None
        );
        assert_eq!(matching_step(&secret, "olga", "28708", 59).unwrap(), None);
        assert_eq!(matching_step(&secret, "olga", "abcdef", 59).unwrap(), None);
    }

    #[test]
    fn the_uri_names_the_issuer_and_account_and_nothing_prints_the_secret() {
        let secret = TotpSecret::generate().unwrap();
        assert_eq!(secret.as_bytes().len(), 20);
        let uri = secret.otpauth_uri("olga").unwrap();
        let b32 = secret.base32("olga").unwrap();
        assert!(uri.starts_with("otpauth://totp/"), "{}", *uri);
        assert!(uri.contains(&format!("secret={}", *b32)), "{}", *uri);
        assert!(uri.contains("olga"));
        assert_eq!(b32.len(), 32, "160 bits in base32");
        assert_eq!(format!("{secret:?}"), "TotpSecret(..)");
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(!svg.contains("<script"));
    }
}
