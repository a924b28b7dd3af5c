//! The one place where failures become HTTP responses.
//!
//! Codes come from one vocabulary, [`hookline_core::Code`]; [`status`] is the one table
//! that gives each its HTTP status. Every error body is JSON: `{"code", "detail"}`, or for
//! 422 the validation list `{"detail": [{"loc", "msg", "type"}]}` that the Svix SDKs parse.
//! A server-side failure (500, 503) tells the client nothing about its cause; the cause
//! travels in a response extension ([`ErrorReport`]) to the request-logging middleware,
//! which logs it once.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hookline_core::Code;
use serde::Serialize;

/// The HTTP status of every code: the only place statuses are chosen.
pub fn status(code: Code) -> StatusCode {
    match code {
        Code::Validation => StatusCode::UNPROCESSABLE_ENTITY,
        Code::GenericError
        | Code::LimitReached
        | Code::InvalidRange
        | Code::MissingPayload
        | Code::InvalidSchema
        | Code::TransformationsUnsupported
        | Code::MalformedEnvelope => StatusCode::BAD_REQUEST,
        Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Code::UnsupportedMediaType | Code::BodyNotUtf8 | Code::BodyHasNul => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        Code::AuthenticationFailed
        | Code::MissingHeader
        | Code::MalformedHeader
        | Code::MalformedSecret
        | Code::InvalidTimestamp
        | Code::TimestampTooOld
        | Code::TimestampTooNew
        | Code::NoSignatureMatched
        | Code::InvalidCredentials => StatusCode::UNAUTHORIZED,
        Code::Forbidden => StatusCode::FORBIDDEN,
        Code::NotFound | Code::SourceNotFound => StatusCode::NOT_FOUND,
        Code::Conflict | Code::IdempotencyConflict | Code::EventTypeExists => StatusCode::CONFLICT,
        Code::ProviderNotConfigured => StatusCode::BAD_REQUEST,
        Code::ProviderUnavailable => StatusCode::BAD_GATEWAY,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        // Setup failures stop a server from starting; should one reach a request, it is
        // the server's fault.
        Code::SchemaMismatch | Code::DatabaseInUse | Code::InvalidConfig | Code::ServerError => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        // A code added to the vocabulary without a status here is a server error until
        // it gets one.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// One failing field of a request: where (`["body", "url"]`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl FieldError {
    /// A failed validation rule.
    pub fn value(loc: Vec<String>, msg: impl Into<String>) -> Self {
        Self {
            loc,
            msg: msg.into(),
            kind: "value_error",
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A domain or storage failure, mapped by its stable code.
    #[error(transparent)]
    Core(#[from] hookline_core::Error),
    /// No bearer token, or one that is not known.
    #[error("invalid or missing bearer token")]
    Unauthenticated,
    /// A valid token that may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The request body is larger than the configured limit.
    #[error("request body is too large: the limit is {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// Fields of the request are invalid.
    #[error("invalid request: {0:?}")]
    Invalid(Vec<FieldError>),
    /// A failure of this server that is no fault of the client's.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// One invalid field.
    pub fn invalid(loc: &[&str], msg: impl Into<String>) -> Self {
        ApiError::Invalid(vec![FieldError::value(
            loc.iter().map(|s| s.to_string()).collect(),
            msg,
        )])
    }

    /// A well-formed request that cannot be carried out, and why.
    pub fn refused(code: Code, detail: impl Into<String>) -> Self {
        ApiError::Core(hookline_core::Error::refused(code, detail))
    }
}

/// The cause of a 5xx, for the request log. Never sent to the client.
#[derive(Debug, Clone)]
pub struct ErrorReport(pub Arc<str>);

#[derive(Serialize)]
struct HttpErrorOut<'a> {
    code: &'a str,
    detail: &'a str,
}

#[derive(Serialize)]
struct ValidationErrorOut<'a> {
    detail: &'a [FieldError],
}

/// A `{code, detail}` response with the status of `code`.
pub fn error_response(code: Code, detail: &str) -> Response {
    let body = HttpErrorOut {
        code: code.as_str(),
        detail,
    };
    (status(code), Json(body)).into_response()
}

/// A 500 whose cause goes to the log only.
pub fn server_error(report: impl Into<Arc<str>>) -> Response {
    let mut response = error_response(Code::ServerError, "internal server error");
    response.extensions_mut().insert(ErrorReport(report.into()));
    response
}

/// `error` and its sources, outermost first: `a: b: c`.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use hookline_core::Error;
        match &self {
            ApiError::Core(Error::NotFound(what)) => {
                error_response(Code::NotFound, &format!("{what} not found"))
            }
            ApiError::Core(Error::Conflict { code, detail } | Error::Refused { code, detail }) => {
                error_response(*code, detail)
            }
            ApiError::Core(Error::Validation { loc, msg }) => {
                ApiError::Invalid(vec![FieldError::value(loc.clone(), msg.clone())]).into_response()
            }
            ApiError::Core(Error::Unavailable) => {
                let mut response = error_response(
                    Code::Unavailable,
                    "the server is shutting down or its storage is unavailable; try again",
                );
                response
                    .extensions_mut()
                    .insert(ErrorReport(chain(&self).into()));
                response
            }
            ApiError::Core(_) | ApiError::Internal(_) => server_error(chain(&self)),
            ApiError::Unauthenticated => error_response(
                Code::AuthenticationFailed,
                "invalid or missing bearer token",
            ),
            ApiError::Forbidden(detail) => error_response(Code::Forbidden, detail),
            ApiError::PayloadTooLarge { limit } => payload_too_large(*limit),
            ApiError::Invalid(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(ValidationErrorOut { detail: errors }),
            )
                .into_response(),
        }
    }
}

