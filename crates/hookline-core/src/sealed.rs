//! Secrets sealed at rest under the operator's main key (`HOOKLINE_MAIN_KEY`).
//!
//! Both stores seal and open through the one [`Sealer`] they are opened with, so a secret
//! is stored the same way whatever the backend: endpoint secrets ([`Endpoint::secrets`])
//! and the members of a source's config that hold secrets ([`SECRET_MEMBERS`]) become
//! `sealed:v1:<key id>:<base64 of nonce and ciphertext>`. Everything else of a row stays
//! readable, so queries, indexes and the request log work as before.
//!
//! Why XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`): an AEAD, so a value that was
//! altered or opened with the wrong key fails rather than decrypting to garbage; its
//! 192-bit nonce can be drawn at random for every value with no counter to keep across
//! nodes and restarts (AES-GCM's 96-bit nonce cannot safely be); and it is fast in
//! software on any CPU. The header (`sealed:v1:<key id>`) is the associated data, so the
//! version and key id cannot be swapped on a stored value either.
//!
//! The key id is a short hash of the key: a reader knows which key sealed a value without
//! trying each, says so when that key is not configured, and a rotation can tell which
//! values still need re-sealing. Reading accepts the current key, any previous key, and
//! plaintext (values written before a key was set); writing always seals under the
//! current key. Without any key nothing is sealed and the stores behave as before.
//!
//! A plaintext secret that itself begins with `sealed:` would be taken for a sealed value;
//! endpoint secrets are `whsec_`/`whsk_` keys, and no provider issues such secrets.
//!
//! [`Endpoint::secrets`]: crate::model::Endpoint::secrets

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::EndpointSecret;

/// The prefix of every sealed value, then the format's version.
/// The mark of a sealed value. Plaintext secrets starting with it are refused where they
/// are given, so a stored value that has it is always one this module wrote.
pub const PREFIX: &str = "sealed:";
const VERSION: &str = "v1";
/// Bytes of a main key.
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;

/// The members of a source's config that hold secrets, as a string or a list of strings.
pub const SECRET_MEMBERS: [&str; 6] = [
    "secret",
    "secrets",
    "password",
    "passwords",
    "token",
    "tokens",
];

/// Why a main key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64, or not 32 bytes once decoded.
    #[error(
        "a main key is 32 random bytes in base64 (make one with `openssl rand -base64 32`); {0}"
    )]
    Malformed(String),
    /// Two configured keys have the same id (the same key given twice).
    #[error("main key {0} is given twice")]
    Duplicate(String),
}

/// Why a stored value cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Sealed under a key that is neither the main key nor a previous one.
    #[error(
        "a stored secret is sealed with main key {key_id}, which is neither HOOKLINE_MAIN_KEY \
         nor one of HOOKLINE_PREVIOUS_MAIN_KEYS (configured: {configured})"
    )]
    UnknownKey {
        /// The id in the sealed value.
        key_id: String,
        /// The ids of the keys configured, or `none`.
        configured: String,
    },
    /// The value does not open under the key its id names: altered, or corrupted.
    #[error(
        "a stored secret sealed with main key {key_id} does not open: it was altered or \
         corrupted"
    )]
    Tampered {
        /// The id in the sealed value.
        key_id: String,
    },
    /// Starts as a sealed value but is not one of a known version and shape.
    #[error("a stored secret is not a sealed value this hookline can read ({0})")]
    Malformed(String),
}

impl From<SealError> for crate::Error {
    fn from(error: SealError) -> Self {
        crate::Error::storage(error)
    }
}

