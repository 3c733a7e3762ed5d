//! Signed acknowledgements (docs/protocol.md §5.4).
//!
//! The receiver signs every answer that acknowledges an event with its own Ed25519
//! *acknowledgement key*, kept apart from its database. The signature is detached: it covers a
//! fixed text built from four facts of the answer — event id, `received_at`, incident id and the
//! key id — and travels beside them in the answer's `ack` member. An agent whose policy names
//! the key (`[[receivers]] ack_key`) marks an event delivered only when that signature verifies,
//! so a TLS-inspecting proxy or a mis-issued certificate cannot make it drop an alarm that never
//! reached the receiver.
//!
//! The signed bytes (UTF-8, `\n` after every line, no trailing spaces):
//!
//! ```text
//! duress-ack-v1
//! id=<event id: lower-case hyphenated UUID>
//! received_at=<YYYY-MM-DDTHH:MM:SS.sssZ: UTC, exactly three fraction digits>
//! incident_id=<lower-case hyphenated UUID, or nothing when the answer's incident_id is null>
//! kid=<the key id: RFC 7638 SHA-256 thumbprint of the key's public JWK, base64url>
//! ```
//!
//! Why a fixed text and not JSON: JSON has no canonical form without another specification
//! (RFC 8785), and four fields in fixed order with a version line are trivial to rebuild in any
//! language. The signature is plain Ed25519 (RFC 8032, verified strictly), base64url without
//! padding: there is one algorithm and nothing to negotiate.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::jws::Jwk;

/// The first line of the signed text; a later format gets a new version line.
pub const ACK_CONTEXT: &str = "duress-ack-v1";

/// The `ack` member of an event's answer: who signed and the detached signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckSignature {
    /// The key id: the RFC 7638 thumbprint of `jwk`.
    pub kid: String,
    /// The public key that signed, so an agent configured with a thumbprint can learn it.
    pub jwk: Jwk,
    /// base64url (no padding) of the 64-byte Ed25519 signature over [`signing_input`].
    pub sig: String,
}

/// Why an acknowledgement was not accepted as signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("the answer carries no acknowledgement signature")]
    Missing,
    #[error("the acknowledgement is signed by key {0}, which the policy does not list")]
    UnknownKey(String),
    #[error("the acknowledgement's kid does not match the thumbprint of its jwk")]
    KidMismatch,
    #[error("the acknowledgement key is not a valid Ed25519 JWK: {0}")]
    BadKey(String),
    #[error("the acknowledgement signature does not verify")]
    BadSignature,
}

/// `received_at` as the signed text writes it: UTC, milliseconds, always three digits.
pub fn canonical_time(t: OffsetDateTime) -> String {
    let t = crate::clock::truncate_to_millis(t).to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The exact bytes an acknowledgement signature covers (see the module docs).
pub fn signing_input(
    id: Uuid,
    received_at: OffsetDateTime,
    incident_id: Option<Uuid>,
    kid: &str,
) -> Vec<u8> {
    format!(
        "{ACK_CONTEXT}\nid={}\nreceived_at={}\nincident_id={}\nkid={kid}\n",
        id.hyphenated(),
        canonical_time(received_at),
        incident_id
            .map(|i| i.hyphenated().to_string())
            .unwrap_or_default(),
    )
    .into_bytes()
}

/// The receiver's acknowledgement signing key. `Debug` never shows the seed; memory is wiped on
/// drop.
pub struct AckSigningKey {
    signing: SigningKey,
    jwk: Jwk,
    kid: String,
}

impl std::fmt::Debug for AckSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckSigningKey")
            .field("kid", &self.kid)
            .field("seed", &"<redacted>")
            .finish()
    }
}

impl AckSigningKey {
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let jwk = Jwk::from_verifying_key(&signing.verifying_key());
        let kid = jwk.thumbprint();
        AckSigningKey { signing, jwk, kid }
    }

    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Signs the four facts of an answer.
    pub fn sign(
        &self,
        id: Uuid,
        received_at: OffsetDateTime,
        incident_id: Option<Uuid>,
    ) -> AckSignature {
        let input = signing_input(id, received_at, incident_id, &self.kid);
        let sig: Signature = self.signing.sign(&input);
        AckSignature {
            kid: self.kid.clone(),
            jwk: self.jwk.clone(),
            sig: URL_SAFE_NO_PAD.encode(sig.to_bytes()),
        }
    }
}

/// One key an agent trusts for a receiver's acknowledgements: the public JWK itself, or only
/// its thumbprint (then the key is taken from the answer and must hash to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedAckKey {
    Jwk { kid: String, key: VerifyingKey },
    Thumbprint(String),
}

impl TrustedAckKey {
    /// A JWK as JSON (starts with `{`), or an RFC 7638 thumbprint (43 base64url characters).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.starts_with('{') {
            let jwk: Jwk =
                serde_json::from_str(text).map_err(|e| format!("ack_key is not a JWK ({e})"))?;
            let key = jwk.to_verifying_key().map_err(|e| e.to_string())?;
            return Ok(TrustedAckKey::Jwk {
                kid: jwk.thumbprint(),
                key,
            });
        }
        let valid = text.len() == 43
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && URL_SAFE_NO_PAD.decode(text).is_ok_and(|d| d.len() == 32);
        if valid {
            Ok(TrustedAckKey::Thumbprint(text.to_owned()))
        } else {
            Err(format!(
                "ack_key {text:?} is neither a public JWK (JSON) nor an RFC 7638 thumbprint \
                 (43 base64url characters)"
            ))
        }
    }

    /// Several keys separated by `;` (the overlap of a key rotation). Empty entries are skipped.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        text.split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(TrustedAckKey::parse)
            .collect()
    }

    pub fn kid(&self) -> &str {
        match self {
            TrustedAckKey::Jwk { kid, .. } | TrustedAckKey::Thumbprint(kid) => kid,
        }
    }
}

