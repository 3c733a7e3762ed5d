//! JWS compact serialization with Ed25519 (RFC 7515; RFC 8037 key type; RFC 9864 algorithm name).
//!
//! Written by hand rather than with a general JOSE crate on purpose: the only thing we must
//! accept is one algorithm with one key type, and every other input has to be *refused*. A
//! general library brings algorithm negotiation (the source of `alg: none` and HS256-with-a-
//! public-key confusion); these ~200 lines bring only the refusal.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// The algorithm we emit (RFC 9864 §2.2, fully specified).
pub const ALG_ED25519: &str = "Ed25519";
/// The polymorphic legacy name (RFC 8037); accepted when verifying, never emitted.
pub const ALG_EDDSA_LEGACY: &str = "EdDSA";

/// The `typ` header of each signed message kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typ {
    Event,
    Heartbeat,
    Enrollment,
    /// A station retiring itself (`duress-agent decommission`, docs/protocol.md §5.6).
    Retirement,
}

impl Typ {
    pub const fn as_str(self) -> &'static str {
        match self {
            Typ::Event => "duress-event",
            Typ::Heartbeat => "duress-heartbeat",
            Typ::Enrollment => "duress-enrollment",
            Typ::Retirement => "duress-retirement",
        }
    }
}

/// Why a token was refused. Each variant maps to one problem type at the receiver.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwsError {
    #[error("not a JWS compact serialization: {0}")]
    Malformed(&'static str),
    #[error("algorithm {0:?} is not accepted (only Ed25519, or legacy EdDSA)")]
    UnsupportedAlgorithm(String),
    #[error("critical header extensions are not understood: {0:?}")]
    UnsupportedCrit(Vec<String>),
    #[error("typ is {found:?}, expected {expected:?}")]
    WrongTyp {
        expected: &'static str,
        found: Option<String>,
    },
    #[error("signature does not verify")]
    BadSignature,
    #[error("public key is not a valid Ed25519 JWK: {0}")]
    BadKey(&'static str),
}

/// A public key as a JWK (RFC 8037 §2: `kty` OKP, `crv` Ed25519).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    /// base64url of the 32-byte public key.
    pub x: String,
}

impl Jwk {
    pub fn from_verifying_key(key: &VerifyingKey) -> Self {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(key.as_bytes()),
        }
    }

    pub fn to_verifying_key(&self) -> Result<VerifyingKey, JwsError> {
        if self.kty != "OKP" || self.crv != "Ed25519" {
            return Err(JwsError::BadKey("kty must be OKP and crv Ed25519"));
        }
        let raw = URL_SAFE_NO_PAD
            .decode(&self.x)
            .map_err(|_| JwsError::BadKey("x is not base64url"))?;
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|_| JwsError::BadKey("x is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| JwsError::BadKey("x is not a curve point"))?;
        if key.is_weak() {
            return Err(JwsError::BadKey("x is a small-order point"));
        }
        Ok(key)
    }

    /// RFC 7638 thumbprint (SHA-256, base64url): a stable name for the key.
    pub fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"{}","kty":"{}","x":"{}"}}"#,
            self.crv, self.kty, self.x
        );
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }
}

/// The protected header. Unknown members are ignored (RFC 7515 §4) unless listed in `crit`,
/// which we refuse whatever it names, since we understand no extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Only in enrollments: the key being enrolled, which also signs (proof of possession).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<Jwk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crit: Option<Vec<String>>,
}

/// A device's Ed25519 private key. Holds the 32-byte seed; `Debug` never shows it and the
/// memory is wiped on drop.
pub struct DeviceKey {
    signing: SigningKey,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("public", &self.public_jwk().x)
            .field("seed", &"<redacted>")
            .finish()
    }
}

impl DeviceKey {
    /// From the 32-byte seed (RFC 8032 private key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        DeviceKey {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The seed, for storing in the OS keystore and nowhere else.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    pub fn public_jwk(&self) -> Jwk {
        Jwk::from_verifying_key(&self.verifying_key())
    }

    /// Signs `payload` as a compact JWS with `alg: Ed25519`.
    pub fn sign(&self, typ: Typ, kid: Option<&str>, payload: &[u8]) -> String {
        let header = Header {
            alg: ALG_ED25519.into(),
            kid: kid.map(str::to_owned),
            typ: Some(typ.as_str().into()),
            jwk: None,
            crit: None,
        };
        self.sign_with_header(&header, payload)
    }

    /// Signs an enrollment: the public key travels in the header (`jwk`) and signs the request.
    pub fn sign_enrollment(&self, payload: &[u8]) -> String {
        let header = Header {
            alg: ALG_ED25519.into(),
            kid: None,
            typ: Some(Typ::Enrollment.as_str().into()),
            jwk: Some(self.public_jwk()),
            crit: None,
        };
        self.sign_with_header(&header, payload)
    }

    /// Signs with an arbitrary header; public so tests can build hostile tokens.
    pub fn sign_with_header(&self, header: &Header, payload: &[u8]) -> String {
        // Serialising a struct of strings cannot fail.
        let header_json = serde_json::to_vec(header).unwrap_or_default();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header_json),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature: Signature = self.signing.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

