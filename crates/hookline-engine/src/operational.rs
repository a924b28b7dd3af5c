//! Operational webhooks: events about deliveries themselves (`message.attempt.exhausted`,
//! `.failing`, `.recovered`, `endpoint.disabled`), sent to the operator's own endpoint with
//! the Svix payloads, signed with Standard Webhooks.
//!
//! They are best effort by design: a small bounded queue, a few tries each, and when the
//! queue is full the event is dropped with a warning. Delivery never waits for them.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookline_core::SharedClock;
use hookline_core::id::{AppId, AttemptId, EndpointId, MessageId};
use hookline_core::model::Attempt;
use hookline_core::store::DeliveryJob;
use hookline_signature::{Keyset, Message, Scheme};
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Error;
use crate::http::HttpClient;

/// Events waiting to be sent; beyond this, new ones are dropped.
const QUEUE: usize = 1024;
/// Waits before the second, third and fourth try of an event.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];

/// Where operational events go, and the Standard Webhooks secret (`whsec_…`) that signs
/// them.
#[derive(Clone, PartialEq, Eq)]
pub struct OperationalEndpoint {
    pub url: String,
    pub secret: String,
}

impl fmt::Debug for OperationalEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperationalEndpoint")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl OperationalEndpoint {
    /// The key set that signs events, or why the secret cannot sign.
    pub(crate) fn keyset(&self) -> Result<Keyset, Error> {
        Keyset::new(Scheme::Standard, [&self.secret]).map_err(Error::OperationalSecret)
    }
}

/// An event about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptEvent {
    /// The schedule ran out with no success.
    Exhausted,
    /// The fourth attempt failed.
    Failing,
    /// Success after a failing event.
    Recovered,
}

impl AttemptEvent {
    fn name(self) -> &'static str {
        match self {
            AttemptEvent::Exhausted => "message.attempt.exhausted",
            AttemptEvent::Failing => "message.attempt.failing",
            AttemptEvent::Recovered => "message.attempt.recovered",
        }
    }
}

/// One operational event, serialized as the Svix schemas have it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Event {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: DateTime<Utc>,
    data: EventData,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
