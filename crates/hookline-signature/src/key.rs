//! Secrets, decoded once per scheme into the key material that signs and verifies.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{Scheme, SecretError};

/// The shortest HMAC key accepted from a `whsec_` secret. The Standard Webhooks spec asks
/// for 24 to 64 random bytes; 16 still refuses the empty or truncated keys that lenient
/// decoders have let through elsewhere (an empty HMAC key authenticates forgeries).
pub const MIN_HMAC_KEY_LEN: usize = 16;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// One decoded key. The `Debug` form never shows key material.
#[derive(Clone)]
pub(crate) enum Key {
    /// An HMAC-SHA256 key, with its inner and outer pads already absorbed.
    Hmac(Box<HmacSha256>),
    /// An Ed25519 secret key: signs `v1a` and verifies with its public half.
    Ed25519Secret(Box<SigningKey>),
    /// An Ed25519 public key: verifies `v1a` only.
    Ed25519Public(VerifyingKey),
    /// A plain shared secret sent as-is in a header (Hugging Face): stored as its SHA-256,
    /// so comparison is constant time whatever the length of the candidate.
    Shared { plain: String, digest: [u8; 32] },
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Key::Hmac(_) => "hmac-sha256",
            Key::Ed25519Secret(_) => "ed25519-secret",
            Key::Ed25519Public(_) => "ed25519-public",
            Key::Shared { .. } => "shared",
        };
        write!(f, "Key({kind}, <redacted>)")
    }
}

impl Key {
    /// The HMAC-SHA256 key of a scheme whose keys are all HMAC keys.
    pub(crate) fn hmac(&self) -> &HmacSha256 {
        match self {
            Key::Hmac(mac) => mac,
            _ => unreachable!("only hmac schemes ask for the hmac key"),
        }
    }

    /// Decodes `secret` the way `scheme`'s real senders and verifiers do.
    pub(crate) fn parse(scheme: Scheme, secret: &str) -> Result<Key, SecretError> {
        let secret = secret.trim();
        if secret.is_empty() {
            return Err(SecretError::Empty);
        }
        match scheme {
            Scheme::Standard | Scheme::Svix => {
                if let Some(rest) = secret.strip_prefix("whsk_") {
                    return ed25519_secret(rest);
                }
                if let Some(rest) = secret.strip_prefix("whpk_") {
                    return ed25519_public(rest);
                }
                // The reference libraries strip `whsec_` when present and decode the rest.
                let (prefix, encoded) = match secret.strip_prefix("whsec_") {
                    Some(rest) => ("whsec_", rest),
                    None => ("", secret),
                };
                hmac_key(decode_base64(prefix, encoded)?)
            }
            Scheme::Replicate => {
                reject_ed25519(scheme, secret)?;
                let encoded = secret
                    .strip_prefix("whsec_")
                    .ok_or(SecretError::MissingPrefix {
                        scheme,
                        expected: "whsec_",
                    })?;
                hmac_key(decode_base64("whsec_", encoded)?)
            }
            Scheme::OpenAi => {
                reject_ed25519(scheme, secret)?;
                // OpenAI's SDK decodes `whsec_` secrets and uses any other secret as raw bytes.
                match secret.strip_prefix("whsec_") {
                    Some(rest) => hmac_key(decode_base64("whsec_", rest)?),
                    None => Ok(raw_hmac_key(secret.as_bytes())),
                }
            }
            // These providers key the HMAC with the secret's UTF-8 bytes, prefix and all
            // (Stripe's `whsec_` is part of the key, not an encoding marker).
            Scheme::Github | Scheme::Stripe | Scheme::Slack | Scheme::Shopify => {
                Ok(raw_hmac_key(secret.as_bytes()))
            }
            Scheme::HuggingFace => Ok(Key::Shared {
                plain: secret.to_owned(),
                digest: Sha256::digest(secret.as_bytes()).into(),
            }),
        }
    }
}

fn reject_ed25519(scheme: Scheme, secret: &str) -> Result<(), SecretError> {
    if secret.starts_with("whsk_") || secret.starts_with("whpk_") {
        return Err(SecretError::Ed25519Unsupported { scheme });
    }
    Ok(())
}

fn decode_base64(prefix: &'static str, encoded: &str) -> Result<Vec<u8>, SecretError> {
    STANDARD
        .decode(encoded)
        .map_err(|_| SecretError::InvalidBase64 { prefix })
}

fn hmac_key(bytes: Vec<u8>) -> Result<Key, SecretError> {
    if bytes.len() < MIN_HMAC_KEY_LEN {
        return Err(SecretError::TooShort {
            len: bytes.len(),
            min: MIN_HMAC_KEY_LEN,
        });
    }
    Ok(raw_hmac_key(&bytes))
}

