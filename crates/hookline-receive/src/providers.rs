//! The providers' rules, as data: for every source type, how a genuine request is
//! recognised, which value identifies one delivery across the provider's retries (the
//! dedupe key), where the event type is written, and whether the provider checks the URL
//! with a challenge first.
//!
//! `docs/providers.md` is the reference behind this table; a change to one is a change to
//! both. A new source type is one more row here (and, if its provider signs in a way of
//! its own, one more scheme in `hookline-signature`).

use hookline_signature::Scheme;

/// How a type checks requests, before its configuration is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// No verification.
    Generic,
    /// A scheme of `hookline-signature`, keyed by `secret` or `secrets`.
    Signed(Scheme),
    /// An HMAC of the body in a configurable header, algorithm and encoding.
    Hmac,
    /// `Authorization: Basic`.
    BasicAuth,
    /// `Authorization: Bearer`.
    Bearer,
    /// `Authorization: Bearer <JWT>`, an OpenID Connect token signed with RS256 by Google
    /// (`hookline_signature::oidc`), checked against the key set the server fetched.
    GoogleOidc,
}

/// Where a value is found in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locator {
    /// The first of these headers that is present and not empty.
    Header(&'static [&'static str]),
    /// The non-empty string at this JSON pointer of the body.
    Json(&'static str),
    /// The non-empty string at this JSON pointer of the unwrapped message (the decoded
    /// `data` of a Pub/Sub push), for types that unwrap an [`Envelope`].
    Data(&'static str),
}

/// How a type's provider wraps each message in the body it posts; the unwrapped message is
/// what is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Envelope {
    /// A Cloud Pub/Sub push with wrapped delivery (`crate::pubsub`).
    PubSub,
}

/// How the event type of a request is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventTypeRule {
    /// The first value found.
    First(&'static [Locator]),
    /// The first value, then `.` and the second when there is one (GitHub's
    /// `X-GitHub-Event` and the body's `action`).
    WithSuffix(Locator, Locator),
    /// Both values joined with `.`, or nothing if either is missing (Hugging Face's
    /// `event.scope` and `event.action`).
    Joined(Locator, Locator),
    /// A fixed prefix and the value (Replicate's `prediction.` and the body's `status`).
    Prefixed(&'static str, Locator),
}

/// One source type: its wire name and its provider's rules.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Provider {
    pub name: &'static str,
    pub kind: Kind,
    /// Where the provider's id of one delivery is, the first found; the body's hash where
    /// it sends none (an empty list, or none of them present).
    pub dedupe: &'static [Locator],
    pub event_type: EventTypeRule,
    /// Slack checks a new URL by posting `{"type": "url_verification", "challenge"}`.
    pub answers_challenge: bool,
    /// The secret may be left out, and then nothing is checked (GitHub: the Svix Ingest
    /// contract makes its secret nullable).
    pub secret_optional: bool,
    /// The envelope the body wraps the message in, for types that unwrap one.
    pub envelope: Option<Envelope>,
}

const STANDARD_ID: Locator = Locator::Header(&["webhook-id", "svix-id"]);
const BODY_TYPE: EventTypeRule = EventTypeRule::First(&[Locator::Json("/type")]);

/// A provider whose requests follow the Standard Webhooks family.
const fn standard(name: &'static str, scheme: Scheme) -> Provider {
    Provider {
        name,
        kind: Kind::Signed(scheme),
        dedupe: &[STANDARD_ID],
        event_type: BODY_TYPE,
        answers_challenge: false,
        secret_optional: false,
        envelope: None,
    }
}

/// A type whose provider sends no delivery id and writes the event type in `type`.
const fn plain(name: &'static str, kind: Kind) -> Provider {
    Provider {
        name,
        kind,
        dedupe: &[],
        event_type: BODY_TYPE,
        answers_challenge: false,
        secret_optional: false,
        envelope: None,
    }
}

