//! The resources of the sending side and the rules that belong to them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{AppId, AttemptId, EndpointId, MessageId};
use crate::{Code, Error, Result};

/// A tenant of the sending API: one of the product's customers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    pub id: AppId,
    pub uid: Option<String>,
    pub name: String,
    pub throttle_rate: Option<u16>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A signing secret of an endpoint. The current one has no expiry; rotated-out ones keep
/// signing until `expires_at` (the grace period).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSecret {
    pub key: String,
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for EndpointSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSecret")
            .field("key", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Where an application's messages go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: EndpointId,
    pub app_id: AppId,
    pub uid: Option<String>,
    pub url: String,
    pub description: String,
    pub disabled: bool,
    /// Deliveries per second at most; `None` for no limit.
    pub throttle_rate: Option<u16>,
    /// Event types this endpoint wants; `None` for all.
    pub event_types: Option<Vec<String>>,
    /// Channels this endpoint listens on; `None` for all.
    pub channels: Option<Vec<String>>,
    pub metadata: BTreeMap<String, String>,
    /// Extra headers sent with each delivery.
    pub headers: BTreeMap<String, String>,
    /// The current secret first, then rotated-out ones still in their grace period.
    pub secrets: Vec<EndpointSecret>,
    /// When the endpoint started exhausting messages without a success since.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Endpoint {
    /// Whether a message of `event_type` on `channels` is for this endpoint. A message
    /// without channels does not reach an endpoint that listens on some.
    pub fn wants(&self, event_type: &str, channels: Option<&[String]>) -> bool {
        fan_out_matches(
            self.disabled,
            self.event_types.as_deref(),
            self.channels.as_deref(),
            event_type,
            channels,
        )
    }

    /// The keys that sign a delivery made at `now`: the current one and every rotated-out
    /// key still in its grace period.
    pub fn signing_keys(&self, now: DateTime<Utc>) -> Vec<&str> {
        self.secrets
            .iter()
            .filter(|secret| secret.expires_at.is_none_or(|expiry| expiry > now))
            .map(|secret| secret.key.as_str())
            .collect()
    }

    /// The current secret.
    pub fn current_secret(&self) -> &str {
        self.secrets
            .first()
            .map(|secret| secret.key.as_str())
            .unwrap_or_default()
    }

    /// Rotated-out secrets that may still sign at once.
    pub const MAX_OLD_SECRETS: usize = 5;

    /// Makes `key` the current secret at `now`. The secret it replaces keeps signing for
    /// `grace`; rotated-out secrets whose grace period has ended are dropped. Refused
    /// ([`Code::LimitReached`]) when more than [`Endpoint::MAX_OLD_SECRETS`] would still
    /// be in their grace period.
    pub fn rotate_secret(
        &mut self,
        key: String,
        grace: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let mut secrets = vec![EndpointSecret {
            key,
            expires_at: None,
        }];
        for old in &self.secrets {
            let expires_at = old.expires_at.unwrap_or(now + grace);
            if expires_at > now {
                secrets.push(EndpointSecret {
                    key: old.key.clone(),
                    expires_at: Some(expires_at),
                });
            }
        }
        if secrets.len() - 1 > Self::MAX_OLD_SECRETS {
            return Err(Error::refused(
                Code::LimitReached,
                format!(
                    "an endpoint can have at most {} rotated-out secrets in their grace \
                     period; wait for one to expire or rotate with a shorter gracePeriodSeconds",
                    Self::MAX_OLD_SECRETS
                ),
            ));
        }
        self.secrets = secrets;
        self.updated_at = now;
        Ok(())
    }
}

/// The part of an endpoint that fan-out reads: enough to decide [`Endpoint::wants`]
/// without loading secrets, headers and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFilter {
    pub id: EndpointId,
    pub disabled: bool,
    pub event_types: Option<Vec<String>>,
    pub channels: Option<Vec<String>>,
}

