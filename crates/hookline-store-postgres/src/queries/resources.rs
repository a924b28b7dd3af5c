//! Applications, endpoints and event types: `impl ResourceStore`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use hookline_core::id::{AppId, EndpointId};
use hookline_core::model::{Application, Endpoint, EndpointStats, EventType};
use hookline_core::page::{ListQuery, Page};
use hookline_core::sealed::Sealer;
use hookline_core::store::ResourceStore;
use hookline_core::{Code, Error, Result};
use tokio_postgres::types::{Json, ToSql};

use super::{
    RUNNING_WAIT, Select, changed, execute, found, key_column, query_opt, query_rows,
    wait_for_running,
};
use crate::PostgresStore;
use crate::error::{duplicate, or_conflict, storage};
use crate::rows::{self, ms, read};

/// An endpoint's values in the stored types, to bind to an insert or an update.
struct EndpointValues<'a> {
    endpoint: &'a Endpoint,
    id: &'a str,
    app_id: &'a str,
    throttle_rate: Option<i32>,
    metadata: Json<&'a std::collections::BTreeMap<String, String>>,
    headers: Json<&'a std::collections::BTreeMap<String, String>>,
    secrets: Json<Vec<hookline_core::model::EndpointSecret>>,
    failing_since: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<'a> EndpointValues<'a> {
    /// The values of `endpoint`, its secrets sealed by `sealer`.
    fn new(endpoint: &'a Endpoint, sealer: &Sealer) -> Self {
        Self {
            endpoint,
            id: endpoint.id.as_str(),
            app_id: endpoint.app_id.as_str(),
            throttle_rate: endpoint.throttle_rate.map(i32::from),
            metadata: Json(&endpoint.metadata),
            headers: Json(&endpoint.headers),
            secrets: rows::secrets(sealer, &endpoint.secrets),
            failing_since: endpoint.failing_since.map(ms),
            created_at: ms(endpoint.created_at),
            updated_at: ms(endpoint.updated_at),
        }
    }

    /// `$1` to `$12`, the columns an insert and an update both write (`id` to `secrets`),
    /// then `rest`.
    fn params<'b>(&'b self, rest: &[&'b (dyn ToSql + Sync)]) -> Vec<&'b (dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &self.id,
            &self.app_id,
            &self.endpoint.uid,
            &self.endpoint.url,
            &self.endpoint.description,
            &self.endpoint.disabled,
            &self.throttle_rate,
            &self.endpoint.event_types,
            &self.endpoint.channels,
            &self.metadata,
            &self.headers,
            &self.secrets,
        ];
        params.extend_from_slice(rest);
        params
    }
}

pub(super) async fn insert_app(db: &impl GenericClient, app: &Application) -> Result<()> {
    execute(
        db,
        "INSERT INTO app (id, uid, name, throttle_rate, metadata, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &app.id.as_str(),
            &app.uid,
            &app.name,
            &app.throttle_rate.map(i32::from),
            &Json(&app.metadata),
            &ms(app.created_at),
            &ms(app.updated_at),
        ],
    )
    .await
    .map_err(duplicate("an application"))?;
    Ok(())
}

/// Deletes the deliveries queued to `endpoint`.
async fn delete_deliveries_to(db: &impl GenericClient, endpoint: &EndpointId) -> Result<()> {
    execute(
        db,
        "DELETE FROM destination WHERE endpoint_id = $1",
        &[&endpoint.as_str()],
    )
    .await
    .map_err(storage)?;
    Ok(())
}

/// What an application deleted in a transaction leaves to sweep once it has committed:
/// see [`AppDeleted::sweep`].
#[must_use]
pub(super) struct AppDeleted(AppId);

/// Deletes an application with everything in it. Its endpoints go with it by foreign key
/// (`ON DELETE CASCADE`); its messages, their deliveries and their attempts carry no key
/// (see the migrations) and are deleted here. Run it in a transaction, then
/// [`AppDeleted::sweep`] after the commit.
pub(super) async fn delete_app_rows(db: &impl GenericClient, id: &AppId) -> Result<AppDeleted> {
    let rows = execute(db, "DELETE FROM app WHERE id = $1", &[&id.as_str()])
        .await
        .map_err(storage)?;
    changed(rows, "application")?;
    let deleted = AppDeleted(id.clone());
    deleted.delete_contents(db).await?;
    Ok(deleted)
}

impl AppDeleted {
    async fn delete_contents(&self, db: &impl GenericClient) -> Result<()> {
        for sql in [
            "DELETE FROM destination
             WHERE msg_id = ANY(ARRAY(SELECT id FROM message WHERE app_id = $1))",
            "DELETE FROM attempt WHERE app_id = $1",
            "DELETE FROM message WHERE app_id = $1",
        ] {
            execute(db, sql, &[&self.0.as_str()])
                .await
                .map_err(storage)?;
        }
        Ok(())
    }

