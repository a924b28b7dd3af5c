//! Source types: parsing a source's `{type, config}` and checking a received request.
//!
//! A source's type names its provider ([`crate::providers`] holds their rules as data);
//! its config gives the secrets, passwords or tokens, and Hookline's own options. Parsing
//! happens once per source (the server keeps the result), so checking a request decodes
//! nothing. Configuration errors carry the location of the offending field
//! (`["body", "config", "secret"]`), ready for a 422.

use std::cell::OnceCell;
use std::fmt;
use std::time::Duration;

use hookline_core::Code;
use hookline_core::id::is_slug;
use hookline_core::model::{FRAMING_HEADERS, is_credential_header};
use hookline_signature::credentials::Credentials;
use hookline_signature::hmac::{Algorithm, Encoding, HmacRule};
use hookline_signature::oidc::{DEFAULT_LEEWAY, Jwks, OidcRule, TokenError};
use hookline_signature::{
    Headers as _, Keyset, Scheme, SecretError, Tolerance, VerifyError, VerifyOptions,
};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::pipeline::{Incoming, Refusal};
use crate::providers::{Envelope, EventTypeRule, Kind, Locator, PROVIDERS, Provider};
use crate::pubsub::PushEnvelope;

/// The dedupe window when none is configured: providers retry for up to 72 hours (OpenAI,
/// Stripe), so a retry is recognised for as long as it can arrive.
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(3 * 24 * 3600);
/// The longest `dedupeWindowSeconds` accepted.
pub const MAX_DEDUPE_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest `toleranceSeconds` accepted.
pub const MAX_TOLERANCE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The largest `maxBodyBytes` accepted: 16 MiB.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Secrets (or passwords, or tokens) valid at once: enough for any rotation.
const MAX_SECRETS: usize = 10;
const MAX_FORWARD_HEADERS: usize = 32;
/// Longer ids and event types are not trusted as such: ids fall back to the body's hash.
const MAX_VALUE_LEN: usize = 256;

/// Our own options, accepted in the config of every type.
const OPTION_FIELDS: [&str; 5] = [
    "toleranceSeconds",
    "maxBodyBytes",
    "dedupeWindowSeconds",
    "forwardHeaders",
    "forwardToApp",
];

/// A source's type with its parsed configuration.
#[derive(Clone)]
pub struct SourceType {
    provider: &'static Provider,
    verifier: Verifier,
    options: IngestOptions,
    /// The config as shown in API answers: no secret ever goes in here.
    shown: Map<String, Value>,
}

/// A config that cannot be used, with the location of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// Where the error is, from the request body: `["body", "config", "secrets", "1"]`.
    pub loc: Vec<String>,
    /// What is wrong, in lowercase prose.
    pub message: String,
}

/// Hookline's own options, accepted in the config of every type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOptions {
    /// From `toleranceSeconds` (0 = do not check); the scheme's default when not set.
    pub tolerance: Tolerance,
    /// From `maxBodyBytes` (1 ..= 16 MiB); the server's limit when not set.
    pub max_body_bytes: Option<usize>,
    /// From `dedupeWindowSeconds` (0 ..= 30 days); [`DEFAULT_DEDUPE_WINDOW`] when not set.
    pub dedupe_window: Duration,
    /// From `forwardHeaders`: header names (lowercase) copied from the provider's request
    /// onto forwarded deliveries.
    pub forward_headers: Vec<String>,
    /// From `forwardToApp`: the id or uid of an application that also gets each accepted
    /// request as a message.
    pub forward_to_app: Option<String>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            tolerance: Tolerance::SchemeDefault,
            max_body_bytes: None,
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
            forward_headers: Vec::new(),
            forward_to_app: None,
        }
    }
}

/// What a genuine request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Identifies this delivery across the provider's retries: the provider's id, or
    /// `sha256:` and the hex SHA-256 of the body where the provider sends none.
    pub dedupe_key: String,
    /// The provider's event type, where the type knows where to find it.
    pub event_type: Option<String>,
    /// Slack `url_verification`: the `challenge` to echo back; such a request is answered,
    /// not forwarded.
    pub challenge: Option<String>,
    /// The message unwrapped from the body's envelope (a Pub/Sub push's decoded `data`),
    /// forwarded in place of the body; `None` for types that forward the body itself.
    pub payload: Option<Vec<u8>>,
}

impl SourceType {
    /// Parses a source's type and its `config` (the JSON member of the request, `None` if
    /// absent). Secrets are decoded here, so a source that parses can check requests.
    pub fn parse(type_name: &str, config: Option<&Value>) -> Result<SourceType, ConfigError> {
        let provider = Provider::find(type_name).ok_or_else(|| unsupported(type_name))?;
        let (name, kind) = (provider.name, provider.kind);
        let empty = Map::new();
        let map = match config {
            None | Some(Value::Null) if provider.needs_config() => {
                return Err(ConfigError::at(&[], "field required"));
            }
            None | Some(Value::Null) => &empty,
            Some(Value::Object(map)) => map,
            Some(_) => return Err(ConfigError::at(&[], "must be an object")),
        };
        let accepted = || kind.fields().iter().chain(&OPTION_FIELDS);
        if let Some(unknown) = map.keys().find(|key| !accepted().any(|field| field == key)) {
            let names: Vec<&str> = accepted().copied().collect();
            return Err(ConfigError::at(
                &[unknown],
                format!(
                    "unknown field `{unknown}`; the config of `{name}` accepts {}",
                    names.join(", ")
                ),
            ));
        }
        let fields = Fields { map };
        let mut shown = Map::new();
        let verifier = Verifier::parse(provider, &fields, &mut shown)?;
        let options = IngestOptions::parse(name, kind, &fields, &mut shown)?;
        // A token's times are checked with the tolerance as leeway; 0 leaves none, but an
        // expired token is refused whatever the tolerance.
        let verifier = match verifier {
            Verifier::Oidc(rule) => Verifier::Oidc(rule.leeway(match options.tolerance {
                Tolerance::SchemeDefault => DEFAULT_LEEWAY,
                Tolerance::Disabled => Duration::ZERO,
                Tolerance::Within(leeway) => leeway,
            })),
            other => other,
        };
        Ok(SourceType {
            provider,
            verifier,
            options,
            shown,
        })
    }

    /// Every supported type name, in a stable order.
    pub fn supported() -> impl Iterator<Item = &'static str> {
        PROVIDERS.iter().map(|provider| provider.name)
    }

    /// The type name as given, e.g. `open-ai`.
    pub fn name(&self) -> &str {
        self.provider.name
    }

    /// The signature scheme, for types that use one of `hookline-signature`.
    pub fn scheme(&self) -> Option<Scheme> {
        match self.provider.kind {
            Kind::Signed(scheme) => Some(scheme),
            _ => None,
        }
    }

    /// Whether requests are checked at all (not for `generic-webhook`, nor `github`
    /// without a secret).
    pub fn verifies(&self) -> bool {
        !matches!(self.verifier, Verifier::None)
    }

    /// Whether requests are checked against a key set the server fetches (Google's JWKS
    /// for `google-pubsub`): [`crate::receive`] must then be given it.
    pub fn needs_keys(&self) -> bool {
        matches!(self.verifier, Verifier::Oidc(_))
    }

    /// The config to show in API answers: everything but secrets, passwords and tokens
    /// (so `{}` for secret-only configs, as the contract's `*ConfigOut`), with our options
    /// under their camelCase names when set.
    pub fn config_out(&self) -> Value {
        Value::Object(self.shown.clone())
    }

    /// Hookline's own options.
    pub fn options(&self) -> &IngestOptions {
        &self.options
    }

    /// Checks one received request against the exact raw body, with `keys` the key set
    /// of the types that need one ([`SourceType::needs_keys`]). `now` is Unix seconds.
    pub fn check(
        &self,
        request: &Incoming<'_>,
        keys: Option<&Jwks>,
        now: i64,
    ) -> Result<Checked, Refusal> {
        if let Some(limit) = self.options.max_body_bytes
            && request.body.len() > limit
        {
            return Err(Refusal::too_large(limit));
        }
        self.verifier.verify(request, &self.options, keys, now)?;
        let body = Body::new(request.body);
        let payload = match self.provider.envelope {
            None => None,
            Some(Envelope::PubSub) => {
                let value = body.json().map_err(|error| Refusal {
                    code: Code::MalformedEnvelope,
                    reason: format!(
                        "the body is not a Pub/Sub push envelope: it is not JSON ({error})"
                    ),
                })?;
                Some(PushEnvelope::from_value(value)?.data)
            }
        };
        let (dedupe_key, event_type) = {
            let view = View {
                headers: request.headers,
                body: &body,
                data: payload.as_deref().map(Body::new),
            };
            (self.dedupe_key(&view), self.event_type(&view))
        };
        Ok(Checked {
            dedupe_key,
            event_type,
            challenge: self.challenge(&body),
            payload,
        })
    }

    /// The provider's id of this delivery where it sends one, else the body's hash.
    fn dedupe_key(&self, view: &View<'_>) -> String {
        self.provider
            .dedupe
            .iter()
            .find_map(|locator| locator.find(view))
            .map_or_else(|| body_hash(view.body.raw), str::to_owned)
    }

    /// The provider's event type, where its rule finds one.
    fn event_type(&self, view: &View<'_>) -> Option<String> {
        let find = |locator: Locator| locator.find(view);
        match self.provider.event_type {
            EventTypeRule::First(locators) => {
                locators.iter().find_map(|&l| find(l)).map(str::to_owned)
            }
            EventTypeRule::WithSuffix(main, suffix) => find(main).map(|main| match find(suffix) {
                Some(suffix) => format!("{main}.{suffix}"),
                None => main.to_owned(),
            }),
            EventTypeRule::Joined(first, second) => find(first)
                .zip(find(second))
                .map(|(first, second)| format!("{first}.{second}")),
            EventTypeRule::Prefixed(prefix, locator) => {
                find(locator).map(|value| format!("{prefix}{value}"))
            }
        }
        .filter(|event_type| usable(event_type))
    }

    /// The `challenge` of a provider's URL check, for providers that send one.
    fn challenge(&self, body: &Body<'_>) -> Option<String> {
        if self.provider.answers_challenge && body.text("/type") == Some("url_verification") {
            return body
                .text("/challenge")
                .filter(|c| usable(c))
                .map(str::to_owned);
        }
        None
    }
}

