//! Sign and verify webhooks in every scheme Hookline meets, exactly as the real providers
//! and libraries do.
//!
//! A [`Keyset`] is a [`Scheme`] with the keys that are valid right now (several during a
//! rotation). It signs a message into request headers, and verifies a received request
//! from its headers and its exact raw body. Verification failures are a typed
//! [`VerifyError`] that says precisely what is wrong.
//!
//! This crate does no I/O and needs no async runtime: the clock is a plain number of Unix
//! seconds that callers pass in ([`VerifyOptions::now`]) or take from the system. Every
//! comparison of secret material is constant time.
//!
//! # Modules
//!
//! Each family of schemes lives in a module of its own, as pure functions of the keys, the
//! headers, the raw body and the clock; [`Keyset`] dispatches on its [`Scheme`]:
//!
//! - `standard`: Standard Webhooks, Svix, OpenAI and Replicate (HMAC-SHA256 and Ed25519);
//! - `github`: GitHub's `X-Hub-Signature-256`;
//! - `stripe`: Stripe's `Stripe-Signature`;
//! - `slack`: Slack's `X-Slack-Signature` with its request timestamp;
//! - `shopify`: Shopify's `X-Shopify-Hmac-Sha256`;
//! - `shared_secret`: Hugging Face's plain secret in `X-Webhook-Secret`.
//!
//! Three public modules check requests that no `Keyset` scheme covers:
//!
//! - [`hmac`]: a configurable HMAC of the body ([`hmac::HmacRule`]: header, SHA-1/256/512,
//!   hex or base64, optional prefix);
//! - [`credentials`]: `Authorization: Basic` and `Bearer` ([`credentials::Credentials`]);
//! - [`oidc`]: OpenID Connect ID tokens signed with RS256 against a key set fetched by the
//!   caller ([`oidc::OidcRule`], [`oidc::Jwks`]), as Google signs Pub/Sub pushes.
//!
//! All but `oidc` share one small module of HMAC-tag helpers (computing a tag, decoding one
//! from hex or base64, finding the matching key in constant time).
//!
//! ```
//! use hookline_signature::{Keyset, Message, Scheme, VerifyOptions};
//!
//! let keys = Keyset::new(Scheme::Standard, ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])?;
//! let body = br#"{"type":"job.succeeded"}"#;
//! let headers = keys.sign(&Message { id: "msg_1", timestamp: 1_700_000_000, body })?;
//! let verified = keys.verify(&headers, body, VerifyOptions::default().now(1_700_000_010))?;
//! assert_eq!(verified.id.as_deref(), Some("msg_1"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod credentials;
mod error;
mod github;
mod headers;
pub mod hmac;
mod key;
pub mod oidc;
mod shared_secret;
mod shopify;
mod slack;
mod standard;
mod stripe;
mod tag;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::{SecretError, SignError, VerifyError};
pub use headers::Headers;
pub use key::{
    MIN_HMAC_KEY_LEN, ed25519_keypair_from_seed, generate_hmac_secret, hmac_secret_from_bytes,
};

use key::Key;

