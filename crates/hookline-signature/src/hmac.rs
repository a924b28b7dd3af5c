//! A configurable HMAC of the raw body, for senders that follow no named scheme: the
//! header that carries the tag, the hash (SHA-1, SHA-256 or SHA-512), the encoding (hex or
//! base64) and an optional prefix such as `sha256=` are configured.
//!
//! The HMAC is keyed with each secret's UTF-8 bytes. Several secrets may be valid at once;
//! every one is tried, so the time taken does not tell which matched.
//!
//! ```
//! use hookline_signature::hmac::{Algorithm, Encoding, HmacRule};
//!
//! let rule = HmacRule::new(
//!     "X-Signature",
//!     Algorithm::Sha256,
//!     Encoding::Hex,
//!     Some("sha256="),
//!     ["It's a Secret to Everybody"],
//! )?;
//! let value = rule.sign(b"Hello, World!");
//! assert_eq!(
//!     value,
//!     "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
//! );
//! rule.verify(&[("x-signature", value.as_str())], b"Hello, World!")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use ::hmac::{Hmac, Mac};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use crate::{Headers, SecretError, VerifyError, tag};

/// The hash under the HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// HMAC-SHA1: 20-byte tags.
    Sha1,
    /// HMAC-SHA256: 32-byte tags. The default.
    #[default]
    Sha256,
    /// HMAC-SHA512: 64-byte tags.
    Sha512,
}

impl Algorithm {
    /// Every algorithm, in a stable order.
    pub const ALL: [Algorithm; 3] = [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512];

    /// The name used in configuration: `sha1`, `sha256` or `sha512`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The length of a tag in bytes.
    #[allow(clippy::len_without_is_empty)] // a tag length, never zero
    pub fn len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name given is not `sha1`, `sha256` or `sha512`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown algorithm {0:?}; expected one of sha256, sha1, sha512")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// Parses the exact, lowercase name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.name() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

/// How the tag is written in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// Hex digits, either case. The default.
    #[default]
    Hex,
    /// Standard base64; padding is accepted and not required.
    Base64,
}

impl Encoding {
    /// Every encoding, in a stable order.
    pub const ALL: [Encoding; 2] = [Encoding::Hex, Encoding::Base64];

    /// The name used in configuration: `hex` or `base64`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name given is not `hex` or `base64`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown encoding {0:?}; expected one of hex, base64")]
pub struct UnknownEncoding(pub String);

impl FromStr for Encoding {
    type Err = UnknownEncoding;

    /// Parses the exact, lowercase name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Encoding::ALL
            .into_iter()
            .find(|encoding| encoding.name() == s)
            .ok_or_else(|| UnknownEncoding(s.to_owned()))
    }
}

/// The keys of one rule, with their pads already absorbed.
#[derive(Clone)]
enum Keys {
    Sha1(Vec<Hmac<Sha1>>),
    Sha256(Vec<Hmac<Sha256>>),
    Sha512(Vec<Hmac<Sha512>>),
}