/// What locators read: a request's headers, its body, and the message unwrapped from it.
struct View<'r> {
    headers: &'r [(String, String)],
    body: &'r Body<'r>,
    data: Option<Body<'r>>,
}

impl Locator {
    /// The value this locator points at in a request, if present, not empty and
    /// [`usable`].
    fn find<'r>(self, view: &'r View<'_>) -> Option<&'r str> {
        match self {
            Locator::Header(names) => names.iter().find_map(|name| header(view.headers, name)),
            Locator::Json(pointer) => view.body.text(pointer),
            Locator::Data(pointer) => view.data.as_ref()?.text(pointer),
        }
        .filter(|value| usable(value))
    }
}

/// Whether a value a provider sent can be trusted as an id, an event type or a challenge:
/// at most [`MAX_VALUE_LEN`] bytes and no control characters (a NUL, which PostgreSQL
/// cannot store, among them). Anything else is not used: ids fall back to the body's hash.
fn usable(value: &str) -> bool {
    value.len() <= MAX_VALUE_LEN && !value.chars().any(char::is_control)
}

/// The trimmed, non-empty value of header `name`.
fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .header(name)
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

impl fmt::Debug for SourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceType")
            .field("name", &self.provider.name)
            .field("verifier", &self.verifier)
            .field("options", &self.options)
            .finish()
    }
}

fn unsupported(type_name: &str) -> ConfigError {
    let names: Vec<&str> = SourceType::supported().collect();
    ConfigError {
        loc: vec!["body".to_owned(), "type".to_owned()],
        message: format!(
            "source type `{type_name}` is not supported; supported types: {}",
            names.join(", ")
        ),
    }
}

impl ConfigError {
    /// An error at `path` under `["body", "config"]`.
    fn at(path: &[&str], message: impl Into<String>) -> Self {
        let mut loc = vec!["body".to_owned(), "config".to_owned()];
        loc.extend(path.iter().map(|segment| (*segment).to_owned()));
        ConfigError {
            loc,
            message: message.into(),
        }
    }
}

impl IngestOptions {
    fn parse(
        name: &str,
        kind: Kind,
        fields: &Fields<'_>,
        shown: &mut Map<String, Value>,
    ) -> Result<Self, ConfigError> {
        let mut options = IngestOptions::default();
        if let Some(secs) = fields.integer("toleranceSeconds", 0, MAX_TOLERANCE.as_secs())? {
            if !kind.has_timestamp() {
                return Err(ConfigError::at(
                    &["toleranceSeconds"],
                    format!("`{name}` requests carry no signed timestamp, so no tolerance applies"),
                ));
            }
            options.tolerance = match secs {
                0 => Tolerance::Disabled,
                secs => Tolerance::Within(Duration::from_secs(secs)),
            };
            shown.insert("toleranceSeconds".to_owned(), secs.into());
        }
        let max_body = u64::try_from(MAX_BODY_BYTES).unwrap_or(u64::MAX);
        if let Some(bytes) = fields.integer("maxBodyBytes", 1, max_body)? {
            options.max_body_bytes = Some(usize::try_from(bytes).unwrap_or(MAX_BODY_BYTES));
            shown.insert("maxBodyBytes".to_owned(), bytes.into());
        }
        if let Some(secs) = fields.integer("dedupeWindowSeconds", 0, MAX_DEDUPE_WINDOW.as_secs())? {
            options.dedupe_window = Duration::from_secs(secs);
            shown.insert("dedupeWindowSeconds".to_owned(), secs.into());
        }
        if let Some(names) = fields.strings("forwardHeaders")? {
            options.forward_headers = forward_headers(&names)?;
            shown.insert(
                "forwardHeaders".to_owned(),
                options.forward_headers.clone().into(),
            );
        }
        if let Some(app) = fields.string("forwardToApp")? {
            if !is_slug(app) || app.len() > MAX_VALUE_LEN {
                return Err(ConfigError::at(
                    &["forwardToApp"],
                    "must be an application id or uid: 1 to 256 letters, digits, `-`, `_` or `.`",
                ));
            }
            options.forward_to_app = Some(app.to_owned());
            shown.insert("forwardToApp".to_owned(), app.into());
        }
        Ok(options)
    }
}

fn forward_headers(names: &[&str]) -> Result<Vec<String>, ConfigError> {
    if names.len() > MAX_FORWARD_HEADERS {
        return Err(ConfigError::at(
            &["forwardHeaders"],
            format!("must hold at most {MAX_FORWARD_HEADERS} header names"),
        ));
    }
    let mut headers: Vec<String> = Vec::with_capacity(names.len());
    for (index, raw) in names.iter().enumerate() {
        let error =
            |message: String| ConfigError::at(&["forwardHeaders", &index.to_string()], message);
        let name =
            header_name(raw).ok_or_else(|| error("must be a valid header name".to_owned()))?;
        if FRAMING_HEADERS.contains(&name.as_str()) {
            return Err(error(format!(
                "`{name}` belongs to the connection or framing of one request and cannot be copied"
            )));
        }
        if name.starts_with("webhook-") || name.starts_with("svix-") {
            return Err(error(format!(
                "`{name}` cannot be copied: Hookline sets `webhook-*` and `svix-*` headers when it signs a delivery"
            )));
        }
        if is_credential_header(&name) {
            return Err(error(format!(
                "`{name}` carries the provider's credential and is not copied onto deliveries"
            )));
        }
        if !headers.contains(&name) {
            headers.push(name);
        }
    }
    Ok(headers)
}

/// `raw` lowercased if it is an HTTP field name (RFC 9110 `token`).
fn header_name(raw: &str) -> Option<String> {
    let valid = !raw.is_empty()
        && raw.len() <= MAX_VALUE_LEN
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    valid.then(|| raw.to_ascii_lowercase())
}

/// Typed access to the members of a config object. `null` counts as absent.
struct Fields<'a> {
    map: &'a Map<String, Value>,
}

/// One secret, password or token, and where in the config it was given.
struct Given<'a> {
    field: &'static str,
    index: Option<usize>,
    value: &'a str,
}

impl Given<'_> {
    fn error(&self, message: impl Into<String>) -> ConfigError {
        match self.index {
            Some(index) => ConfigError::at(&[self.field, &index.to_string()], message),
            None => ConfigError::at(&[self.field], message),
        }
    }

    /// The value without surrounding whitespace, refused if nothing is left.
    fn non_empty(&self, what: &str) -> Result<&str, ConfigError> {
        let value = self.value.trim();
        if value.is_empty() {
            return Err(self.error(format!("{what} is empty")));
        }
        Ok(value)
    }
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|value| !value.is_null())
    }

    fn string(&self, name: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(ConfigError::at(&[name], "must be a string")),
        }
    }

    fn required_string(&self, name: &str) -> Result<&'a str, ConfigError> {
        self.string(name)?
            .ok_or_else(|| ConfigError::at(&[name], "field required"))
    }

    fn integer(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        match value.as_u64() {
            Some(number) if (min..=max).contains(&number) => Ok(Some(number)),
            _ => Err(ConfigError::at(
                &[name],
                format!("must be an integer from {min} to {max}"),
            )),
        }
    }

    fn strings(&self, name: &str) -> Result<Option<Vec<&'a str>>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    item.as_str().ok_or_else(|| {
                        ConfigError::at(&[name, &index.to_string()], "must be a string")
                    })
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(_) => Err(ConfigError::at(&[name], "must be an array of strings")),
        }
    }

    /// `one` (a string) or `many` (a non-empty array of strings): all valid at once. None
    /// may look like a sealed value, which a store would take for one.
    fn one_or_many(
        &self,
        one: &'static str,
        many: &'static str,
        required: bool,
    ) -> Result<Vec<Given<'a>>, ConfigError> {
        let given = self.one_or_many_unchecked(one, many, required)?;
        match given
            .iter()
            .find(|given| given.value.starts_with(hookline_core::sealed::PREFIX))
        {
            Some(given) => Err(given.error(format!(
                "must not start with `{}`: Hookline marks sealed secrets so",
                hookline_core::sealed::PREFIX
            ))),
            None => Ok(given),
        }
    }

    fn one_or_many_unchecked(
        &self,
        one: &'static str,
        many: &'static str,
        required: bool,
    ) -> Result<Vec<Given<'a>>, ConfigError> {
        let single = self.string(one)?;
        let list = self.strings(many)?;
        match (single, list) {
            (Some(_), Some(_)) => Err(ConfigError::at(
                &[many],
                format!("give either `{one}` or `{many}`, not both"),
            )),
            (Some(value), None) => Ok(vec![Given {
                field: one,
                index: None,
                value,
            }]),
            (None, Some(values)) if values.is_empty() => {
                Err(ConfigError::at(&[many], "must hold at least one value"))
            }
            (None, Some(values)) if values.len() > MAX_SECRETS => Err(ConfigError::at(
                &[many],
                format!("must hold at most {MAX_SECRETS} values"),
            )),
            (None, Some(values)) => Ok(values
                .into_iter()
                .enumerate()
                .map(|(index, value)| Given {
                    field: many,
                    index: Some(index),
                    value,
                })
                .collect()),
            (None, None) if required => Err(ConfigError::at(&[one], "field required")),
            (None, None) => Ok(Vec::new()),
        }
    }
}

/// How requests of a source are checked, with the key material to do it. The checks
/// themselves are `hookline-signature`'s.
#[derive(Clone)]
enum Verifier {
    None,
    Signature(Keyset),
    Hmac(HmacRule),
    Credentials(Credentials),
    Oidc(OidcRule),
}

impl Verifier {
    fn parse(
        provider: &Provider,
        fields: &Fields<'_>,
        shown: &mut Map<String, Value>,
    ) -> Result<Self, ConfigError> {
        match provider.kind {
            Kind::Generic => Ok(Verifier::None),
            Kind::Signed(scheme) => {
                // Without a secret where the provider's may be left out, nothing is checked.
                let required = !provider.secret_optional;
                let secrets = fields.one_or_many("secret", "secrets", required)?;
                if secrets.is_empty() {
                    return Ok(Verifier::None);
                }
                // One at a time first, so an error names the secret at fault.
                for secret in &secrets {
                    Keyset::new(scheme, [secret.value]).map_err(|e| secret.error(e.to_string()))?;
                }
                let keyset = Keyset::new(scheme, secrets.iter().map(|secret| secret.value))
                    .map_err(|e| ConfigError::at(&["secrets"], e.to_string()))?;
                Ok(Verifier::Signature(keyset))
            }
            Kind::Hmac => parse_hmac(fields, shown).map(Verifier::Hmac),
            Kind::BasicAuth => parse_basic(fields, shown).map(Verifier::Credentials),
            Kind::Bearer => parse_bearer(fields).map(Verifier::Credentials),
            Kind::GoogleOidc => parse_oidc(fields, shown).map(Verifier::Oidc),
        }
    }