enum EventData {
    Attempt(AttemptData),
    Endpoint(EndpointData),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct AttemptData {
    app_id: AppId,
    app_uid: Option<String>,
    endpoint_id: EndpointId,
    msg_id: MessageId,
    msg_event_id: Option<String>,
    last_attempt: LastAttempt,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct LastAttempt {
    id: AttemptId,
    response_status_code: i16,
    timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct EndpointData {
    app_id: AppId,
    app_uid: Option<String>,
    endpoint_id: EndpointId,
    endpoint_uid: Option<String>,
    fail_since: DateTime<Utc>,
}

impl Event {
    /// An event about `attempt`, the last attempt of `job`.
    pub fn attempt(kind: AttemptEvent, job: &DeliveryJob, attempt: &Attempt) -> Self {
        Event {
            kind: kind.name(),
            timestamp: attempt.created_at,
            data: EventData::Attempt(AttemptData {
                app_id: job.message.app_id.clone(),
                app_uid: job.app_uid.clone(),
                endpoint_id: job.endpoint.id.clone(),
                msg_id: job.message.id.clone(),
                msg_event_id: job.message.event_id.clone(),
                last_attempt: LastAttempt {
                    id: attempt.id.clone(),
                    response_status_code: attempt.response_status_code,
                    timestamp: attempt.created_at,
                },
            }),
        }
    }

    /// The endpoint of `job` was disabled at `at`; it had been failing since `fail_since`.
    pub fn endpoint_disabled(
        job: &DeliveryJob,
        fail_since: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Self {
        Event {
            kind: "endpoint.disabled",
            timestamp: at,
            data: EventData::Endpoint(EndpointData {
                app_id: job.endpoint.app_id.clone(),
                app_uid: job.app_uid.clone(),
                endpoint_id: job.endpoint.id.clone(),
                endpoint_uid: job.endpoint.uid.clone(),
                fail_since,
            }),
        }
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    fn disabled_endpoint(&self) -> Option<&EndpointId> {
        match &self.data {
            EventData::Endpoint(data) => Some(&data.endpoint_id),
            EventData::Attempt(_) => None,
        }
    }
}

/// Hands events to the sender task. Owned by the one task that records outcomes.
#[derive(Debug)]
pub(crate) struct Publisher {
    queue: mpsc::Sender<Event>,
    /// Endpoints announced disabled lately, so that deliveries already in flight when
    /// the endpoint was disabled do not announce it again.
    announced: HashMap<EndpointId, Instant>,
    /// How long a disabled endpoint's deliveries can still be in flight (a lease).
    quiet: Duration,
}

impl Publisher {
    /// Queues `event` unless it repeats a recent announcement or the queue is full.
    pub fn publish(&mut self, event: Event) {
        if let Some(endpoint) = event.disabled_endpoint() {
            let now = Instant::now();
            let quiet = self.quiet;
            self.announced
                .retain(|_, at| now.duration_since(*at) < quiet);
            if self.announced.contains_key(endpoint) {
                return;
            }
            self.announced.insert(endpoint.clone(), now);
        }
        if let Err(error) = self.queue.try_send(event) {
            let event = match error {
                mpsc::error::TrySendError::Full(event)
                | mpsc::error::TrySendError::Closed(event) => event,
            };
            tracing::warn!(
                event_type = event.kind(),
                "operational event queue full; event dropped"
            );
        }
    }
}

/// Starts the task that sends events to `endpoint`; it ends once the publisher is dropped
/// and the queue is drained. `quiet` is how long in-flight deliveries may outlive a
/// disable.
pub(crate) fn spawn(
    endpoint: &OperationalEndpoint,
    timeout: Duration,
    quiet: Duration,
    clock: SharedClock,
) -> Result<(Publisher, JoinHandle<()>), Error> {
    let keyset = endpoint.keyset()?;
    let client = HttpClient::trusted().map_err(Error::HttpClient)?;
    let (queue, events) = mpsc::channel(QUEUE);
    let sender = Sender {
        client,
        url: endpoint.url.clone(),
        keyset,
        timeout,
        clock,
    };
    let task = tokio::spawn(sender.run(events));
    let publisher = Publisher {
        queue,
        announced: HashMap::new(),
        quiet,
    };
    Ok((publisher, task))
}

#[derive(Debug)]
struct Sender {
    client: HttpClient,
    url: String,
    keyset: Keyset,
    timeout: Duration,
    clock: SharedClock,
}

impl Sender {
    async fn run(self, mut events: mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            self.send(&event).await;
        }
    }

    /// Tries `event` a few times; the same `webhook-id` each time, fresh signatures.
    async fn send(&self, event: &Event) {
        let body = match serde_json::to_vec(event) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(event_type = event.kind, %error, "cannot serialize operational event");
                return;
            }
        };
        let id = MessageId::new();
        for (try_index, delay) in std::iter::once(Duration::ZERO)
            .chain(RETRY_DELAYS)
            .enumerate()
        {
            tokio::time::sleep(delay).await;
            let headers = match self.headers(&id, &body) {
                Ok(headers) => headers,
                Err(error) => {
                    tracing::error!(event_type = event.kind, %error, "cannot sign operational event");
                    return;
                }
            };
            let outcome = self
                .client
                .post(&self.url, headers, body.clone(), self.timeout)
                .await;
            match outcome {
                Ok(answer) if (200..300).contains(&answer.status) => {
                    tracing::debug!(event_type = event.kind, msg_id = %id, "operational event sent");
                    return;
                }
                Ok(answer) => tracing::warn!(
                    event_type = event.kind,
                    msg_id = %id,
                    try_number = try_index + 1,
                    status = answer.status,
                    "operational endpoint refused event"
                ),
                Err(failure) => tracing::warn!(
                    event_type = event.kind,
                    msg_id = %id,
                    try_number = try_index + 1,
                    error_kind = failure.kind.as_str(),
                    detail = failure.detail,
                    "operational event not delivered"
                ),
            }
        }
        tracing::error!(event_type = event.kind, msg_id = %id, "operational event given up");
    }

    fn headers(
        &self,
        id: &MessageId,
        body: &[u8],
    ) -> Result<HeaderMap, hookline_signature::SignError> {
        let signed = self.keyset.sign(&Message {
            id: id.as_str(),
            timestamp: self.clock.unix(),
            body,
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in signed {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hookline_core::model::{MessageStatus, TriggerType};
    use serde_json::json;

    use super::*;
    use crate::fixture::job;

    #[test]
    fn payloads_follow_the_svix_schemas() {
        let job = job();
        let at = DateTime::parse_from_rfc3339("2024-05-06T07:08:09Z")
            .unwrap()
            .with_timezone(&Utc);
        let attempt = Attempt {
            id: AttemptId::from_string("atmpt_1".into()),
            app_id: job.message.app_id.clone(),
            msg_id: job.message.id.clone(),
            endpoint_id: job.endpoint.id.clone(),
            url: job.endpoint.url.clone(),
            status: MessageStatus::Fail,
            response_status_code: 503,
            response: None,
            response_headers: vec![],
            response_duration_ms: 12,
            trigger_type: TriggerType::Scheduled,
            error_kind: None,
            created_at: at,
        };
        let event = Event::attempt(AttemptEvent::Exhausted, &job, &attempt);
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({
                "type": "message.attempt.exhausted",
                "timestamp": "2024-05-06T07:08:09Z",
                "data": {
                    "appId": "app_1",
                    "appUid": "app-uid",
                    "endpointId": "ep_1",
                    "msgId": "msg_1",
                    "msgEventId": "evt-9",
                    "lastAttempt": {
                        "id": "atmpt_1",
                        "responseStatusCode": 503,
                        "timestamp": "2024-05-06T07:08:09Z"
                    }
                }
            })
        );
        assert_eq!(
            Event::attempt(AttemptEvent::Failing, &job, &attempt).kind(),
            "message.attempt.failing"
        );
        assert_eq!(
            Event::attempt(AttemptEvent::Recovered, &job, &attempt).kind(),
            "message.attempt.recovered"
        );
        let disabled = Event::endpoint_disabled(&job, at, at);
        assert_eq!(
            serde_json::to_value(&disabled).unwrap(),
            json!({
                "type": "endpoint.disabled",
                "timestamp": "2024-05-06T07:08:09Z",
                "data": {
                    "appId": "app_1",
                    "appUid": "app-uid",
                    "endpointId": "ep_1",
                    "endpointUid": "ep-uid",
                    "failSince": "2024-05-06T07:08:09Z"
                }
            })
        );
    }

    #[test]
    fn a_disabled_endpoint_is_announced_once_and_a_full_queue_drops() {
        let (queue, mut events) = mpsc::channel(2);
        let mut publisher = Publisher {
            queue,
            announced: HashMap::new(),
            quiet: Duration::from_secs(60),
        };
        let job = job();
        let now = Utc::now();
        publisher.publish(Event::endpoint_disabled(&job, now, now));
        publisher.publish(Event::endpoint_disabled(&job, now, now));
        assert_eq!(events.try_recv().unwrap().kind(), "endpoint.disabled");
        assert!(events.try_recv().is_err(), "the repeat was not queued");

        let mut other = job.clone();
        for n in 0..3 {
            Arc::make_mut(&mut other.endpoint).id = EndpointId::from_string(format!("ep_{n}x"));
            publisher.publish(Event::endpoint_disabled(&other, now, now));
        }
        assert_eq!(events.try_recv().unwrap().kind(), "endpoint.disabled");
        assert_eq!(events.try_recv().unwrap().kind(), "endpoint.disabled");
        assert!(events.try_recv().is_err(), "the third found the queue full");
    }

    #[test]
    fn the_secret_is_checked_and_never_printed() {
        let endpoint = OperationalEndpoint {
            url: "https://ops.example".into(),
            secret: crate::fixture::SECRET.into(),
        };
        assert!(endpoint.keyset().is_ok());
        assert!(!format!("{endpoint:?}").contains("MfKQ"));
        let bad = OperationalEndpoint {
            secret: "nope".into(),
            ..endpoint
        };
        assert!(matches!(bad.keyset(), Err(Error::OperationalSecret(_))));
    }
}