impl Keys {
    fn new(algorithm: Algorithm, secrets: &[Vec<u8>]) -> Keys {
        fn keyed<M: Mac + ::hmac::digest::KeyInit>(secrets: &[Vec<u8>]) -> Vec<M> {
            secrets
                .iter()
                .map(|secret| {
                    <M as ::hmac::digest::KeyInit>::new_from_slice(secret)
                        .expect("hmac takes keys of any length")
                })
                .collect()
        }
        match algorithm {
            Algorithm::Sha1 => Keys::Sha1(keyed(secrets)),
            Algorithm::Sha256 => Keys::Sha256(keyed(secrets)),
            Algorithm::Sha512 => Keys::Sha512(keyed(secrets)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Keys::Sha1(keys) => keys.len(),
            Keys::Sha256(keys) => keys.len(),
            Keys::Sha512(keys) => keys.len(),
        }
    }

    /// The index of the first key whose tag of `body` is `candidate`.
    fn find(&self, candidate: &[u8], body: &[u8]) -> Option<usize> {
        match self {
            Keys::Sha1(keys) => tag::find_key(keys, &[candidate], &[body]),
            Keys::Sha256(keys) => tag::find_key(keys, &[candidate], &[body]),
            Keys::Sha512(keys) => tag::find_key(keys, &[candidate], &[body]),
        }
    }

    /// The tag of `body` under the first key.
    fn sign(&self, body: &[u8]) -> Vec<u8> {
        match self {
            Keys::Sha1(keys) => tag::compute(&keys[0], &[body]).to_vec(),
            Keys::Sha256(keys) => tag::compute(&keys[0], &[body]).to_vec(),
            Keys::Sha512(keys) => tag::compute(&keys[0], &[body]).to_vec(),
        }
    }
}

/// A configured HMAC of the raw body: where the tag is, how it is made and written, and
/// the secrets valid now. The `Debug` form never shows a secret.
#[derive(Clone)]
pub struct HmacRule {
    header: String,
    algorithm: Algorithm,
    encoding: Encoding,
    prefix: Option<String>,
    keys: Keys,
}

impl HmacRule {
    /// A rule reading the tag from `header` (looked up case-insensitively, kept in
    /// lowercase). `prefix`, if given, precedes the tag and is matched case-insensitively;
    /// surrounding whitespace is dropped from it, and an empty one counts as none.
    ///
    /// Each secret keys the HMAC with its bytes, surrounding whitespace removed (Unicode
    /// whitespace for UTF-8, ASCII whitespace else). An empty secret, or no secret at all, is
    /// [`SecretError::Empty`].
    pub fn new(
        header: &str,
        algorithm: Algorithm,
        encoding: Encoding,
        prefix: Option<&str>,
        secrets: impl IntoIterator<Item = impl AsRef<[u8]>>,
    ) -> Result<HmacRule, SecretError> {
        let secrets = secrets
            .into_iter()
            .map(|secret| {
                let secret = trim(secret.as_ref());
                if secret.is_empty() {
                    return Err(SecretError::Empty);
                }
                Ok(secret.to_vec())
            })
            .collect::<Result<Vec<_>, _>>()?;
        if secrets.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(HmacRule {
            header: header.to_ascii_lowercase(),
            algorithm,
            encoding,
            prefix: prefix
                .map(str::trim)
                .filter(|prefix| !prefix.is_empty())
                .map(str::to_owned),
            keys: Keys::new(algorithm, &secrets),
        })
    }

    /// The header that carries the tag, in lowercase.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// The hash under the HMAC.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// How the tag is written.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// What precedes the tag, if anything.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// The header value for `body`, prefix included, made with the first secret. Hex is
    /// lowercase; base64 is padded.
    pub fn sign(&self, body: &[u8]) -> String {
        let tag = self.keys.sign(body);
        let encoded = match self.encoding {
            Encoding::Hex => hex::encode(tag),
            Encoding::Base64 => STANDARD.encode(tag),
        };
        format!("{}{encoded}", self.prefix().unwrap_or(""))
    }

    /// Verifies a received request against its exact raw `body`.
    ///
    /// Refuses with [`VerifyError::MissingHeader`] without the header,
    /// [`VerifyError::MalformedHeader`] when the prefix is not there or the rest is not a
    /// tag of the right length, and [`VerifyError::NoMatch`] when no secret made the tag.
    pub fn verify<H: Headers + ?Sized>(&self, headers: &H, body: &[u8]) -> Result<(), VerifyError> {
        let name = self.header.as_str();
        let value = headers
            .header(name)
            .ok_or_else(|| VerifyError::missing(name.to_owned()))?
            .trim();
        let encoded = match &self.prefix {
            Some(prefix) => strip_prefix_ignore_case(value, prefix).ok_or_else(|| {
                VerifyError::malformed(
                    name.to_owned(),
                    format!("expected a value starting with `{prefix}`"),
                )
            })?,
            None => value,
        }
        .trim();
        let len = self.algorithm.len();
        let mut buffer = [0u8; tag::MAX_TAG_LEN];
        let candidate = &mut buffer[..len];
        let decoded = match self.encoding {
            Encoding::Hex => tag::decode_hex(encoded, candidate),
            Encoding::Base64 => tag::decode_base64(&tag::BASE64_ANY_PADDING, encoded, candidate),
        };
        if !decoded {
            let expected = match self.encoding {
                Encoding::Hex => format!("{} hex digits", len * 2),
                Encoding::Base64 => format!("the base64 of {len} bytes"),
            };
            return Err(VerifyError::malformed(
                name.to_owned(),
                format!("expected {expected} (an hmac-{})", self.algorithm.name()),
            ));
        }
        match self.keys.find(candidate, body) {
            Some(_) => Ok(()),
            None => Err(VerifyError::NoMatch {
                signatures: 1,
                keys: self.keys.len(),
            }),
        }
    }
}

impl fmt::Debug for HmacRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacRule")
            .field("header", &self.header)
            .field("algorithm", &self.algorithm)
            .field("encoding", &self.encoding)
            .field("prefix", &self.prefix)
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .finish()
    }
}

/// `secret` without surrounding whitespace: Unicode whitespace if it is UTF-8 text, ASCII
/// whitespace else.
fn trim(secret: &[u8]) -> &[u8] {
    match std::str::from_utf8(secret) {
        Ok(text) => text.trim().as_bytes(),
        Err(_) => secret.trim_ascii(),
    }
}

