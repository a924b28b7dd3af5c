//! Credentials in `Authorization`: `Basic` (a user name and one of its passwords) or
//! `Bearer` (one of the tokens).
//!
//! Configured credentials are kept as SHA-256 digests, of `username:password` or of the
//! token, so comparison is constant time whatever the length of what arrives. Every digest
//! is compared, so the time taken does not tell which matched.
//!
//! ```
//! use hookline_signature::credentials::Credentials;
//!
//! let credentials = Credentials::bearer(["tok_live_123"])?;
//! credentials.verify(&[("Authorization", "Bearer tok_live_123")])?;
//! let refused = credentials.verify(&[("Authorization", "Bearer tok_live_124")]).unwrap_err();
//! assert_eq!(refused.code(), "invalid_credentials");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::{Headers, SecretError, VerifyError, tag};

const AUTHORIZATION: &str = "authorization";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Basic,
    Bearer,
}

impl Kind {
    /// The scheme as written in `Authorization`.
    fn word(self) -> &'static str {
        match self {
            Kind::Basic => "Basic",
            Kind::Bearer => "Bearer",
        }
    }

    /// The scheme's name in lowercase, as in [`VerifyError::InvalidCredentials`].
    fn name(self) -> &'static str {
        match self {
            Kind::Basic => "basic",
            Kind::Bearer => "bearer",
        }
    }
}

/// The credentials valid now: one user name with its passwords, or tokens. The `Debug`
/// form shows the user name (not a secret) and never a password, token or digest.
#[derive(Clone)]
pub struct Credentials {
    kind: Kind,
    username: Option<String>,
    digests: Vec<[u8; 32]>,
}

impl Credentials {
    /// `Authorization: Basic` for `username` with any of `passwords` (several during a
    /// rotation). Passwords are taken exactly as given, whitespace included.
    ///
    /// A user name holding `:` or a control character is [`SecretError::InvalidUsername`];
    /// an empty password, or none at all, is [`SecretError::Empty`].
    pub fn basic(
        username: &str,
        passwords: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Self, SecretError> {
        if username.contains(':') || username.chars().any(char::is_control) {
            return Err(SecretError::InvalidUsername);
        }
        let digests = digests(passwords, |password| {
            if password.is_empty() {
                return Err(SecretError::Empty);
            }
            Ok(Sha256::digest(format!("{username}:{password}")).into())
        })?;
        Ok(Credentials {
            kind: Kind::Basic,
            username: Some(username.to_owned()),
            digests,
        })
    }

    /// `Authorization: Bearer` with any of `tokens`.
    ///
    /// An empty token or one holding whitespace is [`SecretError::InvalidToken`]; no token
    /// at all is [`SecretError::Empty`].
    pub fn bearer(tokens: impl IntoIterator<Item = impl AsRef<str>>) -> Result<Self, SecretError> {
        let digests = digests(tokens, |token| {
            if token.is_empty() || token.chars().any(char::is_whitespace) {
                return Err(SecretError::InvalidToken);
            }
            Ok(Sha256::digest(token).into())
        })?;
        Ok(Credentials {
            kind: Kind::Bearer,
            username: None,
            digests,
        })
    }

    /// The user name of `Basic` credentials; `None` for `Bearer`.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// `basic` or `bearer`.
    pub fn scheme(&self) -> &'static str {
        self.kind.name()
    }

    /// Checks the request's `Authorization` header.
    ///
    /// Refuses with [`VerifyError::MissingHeader`] without the header,
    /// [`VerifyError::MalformedHeader`] when it holds another scheme or (for `Basic`) no
    /// base64, and [`VerifyError::InvalidCredentials`] when nothing configured matches.
    pub fn verify<H: Headers + ?Sized>(&self, headers: &H) -> Result<(), VerifyError> {
        let value = headers
            .header(AUTHORIZATION)
            .ok_or(VerifyError::missing(AUTHORIZATION))?;
        let expected = self.kind.word();
        let credential = value
            .trim()
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(expected))
            .map(|(_, credential)| credential.trim())
            .ok_or_else(|| {
                VerifyError::malformed(AUTHORIZATION, format!("expected `{expected}` credentials"))
            })?;
        let received: [u8; 32] = match self.kind {
            Kind::Basic => {
                let decoded = tag::BASE64_ANY_PADDING.decode(credential).map_err(|_| {
                    VerifyError::malformed(
                        AUTHORIZATION,
                        "expected the base64 of `username:password` after `Basic`",
                    )
                })?;
                Sha256::digest(decoded).into()
            }
            Kind::Bearer => Sha256::digest(credential).into(),
        };
        if tag::any_equals(&self.digests, &received) {
            Ok(())
        } else {
            Err(VerifyError::InvalidCredentials {
                scheme: self.kind.name(),
                configured: self.digests.len(),
            })
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("scheme", &self.kind.name())
            .field("username", &self.username)
            .field(
                "digests",
                &format_args!("<{} redacted>", self.digests.len()),
            )
            .finish()
    }
}

