//! Extractors that turn a request into typed, validated input, or into a precise error.
//!
//! - [`ValidJson`]: a JSON body, deserialized with the path of any failing field (the
//!   422 `loc`), then checked against its [`Validate`] rules. Too large a body is a 413
//!   that names the limit.
//! - [`Query`]: query parameters the way the Svix SDKs send them: unknown ones ignored,
//!   repeated keys and comma-joined values both accepted for lists, `key[]` accepted.
//! - [`Limit`] and [`Timestamp`]: the page size (default 50, at most 250) and lenient
//!   RFC 3339 times (a time without an offset is UTC).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::de::{self, DeserializeOwned, IntoDeserializer};
use serde::{Deserialize, Deserializer};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};

use crate::AppState;
use crate::error::{ApiError, FieldError};
use crate::validate::{Validate, Violations};

/// A JSON request body of type `T`, deserialized and validated.
#[derive(Debug, Clone)]
pub struct ValidJson<T>(pub T);

impl<T> FromRequest<AppState> for ValidJson<T>
where
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = body_bytes(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::Invalid(vec![FieldError {
                loc: vec!["body".into()],
                msg: "a JSON body is required".into(),
                kind: "value_error.missing",
            }]));
        }
        parse_body(&bytes).map(ValidJson)
    }
}

/// Like [`ValidJson`], but an empty body or `null` means `T::default()`: for POSTs whose
/// options are all optional (the SDKs send `{}`, other clients nothing or `null`).
#[derive(Debug, Clone)]
pub struct MaybeJson<T>(pub T);

impl<T> FromRequest<AppState> for MaybeJson<T>
where
    T: DeserializeOwned + Validate + Default,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = body_bytes(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) || bytes.trim_ascii() == b"null" {
            return Ok(MaybeJson(T::default()));
        }
        parse_body(&bytes).map(MaybeJson)
    }
}

async fn body_bytes(request: Request, state: &AppState) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection: BytesRejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: state.config.max_payload_bytes,
                }
            } else {
                ApiError::refused(hookline_core::Code::GenericError, rejection.body_text())
            }
        })
}

/// Deserializes and validates a JSON body.
pub fn parse_body<T: DeserializeOwned + Validate>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body is an object: serde would also read a struct from an array of its fields.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::invalid(&["body"], "must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = path_segments(error.path()).collect();
        json_error(path, error.into_inner())
    })?;
    deserializer
        .end()
        .map_err(|error| json_error(Vec::new(), error))?;
    if holds_nul(bytes) {
        return Err(ApiError::invalid(
            &["body"],
            "must not contain the NUL character (\\u0000) in any string",
        ));
    }
    let mut violations = Violations::body();
    value.validate(&mut violations);
    violations.finish()?;
    Ok(value)
}

/// Whether a JSON text (valid, as parsed) has a string holding NUL, written `\u0000`.
/// Such text is refused everywhere, the same on every backend: PostgreSQL cannot store
/// the character, and receivers of webhooks choke on it.
fn holds_nul(json: &[u8]) -> bool {
    let mut in_string = false;
    let mut bytes = json.iter();
    while let Some(&byte) = bytes.next() {
        match (in_string, byte) {
            (false, b'"') => in_string = true,
            (true, b'"') => in_string = false,
            (true, b'\\') => {
                let escape = bytes.next();
                if escape == Some(&b'u') && bytes.as_slice().starts_with(b"0000") {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// A body that is not JSON, or not JSON of the expected shape.
fn json_error(path: Vec<String>, error: serde_json::Error) -> ApiError {
    let kind = match error.classify() {
        serde_json::error::Category::Data => "value_error",
        _ => "value_error.jsondecode",
    };
    let mut loc = vec!["body".to_owned()];
    loc.extend(path);
    // serde names a missing field only in its message; put it in `loc` too.
    let message = error.to_string();
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field)
    {
        loc.push(field.to_owned());
    }
    ApiError::Invalid(vec![FieldError {
        loc,
        msg: message,
        kind,
    }])
}

fn path_segments(path: &serde_path_to_error::Path) -> impl Iterator<Item = String> + '_ {
    use serde_path_to_error::Segment;
    path.iter().filter_map(|segment| match segment {
        Segment::Map { key } => Some(key.clone()),
        Segment::Seq { index } => Some(format!("[{index}]")),
        Segment::Enum { variant } => Some(variant.clone()),
        Segment::Unknown => None,
    })
}

/// Middleware: refuses a path or query holding an encoded NUL (`%00`) before anything is
/// looked up, as bodies holding one are refused: no id or filter can contain it, and
/// PostgreSQL cannot even compare text with it.
pub async fn refuse_nul_in_uri(
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let uri = request.uri();
    let part = if uri.path().contains("%00") {
        Some("path")
    } else if uri.query().is_some_and(|query| query.contains("%00")) {
        Some("query")
    } else {
        None
    };
    match part {
        Some(part) => {
            ApiError::invalid(&[part], "must not contain the NUL character (%00)").into_response()
        }
        None => next.run(request).await,
    }
}

/// Query parameters of type `T`. Unknown parameters are ignored; a parameter that does
/// not parse is a 422 with `loc: ["query", name]`.
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or_default()).map(Query)
    }
}