fn raw_hmac_key(bytes: &[u8]) -> Key {
    let mac = HmacSha256::new_from_slice(bytes).expect("hmac accepts keys of any length");
    Key::Hmac(Box::new(mac))
}

fn ed25519_secret(encoded: &str) -> Result<Key, SecretError> {
    const EXPECTED: &str = "base64 of a 32-byte seed, or of 64 bytes: seed then public key";
    let invalid = SecretError::InvalidEd25519 {
        prefix: "whsk_",
        expected: EXPECTED,
    };
    let bytes = decode_base64("whsk_", encoded)?;
    let key = match bytes.len() {
        32 => SigningKey::from_bytes(bytes.as_slice().try_into().expect("length checked")),
        64 => {
            let pair: &[u8; 64] = bytes.as_slice().try_into().expect("length checked");
            SigningKey::from_keypair_bytes(pair).map_err(|_| invalid)?
        }
        _ => return Err(invalid),
    };
    Ok(Key::Ed25519Secret(Box::new(key)))
}

fn ed25519_public(encoded: &str) -> Result<Key, SecretError> {
    let invalid = SecretError::InvalidEd25519 {
        prefix: "whpk_",
        expected: "base64 of a valid 32-byte public key",
    };
    let bytes = decode_base64("whpk_", encoded)?;
    let array: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| invalid.clone())?;
    let key = VerifyingKey::from_bytes(array).map_err(|_| invalid)?;
    Ok(Key::Ed25519Public(key))
}

/// Encodes an Ed25519 seed as a `whsk_` secret key and its public half as `whpk_`.
///
/// The caller brings the 32 random bytes, so this crate stays free of I/O.
pub fn ed25519_keypair_from_seed(seed: &[u8; 32]) -> (String, String) {
    let key = SigningKey::from_bytes(seed);
    (
        format!("whsk_{}", STANDARD.encode(seed)),
        format!("whpk_{}", STANDARD.encode(key.verifying_key().as_bytes())),
    )
}

/// Encodes random bytes as a `whsec_` secret. The caller brings 24 to 64 random bytes.
pub fn hmac_secret_from_bytes(bytes: &[u8]) -> String {
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// A new `whsec_` secret of 24 random bytes, from the operating system's generator
/// (through `rand`'s thread-local generator, which it seeds).
pub fn generate_hmac_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::Rng::fill(&mut rand::thread_rng(), &mut bytes);
    hmac_secret_from_bytes(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_refuses_empty_short_and_sloppy_base64() {
        let parse = |s| Key::parse(Scheme::Standard, s).unwrap_err();
        assert_eq!(parse(""), SecretError::Empty);
        assert_eq!(parse("  "), SecretError::Empty);
        assert_eq!(
            parse("whsec_"),
            SecretError::TooShort {
                len: 0,
                min: MIN_HMAC_KEY_LEN
            }
        );
        assert_eq!(
            parse("whsec_AAAA"),
            SecretError::TooShort {
                len: 3,
                min: MIN_HMAC_KEY_LEN
            }
        );
        assert_eq!(
            parse("whsec_!!!!"),
            SecretError::InvalidBase64 { prefix: "whsec_" }
        );
        // A truncated secret is refused: strict decoding, no silent truncation.
        assert_eq!(
            parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS"),
            SecretError::InvalidBase64 { prefix: "whsec_" }
        );
    }

    #[test]
    fn replicate_requires_the_whsec_prefix() {
        assert_eq!(
            Key::parse(Scheme::Replicate, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretError::MissingPrefix {
                scheme: Scheme::Replicate,
                expected: "whsec_"
            }
        );
    }

    #[test]
    fn ed25519_keys_round_trip_and_are_checked() {
        let (secret, public) = ed25519_keypair_from_seed(&[7; 32]);
        assert!(matches!(
            Key::parse(Scheme::Standard, &secret),
            Ok(Key::Ed25519Secret(_))
        ));
        assert!(matches!(
            Key::parse(Scheme::Svix, &public),
            Ok(Key::Ed25519Public(_))
        ));
        assert!(matches!(
            Key::parse(Scheme::Standard, "whsk_AAAA"),
            Err(SecretError::InvalidEd25519 { .. })
        ));
        assert_eq!(
            Key::parse(Scheme::Github, "whsk_AAAA").map(|_| ()),
            Ok(()),
            "github keys are raw bytes, whatever they look like"
        );
        assert_eq!(
            Key::parse(Scheme::OpenAi, &secret).unwrap_err(),
            SecretError::Ed25519Unsupported {
                scheme: Scheme::OpenAi
            }
        );
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = Key::parse(Scheme::HuggingFace, "hunter2-is-my-secret").unwrap();
        assert!(!format!("{key:?}").contains("hunter2"));
    }
}
