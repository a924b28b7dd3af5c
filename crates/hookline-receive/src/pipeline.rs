//! The receiving pipeline: one function, [`receive`], from a request as it arrived to a
//! [`Verdict`] that says what to answer, what to store and what to forward.
//!
//! It verifies the exact raw bytes with the source's type, derives the dedupe key and the
//! event type, and picks out the headers forwarded deliveries carry. It reads no clock
//! (the time is an argument) and touches no store: the HTTP handler turns a request into
//! this call, then stores [`Verdict::record`] in one transaction and answers. Consumers
//! of accepted requests (forwarding endpoints, an application of the sending API, the job
//! tracker) all start from [`Accepted`].

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookline_core::Code;
use hookline_core::id::{AppId, IngestRequestId, MessageId};
use hookline_core::ingest::{
    IngestRequest, NewIngestRequest, RefusedCap, Source, Verdict as Logged,
};
use hookline_core::model::{Message, is_credential_header};
use hookline_core::store::NewMessage;
use hookline_signature::oidc::Jwks;

use crate::source::SourceType;

/// The event type of a forwarded request whose body names none.
pub const DEFAULT_EVENT_TYPE: &str = "ingest.request";

pub use hookline_core::model::REDACTED;
/// [`REDACTED`] as a query parameter's value, percent-encoded.
const REDACTED_IN_QUERY: &str = "%5Bredacted%5D";

/// Whether a query parameter of this name carries a credential.
fn is_credential_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["secret", "token", "password", "passwd", "api_key", "apikey"]
        .iter()
        .any(|word| name.contains(word))
        || matches!(name.as_str(), "key" | "auth" | "sig_key")
}

/// `received` with every credential replaced by [`REDACTED`]: the values of credential
/// headers and of credential query parameters.
///
/// The log, the live streams and `hookline listen` (which replays requests to a local app)
/// all read the stored request, so none of them sees a provider's credentials.
fn redacted(mut received: Received) -> Received {
    for (name, value) in &mut received.headers {
        if is_credential_header(name) {
            *value = REDACTED.to_owned();
        }
    }
    if received.query.split('&').any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        is_credential_param(name)
    }) {
        received.query = received
            .query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_credential_param(name) => {
                    format!("{name}={REDACTED_IN_QUERY}")
                }
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
    }
    received
}

/// One received request, as the ingest route read it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The HTTP method. Not checked here: the route decides which methods it takes.
    pub method: &'a str,
    /// The headers in the order received, names in lowercase.
    pub headers: &'a [(String, String)],
    /// The exact raw body.
    pub body: &'a [u8],
}

/// Why a request was refused: a stable code of the product's vocabulary (the signature
/// codes of `hookline-signature`, `invalid_credentials`, `payload_too_large`,
/// `body_not_utf8`, `body_has_nul`, `malformed_envelope`, and `unavailable` when the keys
/// a token is checked with could not be had) and the exact reason, in words, for the
/// request log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    pub code: Code,
    pub reason: String,
}

impl Refusal {
    /// A body over `limit` bytes, refused before it was read to the end.
    pub fn too_large(limit: usize) -> Self {
        Refusal {
            code: Code::PayloadTooLarge,
            reason: format!("the body is larger than this source's limit of {limit} bytes"),
        }
    }
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not genuine, or not acceptable: logged, answered with the refusal, never forwarded.
    Refused(Refusal),
    /// A provider checking the URL (Slack's `url_verification`): answered with this
    /// `challenge`, logged, not forwarded.
    Challenge(String),
    /// Genuine: stored and forwarded, unless a request with the same dedupe key was
    /// accepted within the window.
    Accepted(Accepted),
}

/// An accepted request, as its consumers need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Identifies this delivery across the provider's retries.
    pub dedupe_key: String,
    /// How far back a duplicate is looked for; zero for never.
    pub dedupe_window: Duration,
    /// The provider's event type, or [`DEFAULT_EVENT_TYPE`].
    pub event_type: String,
    /// Whether the provider named the event type (the log keeps only a named one).
    pub event_type_named: bool,
    /// What forwarding sends byte for byte: the body, or for a type that unwraps an
    /// envelope (`google-pubsub`) the message unwrapped from it (the push's decoded
    /// `message.data`).
    pub payload: String,
    /// Headers forwarded deliveries carry: the source's `forwardHeaders` and
    /// `content-type`, unless the payload was unwrapped (the request's `content-type` is
    /// the envelope's, not the message's).
    pub headers: BTreeMap<String, String>,
    /// The id or uid of an application of the sending API that also gets the request as
    /// a message, if the source names one and the body is a JSON object.
    pub forward_to_app: Option<String>,
}