impl EndpointFilter {
    /// The same rule as [`Endpoint::wants`].
    pub fn wants(&self, event_type: &str, channels: Option<&[String]>) -> bool {
        fan_out_matches(
            self.disabled,
            self.event_types.as_deref(),
            self.channels.as_deref(),
            event_type,
            channels,
        )
    }
}

fn fan_out_matches(
    disabled: bool,
    event_types: Option<&[String]>,
    endpoint_channels: Option<&[String]>,
    event_type: &str,
    channels: Option<&[String]>,
) -> bool {
    if disabled {
        return false;
    }
    let type_ok = event_types.is_none_or(|types| types.iter().any(|t| t == event_type));
    let channel_ok = match (endpoint_channels, channels) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(mine), Some(theirs)) => mine.iter().any(|c| theirs.contains(c)),
    };
    type_ok && channel_ok
}

/// A kind of event an application can send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventType {
    pub name: String,
    pub description: String,
    pub archived: bool,
    pub deprecated: bool,
    pub schemas: Option<serde_json::Value>,
    pub feature_flag: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EventType {
    /// Whether creating this event type where `existing` has its name replaces it: an
    /// archived event type is brought back, overwritten but keeping its creation time
    /// (`Ok(true)`); a live one is a conflict ([`Code::EventTypeExists`]); with none,
    /// the event type is new (`Ok(false)`).
    pub fn revive(&mut self, existing: Option<&EventType>) -> Result<bool> {
        match existing {
            None => Ok(false),
            Some(existing) if existing.archived => {
                self.created_at = existing.created_at;
                Ok(true)
            }
            Some(_) => Err(Error::Conflict {
                code: Code::EventTypeExists,
                detail: "an event type with this name already exists".into(),
            }),
        }
    }
}

/// Headers that describe one hop's connection or framing. They are never copied onto
/// another request (a forwarded one, or a delivery with an endpoint's custom headers):
/// doing so would corrupt it.
pub const FRAMING_HEADERS: [&str; 9] = [
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers whose value is a credential (a password, a token, a shared secret) or answers
/// one. They are never logged as received, never copied from a provider's request onto
/// forwarded deliveries, and an endpoint's own are reported as sensitive rather than shown.
/// Signature headers are not among them: a signature proves one body and is no use for
/// another.
pub const CREDENTIAL_HEADERS: [&str; 11] = [
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "proxy-authenticate",
    "cookie",
    "x-auth-token",
    "x-access-token",
    "x-api-key",
    "api-key",
    "x-webhook-secret",
    "x-webhook-token",
];

/// What the request log and recorded attempts show in place of a credential header's value.
pub const REDACTED: &str = "[redacted]";

/// Whether `name` (any case) is one of [`CREDENTIAL_HEADERS`].
pub fn is_credential_header(name: &str) -> bool {
    CREDENTIAL_HEADERS
        .iter()
        .any(|credential| credential.eq_ignore_ascii_case(name))
}

/// An event sent to an application, fanned out to its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub app_id: AppId,
    pub event_id: Option<String>,
    pub event_type: String,
    /// The payload exactly as received (JSON text, or a forwarded request's raw body);
    /// `None` once expunged.
    pub payload: Option<String>,
    pub channels: Option<Vec<String>>,
    /// Headers every delivery of this message carries, below the endpoint's own and the
    /// signature headers (a forwarded request's `content-type` and pass-through headers).
    pub headers: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
}

/// Delivery status of a message to an endpoint, with the wire values of the Svix API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageStatus {
    Success = 0,
    Pending = 1,
    Fail = 2,
    Sending = 3,
}

impl MessageStatus {
    /// The wire integer.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The status for a wire integer.
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::Success),
            1 => Some(Self::Pending),
            2 => Some(Self::Fail),
            3 => Some(Self::Sending),
            _ => None,
        }
    }

    /// The wire text (`statusText`).
    pub fn text(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Pending => "pending",
            Self::Fail => "fail",
            Self::Sending => "sending",
        }
    }
}

