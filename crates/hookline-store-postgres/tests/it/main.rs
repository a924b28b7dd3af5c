//! The PostgreSQL store against a real server, named by `HOOKLINE_TEST_POSTGRES_URL`:
//! the storage conformance suite, then what only a shared database adds (concurrent
//! claims, notifications, lost connections). Each test gets a schema of its own. Without
//! the variable every test says it was skipped and passes.

mod background;
mod claims;
mod deletions;
mod group;
mod listen;
mod nodes;
mod sealed;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use hookline_core::Clock as _;
use hookline_core::clock::SystemClock;
use hookline_store_postgres::PostgresStore;
use tokio::sync::OnceCell;

static NEXT: AtomicUsize = AtomicUsize::new(0);
static CLEANED: OnceCell<()> = OnceCell::const_new();

/// Test schemas are `hookline_t_<pid>_<n>`, so a later run can tell whose they were.
const SCHEMA_PREFIX: &str = "hookline_t_";

/// The server's URL, or `None` after saying the test is skipped. The line goes to the
/// process's stderr directly, past the test harness's capture, so that a run without a
/// database shows it skipped rather than looking green.
pub fn url() -> Option<String> {
    match std::env::var("HOOKLINE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "skipped: HOOKLINE_TEST_POSTGRES_URL not set"
            );
            None
        }
    }
}

/// The time, as a server would read it.
pub fn now() -> DateTime<Utc> {
    SystemClock.now()
}

/// A schema name no other test of any run uses at the same time.
pub fn unique_schema() -> String {
    format!(
        "{SCHEMA_PREFIX}{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A store on a fresh schema, or `None` when there is no server to test against.
pub async fn fresh() -> Option<PostgresStore> {
    let url = url()?;
    Some(open(&url, &unique_schema()).await)
}

/// A store on `schema`, after clearing what earlier runs left behind.
pub async fn open(url: &str, schema: &str) -> PostgresStore {
    CLEANED.get_or_init(|| drop_stale_schemas(url)).await;
    PostgresStore::connect_with_schema(url, schema, 4)
        .await
        .expect("connect to the test database")
}

/// A plain connection whose `search_path` is `schema`, to look behind the store's back.
pub async fn raw(url: &str, schema: &str) -> tokio_postgres::Client {
    let mut config: tokio_postgres::Config = url.parse().expect("test url");
    config.options(format!("-c search_path={schema}"));
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
}

/// Drops the schemas of test processes that have exited (Linux, where `/proc` tells).
async fn drop_stale_schemas(url: &str) {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let client = raw(url, "public").await;
    let rows = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)",
            &[&SCHEMA_PREFIX],
        )
        .await
        .expect("list test schemas");
    for row in rows {
        let name: String = row.get(0);
        let pid = name[SCHEMA_PREFIX.len()..].split('_').next().unwrap_or("");
        let Ok(pid) = pid.parse::<u32>() else {
            continue; // not one of ours
        };
        // This process has made no schema yet (the sweep runs before its first store):
        // one named with its id was left by an earlier process that had the same id.
        let ours = pid == std::process::id();
        if !ours && std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // Another run may be dropping it too; either way it goes.
        let quoted = name.replace('"', "\"\"");
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{quoted}\" CASCADE"))
            .await;
    }
}

hookline_core::store_conformance_suite!(match fresh().await {
    Some(store) => store,
    None => return,
});
