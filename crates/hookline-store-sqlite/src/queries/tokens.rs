//! API bearer tokens: `impl TokenStore`.

use async_trait::async_trait;
use hookline_core::id::AppId;
use hookline_core::model::Token;
use hookline_core::store::TokenStore;
use hookline_core::{Error, Result};
use rusqlite::params;

use super::{changed, one};
use crate::SqliteStore;
use crate::rows::{classify, millis, time};

#[async_trait]
impl TokenStore for SqliteStore {
    async fn put_token(&self, token: &Token) -> Result<()> {
        let token = token.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO token (hash, app_id, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    token.hash,
                    token.app_id.as_ref().map(AppId::as_str),
                    millis(token.created_at),
                    token.expires_at.map(millis),
                ],
            )
            .map_err(|e| classify(e, "a token"))?;
            Ok(())
        })
        .await
    }

    async fn find_token(&self, hash: &str) -> Result<Option<Token>> {
        let hash = hash.to_owned();
        self.lookup(move |conn| {
            one(
                conn,
                "SELECT hash, app_id, created_at, expires_at FROM token WHERE hash = ?1",
                [&hash],
                |row| {
                    Ok(Token {
                        hash: row.get(0)?,
                        app_id: row.get::<_, Option<String>>(1)?.map(AppId::from_string),
                        created_at: time(row.get(2)?),
                        expires_at: row.get::<_, Option<i64>>(3)?.map(time),
                    })
                },
            )
        })
        .await
    }

    async fn delete_token(&self, hash: &str) -> Result<()> {
        let hash = hash.to_owned();
        self.write(move |conn| {
            let rows = conn
                .execute("DELETE FROM token WHERE hash = ?1", [&hash])
                .map_err(Error::storage)?;
            changed(rows, "token")
        })
        .await
    }

    async fn has_admin_token(&self) -> Result<bool> {
        self.read(|conn| {
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM token WHERE app_id IS NULL)",
                [],
                |row| row.get(0),
            )
            .map_err(Error::storage)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use hookline_core::store::TokenStore;
    use rusqlite::Connection;

    use crate::SqliteStore;
    use crate::schema::MIGRATIONS;

    /// App tokens stored before tokens expired get the longest lifetime an issuer could
    /// have asked for, from their creation; admin tokens keep none.
    #[tokio::test]
    async fn tokens_from_before_expiry_get_seven_days_and_admin_tokens_none() {
        let dir = crate::test_dir("tokens");
        let path = dir.join("old.db");
        // The migration that adds expiry is the first to mention `token.expires_at`.
        let before = MIGRATIONS
            .iter()
            .position(|sql| sql.contains("ALTER TABLE token ADD COLUMN expires_at"))
            .unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..before] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", before).unwrap();
            conn.execute_batch(
                "INSERT INTO token (hash, app_id, created_at) VALUES ('app', 'app_1', 1000);
                 INSERT INTO token (hash, app_id, created_at) VALUES ('admin', NULL, 1000);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let app = store.find_token("app").await.unwrap().unwrap();
        assert_eq!(
            app.expires_at.map(|t| t.timestamp_millis()),
            Some(1000 + 604_800_000)
        );
        let admin = store.find_token("admin").await.unwrap().unwrap();
        assert_eq!(admin.expires_at, None);
        drop(store);
        std::fs::remove_dir_all(dir).ok();
    }
}