    fn verify(
        &self,
        request: &Incoming<'_>,
        options: &IngestOptions,
        keys: Option<&Jwks>,
        now: i64,
    ) -> Result<(), Refusal> {
        match self {
            Verifier::None => Ok(()),
            Verifier::Signature(keyset) => {
                let verify = VerifyOptions::default()
                    .tolerance(options.tolerance)
                    .now(now);
                keyset.verify(request.headers, request.body, verify)?;
                Ok(())
            }
            Verifier::Hmac(rule) => Ok(rule.verify(request.headers, request.body)?),
            Verifier::Credentials(credentials) => Ok(credentials.verify(request.headers)?),
            Verifier::Oidc(rule) => {
                let keys = keys.ok_or_else(|| Refusal {
                    code: Code::Unavailable,
                    reason: "Google's signing keys (JWKS) are not available to check the \
                             token; answered 503 so that Pub/Sub delivers the message again"
                        .to_owned(),
                })?;
                rule.verify(request.headers, keys, now)?;
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verifier::None => f.write_str("None"),
            Verifier::Signature(keyset) => write!(f, "Signature({}, <redacted>)", keyset.scheme()),
            Verifier::Hmac(rule) => rule.fmt(f),
            Verifier::Credentials(credentials) => credentials.fmt(f),
            Verifier::Oidc(rule) => rule.fmt(f),
        }
    }
}

/// The `hmac` type: `{header, algorithm, encoding, prefix}` and the secrets.
fn parse_hmac(
    fields: &Fields<'_>,
    shown: &mut Map<String, Value>,
) -> Result<HmacRule, ConfigError> {
    let header = header_name(fields.required_string("header")?)
        .ok_or_else(|| ConfigError::at(&["header"], "must be a valid header name"))?;
    let algorithm = match fields.string("algorithm")? {
        None => Algorithm::Sha256,
        Some(name) => name
            .parse()
            .map_err(|_| ConfigError::at(&["algorithm"], "must be one of sha256, sha1, sha512"))?,
    };
    let encoding = match fields.string("encoding")? {
        None => Encoding::Hex,
        Some(name) => name
            .parse()
            .map_err(|_| ConfigError::at(&["encoding"], "must be one of hex, base64"))?,
    };
    let prefix = fields.string("prefix")?.filter(|prefix| !prefix.is_empty());
    let secrets = fields.one_or_many("secret", "secrets", true)?;
    for secret in &secrets {
        secret.non_empty("secret")?;
    }
    let rule = HmacRule::new(
        &header,
        algorithm,
        encoding,
        prefix,
        secrets.iter().map(|secret| secret.value.as_bytes()),
    )
    .map_err(|e| ConfigError::at(&["secret"], e.to_string()))?;
    shown.insert("header".to_owned(), rule.header().into());
    shown.insert("algorithm".to_owned(), algorithm.name().into());
    shown.insert("encoding".to_owned(), encoding.name().into());
    if let Some(prefix) = rule.prefix() {
        shown.insert("prefix".to_owned(), prefix.into());
    }
    Ok(rule)
}

/// The `basic-auth` type: `username` and `password` or `passwords`.
fn parse_basic(
    fields: &Fields<'_>,
    shown: &mut Map<String, Value>,
) -> Result<Credentials, ConfigError> {
    let username = fields.required_string("username")?;
    let passwords = fields.one_or_many("password", "passwords", true)?;
    // One at a time first, so an error names the field at fault.
    for password in &passwords {
        Credentials::basic(username, [password.value]).map_err(|error| match error {
            SecretError::Empty => password.error("password is empty"),
            other => ConfigError::at(&["username"], other.to_string()),
        })?;
    }
    let credentials = Credentials::basic(username, passwords.iter().map(|p| p.value))
        .map_err(|e| ConfigError::at(&["passwords"], e.to_string()))?;
    shown.insert("username".to_owned(), username.into());
    Ok(credentials)
}

/// The `bearer` type: `token` or `tokens`.
fn parse_bearer(fields: &Fields<'_>) -> Result<Credentials, ConfigError> {
    let tokens = fields.one_or_many("token", "tokens", true)?;
    for token in &tokens {
        Credentials::bearer([token.value]).map_err(|e| token.error(e.to_string()))?;
    }
    Credentials::bearer(tokens.iter().map(|token| token.value))
        .map_err(|e| ConfigError::at(&["tokens"], e.to_string()))
}

/// The longest `audience` accepted.
const MAX_AUDIENCE_LEN: usize = 2048;

/// The `google-pubsub` type: the token's `audience` and the push `serviceAccountEmail`.
fn parse_oidc(
    fields: &Fields<'_>,
    shown: &mut Map<String, Value>,
) -> Result<OidcRule, ConfigError> {
    let audience = fields.required_string("audience")?.trim();
    if audience.is_empty()
        || audience.len() > MAX_AUDIENCE_LEN
        || audience.chars().any(char::is_control)
    {
        return Err(ConfigError::at(
            &["audience"],
            format!(
                "must be the audience of the push subscription's tokens (often the push URL): \
                 1 to {MAX_AUDIENCE_LEN} bytes without control characters"
            ),
        ));
    }
    let email = fields.required_string("serviceAccountEmail")?.trim();
    let valid = email.len() <= MAX_VALUE_LEN
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email
            .split_once('@')
            .is_some_and(|(user, domain)| !user.is_empty() && !domain.is_empty());
    if !valid {
        return Err(ConfigError::at(
            &["serviceAccountEmail"],
            "must be the email of the service account the push subscription authenticates \
             as, e.g. `push@PROJECT.iam.gserviceaccount.com`",
        ));
    }
    shown.insert("audience".to_owned(), audience.into());
    shown.insert("serviceAccountEmail".to_owned(), email.into());
    Ok(OidcRule::google(audience, email))
}

impl From<TokenError> for Refusal {
    fn from(error: TokenError) -> Self {
        Refusal {
            // Every code of a token error is one of the product's codes.
            code: Code::parse(error.code()).unwrap_or(Code::InvalidCredentials),
            reason: error.to_string(),
        }
    }
}

impl From<VerifyError> for Refusal {
    fn from(error: VerifyError) -> Self {
        Refusal {
            // Every code of `hookline-signature` is one of the product's codes.
            code: Code::parse(error.code()).unwrap_or(Code::NoSignatureMatched),
            reason: error.to_string(),
        }
    }
}

/// The raw body, parsed as JSON the first time a value is wanted from it.
struct Body<'a> {
    raw: &'a [u8],
    /// The parsed value, or why the body is not JSON.
    json: OnceCell<Result<Value, String>>,
}

impl<'a> Body<'a> {
    fn new(raw: &'a [u8]) -> Self {
        Body {
            raw,
            json: OnceCell::new(),
        }
    }

    /// The body as JSON, or why it is not JSON.
    fn json(&self) -> Result<&Value, &str> {
        self.json
            .get_or_init(|| serde_json::from_slice(self.raw).map_err(|error| error.to_string()))
            .as_ref()
            .map_err(String::as_str)
    }

    /// The non-empty string at `pointer`; `None` if absent, not a string, or not JSON.
    fn text(&self, pointer: &str) -> Option<&str> {
        self.json()
            .ok()?
            .pointer(pointer)?
            .as_str()
            .filter(|text| !text.is_empty())
    }
}

