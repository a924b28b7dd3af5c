//! Operational webhooks: events about deliveries themselves (`message.attempt.exhausted`,
//! `.failing`, `.recovered`, `endpoint.disabled`), sent to the operator's own endpoint with
//! the Svix payloads, signed with Standard Webhooks.
//!
//! They go through the same durable outbox as every webhook (issue 16): the operator's
//! endpoint is an endpoint of an application of Hookline's own ([`provision`] makes it at
//! start from the configuration), and each event is a message of that application,
//! committed in the same transaction as the attempt outcome that caused it
//! ([`AttemptOutcome::messages`]). A crash therefore loses neither, and the engine delivers
//! events as it delivers anything: retries, signatures with the operational secret, dead
//! letters, resend.
//!
//! [`AttemptOutcome::messages`]: hookline_core::store::AttemptOutcome::messages

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookline_core::id::{AppId, AttemptId, EndpointId, MessageId};
use hookline_core::model::{Application, Attempt, Endpoint, EndpointSecret, Message};
use hookline_core::store::{DeliveryJob, NewMessage, ResourceStore};
use hookline_signature::{Keyset, Scheme};
use serde::Serialize;
use tokio::time::Instant;

use crate::Error;
use crate::http::without_credentials;

/// The uid of the application whose messages operational events are, and of its endpoint
/// to the operator: fixed, so that every node and every restart finds the same ones.
pub const OPERATIONAL_UID: &str = "hookline-operational";
/// The name of that application, as the API lists it: it tells an operator browsing the
/// applications what it is and where it comes from.
const APP_NAME: &str = "Hookline operational events (HOOKLINE_OPERATIONAL_URL)";

/// Where operational events go, and the Standard Webhooks secret (`whsec_…`) that signs
/// them: the configuration [`provision`] turns into an endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct OperationalEndpoint {
    pub url: String,
    pub secret: String,
}

impl fmt::Debug for OperationalEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperationalEndpoint")
            .field("url", &without_credentials(&self.url))
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl OperationalEndpoint {
    /// Checks that the URL is an http(s) one and that the secret can sign.
    pub fn validate(&self) -> Result<(), Error> {
        let url = url::Url::parse(&self.url).ok();
        if !url.is_some_and(|url| matches!(url.scheme(), "http" | "https")) {
            return Err(Error::InvalidConfig {
                field: "operational.url",
                reason: "must be an http or https URL",
            });
        }
        self.keyset().map(drop)
    }

    /// The key set that signs events, or why the secret cannot sign.
    fn keyset(&self) -> Result<Keyset, Error> {
        Keyset::new(Scheme::Standard, [&self.secret]).map_err(Error::OperationalSecret)
    }
}

/// Operational events as the engine sends them ([`EngineConfig::operational`]): made by
/// [`provision`].
///
/// [`EngineConfig::operational`]: crate::EngineConfig::operational
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operational {
    /// The application whose messages the events become.
    pub app_id: AppId,
    /// The configured URL of its endpoint. It is the operator's own (an alerting service
    /// on their network, often), so deliveries to exactly this URL of that application are
    /// not held to the SSRF guard, as they were not before events went through the outbox.
    pub url: String,
    /// How long an event's payload is kept; `None` until expunged.
    pub payload_retention: Option<Duration>,
}

