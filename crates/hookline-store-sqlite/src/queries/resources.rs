//! Applications, endpoints and event types: `impl ResourceStore`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookline_core::id::{AppId, EndpointId};
use hookline_core::model::{Application, Endpoint, EndpointStats, EventType};
use hookline_core::page::{ListQuery, Page};
use hookline_core::sealed::Sealer;
use hookline_core::store::ResourceStore;
use hookline_core::{Code, Error, Result};
use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};

use super::{Select, all, changed, key_column, not_found, one};
use crate::SqliteStore;
use crate::rows::{self, classify, map_json, millis, opt_json, secrets_json};

/// An application's values in column order (`rows::APP_COLUMNS`), to bind to an insert
/// or an update.
fn app_params(app: &Application) -> Vec<Value> {
    vec![
        app.id.as_str().to_owned().into(),
        app.uid.clone().into(),
        app.name.clone().into(),
        app.throttle_rate.map(i64::from).into(),
        map_json(&app.metadata).into(),
        millis(app.created_at).into(),
        millis(app.updated_at).into(),
    ]
}

pub(super) fn insert_app(conn: &Connection, app: &Application) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO app (id, uid, name, throttle_rate, metadata, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| s.execute(params_from_iter(app_params(app))))
    .map_err(|e| classify(e, "an application"))?;
    Ok(())
}

/// An endpoint's values in column order (`rows::ENDPOINT_COLUMNS`), to bind to an insert
/// or an update; its secrets sealed by `sealer`.
fn endpoint_params(endpoint: &Endpoint, sealer: &Sealer) -> Vec<Value> {
    vec![
        endpoint.id.as_str().to_owned().into(),
        endpoint.app_id.as_str().to_owned().into(),
        endpoint.uid.clone().into(),
        endpoint.url.clone().into(),
        endpoint.description.clone().into(),
        i64::from(endpoint.disabled).into(),
        endpoint.throttle_rate.map(i64::from).into(),
        opt_json(&endpoint.event_types).into(),
        opt_json(&endpoint.channels).into(),
        map_json(&endpoint.metadata).into(),
        map_json(&endpoint.headers).into(),
        secrets_json(sealer, &endpoint.secrets).into(),
        endpoint.failing_since.map(millis).into(),
        millis(endpoint.created_at).into(),
        millis(endpoint.updated_at).into(),
    ]
}

/// An event type's values in column order (`rows::EVENT_TYPE_COLUMNS`), to bind to an
/// insert or an update.
fn event_type_params(et: &EventType) -> Vec<Value> {
    vec![
        et.name.clone().into(),
        et.description.clone().into(),
        et.archived.into(),
        et.deprecated.into(),
        opt_json(&et.schemas).into(),
        et.feature_flag.clone().into(),
        millis(et.created_at).into(),
        millis(et.updated_at).into(),
    ]
}

/// Deletes an application with everything in it: its endpoints, messages, deliveries and
/// attempts go with it (`ON DELETE CASCADE`).
pub(super) fn delete_app_rows(conn: &Connection, id: &AppId) -> Result<()> {
    let rows = conn
        .execute("DELETE FROM app WHERE id = ?1", [id.as_str()])
        .map_err(Error::storage)?;
    changed(rows, "application")
}

#[async_trait]
impl ResourceStore for SqliteStore {
    async fn create_app(&self, app: &Application) -> Result<()> {
        let app = app.clone();
        self.write(move |conn| insert_app(conn, &app)).await
    }

    async fn get_app(&self, key: &str) -> Result<Application> {
        let key = key.to_owned();
        self.lookup(move |conn| {
            let column = key_column(AppId::is_id(&key), "uid");
            let sql = format!("SELECT {} FROM app WHERE {column} = ?1", rows::APP_COLUMNS);
            one(conn, &sql, [&key], rows::app).and_then(not_found("application"))
        })
        .await
    }

    async fn list_apps(&self, query: &ListQuery) -> Result<Page<Application>> {
        let query = query.clone();
        self.read(move |conn| {
            // A source's hidden application is reached through the source only.
            Select::new(format!(
                "SELECT {} FROM app
                 WHERE NOT EXISTS (SELECT 1 FROM source WHERE source.app_id = app.id)",
                rows::APP_COLUMNS
            ))
            .page(conn, "app.id", &query, rows::app, |app| app.id.to_string())
        })
        .await
    }

