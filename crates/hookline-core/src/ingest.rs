//! The resources of the receiving side: sources and the requests they receive.
//!
//! A source forwards through the sending side: it owns a hidden [`crate::model::Application`]
//! (`Source::app_id`) whose endpoints are the source's forwarding endpoints, and each
//! accepted request becomes a message of that application. Retries, dead letters, recover
//! and resend therefore work for forwarded requests exactly as for sent messages.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::id::{AppId, IngestRequestId, MessageId, SourceId};
use crate::model::Application;
use crate::page::{Cursor, ListQuery, Page};
use crate::store::{DeliveryJob, NewMessage};

/// Where one provider's webhooks arrive. Its `Debug` form shows no secret: the config's
/// secret members and the ingest tokens are redacted.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
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

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut config = self.config.clone();
        if let Some(members) = config.as_object_mut() {
            for (name, value) in members.iter_mut() {
                if crate::sealed::SECRET_MEMBERS.contains(&name.as_str()) {
                    *value = "<redacted>".into();
                }
            }
        }
        f.debug_struct("Source")
            .field("id", &self.id)
            .field("uid", &self.uid)
            .field("name", &self.name)
            .field("source_type", &self.source_type)
            .field("config", &config)
            .field("metadata", &self.metadata)
            .field("app_id", &self.app_id)
            .field("token", &"<redacted>")
            .field(
                "previous_token",
                &self.previous_token.as_ref().map(|_| "<redacted>"),
            )
            .field("previous_token_expires_at", &self.previous_token_expires_at)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
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

    /// Whether `token` opens this source's ingest URL at `now`: it is the current token,
    /// or the one rotated out and still in its grace period.
    pub fn answers_to(&self, token: &str, now: DateTime<Utc>) -> bool {
        self.token == token
            || (self.previous_token.as_deref() == Some(token)
                && self
                    .previous_token_expires_at
                    .is_none_or(|expires| expires > now))
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
    /// The exact bytes received, or only their start for a refused request whose body is
    /// over the log's limit (see `body_size`).
    pub body: Vec<u8>,
    /// How many bytes the body had as received: more than `body.len()` when the log keeps
    /// only the start of it. Refused requests are anyone's to send, so the log keeps a
    /// bounded part of each rather than whatever a flood of them carries.
    pub body_size: i64,
    /// Refused requests of the source that were not logged, because more arrived in a
    /// window than [`RefusedCap`] keeps, since the last refused request that was: the
    /// log says that it skipped some, and how many.
    pub dropped_before: i64,
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
    /// For a refused request: how many of the source's refused requests the log keeps per
    /// window (`None`: all of them).
    pub refused_cap: Option<RefusedCap>,
}

/// How many refused requests of one source the log keeps per window of time. The store
/// counts them in the database, so that nodes sharing one keep `per_window` in all, not
/// each; those over the cap are answered as usual but not logged, and the next refused
/// request that is logged says how many were skipped
/// ([`IngestRequest::dropped_before`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedCap {
    pub per_window: u32,
    pub window: std::time::Duration,
}

/// A source's count of refused requests, as the store keeps it between requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusedTally {
    /// The start of the window counted, in milliseconds since the epoch.
    pub window_start: i64,
    /// Refused requests logged in that window.
    pub logged: i64,
    /// Refused requests not logged since the last one that was.
    pub dropped: i64,
}

