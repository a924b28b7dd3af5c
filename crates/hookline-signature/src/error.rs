//! The errors of this crate: one for secrets, one for signing, one for verifying.
//!
//! Verification errors are deliberately precise. "Invalid signature" is the most frustrating
//! webhook error there is, so each variant names what was wrong: which header, which secret,
//! by how many seconds, how many signatures were tried.

use std::borrow::Cow;

use crate::Scheme;

/// A secret or key that cannot be used with its scheme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret is empty (or only whitespace).
    #[error("secret is empty")]
    Empty,
    /// The scheme only accepts secrets with a given prefix.
    #[error("the {scheme} scheme needs a secret that starts with `{expected}`")]
    MissingPrefix {
        /// The scheme that refused the secret.
        scheme: Scheme,
        /// The prefix it expects.
        expected: &'static str,
    },
    /// The part after the prefix is not strict, padded, standard base64.
    #[error("secret is not valid base64 after `{prefix}` (standard alphabet, `=` padding)")]
    InvalidBase64 {
        /// The prefix that was stripped (may be empty).
        prefix: &'static str,
    },
    /// The decoded key is too short to be safe.
    #[error("secret key is {len} bytes long; at least {min} bytes are required")]
    TooShort {
        /// Decoded length.
        len: usize,
        /// Required minimum.
        min: usize,
    },
    /// An Ed25519 key of the wrong size, or a key pair whose halves disagree.
    #[error("ed25519 key `{prefix}` must hold {expected}")]
    InvalidEd25519 {
        /// `whsk_` or `whpk_`.
        prefix: &'static str,
        /// What the key must contain.
        expected: &'static str,
    },
    /// Ed25519 keys only exist in the Standard Webhooks family of schemes.
    #[error("the {scheme} scheme does not support ed25519 keys")]
    Ed25519Unsupported {
        /// The scheme that refused the key.
        scheme: Scheme,
    },
    /// A Basic user name that cannot be sent: it holds `:` or a control character.
    #[error("user name must not contain `:` or control characters")]
    InvalidUsername,
    /// A bearer token that cannot be sent: it is empty or holds whitespace.
    #[error("token must be non-empty and without whitespace")]
    InvalidToken,
}

/// Signing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// A `whpk_` public key can verify signatures but cannot make them.
    #[error("key {index} is a public key (whpk_); signing needs the secret key (whsk_)")]
    PublicKeyOnly {
        /// Position of the key in the key set.
        index: usize,
    },
    /// The message id would make the signed content ambiguous.
    #[error("message id must be non-empty and must not contain `.`, spaces or control characters")]
    InvalidId,
}

/// A request that does not verify, and exactly why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A secret given for verification cannot be used.
    #[error("malformed secret {index}: {source}")]
    MalformedSecret {
        /// Position of the secret in the list given.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: SecretError,
    },
    /// A header the scheme requires is absent.
    #[error("missing header {0}")]
    MissingHeader(Cow<'static, str>),
    /// A header is present but cannot be parsed.
    #[error("malformed header {name}: {reason}")]
    MalformedHeader {
        /// The header's name, in lowercase.
        name: Cow<'static, str>,
        /// What is wrong with it.
        reason: Cow<'static, str>,
    },
    /// The timestamp is not an integer number of seconds.
    #[error("timestamp in {header} is not an integer: {value:?}")]
    InvalidTimestamp {
        /// The header (or signature field) that held it.
        header: &'static str,
        /// The value received.
        value: String,
    },
    /// The timestamp is older than the tolerance allows.
    #[error(
        "timestamp too old: {age_secs} s old, {} s beyond the {tolerance_secs} s tolerance",
        age_secs - tolerance_secs
    )]
    TimestampTooOld {
        /// How old the timestamp is.
        age_secs: u64,
        /// The tolerance that applied.
        tolerance_secs: u64,
    },
    /// The timestamp is further in the future than the tolerance allows.
    #[error(
        "timestamp too new: {ahead_secs} s in the future, {} s beyond the {tolerance_secs} s tolerance",
        ahead_secs - tolerance_secs
    )]
    TimestampTooNew {
        /// How far ahead of the clock the timestamp is.
        ahead_secs: u64,
        /// The tolerance that applied.
        tolerance_secs: u64,
    },
    /// Every signature was checked against every key and none matched.
    #[error(
        "no signature matched: tried {signatures} signature(s) against {keys} key(s); \
         the secret is wrong or the body, id or timestamp changed after signing"
    )]
    NoMatch {
        /// Signatures in the request that were checked.
        signatures: usize,
        /// Keys they were checked against.
        keys: usize,
    },
    /// `Authorization` carries credentials of the right kind, but none that are configured.
    #[error("the {scheme} credentials match none of the {configured} configured for this source")]
    InvalidCredentials {
        /// `basic` or `bearer`.
        scheme: &'static str,
        /// How many passwords or tokens they were checked against.
        configured: usize,
    },
}

impl VerifyError {
    /// A stable, machine-readable code for this failure, for logs and API bodies.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MalformedSecret { .. } => "malformed_secret",
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::MalformedHeader { .. } => "malformed_header",
            VerifyError::InvalidTimestamp { .. } => "invalid_timestamp",
            VerifyError::TimestampTooOld { .. } => "timestamp_too_old",
            VerifyError::TimestampTooNew { .. } => "timestamp_too_new",
            VerifyError::NoMatch { .. } => "no_signature_matched",
            VerifyError::InvalidCredentials { .. } => "invalid_credentials",
        }
    }

    /// A [`VerifyError::MissingHeader`] for `name`.
    pub(crate) fn missing(name: impl Into<Cow<'static, str>>) -> Self {
        VerifyError::MissingHeader(name.into())
    }

    /// A [`VerifyError::MalformedHeader`] for `name`, saying what is wrong.
    pub(crate) fn malformed(
        name: impl Into<Cow<'static, str>>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        VerifyError::MalformedHeader {
            name: name.into(),
            reason: reason.into(),
        }
    }
}
