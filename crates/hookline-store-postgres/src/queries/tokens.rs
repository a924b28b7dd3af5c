//! API bearer tokens: `impl TokenStore`.

use async_trait::async_trait;
use hookline_core::Result;
use hookline_core::id::AppId;
use hookline_core::model::Token;
use hookline_core::store::TokenStore;

use super::{changed, execute, found, query_opt};
use crate::PostgresStore;
use crate::error::{duplicate, storage};
use crate::rows::{ms, read};

#[async_trait]
impl TokenStore for PostgresStore {
    async fn put_token(&self, token: &Token) -> Result<()> {
        let db = self.client().await?;
        execute(
            &db,
            "INSERT INTO token (hash, app_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            &[
                &token.hash,
                &token.app_id.as_ref().map(AppId::as_str),
                &ms(token.created_at),
                &token.expires_at.map(ms),
            ],
        )
        .await
        .map_err(duplicate("a token"))?;
        Ok(())
    }

    async fn find_token(&self, hash: &str) -> Result<Option<Token>> {
        let db = self.client().await?;
        let row = query_opt(
            &db,
            "SELECT hash, app_id, created_at, expires_at FROM token WHERE hash = $1",
            &[&hash],
        )
        .await
        .map_err(storage)?;
        row.map(|row| {
            read(&row, |c| {
                Ok(Token {
                    hash: c.take()?,
                    app_id: c.take::<Option<String>>()?.map(AppId::from_string),
                    created_at: c.take()?,
                    expires_at: c.take()?,
                })
            })
        })
        .transpose()
    }

    async fn delete_token(&self, hash: &str) -> Result<()> {
        let db = self.client().await?;
        let rows = execute(&db, "DELETE FROM token WHERE hash = $1", &[&hash])
            .await
            .map_err(storage)?;
        changed(rows, "token")
    }

    async fn has_admin_token(&self) -> Result<bool> {
        let db = self.client().await?;
        let row = query_opt(
            &db,
            "SELECT EXISTS (SELECT 1 FROM token WHERE app_id IS NULL)",
            &[],
        )
        .await
        .map_err(storage)?;
        found(row, "token", |c| c.take())
    }
}
