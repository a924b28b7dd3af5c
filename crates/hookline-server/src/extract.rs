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

/// Like [`ValidJson`], but an empty body means `T::default()`: for POSTs whose options
/// are all optional (the SDKs send `{}`, other clients often nothing).
#[derive(Debug, Clone)]
pub struct MaybeJson<T>(pub T);

impl<T> FromRequest<AppState> for MaybeJson<T>
where
    T: DeserializeOwned + Validate + Default,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = body_bytes(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
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
}