/// Checks an answer's signature against the trusted keys (any one of them may have signed).
pub fn verify(
    trusted: &[TrustedAckKey],
    ack: Option<&AckSignature>,
    id: Uuid,
    received_at: OffsetDateTime,
    incident_id: Option<Uuid>,
) -> Result<(), AckError> {
    let ack = ack.ok_or(AckError::Missing)?;
    let Some(trust) = trusted.iter().find(|t| t.kid() == ack.kid) else {
        return Err(AckError::UnknownKey(ack.kid.clone()));
    };
    let key = match trust {
        TrustedAckKey::Jwk { key, .. } => *key,
        TrustedAckKey::Thumbprint(_) => {
            // The answer's own JWK, accepted only because it hashes to the configured
            // thumbprint.
            if ack.jwk.thumbprint() != ack.kid {
                return Err(AckError::KidMismatch);
            }
            ack.jwk
                .to_verifying_key()
                .map_err(|e| AckError::BadKey(e.to_string()))?
        }
    };
    let raw = URL_SAFE_NO_PAD
        .decode(&ack.sig)
        .map_err(|_| AckError::BadSignature)?;
    let sig: [u8; 64] = raw.try_into().map_err(|_| AckError::BadSignature)?;
    let input = signing_input(id, received_at, incident_id, &ack.kid);
    key.verify_strict(&input, &Signature::from_bytes(&sig))
        .map_err(|_| AckError::BadSignature)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn facts() -> (Uuid, OffsetDateTime, Option<Uuid>) {
        (
            Uuid::parse_str("019abcde-f012-7abc-8def-0123456789ab").unwrap(),
            datetime!(2026-11-26 12:00:00 UTC),
            Some(Uuid::parse_str("019abcde-f012-7abc-8def-0123456789ac").unwrap()),
        )
    }

    #[test]
    fn signing_input_is_the_documented_text() {
        let (id, at, inc) = facts();
        let text = String::from_utf8(signing_input(id, at, inc, "KID")).unwrap();
        assert_eq!(
            text,
            "duress-ack-v1\nid=019abcde-f012-7abc-8def-0123456789ab\n\
             received_at=2026-11-26T12:00:00.000Z\n\
             incident_id=019abcde-f012-7abc-8def-0123456789ac\nkid=KID\n"
        );
        let none = String::from_utf8(signing_input(id, at, None, "KID")).unwrap();
        assert!(none.contains("\nincident_id=\nkid=KID\n"), "{none}");
        // Offsets and sub-millisecond digits do not change the text.
        let shifted = datetime!(2026-11-26 14:00:00.000999 +02:00);
        assert_eq!(signing_input(id, shifted, inc, "KID"), text.as_bytes());
    }

    #[test]
    fn sign_and_verify_with_jwk_and_thumbprint() {
        let key = AckSigningKey::from_seed(&[3u8; 32]);
        let (id, at, inc) = facts();
        let ack = key.sign(id, at, inc);
        let jwk_json = serde_json::to_string(key.public_jwk()).unwrap();
        for spec in [jwk_json.as_str(), key.kid()] {
            let trusted = TrustedAckKey::parse_list(spec).unwrap();
            verify(&trusted, Some(&ack), id, at, inc).unwrap();
            // Any changed fact fails.
            assert_eq!(
                verify(&trusted, Some(&ack), id, at, None),
                Err(AckError::BadSignature)
            );
            assert_eq!(verify(&trusted, None, id, at, inc), Err(AckError::Missing));
        }
        // Another key, even one whose jwk is carried honestly, is not trusted.
        let other = AckSigningKey::from_seed(&[4u8; 32]);
        let trusted = TrustedAckKey::parse_list(key.kid()).unwrap();
        assert!(matches!(
            verify(&trusted, Some(&other.sign(id, at, inc)), id, at, inc),
            Err(AckError::UnknownKey(_))
        ));
        // A forged answer naming the trusted kid with another jwk: refused.
        let mut forged = other.sign(id, at, inc);
        forged.kid = key.kid().to_owned();
        assert_eq!(
            verify(&trusted, Some(&forged), id, at, inc),
            Err(AckError::KidMismatch)
        );
    }

    #[test]
    fn rotation_overlap_accepts_either_listed_key() {
        let old = AckSigningKey::from_seed(&[5u8; 32]);
        let new = AckSigningKey::from_seed(&[6u8; 32]);
        let (id, at, inc) = facts();
        let both = TrustedAckKey::parse_list(&format!("{}; {}", old.kid(), new.kid())).unwrap();
        verify(&both, Some(&old.sign(id, at, inc)), id, at, inc).unwrap();
        verify(&both, Some(&new.sign(id, at, inc)), id, at, inc).unwrap();
        let new_only = TrustedAckKey::parse_list(new.kid()).unwrap();
        assert!(verify(&new_only, Some(&old.sign(id, at, inc)), id, at, inc).is_err());
    }

    #[test]
    fn bad_specs_are_refused() {
        for bad in ["", "x", "{not json", &"A".repeat(44)] {
            assert!(TrustedAckKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