/// Parses a query string into `T`.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let mut fields: Vec<(String, Vec<String>)> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        // `event_types[]=a` and `event_types[0]=a` are `event_types=a`.
        let key = match key.find('[') {
            Some(at) if key.ends_with(']') => key[..at].to_owned(),
            _ => key.into_owned(),
        };
        // An empty value is no value: `?limit=` takes the default, as `?before=` none.
        if value.is_empty() {
            continue;
        }
        match fields.iter_mut().find(|(name, _)| *name == key) {
            Some((_, values)) => values.push(value.into_owned()),
            None => fields.push((key, vec![value.into_owned()])),
        }
    }
    serde_path_to_error::deserialize(QueryDeserializer(fields)).map_err(|error| {
        let mut loc = vec!["query".to_owned()];
        loc.extend(path_segments(error.path()));
        ApiError::Invalid(vec![FieldError::value(loc, error.into_inner().to_string())])
    })
}

type QueryError = de::value::Error;

/// The whole query: a map from parameter names to their values.
struct QueryDeserializer(Vec<(String, Vec<String>)>);

impl<'de> Deserializer<'de> for QueryDeserializer {
    type Error = QueryError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_map(de::value::MapDeserializer::new(
            self.0
                .into_iter()
                .map(|(key, values)| (key, Values(values))),
        ))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// The values given for one parameter. A scalar takes the last; a list takes them all,
/// each split on commas.
struct Values(Vec<String>);

impl Values {
    fn last(&self) -> &str {
        self.0.last().map(String::as_str).unwrap_or_default()
    }

    fn parse<T: std::str::FromStr>(&self, what: &str) -> Result<T, QueryError> {
        self.last()
            .trim()
            .parse()
            .map_err(|_| de::Error::custom(format!("`{}` is not {what}", self.last())))
    }
}

impl<'de> IntoDeserializer<'de, QueryError> for Values {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

macro_rules! parse_number {
    ($($method:ident => $visit:ident: $ty:ty, $what:literal;)*) => {$(
        fn $method<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
            visitor.$visit(self.parse::<$ty>($what)?)
        }
    )*};
}

impl<'de> Deserializer<'de> for Values {
    type Error = QueryError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_string(self.last().to_owned())
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        if self.last().is_empty() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_bool<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        match self.last() {
            "true" | "1" => visitor.visit_bool(true),
            "false" | "0" => visitor.visit_bool(false),
            other => Err(de::Error::custom(format!(
                "`{other}` is not a boolean (true or false)"
            ))),
        }
    }

    parse_number! {
        deserialize_i8 => visit_i8: i8, "an integer";
        deserialize_i16 => visit_i16: i16, "an integer";
        deserialize_i32 => visit_i32: i32, "an integer";
        deserialize_i64 => visit_i64: i64, "an integer";
        deserialize_u8 => visit_u8: u8, "a non-negative integer";
        deserialize_u16 => visit_u16: u16, "a non-negative integer";
        deserialize_u32 => visit_u32: u32, "a non-negative integer";
        deserialize_u64 => visit_u64: u64, "a non-negative integer";
        deserialize_f64 => visit_f64: f64, "a number";
    }

