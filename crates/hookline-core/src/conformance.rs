//! One conformance suite for every storage backend.
//!
//! Each check is an async function over a fresh, empty store. A backend's tests
//! instantiate them all with [`store_conformance_suite!`](crate::store_conformance_suite),
//! giving it an expression that opens a new store:
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
use crate::store::{AttemptFilter, AttemptOutcome, MessageFilter, NewMessage};

/// Instantiates every check as a `#[tokio::test]`; `$open` is an expression (it may
/// `.await`) that yields a fresh store implementing [`Store`].
#[macro_export]
macro_rules! store_conformance_suite {
    ($open:expr) => {
        $crate::store_conformance_suite!(@tests $open;
            applications_round_trip_and_conflict_on_uid,
            pagination_walks_both_ways,
            endpoints_are_scoped_to_their_app,
            event_types_archive_and_conflict,
            messages_fan_out_by_type_and_channel,
            event_id_is_unique_per_app,
            idempotency_commits_with_the_message,
            purging_idempotency_deletes_only_expired_records,
            claims_lease_and_expired_leases_are_taken_over,
            claims_carry_each_endpoint_as_last_changed,
            released_deliveries_fall_due_again_without_an_attempt,
            outcomes_reschedule_and_finish_deliveries,
            a_batch_of_outcomes_applies_in_order,
            recover_and_requeue_bring_back_failed_deliveries,
            attempts_filter_and_expunge,
            tokens_are_found_by_hash,
            deleting_an_app_removes_its_resources,
            sources_round_trip_and_hide_their_app,
            sources_are_found_by_token_until_the_previous_one_expires,
            accepted_requests_are_forwarded_and_duplicates_are_not,
            concurrent_duplicates_are_forwarded_once,
            rejected_requests_are_logged_without_a_message,
            requests_are_numbered_per_source_in_order,
            message_headers_round_trip,
            purging_the_log_deletes_only_old_requests,
            deleting_a_source_removes_its_app_and_log,
            a_source_deleted_while_requests_arrive_leaves_nothing_behind,
        );
    };
    (@tests $open:expr; $($name:ident,)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store: std::sync::Arc<dyn $crate::Store> = std::sync::Arc::new($open);
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

fn app(uid: Option<&str>) -> Application {
    let now = crate::now();
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
    let now = crate::now();
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
        created_at: crate::now(),
    }
}

fn new_message(message: Message) -> NewMessage {
    NewMessage {
        message,
        only_endpoint: None,
        idempotency: None,
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
            response_duration_ms: 12,
            trigger_type: TriggerType::Scheduled,
            error_kind: None,
            created_at: crate::now(),
        },
        status,
        next_attempt: next,
        attempts: 1,
        disable_endpoint: false,
        endpoint_failing: None,
    }
}