/// One main key: its id and its cipher. Its `Debug` shows only the id.
#[derive(Clone)]
pub struct MainKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for MainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MainKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl MainKey {
    /// Parses a key given as base64 (standard alphabet, padding optional) of 32 bytes.
    pub fn parse(text: &str) -> Result<MainKey, KeyError> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| KeyError::Malformed("this one is not base64".into()))?;
        let bytes: [u8; KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
            KeyError::Malformed(format!("this one decodes to {} bytes", bytes.len()))
        })?;
        Ok(MainKey::from_bytes(&bytes))
    }

    /// The key of these bytes.
    pub fn from_bytes(bytes: &[u8; KEY_BYTES]) -> MainKey {
        // Domain-separated, so the id is not a hash that means anything elsewhere.
        let digest = Sha256::new()
            .chain_update(b"hookline main key id\0")
            .chain_update(bytes)
            .finalize();
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        MainKey {
            id,
            cipher: XChaCha20Poly1305::new(bytes.into()),
        }
    }

    /// A fresh random key, and its base64 text (what `HOOKLINE_MAIN_KEY` takes).
    pub fn generate() -> (MainKey, String) {
        let mut bytes = [0u8; KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        (MainKey::from_bytes(&bytes), STANDARD.encode(bytes))
    }

    /// The key's id: 8 hex digits of a hash of the key, as sealed values name it.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Seals secrets under the current main key and opens them under it or a previous one.
/// Cheap to clone. [`Sealer::default`] has no key: it seals nothing and reads plaintext.
#[derive(Debug, Clone, Default)]
pub struct Sealer {
    keys: Arc<Keys>,
}

#[derive(Debug, Default)]
struct Keys {
    current: Option<MainKey>,
    previous: Vec<MainKey>,
}

impl Sealer {
    /// A sealer that seals nothing (no main key configured).
    pub fn none() -> Sealer {
        Sealer::default()
    }

    /// Seals under `current` (when given) and opens under it or any of `previous`.
    /// Without `current`, values are written in plaintext and sealed ones still read:
    /// how a deployment stops sealing (move the key to `previous`, then `hookline rekey`).
    pub fn new(current: Option<MainKey>, previous: Vec<MainKey>) -> Result<Sealer, KeyError> {
        let mut ids: Vec<&str> = current.iter().chain(&previous).map(MainKey::id).collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(KeyError::Duplicate(pair[0].to_owned()));
        }
        Ok(Sealer {
            keys: Arc::new(Keys { current, previous }),
        })
    }

    /// Parses the configured keys: `current` and `previous` as base64 texts.
    pub fn from_config(current: Option<&str>, previous: &[String]) -> Result<Sealer, KeyError> {
        let current = current.map(MainKey::parse).transpose()?;
        let previous = previous
            .iter()
            .map(|text| MainKey::parse(text))
            .collect::<Result<_, _>>()?;
        Sealer::new(current, previous)
    }

    /// The id of the key new values are sealed under, if any.
    pub fn current_key_id(&self) -> Option<&str> {
        self.keys.current.as_ref().map(MainKey::id)
    }

    /// Whether any key is configured, current or previous.
    pub fn has_keys(&self) -> bool {
        self.keys.current.is_some() || !self.keys.previous.is_empty()
    }

    /// `plaintext` as it is to be stored: sealed under the current key, or as it is when
    /// there is none.
    pub fn seal(&self, plaintext: &str) -> String {
        let Some(key) = &self.keys.current else {
            return plaintext.to_owned();
        };
        let header = format!("{PREFIX}{VERSION}:{}", key.id);
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: header.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any message that fits in memory");
        let mut sealed = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        format!("{header}:{}", STANDARD.encode(sealed))
    }

    /// The plaintext of a stored value: opened under the key its id names (current or
    /// previous), or the value itself when it was stored in plaintext.
    pub fn open(&self, stored: &str) -> Result<String, SealError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (version, rest) = rest
            .split_once(':')
            .ok_or_else(|| SealError::Malformed("no version".into()))?;
        if version != VERSION {
            // Not echoed: a stored value is a secret, whatever it looks like.
            return Err(SealError::Malformed("unknown version".into()));
        }
        let (key_id, body) = rest
            .split_once(':')
            .filter(|(key_id, _)| {
                key_id.len() == 8 && key_id.bytes().all(|b| b.is_ascii_hexdigit())
            })
            .ok_or_else(|| SealError::Malformed("no key id".into()))?;
        let key = self.key(key_id).ok_or_else(|| SealError::UnknownKey {
            key_id: key_id.to_owned(),
            configured: self.configured_ids(),
        })?;
        let tampered = || SealError::Tampered {
            key_id: key_id.to_owned(),
        };
        let bytes = STANDARD.decode(body).map_err(|_| tampered())?;
        if bytes.len() < NONCE_BYTES {
            return Err(tampered());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let header = &stored[..stored.len() - body.len() - 1];
        let plaintext = key
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: header.as_bytes(),
                },
            )
            .map_err(|_| tampered())?;
        String::from_utf8(plaintext).map_err(|_| tampered())
    }

    /// Whether `stored` is already as [`Sealer::seal`] would write it now: sealed under the
    /// current key, or plaintext when there is none. What a rotation skips.
    pub fn is_current(&self, stored: &str) -> bool {
        match (&self.keys.current, stored.strip_prefix(PREFIX)) {
            (None, rest) => rest.is_none(),
            (Some(key), Some(rest)) => rest
                .strip_prefix(VERSION)
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(|rest| rest.strip_prefix(key.id.as_str()))
                .is_some_and(|rest| rest.starts_with(':')),
            (Some(_), None) => false,
        }
    }

    /// An endpoint's secrets as they are to be stored.
    pub fn seal_secrets(&self, secrets: &[EndpointSecret]) -> Vec<EndpointSecret> {
        secrets
            .iter()
            .map(|secret| EndpointSecret {
                key: self.seal(&secret.key),
                expires_at: secret.expires_at,
            })
            .collect()
    }

    /// An endpoint's secrets as read from storage, opened.
    pub fn open_secrets(
        &self,
        secrets: Vec<EndpointSecret>,
    ) -> Result<Vec<EndpointSecret>, SealError> {
        secrets
            .into_iter()
            .map(|secret| {
                Ok(EndpointSecret {
                    key: self.open(&secret.key)?,
                    expires_at: secret.expires_at,
                })
            })
            .collect()
    }

    /// Whether every one of `secrets` is stored as [`Sealer::seal_secrets`] writes now.
    pub fn secrets_are_current(&self, secrets: &[EndpointSecret]) -> bool {
        secrets.iter().all(|secret| self.is_current(&secret.key))
    }

    /// A source's config as it is to be stored: the strings of its [`SECRET_MEMBERS`]
    /// sealed, everything else as given.
    pub fn seal_config(&self, config: &Value) -> Value {
        let mut config = config.clone();
        for_each_secret(&mut config, |value| *value = self.seal(value));
        config
    }

    /// A source's config as read from storage, its secrets opened.
    pub fn open_config(&self, mut config: Value) -> Result<Value, SealError> {
        let mut failed = None;
        for_each_secret(&mut config, |value| match self.open(value) {
            Ok(open) => *value = open,
            Err(error) => {
                failed.get_or_insert(error);
            }
        });
        match failed {
            Some(error) => Err(error),
            None => Ok(config),
        }
    }

    /// Whether every secret of `config` is stored as [`Sealer::seal_config`] writes now.
    pub fn config_is_current(&self, config: &Value) -> bool {
        let mut current = true;
        let mut config = config.clone();
        for_each_secret(&mut config, |value| current &= self.is_current(value));
        current
    }

    fn key(&self, id: &str) -> Option<&MainKey> {
        self.keys
            .current
            .iter()
            .chain(&self.keys.previous)
            .find(|key| key.id == id)
    }

    fn configured_ids(&self) -> String {
        let ids: Vec<&str> = self
            .keys
            .current
            .iter()
            .chain(&self.keys.previous)
            .map(MainKey::id)
            .collect();
        if ids.is_empty() {
            "none".into()
        } else {
            ids.join(", ")
        }
    }
}

