//! One error type for the domain. Each variant carries a stable, transport-neutral code;
//! the HTTP mapping lives in the server crate, in one place.

use std::fmt;

/// Domain and storage failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The resource does not exist (or is not visible to the caller).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule would be broken (duplicate uid, eventId, event type name).
    #[error("{detail}")]
    Conflict {
        /// Stable code, e.g. `conflict` or `event_type_exists`.
        code: &'static str,
        /// Human-readable explanation.
        detail: String,
    },
    /// A field of the request is invalid; `loc` is its path, as in `["body", "url"]`.
    #[error("{}: {msg}", loc.join("."))]
    Validation {
        /// Where the problem is.
        loc: Vec<String>,
        /// What the problem is.
        msg: String,
    },
    /// The request is well-formed but cannot be carried out now.
    #[error("{detail}")]
    BadRequest {
        /// Stable code, e.g. `missing_payload`, `invalid_range`, `limit_reached`.
        code: &'static str,
        /// Human-readable explanation.
        detail: String,
    },
    /// The storage backend failed. The source is kept for logs, never shown to clients.
    #[error("storage failure: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The storage backend is shutting down or its writer is gone.
    #[error("storage unavailable")]
    Unavailable,
}

impl Error {
    /// A validation error on one field.
    pub fn validation<L: fmt::Display>(loc: &[L], msg: impl Into<String>) -> Self {
        Error::Validation {
            loc: loc.iter().map(ToString::to_string).collect(),
            msg: msg.into(),
        }
    }

    /// The generic uniqueness conflict.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Error::Conflict {
            code: "conflict",
            detail: detail.into(),
        }
    }

    /// Wraps a backend error.
    pub fn storage(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Storage(Box::new(error))
    }

    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::Conflict { code, .. } | Error::BadRequest { code, .. } => code,
            Error::Validation { .. } => "validation",
            Error::Storage(_) => "server_error",
            Error::Unavailable => "unavailable",
        }
    }
}

/// Result with the domain [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
