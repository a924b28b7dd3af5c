//! API tokens.

use super::*;

pub async fn tokens_are_found_by_hash(store: Arc<dyn Store>) {
    assert!(!store.has_admin_token().await.unwrap());
    let now = clock_now();
    let app_token = Token {
        hash: "h-app".into(),
        app_id: Some(AppId::new()),
        created_at: now,
        expires_at: Some(now + chrono::Duration::seconds(3600)),
    };
    store.put_token(&app_token).await.unwrap();
    assert!(!store.has_admin_token().await.unwrap());
    store
        .put_token(&Token {
            hash: "h-admin".into(),
            app_id: None,
            created_at: clock_now(),
            expires_at: None,
        })
        .await
        .unwrap();
    assert!(store.has_admin_token().await.unwrap());
    // The expiry is kept to the millisecond, as every time is.
    assert_eq!(
        store.find_token("h-app").await.unwrap().as_ref(),
        Some(&app_token)
    );
    assert_eq!(
        store
            .find_token("h-admin")
            .await
            .unwrap()
            .map(|t| t.expires_at),
        Some(None)
    );
    store.delete_token("h-app").await.unwrap();
    assert_eq!(store.find_token("h-app").await.unwrap(), None);
}