impl RefusedCap {
    /// Counts a refused request received at `at` into `tally`: `Some(dropped before it)`
    /// if it is to be logged, `None` if the window's cap is reached.
    ///
    /// Windows are fixed (aligned on the epoch), so every node puts a request in the same
    /// one. A request stamped before the counted window (a node whose clock is behind)
    /// counts in that window rather than starting an older one.
    pub fn count(&self, tally: &mut RefusedTally, at: DateTime<Utc>) -> Option<i64> {
        let window = i64::try_from(self.window.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let start = at.timestamp_millis().div_euclid(window) * window;
        if start > tally.window_start {
            tally.window_start = start;
            tally.logged = 0;
        }
        if tally.logged < i64::from(self.per_window) {
            tally.logged += 1;
            Some(std::mem::take(&mut tally.dropped))
        } else {
            tally.dropped += 1;
            None
        }
    }
}

/// What [`IngestStore::ingest`](crate::store::IngestStore::ingest) stored.
#[derive(Debug, Clone)]
pub struct IngestedRequest {
    pub id: IngestRequestId,
    pub seq: i64,
    pub verdict: Verdict,
    /// For a duplicate: the request it repeats.
    pub original: Option<IngestRequestId>,
    /// Whether the request is in the log: a refused request over its source's
    /// [`RefusedCap`] is not (and has `seq` 0).
    pub logged: bool,
    /// For a refused request: if logged, how many were skipped before it; if not, how many
    /// have been skipped since the last one logged, this one included.
    pub dropped: i64,
    /// The deliveries of its forwarding messages leased as they were created
    /// ([`NewMessage::lease`](crate::store::NewMessage::lease)), ready to make.
    pub leased: Vec<DeliveryJob>,
    /// How many of its forwarding messages' deliveries wait for a claim instead.
    pub queued: usize,
}

impl IngestedRequest {
    /// The answer for `request`, logged under its `seq`; `original` is the request it
    /// repeats, if it is a duplicate.
    pub fn logged(request: &IngestRequest, original: Option<IngestRequestId>) -> Self {
        IngestedRequest {
            id: request.id.clone(),
            seq: request.seq,
            verdict: request.verdict,
            original,
            logged: true,
            dropped: request.dropped_before,
            leased: Vec::new(),
            queued: 0,
        }
    }