/// Calls `each` on every string of a secret member of `config` (the member itself, or
/// the strings of its list). Other members and values of other types are left alone.
fn for_each_secret(config: &mut Value, mut each: impl FnMut(&mut String)) {
    let Value::Object(members) = config else {
        return;
    };
    for name in SECRET_MEMBERS {
        match members.get_mut(name) {
            Some(Value::String(value)) => each(value),
            Some(Value::Array(values)) => {
                for value in values {
                    if let Value::String(value) = value {
                        each(value);
                    }
                }
            }
            _ => {}
        }
    }
}

/// One batch of a rotation (`hookline rekey`): how many rows were read and how many of
/// them re-sealed, and the id to continue after (`None` once all are done).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealBatch {
    pub read: usize,
    pub resealed: usize,
    pub next: Option<String>,
}

/// What a rotation re-seals: the secrets of endpoints, or the configs of sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resealable {
    Endpoints,
    Sources,
}

/// Re-sealing stored secrets under the current key, a batch at a time, in id order: each
/// store's part of `hookline rekey`. Rows already sealed under the current key are left
/// as they are; a row that does not open fails the batch, naming why.
#[async_trait::async_trait]
pub trait Reseal: Send + Sync {
    /// Re-seals up to `limit` rows of `what` with ids after `after`, each in place and
    /// atomically with respect to other writes of that row.
    async fn reseal(
        &self,
        what: Resealable,
        after: Option<String>,
        limit: usize,
    ) -> crate::Result<ResealBatch>;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(byte: u8) -> MainKey {
        MainKey::from_bytes(&[byte; KEY_BYTES])
    }

