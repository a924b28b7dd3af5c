//! The rules request bodies are checked against, after they deserialize and before any
//! handler sees them. Every violation is collected with its field path, so one 422 names
//! all that is wrong.

use std::collections::{BTreeMap, HashSet};

use hookline_core::model::FRAMING_HEADERS;
use hookline_signature::{Keyset, Message, Scheme};

use crate::error::{ApiError, FieldError};

/// A body type with rules beyond its shape.
pub trait Validate {
    /// Adds every broken rule to `v`.
    fn validate(&self, v: &mut Violations);
}

/// Violations collected while validating, with the path of the value being checked.
#[derive(Debug)]
pub struct Violations {
    prefix: Vec<String>,
    errors: Vec<FieldError>,
}

impl Violations {
    /// Starts at the request body: locations read `["body", ...]`.
    pub fn body() -> Self {
        Self {
            prefix: vec!["body".to_owned()],
            errors: Vec::new(),
        }
    }

    /// Records that `field` (under the current path) breaks a rule.
    pub fn add(&mut self, field: &[&str], msg: impl Into<String>) {
        let mut loc = self.prefix.clone();
        loc.extend(field.iter().map(|s| s.to_string()));
        self.errors.push(FieldError::value(loc, msg));
    }

    /// Validates a nested value under `field`.
    pub fn nested(&mut self, field: &str, check: impl FnOnce(&mut Self)) {
        self.prefix.push(field.to_owned());
        check(self);
        self.prefix.pop();
    }

    /// `Ok` if nothing was recorded, else the 422.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid(self.errors))
        }
    }
}

pub use hookline_core::id::is_slug;

/// A slug of at most `max` characters.
pub fn slug(v: &mut Violations, field: &str, text: &str, max: usize) {
    if !is_slug(text) {
        v.add(
            &[field],
            "must be non-empty and contain only letters, digits, `-`, `_` and `.`",
        );
    } else if text.len() > max {
        v.add(&[field], format!("must be at most {max} characters long"));
    }
}

/// A uid: a slug of 1..=256 characters that cannot be mistaken for an id.
pub fn uid(v: &mut Violations, field: &str, uid: Option<&str>, id_prefix: &str) {
    let Some(uid) = uid else { return };
    slug(v, field, uid, 256);
    if uid.starts_with(id_prefix) {
        v.add(&[field], format!("must not start with `{id_prefix}`"));
    }
}

/// A display name: not empty, no control characters.
pub fn name(v: &mut Violations, field: &str, text: &str) {
    if text.is_empty() {
        v.add(&[field], "must not be empty");
    }
    free_text(v, field, text);
}

/// Free text: no control characters 0x00 to 0x08 (as the Svix server checks).
pub fn free_text(v: &mut Violations, field: &str, text: &str) {
    if text.chars().any(|c| ('\u{0}'..='\u{8}').contains(&c)) {
        v.add(&[field], "must not contain control characters");
    }
}

/// A rate limit: at least one per second when set.
pub fn throttle_rate(v: &mut Violations, field: &str, rate: Option<u16>) {
    if rate == Some(0) {
        v.add(&[field], "must be at least 1");
    }
}

/// A list of slugs: `min..=max` items, unique, each at most `item_max` characters.
pub fn slug_list(
    v: &mut Violations,
    field: &str,
    items: &[String],
    count: std::ops::RangeInclusive<usize>,
    item_max: usize,
) {
    if !count.contains(&items.len()) {
        let msg = match count.end() {
            &usize::MAX => format!("must have at least {} item(s)", count.start()),
            end => format!("must have {} to {end} items", count.start()),
        };
        v.add(&[field], msg);
    }
    let mut seen = HashSet::new();
    for (index, item) in items.iter().enumerate() {
        v.nested(field, |v| slug(v, &format!("[{index}]"), item, item_max));
        if !seen.insert(item) {
            v.add(&[field], format!("items must be unique; `{item}` repeats"));
        }
    }
}

