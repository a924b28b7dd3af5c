//! Endpoint rows kept between claims. A claim of a fan-out's deliveries needs the rows of
//! many endpoints, the same ones claim after claim; reading and decoding each again would
//! cost more than the rest of the claim. This process is the database's only writer, so
//! the cache can be exact: every commit that changes an endpoint row moves the generation
//! on (after the commit, on the writer thread), and rows read under an older generation
//! are never served.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hookline_core::id::EndpointId;
use hookline_core::model::Endpoint;

/// Endpoints kept at most; past that the cache starts afresh.
const MAX_ENDPOINTS: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct EndpointCache {
    /// Moves on after every commit that changed an endpoint row.
    generation: AtomicU64,
    filled: Mutex<Filled>,
}

#[derive(Debug, Default)]
struct Filled {
    /// The generation every row in `rows` was read under.
    generation: u64,
    rows: HashMap<EndpointId, Arc<Endpoint>>,
}

impl EndpointCache {
    /// The current generation. Read it before reading rows from the database: a row read
    /// after a change committed is then never filed under the generation before it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Called after a commit that changed endpoint rows.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The endpoint `id` as read under `generation`, if kept.
    pub fn get(&self, generation: u64, id: &EndpointId) -> Option<Arc<Endpoint>> {
        let mut filled = self.filled.lock().expect("endpoint cache lock");
        if filled.generation < generation {
            filled.rows.clear();
            filled.generation = generation;
        }
        (filled.generation == generation)
            .then(|| filled.rows.get(id).cloned())
            .flatten()
    }

    /// Keeps `endpoint`, read from the database under `generation`.
    pub fn put(&self, generation: u64, endpoint: &Arc<Endpoint>) {
        let mut filled = self.filled.lock().expect("endpoint cache lock");
        if filled.generation != generation {
            return; // Read under an older generation (or the cache moved on meanwhile).
        }
        if filled.rows.len() >= MAX_ENDPOINTS {
            filled.rows.clear();
        }
        filled
            .rows
            .insert(endpoint.id.clone(), Arc::clone(endpoint));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str) -> Arc<Endpoint> {
        let now = chrono::Utc::now();
        Arc::new(Endpoint {
            id: EndpointId::from_string(id.into()),
            app_id: hookline_core::id::AppId::from_string("app_1".into()),
            uid: None,
            url: "https://example.test/hook".into(),
            description: String::new(),
            disabled: false,
            throttle_rate: None,
            event_types: None,
            channels: None,
            metadata: Default::default(),
            headers: Default::default(),
            secrets: Vec::new(),
            failing_since: None,
            created_at: now,
            updated_at: now,
        })
    }

    #[test]
    fn rows_of_an_older_generation_are_never_served() {
        let cache = EndpointCache::default();
        let id = EndpointId::from_string("ep_1".into());
        let before = cache.generation();
        cache.put(before, &endpoint("ep_1"));
        assert!(cache.get(before, &id).is_some());

        cache.invalidate();
        let after = cache.generation();
        assert!(cache.get(after, &id).is_none(), "cleared by the change");
        // A read that began before the change files its row too late to be kept.
        cache.put(before, &endpoint("ep_1"));
        assert!(cache.get(after, &id).is_none());
        // A reader still on the older generation is not served the newer rows.
        cache.put(after, &endpoint("ep_1"));
        assert!(cache.get(before, &id).is_none());
        assert!(cache.get(after, &id).is_some());
    }
}