/// Every supported type by its wire name: the contract's own, then Hookline's, then the
/// contract's types whose config is `SvixConfig` (their providers send through Svix).
pub(crate) const PROVIDERS: &[Provider] = &[
    plain("generic-webhook", Kind::Generic),
    standard("svix", Scheme::Svix),
    standard("open-ai", Scheme::OpenAi),
    Provider {
        event_type: EventTypeRule::Prefixed("prediction.", Locator::Json("/status")),
        ..standard("replicate", Scheme::Replicate)
    },
    Provider {
        name: "github",
        kind: Kind::Signed(Scheme::Github),
        dedupe: &[Locator::Header(&["x-github-delivery"])],
        event_type: EventTypeRule::WithSuffix(
            Locator::Header(&["x-github-event"]),
            Locator::Json("/action"),
        ),
        answers_challenge: false,
        secret_optional: true,
        envelope: None,
    },
    Provider {
        name: "stripe",
        kind: Kind::Signed(Scheme::Stripe),
        dedupe: &[Locator::Json("/id")],
        event_type: BODY_TYPE,
        answers_challenge: false,
        secret_optional: false,
        envelope: None,
    },
    Provider {
        name: "slack",
        kind: Kind::Signed(Scheme::Slack),
        dedupe: &[Locator::Json("/event_id")],
        event_type: EventTypeRule::First(&[Locator::Json("/event/type"), Locator::Json("/type")]),
        answers_challenge: true,
        secret_optional: false,
        envelope: None,
    },
    Provider {
        name: "shopify",
        kind: Kind::Signed(Scheme::Shopify),
        dedupe: &[Locator::Header(&["x-shopify-webhook-id"])],
        event_type: EventTypeRule::First(&[Locator::Header(&["x-shopify-topic"])]),
        answers_challenge: false,
        secret_optional: false,
        envelope: None,
    },
    standard("standard-webhooks", Scheme::Standard),
    Provider {
        name: "hugging-face",
        kind: Kind::Signed(Scheme::HuggingFace),
        dedupe: &[],
        event_type: EventTypeRule::Joined(
            Locator::Json("/event/scope"),
            Locator::Json("/event/action"),
        ),
        answers_challenge: false,
        secret_optional: false,
        envelope: None,
    },
    plain("hmac", Kind::Hmac),
    plain("basic-auth", Kind::BasicAuth),
    plain("bearer", Kind::Bearer),
    // Pushes of a Cloud Pub/Sub subscription (Gemini and Vertex AI notifications among
    // them): the message id is the same on every redelivery, where the body is not
    // (`deliveryAttempt` grows). The event type is the publisher's attribute, else the
    // message's own `type`.
    Provider {
        name: "google-pubsub",
        kind: Kind::GoogleOidc,
        dedupe: &[
            Locator::Json("/message/messageId"),
            Locator::Json("/message/message_id"),
        ],
        event_type: EventTypeRule::First(&[
            Locator::Json("/message/attributes/type"),
            Locator::Json("/message/attributes/eventType"),
            Locator::Json("/message/attributes/ce-type"),
            Locator::Data("/type"),
        ]),
        answers_challenge: false,
        secret_optional: false,
        envelope: Some(Envelope::PubSub),
    },
    standard("beehiiv", Scheme::Svix),
    standard("brex", Scheme::Svix),
    standard("clerk", Scheme::Svix),
    standard("guesty", Scheme::Svix),
    standard("incident-io", Scheme::Svix),
    standard("lithic", Scheme::Svix),
    standard("nash", Scheme::Svix),
    standard("pleo", Scheme::Svix),
    standard("psi-fi", Scheme::Svix),
    standard("render", Scheme::Svix),
    standard("resend", Scheme::Svix),
    standard("safebase", Scheme::Svix),
    standard("sardine", Scheme::Svix),
    standard("stych", Scheme::Svix),
];

impl Provider {
    /// The provider of type `name`.
    pub fn find(name: &str) -> Option<&'static Provider> {
        PROVIDERS.iter().find(|provider| provider.name == name)
    }

    /// Whether the type cannot do without a config (it needs a secret or a header).
    pub fn needs_config(&self) -> bool {
        self.kind != Kind::Generic && !self.secret_optional
    }
}

