//! One attempt of one delivery: sign, send, classify how it ended, and turn that into the
//! delivery's next state through [`RetryPolicy::decide`], where every retry decision is
//! made.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hookline_core::SharedClock;
use hookline_core::id::{AppId, AttemptId};
use hookline_core::model::{
    Attempt, FRAMING_HEADERS, MessageStatus, REDACTED, TriggerType, is_credential_header,
};
use hookline_core::retry::{Ending, RetryPolicy};
use hookline_core::store::{AttemptOutcome, DeliveryJob};
use hookline_signature::{Keyset, Message, Scheme};
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::http::{Answer, Failure, HttpClient};
use crate::operational::{AttemptEvent, Event};

/// The attempt that sends the `message.attempt.failing` event.
const FAILING_AT: u32 = 4;

/// A finished attempt: what to record, and the operational events it causes, which the
/// recorder turns into messages of the outcome (see `operational::Announcer`).
#[derive(Debug)]
pub(crate) struct Finished {
    pub outcome: AttemptOutcome,
    pub events: Vec<Event>,
}

/// Where operational events go, as the deliverer needs to know it.
#[derive(Debug)]
pub(crate) struct OperationalRoute {
    /// The application whose messages the events are. Its own deliveries announce
    /// nothing: an event about an event would feed itself for as long as the operator's
    /// endpoint fails.
    pub app_id: AppId,
    /// The configured URL, the operator's own: deliveries of that application to exactly
    /// this URL go through `client`, which the SSRF guard does not police.
    pub url: String,
    pub client: HttpClient,
}

/// How an attempt ended.
#[derive(Debug)]
pub(crate) enum Sent {
    Answered(Answer),
    Failed(Failure),
    /// Not sent and never sendable as it is (no payload, a secret that cannot sign).
    Unsendable(String),
}

/// Makes attempts.
#[derive(Debug)]
pub(crate) struct Deliverer {
    pub client: HttpClient,
    /// Where the time of each attempt, and so of its retry, comes from.
    pub clock: SharedClock,
    pub retry: RetryPolicy,
    pub attempt_timeout: Duration,
    pub disable_after: Duration,
    /// Whose header names the signature goes under ([`EngineConfig::svix_headers`]).
    ///
    /// [`EngineConfig::svix_headers`]: crate::EngineConfig::svix_headers
    pub scheme: Scheme,
    /// Operational events, if they are wanted at all.
    pub operational: Option<OperationalRoute>,
}

impl Deliverer {
    /// Makes one attempt of `job` and decides what follows.
    pub async fn deliver(&self, job: &DeliveryJob) -> Finished {
        let started_at = self.clock.now();
        let clock = std::time::Instant::now();
        let (sent, request_headers) = self.send(job, started_at).await;
        let elapsed = clock.elapsed();
        let rules = Rules {
            retry: &self.retry,
            disable_after: self.disable_after,
            operational: self.operational.as_ref().map(|route| &route.app_id),
        };
        let now = self.clock.now();
        conclude(job, sent, request_headers, started_at, elapsed, now, &rules)
    }