/// Why an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TriggerType {
    /// By the schedule: the first try and its retries.
    Scheduled = 0,
    /// By a person: resend or recover. Tried once.
    Manual = 1,
}

impl TriggerType {
    /// The wire integer.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The trigger for a wire integer.
    pub fn from_code(code: i64) -> Self {
        if code == 1 {
            Self::Manual
        } else {
            Self::Scheduled
        }
    }
}

/// How an attempt failed before or without an HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Timeout,
    ConnectionRefused,
    Connection,
    Tls,
    Dns,
    SsrfRefused,
    Redirect,
    InvalidUrl,
}

impl ErrorKind {
    /// Stable text for storage and display.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::ConnectionRefused => "connection_refused",
            Self::Connection => "connection",
            Self::Tls => "tls",
            Self::Dns => "dns",
            Self::SsrfRefused => "ssrf_refused",
            Self::Redirect => "redirect",
            Self::InvalidUrl => "invalid_url",
        }
    }

    /// Parses [`ErrorKind::as_str`] text.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Timeout,
            Self::ConnectionRefused,
            Self::Connection,
            Self::Tls,
            Self::Dns,
            Self::SsrfRefused,
            Self::Redirect,
            Self::InvalidUrl,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// One HTTP try of a message to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub id: AttemptId,
    pub app_id: AppId,
    pub msg_id: MessageId,
    pub endpoint_id: EndpointId,
    pub url: String,
    /// `Success` or `Fail`.
    pub status: MessageStatus,
    /// The HTTP status, 0 when there was no answer.
    pub response_status_code: i16,
    /// The answer's body, cut to a bounded excerpt; `None` once expunged.
    pub response: Option<String>,
    /// The answer's headers, as received.
    pub response_headers: Vec<(String, String)>,
    /// The request's headers as sent (the signature's among them), credentials' values
    /// [redacted](is_credential_header); empty when nothing was sent.
    pub request_headers: Vec<(String, String)>,
    pub response_duration_ms: i64,
    pub trigger_type: TriggerType,
    pub error_kind: Option<ErrorKind>,
    pub created_at: DateTime<Utc>,
}

/// Text as every store keeps it. PostgreSQL's `text` and `jsonb` cannot hold the NUL
/// character, so that an answer holding one is recorded, and the same on both backends,
/// every store keeps it as U+FFFD (the replacement character) instead.
pub fn storable_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

impl Attempt {
    /// The answer's body excerpt as stores keep it ([`storable_text`]).
    pub fn storable_response(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.response.as_deref().map(storable_text)
    }
}

/// Headers as stores keep them ([`storable_text`]).
pub fn storable_headers(
    headers: &[(String, String)],
) -> Vec<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
    headers
        .iter()
        .map(|(name, value)| (storable_text(name), storable_text(value)))
        .collect()
}

/// The delivery of one message to one endpoint: its status and its place in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub app_id: AppId,
    pub msg_id: MessageId,
    pub endpoint_id: EndpointId,
    pub status: MessageStatus,
    pub next_attempt: Option<DateTime<Utc>>,
    /// Scheduled attempts made so far.
    pub attempts: u32,
    /// Why the next attempt is due: manual attempts are tried once.
    pub trigger: TriggerType,
    pub updated_at: DateTime<Utc>,
}

/// Counts of an endpoint's deliveries by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStats {
    pub success: i64,
    pub pending: i64,
    pub sending: i64,
    pub fail: i64,
}

