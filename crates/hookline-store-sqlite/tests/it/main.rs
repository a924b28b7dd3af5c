//! The storage conformance suite, on a fresh SQLite file per test.

mod sealed;

use std::sync::atomic::{AtomicUsize, Ordering};

use hookline_store_sqlite::SqliteStore;

static NEXT: AtomicUsize = AtomicUsize::new(0);

async fn fresh() -> SqliteStore {
    let dir = std::env::temp_dir().join(format!(
        "hookline-conformance-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    // Process ids come round again over a long run: a directory left by an earlier test
    // of the same id must not be read as this one's.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    SqliteStore::open(&dir.join("hookline.db"))
        .await
        .expect("open store")
}

hookline_core::store_conformance_suite!(fresh().await);
