//! The resources of the receiving side: sources and the requests they receive.
//!
//! A source forwards through the sending side: it owns a hidden [`crate::model::Application`]
//! (`Source::app_id`) whose endpoints are the source's forwarding endpoints, and each
//! accepted request becomes a message of that application. Retries, dead letters, recover
//! and resend therefore work for forwarded requests exactly as for sent messages.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{AppId, IngestRequestId, MessageId, SourceId};
use crate::model::Application;
use crate::store::NewMessage;

/// Where one provider's webhooks arrive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub id: SourceId,
    pub uid: Option<String>,
    pub name: String,
    /// The source type (`open-ai`, `github`, `hmac`, …).
    pub source_type: String,
    /// The type's configuration as given (secrets included); validated by the API layer.
    pub config: serde_json::Value,
    pub metadata: BTreeMap<String, String>,
    /// The hidden application holding the forwarding endpoints and forwarded messages.
    pub app_id: AppId,
    /// The secret part of the ingest URL.
    pub token: String,
    /// The token replaced by the last rotation, valid until `previous_token_expires_at`.
    pub previous_token: Option<String>,
    pub previous_token_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Source {
    /// How long a rotated-out ingest token keeps working.
    pub const TOKEN_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

    /// Makes `token` the source's ingest token at `now`; the one it replaces keeps working
    /// for [`Source::TOKEN_GRACE`].
    pub fn rotate_token(&mut self, token: String, now: DateTime<Utc>) {
        self.previous_token = Some(std::mem::replace(&mut self.token, token));
        self.previous_token_expires_at =
            Some(now + chrono::Duration::from_std(Self::TOKEN_GRACE).unwrap_or_default());
        self.updated_at = now;
    }

    /// The hidden application the store creates with the source: named after it, with no
    /// uid and no metadata of its own.
    pub fn hidden_app(&self) -> Application {
        Application {
            id: self.app_id.clone(),
            uid: None,
            name: format!("source {}", self.name),
            throttle_rate: None,
            metadata: BTreeMap::new(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// What became of a received request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Verified, stored and forwarded.
    Accepted,
    /// Verified, but already accepted inside the dedupe window: stored, not forwarded.
    Duplicate,
    /// Refused (signature, size, …): stored for debugging, never forwarded.
    Rejected,
}

impl Verdict {
    /// Stable text for storage and display.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
        }
    }

    /// Parses [`Verdict::as_str`] text.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Accepted, Self::Duplicate, Self::Rejected]
            .into_iter()
            .find(|verdict| verdict.as_str() == text)
    }
}

/// One request a source received, as it arrived, with what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestRequest {
    pub id: IngestRequestId,
    pub source_id: SourceId,
    /// Commit order among the source's requests, assigned by the store: the cursor of live
    /// streams. Zero until stored.
    pub seq: i64,
    pub method: String,
    /// The path after `/in/{token}`, starting with `/` (just `/` when there is none).
    pub path: String,
    /// The query string without `?`, empty when there is none.
    pub query: String,
    /// Headers in arrival order, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The exact bytes received.
    pub body: Vec<u8>,
    pub verdict: Verdict,
    /// The HTTP status the request was answered with.
    pub status_code: i16,
    /// A stable code for the verdict (`accepted`, `duplicate`, `no_signature_matched`, …).
    pub reason_code: String,
    /// Why, in words; empty when accepted.
    pub reason: String,
    /// The key duplicates are recognised by.
    pub dedupe_key: Option<String>,
    /// The provider's event type, when the body names one.
    pub event_type: Option<String>,
    /// The message that forwards it (accepted requests only).
    pub msg_id: Option<MessageId>,
    pub created_at: DateTime<Utc>,
}

impl IngestRequest {
    /// Turns an accepted request into a duplicate of `original`, as a store records it
    /// when the dedupe check finds one: not forwarded, so no message.
    pub fn mark_duplicate_of(&mut self, original: &IngestRequestId) {
        self.verdict = Verdict::Duplicate;
        self.reason_code = "duplicate".into();
        self.reason = format!("duplicate of {original}");
        self.msg_id = None;
    }
}

/// A received request to store, with what to do with it in the same transaction.
#[derive(Debug, Clone)]
pub struct NewIngestRequest {
    /// `verdict` is `Accepted` or `Rejected`; the store turns an accepted request into a
    /// `Duplicate` when `dedupe` finds an earlier accepted one.
    pub request: IngestRequest,
    /// Look for an accepted request of the same source with `request.dedupe_key` created
    /// at or after this time.
    pub dedupe_since: Option<DateTime<Utc>>,
    /// Messages that forward the request, created only if it stays accepted: the first
    /// into the source's hidden application, then optionally one into a sending app.
    pub messages: Vec<NewMessage>,
}

/// What [`IngestStore::ingest`](crate::store::IngestStore::ingest) stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestedRequest {
    pub id: IngestRequestId,
    pub seq: i64,
    pub verdict: Verdict,
    /// For a duplicate: the request it repeats.
    pub original: Option<IngestRequestId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_token_keeps_working_for_the_grace_period() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut source = Source {
            id: SourceId::new_at(now),
            uid: None,
            name: "openai".into(),
            source_type: "open-ai".into(),
            config: serde_json::json!({}),
            metadata: BTreeMap::new(),
            app_id: AppId::new_at(now),
            token: "first".into(),
            previous_token: None,
            previous_token_expires_at: None,
            created_at: now,
            updated_at: now,
        };
        let later = now + chrono::Duration::seconds(60);
        source.rotate_token("second".into(), later);
        assert_eq!(source.token, "second");
        assert_eq!(source.previous_token.as_deref(), Some("first"));
        assert_eq!(
            source.previous_token_expires_at,
            Some(later + chrono::Duration::hours(24))
        );
        assert_eq!(source.updated_at, later);
    }
}
