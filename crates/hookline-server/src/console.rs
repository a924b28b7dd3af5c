//! The web console at `/console`: one page, its script and its style, embedded in the
//! binary (no build step, nothing fetched at run time, works without internet). It signs
//! in with the admin token or an app-scoped token (the one in the URL's fragment when an
//! app-portal access link opened it: `/console#token=…`) and does everything through the
//! public API, as any client would.
//!
//! For work on the console itself, `HOOKLINE_CONSOLE_DIR` serves the files from that
//! folder instead, read at each request.

use std::path::Path;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::AppState;

/// The console's files: name, content type, embedded text.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../console/console.css"),
    ),
];

/// Only the console's own files run and only its own origin is called; nothing frames it.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(index))
        .route("/console/{file}", get(file))
}

async fn index(State(state): State<AppState>) -> Response {
    serve(state.config.console_dir.as_deref(), "index.html")
}

async fn file(State(state): State<AppState>, UrlPath(name): UrlPath<String>) -> Response {
    serve(state.config.console_dir.as_deref(), &name)
}

fn serve(dir: Option<&Path>, name: &str) -> Response {
    let Some((name, content_type, embedded)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return crate::error::error_response(hookline_core::Code::NotFound, "no such route");
    };
    let body = match dir {
        // Only while working on the console, and the files are small.
        Some(dir) => match std::fs::read_to_string(dir.join(name)) {
            Ok(text) => text,
            Err(error) => {
                return crate::error::server_error(format!(
                    "cannot read the console's {name} from {}: {error}",
                    dir.display()
                ));
            }
        },
        None => (*embedded).to_owned(),
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
