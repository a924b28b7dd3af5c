//! The `/api/v1` resources, one module each, and what they share: list pages, tri-state
//! PATCH fields, and resolving the application of a path.

pub mod application;
pub mod attempt;
pub mod auth;
pub mod endpoint;
pub mod event_type;
pub mod health;
pub mod job;
pub mod message;
pub mod stream;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use hookline_core::id::{AppId, SourceId};
use hookline_core::model::Application;
use hookline_core::page::{Cursor, ListQuery, Order, Page};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::{Limit, Timestamp};

/// Every route under `/api/v1`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(application::router())
        .merge(endpoint::router())
        .merge(event_type::router())
        .merge(message::router())
        .merge(stream::router())
        .merge(attempt::router())
        .merge(auth::router())
        .merge(health::router())
        .merge(job::router())
}

/// One page of a list, as the Svix API shapes it. `iterator` is always present (the
/// Python SDK requires the key, even when null).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    pub iterator: Option<String>,
    pub prev_iterator: Option<String>,
    pub done: bool,
}

impl<T> ListResponse<T> {
    /// Converts a store page, item by item.
    pub fn from_page<U>(page: Page<U>, convert: impl FnMut(U) -> T) -> Self {
        let page = page.map(convert);
        ListResponse {
            data: page.data,
            iterator: page.iterator,
            prev_iterator: page.prev_iterator,
            done: page.done,
        }
    }

    /// Converts a store page, item by item, where a conversion can fail.
    pub fn try_from_page<U>(
        page: Page<U>,
        convert: impl FnMut(U) -> Result<T, ApiError>,
    ) -> Result<Self, ApiError> {
        Ok(ListResponse {
            data: page
                .data
                .into_iter()
                .map(convert)
                .collect::<Result<_, _>>()?,
            iterator: page.iterator,
            prev_iterator: page.prev_iterator,
            done: page.done,
        })
    }
}

/// The page query of a list ordered by a key the client chooses the direction of.
pub fn list_query(limit: Limit, iterator: Option<String>, order: Order) -> ListQuery {
    ListQuery {
        limit: limit.0,
        cursor: iterator.as_deref().map(Cursor::parse),
        order,
    }
}

/// The page query of a newest-first list of time-sortable ids, where `before` and `after`
/// stand for an iterator when none is given: `boundary(t)` is the smallest id of time `t`.
pub fn time_query(
    limit: Limit,
    iterator: Option<String>,
    before: Option<Timestamp>,
    after: Option<Timestamp>,
    boundary: impl Fn(DateTime<Utc>) -> String,
) -> Result<ListQuery, ApiError> {
    let cursor = match (iterator, before, after) {
        (Some(iterator), _, _) => Some(Cursor::parse(&iterator)),
        (None, Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                &["query", "after"],
                "`before` and `after` cannot be used together",
            ));
        }
        // Newest first: "after the boundary" in list order is older, i.e. before `t`.
        (None, Some(before), None) => Some(Cursor::After(boundary(before.0))),
        (None, None, Some(after)) => Some(Cursor::Before(boundary(after.0))),
        (None, None, None) => None,
    };
    Ok(ListQuery {
        limit: limit.0,
        cursor,
        order: Order::Descending,
    })
}

/// The application named by a path's `app_id` (an id or a uid), if the caller may see
/// it. An app token naming anything but its own application is refused whether or not
/// that application exists, so app tokens cannot probe for others.
pub async fn app_for(
    state: &AppState,
    caller: &Caller,
    key: &str,
) -> Result<Application, ApiError> {
    match state.store.get_app(key).await {
        Ok(app) => {
            caller.require_app(&app.id)?;
            Ok(app)
        }
        Err(hookline_core::Error::NotFound(_)) if matches!(caller.role, Role::App(_)) => Err(
            ApiError::Forbidden("this token is scoped to another application"),
        ),
        Err(error) => Err(error.into()),
    }
}

/// Refuses a write that would change a source's forwarding application other than
/// through the source: its name, uid and throttle follow the source, and a message created
/// in it would be forwarded with no received request behind it. Reads, endpoints, resend
/// and recover are open to it.
pub async fn not_forwarding(state: &AppState, app: &AppId) -> Result<(), ApiError> {
    let source = match state.forwarding.get(app) {
        Some(source) => source,
        None => {
            let source = state.store.source_of_app(app).await?;
            state.forwarding.insert(app, source.clone());
            source
        }
    };
    match source {
        Some(source) => Err(hookline_core::Error::conflict(format!(
            "this application forwards the requests of source {source}: change the source \
             (/ingest/api/v1/source/{source}) instead"
        ))
        .into()),
        None => Ok(()),
    }
}

/// Which applications are sources' forwarding applications, as far as asked, so that a
/// write to an application (a message create above all) does not ask the store every
/// time. What is kept never goes stale, on any node: a source's application is made with
/// the source and forwards for it until both are deleted, an application made otherwise
/// never comes to forward, and ids are never reused.
#[derive(Debug, Default)]
pub struct ForwardingApps(Mutex<HashMap<AppId, Option<SourceId>>>);

impl ForwardingApps {
    /// Applications kept at most; the map starts over when it is full.
    const MOST: usize = 65_536;

    fn get(&self, app: &AppId) -> Option<Option<SourceId>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(app)
            .cloned()
    }

    fn insert(&self, app: &AppId, source: Option<SourceId>) {
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= Self::MOST {
            known.clear();
        }
        known.insert(app.clone(), source);
    }
}

/// `true`, for `#[serde(default = "yes")]`.
pub fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_core::id::MessageId;

    #[test]
    fn before_and_after_become_cursors() {
        let t = Timestamp::parse("2024-01-02T03:04:05Z").unwrap();
        let boundary = |t: DateTime<Utc>| MessageId::boundary(t).into_string();
        let before = time_query(Limit(10), None, Some(t), None, boundary).unwrap();
        assert_eq!(before.cursor, Some(Cursor::After(boundary(t.0))));
        let after = time_query(Limit(10), None, None, Some(t), boundary).unwrap();
        assert_eq!(after.cursor, Some(Cursor::Before(boundary(t.0))));
        let iterator = time_query(Limit(10), Some("-msg_x".into()), Some(t), None, boundary);
        assert_eq!(
            iterator.unwrap().cursor,
            Some(Cursor::Before("msg_x".into()))
        );
        assert!(time_query(Limit(10), None, Some(t), Some(t), boundary).is_err());
    }
}