/// The default timestamp tolerance of every scheme that checks one: five minutes.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// A signature scheme: which headers carry what, what is signed, how secrets are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    Standard,
    /// Svix: Standard Webhooks with `svix-*` header names (`webhook-*` also accepted).
    Svix,
    /// OpenAI: Standard Webhooks, but a secret without `whsec_` is raw UTF-8 key bytes.
    OpenAi,
    /// Replicate: Standard Webhooks with a required `whsec_` secret and no default tolerance.
    Replicate,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>` over the body.
    Github,
    /// Stripe: `Stripe-Signature: t=…,v1=…` over `t.body`; only stale timestamps refused.
    Stripe,
    /// Slack: `X-Slack-Signature: v0=<hex>` over `v0:ts:body`.
    Slack,
    /// Shopify: `X-Shopify-Hmac-Sha256`, base64 over the body.
    Shopify,
    /// Hugging Face: the plain secret echoed in `X-Webhook-Secret`.
    HuggingFace,
}

impl Scheme {
    /// Every scheme, in a stable order.
    pub const ALL: [Scheme; 9] = [
        Scheme::Standard,
        Scheme::Svix,
        Scheme::OpenAi,
        Scheme::Replicate,
        Scheme::Github,
        Scheme::Stripe,
        Scheme::Slack,
        Scheme::Shopify,
        Scheme::HuggingFace,
    ];

    /// The scheme's name as used on the command line and in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Standard => "standard",
            Scheme::Svix => "svix",
            Scheme::OpenAi => "openai",
            Scheme::Replicate => "replicate",
            Scheme::Github => "github",
            Scheme::Stripe => "stripe",
            Scheme::Slack => "slack",
            Scheme::Shopify => "shopify",
            Scheme::HuggingFace => "huggingface",
        }
    }

    /// Whether requests of this scheme carry a signed timestamp.
    pub fn has_timestamp(self) -> bool {
        !matches!(self, Scheme::Github | Scheme::Shopify | Scheme::HuggingFace)
    }

    /// The tolerance applied when the caller does not choose one: none for schemes without
    /// a timestamp and for Replicate (whose SDKs check none), five minutes for the rest.
    pub fn default_tolerance(self) -> Option<Duration> {
        match self {
            Scheme::Replicate | Scheme::Github | Scheme::Shopify | Scheme::HuggingFace => None,
            _ => Some(DEFAULT_TOLERANCE),
        }
    }

    /// Whether a timestamp ahead of the clock is refused as well as a stale one. Stripe's
    /// libraries refuse only stale timestamps; every other scheme refuses both.
    fn refuses_future(self) -> bool {
        self != Scheme::Stripe
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name given is not a known scheme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scheme {0:?}; expected one of standard, svix, openai, replicate, github, stripe, slack, shopify, huggingface"
)]
pub struct UnknownScheme(pub String);

impl FromStr for Scheme {
    type Err = UnknownScheme;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace(['-', '_'], "");
        Scheme::ALL
            .into_iter()
            .find(|scheme| scheme.name() == wanted)
            .ok_or_else(|| UnknownScheme(s.to_owned()))
    }
}

/// What gets signed: a message id, the attempt's timestamp in Unix seconds, the raw body.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Unique per message and the same on every retry (`webhook-id`, `X-GitHub-Delivery`).
    pub id: &'a str,
    /// Unix seconds of this attempt.
    pub timestamp: i64,
    /// The exact bytes of the request body.
    pub body: &'a [u8],
}

/// How far a request's timestamp may be from the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tolerance {
    /// The scheme's own default ([`Scheme::default_tolerance`]).
    #[default]
    SchemeDefault,
    /// Do not check the timestamp (it is still parsed and signed).
    Disabled,
    /// At most this far away.
    Within(Duration),
}

/// Options for [`Keyset::verify`]: the tolerance and an injectable clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    tolerance: Tolerance,
    now: Option<i64>,
}

impl VerifyOptions {
    /// Use this tolerance instead of the scheme's default.
    pub fn tolerance(mut self, tolerance: Tolerance) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Verify as if the clock read `unix_secs`. Without it, the system clock is read.
    pub fn now(mut self, unix_secs: i64) -> Self {
        self.now = Some(unix_secs);
        self
    }

    fn clock(&self) -> i64 {
        self.now.unwrap_or_else(unix_now)
    }
}

/// What a successful verification learned about the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The provider's message or delivery id, where the scheme carries one.
    pub id: Option<String>,
    /// The signed timestamp, where the scheme carries one.
    pub timestamp: Option<i64>,
    /// Index of the key that matched, in the order the keys were given.
    pub key_index: usize,
}

/// A scheme with the keys that are valid now. The first key is the primary one: schemes
/// whose header holds one signature (GitHub, Slack, Shopify, Hugging Face) sign with it.
#[derive(Debug, Clone)]
pub struct Keyset {
    scheme: Scheme,
    keys: Vec<Key>,
}

impl Keyset {
    /// Decodes each secret for `scheme`. At least one is required.
    pub fn new<I, S>(scheme: Scheme, secrets: I) -> Result<Self, SecretError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::parse_all(scheme, secrets).map_err(|(_, error)| error)
    }

    fn parse_all<I, S>(scheme: Scheme, secrets: I) -> Result<Self, (usize, SecretError)>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let keys = secrets
            .into_iter()
            .enumerate()
            .map(|(index, secret)| Key::parse(scheme, secret.as_ref()).map_err(|e| (index, e)))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err((0, SecretError::Empty));
        }
        Ok(Keyset { scheme, keys })
    }

    /// The scheme of this key set.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Signs `message`, returning the headers to send, names in lowercase.
    pub fn sign(&self, message: &Message<'_>) -> Result<Vec<(&'static str, String)>, SignError> {
        let id = message.id;
        if id.is_empty() || id.contains(['.', ' ']) || id.chars().any(char::is_control) {
            return Err(SignError::InvalidId);
        }
        let keys = &self.keys;
        match self.scheme {
            Scheme::Standard | Scheme::Svix | Scheme::OpenAi | Scheme::Replicate => {
                standard::sign(self.scheme, keys, message)
            }
            Scheme::Github => Ok(github::sign(keys, message)),
            Scheme::Stripe => Ok(stripe::sign(keys, message)),
            Scheme::Slack => Ok(slack::sign(keys, message)),
            Scheme::Shopify => Ok(shopify::sign(keys, message)),
            Scheme::HuggingFace => Ok(shared_secret::sign(keys, message)),
        }
    }

    /// Verifies a received request against its exact raw `body`.
    pub fn verify<H>(
        &self,
        headers: &H,
        body: &[u8],
        options: VerifyOptions,
    ) -> Result<Verified, VerifyError>
    where
        H: Headers + ?Sized,
    {
        match self.scheme {
            Scheme::Standard | Scheme::Svix | Scheme::OpenAi | Scheme::Replicate => {
                standard::verify(self, headers, body, &options)
            }
            Scheme::Github => github::verify(self, headers, body),
            Scheme::Stripe => stripe::verify(self, headers, body, &options),
            Scheme::Slack => slack::verify(self, headers, body, &options),
            Scheme::Shopify => shopify::verify(self, headers, body),
            Scheme::HuggingFace => shared_secret::verify(self, headers),
        }
    }

    /// The result of a key search: what was verified if key `key_index` matched, else how
    /// many signatures were tried against how many keys.
    fn outcome(
        &self,
        key_index: Option<usize>,
        signatures: usize,
        id: Option<&str>,
        timestamp: Option<i64>,
    ) -> Result<Verified, VerifyError> {
        match key_index {
            Some(key_index) => Ok(Verified {
                id: id.map(str::to_owned),
                timestamp,
                key_index,
            }),
            None => Err(VerifyError::NoMatch {
                signatures,
                keys: self.keys.len(),
            }),
        }
    }

    /// Refuses `timestamp` if it lies outside the tolerance of `options` for this scheme.
    fn check_timestamp(&self, timestamp: i64, options: &VerifyOptions) -> Result<(), VerifyError> {
        let tolerance = match options.tolerance {
            Tolerance::SchemeDefault => self.scheme.default_tolerance(),
            Tolerance::Disabled => None,
            Tolerance::Within(tolerance) => Some(tolerance),
        };
        let Some(tolerance) = tolerance else {
            return Ok(());
        };
        let tolerance_secs = tolerance.as_secs();
        let now = options.clock();
        let age = i128::from(now) - i128::from(timestamp);
        let saturate = |secs: i128| u64::try_from(secs).unwrap_or(u64::MAX);
        if age > i128::from(tolerance_secs) {
            return Err(VerifyError::TimestampTooOld {
                age_secs: saturate(age),
                tolerance_secs,
            });
        }
        if self.scheme.refuses_future() && -age > i128::from(tolerance_secs) {
            return Err(VerifyError::TimestampTooNew {
                ahead_secs: saturate(-age),
                tolerance_secs,
            });
        }
        Ok(())
    }
}

/// Decodes `secrets` and verifies in one call, reporting an unusable secret as
/// [`VerifyError::MalformedSecret`]. Convenient where secrets arrive with the request to
/// check, as in `hookline verify`.
pub fn verify<I, S, H>(
    scheme: Scheme,
    secrets: I,
    headers: &H,
    body: &[u8],
    options: VerifyOptions,
) -> Result<Verified, VerifyError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
    H: Headers + ?Sized,
{
    let keys = Keyset::parse_all(scheme, secrets)
        .map_err(|(index, source)| VerifyError::MalformedSecret { index, source })?;
    keys.verify(headers, body, options)
}

/// Parses a header's timestamp as integer Unix seconds.
fn parse_timestamp(header: &'static str, value: &str) -> Result<i64, VerifyError> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| VerifyError::InvalidTimestamp {
            header,
            value: value.to_owned(),
        })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
