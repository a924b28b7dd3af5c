//! Secrets sealed at rest, on any backend. Unlike the checks of the other modules this
//! one needs to reopen one database under other keys and to read its columns behind the
//! store's back, so each backend runs it through a [`SealedBackend`] of its own.

use async_trait::async_trait;

use super::*;
use crate::sealed::{MainKey, Reseal, ResealBatch, Resealable, Sealer};

/// One database of a backend under the sealing check.
#[async_trait]
pub trait SealedBackend: Send + Sync {
    /// The store on the database, opened with `sealer` (the check has dropped the store
    /// it opened before), and the same store as a [`Reseal`].
    async fn open(&self, sealer: Sealer) -> (Arc<dyn Store>, Arc<dyn Reseal>);
    /// Every stored `endpoint.secrets` and `source.config` value, as text, read behind the
    /// store's back.
    async fn stored(&self) -> Vec<String>;
}

/// A key for the check, made of one repeated byte.
pub fn test_key(byte: u8) -> MainKey {
    MainKey::from_bytes(&[byte; crate::sealed::KEY_BYTES])
}

fn sealer(current: Option<u8>, previous: &[u8]) -> Sealer {
    Sealer::new(
        current.map(test_key),
        previous.iter().map(|byte| test_key(*byte)).collect(),
    )
    .expect("distinct test keys")
}

const OLD_SECRET: &str = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZA==";
const PLAIN_SECRET: &str = "whsec_cGxhaW4tc2VjcmV0LXBsYWluLXNlY3JldA==";
const SOURCE_SECRETS: [&str; 2] = ["stripe-signing-secret-1", "stripe-signing-secret-2"];
const PASSWORD: &str = "basic-auth-password-9";