/// Judges `request` for a source of type `source_type` at `now` (Unix seconds). `keys`
/// is the key set tokens are checked with, for types that need one
/// ([`SourceType::needs_keys`]: Google's JWKS, which the server fetches); without it such
/// a request is refused as `unavailable`, which providers retry.
pub fn receive(
    source_type: &SourceType,
    request: &Incoming<'_>,
    keys: Option<&Jwks>,
    now: i64,
) -> Verdict {
    let checked = match source_type.check(request, keys, now) {
        Ok(checked) => checked,
        Err(refusal) => return Verdict::Refused(refusal),
    };
    if let Some(challenge) = checked.challenge {
        return Verdict::Challenge(challenge);
    }
    let unwrapped = checked.payload.is_some();
    let (bytes, what) = match &checked.payload {
        Some(data) => (data.as_slice(), "the message's data"),
        None => (request.body, "the body"),
    };
    let Ok(payload) = std::str::from_utf8(bytes) else {
        return Verdict::Refused(Refusal {
            code: Code::BodyNotUtf8,
            reason: format!("{what} is not valid UTF-8; Hookline forwards text bodies only"),
        });
    };
    if let Some(at) = payload.find('\0') {
        // Text with a NUL byte cannot be stored as text on every backend (PostgreSQL
        // refuses it), nor read by many receivers.
        return Verdict::Refused(Refusal {
            code: Code::BodyHasNul,
            reason: format!(
                "{what} holds a NUL byte (at byte {at}); Hookline forwards text bodies only"
            ),
        });
    }
    let options = source_type.options();
    let headers = request
        .headers
        .iter()
        .filter(|(name, _)| {
            (name == "content-type" && !unwrapped) || options.forward_headers.contains(name)
        })
        .cloned()
        .collect();
    let forward_to_app = options
        .forward_to_app
        .clone()
        .filter(|_| is_json_object(payload));
    Verdict::Accepted(Accepted {
        dedupe_key: checked.dedupe_key,
        dedupe_window: options.dedupe_window,
        event_type_named: checked.event_type.is_some(),
        event_type: checked
            .event_type
            .unwrap_or_else(|| DEFAULT_EVENT_TYPE.to_owned()),
        payload: payload.to_owned(),
        headers,
        forward_to_app,
    })
}

/// Whether `text` is one JSON object: what a message's payload must be. A body that only
/// starts like one (`{oops`) stays out of the application, whose messages are read back
/// as JSON.
fn is_json_object(text: &str) -> bool {
    text.trim_start().starts_with('{')
        && serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok()
}

/// A request as received, owned, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub method: String,
    /// The path after the ingest token, starting with `/`.
    pub path: String,
    /// The query string without `?`.
    pub query: String,
    /// Headers in arrival order, names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    /// The request as the pipeline reads it.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming {
            method: &self.method,
            headers: &self.headers,
            body: &self.body,
        }
    }
}

/// How much of what it receives a server keeps: its settings for the log and for
/// forwarded payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// Bytes of a refused request's body the log keeps. Anyone can send refused
    /// requests, so the log keeps the start of each, enough to see what went wrong,
    /// rather than up to the body limit of each. Accepted requests are kept whole.
    pub refused_body_bytes: usize,
    /// How many refused requests of a source the log keeps per window; `None`: all.
    pub refused_cap: Option<RefusedCap>,
    /// How long forwarded requests' messages keep their payload.
    pub payload_retention: Duration,
}

impl Default for Keep {
    fn default() -> Self {
        Keep {
            refused_body_bytes: 4096,
            refused_cap: Some(RefusedCap {
                per_window: 60,
                window: Duration::from_secs(60),
            }),
            payload_retention: Duration::from_secs(90 * 86_400),
        }
    }
}