    fn deserialize_seq<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        let items: Vec<Values> = self
            .0
            .iter()
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| Values(vec![item.to_owned()]))
            .collect();
        visitor.visit_seq(de::value::SeqDeserializer::new(items.into_iter()))
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, QueryError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, QueryError> {
        let value: de::value::StringDeserializer<QueryError> =
            self.last().to_owned().into_deserializer();
        visitor.visit_enum(value)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 f32 char str string bytes byte_buf unit unit_struct tuple tuple_struct map
        struct identifier ignored_any
    }
}

/// A page size: 50 unless given, at most 250.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub usize);

impl Default for Limit {
    fn default() -> Self {
        Limit(hookline_core::page::ListQuery::DEFAULT_LIMIT)
    }
}

impl utoipa::PartialSchema for Limit {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(hookline_core::page::ListQuery::MAX_LIMIT as f64))
            .default(Some(hookline_core::page::ListQuery::DEFAULT_LIMIT.into()))
            .into()
    }
}

impl utoipa::ToSchema for Limit {}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let max = hookline_core::page::ListQuery::MAX_LIMIT;
        let limit = u64::deserialize(deserializer)?;
        match usize::try_from(limit) {
            Ok(limit) if limit <= max => Ok(Limit(limit)),
            _ => Err(de::Error::custom(format!(
                "Given limit must not exceed {max}"
            ))),
        }
    }
}

