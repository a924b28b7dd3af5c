//! Work that several nodes on one database must not each do: the request-log purge takes
//! turns through an advisory lock, and a node told not to migrate refuses a schema that
//! is behind.

use std::collections::BTreeMap;

use hookline_core::id::{AppId, IngestRequestId, SourceId};
use hookline_core::ingest::{IngestRequest, NewIngestRequest, Source, Verdict};
use hookline_core::store::{IngestStore, Migrations};
use hookline_store_postgres::PostgresStore;

use crate::{now, open, raw, unique_schema, url};

fn source() -> Source {
    let now = now();
    Source {
        id: SourceId::new(),
        uid: None,
        name: "OpenAI".into(),
        source_type: "generic-webhook".into(),
        config: serde_json::json!({}),
        metadata: BTreeMap::new(),
        app_id: AppId::new(),
        token: hookline_core::id::random_base62(32),
        previous_token: None,
        previous_token_expires_at: None,
        created_at: now,
        updated_at: now,
    }
}

fn old_request(source: &Source) -> NewIngestRequest {
    NewIngestRequest {
        request: IngestRequest {
            id: IngestRequestId::new(),
            source_id: source.id.clone(),
            seq: 0,
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![],
            body: b"{}".to_vec(),
            body_size: 2,
            dropped_before: 0,
            verdict: Verdict::Rejected,
            status_code: 401,
            reason_code: "missing_header".into(),
            reason: "missing header webhook-signature".into(),
            dedupe_key: None,
            event_type: None,
            msg_id: None,
            created_at: now() - chrono::Duration::days(40),
        },
        dedupe_since: None,
        messages: vec![],
        refused_cap: None,
    }
}

#[tokio::test]
async fn one_node_purges_the_request_log_at_a_time() {
    let Some(url) = url() else { return };
    let schema = unique_schema();
    let store = open(&url, &schema).await;
    let src = source();
    store.create_source(&src).await.unwrap();
    store.ingest(old_request(&src)).await.unwrap();
    let cutoff = now() - chrono::Duration::days(30);

    // Another node holds the purge lock of this schema: this one leaves the work to it.
    let other = raw(&url, &schema).await;
    other
        .execute(
            "SELECT pg_advisory_lock($1, hashtext(current_schema()::text))",
            &[&0x686b_7072_i32],
        )
        .await
        .unwrap();
    assert_eq!(store.purge_ingest_requests(cutoff).await.unwrap(), 0);
    assert_eq!(
        store
            .ingest_requests_after(&src.id, 0, 10, usize::MAX)
            .await
            .unwrap()
            .len(),
        1
    );

    other
        .execute(
            "SELECT pg_advisory_unlock($1, hashtext(current_schema()::text))",
            &[&0x686b_7072_i32],
        )
        .await
        .unwrap();
    assert_eq!(store.purge_ingest_requests(cutoff).await.unwrap(), 1);
    assert!(
        store
            .ingest_requests_after(&src.id, 0, 10, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    // The lock was given back: the next purge runs too.
    store.ingest(old_request(&src)).await.unwrap();
    assert_eq!(store.purge_ingest_requests(cutoff).await.unwrap(), 1);
}

#[tokio::test]
async fn a_node_that_may_not_migrate_refuses_a_schema_behind_it() {
    let Some(url) = url() else { return };
    let schema = unique_schema();
    // Point at a schema with no tables: every migration is pending.
    let client = raw(&url, "public").await;
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let scoped = format!("{url}?options=-csearch_path%3D{schema}");
    let error = PostgresStore::connect_with(&scoped, 2, Migrations::Require)
        .await
        .expect_err("pending migrations are refused");
    let text = error.to_string();
    assert!(text.contains("hookline migrate"), "{text}");

    // Once migrated, the same node starts.
    PostgresStore::connect_with(&scoped, 2, Migrations::Apply)
        .await
        .unwrap();
    PostgresStore::connect_with(&scoped, 2, Migrations::Require)
        .await
        .unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
