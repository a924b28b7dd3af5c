//! Google's signing keys, for `google-pubsub` sources: the JWKS document at the configured
//! URL, fetched over HTTP and cached, so the receiving pipeline (which does no I/O) can be
//! handed a key set.
//!
//! A key set is kept for its document's `Cache-Control: max-age` (an hour without one,
//! clamped to a minute .. a day) and fetched again once that has passed, or sooner when a
//! token names a `kid` the set does not hold (Google rotates its keys, publishing the new
//! one before signing with it). Fetches are one at a time and at most one per
//! [`MIN_REFETCH_INTERVAL`], so a flood of tokens naming unknown keys costs Google one
//! request per interval. When a refresh fails the previous set is kept and used; only when
//! there is no set at all, or a token names a key the set lacks and the last fetch failed,
//! are the keys unavailable, which the route answers `503 unavailable` so that Pub/Sub
//! delivers again later.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookline_receive::Jwks;

/// The shortest time between two fetches of the key set.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// How long a key set is used when its document does not say.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);
/// Bounds on the `max-age` honoured.
const MAX_AGE_RANGE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(86_400));
/// The longest a fetch may take, connecting included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWKS document read (Google's is about 2 KiB).
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// The key set of one JWKS URL, fetched when needed.
#[derive(Debug)]
pub struct GoogleKeys {
    url: String,
    client: reqwest::Client,
    min_refetch: Duration,
    cached: Mutex<Cached>,
    /// Held while fetching: one fetch at a time, and those who waited see its result.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Cached {
    keys: Option<Arc<Jwks>>,
    /// Until when `keys` is used without asking again.
    fresh_until: Option<Instant>,
    last_attempt: Option<Instant>,
    /// Why the last fetch failed; `None` once one succeeds.
    last_error: Option<String>,
}

/// No key set to check a token with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Google's signing keys could not be fetched from {url}: {reason}; answered 503 so that \
     Pub/Sub delivers the message again"
)]
pub struct KeysUnavailable {
    pub url: String,
    pub reason: String,
}

impl Cached {
    /// The cached set, if it can be used for a token naming `kid` without fetching.
    fn usable(&self, kid: Option<&str>, now: Instant) -> Option<Arc<Jwks>> {
        let keys = self.keys.as_ref()?;
        let fresh = self.fresh_until.is_some_and(|until| now < until);
        let holds = kid.is_none_or(|kid| keys.contains(kid));
        (fresh && holds).then(|| Arc::clone(keys))
    }
}

