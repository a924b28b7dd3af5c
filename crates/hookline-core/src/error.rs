//! One error vocabulary for the whole product.
//!
//! [`Code`] is the table of stable, transport-neutral codes that clients and logs see
//! (`{"code": "not_found", …}`); [`Error`] is the domain's failure type, and every variant
//! carries one of those codes. The HTTP status of each code is decided in one place, in the
//! server crate (`hookline_server::error`); nothing else picks a status or mints a code.

use std::fmt;

/// Every stable error code Hookline answers or logs with.
///
/// The wire name ([`Code::as_str`]) never changes once released: clients match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    // The request as a whole.
    /// A field of the request is invalid (the 422 list names it).
    Validation,
    /// The request cannot be parsed or carried out as sent.
    GenericError,
    /// The body is larger than the limit.
    PayloadTooLarge,
    /// The route exists but does not take this method.
    MethodNotAllowed,
    /// The body's media type is not one the route takes.
    UnsupportedMediaType,
    /// The body is not UTF-8 where text is required.
    BodyNotUtf8,
    /// The body holds a NUL byte where text is required.
    BodyHasNul,

    // Authentication and authorization.
    /// No bearer token, or one that is not known.
    AuthenticationFailed,
    /// A valid token that may not do this.
    Forbidden,

    // Resources.
    /// The resource does not exist (or is not visible to the caller).
    NotFound,
    /// No source has the ingest token of the URL.
    SourceNotFound,
    /// A uniqueness rule would be broken (duplicate uid or eventId).
    Conflict,
    /// Another request with the same `idempotency-key` was carried out first.
    IdempotencyConflict,
    /// An event type of that name exists.
    EventTypeExists,
    /// A bound on how many of something may exist was reached.
    LimitReached,
    /// A time range whose start is after its end.
    InvalidRange,
    /// The message's payload has expired or been expunged.
    MissingPayload,
    /// The event type's schema gives no example to send.
    InvalidSchema,
    /// Payload transformations are not supported.
    TransformationsUnsupported,

    // Receiving: why a provider's request was refused.
    /// A header the source's scheme requires is absent.
    MissingHeader,
    /// A header is present but cannot be parsed.
    MalformedHeader,
    /// A secret of the source cannot be used.
    MalformedSecret,
    /// The signed timestamp is not a number.
    InvalidTimestamp,
    /// The signed timestamp is older than the tolerance.
    TimestampTooOld,
    /// The signed timestamp is further ahead than the tolerance.
    TimestampTooNew,
    /// No signature matched any key.
    NoSignatureMatched,
    /// Basic or Bearer credentials that match none configured (or a bearer token whose
    /// claims name another audience, issuer or account).
    InvalidCredentials,
    /// The body is not the envelope the source's provider wraps its messages in (a
    /// Pub/Sub push without a `message`, an id, or base64 `data`).
    MalformedEnvelope,

    // Starting up.
    /// The database schema is not the one this build knows.
    SchemaMismatch,
    /// Another process holds the embedded database.
    DatabaseInUse,
    /// A setting is missing or invalid.
    InvalidConfig,

    // The job tracker's providers.
    /// The provider a job needs has no credential configured on this server.
    ProviderNotConfigured,
    /// A call to a provider's API failed (it answered an error, rate limited it, or
    /// did not answer).
    ProviderUnavailable,

    // The server itself.
    /// The server or its storage is shutting down or unreachable; try again.
    Unavailable,
    /// A failure of the server that is no fault of the client's.
    ServerError,
}