    /// The answer for a refused `request` over its source's [`RefusedCap`], not logged:
    /// `dropped` refused requests skipped since the last one logged, this one included.
    pub fn skipped(request: &IngestRequest, dropped: i64) -> Self {
        IngestedRequest {
            id: request.id.clone(),
            seq: 0,
            verdict: request.verdict,
            original: None,
            logged: false,
            dropped,
            leased: Vec::new(),
            queued: 0,
        }
    }
}

/// What storing a request answers when the application it forwards to is deleted while
/// the request is stored: a failure to store it (500, which the provider retries; the
/// retry finds no application and forwards nothing), not the `NotFound` of the message's
/// create, which would tell the provider the webhook was unwanted.
pub fn forwarding_failed(error: Error) -> Error {
    match error {
        Error::NotFound("application") => Error::Storage(
            "the application a request forwards to was deleted while it was stored".into(),
        ),
        other => other,
    }
}

/// How many of `sizes` (body sizes, in the order read) to load so that their bodies
/// stay within `budget` bytes: all those whose total fits, and always the first, so that
/// a reader moves on however large one body is.
pub fn within_budget(sizes: impl IntoIterator<Item = i64>, budget: usize) -> usize {
    let budget = u64::try_from(budget).unwrap_or(u64::MAX);
    let mut total: u64 = 0;
    let mut count = 0;
    for size in sizes {
        let size = u64::try_from(size).unwrap_or(0);
        if count > 0 && total.saturating_add(size) > budget {
            break;
        }
        total = total.saturating_add(size);
        count += 1;
    }
    count
}

/// A page of the request log, read as `(id, body size)` pairs, cut to the ids whose
/// bodies fit `budget` ([`within_budget`]), in the scan's order: a page read backwards
/// keeps the requests next to its cursor, so that paging on misses none. A cut page is
/// not `done`, and its iterators continue from what it kept. What both stores load their
/// log pages by, bodies last.
pub fn page_within_budget(
    sizes: Page<(String, i64)>,
    query: &ListQuery,
    budget: usize,
) -> Page<String> {
    let backwards = matches!(query.cursor, Some(Cursor::Before(_)));
    let total = sizes.data.len();
    let kept = if backwards {
        within_budget(sizes.data.iter().rev().map(|(_, size)| *size), budget)
    } else {
        within_budget(sizes.data.iter().map(|(_, size)| *size), budget)
    };
    let range = if backwards {
        total - kept..total
    } else {
        0..kept
    };
    let ids: Vec<String> = sizes.data[range].iter().map(|(id, _)| id.clone()).collect();
    if kept == total {
        return sizes.map(|(id, _)| id);
    }
    Page {
        iterator: ids.last().cloned(),
        prev_iterator: ids.first().map(|first| format!("-{first}")),
        data: ids,
        done: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::Order;

    #[test]
    fn a_forwarding_application_gone_is_a_failure_to_store_not_a_404() {
        let gone = forwarding_failed(Error::NotFound("application"));
        assert_eq!(gone.code(), crate::Code::ServerError, "{gone:?}");
        let source = forwarding_failed(Error::NotFound("source"));
        assert!(matches!(source, Error::NotFound("source")));
        let conflict = forwarding_failed(Error::conflict("taken"));
        assert_eq!(conflict.code(), crate::Code::Conflict);
    }

    #[test]
    fn a_page_is_cut_at_its_budget_next_to_its_cursor() {
        assert_eq!(within_budget([5, 5, 5], 10), 2);
        assert_eq!(within_budget([50, 1], 10), 1, "one at least");
        assert_eq!(within_budget([], 10), 0);
        let sizes = |n: &[(&str, i64)]| Page {
            data: n.iter().map(|(id, s)| ((*id).to_owned(), *s)).collect(),
            iterator: n.last().map(|(id, _)| (*id).to_owned()),
            prev_iterator: n.first().map(|(id, _)| format!("-{id}")),
            done: true,
        };
        let forward = ListQuery::first(3, Order::Ascending);
        let page = page_within_budget(sizes(&[("a", 4), ("b", 4), ("c", 4)]), &forward, 9);
        assert_eq!(page.data, ["a", "b"]);
        assert_eq!(page.iterator.as_deref(), Some("b"));
        assert!(!page.done, "cut: more to read");
        let whole = page_within_budget(sizes(&[("a", 4), ("b", 4)]), &forward, 9);
        assert!(whole.done);
        let backwards = ListQuery {
            cursor: Some(Cursor::parse("-d")),
            ..forward
        };
        let page = page_within_budget(sizes(&[("a", 4), ("b", 4), ("c", 4)]), &backwards, 9);
        assert_eq!(page.data, ["b", "c"], "the ones next to the cursor");
        assert_eq!(page.prev_iterator.as_deref(), Some("-b"));
        assert!(!page.done);
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let source = Source {
            id: SourceId::new_at(now),
            uid: None,
            name: "bearer".into(),
            source_type: "bearer".into(),
            config: serde_json::json!({"tokens": ["tok-a91f"], "toleranceSeconds": 60}),
            metadata: BTreeMap::new(),
            app_id: AppId::new_at(now),
            token: "ingest-7c2e".into(),
            previous_token: Some("ingest-old-55d1".into()),
            previous_token_expires_at: None,
            created_at: now,
            updated_at: now,
        };
        let shown = format!("{source:?}");
        for secret in ["tok-a91f", "ingest-7c2e", "ingest-old-55d1"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("toleranceSeconds"), "{shown}");
    }

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

    #[test]
    fn the_refused_cap_keeps_so_many_per_window_and_counts_the_rest() {
        let cap = RefusedCap {
            per_window: 2,
            window: std::time::Duration::from_secs(60),
        };
        let minute =
            |m: i64, s: i64| DateTime::from_timestamp(1_700_000_040 + m * 60 + s, 0).unwrap();
        let mut tally = RefusedTally::default();
        assert_eq!(cap.count(&mut tally, minute(0, 1)), Some(0));
        assert_eq!(cap.count(&mut tally, minute(0, 2)), Some(0));
        assert_eq!(cap.count(&mut tally, minute(0, 3)), None);
        assert_eq!(cap.count(&mut tally, minute(0, 59)), None);
        assert_eq!(tally.dropped, 2);
        assert_eq!(
            cap.count(&mut tally, minute(0, 0) - chrono::Duration::seconds(30)),
            None,
            "a late clock counts in the current window"
        );
        assert_eq!(
            cap.count(&mut tally, minute(1, 0)),
            Some(3),
            "the next window's first says how many were skipped"
        );
        assert_eq!(tally.dropped, 0);
        assert_eq!(cap.count(&mut tally, minute(1, 1)), Some(0));
        assert_eq!(cap.count(&mut tally, minute(1, 2)), None);
    }
}