/// An endpoint URL: absolute http or https with a host.
pub fn endpoint_url(v: &mut Violations, field: &str, text: &str) {
    if text.len() > 65536 {
        v.add(&[field], "must be at most 65536 characters long");
        return;
    }
    // URL parsing drops tabs and line breaks; they would still be stored and shown.
    if text.chars().any(char::is_control) {
        v.add(&[field], "must not contain control characters");
        return;
    }
    match url::Url::parse(text) {
        Ok(url) if !matches!(url.scheme(), "http" | "https") => {
            v.add(&[field], "must be an http or https URL")
        }
        Ok(url) if url.host_str().is_none_or(str::is_empty) => v.add(&[field], "must have a host"),
        Ok(_) => {}
        Err(error) => v.add(&[field], format!("is not a valid URL: {error}")),
    }
}

/// Refuses an `http://` endpoint URL when the server delivers over HTTPS only
/// (`delivery.https_only`). A 422 on the field, naming the setting, so that whoever
/// sees it knows it is this server's policy and not a malformed URL. Run after
/// [`endpoint_url`] has accepted the URL.
pub fn https_only(https_only: bool, field: &str, url: &str) -> Result<(), ApiError> {
    let plain = url::Url::parse(url).is_ok_and(|url| url.scheme() != "https");
    if https_only && plain {
        return Err(ApiError::invalid(
            &["body", field],
            "must be an https:// URL: this server delivers over HTTPS only \
             (delivery.https_only, HOOKLINE_HTTPS_ONLY)",
        ));
    }
    Ok(())
}

/// The deepest nesting of arrays and objects accepted in a JSON payload. Deeper
/// documents are refused: many clients cannot read them back (recursive parsers overflow
/// their stack), and no event needs them.
pub const MAX_JSON_DEPTH: usize = 64;

/// A JSON document (valid, as parsed) nested at most [`MAX_JSON_DEPTH`] deep.
pub fn json_depth(v: &mut Violations, field: &str, json: &str) {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in json.bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_JSON_DEPTH {
        v.add(
            &[field],
            format!("must be nested at most {MAX_JSON_DEPTH} levels deep (this one is {deepest})"),
        );
    }
}

/// An endpoint secret: one that the Standard Webhooks scheme can sign with.
pub fn secret(v: &mut Violations, field: &str, secret: &str) {
    if let Err(msg) = check_secret(secret) {
        v.add(&[field], msg);
    }
}

/// Why `secret` cannot sign deliveries, if it cannot.
pub fn check_secret(secret: &str) -> Result<(), String> {
    if secret != secret.trim() {
        return Err("must not have leading or trailing whitespace".into());
    }
    let keys = Keyset::new(Scheme::Standard, [secret]).map_err(|e| e.to_string())?;
    let probe = Message {
        id: "msg_probe",
        timestamp: 0,
        body: b"{}",
    };
    keys.sign(&probe).map_err(|e| e.to_string())?;
    Ok(())
}

/// Header names never accepted as custom endpoint headers (lowercase), besides the
/// connection and framing ones ([`FRAMING_HEADERS`]): caching, content and proxy headers
/// that the delivery itself owns.
const FORBIDDEN_HEADERS: &[&str] = &[
    "user-agent",
    "proxy-authenticate",
    "proxy-authorization",
    "trailers",
    "age",
    "cache-control",
    "clear-site-data",
    "expires",
    "pragma",
    "warning",
    "content-type",
    "content-encoding",
    "content-language",
    "content-location",
];

/// Header name prefixes reserved for cloud infrastructure and for the signature headers.
const FORBIDDEN_PREFIXES: &[&str] = &[
    "x-amz-", "x-amzn-", "x-google", "x-goog-", "x-gfe", "x-azure-", "x-fd-", "x-svix-", "svix-",
    "webhook-",
];