impl Code {
    /// The code as sent to clients and written to logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Validation => "validation",
            Code::GenericError => "generic_error",
            Code::PayloadTooLarge => "payload_too_large",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::BodyNotUtf8 => "body_not_utf8",
            Code::BodyHasNul => "body_has_nul",
            Code::AuthenticationFailed => "authentication_failed",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::SourceNotFound => "source_not_found",
            Code::Conflict => "conflict",
            Code::IdempotencyConflict => "idempotency_conflict",
            Code::EventTypeExists => "event_type_exists",
            Code::LimitReached => "limit_reached",
            Code::InvalidRange => "invalid_range",
            Code::MissingPayload => "missing_payload",
            Code::InvalidSchema => "invalid_scheme",
            Code::TransformationsUnsupported => "transformations_unsupported",
            Code::MissingHeader => "missing_header",
            Code::MalformedHeader => "malformed_header",
            Code::MalformedSecret => "malformed_secret",
            Code::InvalidTimestamp => "invalid_timestamp",
            Code::TimestampTooOld => "timestamp_too_old",
            Code::TimestampTooNew => "timestamp_too_new",
            Code::NoSignatureMatched => "no_signature_matched",
            Code::InvalidCredentials => "invalid_credentials",
            Code::MalformedEnvelope => "malformed_envelope",
            Code::SchemaMismatch => "schema_mismatch",
            Code::DatabaseInUse => "database_in_use",
            Code::InvalidConfig => "invalid_config",
            Code::ProviderNotConfigured => "provider_not_configured",
            Code::ProviderUnavailable => "provider_unavailable",
            Code::Unavailable => "unavailable",
            Code::ServerError => "server_error",
        }
    }

    /// The code whose wire name is `text`, if any: how a code read back from storage (the
    /// request log keeps the reason code of every refusal) becomes typed again.
    pub fn parse(text: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|code| code.as_str() == text)
    }

    /// Every code, in a stable order.
    pub const ALL: [Code; 35] = [
        Code::Validation,
        Code::GenericError,
        Code::PayloadTooLarge,
        Code::MethodNotAllowed,
        Code::UnsupportedMediaType,
        Code::BodyNotUtf8,
        Code::BodyHasNul,
        Code::AuthenticationFailed,
        Code::Forbidden,
        Code::NotFound,
        Code::SourceNotFound,
        Code::Conflict,
        Code::IdempotencyConflict,
        Code::EventTypeExists,
        Code::LimitReached,
        Code::InvalidRange,
        Code::MissingPayload,
        Code::InvalidSchema,
        Code::TransformationsUnsupported,
        Code::MissingHeader,
        Code::MalformedHeader,
        Code::MalformedSecret,
        Code::InvalidTimestamp,
        Code::TimestampTooOld,
        Code::TimestampTooNew,
        Code::NoSignatureMatched,
        Code::InvalidCredentials,
        Code::MalformedEnvelope,
        Code::SchemaMismatch,
        Code::DatabaseInUse,
        Code::InvalidConfig,
        Code::ProviderNotConfigured,
        Code::ProviderUnavailable,
        Code::Unavailable,
        Code::ServerError,
    ];
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
        /// [`Code::Conflict`] or a more precise one, such as [`Code::EventTypeExists`].
        code: Code,
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
    /// The request is well-formed but cannot be carried out.
    #[error("{detail}")]
    Refused {
        /// Why, e.g. [`Code::MissingPayload`], [`Code::InvalidRange`], [`Code::LimitReached`].
        code: Code,
        /// Human-readable explanation.
        detail: String,
    },
    /// The server cannot start as set up: a database in use or of another schema version.
    #[error("{detail}")]
    Setup {
        /// [`Code::SchemaMismatch`], [`Code::DatabaseInUse`] or [`Code::InvalidConfig`].
        code: Code,
        /// What to do about it.
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
            code: Code::Conflict,
            detail: detail.into(),
        }
    }

    /// A well-formed request that cannot be carried out, and why.
    pub fn refused(code: Code, detail: impl Into<String>) -> Self {
        Error::Refused {
            code,
            detail: detail.into(),
        }
    }

    /// Another request with the same idempotency key created its resource first.
    pub fn idempotency_conflict() -> Self {
        Error::Conflict {
            code: Code::IdempotencyConflict,
            detail: "a request with this idempotency-key was already carried out".into(),
        }
    }

    /// Wraps a backend error.
    pub fn storage(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Storage(Box::new(error))
    }

    /// The stable code of this error.
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NotFound,
            Error::Conflict { code, .. }
            | Error::Refused { code, .. }
            | Error::Setup { code, .. } => *code,
            Error::Validation { .. } => Code::Validation,
            Error::Storage(_) => Code::ServerError,
            Error::Unavailable => Code::Unavailable,
        }
    }
}

/// Result with the domain [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_wire_name_that_parses_back() {
        let mut names: Vec<&str> = Code::ALL.iter().map(|code| code.as_str()).collect();
        for code in Code::ALL {
            assert_eq!(Code::parse(code.as_str()), Some(code));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Code::ALL.len(), "two codes share a wire name");
        assert_eq!(Code::parse("no_such_code"), None);
    }

    #[test]
    fn errors_report_their_code() {
        assert_eq!(Error::NotFound("app").code(), Code::NotFound);
        assert_eq!(Error::conflict("dup").code(), Code::Conflict);
        assert_eq!(
            Error::refused(Code::InvalidRange, "since after until").code(),
            Code::InvalidRange
        );
        assert_eq!(Error::validation(&["body"], "bad").code(), Code::Validation);
        assert_eq!(
            Error::storage(std::io::Error::other("x")).code(),
            Code::ServerError
        );
    }
}