    fn sealer(current: u8, previous: &[u8]) -> Sealer {
        Sealer::new(
            Some(key(current)),
            previous.iter().map(|b| key(*b)).collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_sealed_value_opens_to_what_was_sealed_and_names_its_key() {
        let sealer = sealer(1, &[]);
        let sealed = sealer.seal("whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
        let id = key(1).id().to_owned();
        assert!(sealed.starts_with(&format!("sealed:v1:{id}:")), "{sealed}");
        assert!(!sealed.contains("c2VjcmV0"), "no plaintext in {sealed}");
        assert_eq!(
            sealer.open(&sealed).unwrap(),
            "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ="
        );
        // A fresh nonce each time: the same secret never seals to the same text.
        assert_ne!(sealer.seal("same"), sealer.seal("same"));
        assert!(sealer.is_current(&sealed));
    }

    #[test]
    fn the_wrong_key_fails_with_a_clear_error() {
        let sealed = sealer(1, &[]).seal("s3cret");
        let error = sealer(2, &[]).open(&sealed).unwrap_err();
        assert_eq!(
            error,
            SealError::UnknownKey {
                key_id: key(1).id().to_owned(),
                configured: key(2).id().to_owned(),
            }
        );
        assert!(error.to_string().contains("HOOKLINE_PREVIOUS_MAIN_KEYS"));
        // No key at all: still named, not read as plaintext.
        let error = Sealer::none().open(&sealed).unwrap_err();
        assert!(error.to_string().contains("configured: none"), "{error}");
    }

    #[test]
    fn a_previous_key_still_opens_and_new_values_use_the_current_one() {
        let old = sealer(1, &[]).seal("s3cret");
        let rotated = sealer(2, &[1]);
        assert_eq!(rotated.open(&old).unwrap(), "s3cret");
        assert!(!rotated.is_current(&old), "needs re-sealing");
        let new = rotated.seal("s3cret");
        assert!(new.starts_with(&format!("sealed:v1:{}:", key(2).id())));
        assert!(rotated.is_current(&new));
    }

    #[test]
    fn plaintext_written_before_a_key_was_set_still_reads() {
        assert_eq!(sealer(1, &[]).open("whsec_plain").unwrap(), "whsec_plain");
        assert!(!sealer(1, &[]).is_current("whsec_plain"));
        let none = Sealer::none();
        assert_eq!(none.seal("whsec_plain"), "whsec_plain");
        assert!(none.is_current("whsec_plain"));
    }

    #[test]
    fn a_tampered_value_fails() {
        let sealer = sealer(1, &[]);
        let sealed = sealer.seal("s3cret");
        let (header, body) = sealed.rsplit_once(':').unwrap();
        let mut bytes = STANDARD.decode(body).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let flipped = format!("{header}:{}", STANDARD.encode(&bytes));
        assert!(matches!(
            sealer.open(&flipped),
            Err(SealError::Tampered { .. })
        ));
        // The header is bound too: the same body under another version fails.
        let relabelled = sealed.replacen("sealed:v1:", "sealed:v2:", 1);
        assert!(matches!(
            sealer.open(&relabelled),
            Err(SealError::Malformed(_))
        ));
        for broken in [
            "sealed:",
            "sealed:v1",
            &format!("sealed:v1:{}:!!", key(1).id()),
            &format!("sealed:v1:{}:", key(1).id()),
        ] {
            assert!(sealer.open(broken).is_err(), "{broken}");
        }
    }

    #[test]
    fn keys_parse_from_base64_of_32_bytes_only() {
        let (generated, text) = MainKey::generate();
        assert_eq!(MainKey::parse(&text).unwrap().id(), generated.id());
        assert_eq!(
            MainKey::parse(text.trim_end_matches('=')).unwrap().id(),
            generated.id()
        );
        for bad in ["", "not base64!", "c2hvcnQ=", &STANDARD.encode([0u8; 33])] {
            let error = MainKey::parse(bad).unwrap_err();
            assert!(
                error.to_string().contains("32 random bytes"),
                "{bad}: {error}"
            );
        }
        assert_eq!(
            Sealer::new(Some(key(1)), vec![key(1)]).unwrap_err(),
            KeyError::Duplicate(key(1).id().to_owned())
        );
        let shown = format!("{:?}", sealer(1, &[2]));
        assert!(
            shown.contains("<redacted>") && shown.contains(key(1).id()),
            "{shown}"
        );
    }

    #[test]
    fn a_source_config_has_its_secret_members_sealed_and_nothing_else() {
        let sealer = sealer(1, &[]);
        let config = json!({
            "secret": "s-one",
            "secrets": ["s-two", "s-three"],
            "password": "p",
            "tokens": ["t"],
            "username": "alice",
            "header": "x-sig",
            "toleranceSeconds": 30,
        });
        let sealed = sealer.seal_config(&config);
        let text = sealed.to_string();
        for plain in ["s-one", "s-two", "s-three", "\"p\"", "\"t\""] {
            assert!(!text.contains(plain), "{plain} in {text}");
        }
        assert_eq!(sealed["username"], "alice");
        assert_eq!(sealed["toleranceSeconds"], 30);
        assert!(sealer.config_is_current(&sealed));
        assert!(!sealer.config_is_current(&config));
        assert_eq!(sealer.open_config(sealed).unwrap(), config);
        let secrets = vec![EndpointSecret {
            key: "whsec_x".into(),
            expires_at: None,
        }];
        let stored = sealer.seal_secrets(&secrets);
        assert!(sealer.secrets_are_current(&stored));
        assert_eq!(sealer.open_secrets(stored).unwrap(), secrets);
    }
}
