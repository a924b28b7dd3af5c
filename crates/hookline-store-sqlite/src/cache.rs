//! Endpoint rows kept between claims. A claim of a fan-out's deliveries needs the rows of
//! many endpoints, the same ones claim after claim; reading and decoding each again cost
//! about as much as the claim itself. This process is the database's only writer, so
//! the cache can be exact: every commit that changes an endpoint row moves the generation
//! on (after the commit, on the writer thread), and rows read under an older generation
//! are never served.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hookline_core::id::EndpointId;
use hookline_core::memo::Memo;
use hookline_core::model::Endpoint;

/// Endpoints kept at most.
const MAX_ENDPOINTS: usize = 10_000;

#[derive(Debug)]
pub(crate) struct EndpointCache {
    /// Moves on after every commit that changed an endpoint row.
    generation: AtomicU64,
    /// Each row with the generation it was read under.
    rows: Memo<EndpointId, (u64, Arc<Endpoint>)>,
}

impl Default for EndpointCache {
    fn default() -> Self {
        EndpointCache {
            generation: AtomicU64::new(0),
            rows: Memo::new(MAX_ENDPOINTS),
        }
    }
}

impl EndpointCache {
    /// The current generation. Read it before reading rows from the database: a row read
    /// after a change committed is then never filed under the generation before it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Called after a commit that changed endpoint rows: every row kept is stale.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The endpoint `id` as read under `generation`, if kept.
    pub fn get(&self, generation: u64, id: &EndpointId) -> Option<Arc<Endpoint>> {
        self.rows
            .get(id)
            .and_then(|(read_under, endpoint)| (read_under == generation).then_some(endpoint))
    }

    /// Keeps `endpoint`, read from the database under `generation`.
    pub fn put(&self, generation: u64, endpoint: &Arc<Endpoint>) {
        self.rows
            .insert(endpoint.id.clone(), (generation, Arc::clone(endpoint)));
    }

    /// Keeps the `endpoints` the writer read in a batch that has since committed, which
    /// it could not keep itself (the batch might have rolled back): under `generation`,
    /// read before the write was sent, so that a change committed since hides them.
    pub fn put_committed<'a>(
        &self,
        generation: u64,
        endpoints: impl IntoIterator<Item = &'a Arc<Endpoint>>,
    ) {
        for endpoint in endpoints {
            if self.get(generation, &endpoint.id).is_none() {
                self.put(generation, endpoint);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_an_older_generation_are_never_served() {
        let cache = EndpointCache::default();
        let app = hookline_core::id::AppId::new();
        let endpoint = Arc::new(hookline_core::conformance::endpoint(&app, None, None));
        let id = endpoint.id.clone();
        let before = cache.generation();
        cache.put(before, &endpoint);
        assert!(cache.get(before, &id).is_some());

        cache.invalidate();
        let after = cache.generation();
        assert!(cache.get(after, &id).is_none(), "stale after the change");
        // A read that began before the change files its row too late to be served.
        cache.put(before, &endpoint);
        assert!(cache.get(after, &id).is_none());
        // A reader still on the older generation is not served the newer rows.
        cache.put(after, &endpoint);
        assert!(cache.get(before, &id).is_none());
        assert!(cache.get(after, &id).is_some());
    }

    #[test]
    fn rows_the_writer_read_are_kept_once_committed_unless_changed_since() {
        let cache = EndpointCache::default();
        let app = hookline_core::id::AppId::new();
        let endpoint = Arc::new(hookline_core::conformance::endpoint(&app, None, None));
        let id = endpoint.id.clone();

        let sent = cache.generation();
        cache.put_committed(sent, [&endpoint]);
        assert!(cache.get(cache.generation(), &id).is_some(), "kept");

        // A change that committed after the write was sent hides what it read.
        let other = Arc::new(hookline_core::conformance::endpoint(&app, None, None));
        let sent = cache.generation();
        cache.invalidate();
        cache.put_committed(sent, [&other]);
        assert!(cache.get(cache.generation(), &other.id).is_none());
    }
}