    /// Sends `job` signed at `now`; how that went, and the headers sent as they are
    /// recorded (credentials' values redacted).
    async fn send(&self, job: &DeliveryJob, now: DateTime<Utc>) -> (Sent, Vec<(String, String)>) {
        let Some(payload) = &job.message.payload else {
            let reason = "not sent: the payload was expunged".into();
            return (Sent::Unsendable(reason), Vec::new());
        };
        let headers = match headers(job, self.scheme, payload.as_bytes(), now) {
            Ok(headers) => headers,
            Err(reason) => return (Sent::Unsendable(reason), Vec::new()),
        };
        let recorded = headers
            .iter()
            .map(|(name, value)| {
                let value = if is_credential_header(name.as_str()) {
                    REDACTED.to_owned()
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                (name.as_str().to_owned(), value)
            })
            .collect();
        let body = payload.clone().into_bytes();
        let client = match &self.operational {
            Some(route) if job.message.app_id == route.app_id && job.endpoint.url == route.url => {
                &route.client
            }
            _ => &self.client,
        };
        let sent = match client
            .post(&job.endpoint.url, headers, body, self.attempt_timeout)
            .await
        {
            Ok(answer) => Sent::Answered(answer),
            Err(failure) => Sent::Failed(failure),
        };
        (sent, recorded)
    }
}

/// The request headers: the message's own, then the endpoint's, then ours, which win;
/// `content-type` is the message's (JSON unless a forwarded request said otherwise). One
/// signature per key valid at `now`, under `scheme`'s header names; the id is the message
/// id on every attempt.
fn headers(
    job: &DeliveryJob,
    scheme: Scheme,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<HeaderMap, String> {
    let keyset = Keyset::new(scheme, job.endpoint.signing_keys(now))
        .map_err(|error| format!("not sent: the endpoint's secret cannot sign: {error}"))?;
    let signed = keyset
        .sign(&Message {
            id: job.message.id.as_str(),
            timestamp: now.timestamp(),
            body,
        })
        .map_err(|error| format!("not sent: cannot sign: {error}"))?;
    let mut headers = HeaderMap::new();
    // The message's own headers (a forwarded request's), then the endpoint's, then ours.
    let custom = job.message.headers.iter().chain(&job.endpoint.headers);
    for (name, value) in custom {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) if !FRAMING_HEADERS.contains(&name.as_str()) => {
                headers.insert(name, value);
            }
            _ => {
                tracing::debug!(endpoint_id = %job.endpoint.id, header = name, "custom header skipped")
            }
        }
    }
    // The body's type is the message's: JSON, or a forwarded request's own.
    let content_type = job
        .message
        .headers
        .get(CONTENT_TYPE.as_str())
        .and_then(|value| HeaderValue::from_str(value).ok())
        .unwrap_or(HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(crate::http::USER_AGENT),
    );
    for (name, value) in signed {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|error| format!("not sent: bad signature header name: {error}"))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|error| format!("not sent: bad signature header value: {error}"))?;
        headers.insert(name, value);
    }
    Ok(headers)
}

/// The settings that turn an attempt into a delivery's next state.
#[derive(Debug)]
pub(crate) struct Rules<'a> {
    pub retry: &'a RetryPolicy,
    pub disable_after: Duration,
    /// The operational application, if events are wanted.
    pub operational: Option<&'a AppId>,
}