/// One custom header name.
pub fn header_name(v: &mut Violations, field: &str, name: &str) {
    let lower = name.to_ascii_lowercase();
    if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        v.add(&[field, name], "is not a valid header name");
    } else if FORBIDDEN_HEADERS.contains(&lower.as_str())
        || FRAMING_HEADERS.contains(&lower.as_str())
    {
        v.add(&[field, name], "this header cannot be set on an endpoint");
    } else if let Some(prefix) = FORBIDDEN_PREFIXES.iter().find(|p| lower.starts_with(**p)) {
        v.add(
            &[field, name],
            format!("headers starting with `{prefix}` cannot be set on an endpoint"),
        );
    }
}

/// One custom header value.
pub fn header_value(v: &mut Violations, field: &str, name: &str, value: &str) {
    if value.len() > 4096 {
        v.add(&[field, name], "header values must be at most 4096 bytes");
    } else if axum::http::HeaderValue::from_str(value).is_err() {
        v.add(&[field, name], "is not a valid header value");
    }
}

/// A map of custom headers.
pub fn headers(v: &mut Violations, field: &str, headers: &BTreeMap<String, String>) {
    for (name, value) in headers {
        header_name(v, field, name);
        header_value(v, field, name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_nesting_outside_strings() {
        let accepted = |json: &str| {
            let mut v = Violations::body();
            json_depth(&mut v, "payload", json);
            v.finish().is_ok()
        };
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(!accepted(&deep));
        let just = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(accepted(&just));
        let brackets_in_strings = format!(r#"{{"a": "{}", "b": "\"{{"}}"#, "[".repeat(100));
        assert!(accepted(&brackets_in_strings));
    }

    fn errors(check: impl FnOnce(&mut Violations)) -> Vec<(Vec<String>, String)> {
        let mut v = Violations::body();
        check(&mut v);
        v.errors.into_iter().map(|e| (e.loc, e.msg)).collect()
    }

    #[test]
    fn slugs_and_uids() {
        assert!(is_slug("a.b-c_D9"));
        assert!(!is_slug("a b"));
        assert!(!is_slug(""));
        assert!(errors(|v| uid(v, "uid", Some("my-app"), "app_")).is_empty());
        let found = errors(|v| uid(v, "uid", Some("app_x"), "app_"));
        assert_eq!(found[0].0, vec!["body", "uid"]);
        assert_eq!(found[0].1, "must not start with `app_`");
    }

    #[test]
    fn lists_name_the_failing_item() {
        let items = vec!["ok".to_owned(), "not ok".to_owned(), "ok".to_owned()];
        let found = errors(|v| slug_list(v, "channels", &items, 1..=5, 128));
        assert_eq!(found[0].0, vec!["body", "channels", "[1]"]);
        assert!(found[1].1.contains("unique"), "{found:?}");
    }

    #[test]
    fn urls_must_be_http() {
        assert!(errors(|v| endpoint_url(v, "url", "https://example.com/hook")).is_empty());
        assert_eq!(
            errors(|v| endpoint_url(v, "url", "ftp://example.com"))[0].1,
            "must be an http or https URL"
        );
        assert!(!errors(|v| endpoint_url(v, "url", "not a url")).is_empty());
    }

    #[test]
    fn secrets_must_sign() {
        assert!(check_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(check_secret("whsec_not-base64!").is_err());
        assert!(check_secret("whsec_AAAA").is_err(), "too short");
    }

    #[test]
    fn forbidden_headers() {
        let mut map = BTreeMap::new();
        map.insert("X-Custom".to_owned(), "1".to_owned());
        map.insert("Content-Type".to_owned(), "x".to_owned());
        map.insert("X-Amz-Date".to_owned(), "x".to_owned());
        map.insert("X-Bad".to_owned(), "a\nb".to_owned());
        let found = errors(|v| headers(v, "headers", &map));
        let locs: Vec<&str> = found.iter().map(|(loc, _)| loc[2].as_str()).collect();
        assert_eq!(locs, vec!["Content-Type", "X-Amz-Date", "X-Bad"]);
    }
}