/// Makes the operational application and its endpoint match `endpoint`, creating them
/// if need be: idempotent, so every node runs it at every start, and nodes starting
/// together settle on the same rows (the uids are unique). A changed URL or secret is
/// written and re-enables the endpoint, since the operator has pointed it somewhere new;
/// an endpoint the engine disabled (it kept failing) otherwise stays disabled, and its
/// events wait, queued, until it is re-enabled (`PATCH`, as for any endpoint).
pub async fn provision<S: ResourceStore + ?Sized>(
    store: &S,
    endpoint: &OperationalEndpoint,
    payload_retention: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Operational, Error> {
    endpoint.validate()?;
    let app = operational_app(store, now)
        .await
        .map_err(Error::OperationalSetup)?;
    // Another node may create the endpoint between our read and our insert: read again.
    for _ in 0..2 {
        match store.get_endpoint(&app.id, OPERATIONAL_UID).await {
            Ok(mut existing) => {
                let secrets = vec![EndpointSecret {
                    key: endpoint.secret.clone(),
                    expires_at: None,
                }];
                if existing.url != endpoint.url || existing.secrets != secrets {
                    existing.url = endpoint.url.clone();
                    existing.secrets = secrets;
                    existing.disabled = false;
                    existing.updated_at = now;
                    store
                        .update_endpoint(&existing, true)
                        .await
                        .map_err(Error::OperationalSetup)?;
                    tracing::info!(url = %without_credentials(&endpoint.url), "operational endpoint updated");
                } else if existing.disabled {
                    tracing::warn!(
                        app_id = %app.id,
                        endpoint_id = %existing.id,
                        "the operational endpoint is disabled: operational events wait until it is enabled again"
                    );
                }
                return Ok(operational(app.id, endpoint, payload_retention));
            }
            Err(hookline_core::Error::NotFound(_)) => {}
            Err(error) => return Err(Error::OperationalSetup(error)),
        }
        match store
            .create_endpoint(&new_endpoint(&app.id, endpoint, now))
            .await
        {
            Ok(()) => {
                tracing::info!(url = %without_credentials(&endpoint.url), "operational endpoint created");
                return Ok(operational(app.id, endpoint, payload_retention));
            }
            Err(hookline_core::Error::Conflict { .. }) => {}
            Err(error) => return Err(Error::OperationalSetup(error)),
        }
    }
    Err(Error::OperationalSetup(hookline_core::Error::conflict(
        "the operational endpoint was created and removed while this node started",
    )))
}

fn operational(
    app_id: AppId,
    endpoint: &OperationalEndpoint,
    payload_retention: Option<Duration>,
) -> Operational {
    Operational {
        app_id,
        url: endpoint.url.clone(),
        payload_retention,
    }
}

/// The operational application, created if it does not exist yet.
async fn operational_app<S: ResourceStore + ?Sized>(
    store: &S,
    now: DateTime<Utc>,
) -> hookline_core::Result<Application> {
    match store.get_app(OPERATIONAL_UID).await {
        Err(hookline_core::Error::NotFound(_)) => {}
        found => return found,
    }
    let app = Application {
        id: AppId::new_at(now),
        uid: Some(OPERATIONAL_UID.to_owned()),
        name: APP_NAME.to_owned(),
        throttle_rate: None,
        metadata: BTreeMap::from([("hookline".to_owned(), "operational".to_owned())]),
        created_at: now,
        updated_at: now,
    };
    match store.create_app(&app).await {
        Ok(()) => Ok(app),
        // Another node made it first.
        Err(hookline_core::Error::Conflict { .. }) => store.get_app(OPERATIONAL_UID).await,
        Err(error) => Err(error),
    }
}

fn new_endpoint(app: &AppId, endpoint: &OperationalEndpoint, now: DateTime<Utc>) -> Endpoint {
    Endpoint {
        id: EndpointId::new_at(now),
        app_id: app.clone(),
        uid: Some(OPERATIONAL_UID.to_owned()),
        url: endpoint.url.clone(),
        description: "Where Hookline sends its operational events".to_owned(),
        disabled: false,
        throttle_rate: None,
        event_types: None,
        channels: None,
        metadata: BTreeMap::new(),
        headers: BTreeMap::new(),
        secrets: vec![EndpointSecret {
            key: endpoint.secret.clone(),
            expires_at: None,
        }],
        failing_since: None,
        created_at: now,
        updated_at: now,
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

    /// This event as a message of the operational application, to create with the
    /// outcome that caused it. Its id is its own (the `webhook-id` the operator sees is not
    /// the id of the message the event is about).
    pub fn into_message(self, operational: &Operational) -> Option<NewMessage> {
        let payload = match serde_json::to_string(&self) {
            Ok(payload) => payload,
            Err(error) => {
                // Not reachable with these types; an event is not worth an outcome.
                tracing::error!(event_type = self.kind, %error, "cannot serialize operational event");
                return None;
            }
        };
        let expires = operational
            .payload_retention
            .and_then(|retention| chrono::Duration::from_std(retention).ok())
            .map(|retention| self.timestamp + retention);
        Some(NewMessage {
            message: Message {
                id: MessageId::new_at(self.timestamp),
                app_id: operational.app_id.clone(),
                event_id: None,
                event_type: self.kind().to_owned(),
                payload: Some(payload),
                channels: None,
                headers: BTreeMap::new(),
                created_at: self.timestamp,
            },
            only_endpoint: None,
            idempotency: None,
            payload_expires_at: expires,
            lease: None,
        })
    }

    fn disabled_endpoint(&self) -> Option<&EndpointId> {
        match &self.data {
            EventData::Endpoint(data) => Some(&data.endpoint_id),
            EventData::Attempt(_) => None,
        }
    }
}

/// Turns the events of finished attempts into messages of the operational application.
/// Owned by the one task that records outcomes.
#[derive(Debug)]
pub(crate) struct Announcer {
    operational: Operational,
    /// Endpoints announced disabled lately, so that deliveries already in flight when
    /// the endpoint was disabled do not announce it again.
    announced: HashMap<EndpointId, Instant>,
    /// How long a disabled endpoint's deliveries can still be in flight (a lease).
    quiet: Duration,
}

impl Announcer {
    pub fn new(operational: Operational, quiet: Duration) -> Self {
        Announcer {
            operational,
            announced: HashMap::new(),
            quiet,
        }
    }

    /// The messages of `events`, leaving out an `endpoint.disabled` that repeats one
    /// committed within the quiet window or one of this batch (`announcing`, to which the
    /// endpoints announced here are added).
    pub fn messages(
        &mut self,
        events: Vec<Event>,
        announcing: &mut Vec<EndpointId>,
    ) -> Vec<NewMessage> {
        let now = Instant::now();
        let quiet = self.quiet;
        self.announced
            .retain(|_, at| now.duration_since(*at) < quiet);
        events
            .into_iter()
            .filter(|event| match event.disabled_endpoint() {
                Some(endpoint) => {
                    let repeat =
                        self.announced.contains_key(endpoint) || announcing.contains(endpoint);
                    if !repeat {
                        announcing.push(endpoint.clone());
                    }
                    !repeat
                }
                None => true,
            })
            .filter_map(|event| event.into_message(&self.operational))
            .collect()
    }

    /// Remembers endpoints whose `endpoint.disabled` was committed. Only then: an
    /// announcement whose batch was not recorded is made again by the retried delivery.
    pub fn committed(&mut self, endpoints: Vec<EndpointId>) {
        let now = Instant::now();
        for endpoint in endpoints {
            self.announced.insert(endpoint, now);
        }
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
            request_headers: Vec::new(),
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

    fn announcer() -> Announcer {
        let operational = Operational {
            app_id: AppId::from_string("app_ops".into()),
            url: "https://ops.example".into(),
            payload_retention: Some(Duration::from_secs(3600)),
        };
        Announcer::new(operational, Duration::from_secs(60))
    }

    #[test]
    fn events_become_messages_of_the_operational_app() {
        let job = job();
        let now = Utc::now();
        let event = Event::endpoint_disabled(&job, now, now);
        let payload = serde_json::to_value(&event).unwrap();
        let mut announcer = announcer();
        let messages = announcer.messages(vec![event], &mut Vec::new());
        assert_eq!(messages.len(), 1);
        let new = &messages[0];
        assert_eq!(new.message.app_id.as_str(), "app_ops");
        assert_eq!(new.message.event_type, "endpoint.disabled");
        assert_ne!(new.message.id, job.message.id);
        let sent: serde_json::Value =
            serde_json::from_str(new.message.payload.as_deref().unwrap()).unwrap();
        assert_eq!(sent, payload, "the payload is the event, as before");
        assert_eq!(new.only_endpoint, None);
        assert_eq!(
            new.payload_expires_at,
            Some(now + chrono::Duration::hours(1))
        );
    }

    #[test]
    fn a_disabled_endpoint_is_announced_once_per_quiet_window() {
        let mut announcer = announcer();
        let job = job();
        let now = Utc::now();
        let disabled = || Event::endpoint_disabled(&job, now, now);
        let exhausted = || {
            let attempt = Attempt {
                id: AttemptId::from_string("atmpt_1".into()),
                app_id: job.message.app_id.clone(),
                msg_id: job.message.id.clone(),
                endpoint_id: job.endpoint.id.clone(),
                url: job.endpoint.url.clone(),
                status: MessageStatus::Fail,
                response_status_code: 500,
                response: None,
                response_headers: vec![],
                request_headers: Vec::new(),
                response_duration_ms: 1,
                trigger_type: TriggerType::Scheduled,
                error_kind: None,
                created_at: now,
            };
            Event::attempt(AttemptEvent::Exhausted, &job, &attempt)
        };

        // Two deliveries in flight when the endpoint went: one announcement per batch...
        let mut announcing = Vec::new();
        let first = announcer.messages(vec![disabled()], &mut announcing);
        let second = announcer.messages(vec![exhausted(), disabled()], &mut announcing);
        assert_eq!(first.len(), 1);
        assert_eq!(second.len(), 1, "only the exhaustion");
        assert_eq!(second[0].message.event_type, "message.attempt.exhausted");

        // ...that is not remembered until it is committed...
        assert_eq!(
            announcer.messages(vec![disabled()], &mut Vec::new()).len(),
            1,
            "an uncommitted announcement is made again"
        );
        // ...and then holds for the quiet window.
        announcer.committed(announcing);
        assert!(
            announcer
                .messages(vec![disabled()], &mut Vec::new())
                .is_empty()
        );
        let mut other = job.clone();
        Arc::make_mut(&mut other.endpoint).id = EndpointId::from_string("ep_2".into());
        assert_eq!(
            announcer
                .messages(
                    vec![Event::endpoint_disabled(&other, now, now)],
                    &mut Vec::new()
                )
                .len(),
            1,
            "another endpoint is announced"
        );
        announcer.quiet = Duration::ZERO;
        assert_eq!(
            announcer.messages(vec![disabled()], &mut Vec::new()).len(),
            1,
            "once the window is over, again"
        );
    }

    #[test]
    fn the_configuration_is_checked_and_the_secret_never_printed() {
        let endpoint = OperationalEndpoint {
            url: "https://ops.example".into(),
            secret: crate::fixture::SECRET.into(),
        };
        assert!(endpoint.validate().is_ok());
        assert!(!format!("{endpoint:?}").contains("MfKQ"));
        let bad = OperationalEndpoint {
            secret: "nope".into(),
            ..endpoint.clone()
        };
        assert!(matches!(bad.validate(), Err(Error::OperationalSecret(_))));
        let ftp = OperationalEndpoint {
            url: "ftp://ops".into(),
            ..endpoint
        };
        assert!(matches!(
            ftp.validate(),
            Err(Error::InvalidConfig {
                field: "operational.url",
                ..
            })
        ));
    }
}