impl EndpointStats {
    /// The statistics of `(status code, deliveries)` counts as a store groups them. A
    /// status code this build does not know counts as a failure.
    pub fn from_counts(counts: impl IntoIterator<Item = (i64, i64)>) -> Self {
        let mut stats = EndpointStats::default();
        for (status, n) in counts {
            match MessageStatus::from_code(status) {
                Some(MessageStatus::Success) => stats.success += n,
                Some(MessageStatus::Pending) => stats.pending += n,
                Some(MessageStatus::Sending) => stats.sending += n,
                Some(MessageStatus::Fail) | None => stats.fail += n,
            }
        }
        stats
    }
}

/// A stored answer to a POST with an `idempotency-key`, replayed to retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotentResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl IdempotentResponse {
    /// The status of a [`pending`](Self::pending) answer. Only 2xx answers are ever
    /// recorded otherwise, so a record with this status is always a placeholder.
    pub const PENDING: u16 = 409;

    /// The placeholder kept while a request that calls out (a job submitted to its
    /// provider) runs: a retry that arrives meanwhile, on any node, is told to wait instead
    /// of calling out twice. The request's own answer replaces it.
    pub fn pending() -> Self {
        IdempotentResponse {
            status: Self::PENDING,
            body: serde_json::to_vec(&serde_json::json!({
                "code": "idempotency_conflict",
                "detail": "a request with this idempotency-key is still being carried out; \
                           retry it once that one has answered",
            }))
            .expect("a JSON literal serializes"),
        }
    }
}

/// An idempotency record to commit together with the write it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// Hash of the caller's credentials, the key and the request URL.
    pub key: String,
    pub response: IdempotentResponse,
    pub expires_at: DateTime<Utc>,
}

