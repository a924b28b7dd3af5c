//! Secrets sealed at rest: core's check, on one schema reopened under other keys and read
//! behind the store's back with a plain connection.

use std::sync::Arc;

use async_trait::async_trait;
use hookline_core::Store;
use hookline_core::conformance::sealed::{SealedBackend, secrets_are_sealed_at_rest};
use hookline_core::sealed::{Reseal, Sealer};
use hookline_store_postgres::PostgresStore;

struct Schema {
    url: String,
    name: String,
}

#[async_trait]
impl SealedBackend for Schema {
    async fn open(&self, sealer: Sealer) -> (Arc<dyn Store>, Arc<dyn Reseal>) {
        let store = PostgresStore::connect_with_schema_sealed(&self.url, &self.name, 2, sealer)
            .await
            .expect("connect to the test database");
        (Arc::new(store.clone()), Arc::new(store))
    }

    async fn stored(&self) -> Vec<String> {
        let client = crate::raw(&self.url, &self.name).await;
        client
            .query(
                "SELECT secrets::text FROM endpoint UNION ALL SELECT config::text FROM source",
                &[],
            )
            .await
            .expect("read the stored columns")
            .iter()
            .map(|row| row.get(0))
            .collect()
    }
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_in_the_database() {
    let Some(url) = crate::url() else { return };
    let schema = crate::unique_schema();
    // Clears what earlier runs left, as every test's first store does.
    drop(crate::open(&url, &schema).await);
    secrets_are_sealed_at_rest(&Schema { url, name: schema }).await;
}