/// Builds the outcome of an attempt of `job` that sent `request_headers`, started at
/// `started_at`, took `elapsed` and ended at `now`.
pub(crate) fn conclude(
    job: &DeliveryJob,
    sent: Sent,
    request_headers: Vec<(String, String)>,
    started_at: DateTime<Utc>,
    elapsed: Duration,
    now: DateTime<Utc>,
    rules: &Rules<'_>,
) -> Finished {
    let trigger = job.destination.trigger;
    // Only scheduled attempts count against the schedule; a manual one is extra.
    let attempts = match trigger {
        TriggerType::Scheduled => job.destination.attempts.saturating_add(1),
        TriggerType::Manual => job.destination.attempts,
    };
    let (ending, status_code, response_headers, response, error_kind) = match sent {
        Sent::Answered(answer) => {
            let redirect = (300..400).contains(&answer.status);
            (
                Some(Ending::Answered {
                    status: answer.status,
                    retry_after: answer
                        .retry_after
                        .map(|retry_after| retry_after.wait_from(now.into())),
                }),
                i16::try_from(answer.status).unwrap_or(i16::MAX),
                answer.headers,
                answer.body,
                redirect.then_some(hookline_core::model::ErrorKind::Redirect),
            )
        }
        Sent::Failed(failure) => (
            Some(Ending::Failed(failure.kind)),
            0,
            Vec::new(),
            failure.detail,
            Some(failure.kind),
        ),
        Sent::Unsendable(reason) => (None, 0, Vec::new(), reason, None),
    };
    let success = ending.is_some_and(|ending| ending.is_success());
    let attempt = Attempt {
        id: AttemptId::new_at(started_at),
        app_id: job.message.app_id.clone(),
        msg_id: job.message.id.clone(),
        endpoint_id: job.endpoint.id.clone(),
        url: job.endpoint.url.clone(),
        status: if success {
            MessageStatus::Success
        } else {
            MessageStatus::Fail
        },
        response_status_code: status_code,
        response: Some(response),
        response_headers,
        request_headers,
        response_duration_ms: i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
        trigger_type: trigger,
        error_kind,
        created_at: started_at,
    };

    let decision = ending.map(|ending| rules.retry.decide(attempts.max(1), trigger, ending, now));
    let status = decision.map_or(MessageStatus::Fail, |d| d.status);
    let next_attempt = decision.and_then(|d| d.next_attempt);
    let exhausted = decision.is_some_and(|d| d.exhausted);
    let failing_for = job
        .endpoint
        .failing_since
        .map(|since| (now - since).to_std().unwrap_or_default());
    // Exhausting again after `disable_after` of nothing but failures: give up on it.
    let worn_out = exhausted && failing_for.is_some_and(|failing| failing >= rules.disable_after);
    let disable_endpoint = decision.is_some_and(|d| d.disable_endpoint) || worn_out;
    let endpoint_failing = if success {
        Some(false)
    } else if exhausted {
        Some(true)
    } else {
        None
    };

    let mut events = Vec::new();
    let announce = rules
        .operational
        .is_some_and(|app| *app != job.message.app_id);
    if announce {
        let scheduled = trigger == TriggerType::Scheduled;
        if scheduled && !success && ending.is_some() && attempts == FAILING_AT {
            events.push(Event::attempt(AttemptEvent::Failing, job, &attempt));
        }
        if exhausted {
            events.push(Event::attempt(AttemptEvent::Exhausted, job, &attempt));
        }
        if scheduled && success && attempts > FAILING_AT {
            events.push(Event::attempt(AttemptEvent::Recovered, job, &attempt));
        }
        if disable_endpoint {
            let since = job.endpoint.failing_since.unwrap_or(now);
            events.push(Event::endpoint_disabled(job, since, now));
        }
    }

    Finished {
        outcome: AttemptOutcome {
            attempt,
            status,
            next_attempt,
            attempts,
            disable_endpoint,
            endpoint_failing,
            messages: Vec::new(),
        },
        events,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use hookline_core::model::{EndpointSecret, ErrorKind};

    use super::*;
    use crate::fixture::{self, SECRET};

    fn job(attempts: u32, trigger: TriggerType) -> DeliveryJob {
        let mut job = fixture::job();
        job.destination.attempts = attempts;
        job.destination.trigger = trigger;
        job
    }

    fn answered(status: u16) -> Sent {
        Sent::Answered(Answer {
            status,
            headers: vec![("x-a".into(), "1".into())],
            body: "body".into(),
            retry_after: None,
        })
    }

    fn finish(job: &DeliveryJob, sent: Sent, policy: &RetryPolicy) -> Finished {
        let now = Utc::now();
        let operational = AppId::from_string("app_ops".into());
        let rules = Rules {
            retry: policy,
            disable_after: Duration::from_secs(5 * 86_400),
            operational: Some(&operational),
        };
        conclude(
            job,
            sent,
            Vec::new(),
            now,
            Duration::from_millis(7),
            now,
            &rules,
        )
    }

    fn kinds(finished: &Finished) -> Vec<&'static str> {
        finished.events.iter().map(Event::kind).collect()
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::new(vec![Duration::from_secs(1); 4]).without_jitter()
    }

    #[test]
    fn success_records_the_answer_and_clears_failing() {
        let job = job(0, TriggerType::Scheduled);
        let done = finish(&job, answered(204), &policy());
        let outcome = &done.outcome;
        assert_eq!(outcome.status, MessageStatus::Success);
        assert_eq!(outcome.attempts, 1);
        assert_eq!(outcome.next_attempt, None);
        assert_eq!(outcome.endpoint_failing, Some(false));
        assert!(!outcome.disable_endpoint);
        assert_eq!(outcome.attempt.status, MessageStatus::Success);
        assert_eq!(outcome.attempt.response_status_code, 204);
        assert_eq!(outcome.attempt.response.as_deref(), Some("body"));
        assert_eq!(outcome.attempt.response_duration_ms, 7);
        assert_eq!(outcome.attempt.error_kind, None);
        assert_eq!(outcome.attempt.url, job.endpoint.url);
        assert!(done.events.is_empty());
    }

    #[test]
    fn failures_follow_the_policy_and_announce_failing_then_exhausted() {
        let policy = policy();
        let third = finish(&job(2, TriggerType::Scheduled), answered(500), &policy);
        assert_eq!(third.outcome.status, MessageStatus::Pending);
        assert_eq!(third.outcome.attempts, 3);
        assert!(third.outcome.next_attempt.is_some());
        assert_eq!(third.outcome.endpoint_failing, None);
        assert!(third.events.is_empty());

        let fourth = finish(&job(3, TriggerType::Scheduled), answered(500), &policy);
        assert_eq!(kinds(&fourth), ["message.attempt.failing"]);

        let last = finish(&job(4, TriggerType::Scheduled), answered(500), &policy);
        assert_eq!(last.outcome.status, MessageStatus::Fail);
        assert_eq!(last.outcome.attempts, 5);
        assert_eq!(last.outcome.next_attempt, None);
        assert_eq!(last.outcome.endpoint_failing, Some(true));
        assert!(!last.outcome.disable_endpoint, "not failing for long yet");
        assert_eq!(kinds(&last), ["message.attempt.exhausted"]);

        let recovered = finish(&job(4, TriggerType::Scheduled), answered(200), &policy);
        assert_eq!(kinds(&recovered), ["message.attempt.recovered"]);
    }

    #[test]
    fn redirects_and_transport_failures_are_failures_with_a_kind() {
        let redirected = finish(&job(0, TriggerType::Scheduled), answered(307), &policy());
        assert_eq!(redirected.outcome.attempt.status, MessageStatus::Fail);
        assert_eq!(
            redirected.outcome.attempt.error_kind,
            Some(ErrorKind::Redirect)
        );
        assert_eq!(redirected.outcome.status, MessageStatus::Pending);

        let refused = Sent::Failed(Failure {
            kind: ErrorKind::ConnectionRefused,
            detail: "connection refused".into(),
        });
        let done = finish(&job(0, TriggerType::Scheduled), refused, &policy());
        assert_eq!(done.outcome.attempt.response_status_code, 0);
        assert_eq!(
            done.outcome.attempt.error_kind,
            Some(ErrorKind::ConnectionRefused)
        );
        assert_eq!(
            done.outcome.attempt.response.as_deref(),
            Some("connection refused")
        );
        assert_eq!(done.outcome.status, MessageStatus::Pending);
    }

    #[test]
    fn gone_disables_and_long_failing_endpoints_are_disabled_on_exhaustion() {
        let gone = finish(&job(0, TriggerType::Scheduled), answered(410), &policy());
        assert!(gone.outcome.disable_endpoint);
        assert_eq!(gone.outcome.status, MessageStatus::Fail);
        assert_eq!(kinds(&gone), ["endpoint.disabled"]);

        let mut long_failing = job(4, TriggerType::Scheduled);
        Arc::make_mut(&mut long_failing.endpoint).failing_since =
            Some(Utc::now() - chrono::Duration::days(6));
        let last = finish(&long_failing, answered(500), &policy());
        assert!(last.outcome.disable_endpoint);
        assert_eq!(
            kinds(&last),
            ["message.attempt.exhausted", "endpoint.disabled"]
        );

        let mut recently_failing = job(4, TriggerType::Scheduled);
        Arc::make_mut(&mut recently_failing.endpoint).failing_since =
            Some(Utc::now() - chrono::Duration::days(4));
        assert!(
            !finish(&recently_failing, answered(500), &policy())
                .outcome
                .disable_endpoint
        );
    }

    #[test]
    fn the_operational_apps_own_deliveries_announce_nothing() {
        let mut job = job(4, TriggerType::Scheduled);
        let ops = AppId::from_string("app_ops".into());
        Arc::make_mut(&mut job.message).app_id = ops.clone();
        Arc::make_mut(&mut job.endpoint).app_id = ops;
        let last = finish(&job, answered(500), &policy());
        assert_eq!(last.outcome.status, MessageStatus::Fail);
        assert!(last.outcome.next_attempt.is_none(), "exhausted");
        assert!(
            last.events.is_empty(),
            "an event about an event would feed itself"
        );
        let gone = finish(&job, answered(410), &policy());
        assert!(gone.outcome.disable_endpoint);
        assert!(gone.events.is_empty());
    }

    #[test]
    fn manual_attempts_are_tried_once_and_do_not_count() {
        let done = finish(&job(8, TriggerType::Manual), answered(500), &policy());
        assert_eq!(done.outcome.status, MessageStatus::Fail);
        assert_eq!(done.outcome.next_attempt, None);
        assert_eq!(done.outcome.attempts, 8);
        assert_eq!(done.outcome.attempt.trigger_type, TriggerType::Manual);
        assert!(
            done.events.is_empty(),
            "a resend is not the schedule running out"
        );
    }

    #[test]
    fn unsendable_deliveries_fail_without_retry() {
        let done = finish(
            &job(0, TriggerType::Scheduled),
            Sent::Unsendable("not sent: the payload was expunged".into()),
            &policy(),
        );
        assert_eq!(done.outcome.status, MessageStatus::Fail);
        assert_eq!(done.outcome.next_attempt, None);
        assert_eq!(done.outcome.attempt.error_kind, None);
        assert!(done.events.is_empty());
    }

    #[test]
    fn a_forwarded_requests_headers_ride_along_below_ours() {
        let mut job = job(0, TriggerType::Scheduled);
        Arc::make_mut(&mut job.message).headers = BTreeMap::from([
            (
                "content-type".to_owned(),
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("x-request-id".to_owned(), "req_1".to_owned()),
            ("webhook-id".to_owned(), "spoofed".to_owned()),
        ]);
        Arc::make_mut(&mut job.endpoint).headers =
            BTreeMap::from([("x-request-id".to_owned(), "mine".to_owned())]);
        let now = Utc::now();
        let body = job.message.payload.clone().unwrap();
        let headers = headers(&job, Scheme::Standard, body.as_bytes(), now).unwrap();
        assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");
        assert_eq!(
            headers["x-request-id"], "mine",
            "the endpoint's own headers win"
        );
        assert_eq!(headers["webhook-id"], job.message.id.as_str(), "ours win");
    }

    #[test]
    fn headers_carry_signatures_of_every_valid_key_and_ours_win() {
        let mut job = job(0, TriggerType::Scheduled);
        let now = Utc::now();
        let endpoint = Arc::make_mut(&mut job.endpoint);
        endpoint.secrets.push(EndpointSecret {
            key: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
            expires_at: Some(now + chrono::Duration::hours(1)),
        });
        endpoint.secrets.push(EndpointSecret {
            key: "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            expires_at: Some(now - chrono::Duration::hours(1)),
        });
        endpoint.headers = BTreeMap::from([
            ("X-Team".to_owned(), "ml".to_owned()),
            ("content-type".to_owned(), "text/plain".to_owned()),
            ("Host".to_owned(), "evil.example".to_owned()),
            ("bad header".to_owned(), "x".to_owned()),
        ]);
        let body = job.message.payload.clone().unwrap();
        let headers = headers(&job, Scheme::Standard, body.as_bytes(), now).unwrap();
        assert_eq!(headers["x-team"], "ml");
        assert_eq!(headers["content-type"], "application/json");
        assert!(!headers.contains_key("host"));
        assert_eq!(headers["webhook-id"], job.message.id.as_str());
        assert_eq!(headers["webhook-timestamp"], now.timestamp().to_string());
        let signatures = headers["webhook-signature"].to_str().unwrap();
        assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
        assert!(
            headers["user-agent"]
                .to_str()
                .unwrap()
                .starts_with("Hookline/")
        );

        let pairs: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        for key in [SECRET, "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"] {
            let verified = hookline_signature::verify(
                Scheme::Standard,
                [key],
                &pairs,
                body.as_bytes(),
                hookline_signature::VerifyOptions::default().now(now.timestamp()),
            );
            assert!(verified.is_ok(), "{verified:?}");
        }
    }
}
