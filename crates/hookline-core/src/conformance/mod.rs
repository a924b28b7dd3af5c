//! One conformance suite for every storage backend.
//!
//! Each check is a `pub async fn NAME(store: Arc<dyn Store>)` over a fresh, empty store,
//! in the module of its role. A backend's tests instantiate them all with
//! [`store_conformance_suite!`](crate::store_conformance_suite), giving it an expression
//! that opens a new store:
//!
//! ```ignore
//! hookline_core::store_conformance_suite!(open_fresh_store().await);
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::Error;
use crate::Store;
use crate::id::{AppId, AttemptId, EndpointId, IngestRequestId, MessageId, SourceId};
use crate::ingest::{IngestRequest, IngestedRequest, NewIngestRequest, Source, Verdict};
use crate::model::{
    Application, Attempt, Endpoint, EndpointSecret, EventType, IdempotencyRecord,
    IdempotentResponse, Message, MessageStatus, Token, TriggerType,
};
use crate::page::{Cursor, ListQuery, Order};
use crate::store::{AttemptFilter, AttemptOutcome, CreateLease, MessageFilter, NewMessage};

mod delivery;
mod idempotency;
mod ingest;
mod jobs;
mod messages;
mod resources;
pub mod sealed;
mod tokens;

pub use delivery::*;
pub use idempotency::*;
pub use ingest::*;
pub use jobs::*;
pub use messages::*;
pub use resources::*;
pub use tokens::*;

// `store_conformance_suite!`, written by `build.rs` from the checks of the modules above.
include!(concat!(env!("OUT_DIR"), "/conformance_suite.rs"));

/// The time, as a server would read it.
fn clock_now() -> DateTime<Utc> {
    crate::Clock::now(&crate::clock::SystemClock)
}

fn app(uid: Option<&str>) -> Application {
    let now = clock_now();
    Application {
        id: AppId::new(),
        uid: uid.map(str::to_owned),
        name: "Acme".into(),
        throttle_rate: None,
        metadata: BTreeMap::from([("tier".into(), "gold".into())]),
        created_at: now,
        updated_at: now,
    }
}

/// An endpoint of `app` for `types` on `channels` (`None`: all), with one secret.
pub fn endpoint(app: &AppId, types: Option<&[&str]>, channels: Option<&[&str]>) -> Endpoint {
    let now = clock_now();
    let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
    Endpoint {
        id: EndpointId::new(),
        app_id: app.clone(),
        uid: None,
        url: "https://example.test/hook".into(),
        description: String::new(),
        disabled: false,
        throttle_rate: None,
        event_types: types.map(list),
        channels: channels.map(list),
        metadata: BTreeMap::new(),
        headers: BTreeMap::from([("x-team".into(), "a".into())]),
        secrets: vec![EndpointSecret {
            key: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            expires_at: None,
        }],
        failing_since: None,
        created_at: now,
        updated_at: now,
    }
}

fn message(app: &AppId, event_type: &str, channels: Option<&[&str]>) -> Message {
    Message {
        id: MessageId::new(),
        app_id: app.clone(),
        event_id: None,
        event_type: event_type.into(),
        payload: Some(r#"{"n": 1}"#.into()),
        channels: channels.map(|c| c.iter().map(|s| s.to_string()).collect()),
        headers: BTreeMap::new(),
        created_at: clock_now(),
    }
}

fn new_message(message: Message) -> NewMessage {
    NewMessage {
        message,
        only_endpoint: None,
        idempotency: None,
        payload_expires_at: None,
        lease: None,
    }
}

fn first(limit: usize) -> ListQuery {
    ListQuery::first(limit, Order::Ascending)
}

fn outcome(
    msg: &Message,
    endpoint: &EndpointId,
    status: MessageStatus,
    next: Option<DateTime<Utc>>,
    code: i16,
) -> AttemptOutcome {
    AttemptOutcome {
        attempt: Attempt {
            id: AttemptId::new(),
            app_id: msg.app_id.clone(),
            msg_id: msg.id.clone(),
            endpoint_id: endpoint.clone(),
            url: "https://example.test/hook".into(),
            status: if status == MessageStatus::Success {
                MessageStatus::Success
            } else {
                MessageStatus::Fail
            },
            response_status_code: code,
            response: Some("body".into()),
            response_headers: vec![("x-answer".into(), "1".into())],
            request_headers: vec![("webhook-signature".into(), "v1,c2lnbmF0dXJl".into())],
            response_duration_ms: 12,
            trigger_type: TriggerType::Scheduled,
            error_kind: None,
            created_at: clock_now(),
        },
        status,
        next_attempt: next,
        attempts: 1,
        disable_endpoint: false,
        endpoint_failing: None,
        messages: Vec::new(),
    }
}

/// Ids are ordered by millisecond; tests that need distinct times wait a little.
fn tokio_free_sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn source(uid: Option<&str>) -> Source {
    let now = clock_now();
    Source {
        id: SourceId::new(),
        uid: uid.map(str::to_owned),
        name: "Stripe".into(),
        source_type: "stripe".into(),
        config: serde_json::json!({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "n": 2}),
        metadata: BTreeMap::from([("team".into(), "billing".into())]),
        app_id: AppId::new(),
        token: crate::id::random_base62(24),
        previous_token: None,
        previous_token_expires_at: None,
        created_at: now,
        updated_at: now,
    }
}

/// A request as a source receives it: accepted, with bytes that are not UTF-8.
fn received(source: &Source, dedupe_key: Option<&str>) -> IngestRequest {
    IngestRequest {
        id: IngestRequestId::new(),
        source_id: source.id.clone(),
        seq: 0,
        method: "POST".into(),
        path: "/events".into(),
        query: "a=1&a=2".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-dup".into(), "1".into()),
            ("x-dup".into(), "2".into()),
        ],
        body: b"{\"id\":\"evt_1\"}\xff\x00".to_vec(),
        body_size: 16,
        dropped_before: 0,
        verdict: Verdict::Accepted,
        status_code: 200,
        reason_code: "accepted".into(),
        reason: String::new(),
        dedupe_key: dedupe_key.map(str::to_owned),
        event_type: Some("invoice.paid".into()),
        msg_id: None,
        created_at: clock_now(),
    }
}

/// `request` to store with the message that forwards it into the source's hidden
/// application, deduplicated over the last hour.
fn forwarded(source: &Source, mut request: IngestRequest) -> (NewIngestRequest, Message) {
    let message = Message {
        id: MessageId::new(),
        app_id: source.app_id.clone(),
        event_id: None,
        event_type: "invoice.paid".into(),
        payload: Some(r#"{"id":"evt_1"}"#.into()),
        channels: None,
        headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
        created_at: request.created_at,
    };
    request.msg_id = Some(message.id.clone());
    let new = NewIngestRequest {
        dedupe_since: Some(request.created_at - chrono::Duration::hours(1)),
        request,
        messages: vec![new_message(message.clone())],
        refused_cap: None,
    };
    (new, message)
}

/// A future to run beside others in [`join_all`].
type Task<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs the futures together on the current task and returns their outputs in order:
/// enough concurrency for the store to see the requests overlap.
async fn join_all<T>(futures: Vec<Task<'_, T>>) -> Vec<T> {
    let mut pending: Vec<_> = futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("polled to completion"))
        .collect()
}