impl Verdict {
    /// What to store for this verdict, in one transaction: the log record of `received`
    /// (answered with `status`, its credentials redacted, a refused one's body cut as
    /// `keep` says), and for an accepted request its forwarding messages, into the
    /// source's hidden application and, if given, into `forward_to` (the resolved
    /// [`Accepted::forward_to_app`]), their payloads kept for `keep.payload_retention`.
    pub fn record(
        &self,
        source: &Source,
        received: Received,
        status: u16,
        forward_to: Option<AppId>,
        keep: &Keep,
        now: DateTime<Utc>,
    ) -> NewIngestRequest {
        let (verdict, code, reason) = match self {
            Verdict::Refused(refusal) => {
                (Logged::Rejected, refusal.code.as_str(), &*refusal.reason)
            }
            Verdict::Challenge(_) => (
                Logged::Accepted,
                "challenge",
                "answered Slack's url_verification",
            ),
            Verdict::Accepted(_) => (Logged::Accepted, "accepted", ""),
        };
        let mut received = redacted(received);
        let body_size = i64::try_from(received.body.len()).unwrap_or(i64::MAX);
        if verdict == Logged::Rejected {
            received.body.truncate(keep.refused_body_bytes);
            received.body.shrink_to_fit();
        }
        let mut request = IngestRequest {
            id: IngestRequestId::new_at(now),
            source_id: source.id.clone(),
            seq: 0,
            method: received.method,
            path: received.path,
            query: received.query,
            headers: received.headers,
            body: received.body,
            body_size,
            dropped_before: 0,
            verdict,
            status_code: i16::try_from(status).unwrap_or(i16::MAX),
            reason_code: code.to_owned(),
            reason: reason.to_owned(),
            dedupe_key: None,
            event_type: None,
            msg_id: None,
            created_at: now,
        };
        let Verdict::Accepted(accepted) = self else {
            return NewIngestRequest {
                request,
                dedupe_since: None,
                messages: Vec::new(),
                refused_cap: keep.refused_cap.filter(|_| verdict == Logged::Rejected),
            };
        };
        let expires_at = now
            + chrono::Duration::from_std(keep.payload_retention).unwrap_or(chrono::Duration::MAX);
        let mut messages = vec![accepted.message(
            source.app_id.clone(),
            accepted.headers.clone(),
            expires_at,
            now,
        )];
        if let Some(app) = forward_to {
            messages.push(accepted.message(app, BTreeMap::new(), expires_at, now));
        }
        request.dedupe_key = Some(accepted.dedupe_key.clone());
        request.event_type = accepted
            .event_type_named
            .then(|| accepted.event_type.clone());
        request.msg_id = Some(messages[0].message.id.clone());
        let window =
            chrono::Duration::from_std(accepted.dedupe_window).unwrap_or(chrono::Duration::MAX);
        NewIngestRequest {
            request,
            dedupe_since: (!accepted.dedupe_window.is_zero()).then(|| now - window),
            messages,
            refused_cap: None,
        }
    }
}