impl Kind {
    /// The config fields of the type itself, besides Hookline's own options.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Generic => &[],
            Kind::Signed(_) => &["secret", "secrets"],
            Kind::Hmac => &[
                "secret",
                "secrets",
                "header",
                "algorithm",
                "encoding",
                "prefix",
            ],
            Kind::BasicAuth => &["username", "password", "passwords"],
            Kind::Bearer => &["token", "tokens"],
            Kind::GoogleOidc => &["audience", "serviceAccountEmail"],
        }
    }

    /// Whether the type's requests carry a signed timestamp (so a tolerance applies): a
    /// scheme's timestamp, or a token's `exp` and `iat`.
    pub fn has_timestamp(self) -> bool {
        match self {
            Kind::Signed(scheme) => scheme.has_timestamp(),
            Kind::GoogleOidc => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_scheme_has_a_type() {
        let mut names: Vec<&str> = PROVIDERS.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PROVIDERS.len());
        for scheme in Scheme::ALL {
            assert!(
                PROVIDERS.iter().any(|p| p.kind == Kind::Signed(scheme)),
                "{scheme} has no source type"
            );
        }
    }

    /// Refusals carry the signature crate's codes as the product's: every one must be in
    /// the vocabulary, or a refusal would be reported under the wrong code.
    #[test]
    fn every_verification_code_is_a_product_code() {
        use std::borrow::Cow;

        use hookline_core::Code;
        use hookline_signature::{SecretError, VerifyError};

        let errors = [
            VerifyError::MalformedSecret {
                index: 0,
                source: SecretError::Empty,
            },
            VerifyError::MissingHeader(Cow::Borrowed("x")),
            VerifyError::MalformedHeader {
                name: Cow::Borrowed("x"),
                reason: Cow::Borrowed("y"),
            },
            VerifyError::InvalidTimestamp {
                header: "x",
                value: "y".into(),
            },
            VerifyError::TimestampTooOld {
                age_secs: 9,
                tolerance_secs: 1,
            },
            VerifyError::TimestampTooNew {
                ahead_secs: 9,
                tolerance_secs: 1,
            },
            VerifyError::NoMatch {
                signatures: 1,
                keys: 1,
            },
            VerifyError::InvalidCredentials {
                scheme: "basic",
                configured: 1,
            },
        ];
        for error in errors {
            assert!(Code::parse(error.code()).is_some(), "{}", error.code());
        }
        use hookline_signature::oidc::TokenError;
        let token_errors = [
            TokenError::MissingHeader,
            TokenError::NotBearer,
            TokenError::Malformed(Cow::Borrowed("x")),
            TokenError::UnsupportedAlgorithm("HS256".into()),
            TokenError::MissingKeyId,
            TokenError::UnknownKey {
                kid: "k".into(),
                known: vec![],
            },
            TokenError::BadSignature { kid: "k".into() },
            TokenError::InvalidTime {
                claim: "exp",
                problem: "missing",
            },
            TokenError::Expired {
                ago_secs: 1,
                leeway_secs: 0,
            },
            TokenError::NotYetValid {
                claim: "iat",
                ahead_secs: 1,
                leeway_secs: 0,
            },
            TokenError::WrongAudience {
                got: "a".into(),
                expected: "b".into(),
            },
            TokenError::WrongIssuer {
                got: "a".into(),
                expected: &hookline_signature::oidc::GOOGLE_ISSUERS,
            },
            TokenError::WrongEmail {
                got: "a".into(),
                expected: "b".into(),
            },
            TokenError::EmailUnverified { email: "a".into() },
        ];
        for error in token_errors {
            assert!(Code::parse(error.code()).is_some(), "{}", error.code());
        }
    }

    /// The stores seal the config members core names secret: every config field of every
    /// type that holds key material must be among them, or it would be stored in clear.
    #[test]
    fn every_secret_field_is_sealed_at_rest() {
        const NOT_SECRET: [&str; 7] = [
            "header",
            "algorithm",
            "encoding",
            "prefix",
            "username",
            "audience",
            "serviceAccountEmail",
        ];
        for provider in PROVIDERS {
            for field in provider.kind.fields() {
                assert!(
                    NOT_SECRET.contains(field)
                        || hookline_core::sealed::SECRET_MEMBERS.contains(field),
                    "`{}`: config field `{field}` is neither sealed nor known to be public",
                    provider.name
                );
            }
        }
    }

    /// A locator as `docs/providers.md` writes it.
    fn describe(locator: Locator) -> String {
        match locator {
            Locator::Header(names) => names
                .iter()
                .map(|name| format!("`{name}` header"))
                .collect::<Vec<_>>()
                .join(", else "),
            Locator::Json(pointer) => {
                format!(
                    "body `{}`",
                    pointer.trim_start_matches('/').replace('/', ".")
                )
            }
            Locator::Data(pointer) => {
                format!(
                    "data `{}`",
                    pointer.trim_start_matches('/').replace('/', ".")
                )
            }
        }
    }

    fn describe_dedupe(locators: &[Locator]) -> String {
        if locators.is_empty() {
            return "body hash".to_owned();
        }
        locators
            .iter()
            .map(|&locator| describe(locator))
            .collect::<Vec<_>>()
            .join(", else ")
    }

    fn describe_event_type(rule: EventTypeRule) -> String {
        match rule {
            EventTypeRule::First(locators) => locators
                .iter()
                .map(|&locator| describe(locator))
                .collect::<Vec<_>>()
                .join(", else "),
            EventTypeRule::WithSuffix(main, suffix) => {
                format!("{}, plus `.` + {}", describe(main), describe(suffix))
            }
            EventTypeRule::Joined(first, second) => {
                format!("{} + `.` + {}", describe(first), describe(second))
            }
            EventTypeRule::Prefixed(prefix, locator) => {
                format!("`{prefix}` + {}", describe(locator))
            }
        }
    }

    #[test]
    fn the_summary_table_matches_the_code() {
        let document = include_str!("../../../docs/providers.md");
        let summary = document
            .split("\n## ")
            .find(|section| section.starts_with("Summary"))
            .expect("docs/providers.md has a Summary section");
        let mut described = Vec::new();
        let rows = summary.lines().filter(|line| line.starts_with("| `"));
        for row in rows.skip(1) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (types, dedupe, event_type) = (cells[1], cells[3], cells[4]);
            for name in types.split(", ") {
                let name = name.trim_matches('`');
                let provider = Provider::find(name)
                    .unwrap_or_else(|| panic!("docs/providers.md lists unknown type `{name}`"));
                let code_dedupe = describe_dedupe(provider.dedupe);
                assert!(
                    dedupe.eq_ignore_ascii_case(&code_dedupe),
                    "`{name}`: the document says the dedupe key is {dedupe:?}, the code {code_dedupe:?}"
                );
                let code_event_type = describe_event_type(provider.event_type);
                assert!(
                    event_type.eq_ignore_ascii_case(&code_event_type),
                    "`{name}`: the document reads the event type from {event_type:?}, the code from {code_event_type:?}"
                );
                described.push(name);
            }
        }
        for provider in PROVIDERS {
            assert!(
                described.contains(&provider.name),
                "docs/providers.md's summary has no row for `{}`",
                provider.name
            );
        }
    }
}