/// The dedupe key of a request its provider gives no id: `sha256:` and the body's hash.
fn body_hash(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}
#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use hookline_signature::{Message, hmac_secret_from_bytes};
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_700_000_000;
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    /// GitHub's documented example: the HMACs below are Python's `hmac` over this pair.
    const KAT_SECRET: &str = "It's a Secret to Everybody";
    const KAT_BODY: &[u8] = b"Hello, World!";

    fn other_secret() -> String {
        hmac_secret_from_bytes(&[9; 32])
    }

    fn parsed(type_name: &str, config: Value) -> SourceType {
        SourceType::parse(type_name, Some(&config)).unwrap()
    }

    fn parse_error(type_name: &str, config: Value) -> ConfigError {
        SourceType::parse(type_name, Some(&config)).unwrap_err()
    }

    fn loc(path: &[&str]) -> Vec<String> {
        path.iter().map(|s| (*s).to_owned()).collect()
    }

    fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn check(
        source: &SourceType,
        headers: &[(String, String)],
        body: &[u8],
        now: i64,
    ) -> Result<Checked, Refusal> {
        source.check(
            &Incoming {
                method: "POST",
                headers,
                body,
            },
            None,
            now,
        )
    }

    /// Signs like the provider does, with `extra` headers the provider adds.
    fn signed(
        scheme: Scheme,
        secret: &str,
        id: &str,
        timestamp: i64,
        body: &[u8],
        extra: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let keyset = Keyset::new(scheme, [secret]).unwrap();
        let mut headers: Vec<(String, String)> = keyset
            .sign(&Message {
                id,
                timestamp,
                body,
            })
            .unwrap()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        headers.extend(owned(extra));
        headers
    }

    fn refused(result: Result<Checked, Refusal>) -> &'static str {
        result
            .expect_err("the request should be refused")
            .code
            .as_str()
    }

    /// Every type verified by a scheme of `hookline-signature`, with the header that
    /// carries its signature.
    const SIGNED_TYPES: [(&str, Scheme, &str); 10] = [
        ("standard-webhooks", Scheme::Standard, "webhook-signature"),
        ("svix", Scheme::Svix, "svix-signature"),
        ("clerk", Scheme::Svix, "svix-signature"),
        ("open-ai", Scheme::OpenAi, "webhook-signature"),
        ("replicate", Scheme::Replicate, "webhook-signature"),
        ("github", Scheme::Github, "x-hub-signature-256"),
        ("stripe", Scheme::Stripe, "stripe-signature"),
        ("slack", Scheme::Slack, "x-slack-signature"),
        ("shopify", Scheme::Shopify, "x-shopify-hmac-sha256"),
        ("hugging-face", Scheme::HuggingFace, "x-webhook-secret"),
    ];

    #[test]
    fn every_signed_type_accepts_a_good_request_and_refuses_bad_ones() {
        let body = br#"{"type":"thing.happened","id":"evt_1"}"#;
        for (name, scheme, signature_header) in SIGNED_TYPES {
            let mut config = json!({ "secret": SECRET });
            if scheme.has_timestamp() {
                // Replicate checks no timestamp unless asked to.
                config["toleranceSeconds"] = json!(300);
            }
            let source = parsed(name, config);
            assert_eq!(source.scheme(), Some(scheme), "{name}");
            assert!(source.verifies(), "{name}");
            let good = signed(scheme, SECRET, "msg_1", NOW, body, &[]);
            check(&source, &good, body, NOW + 5).unwrap_or_else(|e| panic!("{name}: {e}"));

            // Hugging Face sends its secret as is: it signs nothing, so any body passes.
            if scheme != Scheme::HuggingFace {
                let tampered = br#"{"type":"thing.happened","id":"evt_2"}"#;
                assert_eq!(
                    refused(check(&source, &good, tampered, NOW)),
                    "no_signature_matched",
                    "{name}: tampered body"
                );
            }

            let wrong = signed(scheme, &other_secret(), "msg_1", NOW, body, &[]);
            assert_eq!(
                refused(check(&source, &wrong, body, NOW)),
                "no_signature_matched",
                "{name}: wrong secret"
            );

            if scheme.has_timestamp() {
                let stale = signed(scheme, SECRET, "msg_1", NOW - 1000, body, &[]);
                assert_eq!(
                    refused(check(&source, &stale, body, NOW)),
                    "timestamp_too_old",
                    "{name}: stale timestamp"
                );
            }

            let missing: Vec<_> = good
                .iter()
                .filter(|(header, _)| header != signature_header)
                .cloned()
                .collect();
            assert_eq!(missing.len(), good.len() - 1, "{name}");
            assert_eq!(
                refused(check(&source, &missing, body, NOW)),
                "missing_header",
                "{name}: missing signature header"
            );
        }
    }

    #[test]
    fn every_secret_bearing_type_accepts_a_rotation_list() {
        let body = br#"{"type":"a"}"#;
        let old = other_secret();
        for (name, scheme, _) in SIGNED_TYPES {
            let source = parsed(name, json!({ "secrets": [old, SECRET] }));
            for secret in [old.as_str(), SECRET] {
                let headers = signed(scheme, secret, "msg_1", NOW, body, &[]);
                check(&source, &headers, body, NOW).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            let stranger = hmac_secret_from_bytes(&[3; 32]);
            let headers = signed(scheme, &stranger, "msg_1", NOW, body, &[]);
            assert_eq!(
                refused(check(&source, &headers, body, NOW)),
                "no_signature_matched"
            );
        }
    }

    #[test]
    fn standard_family_dedupes_on_the_message_id_and_reads_the_body_type() {
        let body = br#"{"type":"response.completed","data":{"id":"resp_1"}}"#;
        for (type_name, scheme) in [
            ("standard-webhooks", Scheme::Standard),
            ("svix", Scheme::Svix),
            ("resend", Scheme::Svix),
            ("open-ai", Scheme::OpenAi),
        ] {
            let source = parsed(type_name, json!({ "secret": SECRET }));
            let headers = signed(scheme, SECRET, "wh_123", NOW, body, &[]);
            let checked = check(&source, &headers, body, NOW).unwrap();
            assert_eq!(
                checked,
                Checked {
                    dedupe_key: "wh_123".into(),
                    event_type: Some("response.completed".into()),
                    challenge: None,
                    payload: None,
                },
                "{type_name}"
            );
        }
    }

    #[test]
    fn svix_accepts_webhook_header_names_too() {
        let body = b"{}";
        let source = parsed("svix", json!({ "secret": SECRET }));
        let headers = signed(Scheme::Standard, SECRET, "msg_9", NOW, body, &[]);
        let checked = check(&source, &headers, body, NOW).unwrap();
        assert_eq!(checked.dedupe_key, "msg_9");
        assert_eq!(checked.event_type, None);
    }

    #[test]
    fn open_ai_takes_a_secret_without_whsec_as_raw_bytes() {
        let body = br#"{"type":"batch.completed"}"#;
        let source = parsed("open-ai", json!({ "secret": "plain-openai-secret" }));
        let headers = signed(
            Scheme::OpenAi,
            "plain-openai-secret",
            "wh_1",
            NOW,
            body,
            &[],
        );
        assert_eq!(
            check(&source, &headers, body, NOW)
                .unwrap()
                .event_type
                .as_deref(),
            Some("batch.completed")
        );
    }

    #[test]
    fn replicate_checks_no_timestamp_unless_configured() {
        let body = br#"{"id":"p1","status":"succeeded"}"#;
        let source = parsed("replicate", json!({ "secret": SECRET }));
        let headers = signed(Scheme::Replicate, SECRET, "msg_r", NOW - 86_400, body, &[]);
        let checked = check(&source, &headers, body, NOW).unwrap();
        assert_eq!(checked.dedupe_key, "msg_r");
        assert_eq!(checked.event_type.as_deref(), Some("prediction.succeeded"));
        assert_eq!(source.options().tolerance, Tolerance::SchemeDefault);
    }

    #[test]
    fn tolerance_zero_disables_the_timestamp_check() {
        let body = b"{}";
        let source = parsed(
            "standard-webhooks",
            json!({ "secret": SECRET, "toleranceSeconds": 0 }),
        );
        assert_eq!(source.options().tolerance, Tolerance::Disabled);
        let headers = signed(Scheme::Standard, SECRET, "msg_1", NOW - 86_400, body, &[]);
        check(&source, &headers, body, NOW).unwrap();

        let source = parsed(
            "standard-webhooks",
            json!({ "secret": SECRET, "toleranceSeconds": 30 }),
        );
        let headers = signed(Scheme::Standard, SECRET, "msg_1", NOW + 60, body, &[]);
        assert_eq!(
            refused(check(&source, &headers, body, NOW)),
            "timestamp_too_new"
        );
    }

    #[test]
    fn github_dedupes_on_the_delivery_and_names_event_and_action() {
        let body = br#"{"action":"opened","issue":{"number":1}}"#;
        let source = parsed("github", json!({ "secret": KAT_SECRET }));
        let headers = signed(
            Scheme::Github,
            KAT_SECRET,
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            NOW,
            body,
            &[("x-github-event", "issues")],
        );
        let checked = check(&source, &headers, body, NOW).unwrap();
        assert_eq!(checked.dedupe_key, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
        assert_eq!(checked.event_type.as_deref(), Some("issues.opened"));

        let ping = br#"{"zen":"Keep it logically awesome."}"#;
        let headers = signed(
            Scheme::Github,
            KAT_SECRET,
            "d1",
            NOW,
            ping,
            &[("x-github-event", "ping")],
        );
        assert_eq!(
            check(&source, &headers, ping, NOW)
                .unwrap()
                .event_type
                .as_deref(),
            Some("ping")
        );
    }

    #[test]
    fn github_without_a_secret_checks_nothing() {
        for config in [None, Some(json!({})), Some(json!({ "secret": null }))] {
            let source = SourceType::parse("github", config.as_ref()).unwrap();
            assert!(!source.verifies());
            let headers = owned(&[("x-github-delivery", "d-1"), ("x-github-event", "push")]);
            let checked = check(&source, &headers, b"not json", NOW).unwrap();
            assert_eq!(checked.dedupe_key, "d-1");
            assert_eq!(checked.event_type.as_deref(), Some("push"));
        }
    }

    #[test]
    fn stripe_dedupes_on_the_event_id() {
        let body =
            br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"invoice.paid"}"#;
        let secret = "whsec_stripe_raw_bytes_secret";
        let source = parsed("stripe", json!({ "secret": secret }));
        let headers = signed(Scheme::Stripe, secret, "unused", NOW, body, &[]);
        let checked = check(&source, &headers, body, NOW).unwrap();
        assert_eq!(checked.dedupe_key, "evt_1NG8Du2eZvKYlo2CUI79vXWy");
        assert_eq!(checked.event_type.as_deref(), Some("invoice.paid"));
    }

    #[test]
    fn shopify_dedupes_on_the_webhook_id_and_reads_the_topic() {
        let body = br#"{"id":820982911946154508}"#;
        let source = parsed("shopify", json!({ "secret": "shpss_client_secret" }));
        let headers = signed(
            Scheme::Shopify,
            "shpss_client_secret",
            "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            NOW,
            body,
            &[("x-shopify-topic", "orders/create")],
        );
        let checked = check(&source, &headers, body, NOW).unwrap();
        assert_eq!(checked.dedupe_key, "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043");
        assert_eq!(checked.event_type.as_deref(), Some("orders/create"));
    }

    #[test]
    fn slack_events_dedupe_on_event_id_and_commands_on_the_body() {
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let source = parsed("slack", json!({ "secret": secret }));

        let event =
            br#"{"type":"event_callback","event_id":"Ev0PV52K21","event":{"type":"app_mention"}}"#;
        let headers = signed(Scheme::Slack, secret, "unused", NOW, event, &[]);
        let checked = check(&source, &headers, event, NOW).unwrap();
        assert_eq!(checked.dedupe_key, "Ev0PV52K21");
        assert_eq!(checked.event_type.as_deref(), Some("app_mention"));
        assert_eq!(checked.challenge, None);

        let command = b"token=x&team_id=T1&command=%2Fweather&text=94070";
        let headers = signed(Scheme::Slack, secret, "unused", NOW, command, &[]);
        let checked = check(&source, &headers, command, NOW).unwrap();
        assert_eq!(checked.dedupe_key, body_hash(command));
        assert!(checked.dedupe_key.starts_with("sha256:"));
        assert_eq!(checked.event_type, None);
    }

    #[test]
    fn slack_url_verification_yields_the_challenge_once_verified() {
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let source = parsed("slack", json!({ "secret": secret }));
        let body = br#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        let headers = signed(Scheme::Slack, secret, "unused", NOW, body, &[]);
        let checked = check(&source, &headers, body, NOW).unwrap();
        assert_eq!(
            checked.challenge.as_deref(),
            Some("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
        );
        assert_eq!(checked.event_type.as_deref(), Some("url_verification"));

        let forged = signed(Scheme::Slack, &other_secret(), "unused", NOW, body, &[]);
        assert_eq!(
            refused(check(&source, &forged, body, NOW)),
            "no_signature_matched"
        );
    }

    #[test]
    fn hugging_face_hashes_the_body_and_names_scope_and_action() {
        let body = br#"{"event":{"action":"update","scope":"repo.content"},"repo":{"type":"model","name":"a/b"}}"#;
        let source = parsed("hugging-face", json!({ "secret": "my-hf-secret" }));
        let headers = owned(&[("x-webhook-secret", "my-hf-secret")]);
        let checked = check(&source, &headers, body, NOW).unwrap();
        assert_eq!(checked.dedupe_key, body_hash(body));
        assert_eq!(checked.event_type.as_deref(), Some("repo.content.update"));

        let headers = owned(&[("x-webhook-secret", "my-hf-secreT")]);
        assert_eq!(
            refused(check(&source, &headers, body, NOW)),
            "no_signature_matched"
        );
    }

    #[test]
    fn generic_accepts_anything_and_hashes_the_body() {
        for config in [
            None,
            Some(json!({})),
            Some(json!({ "dedupeWindowSeconds": 60 })),
        ] {
            let source = SourceType::parse("generic-webhook", config.as_ref()).unwrap();
            assert!(!source.verifies());
            assert_eq!(source.scheme(), None);
            let checked = check(&source, &[], b"\x00\xffnot json", NOW).unwrap();
            assert_eq!(
                checked.dedupe_key,
                format!(
                    "sha256:{}",
                    hex::encode(Sha256::digest(b"\x00\xffnot json"))
                )
            );
            assert_eq!(checked.event_type, None);
            let json_body = br#"{"type":"order.created"}"#;
            let checked = check(&source, &[], json_body, NOW).unwrap();
            assert_eq!(checked.event_type.as_deref(), Some("order.created"));
        }
    }

    #[test]
    fn hmac_sha256_hex_with_prefix_known_answer() {
        let source = parsed(
            "hmac",
            json!({ "secret": KAT_SECRET, "header": "X-Signature", "prefix": "sha256=" }),
        );
        let tag = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let headers = owned(&[("x-signature", &format!("sha256={tag}"))]);
        let checked = check(&source, &headers, KAT_BODY, NOW).unwrap();
        assert_eq!(checked.dedupe_key, body_hash(KAT_BODY));
        // Hex is case-insensitive, and so is the prefix.
        let upper = owned(&[("x-signature", &format!("SHA256={}", tag.to_uppercase()))]);
        check(&source, &upper, KAT_BODY, NOW).unwrap();

        let unprefixed = owned(&[("x-signature", tag)]);
        assert_eq!(
            refused(check(&source, &unprefixed, KAT_BODY, NOW)),
            "malformed_header"
        );
        assert_eq!(
            refused(check(&source, &headers, b"Hello, World?", NOW)),
            "no_signature_matched"
        );
        assert_eq!(
            refused(check(&source, &[], KAT_BODY, NOW)),
            "missing_header"
        );
        let short = owned(&[("x-signature", "sha256=757107ea")]);
        assert_eq!(
            refused(check(&source, &short, KAT_BODY, NOW)),
            "malformed_header"
        );
    }

    #[test]
    fn hmac_sha1_and_sha512_known_answers() {
        let sha1 = parsed(
            "hmac",
            json!({ "secret": KAT_SECRET, "header": "x-sig", "algorithm": "sha1" }),
        );
        let headers = owned(&[("x-sig", "01dc10d0c83e72ed246219cdd91669667fe2ca59")]);
        check(&sha1, &headers, KAT_BODY, NOW).unwrap();

        let sha512 = parsed(
            "hmac",
            json!({ "secret": KAT_SECRET, "header": "x-sig", "algorithm": "sha512", "encoding": "base64" }),
        );
        let headers = owned(&[(
            "x-sig",
            "Ee01WmF+mBNOhCASp5RMz1nBAlbLGCNXvX46QgE/8Hw3b4wUz1zBkj2iC1HWQlay+4678QCqZ6YTJvYf6oERvA==",
        )]);
        check(&sha512, &headers, KAT_BODY, NOW).unwrap();
        // A sha256-sized tag is malformed for sha512.
        let headers = owned(&[("x-sig", "dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPhc=")]);
        assert_eq!(
            refused(check(&sha512, &headers, KAT_BODY, NOW)),
            "malformed_header"
        );
    }

    #[test]
    fn hmac_base64_sha256_with_rotation() {
        let source = parsed(
            "hmac",
            json!({ "secrets": ["old-secret", KAT_SECRET], "header": "x-sig", "encoding": "base64" }),
        );
        let headers = owned(&[("x-sig", "dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPhc=")]);
        check(&source, &headers, KAT_BODY, NOW).unwrap();
        // Unpadded base64 is accepted too.
        let headers = owned(&[("x-sig", "dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPhc")]);
        check(&source, &headers, KAT_BODY, NOW).unwrap();
        let headers = owned(&[(
            "x-sig",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        assert_eq!(
            refused(check(&source, &headers, KAT_BODY, NOW)),
            "malformed_header"
        );
    }

    #[test]
    fn basic_auth_right_and_wrong() {
        let source = parsed(
            "basic-auth",
            json!({ "username": "aladdin", "passwords": ["opensesame", "newpassword"] }),
        );
        let encoded = STANDARD.encode("aladdin:opensesame");
        assert_eq!(encoded, "YWxhZGRpbjpvcGVuc2VzYW1l");
        for value in [
            format!("Basic {encoded}"),
            format!("basic  {encoded} "),
            format!("Basic {}", STANDARD.encode("aladdin:newpassword")),
        ] {
            let headers = owned(&[("authorization", &value)]);
            check(&source, &headers, b"{}", NOW).unwrap_or_else(|e| panic!("{value}: {e}"));
        }
        for (value, code) in [
            (
                format!("Basic {}", STANDARD.encode("aladdin:wrong")),
                "invalid_credentials",
            ),
            (
                format!("Basic {}", STANDARD.encode("jafar:opensesame")),
                "invalid_credentials",
            ),
            (format!("Bearer {encoded}"), "malformed_header"),
            ("Basic !!!".to_owned(), "malformed_header"),
        ] {
            let headers = owned(&[("authorization", &value)]);
            assert_eq!(
                refused(check(&source, &headers, b"{}", NOW)),
                code,
                "{value}"
            );
        }
        assert_eq!(refused(check(&source, &[], b"{}", NOW)), "missing_header");
    }

    #[test]
    fn bearer_right_and_wrong() {
        let source = parsed("bearer", json!({ "token": "tok_live_123" }));
        let headers = owned(&[("authorization", "Bearer tok_live_123")]);
        let checked = check(&source, &headers, br#"{"type":"x.y"}"#, NOW).unwrap();
        assert_eq!(checked.event_type.as_deref(), Some("x.y"));
        for (value, code) in [
            ("Bearer tok_live_124", "invalid_credentials"),
            ("Bearer tok_live_1234", "invalid_credentials"),
            ("Basic tok_live_123", "malformed_header"),
            ("tok_live_123", "malformed_header"),
        ] {
            let headers = owned(&[("authorization", value)]);
            assert_eq!(
                refused(check(&source, &headers, b"{}", NOW)),
                code,
                "{value}"
            );
        }
        let rotated = parsed("bearer", json!({ "tokens": ["a-token", "b-token"] }));
        for token in ["a-token", "b-token"] {
            let headers = owned(&[("authorization", &format!("Bearer {token}"))]);
            check(&rotated, &headers, b"", NOW).unwrap();
        }
    }

    #[test]
    fn body_over_the_limit_is_refused() {
        let source = parsed("generic-webhook", json!({ "maxBodyBytes": 4 }));
        assert_eq!(source.options().max_body_bytes, Some(4));
        check(&source, &[], b"1234", NOW).unwrap();
        assert_eq!(
            refused(check(&source, &[], b"12345", NOW)),
            "payload_too_large"
        );
    }

    #[test]
    fn overlong_ids_fall_back_to_the_body_hash() {
        let source = SourceType::parse("github", None).unwrap();
        let long = "d".repeat(MAX_VALUE_LEN + 1);
        let headers = owned(&[("x-github-delivery", &long)]);
        assert_eq!(
            check(&source, &headers, b"x", NOW).unwrap().dedupe_key,
            body_hash(b"x")
        );
    }

    #[test]
    fn options_are_parsed_and_shown_in_camel_case() {
        let source = parsed(
            "stripe",
            json!({
                "secret": "whsec_abc",
                "toleranceSeconds": 600,
                "maxBodyBytes": 1024,
                "dedupeWindowSeconds": 3600,
                "forwardHeaders": ["X-Request-Id", "stripe-signature", "x-request-id"],
                "forwardToApp": "app_billing",
            }),
        );
        assert_eq!(
            source.options(),
            &IngestOptions {
                tolerance: Tolerance::Within(Duration::from_secs(600)),
                max_body_bytes: Some(1024),
                dedupe_window: Duration::from_secs(3600),
                forward_headers: vec!["x-request-id".into(), "stripe-signature".into()],
                forward_to_app: Some("app_billing".into()),
            }
        );
        assert_eq!(
            source.config_out(),
            json!({
                "toleranceSeconds": 600,
                "maxBodyBytes": 1024,
                "dedupeWindowSeconds": 3600,
                "forwardHeaders": ["x-request-id", "stripe-signature"],
                "forwardToApp": "app_billing",
            })
        );
        let defaults = SourceType::parse("generic-webhook", None).unwrap();
        assert_eq!(defaults.options(), &IngestOptions::default());
        assert_eq!(
            defaults.options().dedupe_window,
            Duration::from_secs(259_200)
        );
        assert_eq!(defaults.config_out(), json!({}));
        assert_eq!(defaults.name(), "generic-webhook");
    }

    #[test]
    fn config_out_and_debug_never_show_a_secret() {
        let secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0";
        let password = "correct-horse-battery-staple";
        let mut configs = vec![
            (
                "hmac",
                json!({ "secret": password, "header": "x-sig", "prefix": "v1=" }),
            ),
            (
                "basic-auth",
                json!({ "username": "hook", "password": password }),
            ),
            ("bearer", json!({ "tokens": [password] })),
        ];
        for (name, _, _) in SIGNED_TYPES {
            configs.push((
                name,
                json!({ "secrets": [secret, SECRET], "forwardToApp": "app_1" }),
            ));
        }
        for (type_name, config) in configs {
            let source = parsed(type_name, config);
            assert_eq!(source.name(), type_name);
            let shown = source.config_out().to_string();
            let debug = format!("{source:?}");
            for text in [&shown, &debug] {
                assert!(!text.contains(secret), "{type_name}: {text}");
                assert!(!text.contains(password), "{type_name}: {text}");
                assert!(!text.contains(SECRET), "{type_name}: {text}");
                assert!(!text.contains("c2VjcmV0"), "{type_name}: {text}");
            }
        }
        let hmac = parsed(
            "hmac",
            json!({ "secret": password, "header": "X-Sig", "prefix": "v1=" }),
        );
        assert_eq!(
            hmac.config_out(),
            json!({ "header": "x-sig", "algorithm": "sha256", "encoding": "hex", "prefix": "v1=" })
        );
        let basic = parsed(
            "basic-auth",
            json!({ "username": "hook", "password": password }),
        );
        assert_eq!(basic.config_out(), json!({ "username": "hook" }));
        assert_eq!(
            parsed("svix", json!({ "secret": SECRET })).config_out(),
            json!({})
        );
    }

    #[test]
    fn unsupported_types_are_refused_with_the_list() {
        for type_name in ["cron", "docusign", "adobe-sign", "no-such-type", "GitHub"] {
            let error = SourceType::parse(type_name, Some(&json!({}))).unwrap_err();
            assert_eq!(error.loc, loc(&["body", "type"]), "{type_name}");
            assert!(
                error
                    .message
                    .contains(&format!("`{type_name}` is not supported"))
            );
            assert!(
                error.message.contains("generic-webhook, svix, open-ai"),
                "{}",
                error.message
            );
            assert!(
                error
                    .message
                    .contains("hugging-face, hmac, basic-auth, bearer")
            );
        }
        assert_eq!(SourceType::supported().count(), PROVIDERS.len());
    }

    #[test]
    fn config_errors_name_the_field() {
        // [type, config (null: absent), location under `body`, part of the message]
        let cases = json!([
            ["svix", null, "config", "field required"],
            ["svix", [], "config", "must be an object"],
            ["svix", {}, "config.secret", "field required"],
            ["stripe", { "secret": null }, "config.secret", "field required"],
            ["svix", { "secret": 42 }, "config.secret", "must be a string"],
            ["svix", { "secret": "whsec_!!!!" }, "config.secret", "not valid base64"],
            ["svix", { "secret": "  " }, "config.secret", "secret is empty"],
            ["replicate", { "secrets": [SECRET, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] }, "config.secrets.1", "starts with `whsec_`"],
            ["open-ai", { "secrets": [SECRET, 7] }, "config.secrets.1", "must be a string"],
            ["open-ai", { "secrets": [] }, "config.secrets", "at least one"],
            ["open-ai", { "secrets": "x" }, "config.secrets", "array of strings"],
            ["open-ai", { "secret": SECRET, "secrets": [SECRET] }, "config.secrets", "not both"],
            ["open-ai", { "secret": SECRET, "tolerance": 5 }, "config.tolerance", "unknown field `tolerance`"],
            ["generic-webhook", { "secret": "x" }, "config.secret", "unknown field"],
            ["github", { "toleranceSeconds": 60 }, "config.toleranceSeconds", "no signed timestamp"],
            ["svix", { "secret": SECRET, "toleranceSeconds": -1 }, "config.toleranceSeconds", "integer from 0"],
            ["svix", { "secret": SECRET, "toleranceSeconds": "60" }, "config.toleranceSeconds", "integer from 0"],
            ["generic-webhook", { "maxBodyBytes": 0 }, "config.maxBodyBytes", "integer from 1 to 16777216"],
            ["generic-webhook", { "maxBodyBytes": 16_777_217 }, "config.maxBodyBytes", "integer from 1"],
            ["generic-webhook", { "dedupeWindowSeconds": 2_592_001 }, "config.dedupeWindowSeconds", "to 2592000"],
            ["generic-webhook", { "forwardHeaders": ["x-ok", "Content-Length"] }, "config.forwardHeaders.1", "framing"],
            ["generic-webhook", { "forwardHeaders": ["host"] }, "config.forwardHeaders.0", "framing"],
            ["generic-webhook", { "forwardHeaders": ["webhook-id"] }, "config.forwardHeaders.0", "webhook-*"],
            ["generic-webhook", { "forwardHeaders": ["bad header"] }, "config.forwardHeaders.0", "valid header name"],
            ["generic-webhook", { "forwardHeaders": ["x-ok", "Authorization"] }, "config.forwardHeaders.1", "credential"],
            ["bearer", { "token": "sealed:v1:0000:x" }, "config.token", "must not start with `sealed:`"],
            ["hmac", { "header": "x-sig", "secrets": ["ok", "sealed:x"] }, "config.secrets.1", "sealed"],
            ["generic-webhook", { "forwardToApp": "" }, "config.forwardToApp", "application id or uid"],
            ["hmac", { "secret": "s" }, "config.header", "field required"],
            ["hmac", { "header": "x-sig" }, "config.secret", "field required"],
            ["hmac", { "secret": "s", "header": "x sig" }, "config.header", "valid header name"],
            ["hmac", { "secret": "s", "header": "x-sig", "algorithm": "md5" }, "config.algorithm", "sha256, sha1, sha512"],
            ["hmac", { "secret": "s", "header": "x-sig", "encoding": "base32" }, "config.encoding", "hex, base64"],
            ["hmac", { "secrets": ["s", ""], "header": "x-sig" }, "config.secrets.1", "secret is empty"],
            ["basic-auth", { "password": "p" }, "config.username", "field required"],
            ["basic-auth", { "username": "a:b", "password": "p" }, "config.username", "`:`"],
            ["basic-auth", { "username": "u" }, "config.password", "field required"],
            ["bearer", {}, "config.token", "field required"],
            ["bearer", { "tokens": ["a b"] }, "config.tokens.0", "whitespace"],
            ["google-pubsub", null, "config", "field required"],
            ["google-pubsub", { "serviceAccountEmail": "p@x.iam.gserviceaccount.com" }, "config.audience", "field required"],
            ["google-pubsub", { "audience": "https://h/in/t" }, "config.serviceAccountEmail", "field required"],
            ["google-pubsub", { "audience": "  ", "serviceAccountEmail": "p@x" }, "config.audience", "audience of the push subscription"],
            ["google-pubsub", { "audience": 7, "serviceAccountEmail": "p@x" }, "config.audience", "must be a string"],
            ["google-pubsub", { "audience": "a", "serviceAccountEmail": "not an email" }, "config.serviceAccountEmail", "email of the service account"],
            ["google-pubsub", { "audience": "a", "serviceAccountEmail": "@x" }, "config.serviceAccountEmail", "email of the service account"],
            ["google-pubsub", { "audience": "a", "serviceAccountEmail": "p@x", "secret": "s" }, "config.secret", "accepts audience, serviceAccountEmail, toleranceSeconds"],
            ["cron", { "schedule": "* * * * *", "payload": "{}" }, "type", "not supported"],
        ]);
        for case in cases.as_array().unwrap() {
            let type_name = case[0].as_str().unwrap();
            let at = case[2].as_str().unwrap();
            let message = case[3].as_str().unwrap();
            let error = SourceType::parse(type_name, Some(&case[1])).unwrap_err();
            let expected: Vec<String> = std::iter::once("body")
                .chain(at.split('.'))
                .map(str::to_owned)
                .collect();
            assert_eq!(error.loc, expected, "{case}: {error}");
            assert!(
                error.message.contains(message),
                "{case}: {:?} lacks {message:?}",
                error.message
            );
        }
        let error = parse_error("svix", json!({ "secret": SECRET, "nope": 1 }));
        assert!(
            error.message.contains("secret, secrets, toleranceSeconds"),
            "{}",
            error.message
        );
    }

    #[test]
    fn null_options_count_as_absent() {
        let source = parsed(
            "svix",
            json!({ "secret": SECRET, "forwardToApp": null, "toleranceSeconds": null }),
        );
        assert_eq!(source.options(), &IngestOptions::default());
        assert_eq!(source.config_out(), json!({}));
    }

    mod google_pubsub {
        use serde_json::json;

        use super::*;
        use crate::fixtures::{self, AUDIENCE, EMAIL, KID, authorization, claims, envelope};

        fn source() -> SourceType {
            parsed("google-pubsub", fixtures::config())
        }

        fn check_push(
            source: &SourceType,
            headers: &[(String, String)],
            body: &[u8],
            now: i64,
        ) -> Result<Checked, Refusal> {
            let keys = fixtures::jwks();
            source.check(
                &Incoming {
                    method: "POST",
                    headers,
                    body,
                },
                Some(&keys),
                now,
            )
        }

        fn refusal(result: Result<Checked, Refusal>) -> Refusal {
            result.expect_err("the push should be refused")
        }

        #[test]
        fn a_genuine_push_is_unwrapped_and_deduplicated_on_its_message_id() {
            let source = source();
            assert!(source.verifies() && source.needs_keys());
            assert_eq!(source.scheme(), None);
            assert_eq!(
                source.config_out(),
                json!({ "audience": AUDIENCE, "serviceAccountEmail": EMAIL })
            );
            let data = br#"{"type":"batch.succeeded","name":"batches/123"}"#;
            let body = envelope("2070443601311540", data, json!({ "key": "value" }));
            let headers = vec![authorization(&claims(NOW))];
            let checked = check_push(&source, &headers, &body, NOW + 5).unwrap();
            assert_eq!(
                checked,
                Checked {
                    dedupe_key: "2070443601311540".into(),
                    event_type: Some("batch.succeeded".into()),
                    challenge: None,
                    payload: Some(data.to_vec()),
                }
            );

            // A redelivery: another attempt count, another token, the same message.
            let mut redelivered: Value = serde_json::from_slice(&body).unwrap();
            redelivered["deliveryAttempt"] = json!(2);
            let redelivered = redelivered.to_string().into_bytes();
            let headers = vec![authorization(&claims(NOW + 30))];
            let again = check_push(&source, &headers, &redelivered, NOW + 40).unwrap();
            assert_ne!(redelivered, body);
            assert_eq!(again.dedupe_key, checked.dedupe_key);

            // Only the snake_case id.
            let body = br#"{"message":{"message_id":"77","data":"aGk="}}"#;
            let checked = check_push(&source, &headers, body, NOW + 40).unwrap();
            assert_eq!(checked.dedupe_key, "77");
            assert_eq!(checked.payload.as_deref(), Some(&b"hi"[..]));
            assert_eq!(checked.event_type, None);
        }

        #[test]
        fn the_event_type_is_an_attribute_else_the_messages_type() {
            let source = source();
            let headers = vec![authorization(&claims(NOW))];
            let data = br#"{"type":"from.data"}"#;
            for (attributes, expected) in [
                (
                    json!({ "type": "from.type", "eventType": "x", "ce-type": "y" }),
                    Some("from.type"),
                ),
                (
                    json!({ "eventType": "OBJECT_FINALIZE" }),
                    Some("OBJECT_FINALIZE"),
                ),
                (
                    json!({ "ce-type": "google.cloud.audit.log.v1.written" }),
                    Some("google.cloud.audit.log.v1.written"),
                ),
                (json!({ "other": "x" }), Some("from.data")),
                (json!({ "type": "" }), Some("from.data")),
            ] {
                let body = envelope("1", data, attributes.clone());
                let checked = check_push(&source, &headers, &body, NOW).unwrap();
                assert_eq!(checked.event_type.as_deref(), expected, "{attributes}");
            }
            let body = envelope("1", b"plain text, not JSON", json!({}));
            let checked = check_push(&source, &headers, &body, NOW).unwrap();
            assert_eq!(checked.event_type, None);
        }

        #[test]
        fn tokens_that_do_not_verify_are_refused_with_the_reason() {
            let source = source();
            let body = envelope("1", b"{}", json!({}));
            let genuine = claims(NOW);
            let with = |change: fn(&mut Value)| {
                let mut claims = genuine.clone();
                change(&mut claims);
                vec![authorization(&claims)]
            };
            let expired = check_push(&source, &[authorization(&genuine)], &body, NOW + 4012);
            let expired = refusal(expired);
            assert_eq!(expired.code, Code::TimestampTooOld);
            assert_eq!(expired.reason, "the token expired 412 s ago (leeway 60 s)");

            let wrong_audience = with(|c| c["aud"] = json!("https://elsewhere.example/push"));
            let refused = refusal(check_push(&source, &wrong_audience, &body, NOW));
            assert_eq!(refused.code, Code::InvalidCredentials);
            assert_eq!(
                refused.reason,
                format!(
                    "the token's audience is \"https://elsewhere.example/push\", this source expects \"{AUDIENCE}\""
                )
            );
            let wrong_issuer = with(|c| c["iss"] = json!("https://evil.example"));
            let refused = refusal(check_push(&source, &wrong_issuer, &body, NOW));
            assert_eq!(refused.code, Code::InvalidCredentials);
            assert!(refused.reason.contains("issuer"), "{}", refused.reason);
            let wrong_email = with(|c| c["email"] = json!("intruder@x.iam.gserviceaccount.com"));
            let refused = refusal(check_push(&source, &wrong_email, &body, NOW));
            assert!(
                refused.reason.contains("this source expects"),
                "{}",
                refused.reason
            );
            let unverified = with(|c| c["email_verified"] = json!(false));
            let refused = refusal(check_push(&source, &unverified, &body, NOW));
            assert!(
                refused.reason.contains("not verified"),
                "{}",
                refused.reason
            );

            let forged = vec![(
                "authorization".to_owned(),
                format!("Bearer {}", fixtures::other_key().sign(KID, &genuine)),
            )];
            let refused = refusal(check_push(&source, &forged, &body, NOW));
            assert_eq!(refused.code, Code::NoSignatureMatched);
            assert_eq!(
                refused.reason,
                format!("the token's signature does not match the key \"{KID}\"")
            );
            let unknown = vec![(
                "authorization".to_owned(),
                format!("Bearer {}", fixtures::key().sign("rotated-in", &genuine)),
            )];
            let refused = refusal(check_push(&source, &unknown, &body, NOW));
            assert_eq!(refused.code, Code::NoSignatureMatched);
            assert!(
                refused
                    .reason
                    .starts_with("no key with kid \"rotated-in\" in the JWKS"),
                "{}",
                refused.reason
            );
            assert_eq!(
                refusal(check_push(&source, &[], &body, NOW)).code,
                Code::MissingHeader
            );

            // Without the key set (the server could not fetch it): retryable.
            let refused = refusal(source.check(
                &Incoming {
                    method: "POST",
                    headers: &[authorization(&genuine)],
                    body: &body,
                },
                None,
                NOW,
            ));
            assert_eq!(refused.code, Code::Unavailable);
            assert!(
                refused
                    .reason
                    .contains("Pub/Sub delivers the message again")
            );
        }

        #[test]
        fn the_tolerance_is_the_tokens_leeway_and_never_lets_an_expired_one_pass() {
            let body = envelope("1", b"{}", json!({}));
            let headers = vec![authorization(&claims(NOW))];
            let mut config = fixtures::config();
            config["toleranceSeconds"] = json!(600);
            let lenient = parsed("google-pubsub", config.clone());
            check_push(&lenient, &headers, &body, NOW + 3600 + 600).unwrap();
            let refused = refusal(check_push(&lenient, &headers, &body, NOW + 3600 + 601));
            assert_eq!(refused.reason, "the token expired 601 s ago (leeway 600 s)");
            assert_eq!(lenient.config_out()["toleranceSeconds"], 600);

            config["toleranceSeconds"] = json!(0);
            let strict = parsed("google-pubsub", config);
            check_push(&strict, &headers, &body, NOW + 3600).unwrap();
            let refused = refusal(check_push(&strict, &headers, &body, NOW + 3601));
            assert_eq!(refused.code, Code::TimestampTooOld);
            let refused = refusal(check_push(&strict, &headers, &body, NOW - 1));
            assert_eq!(refused.code, Code::TimestampTooNew);
        }

        #[test]
        fn a_verified_push_that_is_not_an_envelope_is_refused_as_malformed() {
            let source = source();
            let headers = vec![authorization(&claims(NOW))];
            for (body, reason) in [
                (
                    &b"not json"[..],
                    "is not a Pub/Sub push envelope: it is not JSON",
                ),
                (br#"{"data":"aGk="}"#, "no `message` object"),
                (br#"{"message":{"data":"aGk="}}"#, "no messageId"),
                (
                    br#"{"message":{"messageId":"1","data":"***"}}"#,
                    "not valid base64",
                ),
            ] {
                let refused = refusal(check_push(&source, &headers, body, NOW));
                assert_eq!(refused.code, Code::MalformedEnvelope);
                assert!(refused.reason.contains(reason), "{}", refused.reason);
            }
            // The token is checked first: a forged push learns nothing of the envelope.
            let refused = refusal(check_push(&source, &[], b"not json", NOW));
            assert_eq!(refused.code, Code::MissingHeader);
        }
    }

    /// Property tests: no request, however hostile, and no config, however wrong, makes
    /// the receiving side panic; what it refuses it refuses with a receiving code, and
    /// what it cannot parse it locates under `body`.
    mod props {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;
        use hookline_core::Code;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use serde_json::json;

        use super::super::*;
        use crate::pipeline::{Verdict, receive};

        const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        const NOW: i64 = 1_700_000_000;

        /// The codes a receiving verdict may refuse with: the signature codes of
        /// `hookline-signature`, and the pipeline's own.
        const REFUSALS: [Code; 12] = [
            Code::MissingHeader,
            Code::MalformedHeader,
            Code::MalformedSecret,
            Code::InvalidTimestamp,
            Code::TimestampTooOld,
            Code::TimestampTooNew,
            Code::NoSignatureMatched,
            Code::InvalidCredentials,
            Code::PayloadTooLarge,
            Code::BodyNotUtf8,
            Code::BodyHasNul,
            Code::MalformedEnvelope,
        ];

        /// Header names the providers' rules read, and a few they do not.
        const HEADER_NAMES: [&str; 24] = [
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "svix-id",
            "svix-timestamp",
            "svix-signature",
            "x-hub-signature-256",
            "x-hub-signature",
            "x-github-delivery",
            "x-github-event",
            "stripe-signature",
            "x-slack-signature",
            "x-slack-request-timestamp",
            "x-shopify-hmac-sha256",
            "x-shopify-webhook-id",
            "x-shopify-topic",
            "x-webhook-secret",
            "authorization",
            "x-sig",
            "content-type",
            "x-request-id",
            "",
            "WEBHOOK-SIGNATURE",
            "x-\u{fffd}",
        ];

        /// A valid config of every type, with options that vary.
        fn config_of(provider: &Provider, max_body: Option<u64>, forward: bool) -> Value {
            let mut config = match provider.kind {
                Kind::Generic => json!({}),
                Kind::Signed(_) => json!({ "secret": SECRET }),
                Kind::Hmac => json!({ "secret": "s3cret", "header": "x-sig", "prefix": "sha256=" }),
                Kind::BasicAuth => json!({ "username": "hook", "password": "pass" }),
                Kind::Bearer => json!({ "token": "tok_123" }),
                Kind::GoogleOidc => crate::fixtures::config(),
            };
            if let Some(bytes) = max_body {
                config["maxBodyBytes"] = bytes.into();
            }
            if forward {
                config["forwardHeaders"] = json!(["x-request-id", "x-github-event"]);
                config["forwardToApp"] = json!("app_1");
            }
            config
        }

        /// The headers a genuine request of `source` carries for `body`.
        fn genuine(
            source: &SourceType,
            id: &str,
            timestamp: i64,
            body: &[u8],
        ) -> Vec<(String, String)> {
            let owned = |name: &str, value: String| vec![(name.to_owned(), value)];
            match &source.verifier {
                Verifier::None => Vec::new(),
                Verifier::Signature(keyset) => keyset
                    .sign(&hookline_signature::Message {
                        id,
                        timestamp,
                        body,
                    })
                    .map(|headers| {
                        headers
                            .into_iter()
                            .map(|(name, value)| (name.to_owned(), value))
                            .collect()
                    })
                    .unwrap_or_default(),
                Verifier::Hmac(rule) => owned(rule.header(), rule.sign(body)),
                Verifier::Credentials(credentials) => match credentials.username() {
                    Some(_) => {
                        let encoded = STANDARD.encode("hook:pass");
                        owned("authorization", format!("Basic {encoded}"))
                    }
                    None => owned("authorization", "Bearer tok_123".to_owned()),
                },
                Verifier::Oidc(_) => {
                    let claims = crate::fixtures::claims(timestamp);
                    vec![crate::fixtures::authorization(&claims)]
                }
            }
        }

        /// JSON values with the members the providers' rules read.
        fn json_value() -> impl Strategy<Value = Value> {
            let key = prop_oneof![
                Just("type".to_owned()),
                Just("id".to_owned()),
                Just("event_id".to_owned()),
                Just("event".to_owned()),
                Just("scope".to_owned()),
                Just("action".to_owned()),
                Just("status".to_owned()),
                Just("challenge".to_owned()),
                ".{0,8}",
            ];
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(
                    |f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                ),
                Just(Value::from("url_verification")),
                ".{0,300}".prop_map(Value::from),
            ];
            leaf.prop_recursive(6, 64, 8, move |inner| {
                prop_oneof![
                    vec(inner.clone(), 0..8).prop_map(Value::Array),
                    proptest::collection::btree_map(key.clone(), inner, 0..8)
                        .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            })
        }

        /// Pub/Sub push envelopes of any data, with attributes right and wrong.
        fn push() -> impl Strategy<Value = Vec<u8>> {
            let attributes = prop_oneof![
                Just(json!({})),
                Just(json!({ "type": "batch.succeeded" })),
                json_value(),
            ];
            (vec(any::<u8>(), 0..64), "[0-9]{1,20}", attributes).prop_map(
                |(data, id, attributes)| crate::fixtures::envelope(&id, &data, attributes),
            )
        }

        /// Bodies: JSON of the providers' shapes, raw bytes, deep nesting, huge ones,
        /// with NUL bytes or bytes that are not UTF-8 put in.
        fn body() -> impl Strategy<Value = Vec<u8>> {
            let base = prop_oneof![
                4 => json_value().prop_map(|value| value.to_string().into_bytes()),
                2 => push(),
                3 => vec(any::<u8>(), 0..512),
                1 => (1usize..20_000, any::<bool>()).prop_map(|(depth, closed)| {
                    let mut body = "[".repeat(depth);
                    if closed {
                        body.push_str(&"]".repeat(depth));
                    }
                    body.into_bytes()
                }),
                1 => (1usize..20_000).prop_map(|depth| {
                    let mut body = "{\"event\":".repeat(depth);
                    body.push_str("{\"type\":\"x\"}");
                    body.push_str(&"}".repeat(depth));
                    body.into_bytes()
                }),
                1 => (0usize..2_000_000, any::<u8>()).prop_map(|(len, byte)| vec![byte; len]),
            ];
            (base, any::<Option<(prop::sample::Index, u8)>>()).prop_map(|(mut body, poke)| {
                if let Some((at, byte)) = poke
                    && !body.is_empty()
                {
                    // A NUL, a stray continuation byte, or anything else.
                    let at = at.index(body.len());
                    body[at] = [0, 0x80, 0xff, byte][usize::from(byte % 4)];
                }
                body
            })
        }

        /// Header values: anything, and the shapes signature headers take.
        fn header_value() -> impl Strategy<Value = String> {
            prop_oneof![
                ".{0,64}",
                any::<i64>().prop_map(|n| n.to_string()),
                "v1,[A-Za-z0-9+/=]{0,64}( v1a?,[A-Za-z0-9+/=]{0,90}){0,3}",
                "t=-?[0-9]{0,20},v1=[0-9a-f]{0,70}",
                "(sha256|sha1|v0)=[0-9a-f]{0,70}",
                "(Basic|Bearer|basic) [A-Za-z0-9+/=:]{0,40}",
                Just(String::new()),
                Just("   ".to_owned()),
            ]
        }

        fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
            let name = prop_oneof![
                3 => prop::sample::select(&HEADER_NAMES[..]).prop_map(str::to_owned),
                1 => "[a-z-]{1,12}",
            ];
            vec((name, header_value()), 0..12)
        }

        /// How a request's headers relate to its body.
        #[derive(Debug, Clone)]
        enum Headers {
            /// As the provider would sign them, at a time near or far from now.
            Genuine { id: String, timestamp: i64 },
            /// Genuine, then some replaced, removed or added.
            Mangled {
                id: String,
                timestamp: i64,
                extra: Vec<(String, String)>,
                drop: Option<prop::sample::Index>,
            },
            /// Made up.
            Arbitrary(Vec<(String, String)>),
        }

        fn header_plan() -> impl Strategy<Value = Headers> {
            let timestamp = prop_oneof![
                6 => NOW - 200..NOW + 200,
                1 => any::<i64>(),
                1 => Just(i64::MIN),
                1 => Just(i64::MAX),
            ];
            // Ids the signers take, overlong ones, and anything (which may not sign).
            let id = prop_oneof![
                4 => "[a-zA-Z0-9_-]{1,40}",
                1 => "[a-z]{250,300}",
                1 => ".{0,40}",
            ];
            prop_oneof![
                2 => (id.clone(), timestamp.clone())
                    .prop_map(|(id, timestamp)| Headers::Genuine { id, timestamp }),
                2 => (id, timestamp, headers(), any::<Option<prop::sample::Index>>()).prop_map(
                    |(id, timestamp, extra, drop)| Headers::Mangled { id, timestamp, extra, drop }
                ),
                1 => headers().prop_map(Headers::Arbitrary),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn receive_never_panics_and_refuses_with_a_receiving_code(
                provider in prop::sample::select(PROVIDERS),
                max_body in proptest::option::of(1u64..=MAX_BODY_BYTES as u64),
                forward in any::<bool>(),
                plan in header_plan(),
                body in body(),
                now in prop_oneof![4 => NOW - 100..NOW + 100, 1 => 0..=i64::from(u32::MAX)],
            ) {
                let config = config_of(&provider, max_body, forward);
                let source = SourceType::parse(provider.name, Some(&config))
                    .unwrap_or_else(|e| panic!("{}: {config}: {e}", provider.name));
                let headers = match plan {
                    Headers::Genuine { id, timestamp } => genuine(&source, &id, timestamp, &body),
                    Headers::Mangled { id, timestamp, extra, drop } => {
                        let mut headers = genuine(&source, &id, timestamp, &body);
                        if let Some(drop) = drop
                            && !headers.is_empty()
                        {
                            headers.remove(drop.index(headers.len()));
                        }
                        headers.extend(extra);
                        headers
                    }
                    Headers::Arbitrary(headers) => headers,
                };
                let request = Incoming { method: "POST", headers: &headers, body: &body };
                let keys = source.needs_keys().then(crate::fixtures::jwks);
                match receive(&source, &request, keys.as_ref(), now) {
                    Verdict::Refused(refusal) => {
                        prop_assert!(
                            REFUSALS.contains(&refusal.code),
                            "{}: refused with {}: {}", provider.name, refusal.code, refusal.reason
                        );
                        prop_assert!(!refusal.reason.is_empty());
                    }
                    Verdict::Challenge(challenge) => {
                        prop_assert!(provider.answers_challenge);
                        prop_assert!(!challenge.is_empty());
                    }
                    Verdict::Accepted(accepted) => {
                        let forwarded = match provider.envelope {
                            Some(_) => crate::pubsub::PushEnvelope::parse(&body).unwrap().data,
                            None => body.clone(),
                        };
                        prop_assert_eq!(accepted.payload.as_bytes(), &forwarded[..]);
                        prop_assert!(!accepted.payload.contains('\0'));
                        prop_assert!(!accepted.dedupe_key.is_empty());
                        prop_assert!(accepted.event_type.len() <= MAX_VALUE_LEN);
                        prop_assert!(!accepted.event_type.chars().any(char::is_control));
                        let forwarded = &source.options().forward_headers;
                        prop_assert!(
                            accepted
                                .headers
                                .keys()
                                .all(|name| name == "content-type" || forwarded.contains(name)),
                            "{:?}", accepted.headers
                        );
                        if let Some(limit) = max_body {
                            prop_assert!(body.len() as u64 <= limit);
                        }
                    }
                }
            }

            #[test]
            fn parse_never_panics_and_locates_its_errors_under_body(
                type_name in prop_oneof![
                    4 => prop::sample::select(PROVIDERS).prop_map(|p| p.name.to_owned()),
                    1 => ".{0,20}",
                ],
                config in prop_oneof![
                    1 => Just(None),
                    2 => json_value().prop_map(Some),
                    6 => config_value().prop_map(Some),
                ],
            ) {
                match SourceType::parse(&type_name, config.as_ref()) {
                    Ok(source) => {
                        prop_assert_eq!(source.name(), type_name.as_str());
                        let shown = source.config_out().to_string();
                        prop_assert!(!shown.contains(SECRET));
                    }
                    Err(error) => {
                        prop_assert!(error.loc.len() >= 2, "{:?}", error);
                        prop_assert_eq!(error.loc[0].as_str(), "body");
                        prop_assert!(
                            matches!(error.loc[1].as_str(), "config" | "type"),
                            "{:?}", error
                        );
                        prop_assert!(!error.message.is_empty());
                    }
                }
            }
        }

        /// Config objects made of the fields the types know, with values right and wrong.
        fn config_value() -> impl Strategy<Value = Value> {
            let field = prop::sample::select(vec![
                "secret",
                "secrets",
                "header",
                "algorithm",
                "encoding",
                "prefix",
                "username",
                "password",
                "passwords",
                "token",
                "tokens",
                "audience",
                "serviceAccountEmail",
                "toleranceSeconds",
                "maxBodyBytes",
                "dedupeWindowSeconds",
                "forwardHeaders",
                "forwardToApp",
                "unknown",
            ]);
            let text = prop_oneof![
                Just(SECRET.to_owned()),
                Just("whsec_".to_owned()),
                Just("whsec_!!!!".to_owned()),
                Just("whsk_AAAA".to_owned()),
                "whsec_[A-Za-z0-9+/=]{0,60}",
                "(sha1|sha256|sha512|md5|hex|base64|base32)",
                "[a-zA-Z0-9:_ .-]{0,20}",
                ".{0,40}",
            ];
            let item = prop_oneof![
                4 => text.clone().prop_map(Value::from),
                1 => any::<i64>().prop_map(Value::from),
                1 => Just(Value::Null),
            ];
            let value = prop_oneof![
                4 => text.prop_map(Value::from),
                2 => any::<u64>().prop_map(Value::from),
                2 => (0u64..3_000_000).prop_map(Value::from),
                1 => any::<i64>().prop_map(Value::from),
                1 => any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
                1 => any::<bool>().prop_map(Value::from),
                1 => Just(Value::Null),
                3 => vec(item, 0..14).prop_map(Value::Array),
                1 => Just(json!({})),
            ];
            proptest::collection::btree_map(field, value, 0..8).prop_map(|map| {
                Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            })
        }
    }
}