pub async fn applications_round_trip_and_conflict_on_uid(store: Arc<dyn Store>) {
    let created = app(Some("acme"));
    store.create_app(&created).await.unwrap();
    assert_eq!(store.get_app(created.id.as_str()).await.unwrap(), created);
    assert_eq!(store.get_app("acme").await.unwrap().id, created.id);
    assert!(matches!(
        store.create_app(&app(Some("acme"))).await,
        Err(Error::Conflict { .. })
    ));
    let mut renamed = created.clone();
    renamed.name = "Acme 2".into();
    renamed.uid = None;
    store.update_app(&renamed).await.unwrap();
    assert_eq!(
        store.get_app(created.id.as_str()).await.unwrap().name,
        "Acme 2"
    );
    assert!(matches!(
        store.get_app("acme").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.update_app(&app(None)).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn pagination_walks_both_ways(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        let a = app(None);
        store.create_app(&a).await.unwrap();
        ids.push(a.id.to_string());
        tokio_free_sleep_ms(2);
    }
    let page = store.list_apps(&first(2)).await.unwrap();
    assert_eq!(
        page.data
            .iter()
            .map(|a| a.id.to_string())
            .collect::<Vec<_>>(),
        ids[..2]
    );
    assert!(!page.done);
    let next = ListQuery {
        limit: 2,
        cursor: Some(Cursor::parse(page.iterator.as_deref().unwrap())),
        order: Order::Ascending,
    };
    let page2 = store.list_apps(&next).await.unwrap();
    assert_eq!(page2.data[0].id.to_string(), ids[2]);
    let back = ListQuery {
        limit: 2,
        cursor: Some(Cursor::parse(page2.prev_iterator.as_deref().unwrap())),
        order: Order::Ascending,
    };
    let page_back = store.list_apps(&back).await.unwrap();
    assert_eq!(
        page_back
            .data
            .iter()
            .map(|a| a.id.to_string())
            .collect::<Vec<_>>(),
        ids[..2]
    );
    let newest = store
        .list_apps(&ListQuery::first(10, Order::Descending))
        .await
        .unwrap();
    assert_eq!(newest.data[0].id.to_string(), ids[4]);
    assert!(newest.done);
    assert_eq!(newest.data.len(), 5);
}

/// Ids are ordered by millisecond; tests that need distinct times wait a little.
fn tokio_free_sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

pub async fn endpoints_are_scoped_to_their_app(store: Arc<dyn Store>) {
    let (a, b) = (app(None), app(None));
    store.create_app(&a).await.unwrap();
    store.create_app(&b).await.unwrap();
    let mut ep = endpoint(&a.id, Some(&["a.b"]), None);
    ep.uid = Some("main".into());
    store.create_endpoint(&ep).await.unwrap();
    assert_eq!(store.get_endpoint(&a.id, "main").await.unwrap(), ep);
    assert!(matches!(
        store.get_endpoint(&b.id, ep.id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    let mut same_uid = endpoint(&a.id, None, None);
    same_uid.uid = Some("main".into());
    assert!(matches!(
        store.create_endpoint(&same_uid).await,
        Err(Error::Conflict { .. })
    ));
    let mut other_app = endpoint(&b.id, None, None);
    other_app.uid = Some("main".into());
    store.create_endpoint(&other_app).await.unwrap();

    ep.disabled = true;
    ep.secrets.push(EndpointSecret {
        key: "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        expires_at: Some(crate::now()),
    });
    store.update_endpoint(&ep, true).await.unwrap();
    let read = store.get_endpoint(&a.id, ep.id.as_str()).await.unwrap();
    assert!(read.disabled);
    assert_eq!(read.secrets.len(), 2);

    // failing_since is the engine's: a settings write keeps it, re-enabling clears it.
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();
    let mut exhausted = outcome(&m, &ep.id, MessageStatus::Fail, None, 500);
    exhausted.endpoint_failing = Some(true);
    store.record_outcomes(vec![exhausted].into()).await.unwrap();
    let mut stale = read.clone();
    stale.description = "renamed".into();
    store.update_endpoint(&stale, false).await.unwrap();
    let failing = store.get_endpoint(&a.id, ep.id.as_str()).await.unwrap();
    assert!(
        failing.failing_since.is_some(),
        "a stale copy does not undo the engine's write"
    );
    stale.disabled = false;
    store.update_endpoint(&stale, false).await.unwrap();
    let untouched = store.get_endpoint(&a.id, ep.id.as_str()).await.unwrap();
    assert!(
        untouched.disabled && untouched.failing_since.is_some(),
        "a write that does not set `disabled` leaves it as the engine put it"
    );
    store.update_endpoint(&stale, true).await.unwrap();
    let enabled = store.get_endpoint(&a.id, ep.id.as_str()).await.unwrap();
    assert_eq!((enabled.disabled, enabled.failing_since), (false, None));
    let listed = store.list_endpoints(&a.id, &first(10)).await.unwrap();
    assert_eq!(listed.data.len(), 1);
    store.delete_endpoint(&a.id, &ep.id).await.unwrap();
    assert!(matches!(
        store.delete_endpoint(&a.id, &ep.id).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn event_types_archive_and_conflict(store: Arc<dyn Store>) {
    let now = crate::now();
    let mut et = EventType {
        name: "invoice.paid".into(),
        description: "paid".into(),
        archived: false,
        deprecated: false,
        schemas: Some(serde_json::json!({"1": {"type": "object"}})),
        feature_flag: None,
        created_at: now,
        updated_at: now,
    };
    store.create_event_type(&et).await.unwrap();
    match store.create_event_type(&et).await {
        Err(Error::Conflict { code, .. }) => assert_eq!(code, "event_type_exists"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    et.archived = true;
    store.update_event_type(&et).await.unwrap();
    assert!(
        store
            .list_event_types(&first(10), false)
            .await
            .unwrap()
            .data
            .is_empty()
    );
    let all = store.list_event_types(&first(10), true).await.unwrap();
    assert_eq!(all.data, vec![et.clone()]);
    store.delete_event_type("invoice.paid").await.unwrap();
    assert!(matches!(
        store.get_event_type("invoice.paid").await,
        Err(Error::NotFound(_))
    ));
}

pub async fn messages_fan_out_by_type_and_channel(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let all = endpoint(&a.id, None, None);
    let typed = endpoint(&a.id, Some(&["a.b"]), None);
    let channeled = endpoint(&a.id, None, Some(&["eu"]));
    let mut disabled = endpoint(&a.id, None, None);
    disabled.disabled = true;
    for ep in [&all, &typed, &channeled, &disabled] {
        store.create_endpoint(ep).await.unwrap();
    }
    let sorted = |mut ids: Vec<EndpointId>| {
        ids.sort();
        ids
    };
    let m1 = message(&a.id, "a.b", None);
    let created = store.create_message(new_message(m1.clone())).await.unwrap();
    assert_eq!(
        sorted(created.endpoints),
        sorted(vec![all.id.clone(), typed.id.clone()])
    );
    let m2 = message(&a.id, "c.d", Some(&["eu"]));
    let created = store.create_message(new_message(m2.clone())).await.unwrap();
    assert_eq!(
        sorted(created.endpoints),
        sorted(vec![all.id.clone(), channeled.id.clone()])
    );
    let only = NewMessage {
        only_endpoint: Some(typed.id.clone()),
        ..new_message(message(&a.id, "x.y", None))
    };
    assert_eq!(
        store.create_message(only).await.unwrap().endpoints,
        vec![typed.id.clone()]
    );

    assert_eq!(store.get_message(&a.id, m1.id.as_str()).await.unwrap(), m1);
    let eu = MessageFilter {
        channel: Some("eu".into()),
        event_types: None,
    };
    let listed = store.list_messages(&a.id, &eu, &first(10)).await.unwrap();
    assert_eq!(listed.data, vec![m2.clone()]);
    let typed_filter = MessageFilter {
        channel: None,
        event_types: Some(vec!["a.b".into(), "zzz".into()]),
    };
    let listed = store
        .list_messages(&a.id, &typed_filter, &first(10))
        .await
        .unwrap();
    assert_eq!(listed.data, vec![m1.clone()]);

    let destination = store.get_destination(&a.id, &m1.id, &all.id).await.unwrap();
    assert_eq!(destination.status, MessageStatus::Sending);
    assert!(destination.next_attempt.is_some());
    let destinations = store
        .list_destinations(&a.id, &m1.id, &first(10))
        .await
        .unwrap();
    assert_eq!(destinations.data.len(), 2);

    store.expunge_message(&a.id, &m1.id).await.unwrap();
    assert_eq!(
        store
            .get_message(&a.id, m1.id.as_str())
            .await
            .unwrap()
            .payload,
        None
    );
}

pub async fn event_id_is_unique_per_app(store: Arc<dyn Store>) {
    let (a, b) = (app(None), app(None));
    store.create_app(&a).await.unwrap();
    store.create_app(&b).await.unwrap();
    let mut m = message(&a.id, "a.b", None);
    m.event_id = Some("evt-1".into());
    store.create_message(new_message(m.clone())).await.unwrap();
    let mut again = message(&a.id, "a.b", None);
    again.event_id = Some("evt-1".into());
    assert!(matches!(
        store.create_message(new_message(again)).await,
        Err(Error::Conflict { .. })
    ));
    let mut elsewhere = message(&b.id, "a.b", None);
    elsewhere.event_id = Some("evt-1".into());
    store.create_message(new_message(elsewhere)).await.unwrap();
    assert_eq!(store.get_message(&a.id, "evt-1").await.unwrap().id, m.id);
}

pub async fn idempotency_commits_with_the_message(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let now = crate::now();
    let record = IdempotencyRecord {
        key: "k1".into(),
        response: IdempotentResponse {
            status: 202,
            body: b"{\"id\":1}".to_vec(),
        },
        expires_at: now + chrono::Duration::hours(12),
    };
    let new = NewMessage {
        idempotency: Some(record.clone()),
        ..new_message(message(&a.id, "a.b", None))
    };
    store.create_message(new).await.unwrap();
    assert_eq!(
        store.get_idempotent("k1", now).await.unwrap(),
        Some(record.response.clone())
    );
    let later = now + chrono::Duration::hours(13);
    assert_eq!(store.get_idempotent("k1", later).await.unwrap(), None);

    // A message refused for a conflict leaves no idempotency record behind.
    let mut dup = message(&a.id, "a.b", None);
    dup.event_id = Some("e".into());
    store
        .create_message(new_message(dup.clone()))
        .await
        .unwrap();
    let refused = NewMessage {
        idempotency: Some(IdempotencyRecord {
            key: "k2".into(),
            ..record
        }),
        ..new_message(Message {
            id: MessageId::new(),
            ..dup
        })
    };
    assert!(store.create_message(refused).await.is_err());
    assert_eq!(store.get_idempotent("k2", now).await.unwrap(), None);
}

pub async fn purging_idempotency_deletes_only_expired_records(store: Arc<dyn Store>) {
    let now = crate::now();
    let record = |key: &str, expires_in: i64| IdempotencyRecord {
        key: key.into(),
        response: IdempotentResponse {
            status: 200,
            body: key.as_bytes().to_vec(),
        },
        expires_at: now + chrono::Duration::seconds(expires_in),
    };
    for (key, expires_in) in [("gone-1", -60), ("gone-2", -1), ("kept", 60)] {
        store
            .put_idempotent(&record(key, expires_in))
            .await
            .unwrap();
    }
    assert_eq!(store.purge_idempotency(now).await.unwrap(), 2);
    assert_eq!(
        store.purge_idempotency(now).await.unwrap(),
        0,
        "nothing left"
    );
    assert_eq!(
        store.get_idempotent("kept", now).await.unwrap(),
        Some(record("kept", 60).response)
    );
    // Gone from the table, not merely expired: read as of before they expired, they are
    // still not there.
    let before = now - chrono::Duration::seconds(120);
    for key in ["gone-1", "gone-2"] {
        assert_eq!(
            store.get_idempotent(key, before).await.unwrap(),
            None,
            "{key}"
        );
    }
}

pub async fn claims_lease_and_expired_leases_are_taken_over(store: Arc<dyn Store>) {
    let a = app(Some("tenant"));
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();

    let now = crate::now() + chrono::Duration::seconds(1);
    let lease = Duration::from_secs(30);
    let jobs = store.claim_due("node-a", now, lease, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(*job.message, m);
    assert_eq!(*job.endpoint, ep);
    assert_eq!(job.app_uid.as_deref(), Some("tenant"));
    assert!(
        store
            .claim_due("node-b", now, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let after_lease = now + chrono::Duration::seconds(31);
    let taken = store
        .claim_due("node-b", after_lease, lease, 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1, "an expired lease is taken over");

    // Disabled endpoints are not claimed.
    let m2 = message(&a.id, "a.b", None);
    store.create_message(new_message(m2)).await.unwrap();
    let mut off = ep.clone();
    off.disabled = true;
    store.update_endpoint(&off, true).await.unwrap();
    let later = after_lease + chrono::Duration::seconds(60);
    assert!(
        store
            .claim_due("node-c", later, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn claims_carry_each_endpoint_as_last_changed(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let mut ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let lease = Duration::from_secs(30);
    // Sends a message, claims it, and returns the endpoint its job carries and a failed
    // outcome of the attempt.
    async fn claimed(store: &dyn Store, app: &AppId) -> (Endpoint, AttemptOutcome) {
        let m = message(app, "a.b", None);
        store.create_message(new_message(m.clone())).await.unwrap();
        let now = crate::now() + chrono::Duration::seconds(1);
        let lease = Duration::from_secs(30);
        let jobs = store.claim_due("n", now, lease, 10).await.unwrap();
        assert_eq!(jobs.len(), 1);
        let endpoint = Endpoint::clone(&jobs[0].endpoint);
        let mut done = outcome(&m, &endpoint.id, MessageStatus::Fail, None, 500);
        done.endpoint_failing = Some(true);
        (endpoint, done)
    }
    let (first, failed) = claimed(store.as_ref(), &a.id).await;
    assert_eq!(first, ep);

    // A recorded outcome that marks the endpoint failing is in the next claim.
    store.record_outcomes(vec![failed].into()).await.unwrap();
    let (second, done) = claimed(store.as_ref(), &a.id).await;
    assert!(second.failing_since.is_some());
    store.record_outcomes(vec![done].into()).await.unwrap();

    // So is an update: a new URL, headers and a rotated secret.
    ep.url = "https://example.test/moved".into();
    ep.headers = BTreeMap::from([("x-team".into(), "b".into())]);
    ep.secrets.insert(
        0,
        EndpointSecret {
            key: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
            expires_at: None,
        },
    );
    store.update_endpoint(&ep, false).await.unwrap();
    let (third, done) = claimed(store.as_ref(), &a.id).await;
    assert_eq!(third.url, ep.url);
    assert_eq!(third.headers, ep.headers);
    assert_eq!(third.secrets, ep.secrets);
    store.record_outcomes(vec![done].into()).await.unwrap();

    // An endpoint disabled by an outcome is not claimed until it is enabled again.
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();
    let now = crate::now() + chrono::Duration::seconds(1);
    assert_eq!(store.claim_due("n", now, lease, 10).await.unwrap().len(), 1);
    let mut gone = outcome(&m, &ep.id, MessageStatus::Fail, None, 410);
    gone.disable_endpoint = true;
    store.record_outcomes(vec![gone].into()).await.unwrap();
    let pending = message(&a.id, "a.b", None);
    store
        .create_message(NewMessage {
            only_endpoint: Some(ep.id.clone()),
            ..new_message(pending.clone())
        })
        .await
        .unwrap();
    let now = crate::now() + chrono::Duration::seconds(1);
    assert!(
        store
            .claim_due("n", now, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    ep.disabled = false;
    store.update_endpoint(&ep, true).await.unwrap();
    let jobs = store.claim_due("n", now, lease, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(!jobs[0].endpoint.disabled);
    assert_eq!(jobs[0].endpoint.failing_since, None, "enabling clears it");
}

pub async fn released_deliveries_fall_due_again_without_an_attempt(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();
    let now = crate::now() + chrono::Duration::seconds(1);
    let lease = Duration::from_secs(30);
    assert_eq!(store.claim_due("n", now, lease, 10).await.unwrap().len(), 1);

    let retry_at = now + chrono::Duration::seconds(2);
    store
        .release(vec![(m.id.clone(), ep.id.clone())], retry_at)
        .await
        .unwrap();
    assert!(
        store
            .claim_due("n", now, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "not before retry_at"
    );
    let again = store.claim_due("other", retry_at, lease, 10).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "claimable at retry_at although the lease had not expired"
    );
    let attempts = store
        .list_attempts(&a.id, &AttemptFilter::default(), &first(10))
        .await
        .unwrap();
    assert!(attempts.data.is_empty(), "a release is not an attempt");
}

pub async fn outcomes_reschedule_and_finish_deliveries(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();
    let now = crate::now() + chrono::Duration::seconds(1);
    let lease = Duration::from_secs(30);
    assert_eq!(store.claim_due("n", now, lease, 10).await.unwrap().len(), 1);

    let retry_at = now + chrono::Duration::seconds(5);
    let mut failed = outcome(&m, &ep.id, MessageStatus::Pending, Some(retry_at), 500);
    failed.endpoint_failing = Some(true);
    store.record_outcomes(vec![failed].into()).await.unwrap();
    let destination = store.get_destination(&a.id, &m.id, &ep.id).await.unwrap();
    assert_eq!(destination.status, MessageStatus::Pending);
    assert_eq!(
        destination.next_attempt.map(|t| t.timestamp_millis()),
        Some(retry_at.timestamp_millis())
    );
    assert!(
        store
            .get_endpoint(&a.id, ep.id.as_str())
            .await
            .unwrap()
            .failing_since
            .is_some()
    );
    assert!(
        store
            .claim_due("n", now, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    assert_eq!(
        store
            .next_due()
            .await
            .unwrap()
            .map(|t| t.timestamp_millis()),
        Some(retry_at.timestamp_millis())
    );
    let jobs = store.claim_due("n", retry_at, lease, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);

    let mut ok = outcome(&m, &ep.id, MessageStatus::Success, None, 200);
    ok.attempts = 2;
    ok.endpoint_failing = Some(false);
    store.record_outcomes(vec![ok].into()).await.unwrap();
    let destination = store.get_destination(&a.id, &m.id, &ep.id).await.unwrap();
    assert_eq!(
        (destination.status, destination.next_attempt),
        (MessageStatus::Success, None)
    );
    assert_eq!(destination.attempts, 2);
    assert_eq!(store.next_due().await.unwrap(), None);
    assert!(
        store
            .get_endpoint(&a.id, ep.id.as_str())
            .await
            .unwrap()
            .failing_since
            .is_none()
    );

    let stats = store
        .endpoint_stats(&a.id, &ep.id, now - chrono::Duration::days(1), now)
        .await
        .unwrap();
    assert_eq!((stats.success, stats.fail, stats.pending), (1, 0, 0));

    let mut gone = outcome(&m, &ep.id, MessageStatus::Fail, None, 410);
    gone.disable_endpoint = true;
    store.record_outcomes(vec![gone].into()).await.unwrap();
    assert!(
        store
            .get_endpoint(&a.id, ep.id.as_str())
            .await
            .unwrap()
            .disabled
    );
}

pub async fn a_batch_of_outcomes_applies_in_order(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let (e1, e2) = (endpoint(&a.id, None, None), endpoint(&a.id, None, None));
    store.create_endpoint(&e1).await.unwrap();
    store.create_endpoint(&e2).await.unwrap();
    let messages: Vec<Message> = (0..4).map(|_| message(&a.id, "a.b", None)).collect();
    for m in &messages {
        store.create_message(new_message(m.clone())).await.unwrap();
    }
    let t0 = crate::now();
    let at = |seconds: i64| t0 + chrono::Duration::seconds(seconds);
    let step = |m: &Message, ep: &EndpointId, well: bool, seconds: i64| {
        let (status, code) = if well {
            (MessageStatus::Success, 200)
        } else {
            (MessageStatus::Fail, 500)
        };
        let mut outcome = outcome(m, ep, status, None, code);
        outcome.attempt.created_at = at(seconds);
        outcome.endpoint_failing = Some(!well);
        outcome
    };
    // e1 exhausts, recovers, then exhausts twice: failing since the first of those two.
    // e2 exhausts, then recovers: well.
    let batch = vec![
        step(&messages[0], &e1.id, false, 1),
        step(&messages[0], &e2.id, false, 1),
        step(&messages[1], &e1.id, true, 2),
        step(&messages[1], &e2.id, true, 2),
        step(&messages[2], &e1.id, false, 3),
        step(&messages[3], &e1.id, false, 4),
    ];
    store.record_outcomes(batch.clone().into()).await.unwrap();
    let failing_since = |endpoint: Endpoint| endpoint.failing_since.map(|t| t.timestamp_millis());
    let e1_now = store.get_endpoint(&a.id, e1.id.as_str()).await.unwrap();
    let e2_now = store.get_endpoint(&a.id, e2.id.as_str()).await.unwrap();
    assert_eq!(failing_since(e1_now), Some(at(3).timestamp_millis()));
    assert_eq!(failing_since(e2_now), None);

    // Failing again while failing keeps the earlier start.
    store
        .record_outcomes(vec![step(&messages[3], &e1.id, false, 5)].into())
        .await
        .unwrap();
    let e1_now = store.get_endpoint(&a.id, e1.id.as_str()).await.unwrap();
    assert_eq!(failing_since(e1_now), Some(at(3).timestamp_millis()));

    // Every attempt of the batch is recorded, and every delivery moved.
    let attempts = store
        .list_attempts(&a.id, &AttemptFilter::default(), &first(20))
        .await
        .unwrap();
    assert_eq!(attempts.data.len(), batch.len() + 1);
    for outcome in &batch {
        assert!(
            attempts.data.contains(&outcome.attempt),
            "{:?}",
            outcome.attempt.id
        );
    }
    let delivered = store
        .get_destination(&a.id, &messages[1].id, &e2.id)
        .await
        .unwrap();
    assert_eq!(delivered.status, MessageStatus::Success);
    let failed = store
        .get_destination(&a.id, &messages[2].id, &e1.id)
        .await
        .unwrap();
    assert_eq!(failed.status, MessageStatus::Fail);
}

pub async fn recover_and_requeue_bring_back_failed_deliveries(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();
    let now = crate::now() + chrono::Duration::seconds(1);
    let lease = Duration::from_secs(30);
    store.claim_due("n", now, lease, 10).await.unwrap();
    store
        .record_outcomes(vec![outcome(&m, &ep.id, MessageStatus::Fail, None, 500)].into())
        .await
        .unwrap();
    assert!(
        store
            .claim_due("n", now, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let day = chrono::Duration::days(1);
    let recovered = store
        .recover(&a.id, &ep.id, now - day, now + day)
        .await
        .unwrap();
    assert_eq!(recovered, 1);
    let jobs = store.claim_due("n", now + day, lease, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].destination.trigger, TriggerType::Manual);
    assert_eq!(
        store
            .recover(&a.id, &ep.id, now - day, now + day)
            .await
            .unwrap(),
        0,
        "a delivery in flight is not recovered twice"
    );
    store
        .record_outcomes(vec![outcome(&m, &ep.id, MessageStatus::Fail, None, 500)].into())
        .await
        .unwrap();
    store
        .requeue(&a.id, &m.id, &ep.id, TriggerType::Manual)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_due("n", now + day, lease, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        store
            .requeue(&a.id, &m.id, &EndpointId::new(), TriggerType::Manual)
            .await,
        Err(Error::NotFound(_))
    ));
}

pub async fn attempts_filter_and_expunge(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let (e1, e2) = (endpoint(&a.id, None, None), endpoint(&a.id, None, None));
    store.create_endpoint(&e1).await.unwrap();
    store.create_endpoint(&e2).await.unwrap();
    let m = message(&a.id, "a.b", Some(&["eu"]));
    store.create_message(new_message(m.clone())).await.unwrap();
    let failed = outcome(&m, &e1.id, MessageStatus::Pending, None, 503);
    let ok = outcome(&m, &e2.id, MessageStatus::Success, None, 204);
    store
        .record_outcomes(vec![failed.clone(), ok.clone()].into())
        .await
        .unwrap();

    let by_endpoint = AttemptFilter {
        endpoint_id: Some(e1.id.clone()),
        ..AttemptFilter::default()
    };
    let page = store
        .list_attempts(&a.id, &by_endpoint, &first(10))
        .await
        .unwrap();
    assert_eq!(page.data, vec![failed.attempt.clone()]);
    let by_class = AttemptFilter {
        msg_id: Some(m.id.clone()),
        status_code_class: Some(200),
        ..AttemptFilter::default()
    };
    let page = store
        .list_attempts(&a.id, &by_class, &first(10))
        .await
        .unwrap();
    assert_eq!(page.data, vec![ok.attempt.clone()]);
    let by_status = AttemptFilter {
        status: Some(MessageStatus::Fail),
        channel: Some("eu".into()),
        ..AttemptFilter::default()
    };
    assert_eq!(
        store
            .list_attempts(&a.id, &by_status, &first(10))
            .await
            .unwrap()
            .data
            .len(),
        1
    );
    let msgs = store
        .list_endpoint_messages(
            &a.id,
            &e2.id,
            Some(MessageStatus::Success),
            &MessageFilter::default(),
            &first(10),
        )
        .await
        .unwrap();
    assert_eq!(msgs.data.len(), 1);
    assert_eq!(msgs.data[0].0.id, m.id);

    store
        .expunge_attempt(&a.id, &m.id, &ok.attempt.id)
        .await
        .unwrap();
    let read = store
        .get_attempt(&a.id, &m.id, &ok.attempt.id)
        .await
        .unwrap();
    assert_eq!(read.response, None);
    assert_eq!(read.response_headers, ok.attempt.response_headers);
    assert!(matches!(
        store.get_attempt(&a.id, &m.id, &AttemptId::new()).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn tokens_are_found_by_hash(store: Arc<dyn Store>) {
    assert!(!store.has_admin_token().await.unwrap());
    let app_token = Token {
        hash: "h-app".into(),
        app_id: Some(AppId::new()),
        created_at: crate::now(),
    };
    store.put_token(&app_token).await.unwrap();
    assert!(!store.has_admin_token().await.unwrap());
    store
        .put_token(&Token {
            hash: "h-admin".into(),
            app_id: None,
            created_at: crate::now(),
        })
        .await
        .unwrap();
    assert!(store.has_admin_token().await.unwrap());
    assert_eq!(
        store.find_token("h-app").await.unwrap().map(|t| t.app_id),
        Some(app_token.app_id.clone())
    );
    store.delete_token("h-app").await.unwrap();
    assert_eq!(store.find_token("h-app").await.unwrap(), None);
}

pub async fn deleting_an_app_removes_its_resources(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let m = message(&a.id, "a.b", None);
    store.create_message(new_message(m.clone())).await.unwrap();
    store.delete_app(&a.id).await.unwrap();
    assert!(matches!(
        store.get_app(a.id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get_message(&a.id, m.id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    let later = crate::now() + chrono::Duration::seconds(5);
    assert!(
        store
            .claim_due("n", later, Duration::from_secs(30), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

fn source(uid: Option<&str>) -> Source {
    let now = crate::now();
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
        verdict: Verdict::Accepted,
        status_code: 200,
        reason_code: "accepted".into(),
        reason: String::new(),
        dedupe_key: dedupe_key.map(str::to_owned),
        event_type: Some("invoice.paid".into()),
        msg_id: None,
        created_at: crate::now(),
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

pub async fn sources_round_trip_and_hide_their_app(store: Arc<dyn Store>) {
    let visible = app(None);
    store.create_app(&visible).await.unwrap();
    let created = source(Some("stripe"));
    store.create_source(&created).await.unwrap();
    assert_eq!(
        store.get_source(created.id.as_str()).await.unwrap(),
        created
    );
    assert_eq!(store.get_source("stripe").await.unwrap(), created);

    let mut same_uid = source(Some("stripe"));
    same_uid.name = "Other".into();
    assert!(matches!(
        store.create_source(&same_uid).await,
        Err(Error::Conflict { .. })
    ));
    assert!(
        matches!(
            store.get_app(same_uid.app_id.as_str()).await,
            Err(Error::NotFound(_))
        ),
        "a refused source leaves no hidden application behind"
    );

    // The hidden application: found by id, never listed, holds endpoints.
    let hidden = store.get_app(created.app_id.as_str()).await.unwrap();
    assert_eq!(hidden, created.hidden_app());
    assert_eq!((hidden.name.as_str(), hidden.uid), ("source Stripe", None));
    let listed = store.list_apps(&first(10)).await.unwrap();
    assert_eq!(listed.data, vec![visible.clone()]);
    let ep = endpoint(&created.app_id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    assert_eq!(
        store
            .list_endpoints(&created.app_id, &first(10))
            .await
            .unwrap()
            .data,
        vec![ep]
    );
    assert!(
        matches!(
            store.delete_app(&created.app_id).await,
            Err(Error::Conflict { .. })
        ),
        "a source's application goes with the source only"
    );

    let other = source(None);
    store.create_source(&other).await.unwrap();
    let page = store.list_sources(&first(1)).await.unwrap();
    assert_eq!(page.data.len(), 1);
    assert!(!page.done);
    let next = ListQuery {
        limit: 10,
        cursor: Some(Cursor::parse(page.iterator.as_deref().unwrap())),
        order: Order::Ascending,
    };
    let rest = store.list_sources(&next).await.unwrap();
    assert!(rest.done);
    let mut ids: Vec<SourceId> = page
        .data
        .iter()
        .chain(&rest.data)
        .map(|s| s.id.clone())
        .collect();
    let mut expected = vec![created.id.clone(), other.id.clone()];
    expected.sort();
    assert_eq!(ids, expected, "sources page in id order");
    ids.dedup();
    assert_eq!(ids.len(), 2);

    let mut updated = created.clone();
    updated.uid = Some("stripe-eu".into());
    updated.name = "Stripe EU".into();
    updated.source_type = "stripe-v2".into();
    updated.config = serde_json::json!({"secret": "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"});
    updated.metadata = BTreeMap::new();
    updated.previous_token = Some(created.token.clone());
    updated.previous_token_expires_at = Some(crate::now() + chrono::Duration::hours(1));
    updated.token = crate::id::random_base62(24);
    updated.updated_at = crate::now() + chrono::Duration::seconds(1);
    store.update_source(&updated).await.unwrap();
    assert_eq!(store.get_source("stripe-eu").await.unwrap(), updated);
    assert!(matches!(
        store.get_source("stripe").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        store.get_app(created.app_id.as_str()).await.unwrap().name,
        "source Stripe EU",
        "the hidden application keeps the source's name"
    );
    let mut taken = other.clone();
    taken.uid = Some("stripe-eu".into());
    assert!(matches!(
        store.update_source(&taken).await,
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        store.update_source(&source(None)).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn sources_are_found_by_token_until_the_previous_one_expires(store: Arc<dyn Store>) {
    let now = crate::now();
    let mut rotated = source(None);
    rotated.previous_token = Some("old-token".into());
    rotated.previous_token_expires_at = Some(now + chrono::Duration::minutes(5));
    store.create_source(&rotated).await.unwrap();
    store.create_source(&source(None)).await.unwrap();

    let by_current = store
        .find_source_by_token(&rotated.token, now)
        .await
        .unwrap();
    assert_eq!(by_current.map(|s| s.id), Some(rotated.id.clone()));
    let by_previous = store.find_source_by_token("old-token", now).await.unwrap();
    assert_eq!(by_previous.map(|s| s.id), Some(rotated.id.clone()));
    let expiry = now + chrono::Duration::minutes(5);
    assert_eq!(
        store
            .find_source_by_token("old-token", expiry)
            .await
            .unwrap(),
        None,
        "the previous token is refused from its expiry on"
    );
    assert_eq!(
        store
            .find_source_by_token(&rotated.token, expiry + chrono::Duration::days(1))
            .await
            .unwrap()
            .map(|s| s.id),
        Some(rotated.id.clone()),
        "the current token does not expire"
    );
    assert_eq!(store.find_source_by_token("nope", now).await.unwrap(), None);
}

pub async fn accepted_requests_are_forwarded_and_duplicates_are_not(store: Arc<dyn Store>) {
    let src = source(None);
    store.create_source(&src).await.unwrap();
    let ep = endpoint(&src.app_id, None, None);
    store.create_endpoint(&ep).await.unwrap();

    let (new, m1) = forwarded(&src, received(&src, Some("evt_1")));
    let first_request = new.request.clone();
    let stored = store.ingest(new).await.unwrap();
    assert_eq!(stored.id, first_request.id);
    assert_eq!(stored.verdict, Verdict::Accepted);
    assert_eq!(stored.original, None);
    assert!(stored.seq > 0);
    assert_eq!(
        store.get_ingest_request(&src.id, &stored.id).await.unwrap(),
        IngestRequest {
            seq: stored.seq,
            ..first_request.clone()
        },
        "stored as received, body bytes and header order included"
    );
    assert_eq!(
        store
            .get_message(&src.app_id, m1.id.as_str())
            .await
            .unwrap(),
        m1
    );
    let destination = store
        .get_destination(&src.app_id, &m1.id, &ep.id)
        .await
        .unwrap();
    assert_eq!(destination.status, MessageStatus::Sending);
    assert!(destination.next_attempt.is_some());

    // The same key inside the window: logged as a duplicate, not forwarded.
    let (new, m2) = forwarded(&src, received(&src, Some("evt_1")));
    let duplicate = store.ingest(new).await.unwrap();
    assert_eq!(duplicate.verdict, Verdict::Duplicate);
    assert_eq!(duplicate.original, Some(first_request.id.clone()));
    assert!(duplicate.seq > stored.seq);
    let logged = store
        .get_ingest_request(&src.id, &duplicate.id)
        .await
        .unwrap();
    assert_eq!(logged.verdict, Verdict::Duplicate);
    assert_eq!(logged.reason_code, "duplicate");
    assert!(
        logged.reason.contains(first_request.id.as_str()),
        "{}",
        logged.reason
    );
    assert_eq!(logged.msg_id, None);
    assert!(matches!(
        store.get_message(&src.app_id, m2.id.as_str()).await,
        Err(Error::NotFound(_))
    ));

    // The same key once the window has moved past the first: forwarded again.
    let (mut new, m3) = forwarded(&src, received(&src, Some("evt_1")));
    new.dedupe_since = Some(first_request.created_at + chrono::Duration::milliseconds(1));
    let again = store.ingest(new).await.unwrap();
    assert_eq!((again.verdict, again.original), (Verdict::Accepted, None));
    assert_eq!(
        store
            .get_ingest_request(&src.id, &again.id)
            .await
            .unwrap()
            .msg_id,
        Some(m3.id.clone())
    );
    store
        .get_message(&src.app_id, m3.id.as_str())
        .await
        .unwrap();

    // Without a window, or without a key, nothing is deduplicated.
    let (mut new, _) = forwarded(&src, received(&src, Some("evt_1")));
    new.dedupe_since = None;
    assert_eq!(store.ingest(new).await.unwrap().verdict, Verdict::Accepted);
    let (new, _) = forwarded(&src, received(&src, None));
    assert_eq!(store.ingest(new).await.unwrap().verdict, Verdict::Accepted);

    // Another source's key is not this one's.
    let other = source(None);
    store.create_source(&other).await.unwrap();
    let (new, _) = forwarded(&other, received(&other, Some("evt_1")));
    assert_eq!(store.ingest(new).await.unwrap().verdict, Verdict::Accepted);

    let (new, _) = forwarded(&src, received(&source(None), None));
    assert!(
        matches!(store.ingest(new).await, Err(Error::NotFound(_))),
        "a request of an unknown source"
    );
    assert!(matches!(
        store.get_ingest_request(&other.id, &stored.id).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn concurrent_duplicates_are_forwarded_once(store: Arc<dyn Store>) {
    let src = source(None);
    store.create_source(&src).await.unwrap();
    let requests: Vec<_> = (0..8)
        .map(|_| forwarded(&src, received(&src, Some("evt_race"))).0)
        .collect();
    let outcomes: Vec<IngestedRequest> = join_all(
        requests
            .into_iter()
            .map(|new| {
                let store = Arc::clone(&store);
                Box::pin(async move { store.ingest(new).await.unwrap() }) as Task<'_, _>
            })
            .collect(),
    )
    .await;
    let accepted: Vec<_> = outcomes
        .iter()
        .filter(|outcome| outcome.verdict == Verdict::Accepted)
        .collect();
    assert_eq!(accepted.len(), 1, "{outcomes:?}");
    for outcome in &outcomes {
        if outcome.verdict == Verdict::Duplicate {
            assert_eq!(outcome.original.as_ref(), Some(&accepted[0].id));
        }
    }
    let messages = store
        .list_messages(&src.app_id, &MessageFilter::default(), &first(20))
        .await
        .unwrap();
    assert_eq!(messages.data.len(), 1);
}

pub async fn rejected_requests_are_logged_without_a_message(store: Arc<dyn Store>) {
    let src = source(None);
    store.create_source(&src).await.unwrap();
    store
        .create_endpoint(&endpoint(&src.app_id, None, None))
        .await
        .unwrap();
    let (accepted, _) = forwarded(&src, received(&src, Some("evt_1")));
    store.ingest(accepted).await.unwrap();

    let mut request = received(&src, Some("evt_1"));
    request.verdict = Verdict::Rejected;
    request.status_code = 401;
    request.reason_code = "no_signature_matched".into();
    request.reason = "no signature matched".into();
    let (mut new, message) = forwarded(&src, request.clone());
    new.request.msg_id = None;
    let stored = store.ingest(new).await.unwrap();
    assert_eq!(
        (stored.verdict, stored.original),
        (Verdict::Rejected, None),
        "a rejected request is never a duplicate"
    );
    let logged = store.get_ingest_request(&src.id, &stored.id).await.unwrap();
    assert_eq!(
        logged,
        IngestRequest {
            seq: stored.seq,
            ..request
        }
    );
    assert!(matches!(
        store.get_message(&src.app_id, message.id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    let messages = store
        .list_messages(&src.app_id, &MessageFilter::default(), &first(10))
        .await
        .unwrap();
    assert_eq!(messages.data.len(), 1, "only the accepted request's");
}

pub async fn requests_are_numbered_per_source_in_order(store: Arc<dyn Store>) {
    let (a, b) = (source(None), source(None));
    store.create_source(&a).await.unwrap();
    store.create_source(&b).await.unwrap();
    let mut seqs = Vec::new();
    for _ in 0..3 {
        seqs.push(
            store
                .ingest(forwarded(&a, received(&a, None)).0)
                .await
                .unwrap()
                .seq,
        );
        store
            .ingest(forwarded(&b, received(&b, None)).0)
            .await
            .unwrap();
    }
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");

    // Requests arriving together get distinct numbers too.
    let together: Vec<i64> = join_all(
        (0..6)
            .map(|_| {
                let store = Arc::clone(&store);
                let new = forwarded(&a, received(&a, None)).0;
                Box::pin(async move { store.ingest(new).await.unwrap().seq }) as Task<'_, _>
            })
            .collect(),
    )
    .await;
    assert!(together.iter().all(|seq| *seq > seqs[2]), "{together:?}");
    seqs.extend(together);
    let mut distinct = seqs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 9);

    let all = store.ingest_requests_after(&a.id, 0, 100).await.unwrap();
    assert_eq!(all.len(), 9);
    assert!(all.iter().all(|request| request.source_id == a.id));
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), distinct);
    let cursor = all[3].seq;
    let after = store.ingest_requests_after(&a.id, cursor, 2).await.unwrap();
    assert_eq!(
        after.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![all[4].seq, all[5].seq]
    );
    assert!(
        store
            .ingest_requests_after(&a.id, all[8].seq, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .ingest_requests_after(&b.id, 0, 100)
            .await
            .unwrap()
            .len(),
        3
    );

    // The log pages by id, both ways.
    let mut ids: Vec<IngestRequestId> = all.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    let page = store.list_ingest_requests(&a.id, &first(5)).await.unwrap();
    assert!(!page.done);
    let next = ListQuery {
        limit: 5,
        cursor: Some(Cursor::parse(page.iterator.as_deref().unwrap())),
        order: Order::Ascending,
    };
    let rest = store.list_ingest_requests(&a.id, &next).await.unwrap();
    assert!(rest.done);
    let walked: Vec<IngestRequestId> = page
        .data
        .iter()
        .chain(&rest.data)
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(walked, ids);
    let newest = store
        .list_ingest_requests(&a.id, &ListQuery::first(1, Order::Descending))
        .await
        .unwrap();
    assert_eq!(newest.data[0].id, ids[8]);
}

pub async fn message_headers_round_trip(store: Arc<dyn Store>) {
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let ep = endpoint(&a.id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let mut m = message(&a.id, "a.b", None);
    m.headers = BTreeMap::from([
        ("content-type".into(), "text/plain; charset=utf-8".into()),
        ("x-github-event".into(), "push".into()),
    ]);
    store.create_message(new_message(m.clone())).await.unwrap();
    let plain = message(&a.id, "a.b", None);
    store
        .create_message(new_message(plain.clone()))
        .await
        .unwrap();
    assert_eq!(store.get_message(&a.id, m.id.as_str()).await.unwrap(), m);
    assert_eq!(
        store.get_message(&a.id, plain.id.as_str()).await.unwrap(),
        plain
    );
    let listed = store
        .list_messages(&a.id, &MessageFilter::default(), &first(10))
        .await
        .unwrap();
    assert!(listed.data.contains(&m));
    let jobs = store
        .claim_due(
            "n",
            crate::now() + chrono::Duration::seconds(1),
            Duration::from_secs(30),
            10,
        )
        .await
        .unwrap();
    let job = jobs
        .iter()
        .find(|job| job.message.id == m.id)
        .expect("claimed");
    assert_eq!(job.message.headers, m.headers, "deliveries see the headers");
}

pub async fn purging_the_log_deletes_only_old_requests(store: Arc<dyn Store>) {
    let src = source(None);
    store.create_source(&src).await.unwrap();
    let now = crate::now();
    let mut old = received(&src, None);
    old.created_at = now - chrono::Duration::days(10);
    let mut edge = received(&src, None);
    edge.created_at = now - chrono::Duration::days(7);
    let recent = received(&src, None);
    for request in [&old, &edge, &recent] {
        let (mut new, _) = forwarded(&src, request.clone());
        new.messages.clear();
        new.request.msg_id = None;
        store.ingest(new).await.unwrap();
    }
    let purged = store
        .purge_ingest_requests(now - chrono::Duration::days(7))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert!(matches!(
        store.get_ingest_request(&src.id, &old.id).await,
        Err(Error::NotFound(_))
    ));
    store.get_ingest_request(&src.id, &edge.id).await.unwrap();
    let last = store
        .get_ingest_request(&src.id, &recent.id)
        .await
        .unwrap()
        .seq;

    // Emptied by retention, the log numbers on from where it was: a stream's cursor
    // stays valid.
    assert_eq!(
        store
            .purge_ingest_requests(now + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        2
    );
    let next = store
        .ingest(forwarded(&src, received(&src, None)).0)
        .await
        .unwrap();
    assert!(next.seq > last, "{} > {last}", next.seq);
    assert_eq!(
        store
            .ingest_requests_after(&src.id, last, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn deleting_a_source_removes_its_app_and_log(store: Arc<dyn Store>) {
    let src = source(Some("gone"));
    store.create_source(&src).await.unwrap();
    let kept = source(None);
    store.create_source(&kept).await.unwrap();
    let ep = endpoint(&src.app_id, None, None);
    store.create_endpoint(&ep).await.unwrap();
    let (new, m) = forwarded(&src, received(&src, None));
    let logged = store.ingest(new).await.unwrap();
    let kept_logged = store
        .ingest(forwarded(&kept, received(&kept, None)).0)
        .await
        .unwrap();

    store.delete_source(&src.id).await.unwrap();
    assert!(matches!(
        store.get_source("gone").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get_app(src.app_id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get_endpoint(&src.app_id, ep.id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get_message(&src.app_id, m.id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get_ingest_request(&src.id, &logged.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(
        store
            .claim_due(
                "n",
                crate::now() + chrono::Duration::seconds(5),
                Duration::from_secs(30),
                10
            )
            .await
            .unwrap()
            .iter()
            .all(|job| job.message.app_id != src.app_id)
    );
    assert!(matches!(
        store.delete_source(&src.id).await,
        Err(Error::NotFound(_))
    ));
    store.get_source(kept.id.as_str()).await.unwrap();
    store.get_app(kept.app_id.as_str()).await.unwrap();
    store
        .get_ingest_request(&kept.id, &kept_logged.id)
        .await
        .unwrap();
}

pub async fn a_source_deleted_while_requests_arrive_leaves_nothing_behind(store: Arc<dyn Store>) {
    let src = source(None);
    store.create_source(&src).await.unwrap();
    store
        .create_endpoint(&endpoint(&src.app_id, None, None))
        .await
        .unwrap();
    let mut work: Vec<Task<'_, Result<(), Error>>> = (0..6)
        .map(|n| {
            let store = Arc::clone(&store);
            let key = format!("evt_{n}");
            let new = forwarded(&src, received(&src, Some(&key))).0;
            Box::pin(async move { store.ingest(new).await.map(drop) }) as Task<'_, _>
        })
        .collect();
    let deleter = Arc::clone(&store);
    let id = src.id.clone();
    work.insert(3, Box::pin(async move { deleter.delete_source(&id).await }));
    for (n, outcome) in join_all(work).await.into_iter().enumerate() {
        assert!(
            matches!(outcome, Ok(()) | Err(Error::NotFound(_))),
            "step {n}: {outcome:?}"
        );
    }
    assert!(matches!(
        store.get_source(src.id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get_app(src.app_id.as_str()).await,
        Err(Error::NotFound(_))
    ));
    assert!(
        store
            .ingest_requests_after(&src.id, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_messages(&src.app_id, &MessageFilter::default(), &first(10))
            .await
            .unwrap()
            .data
            .is_empty()
    );
}