impl Accepted {
    /// The message that forwards this request into `app`, carrying `headers`, its
    /// payload kept until `expires_at`.
    fn message(
        &self,
        app: AppId,
        headers: BTreeMap<String, String>,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> NewMessage {
        NewMessage {
            message: Message {
                id: MessageId::new_at(now),
                app_id: app,
                event_id: None,
                event_type: self.event_type.clone(),
                payload: Some(self.payload.clone()),
                channels: None,
                headers,
                created_at: now,
            },
            only_endpoint: None,
            idempotency: None,
            payload_expires_at: Some(expires_at),
            lease: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hookline_core::id::SourceId;
    use hookline_signature::{Keyset, Message as Signed, Scheme};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NOW: i64 = 1_700_000_000;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn source_of(type_name: &str, config: serde_json::Value) -> (Source, SourceType) {
        let parsed = SourceType::parse(type_name, Some(&config)).unwrap();
        let source = Source {
            id: SourceId::new_at(at(NOW)),
            uid: None,
            name: "provider".into(),
            source_type: type_name.into(),
            config,
            metadata: BTreeMap::new(),
            app_id: AppId::new_at(at(NOW)),
            token: "token".into(),
            previous_token: None,
            previous_token_expires_at: None,
            created_at: at(NOW),
            updated_at: at(NOW),
        };
        (source, parsed)
    }

    /// The headers `scheme` signs `body` with, at `NOW`.
    fn signature(scheme: Scheme, secret: &str, body: &[u8]) -> Vec<(String, String)> {
        let keys = Keyset::new(scheme, [secret]).unwrap();
        let message = Signed {
            id: "msg_provider_1",
            timestamp: NOW,
            body,
        };
        let headers = keys.sign(&message).unwrap().into_iter();
        headers
            .map(|(name, value)| (name.to_owned(), value))
            .collect()
    }

    fn signed(body: &[u8], extra: &[(&str, &str)]) -> Received {
        let mut headers = signature(Scheme::Standard, SECRET, body);
        headers.extend(
            extra
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        );
        Received {
            method: "POST".into(),
            path: "/hooks".into(),
            query: "a=1".into(),
            headers,
            body: body.to_vec(),
        }
    }

    #[test]
    fn an_accepted_request_is_stored_with_its_forwarding_messages() {
        let (source, parsed) = source_of(
            "standard-webhooks",
            json!({"secret": SECRET, "forwardHeaders": ["x-trace"], "forwardToApp": "app-uid"}),
        );
        let body = br#"{"type":"job.succeeded","id":"job_1"}"#;
        let received = signed(
            body,
            &[
                ("content-type", "application/json"),
                ("x-trace", "t-1"),
                ("x-other", "no"),
            ],
        );
        let verdict = receive(&parsed, &received.incoming(), None, NOW + 3);
        let Verdict::Accepted(accepted) = &verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(accepted.dedupe_key, "msg_provider_1");
        assert_eq!(accepted.event_type, "job.succeeded");
        assert_eq!(accepted.forward_to_app.as_deref(), Some("app-uid"));
        assert_eq!(
            accepted.headers,
            BTreeMap::from([
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-trace".to_owned(), "t-1".to_owned()),
            ])
        );

        let other_app = AppId::new_at(at(NOW));
        let record = verdict.record(
            &source,
            received,
            200,
            Some(other_app.clone()),
            &Keep::default(),
            at(NOW + 3),
        );
        let request = &record.request;
        assert_eq!(request.verdict, Logged::Accepted);
        assert_eq!(
            (request.status_code, request.reason_code.as_str()),
            (200, "accepted")
        );
        assert_eq!(request.dedupe_key.as_deref(), Some("msg_provider_1"));
        assert_eq!(request.event_type.as_deref(), Some("job.succeeded"));
        assert_eq!(
            (request.path.as_str(), request.query.as_str()),
            ("/hooks", "a=1")
        );
        assert_eq!(request.body, body);
        assert_eq!(
            record.dedupe_since,
            Some(at(NOW + 3) - chrono::Duration::days(3)),
            "the default window is three days"
        );
        assert_eq!(record.messages.len(), 2);
        let (own, forwarded) = (&record.messages[0].message, &record.messages[1].message);
        assert_eq!(request.msg_id.as_ref(), Some(&own.id));
        assert_eq!(own.app_id, source.app_id);
        assert_eq!(
            own.headers.len(),
            2,
            "forwarding endpoints get the provider's headers"
        );
        assert_eq!(forwarded.app_id, other_app);
        assert!(forwarded.headers.is_empty());
        for message in [own, forwarded] {
            assert_eq!(
                message.payload.as_deref().map(str::as_bytes),
                Some(&body[..])
            );
            assert_eq!(message.event_type, "job.succeeded");
        }
    }

    #[test]
    fn a_refused_request_is_logged_with_its_reason_and_forwards_nothing() {
        let (source, parsed) = source_of("standard-webhooks", json!({"secret": SECRET}));
        let mut received = signed(br#"{"type":"a"}"#, &[]);
        received.body = br#"{"type":"b"}"#.to_vec();
        let verdict = receive(&parsed, &received.incoming(), None, NOW);
        let Verdict::Refused(refusal) = &verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(refusal.code, Code::NoSignatureMatched);
        let record = verdict.record(&source, received, 401, None, &Keep::default(), at(NOW));
        assert_eq!(record.request.verdict, Logged::Rejected);
        assert_eq!(record.request.reason_code, "no_signature_matched");
        assert!(record.request.reason.contains("no signature matched"));
        assert_eq!(record.request.status_code, 401);
        assert!(record.messages.is_empty());
        assert_eq!((record.dedupe_since, record.request.msg_id), (None, None));
    }

    #[test]
    fn a_refused_body_is_cut_to_its_start_and_an_accepted_one_kept_whole() {
        let (source, parsed) = source_of("standard-webhooks", json!({"secret": SECRET}));
        let big = format!(r#"{{"type":"a","pad":"{}"}}"#, "x".repeat(10_000));
        let keep = Keep {
            refused_body_bytes: 100,
            ..Keep::default()
        };
        let received = signed(big.as_bytes(), &[]);
        let verdict = receive(&parsed, &received.incoming(), None, NOW);
        assert!(matches!(verdict, Verdict::Accepted(_)), "{verdict:?}");
        let record = verdict.record(&source, received.clone(), 200, None, &keep, at(NOW));
        assert_eq!(record.request.body, big.as_bytes(), "accepted: whole");
        assert_eq!(record.request.body_size, big.len() as i64);
        assert_eq!(record.refused_cap, None);
        assert_eq!(
            record.messages[0].payload_expires_at,
            Some(at(NOW) + chrono::Duration::days(90)),
            "forwarded payloads expire after the server's retention"
        );

        let mut forged = received;
        forged.body.push(b' ');
        let verdict = receive(&parsed, &forged.incoming(), None, NOW);
        assert!(matches!(verdict, Verdict::Refused(_)), "{verdict:?}");
        let record = verdict.record(&source, forged, 401, None, &keep, at(NOW));
        assert_eq!(
            record.request.body,
            &big.as_bytes()[..100],
            "refused: the start"
        );
        assert_eq!(record.request.body_size, big.len() as i64 + 1);
        assert_eq!(
            record.refused_cap, keep.refused_cap,
            "counted against the cap"
        );
    }

    #[test]
    fn text_only_a_json_object_goes_to_an_application_and_the_default_event_type() {
        let (_, parsed) = source_of(
            "generic-webhook",
            json!({"forwardToApp": "app-uid", "dedupeWindowSeconds": 0}),
        );
        let received = Received {
            method: "PUT".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![],
            body: b"[1, 2]".to_vec(),
        };
        let Verdict::Accepted(accepted) = receive(&parsed, &received.incoming(), None, NOW) else {
            panic!("a generic webhook accepts anything");
        };
        assert_eq!(accepted.forward_to_app, None, "not an object");
        assert_eq!(accepted.event_type, DEFAULT_EVENT_TYPE);
        for body in [&b"{oops"[..], b"{\"a\": 1} trailing", b"{\"a\": 1}"] {
            let received = Received {
                body: body.to_vec(),
                ..received.clone()
            };
            let Verdict::Accepted(accepted) = receive(&parsed, &received.incoming(), None, NOW)
            else {
                panic!("a generic webhook accepts anything");
            };
            let object = body == b"{\"a\": 1}";
            assert_eq!(accepted.forward_to_app.is_some(), object, "{body:?}");
        }
        assert!(accepted.dedupe_key.starts_with("sha256:"));
        let record = Verdict::Accepted(accepted).record(
            &Source {
                ..source_of("generic-webhook", json!({})).0
            },
            received.clone(),
            200,
            None,
            &Keep::default(),
            at(NOW),
        );
        assert_eq!(
            record.dedupe_since, None,
            "a zero window looks for no duplicate"
        );
        assert_eq!(
            record.request.event_type, None,
            "the log keeps only a named type"
        );

        let not_text = Received {
            body: vec![0xff, 0xfe],
            ..received.clone()
        };
        let verdict = receive(&parsed, &not_text.incoming(), None, NOW);
        assert!(
            matches!(&verdict, Verdict::Refused(r) if r.code == Code::BodyNotUtf8),
            "{verdict:?}"
        );
        let with_nul = Received {
            body: b"{\"a\": \"x\0y\"}".to_vec(),
            ..received
        };
        let verdict = receive(&parsed, &with_nul.incoming(), None, NOW);
        assert!(
            matches!(&verdict, Verdict::Refused(r) if r.code == Code::BodyHasNul && r.reason.contains("byte 8")),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_url_check_is_answered_not_forwarded() {
        let secret = "slack-signing-secret";
        let (source, parsed) = source_of("slack", json!({"secret": secret}));
        let body = br#"{"type":"url_verification","challenge":"c-123"}"#;
        let headers = signature(Scheme::Slack, secret, body);
        let received = Received {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers,
            body: body.to_vec(),
        };
        let verdict = receive(&parsed, &received.incoming(), None, NOW);
        assert_eq!(verdict, Verdict::Challenge("c-123".into()));
        let record = verdict.record(&source, received, 200, None, &Keep::default(), at(NOW));
        assert_eq!(record.request.reason_code, "challenge");
        assert!(record.messages.is_empty());
    }

    /// A Pub/Sub push: what is forwarded is the message's data, what is logged is the
    /// push as received (its token redacted).
    #[test]
    fn a_pubsub_push_forwards_its_unwrapped_message_and_logs_the_envelope() {
        use crate::fixtures::{self, authorization, claims, envelope};

        let mut config = fixtures::config();
        config["forwardToApp"] = json!("app-uid");
        let (source, parsed) = source_of("google-pubsub", config);
        let keys = fixtures::jwks();
        let data = r#"{"type":"batch.succeeded","batch":"batches/9"}"#;
        let body = envelope("5001", data.as_bytes(), json!({ "origin": "vertex" }));
        let received = Received {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![
                authorization(&claims(NOW)),
                ("content-type".into(), "application/json".into()),
            ],
            body: body.clone(),
        };
        let verdict = receive(&parsed, &received.incoming(), Some(&keys), NOW);
        let Verdict::Accepted(accepted) = &verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(accepted.payload, data);
        assert_eq!(accepted.dedupe_key, "5001");
        assert_eq!(accepted.event_type, "batch.succeeded");
        assert!(
            accepted.headers.is_empty(),
            "the envelope's content-type is not the message's: {:?}",
            accepted.headers
        );
        assert_eq!(accepted.forward_to_app.as_deref(), Some("app-uid"));
        let record = verdict.record(&source, received, 200, None, &Keep::default(), at(NOW));
        assert_eq!(
            record.request.body, body,
            "the log keeps the push as received"
        );
        assert_eq!(record.request.headers[0].1, REDACTED);
        assert_eq!(record.request.dedupe_key.as_deref(), Some("5001"));
        assert_eq!(
            record.messages[0].message.payload.as_deref(),
            Some(data),
            "forwarding sends the message's data"
        );

        // Data that is not text, or holds a NUL, is refused as such.
        for (data, code, reason) in [
            (
                &[0xff, 0xfe][..],
                Code::BodyNotUtf8,
                "the message's data is not valid UTF-8",
            ),
            (
                b"a\0b",
                Code::BodyHasNul,
                "the message's data holds a NUL byte (at byte 1)",
            ),
        ] {
            let body = envelope("5002", data, json!({}));
            let headers = [authorization(&claims(NOW))];
            let request = Incoming {
                method: "POST",
                headers: &headers,
                body: &body,
            };
            let verdict = receive(&parsed, &request, Some(&keys), NOW);
            assert!(
                matches!(&verdict, Verdict::Refused(r) if r.code == code && r.reason.starts_with(reason)),
                "{verdict:?}"
            );
        }
    }

    #[test]
    fn credentials_are_redacted_before_the_request_is_logged() {
        let (source, parsed) = source_of("bearer", json!({"token": "s3cret-token"}));
        let received = Received {
            method: "POST".into(),
            path: "/".into(),
            query: "a=1&access_token=s3cret&apiKey=k&sig=abc&key=v".into(),
            headers: vec![
                ("authorization".into(), "Bearer s3cret-token".into()),
                ("X-Webhook-Secret".into(), "hf-secret".into()),
                ("cookie".into(), "session=1".into()),
                ("x-hub-signature-256".into(), "sha256=00".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: br#"{"type":"a"}"#.to_vec(),
        };
        let verdict = receive(&parsed, &received.incoming(), None, NOW);
        assert!(matches!(verdict, Verdict::Accepted(_)), "{verdict:?}");
        let record = verdict.record(&source, received, 200, None, &Keep::default(), at(NOW));
        let headers: Vec<(&str, &str)> = record
            .request
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        assert_eq!(
            headers,
            vec![
                ("authorization", REDACTED),
                ("X-Webhook-Secret", REDACTED),
                ("cookie", REDACTED),
                ("x-hub-signature-256", "sha256=00"),
                ("content-type", "application/json"),
            ]
        );
        assert_eq!(
            record.request.query,
            format!(
                "a=1&access_token={0}&apiKey={0}&sig=abc&key={0}",
                REDACTED_IN_QUERY
            )
        );
    }
}