fn strip_prefix_ignore_case<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example; the tags below are Python's `hmac` over this pair.
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";

    const SHA1_HEX: &str = "01dc10d0c83e72ed246219cdd91669667fe2ca59";
    const SHA1_BASE64: &str = "AdwQ0Mg+cu0kYhnN2RZpZn/iylk=";
    const SHA256_HEX: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    const SHA256_BASE64: &str = "dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPhc=";
    const SHA512_HEX: &str = "11ed355a617e98134e842012a7944ccf59c10256cb182357bd7e3a42013ff07c376f8c14cf5cc1923da20b51d64256b2fb8ebbf100aa67a61326f61fea8111bc";
    const SHA512_BASE64: &str =
        "Ee01WmF+mBNOhCASp5RMz1nBAlbLGCNXvX46QgE/8Hw3b4wUz1zBkj2iC1HWQlay+4678QCqZ6YTJvYf6oERvA==";

    fn rule(algorithm: Algorithm, encoding: Encoding, prefix: Option<&str>) -> HmacRule {
        HmacRule::new("X-Sig", algorithm, encoding, prefix, [SECRET]).unwrap()
    }

    fn verify(rule: &HmacRule, value: &str, body: &[u8]) -> Result<(), VerifyError> {
        rule.verify(&[("x-sig", value)], body)
    }

    #[test]
    fn known_answers_for_every_algorithm_and_encoding() {
        let vectors = [
            (Algorithm::Sha1, Encoding::Hex, SHA1_HEX),
            (Algorithm::Sha1, Encoding::Base64, SHA1_BASE64),
            (Algorithm::Sha256, Encoding::Hex, SHA256_HEX),
            (Algorithm::Sha256, Encoding::Base64, SHA256_BASE64),
            (Algorithm::Sha512, Encoding::Hex, SHA512_HEX),
            (Algorithm::Sha512, Encoding::Base64, SHA512_BASE64),
        ];
        for (algorithm, encoding, expected) in vectors {
            let rule = rule(algorithm, encoding, None);
            assert_eq!(rule.sign(BODY), expected, "{algorithm} {encoding}");
            verify(&rule, expected, BODY).unwrap();
            assert_eq!(
                verify(&rule, expected, b"Hello, World?"),
                Err(VerifyError::NoMatch {
                    signatures: 1,
                    keys: 1
                }),
                "{algorithm} {encoding}"
            );
        }
    }

    #[test]
    fn hex_takes_either_case_and_base64_either_padding() {
        let hex = rule(Algorithm::Sha256, Encoding::Hex, None);
        verify(&hex, &SHA256_HEX.to_uppercase(), BODY).unwrap();
        verify(&hex, &format!("  {SHA256_HEX} "), BODY).unwrap();
        let base64 = rule(Algorithm::Sha512, Encoding::Base64, None);
        verify(&base64, SHA512_BASE64.trim_end_matches('='), BODY).unwrap();
    }

    #[test]
    fn wrong_key_fails_and_every_key_is_tried() {
        let other = HmacRule::new(
            "x-sig",
            Algorithm::Sha256,
            Encoding::Hex,
            None,
            ["another secret"],
        )
        .unwrap();
        assert_eq!(
            verify(&other, SHA256_HEX, BODY),
            Err(VerifyError::NoMatch {
                signatures: 1,
                keys: 1
            })
        );
        let rotated = HmacRule::new(
            "x-sig",
            Algorithm::Sha256,
            Encoding::Hex,
            None,
            ["another secret", SECRET],
        )
        .unwrap();
        verify(&rotated, SHA256_HEX, BODY).unwrap();
        assert_ne!(
            rotated.sign(BODY),
            SHA256_HEX,
            "signs with the first secret"
        );
    }

    #[test]
    fn wrong_length_is_malformed_with_the_expected_size() {
        let sha512 = rule(Algorithm::Sha512, Encoding::Base64, None);
        let error = verify(&sha512, SHA256_BASE64, BODY).unwrap_err();
        assert_eq!(error.code(), "malformed_header");
        assert_eq!(
            error.to_string(),
            "malformed header x-sig: expected the base64 of 64 bytes (an hmac-sha512)"
        );
        let sha256 = rule(Algorithm::Sha256, Encoding::Hex, None);
        for value in ["sha256=757107ea", SHA512_HEX, "", "zz", &SHA256_HEX[1..]] {
            let error = verify(&sha256, value, BODY).unwrap_err();
            assert_eq!(
                error,
                VerifyError::MalformedHeader {
                    name: "x-sig".into(),
                    reason: "expected 64 hex digits (an hmac-sha256)".into(),
                },
                "{value:?}"
            );
        }
        let base64 = rule(Algorithm::Sha256, Encoding::Base64, None);
        assert_eq!(
            verify(&base64, SHA256_HEX, BODY).unwrap_err().code(),
            "malformed_header"
        );
    }

    #[test]
    fn missing_header_names_the_configured_header() {
        let rule = rule(Algorithm::Sha256, Encoding::Hex, None);
        let error = rule.verify(&[("x-other", SHA256_HEX)], BODY).unwrap_err();
        assert_eq!(error, VerifyError::MissingHeader("x-sig".into()));
        assert_eq!(error.code(), "missing_header");
        assert_eq!(error.to_string(), "missing header x-sig");
        // Found whatever the case of the received name.
        rule.verify(&[("X-SIG", SHA256_HEX)], BODY).unwrap();
    }

    #[test]
    fn prefix_is_required_and_matched_case_insensitively() {
        let rule = rule(Algorithm::Sha256, Encoding::Hex, Some("sha256="));
        assert_eq!(rule.sign(BODY), format!("sha256={SHA256_HEX}"));
        for value in [
            format!("sha256={SHA256_HEX}"),
            format!("SHA256={SHA256_HEX}"),
            format!(" sha256= {SHA256_HEX} "),
        ] {
            verify(&rule, &value, BODY).unwrap_or_else(|e| panic!("{value}: {e}"));
        }
        let error = verify(&rule, SHA256_HEX, BODY).unwrap_err();
        assert_eq!(
            error.to_string(),
            "malformed header x-sig: expected a value starting with `sha256=`"
        );
        assert_eq!(error.code(), "malformed_header");
        // A prefix that ends inside a multi-byte character is a mismatch, not a panic.
        assert!(verify(&rule, "sha256é", BODY).is_err());
        // An empty prefix is no prefix.
        let none = HmacRule::new(
            "x-sig",
            Algorithm::Sha256,
            Encoding::Hex,
            Some(" "),
            [SECRET],
        );
        assert_eq!(none.unwrap().prefix(), None);
    }

    #[test]
    fn secrets_are_checked_and_trimmed() {
        let new = |secrets: &[&[u8]]| {
            HmacRule::new("x", Algorithm::Sha256, Encoding::Hex, None, secrets).map(|_| ())
        };
        assert_eq!(new(&[]), Err(SecretError::Empty));
        assert_eq!(new(&[b"ok", b""]), Err(SecretError::Empty));
        assert_eq!(new(&[b" \t\n"]), Err(SecretError::Empty));
        assert_eq!(new(&[&[0xff, 0xfe]]), Ok(()));
        let padded = HmacRule::new(
            "x-sig",
            Algorithm::Sha256,
            Encoding::Hex,
            None,
            [format!("  {SECRET}\n")],
        )
        .unwrap();
        verify(&padded, SHA256_HEX, BODY).unwrap();
    }

    #[test]
    fn accessors_names_parsing_and_redacted_debug() {
        let rule = HmacRule::new(
            "X-Hub-Signature",
            Algorithm::Sha1,
            Encoding::Base64,
            Some("sha1="),
            ["hunter2-secret"],
        )
        .unwrap();
        assert_eq!(rule.header(), "x-hub-signature");
        assert_eq!(rule.algorithm(), Algorithm::Sha1);
        assert_eq!(rule.encoding(), Encoding::Base64);
        assert_eq!(rule.prefix(), Some("sha1="));
        let debug = format!("{rule:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<1 redacted>"), "{debug}");

        for algorithm in Algorithm::ALL {
            assert_eq!(algorithm.name().parse(), Ok(algorithm));
            assert_eq!(algorithm.to_string(), algorithm.name());
        }
        assert_eq!(
            [
                Algorithm::Sha1.len(),
                Algorithm::Sha256.len(),
                Algorithm::Sha512.len()
            ],
            [20, 32, 64]
        );
        for encoding in Encoding::ALL {
            assert_eq!(encoding.name().parse(), Ok(encoding));
        }
        assert_eq!(
            "md5".parse::<Algorithm>(),
            Err(UnknownAlgorithm("md5".into()))
        );
        assert!("SHA256".parse::<Algorithm>().is_err());
        assert_eq!(
            "base32".parse::<Encoding>().unwrap_err().to_string(),
            "unknown encoding \"base32\"; expected one of hex, base64"
        );
        assert_eq!(Algorithm::default(), Algorithm::Sha256);
        assert_eq!(Encoding::default(), Encoding::Hex);
    }
}