/// A token split and decoded, not yet verified. Read the header (`kid`, `jwk`) to find the key,
/// then call [`ParsedJws::verify`]; the payload is only handed out after verification.
#[derive(Debug, Clone)]
pub struct ParsedJws {
    header: Header,
    signing_input_len: usize,
    token: String,
    payload: Vec<u8>,
    signature: [u8; 64],
}

impl ParsedJws {
    /// Splits and decodes `token`, and refuses any algorithm but Ed25519 before anything else.
    pub fn parse(token: &str) -> Result<Self, JwsError> {
        let token = token.trim_end_matches(['\r', '\n']);
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed("expected three dot-separated parts"));
        };
        if h.is_empty() || s.is_empty() {
            return Err(JwsError::Malformed("empty header or signature"));
        }
        let header_json = URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| JwsError::Malformed("header is not base64url"))?;
        let header: Header = serde_json::from_slice(&header_json)
            .map_err(|_| JwsError::Malformed("header is not a JSON object with a string alg"))?;
        if header.alg != ALG_ED25519 && header.alg != ALG_EDDSA_LEGACY {
            return Err(JwsError::UnsupportedAlgorithm(header.alg));
        }
        if let Some(crit) = &header.crit {
            return Err(JwsError::UnsupportedCrit(crit.clone()));
        }
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| JwsError::Malformed("payload is not base64url"))?;
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| JwsError::Malformed("signature is not base64url"))?;
        let signature: [u8; 64] = sig
            .try_into()
            .map_err(|_| JwsError::Malformed("signature is not 64 bytes"))?;
        Ok(ParsedJws {
            header,
            signing_input_len: h.len() + 1 + p.len(),
            token: token.to_owned(),
            payload,
            signature,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The token as received (without a trailing newline).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Checks `typ`.
    pub fn expect_typ(&self, typ: Typ) -> Result<(), JwsError> {
        if self.header.typ.as_deref() == Some(typ.as_str()) {
            Ok(())
        } else {
            Err(JwsError::WrongTyp {
                expected: typ.as_str(),
                found: self.header.typ.clone(),
            })
        }
    }

    /// Verifies the signature (strict RFC 8032 verification: no malleable or small-order
    /// signatures) and returns the payload.
    pub fn verify(&self, key: &VerifyingKey) -> Result<&[u8], JwsError> {
        let signing_input = &self.token.as_bytes()[..self.signing_input_len];
        key.verify_strict(signing_input, &Signature::from_bytes(&self.signature))
            .map_err(|_| JwsError::BadSignature)?;
        Ok(&self.payload)
    }

    /// For an enrollment: verifies with the key carried in the header itself.
    pub fn verify_with_embedded_jwk(&self) -> Result<(&[u8], Jwk), JwsError> {
        let jwk = self
            .header
            .jwk
            .clone()
            .ok_or(JwsError::BadKey("enrollment carries no jwk header"))?;
        let key = jwk.to_verifying_key()?;
        let payload = self.verify(&key)?;
        Ok((payload, jwk))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // RFC 8037 Appendix A (STANDARDS.md §6.1).
    const D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const PAYLOAD: &[u8] = b"Example of Ed25519 signing";
    const JWS_EDDSA: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    const JWS_ED25519: &str = "eyJhbGciOiJFZDI1NTE5In0.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.UxhIYLHGg39NVCLpQAVD_UcfOmnGSCzLFZoXYkLiIbFccmOb_qObsgjzLKsfJw-4NlccUgvYrEHrRbNV0HcZAQ";

    fn rfc_key() -> DeviceKey {
        let seed: [u8; 32] = URL_SAFE_NO_PAD.decode(D).unwrap().try_into().unwrap();
        DeviceKey::from_seed(&seed)
    }

    #[test]
    fn rfc8037_appendix_a_public_key() {
        assert_eq!(rfc_key().public_jwk().x, X);
        // RFC 8037 A.3 thumbprint.
        assert_eq!(
            rfc_key().public_jwk().thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn rfc8037_appendix_a_legacy_eddsa_vector_verifies() {
        let parsed = ParsedJws::parse(JWS_EDDSA).unwrap();
        assert_eq!(parsed.header().alg, "EdDSA");
        assert_eq!(parsed.verify(&rfc_key().verifying_key()).unwrap(), PAYLOAD);
    }

    #[test]
    fn rfc9864_ed25519_vector_is_reproduced_bit_for_bit() {
        // Our signer writes {"alg":"Ed25519",...}; reproduce the reference with a bare header.
        let header = Header {
            alg: "Ed25519".into(),
            kid: None,
            typ: None,
            jwk: None,
            crit: None,
        };
        assert_eq!(rfc_key().sign_with_header(&header, PAYLOAD), JWS_ED25519);
        let parsed = ParsedJws::parse(JWS_ED25519).unwrap();
        assert_eq!(parsed.verify(&rfc_key().verifying_key()).unwrap(), PAYLOAD);
    }

    fn forge(header_json: &str, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header_json),
            URL_SAFE_NO_PAD.encode(b"{}"),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    #[test]
    fn other_algorithms_are_refused_before_any_key_is_used() {
        for alg in ["none", "HS256", "RS256", "ES256", "PS256", "ed25519", ""] {
            let token = forge(&format!(r#"{{"alg":"{alg}"}}"#), &[0u8; 64]);
            assert_eq!(
                ParsedJws::parse(&token).unwrap_err(),
                JwsError::UnsupportedAlgorithm(alg.into()),
                "{alg}"
            );
        }
        // alg none with an empty signature: refused too (as malformed: empty signature).
        let token = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode("{}")
        );
        assert!(ParsedJws::parse(&token).is_err());
    }

    #[test]
    fn crit_is_refused() {
        let token = forge(
            r#"{"alg":"Ed25519","crit":["b64"],"b64":false}"#,
            &[0u8; 64],
        );
        assert!(matches!(
            ParsedJws::parse(&token),
            Err(JwsError::UnsupportedCrit(_))
        ));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for t in [
            "",
            ".",
            "..",
            "a.b",
            "a.b.c.d",
            "!!!.e30.AAAA",
            "e30.e30.AAAA",
        ] {
            assert!(ParsedJws::parse(t).is_err(), "{t:?}");
        }
        // Padding is not base64url-without-padding.
        let key = rfc_key();
        let good = key.sign(Typ::Event, Some("d"), b"{}");
        assert!(ParsedJws::parse(&format!("{good}=")).is_err());
    }

    #[test]
    fn typ_and_kid_are_carried() {
        let key = rfc_key();
        let token = key.sign(Typ::Heartbeat, Some("dev-1"), b"{}");
        let parsed = ParsedJws::parse(&token).unwrap();
        assert_eq!(parsed.header().kid.as_deref(), Some("dev-1"));
        parsed.expect_typ(Typ::Heartbeat).unwrap();
        assert!(parsed.expect_typ(Typ::Event).is_err());
    }

    #[test]
    fn enrollment_proves_possession_of_the_embedded_key() {
        let key = rfc_key();
        let token = key.sign_enrollment(b"{\"token\":\"t\"}");
        let parsed = ParsedJws::parse(&token).unwrap();
        let (payload, jwk) = parsed.verify_with_embedded_jwk().unwrap();
        assert_eq!(payload, b"{\"token\":\"t\"}");
        assert_eq!(jwk.x, X);
        // Another key's signature under this jwk fails.
        let other = DeviceKey::from_seed(&[7u8; 32]);
        let mut header = parsed.header().clone();
        header.jwk = Some(key.public_jwk());
        let forged = other.sign_with_header(&header, b"{}");
        assert_eq!(
            ParsedJws::parse(&forged)
                .unwrap()
                .verify_with_embedded_jwk()
                .unwrap_err(),
            JwsError::BadSignature
        );
    }

    #[test]
    fn debug_never_shows_the_seed() {
        let key = rfc_key();
        let dbg = format!("{key:?}");
        assert!(!dbg.contains(D));
        let seed_hex: String = key.seed().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!dbg.contains(&seed_hex));
        assert!(dbg.contains("redacted"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn sign_then_verify_holds(seed in any::<[u8; 32]>(), payload in proptest::collection::vec(any::<u8>(), 0..512)) {
                let key = DeviceKey::from_seed(&seed);
                let token = key.sign(Typ::Event, Some("kid"), &payload);
                let parsed = ParsedJws::parse(&token).unwrap();
                prop_assert_eq!(parsed.verify(&key.verifying_key()).unwrap(), &payload[..]);
            }

            #[test]
            fn any_flipped_bit_fails(seed in any::<[u8; 32]>(), payload in proptest::collection::vec(any::<u8>(), 0..128), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
                let key = DeviceKey::from_seed(&seed);
                let token = key.sign(Typ::Event, Some("kid"), &payload);
                let mut bytes = token.into_bytes();
                let i = pos.index(bytes.len());
                bytes[i] ^= 1 << bit;
                // A flipped bit may leave invalid UTF-8; that is a refusal as well.
                if let Ok(tampered) = String::from_utf8(bytes) {
                    let outcome = ParsedJws::parse(&tampered)
                        .and_then(|p| p.verify(&key.verifying_key()).map(|_| ()));
                    prop_assert!(outcome.is_err(), "tampered token verified: {}", tampered);
                }
            }
        }
    }
}
