//! API tokens.

use super::*;

pub async fn tokens_are_found_by_hash(store: Arc<dyn Store>) {
    assert!(!store.has_admin_token().await.unwrap());
    let app_token = Token {
        hash: "h-app".into(),
        app_id: Some(AppId::new()),
        created_at: clock_now(),
    };
    store.put_token(&app_token).await.unwrap();
    assert!(!store.has_admin_token().await.unwrap());
    store
        .put_token(&Token {
            hash: "h-admin".into(),
            app_id: None,
            created_at: clock_now(),
        })
        .await
        .unwrap();
    assert!(store.has_admin_token().await.unwrap());
    assert_eq!(
        store.find_token("h-app").await.unwrap().map(|t| t.app_id),
        Some(app_token.app_id.clone())
    );
    store.delete_token("h-app").await.unwrap();
    assert_eq!(store.find_token("h-app").await.unwrap(), None);
}