/// Runs every batch of a rotation, `limit` rows at a time; returns rows read and
/// re-sealed over both kinds.
async fn reseal_all(store: &dyn Reseal, limit: usize) -> (usize, usize) {
    let (mut read, mut resealed) = (0, 0);
    for what in [Resealable::Endpoints, Resealable::Sources] {
        let mut after = None;
        loop {
            let ResealBatch {
                read: r,
                resealed: s,
                next,
            } = store.reseal(what, after, limit).await.unwrap();
            assert!(r <= limit);
            read += r;
            resealed += s;
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    (read, resealed)
}

/// Asserts that no stored value holds a plaintext secret, and that each names `key`.
async fn assert_sealed(backend: &dyn SealedBackend, key: u8, secrets: &[&str]) {
    let stored = backend.stored().await;
    assert!(!stored.is_empty());
    let header = format!("sealed:v1:{}:", test_key(key).id());
    for value in &stored {
        for secret in secrets {
            assert!(
                !value.contains(secret),
                "plaintext {secret} stored: {value}"
            );
        }
        assert!(
            value.contains(&header),
            "not sealed under {header}: {value}"
        );
    }
}

/// The whole life of a main key on one database: plaintext from before any key, sealing
/// under key A, a rotation to B (A still reads, `reseal` moves everything to B), B alone,
/// and the errors of a wrong key or of none.
pub async fn secrets_are_sealed_at_rest(backend: &dyn SealedBackend) {
    // Before any key: stored as given.
    let (store, _) = backend.open(Sealer::none()).await;
    let a = app(None);
    store.create_app(&a).await.unwrap();
    let mut plain = endpoint(&a.id, None, None);
    plain.secrets[0].key = PLAIN_SECRET.into();
    store.create_endpoint(&plain).await.unwrap();
    assert!(
        backend
            .stored()
            .await
            .iter()
            .any(|value| value.contains(PLAIN_SECRET)),
        "without a key, secrets are stored as given"
    );
    drop(store);

    // Key A: new secrets are sealed; plaintext from before still reads.
    let (store, reseal) = backend.open(sealer(Some(1), &[])).await;
    assert_eq!(
        store.get_endpoint(&a.id, plain.id.as_str()).await.unwrap(),
        plain
    );
    let mut rotated = endpoint(&a.id, None, None);
    rotated.secrets.push(EndpointSecret {
        key: OLD_SECRET.into(),
        expires_at: Some(clock_now() + chrono::Duration::hours(1)),
    });
    // Stored to the millisecond by every backend.
    rotated.secrets[1].expires_at = rotated.secrets[1]
        .expires_at
        .map(|at| DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap());
    store.create_endpoint(&rotated).await.unwrap();
    let mut stripe = source(Some("stripe"));
    stripe.config = serde_json::json!({"secrets": SOURCE_SECRETS, "toleranceSeconds": 60});
    store.create_source(&stripe).await.unwrap();
    let mut basic = source(Some("basic"));
    basic.source_type = "basic-auth".into();
    basic.config = serde_json::json!({"username": "hookline", "password": PASSWORD});
    store.create_source(&basic).await.unwrap();

    let read_back = |store: Arc<dyn Store>| {
        let (a, plain, rotated, stripe, basic) = (
            a.clone(),
            plain.clone(),
            rotated.clone(),
            stripe.clone(),
            basic.clone(),
        );
        async move {
            let got = store.get_endpoint(&a.id, rotated.id.as_str()).await;
            assert_eq!(got.unwrap(), rotated);
            let listed = store.list_endpoints(&a.id, &first(10)).await.unwrap();
            let mut expected = vec![plain.clone(), rotated.clone()];
            expected.sort_by(|x, y| x.id.as_str().cmp(y.id.as_str()));
            assert_eq!(listed.data, expected);
            assert_eq!(store.get_source("stripe").await.unwrap(), stripe);
            assert_eq!(store.get_source(basic.id.as_str()).await.unwrap(), basic);
            let found = store
                .find_source_by_token(&stripe.token, clock_now())
                .await
                .unwrap();
            assert_eq!(found, Some(stripe.clone()));
            let listed = store.list_sources(&first(10)).await.unwrap();
            assert_eq!(listed.data.len(), 2);
            assert!(listed.data.contains(&stripe) && listed.data.contains(&basic));
        }
    };
    read_back(Arc::clone(&store)).await;
    // A delivery is signed with the opened secrets.
    let m = message(&a.id, "a.b", None);
    let mut new = new_message(m);
    new.only_endpoint = Some(rotated.id.clone());
    store.create_message(new).await.unwrap();
    let later = clock_now() + chrono::Duration::seconds(1);
    let jobs = store
        .claim_due("node-a", later, Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].endpoint.secrets, rotated.secrets);

    // The plaintext row is what a rotation under A seals; the rest already is.
    assert_eq!(reseal_all(reseal.as_ref(), 1).await, (4, 1));
    let all_secrets = [
        PLAIN_SECRET,
        OLD_SECRET,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        SOURCE_SECRETS[0],
        SOURCE_SECRETS[1],
        PASSWORD,
    ];
    assert_sealed(backend, 1, &all_secrets).await;
    assert_eq!(
        reseal_all(reseal.as_ref(), 10).await,
        (4, 0),
        "nothing left"
    );
    drop((store, reseal));

    // Key B with A as previous: everything reads; a rotation moves all to B.
    let (store, reseal) = backend.open(sealer(Some(2), &[1])).await;
    read_back(Arc::clone(&store)).await;
    assert_eq!(reseal_all(reseal.as_ref(), 3).await, (4, 4));
    assert_sealed(backend, 2, &all_secrets).await;
    drop((store, reseal));

    // B alone reads everything.
    let (store, _) = backend.open(sealer(Some(2), &[])).await;
    read_back(Arc::clone(&store)).await;
    drop(store);

    // A wrong key, or none, fails with the key named rather than reading garbage.
    let (store, reseal) = backend.open(sealer(Some(3), &[1])).await;
    let error = store
        .get_endpoint(&a.id, rotated.id.as_str())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(test_key(2).id()) && error.contains("HOOKLINE_PREVIOUS_MAIN_KEYS"),
        "{error}"
    );
    assert!(store.get_source("stripe").await.is_err());
    assert!(store.list_endpoints(&a.id, &first(10)).await.is_err());
    let error = reseal
        .reseal(Resealable::Endpoints, None, 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains(test_key(2).id()), "{error}");
    drop((store, reseal));
    let (store, _) = backend.open(Sealer::none()).await;
    assert!(store.get_source("stripe").await.is_err());
    drop(store);

    // Turning sealing off: B only as previous, and a rotation writes plaintext back.
    let (store, reseal) = backend.open(sealer(None, &[2])).await;
    assert_eq!(reseal_all(reseal.as_ref(), 10).await, (4, 4));
    assert!(
        backend
            .stored()
            .await
            .iter()
            .all(|value| !value.contains("sealed:"))
    );
    read_back(store).await;
}