    /// Deletes, once the transactions running at the deletion's commit have ended, what
    /// they wrote for the application: no foreign key holds back a message create that read
    /// the application before the deletion committed, nor an outcome of one of its
    /// deliveries. The deletion has committed: a failure here is logged, not answered.
    /// What it leaves is never delivered (a claim reads deliveries with their endpoint)
    /// nor listed (the application is gone).
    pub(super) async fn sweep(self, db: &impl GenericClient) {
        let swept = async {
            let waited = wait_for_running(db).await?;
            self.delete_contents(db).await?;
            Ok::<_, Error>(waited)
        };
        match swept.await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(app = %self.0, "deleting an application's late messages did not wait for a transaction that ran for longer than {RUNNING_WAIT:?}")
            }
            Err(error) => {
                tracing::warn!(app = %self.0, %error, "deleting a deleted application's late messages failed")
            }
        }
    }
}

#[async_trait]
impl ResourceStore for PostgresStore {
    async fn create_app(&self, app: &Application) -> Result<()> {
        let db = self.client().await?;
        insert_app(&db, app).await
    }

    async fn get_app(&self, key: &str) -> Result<Application> {
        let db = self.client().await?;
        let column = key_column(AppId::is_id(key), "uid");
        let sql = format!(
            "SELECT {} FROM app WHERE app.{column} = $1",
            rows::APP_COLUMNS
        );
        let row = query_opt(&db, &sql, &[&key]).await.map_err(storage)?;
        found(row, "application", rows::app)
    }

    async fn list_apps(&self, query: &ListQuery) -> Result<Page<Application>> {
        let db = self.client().await?;
        // A source's hidden application is reached through the source only.
        Select::new(format!(
            "SELECT {} FROM app
             WHERE NOT EXISTS (SELECT 1 FROM source WHERE source.app_id = app.id)",
            rows::APP_COLUMNS
        ))
        .page(&db, "app.id", query, rows::app, |app| app.id.to_string())
        .await
    }

    async fn update_app(&self, app: &Application) -> Result<()> {
        let db = self.client().await?;
        let rows = execute(
            &db,
            "UPDATE app SET uid = $2, name = $3, throttle_rate = $4, metadata = $5,
                 updated_at = $6
             WHERE id = $1",
            &[
                &app.id.as_str(),
                &app.uid,
                &app.name,
                &app.throttle_rate.map(i32::from),
                &Json(&app.metadata),
                &ms(app.updated_at),
            ],
        )
        .await
        .map_err(duplicate("an application"))?;
        changed(rows, "application")
    }

    async fn delete_app(&self, id: &AppId) -> Result<()> {
        let mut db = self.client().await?;
        let owned = query_opt(
            &db,
            "SELECT 1 FROM source WHERE app_id = $1",
            &[&id.as_str()],
        )
        .await
        .map_err(storage)?;
        if owned.is_some() {
            return Err(Error::conflict(
                "the application belongs to a source; delete the source instead",
            ));
        }
        let tx = db.transaction().await.map_err(storage)?;
        let deleted = delete_app_rows(&tx, id).await?;
        tx.commit().await.map_err(storage)?;
        deleted.sweep(&db).await;
        Ok(())
    }