/// An API bearer token, stored by the SHA-256 of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub hash: String,
    /// The application the token is scoped to; `None` for an admin token.
    pub app_id: Option<AppId>,
    pub created_at: DateTime<Utc>,
    /// When the token stops working; `None` for one that lasts until revoked (admin
    /// tokens). App tokens are handed to customers' browsers, so each has the lifetime
    /// its issuer asked for, and a leaked one does not work for ever.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Token {
    /// Whether the token no longer works at `now`: it works until just before its
    /// expiry, not at it.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|expires_at| now >= expires_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(types: Option<&[&str]>, channels: Option<&[&str]>) -> Endpoint {
        let now = Utc::now();
        let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        Endpoint {
            id: EndpointId::new(),
            app_id: AppId::new(),
            uid: None,
            url: "https://example.test".into(),
            description: String::new(),
            disabled: false,
            throttle_rate: None,
            event_types: types.map(list),
            channels: channels.map(list),
            metadata: BTreeMap::new(),
            headers: BTreeMap::new(),
            secrets: vec![],
            failing_since: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn fan_out_rules() {
        let ch = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = endpoint(None, None);
        assert!(all.wants("a.b", None));
        assert!(all.wants("a.b", Some(&ch(&["x"]))));

        let typed = endpoint(Some(&["a.b"]), None);
        assert!(typed.wants("a.b", None));
        assert!(!typed.wants("a.c", None));

        let channeled = endpoint(None, Some(&["x", "y"]));
        assert!(!channeled.wants("a.b", None), "no channels, no delivery");
        assert!(channeled.wants("a.b", Some(&ch(&["z", "y"]))));
        assert!(!channeled.wants("a.b", Some(&ch(&["z"]))));

        let mut disabled = endpoint(None, None);
        disabled.disabled = true;
        assert!(!disabled.wants("a.b", None));
    }

    #[test]
    fn rotated_keys_sign_until_their_grace_period_ends() {
        let now = Utc::now();
        let mut ep = endpoint(None, None);
        ep.secrets = vec![
            EndpointSecret {
                key: "new".into(),
                expires_at: None,
            },
            EndpointSecret {
                key: "old".into(),
                expires_at: Some(now + chrono::Duration::seconds(10)),
            },
            EndpointSecret {
                key: "ancient".into(),
                expires_at: Some(now - chrono::Duration::seconds(1)),
            },
        ];
        assert_eq!(ep.signing_keys(now), vec!["new", "old"]);
        assert_eq!(ep.current_secret(), "new");
    }

    #[test]
    fn rotation_keeps_the_old_secret_for_the_grace_period_and_drops_expired_ones() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let day = std::time::Duration::from_secs(86_400);
        let mut ep = endpoint(None, None);
        ep.secrets = vec![
            EndpointSecret {
                key: "current".into(),
                expires_at: None,
            },
            EndpointSecret {
                key: "expired".into(),
                expires_at: Some(now - chrono::Duration::seconds(1)),
            },
        ];
        ep.rotate_secret("next".into(), day, now).unwrap();
        let keys: Vec<_> = ep
            .secrets
            .iter()
            .map(|s| (s.key.as_str(), s.expires_at))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("next", None),
                ("current", Some(now + chrono::Duration::days(1))),
            ]
        );
        assert_eq!(ep.updated_at, now);
        // A second rotation keeps the first one's expiry.
        ep.rotate_secret("third".into(), day * 2, now).unwrap();
        assert_eq!(
            ep.secrets[2].expires_at,
            Some(now + chrono::Duration::days(1))
        );
        assert_eq!(
            ep.secrets[1].expires_at,
            Some(now + chrono::Duration::days(2))
        );
    }

    #[test]
    fn rotation_refuses_more_old_secrets_than_the_limit() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut ep = endpoint(None, None);
        ep.secrets = vec![EndpointSecret {
            key: "k0".into(),
            expires_at: None,
        }];
        for n in 1..=Endpoint::MAX_OLD_SECRETS {
            ep.rotate_secret(format!("k{n}"), std::time::Duration::from_secs(60), now)
                .unwrap();
        }
        let before = ep.secrets.clone();
        let error = ep
            .rotate_secret(
                "one-too-many".into(),
                std::time::Duration::from_secs(60),
                now,
            )
            .unwrap_err();
        assert_eq!(error.code(), Code::LimitReached);
        assert_eq!(ep.secrets, before, "a refused rotation changes nothing");
    }

    #[test]
    fn stats_count_unknown_statuses_as_failures() {
        let counts = [
            (MessageStatus::Success.code(), 3),
            (MessageStatus::Pending.code(), 5),
            (MessageStatus::Fail.code(), 7),
            (MessageStatus::Sending.code(), 11),
            (99, 1),
        ];
        let stats = EndpointStats::from_counts(counts);
        assert_eq!(
            (stats.success, stats.pending, stats.sending, stats.fail),
            (3, 5, 11, 7 + 1)
        );
    }

    #[test]
    fn creating_over_an_archived_event_type_revives_it() {
        let at = |secs| DateTime::from_timestamp(secs, 0).unwrap();
        let event_type = |archived, created| EventType {
            name: "job.done".into(),
            description: String::new(),
            archived,
            deprecated: false,
            schemas: None,
            feature_flag: None,
            created_at: at(created),
            updated_at: at(created),
        };
        let mut new = event_type(false, 50);
        assert!(!new.revive(None).unwrap());
        assert!(new.revive(Some(&event_type(true, 10))).unwrap());
        assert_eq!(new.created_at, at(10));
        let error = new.revive(Some(&event_type(false, 10))).unwrap_err();
        assert_eq!(error.code(), Code::EventTypeExists);
    }

    #[test]
    fn tokens_expire_at_their_expiry_and_admin_tokens_never() {
        let at = |secs| DateTime::from_timestamp(secs, 0).unwrap();
        let mut token = Token {
            hash: "h".into(),
            app_id: Some(AppId::new()),
            created_at: at(0),
            expires_at: Some(at(100)),
        };
        assert!(!token.is_expired(at(99)));
        assert!(token.is_expired(at(100)));
        assert!(token.is_expired(at(101)));
        token.expires_at = None;
        assert!(!token.is_expired(at(i64::from(i32::MAX))));
    }
}