/// A time given by a client: RFC 3339 with `Z` or an offset, or without one (then UTC,
/// as Python's `isoformat()` of a naive datetime gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    /// Parses `text`, or says what is expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let parsed = DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| {
                NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc())
            })
            .or_else(|error| {
                // An unencoded `+` in a query string arrives as a space.
                match text.rfind(' ') {
                    Some(at) if at > 10 => {
                        let fixed = format!("{}+{}", &text[..at], &text[at + 1..]);
                        DateTime::parse_from_rfc3339(&fixed).map(|t| t.with_timezone(&Utc))
                    }
                    _ => Err(error),
                }
            });
        parsed.map(Timestamp).map_err(|_| {
            format!("`{text}` is not a date-time (expected RFC 3339, e.g. 2024-01-02T03:04:05Z)")
        })
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_core::page::Order;

    #[test]
    fn nul_is_found_only_as_an_escape_inside_a_string() {
        assert!(holds_nul(br#"{"a": "x\u0000y"}"#));
        assert!(holds_nul(br#"{"a\u0000": 1}"#));
        assert!(
            !holds_nul(br#"{"a": "x\\u0000y"}"#),
            "an escaped backslash, then text"
        );
        assert!(holds_nul(br#"{"a": "\u00001"}"#), "NUL, then the digit 1");
        assert!(!holds_nul(br#"{"a": "\u0001", "b": "u0000"}"#));
    }

    #[derive(Debug, Deserialize)]
    struct Params {
        #[serde(default)]
        limit: Limit,
        iterator: Option<String>,
        order: Option<Order>,
        #[serde(default)]
        event_types: Option<Vec<String>>,
        #[serde(default)]
        with_content: Option<bool>,
        before: Option<Timestamp>,
        status: Option<i64>,
    }

    fn loc(error: ApiError) -> Vec<String> {
        match error {
            ApiError::Invalid(errors) => errors[0].loc.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn query_defaults_and_unknown_params() {
        let params: Params = parse_query("expanded_statuses=true&tag=x").unwrap();
        assert_eq!(params.limit, Limit(50));
        assert!(params.iterator.is_none() && params.order.is_none());
        assert!(params.event_types.is_none() && params.with_content.is_none());
        assert!(params.before.is_none() && params.status.is_none());
    }

    #[test]
    fn lists_accept_repeats_commas_and_brackets() {
        let params: Params =
            parse_query("event_types=a.b%2Cc.d&event_types=e&event_types[]=f&event_types[0]=g")
                .unwrap();
        assert_eq!(
            params.event_types.unwrap(),
            vec!["a.b", "c.d", "e", "f", "g"]
        );
    }

    #[test]
    fn scalars_parse_or_name_their_field() {
        let params: Params =
            parse_query("limit=250&order=descending&with_content=false&status=2").unwrap();
        assert_eq!(params.limit, Limit(250));
        assert_eq!(params.order, Some(Order::Descending));
        assert_eq!(params.with_content, Some(false));
        assert_eq!(params.status, Some(2));
        assert_eq!(
            loc(parse_query::<Params>("limit=251").unwrap_err()),
            ["query", "limit"]
        );
        assert_eq!(
            loc(parse_query::<Params>("limit=abc").unwrap_err()),
            ["query", "limit"]
        );
        assert_eq!(
            loc(parse_query::<Params>("order=sideways").unwrap_err()),
            ["query", "order"]
        );
        assert_eq!(
            loc(parse_query::<Params>("before=yesterday").unwrap_err()),
            ["query", "before"]
        );
    }

    #[test]
    fn times_with_and_without_offsets() {
        let utc = Timestamp::parse("2024-01-02T03:04:05Z").unwrap();
        assert_eq!(Timestamp::parse("2024-01-02T03:04:05").unwrap(), utc);
        assert_eq!(Timestamp::parse("2024-01-02T03:04:05+00:00").unwrap(), utc);
        assert_eq!(Timestamp::parse("2024-01-02T04:04:05 01:00").unwrap(), utc);
        assert_eq!(
            Timestamp::parse("2024-01-02T03:04:05.250").unwrap().0,
            utc.0 + chrono::Duration::milliseconds(250)
        );
        assert!(Timestamp::parse("2024-01-02").is_err());
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        name: String,
        #[serde(default)]
        channels: Vec<String>,
    }

    impl Validate for Body {
        fn validate(&self, v: &mut Violations) {
            crate::validate::name(v, "name", &self.name);
        }
    }

    fn body_error(json: &str) -> FieldError {
        match parse_body::<Body>(json.as_bytes()).unwrap_err() {
            ApiError::Invalid(mut errors) => errors.remove(0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn body_errors_carry_the_field_path() {
        let ok: Body = parse_body(br#"{"name": "x", "channels": ["a"]}"#).unwrap();
        assert_eq!((ok.name.as_str(), ok.channels.len()), ("x", 1));
        let wrong_type = body_error(r#"{"name": "x", "channels": ["a", 5]}"#);
        assert_eq!(wrong_type.loc, ["body", "channels", "[1]"]);
        assert_eq!(wrong_type.kind, "value_error");
        let missing = body_error(r#"{"channels": []}"#);
        assert_eq!(missing.loc, ["body", "name"]);
        assert!(
            missing.msg.contains("missing field `name`"),
            "{}",
            missing.msg
        );
        let syntax = body_error(r#"{"name": "x",}"#);
        assert_eq!(syntax.kind, "value_error.jsondecode");
        let trailing = body_error(r#"{"name": "x"} extra"#);
        assert_eq!(trailing.kind, "value_error.jsondecode");
        let invalid = body_error(r#"{"name": ""}"#);
        assert_eq!(invalid.loc, ["body", "name"]);
    }

    /// Property tests: whatever a client sends as a query string or a JSON body, the
    /// parsers answer a value or a client error, never a panic; and whatever a provider
    /// sends to `/in/…`, a refusal is answered with a client error.
    mod props {
        use axum::response::IntoResponse as _;
        use hookline_receive::pipeline::{Incoming, Verdict, receive};
        use hookline_receive::{ConfigError, Jwks, SourceType};
        use proptest::collection::vec;
        use proptest::prelude::*;
        use serde_json::{Value, json};

        use super::*;
        use crate::api::application::ApplicationIn;
        use crate::api::endpoint::{EndpointHeadersIn, EndpointIn, RecoverIn};
        use crate::api::event_type::EventTypeIn;
        use crate::api::message::{ContentParams, ListParams as MessageListParams, MessageIn};
        use crate::ingest::source::IngestSourceIn;

        /// Every kind of parameter the API's queries take.
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct AllKinds {
            #[serde(default)]
            limit: Limit,
            iterator: Option<String>,
            order: Option<Order>,
            event_types: Option<Vec<String>>,
            with_content: Option<bool>,
            before: Option<Timestamp>,
            after: Option<Timestamp>,
            status: Option<i64>,
            status_code_class: Option<u16>,
            channel: Option<String>,
            #[serde(default)]
            get_if_exists: bool,
            wait: Option<u64>,
            ratio: Option<f64>,
            small: Option<i8>,
        }

        /// An error a client caused: a 4xx, never a 5xx.
        fn is_client_error(error: ApiError) -> Result<(), TestCaseError> {
            let response = error.into_response();
            prop_assert!(
                response.status().is_client_error(),
                "answered {}",
                response.status()
            );
            Ok(())
        }

        fn query_string() -> impl Strategy<Value = String> {
            let name = prop_oneof![
                prop::sample::select(vec![
                    "limit",
                    "iterator",
                    "order",
                    "event_types",
                    "event_types[]",
                    "event_types[0]",
                    "with_content",
                    "before",
                    "after",
                    "status",
                    "status_code_class",
                    "channel",
                    "get_if_exists",
                    "wait",
                    "ratio",
                    "small",
                    "[",
                    "]",
                    "a[b",
                    "[]",
                ])
                .prop_map(str::to_owned),
                "[a-z_\\[\\]%0-9]{0,12}",
            ];
            let value = prop_oneof![
                ".{0,30}",
                any::<i64>().prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|f| f.to_string()),
                "(true|false|1|0|ascending|descending|-1|1e400|NaN|inf)",
                "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+ -][0-9]{2}:[0-9]{2})?",
                "(%[0-9A-Fa-f]{2}|%|%[g-z]|,|\\+|&|=|[a-z]){0,20}",
            ];
            let pair = (name, proptest::option::of(value)).prop_map(|(name, value)| match value {
                Some(value) => format!("{name}={value}"),
                None => name,
            });
            prop_oneof![
                3 => vec(pair, 0..10).prop_map(|pairs| pairs.join("&")),
                1 => vec(any::<u8>(), 0..200)
                    .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
            ]
        }

        /// JSON values, with the members the API's bodies name.
        fn json_value() -> impl Strategy<Value = Value> {
            let key = prop_oneof![
                prop::sample::select(vec![
                    "name",
                    "uid",
                    "eventType",
                    "payload",
                    "data",
                    "eventId",
                    "channels",
                    "application",
                    "payloadRetentionPeriod",
                    "url",
                    "description",
                    "filterTypes",
                    "version",
                    "secret",
                    "headers",
                    "since",
                    "until",
                    "type",
                    "config",
                    "metadata",
                    "rateLimit",
                    "disabled",
                    "schema",
                    "secrets",
                    "forwardToApp",
                ])
                .prop_map(str::to_owned),
                ".{0,8}",
            ];
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| {
                    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                }),
                ".{0,40}".prop_map(Value::from),
                "[a-z][a-z0-9._-]{0,20}".prop_map(Value::from),
                "https?://[a-z.]{1,20}(:[0-9]{1,6})?/[a-z]{0,5}".prop_map(Value::from),
                "20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z".prop_map(Value::from),
                Just(Value::from("generic-webhook")),
            ];
            leaf.prop_recursive(5, 48, 8, move |inner| {
                prop_oneof![
                    vec(inner.clone(), 0..6).prop_map(Value::Array),
                    proptest::collection::btree_map(key.clone(), inner, 0..8)
                        .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            })
        }

        /// Bodies: JSON of the API's shapes, raw bytes, JSON cut short, deep nesting, NUL.
        fn body() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                5 => json_value().prop_map(|value| value.to_string().into_bytes()),
                2 => vec(any::<u8>(), 0..256),
                2 => (json_value(), any::<prop::sample::Index>()).prop_map(|(value, at)| {
                    let mut text = value.to_string().into_bytes();
                    text.truncate(at.index(text.len() + 1));
                    text
                }),
                1 => (1usize..5_000, any::<bool>()).prop_map(|(depth, object)| {
                    let (open, close) = if object {
                        ("{\"payload\":", "}")
                    } else {
                        ("[", "]")
                    };
                    let mut text = open.repeat(depth);
                    text.push_str("{}");
                    text.push_str(&close.repeat(depth));
                    text.into_bytes()
                }),
                1 => Just(br#"{"eventType":"a","payload":{"x":"\u0000"}}"#.to_vec()),
                1 => Just(b"{\"eventType\":\"a\",\"payload\":{\"x\":\"\0\"}}".to_vec()),
            ]
        }

        fn check_body<T: DeserializeOwned + Validate>(bytes: &[u8]) -> Result<(), TestCaseError> {
            match parse_body::<T>(bytes) {
                Ok(_) => Ok(()),
                Err(error) => is_client_error(error),
            }
        }

        /// A config `type_name` parses: the first of a few that fits it.
        fn config_for(type_name: &str) -> Result<SourceType, ConfigError> {
            let configs = [
                json!({}),
                json!({ "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }),
                json!({ "secret": "s3cret", "header": "x-sig" }),
                json!({ "username": "hook", "password": "pass" }),
                json!({ "token": "tok_123" }),
                json!({ "audience": "https://h.test/in/t", "serviceAccountEmail": "p@x.test" }),
            ];
            let mut last = None;
            for config in &configs {
                match SourceType::parse(type_name, Some(config)) {
                    Ok(source) => return Ok(source),
                    Err(error) => last = Some(error),
                }
            }
            Err(last.expect("configs were tried"))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn parse_query_never_panics_and_errors_are_4xx(query in query_string()) {
                for result in [
                    parse_query::<AllKinds>(&query).map(drop),
                    // Through to the page query, as the message list makes it.
                    parse_query::<MessageListParams>(&query)
                        .and_then(MessageListParams::query)
                        .map(drop),
                    parse_query::<ContentParams>(&query).map(drop),
                    parse_query::<std::collections::HashMap<String, String>>(&query).map(drop),
                ] {
                    if let Err(error) = result {
                        match &error {
                            ApiError::Invalid(errors) => {
                                prop_assert!(!errors.is_empty());
                                prop_assert_eq!(errors[0].loc[0].as_str(), "query");
                            }
                            other => prop_assert!(false, "not a 422: {other:?}"),
                        }
                        is_client_error(error)?;
                    }
                }
            }

            #[test]
            fn parse_body_never_panics_and_errors_are_4xx(bytes in body()) {
                check_body::<MessageIn>(&bytes)?;
                check_body::<EndpointIn>(&bytes)?;
                check_body::<ApplicationIn>(&bytes)?;
                check_body::<EventTypeIn>(&bytes)?;
                check_body::<IngestSourceIn>(&bytes)?;
                check_body::<RecoverIn>(&bytes)?;
                check_body::<EndpointHeadersIn>(&bytes)?;
            }

            #[test]
            fn ingest_refusals_are_answered_with_4xx(
                headers in vec(
                    (
                        prop::sample::select(vec![
                            "webhook-id", "webhook-timestamp", "webhook-signature",
                            "svix-id", "svix-timestamp", "svix-signature",
                            "x-hub-signature-256", "stripe-signature", "x-slack-signature",
                            "x-slack-request-timestamp", "x-shopify-hmac-sha256",
                            "x-webhook-secret", "authorization", "x-sig",
                        ]).prop_map(str::to_owned),
                        prop_oneof![
                            ".{0,60}",
                            any::<i64>().prop_map(|n| n.to_string()),
                            "(v1,|t=1,v1=|sha256=|Basic |Bearer )[A-Za-z0-9+/=]{0,60}",
                        ],
                    ),
                    0..8,
                ),
                body in prop_oneof![body(), vec(any::<u8>(), 0..64)],
                now in any::<u32>(),
            ) {
                for type_name in SourceType::supported() {
                    let source = config_for(type_name)
                        .unwrap_or_else(|e| panic!("{type_name}: {e}"));
                    let request = Incoming { method: "POST", headers: &headers, body: &body };
                    // A key set is at hand (without one, a token is refused as unavailable,
                    // on purpose a 503).
                    let keys = Jwks::default();
                    let keys = source.needs_keys().then_some(&keys);
                    if let Verdict::Refused(refusal) =
                        receive(&source, &request, keys, i64::from(now))
                    {
                        let status = crate::error::status(refusal.code);
                        prop_assert!(
                            status.is_client_error(),
                            "{type_name}: {} is answered {status}", refusal.code
                        );
                    }
                }
            }
        }
    }
}