impl GoogleKeys {
    /// The keys published at `url`, not fetched until first needed.
    pub fn new(url: impl Into<String>) -> Self {
        GoogleKeys {
            url: url.into(),
            client: reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()
                .unwrap_or_default(),
            min_refetch: MIN_REFETCH_INTERVAL,
            cached: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The same with another shortest time between fetches (tests shorten it).
    pub fn min_refetch(mut self, interval: Duration) -> Self {
        self.min_refetch = interval;
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key set to check a token naming `kid` with (`None`: the token names none, and
    /// will be refused whatever the keys). Fetches the set if it has none, if it is past
    /// its max-age, or if it lacks `kid`, unless it fetched within the shortest interval.
    pub async fn for_kid(&self, kid: Option<&str>) -> Result<Arc<Jwks>, KeysUnavailable> {
        let Some(kid) = kid else {
            return Ok(Arc::new(Jwks::default()));
        };
        if let Some(keys) = self.cached().usable(Some(kid), Instant::now()) {
            return Ok(keys);
        }
        let _one_at_a_time = self.fetching.lock().await;
        let now = Instant::now();
        let may_fetch = {
            let cached = self.cached();
            // Another request may have fetched while this one waited.
            if let Some(keys) = cached.usable(Some(kid), now) {
                return Ok(keys);
            }
            cached
                .last_attempt
                .is_none_or(|at| now.duration_since(at) >= self.min_refetch)
        };
        if may_fetch {
            let fetched = self.fetch().await;
            let mut cached = self.cached();
            cached.last_attempt = Some(now);
            match fetched {
                Ok((keys, max_age)) => {
                    tracing::info!(url = %self.url, kids = ?keys.key_ids().collect::<Vec<_>>(),
                        max_age_secs = max_age.as_secs(), "google keys: fetched");
                    cached.keys = Some(Arc::new(keys));
                    cached.fresh_until = Some(now + max_age);
                    cached.last_error = None;
                }
                Err(reason) => {
                    tracing::warn!(url = %self.url, %reason, "google keys: fetch failed");
                    cached.last_error = Some(reason);
                }
            }
        }
        let cached = self.cached();
        let unavailable = |reason: &str| KeysUnavailable {
            url: self.url.clone(),
            reason: reason.to_owned(),
        };
        match (&cached.keys, &cached.last_error) {
            // A key the set lacks may be one the failed fetch would have brought.
            (Some(keys), Some(error)) if !keys.contains(kid) => Err(unavailable(error)),
            (Some(keys), _) => Ok(Arc::clone(keys)),
            (None, error) => Err(unavailable(
                error.as_deref().unwrap_or("no fetch has succeeded yet"),
            )),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Cached> {
        // The lock guards plain data, never left half-written: a panic elsewhere does not
        // make it unusable.
        self.cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// GETs the document; answers the key set and how long to keep it, or why not.
    async fn fetch(&self) -> Result<(Jwks, Duration), String> {
        let mut response = self
            .client
            .get(&self.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|error| crate::error::chain(&error))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the server answered {status}"));
        }
        let max_age = response
            .headers()
            .get("cache-control")
            .and_then(|value| value.to_str().ok())
            .and_then(max_age)
            .map_or(DEFAULT_MAX_AGE, |age| {
                age.clamp(MAX_AGE_RANGE.0, MAX_AGE_RANGE.1)
            });
        let mut document = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| crate::error::chain(&error))?
        {
            if document.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!(
                    "the document is larger than {MAX_DOCUMENT_BYTES} bytes"
                ));
            }
            document.extend_from_slice(&chunk);
        }
        let keys = Jwks::parse(&document).map_err(|error| error.to_string())?;
        Ok((keys, max_age))
    }
}

/// The `max-age` of a `Cache-Control` value, if it has one (`no-cache`/`no-store` count as
/// zero, which the bounds raise to a minute).
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|directive| {
        let directive = directive.trim();
        if directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        {
            return Some(Duration::ZERO);
        }
        let (name, value) = directive.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| value.trim().trim_matches('"').parse().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::routing::get;
    use hookline_signature::oidc::SigningKey;
    use serde_json::json;

    use super::*;

    fn key(n: u8) -> SigningKey {
        let der: &[u8] = match n {
            1 => include_bytes!("../../../hookline-signature/testdata/oidc-rsa-1.pk8"),
            _ => include_bytes!("../../../hookline-signature/testdata/oidc-rsa-2.pk8"),
        };
        SigningKey::from_pkcs8(der).unwrap()
    }

    /// What the loopback JWKS server answers: a status, a `Cache-Control`, the kids.
    #[derive(Clone)]
    struct Published {
        status: Arc<Mutex<StatusCode>>,
        cache_control: Arc<Mutex<Option<&'static str>>>,
        kids: Arc<Mutex<Vec<&'static str>>>,
        fetches: Arc<AtomicUsize>,
    }

    /// A real HTTP server publishing a JWKS document, and its URL.
    async fn publish(kids: &[&'static str]) -> (Published, String) {
        let published = Published {
            status: Arc::new(Mutex::new(StatusCode::OK)),
            cache_control: Arc::new(Mutex::new(None)),
            kids: Arc::new(Mutex::new(kids.to_vec())),
            fetches: Arc::default(),
        };
        let state = published.clone();
        let app = Router::new().route(
            "/certs",
            get(move || {
                let state = state.clone();
                async move {
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    let keys: Vec<_> = state
                        .kids
                        .lock()
                        .unwrap()
                        .iter()
                        .enumerate()
                        .map(|(n, kid)| key(1 + (n % 2) as u8).jwk(kid))
                        .collect();
                    let mut headers = HeaderMap::new();
                    if let Some(value) = *state.cache_control.lock().unwrap() {
                        headers.insert(header::CACHE_CONTROL, value.parse().unwrap());
                    }
                    let status = *state.status.lock().unwrap();
                    (status, headers, json!({ "keys": keys }).to_string())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/certs", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (published, url)
    }

    fn kids(keys: &Jwks) -> Vec<&str> {
        keys.key_ids().collect()
    }

    #[tokio::test]
    async fn keys_are_fetched_once_then_served_from_the_cache() {
        let (published, url) = publish(&["a", "b"]).await;
        let keys = GoogleKeys::new(&url);
        let first = keys.for_kid(Some("a")).await.unwrap();
        assert_eq!(kids(&first), ["a", "b"]);
        let second = keys.for_kid(Some("b")).await.unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(published.fetches.load(Ordering::SeqCst), 1);
        // A token without a kid needs no keys: nothing is fetched for it.
        assert!(keys.for_kid(None).await.unwrap().is_empty());
        assert_eq!(published.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unknown_kid_fetches_again_at_most_once_per_interval() {
        let (published, url) = publish(&["a"]).await;
        let keys = GoogleKeys::new(&url).min_refetch(Duration::from_millis(300));
        keys.for_kid(Some("a")).await.unwrap();
        // Google rotates: the new key is published.
        published.kids.lock().unwrap().push("new");
        // Within the interval the set is not fetched again; the token will be refused.
        let within = keys.for_kid(Some("new")).await.unwrap();
        assert_eq!(kids(&within), ["a"]);
        assert_eq!(published.fetches.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(350)).await;
        let after = keys.for_kid(Some("new")).await.unwrap();
        assert_eq!(kids(&after), ["a", "new"]);
        assert_eq!(published.fetches.load(Ordering::SeqCst), 2);
        // Concurrent unknown kids share one fetch.
        tokio::time::sleep(Duration::from_millis(350)).await;
        let keys = Arc::new(keys);
        let mut lookups = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let keys = Arc::clone(&keys);
            lookups.spawn(async move { keys.for_kid(Some("never")).await });
        }
        while let Some(found) = lookups.join_next().await {
            assert_eq!(kids(&found.unwrap().unwrap()), ["a", "new"]);
        }
        assert_eq!(published.fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_set_past_its_max_age_is_fetched_again() {
        let (published, url) = publish(&["a"]).await;
        *published.cache_control.lock().unwrap() = Some("public, max-age=0, must-revalidate");
        let keys = GoogleKeys::new(&url).min_refetch(Duration::ZERO);
        // max-age=0 is raised to a minute: the set stays fresh.
        keys.for_kid(Some("a")).await.unwrap();
        keys.for_kid(Some("a")).await.unwrap();
        assert_eq!(published.fetches.load(Ordering::SeqCst), 1);
        keys.cached().fresh_until = Some(Instant::now());
        published.kids.lock().unwrap().push("b");
        let refreshed = keys.for_kid(Some("a")).await.unwrap();
        assert_eq!(kids(&refreshed), ["a", "b"]);
        assert_eq!(published.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn without_keys_the_reason_says_why_and_a_stale_set_is_kept() {
        let (published, url) = publish(&["a"]).await;
        *published.status.lock().unwrap() = StatusCode::INTERNAL_SERVER_ERROR;
        let keys = GoogleKeys::new(&url).min_refetch(Duration::ZERO);
        let error = keys.for_kid(Some("a")).await.unwrap_err();
        assert_eq!(
            error.reason,
            "the server answered 500 Internal Server Error"
        );
        assert!(
            error
                .to_string()
                .ends_with("answered 503 so that Pub/Sub delivers the message again"),
            "{error}"
        );

        *published.status.lock().unwrap() = StatusCode::OK;
        keys.for_kid(Some("a")).await.unwrap();
        // The set expires and the refresh fails: the old set still checks known keys,
        // but an unknown kid may be the key the failed fetch would have brought.
        *published.status.lock().unwrap() = StatusCode::SERVICE_UNAVAILABLE;
        keys.cached().fresh_until = Some(Instant::now());
        assert_eq!(kids(&keys.for_kid(Some("a")).await.unwrap()), ["a"]);
        let error = keys.for_kid(Some("b")).await.unwrap_err();
        assert!(error.reason.contains("503"), "{error}");

        let nowhere = GoogleKeys::new("http://127.0.0.1:1/certs");
        let error = nowhere.for_kid(Some("a")).await.unwrap_err();
        assert!(
            error.to_string().contains("http://127.0.0.1:1/certs"),
            "{error}"
        );
    }

    #[test]
    fn cache_control_max_age_is_read() {
        for (value, age) in [
            (
                "public, max-age=20929, must-revalidate, no-transform",
                Some(20_929),
            ),
            ("MAX-AGE = \"60\"", Some(60)),
            ("no-store", Some(0)),
            ("private", None),
            ("max-age=soon", None),
        ] {
            assert_eq!(max_age(value), age.map(Duration::from_secs), "{value}");
        }
    }
}
