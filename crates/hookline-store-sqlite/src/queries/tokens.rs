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
                "INSERT INTO token (hash, app_id, created_at) VALUES (?1, ?2, ?3)",
                params![
                    token.hash,
                    token.app_id.as_ref().map(AppId::as_str),
                    millis(token.created_at)
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
                "SELECT hash, app_id, created_at FROM token WHERE hash = ?1",
                [&hash],
                |row| {
                    Ok(Token {
                        hash: row.get(0)?,
                        app_id: row.get::<_, Option<String>>(1)?.map(AppId::from_string),
                        created_at: time(row.get(2)?),
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