fn payload_too_large(limit: usize) -> Response {
    error_response(
        Code::PayloadTooLarge,
        &format!("request body is too large: the limit is {limit} bytes"),
    )
}

/// The code of an error that axum or a tower layer answered on its own.
fn code_for(status: StatusCode) -> Code {
    match status {
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
        StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
        _ => Code::GenericError,
    }
}

/// Middleware: makes every error response JSON. Errors of our own already are; this
/// catches the few that axum and tower-http produce as plain text or empty bodies (an
/// oversized `Content-Length`, a bad path segment, a method a route lacks). The
/// state is the body limit, quoted in 413 answers.
pub async fn json_errors(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return payload_too_large(limit);
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let detail = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_lowercase(),
        text => text.to_owned(),
    };
    let mut fixed = if status.is_server_error() {
        let mut fixed = server_error(detail);
        // Keep the status the layer chose (a 503 stays a 503).
        *fixed.status_mut() = status;
        fixed
    } else {
        let mut fixed = error_response(code_for(status), &detail);
        // Statuses without a code of their own (408, 411, …) keep their number.
        *fixed.status_mut() = status;
        fixed
    };
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        fixed.headers_mut().insert(header::ALLOW, allow.clone());
    }
    fixed
}

/// The answer to a handler that panicked: a JSON 500, the panic message kept for the log.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let message = if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else {
        "unknown panic payload".to_owned()
    };
    server_error(format!("handler panicked: {message}"))
}

/// The answer to a path that matches no route.
pub async fn no_route() -> Response {
    error_response(Code::NotFound, "no such route")
}

/// The answer to a method a route does not have.
pub async fn method_not_allowed() -> Response {
    error_response(
        Code::MethodNotAllowed,
        "this route does not take that method",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn core_errors_map_to_status_and_code() {
        use hookline_core::Error;
        let cases = [
            (Error::NotFound("endpoint"), 404, "not_found"),
            (Error::conflict("dup"), 409, "conflict"),
            (
                Error::refused(Code::MissingPayload, "gone"),
                400,
                "missing_payload",
            ),
            (Error::Unavailable, 503, "unavailable"),
        ];
        for (error, status, code) in cases {
            let response = ApiError::from(error).into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(body(response).await["code"], code);
        }
    }

    #[test]
    fn every_code_has_a_status_and_server_side_codes_are_5xx() {
        for code in Code::ALL {
            let status = status(code);
            let server_side = matches!(
                code,
                Code::ServerError
                    | Code::Unavailable
                    | Code::SchemaMismatch
                    | Code::DatabaseInUse
                    | Code::InvalidConfig
                    // The fault of the provider behind this server (502), told in detail.
                    | Code::ProviderUnavailable
            );
            assert_eq!(status.is_server_error(), server_side, "{code}: {status}");
        }
    }

    #[tokio::test]
    async fn storage_failures_say_nothing_and_carry_a_report() {
        let io = std::io::Error::other("disk on fire");
        let response = ApiError::from(hookline_core::Error::storage(io)).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let report = response.extensions().get::<ErrorReport>().unwrap().clone();
        assert!(report.0.contains("disk on fire"), "{}", report.0);
        assert_eq!(
            body(response).await,
            serde_json::json!({"code": "server_error", "detail": "internal server error"})
        );
    }

    #[tokio::test]
    async fn panics_become_json_500s_with_the_message_in_the_report() {
        let response = panic_response(Box::new("index out of bounds"));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let report = response.extensions().get::<ErrorReport>().unwrap().clone();
        assert_eq!(&*report.0, "handler panicked: index out of bounds");
        assert_eq!(
            body(response).await,
            serde_json::json!({"code": "server_error", "detail": "internal server error"})
        );
    }

    #[tokio::test]
    async fn validation_is_a_list_with_loc() {
        let response = ApiError::from(hookline_core::Error::validation(
            &["body", "url"],
            "bad url",
        ))
        .into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body(response).await,
            serde_json::json!({"detail": [{"loc": ["body", "url"], "msg": "bad url", "type": "value_error"}]})
        );
    }
}