/// The digest of each secret, refusing the first that `digest` refuses, and an empty list.
fn digests(
    secrets: impl IntoIterator<Item = impl AsRef<str>>,
    digest: impl Fn(&str) -> Result<[u8; 32], SecretError>,
) -> Result<Vec<[u8; 32]>, SecretError> {
    let digests = secrets
        .into_iter()
        .map(|secret| digest(secret.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    if digests.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(digests)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    fn authorization(value: &str) -> [(&'static str, &str); 1] {
        [("Authorization", value)]
    }

    #[test]
    fn basic_accepts_each_password_of_the_user() {
        let credentials = Credentials::basic("aladdin", ["opensesame", "newpassword"]).unwrap();
        let encoded = STANDARD.encode("aladdin:opensesame");
        assert_eq!(encoded, "YWxhZGRpbjpvcGVuc2VzYW1l");
        for value in [
            format!("Basic {encoded}"),
            format!("basic  {encoded} "),
            format!("BASIC {}", encoded.trim_end_matches('=')),
            format!("Basic {}", STANDARD.encode("aladdin:newpassword")),
        ] {
            credentials
                .verify(&authorization(&value))
                .unwrap_or_else(|e| panic!("{value}: {e}"));
        }
        assert_eq!(credentials.username(), Some("aladdin"));
        assert_eq!(credentials.scheme(), "basic");
    }

    #[test]
    fn basic_refusals_have_codes_and_texts() {
        let credentials = Credentials::basic("aladdin", ["opensesame", "newpassword"]).unwrap();
        let refuse = |value: &str| credentials.verify(&authorization(value)).unwrap_err();

        let wrong = refuse(&format!("Basic {}", STANDARD.encode("aladdin:wrong")));
        assert_eq!(
            wrong,
            VerifyError::InvalidCredentials {
                scheme: "basic",
                configured: 2
            }
        );
        assert_eq!(wrong.code(), "invalid_credentials");
        assert_eq!(
            wrong.to_string(),
            "the basic credentials match none of the 2 configured for this source"
        );
        let other_user = refuse(&format!("Basic {}", STANDARD.encode("jafar:opensesame")));
        assert_eq!(other_user.code(), "invalid_credentials");

        let bearer = refuse("Bearer YWxhZGRpbjpvcGVuc2VzYW1l");
        assert_eq!(bearer.code(), "malformed_header");
        assert_eq!(
            bearer.to_string(),
            "malformed header authorization: expected `Basic` credentials"
        );
        let not_base64 = refuse("Basic !!!");
        assert_eq!(
            not_base64.to_string(),
            "malformed header authorization: expected the base64 of `username:password` after `Basic`"
        );
        assert_eq!(refuse("Basic").code(), "malformed_header");

        let missing = credentials.verify(&[("x-other", "Basic x")]).unwrap_err();
        assert_eq!(missing, VerifyError::MissingHeader("authorization".into()));
        assert_eq!(missing.to_string(), "missing header authorization");
        assert_eq!(missing.code(), "missing_header");
    }

    #[test]
    fn bearer_accepts_each_token_and_nothing_else() {
        let credentials = Credentials::bearer(["a-token", "b-token"]).unwrap();
        for value in ["Bearer a-token", "bearer b-token", "  Bearer   a-token "] {
            credentials
                .verify(&authorization(value))
                .unwrap_or_else(|e| panic!("{value}: {e}"));
        }
        for (value, code) in [
            ("Bearer a-tokeN", "invalid_credentials"),
            ("Bearer a-token2", "invalid_credentials"),
            ("Bearer", "malformed_header"),
            ("Basic a-token", "malformed_header"),
            ("a-token", "malformed_header"),
        ] {
            let error = credentials.verify(&authorization(value)).unwrap_err();
            assert_eq!(error.code(), code, "{value}");
        }
        assert_eq!(
            credentials
                .verify(&authorization("Bearer nope"))
                .unwrap_err()
                .to_string(),
            "the bearer credentials match none of the 2 configured for this source"
        );
        assert_eq!(credentials.username(), None);
        assert_eq!(credentials.scheme(), "bearer");
    }

    #[test]
    fn configuration_is_checked() {
        let none: [&str; 0] = [];
        assert_eq!(
            Credentials::basic("a:b", ["p"]).unwrap_err(),
            SecretError::InvalidUsername
        );
        assert_eq!(
            Credentials::basic("a\u{7}", ["p"]).unwrap_err(),
            SecretError::InvalidUsername
        );
        assert_eq!(
            Credentials::basic("user", ["p", ""]).unwrap_err(),
            SecretError::Empty
        );
        assert_eq!(
            Credentials::basic("user", none).unwrap_err(),
            SecretError::Empty
        );
        assert!(Credentials::basic("", [" spaced "]).is_ok());
        for token in ["", "a b", "tab\there", "nbsp\u{a0}"] {
            assert_eq!(
                Credentials::bearer([token]).unwrap_err(),
                SecretError::InvalidToken,
                "{token:?}"
            );
        }
        assert_eq!(Credentials::bearer(none).unwrap_err(), SecretError::Empty);
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let basic = Credentials::basic("hook", ["correct-horse-battery-staple"]).unwrap();
        let bearer = Credentials::bearer(["correct-horse-battery-staple"]).unwrap();
        for debug in [format!("{basic:?}"), format!("{bearer:?}")] {
            assert!(!debug.contains("correct-horse"), "{debug}");
            assert!(debug.contains("<1 redacted>"), "{debug}");
        }
        assert!(format!("{basic:?}").contains("hook"));
    }
}
