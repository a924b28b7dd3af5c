//! The one place this crate decides what a PostgreSQL failure means for Hookline.
//!
//! Decisions rest on what the driver tells us by type: the SQLSTATE of a server error
//! (compared with [`SqlState`] constants), whether the connection is closed, and whether
//! the cause is an I/O error. Message text is never inspected.
//!
//! - A unique violation is a [`Error::Conflict`], worded by the operation that hit it.
//! - A lost or refused connection, a server shutting down, or an exhausted pool is
//!   [`Error::Unavailable`]: nothing was committed, and the caller may retry.
//! - Everything else is [`Error::Storage`], with the driver's error kept as the source.

use hookline_core::Error;
use tokio_postgres::error::SqlState;

/// SQLSTATEs after which the same request is worth retrying on another connection.
const TRANSIENT: &[SqlState] = &[
    // Class 08: connection exceptions.
    SqlState::CONNECTION_EXCEPTION,
    SqlState::CONNECTION_DOES_NOT_EXIST,
    SqlState::CONNECTION_FAILURE,
    SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
    SqlState::SQLSERVER_REJECTED_ESTABLISHMENT_OF_SQLCONNECTION,
    // Class 57: the server is going away or not yet up.
    SqlState::ADMIN_SHUTDOWN,
    SqlState::CRASH_SHUTDOWN,
    SqlState::CANNOT_CONNECT_NOW,
    // Class 53: no room for another connection right now.
    SqlState::TOO_MANY_CONNECTIONS,
];

/// Whether the server refused the statement because it would duplicate a unique key.
pub(crate) fn is_unique_violation(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Whether the failure is about reaching the server rather than about the statement.
fn is_transient(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    if let Some(code) = error.code() {
        return TRANSIENT.contains(code);
    }
    // Without a server answer, an I/O cause means the socket failed or never opened.
    std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>())
}

/// Classifies a driver error where no uniqueness rule is expected to be broken.
pub(crate) fn storage(error: tokio_postgres::Error) -> Error {
    if is_transient(&error) {
        tracing::warn!(%error, "postgres connection failure");
        Error::Unavailable
    } else {
        Error::storage(error)
    }
}

/// Classifies a driver error where a unique violation means `conflict`.
pub(crate) fn or_conflict(
    conflict: impl FnOnce() -> Error,
) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |error| {
        if is_unique_violation(&error) {
            conflict()
        } else {
            storage(error)
        }
    }
}

/// The generic conflict of an insert or update, as the SQLite store words it.
pub(crate) fn duplicate(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    or_conflict(move || Error::conflict(format!("{what} with that id or uid already exists")))
}

/// Classifies a failure to get a connection from the pool. None of them is a bug of
/// the caller's: the database is down, slow, or the store is closing.
pub(crate) fn pool(error: deadpool_postgres::PoolError) -> Error {
    use deadpool_postgres::PoolError;
    match error {
        PoolError::Backend(error) => storage(error),
        PoolError::Timeout(kind) => {
            tracing::warn!(?kind, "timed out waiting for a postgres connection");
            Error::Unavailable
        }
        PoolError::Closed => Error::Unavailable,
        other => Error::storage(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pool_is_unavailable_not_a_panic() {
        assert!(matches!(
            pool(deadpool_postgres::PoolError::Closed),
            Error::Unavailable
        ));
        assert!(matches!(
            pool(deadpool_postgres::PoolError::Timeout(
                deadpool_postgres::TimeoutType::Wait
            )),
            Error::Unavailable
        ));
    }
}
