//! Secrets sealed at rest: core's check, on one SQLite file reopened under other keys and
//! read behind the store's back with a plain connection.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use hookline_core::Store;
use hookline_core::conformance::sealed::{SealedBackend, secrets_are_sealed_at_rest};
use hookline_core::sealed::{Reseal, Sealer};
use hookline_core::store::Migrations;
use hookline_store_sqlite::SqliteStore;

struct File(PathBuf);

#[async_trait]
impl SealedBackend for File {
    async fn open(&self, sealer: Sealer) -> (Arc<dyn Store>, Arc<dyn Reseal>) {
        // The store dropped just before may still be letting go of the file's lock.
        for _ in 0..100 {
            match SqliteStore::open_sealed(&self.0, Migrations::Apply, sealer.clone()).await {
                Ok(store) => return (Arc::new(store.clone()), Arc::new(store)),
                Err(hookline_core::Error::Setup { .. }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(error) => panic!("open {}: {error}", self.0.display()),
            }
        }
        panic!("{} stayed locked", self.0.display());
    }

    async fn stored(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open(&self.0).expect("open the file directly");
        let mut statement = conn
            .prepare("SELECT secrets FROM endpoint UNION ALL SELECT config FROM source")
            .unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_in_the_file() {
    let dir = std::env::temp_dir().join(format!("hookline-sealed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir); // left by an earlier process of the same id
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = File(dir.join("sealed.db"));
    secrets_are_sealed_at_rest(&file).await;
    std::fs::remove_dir_all(dir).ok();
}