    async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        let db = self.client().await?;
        let v = EndpointValues::new(endpoint, self.sealer());
        execute(
            &db,
            "INSERT INTO endpoint (id, app_id, uid, url, description, disabled, throttle_rate,
                 event_types, channels, metadata, headers, secrets, failing_since,
                 created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            &v.params(&[&v.failing_since, &v.created_at, &v.updated_at]),
        )
        .await
        .map_err(duplicate("an endpoint"))?;
        Ok(())
    }

    async fn get_endpoint(&self, app: &AppId, key: &str) -> Result<Endpoint> {
        let db = self.client().await?;
        let column = key_column(EndpointId::is_id(key), "uid");
        let sql = format!(
            "SELECT {} FROM endpoint WHERE endpoint.app_id = $1 AND endpoint.{column} = $2",
            rows::ENDPOINT_COLUMNS
        );
        let row = query_opt(&db, &sql, &[&app.as_str(), &key])
            .await
            .map_err(storage)?;
        let stored = found(row, "endpoint", rows::endpoint)?;
        rows::open_endpoint(self.sealer(), stored)
    }

    async fn list_endpoints(&self, app: &AppId, query: &ListQuery) -> Result<Page<Endpoint>> {
        let db = self.client().await?;
        Select::new(format!(
            "SELECT {} FROM endpoint WHERE TRUE",
            rows::ENDPOINT_COLUMNS
        ))
        .and("endpoint.app_id = ?", app.to_string())
        .page(&db, "endpoint.id", query, rows::endpoint, |e| {
            e.id.to_string()
        })
        .await
        .and_then(|stored| rows::open_endpoints(self.sealer(), stored))
    }

    async fn update_endpoint(&self, endpoint: &Endpoint, set_disabled: bool) -> Result<()> {
        let db = self.client().await?;
        let v = EndpointValues::new(endpoint, self.sealer());
        let rows = execute(
            &db,
            "UPDATE endpoint SET uid = $3, url = $4, description = $5,
                 disabled = CASE WHEN $14 THEN $6 ELSE disabled END,
                 throttle_rate = $7, event_types = $8, channels = $9, metadata = $10,
                 headers = $11, secrets = $12, updated_at = $13,
                 failing_since = CASE WHEN $14 AND disabled AND NOT $6 THEN NULL
                                      ELSE failing_since END
             WHERE id = $1 AND app_id = $2",
            &v.params(&[&v.updated_at, &set_disabled]),
        )
        .await
        .map_err(duplicate("an endpoint"))?;
        changed(rows, "endpoint")
    }

    async fn delete_endpoint(&self, app: &AppId, id: &EndpointId) -> Result<()> {
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(storage)?;
        let rows = execute(
            &tx,
            "DELETE FROM endpoint WHERE app_id = $1 AND id = $2",
            &[&app.as_str(), &id.as_str()],
        )
        .await
        .map_err(storage)?;
        changed(rows, "endpoint")?;
        delete_deliveries_to(&tx, id).await?;
        tx.commit().await.map_err(storage)?;
        // No foreign key holds back a message create that read the endpoint before the
        // deletion committed and queues its delivery after (see the migrations): what the
        // transactions running at the commit queued to the endpoint is deleted once they
        // have ended.
        // The deletion has committed: a failure here is logged, not answered. What it
        // leaves is never delivered (a claim reads deliveries with their endpoint).
        let swept = async {
            let waited = wait_for_running(&db).await?;
            delete_deliveries_to(&db, id).await?;
            Ok::<_, Error>(waited)
        };
        match swept.await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(endpoint = %id, "deleting an endpoint's deliveries did not wait for a transaction that ran for longer than {RUNNING_WAIT:?}")
            }
            Err(error) => {
                tracing::warn!(endpoint = %id, %error, "deleting a deleted endpoint's late deliveries failed")
            }
        }
        Ok(())
    }

    async fn endpoint_stats(
        &self,
        app: &AppId,
        endpoint: &EndpointId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<EndpointStats> {
        let db = self.client().await?;
        let counts = query_rows(
            &db,
            "SELECT status, count(*) FROM destination
             WHERE app_id = $1 AND endpoint_id = $2
               AND msg_created_at >= $3 AND msg_created_at <= $4
             GROUP BY status",
            &[&app.as_str(), &endpoint.as_str(), &ms(since), &ms(until)],
        )
        .await
        .map_err(storage)?;
        let counts = counts
            .iter()
            .map(|row| {
                let (status, n): (i16, i64) = read(row, |c| Ok((c.take()?, c.take()?)))?;
                Ok((i64::from(status), n))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EndpointStats::from_counts(counts))
    }

    async fn create_event_type(&self, event_type: &EventType) -> Result<()> {
        let db = self.client().await?;
        execute(
            &db,
            "INSERT INTO event_type (name, description, archived, deprecated, schemas,
                 feature_flag, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &event_type.name,
                &event_type.description,
                &event_type.archived,
                &event_type.deprecated,
                &event_type.schemas,
                &event_type.feature_flag,
                &ms(event_type.created_at),
                &ms(event_type.updated_at),
            ],
        )
        .await
        .map_err(or_conflict(|| Error::Conflict {
            code: Code::EventTypeExists,
            detail: "an event type with this name already exists".into(),
        }))?;
        Ok(())
    }

    async fn get_event_type(&self, name: &str) -> Result<EventType> {
        let db = self.client().await?;
        let sql = format!(
            "SELECT {} FROM event_type WHERE event_type.name = $1",
            rows::EVENT_TYPE_COLUMNS
        );
        let row = query_opt(&db, &sql, &[&name]).await.map_err(storage)?;
        found(row, "event type", rows::event_type)
    }

    async fn list_event_types(
        &self,
        query: &ListQuery,
        include_archived: bool,
    ) -> Result<Page<EventType>> {
        let db = self.client().await?;
        let mut select = Select::new(format!(
            "SELECT {} FROM event_type WHERE TRUE",
            rows::EVENT_TYPE_COLUMNS
        ));
        if !include_archived {
            select = select.and("event_type.archived = ?", false);
        }
        select
            .page(&db, "event_type.name", query, rows::event_type, |et| {
                et.name.clone()
            })
            .await
    }

    async fn update_event_type(&self, event_type: &EventType) -> Result<()> {
        let db = self.client().await?;
        let rows = execute(
            &db,
            "UPDATE event_type SET description = $2, archived = $3, deprecated = $4,
                 schemas = $5, feature_flag = $6, updated_at = $7
             WHERE name = $1",
            &[
                &event_type.name,
                &event_type.description,
                &event_type.archived,
                &event_type.deprecated,
                &event_type.schemas,
                &event_type.feature_flag,
                &ms(event_type.updated_at),
            ],
        )
        .await
        .map_err(storage)?;
        changed(rows, "event type")
    }

    async fn delete_event_type(&self, name: &str) -> Result<()> {
        let db = self.client().await?;
        let rows = execute(&db, "DELETE FROM event_type WHERE name = $1", &[&name])
            .await
            .map_err(storage)?;
        changed(rows, "event type")
    }
}