    async fn update_app(&self, app: &Application) -> Result<()> {
        let values = app_params(app);
        self.write(move |conn| {
            let rows = conn
                .prepare_cached(
                    "UPDATE app SET uid = ?2, name = ?3, throttle_rate = ?4, metadata = ?5,
                         updated_at = ?7 WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params_from_iter(values)))
                .map_err(|e| classify(e, "an application"))?;
            changed(rows, "application")
        })
        .await
    }

    async fn delete_app(&self, id: &AppId) -> Result<()> {
        let id = id.clone();
        self.write_endpoints(
            move |conn| {
                let owned = one(
                    conn,
                    "SELECT 1 FROM source WHERE app_id = ?1",
                    [id.as_str()],
                    |_| Ok(()),
                )?;
                if owned.is_some() {
                    return Err(Error::conflict(
                        "the application belongs to a source; delete the source instead",
                    ));
                }
                delete_app_rows(conn, &id)
            },
            |_| true,
        )
        .await
    }

    async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        let values = endpoint_params(endpoint, self.sealer());
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO endpoint (id, app_id, uid, url, description, disabled, throttle_rate,
                     event_types, channels, metadata, headers, secrets, failing_since,
                     created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )
            .and_then(|mut s| s.execute(params_from_iter(values)))
            .map_err(|e| classify(e, "an endpoint"))?;
            Ok(())
        })
        .await
    }

    async fn get_endpoint(&self, app: &AppId, key: &str) -> Result<Endpoint> {
        let (app, key) = (app.clone(), key.to_owned());
        let stored = self
            .lookup(move |conn| {
                let column = key_column(EndpointId::is_id(&key), "uid");
                let sql = format!(
                    "SELECT {} FROM endpoint WHERE app_id = ?1 AND {column} = ?2",
                    rows::ENDPOINT_COLUMNS
                );
                one(conn, &sql, params![app.as_str(), key], rows::endpoint)
                    .and_then(not_found("endpoint"))
            })
            .await?;
        rows::open_endpoint(self.sealer(), stored)
    }

    async fn list_endpoints(&self, app: &AppId, query: &ListQuery) -> Result<Page<Endpoint>> {
        let (app, query) = (app.clone(), query.clone());
        let stored = self
            .read(move |conn| {
                Select::new(format!(
                    "SELECT {} FROM endpoint WHERE 1 = 1",
                    rows::ENDPOINT_COLUMNS
                ))
                .and("endpoint.app_id = ?", app.into_string())
                .page(conn, "endpoint.id", &query, rows::endpoint, |e| {
                    e.id.to_string()
                })
            })
            .await?;
        rows::open_endpoints(self.sealer(), stored)
    }

    async fn update_endpoint(&self, endpoint: &Endpoint, set_disabled: bool) -> Result<()> {
        let mut values = endpoint_params(endpoint, self.sealer());
        values.push(i64::from(set_disabled).into());
        self.write_endpoints(
            move |conn| {
                let rows = conn
                    .prepare_cached(
                        "UPDATE endpoint SET uid = ?3, url = ?4, description = ?5,
                         disabled = CASE WHEN ?16 = 1 THEN ?6 ELSE disabled END,
                         throttle_rate = ?7, event_types = ?8, channels = ?9, metadata = ?10,
                         headers = ?11, secrets = ?12, updated_at = ?15,
                         failing_since = CASE WHEN ?16 = 1 AND disabled = 1 AND ?6 = 0 THEN NULL
                                              ELSE failing_since END
                     WHERE id = ?1 AND app_id = ?2",
                    )
                    .and_then(|mut s| s.execute(params_from_iter(values)))
                    .map_err(|e| classify(e, "an endpoint"))?;
                changed(rows, "endpoint")
            },
            |_| true,
        )
        .await
    }

    async fn delete_endpoint(&self, app: &AppId, id: &EndpointId) -> Result<()> {
        let (app, id) = (app.clone(), id.clone());
        self.write_endpoints(
            move |conn| {
                let rows = conn
                    .execute(
                        "DELETE FROM endpoint WHERE app_id = ?1 AND id = ?2",
                        [app.as_str(), id.as_str()],
                    )
                    .map_err(Error::storage)?;
                changed(rows, "endpoint")
            },
            |_| true,
        )
        .await
    }

    async fn endpoint_stats(
        &self,
        app: &AppId,
        endpoint: &EndpointId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<EndpointStats> {
        let (app, endpoint) = (app.clone(), endpoint.clone());
        self.read(move |conn| {
            let counts = all(
                conn,
                "SELECT status, count(*) FROM destination
                 WHERE app_id = ?1 AND endpoint_id = ?2
                   AND msg_created_at >= ?3 AND msg_created_at <= ?4
                 GROUP BY status",
                params![
                    app.as_str(),
                    endpoint.as_str(),
                    millis(since),
                    millis(until)
                ],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
            )?;
            Ok(EndpointStats::from_counts(counts))
        })
        .await
    }

    async fn create_event_type(&self, event_type: &EventType) -> Result<()> {
        let values = event_type_params(event_type);
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO event_type (name, description, archived, deprecated, schemas,
                     feature_flag, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut s| s.execute(params_from_iter(values)))
            .map_err(|e| match classify(e, "an event type") {
                Error::Conflict { .. } => Error::Conflict {
                    code: Code::EventTypeExists,
                    detail: "an event type with this name already exists".into(),
                },
                other => other,
            })?;
            Ok(())
        })
        .await
    }

    async fn get_event_type(&self, name: &str) -> Result<EventType> {
        let name = name.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {} FROM event_type WHERE name = ?1",
                rows::EVENT_TYPE_COLUMNS
            );
            one(conn, &sql, [&name], rows::event_type).and_then(not_found("event type"))
        })
        .await
    }

    async fn list_event_types(
        &self,
        query: &ListQuery,
        include_archived: bool,
    ) -> Result<Page<EventType>> {
        let query = query.clone();
        self.read(move |conn| {
            let mut select = Select::new(format!(
                "SELECT {} FROM event_type WHERE 1 = 1",
                rows::EVENT_TYPE_COLUMNS
            ));
            if !include_archived {
                select = select.and("archived = ?", 0);
            }
            select.page(conn, "name", &query, rows::event_type, |et| et.name.clone())
        })
        .await
    }

    async fn update_event_type(&self, event_type: &EventType) -> Result<()> {
        let values = event_type_params(event_type);
        self.write(move |conn| {
            let rows = conn
                .prepare_cached(
                    "UPDATE event_type SET description = ?2, archived = ?3, deprecated = ?4,
                         schemas = ?5, feature_flag = ?6, updated_at = ?8 WHERE name = ?1",
                )
                .and_then(|mut s| s.execute(params_from_iter(values)))
                .map_err(Error::storage)?;
            changed(rows, "event type")
        })
        .await
    }

    async fn delete_event_type(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.write(move |conn| {
            let rows = conn
                .execute("DELETE FROM event_type WHERE name = ?1", [&name])
                .map_err(Error::storage)?;
            changed(rows, "event type")
        })
        .await
    }
}
